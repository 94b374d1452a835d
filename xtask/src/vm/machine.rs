//! The QEMU machines a guest runs on. `q35`: an x86 PREEMPT_RT guest over
//! the host's own root, with vhost-user video devices. `imx8mp-evk`: an
//! arm64 PREEMPT_RT guest on QEMU's i.MX8MP board with its emulated DW100,
//! over the arm64 root of [`crate::arm64_root`]. Each machine says how its
//! guest is prepared and which QEMU options, console and kernel command line
//! it boots with.

use std::path::{Path, PathBuf};

use crate::kernel::tree::Need;
use crate::kernel::{self, Arch, Flavor, Kernel};
use crate::{arm64_root, deps, imx8mp, qemu};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    #[error(transparent)]
    Imx8mp(#[from] imx8mp::Error),
    #[error(transparent)]
    Root(#[from] arm64_root::Error),
    #[error(transparent)]
    Qemu(#[from] qemu::Error),
    #[error(transparent)]
    Deps(#[from] deps::Error),
    #[error("unknown machine `{0}` (known: q35, imx8mp-evk)")]
    Unknown(String),
    #[error("imx8mp-evk needs the patched QEMU (its DW100 model is one of qemu-patches/), not --qemu stock")]
    StockQemu,
    #[error("imx8mp-evk has room for {max} 9p shares on its PCIe link, {asked} were asked for")]
    TooManyShares { max: usize, asked: usize },
    #[error("DW100 model property `{0}`: expected NAME=VALUE")]
    PropertySyntax(String),
    #[error(
        "unknown DW100 model property `{0}` (known: bus-timeout-us, job-timeout-ms, fault-no-irq)"
    )]
    UnknownProperty(String),
    #[error("DW100 model property {name}: `{value}` is not {expected}")]
    PropertyValue {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("DW100 model property {0} is given twice")]
    DuplicateProperty(&'static str),
    #[error("DW100 model properties exist on imx8mp-evk only, not on {0}")]
    PropertiesOnMachine(Machine),
    #[error("unknown IOMMU setting `{0}` (known: none, translated, passthrough)")]
    UnknownIommu(String),
    #[error("a virtual IOMMU exists on q35 only, not on {0}")]
    IommuOnMachine(Machine),
}

/// A virtual IOMMU in front of q35's PCI devices, and how the guest and the
/// video devices use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Iommu {
    #[default]
    None,
    /// QEMU's intel-iommu, and a guest that translates DMA through it.
    Translated,
    /// QEMU's intel-iommu, and a guest that keeps its devices in
    /// passthrough (identity) domains.
    Passthrough,
}

impl std::str::FromStr for Iommu {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "none" => Ok(Self::None),
            "translated" => Ok(Self::Translated),
            "passthrough" => Ok(Self::Passthrough),
            other => Err(Error::UnknownIommu(other.to_string())),
        }
    }
}

