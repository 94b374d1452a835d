//! Child processes with a deadline, each in its own process group so that a
//! timeout, a failure or Ctrl-C takes down everything it started.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
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
        loop {
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

/// Runs `command` to completion with its output in `log`; on failure the tail
/// of the log is printed and the error names the log.
pub fn run_logged(mut command: Command, log: &Path, timeout: Duration) -> Result<(), Error> {
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
    let status = group.wait_until(Instant::now() + timeout, timeout.as_secs())?;
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
