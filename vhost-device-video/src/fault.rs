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
//! - `drain-refused`: STREAM_DRAIN is answered with an error (no EOS).
//! - `stream-error=N`: the Nth bitstream buffer decoded (counted over every
//!   stream, from 1) fails its stream for good, as a decoder that breaks
//!   does: the stream gets `EVENT_ERROR`, the device stays alive.
//! - `bad-layout=KIND`: the decoder reports a picture layout a driver must
//!   refuse (the pictures it writes keep the real one): `crop-wrap` (a crop
//!   rectangle whose right edge wraps around 2^32), `huge-stride` (lines of
//!   about 3 GiB per picture) or `chroma-stride` (chroma rows longer than
//!   the fourcc implies).
//! - `drain-survives-clear`: QUEUE_CLEAR of the bitstream queue keeps a
//!   STREAM_DRAIN outstanding (a seek is allowed to abort it, the device
//!   need not notice); it ends with EOS on the next picture decoded after
//!   the clear.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use thiserror::Error as ThisError;

use crate::protocol::virtio_video::QueueParams;

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
    /// STREAM_DRAIN is refused.
    DrainRefused,
    /// The Nth decoded bitstream buffer fails its stream.
    StreamError(u64),
    /// The decoder's picture layout is reported wrong.
    BadLayout(BadLayout),
    /// A drain outlives QUEUE_CLEAR(INPUT) and ends on the next picture.
    DrainSurvivesClear,
}

/// How `bad-layout` breaks the reported picture layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLayout {
    /// `crop.left + crop.width` wraps around 2^32 to inside the picture.
    CropWrap,
    /// A stride that makes every picture about 3 GiB.
    HugeStride,
    /// Chroma rows 64 bytes longer than the fourcc implies.
    ChromaStride,
}

/// A `--test-fault` value that names no fault.
#[derive(Debug, ThisError, PartialEq, Eq)]
#[error(
    "unknown test fault `{0}` (known: bogus-used-id=N, queue-clear-early, queue-clear-error, \
     slow=MS, drain-refused, stream-error=N, bad-layout=crop-wrap|huge-stride|chroma-stride, \
     drain-survives-clear)"
)]
pub struct FaultError(String);

impl FromStr for Fault {
    type Err = FaultError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || FaultError(text.to_string());
        match text.split_once('=') {
            None if text == "queue-clear-early" => Ok(Self::QueueClearEarly),
            None if text == "queue-clear-error" => Ok(Self::QueueClearError),
            None if text == "drain-refused" => Ok(Self::DrainRefused),
            None if text == "drain-survives-clear" => Ok(Self::DrainSurvivesClear),
            Some(("bogus-used-id", n)) => match n.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Self::BogusUsedId(n)),
                _ => Err(bad()),
            },
            Some(("stream-error", n)) => match n.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Self::StreamError(n)),
                _ => Err(bad()),
            },
            Some(("slow", ms)) => ms
                .parse::<u64>()
                .map(|ms| Self::Slow(Duration::from_millis(ms)))
                .map_err(|_| bad()),
            Some(("bad-layout", kind)) => match kind {
                "crop-wrap" => Ok(Self::BadLayout(BadLayout::CropWrap)),
                "huge-stride" => Ok(Self::BadLayout(BadLayout::HugeStride)),
                "chroma-stride" => Ok(Self::BadLayout(BadLayout::ChromaStride)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

static ACTIVE: OnceLock<Fault> = OnceLock::new();
static USED_COUNT: AtomicU64 = AtomicU64::new(0);
static DECODED_COUNT: AtomicU64 = AtomicU64::new(0);

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

/// Counts one decoded bitstream buffer; true when its stream must fail.
pub(crate) fn stream_error() -> bool {
    match active() {
        Some(Fault::StreamError(n)) => DECODED_COUNT.fetch_add(1, Ordering::Relaxed) + 1 == n,
        _ => false,
    }
}

/// The response QUEUE_CLEAR gets instead of clearing, if any.
pub(crate) fn queue_clear_reply<R>(ok: R, error: R) -> Option<R> {
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

/// Whether STREAM_DRAIN must be refused.
pub(crate) fn drain_refused() -> bool {
    active() == Some(Fault::DrainRefused)
}

/// Whether QUEUE_CLEAR(INPUT) must keep a drain outstanding.
pub(crate) fn drain_survives_clear() -> bool {
    active() == Some(Fault::DrainSurvivesClear)
}

/// Breaks the picture layout of a GET_PARAMS reply as `bad-layout` asks.
pub(crate) fn distort_layout(params: &mut QueueParams) {
    let Some(Fault::BadLayout(kind)) = active() else {
        return;
    };
    let height = params.frame_height.max(1);
    let planes = (params.num_planes as usize).min(params.plane_formats.len());
    match kind {
        BadLayout::CropWrap => {
            params.crop.left = u32::MAX - 15;
            params.crop.width = 32;
        }
        BadLayout::HugeStride => {
            // Three planes' worth of rows at most 1.5 x height: ~3 GiB.
            let stride = (u32::MAX / 2 / height) & !1;
            for (index, plane) in params.plane_formats[..planes].iter_mut().enumerate() {
                let rows = if index == 0 {
                    height
                } else {
                    height.div_ceil(2)
                };
                plane.stride = stride;
                plane.plane_size = stride.saturating_mul(rows);
            }
        }
        BadLayout::ChromaStride => {
            for plane in params.plane_formats[..planes].iter_mut().skip(1) {
                let stride = plane.stride.saturating_add(64);
                plane.stride = stride;
                plane.plane_size = stride.saturating_mul(height.div_ceil(2));
            }
        }
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
        assert_eq!("drain-refused".parse(), Ok(Fault::DrainRefused));
        assert_eq!("stream-error=40".parse(), Ok(Fault::StreamError(40)));
        assert_eq!(
            "drain-survives-clear".parse(),
            Ok(Fault::DrainSurvivesClear)
        );
        assert_eq!(
            "bad-layout=crop-wrap".parse(),
            Ok(Fault::BadLayout(BadLayout::CropWrap))
        );
        assert_eq!(
            "slow=250".parse(),
            Ok(Fault::Slow(Duration::from_millis(250)))
        );
        for bad in [
            "",
            "slow",
            "slow=x",
            "bogus-used-id=0",
            "stream-error=0",
            "queue-clear-early=1",
            "drain-survives-clear=1",
            "bad-layout",
            "bad-layout=other",
        ] {
            assert!(bad.parse::<Fault>().is_err(), "{bad}");
        }
    }
}
