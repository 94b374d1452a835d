//! `cargo xtask demo`: the first thing a new user runs. The host makes a
//! short H.264 clip and decodes it with FFmpeg's software decoder; the
//! Debian RT guest decodes the same clip through the virtio-video decoder
//! and sends one decoded frame through the dewarper with a fisheye
//! correction map. The per-frame checksums are printed side by side, the
//! dewarped frame is checked against the host's reference engine, and the
//! frame before and after the dewarper is written as PNG.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{cache, deps, kernel, process, qemu, report_vm, vm};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const FRAMES: u32 = 50;
const RATE: u32 = 25;
/// The decoded frame that goes through the dewarper.
const DEWARP_FRAME: u32 = 25;
const FISHEYE_STRENGTH: &str = "0.4";
const HOST_TOOL_TIMEOUT: Duration = Duration::from_secs(600);
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

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
    #[error("{0} is missing after the guest run (see the guest's output above)")]
    Missing(PathBuf),
}

/// Runs a host tool with its output in `log`.
fn host_tool(program: &str, args: &[&str], log: &Path) -> Result<(), Error> {
    let mut command = Command::new(program);
    command.args(args).current_dir(cache::repo_root());
    process::run_logged(command, log, HOST_TOOL_TIMEOUT)?;
    Ok(())
}

fn ffmpeg(args: &[&str], log: &Path) -> Result<(), Error> {
    let mut all = vec!["-hide_banner", "-loglevel", "error", "-nostdin", "-y"];
    all.extend_from_slice(args);
    host_tool("ffmpeg", &all, log)
}

/// The per-frame MD5 column of an `ffmpeg -f framemd5` file, or the lines of
/// a plain list of MD5s.
fn frame_md5s(path: &Path) -> Result<Vec<String>, Error> {
    let text = fs::read_to_string(path).map_err(|_| Error::Missing(path.to_path_buf()))?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit(',').next())
        .map(|md5| md5.trim().to_string())
        .collect())
}

/// Prints host and guest checksums side by side; returns whether all match.
fn compare_md5s(host: &[String], guest: &[String]) -> bool {
    println!(
        "\n{:>5}  {:<32}  {:<32}",
        "frame", "host: FFmpeg software decoder", "guest: virtio-video decoder"
    );
    let mut matching = 0;
    for index in 0..host.len().max(guest.len()) {
        let left = host.get(index).map_or("-", String::as_str);
        let right = guest.get(index).map_or("-", String::as_str);
        let verdict = if left == right {
            matching += 1;
            "match"
        } else {
            "DIFFERENT"
        };
        println!("{index:>5}  {left:<32}  {right:<32}  {verdict}");
    }
    let all = matching == host.len() && host.len() == guest.len() && !host.is_empty();
    println!(
        "decode: {matching} of {} frames bit-exact ({} decoded in the guest): {}",
        host.len(),
        guest.len(),
        if all { "PASS" } else { "FAIL" }
    );
    all
}

