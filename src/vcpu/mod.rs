//! vCPU threads. Each vCPU runs in a named thread (`vcpu0`, …) behind a
//! [`VcpuHandle`]; the thread loops on KVM_RUN and dispatches exits to the
//! [`Bus`]. A kick (SIGRTMIN, whose handler sets this thread's
//! `immediate_exit`) gets a vCPU out of KVM_RUN however it is waiting.

mod prestart;

use prestart::Body;
pub use prestart::Prestarted;

use crate::build::ZoneCounter;
use crate::bus::{AddressSpace, Bus, VmEvent};
use crate::devices::ioapic::Ioapic;
use crate::devices::sleep::SleepControl;
use crate::outcome::{FaultKind, Outcome};
pub use crate::pause::{Parked, Pause};
use crate::ram_loss;
use kvm_bindings::{kvm_run, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

/// Lifecycle of a vCPU thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum VcpuState {
    /// Thread created, not yet in KVM_RUN.
    Starting = 0,
    /// Looping on KVM_RUN.
    Running = 1,
    /// Loop left; thread finishing.
    Exited = 2,
}

impl VcpuState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => VcpuState::Starting,
            1 => VcpuState::Running,
            _ => VcpuState::Exited,
        }
    }
}

/// Messages from vCPU threads (and the signal thread) to the VMM.
#[derive(Debug)]
pub enum VmMessage {
    /// A vCPU decided how the VM ends.
    Outcome(Outcome),
    /// A vCPU thread finished (with its exit counters and last state).
    Finished(u32, ExitCounts, Option<VcpuSnapshot>),
    /// The guest entered ACPI S3: every vCPU must be kicked so it parks.
    Suspended,
    /// A control-socket request, and where its reply goes.
    Control(crate::control::Request, Sender<crate::control::Reply>),
    /// The serial line `--snapshot-at` waits for was printed.
    LineSeen,
    /// Kick every vCPU out of KVM_RUN (the gdb stub stops the guest).
    KickAll,
}

/// A vCPU's state when it stopped.
#[derive(Clone, Debug)]
pub struct VcpuSnapshot {
    /// vCPU index.
    pub index: u32,
    /// Instruction pointer.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// KVM_GET_MP_STATE: 0 runnable, 1 uninitialized (waiting for INIT), 3 halted, 4 SIPI received...
    pub mp_state: u32,
}

impl std::fmt::Display for VcpuSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.mp_state {
            0 => "running",
            1 => "waiting for INIT/SIPI",
            2 => "INIT received",
            3 => "halted",
            4 => "SIPI received",
            _ => "stopped",
        };
        let intr = if self.rflags & (1 << 9) != 0 { "on" } else { "off" };
        write!(
            f,
            "vcpu{}: rip {:#x}, {state}, interrupts {intr}",
            self.index, self.rip
        )
    }
}

/// Exit counts by exit reason.
pub type ExitCounts = BTreeMap<&'static str, u64>;

/// What every vCPU thread shares.
pub struct VmShared {
    /// Set once the VM is stopping; vCPUs leave their loop.
    pub stop: AtomicBool,
    /// The device bus.
    pub bus: Arc<Bus>,
    /// Guest memory (for fault reports).
    pub mem: GuestMemoryMmap,
    /// Coalesced zones (empty: no ring to drain).
    pub zones: Arc<Vec<ZoneCounter>>,
    /// The coalesced ring is one per VM: one drainer at a time.
    pub ring_lock: Mutex<()>,
    /// berth's IOAPIC (split mode), told about EOIs.
    pub ioapic: Option<Arc<Mutex<Ioapic>>>,
    /// ACPI S3 state (with ACPI tables): vCPUs park here while suspended.
    pub sleep: Option<Arc<SleepControl>>,
    /// Pause requests (the control socket, snapshots, the gdb stub).
    pub pause: Arc<Pause>,
    /// The gdb stub's side of `KVM_EXIT_DEBUG` (`--gdb`), if any.
    pub debug: Option<Arc<crate::gdb::Stops>>,
}

thread_local! {
    /// This thread's kvm_run mapping, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own kvm_run mapping, set by the
        // vCPU loop before its first KVM_RUN and cleared before the VcpuFd is
        // dropped; a single-byte store is async-signal-safe.
        unsafe { std::ptr::write_volatile(&mut (*run).immediate_exit, 1) };
    }
}

