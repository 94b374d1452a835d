//! Wire structures of the devices' virtqueue protocols.

pub mod virtio_video;
pub mod dewarp;