pub fn run() -> Result<u8, Error> {
    let started = Instant::now();
    let root = cache::repo_root();
    let out = root.join("target/demo");
    if out.exists() {
        fs::remove_dir_all(&out).map_err(cache::io_error("cannot remove", &out))?;
    }
    fs::create_dir_all(&out).map_err(cache::io_error("cannot create", &out))?;
    let log = out.join("host.log");
    let file = |name: &str| out.join(name).to_string_lossy().into_owned();
    let size = format!("{WIDTH}x{HEIGHT}");

    deps::ensure(deps::BASE_PACKAGES)?;
    println!("== host: building the dewarper's host tool and the guest's V4L2 client");
    host_tool(
        "cargo",
        &[
            "build",
            "--quiet",
            "--release",
            "-j2",
            "-p",
            "vhost-device-video",
            "--example",
            "dewarp",
        ],
        &log,
    )?;
    host_tool("make", &["-C", "tests/clients"], &log)?;
    let dewarp = root.join("target/release/examples/dewarp");
    let dewarp = dewarp.to_string_lossy();

    println!(
        "== host: a {FRAMES}-frame {size} H.264 clip from FFmpeg's testsrc2, \
         decoded by FFmpeg's software decoder"
    );
    let source = format!(
        "testsrc2=size={size}:rate={RATE}:duration={}",
        f64::from(FRAMES) / f64::from(RATE)
    );
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &source,
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-bf",
            "2",
            "-g",
            "25",
            "-f",
            "h264",
            &file("clip.h264"),
        ],
        &log,
    )?;
    ffmpeg(
        &[
            "-i",
            &file("clip.h264"),
            "-vf",
            "format=nv12",
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            &file("host.framemd5"),
        ],
        &log,
    )?;
    host_tool(
        &dewarp,
        &[
            "map",
            "fisheye",
            "--strength",
            FISHEYE_STRENGTH,
            "--src",
            &size,
            "--dst",
            &size,
            "--out",
            &file("fisheye.map"),
        ],
        &log,
    )?;

    println!("== guest: Debian PREEMPT_RT, decoder and dewarper attached (patched QEMU)");
    let options = vm::Options {
        machine: vm::Machine::Q35,
        kernel: kernel::Flavor::DebianRt,
        devices: vec![vm::Device::Decoder, vm::Device::Dewarper],
        qemu: qemu::Choice::Patched,
        shares: vec![out.clone()],
        readonly_shares: Vec::new(),
        timeout: GUEST_TIMEOUT,
        module: vm::Module::Project,
        module_params: String::new(),
        env: vec![
            ("REPO".to_string(), root.to_string_lossy().into_owned()),
            ("DEMO".to_string(), out.to_string_lossy().into_owned()),
            ("DEMO_FRAME".to_string(), DEWARP_FRAME.to_string()),
            ("DEMO_SIZE".to_string(), size.clone()),
        ],
        accel: vm::Accel::Auto,
        command: vec![
            "sh".to_string(),
            root.join("tests/demo/guest.sh")
                .to_string_lossy()
                .into_owned(),
        ],
        artifacts: Some(out.join("vm")),
        stream: true,
        boot_timeout: vm::BOOT_TIMEOUT,
    };
    let guest_started = Instant::now();
    let outcome = vm::run(&options)?;
    println!(
        "guest: run over in {} s (boot, decode, dewarp, power-off)",
        guest_started.elapsed().as_secs()
    );
    let guest_ok = outcome.passed();
    let status = report_vm(outcome).unwrap_or(1);
    if !guest_ok {
        return Ok(status.max(1));
    }

    let decode_ok = compare_md5s(
        &frame_md5s(&out.join("host.framemd5"))?,
        &frame_md5s(&out.join("guest.md5"))?,
    );

    let picture = format!("NV12:{size}");
    host_tool(
        &dewarp,
        &[
            "remap",
            "--engine",
            "reference",
            "--src",
            &picture,
            "--dst",
            &picture,
            "--map",
            &file("fisheye.map"),
            "--in",
            &file("before.nv12"),
            "--out",
            &file("reference.nv12"),
        ],
        &log,
    )?;
    let read = |name: &str| {
        let path = out.join(name);
        fs::read(&path).map_err(|_| Error::Missing(path))
    };
    let dewarp_ok = read("after.nv12")? == read("reference.nv12")?;
    println!(
        "dewarp: frame {DEWARP_FRAME} through the guest's dewarper equals the host's \
         reference engine bit for bit: {}",
        if dewarp_ok { "PASS" } else { "FAIL" }
    );
    for name in ["before", "after"] {
        ffmpeg(
            &[
                "-f",
                "rawvideo",
                "-pix_fmt",
                "nv12",
                "-s",
                &size,
                "-i",
                &file(&format!("{name}.nv12")),
                &file(&format!("{name}.png")),
            ],
            &log,
        )?;
    }
    println!(
        "pictures: {} (decoded frame {DEWARP_FRAME}) and {} (fisheye-corrected by the guest's dewarper)",
        out.join("before.png").display(),
        out.join("after.png").display()
    );
    let passed = decode_ok && dewarp_ok;
    println!(
        "demo: {} in {} s",
        if passed { "PASS" } else { "FAIL" },
        started.elapsed().as_secs()
    );
    Ok(u8::from(!passed))
}