/// The kick signal number.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

/// Installs the kick handler (process-wide, once, before vCPU threads start).
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), kick_handler)
}

/// A running vCPU thread.
pub struct VcpuHandle {
    index: u32,
    state: Arc<AtomicU8>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Starts vCPU `index` in a thread named `vcpu<index>`: the one
    /// `prestarted` holds for it, or a new one.
    pub fn spawn(
        index: u32,
        fd: VcpuFd,
        shared: Arc<VmShared>,
        tx: Sender<VmMessage>,
        prestarted: &mut Prestarted,
    ) -> std::io::Result<Self> {
        let state = Arc::new(AtomicU8::new(VcpuState::Starting as u8));
        let st = state.clone();
        let body: Body = Box::new(move |installed| {
            let mut v = Vcpu {
                index,
                fd,
                shared,
                counts: ExitCounts::new(),
                draining: false,
                tx: tx.clone(),
                sleep_epoch: 0,
            };
            let tx2 = tx.clone();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let installed =
                    installed.unwrap_or_else(|| crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu));
                if let Err(e) = installed {
                    return Some(Outcome::Host(format!("vcpu{index}: {e}")));
                }
                st.store(VcpuState::Running as u8, Ordering::SeqCst);
                v.run_loop()
            }));
            KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
            st.store(VcpuState::Exited as u8, Ordering::SeqCst);
            let outcome = match result {
                Ok(o) => o,
                Err(_) => Some(Outcome::Panic(format!("vcpu{index} thread panicked"))),
            };
            if let Some(o) = outcome {
                let _ = tx2.send(VmMessage::Outcome(o));
            }
            let snap = v.snapshot();
            let _ = tx.send(VmMessage::Finished(index, std::mem::take(&mut v.counts), snap));
        });
        let thread = match prestarted.take(index, body) {
            Ok(thread) => thread,
            Err(body) => std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || body(None))?,
        };
        Ok(VcpuHandle {
            index,
            state,
            thread: Some(thread),
        })
    }

    /// The vCPU index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Current state.
    pub fn state(&self) -> VcpuState {
        VcpuState::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// Interrupts KVM_RUN (the caller has set `stop` first).
    pub fn kick(&self) {
        if let Some(t) = &self.thread {
            if !t.is_finished() {
                let _ = t.kill(kick_signal());
            }
        }
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        // Kick until the thread leaves KVM_RUN, then join. The owner sets
        // `stop` before dropping; a thread that is still running here is kicked
        // again every millisecond. One past its loop (`Exited`) only has to
        // close its fd and return, so it is joined without sleeping.
        while let Some(t) = self.thread.as_ref() {
            if t.is_finished() || self.state() == VcpuState::Exited {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                break;
            }
            let _ = t.kill(kick_signal());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

struct Vcpu {
    index: u32,
    fd: VcpuFd,
    shared: Arc<VmShared>,
    counts: ExitCounts,
    draining: bool,
    /// To the run loop (S3: kick the others).
    tx: Sender<VmMessage>,
    /// The S3 epoch this vCPU last resumed in.
    sleep_epoch: u64,
}

/// A KVM_RUN with `immediate_exit` set: KVM completes the last exit's I/O
/// (an IN's value into the registers) and its own first-run work, then
/// returns EINTR before it would enter the guest. No guest instruction runs.
pub fn run_without_entering(fd: &mut VcpuFd) -> Result<(), kvm_ioctls::Error> {
    fd.set_kvm_immediate_exit(1);
    let r = fd.run().map(|_| ());
    fd.set_kvm_immediate_exit(0);
    r
}

/// What the loop does after an exit.
enum Next {
    Continue,
    Stop(Outcome),
}

impl Vcpu {
    /// Registers and MP state, for reports.
    fn snapshot(&self) -> Option<VcpuSnapshot> {
        let regs = self.fd.get_regs().ok()?;
        let mp = self.fd.get_mp_state().map(|m| m.mp_state).unwrap_or(u32::MAX);
        Some(VcpuSnapshot {
            index: self.index,
            rip: regs.rip,
            rflags: regs.rflags,
            mp_state: mp,
        })
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_insert(0) += 1;
    }

    fn run_loop(&mut self) -> Option<Outcome> {
        KVM_RUN.with(|r| r.set(self.fd.get_kvm_run() as *mut kvm_run));
        crate::outcome::inject_panic_here();
        crate::seccomp::test_forbidden_syscall_here();
        log::debug!(
            "vcpu{} loop entered at {:.3}",
            self.index,
            crate::clock::monotonic_ms()
        );
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(sleep) = &self.shared.sleep {
                if sleep.epoch() != self.sleep_epoch {
                    let sleep = sleep.clone();
                    if let Err(o) = self.sleep_until_wake(&sleep) {
                        return o;
                    }
                    continue;
                }
            }
            if self.shared.pause.requested() {
                self.park();
                continue;
            }
            let next = self.run_once();
            if let Next::Stop(o) = next {
                return Some(o);
            }
        }
    }

    /// ACPI S3: park until the VM wakes, then reset this vCPU as firmware
    /// would (the BSP to the FACS waking vector, an AP to wait-for-SIPI).
    /// `Err` leaves the loop: with an outcome, or quietly when the VM is
    /// stopping (whoever stopped it gave the outcome).
    fn sleep_until_wake(&mut self, sleep: &SleepControl) -> Result<(), Option<Outcome>> {
        self.count("s3-suspend");
        let Some(epoch) = sleep.park() else {
            return Err(None);
        };
        self.sleep_epoch = epoch;
        let entry = if self.index == 0 {
            match crate::arch::x86_64::wake::waking_entry(&self.shared.mem, sleep.facs_addr()) {
                Some(e) => Some(e),
                // No waking vector: firmware reboots (SeaBIOS does).
                None => {
                    sleep.release();
                    return Err(Some(Outcome::Reset));
                }
            }
        } else {
            None
        };
        if let Err(e) = crate::arch::x86_64::wake::reset_vcpu(&self.fd, entry) {
            sleep.release();
            return Err(Some(Outcome::Host(format!("vcpu{}: S3 resume: {e}", self.index))));
        }
        if sleep.resumed() {
            Ok(())
        } else {
            Err(None)
        }
    }

    /// What a device's event means for this vCPU.
    fn on_event(&mut self, ev: VmEvent) -> Next {
        if ev == VmEvent::Suspend {
            let _ = self.tx.send(VmMessage::Suspended);
            return Next::Continue;
        }
        Next::Stop(event_outcome(ev))
    }

    /// Parks for a pause: a KVM_RUN with `immediate_exit` set completes the
    /// I/O of the last exit (an IN's value into the registers) without
    /// running the guest, the coalesced ring is drained into the devices,
    /// then the state is saved and the thread waits.
    fn park(&mut self) {
        let _ = run_without_entering(&mut self.fd);
        self.drain_coalesced();
        let shared = self.shared.clone();
        let (fd, index) = (&self.fd, self.index);
        shared.pause.park(
            index,
            fd,
            |msrs, caps| crate::state::vcpu::save(fd, index, msrs, caps).map_err(|e| e.to_string()),
            &shared.stop,
        );
        self.count("paused");
    }

    /// Writes every queued coalesced entry to the bus, in ring order. Runs
    /// after each KVM_RUN return before the exit is handled, and at the end.
    fn drain_coalesced(&mut self) {
        if self.shared.zones.is_empty() || self.draining {
            return;
        }
        self.draining = true;
        let shared = self.shared.clone();
        let _ring = shared.ring_lock.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(Some(entry)) = self.fd.coalesced_mmio_read() {
            // SAFETY: `pio` shares its storage with padding; KVM writes it for every entry.
            let pio = unsafe { entry.__bindgen_anon_1.pio } != 0;
            let space = if pio {
                AddressSpace::Pio
            } else {
                AddressSpace::Mmio
            };
            let len = (entry.len as usize).min(entry.data.len());
            shared.bus.write(space, entry.phys_addr, &entry.data[..len]);
            if let Some(z) = shared
                .zones
                .iter()
                .find(|z| z.space == space && z.base <= entry.phys_addr && entry.phys_addr < z.base + z.len)
            {
                z.entries.fetch_add(1, Ordering::Relaxed);
            }
            *self.counts.entry("coalesced").or_insert(0) += 1;
        }
        self.draining = false;
    }

    fn run_once(&mut self) -> Next {
        let exit = match crate::outcome::injected_exit(self.index) {
            Some(injected) => Ok(Exit::from(injected)),
            None => self.fd.run().map(Exit::from),
        };
        // The ring first: every queued write happened before this exit.
        self.drain_coalesced();
        let exit = match exit {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                self.count("interrupted");
                return Next::Continue;
            }
            Err(e) if e.errno() == libc::EFAULT => return Next::Stop(ram_loss::efault_outcome(self.index)),
            Err(e) => return Next::Stop(Outcome::Host(format!("vcpu{}: KVM_RUN failed: {e}", self.index))),
        };
        let bus = self.shared.bus.clone();
        match exit {
            Exit::Io => {
                self.count("io");
                return self.handle_io();
            }
            Exit::MmioRead { addr, len } => {
                self.count("mmio-read");
                if let Some(o) = ram_loss::exit_outcome(self.index, addr, false) {
                    return Next::Stop(o);
                }
                let mut buf = [0u8; 8];
                let len = len.min(8);
                bus.read(AddressSpace::Mmio, addr, &mut buf[..len]);
                let run = self.fd.get_kvm_run();
                // SAFETY: the exit is KVM_EXIT_MMIO, so `mmio` is the live union
                // member; KVM copies `data[..len]` into the guest on the next KVM_RUN.
                unsafe { run.__bindgen_anon_1.mmio.data[..len].copy_from_slice(&buf[..len]) };
            }
            Exit::MmioWrite { addr, data, len } => {
                self.count("mmio-write");
                if let Some(o) = ram_loss::exit_outcome(self.index, addr, true) {
                    return Next::Stop(o);
                }
                let (_, ev) = bus.write(AddressSpace::Mmio, addr, &data[..len.min(8)]);
                if let Some(ev) = ev {
                    return self.on_event(ev);
                }
            }
            Exit::IoapicEoi(vector) => {
                self.count("ioapic-eoi");
                if let Some(io) = &self.shared.ioapic {
                    io.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .end_of_interrupt(vector);
                }
            }
            Exit::Hlt => {
                // With the in-kernel irqchip KVM handles HLT itself; count it.
                self.count("hlt");
            }
            Exit::Shutdown => {
                self.count("shutdown");
                let detail = self.state_summary();
                return Next::Stop(self.fault(FaultKind::TripleFault, detail));
            }
            Exit::SystemEvent(kind, data) => {
                self.count("system-event");
                return Next::Stop(match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => Outcome::PowerOff,
                    KVM_SYSTEM_EVENT_RESET => Outcome::Reset,
                    KVM_SYSTEM_EVENT_CRASH => {
                        self.fault(FaultKind::GuestCrash, format!("system event data {data:x?}"))
                    }
                    other => self.fault(
                        FaultKind::UnhandledExit,
                        format!("KVM_EXIT_SYSTEM_EVENT of type {other}, data {data:x?}"),
                    ),
                });
            }
            Exit::InternalError => {
                self.count("internal-error");
                let detail = self.internal_error_report();
                return Next::Stop(self.fault(FaultKind::InternalError, detail));
            }
            Exit::FailEntry(reason, cpu) => {
                self.count("fail-entry");
                let detail = format!(
                    "hardware entry failure reason {reason:#x} on host cpu {cpu}\n{}",
                    self.register_dump()
                );
                return Next::Stop(self.fault(FaultKind::FailEntry, detail));
            }
            Exit::Unknown(injected) => {
                self.count("unknown");
                // SAFETY: reading a plain-data union member of this vCPU's own
                // kvm_run after a KVM_EXIT_UNKNOWN exit, which is the member KVM filled.
                let hw = injected.unwrap_or_else(|| unsafe {
                    self.fd.get_kvm_run().__bindgen_anon_1.hw.hardware_exit_reason
                });
                return Next::Stop(self.fault(
                    FaultKind::UnhandledExit,
                    format!("KVM_EXIT_UNKNOWN, hardware exit reason {hw:#x}"),
                ));
            }
            Exit::Debug(arch) => {
                self.count("debug");
                if let Some(d) = &self.shared.debug {
                    d.debug_exit(&self.shared.pause, self.index, arch);
                }
            }
            Exit::Intr => self.count("intr"),
            Exit::Other(name) => {
                self.count("other");
                return Next::Stop(
                    self.fault(FaultKind::UnhandledExit, format!("exit {name} is not handled")),
                );
            }
        }
        Next::Continue
    }

    /// Port I/O, including string I/O: `count` items of `size` bytes, each
    /// sent to the bus in order.
    fn handle_io(&mut self) -> Next {
        let bus = self.shared.bus.clone();
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_IO, so `io` is the union member
        // KVM filled in.
        let io = unsafe { run.__bindgen_anon_1.io };
        let (size, count, port) = (usize::from(io.size), io.count as usize, u64::from(io.port));
        let len = size * count;
        if !(1..=4).contains(&size) || len == 0 || len > 4096 {
            return Next::Continue;
        }
        let base = run as *mut kvm_run as *mut u8;
        // SAFETY: KVM places the I/O data at `data_offset` inside this
        // vCPU's kvm_run mapping (one page for PIO, within the mmap size from
        // KVM_GET_VCPU_MMAP_SIZE); `len` is at most one page and is what KVM
        // reserved for this exit. No other reference to that area is alive.
        let data = unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
        let input = u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_IN;
        for item in data.chunks_mut(size) {
            if input {
                bus.read(AddressSpace::Pio, port, item);
            } else {
                let (_, ev) = bus.write(AddressSpace::Pio, port, item);
                if let Some(ev) = ev {
                    return self.on_event(ev);
                }
            }
        }
        Next::Continue
    }

    fn fault(&self, kind: FaultKind, detail: String) -> Outcome {
        Outcome::Fault {
            vcpu: self.index,
            kind,
            detail,
        }
    }

    fn internal_error_report(&mut self) -> String {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is
        // the union member KVM filled in.
        let ie = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
        let n = (ie.ndata as usize).min(ie.data.len());
        let what = match ie.suberror {
            1 => "emulation failure",
            2 => "simultaneous exceptions",
            3 => "delivery event",
            4 => "unexpected exit reason",
            _ => "unknown",
        };
        let mut s = format!("suberror {} ({what})", ie.suberror);
        let regs = self.fd.get_regs().ok();
        if let Some(r) = &regs {
            let _ = write!(s, ", rip {:#x}", r.rip);
        }
        // Emulation failures carry the instruction bytes when KVM has them
        // (flags bit 0: data[1] = length, data[2..] = bytes); otherwise read
        // them from guest memory through the vCPU's page tables.
        let mut insn = Vec::new();
        if ie.suberror == 1 && n >= 2 && ie.data[0] & 1 == 1 {
            // struct { u64 flags; u8 insn_size; u8 insn_bytes[15]; }: byte 0 of
            // data[1] is the length, the bytes follow it.
            insn = emulation_insn_bytes(&ie.data[1..n.max(3).min(ie.data.len())]);
        } else if let Some(r) = &regs {
            insn = self.read_guest_code(r.rip);
        }
        if !insn.is_empty() {
            let bytes: Vec<String> = insn.iter().map(|b| format!("{b:02x}")).collect();
            let _ = write!(s, ", instruction bytes {}", bytes.join(" "));
        }
        let words: Vec<String> = ie.data[..n].iter().map(|d| format!("{d:#x}")).collect();
        let _ = write!(s, ", data [{}]\n{}", words.join(" "), self.register_dump());
        s
    }

    fn read_guest_code(&self, rip: u64) -> Vec<u8> {
        let Ok(t) = self.fd.translate_gva(rip) else {
            return Vec::new();
        };
        if t.valid == 0 {
            return Vec::new();
        }
        let mut buf = [0u8; 15];
        let mut out = Vec::new();
        for (i, b) in buf.iter_mut().enumerate() {
            if self
                .shared
                .mem
                .read_obj::<u8>(GuestAddress(t.physical_address + i as u64))
                .map(|v| *b = v)
                .is_err()
            {
                break;
            }
            out.push(*b);
        }
        out
    }

    fn state_summary(&self) -> String {
        match self.fd.get_regs() {
            Ok(r) => format!("rip {:#x}\n{}", r.rip, self.register_dump()),
            Err(_) => self.register_dump(),
        }
    }

    fn register_dump(&self) -> String {
        let mut s = String::new();
        if let Ok(r) = self.fd.get_regs() {
            let _ = write!(
                s,
                "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} rsp={:#018x} rbp={:#018x}\n  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}\n  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\n  rip={:#018x} rflags={:#010x}",
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags
            );
        }
        if let Ok(sr) = self.fd.get_sregs() {
            let _ = write!(
                s,
                "\n  cs={:#06x} ss={:#06x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                sr.cs.selector, sr.ss.selector, sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer
            );
        }
        s
    }
}

