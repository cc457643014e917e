//! The machine file, schema v1, as serde data only. Validation lives in
//! `super::validate`; nothing here looks at the host.

use super::size::{Millis, Size};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The whole machine file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineFile {
    /// `[machine]`: name and vCPU count.
    #[serde(default)]
    pub machine: MachineSection,
    /// `[[memory]]`: RAM regions, each becomes one memslot.
    #[serde(default)]
    pub memory: Vec<MemoryRegion>,
    /// `[irqchip]`: interrupt controller model.
    #[serde(default)]
    pub irqchip: IrqchipSection,
    /// `[[irq_route]]`: extra irqchip pin routes.
    #[serde(default)]
    pub irq_route: Vec<IrqRouteConfig>,
    /// `[[msi_route]]`: MSI routes.
    #[serde(default)]
    pub msi_route: Vec<MsiRouteConfig>,
    /// `[[coalesced_mmio]]`: MMIO zones whose writes KVM queues in a ring.
    #[serde(default)]
    pub coalesced_mmio: Vec<CoalescedMmioConfig>,
    /// `[[coalesced_pio]]`: port zones whose writes KVM queues in a ring.
    #[serde(default)]
    pub coalesced_pio: Vec<CoalescedPioConfig>,
    /// `[kernel]`: what to boot.
    pub kernel: KernelSection,
    /// `[serial]`: where COM1 output goes.
    #[serde(default)]
    pub serial: SerialSection,
    /// `[[device]]`: extra devices.
    #[serde(default)]
    pub device: Vec<DeviceConfig>,
}

/// `[machine]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineSection {
    /// Free-form machine name, shown in the plan.
    #[serde(default)]
    pub name: Option<String>,
    /// Number of vCPUs (1..=254).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Which firmware tables describe the machine to the guest.
    #[serde(default)]
    pub tables: Tables,
    /// What a guest reset does.
    #[serde(default)]
    pub on_reboot: OnReboot,
    /// End the VM (exit 6) when it runs longer than this.
    #[serde(default)]
    pub timeout: Option<Millis>,
    /// The control socket's path (relative to the file); `--control`
    /// overrides it. A run-time option: not part of the plan.
    #[serde(default)]
    pub control: Option<std::path::PathBuf>,
}

/// `[machine] tables`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Tables {
    /// ACPI (RSDP, XSDT, MADT, FADT, DSDT) only.
    Acpi,
    /// MP table only.
    Mptable,
    /// Both.
    #[default]
    Both,
}

impl Tables {
    /// Whether ACPI tables are written.
    pub fn acpi(self) -> bool {
        matches!(self, Tables::Acpi | Tables::Both)
    }

    /// Whether an MP table is written.
    pub fn mptable(self) -> bool {
        matches!(self, Tables::Mptable | Tables::Both)
    }
}

/// `[machine] on_reboot`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OnReboot {
    /// A reset ends berth with status 0.
    #[default]
    Exit,
    /// A reset rebuilds the machine from the same plan and boots it again.
    Restart,
}

fn default_vcpus() -> u32 {
    1
}

impl Default for MachineSection {
    fn default() -> Self {
        MachineSection {
            name: None,
            vcpus: default_vcpus(),
            tables: Tables::default(),
            on_reboot: OnReboot::default(),
            timeout: None,
            control: None,
        }
    }
}

/// One `[[memory]]` region.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryRegion {
    /// Optional name, shown in the plan.
    #[serde(default)]
    pub name: Option<String>,
    /// Guest physical start address.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: Size,
    /// Map read-only (KVM_MEM_READONLY): guest writes exit as MMIO.
    #[serde(default)]
    pub readonly: bool,
    /// Back with a shared mapping (MAP_SHARED) instead of a private one.
    #[serde(default)]
    pub shared: bool,
    /// Back with huge pages (MAP_HUGETLB).
    #[serde(default)]
    pub hugepages: bool,
    /// Enable KVM dirty-page logging on this slot.
    #[serde(default)]
    pub dirty_log: bool,
    /// Back the region with this file (relative to the machine file).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl IrqchipSection {
    /// Whether the in-kernel PIT is created.
    pub fn pit(&self) -> bool {
        self.pit.unwrap_or(self.mode == IrqchipMode::Kernel)
    }
}

/// `[irqchip]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IrqchipSection {
    /// Which interrupt controllers KVM provides.
    #[serde(default)]
    pub mode: IrqchipMode,
    /// Create the in-kernel i8254 PIT (default: yes in kernel mode; split
    /// mode has none).
    #[serde(default)]
    pub pit: Option<bool>,
}

/// `[irqchip] mode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IrqchipMode {
    /// PIC + IOAPIC + LAPIC inside KVM (KVM_CREATE_IRQCHIP).
    #[default]
    Kernel,
    /// LAPICs inside KVM, the IOAPIC in berth (KVM_CAP_SPLIT_IRQCHIP); no PIC.
    Split,
}

