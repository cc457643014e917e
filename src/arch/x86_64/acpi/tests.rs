//! Unit tests of the parent module.
use super::*;
use vm_memory::GuestMemoryMmap;

fn spec(n: usize) -> AcpiSpec {
    AcpiSpec {
        cpus: (0..n).map(|i| i as u8).collect(),
        ioapic_id: 0,
        ioapic_addr: 0xfec0_0000,
        lapic_addr: 0xfee0_0000,
        pm1a_evt_port: 0x600,
        pm1a_cnt_port: 0x604,
        pm_tmr_port: 0x608,
        reset_port: 0xcf9,
        legacy_pic: true,
        fw_cfg: None,
    }
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The `_S5` object as the ACPICA compiler emits it.
const S5_AML: [u8; 14] = [
    0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00,
];

/// The `_S3` object: `Package (4) { One, One, Zero, Zero }`.
const S3_AML: [u8; 12] = [
    0x08, b'_', b'S', b'3', b'_', 0x12, 0x06, 0x04, 0x01, 0x01, 0x00, 0x00,
];

/// The DSDT body `iasl` 20200925 compiles from the source in the module
/// documentation.
const IASL_DSDT_BODY: [u8; 77] = [
    0x08, 0x5f, 0x53, 0x33, 0x5f, 0x12, 0x06, 0x04, 0x01, 0x01, 0x00, 0x00, //
    0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00, 0x10, 0x32, 0x5f,
    0x53, 0x42, 0x5f, 0x5b, 0x82, 0x2b, 0x43, 0x4f, 0x4d, 0x31, 0x08, 0x5f, 0x48, 0x49, 0x44, 0x0c, 0x41,
    0xd0, 0x05, 0x01, 0x08, 0x5f, 0x55, 0x49, 0x44, 0x01, 0x08, 0x5f, 0x43, 0x52, 0x53, 0x11, 0x10, 0x0a,
    0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00,
];

/// The tables of a blob, found by following its pointers from the RSDP
/// the way a guest does (addresses are guest-physical).
struct Tables<'a> {
    rsdp: &'a [u8],
    xsdt: &'a [u8],
    fadt: &'a [u8],
    dsdt: &'a [u8],
    madt: &'a [u8],
    facs: &'a [u8],
}

/// Slices the table at guest-physical `addr` out of `blob` (placed at
/// `base`), checking its signature, length and checksum.
fn table<'a>(blob: &'a [u8], base: u64, addr: u64, sig: &[u8; 4]) -> &'a [u8] {
    assert!(addr >= base, "{} below the blob", String::from_utf8_lossy(sig));
    let off = (addr - base) as usize;
    assert_eq!(off % 8, 0, "{} is 8-byte aligned", String::from_utf8_lossy(sig));
    assert_eq!(&blob[off..off + 4], sig);
    let len = u32_at(blob, off + 4) as usize;
    let t = &blob[off..off + len];
    assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
    assert_eq!(&t[10..16], OEM_ID);
    assert_eq!(&t[16..24], OEM_TABLE_ID);
    assert_eq!(u32_at(t, 24), 1);
    assert_eq!(&t[28..32], CREATOR_ID);
    assert_eq!(u32_at(t, 32), 1);
    t
}

fn parse(blob: &[u8], base: u64) -> Tables<'_> {
    let rsdp = &blob[..36];
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
    assert_eq!(&rsdp[9..15], OEM_ID);
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(u32_at(rsdp, 16), 0, "no RSDT");
    assert_eq!(u32_at(rsdp, 20), 36, "RSDP length");
    assert_eq!(&rsdp[33..36], &[0; 3]);

    let xsdt = table(blob, base, u64_at(rsdp, 24), b"XSDT");
    assert_eq!(xsdt[8], 1);
    assert_eq!(xsdt.len(), 36 + 16, "two entries");
    let fadt = table(blob, base, u64_at(xsdt, 36), b"FACP");
    let madt = table(blob, base, u64_at(xsdt, 44), b"APIC");
    let dsdt = table(blob, base, u64_at(fadt, 140), b"DSDT");

    let facs_addr = u64_at(fadt, 132);
    assert_eq!(facs_addr % 64, 0, "FACS 64-byte aligned");
    let off = (facs_addr - base) as usize;
    let facs = &blob[off..off + 64];
    assert_eq!(&facs[..4], b"FACS");
    assert_eq!(u32_at(facs, 4), 64);
    Tables {
        rsdp,
        xsdt,
        fadt,
        dsdt,
        madt,
        facs,
    }
}

