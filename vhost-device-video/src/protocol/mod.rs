//! Wire structures of the devices' virtqueue protocols.

pub mod dewarp;
pub mod virtio_video;
