//! The guest's initramfs: a static busybox of the guest's architecture, the
//! modules the kernel needs to mount its root over 9p, and
//! `images/guest-init.sh` as `/init`.
//! Written as a newc cpio archive, which the kernel unpacks uncompressed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kernel::{self, Kernel};
use crate::{cache, process};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error("{0} is missing (busybox-static)")]
    NoBusybox(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

const INIT: &str = include_str!("../../images/guest-init.sh");

const MODE_DIR: u32 = 0o040_755;
const MODE_FILE: u32 = 0o100_644;
const MODE_EXEC: u32 = 0o100_755;
const MODE_CHAR: u32 = 0o020_600;

/// A newc archive being written.
struct Cpio {
    data: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn new() -> Self {
        Self {
            data: Vec::new(),
            inode: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        let name_size = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            body.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name_size,
            0
        );
        self.inode += 1;
        self.data.extend_from_slice(header.as_bytes());
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, MODE_DIR, (0, 0), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

/// Module file contents, decompressed (busybox insmod takes plain ELF).
fn module_bytes(path: &Path) -> Result<Vec<u8>, Error> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => fs::read(path).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        }),
        Some(tool) => {
            let mut command = Command::new(tool);
            command.arg("-dc").arg(path);
            let (status, text) = capture_bytes(command)?;
            if status {
                Ok(text)
            } else {
                Err(Error::Write {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(format!("{tool} -d failed")),
                })
            }
        }
    }
}

fn capture_bytes(mut command: Command) -> Result<(bool, Vec<u8>), Error> {
    // Decompressing a local file needs no deadline: it cannot wait on input.
    command.stdin(std::process::Stdio::null());
    let output = command.output().map_err(|source| process::Error::Spawn {
        what: format!("{:?}", command.get_program()),
        source,
    })?;
    Ok((output.status.success(), output.stdout))
}

/// Writes the initramfs for `kernel` to `out`: `busybox` and the modules
/// `root_modules` need (built-in ones are skipped), loaded in that order.
pub fn build(
    kernel: &Kernel,
    busybox: &Path,
    root_modules: &[&str],
    out: &Path,
) -> Result<(), Error> {
    let busybox = fs::read(busybox).map_err(|_| Error::NoBusybox(busybox.to_path_buf()))?;
    let mut cpio = Cpio::new();
    for dir in [
        "bin", "dev", "proc", "sys", "newroot", "sysroot", "harness", "modules", "tmp",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    cpio.entry("dev/console", MODE_CHAR, (5, 1), &[]);
    cpio.entry("bin/busybox", MODE_EXEC, (0, 0), &busybox);
    cpio.entry("init", MODE_EXEC, (0, 0), INIT.as_bytes());
    let mut order = String::new();
    for relative in kernel.module_closure(root_modules)? {
        let bytes = module_bytes(&kernel.module_path(&relative))?;
        let file = relative
            .rsplit('/')
            .next()
            .unwrap_or(&relative)
            .split(".ko")
            .next()
            .unwrap_or(&relative)
            .to_string()
            + ".ko";
        cpio.entry(&format!("modules/{file}"), MODE_FILE, (0, 0), &bytes);
        order.push_str(&file);
        order.push('\n');
    }
    cpio.entry("modules/order", MODE_FILE, (0, 0), order.as_bytes());
    let data = cpio.finish();
    let mut file = fs::File::create(out).map_err(|source| Error::Write {
        path: out.to_path_buf(),
        source,
    })?;
    file.write_all(&data).map_err(|source| Error::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(())
}