/// MADT entries as (type, bytes), checking each entry's length field.
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 44;
    while at < madt.len() {
        let (ty, len) = (madt[at], madt[at + 1] as usize);
        let expected = match ty {
            0 => 8,
            1 => 12,
            2 => 10,
            4 => 6,
            other => panic!("unexpected MADT entry type {other}"),
        };
        assert_eq!(len, expected, "type {ty} length");
        out.push((ty, madt[at..at + len].to_vec()));
        at += len;
    }
    assert_eq!(at, madt.len(), "entries fill the MADT exactly");
    out
}

#[test]
fn acpi_checksums_lengths_and_pointers() {
    for n in [1, 2, 4, 254] {
        let s = spec(n);
        let blob = build(&s, RSDP_ADDR).unwrap();
        assert!(RSDP_ADDR + blob.len() as u64 <= TABLES_END, "{n} CPUs fit");
        let t = parse(&blob, RSDP_ADDR);
        assert_eq!(t.rsdp.len(), 36);
        assert_eq!(t.fadt.len(), 276);
        assert_eq!(t.madt.len(), 44 + 8 * n + 12 + 10 + 6);
        assert_eq!(t.xsdt.len(), 52);
        assert_eq!(t.dsdt.len(), 36 + IASL_DSDT_BODY.len());
        // Order: RSDP, XSDT, FADT, DSDT, MADT, FACS.
        let addr = |t: &[u8]| t.as_ptr() as usize - blob.as_ptr() as usize;
        assert_eq!(addr(t.xsdt), 40);
        assert!(addr(t.xsdt) < addr(t.fadt));
        assert!(addr(t.fadt) < addr(t.dsdt));
        assert!(addr(t.dsdt) < addr(t.madt));
        assert!(addr(t.madt) + t.madt.len() <= addr(t.facs));
        assert_eq!(addr(t.facs) + 64, blob.len());
    }
}

#[test]
fn acpi_rsdp_and_facs_fields() {
    let blob = build(&spec(1), RSDP_ADDR).unwrap();
    let t = parse(&blob, RSDP_ADDR);
    assert_eq!(u64_at(t.rsdp, 24), RSDP_ADDR + 40);
    assert_eq!(t.facs[32], 2, "FACS version");
    assert_eq!(&t.facs[8..32], &[0; 24], "signature, vectors, lock, flags");
    assert_eq!(&t.facs[33..], &[0; 31]);
}

