//! virtio-video requests as a guest writes them: any bytes through the
//! parser the decoder's command queue uses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vhost_device_video::protocol::virtio_video::parse_request;

/// Memory entries a RESOURCE_CREATE may carry, as the decoder device bounds them.
const MAX_ENTRIES: u64 = 65_536;

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    let _ = parse_request(&mut reader, MAX_ENTRIES);
});
