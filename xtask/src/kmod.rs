//! Out-of-tree kernel modules of the project, built per kernel. The sources
//! are copied to `target/kmod/<kernel>/<name>/` so builds for different
//! kernels never share object files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::kernel::{self, Kernel};
use crate::{cache, process};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error("unknown module `{0}` (known: virtio_video_m2m, virtio_video_m2m_debug, rt_negative)")]
    Unknown(String),
    #[error("{0}/Makefile does not exist yet")]
    NoMakefile(String),
    #[error("building {name} for {kernel} produced no {name}.ko")]
    NoObject { name: String, kernel: String },
    #[error("{name} for {kernel}: the compiler warned ({log}):\n{warnings}")]
    Warnings {
        name: String,
        kernel: String,
        log: PathBuf,
        warnings: String,
    },
}

const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// How a module the harness knows by name is built.
struct Spec {
    /// Source directory, relative to the checkout.
    dir: &'static str,
    /// The `.ko` the build produces.
    object: &'static str,
    /// Extra `make` variables.
    make_vars: &'static [&'static str],
}

fn spec(name: &str) -> Result<Spec, Error> {
    match name {
        "virtio_video_m2m" => Ok(Spec {
            dir: "guest-driver",
            object: "virtio_video_m2m",
            make_vars: &[],
        }),
        // The guest module with its fault-injection paths (docs/guest-driver.md).
        "virtio_video_m2m_debug" => Ok(Spec {
            dir: "guest-driver",
            object: "virtio_video_m2m",
            make_vars: &["VVM_DEBUG=y"],
        }),
        "rt_negative" => Ok(Spec {
            dir: "tests/rt-negative",
            object: "rt_negative",
            make_vars: &[],
        }),
        other => Err(Error::Unknown(other.to_string())),
    }
}

/// Source directory (relative to the checkout) of a module by name.
pub fn source_dir(name: &str) -> Result<&'static str, Error> {
    Ok(spec(name)?.dir)
}

/// Whether the module's sources exist in this checkout yet.
pub fn present(name: &str) -> Result<bool, Error> {
    Ok(cache::repo_root()
        .join(source_dir(name)?)
        .join("Makefile")
        .exists())
}

/// The files of a module's source directory that its build reads, sorted.
fn source_files(from: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for entry in fs::read_dir(from).map_err(cache::io_error("cannot read", from))? {
        let path = entry.map_err(cache::io_error("cannot read", from))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let wanted =
            name == "Makefile" || name == "Kbuild" || name.ends_with(".c") || name.ends_with(".h");
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn copy_sources(files: &[PathBuf], to: &Path) -> Result<(), Error> {
    for path in files {
        if let Some(name) = path.file_name() {
            fs::copy(path, to.join(name)).map_err(cache::io_error("cannot copy", path))?;
        }
    }
    Ok(())
}

/// Builds module `name` for `kernel` (`make -C <dir> KDIR=<kbuild>`); with
/// `strict`, builds with `W=1` and fails on any compiler warning.
pub fn build(name: &str, kernel: &Kernel, strict: bool) -> Result<PathBuf, Error> {
    let spec = spec(name)?;
    let dir = spec.dir;
    let source = cache::repo_root().join(dir);
    if !source.join("Makefile").exists() {
        return Err(Error::NoMakefile(dir.to_string()));
    }
    // One build directory per input set: concurrent runs never rebuild a
    // module another run is about to load, and an unchanged module is not
    // rebuilt at all.
    let files = source_files(&source)?;
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for path in &files {
        inputs.push(
            path.file_name()
                .map(|n| n.as_encoded_bytes().to_vec())
                .unwrap_or_default(),
        );
        inputs.push(fs::read(path).map_err(cache::io_error("cannot read", path))?);
    }
    inputs.push(spec.make_vars.join(" ").into_bytes());
    inputs.push(kernel.kbuild.as_os_str().as_encoded_bytes().to_vec());
    // The guest driver bundles the kernel source's mem2mem framework for
    // kernels that lack it (Debian's amd64 ones): the source is the cache's.
    let (_, source_tarball) = kernel::source_package()?;
    inputs.push(source_tarball.as_os_str().as_encoded_bytes().to_vec());
    inputs.push(vec![u8::from(strict)]);
    let parts: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let key = cache::key(&parts);
    let out = cache::repo_root()
        .join("target/kmod")
        .join(kernel.flavor.name())
        .join(format!("{name}-{}", &key[..16.min(key.len())]));
    let object = out.join(format!("{}.ko", spec.object));
    let _lock = cache::lock(&format!("kmod-{}-{name}", kernel.flavor.name()))?;
    cache::build_in_place(&out, |out| -> Result<(), Error> {
        copy_sources(&files, out)?;
        make_module(name, spec, kernel, strict, &source_tarball, out)
    })?;
    Ok(object)
}

fn make_module(
    name: &str,
    spec: Spec,
    kernel: &Kernel,
    strict: bool,
    source_tarball: &Path,
    out: &Path,
) -> Result<(), Error> {
    let object = out.join(format!("{}.ko", spec.object));
    let log = out.join("build.log");
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(out)
        .arg(format!("KDIR={}", kernel.kbuild.display()))
        .arg(format!("KSRC_TAR={}", source_tarball.display()))
        // Command-line variables reach kbuild's sub-make: ARCH and the cross
        // compiler for an arm64 kernel.
        .args(kernel.arch.make_vars())
        .arg("-j2")
        .args(spec.make_vars);
    if strict {
        make.arg("W=1");
    }
    process::run_logged(make, &log, BUILD_TIMEOUT)?;
    if strict {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let warnings: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("warning:"))
            .collect();
        if !warnings.is_empty() {
            return Err(Error::Warnings {
                name: name.to_string(),
                kernel: kernel.flavor.name().to_string(),
                log,
                warnings: warnings.join("\n"),
            });
        }
    }
    if !object.exists() {
        return Err(Error::NoObject {
            name: name.to_string(),
            kernel: kernel.flavor.name().to_string(),
        });
    }
    Ok(())
}