#[test]
fn acpi_fadt_fields_at_spec_offsets() {
    for legacy_pic in [true, false] {
        let mut s = spec(2);
        s.legacy_pic = legacy_pic;
        s.pm1a_evt_port = 0x600;
        s.pm1a_cnt_port = 0x604;
        s.reset_port = 0xcf9;
        let blob = build(&s, RSDP_ADDR).unwrap();
        let t = parse(&blob, RSDP_ADDR);
        let f = t.fadt;
        assert_eq!(f[8], 6, "FADT major version");
        assert_eq!(f[131], 4, "FADT minor version");
        assert_eq!(
            u64::from(u32_at(f, 36)),
            u64_at(f, 132),
            "FIRMWARE_CTRL = X_FIRMWARE_CTRL"
        );
        assert_eq!(u64::from(u32_at(f, 40)), u64_at(f, 140), "DSDT = X_DSDT");
        assert_eq!(f[45], 0, "Preferred_PM_Profile unspecified");
        assert_eq!(u16_at(f, 46), 9, "SCI_INT");
        assert_eq!(u32_at(f, 48), 0, "SMI_CMD: always in ACPI mode");
        assert_eq!(&f[52..56], &[0; 4], "ACPI_ENABLE/DISABLE, S4BIOS_REQ, PSTATE_CNT");
        assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(f, 60), 0, "PM1b_EVT_BLK");
        assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(f, 68), 0, "PM1b_CNT_BLK");
        assert_eq!(u32_at(f, 72), 0, "PM2_CNT_BLK");
        assert_eq!(u32_at(f, 76), 0x608, "PM_TMR_BLK");
        assert_eq!(u32_at(f, 80), 0, "GPE0_BLK");
        assert_eq!(u32_at(f, 84), 0, "GPE1_BLK");
        assert_eq!(f[88], 4, "PM1_EVT_LEN");
        assert_eq!(f[89], 2, "PM1_CNT_LEN");
        assert_eq!(f[90], 0, "PM2_CNT_LEN");
        assert_eq!(f[91], 4, "PM_TMR_LEN");
        assert_eq!(&f[92..96], &[0; 4], "GPE lengths, GPE1_BASE, CST_CNT");
        assert_eq!(u16_at(f, 96), 101, "P_LVL2_LAT: no C2");
        assert_eq!(u16_at(f, 98), 1001, "P_LVL3_LAT: no C3");
        assert_eq!(f[108], 0, "CENTURY");
        let boot_arch = u16_at(f, 109);
        assert_eq!(
            boot_arch,
            if legacy_pic { 0b111 } else { 0b100 },
            "IAPC_BOOT_ARCH"
        );
        assert_eq!(boot_arch & (1 << 3), 0, "MSI not flagged unsupported");
        assert_eq!(boot_arch & (1 << 5), 0, "CMOS RTC not flagged absent");
        assert_eq!(f[111], 0);
        let flags = u32_at(f, 112);
        assert_eq!(flags, (1 << 0) | (1 << 2) | (1 << 5) | (1 << 10), "Flags");
        assert_eq!(flags & (1 << 20), 0, "not HW_REDUCED_ACPI");
        assert_eq!(flags & (1 << 8), 0, "TMR_VAL_EXT clear: 24-bit PM timer");
        assert_eq!(
            &f[116..128],
            &[1, 8, 0, 1, 0xf9, 0x0c, 0, 0, 0, 0, 0, 0],
            "RESET_REG"
        );
        assert_eq!(f[128], 0x06, "RESET_VALUE");
        assert_eq!(u16_at(f, 129), 0, "ARM_BOOT_ARCH");
        let facs = u64_at(f, 132);
        assert!(facs > RSDP_ADDR && facs < TABLES_END, "X_FIRMWARE_CTRL");
        assert_eq!(
            u64_at(f, 140),
            t.dsdt.as_ptr() as u64 - blob.as_ptr() as u64 + RSDP_ADDR
        );
        assert_eq!(
            &f[148..160],
            &[1, 32, 0, 2, 0x00, 0x06, 0, 0, 0, 0, 0, 0],
            "X_PM1a_EVT_BLK"
        );
        assert_eq!(&f[160..172], &[0; 12], "X_PM1b_EVT_BLK");
        assert_eq!(
            &f[172..184],
            &[1, 16, 0, 2, 0x04, 0x06, 0, 0, 0, 0, 0, 0],
            "X_PM1a_CNT_BLK"
        );
        assert_eq!(&f[184..208], &[0; 24], "X_PM1b_CNT_BLK, X_PM2_CNT_BLK");
        assert_eq!(
            &f[208..220],
            &[1, 32, 0, 3, 0x08, 0x06, 0, 0, 0, 0, 0, 0],
            "X_PM_TMR_BLK"
        );
        assert_eq!(&f[220..276], &[0; 56], "GPE0/1, sleep registers, hypervisor ID");
    }
}

#[test]
fn acpi_fadt_other_ports() {
    let mut s = spec(1);
    s.pm1a_evt_port = 0xb000;
    s.pm1a_cnt_port = 0xb004;
    s.reset_port = 0x64;
    let blob = build(&s, RSDP_ADDR).unwrap();
    let f = parse(&blob, RSDP_ADDR).fadt;
    assert_eq!(u32_at(f, 56), 0xb000);
    assert_eq!(u64_at(f, 148 + 4), 0xb000);
    assert_eq!(u32_at(f, 64), 0xb004);
    assert_eq!(u64_at(f, 172 + 4), 0xb004);
    assert_eq!(u64_at(f, 116 + 4), 0x64);
}

