//! `cargo xtask bench [decode|dewarp]`: speed side by side with the usual
//! host tools, measured in one run, with the ratios against the targets.
//!
//! Every host figure is given twice: frames per second by wall clock, and
//! per CPU-second the process spent. On a machine shared with other work the
//! wall clock measures the load as much as the code; the CPU-time rate is
//! what one core gives when it is not shared. The load average is printed
//! with the results. A bench never fails the build: BELOW is a result.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{cache, deps, imx8mp, kernel, process, qemu, vm};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;
const STREAM_FRAMES: u32 = 250;
/// Measurements of each decoder, alternating between them; the best counts
/// (load from other work only ever slows a run down).
const DECODE_REPEATS: usize = 3;
/// Jobs whose guest round trip is measured.
const DEWARP_JOBS: usize = 10;
const DECODE_TARGET: f64 = 0.95;
const DEWARP_OPENCV_TARGET: f64 = 2.0;
const DEWARP_SCALING_TARGET: f64 = 1.8;
const TOOL_TIMEOUT: Duration = Duration::from_secs(1800);
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);
/// What the backend logs per job at debug level: the virtio dewarper's
/// `dewarper: job N done in ...` and dw100-model's `dw100-model: job N done
/// in ...`.
const JOB_LOG_FILTER: &str = "info,vhost_device_video::device::dewarper=debug,\
                              vhost_device_video::transport::dw100_model=debug";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error("{tool}: no {what} in its output:\n{output}")]
    Parse {
        tool: String,
        what: String,
        output: String,
    },
    #[error("the guest run failed: {reason} (logs: {logs})")]
    Guest { reason: String, logs: PathBuf },
}

/// Which benchmark to run; both without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    Decode,
    Dewarp,
}

/// Frames per second by wall clock and per CPU-second of the process.
#[derive(Debug, Clone, Copy)]
struct Rate {
    wall: f64,
    cpu: f64,
}

impl Rate {
    fn new(frames: f64, wall_s: f64, cpu_s: f64) -> Self {
        let per = |secs: f64| if secs > 0.0 { frames / secs } else { 0.0 };
        Self {
            wall: per(wall_s),
            cpu: per(cpu_s),
        }
    }

    /// The better of two measurements, wall clock and CPU time each.
    fn best(self, other: Rate) -> Rate {
        Rate {
            wall: self.wall.max(other.wall),
            cpu: self.cpu.max(other.cpu),
        }
    }

    fn cell(self) -> String {
        format!("{:.1} ({:.1})", self.wall, self.cpu)
    }
}

fn parse_error(tool: &str, what: &str, output: &str) -> Error {
    Error::Parse {
        tool: tool.to_string(),
        what: what.to_string(),
        output: output.lines().rev().take(20).collect::<Vec<_>>().join("\n"),
    }
}

/// The number after `key` on any line, the last such line winning.
fn find_number(text: &str, key: &str) -> Option<f64> {
    text.lines().rev().find_map(|line| {
        let at = line.find(key)?;
        let rest = line.get(at + key.len()..)?;
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        digits.parse().ok()
    })
}

fn load_line() -> String {
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "load average {} (1, 5, 15 min) on {} cores",
        load.join(" "),
        cores()
    )
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target {
        "PASS"
    } else {
        "BELOW"
    }
}

fn cargo_example(name: &str, log: &Path) -> Result<PathBuf, Error> {
    let root = cache::repo_root();
    let mut build = Command::new("cargo");
    build.current_dir(&root).args([
        "build",
        "--quiet",
        "--release",
        "-j2",
        "-p",
        "vhost-device-video",
        "--example",
        name,
    ]);
    process::run_logged(build, log, TOOL_TIMEOUT)?;
    Ok(root.join("target/release/examples").join(name))
}

fn bench_dir(name: &str) -> Result<PathBuf, Error> {
    let dir = cache::repo_root().join("target/bench").join(name);
    fs::create_dir_all(&dir).map_err(cache::io_error("cannot create", &dir))?;
    Ok(dir)
}

