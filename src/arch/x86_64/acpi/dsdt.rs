//! The DSDT's objects, built from `acpi_tables`' `aml` types, plus the one
//! resource descriptor the crate lacks (`IRQNoFlags`).

use acpi_tables::aml::{self, Path};
use acpi_tables::{Aml, AmlSink};

use super::to_bytes;
use crate::arch::x86_64::layout::{COM1_GSI, COM1_LEN, COM1_PORT};

/// Small IRQ descriptor without the optional flags byte (ACPI 6.4
/// §6.4.2.1, ASL `IRQNoFlags () { irq }`): edge-triggered, active high,
/// exclusive. The crate only has the extended `Interrupt` descriptor.
struct IrqNoFlags {
    /// ISA IRQ 0..=15.
    irq: u8,
}

/// Tag of a small IRQ descriptor with a 2-byte body (no flags byte).
const RES_IRQ_NO_FLAGS: u8 = 0x22;

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(RES_IRQ_NO_FLAGS);
        // An IRQ above 15 has no bit in the 16-bit mask (never built: the
        // one user is COM1, checked at compile time).
        sink.word(1u16.checked_shl(u32::from(self.irq)).unwrap_or(0));
    }
}

/// `Name (_Sx, Package (4) { typ, typ, 0, 0 })`: SLP_TYPa, SLP_TYPb,
/// reserved. `name` is a four-character AML name.
pub(super) fn aml_sleep_state(name: &str, slp_typ: u8) -> Vec<u8> {
    let package = aml::Package::new(vec![&slp_typ, &slp_typ, &aml::ZERO, &aml::ZERO]);
    to_bytes(&aml::Name::new(Path::new(name), &package))
}

/// `Device (COM1)`: the 16550A UART at [`COM1_PORT`], IRQ [`COM1_GSI`].
pub(super) fn aml_com1() -> Vec<u8> {
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &aml::ONE);
    let io_len = u8::try_from(COM1_LEN).unwrap_or(u8::MAX);
    // IO (Decode16, min, max, alignment 1, length)
    let io = aml::IO::new(COM1_PORT, COM1_PORT, 1, io_len);
    const _: () = assert!(COM1_GSI < 16, "IRQNoFlags takes an ISA IRQ");
    let irq = IrqNoFlags { irq: COM1_GSI as u8 };
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io, &irq]));
    to_bytes(&aml::Device::new("COM1".into(), vec![&hid, &uid, &crs]))
}

/// `Device (FWCF)`, as QEMU writes it: `_HID "QEMU0002"`, `_STA 0x0B`,
/// `_CRS { IO (Decode16, port, port, 1, len) }`.
pub(super) fn aml_fw_cfg(port: u16, len: u8) -> Vec<u8> {
    let hid = aml::Name::new("_HID".into(), &"QEMU0002");
    let sta = aml::Name::new("_STA".into(), &0x0bu8);
    let io = aml::IO::new(port, port, 1, len);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io]));
    to_bytes(&aml::Device::new("FWCF".into(), vec![&hid, &sta, &crs]))
}
