//! Guest kernels: Debian's PREEMPT_RT image from packages (`debian-rt`) and a
//! small PREEMPT_RT kernel with lock debugging built from Debian's
//! `linux-source-6.12` and `images/debug-rt.config` (`debug-rt`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{cache, deps, process};

pub mod tree;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error("no Debian 6.12 PREEMPT_RT kernel package is available (wanted {0})")]
    NoDebianKernel(String),
    #[error("kernel {release}: {path} is missing after unpacking its packages")]
    Incomplete { release: String, path: PathBuf },
    #[error("kernel config: symbols not set as {fragment} asks: {symbols}")]
    ConfigMismatch { fragment: String, symbols: String },
    #[error("kernel {release} has no module {module} (neither built in nor in modules.dep)")]
    NoModule { release: String, module: String },
    #[error("unknown kernel `{0}` (known: debian-rt, debug-rt)")]
    Unknown(String),
    #[error(transparent)]
    Tree(#[from] tree::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    DebianRt,
    DebugRt,
    /// A kernel build directory given as `--kernel PATH`.
    Tree(&'static tree::Tree),
}

impl std::str::FromStr for Flavor {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "debian-rt" => Ok(Self::DebianRt),
            "debug-rt" => Ok(Self::DebugRt),
            other => Err(Error::Unknown(other.to_string())),
        }
    }
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Self::DebianRt => "debian-rt",
            Self::DebugRt => "debug-rt",
            Self::Tree(tree) => tree.name(),
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The architecture a kernel is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    /// `make` variables for kbuild: the architecture and, off the host's
    /// own, the cross compiler.
    pub fn make_vars(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => &[],
            Self::Arm64 => &["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"],
        }
    }
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub flavor: Flavor,
    pub arch: Arch,
    pub release: String,
    pub image: PathBuf,
    /// The directory holding `<release>/` with modules.dep and the modules;
    /// the guest sees it as `/lib/modules`.
    pub modules_dir: PathBuf,
    /// Where out-of-tree modules build against (`make -C <kbuild> M=...`).
    pub kbuild: PathBuf,
}

const DEBIAN_RT_PIN: &str = "6.12.117+deb12-rt-amd64";
const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// The tarball's path in the package.
const SOURCE_TARBALL: &str = "usr/src/linux-source-6.12.tar.xz";
const FRAGMENT: &str = include_str!("../../images/debug-rt.config");
const BUILD_TIMEOUT: Duration = Duration::from_secs(5400);
const FETCH_TIMEOUT: Duration = Duration::from_secs(900);
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The image package of a Debian release (the unsigned one where both exist:
/// the guest boots without Secure Boot).
fn debian_image_package(release: &str) -> Result<Option<String>, Error> {
    for image in [
        format!("linux-image-{release}-unsigned"),
        format!("linux-image-{release}"),
    ] {
        if deps::available(&image)? {
            return Ok(Some(image));
        }
    }
    Ok(None)
}

fn debian_headers_package(release: &str) -> String {
    format!("linux-headers-{release}")
}

/// Whether apt has the image and headers of `release`.
fn debian_rt_available(release: &str) -> Result<bool, Error> {
    Ok(debian_image_package(release)?.is_some()
        && deps::available(&debian_headers_package(release))?)
}

/// Of a headers package's `Depends` field, the packages its build tree
/// points into: the common headers (the source half of the tree) and
/// kbuild's host programs (`scripts/`, `tools/`).
fn headers_companions(depends: &str) -> Vec<String> {
    depends
        .split([',', '|'])
        .filter_map(|item| item.split_whitespace().next())
        .filter(|name| name.starts_with("linux-headers-") || name.starts_with("linux-kbuild-"))
        .map(str::to_string)
        .collect()
}

fn package_depends(package: &str) -> Result<String, Error> {
    let mut command = Command::new("apt-cache");
    command.args(["show", "--no-all-versions", package]);
    let text = process::output(command, QUERY_TIMEOUT)?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))
        .unwrap_or("")
        .to_string())
}

