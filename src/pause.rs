//! Pausing every vCPU (the control socket, snapshots, the gdb stub): a
//! request, a kick, each vCPU thread parks at the top of its loop and, while
//! parked, runs jobs on its own fd for whoever paused it.

use crate::state::vcpu::{VcpuCaps, VcpuState as SavedVcpu};
use kvm_ioctls::VcpuFd;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// What a parked vCPU left: its saved state, or why saving failed.
pub type Parked = Result<SavedVcpu, String>;

/// Pausing every vCPU: [`Pause::request`] asks, each vCPU thread completes
/// its pending I/O, saves its state ([`crate::state::vcpu`]) and parks until
/// [`Pause::release`]. The vCPU loop only sees "pause requested".
#[derive(Default)]
pub struct Pause {
    inner: Mutex<PauseInner>,
    cond: Condvar,
    /// `inner.requested`, readable without the lock: every vCPU checks it
    /// before each KVM_RUN. Written only under the lock.
    requested: AtomicBool,
}

#[derive(Default)]
struct PauseInner {
    requested: bool,
    /// What the vCPU saves: KVM_GET_MSR_INDEX_LIST and the host's caps.
    msrs: Arc<Vec<u32>>,
    caps: VcpuCaps,
    /// Which pause this is: a release starts the next one, so a vCPU still
    /// asleep from the last pause is not counted as parked in this one.
    generation: u64,
    /// Parked vCPUs and the pause they parked in.
    parked: BTreeMap<u32, u64>,
    /// States saved by parking vCPUs (with their pause), until taken.
    states: BTreeMap<u32, (u64, Parked)>,
    /// This pause saves no state (a debugger's stop).
    quiet: bool,
    /// Work for parked vCPUs, run on their own thread ([`Pause::run_on`]).
    jobs: BTreeMap<u32, Vec<Job>>,
    /// vCPUs that stay parked through a release ([`Pause::release_holding`]).
    held: BTreeSet<u32>,
}

/// Work a parked vCPU runs on its own fd.
type Job = Box<dyn FnOnce(&VcpuFd) + Send>;

impl Pause {
    fn lock(&self) -> std::sync::MutexGuard<'_, PauseInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a pause is requested (checked by the vCPU loop).
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Asks every vCPU to park, saving the given MSRs; kick them next.
    pub fn request(&self, msrs: Arc<Vec<u32>>, caps: VcpuCaps) {
        let mut g = self.lock();
        g.requested = true;
        self.requested.store(true, Ordering::SeqCst);
        g.msrs = msrs;
        g.caps = caps;
        g.quiet = false;
    }

    /// Asks every vCPU to park without saving its state (a debugger's
    /// stop); kick them next. Nothing if a pause is already requested.
    pub fn request_quiet(&self) {
        let mut g = self.lock();
        if !g.requested {
            g.requested = true;
            self.requested.store(true, Ordering::SeqCst);
            g.quiet = true;
        }
    }

    /// How many vCPUs are parked in this pause.
    pub fn parked(&self) -> usize {
        Self::parked_now(&self.lock())
    }

    /// Runs `job` on parked vCPU `index`'s thread with its fd; `None` if
    /// that vCPU is not parked or does not take the job within `limit`.
    pub fn run_on<R: Send + 'static>(
        &self,
        index: u32,
        job: impl FnOnce(&VcpuFd) -> R + Send + 'static,
        limit: std::time::Duration,
    ) -> Option<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut g = self.lock();
            let generation = g.generation;
            if !g.requested || g.parked.get(&index) != Some(&generation) {
                return None;
            }
            g.jobs.entry(index).or_default().push(Box::new(move |fd| {
                let _ = tx.send(job(fd));
            }));
            self.cond.notify_all();
        }
        let r = rx.recv_timeout(limit).ok();
        // A job the vCPU did not take in time is dropped with its sender.
        self.lock().jobs.remove(&index);
        r
    }

    /// Takes the states the vCPUs parked in this pause saved.
    pub fn take_states(&self) -> BTreeMap<u32, Parked> {
        let mut g = self.lock();
        let generation = g.generation;
        std::mem::take(&mut g.states)
            .into_iter()
            .filter(|(_, (gen, _))| *gen == generation)
            .map(|(i, (_, s))| (i, s))
            .collect()
    }

    fn parked_now(g: &PauseInner) -> usize {
        g.parked.values().filter(|&&gen| gen == g.generation).count()
    }

    /// Waits up to `limit` for the number of vCPUs parked in this pause to
    /// change; returns it.
    pub fn wait_parked(&self, limit: std::time::Duration) -> usize {
        let g = self.lock();
        let n = Self::parked_now(&g);
        let (g, _) = self
            .cond
            .wait_timeout_while(g, limit, |g| Self::parked_now(g) == n && g.requested)
            .unwrap_or_else(|e| e.into_inner());
        Self::parked_now(&g)
    }

    /// Lets every parked vCPU run again.
    pub fn release(&self) {
        self.release_holding(BTreeSet::new());
    }

    /// Lets every parked vCPU run again except `held`, which stay parked
    /// (and count as parked in the next pause) until a later release.
    pub fn release_holding(&self, held: BTreeSet<u32>) {
        let mut g = self.lock();
        g.held = held;
        g.requested = false;
        self.requested.store(false, Ordering::SeqCst);
        g.generation += 1;
        self.cond.notify_all();
    }

    /// Called by a vCPU thread: records its state and waits until released
    /// (or the VM stops).
    pub(crate) fn park(
        &self,
        index: u32,
        fd: &VcpuFd,
        save: impl FnOnce(&[u32], VcpuCaps) -> Parked,
        stop: &AtomicBool,
    ) {
        let (msrs, caps, quiet) = {
            let g = self.lock();
            (g.msrs.clone(), g.caps, g.quiet)
        };
        let state = if quiet {
            Err("not saved (debugger stop)".into())
        } else {
            save(&msrs, caps)
        };
        let mut g = self.lock();
        let mut generation = g.generation;
        g.parked.insert(index, generation);
        g.states.insert(index, (generation, state));
        self.cond.notify_all();
        while !stop.load(Ordering::SeqCst) {
            if g.generation != generation {
                if !g.held.contains(&index) {
                    break;
                }
                // Held through the release: parked in the next pause too.
                generation = g.generation;
                g.parked.insert(index, generation);
                self.cond.notify_all();
            } else if !g.requested && !g.held.contains(&index) {
                break;
            }
            if let Some(jobs) = g.jobs.remove(&index) {
                drop(g);
                for job in jobs {
                    job(fd);
                }
                g = self.lock();
                continue;
            }
            g = self
                .cond
                .wait_timeout(g, std::time::Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        g.parked.remove(&index);
        if g.states.get(&index).is_some_and(|(gen, _)| *gen == generation) {
            g.states.remove(&index);
        }
    }
}
