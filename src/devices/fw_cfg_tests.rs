//! fw_cfg driven as Linux's qemu_fw_cfg driver and kvm-unit-tests'
//! lib/x86/fwcfg.c drive it.

use super::*;
use vm_memory::GuestAddress;

const E820: [(u64, u64, u32); 2] = [(0, 0x9fc00, 1), (0x10_0000, 0x3f0_0000, 1)];

fn inputs(dma: bool) -> Inputs<'static> {
    Inputs {
        ram_size: 0x400_0000,
        cpus: 2,
        max_cpus: 2,
        cmdline: "x86/emulator.flat -smp 2",
        e820: &E820,
        dma,
    }
}

fn device(dma: bool) -> (FwCfgPorts, FwCfgDma, GuestMemoryMmap) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let all = items(&inputs(dma)).into_iter().map(|i| (i.key, i.data));
    let dev = Arc::new(Mutex::new(FwCfg::new(all, mem.clone())));
    (FwCfgPorts(dev.clone()), FwCfgDma(dev), mem)
}

/// `out %ax, $0x510` (offset 0 of the window).
fn select(p: &mut FwCfgPorts, key: u16) {
    p.write(0, &key.to_le_bytes());
}

/// `rep insb` from 0x511 (offset 1).
fn insb(p: &mut FwCfgPorts, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            let mut b = [0u8];
            p.read(1, &mut b);
            b[0]
        })
        .collect()
}

/// kvm-unit-tests' fwcfg_get_u(index, bytes): select, then byte reads, little-endian.
fn kut_get(p: &mut FwCfgPorts, index: u16, bytes: usize) -> u64 {
    select(p, index);
    insb(p, bytes)
        .iter()
        .enumerate()
        .fold(0, |r, (i, b)| r | u64::from(*b) << (8 * i))
}

#[test]
fn kvm_unit_tests_reads() {
    let (mut p, _, _) = device(true);
    assert_eq!(kut_get(&mut p, KEY_NB_CPUS, 2), 2);
    assert_eq!(kut_get(&mut p, KEY_RAM_SIZE, 8), 0x400_0000);
    assert_eq!(kut_get(&mut p, KEY_MAX_CPUS, 2), 2);
    // FW_CFG_MAX_RAM (0x11) is not an item: QEMU reads 0, which the tests take as "no limit".
    assert_eq!(kut_get(&mut p, 0x11, 8), 0);
}

#[test]
fn linux_probe_and_directory() {
    let (mut p, mut dma, _) = device(true);
    // fw_cfg_do_platform_probe: the signature.
    select(&mut p, KEY_SIGNATURE);
    assert_eq!(insb(&mut p, 4), b"QEMU");
    // fw_cfg_sysfs_probe: the revision, DMA bit set.
    select(&mut p, KEY_ID);
    assert_eq!(insb(&mut p, 4), [3, 0, 0, 0]);
    // The DMA register reads "QEMU CFG" (ioread32be at +0 and +4).
    let mut sig = [0u8; 4];
    dma.read(0, &mut sig);
    assert_eq!(&sig, b"QEMU");
    dma.read(4, &mut sig);
    assert_eq!(&sig, b" CFG");
    // fw_cfg_register_dir_entries: count, then the entries (pos = 4: skip by reading).
    select(&mut p, KEY_FILE_DIR);
    let count = u32::from_be_bytes(insb(&mut p, 4).try_into().unwrap());
    assert_eq!(count, 1);
    select(&mut p, KEY_FILE_DIR);
    insb(&mut p, 4);
    let entry = insb(&mut p, 64);
    assert_eq!(u32::from_be_bytes(entry[0..4].try_into().unwrap()), 40);
    assert_eq!(
        u16::from_be_bytes(entry[4..6].try_into().unwrap()),
        KEY_FILE_FIRST
    );
    assert_eq!(&entry[8..16], b"etc/e820");
    assert!(entry[16..].iter().all(|b| *b == 0));
    // The file itself, QEMU's e820 format.
    select(&mut p, KEY_FILE_FIRST);
    let e820 = insb(&mut p, 40);
    assert_eq!(u64::from_le_bytes(e820[20..28].try_into().unwrap()), 0x10_0000);
    assert_eq!(u32::from_le_bytes(e820[36..40].try_into().unwrap()), 1);
    // Past the end: zeros.
    assert_eq!(insb(&mut p, 2), [0, 0]);
    // The command line, NUL-terminated, and its size.
    assert_eq!(kut_get(&mut p, KEY_CMDLINE_SIZE, 4), 25);
    select(&mut p, KEY_CMDLINE_DATA);
    assert_eq!(insb(&mut p, 25), b"x86/emulator.flat -smp 2\0");
}