#[test]
fn acpi_madt_entries() {
    for legacy_pic in [true, false] {
        let mut s = spec(4);
        s.cpus = vec![3, 0, 7, 9];
        s.ioapic_id = 2;
        s.legacy_pic = legacy_pic;
        let blob = build(&s, RSDP_ADDR).unwrap();
        let m = parse(&blob, RSDP_ADDR).madt;
        assert_eq!(m[8], 5, "MADT revision");
        assert_eq!(u32_at(m, 36), 0xfee0_0000);
        assert_eq!(u32_at(m, 40), u32::from(legacy_pic), "PCAT_COMPAT");
        let entries = madt_entries(m);
        let lapics: Vec<_> = entries.iter().filter(|(t, _)| *t == 0).collect();
        assert_eq!(lapics.len(), 4);
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e[2] as usize, i, "processor UID");
            assert_eq!(e[3], s.cpus[i], "APIC ID");
            assert_eq!(u32_at(e, 4), 1, "enabled");
        }
        let rest: Vec<_> = entries[4..].iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(
            rest,
            vec![
                vec![1, 12, 2, 0, 0x00, 0x00, 0xc0, 0xfe, 0, 0, 0, 0],
                vec![2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0x00],
                vec![4, 6, 0xff, 0, 0, 1],
            ]
        );
        // No IRQ0 override: berth routes ISA IRQ n to pin n.
        assert!(!entries.iter().any(|(t, e)| *t == 2 && e[3] == 0));
    }
}

#[test]
fn acpi_madt_one_lapic_per_cpu() {
    for n in [1, 2, 4, 254] {
        let mut s = spec(n);
        s.cpus = (0..n).map(|i| ((i * 7 + 3) % 255) as u8).collect();
        let blob = build(&s, RSDP_ADDR).unwrap();
        let entries = madt_entries(parse(&blob, RSDP_ADDR).madt);
        let ids: Vec<u8> = entries
            .iter()
            .filter(|(t, _)| *t == 0)
            .map(|(_, e)| e[3])
            .collect();
        assert_eq!(ids, s.cpus, "{n} CPUs");
        assert_eq!(entries.len(), n + 3);
    }
}

#[test]
fn acpi_s5_bytes() {
    assert_eq!(aml_sleep_state("_S5_", S5_SLP_TYP), S5_AML);
    assert_eq!(aml_sleep_state("_S3_", S3_SLP_TYP), S3_AML);
    // PkgLength 8 = itself, NumElements and the six element bytes.
    assert_eq!(S5_AML[6] as usize, S5_AML.len() - 6);
}

#[test]
fn acpi_dsdt_matches_iasl() {
    assert_eq!(dsdt_aml(&spec(1)), IASL_DSDT_BODY);
    let blob = build(&spec(1), RSDP_ADDR).unwrap();
    let d = parse(&blob, RSDP_ADDR).dsdt;
    assert_eq!(d[8], 2, "DSDT revision");
    assert_eq!(&d[36..], &IASL_DSDT_BODY);
    assert!(d.windows(S5_AML.len()).any(|w| w == S5_AML));
    assert!(d.windows(S3_AML.len()).any(|w| w == S3_AML));
}

#[test]
fn acpi_shared_constants_match_device() {
    use crate::devices::acpi_pm;
    assert_eq!(u16::from(S5_SLP_TYP), acpi_pm::S5_SLP_TYP);
    assert_eq!(RESET_VALUE & acpi_pm::RESET_BIT, acpi_pm::RESET_BIT);
    assert_eq!(u64::from(PM1_EVT_LEN), acpi_pm::PM1_EVT_LEN);
    assert_eq!(u64::from(PM1_CNT_LEN), acpi_pm::PM1_CNT_LEN);
    assert_eq!(u16::from(S3_SLP_TYP), acpi_pm::S3_SLP_TYP);
    assert_eq!(u64::from(PM_TMR_LEN), crate::devices::pm_timer::PM_TMR_LEN);
}

