//! ACPI 6.4 tables for berth's x86 microVM: how a guest finds its CPUs, its
//! I/O APIC, the SCI and the fixed power-management registers, and how it
//! powers off (`\_S5`) and resets (the FADT reset register).
//!
//! Everything is built from an [`AcpiSpec`] (values from berth's plan, never
//! from the host) as a plain byte vector with explicit little-endian
//! encoding, like the sibling [`mptable`](super::mptable) writer, so the
//! output is byte-for-byte deterministic and needs no `unsafe`.
//!
//! # Layout
//!
//! One blob, placed at `rsdp_addr` (16-byte aligned, normally [`RSDP_ADDR`]
//! in the BIOS area Linux scans), holds, each table 8-byte aligned:
//!
//! 1. the RSDP (revision 2, 36 bytes), pointing at the XSDT (the RSDT
//!    address is 0: there is no RSDT);
//! 2. the XSDT, listing the FADT and the MADT;
//! 3. the FADT (revision 6.4, 276 bytes), pointing at the DSDT and the FACS;
//! 4. the DSDT: `\_S3`, `\_S5` and `\_SB.COM1`;
//! 5. the MADT: local APICs, the I/O APIC, the SCI override and LINT1 = NMI;
//! 6. the FACS (64 bytes), 64-byte aligned as the specification requires.
//!
//! # Not hardware-reduced
//!
//! The FADT describes a classic (not `HW_REDUCED_ACPI`) platform with a
//! PM1a event block, a PM1a control block and an I/O reset register, served
//! by [`crate::devices::acpi_pm`], and a 24-bit PM timer
//! ([`crate::devices::pm_timer`]). That is what lets Linux power off by
//! writing `SLP_TYP = 5 | SLP_EN` to PM1a_CNT, and suspend to RAM with
//! `SLP_TYP = 1` (`\_S3`). `SMI_CMD` is 0, so the platform is always in ACPI
//! mode; there is no GPE block. `FIRMWARE_CTRL`/`DSDT` and their `X_`
//! twins hold the same (below 1 MiB) addresses. A classic platform must provide a FACS (ACPI 6.4 §5.2.9: only a
//! hardware-reduced one may omit it), so one is included; the guest's global
//! lock lives there.
//!
//! # Interrupts
//!
//! berth routes GSI *n* to I/O APIC pin *n* for the ISA IRQs (the PIT on
//! pin 0, as KVM does by default), so the MADT has no IRQ0 → GSI 2 override
//! (what PC firmware reports). Its only override makes the SCI, ISA IRQ 9,
//! level-triggered active-high on GSI 9.
//!
//! # The DSDT
//!
//! The AML is encoded by hand; the bytes are pinned by a unit test against
//! the output of the ACPICA compiler (`iasl` 20200925) for this source (the
//! `_S3` line came later and was encoded by hand the same way, `One` being
//! the one-byte `OneOp`):
//!
//! ```text
//! DefinitionBlock ("", "DSDT", 2, "BERTH ", "BERTHVM ", 1)
//! {
//!     Name (_S3, Package (0x04) { One, One, Zero, Zero })
//!     Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
//!     Scope (\_SB)
//!     {
//!         Device (COM1)
//!         {
//!             Name (_HID, EisaId ("PNP0501"))
//!             Name (_UID, One)
//!             Name (_CRS, ResourceTemplate ()
//!             {
//!                 IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
//!                 IRQNoFlags () {4}
//!             })
//!         }
//!     }
//! }
//! ```

use crate::arch::x86_64::tables::set_checksum;
use crate::arch::x86_64::{check_apic_ids, ApicIdError};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::layout::{COM1_GSI, COM1_LEN, COM1_PORT};

mod aml;
use aml::*;

/// Where berth puts the RSDP: the start of the BIOS-area window
/// `0xe0000..0x100000` Linux scans on 16-byte boundaries.
pub const RSDP_ADDR: u64 = 0xe0000;

/// End (exclusive) of the room for the ACPI blob; `0xf0000..` may hold a
/// large MP table.
pub const TABLES_END: u64 = 0xf0000;

/// Most CPUs the tables describe: processor UIDs are 0..=253 and UID 0xff
/// means "all processors" in the local APIC NMI structure.
pub const MAX_CPUS: usize = 254;

