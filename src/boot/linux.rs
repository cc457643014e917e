//! The Linux 64-bit boot protocol (Documentation/arch/x86/boot.rst), for an
//! ELF64 vmlinux ("linux-64bit") and a bzImage ("linux-bzimage"): the
//! image goes into RAM, the zero page (`boot_params`) carries the command
//! line, the initrd and the e820 map, and the BSP enters in long mode with
//! rsi = zero page.

use super::{
    check_fits, elf, image_err, plan_addr, ImageFile, ImageFormat, KernelError, LoadedKernel, Placed,
};
use crate::plan::Plan;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use std::io::SeekFrom;
use std::path::Path;
use vm_memory::{ByteValued, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// "HdrS".
const HDRS: u32 = 0x5372_6448;
/// Oldest boot protocol berth accepts (cmdline_size, 64-bit fields).
const MIN_VERSION: u16 = 0x0206;
/// loadflags: protected-mode code loads at 0x100000.
const LOADED_HIGH: u8 = 0x01;
/// xloadflags: the kernel has the 64-bit entry point at load + 0x200.
const XLF_KERNEL_64: u16 = 0x0001;
/// Offset of startup_64 from the protected-mode code's start.
const STARTUP_64_OFFSET: u64 = 0x200;
/// Offset of the setup header in the image and in the zero page.
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// LOAD_PHYSICAL_ADDR of x86-64 kernels before pref_address (2.10) said so.
const DEFAULT_PREF_ADDRESS: u64 = 0x100_0000;

/// Loads an ELF64 vmlinux at its physical addresses; entry = e_entry.
pub(super) fn load_elf64<F: ImageFile>(
    path: &Path,
    f: &mut F,
    len: u64,
    plan: &Plan,
    mem: &GuestMemoryMmap,
) -> Result<Placed, KernelError> {
    let image = elf::parse(f, len).map_err(|m| image_err(path, m))?;
    if !image.is64 {
        return Err(image_err(
            path,
            "format \"elf\" boots ELF64 images at their 64-bit entry; this is ELF32 (a multiboot or PVH kernel?)",
        ));
    }
    check_fits(path, mem, &image, plan)?;
    let r = Elf::load(mem, None, f, None).map_err(|source| KernelError::Load {
        path: path.to_path_buf(),
        source,
    })?;
    for s in &image.segments {
        elf::zero_bss(mem, s).map_err(|m| image_err(path, m))?;
    }
    let entry = r.kernel_load.0;
    if !mem.address_in_range(GuestAddress(entry)) {
        return Err(image_err(
            path,
            format!("entry point {entry:#x} is not in guest memory"),
        ));
    }
    // `parse` guarantees at least one segment.
    let (lo, hi) = image.span().unwrap_or((entry, entry));
    Ok(Placed {
        kernel: LoadedKernel {
            format: ImageFormat::Elf64,
            entry,
            load: lo,
            end: hi,
            entry_regs: (0, 0),
            initrd: None,
            setup_header: None,
        },
        avoid: (lo, hi),
        initrd_limit: u64::MAX,
    })
}

/// Reads and checks a bzImage's setup header.
fn read_setup_header<F: ImageFile>(path: &Path, f: &mut F, len: u64) -> Result<setup_header, KernelError> {
    let mut hdr = setup_header::default();
    let need = SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>() as u64;
    if len < need {
        return Err(image_err(
            path,
            format!(
                "bzImage setup header truncated: the file has {len:#x} bytes, the header ends at {need:#x}"
            ),
        ));
    }
    f.seek(SeekFrom::Start(SETUP_HEADER_OFFSET))
        .and_then(|_| f.read_exact(hdr.as_mut_slice()))
        .map_err(|source| KernelError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    check_setup_header(&hdr, len).map_err(|m| image_err(path, m))?;
    Ok(hdr)
}

/// The checks berth makes of a bzImage's setup header (`len` = file size).
fn check_setup_header(hdr: &setup_header, len: u64) -> Result<(), String> {
    let (magic, version, loadflags, xloadflags) = (hdr.header, hdr.version, hdr.loadflags, hdr.xloadflags);
    if magic != HDRS {
        return Err("not a bzImage: no \"HdrS\" setup header at 0x202".into());
    }
    if version < MIN_VERSION {
        return Err(format!(
            "boot protocol {}.{:02} is older than 2.06, which berth needs",
            version >> 8,
            version & 0xff
        ));
    }
    if loadflags & LOADED_HIGH == 0 {
        return Err("a zImage (loadflags without LOADED_HIGH): berth boots bzImages".into());
    }
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err("this bzImage has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)".into());
    }
    let setup = setup_size(hdr);
    if setup >= len {
        return Err(format!(
            "setup code ({setup:#x} bytes) is not followed by a kernel: the file has {len:#x} bytes"
        ));
    }
    Ok(())
}

/// Where a bzImage's protected-mode kernel lands (at 1 MiB, as
/// [`load_bzimage`] puts it), from the setup header at the file's start.
pub(super) fn payload_range<F: ImageFile>(f: &mut F, len: u64) -> Option<(u64, u64)> {
    let mut hdr = setup_header::default();
    f.seek(SeekFrom::Start(SETUP_HEADER_OFFSET)).ok()?;
    f.read_exact(hdr.as_mut_slice()).ok()?;
    let payload = len.checked_sub(setup_size(&hdr))?;
    let start = crate::arch::x86_64::layout::HIMEM_START;
    Some((start, start.checked_add(payload)?))
}

/// Bytes of boot sector + setup code before the protected-mode kernel.
fn setup_size(hdr: &setup_header) -> u64 {
    let sects = match hdr.setup_sects {
        0 => 4,
        n => u64::from(n),
    };
    (sects + 1) * 512
}

/// Loads a bzImage's protected-mode kernel at the plan's kernel_min_addr;
/// entry = load + 0x200 (startup_64).
pub(super) fn load_bzimage<F: ImageFile>(
    path: &Path,
    f: &mut F,
    len: u64,
    plan: &Plan,
    mem: &GuestMemoryMmap,
) -> Result<Placed, KernelError> {
    let min = plan.boot.kernel_min_addr.0;
    let hdr = read_setup_header(path, f, len)?;
    let cmdline_max = hdr.cmdline_size;
    if plan.kernel.cmdline.len() as u64 > u64::from(cmdline_max) {
        return Err(image_err(
            path,
            format!(
                "the command line is {} bytes; this kernel takes at most {cmdline_max}",
                plan.kernel.cmdline.len()
            ),
        ));
    }
    let payload = len - setup_size(&hdr);
    elf::check_range(mem, min, payload, min).map_err(|m| {
        image_err(
            path,
            format!("the {payload:#x}-byte kernel does not fit at {min:#x}: {m}"),
        )
    })?;
    let r = BzImage::load(mem, Some(GuestAddress(min)), f, None).map_err(|source| KernelError::Load {
        path: path.to_path_buf(),
        source,
    })?;
    let hdr = r.setup_header.unwrap_or(hdr);
    let load = r.kernel_load.0;
    let entry = load + STARTUP_64_OFFSET;
    Ok(Placed {
        kernel: LoadedKernel {
            format: ImageFormat::Bzimage,
            entry,
            load,
            end: r.kernel_end,
            entry_regs: (0, 0),
            initrd: None,
            setup_header: Some(hdr),
        },
        avoid: (load, decompress_end(&hdr, load, r.kernel_end)),
        initrd_limit: initrd_limit(&hdr),
    })
}

/// First byte past the memory a bzImage loaded at `load` uses while it
/// decompresses itself: init_size bytes from where it runs (its load address
/// rounded up to kernel_alignment, but at least pref_address).
fn decompress_end(hdr: &setup_header, load: u64, end: u64) -> u64 {
    let (version, align, pref, init) = (hdr.version, hdr.kernel_alignment, hdr.pref_address, hdr.init_size);
    if version < 0x020a {
        return end;
    }
    let align = u64::from(align).max(1).next_power_of_two();
    let run = load.checked_add(align - 1).map_or(u64::MAX, |a| a & !(align - 1));
    let run = run.max(if pref == 0 { DEFAULT_PREF_ADDRESS } else { pref });
    end.max(run.saturating_add(u64::from(init)))
}

/// First address past the highest byte a bzImage's initrd may occupy.
fn initrd_limit(hdr: &setup_header) -> u64 {
    let max = hdr.initrd_addr_max;
    u64::from(if max == 0 { 0x37ff_ffff } else { max }) + 1
}

/// Builds the zero page: the bzImage's own setup header (or a minimal one
/// for an ELF vmlinux), the loader type, command line, initrd, ACPI RSDP and
/// the plan's e820 map.
pub fn zero_page(plan: &Plan, kernel: &LoadedKernel) -> Result<boot_params, KernelError> {
    let mut params = boot_params::default();
    match kernel.setup_header {
        Some(hdr) => params.hdr = hdr,
        None => {
            params.hdr.boot_flag = 0xaa55;
            params.hdr.header = HDRS;
            params.hdr.kernel_alignment = 0x0100_0000;
        }
    }
    params.hdr.type_of_loader = 0xff; // "undefined" boot loader
    params.hdr.cmd_line_ptr = plan.boot.cmdline.0 as u32;
    params.ext_cmd_line_ptr = (plan.boot.cmdline.0 >> 32) as u32;
    params.hdr.cmdline_size = plan.kernel.cmdline.len() as u32;
    if let Some((addr, size)) = kernel.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    if let Some(rsdp) = plan.boot.acpi_rsdp {
        params.acpi_rsdp_addr = rsdp.0;
    }
    if plan.e820.len() > params.e820_table.len() {
        return Err(KernelError::BootParams(format!(
            "the e820 map has {} entries; the zero page holds {}",
            plan.e820.len(),
            params.e820_table.len()
        )));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&plan.e820) {
        *slot = boot_e820_entry {
            addr: e.addr.0,
            size: e.size.0,
            r#type: e.kind.code(),
        };
    }
    params.e820_entries = plan.e820.len() as u8;
    Ok(params)
}

/// Writes the zero page where the plan says.
pub(super) fn write_zero_page(
    plan: &Plan,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
) -> Result<(), KernelError> {
    let at = plan_addr(plan.boot.zero_page, "zero page")?;
    let params = zero_page(plan, kernel)?;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(at)),
        mem,
    )
    .map_err(|e| KernelError::BootParams(format!("zero page: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::testutil::{self, Machine};
    use super::super::{load_kernel, write_boot_structures};
    use super::*;
    use vm_memory::Bytes;

    /// A fake bzImage: 4 setup sectors after the boot sector, a setup
    /// header (protocol `version`, `xloadflags`), then `payload` bytes.
    pub fn bzimage(version: u16, xloadflags: u16, payload: usize) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut b = vec![0u8; (setup_sects as usize + 1) * 512];
        b[0x1f1] = setup_sects;
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x200..0x202].copy_from_slice(&[0xeb, 0x66]);
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        b[0x211] = LOADED_HIGH;
        b[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        b[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
        b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
        b[0x234] = 1; // relocatable
        b[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        b[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        b[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
        b[0x260..0x264].copy_from_slice(&0x80_0000u32.to_le_bytes()); // init_size
        b.extend((0..payload).map(|i| (i % 251) as u8));
        b
    }

    #[test]
    fn bzimage_zero_page_from_setup_header() {
        let img = bzimage(0x020f, 1, 0x3000);
        let initrd = vec![0x5au8; 0x1800];
        let m = Machine::new(
            "bz",
            &img,
            "bzimage",
            "64MiB",
            Some(&initrd),
            "console=ttyS0 quiet",
        );
        assert_eq!(m.plan.boot.protocol, "linux-bzimage");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        assert_eq!((k.load, k.entry, k.end), (0x10_0000, 0x10_0200, 0x10_3000));
        assert_eq!(k.format, ImageFormat::Bzimage);
        // The payload (after 5 × 512 bytes of setup) is at 1 MiB.
        let mut got = vec![0u8; 0x3000];
        mem.read_slice(&mut got, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(got[..], img[0xa00..]);
        write_boot_structures(&m.plan, &mem, &k).unwrap();
        let zp: boot_params = mem.read_obj(GuestAddress(0x7000)).unwrap();
        let h = zp.hdr;
        assert_eq!(
            ({ h.version }, { h.header }, { h.boot_flag }, h.type_of_loader),
            (0x020f, HDRS, 0xaa55, 0xff)
        );
        assert_eq!(
            ({ h.code32_start }, { h.cmd_line_ptr }, { h.cmdline_size }),
            (0x10_0000, 0x20000, 19)
        );
        assert_eq!({ h.xloadflags }, 1);
        assert_eq!({ h.ramdisk_size }, 0x1800);
        assert_eq!({ h.ramdisk_image }, (64 << 20) - 0x2000);
        assert_eq!(
            (zp.ext_ramdisk_image, zp.ext_ramdisk_size, zp.ext_cmd_line_ptr),
            (0, 0, 0)
        );
        assert_eq!({ zp.acpi_rsdp_addr }, m.plan.boot.acpi_rsdp.map_or(0, |r| r.0));
        assert_eq!(zp.e820_entries, 2);
        let e = zp.e820_table;
        assert_eq!(({ e[0].addr }, { e[0].size }, { e[0].r#type }), (0, 0x9fc00, 1));
        assert_eq!(
            ({ e[1].addr }, { e[1].size }, { e[1].r#type }),
            (0x10_0000, (63 << 20), 1)
        );
        let mut cmd = [0u8; 20];
        mem.read_slice(&mut cmd, GuestAddress(0x20000)).unwrap();
        assert_eq!(&cmd, b"console=ttyS0 quiet\0");
    }

    #[test]
    fn bzimage_initrd_respects_initrd_addr_max() {
        let mut img = bzimage(0x020f, 1, 0x1000);
        img[0x22c..0x230].copy_from_slice(&0x1ff_ffffu32.to_le_bytes());
        let m = Machine::new("bz-max", &img, "bzimage", "64MiB", Some(&[1u8; 0x100]), "");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        assert_eq!(k.initrd, Some((0x1ff_f000, 0x100)));
        // initrd_addr_max inside the decompression area: no room.
        img[0x22c..0x230].copy_from_slice(&0x17f_ffffu32.to_le_bytes());
        let m = Machine::new("bz-max2", &img, "bzimage", "64MiB", Some(&[1u8; 0x100]), "");
        let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
        assert!(matches!(e, KernelError::Initrd { .. }), "{e}");
    }

    #[test]
    fn bzimage_refusals() {
        let cases: [(&str, Vec<u8>, &str); 3] = [
            ("bz-old", bzimage(0x0205, 1, 0x1000), "older than 2.06"),
            (
                "bz-32",
                bzimage(0x020f, 0, 0x1000),
                "this bzImage has no 64-bit entry point",
            ),
            ("bz-noload", bzimage(0x020f, 1, 0), "not followed by a kernel"),
        ];
        for (name, img, want) in cases {
            let m = Machine::new(name, &img, "bzimage", "64MiB", None, "");
            let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
            assert!(e.to_string().contains(want), "{name}: {e}");
            assert!(e.to_string().contains("kernel image"), "{name}: {e}");
        }
        // Payload larger than memory.
        let m = Machine::new(
            "bz-huge",
            &bzimage(0x020f, 1, 3 << 20),
            "bzimage",
            "2MiB",
            None,
            "",
        );
        let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
        // Command line longer than the kernel takes.
        let mut img = bzimage(0x020f, 1, 0x1000);
        img[0x238..0x23c].copy_from_slice(&4u32.to_le_bytes());
        let m = Machine::new("bz-cmd", &img, "bzimage", "8MiB", None, "console=ttyS0");
        let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
        assert!(e.to_string().contains("at most 4"), "{e}");
    }

    #[test]
    fn truncated_setup_header_is_an_error() {
        let img = bzimage(0x020f, 1, 0x1000);
        let mut c = std::io::Cursor::new(img[..0x220].to_vec());
        let e = read_setup_header(Path::new("k"), &mut c, 0x220).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn decompression_area_is_avoided() {
        let mut h = setup_header {
            version: 0x020f,
            kernel_alignment: 0x20_0000,
            pref_address: 0x100_0000,
            init_size: 0x300_0000,
            ..Default::default()
        };
        assert_eq!(decompress_end(&h, 0x10_0000, 0x50_0000), 0x400_0000);
        h.kernel_alignment = 0; // hostile: no panic
        h.pref_address = u64::MAX;
        assert_eq!(decompress_end(&h, 0x10_0000, 0x50_0000), u64::MAX);
        h.version = 0x0209;
        assert_eq!(decompress_end(&h, 0x10_0000, 0x50_0000), 0x50_0000);
    }

    #[test]
    fn elf64_zero_page_carries_plan() {
        let m = Machine::new(
            "elf-zp",
            &testutil::image_for("elf"),
            "elf",
            "64MiB",
            Some(&[7u8; 10]),
            "console=ttyS0 x",
        );
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        assert_eq!(k.format, ImageFormat::Elf64);
        let zp = zero_page(&m.plan, &k).unwrap();
        assert_eq!({ zp.hdr.boot_flag }, 0xaa55);
        assert_eq!({ zp.hdr.header }, HDRS);
        assert_eq!({ zp.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ zp.hdr.cmdline_size }, 15);
        assert_eq!({ zp.hdr.ramdisk_image }, (64 << 20) - 0x1000);
        assert_eq!({ zp.hdr.ramdisk_size }, 10);
        assert_eq!(zp.e820_entries, 2);
        assert_eq!({ zp.e820_table[0].size }, 0x9fc00);
        assert_eq!({ zp.e820_table[1].addr }, 0x10_0000);
        assert_eq!({ zp.e820_table[1].r#type }, 1);
    }

    /// The real-kernel check: `BERTH_LINUX_BZIMAGE=/path/to/vmlinuz cargo
    /// test real_bzimage` loads a Linux bzImage with a 3 MiB initrd into
    /// 256 MiB exactly as `berth run` would and checks the zero page.
    /// Skipped (passing) when the variable is unset.
    #[test]
    fn real_bzimage_from_env() {
        let Some(path) = std::env::var_os("BERTH_LINUX_BZIMAGE") else {
            crate::boot::testutil::missing_input(
                "real_bzimage_from_env",
                "BERTH_LINUX_BZIMAGE is not set (point it at a Linux bzImage)",
            );
            return;
        };
        let path = std::path::PathBuf::from(path);
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let initrd: Vec<u8> = (0..(3u32 << 20) + 123).map(|i| (i % 241) as u8).collect();
        let cmdline = "earlyprintk=serial console=ttyS0 panic=-1";
        let m = Machine::with_kernel_path("real-bz", &path, "auto", "256MiB", Some(&initrd), cmdline);
        assert_eq!(m.plan.kernel.format, "bzimage");
        assert_eq!(m.plan.boot.protocol, "linux-bzimage");
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        write_boot_structures(&m.plan, &mem, &k).unwrap();
        let zp: boot_params = mem
            .read_obj(GuestAddress(m.plan.boot.zero_page.unwrap().0))
            .unwrap();
        let h = zp.hdr;
        let raw_u16 = |o: usize| u16::from_le_bytes([raw[o], raw[o + 1]]);
        let raw_u32 = |o: usize| u32::from_le_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        // The image's own header, with berth's fields filled in.
        assert_eq!({ h.header }, HDRS);
        assert_eq!({ h.version }, raw_u16(0x206));
        assert!({ h.version } >= MIN_VERSION);
        assert_eq!({ h.xloadflags } & XLF_KERNEL_64, XLF_KERNEL_64);
        assert_eq!({ h.setup_sects }, raw[0x1f1]);
        assert_eq!({ h.init_size }, raw_u32(0x260));
        assert_eq!(h.type_of_loader, 0xff);
        assert_eq!({ h.cmd_line_ptr } as u64, m.plan.boot.cmdline.0);
        assert_eq!({ h.cmdline_size } as usize, cmdline.len());
        assert_eq!({ h.code32_start } as u64, m.plan.boot.kernel_min_addr.0);
        assert_eq!(k.load, 0x10_0000);
        assert_eq!(k.entry, k.load + 0x200);
        // The protected-mode kernel follows the setup sectors in the file.
        let setup = (usize::from(raw[0x1f1].max(4)) + 1) * 512;
        let mut got = vec![0u8; 4096];
        mem.read_slice(&mut got, GuestAddress(k.load)).unwrap();
        assert_eq!(got[..], raw[setup..setup + 4096]);
        assert_eq!(k.end, k.load + (raw.len() - setup) as u64);
        // The initrd: page aligned, below initrd_addr_max, clear of the
        // kernel and its decompression area, bytes intact.
        let (img, size) = (u64::from(h.ramdisk_image), u64::from(h.ramdisk_size));
        assert_eq!((zp.ext_ramdisk_image, zp.ext_ramdisk_size), (0, 0));
        assert_eq!(size, initrd.len() as u64);
        assert_eq!(img % 4096, 0);
        assert!(img + size - 1 <= u64::from(h.initrd_addr_max));
        assert!(
            img >= decompress_end(&h, k.load, k.end),
            "initrd {img:#x} inside the kernel"
        );
        assert!(img + size <= 256 << 20);
        let mut back = vec![0u8; initrd.len()];
        mem.read_slice(&mut back, GuestAddress(img)).unwrap();
        assert!(back == initrd, "initrd bytes differ");
        // e820 from the plan.
        assert_eq!(zp.e820_entries as usize, m.plan.e820.len());
        for (i, e) in m.plan.e820.iter().enumerate() {
            let z = zp.e820_table[i];
            assert_eq!(
                ({ z.addr }, { z.size }, { z.r#type }),
                (e.addr.0, e.size.0, e.kind.code())
            );
        }
        let mut cmd = vec![0u8; cmdline.len() + 1];
        mem.read_slice(&mut cmd, GuestAddress(m.plan.boot.cmdline.0))
            .unwrap();
        assert_eq!(&cmd[..cmdline.len()], cmdline.as_bytes());
        assert_eq!(cmd[cmdline.len()], 0);
        eprintln!(
            "real_bzimage_from_env: {}: protocol {}.{:02}, load {:#x}, entry {:#x}, end {:#x}, initrd {img:#x}+{size:#x} (max {:#x}), init_size {:#x}",
            path.display(),
            { h.version } >> 8,
            { h.version } & 0xff,
            k.load,
            k.entry,
            k.end,
            { h.initrd_addr_max },
            { h.init_size }
        );
    }

    #[test]
    fn elf32_is_not_linux_64bit() {
        let img = super::super::elf::tests::elf32(0x10_0000, &[(0x10_0000, b"abcd", 4)], b"");
        let mut c = std::io::Cursor::new(img.clone());
        let m = Machine::new(
            "elf32-as-64",
            &testutil::image_for("elf"),
            "elf",
            "8MiB",
            None,
            "",
        );
        let e = match load_elf64(Path::new("k"), &mut c, img.len() as u64, &m.plan, &m.memory()) {
            Err(e) => e,
            Ok(_) => panic!("ELF32 loaded as linux-64bit"),
        };
        assert!(e.to_string().contains("ELF32"), "{e}");
    }
}
