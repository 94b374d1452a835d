//! Boots a guest under QEMU with backends attached and runs one command in
//! it. The guest's root is read-only over 9p: the host's own on q35, a
//! prepared arm64 root on imx8mp-evk (see [`machine`]); a private harness
//! directory carries the command in and its status, output and kernel log
//! out. Every step has a deadline; QEMU, backends and sockets are cleaned up
//! on every path out (drop guards, process groups, the signal flag).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::kernel::tree::{self, Need, Tree};
use crate::kernel::{self, Flavor, Kernel};
use crate::{cache, imx8mp, initramfs, kmod, process, qemu, splat, v4l_utils};

mod control;
mod machine;

pub use machine::{parse_model_properties, Iommu, Machine, ModelProperty};
use machine::{Guest, Root};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error(transparent)]
    Qemu(#[from] qemu::Error),
    #[error(transparent)]
    Initramfs(#[from] initramfs::Error),
    #[error(transparent)]
    Kmod(#[from] kmod::Error),
    #[error(transparent)]
    Process(#[from] process::Error),
    #[error(transparent)]
    Machine(#[from] machine::Error),
    #[error(transparent)]
    Imx8mp(#[from] imx8mp::Error),
    #[error("no command given (usage: cargo xtask vm [OPTIONS] -- COMMAND...)")]
    NoCommand,
    #[error("--device needs the backend binary, but vhost-device-video has no src/main.rs yet")]
    NoBackend,
    #[error("backend `{device}` did not create its socket within {secs} s{log}")]
    BackendSocket {
        device: String,
        secs: u64,
        log: String,
    },
    #[error("backend `{device}` exited at start ({status}){log}")]
    BackendExited {
        device: String,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("--share {0}: not an existing absolute directory without whitespace")]
    BadShare(PathBuf),
    #[error("--module {0}: no such file")]
    NoModuleFile(PathBuf),
    #[error("cannot create a private directory: {0}")]
    TempDir(nix::Error),
    #[error("unknown device `{0}` (known: decoder, dewarper, dw100)")]
    UnknownDevice(String),
    #[error("--device {device} does not exist on --machine {machine}")]
    DeviceOnMachine {
        device: &'static str,
        machine: Machine,
    },
    #[error("the dw100 driver runs on --machine imx8mp-evk only")]
    Dw100OnQ35,
    #[error("the project's guest driver drives q35's virtio devices; --machine imx8mp-evk loads the dw100 driver")]
    ProjectOnImx8mp,
    #[error("--machine {0} runs under TCG only: KVM cannot run its arm64 guest on this host")]
    NoKvm(Machine),
    #[error("unknown accelerator `{0}` (known: auto, kvm, tcg)")]
    UnknownAccel(String),
}

/// A backend the guest sees as a device: a virtio device on q35, the
/// emulated DW100's pixel engine on imx8mp-evk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Decoder,
    Dewarper,
    /// QEMU's `imx8mp-dw100` model hands its jobs to this backend.
    Dw100,
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "decoder" => Ok(Self::Decoder),
            "dewarper" => Ok(Self::Dewarper),
            "dw100" => Ok(Self::Dw100),
            other => Err(Error::UnknownDevice(other.to_string())),
        }
    }
}

impl Device {
    /// The name the guest's control requests use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Decoder => "decoder",
            Self::Dewarper => "dewarper",
            Self::Dw100 => "dw100",
        }
    }

    /// The backend's `--device` value.
    fn backend_kind(self) -> &'static str {
        match self {
            Self::Decoder => "decoder",
            Self::Dewarper => "dewarper",
            Self::Dw100 => "dw100-model",
        }
    }

    fn machine(self) -> Machine {
        match self {
            Self::Decoder | Self::Dewarper => Machine::Q35,
            Self::Dw100 => Machine::Imx8mpEvk,
        }
    }

    /// `vhost-user-test-device-pci` properties: virtio ID, queues, config size.
    fn qemu_properties(self) -> &'static str {
        match self {
            Self::Decoder => "virtio-id=31,num_vqs=2,config_size=44,vq_size=1024",
            Self::Dewarper => "virtio-id=56,num_vqs=1,config_size=16,vq_size=1024",
            Self::Dw100 => "",
        }
    }

    /// The QEMU options that attach the backend `name` (the `index`th) at
    /// `socket`. The patched QEMU gets the named video device and
    /// reconnects to a restarted backend; any other QEMU gets the generic
    /// device, which cannot reconnect (stock 10.2 refuses to start with
    /// `reconnect-ms`). Each video device sits behind its own PCIe root
    /// port, so that it can be hot-unplugged (`device_del`); devices on the
    /// root bus cannot. The DW100 is part of the SoC: its model only needs
    /// the chardev, and reconnects to a restarted backend too.
    fn qemu_args(
        self,
        choice: &qemu::Choice,
        name: &str,
        index: usize,
        socket: &Path,
    ) -> Vec<String> {
        let chardev = format!("chr{name}");
        let socket = socket.display();
        if self == Self::Dw100 {
            return vec![
                "-chardev".into(),
                format!("socket,id={chardev},path={socket},reconnect-ms=500"),
                "-global".into(),
                format!("imx8mp-dw100.chardev={chardev}"),
            ];
        }
        let (device, reconnect) = match choice {
            qemu::Choice::Patched => (
                format!(
                    "vhost-user-video-pci,chardev={chardev},kind={}",
                    self.name()
                ),
                ",reconnect-ms=500",
            ),
            _ => (
                format!(
                    "vhost-user-test-device-pci,chardev={chardev},{}",
                    self.qemu_properties()
                ),
                "",
            ),
        };
        vec![
            "-device".into(),
            format!("pcie-root-port,id=port{name},chassis={},slot=0", index + 1),
            "-chardev".into(),
            format!("socket,id={chardev},path={socket}{reconnect}"),
            "-device".into(),
            format!("{device},id={name},bus=port{name}"),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            other => Err(Error::UnknownAccel(other.to_string())),
        }
    }
}

