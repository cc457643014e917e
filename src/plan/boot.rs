//! The boot section's placement: which structures the protocol needs, the
//! tables that cannot move, and where the kernel image's segments push the
//! rest ([`crate::boot::placement`] holds the rule). Pure: the segments were
//! read from the image at config time.

use super::{BootPlan, Hex, Plan};
use crate::arch::x86_64::acpi::TABLES_END;
use crate::arch::x86_64::{layout, mptable};
use crate::boot::placement::{self, Fixed, Overlap, Structure, STACK_SIZE};
use crate::config::{Config, KernelFormat};

/// The structures `format`'s protocol uses.
fn structures(format: KernelFormat) -> Vec<Structure> {
    let linux = matches!(
        format,
        KernelFormat::Bzimage | KernelFormat::Elf | KernelFormat::Auto
    );
    Structure::for_protocol(linux, format == KernelFormat::Multiboot)
}

/// The MP table for `vcpus` CPUs (the plan's [`Plan::mptable_spec`]).
fn mptable_spec(vcpus: u32) -> mptable::MpTableSpec {
    mptable::MpTableSpec {
        cpus: (0..vcpus).map(|i| i as u8).collect(),
        ioapic_id: vcpus as u8,
        ioapic_addr: layout::IOAPIC_ADDR as u32,
        lapic_addr: layout::LAPIC_ADDR as u32,
        ioapic_pins: 24,
    }
}

fn mptable_area(spec: &mptable::MpTableSpec, at: u64) -> Fixed {
    Fixed {
        name: "MP table",
        start: at,
        end: at + mptable::size(spec) as u64,
    }
}

fn acpi_area(rsdp: u64) -> Fixed {
    Fixed {
        name: "ACPI tables",
        start: rsdp,
        end: TABLES_END.max(rsdp),
    }
}

/// The tables of `c`'s machine that cannot move.
fn fixed(c: &Config) -> Vec<Fixed> {
    let tables = c.machine.machine.tables;
    let mut v = Vec::new();
    if tables.mptable() {
        let spec = mptable_spec(c.machine.machine.vcpus);
        v.push(mptable_area(&spec, mptable::place(&spec)));
    }
    if tables.acpi() {
        v.push(acpi_area(layout::ACPI_RSDP_ADDR));
    }
    v
}

/// Where each boot structure of `c`'s protocol goes, given the image's
/// segments; or the segment that overlaps a table that cannot move (or
/// leaves a displaced structure no room). `config::parse` refuses the
/// image (exit 5) on the error, so the plan always has a placement.
pub fn layout_of(c: &Config) -> Result<Vec<(Structure, u64)>, Overlap> {
    let s = structures(c.kernel_format);
    let addrs = placement::place(&s, &fixed(c), &c.kernel_segments)?;
    Ok(s.into_iter().zip(addrs).collect())
}

/// Writes the placement into the boot section (which holds the homes).
pub(super) fn apply(b: &mut BootPlan, placed: &[(Structure, u64)]) {
    for &(s, a) in placed {
        match s {
            Structure::Gdt => b.gdt = Hex(a),
            Structure::Idt => b.idt = Hex(a),
            Structure::BootInfo => b.boot_info = Some(Hex(a)),
            Structure::Modules => b.modules = Some(Hex(a)),
            Structure::ModuleStrings => b.module_strings = Some(Hex(a)),
            Structure::ZeroPage => b.zero_page = Some(Hex(a)),
            Structure::MemMap => b.memmap = Some(Hex(a)),
            Structure::Stack => b.stack_pointer = Hex(a + STACK_SIZE - 0x10),
            Structure::PageTables => {
                b.pml4 = Hex(a);
                b.pdpte = Hex(a + 0x1000);
                b.pde = Hex(a + 0x2000);
            }
            Structure::Cmdline => b.cmdline = Hex(a),
        }
    }
}

