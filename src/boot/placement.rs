//! Where the boot structures go, given where the kernel image loads.
//!
//! The rule (pure: its only inputs are the protocol's structures, the fixed
//! firmware tables and the image's segment ranges read at config time):
//!
//! 1. The fixed tables cannot move: the MP table (its floating pointer must
//!    sit in the EBDA kilobyte or the BIOS area) and the ACPI tables (the
//!    RSDP must sit in 0xe0000..0xfffff; berth keeps 0xe0000..0xf0000 for
//!    them). A segment over one of them is refused, naming both ranges.
//! 2. Every other structure has a home address (`layout.rs`). It stays at
//!    home unless a segment overlaps that home, so an image that leaves the
//!    homes free gets exactly the addresses it always got.
//! 3. A displaced structure goes to the lowest address, aligned to its
//!    alignment, in conventional memory `0x1000..0x9fc00` that overlaps no
//!    segment, no fixed table and no structure placed before it. Structures
//!    are placed in [`Structure`] order, the ones at home first.
//! 4. If no such room exists, the image is refused, naming the segment and
//!    the structure it displaced.
//!
//! Segments below 1 MiB, header-only segments and gaps between segments are
//! fine: only a real overlap with something berth writes is refused.

use crate::arch::x86_64::layout;
use std::fmt;

/// A boot structure berth writes into low memory, in placement order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Structure {
    /// The GDT.
    Gdt,
    /// The (empty) IDT.
    Idt,
    /// `hvm_start_info` or the multiboot information.
    BootInfo,
    /// The PVH module list or multiboot module array.
    Modules,
    /// The multiboot module strings.
    ModuleStrings,
    /// The Linux zero page.
    ZeroPage,
    /// The PVH / multiboot memory map.
    MemMap,
    /// The boot vCPU's stack.
    Stack,
    /// PML4, PDPT and PD of the identity map, in this order.
    PageTables,
    /// The kernel command line.
    Cmdline,
}

/// Bytes of the multiboot module strings.
pub const MODULE_STRINGS_SIZE: u64 = 0xe00;
/// Bytes of the boot stack; the stack pointer starts 16 bytes below its top.
pub const STACK_SIZE: u64 = 0x1000;
/// Where displaced structures may go: conventional memory above page 0
/// (the real-mode IVT and BIOS data area) and below the EBDA.
pub const LOW_AREA: (u64, u64) = (0x1000, layout::EBDA_START);

impl Structure {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Structure::Gdt => "GDT",
            Structure::Idt => "IDT",
            Structure::BootInfo => "boot information",
            Structure::Modules => "module list",
            Structure::ModuleStrings => "module strings",
            Structure::ZeroPage => "zero page",
            Structure::MemMap => "memory map",
            Structure::Stack => "boot stack",
            Structure::PageTables => "boot page tables",
            Structure::Cmdline => "command line",
        }
    }

    /// Its home address.
    pub fn home(self) -> u64 {
        match self {
            Structure::Gdt => layout::GDT_ADDR,
            Structure::Idt => layout::IDT_ADDR,
            Structure::BootInfo => layout::BOOT_INFO_ADDR,
            Structure::Modules => layout::BOOT_MODULES_ADDR,
            Structure::ModuleStrings => layout::BOOT_STRINGS_ADDR,
            Structure::ZeroPage => layout::ZERO_PAGE_ADDR,
            Structure::MemMap => layout::BOOT_MEMMAP_ADDR,
            Structure::Stack => layout::BOOT_STACK_POINTER + 0x10 - STACK_SIZE,
            Structure::PageTables => layout::PML4_ADDR,
            Structure::Cmdline => layout::CMDLINE_ADDR,
        }
    }

    /// Bytes it occupies (the most any machine needs).
    pub fn size(self) -> u64 {
        match self {
            Structure::Gdt => 0x28,
            Structure::Idt => 8,
            // hvm_start_info is 56 bytes, multiboot_info 116.
            Structure::BootInfo => 0x100,
            Structure::Modules => 0x100,
            Structure::ModuleStrings => MODULE_STRINGS_SIZE,
            Structure::ZeroPage => 0x1000,
            // 128 entries of 24 bytes.
            Structure::MemMap => 0xc00,
            Structure::Stack => STACK_SIZE,
            Structure::PageTables => 0x3000,
            Structure::Cmdline => layout::CMDLINE_MAX,
        }
    }

    /// Alignment of its address.
    pub fn align(self) -> u64 {
        match self {
            Structure::ZeroPage | Structure::Stack | Structure::PageTables | Structure::Cmdline => 0x1000,
            _ => 0x10,
        }
    }

    /// The structures a protocol uses: `linux` (zero page) or not (PVH and
    /// multiboot: boot information, modules, memory map), `multiboot` adding
    /// the module strings.
    pub fn for_protocol(linux: bool, multiboot: bool) -> Vec<Structure> {
        use Structure::*;
        let mut v = vec![Gdt, Idt];
        if linux {
            v.push(ZeroPage);
        } else {
            v.extend([BootInfo, Modules]);
            if multiboot {
                v.push(ModuleStrings);
            }
            v.push(MemMap);
        }
        v.extend([Stack, PageTables, Cmdline]);
        v.sort();
        v
    }
}

