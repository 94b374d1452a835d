//! The decoder device over a fake guest: hostile descriptor chains carrying
//! any requests through the real transport queue, parser and stream logic.

#![no_main]

mod chains;

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use vhost_device_video::device::decoder::DecoderDevice;
use vhost_device_video::engine::decode::{DecoderFactory, FfmpegDecoders};
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
    let mem = chains::guest_memory();
    let mut guest = chains::Guest::new(&mem, 2);
    let device = DecoderDevice::new(factory());
    guest.run(&device, data);
    device.reset();
});
