//! Finds kernel splats in a guest's kernel log: any of them fails a run.
//! The reports of both guest architectures are known: x86's (`Call Trace:`)
//! and arm64's (`Call trace:`, `Internal error: Oops:`, `Unable to handle
//! kernel ...`).

/// Markers of a kernel report, matched anywhere in a log line.
const MARKERS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "Kernel panic",
    "general protection fault",
    // arm64's die() and its faults on a kernel address.
    "Internal error:",
    "Unable to handle kernel",
    "Invalid wait context",
    "sleeping function called from invalid context",
    "scheduling while atomic",
    "possible circular locking dependency",
    "possible recursive locking",
    "inconsistent lock state",
    "lock held when returning to user space",
    "blocked for more than",
    "soft lockup",
    "hard LOCKUP",
    // RCU: "rcu_preempt detected stalls on CPUs/tasks", "self-detected stall".
    "detected stall",
    "UBSAN:",
];

/// Lines kept after a marker: enough for an arm64 Oops's register dump and
/// the call trace after it.
const EXCERPT_LINES: usize = 60;

/// The first splat in `log`, with the lines that follow it.
pub fn find(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .position(|line| MARKERS.iter().any(|marker| line.contains(marker)))?;
    Some(
        lines
            .iter()
            .skip(start)
            .take(EXCERPT_LINES)
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Lines a report may have at most: a lockdep report with its call trace
/// takes about 50; one without an end in sight is cut here.
const REPORT_MAX_LINES: usize = 200;

fn is_marker(line: &str) -> bool {
    MARKERS.iter().any(|marker| line.contains(marker))
}

fn is_trace_header(message: &str) -> bool {
    message.eq_ignore_ascii_case("Call trace:")
}

/// A line that continues a call trace: a frame, or x86's `<IRQ>`,
/// `</TASK>` and the like.
fn is_trace_line(message: &str) -> bool {
    frame(message).is_some()
        || (message.starts_with('<') && message.ends_with('>') && !message.contains(' '))
}

/// Every kernel report in `log`, in order: each from its first marker line
/// to the end of its first call trace, so that what one report names is
/// never taken from the next. Marker lines before the call trace belong to
/// the same report (arm64's `Unable to handle kernel ...` is followed by
/// `Internal error: Oops:`, then the trace).
pub fn reports(log: &str) -> Vec<String> {
    let mut reports = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut in_trace = false;
    for line in log.lines() {
        let text = message(line);
        if !current.is_empty() {
            let trace_over = in_trace && !is_trace_line(text);
            if trace_over || current.len() >= REPORT_MAX_LINES {
                reports.push(current.join("\n"));
                current.clear();
                in_trace = false;
            }
        }
        if current.is_empty() {
            if !is_marker(line) {
                continue;
            }
        } else if is_trace_header(text) {
            in_trace = true;
        }
        current.push(line);
    }
    if !current.is_empty() {
        reports.push(current.join("\n"));
    }
    reports
}

/// A report names all of `terms` when each term has an alternative the
/// report contains: the first such report.
pub fn naming<'a>(reports: &'a [String], terms: &[Vec<String>]) -> Option<&'a String> {
    reports.iter().find(|report| {
        terms
            .iter()
            .all(|alternatives| alternatives.iter().any(|a| report.contains(a.as_str())))
    })
}

/// A log line without its printk timestamp (`[   12.345678] `).
fn message(line: &str) -> &str {
    let trimmed = line.trim();
    if let Some(rest) = trimmed.strip_prefix('[') {
        if let Some((stamp, text)) = rest.split_once(']') {
            if stamp.trim().chars().all(|c| c.is_ascii_digit() || c == '.') {
                return text.trim();
            }
        }
    }
    trimmed
}

/// The first line of a splat, for one-line summaries.
pub fn headline(excerpt: &str) -> &str {
    message(excerpt.lines().next().unwrap_or(""))
}

/// What kind of report a splat is: the most specific marker its first
/// line has (`scheduling while atomic` rather than `BUG:`), for counting
/// runs by what they showed.
pub fn kind(excerpt: &str) -> &'static str {
    let first = excerpt.lines().next().unwrap_or("");
    MARKERS
        .iter()
        .filter(|marker| first.contains(*marker))
        .max_by_key(|marker| marker.len())
        .copied()
        .unwrap_or("kernel report")
}

/// Frames of a module named at most, innermost first.
const MODULE_FRAMES: usize = 4;