/// Which kernel module to load before the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Module {
    /// The project's guest driver, when its sources exist.
    Project,
    None,
    /// A project module by name (see [`kmod::source_dir`]).
    Named(String),
    File(PathBuf),
    /// The upstream dw100 driver in one variant (imx8mp-evk only).
    Dw100(imx8mp::Dw100Variant),
}

/// What the project's guest driver needs of a kernel tree: virtio, V4L2
/// with the media controller, the mem2mem framework (bundled into the
/// module only for Debian's kernels, from the matching source) and
/// videobuf2's scatter-gather allocator.
const VIRTIO_VIDEO_NEEDS: &[Need<'static>] = &[
    Need::BuiltIn("VIRTIO"),
    Need::Enabled("VIDEO_DEV"),
    Need::BuiltIn("MEDIA_CONTROLLER"),
    Need::Enabled("V4L2_MEM2MEM_DEV"),
    Need::Enabled("VIDEOBUF2_V4L2"),
    Need::Enabled("VIDEOBUF2_DMA_SG"),
];

/// The dw100 driver's: V4L2 mem2mem with the contiguous allocator.
const DW100_NEEDS: &[Need<'static>] = &[
    Need::Enabled("VIDEO_DEV"),
    Need::BuiltIn("MEDIA_CONTROLLER"),
    Need::Enabled("V4L2_MEM2MEM_DEV"),
    Need::Enabled("VIDEOBUF2_DMA_CONTIG"),
];

impl Module {
    /// What the module needs of a kernel tree, and its name for messages.
    fn kernel_needs(&self) -> (&'static [Need<'static>], String) {
        match self {
            Self::Project => (VIRTIO_VIDEO_NEEDS, "virtio_video_m2m".to_string()),
            Self::Named(name) if name.starts_with("virtio_video_m2m") => {
                (VIRTIO_VIDEO_NEEDS, name.clone())
            }
            Self::Named(name) => (&[], name.clone()),
            Self::Dw100(variant) => (DW100_NEEDS, format!("dw100 ({variant})")),
            Self::None => (&[], String::new()),
            Self::File(path) => (&[], path.display().to_string()),
        }
    }

    /// What a machine loads unless told otherwise: the project's guest
    /// driver on q35, the fixed dw100 driver on imx8mp-evk.
    pub fn default_for(machine: Machine) -> Self {
        match machine {
            Machine::Q35 => Self::Project,
            Machine::Imx8mpEvk => Self::Dw100(imx8mp::Dw100Variant::default()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub machine: Machine,
    pub kernel: Flavor,
    /// On imx8mp-evk the DW100's backend is attached without being named.
    pub devices: Vec<Device>,
    pub qemu: qemu::Choice,
    /// Host directories the guest sees, writable, at the same paths.
    pub shares: Vec<PathBuf>,
    /// Host directories the guest must see read-only at the same paths; on
    /// q35 the host's root already shows them. (The checkout always is.)
    pub readonly_shares: Vec<PathBuf>,
    pub timeout: Duration,
    pub module: Module,
    pub module_params: String,
    /// A virtual IOMMU (q35 only).
    pub iommu: Iommu,
    pub env: Vec<(String, String)>,
    pub accel: Accel,
    pub command: Vec<String>,
    /// Where the run's logs go; a fresh private directory when `None`.
    pub artifacts: Option<PathBuf>,
    /// Print the command's output as it comes.
    pub stream: bool,
    /// How long the guest may take to reach its init.
    pub boot_timeout: Duration,
}

/// How a run went.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The command's exit status, when it ran to the end.
    pub status: Option<i32>,
    /// Why the harness judged the run failed, other than splats and D state.
    pub failure: Option<String>,
    pub splat: Option<String>,
    /// Every kernel report, each up to the end of its call trace
    /// ([`splat::reports`]), in log order.
    pub reports: Vec<String>,
    pub d_state: Option<String>,
    pub output: String,
    pub artifacts: PathBuf,
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
            && self.splat.is_none()
            && self.d_state.is_none()
            && self.status == Some(0)
    }

    /// One line saying why the run failed, or "ok".
    pub fn reason(&self) -> String {
        if let Some(failure) = &self.failure {
            failure.clone()
        } else if let Some(splat) = &self.splat {
            format!("kernel splat: {}", splat::summary(splat))
        } else if let Some(d_state) = &self.d_state {
            format!(
                "task left in D state: {}",
                d_state.lines().next().unwrap_or("")
            )
        } else {
            match self.status {
                Some(0) => "ok".to_string(),
                Some(code) => format!("command exited with status {code}"),
                None => "command did not finish".to_string(),
            }
        }
    }
}

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// A guest that boots with KVM at all does so in seconds.
const PROBE_BOOT_TIMEOUT: Duration = Duration::from_secs(45);
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(60);
const BACKEND_START: Duration = Duration::from_secs(15);
const BACKEND_BUILD_TIMEOUT: Duration = Duration::from_secs(3600);
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
const USERSPACE_MARKER: &str = "vdv-init: userspace reached";
const GUEST_RUN: &str = include_str!("../../images/guest-run.sh");