/// The SCI's ISA IRQ (and GSI, identity-routed).
pub const SCI_IRQ: u8 = 9;

/// The `SLP_TYP` value of `\_S5` (both `SLP_TYPa` and `SLP_TYPb`): writing
/// it with `SLP_EN` to PM1a_CNT powers the VM off.
pub const S5_SLP_TYP: u8 = 5;

/// `RESET_VALUE`: what the guest writes to the reset register to reset the
/// VM (bit 2 "reset CPU" | bit 1 "system reset", as on a PC's port 0xcf9).
pub const RESET_VALUE: u8 = 0x06;

/// Bytes of the PM1a event block (`PM1_EVT_LEN`): PM1_STS and PM1_EN.
pub const PM1_EVT_LEN: u8 = 4;

/// Bytes of the PM1a control block (`PM1_CNT_LEN`): PM1_CNT.
pub const PM1_CNT_LEN: u8 = 2;

/// Bytes of the PM timer block (`PM_TMR_LEN`): the 24-bit counter.
pub const PM_TMR_LEN: u8 = 4;

/// The `SLP_TYP` value of `\_S3` (suspend to RAM), as QEMU's PIIX4 has it
/// and kvm-unit-tests' `s3` writes it.
pub const S3_SLP_TYP: u8 = 1;

/// Alignment of `rsdp_addr` (the guest scans 16-byte boundaries).
pub const RSDP_ALIGN: u64 = 16;

/// OEM ID in the RSDP and every table header.
const OEM_ID: &[u8; 6] = b"BERTH ";
/// OEM table ID in every table header.
const OEM_TABLE_ID: &[u8; 8] = b"BERTHVM ";
/// Creator ID in every table header.
const CREATOR_ID: &[u8; 4] = b"BRTH";

const OEM_REVISION: u32 = 1;
const CREATOR_REVISION: u32 = 1;

const HEADER_LEN: usize = 36;
const RSDP_LEN: usize = 36;
/// XSDT: header and two 64-bit entries (FADT, MADT).
const XSDT_LEN: usize = HEADER_LEN + 2 * 8;
const FADT_LEN: usize = 276;
const FACS_LEN: usize = 64;
/// MADT: header, local APIC address and flags.
const MADT_FIXED_LEN: usize = HEADER_LEN + 8;
const MADT_LAPIC_LEN: usize = 8;
const MADT_IOAPIC_LEN: usize = 12;
const MADT_ISO_LEN: usize = 10;
const MADT_LAPIC_NMI_LEN: usize = 6;

/// Tables are 8-byte aligned within the blob.
const TABLE_ALIGN: usize = 8;
/// The FACS must be 64-byte aligned in guest-physical memory.
const FACS_ALIGN: u64 = 64;

const RSDP_REVISION: u8 = 2;
const XSDT_REVISION: u8 = 1;
const FADT_MAJOR: u8 = 6;
const FADT_MINOR: u8 = 4;
/// Revision 2: 64-bit AML integers.
const DSDT_REVISION: u8 = 2;
const MADT_REVISION: u8 = 5;
const FACS_VERSION: u8 = 2;

// FADT field offsets (ACPI 6.4 Table 5.9).
const FADT_FIRMWARE_CTRL: usize = 36;
const FADT_DSDT: usize = 40;
const FADT_SCI_INT: usize = 46;
const FADT_SMI_CMD: usize = 48;
const FADT_PM1A_EVT_BLK: usize = 56;
const FADT_PM1A_CNT_BLK: usize = 64;
const FADT_PM_TMR_BLK: usize = 76;
const FADT_PM1_EVT_LEN: usize = 88;
const FADT_PM1_CNT_LEN: usize = 89;
const FADT_PM_TMR_LEN: usize = 91;
const FADT_P_LVL2_LAT: usize = 96;
const FADT_P_LVL3_LAT: usize = 98;
const FADT_IAPC_BOOT_ARCH: usize = 109;
const FADT_FLAGS: usize = 112;
const FADT_RESET_REG: usize = 116;
const FADT_RESET_VALUE: usize = 128;
const FADT_MINOR_VERSION: usize = 131;
const FADT_X_FIRMWARE_CTRL: usize = 132;
const FADT_X_DSDT: usize = 140;
const FADT_X_PM1A_EVT_BLK: usize = 148;
const FADT_X_PM1A_CNT_BLK: usize = 172;
const FADT_X_PM_TMR_BLK: usize = 208;