#[test]
fn other_accesses() {
    let (mut p, _, _) = device(false);
    select(&mut p, KEY_ID);
    assert_eq!(insb(&mut p, 4), [1, 0, 0, 0], "no DMA bit without DMA");
    // A byte read at the selector port reads data too; wider reads are invalid.
    select(&mut p, KEY_SIGNATURE);
    let mut b = [0u8];
    p.read(0, &mut b);
    assert_eq!(b, *b"Q");
    let mut w = [0u8; 2];
    p.read(1, &mut w);
    assert_eq!(w, [0xff, 0xff]);
    // Byte writes (old data-port writes) and dword writes do not select.
    p.write(1, &[0x05]);
    p.write(0, &5u32.to_le_bytes());
    assert_eq!(insb(&mut p, 1), *b"E");
    // A key with no item reads zeros.
    select(&mut p, 0x7fff);
    assert_eq!(insb(&mut p, 3), [0, 0, 0]);
}

/// Writes a big-endian FWCfgDmaAccess at `at` and kicks it as Linux does
/// (iowrite32be high at +0, then low at +4).
fn dma_kick(
    dma: &mut FwCfgDma,
    mem: &GuestMemoryMmap,
    at: u64,
    control: u32,
    length: u32,
    address: u64,
) -> u32 {
    let mut d = control.to_be_bytes().to_vec();
    d.extend_from_slice(&length.to_be_bytes());
    d.extend_from_slice(&address.to_be_bytes());
    mem.write_slice(&d, GuestAddress(at)).unwrap();
    dma.write(0, &((at >> 32) as u32).to_be_bytes());
    dma.write(4, &(at as u32).to_be_bytes());
    let mut c = [0u8; 4];
    mem.read_slice(&mut c, GuestAddress(at)).unwrap();
    u32::from_be_bytes(c)
}

#[test]
fn dma_reads_directory_and_file() {
    let (mut p, mut dma, mem) = device(true);
    // Select + read the directory's count and first entry into 0x2000.
    let c = dma_kick(
        &mut dma,
        &mem,
        0x1000,
        u32::from(KEY_FILE_DIR) << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
        68,
        0x2000,
    );
    assert_eq!(c, 0, "control is cleared on success");
    let mut dir = [0u8; 68];
    mem.read_slice(&mut dir, GuestAddress(0x2000)).unwrap();
    assert_eq!(u32::from_be_bytes(dir[0..4].try_into().unwrap()), 1);
    assert_eq!(&dir[12..20], b"etc/e820");
    // Select etc/e820, skip the first entry, read the second; then read past the end (zeros).
    mem.write_slice(&[0xaa; 32], GuestAddress(0x3000)).unwrap();
    let sel = u32::from(KEY_FILE_FIRST) << 16 | DMA_CTL_SELECT;
    assert_eq!(dma_kick(&mut dma, &mem, 0x1000, sel | DMA_CTL_SKIP, 20, 0), 0);
    assert_eq!(dma_kick(&mut dma, &mem, 0x1000, DMA_CTL_READ, 24, 0x3000), 0);
    let mut e = [0u8; 24];
    mem.read_slice(&mut e, GuestAddress(0x3000)).unwrap();
    assert_eq!(u64::from_le_bytes(e[0..8].try_into().unwrap()), 0x10_0000);
    assert_eq!(e[20..24], [0, 0, 0, 0], "past the end: zero fill");
    // The traditional interface shares the offset: it is now past the end.
    assert_eq!(insb(&mut p, 1), [0]);
    // A 64-bit write at +0 also starts a transfer.
    let mut d = (u32::from(KEY_SIGNATURE) << 16 | DMA_CTL_SELECT | DMA_CTL_READ)
        .to_be_bytes()
        .to_vec();
    d.extend_from_slice(&4u32.to_be_bytes());
    d.extend_from_slice(&0x3800u64.to_be_bytes());
    mem.write_slice(&d, GuestAddress(0x1800)).unwrap();
    dma.write(0, &0x1800u64.to_be_bytes());
    let mut sig = [0u8; 4];
    mem.read_slice(&mut sig, GuestAddress(0x3800)).unwrap();
    assert_eq!(&sig, b"QEMU");
}

