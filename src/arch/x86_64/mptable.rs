//! Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI
//! finds its CPUs, its I/O APIC and the ISA interrupt routing.
//!
//! Everything is built from an [`MpTableSpec`] (values from berth's plan,
//! never from the host) as a plain byte vector with explicit little-endian
//! encoding, so the output is byte-for-byte deterministic and needs no
//! `unsafe`.
//!
//! # Layout
//!
//! At `base` (16-byte aligned):
//!
//! 1. the 16-byte MP floating pointer structure (`_MP_`), whose physical
//!    address pointer is `base + 16`;
//! 2. the 44-byte configuration table header (`PCMP`);
//! 3. the entries, in this order: one processor entry per CPU (the first is
//!    the BSP), one ISA bus, one I/O APIC, sixteen I/O interrupt assignments
//!    (ISA IRQ *n* → I/O APIC pin *n*, mirroring KVM's default GSI routing),
//!    and two local interrupt assignments (LINT0 = ExtINT, LINT1 = NMI, on
//!    every local APIC).
//!
//! # Placement
//!
//! Linux looks for the floating pointer in the first KiB of memory, in the
//! last KiB of base memory (`0x9fc00..0xa0000`, where berth's e820 RAM map
//! stops) and in the BIOS area `0xf0000..0x100000`. The last KiB of base
//! memory holds the table for up to [`EBDA_MAX_CPUS`] CPUs; [`place`] picks
//! [`MPTABLE_START`] when the table fits there and [`MPTABLE_BIOS_START`]
//! otherwise. The BIOS area is 64 KiB and never RAM in berth's e820 map, but
//! it is backed by guest memory (berth always maps the first MiB), so even
//! the largest table (255 CPUs, 5,320 bytes) fits.

use super::tables::set_checksum;
use super::{check_apic_ids, ApicIdError};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

/// Where the floating pointer goes when the whole table fits below
/// [`EBDA_END`]: the start of the extended BIOS data area (berth's e820 RAM
/// map excludes `0x9fc00..0x100000`).
pub const MPTABLE_START: u64 = 0x9fc00;

/// End (exclusive) of the EBDA kilobyte Linux scans for a floating pointer.
pub const EBDA_END: u64 = 0xa0000;

/// Where the floating pointer goes when the table is too large for the EBDA
/// kilobyte: the start of the 64 KiB BIOS area, which Linux also scans.
pub const MPTABLE_BIOS_START: u64 = 0xf0000;

/// End (exclusive) of the BIOS area.
pub const BIOS_END: u64 = 0x10_0000;

/// The largest CPU count whose table fits in `MPTABLE_START..EBDA_END`.
pub const EBDA_MAX_CPUS: usize = ((EBDA_END - MPTABLE_START) as usize - FIXED_SIZE) / PROCESSOR_ENTRY_SIZE;

/// Most CPUs one table describes (APIC ID 0xff is the broadcast ID).
pub const MAX_CPUS: usize = 255;

/// ISA IRQs routed through the I/O APIC (0..16, each to the pin of the same
/// number).
pub const ISA_IRQS: u8 = 16;

/// Size of the floating pointer structure.
const FLOATING_SIZE: usize = 16;
/// Size of the configuration table header.
const HEADER_SIZE: usize = 44;
/// Size of a processor entry.
const PROCESSOR_ENTRY_SIZE: usize = 20;
/// Size of every other entry type.
const SMALL_ENTRY_SIZE: usize = 8;
/// Local interrupt entries (LINT0, LINT1).
const LOCAL_INTS: usize = 2;
/// Bytes that do not depend on the CPU count: floating pointer, header, bus,
/// I/O APIC, 16 I/O interrupt and 2 local interrupt entries.
const FIXED_SIZE: usize =
    FLOATING_SIZE + HEADER_SIZE + SMALL_ENTRY_SIZE * (2 + ISA_IRQS as usize + LOCAL_INTS);

