//! Taking a snapshot of a paused VM: the vCPU states (saved by the parked
//! vCPU threads), the chips, every device, and guest memory, written as a
//! snapshot directory ([`super::dir`]).

use super::chips::{self, ChipSet};
use super::dir::{DirError, Manifest, MemFile, Writer, FORMAT, FORMAT_VERSION, PAGE};
use super::vcpu::VcpuState;
use super::{StateError, VmState, STATE_VERSION};
use crate::bus::Bus;
use kvm_ioctls::VmFd;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// One memslot, as the snapshot needs it.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Slot number.
    pub slot: u32,
    /// Region name.
    pub name: String,
    /// Guest physical address.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// KVM_MEM_LOG_DIRTY_PAGES is on.
    pub dirty_log: bool,
    /// Read-only to the guest.
    pub readonly: bool,
    /// Private anonymous memory in small pages (no file, not shared, no
    /// huge pages): a page the process never touched reads as zeros.
    pub anonymous: bool,
}

/// What a snapshot takes from the plan and the machine file.
#[derive(Clone, Debug)]
pub struct Source {
    /// The plan digest.
    pub plan_sha256: String,
    /// The machine file's text.
    pub machine_text: String,
    /// Where the machine file is.
    pub machine_path: String,
    /// The VM's chips.
    pub chips: ChipSet,
    /// Its memslots.
    pub slots: Vec<Slot>,
}

/// Errors taking a snapshot (the VM keeps running).
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// Writing the directory.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// Saving state.
    #[error(transparent)]
    State(#[from] StateError),
    /// A vCPU could not save its state.
    #[error("vcpu{0}: {1}")]
    Vcpu(u32, String),
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Taken {
    /// The directory.
    pub dir: PathBuf,
    /// Milliseconds it took.
    pub ms: f64,
    /// Memory pages written, all slots.
    pub pages: u64,
    /// For an incremental snapshot: its base.
    pub base: Option<String>,
}

/// For an incremental snapshot: the base directory and, per slot, the pages
/// dirtied since it.
pub struct Incremental {
    /// The snapshot it applies on.
    pub base: PathBuf,
    /// Slot → dirty page numbers, ascending.
    pub pages: BTreeMap<u32, Vec<u64>>,
}

/// The whole state of a paused VM (everything but memory), its chips
/// those of `chips`.
pub fn vm_state(
    chips: ChipSet,
    vcpus: BTreeMap<u32, Result<VcpuState, String>>,
    fd: &VmFd,
    bus: &Bus,
) -> Result<VmState, TakeError> {
    let unsaved = bus.unsaved();
    if !unsaved.is_empty() {
        return Err(TakeError::State(StateError::Mismatch(format!(
            "device {} cannot be saved (it has no snapshot state); no snapshot was written",
            unsaved.join(", device ")
        ))));
    }
    let mut states = Vec::with_capacity(vcpus.len());
    for (i, v) in vcpus {
        states.push(v.map_err(|e| TakeError::Vcpu(i, e))?);
    }
    Ok(VmState {
        version: STATE_VERSION,
        vcpus: states,
        chips: chips::save(fd, chips)?,
        devices: bus.save_states(),
    })
}

/// A memslot's bytes, and for anonymous private memory its page-table
/// entries from `/proc/self/pagemap` (see [`touched`]).
fn slot_bytes<'a>(mem: &'a GuestMemoryMmap, s: &Slot) -> Result<(&'a [u8], Option<Vec<u64>>), TakeError> {
    let r = mem.find_region(GuestAddress(s.guest_addr)).ok_or_else(|| {
        TakeError::State(StateError::Mismatch(format!("memslot {} has no mapping", s.slot)))
    })?;
    // SAFETY: the region maps `len` bytes at `as_ptr()` for as long as `mem`
    // lives; every vCPU is parked, so nothing writes guest memory while the
    // snapshot reads it (devices only write memory from vCPU threads).
    let bytes = unsafe { std::slice::from_raw_parts(r.as_ptr() as *const u8, r.len() as usize) };
    let anonymous_private =
        r.file_offset().is_none() && r.flags() & libc::MAP_PRIVATE != 0 && r.flags() & libc::MAP_HUGETLB == 0;
    let entries = if anonymous_private { pagemap(bytes) } else { None };
    Ok((bytes, entries))
}

/// The `/proc/self/pagemap` entries of the pages of `bytes` (None when the
/// file cannot be read: every page is then read).
fn pagemap(bytes: &[u8]) -> Option<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    let pages = bytes.len() / PAGE;
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    let mut raw = vec![0u8; pages * 8];
    let at = (bytes.as_ptr() as usize / PAGE * 8) as u64;
    f.read_exact_at(&mut raw, at).ok()?;
    Some(
        raw.chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
            .collect(),
    )
}

/// Whether a page of anonymous private memory may hold data: present
/// (bit 63) or swapped out (bit 62). A page that is neither was never
/// touched (or was discarded) and reads as zero: the snapshot skips it
/// without reading it, so a 1 GiB guest that used a few pages is written
/// in a few milliseconds, not after reading 1 GiB.
fn touched(entries: &Option<Vec<u64>>, page: usize) -> bool {
    entries
        .as_ref()
        .is_none_or(|e| e.get(page).is_none_or(|v| v & (3 << 62) != 0))
}

/// Writes a snapshot of a paused VM to `dir`.
pub fn write(
    dir: &Path,
    src: &Source,
    state: &VmState,
    mem: &GuestMemoryMmap,
    incremental: Option<&Incremental>,
) -> Result<Taken, TakeError> {
    let t0 = Instant::now();
    let w = Writer::create(dir)?;
    let mut manifest = Manifest {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        plan_sha256: src.plan_sha256.clone(),
        machine_path: src.machine_path.clone(),
        base: incremental.map(|i| absolute(&i.base)),
        files: BTreeMap::new(),
        memory: Vec::new(),
    };
    manifest.files.insert(
        "machine.toml".into(),
        w.file("machine.toml", src.machine_text.as_bytes())?,
    );
    manifest
        .files
        .insert("state.json".into(), w.file("state.json", &state.to_bytes())?);
    let mut total = 0;
    for s in &src.slots {
        let (bytes, entries) = slot_bytes(mem, s)?;
        let file = format!("mem-{}.bin", s.slot);
        let entry = match incremental {
            Some(inc) => {
                let pages = inc.pages.get(&s.slot).cloned().unwrap_or_default();
                let sha256 = Some(w.pages(&file, bytes, &pages)?);
                total += pages.len() as u64;
                MemFile {
                    slot: s.slot,
                    guest_addr: s.guest_addr,
                    size: s.size,
                    file,
                    kind: "pages".into(),
                    written: pages.len() as u64,
                    sha256,
                    pages,
                }
            }
            None => {
                let (written, digest) = w.full_memory(&file, bytes, &|p| touched(&entries, p))?;
                total += written;
                MemFile {
                    slot: s.slot,
                    guest_addr: s.guest_addr,
                    size: s.size,
                    file,
                    kind: "full".into(),
                    pages: Vec::new(),
                    written,
                    sha256: Some(digest),
                }
            }
        };
        manifest.memory.push(entry);
    }
    w.finish(&manifest)?;
    Ok(Taken {
        dir: dir.to_path_buf(),
        ms: t0.elapsed().as_secs_f64() * 1000.0,
        pages: total,
        base: manifest.base,
    })
}

fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}