/// One `[[irq_route]]`: GSI → irqchip pin.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IrqRouteConfig {
    /// The GSI.
    pub gsi: u32,
    /// Which interrupt controller.
    pub chip: IrqChipName,
    /// Its input pin.
    pub pin: u32,
}

/// Interrupt controllers a pin route can name.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum IrqChipName {
    /// The I/O APIC (24 pins).
    Ioapic,
    /// The master 8259 (8 pins).
    PicMaster,
    /// The slave 8259 (8 pins).
    PicSlave,
}

/// Trigger mode of an MSI.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Edge-triggered.
    #[default]
    Edge,
    /// Level-triggered.
    Level,
}

/// One `[[msi_route]]`: GSI → MSI, either by destination + vector or raw.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MsiRouteConfig {
    /// The GSI.
    pub gsi: u32,
    /// Destination local APIC ID (with `vector`).
    #[serde(default)]
    pub dest_apic_id: Option<u32>,
    /// Vector 0x10..=0xfe (with `dest_apic_id`).
    #[serde(default)]
    pub vector: Option<u32>,
    /// Raw MSI address (with `data`).
    #[serde(default)]
    pub address: Option<u64>,
    /// Raw MSI data (with `address`).
    #[serde(default)]
    pub data: Option<u32>,
    /// Edge (default) or level.
    #[serde(default)]
    pub trigger: Option<Trigger>,
}

/// One `[[coalesced_mmio]]` zone.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoalescedMmioConfig {
    /// Start address (4-byte aligned).
    pub guest_addr: u64,
    /// Length (multiple of 4).
    pub size: Size,
}

/// One `[[coalesced_pio]]` zone.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoalescedPioConfig {
    /// First port.
    pub port: u16,
    /// Number of ports.
    pub size: u32,
}

/// `[kernel]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KernelSection {
    /// Kernel image, relative to the machine file.
    pub path: PathBuf,
    /// Image format; `auto` detects it from the file.
    #[serde(default)]
    pub format: KernelFormat,
    /// Kernel command line, passed verbatim.
    #[serde(default)]
    pub cmdline: String,
    /// Initial ramdisk (Linux) or module (multiboot, PVH), relative to the machine file.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
}

/// `[kernel] format`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFormat {
    /// Detect from the image's magic numbers.
    #[default]
    Auto,
    /// ELF64 image entered at its 64-bit entry point (Linux 64-bit boot protocol).
    Elf,
    /// Linux bzImage (64-bit boot protocol with the image's setup header).
    Bzimage,
    /// ELF with a XEN_ELFNOTE_PHYS32_ENTRY note, entered in 32-bit mode (PVH).
    Pvh,
    /// Multiboot v1 (0x1BADB002 header), entered in 32-bit mode.
    Multiboot,
}

impl KernelFormat {
    /// The name used in the machine file and the plan.
    pub fn name(self) -> &'static str {
        match self {
            KernelFormat::Auto => "auto",
            KernelFormat::Elf => "elf",
            KernelFormat::Bzimage => "bzimage",
            KernelFormat::Pvh => "pvh",
            KernelFormat::Multiboot => "multiboot",
        }
    }
}

/// `[serial]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SerialSection {
    /// Where COM1 output goes.
    #[serde(default)]
    pub output: SerialOutputConfig,
}

/// `[serial] output`: `"stdout"`, `"null"` or `{ file = "path" }`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum SerialOutputConfig {
    /// A named sink.
    Named(SerialSink),
    /// A file (relative to the machine file), truncated at start.
    File {
        /// Path of the file.
        file: PathBuf,
    },
}

