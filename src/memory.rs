//! Guest RAM: one host mapping per planned memslot (anonymous or
//! file-backed, private or shared, optionally huge pages), registered with
//! KVM_SET_USER_MEMORY_REGION in slot order.

use crate::plan::MemslotPlan;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use std::path::Path;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

/// Memory errors (host errors; exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// mmap failed (out of memory, address-space limit, no huge pages...).
    #[error("cannot map {size:#x} bytes for memslot {slot} ({name}): {source}")]
    Map {
        /// Slot.
        slot: u32,
        /// Region name.
        name: String,
        /// Size.
        size: u64,
        /// Why.
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The backing file can't be opened.
    #[error("cannot open backing file {path} for memslot {slot}: {source}")]
    File {
        /// Slot.
        slot: u32,
        /// File.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Region larger than this host's address space.
    #[error("memslot {slot} of {size:#x} bytes does not fit this host's address space")]
    TooLarge {
        /// Slot.
        slot: u32,
        /// Size.
        size: u64,
    },
    /// vm-memory refused the region set.
    #[error("cannot assemble guest memory: {0}")]
    Assemble(String),
    /// KVM refused a memslot.
    #[error("KVM_SET_USER_MEMORY_REGION for slot {slot} failed: {source}")]
    SetRegion {
        /// Slot.
        slot: u32,
        /// errno.
        source: kvm_ioctls::Error,
    },
}

/// Maps every planned region; `resolve` turns a file path written in the
/// machine file into a host path.
pub fn create(
    slots: &[MemslotPlan],
    resolve: impl Fn(&Path) -> std::path::PathBuf,
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::with_capacity(slots.len());
    for s in slots {
        let size = usize::try_from(s.size.0).map_err(|_| MemoryError::TooLarge {
            slot: s.slot,
            size: s.size.0,
        })?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let mut flags = libc::MAP_NORESERVE;
        flags |= if s.shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        let mut builder = MmapRegionBuilder::new(size).with_mmap_prot(prot);
        if let Some(f) = &s.file {
            let path = resolve(Path::new(f));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(s.shared && !s.readonly)
                .open(&path)
                .map_err(|source| MemoryError::File {
                    slot: s.slot,
                    path: path.display().to_string(),
                    source,
                })?;
            builder = builder.with_file_offset(FileOffset::new(file, 0));
        } else {
            flags |= libc::MAP_ANONYMOUS;
            if s.hugepages {
                flags |= libc::MAP_HUGETLB;
            }
        }
        let region = builder
            .with_mmap_flags(flags)
            .with_hugetlbfs(s.hugepages)
            .build()
            .map_err(|source| MemoryError::Map {
                slot: s.slot,
                name: s.name.clone(),
                size: s.size.0,
                source,
            })?;
        let r = GuestRegionMmap::new(region, GuestAddress(s.guest_addr.0))
            .ok_or_else(|| MemoryError::Assemble(format!("slot {} wraps the address space", s.slot)))?;
        regions.push(r);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Assemble(e.to_string()))
}

/// Registers each region as a KVM memslot, in plan order.
pub fn register(vm: &VmFd, slots: &[MemslotPlan], mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for s in slots {
        let region = mem
            .find_region(GuestAddress(s.guest_addr.0))
            .ok_or_else(|| MemoryError::Assemble(format!("slot {} has no mapping", s.slot)))?;
        let mut flags = 0;
        if s.readonly {
            flags |= KVM_MEM_READONLY;
        }
        if s.dirty_log {
            flags |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        let desc = kvm_userspace_memory_region {
            slot: s.slot,
            flags,
            guest_phys_addr: s.guest_addr.0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the mapping behind `region` is owned by `mem`, which the VM
        // keeps alive (in `Vm`) for as long as the VM fd exists; the range is
        // exactly the region's length.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|source| MemoryError::SetRegion { slot: s.slot, source })?;
    }
    Ok(())
}
