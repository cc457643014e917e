//! Loading the kernel and writing boot structures into guest memory. All
//! placement comes from the plan's [`BootPlan`](crate::plan::BootPlan).

use crate::plan::{E820Entry, Plan};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{Elf, KernelLoader};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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
    /// Not a format berth knows.
    #[error("kernel image {path}: unknown format (first bytes {magic}); berth boots ELF64 images")]
    UnknownFormat {
        /// The image.
        path: PathBuf,
        /// Its first bytes, hex.
        magic: String,
    },
    /// The loader refused the image or it does not fit the memory map.
    #[error("kernel image {path}: {source} (does it fit the memory map, at or above {min:#x}?)")]
    Load {
        /// The image.
        path: PathBuf,
        /// Lowest load address allowed.
        min: u64,
        /// Loader error.
        source: linux_loader::loader::Error,
    },
    /// Boot structures could not be written.
    #[error("cannot write boot structures: {0}")]
    BootParams(String),
}

/// Detected image formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// ELF64, entered at e_entry in 64-bit mode.
    Elf64,
}

/// Where the loaded kernel starts.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Detected format.
    pub format: ImageFormat,
    /// 64-bit entry point.
    pub entry: u64,
    /// First byte after the loaded image.
    pub end: u64,
}

/// Detects the format from the first bytes of the image.
pub fn detect(path: &Path, head: &[u8]) -> Result<ImageFormat, KernelError> {
    // ELF magic, 64-bit class (EI_CLASS = 2), x86-64 is checked by the loader.
    if head.len() >= 5 && head[..4] == [0x7f, b'E', b'L', b'F'] && head[4] == 2 {
        return Ok(ImageFormat::Elf64);
    }
    Err(KernelError::UnknownFormat {
        path: path.to_path_buf(),
        magic: head
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// Loads the kernel named by the plan (resolved to `path`) into `mem`.
pub fn load_kernel(path: &Path, plan: &Plan, mem: &GuestMemoryMmap) -> Result<LoadedKernel, KernelError> {
    let read_err = |source| KernelError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut head = [0u8; 64];
    let n = file.read(&mut head).map_err(read_err)?;
    let format = detect(path, &head[..n])?;
    let min = plan.boot.kernel_min_addr.0;
    match format {
        ImageFormat::Elf64 => {
            let r = Elf::load(mem, None, &mut file, Some(GuestAddress(min))).map_err(|source| {
                KernelError::Load {
                    path: path.to_path_buf(),
                    min,
                    source,
                }
            })?;
            Ok(LoadedKernel {
                format,
                entry: r.kernel_load.0,
                end: r.kernel_end,
            })
        }
    }
}

/// Builds the Linux zero page: setup header magic, command line, e820.
pub fn zero_page(plan: &Plan) -> boot_params {
    let mut params = boot_params::default();
    params.hdr.type_of_loader = 0xff; // "undefined" boot loader
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"
    params.hdr.kernel_alignment = 0x0100_0000;
    params.hdr.cmd_line_ptr = plan.boot.cmdline.0 as u32;
    params.ext_cmd_line_ptr = (plan.boot.cmdline.0 >> 32) as u32;
    params.hdr.cmdline_size = plan.kernel.cmdline.len() as u32;
    let entries: Vec<&E820Entry> = plan.e820.iter().take(params.e820_table.len()).collect();
    for (slot, e) in params.e820_table.iter_mut().zip(&entries) {
        *slot = boot_e820_entry {
            addr: e.addr.0,
            size: e.size.0,
            r#type: e.kind.code(),
        };
    }
    params.e820_entries = entries.len() as u8;
    params
}

/// Writes the command line and the zero page into guest memory.
pub fn write_boot_structures(plan: &Plan, mem: &GuestMemoryMmap) -> Result<(), KernelError> {
    let mut cmdline = plan.kernel.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    mem.write_slice(&cmdline, GuestAddress(plan.boot.cmdline.0))
        .map_err(|e| KernelError::BootParams(format!("command line: {e}")))?;
    let params = zero_page(plan);
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(plan.boot.zero_page.0)),
        mem,
    )
    .map_err(|e| KernelError::BootParams(format!("zero page: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn detects_elf64_and_refuses_others() {
        let p = Path::new("k");
        assert_eq!(detect(p, b"\x7fELF\x02\x01\x01").unwrap(), ImageFormat::Elf64);
        assert!(matches!(
            detect(p, b"\x7fELF\x01"),
            Err(KernelError::UnknownFormat { .. })
        ));
        let e = detect(p, b"MZ\x00\x01").unwrap_err().to_string();
        assert!(e.contains("4d 5a 00 01"), "{e}");
        assert!(detect(p, b"").is_err());
    }

    #[test]
    fn zero_page_carries_plan() {
        let text = "[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\n[kernel]\npath = \"Cargo.toml\"\ncmdline = \"console=ttyS0 x\"\n";
        let plan = crate::plan::plan(&parse(Path::new("x.toml"), text).unwrap());
        let zp = zero_page(&plan);
        assert_eq!({ zp.hdr.boot_flag }, 0xaa55);
        assert_eq!({ zp.hdr.header }, 0x5372_6448);
        assert_eq!({ zp.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ zp.hdr.cmdline_size }, 15);
        assert_eq!(zp.e820_entries, 2);
        assert_eq!({ zp.e820_table[0].size }, 0x9fc00);
        assert_eq!({ zp.e820_table[1].addr }, 0x10_0000);
        assert_eq!({ zp.e820_table[1].r#type }, 1);
    }
}
