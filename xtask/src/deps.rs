//! Installs what the other steps need: Debian packages through apt, Rust
//! components through rustup. Checks with `dpkg-query` first, so a machine
//! that has everything pays one query.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{cache, process};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error("missing packages and not root, and sudo is not available: {0}")]
    NoRoot(String),
    #[error("apt-get could not install {0} (see the output above)")]
    Install(String),
    #[error("apt-get update failed after adding the {0} architecture (see the output above)")]
    AddArchitecture(String),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error("apt knows no package {0}")]
    Unavailable(String),
}

/// Packages the host itself runs: the builds, QEMU's firmware, the backend's
/// libraries, and (because the q35 guests' root is the host's own, read-only)
/// the tools the tests run inside the guests. What only a guest boots or a
/// build reads (kernels, the kernel source, the initramfs's busybox) is
/// unpacked into the cache instead ([`unpacked`]).
pub const BASE_PACKAGES: &[&str] = &[
    // building QEMU from Debian's source package
    "build-essential",
    "pkg-config",
    "ninja-build",
    "ccache",
    "patch",
    "python3-venv",
    "dpkg-dev",
    "xz-utils",
    "libglib2.0-dev",
    "libpixman-1-dev",
    "libfdt-dev",
    "zlib1g-dev",
    // QEMU firmware from Debian
    "qemu-system-data",
    "seabios",
    "ipxe-qemu",
    // building kernels and modules
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "kmod",
    "perl",
    // arm64 guests (imx8mp-evk): cross builds and the board's device tree
    "gcc-aarch64-linux-gnu",
    "device-tree-compiler",
    // the q35 guests run the host's tools (and the host decodes with ffmpeg
    // for reference)
    "pciutils",
    "v4l-utils",
    "ffmpeg",
    "gstreamer1.0-tools",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    // h264parse and the other parsers GStreamer's v4l2 decoders need.
    "gstreamer1.0-plugins-bad",
    // the backend (ffmpeg-next bindings)
    "clang",
    "libclang-dev",
    "libavcodec-dev",
    "libavformat-dev",
    "libavutil-dev",
    "libavfilter-dev",
    "libavdevice-dev",
    "libswscale-dev",
    "libswresample-dev",
    // `cargo xtask test` checks the shell scripts
    "shellcheck",
];

const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
const APT_TIMEOUT: Duration = Duration::from_secs(3600);

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// The subset of `packages` that is not installed.
pub fn missing(packages: &[&str]) -> Result<Vec<String>, Error> {
    let mut command = Command::new("dpkg-query");
    command
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Abbrev}\n")
        .args(packages);
    // dpkg-query fails when a package is unknown; its output still lists the
    // known ones.
    let (_, text) = process::capture(command, QUERY_TIMEOUT)?;
    let installed: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| {
            let (name, status) = line.split_once(' ')?;
            status
                .starts_with("ii")
                .then_some(name.split(':').next().unwrap_or(name))
        })
        .collect();
    Ok(packages
        .iter()
        .filter(|p| !installed.contains(**p))
        .map(|p| (*p).to_string())
        .collect())
}

pub fn privileged(program: &str) -> Result<Command, Error> {
    if nix::unistd::geteuid().is_root() {
        return Ok(Command::new(program));
    }
    if Command::new("sudo").arg("-n").arg("true").status().is_err() {
        return Err(Error::NoRoot(program.to_string()));
    }
    let mut command = Command::new("sudo");
    command
        .arg("-n")
        .arg("--preserve-env=DEBIAN_FRONTEND")
        .arg(program);
    Ok(command)
}

fn apt_get(args: &[&str]) -> Result<bool, Error> {
    let mut command = privileged("apt-get")?;
    command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=600", "-q", "-y"])
        .args(args);
    match process::run_visible(command, APT_TIMEOUT) {
        Ok(()) => Ok(true),
        Err(process::Error::Failed { .. }) => Ok(false),
        Err(other) => Err(other.into()),
    }
}

/// Refreshes the package lists, at most once per run.
pub fn apt_update() -> Result<(), Error> {
    if APT_UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    apt_get(&["update"])?;
    Ok(())
}

/// Makes apt know packages of a foreign architecture (`arm64`), refreshing
/// the package lists when it adds one. Nothing of it is installed: the
/// harness fetches such packages with `apt-get download`.
pub fn add_architecture(arch: &str) -> Result<(), Error> {
    let mut query = Command::new("dpkg");
    query.arg("--print-foreign-architectures");
    let known = process::output(query, QUERY_TIMEOUT)?;
    if known.lines().any(|line| line.trim() == arch) {
        return Ok(());
    }
    eprintln!("adding the {arch} architecture to dpkg");
    let mut add = privileged("dpkg")?;
    add.arg("--add-architecture").arg(arch);
    process::run_visible(add, QUERY_TIMEOUT)?;
    // Refreshed even if the lists were refreshed earlier in this run: they
    // lack the new architecture.
    APT_UPDATED.store(true, Ordering::SeqCst);
    if apt_get(&["update"])? {
        Ok(())
    } else {
        Err(Error::AddArchitecture(arch.to_string()))
    }
}

