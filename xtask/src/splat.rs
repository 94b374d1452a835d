//! Finds kernel splats in a guest's kernel log: any of them fails a run.

/// Markers of a kernel report, matched anywhere in a log line.
const MARKERS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "Kernel panic",
    "general protection fault",
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
    "UBSAN:",
];

/// Lines kept after a marker: enough for the report's call trace.
const EXCERPT_LINES: usize = 40;

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

/// The first line of a splat, for one-line summaries.
pub fn headline(excerpt: &str) -> &str {
    excerpt.lines().next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
