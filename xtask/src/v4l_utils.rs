//! v4l2-compliance, v4l2-ctl and media-ctl at least as new as the 6.12 guest
//! kernels: an older v4l2-compliance reports fields the kernel now uses as
//! non-zero reserved ones. First choice: built from Debian's v4l-utils source
//! package with meson, static. When that source cannot be downloaded: Debian
//! trixie's binary packages with the trixie libraries they link, unpacked
//! into the cache and run through trixie's own loader by wrapper scripts.
//! The guest sees the host's root at the same path, so the chosen `bin` goes
//! first in the guest's PATH.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{cache, debsrc, deps, process, qemu, trixie};

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
    #[error(transparent)]
    Source(#[from] debsrc::Error),
    #[error(transparent)]
    Trixie(#[from] trixie::Error),
    #[error("the v4l-utils build did not produce {0}")]
    Missing(PathBuf),
    #[error(
        "Debian trixie's index lists no v4l-utils of at least {}.{}",
        MIN_TRIXIE_UPSTREAM.0,
        MIN_TRIXIE_UPSTREAM.1
    )]
    NoTrixieVersion,
    #[error("{tool} from trixie resolves {library} outside the unpacked tree")]
    HostLibrary { tool: String, library: String },
    #[error("neither the source build ({source_build}) nor trixie's binaries ({binaries}) are available")]
    Unavailable {
        source_build: Box<Error>,
        binaries: Box<Error>,
    },
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
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

/// The trixie binary package preferred when the source cannot be had; any
/// other trixie version of at least [`MIN_TRIXIE_UPSTREAM`] is taken when
/// the archive has moved on.
const TRIXIE_VERSION: &str = "1.30.1-1";
/// The oldest v4l2-compliance that passes the 6.12 guests' reserved-field
/// and request checks.
const MIN_TRIXIE_UPSTREAM: (u32, u32) = (1, 30);
/// v4l-utils and every library its tools link, closed under NEEDED: the
/// tools never fall back to the host's (older) glibc or libstdc++.
const TRIXIE_LIBRARIES: &[&str] = &[
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "libv4l-0t64",
    "libv4lconvert0t64",
    "libjpeg62-turbo",
    "libudev1",
    "libcap2",
];
const TRIXIE_TOOLS: &[&str] = &["v4l2-compliance", "v4l2-ctl", "media-ctl"];
const TRIXIE_LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";
const TRIXIE_LOADER: &str = "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
const TRIXIE_PREFIX: &str = "v4l-utils-trixie-";

fn upstream_at_least(version: &str, min: (u32, u32)) -> bool {
    let mut numbers = version
        .split(['.', '-', '+', '~'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= min
}

fn upstream_at_least_min(version: &str) -> bool {
    upstream_at_least(version, MIN_UPSTREAM)
}

/// The downloaded source package (the pinned version when it is cached).
fn source_package() -> Result<(String, PathBuf), Error> {
    Ok(debsrc::fetch(
        "v4l-utils",
        "v4l-utils-src",
        PINNED_VERSION,
        |v| !v.contains(':') && upstream_at_least_min(v),
    )?)
}

fn source_build_dir(version: &str) -> Result<PathBuf, Error> {
    let mut parts: Vec<&[u8]> = vec![version.as_bytes()];
    parts.extend(MESON_OPTIONS.iter().map(|o| o.as_bytes()));
    parts.extend(TOOLS.iter().map(|t| t.as_bytes()));
    Ok(cache::root()?.join(format!("v4l-utils-{version}-{}", cache::key(&parts))))
}

/// Builds (once) from the source package and returns the tools' directory.
fn build_from_source() -> Result<PathBuf, Error> {
    deps::ensure(BUILD_PACKAGES)?;
    let (version, dsc) = source_package()?;
    let dir = source_build_dir(&version)?;
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

/// What goes into a trixie entry besides the version: a change to any of it
/// makes a new entry.
fn trixie_key() -> String {
    let mut parts: Vec<&[u8]> = vec![trixie::Arch::Amd64.sources().as_bytes()];
    parts.extend(TRIXIE_LIBRARIES.iter().map(|p| p.as_bytes()));
    parts.extend(TRIXIE_TOOLS.iter().map(|t| t.as_bytes()));
    parts.push(WRAPPER_FORMAT.as_bytes());
    cache::key(&parts)
}

/// A complete trixie entry, the preferred version first, without touching
/// the network.
fn cached_trixie(root: &Path, key: &str) -> Option<PathBuf> {
    let preferred = root.join(format!("{TRIXIE_PREFIX}{TRIXIE_VERSION}-{key}"));
    if cache::is_complete(&preferred) {
        return Some(preferred.join("bin"));
    }
    let suffix = format!("-{key}");
    let mut others: Vec<PathBuf> = fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(TRIXIE_PREFIX) && name.ends_with(&suffix))
        })
        .filter(|path| cache::is_complete(path))
        .collect();
    others.sort();
    others.pop().map(|dir| dir.join("bin"))
}

/// The preferred version when trixie still has it, else its newest one that
/// is new enough.
fn trixie_version(apt: &trixie::Apt) -> Result<String, Error> {
    let mut madison = apt.command("apt-cache");
    madison.args(["madison", "v4l-utils"]);
    let text = process::output(madison, Duration::from_secs(60))?;
    let mut versions: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("trixie"))
        .filter_map(|line| line.split('|').nth(1))
        .map(str::trim)
        .filter(|v| !v.contains(':') && upstream_at_least(v, MIN_TRIXIE_UPSTREAM))
        .collect();
    if versions.contains(&TRIXIE_VERSION) {
        return Ok(TRIXIE_VERSION.to_string());
    }
    versions.sort();
    versions
        .pop()
        .map(str::to_string)
        .ok_or(Error::NoTrixieVersion)
}

