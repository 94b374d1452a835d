//! Debian trixie's binary packages for the guests, per architecture: fetched
//! with `apt-get download` under a private apt configuration (its own
//! sources list, lists and archive cache in the cache directory) and
//! unpacked with `dpkg-deb -x`. Nothing is installed, and the system's apt
//! state stays bookworm's.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{cache, process};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error("trixie's {arch} index has no `{field}` for {package}")]
    NoField {
        arch: &'static str,
        package: String,
        field: &'static str,
    },
}

pub const FETCH_TIMEOUT: Duration = Duration::from_secs(900);
const UNPACK_TIMEOUT: Duration = Duration::from_secs(300);

/// The Debian architecture whose packages are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// The host's own: the x86 guests' tools.
    Amd64,
    /// The imx8mp-evk guests' root.
    Arm64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// The cache directory of this architecture's apt state.
    fn apt_dir_name(self) -> &'static str {
        match self {
            Self::Amd64 => "apt-trixie",
            Self::Arm64 => "apt-trixie-arm64",
        }
    }

    /// The sources list; part of the cache keys of what is made from it.
    pub fn sources(self) -> &'static str {
        match self {
            Self::Amd64 => {
                "Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
            }
            Self::Arm64 => {
                "Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Architectures: arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
            }
        }
    }
}

/// One architecture's private apt state under the cache.
pub struct Apt {
    arch: Arch,
    dir: PathBuf,
}

impl Apt {
    /// The apt state of `arch` (created, not refreshed).
    pub fn new(arch: Arch) -> Result<Self, Error> {
        let dir = cache::dir(arch.apt_dir_name())?;
        for sub in ["lists/partial", "cache/archives/partial", "preferences.d"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(cache::io_error("cannot create", &path))?;
        }
        Ok(Self { arch, dir })
    }

    /// apt-get or apt-cache on trixie's index of this architecture alone.
    pub fn command(&self, program: &str) -> Command {
        let dir = &self.dir;
        let mut command = Command::new(program);
        command.arg("-q");
        let mut options = vec![
            ("Dir::Etc::sourcelist", dir.join("trixie.sources")),
            ("Dir::Etc::sourceparts", PathBuf::from("-")),
            ("Dir::Etc::preferences", dir.join("preferences")),
            ("Dir::Etc::preferencesparts", dir.join("preferences.d")),
            ("Dir::State::Lists", dir.join("lists")),
            ("Dir::Cache", dir.join("cache")),
            ("APT::Get::List-Cleanup", PathBuf::from("0")),
        ];
        if self.arch != Arch::Amd64 {
            // Another architecture's packages by their plain names, without
            // the host's installed (amd64) packages in the way.
            options.extend([
                ("APT::Architecture", PathBuf::from(self.arch.name())),
                ("APT::Architectures", PathBuf::from(self.arch.name())),
                ("Dir::State::status", PathBuf::from("/dev/null")),
            ]);
        }
        for (option, value) in options {
            command
                .arg("-o")
                .arg(format!("{option}={}", value.display()));
        }
        command
    }

    /// Whether an index was fetched before.
    pub fn has_index(&self) -> bool {
        fs::read_dir(self.dir.join("lists")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// Writes the sources list and fetches trixie's index.
    pub fn update(&self) -> Result<(), Error> {
        let sources = self.dir.join("trixie.sources");
        fs::write(&sources, self.arch.sources())
            .map_err(cache::io_error("cannot write", &sources))?;
        let mut update = self.command("apt-get");
        update.args(["--error-on=any", "update"]);
        process::run_logged(update, &self.dir.join("update.log"), FETCH_TIMEOUT)?;
        Ok(())
    }

    /// The candidate version of each package, from the fetched index.
    pub fn versions(&self, packages: &[String]) -> Result<Vec<(String, String)>, Error> {
        let mut show = self.command("apt-cache");
        show.args(["show", "--no-all-versions"]).args(packages);
        let text = process::output(show, Duration::from_secs(60))?;
        let mut found: Vec<(String, String)> = Vec::new();
        let mut package = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("Package: ") {
                package = Some(name.trim().to_string());
            } else if let Some(version) = line.strip_prefix("Version: ") {
                if let Some(name) = package.take() {
                    found.push((name, version.trim().to_string()));
                }
            }
        }
        packages
            .iter()
            .map(|name| {
                found
                    .iter()
                    .find(|(n, _)| n == name)
                    .cloned()
                    .ok_or_else(|| Error::NoField {
                        arch: self.arch.name(),
                        package: name.clone(),
                        field: "Version",
                    })
            })
            .collect()
    }

    /// `roots` and every package they depend on (Depends and Pre-Depends,
    /// recursively), sorted; virtual packages are left out.
    pub fn depends_closure(&self, roots: &[&str]) -> Result<Vec<String>, Error> {
        let mut depends = self.command("apt-cache");
        depends
            .args([
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ])
            .args(roots);
        let text = process::output(depends, Duration::from_secs(60))?;
        let mut names: Vec<String> = text
            .lines()
            .filter(|line| !line.starts_with(' ') && !line.starts_with('<'))
            .map(|line| line.trim().to_string())
            .filter(|line| !line.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Downloads `packages` (`name` or `name=version`) into `into`.
    pub fn download(&self, packages: &[String], into: &Path, log: &Path) -> Result<(), Error> {
        let mut download = self.command("apt-get");
        download.current_dir(into).arg("download").args(packages);
        process::run_logged(download, log, FETCH_TIMEOUT)?;
        Ok(())
    }
}

/// Unpacks every `.deb` of `debs` into `tree` (`dpkg-deb -x`, name order),
/// one log per package in `logs`.
pub fn unpack_all(debs: &Path, tree: &Path, logs: &Path) -> Result<(), Error> {
    let mut packages: Vec<PathBuf> = fs::read_dir(debs)
        .map_err(cache::io_error("cannot read", debs))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    packages.sort();
    for deb in &packages {
        let mut unpack = Command::new("dpkg-deb");
        unpack.arg("-x").arg(deb).arg(tree);
        let name = deb.file_stem().unwrap_or_default().to_string_lossy();
        let log = logs.join(format!("unpack-{name}.log"));
        process::run_logged(unpack, &log, UNPACK_TIMEOUT)?;
    }
    Ok(())
}
