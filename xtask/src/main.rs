//! Host tooling: `cargo xtask <command>`. Builds QEMU and guest kernels into
//! a cache outside the checkout, boots PREEMPT_RT guests with the backend
//! attached, and runs every test.

mod arm64_root;
mod bench;
mod cache;
mod debsrc;
mod demo;
mod deps;
mod e2e;
mod fuzz;
mod imx8mp;
mod initramfs;
mod junit;
mod kernel;
mod kmod;
mod process;
mod qemu;
mod splat;
mod suite;
mod trixie;
mod v4l_utils;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, boot and test vhost-device-video"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing Debian packages and Rust components.
    Deps,
    /// Build QEMU from Debian's source package (cached).
    Qemu {
        /// stock, or patched with qemu-patches/*.patch
        #[arg(long, default_value = "stock", value_parser = ["stock", "patched"])]
        variant: String,
    },
    /// Build or fetch v4l2-compliance, v4l2-ctl and media-ctl for the guests (cached).
    V4lUtils,
    /// Install or build a guest kernel (cached).
    Kernel {
        /// debian-rt, debug-rt, or a kernel build directory.
        #[arg(long, default_value = "debian-rt", value_parser = kernel::tree::parse_kernel)]
        kernel: kernel::Flavor,
    },
    /// Build or fetch an arm64 kernel for QEMU's imx8mp-evk machine, its
    /// device tree and the dw100 driver (cached); prints their paths.
    Imx8mpKernel {
        #[arg(long, default_value = "debian-rt")]
        kernel: kernel::Flavor,
        /// The dw100 variant to build: unfixed, fixed, oneshot-dropped,
        /// fixed-watchdog, fixed-hardirq.
        #[arg(long, default_value_t)]
        dw100: imx8mp::Dw100Variant,
    },
    /// Build the project's guest module for a kernel.
    Module {
        /// debian-rt, debug-rt, or a kernel build directory.
        #[arg(long, default_value = "debian-rt", value_parser = kernel::tree::parse_kernel)]
        kernel: kernel::Flavor,
    },
    /// Boot a guest with backends attached and run a command in it.
    Vm(VmArgs),
    /// Run e2e tests (all, or those whose name contains a filter).
    E2e {
        filters: Vec<String>,
        /// Only runs on this kernel; a kernel build directory runs every
        /// test of its architecture's machine on it.
        #[arg(long, value_parser = kernel::tree::parse_kernel)]
        kernel: Option<kernel::Flavor>,
        /// Also write the results as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Boot one e2e test again and again and count what the runs showed
    /// (clean, which splat, D state, hang): a measurement, not a verdict.
    Tally {
        /// The test's name (or a filter matching only it).
        test: String,
        /// Any kernel, whether or not the test's header names it.
        #[arg(long, default_value = "debian-rt")]
        kernel: kernel::Flavor,
        /// Boots.
        #[arg(long, default_value_t = 20)]
        runs: u32,
        /// The dw100 variant instead of the test's `dw100:` header.
        #[arg(long)]
        dw100: Option<imx8mp::Dw100Variant>,
        /// DW100 model properties instead of the test's `dw100-model:`
        /// header (NAME=VALUE,...; empty for none).
        #[arg(long)]
        dw100_model: Option<String>,
    },
    /// Run every check: format, lints, unit tests, a short fuzz run, module builds, e2e.
    Test {
        /// Also write every step and e2e case as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// A kernel build directory: the guest part (module builds and e2e
        /// tests) runs on it instead of the harness's kernels.
        #[arg(long, value_name = "PATH", value_parser = kernel::tree::parse_kernel)]
        kernel: Option<kernel::Flavor>,
    },
    /// Run shellcheck on the shell scripts under tests/, images/ and .ci/
    /// (a step of `test`).
    Shellcheck,
    /// Build the fuzz targets and run each for a while, growing the cached corpus.
    Fuzz {
        /// Only targets whose name contains one of these.
        filters: Vec<String>,
        /// Seconds each target runs.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
    /// Decode a clip and dewarp a frame in the RT guest, checked against the host.
    Demo,
    /// Decode and dewarp speed next to host ffmpeg and OpenCV, and from the guest.
    Bench {
        /// decode or dewarp (both when omitted).
        #[arg(value_enum)]
        which: Option<bench::Which>,
    },
}

#[derive(clap::Args)]
struct VmArgs {
    /// q35 (x86), or imx8mp-evk (arm64, with the emulated DW100; TCG only).
    #[arg(long, default_value = "q35")]
    machine: vm::Machine,
    /// debian-rt, debug-rt, or a kernel build directory (in-tree or O=).
    #[arg(long, default_value = "debian-rt", value_parser = kernel::tree::parse_kernel)]
    kernel: kernel::Flavor,
    /// Backends to attach (repeatable, or comma-separated): decoder,
    /// dewarper on q35; imx8mp-evk always gets the DW100's.
    #[arg(long = "device", value_delimiter = ',')]
    devices: Vec<vm::Device>,
    /// stock, patched, or the path of a QEMU >= 10.2 (default: stock on
    /// q35, patched on imx8mp-evk).
    #[arg(long)]
    qemu: Option<qemu::Choice>,
    /// A host directory the guest sees, writable, at the same path (repeatable).
    #[arg(long = "share")]
    shares: Vec<PathBuf>,
    /// Seconds the command may run.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Load this module instead of the project's guest driver (or the dw100
    /// driver on imx8mp-evk).
    #[arg(long, conflicts_with = "no_module")]
    module: Option<PathBuf>,
    /// The dw100 driver's variant on imx8mp-evk: unfixed, fixed (default),
    /// oneshot-dropped, fixed-watchdog, fixed-hardirq.
    #[arg(long, conflicts_with_all = ["no_module", "module"])]
    dw100: Option<imx8mp::Dw100Variant>,
    /// Load no module.
    #[arg(long)]
    no_module: bool,
    /// Properties of the emulated DW100 on imx8mp-evk, NAME=VALUE separated
    /// by commas: bus-timeout-us, job-timeout-ms, fault-no-irq (on|off).
    #[arg(long, default_value = "")]
    dw100_model: String,
    /// Parameters for the module.
    #[arg(long, default_value = "")]
    module_params: String,
    /// A virtual IOMMU on q35: none; translated (QEMU's intel-iommu, the
    /// guest translating DMA); passthrough (intel-iommu, the guest keeping
    /// devices in identity domains).
    #[arg(long, default_value = "none")]
    iommu: vm::Iommu,
    /// auto (KVM when it works), kvm or tcg.
    #[arg(long, default_value = "auto")]
    accel: vm::Accel,
    /// The command to run in the guest.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error(transparent)]
    Qemu(#[from] qemu::Error),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error(transparent)]
    V4lUtils(#[from] v4l_utils::Error),
    #[error(transparent)]
    Kmod(#[from] kmod::Error),
    #[error(transparent)]
    Imx8mp(#[from] imx8mp::Error),
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error("--dw100-model: {0}")]
    Model(String),
    #[error(transparent)]
    E2e(#[from] e2e::Error),
    #[error(transparent)]
    Suite(#[from] suite::Error),
    #[error(transparent)]
    Fuzz(#[from] fuzz::Error),
    #[error(transparent)]
    Demo(#[from] demo::Error),
    #[error(transparent)]
    Bench(#[from] bench::Error),
    #[error(transparent)]
    Junit(#[from] junit::Error),
}

fn model_properties(text: &str) -> Result<Vec<vm::ModelProperty>, Error> {
    vm::parse_model_properties(text).map_err(|e| Error::Model(e.to_string()))
}

fn vm_command(args: VmArgs) -> Result<u8, Error> {
    let model = model_properties(&args.dw100_model)?;
    let module = if args.no_module {
        vm::Module::None
    } else if let Some(path) = args.module {
        vm::Module::File(path)
    } else if let Some(variant) = args.dw100 {
        vm::Module::Dw100(variant)
    } else {
        vm::Module::default_for(args.machine)
    };
    let options = vm::Options {
        machine: args.machine,
        kernel: args.kernel,
        devices: args.devices,
        qemu: args.qemu.unwrap_or_else(|| args.machine.default_qemu()),
        shares: args.shares,
        readonly_shares: Vec::new(),
        timeout: Duration::from_secs(args.timeout),
        module,
        module_params: args.module_params,
        iommu: args.iommu,
        env: Vec::new(),
        accel: args.accel,
        command: args.command,
        artifacts: None,
        stream: true,
        boot_timeout: vm::BOOT_TIMEOUT,
    };
    report_vm(vm::run_with_model(&options, &model)?)
}

fn report_vm(outcome: vm::Outcome) -> Result<u8, Error> {
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    if let Some(splat) = &outcome.splat {
        eprintln!("--- kernel splat ---\n{splat}\n---");
    }
    if let Some(d_state) = &outcome.d_state {
        eprintln!("--- tasks in D state ---\n{d_state}---");
    }
    if outcome.passed() {
        let _ = std::fs::remove_dir_all(&outcome.artifacts);
        return Ok(0);
    }
    eprintln!(
        "vm: FAILED: {} (logs: {})",
        outcome.reason(),
        outcome.artifacts.display()
    );
    Ok(match outcome.status {
        Some(code)
            if outcome.failure.is_none()
                && outcome.splat.is_none()
                && outcome.d_state.is_none() =>
        {
            u8::try_from(code).unwrap_or(1).max(1)
        }
        _ => 1,
    })
}

fn run(cli: Cli) -> Result<u8, Error> {
    process::install_signal_handlers()?;
    match cli.command {
        Cmd::Deps => deps::run()?,
        Cmd::Qemu { variant } => {
            let binary = qemu::build(variant == "patched")?;
            println!("{}", binary.display());
        }
        Cmd::V4lUtils => {
            let bin = v4l_utils::build()?;
            println!("{}", bin.display());
        }
        Cmd::Kernel { kernel } => {
            let kernel = kernel::prepare(kernel)?;
            println!("{} {}", kernel.release, kernel.image.display());
        }
        Cmd::Imx8mpKernel { kernel, dw100 } => {
            let kernel = imx8mp::kernel(kernel)?;
            let dtb = imx8mp::dtb(&kernel)?;
            let module = imx8mp::dw100_module(&kernel, dw100)?;
            println!("release {}", kernel.release);
            println!("image {}", kernel.image.display());
            println!("dtb {}", dtb.display());
            println!("modules {}", kernel.modules_dir.display());
            println!("dw100 {}", module.display());
            let boot = kernel.module_closure(imx8mp::BOOT_MODULES)?;
            println!("boot-modules {}", boot.join(" "));
            let dependencies = imx8mp::dw100_dependencies(&kernel, &module)?;
            println!("dw100-dependencies {}", dependencies.join(" "));
        }
        Cmd::Module { kernel } => {
            let kernel = kernel::prepare(kernel)?;
            let object = kmod::build("virtio_video_m2m", &kernel, false)?;
            println!("{}", object.display());
        }
        Cmd::Vm(args) => return vm_command(args),
        Cmd::E2e {
            filters,
            kernel,
            junit,
        } => {
            let totals = e2e::run(&filters, kernel)?;
            if let Some(path) = &junit {
                junit::write(
                    path,
                    &[junit::Suite {
                        name: "e2e",
                        cases: &totals.cases,
                    }],
                )?;
            }
            if totals.todo > 0 {
                println!(
                    "# {} known failure(s) marked TODO, listed above",
                    totals.todo
                );
            }
            println!(
                "{} passed, {} failed, {} skipped",
                totals.passed, totals.failed, totals.skipped
            );
            return Ok(u8::from(totals.failed > 0));
        }
        Cmd::Tally {
            test,
            kernel,
            runs,
            dw100,
            dw100_model,
        } => {
            let model = dw100_model.as_deref().map(model_properties).transpose()?;
            e2e::tally(&e2e::Tally {
                test,
                kernel,
                runs,
                dw100,
                model,
            })?;
        }
        Cmd::Test { junit, kernel } => return Ok(u8::from(!suite::run(junit.as_deref(), kernel)?)),
        Cmd::Shellcheck => {
            deps::run()?;
            if let Err(reason) = suite::shellcheck() {
                eprintln!("shellcheck: {reason}");
                return Ok(1);
            }
        }
        Cmd::Fuzz { filters, seconds } => {
            let passed = fuzz::run(&fuzz::Options { filters, seconds })?;
            return Ok(u8::from(!passed));
        }
        Cmd::Demo => return Ok(demo::run()?),
        Cmd::Bench { which } => bench::run(which)?,
    }
    Ok(0)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
