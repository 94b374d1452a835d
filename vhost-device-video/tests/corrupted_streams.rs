//! 1,000 corrupted variants of a real H.264 stream through the decoding
//! engine and the picture writer: bit flips, truncations, spliced garbage,
//! repeated and dropped ranges, each cut into buffers of random sizes as a
//! guest would queue them. No variant may crash, take longer than
//! `VARIANT_LIMIT`, or make the process's peak memory grow by more than
//! `PEAK_GROWTH_LIMIT` once the decoder has warmed up.
//!
//! The variants are the same on every run (seeded generator); a failure
//! names the variant and its seed.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use vhost_device_video::engine::decode::{
    write_picture, CodedFormat, DecodeEvent, DecoderFactory, FfmpegDecoders, PictureLayout,
    PixelFormat,
};

/// 12 frames of 160x120 `testsrc2`, x264 with B-frames and two GOPs.
const STREAM: &[u8] = include_bytes!("data/testsrc2-160x120.h264");
const VARIANTS: u64 = 1000;
const SEED: u64 = 0x5eed_0fc0_de00;
/// Variants decoded before the memory baseline is taken.
const WARMUP: u64 = 50;
/// One variant decodes in milliseconds; a stuck decoder shows as far more.
const VARIANT_LIMIT: Duration = Duration::from_secs(20);
/// Allowed growth of the peak resident set after warm-up.
const PEAK_GROWTH_LIMIT_KIB: u64 = 64 << 10;
/// Largest picture written out, as a guest resource would bound it.
const MAX_PICTURE: u64 = 16 << 20;

/// splitmix64: small, seedable, good enough to spread mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One to three mutations of `stream`.
fn mutate(stream: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = stream.to_vec();
    for _ in 0..1 + rng.below(3) {
        if data.is_empty() {
            break;
        }
        let at = rng.below(data.len());
        match rng.below(6) {
            0 => {
                for _ in 0..1 + rng.below(32) {
                    let bit = rng.below(data.len() * 8);
                    data[bit / 8] ^= 1 << (bit % 8);
                }
            }
            1 => data.truncate(at),
            2 => {
                let len = 1 + rng.below(512);
                let garbage = rng.bytes(len);
                data.splice(at..at, garbage);
            }
            3 => {
                let end = (at + 1 + rng.below(1024)).min(data.len());
                let garbage = rng.bytes(end - at);
                data.splice(at..end, garbage);
            }
            4 => {
                let end = (at + 1 + rng.below(2048)).min(data.len());
                let copy = data[at..end].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, copy);
            }
            _ => {
                let end = (at + 1 + rng.below(2048)).min(data.len());
                data.drain(at..end);
            }
        }
    }
    data
}

/// Decodes `data` in buffers of random sizes and writes every picture out
/// as NV12 or YUV420; returns the pictures written.
fn decode(factory: &FfmpegDecoders, data: &[u8], rng: &mut Rng) -> usize {
    let mut decoder = factory.create(CodedFormat::H264).unwrap();
    let format = if rng.below(2) == 0 {
        PixelFormat::Nv12
    } else {
        PixelFormat::Yuv420
    };
    let mut events = Vec::new();
    let mut rest = data;
    let mut timestamp = 0;
    while !rest.is_empty() {
        let (buffer, next) = rest.split_at((1 + rng.below(4096)).min(rest.len()));
        rest = next;
        // An engine error ends the stream, as the device reports it.
        if decoder.decode(buffer, timestamp, &mut events).is_err() {
            break;
        }
        timestamp += 1;
    }
    let _ = decoder.flush(&mut events);
    let mut written = 0;
    for event in events {
        let DecodeEvent::Picture(picture) = event else {
            continue;
        };
        let (width, height) = picture.size();
        let Some(planes) = picture.planes() else {
            continue;
        };
        let layout = PictureLayout::packed(format, width, height);
        assert!(
            layout.total_size() <= MAX_PICTURE,
            "{width}x{height} picture from a 160x120 stream"
        );
        let mut out = vec![0u8; layout.total_size() as usize];
        let result = write_picture(&planes, width, height, &layout, &mut |offset, row| {
            let start = offset as usize;
            match out.get_mut(start..start + row.len()) {
                Some(dest) => {
                    dest.copy_from_slice(row);
                    true
                }
                None => false,
            }
        });
        if result.is_ok() {
            written += 1;
        }
    }
    written
}

/// Peak resident set of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

#[test]
fn a_thousand_corrupted_streams_neither_crash_hang_nor_grow_memory() {
    let factory = FfmpegDecoders::new(1).unwrap();
    // Damaged input makes FFmpeg log thousands of lines; the checks here
    // are what matters.
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Quiet);
    let mut clean_rng = Rng(SEED);
    assert!(
        decode(&factory, STREAM, &mut clean_rng) >= 12,
        "the unmodified stream must decode fully"
    );

    // The decoding runs on a worker so that a stuck variant fails the test
    // instead of blocking it.
    let (results, received) = mpsc::channel();
    let worker = thread::spawn(move || {
        for variant in 0..VARIANTS {
            let mut rng = Rng(SEED ^ variant.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let data = mutate(STREAM, &mut rng);
            let started = Instant::now();
            let pictures = decode(&factory, &data, &mut rng);
            if results
                .send((variant, pictures, started.elapsed()))
                .is_err()
            {
                return;
            }
        }
    });

    let mut baseline = None;
    let mut pictures_total = 0;
    let mut slowest = Duration::ZERO;
    for expected in 0..VARIANTS {
        let (variant, pictures, took) = match received.recv_timeout(VARIANT_LIMIT) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "variant {expected} (seed {SEED:#x}) did not finish within {VARIANT_LIMIT:?}"
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the decoding worker died at variant {expected} (seed {SEED:#x})")
            }
        };
        assert_eq!(variant, expected);
        pictures_total += pictures;
        slowest = slowest.max(took);
        if variant + 1 == WARMUP {
            baseline = Some(peak_rss_kib());
        }
    }
    worker.join().unwrap();
    let baseline = baseline.unwrap();
    let peak = peak_rss_kib();
    eprintln!(
        "{VARIANTS} variants: {pictures_total} pictures written, slowest {slowest:?}, \
         peak RSS {baseline} KiB after warm-up, {peak} KiB at the end"
    );
    // VmHWM can read lower later: the kernel folds the resident size into
    // the recorded peak lazily, and the first reading took the larger one.
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth <= PEAK_GROWTH_LIMIT_KIB,
        "peak RSS grew by {growth} KiB (limit {PEAK_GROWTH_LIMIT_KIB} KiB)"
    );
}
