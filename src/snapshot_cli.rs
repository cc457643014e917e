//! The command line's snapshot side: the run controls of `--control`,
//! `--snapshot-at` and `[machine] control`, and `berth restore`.

use crate::cli::SnapshotArgs;
use crate::config::Config;
use crate::error::Error;
use crate::plan::{dump, Plan};
use crate::runctl::SnapshotAt;
use crate::state::restore;
use crate::state::take::{Slot, Source};
use crate::vmm::{self, RunControls};
use crate::{build, control};
use std::path::Path;

/// The controls of one run, checked before any VM exists: the socket is
/// bound, `--snapshot-to` must not exist.
pub fn controls(c: &Config, p: &Plan, snap: &SnapshotArgs) -> Result<RunControls, Error> {
    let socket_path = snap
        .control
        .clone()
        .or_else(|| c.machine.machine.control.as_deref().map(|p| c.resolve(p)));
    let snapshot_at = match (&snap.snapshot_at, &snap.snapshot_to) {
        (Some(line), Some(dir)) => {
            if dir.symlink_metadata().is_ok() {
                return Err(Error::SnapshotToExists(dir.display().to_string()));
            }
            Some(SnapshotAt {
                line: line.clone(),
                dir: dir.clone(),
                keep_running: snap.snapshot_continue,
            })
        }
        _ => None,
    };
    let wants_source =
        socket_path.is_some() || snapshot_at.is_some() || p.memslots.iter().any(|s| s.dirty_log);
    let source = if wants_source { Some(source(c, p)?) } else { None };
    let socket = match socket_path {
        Some(path) => Some(control::bind(&path)?),
        None => None,
    };
    Ok(RunControls {
        socket,
        source,
        snapshot_at,
        restored_from: None,
        gdb: None,
        prestarted: Default::default(),
        after_start: None,
    })
}

/// What a snapshot of this machine records about it.
fn source(c: &Config, p: &Plan) -> Result<Source, Error> {
    let path = std::fs::canonicalize(&c.file).unwrap_or_else(|_| c.file.clone());
    Ok(Source {
        plan_sha256: dump::digest(p)?,
        machine_text: c.text.clone(),
        machine_path: path.display().to_string(),
        chips: restore::chip_set(p),
        slots: p
            .memslots
            .iter()
            .map(|s| Slot {
                slot: s.slot,
                name: s.name.clone(),
                guest_addr: s.guest_addr.0,
                size: s.size.0,
                dirty_log: s.dirty_log,
                readonly: s.readonly,
                anonymous: s.file.is_none() && !s.shared && !s.hugepages,
            })
            .collect(),
    })
}

/// `berth restore`'s options.
pub struct RestoreOptions {
    /// `--stats`.
    pub stats: bool,
    /// `--verify`: check the memory files' checksums first.
    pub verify: bool,
    /// `--timeout`, ms.
    pub timeout: Option<u64>,
}

/// `berth restore DIR [--machine FILE]`: checks the snapshot, builds the
/// machine around its memory, loads the state and runs on.
pub fn restore(
    dir: &Path,
    machine: Option<&Path>,
    opts: &RestoreOptions,
    snap: &SnapshotArgs,
) -> Result<i32, Error> {
    let (stats, timeout) = (opts.stats, opts.timeout);
    let mut tl = crate::clock::Timeline::default();
    let opened = restore::open(dir, machine)?;
    if opts.verify {
        opened.verify_memory()?;
    }
    tl.mark("snapshot-checked");
    let mut controls = controls(&opened.config, &opened.plan, snap)?;
    controls.restored_from = Some(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()));
    let signals = vmm::Signals::install().map_err(Error::Run)?;
    let mem = opened.memory()?;
    tl.mark("memory-mapped");
    // Every region comes back as a private copy of the snapshot's memory
    // (as in Firecracker): restores of one snapshot run side by side and
    // none may write a file another one maps. Say so for a region the
    // machine file shares with its file.
    for s in opened
        .plan
        .memslots
        .iter()
        .filter(|s| s.shared && s.file.is_some())
    {
        eprintln!(
            "berth: memory region {:?} (shared = true, file {:?}) is restored as a private copy of \
             the snapshot; the guest's writes no longer reach the file",
            s.name,
            s.file.as_deref().unwrap_or_default()
        );
    }
    let mut vm = build::build_restored(
        &opened.config,
        &opened.plan,
        &build::BuildOptions::default(),
        &mut tl,
        mem,
    )?;
    restore::load(&mut vm, &opened.plan, &opened.state).map_err(|source| Error::RestoreState {
        dir: dir.display().to_string(),
        source,
    })?;
    tl.mark("state-loaded");
    // The restored machine's own on_reboot: a reset (or triple fault) with
    // "restart" boots the machine afresh from its plan, as `berth run` does.
    let restart = opened.plan.machine.on_reboot == "restart";
    let run_opts = vmm::RunOptions::new(timeout.or(opened.plan.machine.timeout_ms), signals, !restart);
    let report = vmm::run_controlled(vm, &run_opts, controls).map_err(Error::Run)?;
    if restart && report.outcome.resets_the_machine() {
        crate::cli::print_report(&report, stats, &mut tl, true);
        let start = crate::clock::Timeline::default();
        return crate::cli::boot_loop(
            &opened.config,
            &opened.plan,
            &build::BuildOptions::default(),
            &run_opts,
            snap,
            &start,
            stats,
            false,
            None,
        );
    }
    Ok(crate::cli::print_report(&report, stats, &mut tl, false))
}
