//! Run a built VM: one thread per vCPU, signals forwarded, the first
//! outcome wins, then every vCPU is kicked and joined and the serial port
//! flushed. Also the boot digest and the `--stats` report.

use crate::build::Vm;
use crate::bus::{DeviceStats, UnhandledStats};
use crate::devices::boot_timer::BootTimes;
use crate::outcome::Outcome;
use crate::plan::dump::hex;
use crate::runctl::{Controller, SnapshotAt};
use crate::vcpu::{install_kick_handler, ExitCounts, VcpuHandle, VcpuSnapshot, VmMessage, VmShared};
use sha2::{Digest, Sha256};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

/// How long stopping vCPUs may take before berth gives up on joining them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a run produced.
#[derive(Debug)]
pub struct RunReport {
    /// How the VM ended.
    pub outcome: Outcome,
    /// Exit counts per vCPU.
    pub exits: BTreeMap<u32, ExitCounts>,
    /// Device access counts.
    pub devices: Vec<DeviceStats>,
    /// Accesses no device claimed.
    pub unhandled: UnhandledStats,
    /// COM1 bytes written / dropped.
    pub serial_bytes: (u64, u64),
    /// Interrupt delivery counters (name, value), in a fixed order.
    pub irq: Vec<(&'static str, u64)>,
    /// What the boot timer saw (when the machine has one).
    pub boot_timer: Option<BootTimes>,
    /// Recorders: name, writes, sha256 of the write sequence.
    pub recorders: Vec<(String, u64, String)>,
    /// Coalesced zones: device, space, base, ring entries.
    pub zones: Vec<(String, String, u64, u64)>,
    /// Doorbells: name, writes that did not match (and so exited).
    pub doorbells: Vec<(String, u64)>,
    /// Wall time from first vCPU start to outcome.
    pub run_time: Duration,
    /// When every vCPU thread had been started (time since process start).
    pub vcpus_started: Duration,
    /// vCPUs that did not stop within the grace period.
    pub stuck_vcpus: Vec<u32>,
    /// Each vCPU's state when it stopped.
    pub vcpu_states: Vec<VcpuSnapshot>,
    /// Pages dirtied since the last snapshot, per memslot with `dirty_log`.
    pub dirty_pages: Vec<(u32, String, u64)>,
}

/// sha256 over all guest RAM (slot order) and every vCPU's registers and
/// special registers, taken just before the first KVM_RUN.
pub fn boot_digest(vm: &Vm) -> Result<String, String> {
    let mut h = Sha256::new();
    for region in vm.mem.iter() {
        let len = region.len() as usize;
        // SAFETY: the region maps `len` bytes at `as_ptr()` for as long as
        // `vm.mem` lives; no vCPU runs yet, so nothing writes it concurrently.
        let bytes = unsafe { std::slice::from_raw_parts(region.as_ptr() as *const u8, len) };
        h.update(region.start_addr().0.to_le_bytes());
        h.update(bytes);
    }
    for (i, v) in vm.vcpus.iter().enumerate() {
        let regs = v.get_regs().map_err(|e| format!("vcpu{i}: KVM_GET_REGS: {e}"))?;
        let sregs = v
            .get_sregs()
            .map_err(|e| format!("vcpu{i}: KVM_GET_SREGS: {e}"))?;
        h.update(format!("vcpu{i} {regs:?} {sregs:?}").as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// How often the run loop looks at the signal flag.
const SIGNAL_POLL: Duration = Duration::from_millis(10);

/// SIGINT/SIGTERM/SIGHUP, caught for the whole process (across restarts):
/// a handler stores the signal number, the run loop polls it.
#[derive(Clone, Debug)]
pub struct Signals(Arc<std::sync::atomic::AtomicUsize>);

impl Signals {
    /// Registers the handlers (signal-hook's flag: async-signal-safe).
    pub fn install() -> Result<Signals, String> {
        let flag = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_usize(sig, flag.clone(), sig as usize)
                .map_err(|e| format!("cannot install the handler for signal {sig}: {e}"))?;
        }
        Ok(Signals(flag))
    }

    /// The first signal received, if any.
    pub fn pending(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n as i32),
        }
    }
}

/// Run options.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// End the VM with [`Outcome::Timeout`] at this instant (fixed across
    /// restarts), with the configured limit in ms for the message.
    pub deadline: Option<(Instant, u64)>,
    /// Caught termination signals.
    pub signals: Signals,
    /// Install the [`crate::seccomp::ThreadKind::Main`] filter on the calling
    /// thread once every vCPU runs. Only when this thread will not build
    /// another VM afterwards (not with `on_reboot = "restart"`).
    pub seccomp_main: bool,
}

