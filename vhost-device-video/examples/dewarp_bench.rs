//! Dewarper engine speed on 1080p NV12, side by side with a memcpy of the
//! same bytes: the fast engine on one thread and on every core, and the
//! reference engine, with the identity and the fisheye-correction maps.
//!
//! `cargo run --release --example dewarp_bench [-- [--export[-only] DIR] [--rates]]`;
//! with `--export`, the source picture and both maps are written to DIR (raw
//! NV12 and little-endian u32 maps) for `tests/bench/opencv_remap.py`;
//! `--export-only` stops there. `--rates` prints one line per measurement,
//! `rate MAP COLUMN WALL_FPS CPU_FPS`, instead of the table (for
//! `cargo xtask bench dewarp`). `--fast-only` measures the fast engine on
//! one thread alone (quick, and light enough to run under callgrind).

use std::hint::black_box;
use std::time::{Duration, Instant};

use vhost_device_video::engine::dewarp::{
    maps, Crop, DestImage, DewarpEngine, FastEngine, ImageGeometry, PixelFormat, ReferenceEngine,
    RemapParams, SourceImage, VertexMap,
};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;

/// A deterministic test card: gradients plus a fine checkerboard, so that
/// interpolation has real work and the output is easy to eyeball.
fn test_card() -> Vec<u8> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut frame = vec![0u8; w * h * 3 / 2];
    let (luma, chroma) = frame.split_at_mut(w * h);
    for (y, line) in luma.chunks_exact_mut(w).enumerate() {
        for (x, px) in line.iter_mut().enumerate() {
            let checker = if (x / 40 + y / 40) % 2 == 0 { 60 } else { 0 };
            *px = ((x * 160 / w) + checker + (y * 30 / h)) as u8;
        }
    }
    for (y, line) in chroma.chunks_exact_mut(w).enumerate() {
        for (x, pair) in line.chunks_exact_mut(2).enumerate() {
            pair[0] = (64 + x * 128 / (w / 2)) as u8;
            pair[1] = (64 + y * 128 / (h / 2)) as u8;
        }
    }
    frame
}

/// CPU time the whole process has used so far.
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

/// Frame rates of one measurement: by wall clock, and by the CPU time the
/// process spent (what one core would do alone on a busy machine).
#[derive(Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

/// Runs `job` repeatedly for about `budget`.
fn fps(budget: Duration, mut job: impl FnMut()) -> Rate {
    job();
    let (start, cpu_start) = (Instant::now(), process_cpu_time());
    let mut frames = 0u32;
    while start.elapsed() < budget {
        job();
        frames += 1;
    }
    let cpu = (process_cpu_time() - cpu_start).as_secs_f64();
    Rate {
        wall: f64::from(frames) / start.elapsed().as_secs_f64(),
        cpu: if cpu > 0.0 {
            f64::from(frames) / cpu
        } else {
            0.0
        },
    }
}

fn engine_fps(engine: &dyn DewarpEngine, map: &VertexMap, src: &[u8], budget: Duration) -> Rate {
    let geometry = ImageGeometry::packed(PixelFormat::Nv12, WIDTH, HEIGHT);
    let split = (WIDTH * HEIGHT) as usize;
    let (luma, chroma) = src.split_at(split);
    let source = SourceImage {
        geometry,
        luma,
        chroma,
    };
    let params = RemapParams {
        map,
        crop: Crop::full(WIDTH, HEIGHT),
    };
    let mut out = vec![0u8; src.len()];
    fps(budget, || {
        let (luma, chroma) = out.split_at_mut(split);
        let mut dest = DestImage {
            geometry,
            luma,
            chroma,
        };
        if let Err(e) = engine.remap(&params, &source, &mut dest) {
            eprintln!("remap failed: {e}");
            std::process::exit(1);
        }
        black_box(&mut dest);
    })
}

fn main() {
    let (mut export, mut only_export, mut rates_only) = (None, false, false);
    let mut fast_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (
            arg.as_str(),
            arg.starts_with("--export").then(|| args.next()),
        ) {
            ("--export", Some(Some(dir))) => export = Some(dir),
            ("--export-only", Some(Some(dir))) => (export, only_export) = (Some(dir), true),
            ("--rates", None) => rates_only = true,
            ("--fast-only", None) => fast_only = true,
            _ => {
                eprintln!(
                    "usage: dewarp_bench [--export DIR | --export-only DIR] [--rates] [--fast-only]"
                );
                std::process::exit(2);
            }
        }
    }
    let src = test_card();
    let identity = maps::driver_identity_map(WIDTH, HEIGHT, WIDTH, HEIGHT);
    let fisheye = maps::fisheye_correction_map(WIDTH, HEIGHT, WIDTH, HEIGHT, 0.3);
    if let Some(dir) = export {
        let write = |name: &str, bytes: &[u8]| {
            let path = std::path::Path::new(&dir).join(name);
            if let Err(e) = std::fs::write(&path, bytes) {
                eprintln!("cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
        };
        write("source.nv12", &src);
        write("identity.map", &identity.to_le_bytes());
        write("fisheye.map", &fisheye.to_le_bytes());
        println!(
            "exported {WIDTH}x{HEIGHT} NV12 and {}x{} maps to {dir}",
            identity.width(),
            identity.height()
        );
        if only_export {
            return;
        }
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let budget = Duration::from_secs(2);
    let mut dst = vec![0u8; src.len()];
    let memcpy = fps(budget, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    });
    let columns = [
        "fast-1T".to_string(),
        format!("fast-{cores}T"),
        "reference".into(),
        "memcpy".into(),
    ];
    if !rates_only && !fast_only {
        println!("1920x1080 NV12, frames per second by wall clock (per CPU-second of the process)");
        print!("{:<10}", "map");
        for column in &columns {
            print!(" {column:>20}");
        }
        println!();
    }
    for (name, map) in [("identity", &identity), ("fisheye", &fisheye)] {
        if fast_only {
            let rate = engine_fps(&FastEngine::new(1), map, &src, budget);
            println!("{name:<10} fast-1T {:.1} ({:.1})", rate.wall, rate.cpu);
            continue;
        }
        let rates = [
            engine_fps(&FastEngine::new(1), map, &src, budget),
            engine_fps(&FastEngine::new(cores), map, &src, budget),
            engine_fps(&ReferenceEngine, map, &src, budget),
            memcpy,
        ];
        if rates_only {
            for (column, rate) in columns.iter().zip(rates) {
                println!("rate {name} {column} {:.2} {:.2}", rate.wall, rate.cpu);
            }
            continue;
        }
        print!("{name:<10}");
        for rate in rates {
            print!(" {:>20}", format!("{:.1} ({:.1})", rate.wall, rate.cpu));
        }
        println!();
    }
}