/// FADT flags.
const FADT_F_WBINVD: u32 = 1 << 0;
const FADT_F_PROC_C1: u32 = 1 << 2;
const FADT_F_SLP_BUTTON: u32 = 1 << 5;
const FADT_F_RESET_REG_SUP: u32 = 1 << 10;
const FADT_F_HW_REDUCED_ACPI: u32 = 1 << 20;
/// What berth's FADT sets: WBINVD works, C1 is supported, there is no
/// fixed-feature sleep button, and the reset register is valid. Not
/// hardware-reduced: PM1a-based power-off needs the fixed hardware.
const FADT_FLAGS_VALUE: u32 = FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON | FADT_F_RESET_REG_SUP;
const _: () = assert!(FADT_FLAGS_VALUE & FADT_F_HW_REDUCED_ACPI == 0);

/// IA-PC boot architecture flags.
const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
const BOOT_ARCH_8042: u16 = 1 << 1;
const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;

/// `P_LVL2_LAT` above 100 µs: C2 not supported.
const P_LVL2_UNSUPPORTED: u16 = 101;
/// `P_LVL3_LAT` above 1000 µs: C3 not supported.
const P_LVL3_UNSUPPORTED: u16 = 1001;

/// Generic address structure: address space IDs and access sizes.
const GAS_SYSTEM_IO: u8 = 1;
const GAS_ACCESS_BYTE: u8 = 1;
const GAS_ACCESS_WORD: u8 = 2;
const GAS_ACCESS_DWORD: u8 = 3;

/// MADT flag: the platform also has dual 8259s.
const MADT_PCAT_COMPAT: u32 = 1 << 0;
const MADT_TYPE_LAPIC: u8 = 0;
const MADT_TYPE_IOAPIC: u8 = 1;
const MADT_TYPE_ISO: u8 = 2;
const MADT_TYPE_LAPIC_NMI: u8 = 4;
const LAPIC_ENABLED: u32 = 1 << 0;
const ISA_BUS: u8 = 0;
/// MPS INTI flags: polarity active high (01), trigger mode level (11).
const INTI_ACTIVE_HIGH_LEVEL: u16 = 0x000d;
const INTI_CONFORMING: u16 = 0;
/// ACPI processor UID meaning "every processor".
const ALL_PROCESSORS: u8 = 0xff;
const NMI_LINT: u8 = 1;

/// One ACPI description, all from berth's plan (no host values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiSpec {
    /// Local APIC IDs, one per vCPU; index 0 is the bootstrap processor.
    /// The ACPI processor UID of each is its index.
    pub cpus: Vec<u8>,
    /// The I/O APIC's ID.
    pub ioapic_id: u8,
    /// The I/O APIC's MMIO address (normally `0xfec00000`).
    pub ioapic_addr: u32,
    /// The local APIC MMIO address (normally `0xfee00000`).
    pub lapic_addr: u32,
    /// PM1a event block port ([`PM1_EVT_LEN`] bytes: PM1_STS, PM1_EN);
    /// berth uses 0x600.
    pub pm1a_evt_port: u16,
    /// PM1a control block port ([`PM1_CNT_LEN`] bytes: PM1_CNT); berth uses
    /// 0x604.
    pub pm1a_cnt_port: u16,
    /// PM timer port ([`PM_TMR_LEN`] bytes); berth uses 0x608.
    pub pm_tmr_port: u16,
    /// Reset register port (1 byte, written with [`RESET_VALUE`]); berth
    /// uses 0xcf9.
    pub reset_port: u16,
    /// Whether dual 8259 PICs exist ("kernel" irqchip mode): sets the MADT's
    /// PCAT_COMPAT flag and the FADT's LEGACY_DEVICES and 8042 boot flags.
    pub legacy_pic: bool,
    /// QEMU fw_cfg (port, number of ports), described by a `QEMU0002`
    /// device in `\_SB` so Linux's qemu_fw_cfg driver finds it.
    pub fw_cfg: Option<(u16, u8)>,
}

