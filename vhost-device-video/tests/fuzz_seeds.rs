//! The seeds of the chain fuzz targets (`fuzz/seeds/*_chains/`), replayed
//! through the same fake guest on every `cargo test`: a stream's life on
//! the decoder, good jobs on the dewarper. The seeds keep doing what they
//! were written for (a seed the devices refuse would leave the fuzzer
//! starting from nothing), every command comes back, and each device still
//! serves a plain request afterwards.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vhost_device_video::device::decoder::DecoderDevice;
use vhost_device_video::device::dewarper::DewarperDevice;
use vhost_device_video::engine::decode::FfmpegDecoders;
use vhost_device_video::engine::dewarp::FastEngine;
use vhost_device_video::fake_guest::{records, FakeGuest, Part};
use vhost_device_video::protocol::dewarp::status;
use vhost_device_video::protocol::virtio_video::{cmd, resp};
use vhost_device_video::transport::VirtioDevice;

/// Long enough for the largest job a 4 MiB guest can describe.
const JOB_LIMIT: Duration = Duration::from_secs(20);

/// Every seed of fuzz target `target`, with its name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).unwrap())
        })
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds.sort();
    seeds
}

#[test]
fn decoder_chain_seeds_leave_the_device_serving() {
    let factory = Arc::new(FfmpegDecoders::new(1).unwrap());
    for (name, data) in seeds("decoder_chains") {
        let device = Arc::new(DecoderDevice::new(factory.clone()));
        let mut guest = FakeGuest::new(device, records::LAYOUT);
        let chains = guest.run_records(&data);
        // The life ends with STREAM_DESTROY, which returns every buffer.
        guest.assert_all_used(0, JOB_LIMIT);
        // The stream was set up: STREAM_CREATE, two RESOURCE_CREATEs and
        // SET_PARAMS_EXT answered OK. (The event buffer stays with the
        // device.)
        let set_up = chains
            .into_iter()
            .filter_map(|chain| guest.used_position(chain).map(|_| guest.wait(chain)))
            .filter(|reply| reply.bytes.len() >= 4 && reply.le32(0) == resp::OK_NODATA)
            .count();
        assert!(set_up >= 4, "seed {name}: {set_up} commands answered OK");
        let mut request = cmd::QUERY_CAPABILITY.to_le_bytes().to_vec();
        request.extend([0; 4]);
        request.extend(0x100u32.to_le_bytes());
        request.extend([0; 4]);
        let chain = guest.submit(0, &[Part::Read(&request), Part::Write(4096)]);
        let reply = guest.wait(chain);
        assert_eq!(
            reply.le32(0),
            resp::OK_QUERY_CAPABILITY,
            "after seed {name}"
        );
        guest.device().reset();
    }
}

#[test]
fn dewarper_chain_seeds_get_every_chain_back() {
    let device = Arc::new(DewarperDevice::new(Arc::new(FastEngine::new(2)), 2, 4));
    for (name, data) in seeds("dewarper_chains") {
        let mut guest = FakeGuest::new(device.clone(), records::LAYOUT);
        for chain in guest.run_records(&data) {
            let reply = guest.wait(chain);
            assert_eq!(reply.le32(0), status::OK, "seed {name}");
        }
        // Eight bytes are no job header: refused, and answered.
        let chain = guest.submit(0, &[Part::Read(&[0; 8]), Part::Write(16)]);
        let reply = guest.wait(chain);
        assert_eq!(reply.le32(0), status::ERR_MALFORMED, "after seed {name}");
        guest.device().reset();
    }
}
