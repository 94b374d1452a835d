//! The guest's requests to the host during a run: kill or restart a
//! backend, hot-unplug a device. The guest writes one request file into the
//! harness directory's `control/` (shared over 9p); the host's watch loop
//! carries it out and answers in a reply file. Contract in
//! `docs/harness.md` (guest helper: `tests/clients/host-lib.sh`).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Subdirectory of the harness directory that carries the requests.
pub const DIR: &str = "control";
/// The QMP monitor socket's name in the run's socket directory.
pub const QMP_SOCKET: &str = "qmp.sock";
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP: {0}")]
    Qmp(String),
}

/// What the guest may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL the backend behind a device.
    Kill(String),
    /// Start a new backend on the device's socket.
    Start(String),
    /// Start a new backend that injects a test fault (its hidden
    /// `--test-fault` option: `vhost-device-video/src/fault.rs`).
    StartFaulty(String, String),
    /// `device_del` the device through the QMP monitor (PCI hot-unplug).
    Unplug(String),
    /// Stop the VM through the QMP monitor for this many seconds (at most
    /// `MAX_PAUSE_SECONDS`), then continue it: QEMU stops and restarts
    /// every vhost-user ring.
    Pause(u64),
}

/// The longest `pause` the host carries out, in seconds.
pub const MAX_PAUSE_SECONDS: u64 = 10;

impl Action {
    /// Parses `kill|start|unplug TARGET` and `start-faulty TARGET FAULT`.
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut words = line.split_whitespace();
        if let (Some("start-faulty"), Some(target), Some(fault), None) =
            (words.next(), words.next(), words.next(), words.next())
        {
            return Ok(Self::StartFaulty(target.to_string(), fault.to_string()));
        }
        let mut words = line.split_whitespace();
        let (Some(verb), Some(target), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("expected `ACTION TARGET`, got `{}`", line.trim()));
        };
        let target = target.to_string();
        match verb {
            "kill" => Ok(Self::Kill(target)),
            "start" => Ok(Self::Start(target)),
            "unplug" => Ok(Self::Unplug(target)),
            "pause" => match target.parse::<u64>() {
                Ok(seconds) if (1..=MAX_PAUSE_SECONDS).contains(&seconds) => {
                    Ok(Self::Pause(seconds))
                }
                _ => Err(format!(
                    "pause takes 1 to {MAX_PAUSE_SECONDS} seconds, got `{target}`"
                )),
            },
            other => Err(format!(
                "unknown action `{other}` (known: kill, start, start-faulty, unplug, pause)"
            )),
        }
    }
}

/// One request found in the control directory.
pub struct Request {
    reply: PathBuf,
    pub line: String,
}

impl Request {
    /// Writes the answer where the guest waits for it.
    pub fn answer(self, result: &Result<String, String>) {
        let text = match result {
            Ok(detail) => format!("ok {detail}\n"),
            Err(problem) => format!("error {problem}\n"),
        };
        let temp = self.reply.with_extension("part");
        // The guest times out and says so if the answer never comes.
        if fs::write(&temp, text).is_ok() {
            let _ = fs::rename(&temp, &self.reply);
        }
    }
}

/// Takes the pending requests out of `dir`, oldest name first.
pub fn pending(dir: &Path) -> Vec<Request> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "req"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let line = fs::read_to_string(&path).ok()?;
            fs::remove_file(&path).ok()?;
            Some(Request {
                reply: path.with_extension("reply"),
                line,
            })
        })
        .collect()
}

fn qmp_io(socket: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        action: "talk to QMP at",
        path: socket.to_path_buf(),
        source,
    }
}

/// Reads QMP lines until a command's answer; events are skipped.
fn qmp_answer(reader: &mut impl BufRead, socket: &Path) -> Result<String, Error> {
    let deadline = Instant::now() + QMP_TIMEOUT;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(qmp_io(socket))? == 0 {
            return Err(Error::Qmp("the monitor closed the connection".to_string()));
        }
        if line.contains("\"return\"") {
            return Ok(line.trim().to_string());
        }
        if line.contains("\"error\"") {
            return Err(Error::Qmp(line.trim().to_string()));
        }
        if Instant::now() >= deadline {
            return Err(Error::Qmp("no answer".to_string()));
        }
    }
}

/// Runs one QMP command (JSON text) on the monitor at `socket`.
pub fn qmp(socket: &Path, command: &str) -> Result<String, Error> {
    let mut stream = UnixStream::connect(socket).map_err(qmp_io(socket))?;
    stream
        .set_read_timeout(Some(QMP_TIMEOUT))
        .map_err(qmp_io(socket))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(qmp_io(socket))?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).map_err(qmp_io(socket))?;
    if !greeting.contains("QMP") {
        return Err(Error::Qmp(format!(
            "unexpected greeting `{}`",
            greeting.trim()
        )));
    }
    stream
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .map_err(qmp_io(socket))?;
    qmp_answer(&mut reader, socket)?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(qmp_io(socket))?;
    qmp_answer(&mut reader, socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions() {
        assert_eq!(
            Action::parse("kill decoder0\n"),
            Ok(Action::Kill("decoder0".to_string()))
        );
        assert_eq!(
            Action::parse("unplug dewarper"),
            Ok(Action::Unplug("dewarper".to_string()))
        );
        assert_eq!(
            Action::parse("start-faulty dewarper slow=900"),
            Ok(Action::StartFaulty(
                "dewarper".to_string(),
                "slow=900".to_string()
            ))
        );
        assert_eq!(Action::parse("pause 2"), Ok(Action::Pause(2)));
        assert!(Action::parse("pause 0").is_err());
        assert!(Action::parse("pause 11").is_err());
        assert!(Action::parse("start-faulty dewarper").is_err());
        assert!(Action::parse("kill").is_err());
        assert!(Action::parse("reboot decoder0").is_err());
        assert!(Action::parse("kill a b").is_err());
    }

    #[test]
    fn takes_requests_in_name_order_and_answers() {
        let dir = std::env::temp_dir().join(format!("vdv-control-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("2.req"), "start decoder0\n").unwrap();
        fs::write(dir.join("1.req"), "kill decoder0\n").unwrap();
        fs::write(dir.join("3.tmp"), "kill decoder0\n").unwrap();
        let requests = pending(&dir);
        let lines: Vec<&str> = requests.iter().map(|r| r.line.trim()).collect();
        assert_eq!(lines, ["kill decoder0", "start decoder0"]);
        for request in requests {
            request.answer(&Ok("done".to_string()));
        }
        assert_eq!(
            fs::read_to_string(dir.join("1.reply")).unwrap(),
            "ok done\n"
        );
        assert!(pending(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