const WRAPPER_FORMAT: &str = "#!/bin/sh
# {tool} from Debian trixie's v4l-utils {version}, run by trixie's loader
# with trixie's libraries only (the host's are older).
exec {loader} --inhibit-cache --library-path {libs} --argv0 {tool} {binary} \"$@\"
";

/// `text` as one single-quoted shell word.
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn write_wrapper(root: &Path, bin: &Path, tool: &str, version: &str) -> Result<(), Error> {
    let binary = root.join("usr/bin").join(tool);
    if !binary.is_file() {
        return Err(Error::Missing(binary));
    }
    let script = WRAPPER_FORMAT
        .replace("{version}", version)
        .replace(
            "{loader}",
            &shell_word(&root.join(TRIXIE_LOADER).to_string_lossy()),
        )
        .replace(
            "{libs}",
            &shell_word(&root.join(TRIXIE_LIB_DIR).to_string_lossy()),
        )
        .replace("{binary}", &shell_word(&binary.to_string_lossy()))
        .replace("{tool}", tool);
    let path = bin.join(tool);
    fs::write(&path, script).map_err(cache::io_error("cannot write", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .map_err(cache::io_error("cannot chmod", &path))?;
    Ok(())
}

/// Every library the loader resolves for `tool` must come from the unpacked
/// tree: a missing package would otherwise be filled in from the host.
fn check_resolution(root: &Path, tool: &str, log: &Path) -> Result<(), Error> {
    let libs = root.join(TRIXIE_LIB_DIR);
    let mut list = Command::new(root.join(TRIXIE_LOADER));
    list.arg("--inhibit-cache")
        .arg("--library-path")
        .arg(&libs)
        .arg("--list")
        .arg(root.join("usr/bin").join(tool));
    let text = process::output(list, Duration::from_secs(60))?;
    fs::write(log, &text).map_err(cache::io_error("cannot write", log))?;
    for line in text.lines() {
        let resolved = match line.split_once("=>") {
            Some((_, target)) => target.split_whitespace().next().unwrap_or("not"),
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        let inside = resolved.starts_with(&*libs.to_string_lossy())
            || resolved.starts_with("linux-vdso")
            || Path::new(resolved) == root.join(TRIXIE_LOADER);
        if !inside {
            return Err(Error::HostLibrary {
                tool: tool.to_string(),
                library: line.trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Downloads (once) trixie's v4l-utils and the libraries its tools link,
/// unpacks them and returns the directory of wrapper scripts.
fn trixie_binaries() -> Result<PathBuf, Error> {
    let root = cache::root()?;
    let key = trixie_key();
    if let Some(bin) = cached_trixie(&root, &key) {
        return Ok(bin);
    }
    let _lock = cache::lock("v4l-utils-trixie")?;
    if let Some(bin) = cached_trixie(&root, &key) {
        return Ok(bin);
    }
    let apt = trixie::Apt::new(trixie::Arch::Amd64)?;
    apt.update()?;
    let version = trixie_version(&apt)?;
    let dir = root.join(format!("{TRIXIE_PREFIX}{version}-{key}"));
    cache::build_in_place(&dir, |dir| -> Result<(), Error> {
        eprintln!(
            "unpacking Debian trixie's v4l-utils {version} in {}",
            dir.display()
        );
        let debs = dir.join("debs");
        let tree = dir.join("root");
        let logs = dir.join("logs");
        for path in [&debs, &tree, &logs] {
            fs::create_dir_all(path).map_err(cache::io_error("cannot create", path))?;
        }
        let mut packages = vec![format!("v4l-utils={version}")];
        packages.extend(TRIXIE_LIBRARIES.iter().map(|p| (*p).to_string()));
        apt.download(&packages, &debs, &logs.join("download.log"))?;
        trixie::unpack_all(&debs, &tree, &logs)?;
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).map_err(cache::io_error("cannot create", &bin))?;
        for tool in TRIXIE_TOOLS {
            check_resolution(&tree, tool, &logs.join(format!("{tool}.libs")))?;
            write_wrapper(&tree, &bin, tool, &version)?;
        }
        Ok(())
    })?;
    Ok(dir.join("bin"))
}

/// The tools' directory: a finished source build or trixie unpack from the
/// cache without any network access, else the source build, else trixie's
/// binaries.
pub fn build() -> Result<PathBuf, Error> {
    let pinned = source_build_dir(PINNED_VERSION)?;
    if cache::is_complete(&pinned) {
        return Ok(pinned.join("bin"));
    }
    if let Some(bin) = cached_trixie(&cache::root()?, &trixie_key()) {
        return Ok(bin);
    }
    let source_error = match build_from_source() {
        Ok(bin) => return Ok(bin),
        Err(err) => err,
    };
    eprintln!("v4l-utils: no source build ({source_error}); trying Debian trixie's binaries");
    trixie_binaries().map_err(|binaries| Error::Unavailable {
        source_build: Box::new(source_error),
        binaries: Box::new(binaries),
    })
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
                    "no v4l-utils of at least {}.{} ({err}); the guest uses the host's v4l-utils, whose v4l2-compliance reports false failures on 6.12 kernels",
                    MIN_TRIXIE_UPSTREAM.0, MIN_TRIXIE_UPSTREAM.1
                )
            })
        })
        .clone()
}
