//! What the daemon's integration tests share: the daemon binary as a child
//! process with its log in a file, and waits on that log and on its socket.

// Every test binary compiles this module and uses only part of it.
#![allow(dead_code)]
// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for the daemon to get somewhere.
const WAIT: Duration = Duration::from_secs(20);

/// A running daemon, killed when dropped.
pub struct Daemon {
    pub child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` (the daemon, maybe behind a privilege wrapper) with
    /// `RUST_LOG=rust_log` and its log in `dir/daemon.log`.
    pub fn start(mut command: Command, dir: &Path, rust_log: &str) -> Self {
        let log = dir.join("daemon.log");
        let err = File::create(&log).unwrap();
        let child = command
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count}x {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the daemon's socket file exists.
pub fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "no socket at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}
