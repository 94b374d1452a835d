//! v4l2-compliance, v4l2-ctl and media-ctl from Debian's v4l-utils source
//! package, at least as new as the 6.12 guest kernels: an older
//! v4l2-compliance reports fields the kernel now uses as non-zero reserved
//! ones. Built with meson, static, into the cache; the guest sees the host's
//! root at the same path, so its `bin` goes first in the guest's PATH.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{cache, deps, process, qemu};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Qemu(#[from] qemu::Error),
    #[error("no v4l-utils source package could be downloaded (tried {0})")]
    NoSource(String),
    #[error("the v4l-utils build did not produce {0}")]
    Missing(PathBuf),
}

const PINNED_VERSION: &str = "1.32.0-5";
/// Versions older than this do not know the 6.12 UAPI.
const MIN_UPSTREAM: (u32, u32) = (1, 32);
const BUILD_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "ninja-build",
    "python3-venv",
    "dpkg-dev",
    "xz-utils",
    "libudev-dev",
];
const MESON_OPTIONS: &[&str] = &[
    "--buildtype=release",
    "-Ddefault_library=static",
    "-Dbpf=disabled",
    "-Dgconv=disabled",
    "-Djpeg=disabled",
    "-Dlibdvbv5=disabled",
    "-Dqv4l2=disabled",
    "-Dqvidcap=disabled",
    "-Dv4l2-tracer=disabled",
    "-Ddoxygen-doc=disabled",
    "-Dv4l-plugins=false",
    "-Dv4l-wrappers=false",
    "-Dv4l2-compliance-libv4l=false",
    "-Dv4l2-ctl-libv4l=false",
];
const TOOLS: &[&str] = &[
    "utils/v4l2-compliance/v4l2-compliance",
    "utils/v4l2-ctl/v4l2-ctl",
    "utils/media-ctl/media-ctl",
];
const FETCH_TIMEOUT: Duration = Duration::from_secs(900);
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

fn upstream_at_least_min(version: &str) -> bool {
    let mut numbers = version
        .split(['.', '-', '+', '~'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= MIN_UPSTREAM
}

fn candidate_versions() -> Result<Vec<String>, Error> {
    let mut command = Command::new("apt-cache");
    command.arg("showsrc").arg("v4l-utils");
    let (_, text) = process::capture(command, Duration::from_secs(60))?;
    let mut versions: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("Version: "))
        .filter(|v| *v != PINNED_VERSION && !v.contains(':') && upstream_at_least_min(v))
        .map(str::to_string)
        .collect();
    versions.sort();
    versions.dedup();
    versions.reverse();
    Ok(std::iter::once(PINNED_VERSION.to_string())
        .chain(versions)
        .collect())
}

fn dsc_in(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "dsc"))
}

/// The downloaded source package (the pinned version when it is cached).
fn source_package() -> Result<(String, PathBuf), Error> {
    let sources = cache::dir("v4l-utils-src")?;
    let pinned_dir = sources.join(PINNED_VERSION);
    if cache::is_complete(&pinned_dir) {
        if let Some(dsc) = dsc_in(&pinned_dir) {
            return Ok((PINNED_VERSION.to_string(), dsc));
        }
    }
    let _lock = cache::lock("v4l-utils-src")?;
    qemu::ensure_sources_entry()?;
    qemu::update_source_index()?;
    let versions = candidate_versions()?;
    for version in &versions {
        let dir = sources.join(version);
        if cache::is_complete(&dir) {
            if let Some(dsc) = dsc_in(&dir) {
                return Ok((version.clone(), dsc));
            }
        }
        let fetched = cache::build_in_place(&dir, |dir| -> Result<(), Error> {
            let mut command = Command::new("apt-get");
            command
                .current_dir(dir)
                .args(["-q", "source", "--download-only"])
                .arg(format!("v4l-utils={version}"));
            process::run_logged(command, &dir.join("download.log"), FETCH_TIMEOUT)?;
            Ok(())
        });
        match fetched {
            Ok(()) => {
                if let Some(dsc) = dsc_in(&dir) {
                    return Ok((version.clone(), dsc));
                }
            }
            Err(err) => eprintln!("v4l-utils {version}: {err}"),
        }
    }
    Err(Error::NoSource(versions.join(", ")))
}

/// Builds (once) and returns the directory holding the tools.
pub fn build() -> Result<PathBuf, Error> {
    deps::ensure(BUILD_PACKAGES)?;
    let (version, dsc) = source_package()?;
    let mut parts: Vec<&[u8]> = vec![version.as_bytes()];
    parts.extend(MESON_OPTIONS.iter().map(|o| o.as_bytes()));
    parts.extend(TOOLS.iter().map(|t| t.as_bytes()));
    let dir = cache::root()?.join(format!("v4l-utils-{version}-{}", cache::key(&parts)));
    let bin = dir.join("bin");
    if cache::is_complete(&dir) {
        return Ok(bin);
    }
    let meson = qemu::meson_venv()?.with_file_name("meson");
    let _lock = cache::lock("v4l-utils")?;
    cache::build_in_place(&dir, |dir| -> Result<(), Error> {
        eprintln!("building v4l-utils {version} in {}", dir.display());
        let src = dir.join("src");
        let build = dir.join("build");
        let logs = dir.join("logs");
        fs::create_dir_all(&logs).map_err(cache::io_error("cannot create", &logs))?;
        let mut unpack = Command::new("dpkg-source");
        unpack.arg("-x").arg(&dsc).arg(&src);
        process::run_logged(unpack, &logs.join("unpack.log"), Duration::from_secs(600))?;
        let mut setup = Command::new(&meson);
        setup.arg("setup").arg(&build).arg(&src).args(MESON_OPTIONS);
        process::run_logged(setup, &logs.join("setup.log"), BUILD_TIMEOUT)?;
        let mut ninja = Command::new("nice");
        ninja.current_dir(&build).args(["ninja", "-j2"]).args(TOOLS);
        process::run_logged(ninja, &logs.join("build.log"), BUILD_TIMEOUT)?;
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).map_err(cache::io_error("cannot create", &bin))?;
        for tool in TOOLS {
            let built = build.join(tool);
            if !built.is_file() {
                return Err(Error::Missing(built));
            }
            let name = built.file_name().unwrap_or_default();
            let installed = bin.join(name);
            fs::copy(&built, &installed).map_err(cache::io_error("cannot copy", &built))?;
        }
        Ok(())
    })?;
    Ok(bin)
}

/// The tools' directory for the guest's PATH, or why there is none (the
/// guest then uses the host's older tools). Tried once per process, so a
/// test run does not retry a download that failed.
pub fn guest_bin() -> Result<PathBuf, String> {
    static RESULT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            build().map_err(|err| {
                format!(
                    "no v4l-utils {PINNED_VERSION} ({err}); the guest uses the host's v4l-utils"
                )
            })
        })
        .clone()
}
