//! Loading the kernel (and initrd) and writing boot structures into guest
//! memory. All placement comes from the plan's
//! [`BootPlan`](crate::plan::BootPlan); the protocol is the plan's
//! `boot.protocol`, resolved from the image at config time:
//!
//! | protocol        | loader                         | boot structures            | entry        |
//! |-----------------|--------------------------------|----------------------------|--------------|
//! | `linux-64bit`   | ELF64 PT_LOADs (linux-loader)  | zero page                  | e_entry, long mode, rsi = zero page |
//! | `linux-bzimage` | bzImage payload (linux-loader) | zero page from the image's setup header | load + 0x200, long mode |
//! | `pvh`           | ELF PT_LOADs                   | hvm_start_info, memmap, modlist | PHYS32_ENTRY note, 32-bit, ebx = start_info |
//! | `multiboot`     | a.out kludge or ELF PT_LOADs   | multiboot_info, mmap, modules | entry, 32-bit, eax = 0x2BADB002, ebx = info |
//!
//! Every failure is a [`KernelError`] naming the image (exit code 5).
//! Hostile images are bounds-checked throughout: no panics, checked
//! arithmetic, nothing written outside guest memory.

mod elf;
pub mod format;
mod linux;
mod multiboot;
pub mod placement;
mod pvh;
#[cfg(test)]
pub(crate) mod testutil;

pub use format::ImageFormat;
pub use linux::zero_page;
pub use linux_loader::loader::bootparam::setup_header;
pub use multiboot::MULTIBOOT_BOOTLOADER_MAGIC;

use crate::config::{Config, KernelFormat};
use crate::plan::Plan;
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, ReadVolatile};

