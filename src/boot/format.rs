//! Kernel image format detection from the file's own bytes, in QEMU's order:
//! a Linux bzImage ("HdrS" setup header), an ELF with a PVH entry note, a
//! multiboot v1 header, then a plain ELF64 (entered at its 64-bit entry).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// Image formats berth boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// Linux bzImage.
    Bzimage,
    /// ELF with XEN_ELFNOTE_PHYS32_ENTRY: 32-bit entry at the note's address.
    Pvh,
    /// Multiboot v1.
    Multiboot,
    /// ELF64, 64-bit entry.
    Elf64,
}

/// Multiboot v1 header magic.
pub const MULTIBOOT_MAGIC: u32 = 0x1bad_b002;
/// The multiboot header must lie within this many bytes of the file start.
pub const MULTIBOOT_SEARCH: usize = 8192;
/// XEN_ELFNOTE_PHYS32_ENTRY.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Offset of a valid multiboot header (magic, flags, checksum summing to 0)
/// in the first 8 KiB, 4-byte aligned.
pub fn multiboot_header_offset(head: &[u8]) -> Option<usize> {
    let end = head.len().min(MULTIBOOT_SEARCH);
    (0..end.saturating_sub(11)).step_by(4).find(|&off| {
        let w = |i: usize| {
            u32::from_le_bytes([
                head[off + i],
                head[off + i + 1],
                head[off + i + 2],
                head[off + i + 3],
            ])
        };
        w(0) == MULTIBOOT_MAGIC && w(0).wrapping_add(w(4)).wrapping_add(w(8)) == 0
    })
}

/// Whether the bytes start like a bzImage (boot flag 0xaa55 at 0x1fe, "HdrS" at 0x202).
pub fn is_bzimage(head: &[u8]) -> bool {
    head.len() >= 0x206 && head[0x1fe..0x200] == [0x55, 0xaa] && &head[0x202..0x206] == b"HdrS"
}

fn u16le(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 2)
        .map(|s| u64::from(u16::from_le_bytes([s[0], s[1]])))
}
fn u32le(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 4)
        .map(|s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
}
fn u64le(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8)
        .map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
}

/// The PVH entry point from an ELF's PT_NOTE segments, if it has one.
pub fn pvh_entry<R: Read + Seek>(f: &mut R) -> Option<u64> {
    let mut eh = [0u8; 64];
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_exact(&mut eh[..52]).ok()?;
    if eh[..4] != [0x7f, b'E', b'L', b'F'] {
        return None;
    }
    let is64 = eh[4] == 2;
    if is64 {
        f.read_exact(&mut eh[52..64]).ok()?;
    }
    let (phoff, phentsize, phnum) = if is64 {
        (u64le(&eh, 0x20)?, u16le(&eh, 0x36)?, u16le(&eh, 0x38)?)
    } else {
        (u32le(&eh, 0x1c)?, u16le(&eh, 0x2a)?, u16le(&eh, 0x2c)?)
    };
    if phnum > 256 || !(32..=64).contains(&phentsize) {
        return None;
    }
    for i in 0..phnum {
        let mut ph = [0u8; 64];
        f.seek(SeekFrom::Start(phoff.checked_add(i * phentsize)?)).ok()?;
        f.read_exact(&mut ph[..phentsize as usize]).ok()?;
        if u32le(&ph, 0)? != 4 {
            continue; // not PT_NOTE
        }
        let (off, size) = if is64 {
            (u64le(&ph, 8)?, u64le(&ph, 32)?)
        } else {
            (u32le(&ph, 4)?, u32le(&ph, 16)?)
        };
        if size > 1 << 20 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        f.seek(SeekFrom::Start(off)).ok()?;
        f.read_exact(&mut notes).ok()?;
        let mut p = 0usize;
        while p + 12 <= notes.len() {
            let namesz = u32le(&notes, p)? as usize;
            let descsz = u32le(&notes, p + 4)? as usize;
            let ty = u32le(&notes, p + 8)? as u32;
            let name_at = p + 12;
            let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
            let next = desc_at.checked_add(descsz.checked_add(3)? & !3)?;
            if next > notes.len() {
                break;
            }
            let name = &notes[name_at..name_at + namesz];
            if ty == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
                return match descsz {
                    4 => u32le(&notes, desc_at),
                    8 => u64le(&notes, desc_at),
                    _ => None,
                };
            }
            p = next;
        }
    }
    None
}

/// The start of an image and what it was detected as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The first [`MULTIBOOT_SEARCH`] bytes (fewer for a short file).
    pub head: Vec<u8>,
    /// The format, in QEMU's order; `None`: not a format berth knows.
    pub format: Option<ImageFormat>,
}

