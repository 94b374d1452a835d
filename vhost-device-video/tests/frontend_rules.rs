//! Socket rules of the daemon binary, checked with the `vhost` crate's
//! frontend (the side QEMU plays): the socket is owner-only, a second
//! frontend is refused with a log line while one is connected, the next
//! frontend is served once the first leaves, and the daemon runs unprivileged.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vhost::vhost_user::Frontend;
use vhost::VhostBackend;

mod common;
use common::{wait_for_socket, Daemon};

/// `VIRTIO_F_VERSION_1`: every frontend sees it in the features.
const VERSION_1: u64 = 1 << 32;
const NOBODY_UID: u32 = 65534;
const REFUSAL_LINE: &str = "refused a second frontend";

fn daemon_command(program: &Path, socket: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .arg("--socket-path")
        .arg(socket)
        .args(["--device", "decoder"]);
    command
}

fn connect(path: &Path) -> Frontend {
    let frontend = Frontend::connect(path, 2).unwrap();
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    assert!(features & VERSION_1 != 0, "features {features:#x}");
    frontend
}

/// A connection the daemon closes at once: reading it hits end-of-file.
fn assert_closed_by_daemon(path: &Path) {
    let mut stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(stream.read(&mut byte).unwrap(), 0, "connection not closed");
}

/// Connect, refuse, serve the first frontend on, then serve the next one.
fn check_one_frontend_at_a_time(daemon: &Daemon, socket: &Path) {
    let first = connect(socket);
    daemon.wait_for_log("frontend connected", 1);

    assert_closed_by_daemon(socket);
    daemon.wait_for_log(REFUSAL_LINE, 1);
    let second = Frontend::connect(socket, 2).unwrap();
    assert!(
        second.get_features().is_err(),
        "a second frontend was served"
    );
    daemon.wait_for_log(REFUSAL_LINE, 2);

    assert!(first.get_features().unwrap() & VERSION_1 != 0);
    drop(first);
    daemon.wait_for_log("frontend disconnected", 1);
    let next = connect(socket);
    daemon.wait_for_log("frontend connected", 2);
    drop(next);
    assert_eq!(daemon.log().matches(REFUSAL_LINE).count(), 2);
}

#[test]
fn socket_is_owner_only_and_serves_one_frontend_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("decoder.sock");
    let daemon = Daemon::start(
        daemon_command(Path::new(env!("CARGO_BIN_EXE_vhost-device-video")), &socket),
        dir.path(),
        "info",
    );
    wait_for_socket(&socket);
    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    check_one_frontend_at_a_time(&daemon, &socket);
}

#[test]
fn runs_as_an_unprivileged_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the daemon under test already runs unprivileged");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    // A copy the unprivileged user can surely execute, whatever the
    // permissions on the way to the build directory.
    let program = dir.path().join("vhost-device-video");
    fs::copy(env!("CARGO_BIN_EXE_vhost-device-video"), &program).unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("decoder.sock");
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(&program)
        .args(daemon_command(&program, &socket).get_args());
    let daemon = Daemon::start(command, dir.path(), "info");
    wait_for_socket(&socket);

    let status = fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let uids = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    assert_eq!(
        uids.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534"; 4],
        "{uids}"
    );
    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.uid(), NOBODY_UID);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    check_one_frontend_at_a_time(&daemon, &socket);
}
