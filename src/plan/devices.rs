//! The plan's device windows: what each window holds ([`DeviceKind`]), and
//! how the platform's ports, COM1 and the machine file's devices become the
//! sorted list of [`DevicePlan`]s the bus is built from.

use super::{fw_cfg, E820Entry, Hex, Hex8, MemslotPlan, Space};
use crate::arch::x86_64::layout;
use crate::config::{Config, DeviceConfig, SerialOutputConfig, SerialSink, WindowSpace};
use serde::{Serialize, Serializer};

/// Device-specific plan data.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeviceKind {
    /// 8250 UART.
    #[serde(rename = "serial-8250")]
    Serial8250 {
        /// Interrupt line.
        gsi: u32,
        /// Where output goes: `stdout`, `null` or `file:<path as written>`.
        output: String,
    },
    /// i8042 keyboard controller (vm-superio), data or command port; 0xfe on
    /// the command port resets the machine.
    I8042 {},
    /// MC146818 CMOS/RTC (index + data); its update, alarm and periodic
    /// interrupts raise `gsi` (ISA IRQ 8).
    Cmos {
        /// Interrupt line.
        gsi: u32,
    },
    /// ACPI PM1a event block (status, enable).
    AcpiPmEvent {},
    /// ACPI PM1a control block: SLP_TYP 5 + SLP_EN powers off, SLP_TYP 1
    /// suspends to RAM (S3).
    AcpiPmControl {},
    /// ACPI PM timer: 24-bit, 3.579545 MHz.
    AcpiPmTimer {},
    /// The PC reset control register (FADT RESET_REG, value 0x06).
    ResetControl {},
    /// isa-debug-exit.
    DebugExit {
        /// Port width.
        width: u8,
    },
    /// pc-testdev irq lines: port base + n sets GSI n.
    IrqLines {
        /// Number of lines (GSIs 0..lines).
        lines: u32,
        /// Lines on IOAPIC pins through resample irqfds (shown when set).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        resample: bool,
    },
    /// Write recorder.
    Recorder {},
    /// Drops writes, reads zeros.
    Null {},
    /// Boot timer (the guest writes 123 when booted).
    BootTimer {},
    /// ioeventfd doorbell answered by an MSI through irqfd.
    Doorbell {
        /// Datamatch value; absent: any value rings (the width is the window's length).
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Hex>,
        /// GSI from the plan's allocator.
        gsi: u32,
        /// MSI destination.
        dest_apic_id: u32,
        /// MSI vector.
        vector: Hex8,
    },
    /// fw_cfg selector and data ports, with every item the guest can select.
    FwCfg {
        /// Whether the DMA interface exists.
        dma: bool,
        /// The items, by key.
        items: Vec<FwCfgItemPlan>,
    },
    /// fw_cfg DMA address register (the items are on the `fw-cfg` window).
    FwCfgDma {},
    /// pc-testdev data register (0xe0, and byte-wise at 0xe8).
    TestdevData {},
    /// pc-testdev flush page (0xe4).
    TestdevFlushPage {},
    /// pc-testdev 64 KiB memory window.
    TestdevIomem {},
    /// PCI configuration address register (0xcf8).
    PciAddress {
        /// Whether byte accesses at 0xcf9 are the reset register.
        reset: bool,
    },
    /// A BAR of pci-testdev (memory BAR 0, or I/O BAR 1 when `io`).
    PciTestdevBar {
        /// The I/O BAR.
        io: bool,
    },
    /// PCI configuration data window (0xcfc).
    PciData {
        /// The functions on bus 0, as "bus:dev.fn vendor:device".
        functions: Vec<String>,
    },
}

/// One fw_cfg item.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FwCfgItemPlan {
    /// Selector key.
    pub key: Hex8,
    /// Item or file name.
    pub name: String,
    /// Length in bytes.
    pub size: u64,
    /// Contents, as hex.
    #[serde(serialize_with = "hex_bytes")]
    pub data: Vec<u8>,
}

fn hex_bytes<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// One device window on the bus.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DevicePlan {
    /// Unique device name (used in `--stats`).
    pub name: String,
    /// Address space.
    pub space: Space,
    /// First address/port.
    pub base: Hex,
    /// Length in bytes/ports.
    pub len: Hex,
    /// Which device, with its settings.
    #[serde(flatten)]
    pub kind: DeviceKind,
}

/// The doorbells' names and MSI destinations, in machine-file order: the
/// routes [`super::irq::routes`] gives each a GSI for.
pub(super) fn doorbells(c: &Config) -> Vec<(String, u32, u32)> {
    let m = &c.machine;
    m.device
        .iter()
        .filter_map(|d| match d {
            DeviceConfig::Doorbell {
                dest_apic_id, vector, ..
            } => Some((device_name(d, d.window()?.1), *dest_apic_id, *vector)),
            _ => None,
        })
        .collect()
}

