//! Guest kernels for QEMU's `imx8mp-evk` machine (arm64), the board's
//! device tree as the harness boots it, and the upstream `dw100` driver in
//! the variants the tests compare (docs/imx8mp.md).
//!
//! `debian-rt` is Debian's arm64 PREEMPT_RT kernel, unpacked from its
//! packages into the cache (never installed on the host), with a build tree
//! prepared from `linux-source-6.12` for out-of-tree modules. `debug-rt` is
//! built from `linux-source-6.12` with `images/debug-rt-arm64.config`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use crate::kernel::{self, Arch, Flavor, Kernel, SourceBuild};
use crate::{cache, deps, process};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error("no Debian 6.12 PREEMPT_RT arm64 kernel package is available (wanted {0})")]
    NoDebianKernel(String),
    #[error("kernel {release}: {path} is missing after unpacking its packages")]
    Incomplete { release: String, path: PathBuf },
    #[error("{0} is neither an arm64 Image nor a gzip-compressed one")]
    NotAnImage(PathBuf),
    #[error("kernel {release} needs linux-source-6.12 of its upstream version, but that is {source_version}")]
    SourceMismatch {
        release: String,
        source_version: String,
    },
    #[error("{dtb}: {node} is not the dewarp node (compatible `{found}`)")]
    NoDewarpNode {
        dtb: PathBuf,
        node: &'static str,
        found: String,
    },
    #[error("{dtb}: {edit} did not take")]
    OverlayFailed { dtb: PathBuf, edit: String },
    #[error("unknown dw100 variant `{0}` (known: unfixed, fixed, oneshot-dropped, fixed-watchdog, fixed-hardirq)")]
    UnknownVariant(String),
    #[error("dw100 ({variant}) for {release}: the compiler warned ({log}):\n{warnings}")]
    Warnings {
        variant: Dw100Variant,
        release: String,
        log: PathBuf,
        warnings: String,
    },
    #[error("dw100 ({variant}) for {release}: no dw100.ko was built (see {log})")]
    NoObject {
        variant: Dw100Variant,
        release: String,
        log: PathBuf,
    },
    #[error("dw100 ({variant}): vermagic `{module}` differs from the kernel's `{kernel}`: the kernel would refuse it")]
    Vermagic {
        variant: Dw100Variant,
        module: String,
        kernel: String,
    },
}

/// The dw100 driver as the tests load it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dw100Variant {
    /// As linux-source-6.12 ships it: the job finishes in a hard interrupt
    /// handler requested with `IRQF_ONESHOT`.
    Unfixed,
    /// `tests/dw100/field-any.patch` (output buffers queued with
    /// `V4L2_FIELD_ANY` are taken, as v4l2-compliance requires) and
    /// `fixed.patch`: a hard half that silences the hardware and a threaded
    /// half that finishes the job, as Linux 7.1 does.
    #[default]
    Fixed,
    /// `tests/dw100/oneshot-dropped.patch`: only `IRQF_ONESHOT` removed, the
    /// fix's first, rejected attempt.
    OneshotDropped,
    /// `Fixed` and `tests/dw100/watchdog.patch`: a job without an interrupt
    /// fails after a bound instead of hanging its users.
    FixedWatchdog,
    /// `Fixed` and `tests/dw100/hardirq.patch`: the hard half requested with
    /// `IRQF_NO_THREAD`, so that PREEMPT_RT does not force it into a thread
    /// and it stops the bus (and its timeout counter) at once.
    FixedHardirq,
}

impl Dw100Variant {
    pub const ALL: [Dw100Variant; 5] = [
        Self::Unfixed,
        Self::Fixed,
        Self::OneshotDropped,
        Self::FixedWatchdog,
        Self::FixedHardirq,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Unfixed => "unfixed",
            Self::Fixed => "fixed",
            Self::OneshotDropped => "oneshot-dropped",
            Self::FixedWatchdog => "fixed-watchdog",
            Self::FixedHardirq => "fixed-hardirq",
        }
    }

    /// The patches applied to linux-source's driver, in order.
    fn patches(self) -> Vec<PathBuf> {
        let names: &[&str] = match self {
            Self::Unfixed => &[],
            Self::Fixed => &["field-any", "fixed"],
            Self::OneshotDropped => &["oneshot-dropped"],
            Self::FixedWatchdog => &["field-any", "fixed", "watchdog"],
            Self::FixedHardirq => &["field-any", "fixed", "hardirq"],
        };
        let dir = cache::repo_root().join("tests/dw100");
        names
            .iter()
            .map(|name| dir.join(format!("{name}.patch")))
            .collect()
    }
}