impl Iommu {
    /// The guest kernel's command-line words for this setting.
    fn kernel_words(self) -> &'static [&'static str] {
        match self {
            Self::None => &[],
            Self::Translated => &["intel_iommu=on", "iommu.passthrough=0"],
            Self::Passthrough => &["intel_iommu=on", "iommu.passthrough=1"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    #[default]
    Q35,
    Imx8mpEvk,
}

impl std::str::FromStr for Machine {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "q35" => Ok(Self::Q35),
            "imx8mp-evk" => Ok(Self::Imx8mpEvk),
            other => Err(Error::Unknown(other.to_string())),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The q35 guest's initramfs modules for mounting its 9p root; built-in
/// ones are skipped. (imx8mp-evk's are [`imx8mp::BOOT_MODULES`]: the PCIe
/// link that carries its 9p devices comes first.)
const Q35_ROOT_MODULES: &[&str] = &["9p", "9pnet_virtio"];
/// The x86 guests' busybox: bookworm's `busybox-static`, unpacked into the
/// cache (the host does not run it).
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The DesignWare root port's secondary bus: a PCIe link has one slot, so
/// the 9p devices are the functions of one multifunction device there.
const IMX8MP_PCI_BUS: &str = "dw-pcie";
const IMX8MP_PCI_FUNCTIONS: usize = 8;
const MEMORY: &str = "2G";

/// What the q35 guest needs of a kernel tree (`--kernel PATH`): the
/// console, the initramfs, virtio-pci and the 9p root (9p may be modules:
/// the initramfs loads them), the init's tmpfs, devtmpfs, devpts, proc and
/// sysfs mounts, modules for the driver under test.
const Q35_NEEDS: &[Need<'static>] = &[
    Need::BuiltIn("SERIAL_8250_CONSOLE"),
    Need::BuiltIn("BLK_DEV_INITRD"),
    Need::BuiltIn("BINFMT_ELF"),
    Need::BuiltIn("BINFMT_SCRIPT"),
    Need::BuiltIn("PCI"),
    Need::BuiltIn("VIRTIO_PCI"),
    Need::Enabled("NET_9P"),
    Need::Enabled("NET_9P_VIRTIO"),
    Need::Enabled("9P_FS"),
    Need::BuiltIn("DEVTMPFS"),
    Need::BuiltIn("TMPFS"),
    Need::BuiltIn("UNIX98_PTYS"),
    Need::BuiltIn("PROC_FS"),
    Need::BuiltIn("SYSFS"),
    Need::BuiltIn("MODULES"),
];

/// The imx8mp-evk guest's: as q35's, with the EVK's UART as the console,
/// its PCIe host built in and the PCIe PHY, reset and regulator drivers the
/// initramfs loads ([`imx8mp::BOOT_MODULES`]), and CMA for the DW100's frames.
const IMX8MP_NEEDS: &[Need<'static>] = &[
    Need::BuiltIn("SERIAL_IMX_CONSOLE"),
    Need::BuiltIn("BLK_DEV_INITRD"),
    Need::BuiltIn("BINFMT_ELF"),
    Need::BuiltIn("BINFMT_SCRIPT"),
    Need::BuiltIn("PCI"),
    Need::BuiltIn("PCI_IMX6_HOST"),
    Need::Enabled("PHY_FSL_IMX8M_PCIE"),
    Need::Enabled("RESET_IMX7"),
    Need::Enabled("REGULATOR_FIXED_VOLTAGE"),
    Need::BuiltIn("VIRTIO_PCI"),
    Need::Enabled("NET_9P"),
    Need::Enabled("NET_9P_VIRTIO"),
    Need::Enabled("9P_FS"),
    Need::BuiltIn("DMA_CMA"),
    Need::BuiltIn("DEVTMPFS"),
    Need::BuiltIn("TMPFS"),
    Need::BuiltIn("UNIX98_PTYS"),
    Need::BuiltIn("PROC_FS"),
    Need::BuiltIn("SYSFS"),
    Need::BuiltIn("MODULES"),
];

/// What a property of the DW100 model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropertyKind {
    /// A 32-bit unsigned number.
    Count,
    /// on or off.
    Switch,
}

/// The properties of QEMU's `imx8mp-dw100` model a run may set
/// (docs/protocol-dw100-model.md). Its `chardev` is the harness's.
const MODEL_PROPERTIES: &[(&str, PropertyKind)] = &[
    ("bus-timeout-us", PropertyKind::Count),
    ("job-timeout-ms", PropertyKind::Count),
    ("fault-no-irq", PropertyKind::Switch),
];

/// One property of the DW100 model, set with `-global imx8mp-dw100.NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelProperty {
    name: &'static str,
    /// Normalised: decimal for numbers, `on`/`off` for switches.
    value: String,
}

impl std::str::FromStr for ModelProperty {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        let (name, value) = text
            .trim()
            .split_once('=')
            .ok_or_else(|| Error::PropertySyntax(text.to_string()))?;
        let (name, kind) = MODEL_PROPERTIES
            .iter()
            .find(|(known, _)| *known == name.trim())
            .copied()
            .ok_or_else(|| Error::UnknownProperty(name.trim().to_string()))?;
        let value = value.trim();
        let normalised = match kind {
            PropertyKind::Count => value.parse::<u32>().ok().map(|n| n.to_string()),
            PropertyKind::Switch => match value {
                "on" | "true" | "yes" => Some("on".to_string()),
                "off" | "false" | "no" => Some("off".to_string()),
                _ => None,
            },
        };
        let value = normalised.ok_or_else(|| Error::PropertyValue {
            name,
            value: value.to_string(),
            expected: match kind {
                PropertyKind::Count => "a number from 0 to 4294967295",
                PropertyKind::Switch => "on or off",
            },
        })?;
        Ok(Self { name, value })
    }
}

