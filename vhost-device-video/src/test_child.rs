//! Runs one unit test alone in a child process of the test binary, so that
//! the memory it takes can be measured apart from the tests running beside
//! it.
//!
//! The child reports its own peak (`VmHWM`, which starts afresh at exec):
//! the `ru_maxrss` that `wait4` gives counts the parent's memory too, as the
//! child shared it until its exec.

use std::process::Command;

const MARKER: &str = "peak-resident-kib:";

/// Runs the ignored unit test `name` (its full path) alone in a child
/// process, checks that it passed, and returns the peak resident size it
/// reported with [`report_peak`], in KiB.
pub(crate) fn peak_rss_kib(name: &str) -> u64 {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed in its child process: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.split_once(MARKER))
        .and_then(|(_, kib)| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} reported no peak: {stdout}"))
}

/// Prints this process's peak resident size for [`peak_rss_kib`]; the last
/// thing a child test does.
pub(crate) fn report_peak() {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status");
    // On a line of its own: libtest has written the test's name before it.
    println!("\n{MARKER} {kib}");
}