/// Every device window, sorted by space and base: the platform's ports
/// (i8042, CMOS, ACPI PM blocks, reset), COM1, and each window of the
/// machine file's devices; doorbells take `doorbell_gsis` in order.
pub(super) fn windows(
    c: &Config,
    memslots: &[MemslotPlan],
    e820: &[E820Entry],
    doorbell_gsis: Vec<u32>,
) -> Vec<DevicePlan> {
    let m = &c.machine;
    let vcpus = m.machine.vcpus;
    let pio = |name: &str, base: u16, len: u16, kind| DevicePlan {
        name: name.into(),
        space: Space::Pio,
        base: Hex(base.into()),
        len: Hex(len.into()),
        kind,
    };
    let has_pci = m.device.iter().any(|d| matches!(d, DeviceConfig::Pci { .. }));
    let mut platform = vec![
        pio("i8042-data", layout::I8042_DATA_PORT, 1, DeviceKind::I8042 {}),
        pio("i8042-command", layout::I8042_CMD_PORT, 1, DeviceKind::I8042 {}),
        pio(
            "cmos",
            layout::CMOS_PORT,
            2,
            DeviceKind::Cmos { gsi: layout::RTC_GSI },
        ),
    ];
    if m.machine.tables.acpi() {
        platform.push(pio(
            "acpi-pm-event",
            layout::ACPI_PM_PORT,
            4,
            DeviceKind::AcpiPmEvent {},
        ));
        platform.push(pio(
            "acpi-pm-control",
            layout::ACPI_PM_CNT_PORT,
            2,
            DeviceKind::AcpiPmControl {},
        ));
        platform.push(pio(
            "acpi-pm-timer",
            layout::ACPI_PM_TMR_PORT,
            4,
            DeviceKind::AcpiPmTimer {},
        ));
        // With a PCI host bridge, 0xcf9 is inside its address register.
        if !has_pci {
            platform.push(pio("reset", layout::RESET_PORT, 1, DeviceKind::ResetControl {}));
        }
    }
    let mut devices = vec![DevicePlan {
        name: "com1".into(),
        space: Space::Pio,
        base: Hex(layout::COM1_PORT.into()),
        len: Hex(layout::COM1_LEN.into()),
        kind: DeviceKind::Serial8250 {
            gsi: layout::COM1_GSI,
            output: match &m.serial.output {
                SerialOutputConfig::Named(SerialSink::Stdout) => "stdout".into(),
                SerialOutputConfig::Named(SerialSink::Null) => "null".into(),
                SerialOutputConfig::File { file } => format!("file:{}", file.display()),
            },
        },
    }];
    let mut doorbell_gsis = doorbell_gsis.into_iter();
    for d in &m.device {
        for (part, space, base, len, _) in d.windows() {
            let kind = match (d, part) {
                (DeviceConfig::FwCfg { dma, .. }, "") => DeviceKind::FwCfg {
                    dma: *dma,
                    items: fw_cfg::items(*dma, vcpus, memslots, e820, &m.kernel.cmdline),
                },
                (DeviceConfig::FwCfg { .. }, _) => DeviceKind::FwCfgDma {},
                (DeviceConfig::PcTestdev {}, "irq") => DeviceKind::IrqLines {
                    lines: crate::devices::pc_testdev::IRQ_LINES,
                    resample: false,
                },
                (DeviceConfig::PcTestdev {}, "flush") => DeviceKind::TestdevFlushPage {},
                (DeviceConfig::PcTestdev {}, "iomem") => DeviceKind::TestdevIomem {},
                (DeviceConfig::PcTestdev {}, _) => DeviceKind::TestdevData {},
                (DeviceConfig::Pci { .. }, "address") => DeviceKind::PciAddress {
                    reset: m.machine.tables.acpi(),
                },
                (DeviceConfig::Pci { .. }, "testdev-mmio") => DeviceKind::PciTestdevBar { io: false },
                (DeviceConfig::Pci { .. }, "testdev-pio") => DeviceKind::PciTestdevBar { io: true },
                (DeviceConfig::Pci { testdev }, _) => {
                    let mut functions = vec!["00:00.0 8086:1237 i440fx host bridge".to_string()];
                    if *testdev {
                        functions.push(format!(
                            "00:01.0 1b36:0005 pci-testdev bar0 mmio {:#x} bar1 pio {:#x}",
                            crate::devices::pci::TESTDEV_MMIO_ADDR,
                            crate::devices::pci::TESTDEV_PIO_PORT
                        ));
                    }
                    DeviceKind::PciData { functions }
                }
                _ => single_window_kind(d, &mut doorbell_gsis),
            };
            let name = if part.is_empty() {
                device_name(d, base)
            } else {
                format!("{}.{part}@{base:#x}", d.kind())
            };
            devices.push(DevicePlan {
                name,
                space: match space {
                    WindowSpace::Pio => Space::Pio,
                    WindowSpace::Mmio => Space::Mmio,
                },
                base: Hex(base),
                len: Hex(len),
                kind,
            });
        }
    }
    devices.extend(platform);
    devices.sort_by_key(|d| (d.space, d.base));
    devices
}

/// The plan data of a device with one window.
fn single_window_kind(d: &DeviceConfig, doorbell_gsis: &mut impl Iterator<Item = u32>) -> DeviceKind {
    match d {
        DeviceConfig::DebugExit { size, .. } => DeviceKind::DebugExit { width: *size },
        DeviceConfig::IrqLines { lines, resample, .. } => DeviceKind::IrqLines {
            lines: *lines,
            resample: *resample,
        },
        DeviceConfig::Recorder { .. } => DeviceKind::Recorder {},
        DeviceConfig::Null { .. } => DeviceKind::Null {},
        DeviceConfig::BootTimer { .. } => DeviceKind::BootTimer {},
        DeviceConfig::Doorbell {
            value,
            dest_apic_id,
            vector,
            ..
        } => DeviceKind::Doorbell {
            value: value.map(Hex),
            gsi: doorbell_gsis.next().unwrap_or(u32::MAX),
            dest_apic_id: *dest_apic_id,
            vector: Hex8(*vector),
        },
        // Multi-window kinds are planned by the caller.
        DeviceConfig::FwCfg { .. } | DeviceConfig::PcTestdev {} | DeviceConfig::Pci { .. } => {
            DeviceKind::Null {}
        }
    }
}

/// A device's unique name: kind@base.
fn device_name(d: &DeviceConfig, base: u64) -> String {
    format!("{}@{base:#x}", d.kind())
}
