//! Test-only misbehaviour, switched on by the hidden `--test-fault` option:
//! the guest driver's end-to-end tests need a device that breaks the rules
//! in ways a correct daemon never does. Without the option nothing here
//! changes what the daemon does.
//!
//! - `bogus-used-id=N`: the Nth used descriptor (counted over every queue,
//!   from 1) is returned with an id outside the ring, which a driver must
//!   take as a broken ring.
//! - `queue-clear-early`: QUEUE_CLEAR is answered OK while the queued
//!   buffers are kept (they come back only if decoded).
//! - `queue-clear-error`: QUEUE_CLEAR is refused and the buffers kept.
//! - `slow=MS`: every dewarper job waits MS milliseconds before it runs.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use thiserror::Error as ThisError;

/// A fault the daemon injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The Nth used descriptor gets an id past the end of the ring.
    BogusUsedId(u64),
    /// QUEUE_CLEAR answered OK, buffers kept.
    QueueClearEarly,
    /// QUEUE_CLEAR answered with an error, buffers kept.
    QueueClearError,
    /// Each dewarper job is delayed.
    Slow(Duration),
}

/// A `--test-fault` value that names no fault.
#[derive(Debug, ThisError, PartialEq, Eq)]
#[error("unknown test fault `{0}` (known: bogus-used-id=N, queue-clear-early, queue-clear-error, slow=MS)")]
pub struct FaultError(String);

impl FromStr for Fault {
    type Err = FaultError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || FaultError(text.to_string());
        match text.split_once('=') {
            None if text == "queue-clear-early" => Ok(Self::QueueClearEarly),
            None if text == "queue-clear-error" => Ok(Self::QueueClearError),
            Some(("bogus-used-id", n)) => match n.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Self::BogusUsedId(n)),
                _ => Err(bad()),
            },
            Some(("slow", ms)) => ms
                .parse::<u64>()
                .map(|ms| Self::Slow(Duration::from_millis(ms)))
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

static ACTIVE: OnceLock<Fault> = OnceLock::new();
static USED_COUNT: AtomicU64 = AtomicU64::new(0);

/// Switches `fault` on for the life of the process (once; later calls are
/// ignored).
pub fn activate(fault: Fault) {
    let _ = ACTIVE.set(fault);
    log::warn!("test fault injection active: {fault:?}");
}

fn active() -> Option<Fault> {
    ACTIVE.get().copied()
}

/// Counts one used descriptor; true when this one must get a bogus id.
pub(crate) fn bogus_used_id() -> bool {
    match active() {
        Some(Fault::BogusUsedId(n)) => USED_COUNT.fetch_add(1, Ordering::Relaxed) + 1 == n,
        _ => false,
    }
}

/// The response code QUEUE_CLEAR gets instead of clearing, if any.
pub(crate) fn queue_clear_reply(ok: u32, error: u32) -> Option<u32> {
    match active() {
        Some(Fault::QueueClearEarly) => Some(ok),
        Some(Fault::QueueClearError) => Some(error),
        _ => None,
    }
}

/// How long a dewarper job waits before it runs.
pub(crate) fn job_delay() -> Option<Duration> {
    match active() {
        Some(Fault::Slow(delay)) => Some(delay),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        assert_eq!("bogus-used-id=3".parse(), Ok(Fault::BogusUsedId(3)));
        assert_eq!("queue-clear-early".parse(), Ok(Fault::QueueClearEarly));
        assert_eq!("queue-clear-error".parse(), Ok(Fault::QueueClearError));
        assert_eq!(
            "slow=250".parse(),
            Ok(Fault::Slow(Duration::from_millis(250)))
        );
        for bad in [
            "",
            "slow",
            "slow=x",
            "bogus-used-id=0",
            "queue-clear-early=1",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }
}
