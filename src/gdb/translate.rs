//! Guest-virtual to guest-physical addresses, walking the guest's own page
//! tables the way the CPU does, for the modes berth boots and the ones a
//! guest switches to: paging off (real mode, 32-bit protected mode), 32-bit
//! paging (4 KiB and, with CR4.PSE, 4 MiB pages), PAE, and long mode with
//! four or (CR4.LA57) five levels. Permissions are not checked: a debugger
//! reads what the guest could not.

/// The control registers a walk depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mmu {
    /// CR0 (PG, bit 31).
    pub cr0: u64,
    /// CR3: the top table.
    pub cr3: u64,
    /// CR4 (PSE bit 4, PAE bit 5, LA57 bit 12).
    pub cr4: u64,
    /// EFER (LMA, bit 10).
    pub efer: u64,
}

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Physical-address bits 12..51 of a 64-bit entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Why an address has no translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// An entry on the way is not present (level 1 = page table).
    #[error("{gva:#x}: not mapped (level-{level} entry at {entry:#x} not present)")]
    NotPresent {
        /// The address.
        gva: u64,
        /// The level whose entry is not present.
        level: u8,
        /// The entry's physical address.
        entry: u64,
    },
    /// A table lies outside guest RAM.
    #[error("{gva:#x}: page-table entry at {entry:#x} is outside guest RAM")]
    TableOutsideRam {
        /// The address.
        gva: u64,
        /// The entry's physical address.
        entry: u64,
    },
}

/// A translation: the physical address and the bytes left in its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Guest-physical address.
    pub gpa: u64,
    /// Bytes from `gpa` to the end of the page that maps it.
    pub left_in_page: u64,
}

/// Reads a 4- or 8-byte little-endian entry at a guest-physical address.
pub type ReadEntry<'a> = &'a dyn Fn(u64, usize) -> Option<u64>;

fn hit(gva: u64, base: u64, page: u64) -> Translation {
    let off = gva & (page - 1);
    Translation {
        gpa: base + off,
        left_in_page: page - off,
    }
}