/// Runs a guest; its output on success.
fn guest(options: vm::Options) -> Result<(String, String), Error> {
    let artifacts = options.artifacts.clone().unwrap_or_default();
    let outcome = vm::run(&options)?;
    if !outcome.passed() {
        eprintln!("{}", outcome.output);
        return Err(Error::Guest {
            reason: outcome.reason(),
            logs: outcome.artifacts,
        });
    }
    let cmdline = fs::read_to_string(artifacts.join("qemu.cmdline")).unwrap_or_default();
    let accel = if cmdline.contains(" -accel kvm ") {
        "KVM"
    } else {
        "TCG"
    };
    Ok((outcome.output, accel.to_string()))
}

fn guest_options(
    devices: Vec<vm::Device>,
    qemu: qemu::Choice,
    script: &str,
    env: Vec<(String, String)>,
    artifacts: PathBuf,
) -> vm::Options {
    let root = cache::repo_root();
    let mut env = env;
    env.push(("REPO".to_string(), root.to_string_lossy().into_owned()));
    vm::Options {
        machine: vm::Machine::Q35,
        kernel: kernel::Flavor::DebianRt,
        devices,
        qemu,
        shares: Vec::new(),
        readonly_shares: Vec::new(),
        timeout: GUEST_TIMEOUT,
        module: vm::Module::Project,
        module_params: String::new(),
        iommu: vm::Iommu::None,
        env,
        accel: vm::Accel::Auto,
        command: vec![
            "sh".to_string(),
            root.join(script).to_string_lossy().into_owned(),
        ],
        artifacts: Some(artifacts),
        stream: false,
        boot_timeout: vm::BOOT_TIMEOUT,
    }
}

// ---------------------------------------------------------------- decode

/// The encoder arguments of each bench stream: name, file, ffmpeg arguments.
fn stream_recipes() -> [(&'static str, &'static str, Vec<String>); 2] {
    let common = |codec: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "-f",
            "lavfi",
            "-i",
            &format!(
                "testsrc2=size={WIDTH}x{HEIGHT}:rate=25:duration={}",
                STREAM_FRAMES / 25
            ),
            "-pix_fmt",
            "yuv420p",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(codec.iter().map(|s| s.to_string()));
        args
    };
    [
        (
            "h264",
            "h264.h264",
            common(&["-c:v", "libx264", "-preset", "veryfast", "-f", "h264"]),
        ),
        (
            "vp9",
            "vp9.ivf",
            common(&[
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-row-mt",
                "1",
                "-b:v",
                "4M",
                "-g",
                "50",
                "-f",
                "ivf",
            ]),
        ),
    ]
}

/// The 1080p streams, made once and cached by their encoder arguments.
fn streams() -> Result<PathBuf, Error> {
    let recipes = stream_recipes();
    let text = format!("{recipes:?}");
    let dir = cache::dir("bench")?.join(format!("streams-{}", cache::key(&[text.as_bytes()])));
    if cache::is_complete(&dir) {
        return Ok(dir);
    }
    let _lock = cache::lock("bench-streams")?;
    println!("making the 1080p H.264 and VP9 bench streams (once)");
    cache::build_in_place(&dir, |dir| -> Result<(), Error> {
        for (name, file, args) in &recipes {
            let mut command = Command::new("ffmpeg");
            command
                .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
                .args(args)
                .arg(dir.join(file));
            let log = dir.join(format!("{name}.log"));
            process::run_logged(command, &log, TOOL_TIMEOUT)?;
        }
        Ok(())
    })?;
    Ok(dir)
}

/// Host `ffmpeg` decoding to memory: `-f null` takes the decoder's frames as
/// they are (no conversion, nothing written).
fn host_ffmpeg(stream: &Path, threads: usize) -> Result<Rate, Error> {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!(
        "exec ffmpeg -hide_banner -nostdin -nostats -benchmark -threads {threads} \
         -i '{}' -progress pipe:1 -f null - 2>&1",
        stream.display()
    ));
    let output = process::output(command, TOOL_TIMEOUT)?;
    let number =
        |key: &str| find_number(&output, key).ok_or_else(|| parse_error("ffmpeg", key, &output));
    let frames = number("frame=")?;
    let cpu = number("utime=")? + number("stime=")?;
    Ok(Rate::new(frames, number("rtime=")?, cpu))
}

