//! The job socket of QEMU's `imx8mp-dw100` model
//! (`docs/protocol-dw100-model.md`). QEMU connects; the daemon serves one
//! connection at a time on its own thread and refuses any other while it is
//! connected. Each `JOB` is read whole (its announced length bounded by
//! `MAX_MESSAGE`), run by a [`Dw100ModelDevice`] and answered with a
//! `RESULT`. A peer that loses the framing is disconnected; a peer that
//! leaves, even mid-message, just ends its connection.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use thiserror::Error as ThisError;
use vm_memory::ByteValued;

use super::server::{listener, RECONNECT_GRACE_MS};
use super::{Listen, ServerError};
use crate::device::dw100_model::Dw100ModelDevice;
use crate::protocol::dewarp::status;
use crate::protocol::dw100_model::{MessageError, MessageHeader};

/// Errors of the job socket.
#[derive(Debug, ThisError)]
pub enum JobSocketError {
    /// The socket could not be set up.
    #[error(transparent)]
    Listen(#[from] ServerError),
    /// The listening socket failed.
    #[error("cannot accept on {socket}: {source}")]
    Accept { socket: String, source: io::Error },
    /// No thread for the connection.
    #[error("cannot start the connection thread: {0}")]
    Spawn(io::Error),
    /// Reading a message failed (the peer left mid-message, for instance).
    #[error("cannot read a message: {0}")]
    Read(io::Error),
    /// Writing a result failed.
    #[error("cannot write a result: {0}")]
    Write(io::Error),
    /// The peer sent something that is no message header.
    #[error(transparent)]
    Framing(MessageError),
}

/// The connection being served.
struct Connection {
    /// Receives (or disconnects) once the connection has ended.
    ended: Receiver<()>,
    thread: JoinHandle<()>,
}

impl Connection {
    fn start(stream: UnixStream, mut device: Dw100ModelDevice) -> Result<Self, JobSocketError> {
        let (done, ended) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("dw100-model".into())
            .spawn(move || {
                match serve_connection(&stream, &mut device) {
                    Ok(()) => info!("dw100-model: QEMU disconnected"),
                    Err(JobSocketError::Framing(e)) => {
                        warn!("dw100-model: {e}; closing the connection")
                    }
                    Err(e) => info!("dw100-model: connection ended: {e}"),
                }
                // The receiver may be gone with the accept loop.
                let _ = done.send(());
            })
            .map_err(JobSocketError::Spawn)?;
        Ok(Connection { ended, thread })
    }

    /// Whether the connection ends within `grace`; joins it if so.
    fn ended_within(self, grace: Duration) -> Result<(), Self> {
        match self.ended.recv_timeout(grace) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if self.thread.join().is_err() {
                    warn!("dw100-model: the connection thread panicked");
                }
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => Err(self),
        }
    }
}

/// Serves the job socket `listen` names with devices made by
/// `make_device`, a fresh one per connection, until the listening socket
/// fails.
pub fn serve<F>(listen: &Listen, mut make_device: F) -> Result<(), JobSocketError>
where
    F: FnMut() -> Dw100ModelDevice,
{
    let (socket, path) = listener(listen)?;
    let name = match &path {
        Some(p) => p.display().to_string(),
        None => "the inherited socket".to_owned(),
    };
    info!("dw100-model: waiting for QEMU on {name}");
    accept_loop(&socket, &name, &mut make_device)
}

fn accept_loop<F>(
    socket: &UnixListener,
    name: &str,
    make_device: &mut F,
) -> Result<(), JobSocketError>
where
    F: FnMut() -> Dw100ModelDevice,
{
    let grace = Duration::from_millis(RECONNECT_GRACE_MS.unsigned_abs().into());
    let mut current: Option<Connection> = None;
    loop {
        let stream = match socket.accept() {
            Ok((stream, _)) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue
            }
            Err(source) => {
                return Err(JobSocketError::Accept {
                    socket: name.to_owned(),
                    source,
                })
            }
        };
        // A QEMU that reconnects at once is served, not refused: its old
        // connection gets the grace to be seen ending first.
        if let Some(connection) = current.take() {
            if let Err(still_served) = connection.ended_within(grace) {
                warn!(
                    "dw100-model: refused a second connection on {name}: QEMU is already connected"
                );
                drop(stream);
                current = Some(still_served);
                continue;
            }
        }
        info!("dw100-model: QEMU connected");
        current = Some(Connection::start(stream, make_device())?);
    }
}

/// Reads a message header; `None` when the peer closed the connection
/// between messages.
fn read_header(mut stream: &UnixStream) -> Result<Option<MessageHeader>, io::Error> {
    let mut header = MessageHeader::default();
    let bytes = header.as_mut_slice();
    let mut filled = 0;
    while filled < bytes.len() {
        match stream.read(&mut bytes[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(header))
}

/// Answers the `JOB`s of one connection until the peer leaves (`Ok`) or
/// something fails.
fn serve_connection(
    mut stream: &UnixStream,
    device: &mut Dw100ModelDevice,
) -> Result<(), JobSocketError> {
    // Holds one payload at a time, at most `MAX_MESSAGE` bytes.
    let mut payload = Vec::new();
    while let Some(header) = read_header(stream).map_err(JobSocketError::Read)? {
        let length = header.check_job().map_err(JobSocketError::Framing)?;
        let start = Instant::now();
        payload.resize(length, 0);
        stream
            .read_exact(&mut payload)
            .map_err(JobSocketError::Read)?;
        let sequence = header.sequence.to_native();
        let reply = device.run_job(sequence, &payload);
        let header = MessageHeader::result(sequence, reply.payload.len());
        stream
            .write_all(header.as_slice())
            .and_then(|()| stream.write_all(reply.payload))
            .map_err(JobSocketError::Write)?;
        if reply.status == status::OK {
            // The dewarper's per-job line, which `cargo xtask bench` reads.
            debug!("dw100-model: job {sequence} done in {:?}", start.elapsed());
        }
    }
    Ok(())
}