/// Why ACPI tables cannot be built or written.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The spec lists no CPU, so there is no bootstrap processor.
    #[error("ACPI tables need at least one CPU")]
    NoCpus,
    /// More CPUs than processor UIDs below the "all processors" UID 0xff.
    #[error("ACPI tables list {count} CPUs; at most {MAX_CPUS} fit")]
    TooManyCpus {
        /// CPUs in the spec.
        count: usize,
    },
    /// A CPU uses the broadcast APIC ID.
    #[error("CPU {index} has local APIC ID 0xff, the broadcast ID")]
    BroadcastApicId {
        /// Position in [`AcpiSpec::cpus`].
        index: usize,
    },
    /// Two CPUs share a local APIC ID.
    #[error("CPUs {first} and {second} share local APIC ID {id}")]
    DuplicateApicId {
        /// The shared ID.
        id: u8,
        /// Position of the first CPU with it.
        first: usize,
        /// Position of the second CPU with it.
        second: usize,
    },
    /// A fixed-hardware register block is at port 0 (ACPI reads a zero
    /// address as "absent") or runs past port 0xffff.
    #[error("ACPI {name} at port {port:#x} ({len} bytes) is not a valid I/O range")]
    BadPort {
        /// Which register block.
        name: &'static str,
        /// Its port.
        port: u16,
        /// Its length in bytes.
        len: u8,
    },
    /// Two fixed-hardware register blocks overlap.
    #[error("ACPI {first} at port {first_port:#x} overlaps {second} at port {second_port:#x}")]
    PortOverlap {
        /// The first block.
        first: &'static str,
        /// Its port.
        first_port: u16,
        /// The second block.
        second: &'static str,
        /// Its port.
        second_port: u16,
    },
    /// The RSDP must sit on a 16-byte boundary to be found.
    #[error("ACPI RSDP address {addr:#x} is not {RSDP_ALIGN}-byte aligned")]
    Misaligned {
        /// Requested RSDP address.
        addr: u64,
    },
    /// The blob would not end at or below [`TABLES_END`].
    #[error("ACPI tables at {addr:#x} ({size} bytes) run past {TABLES_END:#x}")]
    PastTablesEnd {
        /// Requested RSDP address.
        addr: u64,
        /// Blob size in bytes.
        size: usize,
    },
    /// A table or AML object is too large for its length field (cannot
    /// happen with the sizes [`build`] accepts; checked, not assumed).
    #[error("ACPI {what} of {len} bytes is too large to encode")]
    TooLarge {
        /// What was being encoded.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Writing to guest memory failed.
    #[error("cannot write ACPI tables to guest memory at {addr:#x}: {source}")]
    Memory {
        /// Where the blob was to go.
        addr: u64,
        /// Why.
        source: GuestMemoryError,
    },
}

/// The ACPI blob to place at guest-physical `rsdp_addr`: the RSDP, then the
/// XSDT, FADT, DSDT, MADT and FACS. Every address inside points into the
/// blob itself.
///
/// # Errors
///
/// Rejects a spec with no CPUs, more than [`MAX_CPUS`] CPUs, a CPU with APIC
/// ID 0xff or duplicate APIC IDs; register blocks at port 0, past port
/// 0xffff or overlapping each other; an `rsdp_addr` that is not 16-byte
/// aligned; and a blob that would run past [`TABLES_END`].
pub fn build(spec: &AcpiSpec, rsdp_addr: u64) -> Result<Vec<u8>, AcpiError> {
    build_blob(spec, rsdp_addr).map(|(blob, _)| blob)
}