/// The backend's engine alone, through `examples/decode_bench.rs`.
fn engine(bench: &Path, codec: &str, stream: &Path, threads: usize) -> Result<Rate, Error> {
    let mut command = Command::new(bench);
    command
        .args(["--codec", codec, "--threads", &threads.to_string()])
        .arg(stream);
    let output = process::output(command, TOOL_TIMEOUT)?;
    let number = |key: &str| {
        find_number(&output, key).ok_or_else(|| parse_error("decode_bench", key, &output))
    };
    Ok(Rate::new(
        number("frames")?,
        number("wall_s")?,
        number("cpu_s")?,
    ))
}

fn decode() -> Result<(), Error> {
    let out = bench_dir("decode")?;
    let log = out.join("host.log");
    let bench = cargo_example("decode_bench", &log)?;
    let streams = streams()?;
    let load_before = load_line();
    let threads = [1, cores()];
    let mut rows = Vec::new();
    for (name, file, _) in stream_recipes() {
        for threads in threads {
            let stream = streams.join(file);
            println!(
                "decode: {name}, {threads} thread(s): host ffmpeg and our engine, \
                 {DECODE_REPEATS} times each"
            );
            let mut ffmpeg = host_ffmpeg(&stream, threads)?;
            let mut ours = engine(&bench, name, &stream, threads)?;
            for _ in 1..DECODE_REPEATS {
                ffmpeg = ffmpeg.best(host_ffmpeg(&stream, threads)?);
                ours = ours.best(engine(&bench, name, &stream, threads)?);
            }
            rows.push((name, threads, ffmpeg, ours));
        }
    }
    println!("decode: the same streams in the Debian RT guest (backend --decode-threads 1)");
    let (output, accel) = guest(guest_options(
        vec![vm::Device::Decoder],
        qemu::Choice::Stock,
        "tests/bench/guest-decode.sh",
        vec![(
            "BENCH_STREAMS".to_string(),
            streams.to_string_lossy().into_owned(),
        )],
        out.join("vm"),
    ))?;
    let mut guest_rates = Vec::new();
    for (name, _, _) in stream_recipes() {
        let line = output
            .lines()
            .find(|l| l.starts_with(&format!("result {name} ")))
            .ok_or_else(|| parse_error("guest-decode.sh", name, &output))?;
        let frames = find_number(line, "frames").unwrap_or(0.0);
        let wall = find_number(line, "wall_s").unwrap_or(0.0);
        guest_rates.push((name, frames, Rate::new(frames, wall, 0.0).wall));
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n== decode: {WIDTH}x{HEIGHT}, {STREAM_FRAMES} frames, to memory (no conversion, \
         nothing written), best of {DECODE_REPEATS}\n   frames per second by wall clock \
         (per CPU-second of the process)\n   {load_before} before, {} after",
        load_line()
    );
    let _ = writeln!(
        table,
        "{:<6} {:>7}  {:>22}  {:>22}  {:>16}",
        "stream", "threads", "host ffmpeg", "our engine", "engine/ffmpeg"
    );
    for (name, threads, ffmpeg, ours) in &rows {
        let _ = writeln!(
            table,
            "{name:<6} {threads:>7}  {:>22}  {:>22}  {:>16}",
            ffmpeg.cell(),
            ours.cell(),
            format!(
                "{:.2} ({:.2})",
                ours.wall / ffmpeg.wall,
                ours.cpu / ffmpeg.cpu
            )
        );
    }
    for (name, frames, fps) in &guest_rates {
        let _ = writeln!(
            table,
            "guest  {name}: {fps:.1} frames per second ({frames} frames, guest wall clock; \
             QEMU with {accel}, h264/vp9_v4l2m2m to -f null, backend on 1 thread)"
        );
    }
    let _ = writeln!(
        table,
        "ratios (our engine / host ffmpeg, per CPU-second; target >= {DECODE_TARGET}):"
    );
    for (name, threads, ffmpeg, ours) in &rows {
        let ratio = ours.cpu / ffmpeg.cpu;
        let _ = writeln!(
            table,
            "  {name} {threads} thread(s): {ratio:.2} (wall clock {:.2}): {}",
            ours.wall / ffmpeg.wall,
            verdict(ratio, DECODE_TARGET)
        );
    }
    print!("{table}");
    fs::write(out.join("results.txt"), &table).map_err(cache::io_error("cannot write", &out))?;
    Ok(())
}

