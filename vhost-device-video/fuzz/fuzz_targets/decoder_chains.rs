//! The decoder device over the fake guest: hostile descriptor chains
//! carrying any requests through the real transport, parser and stream
//! logic (chains built by `fake_guest::records`).

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vhost_device_video::device::decoder::DecoderDevice;
use vhost_device_video::engine::decode::{DecoderFactory, FfmpegDecoders};
use vhost_device_video::fake_guest::{records, FakeGuest};
use vhost_device_video::transport::VirtioDevice;

fn factory() -> Arc<dyn DecoderFactory> {
    static FACTORY: OnceLock<Arc<dyn DecoderFactory>> = OnceLock::new();
    FACTORY
        .get_or_init(|| match FfmpegDecoders::new(1) {
            Ok(factory) => Arc::new(factory),
            Err(e) => panic!("cannot start FFmpeg: {e}"),
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut guest = FakeGuest::new(Arc::new(DecoderDevice::new(factory())), records::LAYOUT);
    guest.run_records(data);
    guest.device().reset();
});