/// Every range the plan's boot section fills in guest memory, named: what
/// a kernel segment must not overlap (the loader checks this again, against
/// the image it actually loads).
pub fn areas(p: &Plan) -> Vec<Fixed> {
    let b = &p.boot;
    let at = |s: Structure, a: u64| Fixed {
        name: s.name(),
        start: a,
        end: a + s.size(),
    };
    let page = |a: u64| Fixed {
        name: Structure::PageTables.name(),
        start: a,
        end: a + 0x1000,
    };
    let mut v = vec![
        at(Structure::Gdt, b.gdt.0),
        at(Structure::Idt, b.idt.0),
        at(
            Structure::Stack,
            (b.stack_pointer.0 + 0x10).saturating_sub(STACK_SIZE),
        ),
        at(Structure::Cmdline, b.cmdline.0),
    ];
    // The placement keeps the three tables together; name them as one then.
    if b.pdpte.0 == b.pml4.0 + 0x1000 && b.pde.0 == b.pml4.0 + 0x2000 {
        v.push(at(Structure::PageTables, b.pml4.0));
    } else {
        v.extend([page(b.pml4.0), page(b.pdpte.0), page(b.pde.0)]);
    }
    let optional = [
        (Structure::ZeroPage, b.zero_page),
        (Structure::BootInfo, b.boot_info),
        (Structure::Modules, b.modules),
        (Structure::ModuleStrings, b.module_strings),
        (Structure::MemMap, b.memmap),
    ];
    v.extend(optional.iter().filter_map(|&(s, a)| a.map(|a| at(s, a.0))));
    if let Some(m) = b.mptable {
        v.push(mptable_area(&p.mptable_spec(), m.0));
    }
    if let Some(r) = b.acpi_rsdp {
        v.push(acpi_area(r.0));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::parse;
    use std::path::Path;

    fn config(vcpus: u32, format: &str, segments: &[(u64, u64)]) -> Config {
        let text = format!(
            "[machine]\nvcpus = {vcpus}\n[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\n[kernel]\npath = \"@KERNEL@\"\n"
        );
        let mut c = parse(Path::new("x.toml"), &text).unwrap();
        c.kernel_format = match format {
            "pvh" => KernelFormat::Pvh,
            "multiboot" => KernelFormat::Multiboot,
            _ => KernelFormat::Elf,
        };
        c.kernel_segments = segments.to_vec();
        c
    }

    #[test]
    fn the_mptable_area_is_the_plans() {
        for n in [1, 40, 41, 254] {
            let c = config(n, "elf", &[]);
            let p = super::super::plan(&c);
            let spec = p.mptable_spec();
            let area = mptable_area(&spec, p.boot.mptable.unwrap().0);
            assert_eq!(fixed(&c)[0], area, "{n} vCPUs");
            assert_eq!(mptable::size(&mptable_spec(n)), mptable::size(&spec));
        }
    }

    #[test]
    fn a_low_segment_moves_structures_in_the_plan() {
        let c = config(1, "multiboot", &[(0x8000, 0xd200)]);
        let p = super::super::plan(&c);
        assert_eq!(p.boot.stack_pointer, Hex(0x1ff0));
        assert_eq!(
            (p.boot.pml4, p.boot.pdpte, p.boot.pde),
            (Hex(0x2000), Hex(0x3000), Hex(0x4000))
        );
        assert_eq!(p.boot.boot_info, Some(Hex(0x6000)));
        // No planned area overlaps the segment, nor another area.
        let a = areas(&p);
        assert!(placement::check_clear(&c.kernel_segments, &a).is_ok());
        for (i, x) in a.iter().enumerate() {
            for y in &a[..i] {
                assert!(x.end <= y.start || y.end <= x.start, "{x:x?} {y:x?}");
            }
        }
    }

    #[test]
    fn homes_when_nothing_conflicts() {
        let c = config(2, "pvh", &[(0xff000, 0xff120), (0x10_0000, 0x10_2000)]);
        let moved = super::super::plan(&c);
        let home = super::super::plan(&config(2, "pvh", &[]));
        assert_eq!(moved, home);
        assert_eq!(home.boot.stack_pointer, Hex(layout::BOOT_STACK_POINTER));
    }

    #[test]
    fn the_acpi_room_cannot_move() {
        let c = config(1, "elf", &[(0xe0000, 0xe1000)]);
        let e = layout_of(&c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "segment 0: 0xe0000..0xe1000 overlaps the ACPI tables 0xe0000..0xf0000"
        );
    }
}
