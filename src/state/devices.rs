//! Every device's saved state, one variant per kind of device. A device
//! takes part by implementing [`crate::bus::BusDevice::save_state`] and
//! [`crate::bus::BusDevice::load_state`] with its variant here; the bus saves
//! and loads every device it holds (`Bus::save_states`, `Bus::load_states`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The 8250 UART's registers and receive FIFO (vm-superio `SerialState`).
/// Transmitted bytes are flushed to the output before the state is taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialRegs {
    /// DLL.
    pub baud_divisor_low: u8,
    /// DLM.
    pub baud_divisor_high: u8,
    /// IER.
    pub interrupt_enable: u8,
    /// IIR (which interrupt is pending).
    pub interrupt_identification: u8,
    /// LCR.
    pub line_control: u8,
    /// LSR.
    pub line_status: u8,
    /// MCR.
    pub modem_control: u8,
    /// MSR.
    pub modem_status: u8,
    /// SCR.
    pub scratch: u8,
    /// Receive FIFO.
    pub in_buffer: Vec<u8>,
}

impl From<vm_superio::serial::SerialState> for SerialRegs {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        SerialRegs {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialRegs> for vm_superio::serial::SerialState {
    fn from(s: &SerialRegs) -> Self {
        vm_superio::serial::SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// The CMOS RAM and RTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmosState {
    /// Selected register.
    pub index: u8,
    /// NMI-disable bit of the last index write.
    pub nmi_disabled: bool,
    /// The 128 bytes of CMOS RAM.
    pub ram: Vec<u8>,
    /// Guest time minus the host clock, nanoseconds.
    pub offset_ns: i64,
    /// RTC register C flags (PF, AF, UF).
    pub rtc_flags: u8,
    /// Guest time (ns) up to which RTC events are accounted.
    pub rtc_settled_ns: i64,
    /// IRQ 8 is high.
    pub rtc_line_high: bool,
}

/// berth's IOAPIC (split irqchip mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoapicState {
    /// ID.
    pub id: u8,
    /// IOREGSEL.
    pub ioregsel: u8,
    /// Redirection table (24 entries).
    pub table: Vec<u64>,
    /// Input pin levels (bit n = pin n).
    pub inputs: u32,
    /// EOI re-send streak per pin (the storm guard).
    pub refire_streak: Vec<u32>,
}

/// A recorder: its count and the running sha256 (the kept records are not
/// part of the state: a restored recorder keeps the writes after the restore).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderState {
    /// Writes so far.
    pub count: u64,
    /// The sha256 state over every write so far (sha2's serialised state).
    pub hasher: Vec<u8>,
}

/// A device's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeviceState {
    /// COM1.
    Serial(SerialRegs),
    /// The i8042 (vm-superio's keeps no state besides the reset line).
    I8042 {
        /// Reset requests so far.
        resets: u64,
    },
    /// CMOS/RTC.
    Cmos(CmosState),
    /// ACPI PM1a event block.
    AcpiPmEvt {
        /// PM1_STS.
        status: u16,
        /// PM1_EN.
        enable: u16,
    },
    /// ACPI PM1a control block.
    AcpiPmCnt {
        /// PM1_CNT.
        value: u16,
    },
    /// Split-mode IOAPIC.
    Ioapic(IoapicState),
    /// pc-testdev irq lines: each line's level.
    IrqLines {
        /// Levels, by line.
        levels: Vec<u8>,
    },
    /// Recorder.
    Recorder(RecorderState),
    /// Boot timer.
    BootTimer {
        /// Wall and CPU time of the first signal (of the process that saw it).
        first: Option<(Duration, Duration)>,
        /// Signals.
        signals: u64,
        /// Other writes.
        other_writes: u64,
    },
    /// Doorbell.
    Doorbell {
        /// Writes that did not ring.
        unmatched: u64,
    },
    /// fw_cfg: the selected item, the read offset, the DMA address half
    /// written (the items themselves come from the plan).
    FwCfg {
        /// Selected key.
        selected: Option<u16>,
        /// Read offset in it.
        offset: u64,
        /// DMA address register.
        dma_addr: u64,
    },
    /// ACPI PM timer: how far it had counted (it goes on from there).
    PmTimer {
        /// Nanoseconds counted.
        elapsed_ns: u64,
    },
    /// pc-testdev data register (each window of it saves the same value).
    TestdevData {
        /// The 32-bit register.
        value: u32,
    },
    /// pc-testdev flush page.
    TestdevFlush {
        /// Flushes so far.
        flushes: u64,
    },
    /// pc-testdev iomem window.
    TestdevIomem {
        /// Its bytes, hex (empty: all zero).
        bytes: String,
    },
    /// PCI configuration space: the address register and each function's
    /// 256 bytes (hex), by devfn.
    Pci {
        /// CONFIG_ADDRESS.
        address: u32,
        /// (devfn, configuration space), by devfn. (Not a map: inside a
        /// tagged enum, serde would read integer keys back as strings.)
        functions: Vec<(u8, String)>,
    },
    /// pci-testdev: the selected test and the test headers (hex).
    PciTestdev {
        /// Selected test.
        current: Option<u64>,
        /// Headers.
        headers: Vec<String>,
    },
}

