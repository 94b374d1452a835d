//! Child processes with a deadline, each in its own process group so that a
//! timeout, a failure or Ctrl-C takes down everything it started. A logged
//! step shows its progress as it goes (see [`Progress`]).

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot install the signal handler: {0}")]
    Signal(nix::Error),
    #[error("cannot start `{what}`: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("`{what}` timed out after {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error("`{what}` failed ({status}){log}")]
    Failed {
        what: String,
        status: ExitStatus,
        log: String,
    },
    #[error("interrupted")]
    Interrupted,
    #[error("cannot create log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("waiting for `{what}`: {source}")]
    Wait {
        what: String,
        source: std::io::Error,
    },
}

extern "C" fn note_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C, SIGTERM and SIGHUP only raise a flag; every wait loop checks it and
/// unwinds, so the drop guards below clean up QEMU, backends and sockets.
pub fn install_signal_handlers() -> Result<(), Error> {
    let action = SigAction::new(
        SigHandler::Handler(note_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(Error::Signal)?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A running process group, killed when dropped.
pub struct Group {
    child: Child,
    what: String,
}

impl Group {
    pub fn spawn(mut command: Command, what: &str) -> Result<Self, Error> {
        command.process_group(0);
        let child = command.spawn().map_err(|source| Error::Spawn {
            what: what.to_string(),
            source,
        })?;
        Ok(Self {
            child,
            what: what.to_string(),
        })
    }

    /// The exit status if the leader has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child.try_wait().map_err(|source| Error::Wait {
            what: self.what.clone(),
            source,
        })
    }

    /// Waits for the leader until `deadline`; on timeout or interrupt the
    /// whole group is killed.
    pub fn wait_until(&mut self, deadline: Instant, secs: u64) -> Result<ExitStatus, Error> {
        self.wait_ticking(deadline, secs, || {})
    }

    /// [`Self::wait_until`], calling `tick` at every poll.
    fn wait_ticking(
        &mut self,
        deadline: Instant,
        secs: u64,
        mut tick: impl FnMut(),
    ) -> Result<ExitStatus, Error> {
        loop {
            tick();
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if interrupted() {
                self.kill();
                return Err(Error::Interrupted);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Error::Timeout {
                    what: self.what.clone(),
                    secs,
                });
            }
            thread::sleep(POLL);
        }
    }

    pub fn kill(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // The group may already be gone; nothing to do then.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args().take(3) {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Last lines of a log, for an error message that says why.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A short name for a step from its command: the program (past `nice`) and
/// the words that are neither options, assignments nor paths, such as
/// make's or ninja's targets; without those, the directory of `make -C` or
/// else the first path's last part (less the cache key a cache directory's
/// name ends with), such as the script `sh` runs.
fn step_label(command: &Command) -> String {
    let words: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy().into_owned())
        .skip_while(|word| word == "nice")
        .collect();
    let Some((program, args)) = words.split_first() else {
        return String::new();
    };
    let mut label = vec![program.rsplit('/').next().unwrap_or_default()];
    label.extend(
        args.iter()
            .filter(|w| !w.starts_with('-') && !w.contains('=') && !w.contains('/'))
            .take(4)
            .map(String::as_str),
    );
    if label.len() == 1 {
        let path = args
            .windows(2)
            .find(|pair| pair[0] == "-C")
            .map(|pair| &pair[1])
            .or_else(|| args.iter().find(|w| w.contains('/') && !w.starts_with('-')));
        if let Some(part) = path.and_then(|p| p.rsplit('/').find(|part| !part.is_empty())) {
            label.push(strip_cache_key(part));
        }
    }
    label.join(" ")
}

/// `name` from `name-0123456789abcdef`, the form of a cache directory.
fn strip_cache_key(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((stem, key)) if key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()) => stem,
        _ => name,
    }
}

/// How often a progress line is printed when stderr is no terminal.
const PLAIN_PERIOD: Duration = Duration::from_secs(30);
/// How often the terminal's progress line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);

/// What a build's output says of how far it got: ninja's `[n/m]`, the
/// objects kbuild compiled (its `CC` lines), the crates cargo compiled, or
/// else the lines written so far.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    ninja: Option<(u64, u64)>,
    compiled_objects: u64,
    compiled_crates: u64,
    lines: u64,
}

impl Counts {
    fn feed(&mut self, line: &str) {
        self.lines += 1;
        if let Some(done_total) = ninja_step(line) {
            self.ninja = Some(done_total);
            return;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            // kbuild's quiet lines: `  CC      kernel/fork.o`, `  CC [M]  ...`
            (Some("CC"), Some(_)) if line.starts_with("  ") => self.compiled_objects += 1,
            (Some("Compiling"), Some(_)) => self.compiled_crates += 1,
            _ => {}
        }
    }