impl RunOptions {
    /// Options whose deadline is `limit_ms` from now (`--timeout` or
    /// `[machine] timeout`), fixed for the whole run, restarts included.
    pub fn new(limit_ms: Option<u64>, signals: Signals, seccomp_main: bool) -> RunOptions {
        RunOptions {
            deadline: limit_ms.map(|ms| (Instant::now() + Duration::from_millis(ms), ms)),
            signals,
            seccomp_main,
        }
    }
}

/// What a run may be asked beyond running: the control socket,
/// `--snapshot-at`, snapshots and the dirty log.
#[derive(Default)]
pub struct RunControls {
    /// The bound control socket.
    pub socket: Option<crate::control::Listener>,
    /// The plan and machine-file parts a snapshot needs (`None`: no
    /// snapshots and no dirty log).
    pub source: Option<crate::state::take::Source>,
    /// `--snapshot-at`.
    pub snapshot_at: Option<SnapshotAt>,
    /// A restored run: the snapshot it came from (the base of the next
    /// incremental snapshot).
    pub restored_from: Option<std::path::PathBuf>,
    /// `--gdb`: the debugger's socket.
    pub gdb: Option<crate::gdb::GdbControl>,
    /// vCPU threads started ahead (the migration target); the rest start
    /// here.
    pub prestarted: crate::vcpu::Prestarted,
    /// Work deferred until the vCPU threads run: the migration target's
    /// "the guest runs here now" line and the close of its connection
    /// (neither is done ahead of the vCPUs, inside the guest's downtime).
    pub after_start: Option<Box<dyn FnOnce()>>,
}

/// Runs the VM to its end.
pub fn run(vm: Vm, opts: &RunOptions) -> Result<RunReport, String> {
    run_controlled(vm, opts, RunControls::default())
}