/// An exit copied out of kvm_run, so the vCPU fd is free (to drain the
/// coalesced ring) before the exit is handled.
enum Exit {
    /// Port I/O: decoded from kvm_run by `handle_io`.
    Io,
    MmioRead {
        addr: u64,
        len: usize,
    },
    MmioWrite {
        addr: u64,
        data: [u8; 8],
        len: usize,
    },
    IoapicEoi(u8),
    Hlt,
    Shutdown,
    SystemEvent(u32, Vec<u64>),
    InternalError,
    FailEntry(u64, u32),
    /// KVM_EXIT_UNKNOWN; its hardware exit reason is read from kvm_run,
    /// unless the exit was injected with one (`outcome::injected_exit`).
    Unknown(Option<u64>),
    Debug(kvm_bindings::kvm_debug_exit_arch),
    Intr,
    Other(String),
}

impl From<VcpuExit<'_>> for Exit {
    fn from(e: VcpuExit<'_>) -> Self {
        match e {
            VcpuExit::IoIn(..) | VcpuExit::IoOut(..) => Exit::Io,
            VcpuExit::MmioRead(addr, data) => Exit::MmioRead {
                addr,
                len: data.len(),
            },
            VcpuExit::MmioWrite(addr, data) => {
                let mut d = [0u8; 8];
                let len = data.len().min(8);
                d[..len].copy_from_slice(&data[..len]);
                Exit::MmioWrite { addr, data: d, len }
            }
            VcpuExit::IoapicEoi(v) => Exit::IoapicEoi(v),
            VcpuExit::Hlt => Exit::Hlt,
            VcpuExit::Shutdown => Exit::Shutdown,
            VcpuExit::SystemEvent(kind, data) => Exit::SystemEvent(kind, data.to_vec()),
            VcpuExit::InternalError => Exit::InternalError,
            VcpuExit::FailEntry(reason, cpu) => Exit::FailEntry(reason, cpu),
            VcpuExit::Unknown => Exit::Unknown(None),
            VcpuExit::Debug(arch) => Exit::Debug(arch),
            VcpuExit::IrqWindowOpen | VcpuExit::Intr => Exit::Intr,
            other => Exit::Other(format!("{other:?}")),
        }
    }
}

