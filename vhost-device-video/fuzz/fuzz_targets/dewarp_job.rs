//! Dewarper job headers: any header and any chain lengths through the
//! validation the device runs before touching a buffer, then the vertex map
//! a valid header announces.

#![no_main]

use std::mem::size_of;

use libfuzzer_sys::fuzz_target;
use vhost_device_video::engine::dewarp::VertexMap;
use vhost_device_video::protocol::dewarp::VdwJob;
use vm_memory::ByteValued;

fuzz_target!(|data: &[u8]| {
    let header_len = size_of::<VdwJob>();
    let Some(header) = data.get(..header_len) else {
        return;
    };
    let mut job = VdwJob::default();
    job.as_mut_slice().copy_from_slice(header);
    let rest = &data[header_len..];
    let length = |at: usize| {
        rest.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize)
    };
    let (readable, writable) = (length(0), length(4));
    let Ok(valid) = job.validate(readable, writable) else {
        return;
    };
    let map = rest.get(8..).unwrap_or_default();
    let map = &map[..valid.map_bytes().min(map.len())];
    let _ = VertexMap::from_le_bytes(valid.map_width, valid.map_height, map);
});
