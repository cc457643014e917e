//! Multiboot v1 (the GNU Multiboot Specification 0.6.96): the image is
//! loaded by its header's address fields (flags bit 16, the "a.out kludge")
//! or as an ELF; the BSP enters in 32-bit protected mode with paging off,
//! eax = 0x2BADB002 and ebx = the multiboot information structure.

use super::{
    addr32, check_clear, check_fits, elf, format, image_err, plan_addr, ImageFile, ImageFormat, KernelError,
    LoadedKernel, Placed,
};
use crate::plan::{E820Entry, E820Kind, Plan};
use std::io::SeekFrom;
use std::path::Path;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// eax at entry.
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2bad_b002;

/// Header flags: align modules on pages, wants memory info, wants a video
/// mode, address fields valid.
const HDR_PAGE_ALIGN: u32 = 1 << 0;
const HDR_MEMORY_INFO: u32 = 1 << 1;
const HDR_VIDEO_MODE: u32 = 1 << 2;
const HDR_AOUT_KLUDGE: u32 = 1 << 16;
/// Header flags 0–15 are requirements: a loader must refuse unknown ones.
const HDR_REQUIRED_MASK: u32 = 0xffff;

/// Information flags berth sets: mem_*, cmdline, mods_*, mmap_*.
pub const INFO_MEMORY: u32 = 1 << 0;
/// cmdline valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// mods_count / mods_addr valid.
pub const INFO_MODS: u32 = 1 << 3;
/// mmap_length / mmap_addr valid.
pub const INFO_MEM_MAP: u32 = 1 << 6;

/// Size of struct multiboot_info (up to and including the framebuffer fields).
pub const INFO_SIZE: usize = 116;
/// Memory map entries berth hands a multiboot guest at most.
pub const MAX_MMAP_ENTRIES: usize = 128;

/// The parsed header: offset in the file, flags, address fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    offset: u64,
    flags: u32,
    header_addr: u32,
    load_addr: u32,
    load_end_addr: u32,
    bss_end_addr: u32,
    entry_addr: u32,
}