/// Installs whatever of `packages` is missing.
pub fn ensure(packages: &[&str]) -> Result<(), Error> {
    let missing = missing(packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing: {}", missing.join(" "));
    let mut args = vec!["install", "--no-install-recommends"];
    args.extend(missing.iter().map(String::as_str));
    if apt_get(&args)? {
        return Ok(());
    }
    // Stale or absent package lists are the usual reason on a fresh machine;
    // an earlier install interrupted half-way is the other.
    finish_interrupted_install()?;
    apt_update()?;
    if apt_get(&args)? {
        Ok(())
    } else {
        Err(Error::Install(missing.join(" ")))
    }
}

/// Configures packages an interrupted install left unpacked; apt refuses to
/// install anything until that is done.
fn finish_interrupted_install() -> Result<(), Error> {
    let mut command = privileged("dpkg")?;
    command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["--configure", "-a"]);
    match process::run_visible(command, APT_TIMEOUT) {
        Ok(()) | Err(process::Error::Failed { .. }) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

/// Whether apt knows `package` at all (to pick among pinned versions).
pub fn available(package: &str) -> Result<bool, Error> {
    let mut command = Command::new("apt-cache");
    command.arg("show").arg("--no-all-versions").arg(package);
    let (status, text) = process::capture(command, QUERY_TIMEOUT)?;
    Ok(status.success() && !text.trim().is_empty())
}

/// A package of the host's release unpacked into the cache.
pub struct Unpacked {
    pub version: String,
    /// Where `dpkg-deb -x` put its files.
    pub root: PathBuf,
}

/// The version apt would install of `package`, if it knows the package.
fn candidate_version(package: &str) -> Result<Option<String>, Error> {
    let mut command = Command::new("apt-cache");
    command.args(["show", "--no-all-versions", package]);
    let (status, text) = process::capture(command, QUERY_TIMEOUT)?;
    Ok(status
        .success()
        .then(|| {
            text.lines()
                .find_map(|line| line.strip_prefix("Version:"))
                .map(|version| version.trim().to_string())
        })
        .flatten())
}

/// `package` (apt's candidate version) downloaded with `apt-get download`
/// and unpacked with `dpkg-deb -x` into `debs/<package>-<version>/` of the
/// cache, once: for what only guests or builds read. Nothing is installed.
pub fn unpacked(package: &str) -> Result<Unpacked, Error> {
    let version = match candidate_version(package)? {
        Some(version) => version,
        None => {
            apt_update()?;
            candidate_version(package)?.ok_or_else(|| Error::Unavailable(package.to_string()))?
        }
    };
    let dir = cache::dir("debs")?.join(format!("{package}-{version}"));
    if !cache::is_complete(&dir) {
        let _lock = cache::lock(&format!("deb-{package}"))?;
        cache::build_in_place(&dir, |dir| -> Result<(), Error> {
            eprintln!("fetching {package} {version} into {}", dir.display());
            let debs = dir.join("debs");
            fs::create_dir_all(&debs).map_err(cache::io_error("cannot create", &debs))?;
            let mut download = Command::new("apt-get");
            download
                .current_dir(&debs)
                // The file lands in the cache, which apt's sandbox user may
                // not write.
                .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
                .arg(format!("{package}={version}"));
            process::run_logged(download, &dir.join("download.log"), APT_TIMEOUT)?;
            let root = dir.join("root");
            for entry in fs::read_dir(&debs).map_err(cache::io_error("cannot read", &debs))? {
                let deb = entry.map_err(cache::io_error("cannot read", &debs))?.path();
                let mut unpack = Command::new("dpkg-deb");
                unpack.arg("-x").arg(&deb).arg(&root);
                process::run_logged(unpack, &dir.join("unpack.log"), APT_TIMEOUT)?;
            }
            Ok(())
        })?;
    }
    Ok(Unpacked {
        version,
        root: dir.join("root"),
    })
}

fn rust_components() -> Result<(), Error> {
    for (probe, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        let mut command = Command::new("cargo");
        command.arg(probe).arg("--version");
        if process::capture(command, QUERY_TIMEOUT)?.0.success() {
            continue;
        }
        let mut install = Command::new("rustup");
        install.args(["component", "add", component]);
        process::run_visible(install, APT_TIMEOUT)?;
    }
    Ok(())
}

pub fn run() -> Result<(), Error> {
    ensure(BASE_PACKAGES)?;
    rust_components()
}