const SPEC_REV: u8 = 4;
const OEM_ID: &[u8; 8] = b"BERTH   ";
const PRODUCT_ID: &[u8; 12] = b"BERTHVM     ";
const BUS_TYPE_ISA: &[u8; 6] = b"ISA   ";
const ISA_BUS_ID: u8 = 0;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INT: u8 = 3;
const ENTRY_LOCAL_INT: u8 = 4;

const LAPIC_VERSION: u8 = 0x14;
const CPU_ENABLED: u8 = 1 << 0;
const CPU_BSP: u8 = 1 << 1;
/// Family 6, model 0, stepping 0.
const CPU_SIGNATURE: u32 = 0x600;
/// CPUID.1:EDX FPU (bit 0) | APIC (bit 9).
const CPU_FEATURES: u32 = 0x201;

const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_ENABLED: u8 = 1 << 0;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Polarity and trigger mode "conforms to the bus".
const INT_FLAGS_CONFORMING: u16 = 0;
/// Destination local APIC ID meaning "every local APIC".
const ALL_LAPICS: u8 = 0xff;

/// One MP-table description, all from berth's plan (no host values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpTableSpec {
    /// Local APIC IDs, one per vCPU; index 0 is the bootstrap processor.
    pub cpus: Vec<u8>,
    /// The I/O APIC's ID.
    pub ioapic_id: u8,
    /// The I/O APIC's MMIO address (normally `0xfec00000`).
    pub ioapic_addr: u32,
    /// The local APIC MMIO address (normally `0xfee00000`).
    pub lapic_addr: u32,
    /// Input pins of the I/O APIC (KVM's has 24); at least [`ISA_IRQS`].
    pub ioapic_pins: u8,
}

/// Why an MP table cannot be built or written.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// The spec lists no CPU, so there is no bootstrap processor.
    #[error("MP table needs at least one CPU")]
    NoCpus,
    /// More CPUs than local APIC IDs below the broadcast ID.
    #[error("MP table lists {count} CPUs; at most {MAX_CPUS} fit (APIC ID 0xff is broadcast)")]
    TooManyCpus {
        /// CPUs in the spec.
        count: usize,
    },
    /// A CPU uses the broadcast APIC ID.
    #[error("CPU {index} has local APIC ID 0xff, the broadcast ID")]
    BroadcastApicId {
        /// Position in [`MpTableSpec::cpus`].
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
    /// The I/O APIC has too few pins for the ISA IRQs routed to it.
    #[error("I/O APIC has {pins} pins; the ISA IRQ routing needs at least {ISA_IRQS}")]
    TooFewIoapicPins {
        /// Pins in the spec.
        pins: u8,
    },
    /// The floating pointer must sit on a 16-byte boundary to be found.
    #[error("MP table base {base:#x} is not 16-byte aligned")]
    Misaligned {
        /// Requested base.
        base: u64,
    },
    /// The MP structures carry 32-bit physical addresses.
    #[error("MP table at {base:#x} ({size} bytes) does not lie below 4 GiB")]
    Above4GiB {
        /// Requested base.
        base: u64,
        /// Table size in bytes.
        size: usize,
    },
    /// The table starts inside a scanned legacy window (the EBDA kilobyte or
    /// the BIOS area) but does not end inside it.
    #[error(
        "MP table for {cpus} CPUs at {base:#x} ({size} bytes) runs past {window_end:#x}; \
         at most {max_cpus} CPUs fit there (use mptable::place)"
    )]
    WindowOverflow {
        /// CPUs in the spec.
        cpus: usize,
        /// Requested base.
        base: u64,
        /// Table size in bytes.
        size: usize,
        /// End of the window `base` lies in.
        window_end: u64,
        /// CPUs whose table fits between `base` and `window_end`.
        max_cpus: usize,
    },
    /// Writing to guest memory failed.
    #[error("cannot write MP table to guest memory at {base:#x}: {source}")]
    Memory {
        /// Where the table was to go.
        base: u64,
        /// Why.
        source: GuestMemoryError,
    },
}