impl FromStr for Dw100Variant {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "unfixed" => Ok(Self::Unfixed),
            "fixed" => Ok(Self::Fixed),
            "oneshot-dropped" => Ok(Self::OneshotDropped),
            "fixed-watchdog" => Ok(Self::FixedWatchdog),
            "fixed-hardirq" => Ok(Self::FixedHardirq),
            other => Err(Error::UnknownVariant(other.to_string())),
        }
    }
}

impl fmt::Display for Dw100Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const DEBUG_RT_FRAGMENT: &str = include_str!("../../images/debug-rt-arm64.config");
/// The board's device tree, as kbuild names the target and Debian's package
/// the file.
const DTB: &str = "freescale/imx8mp-evk.dtb";
/// Where kbuild puts it; the Debian kernel's build tree gets its packaged
/// copy at the same place, so both kernels keep it in one spot.
const DTB_IN_KBUILD: &str = "arch/arm64/boot/dts/freescale/imx8mp-evk.dtb";

const DEBIAN_RT_PIN: &str = "6.12.118+deb12-rt-arm64";
const DEBIAN_RT_SUFFIX: &str = "-rt-arm64";
const FETCH_TIMEOUT: Duration = Duration::from_secs(900);
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the harness changes in the board's device tree, and why: QEMU
/// models neither the NoC interconnect nor the media and HSIO block
/// controls (their registers read as zero), and two upstream problems
/// follow from the board data describing them.
#[derive(Debug, Clone, Copy)]
enum DtEdit {
    /// `fdtput -d NODE PROPERTY`
    Delete(&'static str, &'static str),
    /// `status = "disabled"`
    Disable(&'static str),
}

const DEWARP_NODE: &str = "/soc@0/bus@32c00000/dwe@32e30000";
const DEWARP_COMPATIBLE: &str = "nxp,imx8mp-dw100";
const HSIO_BLK_CTRL_NODE: &str = "/soc@0/bus@32c00000/blk-ctrl@32f10000";
const OVERLAY: &[DtEdit] = &[
    // The DW100's power domain belongs to the media block control, which
    // waits for the interconnect: for good on Debian's kernel (no
    // INTERCONNECT_IMX8MP), so the driver would never probe.
    DtEdit::Delete(DEWARP_NODE, "power-domains"),
    // The HSIO block control, source of the PCIe controller's and PHY's
    // power domains, waits for the interconnect as well; and where it does
    // probe (debug-rt) it registers a clock on a runtime-PM device, which
    // with the GPC domains' clocks makes lockdep report an ABBA between
    // the clock prepare lock and the genpd lock in some boots. The emulated
    // block does nothing, so PCIe goes without it.
    DtEdit::Delete("/soc@0/pcie@33800000", "power-domains"),
    DtEdit::Delete("/soc@0/bus@32c00000/pcie-phy@32f00000", "power-domains"),
    DtEdit::Disable(HSIO_BLK_CTRL_NODE),
];

/// What an imx8mp-evk guest loads for its PCIe bus (SRC resets, the PCIe
/// slot's regulator, the PHY) and then its 9p shares, in this order;
/// [`Kernel::module_closure`] adds dependencies and skips what the kernel
/// has built in (debug-rt has all of them built in).
pub const BOOT_MODULES: &[&str] = &[
    "reset_imx7",
    "fixed",
    "phy_fsl_imx8m_pcie",
    "9pnet_virtio",
    "9p",
];

/// Module files (relative to the kernel's release directory) the dw100
/// driver at `module` needs, dependencies first.
pub fn dw100_dependencies(kernel: &Kernel, module: &Path) -> Result<Vec<String>, Error> {
    let mut modinfo = Command::new("modinfo");
    modinfo.args(["-F", "depends"]).arg(module);
    let depends = process::output(modinfo, QUERY_TIMEOUT)?;
    let names: Vec<&str> = depends
        .trim()
        .split(',')
        .filter(|name| !name.is_empty())
        .collect();
    Ok(kernel.module_closure(&names)?)
}

/// Builds or fetches (once) an arm64 kernel for the imx8mp-evk machine.
pub fn kernel(flavor: Flavor) -> Result<Kernel, Error> {
    match flavor {
        Flavor::DebugRt => debug_rt(),
        Flavor::DebianRt => debian_rt(),
        // The caller checked that the tree is an arm64 one.
        Flavor::Tree(_) => Ok(kernel::prepare(flavor)?),
    }
}

fn debug_rt() -> Result<Kernel, Error> {
    Ok(kernel::build_from_source(&SourceBuild {
        flavor: Flavor::DebugRt,
        arch: Arch::Arm64,
        name: "debug-rt-arm64",
        fragment_name: "images/debug-rt-arm64.config",
        fragment: DEBUG_RT_FRAGMENT,
        targets: &["Image", "modules", DTB],
        image: "arch/arm64/boot/Image",
    })?)
}

fn debian_rt() -> Result<Kernel, Error> {
    let pinned = cache::dir("kernel")?.join(format!("debian-rt-arm64-{DEBIAN_RT_PIN}"));
    if cache::is_complete(&pinned) {
        return debian_rt_entry(DEBIAN_RT_PIN, &pinned);
    }
    deps::ensure(deps::BASE_PACKAGES)?;
    deps::add_architecture("arm64")?;
    let mut release = DEBIAN_RT_PIN.to_string();
    if !debian_rt_available(&release)? {
        deps::apt_update()?;
        if !debian_rt_available(&release)? {
            release = kernel::newest_debian_release(DEBIAN_RT_SUFFIX)?
                .ok_or_else(|| Error::NoDebianKernel(DEBIAN_RT_PIN.to_string()))?;
            eprintln!("kernel {DEBIAN_RT_PIN} is gone from apt; using {release}");
            if !debian_rt_available(&release)? {
                return Err(Error::NoDebianKernel(release));
            }
        }
    }
    let dir = cache::dir("kernel")?.join(format!("debian-rt-arm64-{release}"));
    if !cache::is_complete(&dir) {
        let _lock = cache::lock(&format!("kernel-debian-rt-arm64-{release}"))?;
        cache::build_in_place(&dir, |dir| unpack_debian_rt(&release, dir))?;
    }
    debian_rt_entry(&release, &dir)
}

fn image_package(release: &str) -> String {
    format!("linux-image-{release}-unsigned:arm64")
}

fn headers_package(release: &str) -> String {
    format!("linux-headers-{release}:arm64")
}

fn debian_rt_available(release: &str) -> Result<bool, Error> {
    Ok(deps::available(&image_package(release))? && deps::available(&headers_package(release))?)
}

/// The parts of a finished `debian-rt-arm64-<release>/` entry.
fn debian_rt_entry(release: &str, dir: &Path) -> Result<Kernel, Error> {
    let image = dir.join("Image");
    let modules_dir = dir.join("root/lib/modules");
    let kbuild = dir.join("kbuild");
    for path in [
        image.clone(),
        modules_dir.join(release).join("modules.dep"),
        kbuild.join("Module.symvers"),
        kbuild.join(DTB_IN_KBUILD),
    ] {
        if !path.exists() {
            return Err(Error::Incomplete {
                release: release.to_string(),
                path,
            });
        }
    }
    Ok(Kernel {
        flavor: Flavor::DebianRt,
        arch: Arch::Arm64,
        release: release.to_string(),
        image,
        modules_dir,
        kbuild,
    })
}

/// Downloads the image and headers packages, unpacks them under `root/`,
/// writes the bootable `Image`, runs depmod and prepares `kbuild/`.
fn unpack_debian_rt(release: &str, dir: &Path) -> Result<(), Error> {
    eprintln!("fetching Debian's {release} kernel into {}", dir.display());
    let logs = dir.join("logs");
    let debs = dir.join("debs");
    let root = dir.join("root");
    for path in [&logs, &debs, &root] {
        fs::create_dir_all(path).map_err(cache::io_error("cannot create", path))?;
    }
    let mut download = Command::new("apt-get");
    download
        .current_dir(&debs)
        // The files land in the cache, which apt's sandbox user may not write.
        .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
        .arg(image_package(release))
        .arg(headers_package(release));
    process::run_logged(download, &logs.join("download.log"), FETCH_TIMEOUT)?;
    for entry in fs::read_dir(&debs).map_err(cache::io_error("cannot read", &debs))? {
        let deb = entry.map_err(cache::io_error("cannot read", &debs))?.path();
        let mut unpack = Command::new("dpkg-deb");
        unpack.arg("-x").arg(&deb).arg(&root);
        process::run_logged(unpack, &logs.join("unpack.log"), FETCH_TIMEOUT)?;
    }
    write_image(
        &root.join(format!("boot/vmlinuz-{release}")),
        &dir.join("Image"),
    )?;
    // Debian generates modules.dep when the package is installed.
    let mut depmod = Command::new("depmod");
    depmod.arg("-b").arg(&root).arg(release);
    process::run_logged(depmod, &logs.join("depmod.log"), BUILD_TIMEOUT)?;
    prepare_kbuild(release, &root, &dir.join("kbuild"), &logs)
}

/// arm64 Image header magic ("ARM\x64" at offset 56).
const IMAGE_MAGIC: (usize, &[u8]) = (56, b"ARM\x64");
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

fn is_image(bytes: &[u8]) -> bool {
    let (offset, magic) = IMAGE_MAGIC;
    bytes.get(offset..offset + magic.len()) == Some(magic)
}

/// Copies Debian's `vmlinuz` to `out` as a plain Image, decompressing it when
/// it is gzipped (QEMU boots both, but one format keeps the check simple).
fn write_image(vmlinuz: &Path, out: &Path) -> Result<(), Error> {
    let bytes = fs::read(vmlinuz).map_err(cache::io_error("cannot read", vmlinuz))?;
    let image = if bytes.starts_with(GZIP_MAGIC) {
        let mut gunzip = Command::new("gzip");
        gunzip.arg("-dc").arg(vmlinuz);
        let output = gunzip
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| process::Error::Spawn {
                what: "gzip -dc".to_string(),
                source,
            })?;
        output.stdout
    } else {
        bytes
    };
    if !is_image(&image) {
        return Err(Error::NotAnImage(vmlinuz.to_path_buf()));
    }
    fs::write(out, &image).map_err(cache::io_error("cannot write", out))?;
    Ok(())
}

