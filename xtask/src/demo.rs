//! `cargo xtask demo`: the first thing a new user runs. The host makes a
//! short H.264 clip and decodes it with FFmpeg's software decoder; the
//! Debian RT guest decodes the same clip through the virtio-video decoder.
//! One decoded frame, with a grid of straight lines drawn on it, is bent by
//! a known barrel lens model on the host ([`Lens`]); the guest's dewarper
//! corrects it with the vertex map that inverts that model. The per-frame
//! checksums are printed side by side, the corrected frame is checked
//! against the host's reference engine bit for bit and against the
//! undistorted frame, and the frame before and after the dewarper is
//! written as PNG.
//!
//! Then the i.MX8MP step: the same frame and map through the upstream
//! dw100 driver on QEMU's imx8mp-evk with the emulated DW100, in the arm64
//! debug RT kernel. As Linux 6.12 ships it, the driver finishes its jobs in
//! hard interrupt context and lockdep reports it (the first lines of the
//! splat are shown); with the fix, the frame comes out equal to the
//! reference engine's and the kernel log stays clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{cache, deps, imx8mp, kernel, process, qemu, report_vm, splat, vm};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const FRAMES: u32 = 50;
const RATE: u32 = 25;
/// The decoded frame that goes through the dewarper.
const DEWARP_FRAME: u32 = 25;
/// The demo lens's radial coefficients (barrel distortion: `K1` < 0).
const LENS_K1: f64 = -0.22;
const LENS_K2: f64 = 0.04;
/// The grid drawn on the frame: straight lines `GRID_STEP` pixels apart,
/// through the picture's centre.
const GRID_STEP: u32 = 40;
/// Luma PSNR the corrected frame must reach against the undistorted frame
/// (what a perfect correction shows); the distorted frame stays far below.
const CORRECTED_MIN_PSNR_DB: f64 = 30.0;
/// The DW100's vertex spacing and the largest UQ12.4 map coordinate.
const MAP_CELL: u32 = 16;
const MAP_MAX_COORDINATE: f64 = 65535.0 / 16.0;
const HOST_TOOL_TIMEOUT: Duration = Duration::from_secs(600);
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
/// What lockdep reports when the unfixed driver finishes a job in its hard
/// interrupt handler, and the handler its call trace must name.
const UNFIXED_SPLAT: &str = "Invalid wait context";
const UNFIXED_HANDLER: &str = "dw100_irq_handler";
/// Lines of the splat's call trace shown from its first module frame on.
const TRACE_LINES: usize = 5;

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
    #[error("{path}: {actual} bytes, a {expected}-byte NV12 frame expected")]
    FrameSize {
        path: PathBuf,
        expected: usize,
        actual: usize,
    },
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

/// The demo camera's lens: Brown's radial model, the radius normalised to
/// half the picture diagonal. A scene point at radius `r` from the centre
/// is imaged at radius `r * gain(r)`, with
/// `gain(r) = (1 + K1 r^2 + K2 r^4) / (1 + K1 + K2)`: barrel distortion,
/// scaled so that the corners stay where they are and the distorted picture
/// is filled from the scene inside the frame.
struct Lens {
    cx: f64,
    cy: f64,
    radius: f64,
}

impl Lens {
    fn new(width: u32, height: u32) -> Self {
        let (cx, cy) = (f64::from(width) / 2.0, f64::from(height) / 2.0);
        Self {
            cx,
            cy,
            radius: cx.hypot(cy),
        }
    }

    fn gain(r: f64) -> f64 {
        let r2 = r * r;
        (1.0 + LENS_K1 * r2 + LENS_K2 * r2 * r2) / (1.0 + LENS_K1 + LENS_K2)
    }

    /// Where the lens images the scene point at pixel `(x, y)`.
    fn distort(&self, x: f64, y: f64) -> (f64, f64) {
        let r = (x - self.cx).hypot(y - self.cy) / self.radius;
        let gain = Self::gain(r);
        (
            self.cx + (x - self.cx) * gain,
            self.cy + (y - self.cy) * gain,
        )
    }

