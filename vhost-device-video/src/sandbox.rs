//! The daemon's confinement once it is set up: FFmpeg parses untrusted
//! bitstreams in the process that maps all of the guest's RAM, so after its
//! socket is bound the daemon may only make the system calls it needs
//! (seccomp, all threads), opens no new files but the few read-only ones
//! glibc and FFmpeg look at (Landlock), and gains no privileges. On by
//! default; `--no-sandbox` turns it off for debugging. The allowed calls and
//! why each is there: the Sandbox section of `docs/hostile-input.md`.

use std::path::Path;
use std::sync::Mutex;

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
    RulesetStatus, ABI,
};
use log::{info, warn};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use thiserror::Error as ThisError;

/// Why the daemon could not confine itself.
#[derive(Debug, ThisError)]
pub enum SandboxError {
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("cannot drop the right to gain privileges: {0}")]
    NoNewPrivs(std::io::Error),
    /// The Landlock ruleset could not be made or applied.
    #[error("cannot restrict the filesystem: {0}")]
    Landlock(#[from] RulesetError),
    /// This architecture has no filter.
    #[error("no system call filter for {0}")]
    Arch(&'static str),
    /// The filter could not be built or applied.
    #[error("cannot apply the system call filter: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// The filter could not be compiled.
    #[error("cannot build the system call filter: {0}")]
    Backend(#[from] seccompiler::BackendError),
}

/// Files read after setup: the CPU count glibc's `sysconf` and FFmpeg's
/// thread setup read, and the process's own `/proc` entries (thread names,
/// memory maps glibc reads for stack bounds).
const READABLE: [&str; 2] = ["/sys/devices/system/cpu", "/proc/self"];

/// Restricts the filesystem of the calling thread and of every thread it
/// starts afterwards (Landlock has no way to reach threads already running,
/// so this comes first): reading only [`READABLE`], and in `socket_dir`
/// (the socket path's directory) creating and removing the socket. Where
/// the kernel lacks Landlock this is logged and the daemon goes on.
pub fn restrict_filesystem(socket_dir: Option<&Path>) -> Result<(), SandboxError> {
    let abi = ABI::V3;
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .create()?
        .add_rules(path_beneath_rules(READABLE, AccessFs::from_read(abi)))?;
    if let Some(dir) = socket_dir {
        ruleset = ruleset.add_rules(path_beneath_rules(
            [dir],
            AccessFs::MakeSock | AccessFs::RemoveFile | AccessFs::ReadDir,
        ))?;
    }
    let status = ruleset.restrict_self()?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => info!("sandbox: filesystem restricted (Landlock)"),
        RulesetStatus::PartiallyEnforced => {
            info!("sandbox: filesystem partly restricted (older Landlock)")
        }
        RulesetStatus::NotEnforced => {
            warn!("sandbox: this kernel has no Landlock; the filesystem is not restricted")
        }
    }
    Ok(())
}

/// System calls the daemon makes once its socket is bound, grouped by what
/// needs them (`docs/hostile-input.md` has the table).
fn allowed() -> Vec<libc::c_long> {
    let mut calls = vec![
        // Memory: the allocator, FFmpeg's frame pools, thread stacks.
        libc::SYS_brk,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_get_mempolicy,
        libc::SYS_set_mempolicy,
        libc::SYS_mlock,
        // Threads: FFmpeg's decoding threads, the device's workers and
        // command threads, the vring threads.
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_set_tid_address,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_sched_setaffinity,
        libc::SYS_prctl,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_tgkill,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_getrandom,
        libc::SYS_prlimit64,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        // Files: logs on stderr, the Landlock-limited reads of READABLE,
        // eventfds.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_openat,
        libc::SYS_close,
        libc::SYS_lseek,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_statx,
        libc::SYS_statfs,
        libc::SYS_fstatfs,
        libc::SYS_getdents64,
        libc::SYS_readlinkat,
        libc::SYS_fcntl,
        libc::SYS_ioctl,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_eventfd2,
        libc::SYS_ppoll,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        // The vhost-user socket: frontends, their fds (memory, eventfds),
        // a second frontend refused.
        libc::SYS_accept4,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_shutdown,
        libc::SYS_getsockname,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_poll,
        libc::SYS_epoll_wait,
        libc::SYS_access,
        libc::SYS_readlink,
        libc::SYS_dup2,
        libc::SYS_arch_prctl,
    ]);
    calls
}

