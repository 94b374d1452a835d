//! QEMU 10.2 built from Debian's source package: stock, and patched with
//! every `qemu-patches/*.patch` in name order. Both live side by side in the
//! cache, keyed by version, patch contents and configuration. The patched
//! variant also builds `qemu-system-aarch64` for the emulated i.MX8MP DW100
//! (`imx8mp-evk`); the stock one is the x86 system emulator alone.
//! [`qtest_dw100`] builds and runs that model's qtest in the patched build.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{cache, debsrc, deps, process};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Source(#[from] debsrc::Error),
    #[error("{0} is not a usable QEMU: {1}")]
    Unusable(PathBuf, String),
    #[error("{path}: QEMU {found} is too old, 10.2 or newer is needed")]
    TooOld { path: PathBuf, found: String },
}

/// Which QEMU a VM runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Stock,
    Patched,
    Path(PathBuf),
}

impl std::str::FromStr for Choice {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "stock" => Self::Stock,
            "patched" => Self::Patched,
            path => Self::Path(PathBuf::from(path)),
        })
    }
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stock => f.write_str("stock"),
            Self::Patched => f.write_str("patched"),
            Self::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

const PINNED_VERSION: &str = "1:10.2.2+ds-1";
const MESON_VERSION: &str = "1.9.0";
const DEVICES: &str = include_str!("../../images/qemu-devices.mak");
const DEVICES_AARCH64: &str = include_str!("../../images/qemu-devices-aarch64.mak");
const DEVICES_NAME: &str = "vhost-device-video";
const FIRMWARE_PATH: &str = "/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu";
const CCACHE_BIN: &str = "/usr/lib/ccache";
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
const QTEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The DW100 model's qtest (`qemu-patches/`), a ninja target of the build.
const QTEST_DW100: &str = "tests/qtest/imx8mp-dw100-test";

/// Which system emulator of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    X86_64,
    Aarch64,
}

impl Target {
    fn binary(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86_64",
            Self::Aarch64 => "qemu-system-aarch64",
        }
    }
}

fn configure_flags(patched: bool) -> Vec<String> {
    let targets = if patched {
        "--target-list=x86_64-softmmu,aarch64-softmmu"
    } else {
        "--target-list=x86_64-softmmu"
    };
    [
        targets,
        "--without-default-features",
        "--enable-kvm",
        "--enable-tcg",
        "--enable-vhost-user",
        "--enable-virtfs",
        "--enable-attr",
        "--disable-docs",
        "--disable-werror",
        "--disable-download",
        "--disable-install-blobs",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .chain([
        format!("--with-devices-x86_64={DEVICES_NAME}"),
        format!("--firmwarepath={FIRMWARE_PATH}"),
    ])
    .chain(patched.then(|| format!("--with-devices-aarch64={DEVICES_NAME}")))
    .collect()
}

/// The downloaded QEMU 10.2 source package.
fn source_package() -> Result<(String, PathBuf), Error> {
    Ok(debsrc::fetch("qemu", "qemu-src", PINNED_VERSION, |v| {
        v.starts_with("1:10.2.")
    })?)
}

pub(crate) fn meson_venv() -> Result<PathBuf, Error> {
    let venv = cache::root()?.join(format!("pyvenv-meson-{MESON_VERSION}"));
    let _lock = cache::lock("pyvenv")?;
    cache::build_in_place(&venv, |venv| -> Result<(), Error> {
        let log = venv.with_extension("log");
        let mut create = Command::new("/usr/bin/python3");
        create.arg("-m").arg("venv").arg(venv);
        process::run_logged(create, &log, Duration::from_secs(300))?;
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args(["install", "-q"])
            .arg(format!("meson=={MESON_VERSION}"));
        process::run_logged(pip, &log, Duration::from_secs(600))?;
        Ok(())
    })?;
    Ok(venv.join("bin/python3"))
}

pub fn patches() -> Result<Vec<PathBuf>, Error> {
    let dir = cache::repo_root().join("qemu-patches");
    let mut found: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "patch"))
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    Ok(found)
}

/// Builds (once) and returns the x86_64 QEMU binary of a variant.
pub fn build(patched: bool) -> Result<PathBuf, Error> {
    build_target(patched, Target::X86_64)
}

/// Compile through ccache (Debian's masquerading `cc` comes first in PATH);
/// with paths made relative to the variant's directory, the second variant
/// reuses nearly every object of the first.
fn with_ccache(command: &mut Command, variant_dir: &Path) -> Result<(), Error> {
    let ccache = cache::dir("ccache")?;
    let path = format!(
        "{CCACHE_BIN}:{}",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_string())
    );
    command
        .env("PATH", path)
        .env("CCACHE_DIR", ccache)
        .env("CCACHE_BASEDIR", variant_dir)
        .env("CCACHE_NOHASHDIR", "1");
    Ok(())
}

/// Builds (once) and returns one system emulator of a variant; aarch64
/// exists only in the patched variant.
pub fn build_target(patched: bool, target: Target) -> Result<PathBuf, Error> {
    let dir = build_variant(patched || target == Target::Aarch64)?;
    Ok(dir.join("build").join(target.binary()))
}