impl<'de> Deserialize<'de> for SerialOutputConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SerialOutputConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"stdout\", \"null\" or { file = \"path\" }")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "stdout" => Ok(SerialOutputConfig::Named(SerialSink::Stdout)),
                    "null" => Ok(SerialOutputConfig::Named(SerialSink::Null)),
                    other => Err(E::custom(format!(
                        "unknown serial output `{other}`: use \"stdout\", \"null\" or {{ file = \"path\" }}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut file = None;
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "file" if file.is_none() => file = Some(m.next_value::<PathBuf>()?),
                        "file" => return Err(A::Error::custom("duplicate field `file`")),
                        other => {
                            return Err(A::Error::custom(format!(
                                "unknown field `{other}`, expected `file`"
                            )))
                        }
                    }
                }
                file.map(|file| SerialOutputConfig::File { file })
                    .ok_or_else(|| A::Error::missing_field("file"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for SerialOutputConfig {
    fn default() -> Self {
        SerialOutputConfig::Named(SerialSink::Stdout)
    }
}

/// Named serial sinks.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SerialSink {
    /// berth's standard output.
    Stdout,
    /// Discard.
    Null,
}

/// One `[[device]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DeviceConfig {
    /// QEMU isa-debug-exit: a write of v ends the VM with status (v << 1) | 1.
    DebugExit {
        /// I/O port (default 0xf4).
        #[serde(default = "default_debug_exit_port")]
        port: u16,
        /// Port width in bytes: 1, 2 or 4 (default 4).
        #[serde(default = "default_debug_exit_size")]
        size: u8,
    },
    /// QEMU pc-testdev irq lines: a byte written to port + n sets GSI n to that level.
    IrqLines {
        /// First port (default 0x2000).
        #[serde(default = "default_irq_lines_port")]
        port: u16,
        /// Number of lines, i.e. GSIs 0..lines (default 24).
        #[serde(default = "default_irq_lines")]
        lines: u32,
        /// Kernel irqchip only: drive the lines that reach IOAPIC pins
        /// through resample irqfds (KVM_IRQFD_FLAG_RESAMPLE) instead of
        /// KVM_IRQ_LINE: an interrupt arrives shortly after the write rather
        /// than before the next instruction (default false).
        #[serde(default)]
        resample: bool,
    },
    /// Records every write (offset, size, value) in order; MMIO or PIO.
    Recorder {
        /// MMIO base (give this or `port`).
        #[serde(default)]
        guest_addr: Option<u64>,
        /// Port base (give this or `guest_addr`).
        #[serde(default)]
        port: Option<u16>,
        /// Window length.
        size: Size,
    },
    /// Drops writes, reads zeros; MMIO or PIO (e.g. port 0x80).
    Null {
        /// MMIO base (give this or `port`).
        #[serde(default)]
        guest_addr: Option<u64>,
        /// Port base (give this or `guest_addr`).
        #[serde(default)]
        port: Option<u16>,
        /// Window length.
        size: Size,
    },
    /// Firecracker's boot timer: a one-page MMIO window; the guest writes
    /// the byte 123 at offset 0 and berth prints the time since it started.
    BootTimer {
        /// MMIO base (default 0xd000_0000).
        #[serde(default = "default_boot_timer_addr")]
        guest_addr: u64,
    },
    /// An MMIO or port doorbell: a `size`-byte write of `value` (of any
    /// value when `value` is absent) is caught by an ioeventfd (no vCPU
    /// exit) and answered with an MSI to `dest_apic_id`/`vector` through an
    /// irqfd on a GSI the plan allocates.
    Doorbell {
        /// MMIO address (give this or `port`), aligned to `size`.
        #[serde(default)]
        guest_addr: Option<u64>,
        /// Port (give this or `guest_addr`), aligned to `size`.
        #[serde(default)]
        port: Option<u16>,
        /// Access width in bytes: 1, 2, 4 (default) or 8 (MMIO only).
        #[serde(default = "default_doorbell_size")]
        size: u8,
        /// The value that rings (ioeventfd datamatch); absent: any value.
        #[serde(default)]
        value: Option<u64>,
        /// Destination local APIC ID.
        dest_apic_id: u32,
        /// Vector 0x10..=0xfe.
        vector: u32,
    },
    /// QEMU fw_cfg, I/O interface: selector at `port` (16-bit), data at
    /// `port + 1` (8-bit), DMA address at `port + 4` (two big-endian 32-bit
    /// halves) unless `dma = false`.
    FwCfg {
        /// Selector port (default 0x510).
        #[serde(default = "default_fw_cfg_port")]
        port: u16,
        /// The DMA interface (default true, as QEMU).
        #[serde(default = "default_true")]
        dma: bool,
    },
    /// QEMU pc-testdev at QEMU's fixed places: irq lines at 0x2000 (24),
    /// data register 0xe0 (and byte-wise at 0xe8), flush page 0xe4, and a
    /// 64 KiB memory window at 0xff00_0000.
    PcTestdev {},
    /// PCI host bridge (configuration mechanism #1 at 0xcf8/0xcfc) with an
    /// i440FX host bridge at 00:00.0.
    Pci {
        /// QEMU's pci-testdev at 00:01.0 (default false).
        #[serde(default)]
        testdev: bool,
    },
}

fn default_true() -> bool {
    true
}

fn default_fw_cfg_port() -> u16 {
    crate::devices::fw_cfg::DEFAULT_PORT
}

fn default_boot_timer_addr() -> u64 {
    crate::devices::boot_timer::DEFAULT_ADDR
}

fn default_doorbell_size() -> u8 {
    4
}

fn default_irq_lines_port() -> u16 {
    0x2000
}

fn default_irq_lines() -> u32 {
    24
}

fn default_debug_exit_port() -> u16 {
    0xf4
}

fn default_debug_exit_size() -> u8 {
    4
}

/// Address space of a device window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WindowSpace {
    /// I/O ports.
    Pio,
    /// MMIO.
    Mmio,
}