/// A build tree for out-of-tree modules of Debian's kernel. The headers
/// package's `scripts/` are arm64 programs, so the tree is made from
/// linux-source with Debian's config (`modules_prepare` builds host tools),
/// then takes the headers' generated files: linux-source's Kconfig would
/// otherwise drop symbols Debian's rt flavour sets (`PREEMPT` beside
/// `PREEMPT_RT`), and the modules' vermagic would not match the kernel's.
fn prepare_kbuild(release: &str, root: &Path, kbuild: &Path, logs: &Path) -> Result<(), Error> {
    let src = kernel::source_tree()?;
    let (source_version, _) = kernel::source_package()?;
    let upstream = source_version
        .split(['-', '+', '~'])
        .next()
        .unwrap_or(&source_version);
    let localversion = release
        .strip_prefix(upstream)
        .filter(|rest| rest.starts_with('+'))
        .ok_or_else(|| Error::SourceMismatch {
            release: release.to_string(),
            source_version: source_version.clone(),
        })?;
    let headers = root.join(format!("usr/src/linux-headers-{release}"));
    fs::create_dir_all(kbuild).map_err(cache::io_error("cannot create", kbuild))?;
    let config = headers.join(".config");
    let kbuild_config = kbuild.join(".config");
    fs::copy(&config, &kbuild_config).map_err(cache::io_error("cannot copy", &config))?;
    let localversion = format!("LOCALVERSION={localversion}");
    for (target, log) in [
        ("olddefconfig", "kbuild-config.log"),
        ("modules_prepare", "kbuild-prepare.log"),
    ] {
        let mut make = Command::new("nice");
        make.arg("make")
            .arg("-C")
            .arg(&src)
            .arg(format!("O={}", kbuild.display()))
            .args(Arch::Arm64.make_vars())
            .arg(&localversion)
            .args(["-j2", target]);
        process::run_logged(make, &logs.join(log), BUILD_TIMEOUT)?;
    }
    // Debian's own config and generated headers replace what linux-source's
    // Kconfig made of them.
    fs::copy(&config, &kbuild_config).map_err(cache::io_error("cannot copy", &config))?;
    let symvers = headers.join("Module.symvers");
    fs::copy(&symvers, kbuild.join("Module.symvers"))
        .map_err(cache::io_error("cannot copy", &symvers))?;
    for generated in ["include/generated", "include/config"] {
        let mut copy = Command::new("cp");
        copy.arg("-a")
            .arg("-T")
            .arg(headers.join(generated))
            .arg(kbuild.join(generated));
        process::run_logged(copy, &logs.join("kbuild-copy.log"), QUERY_TIMEOUT)?;
    }
    let packaged_dtb = root.join(format!("usr/lib/linux-image-{release}/{DTB}"));
    let dtb = kbuild.join(DTB_IN_KBUILD);
    if let Some(parent) = dtb.parent() {
        fs::create_dir_all(parent).map_err(cache::io_error("cannot create", parent))?;
    }
    fs::copy(&packaged_dtb, &dtb).map_err(cache::io_error("cannot copy", &packaged_dtb))?;
    Ok(())
}

