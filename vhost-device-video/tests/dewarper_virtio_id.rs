//! The dewarper's experimental virtio ID is defined once per component: the
//! backend (`DEWARPER_VIRTIO_ID`), the guest driver and QEMU patch 0002
//! (`VIRTIO_ID_DEWARPER`), and the harness's `vhost-user-test-device-pci`
//! properties. A device and a driver that disagree never meet (the driver
//! does not bind), so all of them must hold the backend's value.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use vhost_device_video::protocol::dewarp::DEWARPER_VIRTIO_ID;

// A modern virtio-pci function's device ID is 0x1040 + ID, at most 0x107f.
const _: () = assert!(DEWARPER_VIRTIO_ID < 64);

fn repo_file(relative: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, text)
}

/// The value of every `#define VIRTIO_ID_DEWARPER N` in `text` (for the
/// patch: on its added lines).
fn c_defines(text: &str) -> Vec<u32> {
    text.lines()
        .map(|line| line.trim_start_matches('+'))
        .filter_map(|line| line.strip_prefix("#define VIRTIO_ID_DEWARPER"))
        .map(|value| value.trim().parse().expect("a decimal ID"))
        .collect()
}

#[test]
fn every_component_carries_the_backends_id() {
    for relative in [
        "guest-driver/vvm_dewarper.h",
        "qemu-patches/0002-hw-virtio-add-vhost-user-video-device-for-video-deco.patch",
    ] {
        let (path, text) = repo_file(relative);
        assert_eq!(
            c_defines(&text),
            [DEWARPER_VIRTIO_ID],
            "{}: one VIRTIO_ID_DEWARPER, equal to the backend's",
            path.display()
        );
    }
    let (path, harness) = repo_file("xtask/src/vm.rs");
    let property = format!("\"virtio-id={DEWARPER_VIRTIO_ID},num_vqs=1,");
    assert!(
        harness.contains(&property),
        "{}: the dewarper's test-device properties carry {property}",
        path.display()
    );
}