/// Points the arch headers' Makefile, which includes the common headers'
/// by their installed path, at the unpacked copy under `root`.
fn relocate_makefile(text: &str, root: &Path) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("include /usr/src/") {
            Some(rest) => format!("include {}/usr/src/{rest}", root.display()),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Downloads Debian's image, headers, common headers and kbuild packages of
/// `release` into `dir/debs`, unpacks them into `dir/root` (nothing is
/// installed: the host's /boot and /lib/modules stay as they are), makes the
/// build tree work from there and generates modules.dep.
fn unpack_debian_rt(release: &str, dir: &Path) -> Result<(), Error> {
    eprintln!("fetching Debian's {release} kernel into {}", dir.display());
    let logs = dir.join("logs");
    let debs = dir.join("debs");
    let root = dir.join("root");
    for path in [&logs, &debs, &root] {
        fs::create_dir_all(path).map_err(cache::io_error("cannot create", path))?;
    }
    let image =
        debian_image_package(release)?.ok_or_else(|| Error::NoDebianKernel(release.to_string()))?;
    let headers = debian_headers_package(release);
    let mut packages = vec![image, headers.clone()];
    packages.extend(headers_companions(&package_depends(&headers)?));
    let mut download = Command::new("apt-get");
    download
        .current_dir(&debs)
        // The files land in the cache, which apt's sandbox user may not write.
        .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
        .args(&packages);
    process::run_logged(download, &logs.join("download.log"), FETCH_TIMEOUT)?;
    for entry in fs::read_dir(&debs).map_err(cache::io_error("cannot read", &debs))? {
        let deb = entry.map_err(cache::io_error("cannot read", &debs))?.path();
        let mut unpack = Command::new("dpkg-deb");
        unpack.arg("-x").arg(&deb).arg(&root);
        process::run_logged(unpack, &logs.join("unpack.log"), FETCH_TIMEOUT)?;
    }
    // The trees' scripts/ and tools/ links are relative (into usr/lib), so
    // they hold inside the root; only the include needs its path changed.
    let makefile = root.join(format!("usr/src/{headers}/Makefile"));
    let text = fs::read_to_string(&makefile).map_err(cache::io_error("cannot read", &makefile))?;
    fs::write(&makefile, relocate_makefile(&text, &root))
        .map_err(cache::io_error("cannot write", &makefile))?;
    // Debian generates modules.dep when the package is installed.
    let mut depmod = Command::new("depmod");
    depmod.arg("-b").arg(&root).arg(release);
    process::run_logged(depmod, &logs.join("depmod.log"), FETCH_TIMEOUT)?;
    Ok(())
}

/// The parts of a finished `debian-rt-<release>/` entry.
fn debian_rt_entry(release: &str, dir: &Path) -> Result<Kernel, Error> {
    let root = dir.join("root");
    let image = root.join(format!("boot/vmlinuz-{release}"));
    let modules_dir = root.join("lib/modules");
    let kbuild = root.join(format!("usr/src/{}", debian_headers_package(release)));
    for path in [
        image.clone(),
        modules_dir.join(release).join("modules.dep"),
        kbuild.join("Module.symvers"),
        kbuild.join("scripts/basic/fixdep"),
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
        arch: Arch::X86_64,
        release: release.to_string(),
        image,
        modules_dir,
        kbuild,
    })
}

/// Newest `6.12.*<suffix>` release apt knows (suffix `-rt-amd64`,
/// `-rt-arm64`), for when the pin is gone.
pub fn newest_debian_release(suffix: &str) -> Result<Option<String>, Error> {
    let mut command = Command::new("apt-cache");
    command.arg("pkgnames").arg("linux-image-6.12.");
    let (_, text) = process::capture(command, Duration::from_secs(60))?;
    let mut releases: Vec<String> = text
        .lines()
        .filter_map(|name| name.strip_prefix("linux-image-"))
        .map(|rest| rest.trim_end_matches("-unsigned").to_string())
        .filter(|release| release.ends_with(suffix))
        .collect();
    releases.sort_by_key(|release| version_key(release));
    Ok(releases.pop())
}

fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Debian's x86 PREEMPT_RT kernel, unpacked into the cache (once per
/// release; a finished entry of the pinned release is used without asking
/// apt anything).
fn debian_rt() -> Result<Kernel, Error> {
    let pinned = cache::dir("kernel")?.join(format!("debian-rt-{DEBIAN_RT_PIN}"));
    if cache::is_complete(&pinned) {
        return debian_rt_entry(DEBIAN_RT_PIN, &pinned);
    }
    let mut release = DEBIAN_RT_PIN.to_string();
    if !debian_rt_available(&release)? {
        deps::apt_update()?;
        if !debian_rt_available(&release)? {
            release = newest_debian_release("-rt-amd64")?
                .ok_or_else(|| Error::NoDebianKernel(DEBIAN_RT_PIN.to_string()))?;
            eprintln!("kernel {DEBIAN_RT_PIN} is gone from apt; using {release}");
            if !debian_rt_available(&release)? {
                return Err(Error::NoDebianKernel(release));
            }
        }
    }
    let dir = cache::dir("kernel")?.join(format!("debian-rt-{release}"));
    if !cache::is_complete(&dir) {
        let _lock = cache::lock(&format!("kernel-debian-rt-{release}"))?;
        cache::build_in_place(&dir, |dir| unpack_debian_rt(&release, dir))?;
    }
    debian_rt_entry(&release, &dir)
}

