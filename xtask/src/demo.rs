//! `cargo xtask demo`: the first thing a new user runs.

use std::time::Duration;

use crate::{kernel, qemu, report_vm, vm, Error};

const DEMO_SCRIPT: &str = "echo '== PCI devices'; lspci -nn; \
echo '== V4L2 devices'; v4l2-ctl --list-devices || true";

pub fn run() -> Result<u8, Error> {
    let options = vm::Options {
        kernel: kernel::Flavor::DebianRt,
        devices: vec![vm::Device::Decoder, vm::Device::Dewarper],
        qemu: qemu::Choice::Patched,
        shares: Vec::new(),
        timeout: Duration::from_secs(120),
        module: vm::Module::Project,
        module_params: String::new(),
        env: Vec::new(),
        accel: vm::Accel::Auto,
        command: vec!["sh".into(), "-c".into(), DEMO_SCRIPT.into()],
        artifacts: None,
        stream: true,
        boot_timeout: vm::BOOT_TIMEOUT,
    };
    report_vm(vm::run(&options)?)
}