/// [`build`], and the FACS's guest-physical address.
fn build_blob(spec: &AcpiSpec, rsdp_addr: u64) -> Result<(Vec<u8>, u64), AcpiError> {
    validate(spec)?;
    if !rsdp_addr.is_multiple_of(RSDP_ALIGN) {
        return Err(AcpiError::Misaligned { addr: rsdp_addr });
    }

    let dsdt = dsdt(spec)?;
    let madt = madt(spec)?;

    let xsdt_off = align_up(RSDP_LEN, TABLE_ALIGN);
    let fadt_off = align_up(xsdt_off + XSDT_LEN, TABLE_ALIGN);
    let dsdt_off = align_up(fadt_off + FADT_LEN, TABLE_ALIGN);
    let madt_off = align_up(dsdt_off + dsdt.len(), TABLE_ALIGN);
    let madt_end = madt_off + madt.len();
    // The FACS alignment is absolute; rsdp_addr is only 16-byte aligned.
    let facs_off = madt_end + facs_padding(rsdp_addr, madt_end);
    let total = facs_off + FACS_LEN;
    match rsdp_addr.checked_add(total as u64) {
        Some(end) if end <= TABLES_END => {}
        _ => {
            return Err(AcpiError::PastTablesEnd {
                addr: rsdp_addr,
                size: total,
            })
        }
    }
    // In range: rsdp_addr + total <= TABLES_END, so no sum below overflows.
    let at = |off: usize| rsdp_addr + off as u64;

    let xsdt = xsdt(&[at(fadt_off), at(madt_off)])?;
    let fadt = fadt(spec, at(dsdt_off), at(facs_off))?;
    let rsdp = rsdp(at(xsdt_off));
    let facs = facs();

    let mut out = vec![0u8; total];
    for (off, table) in [
        (0, &rsdp),
        (xsdt_off, &xsdt),
        (fadt_off, &fadt),
        (dsdt_off, &dsdt),
        (madt_off, &madt),
        (facs_off, &facs),
    ] {
        if let Some(slot) = out.get_mut(off..off + table.len()) {
            slot.copy_from_slice(table);
        }
    }
    Ok((out, at(facs_off)))
}

/// Where [`write()`] puts the FACS for `spec` at `rsdp_addr`, without
/// writing anything (a restored VM's tables are in its memory already).
///
/// # Errors
///
/// Everything [`build`] rejects.
pub fn facs_address(spec: &AcpiSpec, rsdp_addr: u64) -> Result<u64, AcpiError> {
    build_blob(spec, rsdp_addr).map(|(_, facs)| facs)
}

/// Writes the tables of `spec` at `rsdp_addr`; returns the FACS address.
///
/// # Errors
///
/// Everything [`build`] rejects, and a failed guest-memory write.
pub fn write<M>(spec: &AcpiSpec, mem: &M, rsdp_addr: u64) -> Result<u64, AcpiError>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    let (bytes, facs) = build_blob(spec, rsdp_addr)?;
    mem.write_slice(&bytes, GuestAddress(rsdp_addr))
        .map_err(|source| AcpiError::Memory {
            addr: rsdp_addr,
            source,
        })?;
    Ok(facs)
}

impl From<ApicIdError> for AcpiError {
    fn from(e: ApicIdError) -> Self {
        match e {
            ApicIdError::Empty => AcpiError::NoCpus,
            ApicIdError::TooMany { count } => AcpiError::TooManyCpus { count },
            ApicIdError::Broadcast { index } => AcpiError::BroadcastApicId { index },
            ApicIdError::Duplicate { id, first, second } => AcpiError::DuplicateApicId { id, first, second },
        }
    }
}

fn validate(spec: &AcpiSpec) -> Result<(), AcpiError> {
    check_apic_ids(&spec.cpus, MAX_CPUS)?;

    let blocks = [
        ("PM1a event block", spec.pm1a_evt_port, PM1_EVT_LEN),
        ("PM1a control block", spec.pm1a_cnt_port, PM1_CNT_LEN),
        ("PM timer", spec.pm_tmr_port, PM_TMR_LEN),
        ("reset register", spec.reset_port, 1),
    ];
    for &(name, port, len) in &blocks {
        if port == 0 || u32::from(port) + u32::from(len) > 0x1_0000 {
            return Err(AcpiError::BadPort { name, port, len });
        }
    }
    for (i, &(first, a, alen)) in blocks.iter().enumerate() {
        for &(second, b, blen) in blocks.iter().skip(i + 1) {
            let (a32, b32) = (u32::from(a), u32::from(b));
            if a32 < b32 + u32::from(blen) && b32 < a32 + u32::from(alen) {
                return Err(AcpiError::PortOverlap {
                    first,
                    first_port: a,
                    second,
                    second_port: b,
                });
            }
        }
    }
    Ok(())
}

/// `n` rounded up to a multiple of `align` (a power of two).
fn align_up(n: usize, align: usize) -> usize {
    n.div_ceil(align) * align
}