/// `imx8mp-evk.dtb` of `kernel` with [`OVERLAY`] applied (docs/imx8mp.md
/// says why). Cached per source device tree and overlay.
pub fn dtb(kernel: &Kernel) -> Result<PathBuf, Error> {
    deps::ensure(&["device-tree-compiler"])?;
    let source = kernel.kbuild.join(DTB_IN_KBUILD);
    let bytes = fs::read(&source).map_err(cache::io_error("cannot read", &source))?;
    let description = format!("{OVERLAY:?}");
    let key = cache::key(&[&bytes, description.as_bytes()]);
    let dir = cache::dir("imx8mp-dtb")?.join(format!("{}-{key}", kernel.flavor));
    let out = dir.join("imx8mp-evk.dtb");
    if cache::is_complete(&dir) {
        return Ok(out);
    }
    let _lock = cache::lock(&format!("imx8mp-dtb-{}", kernel.flavor))?;
    cache::build_in_place(&dir, |_| -> Result<(), Error> {
        fs::write(&out, &bytes).map_err(cache::io_error("cannot write", &out))?;
        apply_overlay(&out)
    })?;
    Ok(out)
}

fn fdtget(dtb: &Path, args: &[&str]) -> Result<String, Error> {
    let mut command = Command::new("fdtget");
    command.args(args.iter().take_while(|a| a.starts_with('-')));
    command.arg(dtb);
    command.args(args.iter().skip_while(|a| a.starts_with('-')));
    Ok(process::capture(command, QUERY_TIMEOUT)?.1)
}

