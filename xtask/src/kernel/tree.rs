//! A kernel the user built (`--kernel PATH`): its build directory, in-tree
//! or `O=`, gives the image, the `.config` and the modules, which
//! `make modules_install` puts into the cache (never into the host's
//! `/lib/modules`). Before anything is built its `.config` is checked for
//! what the guest needs ([`Need`]), so a kernel that cannot run a test is
//! refused with the missing symbols named.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{config_values, Arch, Flavor, Kernel};
use crate::{cache, process};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error("--kernel {0}: not a kernel build directory (no .config); the known kernels are debian-rt and debug-rt")]
    NotATree(PathBuf),
    #[error("kernel tree {0}: its .config is for neither x86_64 nor arm64")]
    UnknownArch(PathBuf),
    #[error("kernel tree {dir}: {path} is missing (is the kernel built?)")]
    Incomplete { dir: PathBuf, path: PathBuf },
    #[error("kernel tree {dir} is built for {arch}, but {machine} boots {wanted}")]
    WrongArch {
        dir: PathBuf,
        arch: &'static str,
        machine: String,
        wanted: &'static str,
    },
    #[error("kernel tree {dir} lacks what {what} needs: {missing}")]
    Lacks {
        dir: PathBuf,
        what: String,
        missing: String,
    },
}

const MODULES_INSTALL_TIMEOUT: Duration = Duration::from_secs(1800);

/// A kernel option a guest needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// `=y`: the guest uses it before it can load modules.
    BuiltIn(&'a str),
    /// `=y` or `=m`.
    Enabled(&'a str),
}

impl Need<'_> {
    /// How the symbol falls short in `config`, if it does.
    fn unmet(self, config: &BTreeMap<String, String>) -> Option<String> {
        let (symbol, accepted): (&str, &[&str]) = match self {
            Self::BuiltIn(symbol) => (symbol, &["y"]),
            Self::Enabled(symbol) => (symbol, &["y", "m"]),
        };
        let key = format!("CONFIG_{symbol}");
        match config.get(&key).map(String::as_str) {
            Some(value) if accepted.contains(&value) => None,
            Some("m") => Some(format!("{key}=y (it is a module)")),
            _ => Some(key),
        }
    }
}

/// A kernel build directory.
#[derive(Debug, PartialEq, Eq)]
pub struct Tree {
    pub dir: PathBuf,
    pub arch: Arch,
    /// `tree-<hash of the path>`: the kernel's name in test ids and paths.
    name: String,
    config: BTreeMap<String, String>,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }

    /// The bootable image, relative to the build directory.
    fn image(self) -> &'static str {
        match self {
            Self::X86_64 => "arch/x86/boot/bzImage",
            Self::Arm64 => "arch/arm64/boot/Image",
        }
    }
}