fn read_header<F: ImageFile>(path: &Path, f: &mut F) -> Result<Header, KernelError> {
    let mut head = vec![0u8; format::MULTIBOOT_SEARCH];
    let mut n = 0;
    f.seek(SeekFrom::Start(0)).map_err(|source| KernelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(KernelError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    head.truncate(n);
    let off = format::multiboot_header_offset(&head)
        .ok_or_else(|| image_err(path, "no multiboot header (0x1BADB002) in the first 8 KiB"))?;
    let w = |i: usize| {
        head.get(off + i..off + i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let flags = w(4).unwrap_or(0);
    let mut h = Header {
        offset: off as u64,
        flags,
        header_addr: 0,
        load_addr: 0,
        load_end_addr: 0,
        bss_end_addr: 0,
        entry_addr: 0,
    };
    if flags & HDR_AOUT_KLUDGE != 0 {
        let field = |i| {
            w(i).ok_or_else(|| {
                image_err(
                    path,
                    "multiboot header truncated: the address fields run past the file",
                )
            })
        };
        h.header_addr = field(12)?;
        h.load_addr = field(16)?;
        h.load_end_addr = field(20)?;
        h.bss_end_addr = field(24)?;
        h.entry_addr = field(28)?;
    }
    Ok(h)
}

/// Loads a multiboot image: by the address fields when flags bit 16 is
/// set, else as an ELF.
pub(super) fn load<F: ImageFile>(
    path: &Path,
    f: &mut F,
    len: u64,
    plan: &Plan,
    mem: &GuestMemoryMmap,
) -> Result<Placed, KernelError> {
    let h = read_header(path, f)?;
    let unknown = h.flags & HDR_REQUIRED_MASK & !(HDR_PAGE_ALIGN | HDR_MEMORY_INFO | HDR_VIDEO_MODE);
    if unknown != 0 {
        return Err(image_err(
            path,
            format!(
                "the multiboot header requires features berth lacks (flags {:#x}, unknown {unknown:#x})",
                h.flags
            ),
        ));
    }
    let (lo, hi, entry) = if h.flags & HDR_AOUT_KLUDGE != 0 {
        let (load, bss_end, _, _) = aout_layout(&h, len).map_err(|m| image_err(path, m))?;
        elf::check_range(mem, load, bss_end - load, 0)
            .map_err(|m| image_err(path, format!("image {m} (does it fit the memory map?)")))?;
        check_clear(path, &[(load, bss_end)], plan)?;
        load_aout(&h, f, len, mem).map_err(|m| image_err(path, m))?
    } else {
        let image = elf::parse(f, len).map_err(|m| {
            image_err(
                path,
                format!("multiboot header without address fields (flags bit 16), so the image must be an ELF: {m}"),
            )
        })?;
        check_fits(path, mem, &image, plan)?;
        let (lo, hi) = image.span().unwrap_or((0, 0));
        if hi > 1 << 32 {
            return Err(image_err(path, format!("segments reach {hi:#x}, above 4 GiB")));
        }
        elf::load_segments(mem, f, &image).map_err(|m| image_err(path, m))?;
        (lo, hi, image.entry)
    };
    if entry > u64::from(u32::MAX) || !mem.address_in_range(GuestAddress(entry)) {
        return Err(image_err(
            path,
            format!("the entry point {entry:#x} is not in guest memory below 4 GiB"),
        ));
    }
    // The kernel must load something, and be entered inside what it loaded
    // (found by fuzzing: an empty a.out-kludge image "loaded" nothing at
    // 0xffffffff and was entered at 0, in the boot structures).
    if hi <= lo || entry < lo || entry >= hi {
        return Err(image_err(
            path,
            format!("the image loads {lo:#x}..{hi:#x} and is entered at {entry:#x}: the entry must lie inside a non-empty image"),
        ));
    }
    let info = plan_addr(plan.boot.boot_info, "multiboot information")?;
    Ok(Placed {
        kernel: LoadedKernel {
            format: ImageFormat::Multiboot,
            entry,
            load: lo,
            end: hi,
            entry_regs: (MULTIBOOT_BOOTLOADER_MAGIC, addr32(info, "multiboot information")?),
            initrd: None,
            setup_header: None,
        },
        avoid: (lo, hi),
        // 32-bit module fields.
        initrd_limit: 1 << 32,
    })
}

/// The a.out kludge: file bytes from `offset - (header_addr - load_addr)`
/// go to load_addr..load_end_addr (0 = to the end of the file), zeroes up to
/// bss_end_addr (0 = none). Returns (load, end, entry). The range must
/// have passed the memory and overlap checks.
fn load_aout<F: ImageFile>(
    h: &Header,
    f: &mut F,
    len: u64,
    mem: &GuestMemoryMmap,
) -> Result<(u64, u64, u64), String> {
    let (load_addr, bss_end, file_off, size) = aout_layout(h, len)?;
    elf::copy(mem, f, file_off, load_addr, size)?;
    elf::zero(mem, load_addr + size, bss_end - load_addr - size)?;
    Ok((load_addr, bss_end, u64::from(h.entry_addr)))
}

/// Where a multiboot image with the a.out kludge (flags bit 16) loads:
/// `[load_addr, bss_end)`; `None` for an image without address fields or
/// with inconsistent ones (the loader then says why).
pub(super) fn aout_range<F: ImageFile>(f: &mut F, len: u64) -> Option<(u64, u64)> {
    let h = read_header(Path::new(""), f).ok()?;
    if h.flags & HDR_AOUT_KLUDGE == 0 {
        return None;
    }
    aout_layout(&h, len)
        .ok()
        .map(|(load, bss_end, _, _)| (load, bss_end))
}

/// The a.out kludge's (load_addr, bss_end, file offset, bytes from the file).
fn aout_layout(h: &Header, len: u64) -> Result<(u64, u64, u64, u64), String> {
    let (header_addr, load_addr) = (u64::from(h.header_addr), u64::from(h.load_addr));
    if load_addr > header_addr {
        return Err(format!(
            "multiboot load_addr {load_addr:#x} is above header_addr {header_addr:#x}"
        ));
    }
    let file_off = h.offset.checked_sub(header_addr - load_addr).ok_or_else(|| {
        format!(
            "multiboot header_addr {header_addr:#x} - load_addr {load_addr:#x} reaches before the start of the file"
        )
    })?;
    let load_end = match h.load_end_addr {
        0 => load_addr + (len - file_off),
        e => u64::from(e),
    };
    if load_end < load_addr {
        return Err(format!(
            "multiboot load_end_addr {load_end:#x} is below load_addr {load_addr:#x}"
        ));
    }
    let size = load_end - load_addr;
    if file_off.checked_add(size).is_none_or(|e| e > len) {
        return Err(format!(
            "multiboot load_addr..load_end_addr ({load_addr:#x}..{load_end:#x}) needs {size:#x} bytes from offset {file_off:#x}; the file has {len:#x}"
        ));
    }
    let bss_end = match h.bss_end_addr {
        0 => load_end,
        e => u64::from(e),
    };
    if bss_end < load_end {
        return Err(format!(
            "multiboot bss_end_addr {bss_end:#x} is below load_end_addr {load_end:#x}"
        ));
    }
    Ok((load_addr, bss_end, file_off, size))
}

/// KiB of RAM the e820 map has contiguously from `from`.
fn contiguous_ram_kib(e820: &[E820Entry], from: u64) -> u64 {
    let mut end = from;
    // Each step moves `end` to the end of a different entry.
    for _ in 0..=e820.len() {
        let next = e820
            .iter()
            .filter(|e| e.kind == E820Kind::Ram && e.addr.0 <= end)
            .map(|e| e.addr.0.saturating_add(e.size.0))
            .filter(|&e_end| e_end > end)
            .max();
        match next {
            Some(n) => end = n,
            None => break,
        }
    }
    (end - from) / 1024
}

/// (mem_lower, mem_upper) in KiB: RAM from 0 up to the first hole (at most
/// 640), and contiguous RAM from 1 MiB.
pub fn mem_lower_upper(e820: &[E820Entry]) -> (u32, u32) {
    let lower = contiguous_ram_kib(e820, 0).min(640) as u32;
    let upper = contiguous_ram_kib(e820, 0x10_0000).min(u64::from(u32::MAX)) as u32;
    (lower, upper)
}

/// The boot information block: struct multiboot_info, the module array, the
/// module strings and the memory map, each with its guest address.
pub struct Info {
    /// (address, bytes) of each piece.
    pub pieces: Vec<(u64, Vec<u8>)>,
}

/// Builds the multiboot information for the plan and kernel.
pub fn info(plan: &Plan, kernel: &LoadedKernel) -> Result<Info, KernelError> {
    let b = &plan.boot;
    let info_addr = plan_addr(b.boot_info, "multiboot information")?;
    let mods_addr = plan_addr(b.modules, "multiboot module array")?;
    let mmap_addr = plan_addr(b.memmap, "multiboot memory map")?;
    if plan.e820.len() > MAX_MMAP_ENTRIES {
        return Err(KernelError::BootParams(format!(
            "the e820 map has {} entries; berth passes at most {MAX_MMAP_ENTRIES}",
            plan.e820.len()
        )));
    }
    let mut mmap = Vec::with_capacity(24 * plan.e820.len());
    for e in &plan.e820 {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&e.addr.0.to_le_bytes());
        mmap.extend_from_slice(&e.size.0.to_le_bytes());
        mmap.extend_from_slice(&e.kind.code().to_le_bytes());
    }
    let mut pieces = Vec::new();
    let mut mods = Vec::new();
    let mut count = 0u32;
    if let Some((addr, size)) = kernel.initrd {
        let strings = plan_addr(b.module_strings, "multiboot module strings")?;
        let name = b.initrd.as_ref().map(|i| i.path.as_str()).unwrap_or("");
        let mut s = name.as_bytes().to_vec();
        s.push(0);
        // The room the plan placed for them.
        let room = super::placement::MODULE_STRINGS_SIZE;
        if s.len() as u64 > room {
            return Err(KernelError::BootParams(format!(
                "the initrd path is {} bytes; {} fit in the module strings",
                s.len() - 1,
                room.saturating_sub(1)
            )));
        }
        let end = addr
            .checked_add(size)
            .filter(|&e| e <= 1 << 32)
            .ok_or_else(|| KernelError::BootParams(format!("module {addr:#x}+{size:#x} ends above 4 GiB")))?;
        for v in [
            addr32(addr, "module")?,
            end as u32,
            addr32(strings, "module string")?,
            0,
        ] {
            mods.extend_from_slice(&v.to_le_bytes());
        }
        pieces.push((strings, s));
        count = 1;
    }
    let (lower, upper) = mem_lower_upper(&plan.e820);
    let mut info = vec![0u8; INFO_SIZE];
    let mut put = |off: usize, v: u32| info[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(0, INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MEM_MAP);
    put(4, lower);
    put(8, upper);
    put(16, addr32(b.cmdline.0, "command line")?);
    put(20, count);
    put(24, addr32(mods_addr, "module array")?);
    put(44, mmap.len() as u32);
    put(48, addr32(mmap_addr, "memory map")?);
    pieces.push((info_addr, info));
    if !mods.is_empty() {
        pieces.push((mods_addr, mods));
    }
    pieces.push((mmap_addr, mmap));
    Ok(Info { pieces })
}

/// Writes the multiboot information where the plan says.
pub(super) fn write_info(
    plan: &Plan,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
) -> Result<(), KernelError> {
    for (addr, bytes) in info(plan, kernel)?.pieces {
        mem.write_slice(&bytes, GuestAddress(addr))
            .map_err(|e| KernelError::BootParams(format!("multiboot information at {addr:#x}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, u32_at, u64_at, Machine};
    use super::super::{load_kernel, write_boot_structures};
    use super::*;
    use crate::plan::Hex;

    fn check_info(mem: &GuestMemoryMmap, k: &LoadedKernel, initrd_name: &str, cmdline: &[u8]) {
        let i = 0x6000;
        assert_eq!(u32_at(mem, i), 0b100_1101); // MEM | CMDLINE | MODS | MMAP
        assert_eq!(u32_at(mem, i + 4), 639); // mem_lower
        assert_eq!(u32_at(mem, i + 8), 63 * 1024); // mem_upper
        assert_eq!(u32_at(mem, i + 16), 0x20000); // cmdline
        assert_eq!(u32_at(mem, i + 20), 1); // mods_count
        assert_eq!(u32_at(mem, i + 24), 0x6100); // mods_addr
        assert_eq!(u32_at(mem, i + 44), 48); // mmap_length
        assert_eq!(u32_at(mem, i + 48), 0x7000); // mmap_addr
        let (ia, isz) = k.initrd.unwrap();
        assert_eq!(
            (
                u32_at(mem, 0x6100),
                u32_at(mem, 0x6104),
                u32_at(mem, 0x6108),
                u32_at(mem, 0x610c)
            ),
            (ia as u32, (ia + isz) as u32, 0x6200, 0)
        );
        let mut s = vec![0u8; initrd_name.len() + 1];
        mem.read_slice(&mut s, GuestAddress(0x6200)).unwrap();
        assert_eq!(&s[..initrd_name.len()], initrd_name.as_bytes());
        assert_eq!(s[initrd_name.len()], 0);
        let mm = 0x7000;
        assert_eq!(
            (
                u32_at(mem, mm),
                u64_at(mem, mm + 4),
                u64_at(mem, mm + 12),
                u32_at(mem, mm + 20)
            ),
            (20, 0, 0x9fc00, 1)
        );
        assert_eq!(
            (
                u32_at(mem, mm + 24),
                u64_at(mem, mm + 28),
                u64_at(mem, mm + 36),
                u32_at(mem, mm + 44)
            ),
            (20, 0x10_0000, 63 << 20, 1)
        );
        let mut c = vec![0u8; cmdline.len()];
        mem.read_slice(&mut c, GuestAddress(0x20000)).unwrap();
        assert_eq!(c, cmdline);
    }

    #[test]
    fn elf32_multiboot_info() {
        let img = testutil::image_for("multiboot");
        let m = Machine::new("mb-elf", &img, "multiboot", "64MiB", Some(b"env=1\n"), "a b=c");
        assert_eq!(m.plan.boot.protocol, "multiboot");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        assert_eq!(k.format, ImageFormat::Multiboot);
        assert_eq!(k.entry, 0x10_0010);
        assert_eq!(k.entry_regs, (0x2bad_b002, 0x6000));
        assert_eq!((k.load, k.end), (0x10_0000, 0x10_3000));
        assert_eq!(k.initrd, Some(((64 << 20) - 0x1000, 6)));
        write_boot_structures(&m.plan, &mem, &k).unwrap();
        // QEMU's convention: the kernel path as written, then the command line.
        check_info(&mem, &k, "initrd.img", b"kernel a b=c\0");
        assert_eq!(m.plan.kernel.guest_cmdline.as_deref(), Some("kernel a b=c"));
        let mut code = [0u8; 4];
        mem.read_slice(&mut code, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&code, b"MB32");
    }

    #[test]
    fn aout_kludge_multiboot_info() {
        let img = testutil::multiboot_aout();
        let m = Machine::new("mb-aout", &img, "multiboot", "64MiB", Some(&[3u8; 0x1001]), "");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        // load_addr 0x200000 (header at file offset 0x40 = header_addr
        // 0x200040), load_end 0x200400, bss_end 0x201000, entry 0x200080.
        assert_eq!((k.load, k.end, k.entry), (0x20_0000, 0x20_1000, 0x20_0080));
        let mut got = vec![0u8; 0x400];
        mem.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(got[..], img[..0x400]);
        assert_eq!(u32_at(&mem, 0x20_0400), 0); // bss
        assert_eq!(k.initrd, Some(((64 << 20) - 0x2000, 0x1001)));
        write_boot_structures(&m.plan, &mem, &k).unwrap();
        check_info(&mem, &k, "initrd.img", b"kernel \0");
    }

    #[test]
    fn no_modules_still_sets_mods_flag() {
        let m = Machine::new(
            "mb-nomod",
            &testutil::image_for("multiboot"),
            "multiboot",
            "16MiB",
            None,
            "",
        );
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        write_boot_structures(&m.plan, &mem, &k).unwrap();
        assert_eq!(u32_at(&mem, 0x6000) & INFO_MODS, INFO_MODS);
        assert_eq!(u32_at(&mem, 0x6000 + 20), 0);
    }

    #[test]
    fn mem_lower_and_upper_from_e820() {
        let e = |a: u64, s: u64, kind| E820Entry {
            addr: Hex(a),
            size: Hex(s),
            kind,
        };
        let map = [
            e(0, 0x9fc00, E820Kind::Ram),
            e(0x10_0000, 0xf0_0000, E820Kind::Ram),
            e(0x100_0000, 0x100_0000, E820Kind::Ram), // adjacent: contiguous
            e(0x300_0000, 0x100_0000, E820Kind::Ram), // after a hole
        ];
        assert_eq!(mem_lower_upper(&map), (639, 31 * 1024));
        let map = [e(0, 0x20_0000, E820Kind::Ram)];
        assert_eq!(mem_lower_upper(&map), (640, 1024));
        let map = [
            e(0, 0x1000, E820Kind::Reserved),
            e(0x10_0000, 0x1000, E820Kind::Reserved),
        ];
        assert_eq!(mem_lower_upper(&map), (0, 0));
        assert_eq!(mem_lower_upper(&[]), (0, 0));
    }

    #[test]
    fn hostile_multiboot_images() {
        let base = testutil::multiboot_aout();
        let set =
            |b: &mut Vec<u8>, off: usize, v: u32| b[0x40 + off..0x44 + off].copy_from_slice(&v.to_le_bytes());
        // (name, header field offset, value, expected message)
        let cases = [
            ("mb-h1", 16, 0x20_0100, "above header_addr"),
            ("mb-h2", 16, 0x10_0000, "before the start of the file"),
            ("mb-h3", 20, 0x30_0000, "the file has"),
            ("mb-h4", 20, 0x1f_0000, "below load_addr"),
            ("mb-h5", 24, 0x20_0100, "below load_end_addr"),
            ("mb-h6", 24, 0xffff_f000, "not inside guest memory"),
            ("mb-h7", 28, 0xffff_fff0, "entry point"),
        ];
        for (name, field, value, want) in cases {
            let mut img = base.clone();
            set(&mut img, field, value);
            let m = Machine::new(name, &img, "multiboot", "64MiB", None, "");
            let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
            assert!(e.to_string().contains(want), "{name}: {e}");
        }
        // Unknown required flag: the checksum must still match to be found.
        let mut img = base.clone();
        let flags = 0x0001_0008u32;
        set(&mut img, 4, flags);
        set(
            &mut img,
            8,
            0u32.wrapping_sub(format::MULTIBOOT_MAGIC.wrapping_add(flags)),
        );
        let m = Machine::new("mb-flags", &img, "multiboot", "64MiB", None, "");
        let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
        assert!(e.to_string().contains("features berth lacks"), "{e}");
        // No address fields and not an ELF.
        let mut img = base;
        let flags = 0u32;
        set(&mut img, 4, flags);
        set(&mut img, 8, 0u32.wrapping_sub(format::MULTIBOOT_MAGIC));
        let m = Machine::new("mb-noelf", &img, "multiboot", "64MiB", None, "");
        let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
        assert!(e.to_string().contains("must be an ELF"), "{e}");
    }

    #[test]
    fn header_fields_past_the_file_are_an_error() {
        let img = testutil::multiboot_aout();
        let mut c = std::io::Cursor::new(img[..0x50].to_vec());
        let e = read_header(Path::new("k"), &mut c).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
