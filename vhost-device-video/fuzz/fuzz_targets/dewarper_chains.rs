//! The dewarper device over a fake guest: hostile descriptor chains carrying
//! any job through the real transport queue, validation and remap engine.
//! Every chain must come back: the device keeps none.

#![no_main]

mod chains;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vhost_device_video::device::dewarper::DewarperDevice;
use vhost_device_video::engine::dewarp::FastEngine;
use vhost_device_video::transport::VirtioDevice;

/// Long enough for the largest job a 4 MiB guest can describe.
const JOB_LIMIT: Duration = Duration::from_secs(20);

fn device() -> &'static DewarperDevice {
    static DEVICE: OnceLock<DewarperDevice> = OnceLock::new();
    DEVICE.get_or_init(|| DewarperDevice::new(Arc::new(FastEngine::new(1)), 2, 4))
}

fuzz_target!(|data: &[u8]| {
    let mem = chains::guest_memory();
    let mut guest = chains::Guest::new(&mem, 1);
    let device = device();
    guest.run(device, data);
    guest.assert_all_used(0, JOB_LIMIT);
    device.reset();
});