/// Bytes to skip after offset `end` so that the FACS lands on a 64-byte
/// guest-physical boundary.
fn facs_padding(rsdp_addr: u64, end: usize) -> usize {
    let addr = rsdp_addr.wrapping_add(end as u64);
    ((FACS_ALIGN - addr % FACS_ALIGN) % FACS_ALIGN) as usize
}

/// Writes `value` at `bytes[at..]`, if it fits (it always does for the fixed
/// offsets used here).
fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    if let Some(slot) = bytes.get_mut(at..at + value.len()) {
        slot.copy_from_slice(value);
    }
}

/// A 36-byte system description table header with length and checksum 0
/// (patched by [`finish_table`]).
fn header(signature: &[u8; 4], revision: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(signature);
    h.extend_from_slice(&0u32.to_le_bytes()); // length, patched
    h.push(revision);
    h.push(0); // checksum, patched
    h.extend_from_slice(OEM_ID);
    h.extend_from_slice(OEM_TABLE_ID);
    h.extend_from_slice(&OEM_REVISION.to_le_bytes());
    h.extend_from_slice(CREATOR_ID);
    h.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
    h
}

/// Patches the length field and the checksum of a complete table.
fn finish_table(mut table: Vec<u8>, what: &'static str) -> Result<Vec<u8>, AcpiError> {
    let len = u32::try_from(table.len()).map_err(|_| AcpiError::TooLarge {
        what,
        len: table.len(),
    })?;
    put(&mut table, 4, &len.to_le_bytes());
    set_checksum(&mut table, 9);
    Ok(table)
}

/// A generic address structure for an I/O port register.
fn gas_io(port: u16, bit_width: u8, access_size: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = GAS_SYSTEM_IO;
    g[1] = bit_width;
    g[2] = 0; // bit offset
    g[3] = access_size;
    g[4..].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(RSDP_LEN);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes, patched
    r.extend_from_slice(OEM_ID);
    r.push(RSDP_REVISION);
    r.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    r.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r.extend_from_slice(&xsdt_addr.to_le_bytes());
    r.push(0); // extended checksum, patched
    r.extend_from_slice(&[0; 3]);
    if let Some(first) = r.get_mut(..20) {
        set_checksum(first, 8);
    }
    set_checksum(&mut r, 32);
    r
}

fn xsdt(entries: &[u64]) -> Result<Vec<u8>, AcpiError> {
    let mut t = header(b"XSDT", XSDT_REVISION);
    for e in entries {
        t.extend_from_slice(&e.to_le_bytes());
    }
    finish_table(t, "XSDT")
}

