//! The run loop's side of control requests ([`crate::control`] and
//! `--snapshot-at`): pause and resume every vCPU through the kick
//! ([`crate::vcpu::Pause`]), take snapshots ([`crate::state::take`]), stats
//! and stop. Runs on the main thread, between the run loop's waits.

use crate::build::Vm;
use crate::control::{error_reply, Reply, Request};
use crate::migrate::{self, source, source::Migrated};
use crate::outcome::Outcome;
use crate::state::dirty::DirtyLog;
use crate::state::take::{self, Incremental, Source, Taken};
use crate::state::vcpu::VcpuCaps;
use crate::state::VmState;
use crate::vcpu::{Parked, VcpuHandle, VcpuState, VmShared};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the vCPUs may take to park.
const PAUSE_LIMIT: Duration = Duration::from_secs(5);

/// Why a VM in ACPI S3 is not paused: its vCPUs wait in the S3 park until a
/// wake event, and a snapshot would have to restore that wait.
const S3_REFUSAL: &str = "the guest is suspended to RAM (ACPI S3): it cannot be paused or \
                          snapshotted until a wake event resumes it";

/// `--snapshot-at LINE --snapshot-to DIR [--snapshot-continue]`.
#[derive(Clone, Debug)]
pub struct SnapshotAt {
    /// The text a complete serial line must contain.
    pub line: String,
    /// Where the snapshot goes.
    pub dir: PathBuf,
    /// Keep running after it (default: exit 0).
    pub keep_running: bool,
}

/// Pause, resume, snapshot and stats for one run.
pub struct Controller {
    source: Option<Source>,
    msrs: Arc<Vec<u32>>,
    caps: VcpuCaps,
    paused: Option<BTreeMap<u32, Parked>>,
    last: Option<PathBuf>,
    dirty: DirtyLog,
    started: Instant,
}

impl Controller {
    /// Prepares for `vm` (reads the host's MSR list: before the main
    /// thread's seccomp filter).
    pub fn new(vm: &Vm, source: Option<Source>) -> Controller {
        // Only a run that can pause needs the list (one system call).
        let msrs = match &source {
            Some(_) => crate::state::vcpu::msr_indices(&vm.host.kvm),
            None => Vec::new(),
        };
        let caps = VcpuCaps::of(&vm.host.kvm);
        let dirty = DirtyLog::new(source.as_ref().map(|s| s.slots.clone()).unwrap_or_default());
        Controller {
            source,
            msrs: Arc::new(msrs),
            caps,
            paused: None,
            last: None,
            dirty,
            started: Instant::now(),
        }
    }

    /// The snapshot this run was restored from: the base of its first
    /// incremental snapshot.
    pub fn set_base(&mut self, dir: PathBuf) {
        self.last = Some(dir);
    }