impl std::fmt::Display for ModelProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// Parses `NAME=VALUE` items separated by commas or whitespace, as
/// `--dw100-model` and the e2e header `dw100-model:` take them.
pub fn parse_model_properties(text: &str) -> Result<Vec<ModelProperty>, Error> {
    let properties = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::parse::<ModelProperty>)
        .collect::<Result<Vec<_>, _>>()?;
    check_model_properties(&properties)?;
    Ok(properties)
}

/// Refuses a property given twice: which one QEMU keeps is not obvious.
pub fn check_model_properties(properties: &[ModelProperty]) -> Result<(), Error> {
    for (index, property) in properties.iter().enumerate() {
        if properties[..index].iter().any(|p| p.name == property.name) {
            return Err(Error::DuplicateProperty(property.name));
        }
    }
    Ok(())
}

/// The guest's root filesystem.
#[derive(Debug, Clone)]
pub enum Root {
    /// The host's `/`, read-only: every host path is there.
    Host,
    /// A prepared root directory: only the paths shared explicitly are there.
    Image(PathBuf),
}

/// What one machine boots: everything prepared before QEMU starts.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: Kernel,
    pub dtb: Option<PathBuf>,
    pub root: Root,
    /// The initramfs's static busybox, built for the guest's architecture.
    pub busybox: PathBuf,
}