/// Total bytes [`build`] produces for `spec`: floating pointer, header and
/// all entries.
pub fn size(spec: &MpTableSpec) -> usize {
    spec.cpus
        .len()
        .saturating_mul(PROCESSOR_ENTRY_SIZE)
        .saturating_add(FIXED_SIZE)
}

/// Where to put the table for `spec`: [`MPTABLE_START`] if it fits below
/// [`EBDA_END`] (up to [`EBDA_MAX_CPUS`] CPUs), else [`MPTABLE_BIOS_START`].
/// Both windows are scanned by Linux and neither is RAM in berth's e820 map.
pub fn place(spec: &MpTableSpec) -> u64 {
    if MPTABLE_START.saturating_add(size(spec) as u64) <= EBDA_END {
        MPTABLE_START
    } else {
        MPTABLE_BIOS_START
    }
}

/// The MP table bytes to place at guest-physical `base`.
///
/// # Errors
///
/// Rejects a spec with no CPUs, more than [`MAX_CPUS`] CPUs, a CPU with APIC
/// ID 0xff, duplicate APIC IDs or fewer than [`ISA_IRQS`] I/O APIC pins; and a
/// `base` that is not 16-byte aligned, would put the table above 4 GiB, or
/// starts in the EBDA kilobyte or BIOS area but overruns it (the error names
/// how many CPUs would fit).
pub fn build(spec: &MpTableSpec, base: u64) -> Result<Vec<u8>, MpTableError> {
    validate(spec)?;
    let total = size(spec);
    check_base(spec, base, total)?;

    // The pointer and addresses are 32-bit; check_base proved they fit.
    let table_addr = u32::try_from(base.saturating_add(FLOATING_SIZE as u64))
        .map_err(|_| MpTableError::Above4GiB { base, size: total })?;
    let entries = entries(spec);
    let base_len = HEADER_SIZE + entries.len();
    let too_big = || MpTableError::TooManyCpus {
        count: spec.cpus.len(),
    };
    let base_len16 = u16::try_from(base_len).map_err(|_| too_big())?;
    let count = u16::try_from(entry_count(spec)).map_err(|_| too_big())?;

    let mut header = Vec::with_capacity(base_len);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&base_len16.to_le_bytes());
    header.push(SPEC_REV);
    header.push(0); // checksum, patched below
    header.extend_from_slice(OEM_ID);
    header.extend_from_slice(PRODUCT_ID);
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&spec.lapic_addr.to_le_bytes());
    header.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    header.push(0); // extended table checksum
    header.push(0); // reserved
    header.extend_from_slice(&entries);
    set_checksum(&mut header, 7);

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&table_addr.to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(SPEC_REV);
    out.push(0); // checksum, patched below
    out.extend_from_slice(&[0; 5]); // feature bytes: 0 = configuration table present, no IMCR
    set_checksum(&mut out, 10);
    out.extend_from_slice(&header);
    Ok(out)
}

/// Writes [`build`]`(spec, base)` to `mem` at `base`.
///
/// # Errors
///
/// Everything [`build`] rejects, and a failed guest-memory write.
pub fn write<M>(spec: &MpTableSpec, mem: &M, base: u64) -> Result<(), MpTableError>
where
    M: Bytes<GuestAddress, E = GuestMemoryError> + ?Sized,
{
    let bytes = build(spec, base)?;
    mem.write_slice(&bytes, GuestAddress(base))
        .map_err(|source| MpTableError::Memory { base, source })
}

impl From<ApicIdError> for MpTableError {
    fn from(e: ApicIdError) -> Self {
        match e {
            ApicIdError::Empty => MpTableError::NoCpus,
            ApicIdError::TooMany { count } => MpTableError::TooManyCpus { count },
            ApicIdError::Broadcast { index } => MpTableError::BroadcastApicId { index },
            ApicIdError::Duplicate { id, first, second } => {
                MpTableError::DuplicateApicId { id, first, second }
            }
        }
    }
}

