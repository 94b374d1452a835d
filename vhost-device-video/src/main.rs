use std::process::ExitCode;

use clap::Parser;
use vhost_device_video::{run, Options};

fn main() -> ExitCode {
    env_logger::init();
    let options = Options::parse();
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhost-device-video: {e}");
            ExitCode::FAILURE
        }
    }
}
