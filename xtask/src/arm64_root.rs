//! The root directory of the arm64 (imx8mp-evk) guests. The host's root is
//! x86, so these guests cannot share it: they get Debian trixie's arm64
//! `busybox-static` and `v4l-utils` (v4l2-compliance, v4l2-ctl, media-ctl of
//! at least 1.30, as the 6.12 kernels need) with every package those depend
//! on, unpacked into the cache (never installed), busybox's applets as
//! symlinks, and the mount points the guest's init uses. Keyed by the
//! packages' versions; a finished entry for the current index is taken
//! without touching the network.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{cache, deps, process, trixie};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Trixie(#[from] trixie::Error),
    #[error("trixie's arm64 v4l-utils is {0}; at least {MIN_V4L_UTILS_TEXT} is needed")]
    OldV4lUtils(String),
    #[error("{0}: no busybox applet table found")]
    NoAppletTable(PathBuf),
    #[error("busybox in {path} lacks the applets {missing}")]
    MissingApplets { path: PathBuf, missing: String },
    #[error("{path}: `{library}` resolves nowhere in the arm64 root")]
    MissingLibrary { path: PathBuf, library: String },
    #[error("{0} is a directory in the unpacked packages; the root expects it merged into /usr")]
    Unmerged(PathBuf),
}

/// The packages asked for; their Depends closure comes along.
const PACKAGES: &[&str] = &["busybox-static", "v4l-utils"];
/// Older v4l2-compliance versions report false failures on 6.12 kernels
/// (see docs/harness.md, "Guest V4L2 tools").
const MIN_V4L_UTILS: (u32, u32) = (1, 30);
const MIN_V4L_UTILS_TEXT: &str = "1.30";
/// Tools whose libraries must all resolve inside the root.
const TOOLS: &[&str] = &["v4l2-compliance", "v4l2-ctl", "media-ctl"];
/// Applets the harness and the tests' scripts cannot do without.
const REQUIRED_APPLETS: &[&str] = &[
    "sh", "md5sum", "cmp", "dd", "sleep", "ps", "cat", "grep", "sed", "awk", "od", "stat",
    "timeout", "mount", "chroot", "setsid", "modprobe", "modinfo", "insmod", "rmmod", "dmesg",
    "poweroff", "kill", "tr", "head", "tail", "mkdir", "rm", "cp", "mv", "ls", "uname",
];
/// Where the loader finds libraries (Debian's multiarch directory first).
const LIBRARY_DIRS: &[&str] = &["usr/lib/aarch64-linux-gnu", "usr/lib"];
/// The merged-/usr links and the mount points made besides the packages;
/// a change here makes a new entry.
const LAYOUT: &str =
    "bin->usr/bin sbin->usr/sbin lib->usr/lib usr/lib/modules var/tmp applets->usr/bin";
const PREFIX: &str = "arm64-root-";

/// A finished arm64 root.
#[derive(Debug, Clone)]
pub struct Root {
    /// The tree the guest mounts as its `/`.
    pub dir: PathBuf,
    /// Its static busybox, also the initramfs's.
    pub busybox: PathBuf,
}

impl Root {
    fn at(entry: &Path) -> Self {
        let dir = entry.join("root");
        Self {
            busybox: dir.join("usr/bin/busybox"),
            dir,
        }
    }
}