fn validate(spec: &MpTableSpec) -> Result<(), MpTableError> {
    check_apic_ids(&spec.cpus, MAX_CPUS)?;
    if spec.ioapic_pins < ISA_IRQS {
        return Err(MpTableError::TooFewIoapicPins {
            pins: spec.ioapic_pins,
        });
    }
    Ok(())
}

fn check_base(spec: &MpTableSpec, base: u64, total: usize) -> Result<(), MpTableError> {
    if !base.is_multiple_of(16) {
        return Err(MpTableError::Misaligned { base });
    }
    let end = match base.checked_add(total as u64) {
        Some(end) if end <= 1 << 32 => end,
        _ => return Err(MpTableError::Above4GiB { base, size: total }),
    };
    for (start, window_end) in [(MPTABLE_START, EBDA_END), (MPTABLE_BIOS_START, BIOS_END)] {
        if (start..window_end).contains(&base) && end > window_end {
            let room = (window_end - base) as usize;
            return Err(MpTableError::WindowOverflow {
                cpus: spec.cpus.len(),
                base,
                size: total,
                window_end,
                max_cpus: room.saturating_sub(FIXED_SIZE) / PROCESSOR_ENTRY_SIZE,
            });
        }
    }
    Ok(())
}

fn entry_count(spec: &MpTableSpec) -> usize {
    spec.cpus.len() + 2 + usize::from(ISA_IRQS) + LOCAL_INTS
}

