//! DW100 model jobs: any `JOB` payload through the device that serves the
//! job socket (register decoding, the dewarper's checks, the remap), and any
//! job header checked against any payload length.

#![no_main]

use std::mem::size_of;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vhost_device_video::device::dw100_model::Dw100ModelDevice;
use vhost_device_video::engine::dewarp::{DewarpEngine, FastEngine};
use vhost_device_video::protocol::dewarp::status;
use vhost_device_video::protocol::dw100_model::{JobHeader, ResultHeader};
use vm_memory::ByteValued;

fn engine() -> Arc<dyn DewarpEngine> {
    static ENGINE: OnceLock<Arc<dyn DewarpEngine>> = OnceLock::new();
    ENGINE.get_or_init(|| Arc::new(FastEngine::new(1))).clone()
}

fuzz_target!(|data: &[u8]| {
    // A payload length to check the job header against; 0: the payload's
    // own, and the job runs.
    let Some((claimed, payload)) = data.split_first_chunk::<4>() else {
        return;
    };
    let claimed = u32::from_le_bytes(*claimed) as usize;
    if claimed != 0 {
        if let Some(fixed) = payload.get(..size_of::<JobHeader>()) {
            let mut header = JobHeader::default();
            header.as_mut_slice().copy_from_slice(fixed);
            let _ = header.check(claimed);
        }
        return;
    }
    let mut device = Dw100ModelDevice::new(engine());
    let reply = device.run_job(1, payload);
    let mut result = ResultHeader::default();
    result
        .as_mut_slice()
        .copy_from_slice(&reply.payload[..size_of::<ResultHeader>()]);
    assert_eq!(result.status.to_native(), reply.status);
    let planes = reply.payload.len() - size_of::<ResultHeader>();
    if reply.status == status::OK {
        let announced = result.dst_y_length.to_native() + result.dst_uv_length.to_native();
        assert_eq!(planes, announced as usize);
    } else {
        assert_eq!(planes, 0);
    }
});