impl From<crate::outcome::InjectedExit> for Exit {
    fn from(e: crate::outcome::InjectedExit) -> Self {
        use crate::outcome::InjectedExit as I;
        match e {
            I::FailEntry { reason, cpu } => Exit::FailEntry(reason, cpu),
            I::Unknown { hardware_reason } => Exit::Unknown(Some(hardware_reason)),
            I::SystemEvent { kind } => Exit::SystemEvent(kind, Vec::new()),
        }
    }
}

/// Instruction bytes from the words after `flags` in an emulation-failure
/// exit: byte 0 is the length (at most 15), bytes 1.. the instruction.
fn emulation_insn_bytes(words: &[u64]) -> Vec<u8> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let Some((&len, rest)) = bytes.split_first() else {
        return Vec::new();
    };
    rest[..usize::from(len).min(15).min(rest.len())].to_vec()
}

fn event_outcome(ev: VmEvent) -> Outcome {
    match ev {
        VmEvent::DebugExit(s) => Outcome::DebugExit(s),
        VmEvent::Reset => Outcome::Reset,
        VmEvent::PowerOff => Outcome::PowerOff,
        // Handled by `on_event`; never an outcome.
        VmEvent::Suspend => Outcome::Host("S3 suspend taken as an outcome".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_failure_bytes() {
        // lock cmpxchg16b (%rdi): f0 48 0f c7 0f, as KVM lays it out.
        let mut b = [0u8; 16];
        b[0] = 5;
        b[1..6].copy_from_slice(&[0xf0, 0x48, 0x0f, 0xc7, 0x0f]);
        let w = [
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..].try_into().unwrap()),
        ];
        assert_eq!(emulation_insn_bytes(&w), vec![0xf0, 0x48, 0x0f, 0xc7, 0x0f]);
        assert!(emulation_insn_bytes(&[]).is_empty());
        assert_eq!(emulation_insn_bytes(&[0xff]).len(), 7);
    }
}