/// A backend process and where it serves; `process` is `None` while the
/// guest has had it killed.
struct Backend {
    device: Device,
    /// `decoder0`, `dewarper1`: the device name and its index on the
    /// command line, as the guest names it in control requests.
    name: String,
    process: Option<process::Group>,
    socket: PathBuf,
    log: PathBuf,
    /// Kills the guest asked for; such an exit is no finding.
    kills: u32,
    /// The test fault this backend was started with (`start-faulty`).
    fault: Option<String>,
}

/// Removes the sockets directory when dropped; declared after the process
/// guards so QEMU and the backends are gone first.
struct Session {
    qemu: Option<process::Group>,
    backends: Vec<Backend>,
    backend_binary: PathBuf,
    sockets: PathBuf,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.qemu = None;
        self.backends.clear();
        let _ = fs::remove_dir_all(&self.sockets);
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn backend_binary() -> Result<PathBuf, Error> {
    let root = cache::repo_root();
    if !root.join("vhost-device-video/src/main.rs").exists() {
        return Err(Error::NoBackend);
    }
    let mut build = Command::new("cargo");
    build
        .current_dir(&root)
        .args(["build", "--release", "-p", "vhost-device-video"]);
    let log = root.join("target/vhost-device-video-build.log");
    if let Some(parent) = log.parent() {
        fs::create_dir_all(parent).map_err(cache::io_error("cannot create", parent))?;
    }
    process::run_logged(build, &log, BACKEND_BUILD_TIMEOUT)?;
    Ok(root.join("target/release/vhost-device-video"))
}

/// `decoder0`, `dewarper1`: the device's name and its place in the device
/// list, with a dash where the name ends in a digit (`dw100-0`).
fn backend_name(device: Device, index: usize) -> String {
    let name = device.name();
    if name.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{name}-{index}")
    } else {
        format!("{name}{index}")
    }
}

fn start_backends(
    session: &mut Session,
    devices: &[Device],
    artifacts: &Path,
) -> Result<(), Error> {
    if devices.is_empty() {
        return Ok(());
    }
    let binary = backend_binary()?;
    session.backend_binary.clone_from(&binary);
    for (index, device) in devices.iter().enumerate() {
        let name = backend_name(*device, index);
        let mut backend = Backend {
            device: *device,
            socket: session.sockets.join(format!("{name}.sock")),
            log: artifacts.join(format!("backend-{name}.log")),
            name,
            process: None,
            kills: 0,
            fault: None,
        };
        spawn_backend(&binary, &mut backend)?;
        session.backends.push(backend);
    }
    Ok(())
}

/// Starts the backend and waits for its socket; its output is appended to
/// its log, so a restarted backend's follows the killed one's.
fn spawn_backend(binary: &Path, backend: &mut Backend) -> Result<(), Error> {
    let device = backend.device;
    // A killed backend leaves its socket behind; only a new one counts.
    let _ = fs::remove_file(&backend.socket);
    let file = File::options()
        .create(true)
        .append(true)
        .open(&backend.log)
        .map_err(cache::io_error("cannot create", &backend.log))?;
    let err = file
        .try_clone()
        .map_err(cache::io_error("cannot create", &backend.log))?;
    let mut command = Command::new(binary);
    command
        .arg("--socket-path")
        .arg(&backend.socket)
        .arg("--device")
        .arg(device.backend_kind())
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err));
    if let Some(fault) = &backend.fault {
        command.arg("--test-fault").arg(fault);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    let mut group = process::Group::spawn(command, &format!("backend {}", device.name()))?;
    let deadline = Instant::now() + BACKEND_START;
    while !backend.socket.exists() {
        if let Some(status) = group.try_status()? {
            return Err(Error::BackendExited {
                device: device.name().to_string(),
                status,
                log: tail_note(&backend.log),
            });
        }
        if process::interrupted() {
            return Err(process::Error::Interrupted.into());
        }
        if Instant::now() >= deadline {
            return Err(Error::BackendSocket {
                device: device.name().to_string(),
                secs: BACKEND_START.as_secs(),
                log: tail_note(&backend.log),
            });
        }
        thread::sleep(Duration::from_millis(50));
    }
    backend.process = Some(group);
    Ok(())
}

fn tail_note(log: &Path) -> String {
    let tail = process::log_tail(log, 5);
    if tail.trim().is_empty() {
        format!("; log: {}", log.display())
    } else {
        format!(": {}", tail.replace('\n', " | "))
    }
}

/// Refuses a module the machine's guest has no use for, before anything
/// is built. (Named project modules build for either architecture.)
fn check_module(options: &Options) -> Result<(), Error> {
    match (&options.module, options.machine) {
        (Module::Dw100(_), Machine::Q35) => Err(Error::Dw100OnQ35),
        (Module::Project, Machine::Imx8mpEvk) => Err(Error::ProjectOnImx8mp),
        _ => Ok(()),
    }
}

/// Refuses a kernel tree that lacks what the guest and its module need,
/// before anything is built.
fn check_tree(options: &Options) -> Result<(), Error> {
    if let Flavor::Tree(tree) = options.kernel {
        check_needs(options.machine, &options.module, tree).map_err(kernel::Error::from)?;
    }
    Ok(())
}

/// Whether `tree` has what `machine`'s guest and `module` need.
fn check_needs(machine: Machine, module: &Module, tree: &Tree) -> Result<(), tree::Error> {
    let mut needs = machine.kernel_needs().to_vec();
    let (module_needs, module) = module.kernel_needs();
    needs.extend_from_slice(module_needs);
    let what = if module.is_empty() {
        format!("the {machine} guest")
    } else {
        format!("the {machine} guest with {module}")
    };
    tree.check(machine.arch(), machine.name(), &what, &needs)
}