#[test]
fn acpi_deterministic_and_relocatable() {
    let s = spec(8);
    assert_eq!(build(&s, RSDP_ADDR).unwrap(), build(&spec(8), RSDP_ADDR).unwrap());
    // Another 16-byte aligned base: only pointers, padding before the
    // FACS and checksums change; every pointer is still consistent.
    for base in [RSDP_ADDR + 0x10, RSDP_ADDR + 0x30, 0x9_0000] {
        let blob = build(&s, base).unwrap();
        let t = parse(&blob, base);
        assert_eq!(u64_at(t.rsdp, 24), base + 40);
        assert_eq!(madt_entries(t.madt).len(), 8 + 3);
    }
}

#[test]
fn acpi_errors() {
    assert!(matches!(build(&spec(0), RSDP_ADDR), Err(AcpiError::NoCpus)));
    let mut s = spec(1);
    s.cpus = (0..255).collect();
    assert!(matches!(
        build(&s, RSDP_ADDR),
        Err(AcpiError::TooManyCpus { count: 255 })
    ));
    s.cpus = vec![0, 1, 0xff];
    assert!(matches!(
        build(&s, RSDP_ADDR),
        Err(AcpiError::BroadcastApicId { index: 2 })
    ));
    s.cpus = vec![0, 5, 5];
    assert!(matches!(
        build(&s, RSDP_ADDR),
        Err(AcpiError::DuplicateApicId {
            id: 5,
            first: 1,
            second: 2
        })
    ));
    for off in [1, 4, 8] {
        assert!(matches!(
            build(&spec(1), RSDP_ADDR + off),
            Err(AcpiError::Misaligned { .. })
        ));
    }
    let err = build(&spec(254), TABLES_END - 0x400).unwrap_err();
    assert!(matches!(err, AcpiError::PastTablesEnd { .. }), "{err}");
    assert!(err.to_string().contains("0xf0000"), "{err}");
    assert!(matches!(
        build(&spec(1), TABLES_END),
        Err(AcpiError::PastTablesEnd { .. })
    ));
    assert!(matches!(
        build(&spec(1), u64::MAX - 15),
        Err(AcpiError::PastTablesEnd { .. })
    ));

    let mut s = spec(1);
    s.pm1a_evt_port = 0;
    assert!(matches!(build(&s, RSDP_ADDR), Err(AcpiError::BadPort { .. })));
    let mut s = spec(1);
    s.pm1a_cnt_port = 0xffff;
    assert!(matches!(build(&s, RSDP_ADDR), Err(AcpiError::BadPort { .. })));
    let mut s = spec(1);
    s.pm1a_cnt_port = 0x603;
    assert!(matches!(build(&s, RSDP_ADDR), Err(AcpiError::PortOverlap { .. })));
    let mut s = spec(1);
    s.pm_tmr_port = 0x605;
    assert!(matches!(build(&s, RSDP_ADDR), Err(AcpiError::PortOverlap { .. })));
    let mut s = spec(1);
    s.pm_tmr_port = 0;
    assert!(matches!(build(&s, RSDP_ADDR), Err(AcpiError::BadPort { .. })));
    let mut s = spec(1);
    s.reset_port = 0x605;
    assert!(matches!(build(&s, RSDP_ADDR), Err(AcpiError::PortOverlap { .. })));
    // Adjacent blocks are fine.
    let mut s = spec(1);
    s.reset_port = 0x606;
    assert!(build(&s, RSDP_ADDR).is_ok());
}

#[test]
fn acpi_max_cpus_fit_with_room() {
    let blob = build(&spec(MAX_CPUS), RSDP_ADDR).unwrap();
    assert!(blob.len() < 0x1000, "{} bytes", blob.len());
}