fn at_least(version: &str, min: (u32, u32)) -> bool {
    // Debian versions may carry an epoch (`1:`), which the upstream part follows.
    let upstream = version.split_once(':').map_or(version, |(_, rest)| rest);
    let mut numbers = upstream
        .split(['.', '-', '+', '~'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= min
}

/// The packages with their versions from the fetched index, and the cache
/// entry they make.
fn plan(apt: &trixie::Apt) -> Result<(Vec<(String, String)>, PathBuf), Error> {
    let names = apt.depends_closure(PACKAGES)?;
    let versions = apt.versions(&names)?;
    if let Some((_, version)) = versions.iter().find(|(name, _)| name == "v4l-utils") {
        if !at_least(version, MIN_V4L_UTILS) {
            return Err(Error::OldV4lUtils(version.clone()));
        }
    }
    let mut parts: Vec<Vec<u8>> = vec![
        trixie::Arch::Arm64.sources().as_bytes().to_vec(),
        LAYOUT.as_bytes().to_vec(),
    ];
    parts.extend(
        versions
            .iter()
            .map(|(name, version)| format!("{name}={version}").into_bytes()),
    );
    let borrowed: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let entry = cache::root()?.join(format!("{PREFIX}{}", cache::key(&borrowed)));
    Ok((versions, entry))
}

/// Builds (once) and returns the arm64 root.
pub fn prepare() -> Result<Root, Error> {
    deps::ensure(&["binutils", "dpkg"])?;
    let apt = trixie::Apt::new(trixie::Arch::Arm64)?;
    let _lock = cache::lock("arm64-root")?;
    if apt.has_index() {
        if let Ok((_, entry)) = plan(&apt) {
            if cache::is_complete(&entry) {
                return Ok(Root::at(&entry));
            }
        }
    }
    apt.update()?;
    let (versions, entry) = plan(&apt)?;
    cache::build_in_place(&entry, |entry| build(&apt, &versions, entry))?;
    Ok(Root::at(&entry))
}

fn build(apt: &trixie::Apt, versions: &[(String, String)], entry: &Path) -> Result<(), Error> {
    eprintln!("unpacking the arm64 guest root in {}", entry.display());
    let debs = entry.join("debs");
    let tree = entry.join("root");
    let logs = entry.join("logs");
    for path in [&debs, &tree, &logs] {
        fs::create_dir_all(path).map_err(cache::io_error("cannot create", path))?;
    }
    let wanted: Vec<String> = versions
        .iter()
        .map(|(name, version)| format!("{name}={version}"))
        .collect();
    apt.download(&wanted, &debs, &logs.join("download.log"))?;
    trixie::unpack_all(&debs, &tree, &logs)?;
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        let path = tree.join(link);
        if path.exists() {
            return Err(Error::Unmerged(path));
        }
        let target_dir = tree.join(target);
        fs::create_dir_all(&target_dir).map_err(cache::io_error("cannot create", &target_dir))?;
        symlink(target, &path).map_err(cache::io_error("cannot create", &path))?;
    }
    for dir in ["usr/lib/modules", "var/tmp"] {
        let path = tree.join(dir);
        fs::create_dir_all(&path).map_err(cache::io_error("cannot create", &path))?;
    }
    install_applets(&tree)?;
    let mut checked = BTreeSet::new();
    for tool in TOOLS {
        check_libraries(&tree, &tree.join("usr/bin").join(tool), &mut checked)?;
    }
    Ok(())
}

/// The applet names compiled into a busybox binary: its table is one run of
/// NUL-separated names in sorted order, starting with `[` and `[[`, ended by
/// an empty name (what `busybox --list` prints, read without running the
/// arm64 binary on the x86 host).
fn applet_names(binary: &[u8]) -> Option<Vec<String>> {
    const START: &[u8] = b"[\0[[\0";
    let start = binary.windows(START.len()).position(|w| w == START)?;
    let mut names = Vec::new();
    for name in binary[start..].split(|&b| b == 0) {
        if name.is_empty() {
            break;
        }
        let valid = name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"[]_.-".contains(&b));
        if !valid {
            return None;
        }
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    let sorted = names.windows(2).all(|pair| pair[0] < pair[1]);
    (sorted && names.len() > 2).then_some(names)
}

/// A symlink to busybox in /usr/bin for each applet no package provides.
fn install_applets(tree: &Path) -> Result<(), Error> {
    let busybox = tree.join("usr/bin/busybox");
    let binary = fs::read(&busybox).map_err(cache::io_error("cannot read", &busybox))?;
    let names = applet_names(&binary).ok_or_else(|| Error::NoAppletTable(busybox.clone()))?;
    let missing: Vec<&str> = REQUIRED_APPLETS
        .iter()
        .copied()
        .filter(|applet| !names.iter().any(|name| name == applet))
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingApplets {
            path: busybox,
            missing: missing.join(" "),
        });
    }
    for name in names.iter().filter(|name| name.as_str() != "busybox") {
        let taken = ["usr/bin", "usr/sbin"]
            .iter()
            .any(|dir| tree.join(dir).join(name).symlink_metadata().is_ok());
        if !taken {
            let link = tree.join("usr/bin").join(name);
            symlink("busybox", &link).map_err(cache::io_error("cannot create", &link))?;
        }
    }
    Ok(())
}

/// The `NEEDED` entries of an ELF file (`readelf` reads any architecture's).
fn needed(path: &Path) -> Result<Vec<String>, Error> {
    let mut readelf = Command::new("readelf");
    readelf.arg("-d").arg("-W").arg(path);
    let text = process::output(readelf, Duration::from_secs(60))?;
    Ok(text
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| {
            let start = line.find('[')?;
            let end = line.rfind(']')?;
            (start < end).then(|| line[start + 1..end].to_string())
        })
        .collect())
}

/// Every library `path` needs, transitively, must be in the root: the guest
/// has nothing else to fall back on.
fn check_libraries(tree: &Path, path: &Path, checked: &mut BTreeSet<String>) -> Result<(), Error> {
    for library in needed(path)? {
        if !checked.insert(library.clone()) {
            continue;
        }
        let found = LIBRARY_DIRS
            .iter()
            .map(|dir| tree.join(dir).join(&library))
            .find(|candidate| candidate.exists())
            .ok_or_else(|| Error::MissingLibrary {
                path: path.to_path_buf(),
                library: library.clone(),
            })?;
        check_libraries(tree, &found, checked)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_applet_table() {
        let binary = b"\x7fELF junk \x20[\0[[\0acpid\0cmp\0md5sum\0sh\0\0/var/log\0";
        assert_eq!(
            applet_names(binary),
            Some(
                ["[", "[[", "acpid", "cmp", "md5sum", "sh"]
                    .map(String::from)
                    .to_vec()
            )
        );
    }

    #[test]
    fn rejects_what_is_not_an_applet_table() {
        assert_eq!(applet_names(b"no table here"), None);
        assert_eq!(applet_names(b"[\0[[\0zz\0aa\0\0"), None, "unsorted");
        assert_eq!(applet_names(b"[\0[[\0a\xffb\0\0"), None, "not a name");
    }

    #[test]
    fn compares_versions_with_epochs() {
        assert!(at_least("1.30.1-1", (1, 30)));
        assert!(!at_least("1.22.1-5+b2", (1, 30)));
        assert!(at_least("1:1.37.0-6+b9", (1, 30)));
    }
}
