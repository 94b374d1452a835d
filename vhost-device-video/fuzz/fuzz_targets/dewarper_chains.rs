//! The dewarper device over the fake guest: hostile descriptor chains
//! carrying any job through the real transport, validation and remap engine
//! (chains built by `fake_guest::records`). Every chain must come back: the
//! device keeps none.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vhost_device_video::device::dewarper::DewarperDevice;
use vhost_device_video::engine::dewarp::FastEngine;
use vhost_device_video::fake_guest::{records, FakeGuest};
use vhost_device_video::transport::VirtioDevice;

/// Long enough for the largest job a 4 MiB guest can describe.
const JOB_LIMIT: Duration = Duration::from_secs(20);

fn device() -> Arc<DewarperDevice> {
    static DEVICE: OnceLock<Arc<DewarperDevice>> = OnceLock::new();
    DEVICE
        .get_or_init(|| Arc::new(DewarperDevice::new(Arc::new(FastEngine::new(1)), 2, 4)))
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut guest = FakeGuest::new(device(), records::LAYOUT);
    guest.run_records(data);
    guest.assert_all_used(0, JOB_LIMIT);
    guest.device().reset();
});