#[test]
fn acpi_write_and_scan_like_linux() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let s = spec(4);
    write(&s, &mem, RSDP_ADDR).unwrap();
    let mut image = vec![0u8; 0x2_0000];
    mem.read_slice(&mut image, GuestAddress(0xe0000)).unwrap();
    // Linux scans 0xe0000..0x100000 on 16-byte boundaries for a valid
    // RSDP (signature and the 20-byte checksum).
    let found = (0..image.len() - 36)
        .step_by(16)
        .find(|&a| &image[a..a + 8] == b"RSD PTR " && sum(&image[a..a + 20]) == 0)
        .expect("RSDP found");
    assert_eq!(found as u64 + 0xe0000, RSDP_ADDR);
    let t = parse(&image[found..], RSDP_ADDR);
    assert_eq!(madt_entries(t.madt).len(), 4 + 3);
}

#[test]
fn acpi_write_outside_memory_fails() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    assert!(matches!(
        write(&spec(1), &mem, RSDP_ADDR),
        Err(AcpiError::Memory { addr: RSDP_ADDR, .. })
    ));
}

#[test]
fn acpi_dsdt_fw_cfg_device() {
    // Device (FWCF) { Name (_HID, "QEMU0002") Name (_STA, 0x0B)
    //   Name (_CRS, ResourceTemplate () { IO (Decode16, 0x0510, 0x0510, 0x01, 0x0C) }) }
    // hand-assembled from ACPI 6.4 §20 (DeviceOp 5B 82, PkgLength 0x2E).
    let want: Vec<u8> = [
        &[0x5b, 0x82, 0x2e][..],
        b"FWCF",
        &[0x08],
        b"_HID",
        &[0x0d],
        b"QEMU0002\0",
        &[0x08],
        b"_STA",
        &[0x0a, 0x0b, 0x08],
        b"_CRS",
        &[
            0x11, 0x0d, 0x0a, 0x0a, 0x47, 0x01, 0x10, 0x05, 0x10, 0x05, 0x01, 0x0c, 0x79, 0x00,
        ],
    ]
    .concat();
    assert_eq!(aml_fw_cfg(0x510, 0x0c), want);
    let mut s = spec(1);
    let without = dsdt(&s);
    s.fw_cfg = Some((0x510, 0x0c));
    let with = dsdt(&s);
    assert!(with.len() >= without.len() + want.len());
    assert!(with.windows(want.len()).any(|w| w == want.as_slice()));
    assert!(!without.windows(8).any(|w| w == b"QEMU0002"));
    assert_eq!(sum(&with), 0, "checksum");
}

#[test]
fn acpi_bad_spec_refused_before_the_crate_builds() {
    // Each spec is refused by validate() alone, and build() returns that
    // error without reaching an acpi_tables builder (no panic).
    let bad: Vec<(&str, AcpiSpec)> = vec![
        ("no CPU", spec(0)),
        (
            "256 CPUs (UIDs are one byte)",
            AcpiSpec {
                cpus: (0..=255).collect(),
                ..spec(1)
            },
        ),
        (
            "broadcast APIC ID",
            AcpiSpec {
                cpus: vec![0xff],
                ..spec(1)
            },
        ),
        (
            "fw_cfg at port 0",
            AcpiSpec {
                fw_cfg: Some((0, 12)),
                ..spec(1)
            },
        ),
        (
            "empty fw_cfg",
            AcpiSpec {
                fw_cfg: Some((0x510, 0)),
                ..spec(1)
            },
        ),
        (
            "fw_cfg past 0xffff",
            AcpiSpec {
                fw_cfg: Some((0xfffc, 12)),
                ..spec(1)
            },
        ),
        (
            "fw_cfg over the PM timer",
            AcpiSpec {
                fw_cfg: Some((0x608, 2)),
                ..spec(1)
            },
        ),
    ];
    for (what, s) in bad {
        let want = validate(&s).expect_err(what).to_string();
        let got = std::panic::catch_unwind(|| build(&s, RSDP_ADDR))
            .unwrap_or_else(|_| panic!("{what}: build panicked"))
            .expect_err(what)
            .to_string();
        assert_eq!(got, want, "{what}");
    }
    assert!(validate(&AcpiSpec {
        fw_cfg: Some((0x510, 12)),
        ..spec(1)
    })
    .is_ok());
}