/// Bytes as lowercase hex.
pub fn to_hex(b: &[u8]) -> String {
    crate::plan::dump::hex(b)
}

/// Hex back to bytes.
pub fn from_hex(s: &str) -> Result<Vec<u8>, super::StateError> {
    super::hexpod::decode_hex(s).map_err(|_| super::StateError::Mismatch("bad hex in a device state".into()))
}

impl DeviceState {
    /// The variant's name, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceState::Serial(_) => "serial",
            DeviceState::I8042 { .. } => "i8042",
            DeviceState::Cmos(_) => "cmos",
            DeviceState::AcpiPmEvt { .. } => "acpi-pm-evt",
            DeviceState::AcpiPmCnt { .. } => "acpi-pm-cnt",
            DeviceState::Ioapic(_) => "ioapic",
            DeviceState::IrqLines { .. } => "irq-lines",
            DeviceState::Recorder(_) => "recorder",
            DeviceState::BootTimer { .. } => "boot-timer",
            DeviceState::Doorbell { .. } => "doorbell",
            DeviceState::FwCfg { .. } => "fw-cfg",
            DeviceState::PmTimer { .. } => "pm-timer",
            DeviceState::TestdevData { .. } => "testdev-data",
            DeviceState::TestdevFlush { .. } => "testdev-flush",
            DeviceState::TestdevIomem { .. } => "testdev-iomem",
            DeviceState::Pci { .. } => "pci",
            DeviceState::PciTestdev { .. } => "pci-testdev",
        }
    }

    /// The error for a state of the wrong kind.
    pub fn wrong(&self, want: &str) -> super::StateError {
        super::StateError::Mismatch(format!("expected {want} state, found {}", self.kind()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&b), "0001abff");
        assert_eq!(from_hex("0001abff").unwrap(), b);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
        assert!(from_hex("").unwrap().is_empty());
    }

    #[test]
    fn every_kind_round_trips_through_the_state_bytes() {
        let all = vec![
            DeviceState::Serial(SerialRegs {
                in_buffer: vec![1, 2],
                ..Default::default()
            }),
            DeviceState::I8042 { resets: 1 },
            DeviceState::Cmos(CmosState {
                index: 1,
                nmi_disabled: true,
                ram: vec![3; 128],
                offset_ns: -5,
                rtc_flags: 0x40,
                rtc_settled_ns: 1 << 60,
                rtc_line_high: true,
            }),
            DeviceState::AcpiPmEvt { status: 1, enable: 2 },
            DeviceState::AcpiPmCnt { value: 3 },
            DeviceState::Ioapic(IoapicState {
                id: 1,
                ioregsel: 2,
                table: vec![u64::MAX; 24],
                inputs: 5,
                refire_streak: vec![0; 24],
            }),
            DeviceState::IrqLines { levels: vec![0, 1] },
            DeviceState::Recorder(RecorderState {
                count: 9,
                hasher: vec![7; 40],
            }),
            DeviceState::BootTimer {
                first: Some((Duration::from_millis(3), Duration::from_millis(1))),
                signals: 1,
                other_writes: 0,
            },
            DeviceState::Doorbell { unmatched: 4 },
            DeviceState::FwCfg {
                selected: Some(0x19),
                offset: 3,
                dma_addr: 1 << 40,
            },
            DeviceState::PmTimer { elapsed_ns: 77 },
            DeviceState::TestdevData { value: 0xdead },
            DeviceState::TestdevFlush { flushes: 2 },
            DeviceState::TestdevIomem { bytes: "00ff".into() },
            DeviceState::Pci {
                address: 0x8000_0800,
                functions: vec![(0, "00".into()), (8, "ff".into())],
            },
            DeviceState::PciTestdev {
                current: Some(2),
                headers: vec!["0001".into()],
            },
        ];
        let state = super::super::VmState {
            version: super::super::STATE_VERSION,
            vcpus: Vec::new(),
            chips: Default::default(),
            devices: all
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("d{i:02}"), d.clone()))
                .collect(),
        };
        let back = super::super::VmState::from_bytes(&state.to_bytes()).unwrap();
        assert_eq!(back.devices.into_values().collect::<Vec<_>>(), all);
    }
}
