//! The work behind the devices: decoding and dewarping.

pub mod decode;
pub mod dewarp;