fn fadt(spec: &AcpiSpec, dsdt_addr: u64, facs_addr: u64) -> Result<Vec<u8>, AcpiError> {
    let mut t = header(b"FACP", FADT_MAJOR);
    t.resize(FADT_LEN, 0);
    // FIRMWARE_CTRL and DSDT (32-bit) carry the same addresses as the X_
    // fields (the blob is below 1 MiB): OSPMs prefer the X_ ones, and
    // 32-bit readers (kvm-unit-tests' FACS lookup) use these.
    let (facs32, dsdt32) = match (u32::try_from(facs_addr), u32::try_from(dsdt_addr)) {
        (Ok(f), Ok(d)) => (f, d),
        _ => {
            return Err(AcpiError::TooLarge {
                what: "FACS/DSDT address for a 32-bit FADT field",
                len: 0,
            })
        }
    };
    put(&mut t, FADT_FIRMWARE_CTRL, &facs32.to_le_bytes());
    put(&mut t, FADT_DSDT, &dsdt32.to_le_bytes());
    put(&mut t, FADT_SCI_INT, &u16::from(SCI_IRQ).to_le_bytes());
    // No SMI command port: the platform is always in ACPI mode.
    put(&mut t, FADT_SMI_CMD, &0u32.to_le_bytes());
    put(
        &mut t,
        FADT_PM1A_EVT_BLK,
        &u32::from(spec.pm1a_evt_port).to_le_bytes(),
    );
    put(
        &mut t,
        FADT_PM1A_CNT_BLK,
        &u32::from(spec.pm1a_cnt_port).to_le_bytes(),
    );
    // The 24-bit PM timer (TMR_VAL_EXT clear); no PM2, no GPE blocks.
    put(
        &mut t,
        FADT_PM_TMR_BLK,
        &u32::from(spec.pm_tmr_port).to_le_bytes(),
    );
    put(&mut t, FADT_PM1_EVT_LEN, &[PM1_EVT_LEN]);
    put(&mut t, FADT_PM1_CNT_LEN, &[PM1_CNT_LEN]);
    put(&mut t, FADT_PM_TMR_LEN, &[PM_TMR_LEN]);
    put(&mut t, FADT_P_LVL2_LAT, &P_LVL2_UNSUPPORTED.to_le_bytes());
    put(&mut t, FADT_P_LVL3_LAT, &P_LVL3_UNSUPPORTED.to_le_bytes());
    put(&mut t, FADT_IAPC_BOOT_ARCH, &iapc_boot_arch(spec).to_le_bytes());
    put(&mut t, FADT_FLAGS, &FADT_FLAGS_VALUE.to_le_bytes());
    put(
        &mut t,
        FADT_RESET_REG,
        &gas_io(spec.reset_port, 8, GAS_ACCESS_BYTE),
    );
    put(&mut t, FADT_RESET_VALUE, &[RESET_VALUE]);
    put(&mut t, FADT_MINOR_VERSION, &[FADT_MINOR]);
    put(&mut t, FADT_X_FIRMWARE_CTRL, &facs_addr.to_le_bytes());
    put(&mut t, FADT_X_DSDT, &dsdt_addr.to_le_bytes());
    put(
        &mut t,
        FADT_X_PM1A_EVT_BLK,
        &gas_io(spec.pm1a_evt_port, PM1_EVT_LEN * 8, GAS_ACCESS_WORD),
    );
    put(
        &mut t,
        FADT_X_PM1A_CNT_BLK,
        &gas_io(spec.pm1a_cnt_port, PM1_CNT_LEN * 8, GAS_ACCESS_WORD),
    );
    put(
        &mut t,
        FADT_X_PM_TMR_BLK,
        &gas_io(spec.pm_tmr_port, PM_TMR_LEN * 8, GAS_ACCESS_DWORD),
    );
    finish_table(t, "FADT")
}

/// IAPC_BOOT_ARCH: legacy devices and an 8042 when the legacy PICs exist;
/// never VGA; MSI and the CMOS RTC are not flagged absent.
fn iapc_boot_arch(spec: &AcpiSpec) -> u16 {
    let legacy = if spec.legacy_pic {
        BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042
    } else {
        0
    };
    legacy | BOOT_ARCH_VGA_NOT_PRESENT
}

fn madt(spec: &AcpiSpec) -> Result<Vec<u8>, AcpiError> {
    let mut t = header(b"APIC", MADT_REVISION);
    t.reserve(
        MADT_FIXED_LEN - HEADER_LEN
            + spec.cpus.len() * MADT_LAPIC_LEN
            + MADT_IOAPIC_LEN
            + MADT_ISO_LEN
            + MADT_LAPIC_NMI_LEN,
    );
    t.extend_from_slice(&spec.lapic_addr.to_le_bytes());
    let flags = if spec.legacy_pic { MADT_PCAT_COMPAT } else { 0 };
    t.extend_from_slice(&flags.to_le_bytes());

    for (uid, &apic_id) in spec.cpus.iter().enumerate() {
        // validate() bounds the count to MAX_CPUS < 0xff.
        let uid = u8::try_from(uid).map_err(|_| AcpiError::TooManyCpus {
            count: spec.cpus.len(),
        })?;
        t.extend_from_slice(&[MADT_TYPE_LAPIC, MADT_LAPIC_LEN as u8, uid, apic_id]);
        t.extend_from_slice(&LAPIC_ENABLED.to_le_bytes());
    }

    t.extend_from_slice(&[MADT_TYPE_IOAPIC, MADT_IOAPIC_LEN as u8, spec.ioapic_id, 0]);
    t.extend_from_slice(&spec.ioapic_addr.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes()); // GSI base

    t.extend_from_slice(&[MADT_TYPE_ISO, MADT_ISO_LEN as u8, ISA_BUS, SCI_IRQ]);
    t.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
    t.extend_from_slice(&INTI_ACTIVE_HIGH_LEVEL.to_le_bytes());

    t.extend_from_slice(&[MADT_TYPE_LAPIC_NMI, MADT_LAPIC_NMI_LEN as u8, ALL_PROCESSORS]);
    t.extend_from_slice(&INTI_CONFORMING.to_le_bytes());
    t.push(NMI_LINT);

    finish_table(t, "MADT")
}