fn apply_overlay(dtb: &Path) -> Result<(), Error> {
    let compatible = fdtget(dtb, &[DEWARP_NODE, "compatible"])?;
    if !compatible
        .split_whitespace()
        .any(|c| c == DEWARP_COMPATIBLE)
    {
        return Err(Error::NoDewarpNode {
            dtb: dtb.to_path_buf(),
            node: DEWARP_NODE,
            found: compatible.trim().to_string(),
        });
    }
    for edit in OVERLAY {
        let mut fdtput = Command::new("fdtput");
        let applied = match *edit {
            DtEdit::Delete(node, property) => {
                fdtput.arg("-d").arg(dtb).arg(node).arg(property);
                process::output(fdtput, QUERY_TIMEOUT)?;
                let properties = fdtget(dtb, &["-p", node])?;
                !properties.lines().any(|line| line.trim() == property)
            }
            DtEdit::Disable(node) => {
                fdtput
                    .args(["-t", "s"])
                    .arg(dtb)
                    .arg(node)
                    .args(["status", "disabled"]);
                process::output(fdtput, QUERY_TIMEOUT)?;
                fdtget(dtb, &[node, "status"])?.trim() == "disabled"
            }
        };
        if !applied {
            return Err(Error::OverlayFailed {
                dtb: dtb.to_path_buf(),
                edit: format!("{edit:?}"),
            });
        }
    }
    Ok(())
}

/// The driver's files in linux-source.
const DW100_SOURCE: &str = "drivers/media/platform/nxp/dw100";
const DW100_FILES: &[&str] = &["Makefile", "dw100.c", "dw100_regs.h"];
/// Path components `git format-patch` puts before the driver's files
/// (`a/drivers/media/platform/nxp/dw100/dw100.c`).
const DW100_PATCH_STRIP: &str = "-p6";
/// kbuild's remark when the compiler's version string differs from the
/// kernel's: not a diagnostic about the module's code. Modpost's warnings
/// (`WARNING: modpost: ...`) and the compiler's still fail the build.
const KBUILD_COMPILER_NOTE: &str =
    "warning: the compiler differs from the one used to build the kernel";

