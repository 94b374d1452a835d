//! Command-line options and the daemon entry point.

use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::{ArgGroup, Parser, ValueEnum};
use thiserror::Error as ThisError;

use std::sync::Arc;

use crate::device::decoder::DecoderDevice;
use crate::device::dewarper::{DewarperDevice, DEFAULT_MAP_CACHE_SLOTS};
use crate::device::dw100_model::Dw100ModelDevice;
use crate::engine::decode::{DecoderFactory, EngineError, FfmpegDecoders};
use crate::engine::dewarp::{DewarpEngine, FastEngine};
use crate::transport::dw100_model::{self, JobSocketError};
use crate::transport::{serve, Listen, ServerError};

/// The device this daemon serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// virtio-video v3 stateful decoder (virtio ID 31).
    Decoder,
    /// DW100-compatible dewarper (experimental virtio ID 63).
    Dewarper,
    /// pixel work of QEMU's emulated i.MX8MP DW100 (imx8mp-dw100), on its
    /// job socket instead of vhost-user.
    #[value(name = "dw100-model")]
    Dw100Model,
}

/// vhost-user backend for a virtio-video decoder and a DW100-compatible
/// dewarper; also the pixel work of QEMU's emulated i.MX8MP DW100.
#[derive(Debug, Parser)]
#[command(name = "vhost-device-video", version, about)]
#[command(group(ArgGroup::new("socket").required(true).args(["socket_path", "socket_fd"])))]
pub struct Options {
    /// Path of the socket to create and listen on (vhost-user, or the
    /// dw100-model job socket).
    #[arg(long, value_name = "PATH")]
    pub socket_path: Option<PathBuf>,
    /// An already bound and listening socket inherited from the parent.
    #[arg(long, value_name = "FD")]
    pub socket_fd: Option<RawFd>,
    /// The device to serve.
    #[arg(long, value_enum, default_value = "decoder")]
    pub device: DeviceKind,
    /// FFmpeg decoding threads per stream (0: FFmpeg chooses).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub decode_threads: usize,
    /// Threads the dewarper (and dw100-model) splits one job over (0: one per CPU).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub dewarp_threads: usize,
    /// Dewarper jobs run at once (several V4L2 contexts share the device);
    /// dw100-model runs one job at a time, as the hardware does.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub dewarp_jobs: usize,
}

impl Options {
    fn listen(&self) -> Listen {
        match (&self.socket_path, self.socket_fd) {
            (Some(path), _) => Listen::Path(path.clone()),
            (None, Some(fd)) => Listen::Fd(fd),
            // clap's required group rules this out; an fd of -1 fails cleanly.
            (None, None) => Listen::Fd(-1),
        }
    }
}

/// Errors that end the daemon.
#[derive(Debug, ThisError)]
pub enum RunError {
    /// Serving failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Serving the DW100 model's job socket failed.
    #[error(transparent)]
    JobSocket(#[from] JobSocketError),
    /// The decoding engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Runs the daemon with `options` until an unrecoverable error.
pub fn run(options: &Options) -> Result<(), RunError> {
    let listen = options.listen();
    match options.device {
        DeviceKind::Decoder => {
            let factory: Arc<dyn DecoderFactory> =
                Arc::new(FfmpegDecoders::new(options.decode_threads)?);
            serve(&listen, "vhost-device-video-decoder", || {
                Ok(Arc::new(DecoderDevice::new(factory.clone())))
            })?;
            Ok(())
        }
        DeviceKind::Dewarper => {
            let engine: Arc<dyn DewarpEngine> = Arc::new(FastEngine::new(options.dewarp_threads));
            serve(&listen, "vhost-device-video-dewarper", || {
                Ok(Arc::new(DewarperDevice::new(
                    engine.clone(),
                    options.dewarp_jobs,
                    DEFAULT_MAP_CACHE_SLOTS,
                )))
            })?;
            Ok(())
        }
        DeviceKind::Dw100Model => {
            let engine: Arc<dyn DewarpEngine> = Arc::new(FastEngine::new(options.dewarp_threads));
            dw100_model::serve(&listen, || Dw100ModelDevice::new(engine.clone()))?;
            Ok(())
        }
    }
}