/// The symbol [`check_tree_needs`] takes away.
const REMOVED_FOR_CHECK: &str = "CONFIG_9P_FS";

/// `--kernel PATH`'s check run on the build trees of the harness's own
/// debug kernels (x86 with the project's driver, arm64 with dw100), which
/// boot every test: each must pass, and a copy of its `.config` without
/// `CONFIG_9P_FS` must be refused naming it. Guards the need lists against
/// asking for what a working guest lacks, and the check against letting
/// through a kernel that cannot mount its root.
pub fn check_tree_needs() -> Result<(), String> {
    for machine in [Machine::Q35, Machine::Imx8mpEvk] {
        let guest_kernel = match machine {
            Machine::Q35 => kernel::prepare(Flavor::DebugRt).map_err(|e| e.to_string())?,
            Machine::Imx8mpEvk => imx8mp::kernel(Flavor::DebugRt).map_err(|e| e.to_string())?,
        };
        let module = Module::default_for(machine);
        let tree = Tree::open(&guest_kernel.kbuild).map_err(|e| e.to_string())?;
        check_needs(machine, &module, &tree).map_err(|e| e.to_string())?;
        let scratch = cache::repo_root().join(format!("target/kernel-tree-check/{machine}"));
        fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        let config_path = guest_kernel.kbuild.join(".config");
        let config = fs::read_to_string(&config_path)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let lacking: String = config
            .lines()
            .filter(|line| !line.starts_with(&format!("{REMOVED_FOR_CHECK}=")))
            .map(|line| format!("{line}\n"))
            .collect();
        let scratch_config = scratch.join(".config");
        fs::write(&scratch_config, lacking)
            .map_err(|e| format!("{}: {e}", scratch_config.display()))?;
        let lacking = Tree::open(&scratch).map_err(|e| e.to_string())?;
        match check_needs(machine, &module, &lacking) {
            Err(tree::Error::Lacks { missing, .. }) if missing == REMOVED_FOR_CHECK => {}
            Err(other) => {
                return Err(format!(
                    "{machine}: a tree without {REMOVED_FOR_CHECK} was refused for another reason: {other}"
                ))
            }
            Ok(()) => {
                return Err(format!(
                    "{machine}: a tree without {REMOVED_FOR_CHECK} was accepted"
                ))
            }
        }
    }
    Ok(())
}

fn resolve_module(
    options: &Options,
    kernel: &Kernel,
    notes: &mut Vec<String>,
) -> Result<Option<PathBuf>, Error> {
    match &options.module {
        Module::None => Ok(None),
        Module::Dw100(variant) => Ok(Some(imx8mp::dw100_module(kernel, *variant)?)),
        Module::File(path) => {
            if path.is_file() {
                Ok(Some(
                    fs::canonicalize(path).map_err(cache::io_error("cannot resolve", path))?,
                ))
            } else {
                Err(Error::NoModuleFile(path.clone()))
            }
        }
        Module::Named(name) => Ok(Some(kmod::build(name, kernel, false)?)),
        Module::Project => {
            if kmod::present("virtio_video_m2m")? {
                Ok(Some(kmod::build("virtio_video_m2m", kernel, false)?))
            } else {
                notes.push(
                    "guest-driver/Makefile does not exist yet: running without the project module"
                        .to_string(),
                );
                Ok(None)
            }
        }
    }
}

fn private_dir(prefix: &str) -> Result<PathBuf, Error> {
    let template = std::env::temp_dir().join(format!("{prefix}-XXXXXX"));
    nix::unistd::mkdtemp(&template).map_err(Error::TempDir)
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_string())
        .unwrap_or_default()
}

/// The accelerator when no probe is needed: the one asked for, or the
/// machine's only one (said in a note).
fn accel_without_probe(options: &Options) -> Result<Option<(Accel, Option<String>)>, Error> {
    if !options.machine.kvm_capable() {
        return match options.accel {
            Accel::Kvm => Err(Error::NoKvm(options.machine)),
            Accel::Auto | Accel::Tcg => Ok(Some((
                Accel::Tcg,
                Some(format!(
                    "{}: TCG only (an arm64 guest on this x86 host)",
                    options.machine
                )),
            ))),
        };
    }
    Ok(match options.accel {
        Accel::Kvm | Accel::Tcg => Some((options.accel, None)),
        Accel::Auto => None,
    })
}

/// KVM when a tiny guest boots with it, TCG otherwise; probed once per host
/// boot (some hosts expose /dev/kvm but fail guests with "emulation failure").
fn choose_accel(
    options: &Options,
    guest: &Guest,
    qemu: &Path,
) -> Result<(Accel, Option<String>), Error> {
    if File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok((
            Accel::Tcg,
            Some("no usable /dev/kvm: using TCG".to_string()),
        ));
    }
    let record = cache::dir("accel")?.join(boot_id());
    if let Ok(text) = fs::read_to_string(&record) {
        let accel = if text.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        return Ok((accel, None));
    }
    let _lock = cache::lock("accel-probe")?;
    let probe = Options {
        machine: options.machine,
        kernel: options.kernel,
        devices: Vec::new(),
        qemu: options.qemu.clone(),
        shares: Vec::new(),
        readonly_shares: Vec::new(),
        timeout: PROBE_TIMEOUT,
        module: Module::None,
        module_params: String::new(),
        iommu: Iommu::None,
        env: Vec::new(),
        accel: Accel::Kvm,
        command: vec!["true".to_string()],
        artifacts: None,
        stream: false,
        boot_timeout: PROBE_BOOT_TIMEOUT,
    };
    let outcome = boot(&probe, guest, qemu, Accel::Kvm, None, &[], Vec::new())?;
    let reason = outcome.reason();
    let (accel, name) = if outcome.passed() {
        (Accel::Kvm, "kvm")
    } else {
        (Accel::Tcg, "tcg")
    };
    // Only an answer about KVM is worth keeping: a QEMU that fails for any
    // other reason fails the same way under TCG, with its own message.
    let about_kvm = outcome.passed()
        || reason.contains("KVM")
        || reason.contains("did not reach userspace")
        || reason.contains("panicked");
    if about_kvm {
        fs::write(&record, name).map_err(cache::io_error("cannot write", &record))?;
    }
    let note = if accel == Accel::Tcg {
        format!(
            "KVM does not run guests here ({}): using TCG",
            outcome.reason()
        )
    } else {
        "using KVM".to_string()
    };
    let _ = fs::remove_dir_all(&outcome.artifacts);
    Ok((accel, Some(note)))
}