/// Translates `gva` with the page tables `mmu` points at.
pub fn translate(mmu: &Mmu, gva: u64, read: ReadEntry<'_>) -> Result<Translation, TranslateError> {
    let entry = |addr: u64, size: usize, level: u8| -> Result<u64, TranslateError> {
        let e = read(addr, size).ok_or(TranslateError::TableOutsideRam { gva, entry: addr })?;
        if e & PRESENT == 0 {
            return Err(TranslateError::NotPresent {
                gva,
                level,
                entry: addr,
            });
        }
        Ok(e)
    };
    if mmu.cr0 & CR0_PG == 0 {
        // Linear is physical; without long mode addresses wrap at 4 GiB.
        let gva = gva & 0xffff_ffff;
        return Ok(hit(gva, gva & !0xfff, 0x1000));
    }
    if mmu.efer & EFER_LMA != 0 {
        let levels: u8 = if mmu.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
        let mut table = mmu.cr3 & ADDR_MASK;
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * u32::from(level - 1);
            let addr = table + ((gva >> shift) & 0x1ff) * 8;
            let e = entry(addr, 8, level)?;
            // 1 GiB (level 3) and 2 MiB (level 2) pages.
            if (level == 2 || level == 3) && e & PAGE_SIZE_BIT != 0 {
                let page = 1u64 << shift;
                return Ok(hit(gva, e & ADDR_MASK & !(page - 1), page));
            }
            table = e & ADDR_MASK;
        }
        return Ok(hit(gva, table, 0x1000));
    }
    let gva = gva & 0xffff_ffff;
    if mmu.cr4 & CR4_PAE != 0 {
        // PAE: a four-entry PDPT at CR3 (32-byte aligned), then 2 MiB or 4 KiB pages.
        let pdpte = entry((mmu.cr3 & 0xffff_ffe0) + ((gva >> 30) & 3) * 8, 8, 3)?;
        let pde = entry((pdpte & ADDR_MASK) + ((gva >> 21) & 0x1ff) * 8, 8, 2)?;
        if pde & PAGE_SIZE_BIT != 0 {
            return Ok(hit(gva, pde & ADDR_MASK & !0x1f_ffff, 0x20_0000));
        }
        let pte = entry((pde & ADDR_MASK) + ((gva >> 12) & 0x1ff) * 8, 8, 1)?;
        return Ok(hit(gva, pte & ADDR_MASK, 0x1000));
    }
    // 32-bit paging: 4 MiB pages with CR4.PSE (PSE-36 bits 13..20 are
    // physical bits 32..39), else 4 KiB pages.
    let pde = entry((mmu.cr3 & 0xffff_f000) + ((gva >> 22) & 0x3ff) * 4, 4, 2)?;
    if pde & PAGE_SIZE_BIT != 0 && mmu.cr4 & CR4_PSE != 0 {
        let base = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
        return Ok(hit(gva, base, 0x40_0000));
    }
    let pte = entry((pde & 0xffff_f000) + ((gva >> 12) & 0x3ff) * 4, 4, 1)?;
    Ok(hit(gva, pte & 0xffff_f000, 0x1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Sparse guest RAM below 16 MiB.
    #[derive(Default)]
    struct Ram(BTreeMap<u64, u8>);

    impl Ram {
        fn put(&mut self, addr: u64, value: u64, size: usize) {
            for i in 0..size {
                self.0.insert(addr + i as u64, (value >> (8 * i)) as u8);
            }
        }
        fn read(&self, addr: u64, size: usize) -> Option<u64> {
            if addr + size as u64 > 16 << 20 {
                return None;
            }
            Some((0..size).fold(0, |v, i| {
                v | u64::from(self.0.get(&(addr + i as u64)).copied().unwrap_or(0)) << (8 * i)
            }))
        }
    }

    fn walk(mmu: &Mmu, ram: &Ram, gva: u64) -> Result<Translation, TranslateError> {
        translate(mmu, gva, &|a, s| ram.read(a, s))
    }

    #[test]
    fn paging_off_is_identity_below_4g() {
        let mmu = Mmu::default();
        let t = walk(&mmu, &Ram::default(), 0x1_0010_0123).unwrap();
        assert_eq!(t.gpa, 0x10_0123);
        assert_eq!(t.left_in_page, 0x1000 - 0x123);
    }

    #[test]
    fn long_mode_four_levels_with_2m_and_4k_pages() {
        // berth's boot map: PML4 0x9000 -> PDPT 0xa000 -> PD 0xb000, 2 MiB pages.
        let mut ram = Ram::default();
        ram.put(0x9000, 0xa003, 8);
        ram.put(0xa000, 0xb003, 8);
        ram.put(0xb000 + 8, 0x20_0083, 8);
        // PD entry 2 -> a page table at 0xc000 mapping 0x40_1000 to 0x7000.
        ram.put(0xb000 + 16, 0xc003, 8);
        ram.put(0xc000 + 8, 0x8000_0000_0000_7003, 8); // NX set: not address bits
        let mmu = Mmu {
            cr0: CR0_PG | 1,
            cr3: 0x9000,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8),
        };
        assert_eq!(walk(&mmu, &ram, 0x20_1234).unwrap().gpa, 0x20_1234);
        assert_eq!(
            walk(&mmu, &ram, 0x20_1234).unwrap().left_in_page,
            0x20_0000 - 0x1234
        );
        let t = walk(&mmu, &ram, 0x40_1010).unwrap();
        assert_eq!((t.gpa, t.left_in_page), (0x7010, 0xff0));
        assert_eq!(
            walk(&mmu, &ram, 0x60_0000),
            Err(TranslateError::NotPresent {
                gva: 0x60_0000,
                level: 2,
                entry: 0xb018
            })
        );
        // A 1 GiB page in PDPT entry 1.
        ram.put(0xa008, 0x4000_0083, 8);
        assert_eq!(walk(&mmu, &ram, 0x4123_4567).unwrap().gpa, 0x4123_4567);
        // A table outside RAM.
        ram.put(0xa010, 0x4000_0000_0003, 8);
        assert!(matches!(
            walk(&mmu, &ram, 0x8000_0000),
            Err(TranslateError::TableOutsideRam { .. })
        ));
    }

    #[test]
    fn long_mode_five_levels() {
        let mut ram = Ram::default();
        ram.put(0x1000, 0x2003, 8); // PML5[0]
        ram.put(0x2000, 0x3003, 8); // PML4[0]
        ram.put(0x3000, 0x4003, 8); // PDPT[0]
        ram.put(0x4000, 0x83, 8); // PD[0]: 2 MiB at 0
        let mmu = Mmu {
            cr0: CR0_PG,
            cr3: 0x1000,
            cr4: CR4_PAE | CR4_LA57,
            efer: EFER_LMA,
        };
        assert_eq!(walk(&mmu, &ram, 0x1234).unwrap().gpa, 0x1234);
    }

    #[test]
    fn pae_and_32_bit_paging() {
        let mut ram = Ram::default();
        // PAE: PDPT at 0x1020 (32-byte aligned), PD 0x2000, PT 0x3000.
        ram.put(0x1020 + 8, 0x2001, 8); // PDPTE 1: 1..2 GiB
        ram.put(0x2000, 0x3003, 8);
        ram.put(0x3000 + 5 * 8, 0x9000_0003, 8);
        ram.put(0x2008, 0x60_0083, 8); // 2 MiB page
        let pae = Mmu {
            cr0: CR0_PG | 1,
            cr3: 0x1020,
            cr4: CR4_PAE,
            efer: 0,
        };
        assert_eq!(walk(&pae, &ram, 0x4000_5008).unwrap().gpa, 0x9000_0008);
        assert_eq!(walk(&pae, &ram, 0x4020_0010).unwrap().gpa, 0x60_0010);
        // 32-bit: PD at 0x5000, PT at 0x6000; a 4 MiB page with PSE.
        ram.put(0x5000 + 4, 0x6003, 4); // PDE 1: 4..8 MiB
        ram.put(0x6000 + 3 * 4, 0x00ab_c003, 4);
        ram.put(0x5000 + 8, 0x0080_0083, 4); // PDE 2: 4 MiB page at 8 MiB
        let mut flat = Mmu {
            cr0: CR0_PG | 1,
            cr3: 0x5000,
            cr4: CR4_PSE,
            efer: 0,
        };
        assert_eq!(walk(&flat, &ram, 0x40_3abc).unwrap().gpa, 0xab_cabc);
        let t = walk(&flat, &ram, 0x80_0010).unwrap();
        assert_eq!((t.gpa, t.left_in_page), (0x80_0010, 0x40_0000 - 0x10));
        // Without CR4.PSE the PS bit is ignored: PDE 2 points at a page table.
        flat.cr4 = 0;
        assert!(matches!(
            walk(&flat, &ram, 0x80_0010),
            Err(TranslateError::NotPresent { level: 1, .. })
        ));
    }
}
