//! A small, strict ELF32/ELF64 reader and PT_LOAD loader for the protocols
//! linux-loader does not cover (ELF32 multiboot and PVH images), and for
//! checking every image's segments against guest memory before anything is
//! copied. Every field read from the file is bounds-checked; arithmetic is
//! checked; nothing here panics on a hostile image.

use std::io::{Read, Seek, SeekFrom};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, ReadVolatile};

const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
/// Program headers berth accepts (real kernels have a handful).
pub const MAX_PHNUM: u64 = 512;

/// One PT_LOAD segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// File offset of the bytes.
    pub offset: u64,
    /// Guest-physical load address (p_paddr).
    pub paddr: u64,
    /// Bytes copied from the file.
    pub filesz: u64,
    /// Bytes occupied in memory (the rest is zeroed).
    pub memsz: u64,
}

/// A validated ELF executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    /// ELFCLASS64.
    pub is64: bool,
    /// e_entry.
    pub entry: u64,
    /// PT_LOAD segments with a non-zero memory size, in file order.
    pub segments: Vec<Segment>,
}

impl ElfImage {
    /// Lowest and first-past-highest guest addresses the segments occupy.
    pub fn span(&self) -> Option<(u64, u64)> {
        let lo = self.segments.iter().map(|s| s.paddr).min()?;
        // Segment ends were checked for overflow in `parse`.
        let hi = self.segments.iter().map(|s| s.paddr + s.memsz).max()?;
        Some((lo, hi))
    }
}

fn rd<R: Read + Seek>(f: &mut R, off: u64, buf: &mut [u8], what: &str) -> Result<(), String> {
    f.seek(SeekFrom::Start(off))
        .and_then(|_| f.read_exact(buf))
        .map_err(|e| format!("cannot read the ELF {what} at offset {off:#x}: {e}"))
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Parses and validates the ELF header and program headers of `f`
/// (`file_len` bytes long): little-endian x86 executable, program headers
/// inside the file, every PT_LOAD's file bytes inside the file and its
/// memory range free of overflow.
pub fn parse<R: Read + Seek>(f: &mut R, file_len: u64) -> Result<ElfImage, String> {
    let mut eh = [0u8; 64];
    if file_len < 52 {
        return Err(format!("ELF header truncated: the file has {file_len} bytes"));
    }
    let is64 = {
        rd(f, 0, &mut eh[..52], "header")?;
        if eh[..4] != [0x7f, b'E', b'L', b'F'] {
            return Err("not an ELF file (bad magic)".into());
        }
        match eh[4] {
            1 => false,
            2 => true,
            c => return Err(format!("unknown ELF class {c}")),
        }
    };
    if is64 {
        if file_len < 64 {
            return Err(format!("ELF64 header truncated: the file has {file_len} bytes"));
        }
        rd(f, 0, &mut eh, "header")?;
    }
    if eh[5] != 1 {
        return Err("not a little-endian ELF".into());
    }
    if eh[6] != 1 {
        return Err(format!("unknown ELF version {}", eh[6]));
    }
    let e_type = u16_at(&eh, 16) as u16;
    let machine = u16_at(&eh, 18) as u16;
    let want = if is64 { EM_X86_64 } else { EM_386 };
    if machine != want {
        return Err(format!(
            "ELF{} for machine {machine}, not {}",
            if is64 { 64 } else { 32 },
            if is64 { "x86-64 (62)" } else { "i386 (3)" }
        ));
    }
    if e_type != ET_EXEC {
        return Err(format!("not an executable ELF (e_type {e_type}, want 2)"));
    }
    let (entry, phoff, phentsize, phnum) = if is64 {
        (
            u64_at(&eh, 0x18),
            u64_at(&eh, 0x20),
            u16_at(&eh, 0x36),
            u16_at(&eh, 0x38),
        )
    } else {
        (
            u32_at(&eh, 0x18),
            u32_at(&eh, 0x1c),
            u16_at(&eh, 0x2a),
            u16_at(&eh, 0x2c),
        )
    };
    let min_ph = if is64 { 56 } else { 32 };
    if phnum == 0 {
        return Err("the ELF has no program headers".into());
    }
    if phnum > MAX_PHNUM {
        return Err(format!(
            "the ELF has {phnum} program headers (at most {MAX_PHNUM})"
        ));
    }
    if phentsize < min_ph || phentsize > 256 {
        return Err(format!("program header size {phentsize} (want {min_ph})"));
    }
    let table_end = phnum
        .checked_mul(phentsize)
        .and_then(|n| n.checked_add(phoff))
        .filter(|&end| end <= file_len)
        .ok_or_else(|| {
            format!("program headers ({phnum} at {phoff:#x}) extend past the end of the file ({file_len:#x} bytes)")
        })?;
    let mut table = vec![0u8; (table_end - phoff) as usize];
    rd(f, phoff, &mut table, "program headers")?;
    let mut segments = Vec::new();
    for (i, ph) in table.chunks_exact(phentsize as usize).enumerate() {
        if u32_at(ph, 0) != u64::from(PT_LOAD) {
            continue;
        }
        let s = if is64 {
            Segment {
                offset: u64_at(ph, 8),
                paddr: u64_at(ph, 24),
                filesz: u64_at(ph, 32),
                memsz: u64_at(ph, 40),
            }
        } else {
            Segment {
                offset: u32_at(ph, 4),
                paddr: u32_at(ph, 12),
                filesz: u32_at(ph, 16),
                memsz: u32_at(ph, 20),
            }
        };
        if s.filesz > s.memsz {
            return Err(format!(
                "segment {i}: file size {:#x} exceeds memory size {:#x}",
                s.filesz, s.memsz
            ));
        }
        if s.offset.checked_add(s.filesz).is_none_or(|e| e > file_len) {
            return Err(format!(
                "segment {i}: bytes {:#x}+{:#x} lie outside the file ({file_len:#x} bytes)",
                s.offset, s.filesz
            ));
        }
        if s.paddr.checked_add(s.memsz).is_none() {
            return Err(format!("segment {i}: {:#x}+{:#x} overflows", s.paddr, s.memsz));
        }
        if s.memsz > 0 {
            segments.push(s);
        }
    }
    if segments.is_empty() {
        return Err("the ELF has no loadable (PT_LOAD) segment".into());
    }
    Ok(ElfImage {
        is64,
        entry,
        segments,
    })
}

/// Checks that every segment lies in guest memory at or above `min`.
pub fn check_segments(mem: &GuestMemoryMmap, image: &ElfImage, min: u64) -> Result<(), String> {
    for (i, s) in image.segments.iter().enumerate() {
        check_range(mem, s.paddr, s.memsz, min).map_err(|e| format!("segment {i}: {e}"))?;
    }
    Ok(())
}

/// Checks that `[addr, addr + len)` lies in guest memory at or above `min`.
pub fn check_range(mem: &GuestMemoryMmap, addr: u64, len: u64, min: u64) -> Result<(), String> {
    let end = addr
        .checked_add(len)
        .ok_or_else(|| format!("{addr:#x}+{len:#x} overflows"))?;
    if addr < min {
        return Err(format!(
            "{addr:#x}..{end:#x} starts below {min:#x} (the boot structures live there)"
        ));
    }
    let fits = usize::try_from(len).is_ok_and(|n| mem.check_range(GuestAddress(addr), n));
    if !fits {
        return Err(format!("{addr:#x}..{end:#x} is not inside guest memory"));
    }
    Ok(())
}

/// Zeroes `[addr, addr + len)` in guest memory, in chunks of one page: a
/// bigger buffer on the stack would be that much more of berth's resident
/// memory (the main thread's stack is otherwise about 30 KiB deep).
pub fn zero(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), String> {
    const CHUNK: u64 = 4 << 10;
    let buf = [0u8; CHUNK as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK);
        let at = addr.checked_add(done).ok_or("address overflow")?;
        mem.write_slice(&buf[..n as usize], GuestAddress(at))
            .map_err(|e| format!("cannot zero {at:#x}+{n:#x}: {e}"))?;
        done += n;
    }
    Ok(())
}

