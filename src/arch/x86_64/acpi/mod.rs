//! ACPI 6.4 tables for berth's x86 microVM: how a guest finds its CPUs, its
//! I/O APIC, the SCI and the fixed power-management registers, and how it
//! powers off (`\_S5`) and resets (the FADT reset register).
//!
//! Everything is built from an [`AcpiSpec`] (values from berth's plan, never
//! from the host) with rust-vmm's `acpi_tables` crate (Cloud Hypervisor's
//! table builders): its `Rsdp`, `FADTBuilder`, `FACS`,
//! MADT entries and `aml` objects, and its generic `Sdt` for the XSDT, the
//! MADT and the DSDT. The output is byte-for-byte deterministic and the same
//! as berth's earlier hand encoding (the unit tests pin it). The crate
//! asserts on some inputs (an AML name that is not four characters, an
//! offset past a table's end); berth calls it only with constant names and
//! offsets and with a spec `validate()` accepted, so no plan reaches one.
//!
//! What the crate lacks, berth adds on top of it: the `IRQNoFlags` resource
//! descriptor (`aml` has only the extended `Interrupt`), the MADT's
//! interrupt source override and local APIC NMI entries, and the MADT flags
//! and revision (its `MADT` type fixes revision 1 and flags 0, so the MADT
//! is an `Sdt`). Every table's creator ID is berth's (`BRTH`, revision 1),
//! not the crate's `RVAT`.
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
//! 4. the DSDT: `\_S3`, `\_S5`, `\_SB.COM1` and, with fw_cfg,
//!    `\_SB.FWCF`;
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
//! twins hold the same (below 1 MiB) addresses. A classic platform must
//! provide a FACS (ACPI 6.4 §5.2.9: only a hardware-reduced one may omit
//! it), so one is included; the guest's global lock lives there.
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
//! The AML is built from the crate's `aml` objects (`dsdt.rs`); the bytes
//! are pinned by a unit test against the output of the ACPICA compiler
//! (`iasl` 20200925) for this source (the `_S3` line came later and was
//! checked by hand the same way, `One` being the one-byte `OneOp`):
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

use crate::arch::x86_64::{check_apic_ids, ApicIdError};
use acpi_tables::aml;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags as FadtFlags, FADT};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

mod dsdt;
use dsdt::{aml_com1, aml_fw_cfg, aml_sleep_state};

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
/// XSDT: header and two 64-bit entries (FADT, MADT).
const XSDT_LEN: usize = HEADER_LEN + 2 * 8;
/// MADT: header, local APIC address and flags.
const MADT_FIXED_LEN: usize = HEADER_LEN + 8;
const MADT_LAPIC_LEN: usize = 8;
const MADT_IOAPIC_LEN: usize = 12;
const MADT_ISO_LEN: usize = 10;
const MADT_LAPIC_NMI_LEN: usize = 6;

/// Header offsets of the creator ID and revision (ACPI 6.4 Table 5.5).
const HEADER_CREATOR_ID: usize = 28;
const HEADER_CREATOR_REVISION: usize = 32;
/// MADT offsets of the local APIC address and the flags.
const MADT_LAPIC_ADDR: usize = 36;
const MADT_FLAGS: usize = 40;

/// Tables are 8-byte aligned within the blob.
const TABLE_ALIGN: usize = 8;
/// The FACS must be 64-byte aligned in guest-physical memory.
const FACS_ALIGN: u64 = 64;

const XSDT_REVISION: u8 = 1;
const FADT_MINOR: u8 = 4;
/// Revision 2: 64-bit AML integers.
const DSDT_REVISION: u8 = 2;
const MADT_REVISION: u8 = 5;
const FACS_VERSION: u8 = 2;

/// What berth's FADT sets: WBINVD works, C1 is supported, there is no
/// fixed-feature sleep button, and the reset register is valid. Not
/// hardware-reduced: PM1a-based power-off needs the fixed hardware.
const FADT_FLAGS: [FadtFlags; 4] = [
    FadtFlags::Wbinvd,
    FadtFlags::ProcC1,
    FadtFlags::SlpButton,
    FadtFlags::ResetRegSup,
];

/// IA-PC boot architecture flags.
const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
const BOOT_ARCH_8042: u16 = 1 << 1;
const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;

/// `P_LVL2_LAT` above 100 µs: C2 not supported.
const P_LVL2_UNSUPPORTED: u16 = 101;
/// `P_LVL3_LAT` above 1000 µs: C3 not supported.
const P_LVL3_UNSUPPORTED: u16 = 1001;