/// Kernel image errors (exit code 5).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file can't be opened or read.
    #[error("cannot read kernel image {path}: {source}")]
    Read {
        /// The image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// linux-loader refused the image or it does not fit the memory map.
    #[error("kernel image {path}: {source} (does it fit the memory map?)")]
    Load {
        /// The image.
        path: PathBuf,
        /// Loader error.
        source: linux_loader::loader::Error,
    },
    /// The image is malformed, unsupported or does not fit.
    #[error("kernel image {path}: {message}")]
    Image {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The initrd can't be read or placed.
    #[error("initrd {path}: {message}")]
    Initrd {
        /// The initrd file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Boot structures could not be written.
    #[error("cannot write boot structures: {0}")]
    BootParams(String),
}

fn image_err(path: &Path, message: impl Into<String>) -> KernelError {
    KernelError::Image {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// [`elf::check_segments`] for the image at `path`, as a kernel error that
/// asks whether it fits the memory map; then [`check_clear`].
fn check_fits(
    path: &Path,
    mem: &GuestMemoryMmap,
    image: &elf::ElfImage,
    plan: &Plan,
) -> Result<(), KernelError> {
    elf::check_segments(mem, image, 0)
        .map_err(|m| image_err(path, format!("{m} (does it fit the memory map?)")))?;
    let segments: Vec<(u64, u64)> = image
        .segments
        .iter()
        .map(|s| (s.paddr, s.paddr + s.memsz))
        .collect();
    check_clear(path, &segments, plan)
}

/// Refuses segments over anything the plan's boot section places (the
/// plan placed the structures around the segments read at config time;
/// this holds against the image as loaded).
fn check_clear(path: &Path, segments: &[(u64, u64)], plan: &Plan) -> Result<(), KernelError> {
    placement::check_clear(segments, &crate::plan::boot::areas(plan))
        .map_err(|o| image_err(path, o.to_string()))
}

/// Where the image `f` (of the resolved `format`) loads: its ELF PT_LOAD
/// segments, a multiboot a.out-kludge image's load..bss_end, or a bzImage's
/// protected-mode kernel at 1 MiB. Best effort, for the plan: empty when
/// the headers do not parse (loading the image reports why).
pub fn image_segments(f: &mut File, format: KernelFormat) -> Vec<(u64, u64)> {
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    let elf = |f: &mut File| {
        elf::parse(f, len)
            .map(|i| i.segments.iter().map(|s| (s.paddr, s.paddr + s.memsz)).collect())
            .unwrap_or_default()
    };
    match format {
        KernelFormat::Bzimage => linux::payload_range(f, len).into_iter().collect(),
        KernelFormat::Multiboot => match multiboot::aout_range(f, len) {
            Some(r) => vec![r],
            None => elf(f),
        },
        KernelFormat::Pvh | KernelFormat::Elf | KernelFormat::Auto => elf(f),
    }
}

/// Where the kernel (and initrd) went and how the BSP enters it.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Image format (matches the plan's protocol).
    pub format: ImageFormat,
    /// Entry point: 64-bit for the Linux protocols, 32-bit (paging off)
    /// for PVH and multiboot.
    pub entry: u64,
    /// First byte of the loaded image.
    pub load: u64,
    /// First byte after the loaded image (including zeroed bss).
    pub end: u64,
    /// (eax, ebx) at a 32-bit entry: (0, start_info) for PVH,
    /// (0x2BADB002, multiboot_info) for multiboot; (0, 0) otherwise.
    pub entry_regs: (u32, u32),
    /// The initrd / module 0: (guest address, size in bytes).
    pub initrd: Option<(u64, u64)>,
    /// A bzImage's setup header (code32_start = where it was loaded).
    pub setup_header: Option<setup_header>,
}

/// What a protocol loader reports besides the kernel.
struct Placed {
    kernel: LoadedKernel,
    /// Memory the initrd must not overlap (the image, and for a bzImage the
    /// area it decompresses into).
    avoid: (u64, u64),
    /// First address past the highest byte the initrd may occupy.
    initrd_limit: u64,
}

/// What the loaders read: a seekable file linux-loader can also copy from.
trait ImageFile: Read + Seek + ReadVolatile {}
impl<T: Read + Seek + ReadVolatile> ImageFile for T {}

/// Loads the kernel (and initrd) the config names into `mem`, as the plan says.
pub fn load_kernel(config: &Config, plan: &Plan, mem: &GuestMemoryMmap) -> Result<LoadedKernel, KernelError> {
    let path = config.resolve(&config.machine.kernel.path);
    let read_err = |source| KernelError::Read {
        path: path.clone(),
        source,
    };
    let mut file = File::open(&path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let placed = load_image(&path, &mut file, len, plan, mem)?;
    let mut kernel = placed.kernel;
    if let Some(initrd) = &config.machine.kernel.initrd {
        let ipath = config.resolve(initrd);
        kernel.initrd = Some(load_initrd(&ipath, plan, mem, placed.avoid, placed.initrd_limit)?);
    }
    Ok(kernel)
}

/// Loads the image `f` (`len` bytes, at `path`) by the plan's protocol.
fn load_image<F: ImageFile>(
    path: &Path,
    f: &mut F,
    len: u64,
    plan: &Plan,
    mem: &GuestMemoryMmap,
) -> Result<Placed, KernelError> {
    match plan.boot.protocol.as_str() {
        "linux-64bit" => linux::load_elf64(path, f, len, plan, mem),
        "linux-bzimage" => linux::load_bzimage(path, f, len, plan, mem),
        "pvh" => pvh::load(path, f, len, plan, mem),
        "multiboot" => multiboot::load(path, f, len, plan, mem),
        other => Err(image_err(
            path,
            format!("the plan's boot protocol \"{other}\" is unknown"),
        )),
    }
}

const PAGE: u64 = 4096;

/// Chooses the initrd's address: the highest page-aligned address in
/// `[start, min(end, limit))` where `size` bytes fit without overlapping
/// `avoid`.
pub fn place_initrd(window: (u64, u64), limit: u64, size: u64, avoid: (u64, u64)) -> Result<u64, String> {
    let (start, end) = window;
    let below = |top: u64| {
        top.checked_sub(size)
            .map(|a| a & !(PAGE - 1))
            .filter(|&a| a >= start)
    };
    let top = end.min(limit);
    let mut addr = below(top);
    if let Some(a) = addr {
        // `a + size <= top` holds, so this cannot overflow.
        if a < avoid.1 && a + size > avoid.0 {
            addr = below(avoid.0.min(top));
        }
    }
    addr.ok_or_else(|| {
        let mut m = format!("{size:#x} bytes do not fit in the initrd window {start:#x}..{end:#x}");
        if limit < end {
            m += &format!(" below the kernel's limit {limit:#x}");
        }
        if avoid.1 > avoid.0 {
            m += &format!(" beside the kernel at {:#x}..{:#x}", avoid.0, avoid.1);
        }
        m + " (give the machine more memory, or use a smaller initrd)"
    })
}

/// Reads the initrd into the plan's window; returns (address, size).
fn load_initrd(
    path: &Path,
    plan: &Plan,
    mem: &GuestMemoryMmap,
    avoid: (u64, u64),
    limit: u64,
) -> Result<(u64, u64), KernelError> {
    let err = |message: String| KernelError::Initrd {
        path: path.to_path_buf(),
        message,
    };
    let window = plan
        .boot
        .initrd
        .as_ref()
        .ok_or_else(|| err("the plan has no initrd window".into()))?;
    let mut file = File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| err(format!("cannot read: {e}")))?
        .len();
    let addr = place_initrd((window.window_start.0, window.window_end.0), limit, size, avoid).map_err(err)?;
    elf::check_range(mem, addr, size, 0).map_err(err)?;
    elf::copy(mem, &mut file, 0, addr, size).map_err(err)?;
    Ok((addr, size))
}

/// Writes the command line and the protocol's boot information into memory.
pub fn write_boot_structures(
    plan: &Plan,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
) -> Result<(), KernelError> {
    let mut cmdline = plan
        .kernel
        .guest_cmdline
        .as_ref()
        .unwrap_or(&plan.kernel.cmdline)
        .as_bytes()
        .to_vec();
    cmdline.push(0);
    if cmdline.len() as u64 > plan.boot.cmdline_max.0 {
        return Err(KernelError::BootParams(format!(
            "the command line is {} bytes; {} fit",
            cmdline.len() - 1,
            plan.boot.cmdline_max.0.saturating_sub(1)
        )));
    }
    mem.write_slice(&cmdline, GuestAddress(plan.boot.cmdline.0))
        .map_err(|e| KernelError::BootParams(format!("command line: {e}")))?;
    match plan.boot.protocol.as_str() {
        "linux-64bit" | "linux-bzimage" => linux::write_zero_page(plan, mem, kernel),
        "pvh" => pvh::write_start_info(plan, mem, kernel),
        "multiboot" => multiboot::write_info(plan, mem, kernel),
        other => Err(KernelError::BootParams(format!(
            "unknown boot protocol \"{other}\""
        ))),
    }
}

/// A boot-structure address from the plan, which must be present.
fn plan_addr(v: Option<crate::plan::Hex>, what: &str) -> Result<u64, KernelError> {
    v.map(|h| h.0)
        .ok_or_else(|| KernelError::BootParams(format!("the plan has no {what} address")))
}

/// A guest address that must fit a 32-bit field.
fn addr32(v: u64, what: &str) -> Result<u32, KernelError> {
    u32::try_from(v).map_err(|_| KernelError::BootParams(format!("{what} at {v:#x} is above 4 GiB")))
}

#[cfg(test)]
mod tests {
    use super::testutil::Machine;
    use super::*;

    #[test]
    fn initrd_goes_top_down_page_aligned() {
        let w = (0x10_0000, 0x400_0000);
        assert_eq!(place_initrd(w, u64::MAX, 0x1000, (0, 0)).unwrap(), 0x3ff_f000);
        assert_eq!(place_initrd(w, u64::MAX, 0x1001, (0, 0)).unwrap(), 0x3ff_e000);
        // Below a bzImage's initrd_addr_max + 1.
        assert_eq!(place_initrd(w, 0x200_0000, 0x800, (0, 0)).unwrap(), 0x1ff_f000);
        // Below the kernel when the top overlaps it.
        assert_eq!(
            place_initrd(w, u64::MAX, 0x1000, (0x300_0000, 0x400_0000)).unwrap(),
            0x2ff_f000
        );
        let e = place_initrd(w, u64::MAX, 0x400_0000, (0, 0)).unwrap_err();
        assert!(e.contains("do not fit"), "{e}");
        let e = place_initrd(w, u64::MAX, 0x100_0000, (0x10_0000, 0x3f0_0000)).unwrap_err();
        assert!(e.contains("beside the kernel"), "{e}");
        assert!(place_initrd(w, u64::MAX, u64::MAX, (0, 0)).is_err());
        assert!(place_initrd((0, 0), u64::MAX, 0, (0, 0)).is_ok());
    }

    #[test]
    fn initrd_is_loaded_and_recorded() {
        let data: Vec<u8> = (0..0x2345u32).map(|i| i as u8).collect();
        let m = Machine::new(
            "initrd-load",
            &testutil::image_for("elf"),
            "elf",
            "64MiB",
            Some(&data),
            "",
        );
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        let (addr, size) = k.initrd.unwrap();
        assert_eq!((addr, size), ((64 << 20) - 0x3000, 0x2345));
        let mut got = vec![0u8; data.len()];
        mem.read_slice(&mut got, GuestAddress(addr)).unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn initrd_too_big_is_a_kernel_error() {
        let m = Machine::new(
            "initrd-big",
            &testutil::image_for("elf"),
            "elf",
            "4MiB",
            Some(&vec![1u8; 4 << 20]),
            "",
        );
        let mem = m.memory();
        let e = load_kernel(&m.config, &m.plan, &mem).unwrap_err();
        assert!(matches!(e, KernelError::Initrd { .. }), "{e}");
        assert!(e.to_string().contains("do not fit"), "{e}");
    }

    #[test]
    fn a_segment_over_a_planned_structure_is_refused_at_load() {
        // Planned for an image at 1 MiB; the file then changes to one with
        // a segment over the boot page tables (0x9000..0xc000).
        let m = Machine::new(
            "overlap",
            &testutil::image_for("multiboot"),
            "multiboot",
            "8MiB",
            None,
            "",
        );
        assert_eq!(m.plan.boot.pml4.0, 0x9000);
        let low = elf::tests::elf32(
            0x9810,
            &[(0x10_0000, b"high", 0x10), (0x9800, &[0x90; 0x20], 0x1200)],
            &testutil::multiboot_header(0x3, &[]),
        );
        std::fs::write(m.dir.join("kernel"), low).unwrap();
        let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
        assert!(matches!(e, KernelError::Image { .. }), "{e}");
        assert!(
            e.to_string()
                .ends_with(": segment 1: 0x9800..0xaa00 overlaps the boot page tables 0x9000..0xc000"),
            "{e}"
        );
        // Planned with that image, the structures make way and it loads.
        let m = Machine::new(
            "overlap2",
            &std::fs::read(m.dir.join("kernel")).unwrap(),
            "multiboot",
            "8MiB",
            None,
            "",
        );
        assert_eq!(
            m.config.kernel_segments,
            vec![(0x10_0000, 0x10_0010), (0x9800, 0xaa00)]
        );
        assert_eq!(
            (m.plan.boot.pml4.0, m.plan.boot.stack_pointer.0),
            (0x1000, 0x8ff0)
        );
        let mem = m.memory();
        let k = load_kernel(&m.config, &m.plan, &mem).unwrap();
        write_boot_structures(&m.plan, &mem, &k).unwrap();
        let mut code = [0u8; 0x20];
        mem.read_slice(&mut code, GuestAddress(0x9800)).unwrap();
        assert_eq!(code, [0x90; 0x20]);
    }

    #[test]
    fn multiboot_path_and_cmdline_must_fit_together() {
        let m = Machine::new(
            "mb-cmdline",
            &testutil::image_for("multiboot"),
            "multiboot",
            "8MiB",
            None,
            "",
        );
        let text = |cmdline: &str| {
            m.config
                .text
                .replace("cmdline = \"\"", &format!("cmdline = \"{cmdline}\""))
        };
        // "kernel" + " " + 4088 bytes = 4095: fits.
        let ok = crate::config::parse(&m.config.file, &text(&"x".repeat(4088))).unwrap();
        assert_eq!(crate::plan::plan(&ok).kernel.guest_cmdline.unwrap().len(), 4095);
        let e = crate::config::parse(&m.config.file, &text(&"x".repeat(4089))).unwrap_err();
        assert_eq!(e.field.to_string(), "kernel.cmdline");
        assert!(e.message.contains("4096 bytes; at most 4095 fit"), "{e}");
    }

    #[test]
    fn unreadable_kernel_is_a_kernel_error() {
        let m = Machine::new("unreadable", &testutil::image_for("elf"), "elf", "8MiB", None, "");
        std::fs::remove_file(m.dir.join("kernel")).unwrap();
        let e = load_kernel(&m.config, &m.plan, &m.memory()).unwrap_err();
        assert!(matches!(e, KernelError::Read { .. }), "{e}");
    }
}
