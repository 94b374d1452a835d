//! The accept loop: serve one frontend at a time, and serve again after it
//! disconnects.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};
use thiserror::Error as ThisError;
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::GuestMemoryAtomic;

use super::{Backend, GuestMem, VirtioDevice};

/// Where the vhost-user socket comes from.
#[derive(Debug, Clone)]
pub enum Listen {
    /// Create a listening socket at this path (owner-only permissions).
    Path(PathBuf),
    /// Use this already listening socket, inherited from the parent.
    Fd(RawFd),
}

/// Errors of the accept loop.
#[derive(Debug, ThisError)]
pub enum ServerError {
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    /// The inherited descriptor is not usable.
    #[error("socket fd {fd} is not a listening unix socket: {source}")]
    BadFd { fd: RawFd, source: io::Error },
    /// The rust-vmm daemon could not be set up.
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    /// The device could not be created.
    #[error("cannot create the device: {0}")]
    Device(String),
}

/// Binds `path` so that only the owner may connect: the process umask is
/// tightened around `bind` so the socket is never briefly open to others.
fn bind_owner_only(path: &Path) -> Result<UnixListener, ServerError> {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(ServerError::Bind {
                path: path.to_owned(),
                source: e,
            });
        }
    }
    // SAFETY: umask only swaps the process file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    bound.map_err(|source| ServerError::Bind {
        path: path.to_owned(),
        source,
    })
}

fn listener(listen: &Listen) -> Result<(Listener, Option<PathBuf>), ServerError> {
    match listen {
        Listen::Path(path) => Ok((Listener::from(bind_owner_only(path)?), Some(path.clone()))),
        Listen::Fd(fd) => {
            let fd = *fd;
            // SAFETY: fcntl(F_GETFD) only queries the descriptor.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(ServerError::BadFd {
                    fd,
                    source: io::Error::last_os_error(),
                });
            }
            // SAFETY: the caller hands the descriptor over to this process
            // (`--socket-fd`); nothing else owns or closes it.
            let socket = unsafe { UnixListener::from_raw_fd(fd) };
            socket
                .local_addr()
                .map_err(|source| ServerError::BadFd { fd, source })?;
            Ok((Listener::from(socket), None))
        }
    }
}

/// Serves devices made by `make_device`, one per frontend connection, until
/// an unrecoverable error. A fresh device is made for every connection so no
/// state leaks from one guest to the next.
pub fn serve<D, F>(listen: &Listen, name: &str, mut make_device: F) -> Result<(), ServerError>
where
    D: VirtioDevice,
    F: FnMut() -> Result<Arc<D>, String>,
{
    let (mut listener, path) = listener(listen)?;
    let result = loop {
        let device = match make_device() {
            Ok(device) => device,
            Err(e) => break Err(ServerError::Device(e)),
        };
        let mem = GuestMemoryAtomic::new(GuestMem::new());
        let backend = Arc::new(Backend::new(device.clone(), mem.clone()));
        let mut daemon = VhostUserDaemon::new(name.to_owned(), backend, mem)
            .map_err(|e| ServerError::Daemon(e.to_string()))?;
        match &path {
            Some(p) => info!("waiting for a frontend on {}", p.display()),
            None => info!("waiting for a frontend on the inherited socket"),
        }
        if let Err(e) = daemon.start(&mut listener) {
            break Err(ServerError::Daemon(e.to_string()));
        }
        info!("frontend connected");
        match daemon.wait() {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => info!("frontend disconnected"),
            Err(e) => warn!("connection ended: {e}"),
        }
        device.reset();
        // Dropping the daemon stops and joins its vring threads.
        drop(daemon);
    };
    drop(listener);
    result
}