impl Probe {
    /// Whether a multiboot v1 header sits in the head (even in an image
    /// detected as something else: an ELF may carry a PVH note too).
    pub fn has_multiboot_header(&self) -> bool {
        multiboot_header_offset(&self.head).is_some()
    }

    /// Whether the image is an ELF64 file.
    pub fn is_elf64(&self) -> bool {
        self.head.len() >= 5 && self.head[..4] == [0x7f, b'E', b'L', b'F'] && self.head[4] == 2
    }
}

/// Reads the head of the opened image `f` once and detects its format.
pub fn probe(f: &mut File) -> std::io::Result<Probe> {
    let mut head = vec![0u8; MULTIBOOT_SEARCH];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    let format = detect_bytes(&head, f);
    Ok(Probe { head, format })
}

/// Detection over the first 8 KiB `head` and the whole file `f`.
pub fn detect_bytes<R: Read + Seek>(head: &[u8], f: &mut R) -> Option<ImageFormat> {
    if is_bzimage(head) {
        return Some(ImageFormat::Bzimage);
    }
    let elf = head.len() >= 5 && head[..4] == [0x7f, b'E', b'L', b'F'];
    if elf && pvh_entry(f).is_some() {
        return Some(ImageFormat::Pvh);
    }
    if multiboot_header_offset(head).is_some() {
        return Some(ImageFormat::Multiboot);
    }
    if elf && head[4] == 2 {
        return Some(ImageFormat::Elf64);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn det(b: &[u8]) -> Option<ImageFormat> {
        detect_bytes(&b[..b.len().min(MULTIBOOT_SEARCH)], &mut Cursor::new(b.to_vec()))
    }

    #[test]
    fn bzimage_signature() {
        let mut b = vec![0u8; 0x300];
        b[0x1fe] = 0x55;
        b[0x1ff] = 0xaa;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(det(&b), Some(ImageFormat::Bzimage));
        b[0x203] = b'x';
        assert_eq!(det(&b), None);
    }

    #[test]
    fn multiboot_header_needs_checksum() {
        let mut b = vec![0u8; 0x2000];
        let flags: u32 = 0x3;
        b[0x40..0x44].copy_from_slice(&MULTIBOOT_MAGIC.to_le_bytes());
        b[0x44..0x48].copy_from_slice(&flags.to_le_bytes());
        b[0x48..0x4c].copy_from_slice(&0u32.wrapping_sub(MULTIBOOT_MAGIC + flags).to_le_bytes());
        assert_eq!(multiboot_header_offset(&b), Some(0x40));
        assert_eq!(det(&b), Some(ImageFormat::Multiboot));
        b[0x48] ^= 1;
        assert_eq!(det(&b), None);
    }

    /// A minimal ELF64 with one PT_NOTE holding a PVH note.
    fn elf64_with_note(note: bool) -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
        b[4] = 2;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // phoff
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // phentsize
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // phnum
        let ph = 64;
        b[ph..ph + 4].copy_from_slice(&(if note { 4u32 } else { 1u32 }).to_le_bytes());
        b[ph + 8..ph + 16].copy_from_slice(&0x100u64.to_le_bytes()); // offset
        b[ph + 32..ph + 40].copy_from_slice(&20u64.to_le_bytes()); // filesz
        let n = 0x100;
        b[n..n + 4].copy_from_slice(&4u32.to_le_bytes());
        b[n + 4..n + 8].copy_from_slice(&4u32.to_le_bytes());
        b[n + 8..n + 12].copy_from_slice(&18u32.to_le_bytes());
        b[n + 12..n + 16].copy_from_slice(b"Xen\0");
        b[n + 16..n + 20].copy_from_slice(&0x0100_0040u32.to_le_bytes());
        b
    }

    #[test]
    fn pvh_note_and_plain_elf() {
        let b = elf64_with_note(true);
        assert_eq!(pvh_entry(&mut Cursor::new(b.clone())), Some(0x0100_0040));
        assert_eq!(det(&b), Some(ImageFormat::Pvh));
        assert_eq!(det(&elf64_with_note(false)), Some(ImageFormat::Elf64));
    }

    #[test]
    fn garbage_is_unknown() {
        assert_eq!(det(b""), None);
        assert_eq!(det(b"\x7fELF"), None);
        assert_eq!(det(&[0xffu8; 9000]), None);
        let mut b = elf64_with_note(true);
        b[0x38] = 0xff; // absurd phnum
        b[0x39] = 0xff;
        assert_eq!(pvh_entry(&mut Cursor::new(b)), None);
    }
}