#[test]
fn dma_errors() {
    let (_, mut dma, mem) = device(true);
    // Writes: no item is writable.
    let c = dma_kick(
        &mut dma,
        &mem,
        0x1000,
        u32::from(KEY_FILE_FIRST) << 16 | DMA_CTL_SELECT | DMA_CTL_WRITE,
        4,
        0x2000,
    );
    assert_eq!(c, DMA_CTL_ERROR);
    // A read whose destination is not RAM.
    let c = dma_kick(
        &mut dma,
        &mem,
        0x1000,
        u32::from(KEY_SIGNATURE) << 16 | DMA_CTL_SELECT | DMA_CTL_READ,
        4,
        0x10_0000,
    );
    assert_eq!(c, DMA_CTL_ERROR);
    // No operation bit: nothing moves, control cleared.
    mem.write_slice(&[0x55; 4], GuestAddress(0x2000)).unwrap();
    let c = dma_kick(&mut dma, &mem, 0x1000, 0, 4, 0x2000);
    assert_eq!(c, 0);
    let mut b = [0u8; 4];
    mem.read_slice(&mut b, GuestAddress(0x2000)).unwrap();
    assert_eq!(b, [0x55; 4]);
    // A descriptor outside RAM: nothing to report into, no panic.
    dma.write(0, &0u32.to_be_bytes());
    dma.write(4, &0x20_0000u32.to_be_bytes());
}

#[test]
fn items_are_sorted_and_files_numbered() {
    let all = items(&inputs(true));
    let keys: Vec<u16> = all.iter().map(|i| i.key).collect();
    assert_eq!(keys, [0, 1, 2, 3, 5, 0xf, 0x14, 0x15, 0x19, 0x20]);
    assert_eq!(all[9].name, "etc/e820");
}

#[test]
fn random_accesses_never_panic() {
    // A fixed xorshift sequence of selector, data and DMA accesses, with
    // descriptors anywhere (in RAM, across its end, outside it).
    let (mut p, mut dma, mem) = device(true);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let r = next();
        let offset = r >> 8 & 7;
        let width = [1usize, 2, 4, 8][(r >> 12 & 3) as usize];
        let mut buf = [0u8; 8];
        match r & 7 {
            0 => select(&mut p, (r >> 16) as u16 & 0x3f),
            1 => p.read(offset & 1, &mut buf[..width.min(2)]),
            2 => {
                let desc = (r >> 20) & 0x1f_fff0;
                let ctl = ((r >> 16) as u32 & 0x3f) << 16 | (r >> 40) as u32 & 0x1f;
                let mut d = ctl.to_be_bytes().to_vec();
                d.extend_from_slice(&((r >> 44) as u32 & 0x1ffff).to_be_bytes());
                d.extend_from_slice(&((r >> 24) & 0x1f_ffff).to_be_bytes());
                let _ = mem.write_slice(&d, GuestAddress(desc));
                dma.write(0, &0u32.to_be_bytes());
                dma.write(4, &(desc as u32).to_be_bytes());
            }
            3 => dma.read(offset.min(8 - width as u64), &mut buf[..width]),
            4 => {
                dma.write(offset & 4, &buf[..width.min(8 - (offset & 4) as usize)]);
            }
            _ => {
                p.write(offset & 1, &buf[..width.min(2)]);
            }
        }
    }
}
