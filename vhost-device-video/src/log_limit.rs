//! Rate limits for the log lines a guest can make the daemon write (a bad
//! chain, a broken bitstream, a failed job): every one of them would
//! otherwise be one line per request, and a guest could fill the host's logs
//! at the rate it kicks.
//!
//! Each call site of [`warn_limited!`] writes at most [`BURST`] lines per
//! [`WINDOW_MS`]; the first line written after some were left out says how
//! many.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Lines one call site may write per window.
pub const BURST: u64 = 10;
/// The window, in milliseconds.
pub const WINDOW_MS: u64 = 10_000;

/// `window_start_ms` before the first line.
const NO_WINDOW: u64 = u64::MAX;

/// The budget of one call site: its window starts with the first line
/// written after the previous one ended.
pub struct RateLimit {
    window_start_ms: AtomicU64,
    written: AtomicU64,
    left_out: AtomicU64,
}

impl RateLimit {
    /// A call site that has written nothing yet.
    pub const fn new() -> Self {
        Self {
            window_start_ms: AtomicU64::new(NO_WINDOW),
            written: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now; if so, how many lines were left
    /// out since the last one written.
    pub fn check(&self) -> Option<u64> {
        self.check_at(now_ms())
    }

    fn check_at(&self, now_ms: u64) -> Option<u64> {
        let start = self.window_start_ms.load(Ordering::Relaxed);
        let expired = start == NO_WINDOW || now_ms.saturating_sub(start) >= WINDOW_MS;
        if expired
            && self
                .window_start_ms
                .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.written.store(0, Ordering::Relaxed);
        }
        if self.written.fetch_add(1, Ordering::Relaxed) < BURST {
            Some(self.left_out.swap(0, Ordering::Relaxed))
        } else {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds since the first call.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(elapsed).unwrap_or(u64::MAX)
}

/// `log::warn!`, at most [`BURST`] lines per [`WINDOW_MS`] from this call
/// site. For lines a guest can trigger.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::RateLimit = $crate::log_limit::RateLimit::new();
        match LIMIT.check() {
            Some(0) => log::warn!($($arg)+),
            Some(left_out) => log::warn!(
                "{} ({left_out} similar lines left out)",
                format_args!($($arg)+)
            ),
            None => {}
        }
    }};
}
pub(crate) use warn_limited;

/// A logger for unit tests that keeps every line, so a test can count the
/// lines a flood of bad requests wrote.
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Mutex, Once};

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Warn
        }

        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                let line = record.args().to_string();
                LINES.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        }

        fn flush(&self) {}
    }

    /// Installs the logger (once per test process).
    pub(crate) fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            static LOGGER: Capture = Capture;
            if log::set_logger(&LOGGER).is_ok() {
                log::set_max_level(log::LevelFilter::Warn);
            }
        });
    }

    /// Lines written so far that contain `needle`.
    pub(crate) fn count(needle: &str) -> usize {
        LINES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_silence_then_the_count_of_lines_left_out() {
        let limit = RateLimit::new();
        let written: Vec<_> = (0..25).filter_map(|i| limit.check_at(100 + i)).collect();
        assert_eq!(written, vec![0; BURST as usize]);
        assert_eq!(limit.check_at(100 + WINDOW_MS - 1), None);
        assert_eq!(limit.check_at(100 + WINDOW_MS), Some(16));
        assert_eq!(limit.check_at(100 + WINDOW_MS + 1), Some(0));
    }
}