// ---------------------------------------------------------------- dewarp

/// `rate MAP COLUMN WALL CPU` lines.
fn rates(output: &str) -> Vec<(String, String, Rate)> {
    output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "rate" {
                return None;
            }
            let map = words.next()?.to_string();
            let column = words.next()?.to_string();
            let wall = words.next()?.parse().ok()?;
            let cpu = words.next()?.parse().ok()?;
            Some((map, column, Rate { wall, cpu }))
        })
        .collect()
}

/// A `Duration` as its `Debug` form prints it (`12.5ms`, `950µs`, `1.2s`), in ms.
fn debug_duration_ms(text: &str) -> Option<f64> {
    let digits: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = digits.parse().ok()?;
    let unit = text.get(digits.len()..)?;
    let scale = match unit.trim_end_matches(|c: char| !c.is_alphabetic() && c != 'µ') {
        u if u.starts_with("ms") => 1.0,
        u if u.starts_with("µs") || u.starts_with("us") => 1e-3,
        u if u.starts_with("ns") => 1e-6,
        u if u.starts_with('s') => 1e3,
        _ => return None,
    };
    Some(value * scale)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The timed jobs of one guest run.
struct GuestJobs {
    /// Which machine ran them, and on which accelerator.
    machine: vm::Machine,
    accel: String,
    /// QBUF to DQBUF per job, in ms.
    round_trips: Vec<f64>,
    /// The backend's own time per job (its debug log), in ms.
    backend: Vec<f64>,
}

impl GuestJobs {
    /// The table's lines for these jobs: `guest` says what ran them,
    /// `backend_covers` what the backend's time includes.
    fn rows(&self, table: &mut String, guest: &str, backend_covers: &str) {
        let round_trips = &self.round_trips;
        let _ = writeln!(
            table,
            "guest on {} ({}), {guest}:\n  one fisheye job, QBUF to DQBUF: median {:.1} ms \
             over {} jobs (min {:.1}, max {:.1})",
            self.machine,
            self.accel,
            median(round_trips.clone()).unwrap_or(0.0),
            round_trips.len(),
            round_trips.iter().copied().fold(f64::INFINITY, f64::min),
            round_trips.iter().copied().fold(0.0, f64::max),
        );
        match median(self.backend.clone()) {
            Some(ms) => {
                let _ = writeln!(
                    table,
                    "  {backend_covers}: median {ms:.1} ms over {} jobs",
                    self.backend.len()
                );
            }
            None => {
                let _ = writeln!(
                    table,
                    "  backend job times: none logged (RUST_LOG was set to something else)"
                );
            }
        }
    }
}

/// Runs `tests/bench/guest-dewarp.sh` in a guest and reads each job's round
/// trip from its output and the backend's time from `backend_log` (the
/// backend's log in the run's artifacts).
fn guest_jobs(options: vm::Options, backend_log: &str) -> Result<GuestJobs, Error> {
    let machine = options.machine;
    let log_path = options
        .artifacts
        .clone()
        .unwrap_or_default()
        .join(backend_log);
    let (output, accel) = guest(options)?;
    let round_trips: Vec<f64> = output
        .lines()
        .filter_map(|l| find_number(l, "round_trip_us"))
        .map(|us| us / 1e3)
        .collect();
    if round_trips.is_empty() {
        return Err(parse_error("guest-dewarp.sh", "round_trip_us", &output));
    }
    let backend_log = fs::read_to_string(&log_path).unwrap_or_default();
    let backend = backend_log
        .lines()
        .filter_map(|l| debug_duration_ms(l.split(" done in ").nth(1)?.trim()))
        .collect();
    Ok(GuestJobs {
        machine,
        accel,
        round_trips,
        backend,
    })
}

fn dewarp() -> Result<(), Error> {
    let out = bench_dir("dewarp")?;
    let log = out.join("host.log");
    let bench = cargo_example("dewarp_bench", &log)?;
    let root = cache::repo_root();
    let mut make = Command::new("make");
    make.arg("-C").arg(root.join("tests/clients"));
    process::run_logged(make, &log, TOOL_TIMEOUT)?;
    let load_before = load_line();

    println!("dewarp: our engines and memcpy");
    let mut command = Command::new(&bench);
    command.arg("--export").arg(&out).arg("--rates");
    let mut measured = rates(&process::output(command, TOOL_TIMEOUT)?);
    println!("dewarp: OpenCV cv2.remap (a virtualenv with opencv-python-headless, once)");
    let mut command = Command::new("python3");
    command
        .arg(root.join("tests/bench/opencv_remap.py"))
        .arg("--rates")
        .arg(&out);
    let opencv_output = process::output(command, TOOL_TIMEOUT)?;
    let opencv_version = opencv_output
        .lines()
        .find_map(|l| l.strip_prefix("version opencv "))
        .unwrap_or("?")
        .to_string();
    measured.extend(rates(&opencv_output));

    let source = fs::read(out.join("source.nv12"))
        .map_err(cache::io_error("cannot read", &out.join("source.nv12")))?;
    let frames = out.join("frames.nv12");
    fs::write(&frames, source.repeat(DEWARP_JOBS))
        .map_err(cache::io_error("cannot write", &frames))?;
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", JOB_LOG_FILTER);
    }
    let env = vec![(
        "BENCH_DEWARP".to_string(),
        out.to_string_lossy().into_owned(),
    )];
    println!("dewarp: {DEWARP_JOBS} fisheye jobs from the Debian RT guest on q35, one at a time");
    let virtio = guest_jobs(
        guest_options(
            vec![vm::Device::Dewarper],
            qemu::Choice::Patched,
            "tests/bench/guest-dewarp.sh",
            env.clone(),
            out.join("vm"),
        ),
        "backend-dewarper0.log",
    )?;
    println!(
        "dewarp: {DEWARP_JOBS} fisheye jobs from the arm64 Debian RT guest on imx8mp-evk \
         (upstream dw100, {}), one at a time",
        imx8mp::Dw100Variant::Fixed.name()
    );
    // The checkout, and with it `out`, is shared read-only with the guest.
    let emulated = guest_jobs(
        vm::Options {
            machine: vm::Machine::Imx8mpEvk,
            module: vm::Module::Dw100(imx8mp::Dw100Variant::Fixed),
            ..guest_options(
                Vec::new(),
                qemu::Choice::Patched,
                "tests/bench/guest-dewarp.sh",
                env,
                out.join("vm-imx8mp"),
            )
        },
        "backend-dw100-0.log",
    )?;
    let get = |map: &str, column: &str| {
        measured
            .iter()
            .find(|(m, c, _)| m == map && c == column)
            .map(|(_, _, rate)| *rate)
    };
    let n = cores();
    let columns = [
        ("fast-1T".to_string(), "fast 1T".to_string()),
        (format!("fast-{n}T"), format!("fast {n}T")),
        ("reference".to_string(), "reference".to_string()),
        ("opencv-1T".to_string(), "OpenCV 1T".to_string()),
        (format!("opencv-{n}T"), format!("OpenCV {n}T")),
        ("memcpy".to_string(), "memcpy".to_string()),
    ];
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\n== dewarp: {WIDTH}x{HEIGHT} NV12 -> NV12, frames per second by wall clock \
         (per CPU-second of the process)\n   OpenCV {opencv_version} cv2.remap INTER_LINEAR, \
         CV_16SC2 maps from the same vertex grid, black border\n   {load_before} before, {} after",
        load_line()
    );
    let _ = write!(table, "{:<9}", "map");
    for (_, title) in &columns {
        let _ = write!(table, " {title:>15}");
    }
    let _ = writeln!(table);
    for map in ["identity", "fisheye"] {
        let _ = write!(table, "{map:<9}");
        for (key, _) in &columns {
            let cell = get(map, key).map_or("-".to_string(), Rate::cell);
            let _ = write!(table, " {cell:>15}");
        }
        let _ = writeln!(table);
    }
    let _ = writeln!(table, "ratios:");
    for map in ["identity", "fisheye"] {
        if let (Some(fast), Some(opencv)) = (get(map, "fast-1T"), get(map, "opencv-1T")) {
            let ratio = fast.cpu / opencv.cpu;
            let _ = writeln!(
                table,
                "  {map}: fast 1T / OpenCV 1T = {ratio:.2} per CPU-second \
                 (wall clock {:.2}), target >= {DEWARP_OPENCV_TARGET}: {}",
                fast.wall / opencv.wall,
                verdict(ratio, DEWARP_OPENCV_TARGET)
            );
        }
        if let (Some(one), Some(all)) = (get(map, "fast-1T"), get(map, &format!("fast-{n}T"))) {
            let ratio = all.wall / one.wall;
            let _ = writeln!(
                table,
                "  {map}: fast {n}T / fast 1T = {ratio:.2} by wall clock, \
                 target >= {DEWARP_SCALING_TARGET}: {} (needs {n} idle cores; see the load)",
                verdict(ratio, DEWARP_SCALING_TARGET)
            );
            // CPU time per frame does not see threads waiting for each
            // other, so this bounds the speed-up rather than measuring it.
            let _ = writeln!(
                table,
                "  {map}: CPU time per frame, 1T / {n}T = {:.2}: on {n} idle cores the \
                 speed-up is at most {:.2}",
                all.cpu / one.cpu,
                n as f64 * all.cpu / one.cpu
            );
        }
    }
    virtio.rows(
        &mut table,
        "x86 Debian RT, the project's driver on the virtio dewarper",
        "backend, whole job (read guest memory, remap, write back)",
    );
    emulated.rows(
        &mut table,
        &format!(
            "arm64 Debian RT, upstream dw100 ({}) on the emulated DW100",
            imx8mp::Dw100Variant::Fixed.name()
        ),
        "daemon, JOB header to RESULT written (receiving the planes, remap, sending the result)",
    );
    if let Some(rate) = get("fisheye", "fast-1T") {
        let _ = writeln!(
            table,
            "engine alone on the same job (fast, 1 thread like the backend's \
             --dewarp-threads 1): {:.1} ms of CPU time",
            1e3 / rate.cpu
        );
    }
    print!("{table}");
    fs::write(out.join("results.txt"), &table).map_err(cache::io_error("cannot write", &out))?;
    Ok(())
}