/// MADT flag: the platform also has dual 8259s.
const MADT_PCAT_COMPAT: u32 = 1 << 0;
const MADT_TYPE_ISO: u8 = 2;
const MADT_TYPE_LAPIC_NMI: u8 = 4;
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
    /// A fixed-hardware register block or the fw_cfg device is at port 0
    /// (ACPI reads a zero address as "absent"), is empty or runs past port
    /// 0xffff.
    #[error("ACPI {name} at port {port:#x} ({len} bytes) is not a valid I/O range")]
    BadPort {
        /// Which register block.
        name: &'static str,
        /// Its port.
        port: u16,
        /// Its length in bytes.
        len: u8,
    },
    /// Two fixed-hardware register blocks (or one and the fw_cfg device)
    /// overlap.
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
    /// A table address does not fit its 32-bit FADT field (cannot happen
    /// with the addresses [`build`] accepts; checked, not assumed).
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
/// ID 0xff or duplicate APIC IDs; register blocks (and the fw_cfg device)
/// at port 0, empty, past port 0xffff or overlapping each other; an `rsdp_addr` that is not 16-byte
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

    let dsdt = dsdt(spec);
    let madt = madt(spec)?;

    let xsdt_off = align_up(Rsdp::len(), TABLE_ALIGN);
    let fadt_off = align_up(xsdt_off + XSDT_LEN, TABLE_ALIGN);
    let dsdt_off = align_up(fadt_off + FADT::len(), TABLE_ALIGN);
    let madt_off = align_up(dsdt_off + dsdt.len(), TABLE_ALIGN);
    let madt_end = madt_off + madt.len();
    // The FACS alignment is absolute; rsdp_addr is only 16-byte aligned.
    let facs_off = madt_end + facs_padding(rsdp_addr, madt_end);
    let total = facs_off + FACS::len();
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

    let xsdt = xsdt(&[at(fadt_off), at(madt_off)]);
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