    /// A request for a pause that can be made on a vCPU thread (the one
    /// that sees the `--snapshot-at` line), ahead of [`Controller::pause`].
    pub fn pause_request(&self, pause: Arc<crate::vcpu::Pause>) -> impl FnOnce() + Send + 'static {
        let (msrs, caps) = (self.msrs.clone(), self.caps);
        move || pause.request(msrs, caps)
    }

    /// Whether the vCPUs are parked.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Parks every running vCPU (each saves its state).
    pub fn pause(&mut self, shared: &VmShared, handles: &[VcpuHandle]) -> Result<(), String> {
        if self.paused.is_some() {
            return Ok(());
        }
        let suspended = || shared.sleep.as_ref().is_some_and(|s| s.is_suspended());
        if suspended() {
            // A request the `--snapshot-at` line made is withdrawn too.
            shared.pause.release();
            return Err(S3_REFUSAL.into());
        }
        shared.pause.request(self.msrs.clone(), self.caps);
        let deadline = Instant::now() + PAUSE_LIMIT;
        loop {
            // A vCPU that went to sleep (S3) while the pause was asked for
            // waits in the S3 park, not the pause: refuse at once.
            if suspended() {
                shared.pause.release();
                return Err(S3_REFUSAL.into());
            }
            // A vCPU that left its loop (the guest is ending) cannot be
            // saved: no snapshot of a VM that is stopping.
            if let Some(h) = handles.iter().find(|h| h.state() == VcpuState::Exited) {
                shared.pause.release();
                return Err(format!("vcpu{} has stopped: the VM is ending", h.index()));
            }
            for h in handles {
                h.kick();
            }
            // Parking takes a fraction of a millisecond: polled for first.
            let all = || shared.pause.parked() >= handles.len();
            if crate::clock::poll_until(crate::clock::HANDOVER_POLL, all)
                || shared.pause.wait_parked(Duration::from_millis(2)) >= handles.len()
            {
                break;
            }
            if Instant::now() >= deadline {
                shared.pause.release();
                return Err("the vCPUs did not pause within 5 s".into());
            }
        }
        self.paused = Some(shared.pause.take_states());
        Ok(())
    }

    /// Lets the vCPUs run again.
    pub fn resume(&mut self, shared: &VmShared) {
        if self.paused.take().is_some() {
            shared.pause.release();
        }
    }

    /// Writes a snapshot to `dir` (pausing meanwhile if running). On error
    /// the VM keeps its state and runs on as before.
    pub fn snapshot(
        &mut self,
        dir: &Path,
        incremental: bool,
        vm: &Vm,
        shared: &VmShared,
        handles: &[VcpuHandle],
    ) -> Result<Taken, String> {
        let Some(src) = self.source.clone() else {
            return Err("this run cannot take snapshots".into());
        };
        let base = match (incremental, &self.last) {
            (true, None) => {
                return Err("an incremental snapshot needs a previous snapshot of this run".into())
            }
            (true, Some(b)) => Some(b.clone()),
            (false, _) => None,
        };
        if incremental && !self.dirty.tracks_all() {
            return Err("an incremental snapshot needs dirty_log = true on every [[memory]] region".into());
        }
        let was_paused = self.is_paused();
        self.pause(shared, handles)?;
        let result = self.write(dir, base, &src, vm);
        if !was_paused {
            self.resume(shared);
        }
        result
    }

    /// The whole state of the paused VM: what a snapshot writes and a
    /// migration sends.
    fn paused_state(&self, src: &Source, vm: &Vm) -> Result<VmState, String> {
        // Serial bytes already sent belong to this side of the snapshot.
        let _ = vm.serial.lock().unwrap_or_else(|e| e.into_inner()).flush();
        let vcpus = self
            .paused
            .as_ref()
            .map(|p| p.iter().map(|(i, r)| (*i, r.clone())).collect())
            .unwrap_or_default();
        take::vm_state(src.chips, vcpus, &vm.fd, &vm.bus).map_err(|e| e.to_string())
    }

    fn write(&mut self, dir: &Path, base: Option<PathBuf>, src: &Source, vm: &Vm) -> Result<Taken, String> {
        let state = self.paused_state(src, vm)?;
        // The dirty log is read (and so reset) with the VM paused, so the
        // pages of the next incremental snapshot are exactly those written
        // after this one.
        let dirty = self.dirty.collect(&vm.fd).map_err(|e| e.to_string())?;
        let inc = base.map(|b| Incremental {
            base: b,
            pages: dirty,
        });
        let taken = take::write(dir, src, &state, &vm.mem, inc.as_ref()).map_err(|e| e.to_string());
        // On failure the pages stay pending for the next snapshot.
        if taken.is_ok() {
            self.last = Some(dir.to_path_buf());
            self.dirty.commit();
        }
        taken
    }

    /// Live-migrates the VM to `to` ([`crate::migrate::source`]). On
    /// success the VM stays paused for good (the run ends with
    /// [`Outcome::Migrated`]); on error it runs on as before.
    pub fn migrate(&mut self, to: &str, opts: &migrate::Options, run: Running) -> Result<Migrated, String> {
        let Some(src) = self.source.clone() else {
            return Err("this run cannot migrate".into());
        };
        let addr = migrate::Address::parse(to, false).map_err(|e| e.to_string())?;
        opts.check()?;
        let m = source::Machine {
            plan_sha256: &src.plan_sha256,
            vcpus: run.handles.len() as u32,
            fd: &run.vm.fd,
            mem: &run.vm.mem,
            slots: &src.slots,
            cpuid: &run.vm.cpuid,
        };
        let was_paused = self.is_paused();
        let mut live = Live {
            ctl: self,
            run,
            src: &src,
            was_paused,
        };
        source::migrate(&addr, opts, &m, &mut live, &mut |line| eprintln!("{line}"))
            .map_err(|e| format!("migration to {addr} failed, the VM runs on here: {e}"))
    }

    /// Carries out a control request; returns the reply and, for `stop` and
    /// a finished migration, the outcome.
    pub fn handle(&mut self, req: Request, run: Running) -> (Reply, Option<Outcome>) {
        let Running {
            vm, shared, handles, ..
        } = run;
        match req {
            Request::Migrate {
                to,
                max_downtime_ms,
                max_rounds,
                max_bandwidth,
            } => {
                let d = migrate::Options::default();
                let opts = migrate::Options {
                    max_downtime_ms: max_downtime_ms.unwrap_or(d.max_downtime_ms),
                    max_rounds: max_rounds.unwrap_or(d.max_rounds),
                    max_bandwidth,
                };
                match self.migrate(&to, &opts, run) {
                    Ok(m) => {
                        eprintln!(
                            "berth: migrated to {to}: {} rounds, {} pages, {} bytes, downtime {:.1} ms (estimated {:.1} ms), total {:.1} ms",
                            m.rounds, m.pages, m.bytes, m.downtime_ms, m.estimated_downtime_ms, m.total_ms
                        );
                        (
                            json!({"ok": true, "migrated_to": to, "rounds": m.rounds, "pages": m.pages,
                                   "last_pages": m.last_pages, "bytes": m.bytes,
                                   "downtime_ms": m.downtime_ms,
                                   "estimated_downtime_ms": m.estimated_downtime_ms,
                                   "total_ms": m.total_ms}),
                            Some(Outcome::Migrated(to)),
                        )
                    }
                    Err(e) => {
                        eprintln!("berth: {e}");
                        (error_reply(e), None)
                    }
                }
            }
            Request::Pause => match self.pause(shared, handles) {
                Ok(()) => (json!({"ok": true, "paused": true}), None),
                Err(e) => (error_reply(e), None),
            },
            Request::Resume => {
                self.resume(shared);
                (json!({"ok": true, "paused": false}), None)
            }
            Request::Snapshot { dir, incremental } => {
                match self.snapshot(&dir, incremental, vm, shared, handles) {
                    Ok(t) => (
                        json!({"ok": true, "dir": t.dir, "ms": t.ms, "pages": t.pages,
                               "base": t.base, "paused": self.is_paused()}),
                        None,
                    ),
                    Err(e) => (error_reply(e), None),
                }
            }
            Request::Stats => {
                let dirty: BTreeMap<String, u64> = self
                    .dirty
                    .peek(&vm.fd)
                    .into_iter()
                    .map(|(slot, _, n)| (format!("slot{slot}"), n))
                    .collect();
                (
                    json!({"ok": true, "paused": self.is_paused(), "vcpus": handles.len(),
                           "suspended": shared.sleep.as_ref().is_some_and(|s| s.is_suspended()),
                           "run_ms": self.started.elapsed().as_secs_f64() * 1000.0,
                           "serial_bytes_out": vm.serial_counters.bytes_out(),
                           "dirty_pages": dirty}),
                    None,
                )
            }
            Request::Stop => (json!({"ok": true}), Some(Outcome::Stopped)),
        }
    }

    /// Dirty pages per slot since the last snapshot (for `--stats`).
    pub fn dirty_counts(&mut self, vm: &Vm) -> Vec<(u32, String, u64)> {
        self.dirty.peek(&vm.fd)
    }
}

/// The running VM as a control request sees it.
#[derive(Clone, Copy)]
pub struct Running<'a> {
    /// The VM.
    pub vm: &'a Vm,
    /// What the vCPU threads share.
    pub shared: &'a VmShared,
    /// The vCPU threads.
    pub handles: &'a [VcpuHandle],
    /// A reason to abandon a long request (a signal arrived).
    pub abort: &'a dyn Fn() -> Option<String>,
}

/// The controller as a migration source needs it.
struct Live<'a, 'b> {
    ctl: &'a mut Controller,
    run: Running<'b>,
    src: &'a Source,
    was_paused: bool,
}

impl source::Vm for Live<'_, '_> {
    fn pause(&mut self) -> Result<(), String> {
        self.ctl.pause(self.run.shared, self.run.handles)
    }
    fn resume(&mut self) {
        if !self.was_paused {
            self.ctl.resume(self.run.shared);
        }
    }
    fn state(&mut self) -> Result<VmState, String> {
        self.ctl.paused_state(self.src, self.run.vm)
    }
    fn aborted(&self) -> Option<String> {
        (self.run.abort)()
    }
    fn note_dirty(&mut self, slot: u32, pages: &[u64]) {
        self.ctl.dirty.note(slot, pages);
    }
}