/// Prepares everything and runs the command in a guest.
pub fn run(options: &Options) -> Result<Outcome, Error> {
    run_with_model(options, &[])
}

/// [`run`], with properties of the DW100 model set (imx8mp-evk only).
pub fn run_with_model(options: &Options, model: &[ModelProperty]) -> Result<Outcome, Error> {
    if options.command.is_empty() {
        return Err(Error::NoCommand);
    }
    for share in options.shares.iter().chain(&options.readonly_shares) {
        let text = share.to_string_lossy();
        if !share.is_absolute() || !share.is_dir() || text.chars().any(char::is_whitespace) {
            return Err(Error::BadShare(share.clone()));
        }
    }
    check_module(options)?;
    check_tree(options)?;
    let model_args = options.machine.model_args(model)?;
    let mut options = options.clone();
    for device in &options.devices {
        if device.machine() != options.machine {
            return Err(Error::DeviceOnMachine {
                device: device.name(),
                machine: options.machine,
            });
        }
    }
    if options.machine == Machine::Imx8mpEvk && !options.devices.contains(&Device::Dw100) {
        options.devices.push(Device::Dw100);
    }
    let mut notes = Vec::new();
    // Known before anything is built, unless KVM has to be probed.
    let fixed_accel = accel_without_probe(&options)?;
    let qemu = options.machine.qemu(&options.qemu)?;
    let guest = options.machine.prepare(options.kernel)?;
    // Checked before the module is built; the module adds no share where
    // the count is limited (imx8mp-evk: it travels in the harness directory).
    let plan = SharePlan::new(&options, &guest, None);
    options.machine.check_share_count(plan.count())?;
    let module = resolve_module(&options, &guest.kernel, &mut notes)?;
    if let Root::Host = guest.root {
        match v4l_utils::guest_bin() {
            Ok(bin) => options.env.push((
                "VDV_TOOLS_PATH".to_string(),
                bin.to_string_lossy().into_owned(),
            )),
            Err(note) => notes.push(note),
        }
    }
    let (accel, note) = match fixed_accel {
        Some(fixed) => fixed,
        None => choose_accel(&options, &guest, &qemu)?,
    };
    notes.extend(note);
    boot(&options, &guest, &qemu, accel, module, &model_args, notes)
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(cache::io_error("cannot write", path))?;
    Ok(())
}

/// Where the guest's init mounts filesystems of its own over the host's root
/// (images/guest-init.sh): host paths below them are hidden in the guest.
const GUEST_OWN_MOUNTS: &[&str] = &["/tmp", "/run", "/var/tmp", "/dev", "/proc", "/sys"];

fn hidden_in_guest(path: &Path) -> bool {
    GUEST_OWN_MOUNTS.iter().any(|mount| path.starts_with(mount))
}

/// Of `paths` (absolute), those a guest over the host's root would not see
/// unless shared: the ones below its own mounts, each once, none inside
/// another, parents first (the order they are mounted in).
fn hidden_paths(paths: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut hidden: Vec<PathBuf> = paths
        .into_iter()
        // /var/run is a link to /run: what counts is where a path leads.
        .map(|path| fs::canonicalize(&path).unwrap_or(path))
        .filter(|path| hidden_in_guest(path))
        .collect();
    // Paths order by components: a directory comes before what is in it.
    hidden.sort();
    let mut outermost: Vec<PathBuf> = Vec::new();
    for path in hidden {
        if !outermost.iter().any(|outer| path.starts_with(outer)) {
            outermost.push(path);
        }
    }
    outermost
}

/// The host directories a guest mounts over 9p besides its root and the
/// harness directory, in mount order.
struct SharePlan {
    /// The kernel's module tree (every guest kernel's is in the cache),
    /// mounted at `/lib/modules`.
    modules: PathBuf,
    /// Read-only, at their host paths. With its own root the guest gets the
    /// checkout and the asked-for ones; over the host's root, those of the
    /// checkout, the working directory, the cache, the module's directory and
    /// the asked-for ones that the guest's own mounts would hide.
    readonly: Vec<PathBuf>,
    /// Writable, at their host paths; mounted last, so also below a hidden
    /// path.
    writable: Vec<PathBuf>,
}

