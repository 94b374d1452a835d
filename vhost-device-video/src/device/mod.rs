//! Devices: stream and job state behind the transport.

pub mod decoder;
pub mod dewarper;
pub mod dw100_model;
