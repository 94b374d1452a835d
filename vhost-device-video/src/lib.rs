//! vhost-device-video: a vhost-user backend serving a virtio-video v3
//! decoder (virtio ID 31) and a DW100-compatible dewarper (ID 56); also the
//! pixel work of QEMU's emulated i.MX8MP DW100 over its job socket.
//!
//! Layout follows the data path: [`transport`] (vhost-user, the DW100
//! model's job socket), [`protocol`] (wire structs), [`device`] (stream and
//! job state), [`engine`] (the work).

pub mod device;
pub mod engine;
pub mod protocol;
pub mod transport;

#[cfg(any(test, feature = "test-harness"))]
pub mod fake_guest;
mod fault;
mod log_limit;
mod options;
mod sandbox;
#[cfg(test)]
mod test_child;
pub use options::{run, DeviceKind, Options, RunError};
