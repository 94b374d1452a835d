//! `cargo xtask demo`: the first thing a new user runs. The host makes a
//! short H.264 clip and decodes it with FFmpeg's software decoder; the
//! Debian RT guest decodes the same clip through the virtio-video decoder
//! and sends one decoded frame through the dewarper with a fisheye
//! correction map. The per-frame checksums are printed side by side, the
//! dewarped frame is checked against the host's reference engine, and the
//! frame before and after the dewarper is written as PNG.
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
const FISHEYE_STRENGTH: &str = "0.4";
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

    let passed = decode_ok && dewarp_ok && unfixed_ok && fixed_ok;
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