pub fn run(which: Option<Which>) -> Result<(), Error> {
    deps::ensure(deps::BASE_PACKAGES)?;
    if which != Some(Which::Dewarp) {
        decode()?;
    }
    if which != Some(Which::Decode) {
        dewarp()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_ffmpeg_benchmark_output() {
        let text = "frame=120\nframe=250\nprogress=end\n\
                    bench: utime=0.965s stime=0.022s rtime=4.625s\n";
        assert_eq!(find_number(text, "frame="), Some(250.0));
        assert_eq!(find_number(text, "utime="), Some(0.965));
        assert_eq!(find_number(text, "rtime="), Some(4.625));
        assert_eq!(find_number(text, "maxrss="), None);
    }

    #[test]
    fn durations_as_debug_prints_them() {
        let close = |text: &str, ms: f64| {
            debug_duration_ms(text).is_some_and(|parsed| (parsed - ms).abs() < 1e-9)
        };
        assert!(close("12.5ms", 12.5));
        assert!(close("950µs", 0.95));
        assert!(close("1.5s", 1500.0));
        assert_eq!(debug_duration_ms("fast"), None);
    }

    #[test]
    fn rate_lines() {
        let text = "exported\nrate fisheye fast-1T 132.16 268.54\nrate bad\n";
        let parsed = rates(text);
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            (parsed[0].0.as_str(), parsed[0].1.as_str()),
            ("fisheye", "fast-1T")
        );
        assert_eq!(parsed[0].2.cpu, 268.54);
    }
}
