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
        // A read-only file region is opened read-only and so mapped
        // read-only (PROT_WRITE on a shared read-only file is EACCES, and
        // nothing of berth's may write a file the user called read-only).
        let prot = if s.readonly && s.file.is_some() {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        // Huge pages are reserved at mmap time (no MAP_NORESERVE), so a host
        // without enough of them fails here, before any VM exists, instead of
        // when the guest first touches a page.
        let mut flags = if s.hugepages { 0 } else { libc::MAP_NORESERVE };
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
        regions.push(place(
            s,
            builder.with_mmap_flags(flags).with_hugetlbfs(s.hugepages),
        )?);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Assemble(e.to_string()))
}

/// Maps one planned region with `builder` and places it at its guest address.
fn place(s: &MemslotPlan, builder: MmapRegionBuilder) -> Result<GuestRegionMmap, MemoryError> {
    let region = builder.build().map_err(|source| MemoryError::Map {
        slot: s.slot,
        name: s.name.clone(),
        size: s.size.0,
        source,
    })?;
    GuestRegionMmap::new(region, GuestAddress(s.guest_addr.0))
        .ok_or_else(|| MemoryError::Assemble(format!("slot {} wraps the address space", s.slot)))
}

/// Registers each region as a KVM memslot, in plan order.
pub fn register(vm: &VmFd, slots: &[MemslotPlan], mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for s in slots {
        set_slot(vm, mem, s.slot, s.guest_addr.0, s.readonly, s.dirty_log)?;
    }
    Ok(())
}

/// (Re)registers memslot `slot`, the region of `mem` at `guest_addr`, with
/// its flags: read-only, dirty logging. Called again on a live slot with
/// only `dirty_log` changed, it turns KVM's dirty log on or off
/// (a migration does, whatever the plan's `dirty_log`).
pub fn set_slot(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    slot: u32,
    guest_addr: u64,
    readonly: bool,
    dirty_log: bool,
) -> Result<(), MemoryError> {
    let region = mem
        .find_region(GuestAddress(guest_addr))
        .ok_or_else(|| MemoryError::Assemble(format!("slot {slot} has no mapping")))?;
    let mut flags = 0;
    if readonly {
        flags |= KVM_MEM_READONLY;
    }
    if dirty_log {
        flags |= KVM_MEM_LOG_DIRTY_PAGES;
    }
    let desc = kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr: guest_addr,
        memory_size: region.len(),
        userspace_addr: region.as_ptr() as u64,
    };
    // SAFETY: the mapping behind `region` is owned by `mem`, which the VM
    // keeps alive (in `Vm`) for as long as the VM fd exists; the range is
    // exactly the region's length.
    unsafe { vm.set_user_memory_region(desc) }.map_err(|source| MemoryError::SetRegion { slot, source })
}

/// Maps each planned region from a snapshot's memory file (one per slot,
/// in plan order), MAP_PRIVATE: pages load on demand when the guest touches
/// them, and the guest's writes stay in this process (the file is never
/// written).
pub fn create_from_files(
    slots: &[MemslotPlan],
    files: Vec<std::fs::File>,
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::with_capacity(slots.len());
    for (s, file) in slots.iter().zip(files) {
        let size = usize::try_from(s.size.0).map_err(|_| MemoryError::TooLarge {
            slot: s.slot,
            size: s.size.0,
        })?;
        regions.push(place(
            s,
            MmapRegionBuilder::new(size)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_NORESERVE | libc::MAP_PRIVATE)
                .with_file_offset(FileOffset::new(file, 0)),
        )?);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Assemble(e.to_string()))
}

/// The settle slot's size: one page (the teardown helper adds and removes
/// it: [`crate::teardown::Settle`]).
pub const SETTLE_PAGE: u64 = 4096;

/// Where the settle page can go: the first page-aligned address above every
/// memslot and MMIO window of the plan (and above 4 GiB), if it fits below
/// `1 << phys_bits`.
pub fn settle_address(plan: &crate::plan::Plan, phys_bits: u32) -> Option<u64> {
    let slot_ends = plan
        .memslots
        .iter()
        .map(|s| s.guest_addr.0.saturating_add(s.size.0));
    let mmio_ends = plan
        .devices
        .iter()
        .filter(|d| d.space == crate::plan::Space::Mmio)
        .map(|d| d.base.0.saturating_add(d.len.0));
    let top = slot_ends.chain(mmio_ends).fold(1u64 << 32, u64::max);
    let at = top.checked_add(SETTLE_PAGE - 1)? & !(SETTLE_PAGE - 1);
    let limit = if phys_bits >= 64 {
        u64::MAX
    } else {
        1u64 << phys_bits
    };
    (at.checked_add(SETTLE_PAGE)? <= limit).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::parse;
    use std::path::Path;

    fn plan(extra: &str) -> crate::plan::Plan {
        let text = format!(
            "[machine]\nvcpus = 1\n[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\n[kernel]\npath = \"@KERNEL@\"\n{extra}"
        );
        crate::plan::plan(&parse(Path::new("x.toml"), &text).unwrap())
    }

    #[test]
    fn settle_page_lies_above_everything_planned() {
        // Only low RAM: the first page at 4 GiB.
        assert_eq!(settle_address(&plan(""), 48), Some(1 << 32));
        // RAM above 4 GiB and an MMIO window above that push it up, page-aligned.
        let p = plan(
            "[[memory]]\nguest_addr = 0x1_0000_0000\nsize = \"1GiB\"\n\
             [[device]]\nkind = \"null\"\nguest_addr = 0x2_0000_0010\nsize = 8\n",
        );
        assert_eq!(settle_address(&p, 48), Some(0x2_0000_1000));
        // No room below the host's physical address limit: no settle page.
        assert_eq!(settle_address(&p, 33), None);
        assert_eq!(settle_address(&plan(""), 32), None);
    }
}
