//! Wire structures of the devices' virtqueue protocols and of the DW100
//! model's job socket.

pub mod dewarp;
pub mod dw100_model;
pub mod virtio_video;