/// `CONFIG_FOO=value` and `# CONFIG_FOO is not set` lines of a config.
fn config_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            if let Some(rest) = line.strip_prefix("# ") {
                let symbol = rest.strip_suffix(" is not set")?;
                return Some((symbol.to_string(), "n".to_string()));
            }
            let (symbol, value) = line.split_once('=')?;
            symbol
                .starts_with("CONFIG_")
                .then(|| (symbol.to_string(), value.to_string()))
        })
        .collect()
}

fn verify_config(config: &Path, spec: &SourceBuild) -> Result<(), Error> {
    let text = fs::read_to_string(config).map_err(cache::io_error("cannot read", config))?;
    let got = config_values(&text);
    let wrong: Vec<String> = config_values(spec.fragment)
        .into_iter()
        .filter(|(symbol, want)| {
            let have = got.get(symbol).map(String::as_str).unwrap_or("n");
            have != want
        })
        .map(|(symbol, want)| {
            let have = got.get(&symbol).map(String::as_str).unwrap_or("n");
            format!("{symbol}={want} (got {have})")
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Error::ConfigMismatch {
            fragment: spec.fragment_name.to_string(),
            symbols: wrong.join(", "),
        })
    }
}

fn make(src: &Path, build: &Path, arch: Arch, args: &[&str], log: &Path) -> Result<(), Error> {
    let mut command = Command::new("nice");
    command
        .arg("make")
        .arg("-C")
        .arg(src)
        .arg(format!("O={}", build.display()))
        .args(arch.make_vars())
        .args(args);
    process::run_logged(command, log, BUILD_TIMEOUT)?;
    Ok(())
}

/// Debian's `linux-source-6.12`, unpacked into the cache (not installed):
/// its version and the source tarball.
pub fn source_package() -> Result<(String, PathBuf), Error> {
    let package = deps::unpacked(SOURCE_PACKAGE)?;
    let tarball = package.root.join(SOURCE_TARBALL);
    Ok((package.version, tarball))
}

/// The unpacked kernel source (shared by the debug-rt build and checkpatch).
pub fn source_tree() -> Result<PathBuf, Error> {
    deps::ensure(&["xz-utils"])?;
    let (version, tarball) = source_package()?;
    let dir = cache::dir("kernel")?.join(format!("linux-source-{version}"));
    if cache::is_complete(&dir) {
        return Ok(dir);
    }
    let _lock = cache::lock("linux-source")?;
    cache::build_in_place(&dir, |dir| -> Result<(), Error> {
        eprintln!("unpacking {}", tarball.display());
        let mut untar = Command::new("tar");
        untar
            .arg("-xf")
            .arg(&tarball)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(dir);
        let log = dir.with_extension("log");
        process::run_logged(untar, &log, BUILD_TIMEOUT)?;
        Ok(())
    })?;
    Ok(dir)
}

/// A kernel built from `linux-source-6.12`: `make tinyconfig`, a checked-in
/// fragment merged in, `olddefconfig`, then every symbol of the fragment
/// verified. Its build tree stays in the cache for out-of-tree modules.
pub struct SourceBuild<'a> {
    pub flavor: Flavor,
    pub arch: Arch,
    /// Cache entry prefix and lock name.
    pub name: &'a str,
    /// The fragment's path in the checkout, for messages.
    pub fragment_name: &'a str,
    pub fragment: &'a str,
    /// What `make` builds besides the config (the image, `modules`, ...).
    pub targets: &'a [&'a str],
    /// The bootable image, relative to the build tree.
    pub image: &'a str,
}

/// Builds (once) the kernel `spec` describes.
pub fn build_from_source(spec: &SourceBuild) -> Result<Kernel, Error> {
    deps::ensure(deps::BASE_PACKAGES)?;
    let src = source_tree()?;
    let (version, _) = source_package()?;
    let key = cache::key(&[version.as_bytes(), spec.fragment.as_bytes()]);
    let dir = cache::dir("kernel")?.join(format!("{}-{version}-{key}", spec.name));
    let build = dir.join("build");
    let modroot = dir.join("modroot");
    if !cache::is_complete(&dir) {
        let _lock = cache::lock(&format!("kernel-{}", spec.name))?;
        cache::build_in_place(&dir, |dir| -> Result<(), Error> {
            eprintln!("building the {} kernel in {}", spec.name, dir.display());
            let logs = dir.join("logs");
            fs::create_dir_all(&logs).map_err(cache::io_error("cannot create", &logs))?;
            let fragment = dir.join("fragment.config");
            fs::write(&fragment, spec.fragment)
                .map_err(cache::io_error("cannot write", &fragment))?;
            make(
                &src,
                &build,
                spec.arch,
                &["tinyconfig"],
                &logs.join("config.log"),
            )?;
            let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
            merge
                .current_dir(&build)
                .arg("-m")
                .arg("-O")
                .arg(&build)
                .arg(build.join(".config"))
                .arg(&fragment);
            process::run_logged(merge, &logs.join("merge.log"), BUILD_TIMEOUT)?;
            make(
                &src,
                &build,
                spec.arch,
                &["olddefconfig"],
                &logs.join("olddefconfig.log"),
            )?;
            verify_config(&build.join(".config"), spec)?;
            let mut args = vec!["-j2"];
            args.extend_from_slice(spec.targets);
            make(&src, &build, spec.arch, &args, &logs.join("build.log"))?;
            let install = format!("INSTALL_MOD_PATH={}", modroot.display());
            make(
                &src,
                &build,
                spec.arch,
                &["modules_install", install.as_str()],
                &logs.join("modules_install.log"),
            )?;
            Ok(())
        })?;
    }
    let release_file = build.join("include/config/kernel.release");
    let release = fs::read_to_string(&release_file)
        .map_err(cache::io_error("cannot read", &release_file))?
        .trim()
        .to_string();
    Ok(Kernel {
        flavor: spec.flavor,
        arch: spec.arch,
        release,
        image: build.join(spec.image),
        modules_dir: modroot.join("lib/modules"),
        kbuild: build,
    })
}