/// A call trace line's frame: `dw100_irq_handler+0x9c/0x150 [dw100]` gives
/// `("dw100_irq_handler", Some("[dw100]"))`; `<TASK>`, register lines and
/// the like give nothing.
fn frame(line: &str) -> Option<(&str, Option<&str>)> {
    let mut words = line.split_whitespace().filter(|w| *w != "?");
    let (function, offsets) = words.next()?.split_once('+')?;
    if !offsets.starts_with("0x") || !offsets.contains("/0x") {
        return None;
    }
    let module = words.find(|w| w.starts_with('[') && w.ends_with(']'));
    Some((function, module))
}

/// The first run of module frames in the splat's call trace (x86 `Call
/// Trace:`, arm64 `Call trace:`), innermost first, as `function [module]`
/// joined by ` <- `: on these guests the code under test is a module, so
/// this names who took the lock or faulted and who called it.
pub fn module_frames(excerpt: &str) -> Option<String> {
    let mut in_trace = false;
    let mut frames: Vec<String> = Vec::new();
    for line in excerpt.lines().map(message) {
        if line.eq_ignore_ascii_case("Call trace:") {
            in_trace = true;
            continue;
        }
        if !in_trace {
            continue;
        }
        match frame(line) {
            Some((function, Some(module))) => frames.push(format!("{function} {module}")),
            Some((_, None)) if !frames.is_empty() => break,
            _ => {}
        }
    }
    frames.truncate(MODULE_FRAMES);
    (!frames.is_empty()).then(|| frames.join(" <- "))
}

