//! Command-line options and the daemon entry point.

use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::{ArgGroup, Parser, ValueEnum};
use thiserror::Error as ThisError;

use std::sync::Arc;

use crate::device::decoder::{DecoderDevice, MemoryBudget, MIN_MEMORY_LIMIT};
use crate::device::dewarper::{DewarperDevice, DEFAULT_MAP_CACHE_SLOTS};
use crate::device::dw100_model::Dw100ModelDevice;
use crate::engine::decode::{DecoderFactory, EngineError, FfmpegDecoders};
use crate::engine::dewarp::{DewarpEngine, FastEngine};
use crate::fault::{self, Fault};
use crate::sandbox::{self, SandboxError};
use crate::transport::dw100_model::{self, JobSocketError};
use crate::transport::{serve, Listen, ServerError};

/// The device this daemon serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// virtio-video v3 stateful decoder (virtio ID 31).
    Decoder,
    /// DW100-compatible dewarper (experimental virtio ID 56).
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
    /// Memory the decoder may hold for the guest, all streams together:
    /// decoded pictures, bitstream copies, its decoders' own pictures and
    /// resource lists. Bytes, or with a K, M or G suffix (powers of 1024);
    /// at least 512M.
    #[arg(long, value_name = "SIZE", default_value = "4G", value_parser = parse_memory_limit)]
    pub memory_limit: u64,
    /// Threads the dewarper (and dw100-model) splits one job over (0: one per CPU).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub dewarp_threads: usize,
    /// Dewarper jobs run at once (several V4L2 contexts share the device);
    /// dw100-model runs one job at a time, as the hardware does.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub dewarp_jobs: usize,
    /// Test only: make the device misbehave (see src/fault.rs).
    #[arg(long, value_name = "FAULT", hide = true)]
    pub test_fault: Option<Fault>,
    /// Run without the sandbox (system call filter, filesystem
    /// restriction, no new privileges): for debugging only.
    #[arg(long)]
    pub no_sandbox: bool,
    /// Let system calls off the sandbox's list through, logged by the
    /// kernel (audit), instead of killing the daemon: to find what a new
    /// code path needs.
    #[arg(long, hide = true, conflicts_with = "no_sandbox")]
    pub sandbox_log: bool,
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

/// A size in bytes, or with a K, M or G suffix, of at least
/// `MIN_MEMORY_LIMIT`.
fn parse_memory_limit(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}` is not a size (bytes, or a number with K, M or G)"))?;
    if bytes < MIN_MEMORY_LIMIT {
        return Err(format!(
            "{text} is below the smallest limit, {}M",
            MIN_MEMORY_LIMIT >> 20
        ));
    }
    Ok(bytes)
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
    /// The daemon could not confine itself.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// Runs the daemon with `options` until an unrecoverable error.
pub fn run(options: &Options) -> Result<(), RunError> {
    let listen = options.listen();
    if let Some(fault) = options.test_fault {
        fault::activate(fault);
    }
    if !options.no_sandbox {
        // Before any thread starts: Landlock binds only the threads that
        // come after it.
        let socket_dir = options
            .socket_path
            .as_deref()
            .map(|path| match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            });
        sandbox::restrict_filesystem(socket_dir.as_deref())?;
        sandbox::arm(options.sandbox_log);
    }
    match options.device {
        DeviceKind::Decoder => {
            let factory: Arc<dyn DecoderFactory> =
                Arc::new(FfmpegDecoders::new(options.decode_threads)?);
            // One budget for the daemon: the device of a frontend that left
            // may still be winding down when the next one connects.
            let budget = MemoryBudget::new(options.memory_limit);
            serve(&listen, "vhost-device-video-decoder", || {
                Ok(Arc::new(DecoderDevice::with_budget(
                    factory.clone(),
                    budget.clone(),
                )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_parse_with_suffixes_and_have_a_floor() {
        assert_eq!(parse_memory_limit("4G"), Ok(4 << 30));
        assert_eq!(parse_memory_limit("768m"), Ok(768 << 20));
        assert_eq!(parse_memory_limit("1048576K"), Ok(1 << 30));
        assert_eq!(parse_memory_limit("536870912"), Ok(512 << 20));
        for bad in ["", "G", "1.5G", "-1G", "99999999999G", "100M"] {
            assert!(parse_memory_limit(bad).is_err(), "{bad}");
        }
        let options = Options::try_parse_from(["d", "--socket-path", "s"]).unwrap();
        assert_eq!(options.memory_limit, 4 << 30);
    }
}