fn facs() -> Vec<u8> {
    let mut f = vec![0u8; FACS_LEN];
    put(&mut f, 0, b"FACS");
    put(&mut f, 4, &(FACS_LEN as u32).to_le_bytes());
    // Hardware signature, waking vectors, global lock, flags: all 0.
    put(&mut f, 32, &[FACS_VERSION]);
    f
}

fn dsdt(spec: &AcpiSpec) -> Result<Vec<u8>, AcpiError> {
    let mut t = header(b"DSDT", DSDT_REVISION);
    t.extend_from_slice(&dsdt_aml(spec)?);
    finish_table(t, "DSDT")
}

/// The DSDT's definition block body.
fn dsdt_aml(spec: &AcpiSpec) -> Result<Vec<u8>, AcpiError> {
    let mut aml = aml_sleep_state(b"_S3_", S3_SLP_TYP)?;
    aml.extend_from_slice(&aml_sleep_state(b"_S5_", S5_SLP_TYP)?);
    let mut sb = aml_com1()?;
    if let Some((port, len)) = spec.fw_cfg {
        sb.extend_from_slice(&aml_fw_cfg(port, len)?);
    }
    aml.extend_from_slice(&aml_scope(b"_SB_", &sb)?);
    Ok(aml)
}

/// `Device (FWCF)`, as QEMU writes it: `_HID "QEMU0002"`, `_STA 0x0B`,
/// `_CRS { IO (Decode16, port, port, 1, len) }`.
fn aml_fw_cfg(port: u16, len: u8) -> Result<Vec<u8>, AcpiError> {
    let mut hid = vec![AML_STRING_PREFIX];
    hid.extend_from_slice(b"QEMU0002\0");
    let mut body = aml_name(b"_HID", &hid);
    body.extend_from_slice(&aml_name(b"_STA", &aml_integer(0x0b)));
    let [lo, hi] = port.to_le_bytes();
    let resources = [RES_IO, RES_IO_DECODE16, lo, hi, lo, hi, 1, len, RES_END_TAG, 0];
    body.extend_from_slice(&aml_name(b"_CRS", &aml_buffer(&resources)?));
    aml_device(b"FWCF", &body)
}

/// `Name (_Sx, Package (4) { typ, typ, 0, 0 })`: SLP_TYPa, SLP_TYPb,
/// reserved.
fn aml_sleep_state(name: &[u8; 4], slp_typ: u8) -> Result<Vec<u8>, AcpiError> {
    let typ = u64::from(slp_typ);
    let package = aml_package(&[aml_integer(typ), aml_integer(typ), aml_integer(0), aml_integer(0)])?;
    Ok(aml_name(name, &package))
}

/// `Device (COM1)`: the 16550A UART at [`COM1_PORT`], IRQ [`COM1_GSI`].
fn aml_com1() -> Result<Vec<u8>, AcpiError> {
    let mut body = aml_name(b"_HID", &aml_integer(u64::from(eisa_id(b"PNP0501"))));
    body.extend_from_slice(&aml_name(b"_UID", &aml_integer(1)));

    let [port_lo, port_hi] = COM1_PORT.to_le_bytes();
    let io_len = u8::try_from(COM1_LEN).unwrap_or(u8::MAX);
    let irq_mask = 1u16.checked_shl(COM1_GSI).unwrap_or(0).to_le_bytes();
    let resources = [
        // IO (Decode16, min, max, alignment 1, length)
        RES_IO,
        RES_IO_DECODE16,
        port_lo,
        port_hi,
        port_lo,
        port_hi,
        1,
        io_len,
        // IRQNoFlags () { COM1_GSI }: edge, active high, exclusive
        RES_IRQ_NO_FLAGS,
        irq_mask[0],
        irq_mask[1],
        RES_END_TAG,
        0,
    ];
    body.extend_from_slice(&aml_name(b"_CRS", &aml_buffer(&resources)?));
    aml_device(b"COM1", &body)
}

#[cfg(test)]
mod tests;
