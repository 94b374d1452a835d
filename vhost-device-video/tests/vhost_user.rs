//! Runs the daemon binary and speaks vhost-user to it as QEMU would for the
//! first messages: features, protocol features, queue count and the config
//! space, over two connections in a row.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{wait_for_socket, Daemon};

const GET_FEATURES: u32 = 1;
const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const GET_QUEUE_NUM: u32 = 17;
const GET_CONFIG: u32 = 24;
const VERSION_FLAG: u32 = 1;
const PROTOCOL_MQ: u64 = 1 << 0;
const PROTOCOL_CONFIG: u64 = 1 << 9;

fn send(sock: &mut UnixStream, request: u32, payload: &[u8]) {
    let mut msg = Vec::new();
    msg.extend_from_slice(&request.to_le_bytes());
    msg.extend_from_slice(&VERSION_FLAG.to_le_bytes());
    msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    msg.extend_from_slice(payload);
    sock.write_all(&msg).unwrap();
}

fn receive(sock: &mut UnixStream, request: u32) -> Vec<u8> {
    let mut hdr = [0u8; 12];
    sock.read_exact(&mut hdr).unwrap();
    assert_eq!(u32::from_le_bytes(hdr[0..4].try_into().unwrap()), request);
    let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
    let mut body = vec![0u8; size];
    sock.read_exact(&mut body).unwrap();
    body
}

fn u64_reply(sock: &mut UnixStream, request: u32) -> u64 {
    send(sock, request, &[]);
    u64::from_le_bytes(receive(sock, request)[..8].try_into().unwrap())
}

#[test]
fn decoder_negotiates_like_qemu_expects_and_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decoder.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_vhost-device-video"));
    command
        .arg("--socket-path")
        .arg(&path)
        .args(["--device", "decoder"]);
    let _daemon = Daemon::start(command, dir.path(), "info");
    wait_for_socket(&path);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    for _ in 0..2 {
        let mut sock = UnixStream::connect(&path).unwrap();
        let features = u64_reply(&mut sock, GET_FEATURES);
        for bit in [0, 1, 28, 29, 30, 32] {
            assert!(
                features & (1 << bit) != 0,
                "feature bit {bit} in {features:#x}"
            );
        }
        let protocol = u64_reply(&mut sock, GET_PROTOCOL_FEATURES);
        assert_eq!(
            protocol & (PROTOCOL_MQ | PROTOCOL_CONFIG),
            PROTOCOL_MQ | PROTOCOL_CONFIG
        );
        send(
            &mut sock,
            SET_PROTOCOL_FEATURES,
            &(PROTOCOL_MQ | PROTOCOL_CONFIG).to_le_bytes(),
        );
        assert_eq!(u64_reply(&mut sock, GET_QUEUE_NUM), 2);
        let mut request = Vec::new();
        for field in [0u32, 44, 0] {
            request.extend_from_slice(&field.to_le_bytes());
        }
        request.extend_from_slice(&[0; 44]);
        send(&mut sock, GET_CONFIG, &request);
        let reply = receive(&mut sock, GET_CONFIG);
        assert_eq!(u32::from_le_bytes(reply[4..8].try_into().unwrap()), 44);
        let config = &reply[12..];
        assert_eq!(config.len(), 44);
        assert_eq!(u32::from_le_bytes(config[4..8].try_into().unwrap()), 4096);
        assert!(config[12..].starts_with(b"vhost-device-video\0"));
    }
}

#[test]
fn bad_socket_fd_is_a_clean_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_vhost-device-video"))
        .args(["--socket-fd", "987"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("socket fd 987"));
}

/// CPU time (user + system) the process `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// A listening socket handed over non-blocking (as a parent may leave it)
/// is waited on, not polled: the daemon uses next to no CPU while no
/// frontend comes, then serves one.
#[test]
fn a_non_blocking_inherited_socket_is_waited_on() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inherited.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let fd = listener.as_raw_fd();
    // SAFETY: clears close-on-exec on a descriptor this test owns, so the
    // daemon inherits it.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let mut command = Command::new(env!("CARGO_BIN_EXE_vhost-device-video"));
    command.args(["--socket-fd", &fd.to_string(), "--device", "decoder"]);
    let daemon = Daemon::start(command, dir.path(), "info");
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_time(daemon.child.id());
    assert!(used < Duration::from_millis(300), "{used:?} of CPU in 1 s");
    let mut sock = UnixStream::connect(&path).unwrap();
    assert_ne!(u64_reply(&mut sock, GET_FEATURES) & (1 << 32), 0);
}
