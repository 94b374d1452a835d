//! Everything built once lives outside the checkout, under
//! `${XDG_CACHE_HOME:-~/.cache}/vhost-device-video/`, in directories named by
//! a hash of what went into them. A directory is complete once renamed into
//! place; a lock file keeps concurrent builds of the same thing apart.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("neither XDG_CACHE_HOME nor HOME is set")]
    NoHome,
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },
}

pub fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

pub fn root() -> Result<PathBuf, Error> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").ok_or(Error::NoHome)?).join(".cache"),
    };
    Ok(base.join("vhost-device-video"))
}

/// A subdirectory of the cache, created if missing.
pub fn dir(name: &str) -> Result<PathBuf, Error> {
    let path = root()?.join(name);
    fs::create_dir_all(&path).map_err(io_error("cannot create", &path))?;
    Ok(path)
}

/// Short stable hash of the given parts.
pub fn key(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An exclusive lock held until dropped.
pub struct Lock {
    _file: Flock<File>,
}

pub fn lock(name: &str) -> Result<Lock, Error> {
    let path = dir("locks")?.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error("cannot open", &path))?;
    let file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, source)| Error::Lock { path, source })?;
    Ok(Lock { _file: file })
}

/// True when `target` was completed by [`build_in_place`].
pub fn is_complete(target: &Path) -> bool {
    target.join(COMPLETE_STAMP).exists()
}

const COMPLETE_STAMP: &str = ".complete";

/// Builds in `target` (build trees keep absolute paths, so they cannot be
/// moved afterwards) and marks it complete at the end: an interrupted build
/// is wiped and redone on the next run.
pub fn build_in_place<E: From<Error>>(
    target: &Path,
    build: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    if is_complete(target) {
        return Ok(());
    }
    if target.exists() {
        fs::remove_dir_all(target).map_err(io_error("cannot remove", target))?;
    }
    fs::create_dir_all(target).map_err(io_error("cannot create", target))?;
    build(target)?;
    let stamp = target.join(COMPLETE_STAMP);
    fs::write(&stamp, b"").map_err(io_error("cannot write", &stamp))?;
    Ok(())
}

pub fn repo_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
