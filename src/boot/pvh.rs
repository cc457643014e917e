//! The PVH boot protocol (xen/include/public/arch-x86/hvm/start_info.h):
//! an ELF's PT_LOAD segments at their physical addresses, entered in 32-bit
//! protected mode with paging off at the XEN_ELFNOTE_PHYS32_ENTRY address,
//! ebx = `hvm_start_info` (version 1: with the memory map).

use super::{
    addr32, check_fits, elf, format, image_err, plan_addr, ImageFile, ImageFormat, KernelError, LoadedKernel,
    Placed,
};
use crate::plan::Plan;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{Elf, KernelLoader};
use std::path::Path;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Memory map entries berth hands a PVH guest at most.
pub const MAX_MEMMAP_ENTRIES: usize = 128;

/// Loads a PVH ELF (ELF64 through linux-loader, ELF32 with berth's loader).
pub(super) fn load<F: ImageFile>(
    path: &Path,
    f: &mut F,
    len: u64,
    plan: &Plan,
    mem: &GuestMemoryMmap,
) -> Result<Placed, KernelError> {
    let image = elf::parse(f, len).map_err(|m| image_err(path, m))?;
    check_fits(path, mem, &image, plan)?;
    let mut entry = None;
    if image.is64 {
        let r = Elf::load(mem, None, f, None).map_err(|source| KernelError::Load {
            path: path.to_path_buf(),
            source,
        })?;
        if let PvhBootCapability::PvhEntryPresent(a) = r.pvh_boot_cap {
            entry = Some(a.0);
        }
        for s in &image.segments {
            elf::zero_bss(mem, s).map_err(|m| image_err(path, m))?;
        }
    } else {
        elf::load_segments(mem, f, &image).map_err(|m| image_err(path, m))?;
    }
    // linux-loader keeps only the last PT_NOTE's verdict; look at all of them.
    let entry = entry
        .or_else(|| format::pvh_entry(f))
        .ok_or_else(|| image_err(path, "no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH kernel"))?;
    if entry > u64::from(u32::MAX) || !mem.address_in_range(GuestAddress(entry)) {
        return Err(image_err(
            path,
            format!("the PVH entry point {entry:#x} is not in guest memory below 4 GiB"),
        ));
    }
    let info = plan_addr(plan.boot.boot_info, "hvm_start_info")?;
    let (lo, hi) = image.span().unwrap_or((entry, entry));
    Ok(Placed {
        kernel: LoadedKernel {
            format: ImageFormat::Pvh,
            entry,
            load: lo,
            end: hi,
            entry_regs: (0, addr32(info, "hvm_start_info")?),
            initrd: None,
            setup_header: None,
        },
        avoid: (lo, hi),
        initrd_limit: u64::MAX,
    })
}

/// The start_info, memory map and module list for the plan and kernel.
pub fn start_info(
    plan: &Plan,
    kernel: &LoadedKernel,
) -> Result<
    (
        hvm_start_info,
        Vec<hvm_memmap_table_entry>,
        Vec<hvm_modlist_entry>,
    ),
    KernelError,
> {
    let memmap_addr = plan_addr(plan.boot.memmap, "PVH memory map")?;
    if plan.e820.len() > MAX_MEMMAP_ENTRIES {
        return Err(KernelError::BootParams(format!(
            "the e820 map has {} entries; berth passes at most {MAX_MEMMAP_ENTRIES}",
            plan.e820.len()
        )));
    }
    let memmap: Vec<hvm_memmap_table_entry> = plan
        .e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr.0,
            size: e.size.0,
            type_: e.kind.code(),
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = kernel
        .initrd
        .iter()
        .map(|&(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            cmdline_paddr: 0,
            reserved: 0,
        })
        .collect();
    let modlist_paddr = if modules.is_empty() {
        0
    } else {
        plan_addr(plan.boot.modules, "PVH module list")?
    };
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        flags: 0,
        nr_modules: modules.len() as u32,
        modlist_paddr,
        cmdline_paddr: plan.boot.cmdline.0,
        rsdp_paddr: plan.boot.acpi_rsdp.map_or(0, |r| r.0),
        memmap_paddr: memmap_addr,
        memmap_entries: memmap.len() as u32,
        reserved: 0,
    };
    Ok((info, memmap, modules))
}