/// The headline, and the module frames when the call trace has some.
pub fn summary(excerpt: &str) -> String {
    match module_frames(excerpt) {
        Some(frames) => format!("{} (in {frames})", headline(excerpt)),
        None => headline(excerpt).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unfixed dw100 driver on an arm64 PREEMPT_RT kernel: its hard
    /// interrupt handler completes the job, taking vb2's sleeping lock.
    const ARM64_SLEEPING_IN_IRQ: &str = "\
[    5.201234] dw100 32e30000.dwe: dw100 v4l2 m2m registered as /dev/video0
[   12.345678] BUG: sleeping function called from invalid context at kernel/locking/spinlock_rt.c:48
[   12.345900] in_atomic(): 1, irqs_disabled(): 128, non_block: 0, pid: 0, name: swapper/0
[   12.346000] preempt_count: 10001, expected: 0
[   12.346100] RCU nest depth: 0, expected: 0
[   12.346200] CPU: 0 UID: 0 PID: 0 Comm: swapper/0 Tainted: G           O       6.12.118+deb12-rt-arm64 #1  Debian 6.12.118-1~deb12u1
[   12.346300] Tainted: [O]=OOT_MODULE
[   12.346400] Hardware name: NXP i.MX 8M Plus EVK board (DT)
[   12.346500] Call trace:
[   12.346600]  dump_backtrace+0x98/0xf0
[   12.346700]  show_stack+0x20/0x38
[   12.346800]  dump_stack_lvl+0x74/0x90
[   12.346900]  dump_stack+0x18/0x28
[   12.347000]  __might_resched+0x14c/0x1f0
[   12.347100]  rt_spin_lock+0x38/0xd8
[   12.347200]  vb2_buffer_done+0x1c4/0x2d0 [videobuf2_common]
[   12.347300]  v4l2_m2m_buf_done_and_job_finish+0x4c/0xd8 [v4l2_mem2mem]
[   12.347400]  dw100_irq_handler+0x9c/0x150 [dw100]
[   12.347500]  __handle_irq_event_percpu+0x64/0x260
[   12.347600]  handle_irq_event+0x54/0xb8
[   12.347700]  handle_fasteoi_irq+0xac/0x240
[   12.347800]  generic_handle_domain_irq+0x34/0x58
[   12.347900]  gic_handle_irq+0x54/0x120
";

    /// A NULL dereference in the driver's handler: arm64's fault report,
    /// then die()'s `Internal error: Oops:` with the registers.
    const ARM64_OOPS: &str = "\
[   20.100000] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000010
[   20.100100] Mem abort info:
[   20.100200]   ESR = 0x0000000096000005
[   20.100300]   EC = 0x25: DABT (current EL), IL = 32 bits
[   20.100400] Data abort info:
[   20.100500] [0000000000000010] user address but active_mm is swapper
[   20.100600] Internal error: Oops: 0000000096000005 [#1] PREEMPT_RT SMP
[   20.100700] Modules linked in: dw100(O) v4l2_mem2mem videobuf2_dma_contig videobuf2_memops videobuf2_v4l2 videodev videobuf2_common mc
[   20.100800] CPU: 1 UID: 0 PID: 87 Comm: irq/100-dw100 Tainted: G           O       6.12.118+deb12-rt-arm64 #1
[   20.100900] pstate: 60400005 (nZCv daif +PAN -UAO -TCO -DIT -SSBS BTYPE=--)
[   20.101000] pc : dw100_irq_handler+0x3c/0x150 [dw100]
[   20.101100] lr : irq_forced_thread_fn+0x3c/0xb8
[   20.101200] sp : ffff800082f4bd80
[   20.101300] Call trace:
[   20.101400]  dw100_irq_handler+0x3c/0x150 [dw100]
[   20.101500]  irq_forced_thread_fn+0x3c/0xb8
[   20.101600]  irq_thread+0x18c/0x2c8
[   20.101700]  kthread+0x118/0x128
[   20.101800]  ret_from_fork+0x10/0x20
[   20.101900] Code: f9400a61 b9400020 36000060 d2800000 (f9400800)
";

    /// sysrq-w's dump of a task left in D state: reported as D state, not
    /// as a splat (the harness triggers it itself).
    const ARM64_BLOCKED_DUMP: &str = "\
[   30.000000] sysrq: Show Blocked State
[   30.000100] task:v4l2-ctl        state:D stack:0     pid:112   tgid:112   ppid:1      flags:0x0000000c
[   30.000200] Call trace:
[   30.000300]  __switch_to+0xf0/0x150
[   30.000400]  __schedule+0x2f4/0x8c0
[   30.000500]  schedule+0x54/0x110
[   30.000600]  v4l2_m2m_cancel_job+0x118/0x1a0 [v4l2_mem2mem]
[   30.000700]  v4l2_m2m_ctx_release+0x2c/0x50 [v4l2_mem2mem]
[   30.000800]  dw100_release+0x30/0x68 [dw100]
";

    #[test]
    fn finds_sleeping_in_atomic() {
        let log = "[    1.0] booting\n[    2.0] BUG: sleeping function called from invalid context at kernel/locking/spinlock_rt.c:48\n[    2.0] in_atomic(): 1\n";
        let excerpt = find(log).unwrap_or_default();
        assert!(headline(&excerpt).contains("sleeping function called"));
        assert!(excerpt.contains("in_atomic"));
    }

    #[test]
    fn finds_hung_task_and_lockdep() {
        assert!(find("INFO: task cat:12 blocked for more than 20 seconds.").is_some());
        assert!(find("[ BUG: Invalid wait context ]").is_some());
    }

    #[test]
    fn clean_log_has_no_splat() {
        assert!(find("[    0.0] Linux version 6.12\nvdv-init: userspace reached\n").is_none());
    }

    #[test]
    fn names_an_arm64_sleeping_lock_in_hard_irq() {
        let excerpt = find(ARM64_SLEEPING_IN_IRQ).unwrap_or_default();
        assert_eq!(
            headline(&excerpt),
            "BUG: sleeping function called from invalid context at kernel/locking/spinlock_rt.c:48"
        );
        assert_eq!(
            module_frames(&excerpt).as_deref(),
            Some(
                "vb2_buffer_done [videobuf2_common] <- v4l2_m2m_buf_done_and_job_finish [v4l2_mem2mem] <- dw100_irq_handler [dw100]"
            )
        );
        assert!(summary(&excerpt).starts_with("BUG: sleeping function called"));
        assert!(summary(&excerpt).ends_with("dw100_irq_handler [dw100])"));
    }

    #[test]
    fn names_an_arm64_oops_from_its_first_line() {
        let excerpt = find(ARM64_OOPS).unwrap_or_default();
        assert_eq!(
            headline(&excerpt),
            "Unable to handle kernel NULL pointer dereference at virtual address 0000000000000010"
        );
        assert_eq!(
            module_frames(&excerpt).as_deref(),
            Some("dw100_irq_handler [dw100]")
        );
        // The call trace survives the register dump in the excerpt.
        assert!(excerpt.contains("ret_from_fork"));
        // die()'s line alone is a splat too.
        let internal = "[   20.1] Internal error: Oops: 0000000096000005 [#1] PREEMPT_RT SMP";
        assert!(find(internal).is_some());
    }

    #[test]
    fn finds_arm64_lockdep_and_rcu_stalls() {
        let lockdep = "[    9.0] =============================\n[    9.0] [ BUG: Invalid wait context ]\n[    9.0] 6.12.118-debug-rt-arm64 #1 Not tainted\n";
        assert_eq!(
            headline(&find(lockdep).unwrap_or_default()),
            "[ BUG: Invalid wait context ]"
        );
        for stall in [
            "[   61.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "[   61.0] rcu: INFO: rcu_preempt self-detected stall on CPU",
        ] {
            assert!(find(stall).is_some(), "{stall}");
        }
    }

    #[test]
    fn a_blocked_task_dump_is_no_splat() {
        assert!(find(ARM64_BLOCKED_DUMP).is_none());
    }

    /// A real capture: the unfixed upstream dw100 on the arm64 debug-rt
    /// kernel (imx8mp-evk console, v4l2-ctl streaming four frames). Lockdep
    /// reports the invalid wait context, then DEBUG_ATOMIC_SLEEP the same
    /// lock as a sleeping function in atomic context.
    const ARM64_DW100_UNFIXED: &str = include_str!("../testdata/dw100-unfixed-debug-rt-arm64.log");

    fn dw100_terms() -> Vec<Vec<String>> {
        [
            vec!["dw100_irq_handler"],
            vec![
                "Invalid wait context",
                "sleeping function called from invalid context",
            ],
            vec!["v4l2_m2m_", "vb2_"],
        ]
        .iter()
        .map(|alternatives| alternatives.iter().map(|a| a.to_string()).collect())
        .collect()
    }

    #[test]
    fn names_the_real_arm64_dw100_splat() {
        let excerpt = find(ARM64_DW100_UNFIXED).unwrap_or_default();
        assert_eq!(
            summary(&excerpt),
            "[ BUG: Invalid wait context ] (in v4l2_m2m_get_curr_priv [v4l2_mem2mem] <- dw100_irq_handler [dw100])"
        );
        let found = reports(ARM64_DW100_UNFIXED);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(kind(&found[0]), "Invalid wait context");
        assert!(found[0].contains("v4l2_m2m_get_curr_priv"));
        // Each report ends with its own call trace.
        assert!(found[0].trim_end().ends_with("ret_from_fork+0x10/0x20"));
        assert!(!found[0].contains("sleeping function"));
        assert_eq!(
            kind(&found[1]),
            "sleeping function called from invalid context"
        );
        assert_eq!(
            module_frames(&found[1]).as_deref(),
            Some("v4l2_m2m_get_curr_priv [v4l2_mem2mem] <- dw100_irq_handler [dw100]")
        );
        assert_eq!(naming(&found, &dw100_terms()), Some(&found[0]));
    }

    #[test]
    fn a_splat_elsewhere_names_nothing_of_the_driver() {
        // An unrelated lockdep report, then sysrq-w's dump of a task in the
        // driver: the dump is no report, so nothing names dw100_irq_handler.
        let log = "\
[    9.0] WARNING: possible circular locking dependency detected
[    9.0] kworker/u8:1/40 is trying to acquire lock:
[    9.0] Call trace:
[    9.0]  dump_backtrace+0xac/0xd4
[    9.0]  clk_pm_runtime_get+0x1c/0x90
[    9.0]  imx_pgc_power_up+0x44/0x1f0
[   12.0] dw100 32e30000.dwe: dw100 v4l2 m2m registered as /dev/video0
[   30.0] sysrq: Show Blocked State
[   30.0] task:v4l2-ctl        state:D stack:0     pid:112
[   30.0] Call trace:
[   30.0]  v4l2_m2m_cancel_job+0x118/0x1a0 [v4l2_mem2mem]
[   30.0]  dw100_irq_handler+0x8c/0x11c [dw100]
";
        let found = reports(log);
        assert_eq!(found.len(), 1);
        assert_eq!(kind(&found[0]), "possible circular locking dependency");
        assert!(!found[0].contains("dw100"));
        assert_eq!(naming(&found, &dw100_terms()), None);
        // The right frames under the wrong headline are not enough either.
        let warning = "[ 1.0] WARNING: CPU: 0 PID: 0 at kernel/irq/manage.c:1 foo\n[ 1.0] Call trace:\n[ 1.0]  v4l2_m2m_get_curr_priv+0x1c/0x40 [v4l2_mem2mem]\n[ 1.0]  dw100_irq_handler+0x8c/0x11c [dw100]\n";
        assert_eq!(naming(&reports(warning), &dw100_terms()), None);
    }

    #[test]
    fn an_oops_is_one_report_with_its_trace() {
        let found = reports(ARM64_OOPS);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("Internal error: Oops"));
        assert!(found[0].contains("dw100_irq_handler+0x3c/0x150 [dw100]"));
        assert_eq!(kind(&found[0]), "Unable to handle kernel");
        assert_eq!(
            kind("[ 1.0] BUG: scheduling while atomic: irq/100-dw100/87/0x00000002"),
            "scheduling while atomic"
        );
    }

    #[test]
    fn names_an_x86_frame_too() {
        let x86 = "BUG: sleeping function called from invalid context at kernel/locking/spinlock_rt.c:48\nCall Trace:\n <TASK>\n dump_stack_lvl+0x4e/0x70\n ? rt_negative_fire+0x10/0x20 [rt_negative]\n";
        assert_eq!(
            module_frames(x86).as_deref(),
            Some("rt_negative_fire [rt_negative]")
        );
    }
}