    /// The scene point the lens images at pixel `(x, y)`, inside the
    /// picture. `r * gain(r)` grows with `r` (its derivative
    /// `1 + 3 K1 r^2 + 5 K2 r^4` has no real root) and is at least `r` up to
    /// the corners, so the scene radius lies in `[0, imaged]`: bisection.
    fn undistort(&self, x: f64, y: f64) -> (f64, f64) {
        let imaged = (x - self.cx).hypot(y - self.cy) / self.radius;
        if imaged == 0.0 {
            return (x, y);
        }
        let (mut low, mut high) = (0.0, imaged);
        for _ in 0..64 {
            let middle = (low + high) / 2.0;
            if middle * Self::gain(middle) < imaged {
                low = middle;
            } else {
                high = middle;
            }
        }
        let scale = low / imaged;
        (
            self.cx + (x - self.cx) * scale,
            self.cy + (y - self.cy) * scale,
        )
    }

    /// The scene point shown at pixel `(x, y)` of the corrected picture,
    /// which shows the scene magnified by `1 / zoom` about the centre.
    fn zoomed(&self, zoom: f64, x: f64, y: f64) -> (f64, f64) {
        (
            self.cx + (x - self.cx) * zoom,
            self.cy + (y - self.cy) * zoom,
        )
    }

    /// The largest zoom (at most 1) at which every vertex of the correction
    /// map reads inside the distorted picture: barrel distortion pulls the
    /// middle of each edge inwards, so the corrected picture shows a little
    /// less than the whole scene rather than a black border.
    fn correction_zoom(&self, width: u32, height: u32) -> f64 {
        let (right, bottom) = (f64::from(width - 1), f64::from(height - 1));
        let inside = |zoom: f64| {
            map_vertices(width, height).all(|(x, y)| {
                let (zx, zy) = self.zoomed(zoom, x, y);
                let (sx, sy) = self.distort(zx, zy);
                (0.0..=right).contains(&sx) && (0.0..=bottom).contains(&sy)
            })
        };
        let (mut low, mut high) = (0.0, 1.0);
        for _ in 0..32 {
            let middle = (low + high) / 2.0;
            if inside(middle) {
                low = middle;
            } else {
                high = middle;
            }
        }
        low
    }
}

/// The vertices of a DW100 vertex map for a `width` x `height` picture, row
/// by row: 16 pixels apart, the last row and column on the picture's edge.
fn map_vertices(width: u32, height: u32) -> impl Iterator<Item = (f64, f64)> {
    let count = |length: u32| length.div_ceil(MAP_CELL) + 1;
    (0..count(height)).flat_map(move |row| {
        (0..count(width)).map(move |col| {
            (
                f64::from((col * MAP_CELL).min(width)),
                f64::from((row * MAP_CELL).min(height)),
            )
        })
    })
}

/// The raw `V4L2_CID_DW100_DEWARPING_16x16_VERTEX_MAP` payload (little-endian
/// u32, `y << 16 | x` in UQ12.4) whose vertices read from `source_of(x, y)`.
fn vertex_map(width: u32, height: u32, source_of: impl Fn(f64, f64) -> (f64, f64)) -> Vec<u8> {
    let fixed = |v: f64| (v.clamp(0.0, MAP_MAX_COORDINATE) * 16.0).round() as u32;
    map_vertices(width, height)
        .flat_map(|(x, y)| {
            let (sx, sy) = source_of(x, y);
            ((fixed(sy) << 16) | fixed(sx)).to_le_bytes()
        })
        .collect()
}

/// Luma PSNR in dB of one NV12 frame against another of the same size.
fn luma_psnr(frame: &[u8], ideal: &[u8], luma_bytes: usize) -> f64 {
    let squared: f64 = frame
        .iter()
        .zip(ideal)
        .take(luma_bytes)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let mse = squared / luma_bytes as f64;
    10.0 * (255.0 * 255.0 / mse).log10()
}

/// The arm64 debug RT guest on imx8mp-evk with the dw100 driver `variant`:
/// it sends `before.nv12` through the driver into `output`, both in `out`.
fn imx8mp_options(
    variant: imx8mp::Dw100Variant,
    out: &Path,
    size: &str,
    output: &str,
) -> vm::Options {
    let root = cache::repo_root();
    vm::Options {
        machine: vm::Machine::Imx8mpEvk,
        kernel: kernel::Flavor::DebugRt,
        devices: Vec::new(),
        qemu: qemu::Choice::Patched,
        // `out` lies in the checkout, which the guest sees read-only.
        shares: vec![out.to_path_buf()],
        readonly_shares: Vec::new(),
        timeout: GUEST_TIMEOUT,
        module: vm::Module::Dw100(variant),
        module_params: String::new(),
        iommu: vm::Iommu::None,
        env: vec![
            ("REPO".to_string(), root.to_string_lossy().into_owned()),
            ("DEMO".to_string(), out.to_string_lossy().into_owned()),
            ("DEMO_FRAME".to_string(), DEWARP_FRAME.to_string()),
            ("DEMO_SIZE".to_string(), size.to_string()),
            ("DEMO_OUT".to_string(), output.to_string()),
            ("DEMO_VARIANT".to_string(), variant.name().to_string()),
        ],
        accel: vm::Accel::Auto,
        command: vec![
            "sh".to_string(),
            root.join("tests/demo/imx8mp.sh")
                .to_string_lossy()
                .into_owned(),
        ],
        artifacts: Some(out.join(format!("imx8mp-{}", variant.name()))),
        stream: true,
        boot_timeout: vm::BOOT_TIMEOUT,
    }
}