    fn summary(&self) -> String {
        if let Some((done, total)) = self.ninja {
            format!("[{done}/{total}]")
        } else if self.compiled_objects > 0 {
            format!("{} compiled", counted(self.compiled_objects, "object"))
        } else if self.compiled_crates > 0 {
            format!("{} compiled", counted(self.compiled_crates, "crate"))
        } else {
            format!("{} of output", counted(self.lines, "line"))
        }
    }
}

/// `1 crate`, `2 crates`.
fn counted(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// `[n/m]` at the start of a ninja status line.
fn ninja_step(line: &str) -> Option<(u64, u64)> {
    let (done, rest) = line.strip_prefix('[')?.split_once('/')?;
    let (total, _) = rest.split_once(']')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

/// `45s`, `2m10s`, `1h02m`.
fn elapsed_text(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The columns of the terminal on stderr, if it is one that says.
fn terminal_width() -> Option<usize> {
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the one passed, which
    // lives for the call.
    let result = unsafe { nix::libc::ioctl(2, nix::libc::TIOCGWINSZ, &mut size) };
    (result == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// The progress of a logged step, read from its log as it grows: on a
/// terminal one line redrawn in place, otherwise a plain line every
/// [`PLAIN_PERIOD`]. The log keeps the full output.
struct Progress {
    label: String,
    started: Instant,
    log: Option<File>,
    partial: Vec<u8>,
    counts: Counts,
    terminal: bool,
    last_shown: Option<Instant>,
}

impl Progress {
    fn new(label: String, log: &Path) -> Self {
        Self {
            label,
            started: Instant::now(),
            log: File::open(log).ok(),
            partial: Vec::new(),
            counts: Counts::default(),
            terminal: std::io::stderr().is_terminal(),
            last_shown: None,
        }
    }

    /// How far the step got, and how long it has run.
    fn status(&self) -> String {
        format!(
            "{} {}",
            self.counts.summary(),
            elapsed_text(self.started.elapsed())
        )
    }

    fn line(&self) -> String {
        format!("{}: {}", self.label, self.status())
    }

    /// Reads what the log gained and shows the progress when it is due.
    fn tick(&mut self) {
        let mut fresh = Vec::new();
        if let Some(log) = self.log.as_mut() {
            let _ = log.read_to_end(&mut fresh);
        }
        for byte in fresh {
            // ninja and cargo redraw with `\r` when they think they are on
            // a terminal: either ends a line.
            if byte == b'\n' || byte == b'\r' {
                if !self.partial.is_empty() {
                    self.counts.feed(&String::from_utf8_lossy(&self.partial));
                    self.partial.clear();
                }
            } else {
                self.partial.push(byte);
            }
        }
        let period = if self.terminal { REDRAW } else { PLAIN_PERIOD };
        let due = match self.last_shown {
            Some(shown) => shown.elapsed() >= period,
            None => self.terminal || self.started.elapsed() >= period,
        };
        if !due {
            return;
        }
        self.last_shown = Some(Instant::now());
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let width = terminal_width().unwrap_or(80).saturating_sub(1);
            let line: String = self.line().chars().take(width).collect();
            let _ = write!(stderr, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(stderr, "{}", self.line());
        }
        let _ = stderr.flush();
    }

    /// Clears the terminal's line; a step that took a while says so.
    fn finish(&mut self, succeeded: bool) {
        let mut stderr = std::io::stderr().lock();
        if self.terminal && self.last_shown.is_some() {
            let _ = write!(stderr, "\r\x1b[K");
        }
        if succeeded && self.started.elapsed() >= PLAIN_PERIOD {
            let _ = writeln!(stderr, "{}: done, {}", self.label, self.status());
        }
        let _ = stderr.flush();
    }
}

/// Runs `command` to completion with its output in `log`, showing its
/// progress (named after the command); on failure the tail of the log is
/// printed and the error names the log.
pub fn run_logged(command: Command, log: &Path, timeout: Duration) -> Result<(), Error> {
    let label = step_label(&command);
    run_step(&label, command, log, timeout)
}

/// [`run_logged`] with the progress shown under `label`, such as
/// `building QEMU`.
pub fn run_step(
    label: &str,
    mut command: Command,
    log: &Path,
    timeout: Duration,
) -> Result<(), Error> {
    let what = describe(&command);
    let file = File::create(log).map_err(|source| Error::Log {
        path: log.to_path_buf(),
        source,
    })?;
    let err_file = file.try_clone().map_err(|source| Error::Log {
        path: log.to_path_buf(),
        source,
    })?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err_file));
    let mut group = Group::spawn(command, &what)?;
    let mut progress = Progress::new(label.to_string(), log);
    let waited = group.wait_ticking(Instant::now() + timeout, timeout.as_secs(), || {
        progress.tick()
    });
    let status = match waited {
        Ok(status) => status,
        Err(err) => {
            progress.finish(false);
            return Err(err);
        }
    };
    progress.finish(status.success());
    if status.success() {
        return Ok(());
    }
    eprintln!("{}", log_tail(log, 30));
    Err(Error::Failed {
        what,
        status,
        log: format!("; log: {}", log.display()),
    })
}

/// Runs `command` with the terminal as its output.
pub fn run_visible(mut command: Command, timeout: Duration) -> Result<(), Error> {
    let what = describe(&command);
    command.stdin(Stdio::null());
    let mut group = Group::spawn(command, &what)?;
    let status = group.wait_until(Instant::now() + timeout, timeout.as_secs())?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Failed {
            what,
            status,
            log: String::new(),
        })
    }
}

/// Runs `command` and returns its status and its standard output.
pub fn capture(mut command: Command, timeout: Duration) -> Result<(ExitStatus, String), Error> {
    let what = describe(&command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut group = Group::spawn(command, &what)?;
    let reader = group.child.stdout.take().map(|mut out| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        })
    });
    let status = group.wait_until(Instant::now() + timeout, timeout.as_secs())?;
    let text = reader
        .and_then(|handle| handle.join().ok())
        .unwrap_or_default();
    Ok((status, text))
}