/// Copies `len` bytes of `f` from `offset` to guest `addr`.
pub fn copy<R: Read + Seek + ReadVolatile>(
    mem: &GuestMemoryMmap,
    f: &mut R,
    offset: u64,
    addr: u64,
    len: u64,
) -> Result<(), String> {
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot seek to {offset:#x}: {e}"))?;
    let n = usize::try_from(len).map_err(|_| format!("{len:#x} bytes is too large"))?;
    mem.read_exact_volatile_from(GuestAddress(addr), f, n)
        .map_err(|e| format!("cannot copy {len:#x} bytes from offset {offset:#x} to {addr:#x}: {e}"))
}

/// Loads every segment (file bytes, then zeroes up to the memory size).
/// The image must have passed [`check_segments`].
pub fn load_segments<R: Read + Seek + ReadVolatile>(
    mem: &GuestMemoryMmap,
    f: &mut R,
    image: &ElfImage,
) -> Result<(), String> {
    for (i, s) in image.segments.iter().enumerate() {
        copy(mem, f, s.offset, s.paddr, s.filesz).map_err(|e| format!("segment {i}: {e}"))?;
        zero_bss(mem, s).map_err(|e| format!("segment {i}: {e}"))?;
    }
    Ok(())
}

/// Zeroes the part of a segment past its file bytes (memory may be
/// file-backed, so it is not necessarily zero already).
pub fn zero_bss(mem: &GuestMemoryMmap, s: &Segment) -> Result<(), String> {
    zero(mem, s.paddr + s.filesz, s.memsz - s.filesz)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Cursor;

    /// An ELF32 i386 executable: one PT_LOAD per `(paddr, bytes, memsz)`,
    /// entry `entry`, `extra` bytes appended before the segments (e.g. a
    /// multiboot header at offset 0x100).
    pub fn elf32(entry: u32, segs: &[(u32, &[u8], u32)], extra: &[u8]) -> Vec<u8> {
        let phoff = 52usize;
        let mut data_at = 0x100 + extra.len();
        let mut b = vec![0u8; 0x100];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 1;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&3u16.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[0x18..0x1c].copy_from_slice(&entry.to_le_bytes());
        b[0x1c..0x20].copy_from_slice(&(phoff as u32).to_le_bytes());
        b[0x28..0x2a].copy_from_slice(&52u16.to_le_bytes());
        b[0x2a..0x2c].copy_from_slice(&32u16.to_le_bytes());
        b[0x2c..0x2e].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        b.extend_from_slice(extra);
        for (i, (paddr, bytes, memsz)) in segs.iter().enumerate() {
            let ph = phoff + 32 * i;
            b[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
            b[ph + 4..ph + 8].copy_from_slice(&(data_at as u32).to_le_bytes());
            b[ph + 8..ph + 12].copy_from_slice(&paddr.to_le_bytes());
            b[ph + 12..ph + 16].copy_from_slice(&paddr.to_le_bytes());
            b[ph + 16..ph + 20].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
            b[ph + 20..ph + 24].copy_from_slice(&memsz.to_le_bytes());
            b.extend_from_slice(bytes);
            data_at += bytes.len();
        }
        b
    }

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn parses_and_loads_elf32() {
        let img = elf32(0x10_0000, &[(0x10_0000, b"abcd", 0x10)], b"");
        let e = parse(&mut Cursor::new(&img), img.len() as u64).unwrap();
        assert!(!e.is64);
        assert_eq!(e.entry, 0x10_0000);
        assert_eq!(e.span(), Some((0x10_0000, 0x10_0010)));
        let m = mem(2 << 20);
        m.write_slice(&[0xffu8; 0x10], GuestAddress(0x10_0000)).unwrap();
        check_segments(&m, &e, 0x10_0000).unwrap();
        load_segments(&m, &mut Cursor::new(&img), &e).unwrap();
        let mut got = [0u8; 0x10];
        m.read_slice(&mut got, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&got[..4], b"abcd");
        assert_eq!(got[4..], [0u8; 12]);
    }

    #[test]
    fn hostile_headers_are_errors() {
        let good = elf32(0x10_0000, &[(0x10_0000, b"abcd", 4)], b"");
        let p = |b: &[u8]| parse(&mut Cursor::new(b.to_vec()), b.len() as u64);
        assert!(p(&good[..20]).unwrap_err().contains("truncated"));
        let mut b = good.clone();
        b[0x2c] = 0xff; // phnum 255 → table past the end of the file
        b[0x2d] = 0x00;
        assert!(p(&b).unwrap_err().contains("past the end"), "{:?}", p(&b));
        b[0x2d] = 0xff; // 65535
        assert!(p(&b).unwrap_err().contains("program headers"));
        let mut b = good.clone();
        b[0x1c..0x20].copy_from_slice(&0xffff_fff0u32.to_le_bytes()); // phoff
        assert!(p(&b).is_err());
        let mut b = good.clone();
        b[52 + 4..52 + 8].copy_from_slice(&0xffff_ff00u32.to_le_bytes()); // p_offset
        assert!(p(&b).unwrap_err().contains("outside the file"));
        let mut b = good.clone();
        b[52 + 16..52 + 20].copy_from_slice(&8u32.to_le_bytes()); // filesz > memsz
        assert!(p(&b).unwrap_err().contains("exceeds"));
        let mut b = good.clone();
        b[18] = 62; // ELF32 claiming x86-64
        assert!(p(&b).unwrap_err().contains("machine"));
        let mut b = good.clone();
        b[5] = 2;
        assert!(p(&b).unwrap_err().contains("little-endian"));
        let mut b = good.clone();
        b[4] = 7;
        assert!(p(&b).is_err());
        let mut b = good;
        b[0x28 + 2] = 8; // phentsize 8
        assert!(p(&b).unwrap_err().contains("header size"));
    }

    #[test]
    fn segments_outside_memory_or_low_are_refused() {
        let m = mem(2 << 20);
        let img = elf32(0x10_0000, &[(0x1f_fff0, b"abcd", 0x20)], b"");
        let e = parse(&mut Cursor::new(&img), img.len() as u64).unwrap();
        assert!(check_segments(&m, &e, 0x10_0000)
            .unwrap_err()
            .contains("not inside guest memory"));
        let img = elf32(0x10_0000, &[(0x8000, b"abcd", 4)], b"");
        let e = parse(&mut Cursor::new(&img), img.len() as u64).unwrap();
        assert!(check_segments(&m, &e, 0x10_0000).unwrap_err().contains("below"));
        let img = elf32(0x10_0000, &[(0xffff_fff0, b"abcd", 0xffff_ffff)], b"");
        let e = parse(&mut Cursor::new(&img), img.len() as u64).unwrap();
        assert!(check_segments(&m, &e, 0x10_0000).is_err());
    }
}