/// Runs the VM to its end, serving control requests.
pub fn run_controlled(mut vm: Vm, opts: &RunOptions, controls: RunControls) -> Result<RunReport, String> {
    install_kick_handler().map_err(|e| format!("cannot install the vCPU kick handler: {e}"))?;
    let (tx, rx) = mpsc::channel::<VmMessage>();
    let takes_snapshots = controls.source.is_some();
    let mut ctl = Controller::new(&vm, controls.source);
    if let Some(dir) = controls.restored_from {
        ctl.set_base(dir);
    }
    let snapshot_at = controls.snapshot_at;
    let pause = Arc::new(crate::vcpu::Pause::default());
    if let Some(at) = &snapshot_at {
        // The vCPU that completes the line asks for the pause itself, so it
        // parks before it runs the guest again: the snapshot holds the
        // guest exactly after the marker line (the others park at the kick).
        let txl = tx.clone();
        let request = ctl.pause_request(pause.clone());
        vm.serial.lock().unwrap_or_else(|e| e.into_inner()).watch_line(
            at.line.clone().into_bytes(),
            Box::new(move || {
                request();
                let _ = txl.send(VmMessage::LineSeen);
            }),
        );
    }
    let server = match controls.socket {
        Some(l) => Some(
            crate::control::serve(l, tx.clone())
                .map_err(|e| format!("cannot start the control thread: {e}"))?,
        ),
        None => None,
    };

    let stops = controls
        .gdb
        .as_ref()
        .map(|_| Arc::new(crate::gdb::Stops::new(tx.clone())));
    let shared = Arc::new(VmShared {
        stop: std::sync::atomic::AtomicBool::new(false),
        bus: vm.bus.clone(),
        mem: vm.mem.clone(),
        zones: vm.zones.clone(),
        ring_lock: std::sync::Mutex::new(()),
        ioapic: vm.ioapic.clone(),
        sleep: vm.sleep.clone(),
        pause,
        debug: stops.clone(),
    });
    if controls.gdb.as_ref().is_some_and(|g| g.wait) {
        // `--gdb-wait`: every vCPU parks before its first KVM_RUN.
        shared.pause.request_quiet();
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut prestarted = controls.prestarted;
    let mut outcome = None;
    for (i, fd) in vm.vcpus.drain(..).enumerate() {
        match VcpuHandle::spawn(i as u32, fd, shared.clone(), tx.clone(), &mut prestarted) {
            Ok(h) => handles.push(h),
            Err(e) => {
                outcome = Some(Outcome::Host(format!("cannot start vcpu{i} thread: {e}")));
                break;
            }
        }
    }
    drop((tx, prestarted));
    let vcpus_started = crate::clock::since_start();
    log::debug!("vCPU threads started at {:.3}", crate::clock::monotonic_ms());
    if let Some(work) = controls.after_start {
        work();
    }
    let mut gdb_server = None;
    if let (Some(g), Some(stops)) = (controls.gdb, &stops) {
        match crate::gdb::serve(g, shared.clone(), stops.clone(), handles.len()) {
            Ok(s) => gdb_server = Some(s),
            Err(e) => {
                outcome.get_or_insert(Outcome::Host(format!("cannot start the gdb thread: {e}")));
            }
        }
    }
    // Every thread of this run exists now: filters are inherited by threads
    // created later, so the main thread's comes last.
    if opts.seccomp_main {
        let kind = if takes_snapshots {
            crate::seccomp::ThreadKind::Snapshot
        } else {
            crate::seccomp::ThreadKind::Main
        };
        if let Err(e) = crate::seccomp::install(kind) {
            outcome.get_or_insert(Outcome::Host(e.to_string()));
        }
    }

    let mut exits = BTreeMap::new();
    let mut snapshots = BTreeMap::new();
    let mut finished = 0usize;
    let total = handles.len();
    // Wait for the first outcome, a signal, or the deadline.
    while outcome.is_none() {
        if let Some(sig) = opts.signals.pending() {
            outcome = Some(Outcome::Signal(sig));
            break;
        }
        let now = Instant::now();
        if let Some((d, ms)) = opts.deadline {
            if now >= d {
                outcome = Some(Outcome::Timeout(ms));
                break;
            }
        }
        let wait = opts
            .deadline
            .map_or(SIGNAL_POLL, |(d, _)| SIGNAL_POLL.min(d - now));
        let msg = match rx.recv_timeout(wait) {
            Ok(m) => Ok(m),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
        };
        match msg {
            Ok(VmMessage::Outcome(o)) => outcome = Some(o),
            Ok(VmMessage::Suspended) => {
                // ACPI S3: every vCPU parks before its next KVM_RUN. With
                // nothing armed to wake it (RTC alarm + RTC_EN) the VM is
                // as good as off.
                for h in &handles {
                    h.kick();
                }
                if !vm.sleep.as_ref().is_some_and(|s| s.can_wake()) {
                    log::warn!("guest suspended to S3 with no wake source armed; ending as power-off");
                    outcome = Some(Outcome::PowerOff);
                }
            }
            Ok(VmMessage::Finished(i, c, snap)) => {
                exits.insert(i, c);
                snapshots.insert(i, snap);
                finished += 1;
                if finished == total {
                    outcome = Some(Outcome::Host("every vCPU stopped without an outcome".into()));
                }
            }
            Ok(VmMessage::Control(req, reply)) => {
                let abort = || opts.signals.pending().map(|s| format!("signal {s} arrived"));
                let run = crate::runctl::Running {
                    vm: &vm,
                    shared: &shared,
                    handles: &handles,
                    abort: &abort,
                };
                let (r, end) = ctl.handle(req, run);
                let _ = reply.send(r);
                outcome = end;
            }
            Ok(VmMessage::KickAll) => {
                for h in &handles {
                    h.kick();
                }
            }
            Ok(VmMessage::LineSeen) => {
                if let Some(at) = &snapshot_at {
                    // Paused first, so the VM stays paused after the snapshot
                    // unless it is to keep running: the guest must not run
                    // past the snapshot in a process that is about to exit.
                    let taken = ctl
                        .pause(&shared, &handles)
                        .and_then(|()| ctl.snapshot(&at.dir, false, &vm, &shared, &handles));
                    if at.keep_running {
                        ctl.resume(&shared);
                    }
                    match taken {
                        Ok(t) => {
                            eprintln!(
                                "berth: snapshot written to {} ({:.1} ms, {} pages)",
                                t.dir.display(),
                                t.ms,
                                t.pages
                            );
                            if !at.keep_running {
                                outcome = Some(Outcome::Snapshotted(t.dir.display().to_string()));
                            }
                        }
                        Err(e) => outcome = Some(Outcome::SnapshotFailed(e)),
                    }
                }
            }
            Err(()) => outcome = Some(Outcome::Host("lost contact with the vCPU threads".into())),
        }
    }
    // Requests that arrive from now on are answered by the control thread
    // ("the VM has stopped") once it is dropped below.
    let dirty = ctl.dirty_counts(&vm);
    let run_time = started.elapsed();
    if matches!(outcome, Some(Outcome::Timeout(_))) && vm.sleep.as_ref().is_some_and(|s| s.is_suspended()) {
        log::warn!("the guest was suspended to RAM (ACPI S3) and no wake event came");
    }

    // Stop: flag, kick (and let S3-parked vCPUs go), collect, join.
    if let (Some(s), Some(o)) = (&stops, &outcome) {
        s.set_exit_code(o.exit_code());
    }
    shared.stop.store(true, Ordering::SeqCst);
    if let Some(s) = &shared.sleep {
        s.release();
    }
    shared.pause.release();
    drop(server);
    drop(gdb_server);
    let deadline = Instant::now() + STOP_GRACE;
    while finished < total && Instant::now() < deadline {
        for h in &handles {
            h.kick();
        }
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(VmMessage::Finished(i, c, snap)) => {
                exits.insert(i, c);
                snapshots.insert(i, snap);
                finished += 1;
            }
            Ok(VmMessage::Control(_, reply)) => {
                let _ = reply.send(crate::control::error_reply("the VM is stopping"));
            }
            Ok(VmMessage::Outcome(_) | VmMessage::Suspended | VmMessage::LineSeen | VmMessage::KickAll)
            | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut stuck_vcpus = Vec::new();
    for h in handles {
        if exits.contains_key(&h.index()) {
            // It sent `Finished` as its last act: joining cannot block long.
            drop(h);
        } else {
            stuck_vcpus.push(h.index());
            // Leave it: the process exits after reporting.
            std::mem::forget(h);
        }
    }
    let _ = vm.serial.lock().unwrap_or_else(|e| e.into_inner()).flush();

    let st = &vm.irq.stats;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let irq = vec![
        ("line-delivered", ld(&st.line_delivered)),
        ("line-coalesced", ld(&st.line_coalesced)),
        ("line-masked", ld(&st.line_masked)),
        ("line-raised-no-status", ld(&st.line_raised_no_status)),
        ("line-lowered", ld(&st.line_lowered)),
        ("msi-signaled", ld(&st.msi_signaled)),
        ("msi-via-route", ld(&st.msi_via_route)),
        ("msi-cache-flushes", ld(&st.msi_cache_flushes)),
        ("routing-commits", ld(&st.routing_commits)),
        ("resample-raised", ld(&st.resample_raised)),
        ("resample-lowered", ld(&st.resample_lowered)),
        ("resample-eois", ld(&st.resample_eois)),
        ("resample-reasserted", ld(&st.resample_reasserted)),
    ];
    let recorders = vm
        .recorders
        .iter()
        .map(|(n, log)| {
            let l = log.lock().unwrap_or_else(|e| e.into_inner());
            (n.clone(), l.count, l.digest())
        })
        .collect();
    let zones = vm
        .zones
        .iter()
        .map(|z| (z.device.clone(), z.space.to_string(), z.base, ld(&z.entries)))
        .collect();
    let doorbells = vm.doorbells.iter().map(|(n, c)| (n.clone(), ld(c))).collect();
    Ok(RunReport {
        irq,
        recorders,
        boot_timer: vm
            .boot_timer
            .as_ref()
            .map(|t| *t.lock().unwrap_or_else(|e| e.into_inner())),
        zones,
        doorbells,
        outcome: outcome.unwrap_or_else(|| Outcome::Host("no outcome".into())),
        exits,
        devices: vm.bus.stats(),
        unhandled: vm.bus.unhandled(),
        serial_bytes: (vm.serial_counters.bytes_out(), vm.serial_counters.bytes_dropped()),
        run_time,
        vcpus_started,
        stuck_vcpus,
        vcpu_states: snapshots.into_values().flatten().collect(),
        dirty_pages: dirty,
    })
}

/// The `--stats` text.
pub fn stats_text(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "stats: run-time-ms {:.3}", r.run_time.as_secs_f64() * 1000.0);
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, c) in &r.exits {
        for (k, v) in c {
            let _ = writeln!(s, "stats: vcpu{i} exit {k} {v}");
            *totals.entry(k).or_insert(0) += v;
        }
    }
    for (k, v) in &totals {
        let _ = writeln!(s, "stats: exit {k} {v}");
    }
    for v in &r.vcpu_states {
        let _ = writeln!(s, "stats: state {v}");
    }
    for d in &r.devices {
        let _ = writeln!(
            s,
            "stats: device {} {} {:#x}+{:#x} reads {} writes {}",
            d.name, d.space, d.base, d.len, d.reads, d.writes
        );
    }
    let u = &r.unhandled;
    let _ = writeln!(
        s,
        "stats: unhandled pio-reads {} pio-writes {} mmio-reads {} mmio-writes {}",
        u.pio_reads, u.pio_writes, u.mmio_reads, u.mmio_writes
    );
    let _ = writeln!(
        s,
        "stats: serial bytes-out {} bytes-dropped {}",
        r.serial_bytes.0, r.serial_bytes.1
    );
    for (k, v) in &r.irq {
        let _ = writeln!(s, "stats: irq {k} {v}");
    }
    if let Some(t) = &r.boot_timer {
        s.push_str(&t.stats_line());
    }
    for (n, count, digest) in &r.recorders {
        let _ = writeln!(s, "stats: recorder {n} writes {count} sha256 {digest}");
    }
    for (dev, space, base, n) in &r.zones {
        let _ = writeln!(s, "stats: coalesced {space} {base:#x} device {dev} entries {n}");
    }
    for (n, c) in &r.doorbells {
        let _ = writeln!(s, "stats: doorbell {n} unmatched-writes {c}");
    }
    for (slot, name, n) in &r.dirty_pages {
        let _ = writeln!(s, "stats: dirty slot {slot} region {name} pages {n}");
    }
    s
}