/// Like [`capture`], but a failing status is an error.
pub fn output(command: Command, timeout: Duration) -> Result<String, Error> {
    let what = describe(&command);
    let (status, text) = capture(command, timeout)?;
    if status.success() {
        Ok(text)
    } else {
        Err(Error::Failed {
            what,
            status,
            log: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts_of(output: &str) -> Counts {
        let mut counts = Counts::default();
        for line in output.lines() {
            counts.feed(line);
        }
        counts
    }

    #[test]
    fn ninja_kbuild_and_cargo_progress_is_read_from_their_output() {
        let ninja = counts_of(
            "[1/2974] Generating qemu-version.h\n[812/2974] Compiling C object libqemuutil.a.p/util_osdep.c.o\nwarning: x\n",
        );
        assert_eq!(ninja.summary(), "[812/2974]");
        let kbuild = counts_of(
            "  SYNC    include/config/auto.conf\n  CC      kernel/fork.o\n  CC [M]  drivers/media/platform/nxp/dw100/dw100.o\n  LD      vmlinux\nIn file included from x.c:1:\n",
        );
        assert_eq!(kbuild.summary(), "2 objects compiled");
        let cargo = counts_of(
            "   Compiling libc v0.2.169\n   Compiling cc v1.2.0\n    Finished `release` profile\n",
        );
        assert_eq!(cargo.summary(), "2 crates compiled");
        assert_eq!(counts_of("a\nb\n").summary(), "2 lines of output");
        assert_eq!(
            counts_of("   Compiling xtask v0.1.0\n").summary(),
            "1 crate compiled"
        );
        // A status line cut short is no step.
        assert_eq!(ninja_step("[81"), None);
        assert_eq!(ninja_step("[x/2] y"), None);
    }

    #[test]
    fn a_step_is_named_by_its_program_and_targets() {
        let mut make = Command::new("nice");
        make.args([
            "make",
            "-C",
            "/src/linux",
            "O=/cache/build",
            "ARCH=arm64",
            "-j2",
        ])
        .args(["bzImage", "modules"]);
        assert_eq!(step_label(&make), "make bzImage modules");
        let mut ninja = Command::new("nice");
        ninja.args(["ninja", "-j2", "qemu-system-x86_64"]);
        assert_eq!(step_label(&ninja), "ninja qemu-system-x86_64");
        let cargo_fuzz = Command::new("/cache/cargo-fuzz-0.12.0/bin/cargo-fuzz");
        assert_eq!(step_label(&cargo_fuzz), "cargo-fuzz");
        let mut module = Command::new("make");
        module.args([
            "-C",
            "/repo/target/kmod/debian-rt/virtio_video_m2m-fef805198bfd0316/",
        ]);
        module.args(["KDIR=/cache/kbuild", "-j2", "W=1"]);
        assert_eq!(step_label(&module), "make virtio_video_m2m");
        let mut data_set = Command::new("sh");
        data_set.args([
            "/repo/tests/data/dewarp.sh",
            "/cache/testdata/dewarp-0123456789abcdef",
        ]);
        assert_eq!(step_label(&data_set), "sh dewarp.sh");
    }

    #[test]
    fn elapsed_time_reads_like_a_clock() {
        assert_eq!(elapsed_text(Duration::from_secs(45)), "45s");
        assert_eq!(elapsed_text(Duration::from_secs(130)), "2m10s");
        assert_eq!(elapsed_text(Duration::from_secs(3720)), "1h02m");
    }
}
