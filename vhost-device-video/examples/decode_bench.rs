//! Decoding speed of the backend's engine alone, on the host: the stream is
//! fed to the engine as the device feeds it (Annex B byte chunks through the
//! engine's parser, or one IVF frame per input), `--passes` times over, and
//! every picture is dropped as soon as it comes out (no copy, no
//! conversion), which is what `ffmpeg -f null` does with its frames.
//!
//! ```text
//! decode_bench --codec h264|hevc|vp8|vp9|av1 --threads N [--passes P] STREAM
//! ```
//!
//! Prints one line: `frames F wall_s W cpu_s C`, where C is the CPU time the
//! process spent (all threads) while decoding.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use vhost_device_video::engine::decode::{
    CodedFormat, DecodeEvent, DecoderFactory, FfmpegDecoders,
};

/// Bytes per input for Annex B streams, about what one guest bitstream
/// buffer of a 1080p stream carries.
const CHUNK: usize = 256 << 10;
const IVF_HEADER: usize = 32;
const IVF_FRAME_HEADER: usize = 12;

#[derive(Parser)]
#[command(about = "Decoding speed of the backend's FFmpeg engine alone")]
struct Cli {
    #[arg(long, value_enum)]
    codec: Codec,
    /// Decoding threads (as the backend's --decode-threads; 0: FFmpeg decides).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Times the whole stream is decoded.
    #[arg(long, default_value_t = 1)]
    passes: u32,
    stream: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    H264,
    Hevc,
    Vp8,
    Vp9,
    Av1,
}

impl Codec {
    fn format(self) -> CodedFormat {
        match self {
            Codec::H264 => CodedFormat::H264,
            Codec::Hevc => CodedFormat::Hevc,
            Codec::Vp8 => CodedFormat::Vp8,
            Codec::Vp9 => CodedFormat::Vp9,
            Codec::Av1 => CodedFormat::Av1,
        }
    }
}

/// The inputs the device would get: IVF frames, or Annex B chunks.
fn inputs(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    if !data.starts_with(b"DKIF") {
        return Ok(data.chunks(CHUNK).collect());
    }
    let mut rest = data.get(IVF_HEADER..).ok_or("truncated IVF header")?;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let header = rest
            .get(..IVF_FRAME_HEADER)
            .ok_or("truncated IVF frame header")?;
        let size = header
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or("truncated IVF frame header")? as usize;
        let end = IVF_FRAME_HEADER
            .checked_add(size)
            .filter(|&end| end <= rest.len())
            .ok_or("IVF frame runs past the end of the file")?;
        frames.push(&rest[IVF_FRAME_HEADER..end]);
        rest = &rest[end..];
    }
    Ok(frames)
}

/// CPU time of the whole process so far.
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn run(cli: &Cli) -> Result<(), String> {
    let data = std::fs::read(&cli.stream).map_err(|e| format!("{}: {e}", cli.stream.display()))?;
    let inputs = inputs(&data)?;
    let factory = FfmpegDecoders::new(cli.threads).map_err(|e| e.to_string())?;
    let format = cli.codec.format();
    let mut events = Vec::new();
    let mut frames = 0u64;
    let mut corrupt = 0u64;
    let mut count = |events: &mut Vec<DecodeEvent>| {
        for event in events.drain(..) {
            match event {
                DecodeEvent::Picture(_) => frames += 1,
                DecodeEvent::Corrupt { .. } => corrupt += 1,
            }
        }
    };
    let (start, cpu_start) = (Instant::now(), process_cpu_time());
    for _ in 0..cli.passes {
        let mut decoder = factory.create(format).map_err(|e| e.to_string())?;
        for (index, input) in inputs.iter().enumerate() {
            decoder
                .decode(input, index as u64, &mut events)
                .map_err(|e| e.to_string())?;
            count(&mut events);
        }
        decoder.flush(&mut events).map_err(|e| e.to_string())?;
        count(&mut events);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (process_cpu_time() - cpu_start).as_secs_f64();
    if corrupt > 0 {
        return Err(format!("{corrupt} inputs or pictures reported corrupt"));
    }
    println!("frames {frames} wall_s {wall:.4} cpu_s {cpu:.4}");
    Ok(())
}

fn main() -> ExitCode {
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decode_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
