//! Restoring a snapshot: check the directory (and the chain of incremental
//! snapshots under it), rebuild the machine from its plan with guest memory
//! mapped from the memory files, then load every state item.
//!
//! Everything that can be wrong with the snapshot is found by [`open`],
//! before any VM exists.

use super::chips::{self, ChipSet};
use super::dir::{DirError, Reader, PAGE};
use super::{vcpu, StateError, VmState};
use crate::build::Vm;
use crate::config::{self, Config, ConfigError};
use crate::plan::{self, dump, Plan};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Longest chain of incremental snapshots followed.
const MAX_CHAIN: usize = 64;

/// Restore errors found before any VM exists.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot directory.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The machine file (saved or given).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Rendering the plan.
    #[error(transparent)]
    Dump(#[from] dump::DumpError),
    /// Mapping memory.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
}

/// A checked snapshot, ready to build.
pub struct Opened {
    /// The machine.
    pub config: Config,
    /// Its plan.
    pub plan: Plan,
    /// The plan digest.
    pub plan_sha256: String,
    /// The state of the newest snapshot in the chain.
    pub state: VmState,
    /// The chain, base first (one entry for a full snapshot).
    pub chain: Vec<Reader>,
}

/// Opens `dir`: checks the manifest, the machine (`machine` must give the
/// same plan digest), the state and the memory files of the whole chain.
pub fn open(dir: &Path, machine: Option<&Path>) -> Result<Opened, RestoreError> {
    let top = Reader::open(dir)?;
    let config = match machine {
        Some(m) => config::load(m)?,
        None => {
            let text = String::from_utf8(top.file("machine.toml")?).map_err(|_| DirError::Bad {
                path: dir.join("machine.toml").display().to_string(),
                message: "not UTF-8".into(),
            })?;
            config::parse(Path::new(&top.manifest.machine_path), &text)?
        }
    };
    let plan = plan::plan(&config);
    let digest = dump::digest(&plan)?;
    let bytes = top.file("state.json")?;
    let state = VmState::from_bytes(&bytes).map_err(|source| DirError::State {
        path: dir.join("state.json").display().to_string(),
        source,
    })?;
    // The chain: each incremental snapshot names its base.
    let mut chain = vec![top];
    while let Some(base) = chain.last().and_then(|r| r.manifest.base.clone()) {
        if chain.len() >= MAX_CHAIN {
            return Err(DirError::Bad {
                path: dir.display().to_string(),
                message: format!("more than {MAX_CHAIN} incremental snapshots in the chain"),
            }
            .into());
        }
        chain.push(Reader::open(&PathBuf::from(base))?);
    }
    chain.reverse();
    for r in &chain {
        if r.manifest.plan_sha256 != digest {
            return Err(DirError::OtherMachine {
                path: r.dir.display().to_string(),
                snap: r.manifest.plan_sha256.clone(),
                this: digest,
            }
            .into());
        }
        for s in &plan.memslots {
            r.memory(s.slot)?;
        }
    }
    if state.vcpus.len() != plan.cpus.len() {
        return Err(DirError::Bad {
            path: dir.join("state.json").display().to_string(),
            message: format!(
                "{} vCPUs saved, the machine has {}",
                state.vcpus.len(),
                plan.cpus.len()
            ),
        }
        .into());
    }
    if chain[0].manifest.memory.iter().any(|m| m.kind != "full") {
        return Err(DirError::Bad {
            path: chain[0].dir.display().to_string(),
            message: "the base of the chain is not a full snapshot".into(),
        }
        .into());
    }
    Ok(Opened {
        config,
        plan,
        plan_sha256: digest,
        state,
        chain,
    })
}

impl Opened {
    /// Guest memory: the base's files mapped MAP_PRIVATE (pages load on
    /// demand), then each incremental snapshot's pages copied on top.
    pub fn memory(&self) -> Result<GuestMemoryMmap, RestoreError> {
        let mut files = Vec::new();
        for s in &self.plan.memslots {
            files.push(self.chain[0].memory(s.slot)?.0);
        }
        let mem = crate::memory::create_from_files(&self.plan.memslots, files)?;
        for r in &self.chain[1..] {
            for s in &self.plan.memslots {
                let (f, m) = r.memory(s.slot)?;
                let mut digest = super::dir::MemDigest::default();
                let region = mem.find_region(GuestAddress(s.guest_addr.0)).ok_or_else(|| {
                    crate::memory::MemoryError::Assemble(format!("slot {} has no mapping", s.slot))
                })?;
                // SAFETY: the region maps `len` bytes at `as_ptr()`; no vCPU
                // exists yet, so nothing else touches it.
                let bytes = unsafe { std::slice::from_raw_parts_mut(region.as_ptr(), region.len() as usize) };
                for (i, &p) in m.pages.iter().enumerate() {
                    let at = p as usize * PAGE;
                    let bad = |message: String| DirError::Bad {
                        path: r.dir.join(&m.file).display().to_string(),
                        message,
                    };
                    let page = bytes
                        .get_mut(at..at + PAGE)
                        .ok_or_else(|| bad(format!("page {p} is outside memslot {}", s.slot)))?;
                    f.read_exact_at(page, (i * PAGE) as u64)
                        .map_err(|e| bad(format!("cannot read page {p}: {e}")))?;
                    digest.page(None, page);
                }
                // These pages are read anyway: their digest costs no I/O.
                if m.sha256.as_ref().is_some_and(|want| *want != digest.hex()) {
                    return Err(DirError::Bad {
                        path: r.dir.join(&m.file).display().to_string(),
                        message: "corrupted: the memory does not match its checksum".into(),
                    }
                    .into());
                }
            }
        }
        Ok(mem)
    }
}

impl Opened {
    /// Checks every full memory file of the chain against its digest
    /// (`berth restore --verify`): reads each file's non-zero pages, so it
    /// costs what the guest had written, not the guest's size. Without it a
    /// full memory file is checked for its length only, and its pages load
    /// unread until the guest touches them.
    pub fn verify_memory(&self) -> Result<(), RestoreError> {
        for r in &self.chain {
            for s in &self.plan.memslots {
                let (f, m) = r.memory(s.slot)?;
                if m.kind == "full" {
                    super::dir::verify_full(&f, &m, &r.dir.join(&m.file))?;
                }
            }
        }
        Ok(())
    }
}

/// Loads the state into a VM built from the snapshot's plan: the chips,
/// every vCPU (one with a CPUID set already gets the saved one only when
/// KVM's view differs, [`vcpu::load`]; a CPUID loaded here is recorded in
/// [`Vm::cpuid`]), every device.
pub fn load(vm: &mut Vm, plan: &Plan, state: &VmState) -> Result<(), StateError> {
    let set = chip_set(plan);
    chips::load(&vm.fd, set, &state.chips)?;
    for ((fd, s), cpuid) in vm.vcpus.iter().zip(&state.vcpus).zip(vm.cpuid.iter_mut()) {
        vcpu::load(fd, s, !cpuid.is_empty())
            .map_err(|e| StateError::Mismatch(format!("vcpu{}: {e}", s.index)))?;
        if cpuid.is_empty() {
            cpuid.clone_from(&s.cpuid);
        }
    }
    vm.bus.load_states(&state.devices)
}

/// The chips the plan creates.
pub fn chip_set(plan: &Plan) -> ChipSet {
    let kernel = plan.irqchip.mode == "kernel";
    ChipSet {
        kernel_irqchip: kernel,
        pit: kernel && plan.irqchip.pit,
    }
}