/// All configuration-table entries, in MP spec order.
fn entries(spec: &MpTableSpec) -> Vec<u8> {
    let mut e = Vec::with_capacity(size(spec) - FLOATING_SIZE - HEADER_SIZE);
    for (index, &id) in spec.cpus.iter().enumerate() {
        let flags = if index == 0 {
            CPU_ENABLED | CPU_BSP
        } else {
            CPU_ENABLED
        };
        e.extend_from_slice(&[ENTRY_PROCESSOR, id, LAPIC_VERSION, flags]);
        e.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        e.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        e.extend_from_slice(&[0; 8]);
    }

    e.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    e.extend_from_slice(BUS_TYPE_ISA);

    e.extend_from_slice(&[ENTRY_IOAPIC, spec.ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED]);
    e.extend_from_slice(&spec.ioapic_addr.to_le_bytes());

    for irq in 0..ISA_IRQS {
        e.extend_from_slice(&[ENTRY_IO_INT, INT_TYPE_INT]);
        e.extend_from_slice(&INT_FLAGS_CONFORMING.to_le_bytes());
        e.extend_from_slice(&[ISA_BUS_ID, irq, spec.ioapic_id, irq]);
    }

    for (int_type, lint) in [(INT_TYPE_EXTINT, 0), (INT_TYPE_NMI, 1)] {
        e.extend_from_slice(&[ENTRY_LOCAL_INT, int_type]);
        e.extend_from_slice(&INT_FLAGS_CONFORMING.to_le_bytes());
        e.extend_from_slice(&[ISA_BUS_ID, 0, ALL_LAPICS, lint]);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn spec(n: usize) -> MpTableSpec {
        MpTableSpec {
            cpus: (0..n).map(|i| i as u8).collect(),
            ioapic_id: 0,
            ioapic_addr: 0xfec0_0000,
            lapic_addr: 0xfee0_0000,
            ioapic_pins: 24,
        }
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// What a guest learns from the tables.
    #[derive(Debug, Default)]
    struct Parsed {
        /// (APIC ID, flags) per processor entry.
        cpus: Vec<(u8, u8)>,
        buses: Vec<(u8, [u8; 6])>,
        ioapics: Vec<(u8, u8, u8, u32)>,
        /// (type, flags, bus, bus irq, ioapic id, pin).
        io_ints: Vec<(u8, u16, u8, u8, u8, u8)>,
        /// (type, flags, bus, bus irq, lapic id, lint).
        local_ints: Vec<(u8, u16, u8, u8, u8, u8)>,
        lapic_addr: u32,
    }

    /// Scans `mem[start..start+len]` (guest-physical addresses, `mem` starts
    /// at 0) like Linux's smp_scan_config, follows the pointer and walks the
    /// entries by type and size.
    fn guest_parse(mem: &[u8], start: usize, len: usize) -> Option<Parsed> {
        let fp = (start..start + len)
            .step_by(16)
            .find(|&a| &mem[a..a + 4] == b"_MP_" && mem[a + 8] == 1 && sum(&mem[a..a + 16]) == 0)?;
        assert_eq!(mem[fp + 9], 4, "spec rev");
        assert_eq!(mem[fp + 11], 0, "default configuration would ignore the table");
        let t = u32_at(mem, fp + 4) as usize;
        assert_eq!(&mem[t..t + 4], b"PCMP");
        let base_len = u16_at(mem, t + 4) as usize;
        assert_eq!(sum(&mem[t..t + base_len]), 0, "config table checksum");
        assert_eq!(mem[t + 6], 4);
        assert_eq!(u16_at(mem, t + 40), 0, "no extended table");
        let count = u16_at(mem, t + 34) as usize;
        let mut p = Parsed {
            lapic_addr: u32_at(mem, t + 36),
            ..Parsed::default()
        };
        let mut at = t + 44;
        for _ in 0..count {
            let e = &mem[at..];
            let size = match e[0] {
                0 => {
                    p.cpus.push((e[1], e[3]));
                    20
                }
                1 => {
                    p.buses.push((e[1], e[2..8].try_into().unwrap()));
                    8
                }
                2 => {
                    p.ioapics.push((e[1], e[2], e[3], u32_at(e, 4)));
                    8
                }
                3 => {
                    p.io_ints.push((e[1], u16_at(e, 2), e[4], e[5], e[6], e[7]));
                    8
                }
                4 => {
                    p.local_ints.push((e[1], u16_at(e, 2), e[4], e[5], e[6], e[7]));
                    8
                }
                other => panic!("unknown entry type {other}"),
            };
            at += size;
        }
        assert_eq!(at, t + base_len, "entries fill the base table exactly");
        Some(p)
    }

    #[test]
    fn mptable_checksums_and_signatures() {
        for n in [1, 2, 4, 254] {
            let s = spec(n);
            let base = place(&s);
            let b = build(&s, base).unwrap();
            assert_eq!(b.len(), size(&s));
            assert_eq!(&b[0..4], b"_MP_");
            assert_eq!(sum(&b[0..16]), 0);
            assert_eq!(b[8], 1);
            assert_eq!(b[9], 4);
            assert_eq!(&b[11..16], &[0; 5]);
            assert_eq!(u64::from(u32_at(&b, 4)), base + 16);
            assert_eq!(&b[16..20], b"PCMP");
            assert_eq!(sum(&b[16..]), 0);
            assert_eq!(&b[24..32], b"BERTH   ");
            assert_eq!(&b[32..44], b"BERTHVM     ");
            assert_eq!(u32_at(&b, 16 + 28), 0);
            assert_eq!(u16_at(&b, 16 + 32), 0);
            assert_eq!(u32_at(&b, 16 + 36), 0xfee0_0000);
            assert_eq!(&b[16 + 40..16 + 44], &[0; 4]);
        }
    }

    #[test]
    fn mptable_length_and_count_fields_match() {
        for n in [1, 2, 4, 254] {
            let s = spec(n);
            let b = build(&s, place(&s)).unwrap();
            assert_eq!(usize::from(u16_at(&b, 16 + 4)), b.len() - 16);
            assert_eq!(usize::from(u16_at(&b, 16 + 34)), n + 1 + 1 + 16 + 2);
            assert_eq!(size(&s), 16 + 44 + 20 * n + 8 + 8 + 16 * 8 + 2 * 8);
        }
    }

    #[test]
    fn mptable_processor_entries() {
        let mut s = spec(4);
        s.cpus = vec![3, 0, 7, 9];
        let b = build(&s, MPTABLE_START).unwrap();
        for (i, &id) in s.cpus.iter().enumerate() {
            let e = &b[60 + 20 * i..60 + 20 * (i + 1)];
            assert_eq!(e[0], 0);
            assert_eq!(e[1], id);
            assert_eq!(e[2], 0x14);
            assert_eq!(e[3], if i == 0 { 3 } else { 1 });
            assert_eq!(u32_at(e, 4), 0x600);
            assert_eq!(u32_at(e, 8), 0x201);
            assert_eq!(&e[12..20], &[0; 8]);
        }
    }

    #[test]
    fn mptable_fixed_entries() {
        let mut s = spec(2);
        s.ioapic_id = 2;
        let b = build(&s, MPTABLE_START).unwrap();
        let mut at = 60 + 40;
        assert_eq!(&b[at..at + 8], &[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
        at += 8;
        assert_eq!(&b[at..at + 8], &[2, 2, 0x11, 1, 0x00, 0x00, 0xc0, 0xfe]);
        at += 8;
        for irq in 0..16u8 {
            assert_eq!(&b[at..at + 8], &[3, 0, 0, 0, 0, irq, 2, irq]);
            at += 8;
        }
        assert_eq!(&b[at..at + 8], &[4, 3, 0, 0, 0, 0, 0xff, 0]);
        assert_eq!(&b[at + 8..at + 16], &[4, 1, 0, 0, 0, 0, 0xff, 1]);
        assert_eq!(at + 16, b.len());
    }

    #[test]
    fn mptable_place() {
        assert_eq!(EBDA_MAX_CPUS, 40);
        assert_eq!(place(&spec(1)), MPTABLE_START);
        assert_eq!(place(&spec(4)), MPTABLE_START);
        assert_eq!(place(&spec(EBDA_MAX_CPUS)), MPTABLE_START);
        assert!(MPTABLE_START + size(&spec(EBDA_MAX_CPUS)) as u64 <= EBDA_END);
        assert!(MPTABLE_START + size(&spec(EBDA_MAX_CPUS + 1)) as u64 > EBDA_END);
        assert_eq!(place(&spec(EBDA_MAX_CPUS + 1)), MPTABLE_BIOS_START);
        assert_eq!(place(&spec(254)), MPTABLE_BIOS_START);
        assert!(MPTABLE_BIOS_START + size(&spec(MAX_CPUS)) as u64 <= BIOS_END);
        for n in [1, 2, 4, 40, 41, 254] {
            assert!(build(&spec(n), place(&spec(n))).is_ok(), "{n} CPUs");
        }
    }

    #[test]
    fn mptable_start_is_ebda() {
        assert_eq!(MPTABLE_START, super::super::layout::EBDA_START);
    }

    #[test]
    fn mptable_deterministic() {
        let s = spec(8);
        assert_eq!(
            build(&s, MPTABLE_START).unwrap(),
            build(&spec(8), MPTABLE_START).unwrap()
        );
        // The base only changes the floating pointer; the configuration
        // table holds no absolute address of its own.
        let a = build(&s, MPTABLE_START).unwrap();
        let b = build(&s, MPTABLE_BIOS_START).unwrap();
        assert_ne!(a[..16], b[..16]);
        assert_eq!(a[16..], b[16..]);
    }

    #[test]
    fn mptable_errors() {
        assert!(matches!(
            build(&spec(0), MPTABLE_START),
            Err(MpTableError::NoCpus)
        ));
        let mut s = spec(1);
        s.cpus = vec![0; 256];
        assert!(matches!(
            build(&s, MPTABLE_BIOS_START),
            Err(MpTableError::TooManyCpus { count: 256 })
        ));
        s.cpus = vec![0, 1, 0xff];
        assert!(matches!(
            build(&s, MPTABLE_START),
            Err(MpTableError::BroadcastApicId { index: 2 })
        ));
        s.cpus = vec![0, 5, 5];
        assert!(matches!(
            build(&s, MPTABLE_START),
            Err(MpTableError::DuplicateApicId {
                id: 5,
                first: 1,
                second: 2
            })
        ));
        let mut s = spec(1);
        s.ioapic_pins = 15;
        assert!(matches!(
            build(&s, MPTABLE_START),
            Err(MpTableError::TooFewIoapicPins { pins: 15 })
        ));
        assert!(matches!(
            build(&spec(1), MPTABLE_START + 8),
            Err(MpTableError::Misaligned { .. })
        ));
        assert!(matches!(
            build(&spec(1), 0xffff_ff80),
            Err(MpTableError::Above4GiB { .. })
        ));
        let err = build(&spec(64), MPTABLE_START).unwrap_err();
        assert!(matches!(
            err,
            MpTableError::WindowOverflow {
                cpus: 64,
                window_end: EBDA_END,
                max_cpus: 40,
                ..
            }
        ));
        assert!(err.to_string().contains("at most 40 CPUs"), "{err}");
        assert!(matches!(
            build(&spec(4), BIOS_END - 0x100),
            Err(MpTableError::WindowOverflow {
                window_end: BIOS_END,
                max_cpus: 1,
                ..
            })
        ));
        // Outside the legacy windows any aligned base below 4 GiB is fine.
        assert!(build(&spec(254), 0x10_0000).is_ok());
    }

    #[test]
    fn mptable_guest_finds_every_cpu() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        for n in [1, 2, 4, 254] {
            let mut s = spec(n);
            // Sparse, non-sorted IDs, BSP not ID 0.
            s.cpus = (0..n).map(|i| ((i * 7 + 3) % 255) as u8).collect();
            s.ioapic_id = 0xfe;
            let base = place(&s);
            // Clear both windows so an earlier table is not found.
            mem.write_slice(&vec![0; 0x10_0000 - 0x9fc00], GuestAddress(0x9fc00))
                .unwrap();
            write(&s, &mem, base).unwrap();
            let mut image = vec![0u8; 0x10_0000];
            mem.read_slice(&mut image, GuestAddress(0)).unwrap();

            // Linux: first KiB, last KiB of base memory, then the BIOS area.
            let p = guest_parse(&image, 0, 0x400)
                .or_else(|| guest_parse(&image, 0x9fc00, 0x400))
                .or_else(|| guest_parse(&image, 0xf0000, 0x10000))
                .expect("floating pointer found");
            let ids: Vec<u8> = p.cpus.iter().map(|c| c.0).collect();
            assert_eq!(ids, s.cpus, "{n} CPUs");
            assert_eq!(p.cpus[0].1, 3, "BSP enabled");
            assert!(p.cpus[1..].iter().all(|c| c.1 == 1), "APs enabled, not BSP");
            assert_eq!(p.buses, vec![(0, *b"ISA   ")]);
            assert_eq!(p.ioapics, vec![(0xfe, 0x11, 1, 0xfec0_0000)]);
            assert_eq!(p.io_ints.len(), 16);
            for (irq, e) in p.io_ints.iter().enumerate() {
                assert_eq!(*e, (0, 0, 0, irq as u8, 0xfe, irq as u8));
            }
            assert_eq!(p.local_ints, vec![(3, 0, 0, 0, 0xff, 0), (1, 0, 0, 0, 0xff, 1)]);
            assert_eq!(p.lapic_addr, 0xfee0_0000);
        }
    }

    #[test]
    fn mptable_write_outside_memory_fails() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(matches!(
            write(&spec(1), &mem, MPTABLE_START),
            Err(MpTableError::Memory {
                base: MPTABLE_START,
                ..
            })
        ));
    }
}