/// The dw100 driver of `variant`, built out of tree for `kernel` from
/// linux-source's copy with `W=1` (any warning fails) and checked to carry
/// the kernel's vermagic. Cached per kernel, variant and patch.
pub fn dw100_module(kernel: &Kernel, variant: Dw100Variant) -> Result<PathBuf, Error> {
    deps::ensure(deps::BASE_PACKAGES)?;
    let src = kernel::source_tree()?.join(DW100_SOURCE);
    let mut inputs: Vec<Vec<u8>> = vec![
        kernel.kbuild.as_os_str().as_encoded_bytes().to_vec(),
        kernel.release.as_bytes().to_vec(),
        variant.name().as_bytes().to_vec(),
    ];
    for file in DW100_FILES {
        let path = src.join(file);
        inputs.push(fs::read(&path).map_err(cache::io_error("cannot read", &path))?);
    }
    for patch in variant.patches() {
        inputs.push(fs::read(&patch).map_err(cache::io_error("cannot read", &patch))?);
    }
    let parts: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let key = cache::key(&parts);
    let dir = cache::dir("dw100")?.join(format!("{}-{variant}-{key}", kernel.flavor));
    let object = dir.join("dw100.ko");
    if !cache::is_complete(&dir) {
        let _lock = cache::lock(&format!("dw100-{}-{variant}", kernel.flavor))?;
        cache::build_in_place(&dir, |dir| -> Result<(), Error> {
            for file in DW100_FILES {
                let from = src.join(file);
                fs::copy(&from, dir.join(file)).map_err(cache::io_error("cannot copy", &from))?;
            }
            for patch in variant.patches() {
                let mut apply = Command::new("patch");
                apply
                    .arg(DW100_PATCH_STRIP)
                    .arg("--batch")
                    .arg("--forward")
                    .arg("--no-backup-if-mismatch")
                    .arg("-d")
                    .arg(dir)
                    .arg("-i")
                    .arg(&patch);
                let name = patch
                    .file_stem()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                process::run_logged(apply, &dir.join(format!("patch-{name}.log")), QUERY_TIMEOUT)?;
            }
            build_dw100(kernel, variant, dir)
        })?;
    }
    Ok(object)
}

fn build_dw100(kernel: &Kernel, variant: Dw100Variant, dir: &Path) -> Result<(), Error> {
    let log = dir.join("build.log");
    let mut make = Command::new("nice");
    make.arg("make")
        .arg("-C")
        .arg(&kernel.kbuild)
        .arg(format!("M={}", dir.display()))
        .args(kernel.arch.make_vars())
        // Debian's kernel does not enable the driver; its Makefile needs
        // the symbol to build it.
        .args(["CONFIG_VIDEO_DW100=m", "W=1", "-j2", "modules"]);
    process::run_logged(make, &log, BUILD_TIMEOUT)?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|line| line.to_ascii_lowercase().contains("warning:"))
        .filter(|line| !line.starts_with(KBUILD_COMPILER_NOTE))
        .collect();
    if text.contains(KBUILD_COMPILER_NOTE) {
        eprintln!(
            "note: dw100 ({variant}) for {}: kbuild says the compiler differs from the kernel's \
             (Debian built it natively, this build is a cross build of the same GCC release; \
             see {})",
            kernel.release,
            log.display()
        );
    }
    if !warnings.is_empty() {
        return Err(Error::Warnings {
            variant,
            release: kernel.release.clone(),
            log,
            warnings: warnings.join("\n"),
        });
    }
    let object = dir.join("dw100.ko");
    if !object.exists() {
        return Err(Error::NoObject {
            variant,
            release: kernel.release.clone(),
            log,
        });
    }
    // The kernel refuses a module whose vermagic differs: compare with one
    // of the kernel's own modules the driver needs anyway, or at least the
    // release when that one is built in.
    let module = vermagic(&object)?;
    let expected = match kernel.module_closure(&["v4l2_mem2mem"])?.pop() {
        Some(relative) => vermagic(&kernel.module_path(&relative))?,
        None => format!("{} ", kernel.release),
    };
    if !module.starts_with(&expected) {
        return Err(Error::Vermagic {
            variant,
            module,
            kernel: expected,
        });
    }
    Ok(())
}

fn vermagic(module: &Path) -> Result<String, Error> {
    let mut modinfo = Command::new("modinfo");
    modinfo.args(["-F", "vermagic"]).arg(module);
    Ok(process::output(modinfo, QUERY_TIMEOUT)?.trim().to_string())
}