impl Tree {
    /// Reads the build directory's `.config` (nothing is built yet).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let dir = fs::canonicalize(dir).map_err(|_| Error::NotATree(dir.to_path_buf()))?;
        let config_path = dir.join(".config");
        let text =
            fs::read_to_string(&config_path).map_err(|_| Error::NotATree(dir.to_path_buf()))?;
        let config = config_values(&text);
        let enabled = |symbol: &str| config.get(symbol).is_some_and(|v| v == "y");
        let arch = if enabled("CONFIG_X86_64") {
            Arch::X86_64
        } else if enabled("CONFIG_ARM64") {
            Arch::Arm64
        } else {
            return Err(Error::UnknownArch(dir));
        };
        let key = cache::key(&[dir.as_os_str().as_encoded_bytes()]);
        Ok(Self {
            name: format!("tree-{key}"),
            dir,
            arch,
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails, naming every missing symbol, unless the tree is built for
    /// `arch` and its `.config` meets `needs`; `what` says who needs them.
    pub fn check(
        &self,
        arch: Arch,
        machine: &str,
        what: &str,
        needs: &[Need<'_>],
    ) -> Result<(), Error> {
        if self.arch != arch {
            return Err(Error::WrongArch {
                dir: self.dir.clone(),
                arch: self.arch.name(),
                machine: machine.to_string(),
                wanted: arch.name(),
            });
        }
        let missing: Vec<String> = needs
            .iter()
            .filter_map(|need| need.unmet(&self.config))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Lacks {
                dir: self.dir.clone(),
                what: what.to_string(),
                missing: missing.join(", "),
            })
        }
    }

    /// The kernel ready to boot: its modules installed (once per build of
    /// the tree: keyed by its path, release, `.config` and image) into
    /// `kernel/tree-<key>/` of the cache.
    pub fn kernel(&'static self) -> Result<Kernel, Error> {
        let image = self.dir.join(self.arch.image());
        let release_file = self.dir.join("include/config/kernel.release");
        for path in [&image, &release_file] {
            if !path.exists() {
                return Err(Error::Incomplete {
                    dir: self.dir.clone(),
                    path: path.clone(),
                });
            }
        }
        let release = fs::read_to_string(&release_file)
            .map_err(cache::io_error("cannot read", &release_file))?
            .trim()
            .to_string();
        let config_path = self.dir.join(".config");
        let config =
            fs::read(&config_path).map_err(cache::io_error("cannot read", &config_path))?;
        let image_bytes = fs::read(&image).map_err(cache::io_error("cannot read", &image))?;
        let key = cache::key(&[
            self.dir.as_os_str().as_encoded_bytes(),
            release.as_bytes(),
            &config,
            &image_bytes,
        ]);
        let entry = cache::dir("kernel")?.join(format!("tree-{key}"));
        let modroot = entry.join("modroot");
        if !cache::is_complete(&entry) {
            let _lock = cache::lock(&format!("kernel-tree-{key}"))?;
            cache::build_in_place(&entry, |entry| -> Result<(), Error> {
                eprintln!(
                    "installing the modules of {} into {}",
                    self.dir.display(),
                    entry.display()
                );
                let mut make = Command::new("make");
                make.arg("-C")
                    .arg(&self.dir)
                    .args(self.arch.make_vars())
                    .arg("modules_install")
                    .arg(format!("INSTALL_MOD_PATH={}", modroot.display()));
                process::run_logged(
                    make,
                    &entry.join("modules_install.log"),
                    MODULES_INSTALL_TIMEOUT,
                )?;
                Ok(())
            })?;
        }
        Ok(Kernel {
            flavor: Flavor::Tree(self),
            arch: self.arch,
            release,
            image,
            modules_dir: modroot.join("lib/modules"),
            kbuild: self.dir.clone(),
        })
    }
}

/// `--kernel`'s value: a kernel's name, or the path of a build directory
/// (which lives as long as the program: a kernel is `Copy`, and the command
/// line names at most one tree).
pub fn parse_kernel(text: &str) -> Result<Flavor, String> {
    if let Ok(flavor) = text.parse::<Flavor>() {
        return Ok(flavor);
    }
    let tree = Tree::open(Path::new(text)).map_err(|e| e.to_string())?;
    Ok(Flavor::Tree(Box::leak(Box::new(tree))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(config: &str) -> Tree {
        Tree {
            dir: PathBuf::from("/k"),
            arch: Arch::X86_64,
            name: "tree-test".to_string(),
            config: config_values(config),
        }
    }

    const NEEDS: &[Need<'static>] = &[
        Need::BuiltIn("VIRTIO_PCI"),
        Need::Enabled("9P_FS"),
        Need::Enabled("V4L2_MEM2MEM_DEV"),
    ];

    #[test]
    fn a_tree_with_everything_passes() {
        let tree = tree("CONFIG_VIRTIO_PCI=y\nCONFIG_9P_FS=m\nCONFIG_V4L2_MEM2MEM_DEV=y\n");
        assert!(tree.check(Arch::X86_64, "q35", "the test", NEEDS).is_ok());
    }

    #[test]
    fn missing_symbols_are_named_on_one_line() {
        let tree =
            tree("CONFIG_VIRTIO_PCI=m\n# CONFIG_V4L2_MEM2MEM_DEV is not set\nCONFIG_9P_FS=y\n");
        let text = tree
            .check(Arch::X86_64, "q35", "the test", NEEDS)
            .expect_err("lacks two")
            .to_string();
        assert_eq!(
            text,
            "kernel tree /k lacks what the test needs: CONFIG_VIRTIO_PCI=y (it is a module), CONFIG_V4L2_MEM2MEM_DEV"
        );
    }

    #[test]
    fn a_tree_of_another_architecture_is_refused() {
        let tree = tree("CONFIG_VIRTIO_PCI=y\n");
        assert!(tree
            .check(Arch::Arm64, "imx8mp-evk", "the test", &[])
            .expect_err("x86 tree")
            .to_string()
            .contains("built for x86_64"));
    }

    #[test]
    fn kernel_names_stay_names() {
        assert_eq!(parse_kernel("debug-rt"), Ok(Flavor::DebugRt));
        assert!(parse_kernel("/nonexistent/kernel")
            .expect_err("no tree")
            .contains("not a kernel build directory"));
    }
}
