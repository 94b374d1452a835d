//! Debian source packages from sid, fetched through a `deb-src`-only entry so
//! the system's binary packages stay on the release it runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{cache, deps, process};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error("no {package} source package could be downloaded (tried {tried})")]
    NoSource { package: String, tried: String },
}

const SOURCES_FILE: &str = "/etc/apt/sources.list.d/vhost-device-video-sid-src.sources";
const SOURCES: &str = "Types: deb-src
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
const FETCH_TIMEOUT: Duration = Duration::from_secs(900);

fn ensure_sources_entry() -> Result<(), Error> {
    let path = Path::new(SOURCES_FILE);
    if fs::read_to_string(path).is_ok_and(|text| text == SOURCES) {
        return Ok(());
    }
    let staged = cache::dir("apt")?.join("sid-src.sources");
    fs::write(&staged, SOURCES).map_err(cache::io_error("cannot write", &staged))?;
    let mut install = deps::privileged("install")?;
    install.arg("-m644").arg(&staged).arg(path);
    process::run_visible(install, Duration::from_secs(60))?;
    Ok(())
}

/// Refreshes only the sid source index, leaving the system's lists alone.
fn update_source_index() -> Result<(), Error> {
    let mut command = deps::privileged("apt-get")?;
    command.args([
        "-q",
        "-o",
        "DPkg::Lock::Timeout=600",
        "-o",
        &format!("Dir::Etc::sourcelist={SOURCES_FILE}"),
        "-o",
        "Dir::Etc::sourceparts=-",
        "-o",
        "APT::Get::List-Cleanup=0",
        "update",
    ]);
    let log = cache::dir("logs")?.join("apt-update-sid-src.log");
    process::run_logged(command, &log, FETCH_TIMEOUT)?;
    Ok(())
}

/// `pinned` first, then the other versions of `package` the index lists that
/// `acceptable` takes, newest first.
fn candidate_versions(
    package: &str,
    pinned: &str,
    acceptable: impl Fn(&str) -> bool,
) -> Result<Vec<String>, Error> {
    let mut command = Command::new("apt-cache");
    command.arg("showsrc").arg(package);
    let (_, text) = process::capture(command, Duration::from_secs(60))?;
    let mut versions: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("Version: "))
        .filter(|v| *v != pinned && acceptable(v))
        .map(str::to_string)
        .collect();
    versions.sort();
    versions.dedup();
    versions.reverse();
    Ok(std::iter::once(pinned.to_string())
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

/// The `.dsc` of a fully downloaded version in the cache, if there is one.
fn cached(dir: &Path) -> Option<PathBuf> {
    cache::is_complete(dir).then(|| dsc_in(dir)).flatten()
}

/// Downloads the source package `package` into `cache/<cache_name>/<version>/`
/// and returns the version and its `.dsc`: the pinned version when it is
/// cached (no network), else the first of `pinned` and the `acceptable`
/// versions of the sid index that downloads whole.
pub fn fetch(
    package: &str,
    cache_name: &str,
    pinned: &str,
    acceptable: impl Fn(&str) -> bool,
) -> Result<(String, PathBuf), Error> {
    let sources = cache::dir(cache_name)?;
    let version_dir = |version: &str| sources.join(version.replace(':', "_"));
    if let Some(dsc) = cached(&version_dir(pinned)) {
        return Ok((pinned.to_string(), dsc));
    }
    let _lock = cache::lock(cache_name)?;
    ensure_sources_entry()?;
    update_source_index()?;
    let versions = candidate_versions(package, pinned, acceptable)?;
    for version in &versions {
        let dir = version_dir(version);
        if let Some(dsc) = cached(&dir) {
            return Ok((version.clone(), dsc));
        }
        let fetched = cache::build_in_place(&dir, |dir| -> Result<(), Error> {
            let mut command = Command::new("apt-get");
            command
                .current_dir(dir)
                .args(["-q", "source", "--download-only"])
                .arg(format!("{package}={version}"));
            process::run_logged(command, &dir.join("download.log"), FETCH_TIMEOUT)?;
            Ok(())
        });
        match fetched {
            Ok(()) => {
                if let Some(dsc) = dsc_in(&dir) {
                    return Ok((version.clone(), dsc));
                }
            }
            Err(err) => eprintln!("{package} {version}: {err}"),
        }
    }
    Err(Error::NoSource {
        package: package.to_string(),
        tried: versions.join(", "),
    })
}