/// The first lines of a splat, without printk timestamps: the report up to
/// its backtrace, then the call trace from its first module frame on.
fn splat_lines(excerpt: &str) -> Vec<String> {
    const HEAD_LINES: usize = 10;
    // The headline of one line is that line without its timestamp.
    let lines: Vec<&str> = excerpt.lines().map(splat::headline).collect();
    let mut shown: Vec<String> = lines
        .iter()
        .take_while(|line| !line.starts_with("stack backtrace:"))
        .take(HEAD_LINES)
        .map(|line| line.to_string())
        .collect();
    let Some(trace) = lines
        .iter()
        .position(|line| line.eq_ignore_ascii_case("Call trace:"))
    else {
        return shown;
    };
    let frames = &lines[trace + 1..];
    if let Some(first_module) = frames.iter().position(|line| line.ends_with(']')) {
        shown.push("...".to_string());
        shown.push(lines[trace].to_string());
        shown.push("  ...".to_string());
        shown.extend(
            frames
                .iter()
                .skip(first_module)
                .take(TRACE_LINES)
                .map(|line| format!("  {line}")),
        );
        shown.push("  ...".to_string());
    }
    shown
}

/// Shows the unfixed driver's splat; whether it is the expected one.
fn unfixed_verdict(outcome: &vm::Outcome) -> bool {
    let Some(excerpt) = &outcome.splat else {
        println!(
            "imx8mp unfixed: no kernel splat ({}): FAIL",
            outcome.reason()
        );
        return false;
    };
    println!(
        "imx8mp unfixed: the kernel's report, first lines (all of it: {}):",
        outcome.artifacts.join("console.log").display()
    );
    for line in splat_lines(excerpt) {
        println!("  | {line}");
    }
    let headline = splat::headline(excerpt);
    let expected = headline.contains(UNFIXED_SPLAT)
        && splat::module_frames(excerpt).is_some_and(|frames| frames.contains(UNFIXED_HANDLER));
    println!(
        "imx8mp unfixed: `{headline}` from {UNFIXED_HANDLER}: the job finished in hard \
         interrupt context, caught by lockdep on the debug RT kernel: {}",
        if expected { "PASS" } else { "FAIL" }
    );
    expected
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
    let lens = Lens::new(WIDTH, HEIGHT);
    let zoom = lens.correction_zoom(WIDTH, HEIGHT);
    for (name, map) in [
        (
            "distortion.map",
            vertex_map(WIDTH, HEIGHT, |x, y| lens.undistort(x, y)),
        ),
        (
            "correction.map",
            vertex_map(WIDTH, HEIGHT, |x, y| {
                let (zx, zy) = lens.zoomed(zoom, x, y);
                lens.distort(zx, zy)
            }),
        ),
        (
            "zoom.map",
            vertex_map(WIDTH, HEIGHT, |x, y| lens.zoomed(zoom, x, y)),
        ),
    ] {
        let path = out.join(name);
        fs::write(&path, map).map_err(cache::io_error("cannot write", &path))?;
    }
    println!(
        "== host: frame {DEWARP_FRAME} with a grid of straight lines, bent by a barrel lens \
         (radial k1 {LENS_K1}, k2 {LENS_K2}) through the reference engine"
    );
    let grid = format!(
        "select=eq(n\\,{DEWARP_FRAME}),drawgrid=w={GRID_STEP}:h={GRID_STEP}:x={}:y={}:t=2:c=white,\
         format=nv12",
        (WIDTH / 2) % GRID_STEP,
        (HEIGHT / 2) % GRID_STEP
    );
    ffmpeg(
        &[
            "-i",
            &file("clip.h264"),
            "-vf",
            &grid,
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            &file("scene.nv12"),
        ],
        &log,
    )?;
    let picture = format!("NV12:{size}");
    let reference_remap = |map: &str, input: &str, output: &str| {
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
                &file(map),
                "--in",
                &file(input),
                "--out",
                &file(output),
            ],
            &log,
        )
    };
    reference_remap("distortion.map", "scene.nv12", "before.nv12")?;
    // What a perfect correction shows: the scene itself, at the zoom.
    reference_remap("zoom.map", "scene.nv12", "ideal.nv12")?;

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
        iommu: vm::Iommu::None,
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

    reference_remap("correction.map", "before.nv12", "reference.nv12")?;
    let frame_bytes = (WIDTH * HEIGHT * 3 / 2) as usize;
    let read = |name: &str| {
        let path = out.join(name);
        let frame = fs::read(&path).map_err(|_| Error::Missing(path.clone()))?;
        if frame.len() == frame_bytes {
            Ok(frame)
        } else {
            Err(Error::FrameSize {
                path,
                expected: frame_bytes,
                actual: frame.len(),
            })
        }
    };
    let after = read("after.nv12")?;
    let dewarp_ok = after == read("reference.nv12")?;
    println!(
        "dewarp: frame {DEWARP_FRAME} corrected by the guest's dewarper equals the host's \
         reference engine bit for bit: {}",
        if dewarp_ok { "PASS" } else { "FAIL" }
    );
    let ideal = read("ideal.nv12")?;
    let luma_bytes = (WIDTH * HEIGHT) as usize;
    let (before_psnr, after_psnr) = (
        luma_psnr(&read("before.nv12")?, &ideal, luma_bytes),
        luma_psnr(&after, &ideal, luma_bytes),
    );
    let correction_ok = after_psnr >= CORRECTED_MIN_PSNR_DB;
    println!(
        "correction: against the undistorted frame (shown at {:.2}x), luma PSNR \
         {after_psnr:.1} dB after the dewarper, {before_psnr:.1} dB before; at least \
         {CORRECTED_MIN_PSNR_DB} dB wanted: {}",
        1.0 / zoom,
        if correction_ok { "PASS" } else { "FAIL" }
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
        "pictures: {} (frame {DEWARP_FRAME} with its grid, as the barrel lens images it) and {} \
         (corrected by the guest's dewarper: straight lines again)",
        out.join("before.png").display(),
        out.join("after.png").display()
    );

    let imx8mp_started = Instant::now();
    println!(
        "== guest: i.MX8MP (QEMU imx8mp-evk with the emulated DW100), arm64 debug RT kernel \
         (lockdep), the upstream dw100 driver as Linux 6.12 ships it"
    );
    let unfixed = vm::run(&imx8mp_options(
        imx8mp::Dw100Variant::Unfixed,
        &out,
        &size,
        "after-dw100-unfixed.nv12",
    ))?;
    let unfixed_ok = unfixed_verdict(&unfixed);
    println!(
        "== guest: the same with the fixed dw100 driver (the job finishes in a threaded handler)"
    );
    let fixed = vm::run(&imx8mp_options(
        imx8mp::Dw100Variant::Fixed,
        &out,
        &size,
        "after-dw100.nv12",
    ))?;
    let fixed_ok = if fixed.passed() {
        read("after-dw100.nv12")? == read("reference.nv12")?
    } else {
        // Prints why the run failed.
        let _ = report_vm(fixed);
        false
    };
    println!(
        "imx8mp fixed: frame {DEWARP_FRAME} through the fixed dw100 driver on the emulated \
         DW100 equals the host's reference engine bit for bit, no kernel splat: {}",
        if fixed_ok { "PASS" } else { "FAIL" }
    );
    println!(
        "imx8mp: both guests over in {} s",
        imx8mp_started.elapsed().as_secs()
    );

    let passed = decode_ok && dewarp_ok && correction_ok && unfixed_ok && fixed_ok;
    println!(
        "demo: {} in {} s",
        if passed { "PASS" } else { "FAIL" },
        started.elapsed().as_secs()
    );
    Ok(u8::from(!passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of the unfixed driver's report on the debug RT kernel.
    const REPORT: &str = "\
[   23.880572] [ BUG: Invalid wait context ]
[   23.880806] 6.12.118 #1 Tainted: G           O
[   23.880841] -----------------------------
[   23.880849] swapper/0/0 is trying to lock:
[   23.880900] ffff000003259270 (&m2m_dev->job_spinlock){+.+.}-{3:3}, at: v4l2_m2m_get_curr_priv+0x1c/0x40 [v4l2_mem2mem]
[   23.881747] other info that might help us debug this:
[   23.881759] context-{2:2}
[   23.881777] no locks held by swapper/0/0.
[   23.881801] stack backtrace:
[   23.882053] Call trace:
[   23.882065]  dump_backtrace+0xac/0xd4
[   23.882323]  rt_spin_lock+0x38/0x120
[   23.882335]  v4l2_m2m_get_curr_priv+0x1c/0x40 [v4l2_mem2mem]
[   23.882357]  dw100_irq_handler+0x8c/0x11c [dw100]
[   23.882375]  __handle_irq_event_percpu+0x12c/0x288
[   23.882388]  handle_irq_event_percpu+0x14/0x44
[   23.882398]  handle_irq_event+0x44/0x78
[   23.882407]  handle_fasteoi_irq+0xbc/0x148
";

    #[test]
    fn the_lens_model_and_its_inverse_agree() {
        let lens = Lens::new(WIDTH, HEIGHT);
        for (x, y) in map_vertices(WIDTH, HEIGHT) {
            let (sx, sy) = lens.undistort(x, y);
            let (dx, dy) = lens.distort(sx, sy);
            assert!((dx - x).abs() < 1e-9 && (dy - y).abs() < 1e-9, "{x},{y}");
        }
        // Barrel: the corners stay, the middle of each edge comes from
        // further out in the scene than it is shown.
        assert!((lens.distort(0.0, 0.0).0).abs() < 1e-9);
        assert!(lens.distort(0.0, 180.0).0 < 0.0);
    }

    #[test]
    fn the_correction_reads_inside_the_distorted_picture_and_no_further_in() {
        let lens = Lens::new(WIDTH, HEIGHT);
        let zoom = lens.correction_zoom(WIDTH, HEIGHT);
        assert!((0.8..0.95).contains(&zoom), "{zoom}");
        // The middle of the bottom edge sets the zoom: it reads the last
        // row (and the top edge's middle, by symmetry, the second).
        let (_, bottom) = lens.distort(320.0, 180.0 + 180.0 * zoom);
        assert!((358.99..=359.0).contains(&bottom), "{bottom}");
    }

    #[test]
    fn vertex_maps_have_the_dw100_layout() {
        let map = vertex_map(WIDTH, HEIGHT, |x, y| (x, y));
        assert_eq!(map.len(), 41 * 24 * 4);
        let entry =
            |index: usize| u32::from_le_bytes(map[index * 4..index * 4 + 4].try_into().unwrap());
        assert_eq!(entry(1), 16 << 4);
        assert_eq!(entry(40), 640 << 4);
        assert_eq!(entry(41), (16 << 4) << 16);
        assert_eq!(entry(41 * 24 - 1), ((360 << 4) << 16) | (640 << 4));
    }

    #[test]
    fn luma_psnr_of_one_level_off_is_48_db() {
        let frame = vec![100u8; 6];
        let off = vec![101u8; 6];
        assert!((luma_psnr(&frame, &off, 4) - 48.13).abs() < 0.01);
        assert!(luma_psnr(&frame, &frame, 4).is_infinite());
    }

    #[test]
    fn splat_lines_keep_the_report_and_the_module_frames() {
        let lines = splat_lines(REPORT);
        assert_eq!(lines[0], "[ BUG: Invalid wait context ]");
        assert_eq!(lines[6], "context-{2:2}");
        assert!(!lines.iter().any(|l| l.contains("stack backtrace")));
        assert!(!lines.iter().any(|l| l.contains("rt_spin_lock")));
        let trace = lines.iter().position(|l| l == "Call trace:").unwrap();
        assert_eq!(
            lines[trace + 2],
            "  v4l2_m2m_get_curr_priv+0x1c/0x40 [v4l2_mem2mem]"
        );
        assert_eq!(lines[trace + 3], "  dw100_irq_handler+0x8c/0x11c [dw100]");
        assert_eq!(lines.len(), trace + 2 + TRACE_LINES + 1);
    }

    #[test]
    fn unfixed_verdict_wants_the_wait_context_report_from_the_handler() {
        let outcome = |splat: &str| vm::Outcome {
            splat: Some(splat.to_string()),
            ..vm::Outcome::default()
        };
        assert!(unfixed_verdict(&outcome(REPORT)));
        assert!(!unfixed_verdict(&outcome(
            &REPORT.replace("dw100_irq_handler", "dw100_job_finish")
        )));
        assert!(!unfixed_verdict(&vm::Outcome::default()));
    }
}