/// A table that cannot move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixed {
    /// How messages name it.
    pub name: &'static str,
    /// First byte.
    pub start: u64,
    /// First byte past it.
    pub end: u64,
}

/// Why an image cannot boot: a segment over something berth places.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// Index of the segment in the image's loadable segments.
    pub segment: usize,
    /// The segment's range.
    pub range: (u64, u64),
    /// What it overlaps.
    pub what: &'static str,
    /// Where that lies.
    pub area: (u64, u64),
    /// The structure could have moved, but no room was left.
    pub no_room: bool,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {}: {:#x}..{:#x} overlaps the {} {:#x}..{:#x}",
            self.segment, self.range.0, self.range.1, self.what, self.area.0, self.area.1
        )?;
        if self.no_room {
            write!(
                f,
                ", and no free room for it is left in {:#x}..{:#x}",
                LOW_AREA.0, LOW_AREA.1
            )?;
        }
        Ok(())
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The first segment overlapping `r`, with its index.
fn segment_over(segments: &[(u64, u64)], r: (u64, u64)) -> Option<(usize, (u64, u64))> {
    segments
        .iter()
        .copied()
        .enumerate()
        .find(|&(_, s)| overlaps(s, r))
}

/// Places `structures` (see the module documentation): returns each one's
/// address, in the order given.
pub fn place(
    structures: &[Structure],
    fixed: &[Fixed],
    segments: &[(u64, u64)],
) -> Result<Vec<u64>, Overlap> {
    for f in fixed {
        if let Some((segment, range)) = segment_over(segments, (f.start, f.end)) {
            return Err(Overlap {
                segment,
                range,
                what: f.name,
                area: (f.start, f.end),
                no_room: false,
            });
        }
    }
    let mut taken: Vec<(u64, u64)> = fixed.iter().map(|f| (f.start, f.end)).collect();
    let mut addrs: Vec<Option<u64>> = structures
        .iter()
        .map(|s| {
            let home = (s.home(), s.home() + s.size());
            segment_over(segments, home).is_none().then_some(home.0)
        })
        .collect();
    for (s, a) in structures.iter().zip(&addrs) {
        if let Some(a) = a {
            taken.push((*a, a + s.size()));
        }
    }
    for (s, a) in structures.iter().zip(addrs.iter_mut()) {
        if a.is_some() {
            continue;
        }
        let home = (s.home(), s.home() + s.size());
        let found = first_fit(s.size(), s.align(), segments, &taken).ok_or_else(|| {
            // The home is displaced, so a segment overlaps it.
            let (segment, range) = segment_over(segments, home).unwrap_or((0, home));
            Overlap {
                segment,
                range,
                what: s.name(),
                area: home,
                no_room: true,
            }
        })?;
        taken.push((found, found + s.size()));
        *a = Some(found);
    }
    Ok(addrs.into_iter().map(|a| a.unwrap_or(0)).collect())
}

/// The lowest `align`-aligned address in [`LOW_AREA`] where `size` bytes
/// overlap nothing in `segments` or `taken`.
fn first_fit(size: u64, align: u64, segments: &[(u64, u64)], taken: &[(u64, u64)]) -> Option<u64> {
    let up = |a: u64| a.checked_add(align - 1).map(|a| a & !(align - 1));
    let mut at = up(LOW_AREA.0)?;
    loop {
        let end = at.checked_add(size)?;
        if end > LOW_AREA.1 {
            return None;
        }
        // The blocker reaching furthest: skip past it.
        let blocker = segments
            .iter()
            .chain(taken)
            .filter(|&&r| overlaps(r, (at, end)))
            .map(|r| r.1)
            .max();
        match blocker {
            None => return Some(at),
            Some(b) => at = up(b)?,
        }
    }
}