/// Checks every value of `spec` before any table is built: the
/// `acpi_tables` builders take what they are given (and assert on some
/// inputs), so what reaches them must already be in range.
fn validate(spec: &AcpiSpec) -> Result<(), AcpiError> {
    check_apic_ids(&spec.cpus, MAX_CPUS)?;

    let mut blocks = vec![
        ("PM1a event block", spec.pm1a_evt_port, PM1_EVT_LEN),
        ("PM1a control block", spec.pm1a_cnt_port, PM1_CNT_LEN),
        ("PM timer", spec.pm_tmr_port, PM_TMR_LEN),
        ("reset register", spec.reset_port, 1),
    ];
    if let Some((port, len)) = spec.fw_cfg {
        blocks.push(("fw_cfg device", port, len));
    }
    for &(name, port, len) in &blocks {
        if port == 0 || len == 0 || u32::from(port) + u32::from(len) > 0x1_0000 {
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

/// A system description table (header only) with berth's OEM and creator
/// IDs; [`Sdt`] keeps its length and checksum current as it grows.
fn sdt(signature: &[u8; 4], length: u32, revision: u8) -> Sdt {
    let mut t = Sdt::new(*signature, length, revision, *OEM_ID, *OEM_TABLE_ID, OEM_REVISION);
    t.write_bytes(HEADER_CREATOR_ID, CREATOR_ID);
    t.write_u32(HEADER_CREATOR_REVISION, CREATOR_REVISION);
    t
}

/// The bytes of a crate object.
fn to_bytes(obj: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    obj.to_aml_bytes(&mut out);
    out
}

/// A generic address structure for an I/O port register.
fn gas_io(port: u16, bit_width: u8, access_size: AccessSize) -> GAS {
    GAS::new(AddressSpace::SystemIo, bit_width, 0, access_size, u64::from(port))
}

fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    to_bytes(&Rsdp::new(*OEM_ID, xsdt_addr))
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut t = sdt(b"XSDT", HEADER_LEN as u32, XSDT_REVISION);
    for &e in entries {
        t.append(e);
    }
    t.as_slice().to_vec()
}

fn fadt(spec: &AcpiSpec, dsdt_addr: u64, facs_addr: u64) -> Result<Vec<u8>, AcpiError> {
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
    let mut f = FADTBuilder::new(*OEM_ID, *OEM_TABLE_ID, OEM_REVISION);
    f.creator_id = *CREATOR_ID;
    f.creator_revision = CREATOR_REVISION.to_le_bytes();
    f.fadt_minor_version = FADT_MINOR;
    f.firmware_ctrl = facs32.into();
    f.dsdt = dsdt32.into();
    f.x_firmware_ctrl = facs_addr.into();
    f.x_dsdt = dsdt_addr.into();
    f.sci_int = u16::from(SCI_IRQ).into();
    // SMI_CMD stays 0: no SMI command port, always in ACPI mode.
    f.pm1a_evt_blk = u32::from(spec.pm1a_evt_port).into();
    f.pm1a_cnt_blk = u32::from(spec.pm1a_cnt_port).into();
    // The 24-bit PM timer (TMR_VAL_EXT clear); no PM2, no GPE blocks.
    f.pm_tmr_blk = u32::from(spec.pm_tmr_port).into();
    f.pm1_evt_len = PM1_EVT_LEN;
    f.pm1_cnt_len = PM1_CNT_LEN;
    f.pm_tmr_len = PM_TMR_LEN;
    f.p_lvl2_lat = P_LVL2_UNSUPPORTED.into();
    f.p_lvl3_lat = P_LVL3_UNSUPPORTED.into();
    f.iapc_boot_arch = iapc_boot_arch(spec).into();
    f.reset_reg = gas_io(spec.reset_port, 8, AccessSize::ByteAccess);
    f.reset_value = RESET_VALUE;
    f.x_pm1a_evt_blk = gas_io(spec.pm1a_evt_port, PM1_EVT_LEN * 8, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = gas_io(spec.pm1a_cnt_port, PM1_CNT_LEN * 8, AccessSize::WordAccess);
    f.x_pm_tmr_blk = gas_io(spec.pm_tmr_port, PM_TMR_LEN * 8, AccessSize::DwordAccess);
    let f = FADT_FLAGS.iter().fold(f, |f, &flag| f.flag(flag));
    Ok(to_bytes(&f.finalize()))
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
    let mut t = sdt(b"APIC", MADT_FIXED_LEN as u32, MADT_REVISION);
    t.write_u32(MADT_LAPIC_ADDR, spec.lapic_addr);
    let flags = if spec.legacy_pic { MADT_PCAT_COMPAT } else { 0 };
    t.write_u32(MADT_FLAGS, flags);

    let mut entries = Vec::with_capacity(
        spec.cpus.len() * MADT_LAPIC_LEN + MADT_IOAPIC_LEN + MADT_ISO_LEN + MADT_LAPIC_NMI_LEN,
    );
    for (uid, &apic_id) in spec.cpus.iter().enumerate() {
        // validate() bounds the count to MAX_CPUS < 0xff.
        let uid = u8::try_from(uid).map_err(|_| AcpiError::TooManyCpus {
            count: spec.cpus.len(),
        })?;
        ProcessorLocalApic::new(uid, apic_id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    IoApic::new(spec.ioapic_id, spec.ioapic_addr, 0).to_aml_bytes(&mut entries);

    // The crate has no interrupt source override or local APIC NMI entry
    // (ACPI 6.4 §5.2.12.5, §5.2.12.7).
    entries.extend_from_slice(&[MADT_TYPE_ISO, MADT_ISO_LEN as u8, ISA_BUS, SCI_IRQ]);
    entries.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
    entries.extend_from_slice(&INTI_ACTIVE_HIGH_LEVEL.to_le_bytes());

    entries.extend_from_slice(&[MADT_TYPE_LAPIC_NMI, MADT_LAPIC_NMI_LEN as u8, ALL_PROCESSORS]);
    entries.extend_from_slice(&INTI_CONFORMING.to_le_bytes());
    entries.push(NMI_LINT);

    t.append_slice(&entries);
    Ok(t.as_slice().to_vec())
}

fn facs() -> Vec<u8> {
    // Hardware signature, waking vectors, global lock, flags: all 0.
    let mut f = FACS::new();
    f.version = FACS_VERSION;
    to_bytes(&f)
}

fn dsdt(spec: &AcpiSpec) -> Vec<u8> {
    let mut t = sdt(b"DSDT", HEADER_LEN as u32, DSDT_REVISION);
    t.append_slice(&dsdt_aml(spec));
    t.as_slice().to_vec()
}

/// The DSDT's definition block body.
fn dsdt_aml(spec: &AcpiSpec) -> Vec<u8> {
    let mut out = aml_sleep_state("_S3_", S3_SLP_TYP);
    out.extend_from_slice(&aml_sleep_state("_S5_", S5_SLP_TYP));
    let mut sb = aml_com1();
    if let Some((port, len)) = spec.fw_cfg {
        sb.extend_from_slice(&aml_fw_cfg(port, len));
    }
    out.extend_from_slice(&aml::Scope::raw("_SB_".into(), sb));
    out
}

#[cfg(test)]
mod tests;