impl Machine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Q35 => "q35",
            Self::Imx8mpEvk => "imx8mp-evk",
        }
    }

    /// The architecture of the machine's guests.
    pub fn arch(self) -> Arch {
        match self {
            Self::Q35 => Arch::X86_64,
            Self::Imx8mpEvk => Arch::Arm64,
        }
    }

    /// What the machine's guest needs of a kernel tree (`--kernel PATH`).
    pub fn kernel_needs(self) -> &'static [Need<'static>] {
        match self {
            Self::Q35 => Q35_NEEDS,
            Self::Imx8mpEvk => IMX8MP_NEEDS,
        }
    }

    /// Builds or fetches the kernel, device tree and root for `flavor`.
    pub fn prepare(self, flavor: Flavor) -> Result<Guest, Error> {
        match self {
            Self::Q35 => Ok(Guest {
                kernel: kernel::prepare(flavor)?,
                dtb: None,
                root: Root::Host,
                busybox: deps::unpacked(BUSYBOX_PACKAGE)?.root.join("bin/busybox"),
            }),
            Self::Imx8mpEvk => {
                let kernel = imx8mp::kernel(flavor)?;
                let dtb = imx8mp::dtb(&kernel)?;
                let root = arm64_root::prepare()?;
                Ok(Guest {
                    kernel,
                    dtb: Some(dtb),
                    root: Root::Image(root.dir),
                    busybox: root.busybox,
                })
            }
        }
    }

    /// The QEMU binary for `choice`.
    pub fn qemu(self, choice: &qemu::Choice) -> Result<PathBuf, Error> {
        match (self, choice) {
            (Self::Q35, choice) => Ok(qemu::resolve(choice)?),
            (Self::Imx8mpEvk, qemu::Choice::Stock) => Err(Error::StockQemu),
            (Self::Imx8mpEvk, qemu::Choice::Patched) => {
                Ok(qemu::build_target(true, qemu::Target::Aarch64)?)
            }
            (Self::Imx8mpEvk, qemu::Choice::Path(path)) => Ok(qemu::check_user_binary(path)?),
        }
    }

    /// The QEMU the machine gets when none is named.
    pub fn default_qemu(self) -> qemu::Choice {
        match self {
            Self::Q35 => qemu::Choice::Stock,
            Self::Imx8mpEvk => qemu::Choice::Patched,
        }
    }

    /// Whether KVM can run this machine's guests on this (x86) host.
    pub fn kvm_capable(self) -> bool {
        self == Self::Q35
    }

    pub fn root_modules(self) -> &'static [&'static str] {
        match self {
            Self::Q35 => Q35_ROOT_MODULES,
            Self::Imx8mpEvk => imx8mp::BOOT_MODULES,
        }
    }

    pub fn kernel_command_line(self, iommu: Iommu) -> String {
        let mut words = vec![match self {
            Self::Q35 => "console=ttyS0",
            // The EVK's debug console is its second UART.
            Self::Imx8mpEvk => "console=ttymxc1",
        }];
        words.extend([
            "rdinit=/init",
            "panic=-1",
            "printk.devkmsg=on",
            "mitigations=off",
            "sysctl.kernel.hung_task_timeout_secs=20",
        ]);
        if self == Self::Imx8mpEvk {
            // vb2-dma-contig allocates the DW100's frames, up to 4096x3072,
            // from CMA; Debian's arm64 config reserves only 64 MiB.
            words.push("cma=256M");
        }
        words.extend(iommu.kernel_words());
        words.join(" ")
    }

    /// The machine, CPUs, memory, kernel and console options. `kvm`: run
    /// under KVM (q35 only) rather than TCG.
    pub fn qemu_args(
        self,
        guest: &Guest,
        kvm: bool,
        iommu: Iommu,
        initrd: &Path,
        console: &Path,
    ) -> Result<Vec<String>, Error> {
        if iommu != Iommu::None && self != Self::Q35 {
            return Err(Error::IommuOnMachine(self));
        }
        let mut args: Vec<String> = Vec::new();
        let kernel = guest.kernel.image.to_string_lossy().into_owned();
        let initrd = initrd.to_string_lossy().into_owned();
        let console = format!("file,id=console,path={}", console.display());
        match self {
            Self::Q35 => {
                let (accel, cpu) = if kvm { ("kvm", "host") } else { ("tcg", "max") };
                args.extend([
                    // QEMU run from its build tree does not search its
                    // configured firmware path; Debian's firmware packages
                    // install here.
                    "-L".into(),
                    "/usr/share/seabios".into(),
                    "-L".into(),
                    "/usr/share/qemu".into(),
                    "-L".into(),
                    "/usr/lib/ipxe/qemu".into(),
                    "-machine".into(),
                    "q35".into(),
                    "-accel".into(),
                    accel.into(),
                    "-cpu".into(),
                    cpu.into(),
                    "-smp".into(),
                    "2".into(),
                    "-m".into(),
                    MEMORY.into(),
                    // vhost-user backends map the guest's RAM.
                    "-object".into(),
                    format!("memory-backend-memfd,id=mem,size={MEMORY},share=on"),
                    "-numa".into(),
                    "node,memdev=mem".into(),
                    "-kernel".into(),
                    kernel,
                    "-initrd".into(),
                    initrd,
                    "-append".into(),
                    self.kernel_command_line(iommu),
                    "-chardev".into(),
                    console,
                    "-serial".into(),
                    "chardev:console".into(),
                ]);
                if iommu != Iommu::None {
                    // Created before the PCI devices it translates for.
                    args.extend(["-device".into(), "intel-iommu".into()]);
                }
                args.extend(["-device".into(), "virtio-rng-pci".into()]);
            }
            Self::Imx8mpEvk => {
                // The DW100 model does its DMA inside QEMU: no shared RAM.
                args.extend([
                    "-machine".into(),
                    "imx8mp-evk".into(),
                    "-accel".into(),
                    "tcg".into(),
                    "-smp".into(),
                    "2".into(),
                    "-m".into(),
                    MEMORY.into(),
                    "-kernel".into(),
                    kernel,
                    "-initrd".into(),
                    initrd,
                    "-append".into(),
                    self.kernel_command_line(iommu),
                    "-chardev".into(),
                    console,
                    "-serial".into(),
                    "null".into(),
                    "-serial".into(),
                    "chardev:console".into(),
                ]);
                if let Some(dtb) = &guest.dtb {
                    args.extend(["-dtb".into(), dtb.to_string_lossy().into_owned()]);
                }
            }
        }
        Ok(args)
    }

    /// The QEMU options that set the DW100 model's `properties`; refused on
    /// a machine without the model.
    pub fn model_args(self, properties: &[ModelProperty]) -> Result<Vec<String>, Error> {
        if properties.is_empty() {
            return Ok(Vec::new());
        }
        if self != Self::Imx8mpEvk {
            return Err(Error::PropertiesOnMachine(self));
        }
        check_model_properties(properties)?;
        Ok(properties
            .iter()
            .flat_map(|p| ["-global".to_string(), format!("imx8mp-dw100.{p}")])
            .collect())
    }

    /// Fails when the machine cannot carry `count` 9p shares.
    pub fn check_share_count(self, count: usize) -> Result<(), Error> {
        match self {
            Self::Imx8mpEvk if count > IMX8MP_PCI_FUNCTIONS => Err(Error::TooManyShares {
                max: IMX8MP_PCI_FUNCTIONS,
                asked: count,
            }),
            _ => Ok(()),
        }
    }

    /// The `-device` value of the `index`th 9p share (the caller checked
    /// the count with [`Self::check_share_count`]).
    pub fn fs_device(self, id: &str, index: usize) -> String {
        let device = format!("virtio-9p-pci,fsdev={id},mount_tag={id}");
        match self {
            Self::Q35 => device,
            Self::Imx8mpEvk => format!(
                "{device},bus={IMX8MP_PCI_BUS},addr=0.{index}{}",
                if index == 0 { ",multifunction=on" } else { "" }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for machine in [Machine::Q35, Machine::Imx8mpEvk] {
            assert_eq!(machine.name().parse::<Machine>().ok(), Some(machine));
        }
        assert!("virt".parse::<Machine>().is_err());
    }

    #[test]
    fn imx8mp_shares_are_functions_of_one_slot() {
        let machine = Machine::Imx8mpEvk;
        assert_eq!(
            machine.fs_device("hostroot", 0),
            "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,bus=dw-pcie,addr=0.0,multifunction=on"
        );
        assert!(machine.fs_device("share0", 7).ends_with("addr=0.7"));
        assert!(machine.check_share_count(8).is_ok());
        assert!(machine.check_share_count(9).is_err());
        assert!(Machine::Q35.check_share_count(20).is_ok());
    }

    #[test]
    fn model_properties_parse_and_normalise() {
        let parsed =
            parse_model_properties("fault-no-irq=true, bus-timeout-us=0200 job-timeout-ms=5")
                .expect("valid properties");
        let text: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["fault-no-irq=on", "bus-timeout-us=200", "job-timeout-ms=5"]
        );
        assert_eq!(
            Machine::Imx8mpEvk
                .model_args(&parsed[..2])
                .expect("imx8mp-evk has the model"),
            [
                "-global",
                "imx8mp-dw100.fault-no-irq=on",
                "-global",
                "imx8mp-dw100.bus-timeout-us=200"
            ]
        );
        assert!(parse_model_properties("").expect("none").is_empty());
    }

    #[test]
    fn bad_model_properties_are_refused() {
        for text in [
            "bus-timeout-us",
            "bus-timeout-us=-1",
            "bus-timeout-us=4294967296",
            "fault-no-irq=maybe",
            "chardev=x",
            "bus_timeout_us=5",
            "bus-timeout-us=1,bus-timeout-us=2",
        ] {
            assert!(parse_model_properties(text).is_err(), "{text}");
        }
        let one = parse_model_properties("fault-no-irq=on").expect("valid");
        assert!(Machine::Q35.model_args(&one).is_err());
        assert!(Machine::Q35
            .model_args(&[])
            .expect("nothing to set")
            .is_empty());
    }

    #[test]
    fn consoles_differ() {
        assert!(Machine::Q35
            .kernel_command_line(Iommu::None)
            .starts_with("console=ttyS0 "));
        assert!(Machine::Imx8mpEvk
            .kernel_command_line(Iommu::None)
            .starts_with("console=ttymxc1 "));
    }

    #[test]
    fn iommu_settings_reach_the_guest() {
        let line = Machine::Q35.kernel_command_line(Iommu::Passthrough);
        assert!(
            line.ends_with(" intel_iommu=on iommu.passthrough=1"),
            "{line}"
        );
        let line = Machine::Q35.kernel_command_line(Iommu::Translated);
        assert!(
            line.ends_with(" intel_iommu=on iommu.passthrough=0"),
            "{line}"
        );
        assert!(!Machine::Q35
            .kernel_command_line(Iommu::None)
            .contains("iommu"));
        for text in ["none", "translated", "passthrough"] {
            assert!(text.parse::<Iommu>().is_ok(), "{text}");
        }
        assert!("on".parse::<Iommu>().is_err());
    }
}