/// Writes hvm_start_info, the memory map and the module list.
pub(super) fn write_start_info(
    plan: &Plan,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
) -> Result<(), KernelError> {
    let at = plan_addr(plan.boot.boot_info, "hvm_start_info")?;
    let (info, memmap, modules) = start_info(plan, kernel)?;
    let mut params = BootParams::new::<hvm_start_info>(&info, GuestAddress(at));
    params.set_sections::<hvm_memmap_table_entry>(&memmap, GuestAddress(info.memmap_paddr));
    if !modules.is_empty() {
        params.set_modules::<hvm_modlist_entry>(&modules, GuestAddress(info.modlist_paddr));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|e| KernelError::BootParams(format!("PVH start_info: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{self, u32_at, u64_at, Machine};
    use super::super::{load_kernel, write_boot_structures};
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn start_info_memmap_and_modlist_bytes() {
        let img = testutil::image_for("pvh");
        let m = Machine::new("pvh", &img, "pvh", "64MiB", Some(&[9u8; 0x1234]), "console=hvc0");
        assert_eq!(m.plan.boot.protocol, "pvh");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        assert_eq!(k.format, ImageFormat::Pvh);
        assert_eq!(k.entry, testutil::PVH_ENTRY);
        assert_eq!(k.entry_regs, (0, 0x6000));
        let (ia, isz) = k.initrd.unwrap();
        assert_eq!((ia, isz), ((64 << 20) - 0x2000, 0x1234));
        write_boot_structures(&m.plan, &mem, &k).unwrap();
        let si = 0x6000;
        assert_eq!(u32_at(&mem, si), 0x336e_c578); // magic
        assert_eq!(u32_at(&mem, si + 4), 1); // version
        assert_eq!(u32_at(&mem, si + 8), 0); // flags
        assert_eq!(u32_at(&mem, si + 12), 1); // nr_modules
        assert_eq!(u64_at(&mem, si + 16), 0x6100); // modlist_paddr
        assert_eq!(u64_at(&mem, si + 24), 0x20000); // cmdline_paddr
        let rsdp = m.plan.boot.acpi_rsdp.map_or(0, |r| r.0);
        assert_eq!(u64_at(&mem, si + 32), rsdp); // rsdp_paddr
        assert_eq!(u64_at(&mem, si + 40), 0x7000); // memmap_paddr
        assert_eq!(u32_at(&mem, si + 48), 2); // memmap_entries
        let mm = 0x7000;
        assert_eq!(
            (u64_at(&mem, mm), u64_at(&mem, mm + 8), u32_at(&mem, mm + 16)),
            (0, 0x9fc00, 1)
        );
        assert_eq!(
            (
                u64_at(&mem, mm + 24),
                u64_at(&mem, mm + 32),
                u32_at(&mem, mm + 40)
            ),
            (0x10_0000, 63 << 20, 1)
        );
        let ml = 0x6100;
        assert_eq!(
            (u64_at(&mem, ml), u64_at(&mem, ml + 8), u64_at(&mem, ml + 16)),
            (ia, isz, 0)
        );
        let mut cmd = [0u8; 13];
        mem.read_slice(&mut cmd, GuestAddress(0x20000)).unwrap();
        assert_eq!(&cmd, b"console=hvc0\0");
        // The segment landed with its bss zeroed.
        let mut code = [0u8; 8];
        mem.read_slice(&mut code, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&code, b"PVHCODE!");
    }

    /// `BERTH_LINUX_VMLINUX=/path/to/vmlinux cargo test real_pvh`: loads an
    /// ELF vmlinux with a PVH note (extract it from a bzImage with
    /// extract-vmlinux) and checks the entry and start_info. Skipped when
    /// the variable is unset.
    #[test]
    fn real_pvh_vmlinux_from_env() {
        let Some(path) = std::env::var_os("BERTH_LINUX_VMLINUX") else {
            crate::boot::testutil::missing_input(
                "real_pvh_vmlinux_from_env",
                "BERTH_LINUX_VMLINUX is not set (point it at an ELF vmlinux)",
            );
            return;
        };
        let path = std::path::PathBuf::from(path);
        let note = format::pvh_entry(&mut std::fs::File::open(&path).unwrap()).expect("no PVH note");
        let m = Machine::with_kernel_path(
            "real-pvh",
            &path,
            "auto",
            "256MiB",
            Some(b"module"),
            "console=ttyS0",
        );
        assert_eq!(m.plan.boot.protocol, "pvh");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        assert_eq!(k.entry, note);
        assert_eq!(k.entry_regs, (0, m.plan.boot.boot_info.unwrap().0 as u32));
        assert!(k.initrd.unwrap().0 >= k.end);
        write_boot_structures(&m.plan, &mem, &k).unwrap();
        let si = m.plan.boot.boot_info.unwrap().0;
        assert_eq!(u32_at(&mem, si), XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(u32_at(&mem, si + 48) as usize, m.plan.e820.len());
        eprintln!(
            "real_pvh_vmlinux_from_env: {}: entry {:#x}, image {:#x}..{:#x}",
            path.display(),
            k.entry,
            k.load,
            k.end
        );
    }

    #[test]
    fn no_initrd_means_no_modules() {
        let m = Machine::new("pvh-nomod", &testutil::image_for("pvh"), "pvh", "16MiB", None, "");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        let (info, memmap, mods) = start_info(&m.plan, &k).unwrap();
        assert_eq!(({ info.nr_modules }, { info.modlist_paddr }), (0, 0));
        assert_eq!(memmap.len(), 2);
        assert!(mods.is_empty());
    }

    #[test]
    fn elf32_pvh_loads_with_berths_loader() {
        let img = testutil::pvh_elf32();
        let m = Machine::new("pvh32", &img, "pvh", "16MiB", None, "");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        assert_eq!(k.entry, testutil::PVH_ENTRY);
        assert_eq!((k.load, k.end), (0x10_0000, 0x10_2000));
    }

    #[test]
    fn pvh_segment_outside_memory_is_an_error() {
        let img = testutil::image_for("pvh");
        let m = Machine::new("pvh-small", &img, "pvh", "1MiB", None, "");
        let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
        assert!(e.to_string().contains("not inside guest memory"), "{e}");
    }
}