/// The first segment (with its index) overlapping one of `areas` (name,
/// start, end): the loader's check that the image leaves every structure
/// the plan placed alone.
pub fn check_clear(segments: &[(u64, u64)], areas: &[Fixed]) -> Result<(), Overlap> {
    for a in areas {
        if let Some((segment, range)) = segment_over(segments, (a.start, a.end)) {
            return Err(Overlap {
                segment,
                range,
                what: a.name,
                area: (a.start, a.end),
                no_room: false,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Structure::*;

    const ACPI: Fixed = Fixed {
        name: "ACPI tables",
        start: 0xe0000,
        end: 0xf0000,
    };
    const MP: Fixed = Fixed {
        name: "MP table",
        start: 0x9fc00,
        end: 0x9fd00,
    };

    fn homes(s: &[Structure]) -> Vec<u64> {
        s.iter().map(|s| s.home()).collect()
    }

    #[test]
    fn homes_do_not_overlap_each_other_or_the_fixed_tables() {
        for (linux, mb) in [(true, false), (false, false), (false, true)] {
            let s = Structure::for_protocol(linux, mb);
            let r: Vec<(u64, u64)> = s.iter().map(|s| (s.home(), s.home() + s.size())).collect();
            for (i, a) in r.iter().enumerate() {
                assert_eq!(a.0 % s[i].align(), 0, "{:?}", s[i]);
                assert!(a.1 <= LOW_AREA.1, "{:?}", s[i]);
                for b in &r[..i] {
                    assert!(!overlaps(*a, *b), "{:?} {a:x?} {b:x?}", s[i]);
                }
            }
        }
        assert_eq!(Stack.home() + STACK_SIZE - 0x10, layout::BOOT_STACK_POINTER);
    }

    #[test]
    fn nothing_moves_for_an_image_at_1_mib() {
        let s = Structure::for_protocol(false, true);
        let segs = [(0xff000, 0xff120), (0x10_0000, 0x10_3000)];
        assert_eq!(place(&s, &[ACPI, MP], &segs).unwrap(), homes(&s));
        assert_eq!(place(&s, &[ACPI, MP], &[]).unwrap(), homes(&s));
    }

    #[test]
    fn a_realmode_image_at_0x8000_moves_the_stack_and_page_tables() {
        let s = Structure::for_protocol(false, true);
        let got = place(&s, &[ACPI, MP], &[(0x8000, 0xd200)]).unwrap();
        let want: Vec<u64> = s
            .iter()
            .map(|s| match s {
                Stack => 0x1000,
                PageTables => 0x2000,
                other => other.home(),
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn displaced_structures_skip_segments_and_each_other() {
        let s = Structure::for_protocol(true, false);
        // Segments over the zero page, the stack and the first low pages.
        let segs = [(0x1000, 0x3800), (0x7000, 0x9000)];
        let got = place(&s, &[], &segs).unwrap();
        let at = |w: Structure| got[s.iter().position(|&x| x == w).unwrap()];
        assert_eq!(at(Gdt), 0x500);
        assert_eq!(at(ZeroPage), 0x4000);
        assert_eq!(at(Stack), 0x5000);
        assert_eq!(at(PageTables), 0x9000);
        assert_eq!(at(Cmdline), 0x20000);
        // Page 0 is never used for a displaced structure.
        let got = place(&[Gdt, Idt], &[], &[(0, 0x1000)]).unwrap();
        assert_eq!(got, vec![0x1000, 0x1030]);
    }

    #[test]
    fn a_segment_over_a_fixed_table_is_refused_with_both_ranges() {
        let s = Structure::for_protocol(true, false);
        let e = place(&s, &[ACPI, MP], &[(0x10_0000, 0x20_0000), (0xe8000, 0xe9000)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "segment 1: 0xe8000..0xe9000 overlaps the ACPI tables 0xe0000..0xf0000"
        );
        let e = place(&s, &[ACPI, MP], &[(0x9f000, 0xa0000)]).unwrap_err();
        assert_eq!(e.what, "MP table");
    }

    #[test]
    fn no_room_left_names_the_segment_and_the_structure() {
        let s = Structure::for_protocol(true, false);
        let e = place(&s, &[], &[(0x800, 0x9f000)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "segment 0: 0x800..0x9f000 overlaps the zero page 0x7000..0x8000, and no free room for it is left in 0x1000..0x9fc00"
        );
    }

    #[test]
    fn check_clear_names_both_ranges() {
        let areas = [Fixed {
            name: "boot page tables",
            start: 0x9000,
            end: 0xc000,
        }];
        let e = check_clear(&[(0x10_0000, 0x20_0000), (0x8000, 0x9200)], &areas).unwrap_err();
        assert_eq!(
            e.to_string(),
            "segment 1: 0x8000..0x9200 overlaps the boot page tables 0x9000..0xc000"
        );
        assert!(check_clear(&[(0x10_0000, 0x20_0000)], &areas).is_ok());
    }
}