/// Compiles the filter: every call of [`allowed`] passes, any other kills
/// the process (`action`, or the process's death).
fn filter(on_other: SeccompAction) -> Result<BpfProgram, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SandboxError::Arch(std::env::consts::ARCH))?;
    let rules = allowed()
        .into_iter()
        .map(|call| (call, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(rules, on_other, SeccompAction::Allow, arch)?;
    Ok(filter.try_into()?)
}

/// Applies the system call filter to every thread of the process; from
/// then on, any call not on the list kills the whole process. With `log`
/// such a call is allowed and logged by the kernel instead (audit
/// `type=1326` lines in the kernel log), to find what a new code path
/// needs.
pub fn restrict_system_calls(log: bool) -> Result<(), SandboxError> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only
    // and changes nothing but this process's credentials rules.
    let dropped = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if dropped != 0 {
        return Err(SandboxError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    let action = if log {
        SeccompAction::Log
    } else {
        SeccompAction::KillProcess
    };
    let program = filter(action)?;
    seccompiler::apply_filter_all_threads(&program)?;
    info!(
        "sandbox: system calls restricted{}",
        if log { " (log only)" } else { "" }
    );
    Ok(())
}

/// The filter waiting for the socket to be bound: `Some(log)` once armed.
static ARMED: Mutex<Option<bool>> = Mutex::new(None);

/// Makes [`after_bind`] apply the filter (with `log`, see
/// [`restrict_system_calls`]).
pub fn arm(log: bool) {
    *ARMED.lock().unwrap_or_else(|p| p.into_inner()) = Some(log);
}

/// Applies the filter if [`arm`] asked for it; the transport calls this once
/// its listening socket exists, the last thing it needs `socket`, `bind`
/// and `listen` for.
pub(crate) fn after_bind() -> Result<(), SandboxError> {
    let armed = ARMED.lock().unwrap_or_else(|p| p.into_inner()).take();
    match armed {
        Some(log) => restrict_system_calls(log),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    /// Runs the ignored test `name` alone in a child process of the test
    /// binary: a filter, once applied, stays for the process's life.
    fn run_alone(name: &str) -> std::process::ExitStatus {
        let exe = std::env::current_exe().expect("the test binary's path");
        Command::new(exe)
            .args([name, "--exact", "--include-ignored", "--test-threads=1"])
            .status()
            .expect("run the test binary")
    }

    /// Run alone in a child process by the test below: the filter applied,
    /// a thread (as FFmpeg's decoding threads are) starts a program, which
    /// the daemon never does.
    #[test]
    #[ignore = "run in a child process by a_forbidden_call_kills_the_process"]
    fn forbidden_call_in_a_thread() {
        restrict_system_calls(false).expect("the filter applies");
        let worker = std::thread::spawn(|| {
            let _ = Command::new("/bin/true").status();
        });
        let _ = worker.join();
        // Reached only if the call went through.
        std::process::exit(0);
    }

    /// The filter kills the process (SIGSYS) at the first call off the
    /// list, whichever thread makes it.
    #[test]
    fn a_forbidden_call_kills_the_process() {
        let status = run_alone("sandbox::tests::forbidden_call_in_a_thread");
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
    }

    /// Run alone in a child process by the test below: as
    /// [`forbidden_call_in_a_thread`], with `--sandbox-log`'s filter.
    #[test]
    #[ignore = "run in a child process by a_logging_filter_lets_calls_through"]
    fn forbidden_call_logged() {
        restrict_system_calls(true).expect("the filter applies");
        let worker = std::thread::spawn(|| Command::new("/bin/true").status());
        let started = worker.join().map(|status| status.is_ok());
        std::process::exit(if started.unwrap_or(false) { 0 } else { 1 });
    }

    /// `--sandbox-log` lets a call off the list through (the kernel logs it,
    /// audit type 1326, where its audit log is enabled): the process lives
    /// on and the program it starts runs.
    #[test]
    fn a_logging_filter_lets_calls_through() {
        let status = run_alone("sandbox::tests::forbidden_call_logged");
        assert!(status.success(), "{status:?}");
    }

    /// Everything the daemon's own code paths call is on the list: the
    /// filter applied, a thread starts, sleeps, logs and ends.
    #[test]
    #[ignore = "run in a child process by allowed_calls_pass"]
    fn allowed_calls_in_a_thread() {
        restrict_system_calls(false).expect("the filter applies");
        let worker = std::thread::Builder::new()
            .name("allowed".into())
            .spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                eprintln!("still alive");
            })
            .expect("a thread");
        worker.join().expect("the thread ends");
    }

    #[test]
    fn allowed_calls_pass() {
        let status = run_alone("sandbox::tests::allowed_calls_in_a_thread");
        assert!(status.success(), "{status:?}");
    }
}