fn debug_rt() -> Result<Kernel, Error> {
    build_from_source(&SourceBuild {
        flavor: Flavor::DebugRt,
        arch: Arch::X86_64,
        name: "debug-rt",
        fragment_name: "images/debug-rt.config",
        fragment: FRAGMENT,
        targets: &["bzImage", "modules"],
        image: "arch/x86/boot/bzImage",
    })
}

/// Installs or builds (once) and returns a kernel.
pub fn prepare(flavor: Flavor) -> Result<Kernel, Error> {
    match flavor {
        Flavor::DebianRt => debian_rt(),
        Flavor::DebugRt => debug_rt(),
        Flavor::Tree(tree) => Ok(tree.kernel()?),
    }
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl Kernel {
    fn release_dir(&self) -> PathBuf {
        self.modules_dir.join(&self.release)
    }

    /// Module files (relative to the release directory) that `names` need,
    /// dependencies first; built-in modules are skipped.
    pub fn module_closure(&self, names: &[&str]) -> Result<Vec<String>, Error> {
        let dir = self.release_dir();
        let dep_path = dir.join("modules.dep");
        let deps_text = fs::read_to_string(&dep_path).unwrap_or_default();
        let builtin_path = dir.join("modules.builtin");
        let builtin_text = fs::read_to_string(&builtin_path).unwrap_or_default();
        let table: BTreeMap<String, (String, Vec<String>)> = deps_text
            .lines()
            .filter_map(|line| {
                let (module, deps) = line.split_once(':')?;
                let deps = deps.split_whitespace().map(str::to_string).collect();
                Some((module_name(module), (module.to_string(), deps)))
            })
            .collect();
        let builtin: Vec<String> = builtin_text.lines().map(module_name).collect();
        let mut order = Vec::new();
        for name in names {
            let name = name.replace('-', "_");
            if let Some((path, deps)) = table.get(&name) {
                for dep in deps.iter().rev() {
                    if !order.contains(dep) {
                        order.push(dep.clone());
                    }
                }
                if !order.contains(path) {
                    order.push(path.clone());
                }
            } else if !builtin.contains(&name) {
                return Err(Error::NoModule {
                    release: self.release.clone(),
                    module: name,
                });
            }
        }
        Ok(order)
    }

    pub fn module_path(&self, relative: &str) -> PathBuf {
        self.release_dir().join(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_companions_are_the_common_headers_and_kbuild() {
        let depends = "linux-base (>= 4.12~), linux-headers-6.12.117+deb12-common-rt (= 6.12.117-1~deb12u1), \
             linux-image-6.12.117+deb12-rt-amd64 (= 6.12.117-1~deb12u1) | linux-image-6.12.117+deb12-rt-amd64-unsigned (= 6.12.117-1~deb12u1), \
             linux-kbuild-6.12.117+deb12, gcc-12";
        assert_eq!(
            headers_companions(depends),
            [
                "linux-headers-6.12.117+deb12-common-rt",
                "linux-kbuild-6.12.117+deb12"
            ]
        );
    }

    #[test]
    fn the_headers_makefile_includes_the_unpacked_common_tree() {
        let text = "include /usr/src/linux-headers-6.12.117+deb12-common-rt/Makefile\n";
        assert_eq!(
            relocate_makefile(text, Path::new("/c/root")),
            "include /c/root/usr/src/linux-headers-6.12.117+deb12-common-rt/Makefile\n"
        );
        assert_eq!(relocate_makefile("x = 1\n", Path::new("/c")), "x = 1\n");
    }
}