/// Builds (once) a variant and returns its cache directory: `src/`,
/// `build/` and `logs/`.
fn build_variant(patched: bool) -> Result<PathBuf, Error> {
    deps::ensure(deps::BASE_PACKAGES)?;
    let (version, dsc) = source_package()?;
    let flags = configure_flags(patched);
    let patch_files = if patched { patches()? } else { Vec::new() };
    let mut parts: Vec<Vec<u8>> = vec![version.clone().into_bytes(), DEVICES.as_bytes().to_vec()];
    if patched {
        parts.push(DEVICES_AARCH64.as_bytes().to_vec());
    }
    parts.extend(flags.iter().map(|f| f.clone().into_bytes()));
    for patch in &patch_files {
        parts.push(fs::read(patch).map_err(cache::io_error("cannot read", patch))?);
    }
    let borrowed: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let variant = if patched { "patched" } else { "stock" };
    let dir = cache::dir("qemu")?.join(format!(
        "{variant}-{}-{}",
        version.replace(':', "_"),
        cache::key(&borrowed)
    ));
    if cache::is_complete(&dir) {
        return Ok(dir);
    }
    let python = meson_venv()?;
    let _lock = cache::lock(&format!("qemu-{variant}"))?;
    cache::build_in_place(&dir, |dir| -> Result<(), Error> {
        eprintln!("building QEMU {version} ({variant}) in {}", dir.display());
        let src = dir.join("src");
        let logs = dir.join("logs");
        fs::create_dir_all(&logs).map_err(cache::io_error("cannot create", &logs))?;
        let mut unpack = Command::new("dpkg-source");
        unpack.arg("-x").arg(&dsc).arg(&src);
        process::run_logged(unpack, &logs.join("unpack.log"), Duration::from_secs(600))?;
        for patch in &patch_files {
            let mut apply = Command::new("patch");
            apply
                .current_dir(&src)
                .args(["-p1", "--batch", "--forward", "-i"])
                .arg(patch);
            let name = patch
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            process::run_logged(
                apply,
                &logs.join(format!("{name}.log")),
                Duration::from_secs(60),
            )?;
        }
        let mut device_sets = vec![("x86_64", DEVICES)];
        if patched {
            device_sets.push(("aarch64", DEVICES_AARCH64));
        }
        for (arch, set) in device_sets {
            let devices = src.join(format!("configs/devices/{arch}-softmmu/{DEVICES_NAME}.mak"));
            fs::write(&devices, set).map_err(cache::io_error("cannot write", &devices))?;
        }
        let build = dir.join("build");
        fs::create_dir_all(&build).map_err(cache::io_error("cannot create", &build))?;
        let mut configure = Command::new(src.join("configure"));
        with_ccache(&mut configure, dir)?;
        configure
            .current_dir(&build)
            .arg(format!("--python={}", python.display()))
            .args(&flags);
        process::run_logged(configure, &logs.join("configure.log"), BUILD_TIMEOUT)?;
        let mut ninja = Command::new("nice");
        with_ccache(&mut ninja, dir)?;
        ninja
            .current_dir(&build)
            .args(["ninja", "-j2", Target::X86_64.binary()]);
        if patched {
            ninja.arg(Target::Aarch64.binary());
        }
        process::run_step(
            "building QEMU",
            ninja,
            &logs.join("build.log"),
            BUILD_TIMEOUT,
        )?;
        Ok(())
    })?;
    Ok(dir)
}

/// Runs QEMU's `scripts/checkpatch.pl` (from the patched variant's source)
/// on every patch of `qemu-patches/`: QEMU takes patches only clean.
pub fn checkpatch_patches() -> Result<(), Error> {
    let dir = build_variant(true)?;
    let script = dir.join("src/scripts/checkpatch.pl");
    let logs = dir.join("logs");
    for patch in patches()? {
        let name = patch
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut command = Command::new("perl");
        command
            .current_dir(dir.join("src"))
            .arg(&script)
            .arg(&patch);
        process::run_logged(
            command,
            &logs.join(format!("checkpatch-{name}.log")),
            Duration::from_secs(600),
        )?;
    }
    Ok(())
}

/// Builds the patched variant, then the DW100 model's qtest in its build
/// tree, and runs it against that build's `qemu-system-aarch64`. The test's
/// TAP output is in `logs/qtest-dw100.log` of the variant's directory.
pub fn qtest_dw100() -> Result<(), Error> {
    let dir = build_variant(true)?;
    let build = dir.join("build");
    let logs = dir.join("logs");
    {
        // The build tree is shared: one ninja at a time.
        let _lock = cache::lock("qemu-patched")?;
        let mut ninja = Command::new("nice");
        with_ccache(&mut ninja, &dir)?;
        ninja
            .current_dir(&build)
            .args(["ninja", "-j2", QTEST_DW100]);
        process::run_logged(ninja, &logs.join("qtest-dw100-build.log"), BUILD_TIMEOUT)?;
    }
    let mut test = Command::new(build.join(QTEST_DW100));
    test.current_dir(&build)
        .env(
            "QTEST_QEMU_BINARY",
            format!("./{}", Target::Aarch64.binary()),
        )
        .arg("--tap");
    process::run_logged(test, &logs.join("qtest-dw100.log"), QTEST_TIMEOUT)?;
    Ok(())
}

/// Checks that a user-supplied QEMU runs and is 10.2 or newer.
pub fn check_user_binary(path: &Path) -> Result<PathBuf, Error> {
    let mut command = Command::new(path);
    command.arg("--version");
    let text = process::output(command, Duration::from_secs(30))
        .map_err(|e| Error::Unusable(path.to_path_buf(), e.to_string()))?;
    let found = text
        .split_whitespace()
        .skip_while(|word| *word != "version")
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mut numbers = found.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    if (major, minor) < (10, 2) {
        return Err(Error::TooOld {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(path.to_path_buf())
}

pub fn resolve(choice: &Choice) -> Result<PathBuf, Error> {
    match choice {
        Choice::Stock => build(false),
        Choice::Patched => build(true),
        Choice::Path(path) => check_user_binary(path),
    }
}