impl SharePlan {
    /// `module`: the file the guest loads (it travels in the harness
    /// directory on a machine with its own root).
    fn new(options: &Options, guest: &Guest, module: Option<&Path>) -> Self {
        let own_root = matches!(guest.root, Root::Image(_));
        let modules = guest.kernel.modules_dir.clone();
        let readonly = if own_root {
            let mut readonly = vec![cache::repo_root()];
            for share in &options.readonly_shares {
                if !readonly.contains(share) {
                    readonly.push(share.clone());
                }
            }
            readonly
        } else {
            let mut wanted = vec![cache::repo_root()];
            wanted.extend(std::env::current_dir().ok());
            wanted.extend(cache::root().ok());
            wanted.extend(module.and_then(Path::parent).map(Path::to_path_buf));
            wanted.extend(options.readonly_shares.iter().cloned());
            hidden_paths(wanted)
        };
        Self {
            modules,
            readonly,
            writable: options.shares.clone(),
        }
    }

    /// The number of 9p devices, with the root, the harness directory and
    /// the module tree.
    fn count(&self) -> usize {
        3 + self.readonly.len() + self.writable.len()
    }
}

fn boot(
    options: &Options,
    guest: &Guest,
    qemu: &Path,
    accel: Accel,
    module: Option<PathBuf>,
    model_args: &[String],
    notes: Vec<String>,
) -> Result<Outcome, Error> {
    let artifacts = match &options.artifacts {
        Some(dir) => {
            if dir.exists() {
                fs::remove_dir_all(dir).map_err(cache::io_error("cannot remove", dir))?;
            }
            fs::create_dir_all(dir).map_err(cache::io_error("cannot create", dir))?;
            dir.clone()
        }
        None => {
            let base = cache::repo_root().join("target/vm");
            fs::create_dir_all(&base).map_err(cache::io_error("cannot create", &base))?;
            let template = base.join("run-XXXXXX");
            nix::unistd::mkdtemp(&template).map_err(Error::TempDir)?
        }
    };
    let harness = artifacts.join("harness");
    fs::create_dir_all(&harness).map_err(cache::io_error("cannot create", &harness))?;
    let control_dir = harness.join(control::DIR);
    fs::create_dir_all(&control_dir).map_err(cache::io_error("cannot create", &control_dir))?;
    let mut session = Session {
        qemu: None,
        backends: Vec::new(),
        backend_binary: PathBuf::new(),
        sockets: private_dir("vdv-sockets")?,
    };
    let machine = options.machine;
    let kernel = &guest.kernel;

    let initrd = artifacts.join("initramfs.cpio");
    initramfs::build(kernel, &guest.busybox, machine.root_modules(), &initrd)?;

    let plan = SharePlan::new(options, guest, module.as_deref());
    let mut config = String::new();
    let _ = writeln!(config, "TIMEOUT={}", options.timeout.as_secs().max(1));
    let root_kind = match guest.root {
        Root::Host => "host",
        Root::Image(_) => "image",
    };
    let _ = writeln!(config, "ROOT={root_kind}");
    for (prefix, shares) in [("RO_SHARE", &plan.readonly), ("SHARE", &plan.writable)] {
        let _ = writeln!(config, "{prefix}_COUNT={}", shares.len());
        for (index, share) in shares.iter().enumerate() {
            let _ = writeln!(
                config,
                "{prefix}_{index}={}",
                shell_quote(&share.to_string_lossy())
            );
        }
    }
    write_file(&harness.join("config"), &config)?;

    // A guest with its own root sees no host path but the shared ones: the
    // module travels in the harness directory.
    let module = match (&guest.root, module) {
        (Root::Image(_), Some(path)) => {
            let dir = harness.join("module");
            fs::create_dir_all(&dir).map_err(cache::io_error("cannot create", &dir))?;
            let copy = dir.join(path.file_name().unwrap_or_default());
            fs::copy(&path, &copy).map_err(cache::io_error("cannot copy", &path))?;
            Some(PathBuf::from("/run/harness/module").join(path.file_name().unwrap_or_default()))
        }
        (_, module) => module,
    };

    let mut env = String::new();
    let workdir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut vars: Vec<(String, String)> = vec![
        (
            "VDV_WORKDIR".to_string(),
            workdir.to_string_lossy().into_owned(),
        ),
        (
            "VDV_MODULE".to_string(),
            module
                .as_ref()
                .map(|m| m.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        (
            "VDV_MODULE_PARAMS".to_string(),
            options.module_params.clone(),
        ),
        (
            "VDV_CONTROL".to_string(),
            format!("/run/harness/{}", control::DIR),
        ),
    ];
    vars.extend(options.env.iter().cloned());
    for (name, value) in &vars {
        let _ = writeln!(env, "export {name}={}", shell_quote(value));
    }
    write_file(&harness.join("env"), &env)?;
    let command = options
        .command
        .iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ");
    write_file(&harness.join("command"), &format!("exec {command}\n"))?;
    write_file(&harness.join("guest-run.sh"), GUEST_RUN)?;

    start_backends(&mut session, &options.devices, &artifacts)?;

    let console = artifacts.join("console.log");
    let qemu_log = artifacts.join("qemu.log");
    let mut args: Vec<String> = vec![
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
    ];
    args.extend(machine.qemu_args(guest, accel == Accel::Kvm, options.iommu, &initrd, &console)?);
    let root_dir = match &guest.root {
        Root::Host => PathBuf::from("/"),
        Root::Image(dir) => dir.clone(),
    };
    let mut fs_index = 0;
    let mut fs_share = |id: &str, path: &Path, readonly: bool| {
        args.push("-fsdev".into());
        args.push(format!(
            "local,id={id},path={},security_model=none,multidevs=remap{}",
            path.display(),
            if readonly { ",readonly=on" } else { "" }
        ));
        args.push("-device".into());
        args.push(machine.fs_device(id, fs_index));
        fs_index += 1;
    };
    fs_share("hostroot", &root_dir, true);
    fs_share("harness", &harness, false);
    fs_share("modules", &plan.modules, true);
    for (index, share) in plan.readonly.iter().enumerate() {
        fs_share(&format!("roshare{index}"), share, true);
    }
    for (index, share) in plan.writable.iter().enumerate() {
        fs_share(&format!("share{index}"), share, false);
    }
    for (index, backend) in session.backends.iter().enumerate() {
        args.extend(
            backend
                .device
                .qemu_args(&options.qemu, &backend.name, index, &backend.socket),
        );
    }
    args.extend(model_args.iter().cloned());
    args.push("-qmp".into());
    args.push(format!(
        "unix:{},server=on,wait=off",
        session.sockets.join(control::QMP_SOCKET).display()
    ));
    write_file(
        &artifacts.join("qemu.cmdline"),
        &format!("{} {}\n", qemu.display(), args.join(" ")),
    )?;

    let log = File::create(&qemu_log).map_err(cache::io_error("cannot create", &qemu_log))?;
    let log_err = log
        .try_clone()
        .map_err(cache::io_error("cannot create", &qemu_log))?;
    let mut command = Command::new(qemu);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    session.qemu = Some(process::Group::spawn(command, "qemu")?);

    let mut outcome = Outcome {
        artifacts: artifacts.clone(),
        notes,
        ..Outcome::default()
    };
    watch(
        &mut session,
        options,
        &harness,
        &console,
        &qemu_log,
        &mut outcome,
    )?;
    judge(
        &mut session,
        &harness,
        &console,
        &qemu_log,
        options,
        &mut outcome,
    );
    Ok(outcome)
}

/// Streams the command's output while QEMU runs, within the deadlines.
fn watch(
    session: &mut Session,
    options: &Options,
    harness: &Path,
    console: &Path,
    qemu_log: &Path,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut reached: Option<Instant> = None;
    let mut output_offset = 0u64;
    let mut console_text = String::new();
    let mut console_offset = 0u64;
    let output_path = harness.join("output");
    loop {
        if process::interrupted() {
            return Err(process::Error::Interrupted.into());
        }
        if options.stream {
            output_offset = copy_new(&output_path, output_offset);
        }
        let exited = match session.qemu.as_mut() {
            Some(group) => group.try_status()?.is_some(),
            None => true,
        };
        if exited {
            break;
        }
        serve_control(session, &harness.join(control::DIR));
        if let Some(error) = read_text(qemu_log).and_then(|log| {
            log.lines()
                .find(|l| l.contains("KVM internal error"))
                .map(str::to_string)
        }) {
            outcome.failure = Some(format!("QEMU: {}", error.trim()));
            session.qemu = None;
            break;
        }
        if reached.is_none() {
            console_offset = append_new(console, console_offset, &mut console_text);
            if console_text.contains(USERSPACE_MARKER) {
                reached = Some(Instant::now());
            } else if started.elapsed() > options.boot_timeout {
                outcome.failure = Some(format!(
                    "the guest did not reach userspace within {} s (see {})",
                    options.boot_timeout.as_secs(),
                    console.display()
                ));
                session.qemu = None;
                break;
            }
        }
        if let Some(at) = reached {
            if at.elapsed() > options.timeout + SHUTDOWN_MARGIN {
                outcome.failure = Some(format!(
                    "the guest did not finish within {} s of its {} s command timeout (hung kernel?)",
                    SHUTDOWN_MARGIN.as_secs(),
                    options.timeout.as_secs()
                ));
                session.qemu = None;
                break;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    if options.stream {
        copy_new(&output_path, output_offset);
    }
    Ok(())
}

/// Carries out the guest's pending control requests, in order.
fn serve_control(session: &mut Session, dir: &Path) {
    for request in control::pending(dir) {
        let result = control::Action::parse(&request.line)
            .and_then(|action| carry_out(session, &action).map_err(|e| e.to_string()));
        request.answer(&result);
    }
}

fn find_backend<'a>(session: &'a mut Session, target: &str) -> Result<&'a mut Backend, String> {
    let known = session
        .backends
        .iter()
        .map(|b| b.name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    session
        .backends
        .iter_mut()
        .find(|b| b.name == target || b.device.name() == target)
        .ok_or_else(|| format!("no device `{target}` (known: {known})"))
}

/// Restarts a killed backend, with `fault` injected or none.
fn start_backend(
    session: &mut Session,
    target: &str,
    fault: Option<String>,
) -> Result<String, String> {
    let binary = session.backend_binary.clone();
    let backend = find_backend(session, target)?;
    if backend.process.is_some() {
        return Err(format!("backend {} is running", backend.name));
    }
    backend.fault = fault;
    spawn_backend(&binary, backend).map_err(|e| e.to_string())?;
    Ok(match &backend.fault {
        Some(fault) => format!("started backend {} with test fault {fault}", backend.name),
        None => format!("started backend {}", backend.name),
    })
}

fn carry_out(session: &mut Session, action: &control::Action) -> Result<String, String> {
    match action {
        control::Action::Kill(target) => {
            let backend = find_backend(session, target)?;
            let mut group = backend
                .process
                .take()
                .ok_or_else(|| format!("backend {} is not running", backend.name))?;
            group.kill();
            backend.kills += 1;
            Ok(format!("killed backend {}", backend.name))
        }
        control::Action::Start(target) => start_backend(session, target, None),
        control::Action::StartFaulty(target, fault) => {
            start_backend(session, target, Some(fault.clone()))
        }
        control::Action::Unplug(target) => {
            let backend = find_backend(session, target)?;
            if backend.device == Device::Dw100 {
                return Err(format!(
                    "{} is part of the SoC, not a pluggable device",
                    backend.name
                ));
            }
            let name = backend.name.clone();
            let qmp = session.sockets.join(control::QMP_SOCKET);
            control::qmp(
                &qmp,
                &format!("{{\"execute\":\"device_del\",\"arguments\":{{\"id\":\"{name}\"}}}}"),
            )
            .map_err(|e| e.to_string())?;
            Ok(format!("device_del {name} sent"))
        }
        control::Action::Pause(seconds) => {
            let qmp = session.sockets.join(control::QMP_SOCKET);
            control::qmp(&qmp, "{\"execute\":\"stop\"}").map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_secs(*seconds));
            control::qmp(&qmp, "{\"execute\":\"cont\"}").map_err(|e| e.to_string())?;
            Ok(format!("VM stopped for {seconds} s and continued"))
        }
    }
}

fn copy_new(path: &Path, offset: u64) -> u64 {
    let Ok(mut file) = File::open(path) else {
        return offset;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buffer = Vec::new();
    let Ok(read) = file.read_to_end(&mut buffer) else {
        return offset;
    };
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(&buffer);
    let _ = stdout.flush();
    offset + read as u64
}

fn append_new(path: &Path, offset: u64, text: &mut String) -> u64 {
    let Ok(mut file) = File::open(path) else {
        return offset;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buffer = Vec::new();
    let Ok(read) = file.read_to_end(&mut buffer) else {
        return offset;
    };
    text.push_str(&String::from_utf8_lossy(&buffer));
    offset + read as u64
}

fn read_text(path: &Path) -> Option<String> {
    fs::read(path)
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads what the guest left behind and decides how the run went.
fn judge(
    session: &mut Session,
    harness: &Path,
    console: &Path,
    qemu_log: &Path,
    options: &Options,
    outcome: &mut Outcome,
) {
    let qemu_status = session
        .qemu
        .as_mut()
        .and_then(|group| group.try_status().ok().flatten());
    session.qemu = None;
    let console_text = read_text(console).unwrap_or_default();
    let dmesg = read_text(&harness.join("dmesg")).unwrap_or_default();
    outcome.output = read_text(&harness.join("output")).unwrap_or_default();
    outcome.splat = splat::find(&console_text).or_else(|| splat::find(&dmesg));
    outcome.reports = splat::reports(&console_text);
    if outcome.reports.is_empty() {
        outcome.reports = splat::reports(&dmesg);
    }
    outcome.d_state = read_text(&harness.join("d-state")).filter(|t| !t.trim().is_empty());
    outcome.status = read_text(&harness.join("status")).and_then(|t| t.trim().parse().ok());

    for backend in session.backends.iter_mut() {
        if backend.kills > 0 {
            outcome.notes.push(format!(
                "backend {} killed {} time(s) at the guest's request; log: {}",
                backend.name,
                backend.kills,
                backend.log.display()
            ));
        }
        let Some(group) = backend.process.as_mut() else {
            continue;
        };
        if let Ok(Some(status)) = group.try_status() {
            outcome.notes.push(format!(
                "backend {} exited during the run ({status}); log: {}",
                backend.name,
                backend.log.display()
            ));
        }
    }
    if outcome.failure.is_some() {
        return;
    }
    let finished = harness.join("finished").exists();
    outcome.failure = if let Some(error) = read_text(&harness.join("init-error")) {
        Some(format!("guest init: {}", error.trim()))
    } else if !finished {
        if let Some(line) = console_text.lines().find(|l| l.contains("Kernel panic")) {
            Some(format!("the guest kernel panicked: {}", line.trim()))
        } else {
            let tail = process::log_tail(qemu_log, 3).replace('\n', " | ");
            Some(format!(
                "QEMU exited ({}) before the guest finished{}",
                qemu_status.map_or_else(|| "killed".to_string(), |s| s.to_string()),
                if tail.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            ))
        }
    } else if let Some(error) = read_text(&harness.join("module-error")) {
        Some(format!("module: {}", error.trim()))
    } else if harness.join("timed-out").exists() {
        Some(format!(
            "the command timed out after {} s",
            options.timeout.as_secs()
        ))
    } else if outcome.status.is_none() {
        Some("the command left no exit status".to_string())
    } else {
        None
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn paths_under_the_guests_own_mounts_are_shared() {
        let shared = hidden_paths(paths(&[
            "/work/main",
            "/var/tmp/clone/vdv",
            "/tmp/cache/vhost-device-video",
            "/dev/shm/data",
            "/run/user/1000/x",
        ]));
        assert_eq!(
            shared,
            paths(&[
                "/dev/shm/data",
                "/run/user/1000/x",
                "/tmp/cache/vhost-device-video",
                "/var/tmp/clone/vdv",
            ])
        );
    }

    #[test]
    fn nested_hidden_paths_are_shared_once() {
        let shared = hidden_paths(paths(&[
            "/var/tmp/clone/vdv/target/kmod/debian-rt/m",
            "/var/tmp/clone/vdv",
            "/var/tmp/clone/vdv",
            "/var/tmp/clone/vdv-other",
        ]));
        assert_eq!(
            shared,
            paths(&["/var/tmp/clone/vdv", "/var/tmp/clone/vdv-other"])
        );
    }

    #[test]
    fn look_alike_prefixes_are_visible() {
        assert!(hidden_paths(paths(&["/tmpfoo/x", "/var/tmpx", "/srv/tmp", "/"])).is_empty());
    }
}