impl DeviceConfig {
    /// The device's kind as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceConfig::DebugExit { .. } => "debug-exit",
            DeviceConfig::IrqLines { .. } => "irq-lines",
            DeviceConfig::Recorder { .. } => "recorder",
            DeviceConfig::Null { .. } => "null",
            DeviceConfig::BootTimer { .. } => "boot-timer",
            DeviceConfig::Doorbell { .. } => "doorbell",
            DeviceConfig::FwCfg { .. } => "fw-cfg",
            DeviceConfig::PcTestdev {} => "pc-testdev",
            DeviceConfig::Pci { .. } => "pci",
        }
    }

    /// Every bus window of the device: (part, space, base, length, field).
    /// `part` is empty for single-window devices; the field is the one that
    /// places the window ("kind" when the place is fixed).
    pub fn windows(&self) -> Vec<(&'static str, WindowSpace, u64, u64, &'static str)> {
        use crate::devices::{fw_cfg, pc_testdev, pci};
        let pio = |part, base: u16, len: u64, field| (part, WindowSpace::Pio, u64::from(base), len, field);
        match self {
            DeviceConfig::FwCfg { port, dma } => {
                let mut w = vec![pio("", *port, fw_cfg::CTL_LEN, "port")];
                if *dma {
                    let at = u64::from(*port) + fw_cfg::DMA_OFFSET;
                    w.push(("dma", WindowSpace::Pio, at, fw_cfg::DMA_LEN, "port"));
                }
                w
            }
            DeviceConfig::PcTestdev {} => pc_testdev::WINDOWS
                .iter()
                .map(|w| {
                    let space = if w.mmio {
                        WindowSpace::Mmio
                    } else {
                        WindowSpace::Pio
                    };
                    (w.part, space, w.base, w.len, "kind")
                })
                .collect(),
            DeviceConfig::Pci { testdev } => {
                let mut w = vec![
                    pio("address", pci::ADDRESS_PORT, 4, "kind"),
                    pio("data", pci::DATA_PORT, 4, "kind"),
                ];
                if *testdev {
                    use crate::devices::pci_testdev as t;
                    w.push((
                        "testdev-mmio",
                        WindowSpace::Mmio,
                        pci::TESTDEV_MMIO_ADDR,
                        t::MMIO_LEN,
                        "testdev",
                    ));
                    w.push(pio("testdev-pio", pci::TESTDEV_PIO_PORT, t::PIO_LEN, "testdev"));
                }
                w
            }
            _ => self
                .window()
                .map(|(s, b, l, f)| ("", s, b, l, f))
                .into_iter()
                .collect(),
        }
    }

    /// The bus window (space, base, length) and the field that places it.
    /// `None` when the file gives no usable placement (validation reports it).
    pub fn window(&self) -> Option<(WindowSpace, u64, u64, &'static str)> {
        match self {
            DeviceConfig::DebugExit { port, size } => {
                Some((WindowSpace::Pio, (*port).into(), (*size).into(), "port"))
            }
            DeviceConfig::IrqLines { port, lines, .. } => {
                Some((WindowSpace::Pio, (*port).into(), (*lines).into(), "port"))
            }
            DeviceConfig::Recorder {
                guest_addr,
                port,
                size,
            }
            | DeviceConfig::Null {
                guest_addr,
                port,
                size,
            } => match (guest_addr, port) {
                (Some(a), None) => Some((WindowSpace::Mmio, *a, size.bytes(), "guest_addr")),
                (None, Some(p)) => Some((WindowSpace::Pio, (*p).into(), size.bytes(), "port")),
                _ => None,
            },
            DeviceConfig::Doorbell {
                guest_addr,
                port,
                size,
                ..
            } => match (guest_addr, port) {
                (Some(a), None) => Some((WindowSpace::Mmio, *a, (*size).into(), "guest_addr")),
                (None, Some(p)) => Some((WindowSpace::Pio, (*p).into(), (*size).into(), "port")),
                _ => None,
            },
            DeviceConfig::BootTimer { guest_addr } => Some((
                WindowSpace::Mmio,
                *guest_addr,
                crate::devices::boot_timer::WINDOW,
                "guest_addr",
            )),
            DeviceConfig::FwCfg { .. } | DeviceConfig::PcTestdev {} | DeviceConfig::Pci { .. } => {
                self.windows().first().map(|&(_, s, b, l, f)| (s, b, l, f))
            }
        }
    }

    /// Whether KVM may queue writes to this device in a coalesced ring
    /// (it has no side effect the guest waits for).
    pub fn coalescable(&self) -> bool {
        matches!(self, DeviceConfig::Recorder { .. })
    }
}
