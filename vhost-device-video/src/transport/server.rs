//! The accept loop: serve one frontend at a time, refuse any other while it
//! is connected, and serve again after it disconnects.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use log::{info, warn};
use thiserror::Error as ThisError;
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::GuestMemoryAtomic;
use vmm_sys_util::eventfd::EventFd;

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
    /// The guard that refuses further frontends could not be set up.
    #[error("cannot guard the socket against a second frontend: {0}")]
    Guard(io::Error),
    /// The daemon could not confine itself.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
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

/// The listening socket `listen` names, and its path when this process
/// created it. The system call filter, if armed, applies from here on.
pub(super) fn listener(listen: &Listen) -> Result<(UnixListener, Option<PathBuf>), ServerError> {
    let listening = bound(listen)?;
    crate::sandbox::after_bind()?;
    Ok(listening)
}

fn bound(listen: &Listen) -> Result<(UnixListener, Option<PathBuf>), ServerError> {
    match listen {
        Listen::Path(path) => Ok((bind_owner_only(path)?, Some(path.clone()))),
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
            // The accept loops wait in accept(): on a socket the parent left
            // non-blocking they would spin on EAGAIN.
            socket
                .set_nonblocking(false)
                .map_err(|source| ServerError::BadFd { fd, source })?;
            Ok((socket, None))
        }
    }
}

/// Accepts and closes every connection on a listening socket while a
/// frontend is being served: two frontends driving one device would corrupt
/// each other's rings, and a frontend left waiting in the backlog would hang
/// until the first one goes away.
struct SecondFrontendGuard {
    stop: EventFd,
    thread: JoinHandle<()>,
}

impl SecondFrontendGuard {
    fn start(listener: &UnixListener, socket: String) -> io::Result<Self> {
        let listener = listener.try_clone()?;
        let stop = EventFd::new(libc::EFD_CLOEXEC)?;
        let stop_fd = stop.as_raw_fd();
        let thread = thread::Builder::new()
            .name("refuse-frontend".into())
            .spawn(move || refuse_while_connected(&listener, stop_fd, &socket))?;
        Ok(Self { stop, thread })
    }

    /// Stops refusing before the listener is handed back to the accept loop.
    fn finish(self) {
        if let Err(e) = self.stop.write(1) {
            warn!("cannot stop refusing frontends: {e}");
            return;
        }
        if self.thread.join().is_err() {
            warn!("the frontend guard thread panicked");
        }
    }
}

/// How long a new connection may wait for the served frontend's disconnect
/// to be seen before it counts as a second frontend: a frontend that closes
/// and reconnects at once must not be refused.
pub(super) const RECONNECT_GRACE_MS: i32 = 2000;

/// Whether `stop_fd` becomes readable within `timeout_ms`.
fn stopped_within(stop_fd: RawFd, timeout_ms: i32) -> bool {
    let mut fd = libc::pollfd {
        fd: stop_fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `fd` is a valid pollfd for the whole call.
    let ready = unsafe { libc::poll(&mut fd, 1, timeout_ms) };
    ready > 0 && fd.revents != 0
}

fn refuse_while_connected(listener: &UnixListener, stop_fd: RawFd, socket: &str) {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop_fd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the whole call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            warn!("cannot watch {socket} for further frontends: {e}");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            warn!("{socket} failed; no longer refusing further frontends");
            return;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            if stopped_within(stop_fd, RECONNECT_GRACE_MS) {
                // The served frontend left: this is the next one, left in
                // the backlog for the accept loop.
                return;
            }
            // The accepted connection is closed at once by the drop.
            match listener.accept() {
                Ok(_) => {
                    warn!("refused a second frontend on {socket}: a frontend is already connected")
                }
                Err(e) => warn!("cannot refuse a frontend on {socket}: {e}"),
            }
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
    let (socket, path) = listener(listen)?;
    let socket_name = match &path {
        Some(p) => p.display().to_string(),
        None => "the inherited socket".to_owned(),
    };
    let guard_listener = socket.try_clone().map_err(ServerError::Guard)?;
    let mut listener = Listener::from(socket);
    let result = loop {
        let device = match make_device() {
            Ok(device) => device,
            Err(e) => break Err(ServerError::Device(e)),
        };
        let mem = GuestMemoryAtomic::new(GuestMem::new());
        let backend = Arc::new(Backend::new(device, mem.clone()));
        let mut daemon = VhostUserDaemon::new(name.to_owned(), backend.clone(), mem)
            .map_err(|e| ServerError::Daemon(e.to_string()))?;
        info!("waiting for a frontend on {socket_name}");
        if let Err(e) = daemon.start(&mut listener) {
            break Err(ServerError::Daemon(e.to_string()));
        }
        info!("frontend connected");
        let guard = match SecondFrontendGuard::start(&guard_listener, socket_name.clone()) {
            Ok(guard) => guard,
            Err(e) => break Err(ServerError::Guard(e)),
        };
        let ended = daemon.wait();
        guard.finish();
        match ended {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => info!("frontend disconnected"),
            Err(e) => warn!("connection ended: {e}"),
        }
        // Writers waiting for a stopped ring give up before the device is.
        backend.give_up();
        // Dropping the daemon stops and joins its vring threads.
        drop(daemon);
    };
    drop(guard_listener);
    drop(listener);
    result
}
