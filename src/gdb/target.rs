//! The gdbstub target: the stopped guest as gdb sees it. Every KVM call is
//! made by the parked vCPU's own thread through
//! [`crate::pause::Pause::run_on`]; guest memory is read and written directly.

use super::translate::{translate, Mmu, Translation};
use super::Stops;
use crate::vcpu::VmShared;
use gdbstub::common::{Signal, Tid};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::MonitorCmdOps;
use gdbstub::target::{Target, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use kvm_bindings::{
    kvm_debug_exit_arch, kvm_fpu, kvm_guest_debug, kvm_regs, kvm_sregs, KVM_GUESTDBG_BLOCKIRQ,
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_BP, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
    KVM_GUESTDBG_USE_SW_BP,
};
use kvm_ioctls::VcpuFd;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};

/// How long a parked vCPU may take to run one job.
const JOB_LIMIT: Duration = Duration::from_secs(2);
/// The x86 breakpoint instruction.
const INT3: u8 = 0xcc;

/// What the target could not do.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The vCPU is not stopped (it ended, or did not park in time).
    #[error("vcpu{0} is not stopped")]
    NotStopped(u32),
    /// A KVM call failed.
    #[error("vcpu{0}: {1}")]
    Kvm(u32, String),
}

/// Not fatal to the session: gdb shows an error (`E..`) and goes on.
impl From<TargetError> for gdbstub::target::TargetError<TargetError> {
    fn from(e: TargetError) -> Self {
        log::warn!("gdb: {e}");
        gdbstub::target::TargetError::Errno(match e {
            TargetError::NotStopped(_) => libc::EAGAIN as u8,
            TargetError::Kvm(..) => libc::EIO as u8,
        })
    }
}

/// gdb's thread id of vCPU `index` (gdb numbers threads from 1).
pub fn tid(index: u32) -> Tid {
    Tid::new(index as usize + 1).unwrap_or(Tid::MIN)
}

fn index(tid: Tid) -> u32 {
    (tid.get() - 1) as u32
}

/// A software breakpoint: where the int3 is and the byte it replaced.
#[derive(Clone, Copy, Debug)]
struct SwBp {
    gpa: u64,
    orig: u8,
}

/// What a debug register slot watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HwKind {
    Exec,
    Watch(WatchKind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HwSlot {
    addr: u64,
    len: u64,
    kind: HwKind,
}

/// DR7 for the slots (Intel SDM vol. 3, 18.2.4): global enable, R/W and
/// LEN per slot; bits 9 and 10 as QEMU sets them (GE, reserved 1).
fn dr7(slots: &[Option<HwSlot>; 4]) -> u64 {
    let mut d = 0x600;
    for (n, s) in slots.iter().enumerate() {
        let Some(s) = s else { continue };
        let rw = match s.kind {
            HwKind::Exec => 0,
            HwKind::Watch(WatchKind::Write) => 1,
            HwKind::Watch(_) => 3,
        };
        let len = match (s.kind, s.len) {
            (HwKind::Exec, _) | (_, 1) => 0,
            (_, 2) => 1,
            (_, 8) => 2,
            _ => 3,
        };
        d |= (2 << (n * 2)) | (rw << (16 + n * 4)) | (len << (18 + n * 4));
    }
    d
}

/// The guest as gdb sees it while a session lasts.
pub struct GuestTarget {
    pub(super) shared: Arc<VmShared>,
    stops: Arc<Stops>,
    vcpus: usize,
    sw: BTreeMap<u64, SwBp>,
    hw: [Option<HwSlot>; 4],
    /// vCPUs to single-step at the next resume.
    step: BTreeSet<u32>,
    /// vCPUs stopped by an int3 of the guest's own (not a breakpoint of
    /// gdb's): the #BP is injected into the guest when they resume.
    guest_bp: BTreeSet<u32>,
    /// vCPUs gdb named in this resume (continue or step).
    resumed: BTreeSet<u32>,
    /// gdb's scheduler locking: the vCPUs it did not name stay stopped.
    lock_others: bool,
    /// Let interrupts in while stepping (`monitor step-irqs on`).
    pub(super) step_irqs: bool,
    /// The host refused KVM_GUESTDBG_BLOCKIRQ once: don't ask again.
    no_blockirq: bool,
    /// The vCPU gdb last read registers of (`monitor` commands' default).
    pub(super) current: u32,
}

impl GuestTarget {
    /// A target over the VM's vCPUs (stopped by the caller).
    pub fn new(shared: Arc<VmShared>, stops: Arc<Stops>, vcpus: usize) -> GuestTarget {
        GuestTarget {
            shared,
            stops,
            vcpus,
            sw: BTreeMap::new(),
            hw: [None; 4],
            step: BTreeSet::new(),
            guest_bp: BTreeSet::new(),
            resumed: BTreeSet::new(),
            lock_others: false,
            step_irqs: false,
            no_blockirq: false,
            current: 0,
        }
    }

    pub(super) fn stops(&self) -> &Stops {
        &self.stops
    }

    /// Runs `job` on parked vCPU `index`.
    pub(super) fn on_vcpu<R: Send + 'static>(
        &self,
        index: u32,
        job: impl FnOnce(&VcpuFd) -> Result<R, kvm_ioctls::Error> + Send + 'static,
    ) -> Result<R, TargetError> {
        self.shared
            .pause
            .run_on(index, job, JOB_LIMIT)
            .ok_or(TargetError::NotStopped(index))?
            .map_err(|e| TargetError::Kvm(index, e.to_string()))
    }

    pub(super) fn sregs(&self, index: u32) -> Result<kvm_sregs, TargetError> {
        self.on_vcpu(index, |fd| fd.get_sregs())
    }

    pub(super) fn mmu(&self, index: u32) -> Result<Mmu, TargetError> {
        let s = self.sregs(index)?;
        Ok(Mmu {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        })
    }

    pub(super) fn translate(
        &self,
        mmu: &Mmu,
        gva: u64,
    ) -> Result<Translation, super::translate::TranslateError> {
        let mem = &self.shared.mem;
        translate(mmu, gva, &|a, size| {
            let mut b = [0u8; 8];
            mem.read_slice(&mut b[..size], GuestAddress(a)).ok()?;
            Some(u64::from_le_bytes(b))
        })
    }

    /// Reads guest-virtual memory as vCPU `index` sees it, int3s hidden.
    /// Returns the bytes read (short at the first unmapped page).
    fn read_virt(&self, index: u32, start: u64, data: &mut [u8]) -> Result<usize, TargetError> {
        let mmu = self.mmu(index)?;
        let mut done = 0;
        while done < data.len() {
            let Ok(t) = self.translate(&mmu, start.wrapping_add(done as u64)) else {
                break;
            };
            let n = (t.left_in_page as usize).min(data.len() - done);
            let chunk = &mut data[done..done + n];
            if self.shared.mem.read_slice(chunk, GuestAddress(t.gpa)).is_err() {
                break;
            }
            self.hide_int3s(t.gpa, chunk);
            done += n;
        }
        Ok(done)
    }

    /// Puts the original bytes over the int3s inside `[gpa, gpa + len)`.
    pub(super) fn hide_int3s(&self, gpa: u64, chunk: &mut [u8]) {
        for bp in self.sw.values() {
            if bp.gpa >= gpa && bp.gpa < gpa + chunk.len() as u64 {
                chunk[(bp.gpa - gpa) as usize] = bp.orig;
            }
        }
    }

    fn write_virt(&mut self, index: u32, start: u64, data: &[u8]) -> Result<bool, TargetError> {
        let mmu = self.mmu(index)?;
        let mut done = 0;
        while done < data.len() {
            let Ok(t) = self.translate(&mmu, start.wrapping_add(done as u64)) else {
                return Ok(false);
            };
            let n = (t.left_in_page as usize).min(data.len() - done);
            if !self.write_phys(t.gpa, &data[done..done + n]) {
                return Ok(false);
            }
            done += n;
        }
        Ok(true)
    }

    /// Writes guest-physical memory; a byte under one of our int3s becomes
    /// the breakpoint's original byte, and the int3 stays.
    pub(super) fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        let mut bytes = data.to_vec();
        for bp in self.sw.values_mut() {
            if bp.gpa >= gpa && bp.gpa < gpa + data.len() as u64 {
                let i = (bp.gpa - gpa) as usize;
                bp.orig = bytes[i];
                bytes[i] = INT3;
            }
        }
        self.shared.mem.write_slice(&bytes, GuestAddress(gpa)).is_ok()
    }

    /// Stops every vCPU (gdb's Ctrl-C).
    pub(super) fn interrupt(&mut self) {
        super::stop_all(&self.shared, &self.stops, self.vcpus);
        self.current = 0;
    }

    /// Waits (bounded) until every vCPU parked after a debug exit.
    pub(super) fn wait_stopped(&self) {
        super::wait_all_parked(&self.shared, self.vcpus);
    }

    /// The run ended: its exit code for gdb's `W` packet.
    pub(super) fn vm_ended(&self) -> Option<u8> {
        if !self.shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.stops.exit_code.load(Ordering::SeqCst).max(0) as u8)
    }

    /// What gdb is told about vCPU `index`'s debug exit.
    pub(super) fn stop_reason(
        &mut self,
        index: u32,
        arch: kvm_debug_exit_arch,
    ) -> MultiThreadStopReason<u64> {
        self.current = index;
        let tid = tid(index);
        let trap = MultiThreadStopReason::SignalWithThread {
            tid,
            signal: Signal::SIGTRAP,
        };
        match arch.exception {
            // #BP: one of ours, or the guest's own int3 (gdb sees SIGTRAP;
            // the guest gets its #BP when the vCPU resumes).
            3 if self.sw.contains_key(&arch.pc) => MultiThreadStopReason::SwBreak(tid),
            3 => {
                self.guest_bp.insert(index);
                trap
            }
            // #DB: DR6 bits 0..3 name the slot that hit; BS (bit 14) a single step.
            1 => {
                let slot = (0..4).find(|n| arch.dr6 & (1 << n) != 0);
                match slot.and_then(|n| self.hw[n]) {
                    Some(HwSlot {
                        kind: HwKind::Exec, ..
                    }) => MultiThreadStopReason::HwBreak(tid),
                    Some(HwSlot {
                        kind: HwKind::Watch(kind),
                        addr,
                        ..
                    }) => MultiThreadStopReason::Watch { tid, kind, addr },
                    None => trap,
                }
            }
            _ => trap,
        }
    }

    /// Ends the session's effect on the guest: every int3 replaced by its
    /// byte, debug registers and single-step off on every vCPU. The vCPUs
    /// are stopped; the caller lets them go.
    pub fn remove_all(&mut self) {
        for (_, bp) in std::mem::take(&mut self.sw) {
            let _ = self.shared.mem.write_slice(&[bp.orig], GuestAddress(bp.gpa));
        }
        self.hw = [None; 4];
        self.step.clear();
        for i in 0..self.vcpus as u32 {
            // Only a guest's own pending #BP survives the session.
            let d = self.guest_debug(i);
            let _ = self.on_vcpu(i, move |fd| fd.set_guest_debug(&d));
        }
        self.guest_bp.clear();
    }

    /// KVM_SET_GUEST_DEBUG for vCPU `index` from the breakpoints and the
    /// step request.
    fn guest_debug(&self, index: u32) -> kvm_guest_debug {
        let mut d = kvm_guest_debug::default();
        let step = self.step.contains(&index);
        if !self.sw.is_empty() {
            d.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
        }
        if self.hw.iter().any(Option::is_some) {
            d.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
            for (n, s) in self.hw.iter().enumerate() {
                d.arch.debugreg[n] = s.map_or(0, |s| s.addr);
            }
            d.arch.debugreg[7] = dr7(&self.hw);
        }
        if self.guest_bp.contains(&index) {
            d.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_BP;
        }
        if step {
            d.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
            if !self.step_irqs && !self.no_blockirq {
                d.control |= KVM_GUESTDBG_BLOCKIRQ;
            }
        }
        d
    }

    fn add_hw(&mut self, slot: HwSlot) -> bool {
        if self.hw.contains(&Some(slot)) {
            return true;
        }
        match self.hw.iter_mut().find(|s| s.is_none()) {
            Some(free) => {
                *free = Some(slot);
                true
            }
            None => false,
        }
    }

    fn remove_hw(&mut self, slot: HwSlot) -> bool {
        match self.hw.iter_mut().find(|s| **s == Some(slot)) {
            Some(s) => {
                *s = None;
                true
            }
            None => false,
        }
    }
}

impl Target for GuestTarget {
    type Arch = gdbstub_arch::x86::X86_64_SSE;
    type Error = TargetError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

fn fpu_to_gdb(f: &kvm_fpu, r: &mut X86_64CoreRegs) {
    for (st, fpr) in r.st.iter_mut().zip(f.fpr.iter()) {
        st.copy_from_slice(&fpr[..10]);
    }
    r.fpu.fctrl = u32::from(f.fcw);
    r.fpu.fstat = u32::from(f.fsw);
    // The abridged tag (one bit per register, 1 = in use) as the full tag
    // word: in use shows as valid (00), free as empty (11).
    r.fpu.ftag = (0..8).fold(0, |t, i| {
        if f.ftwx & (1 << i) != 0 {
            t
        } else {
            t | (3 << (2 * i))
        }
    });
    r.fpu.fioff = f.last_ip as u32;
    r.fpu.fiseg = (f.last_ip >> 32) as u32;
    r.fpu.fooff = f.last_dp as u32;
    r.fpu.foseg = (f.last_dp >> 32) as u32;
    r.fpu.fop = u32::from(f.last_opcode);
    for (x, k) in r.xmm.iter_mut().zip(f.xmm.iter()) {
        *x = u128::from_le_bytes(*k);
    }
    r.mxcsr = f.mxcsr;
}

fn gdb_to_fpu(r: &X86_64CoreRegs, f: &mut kvm_fpu) {
    for (st, fpr) in r.st.iter().zip(f.fpr.iter_mut()) {
        fpr[..10].copy_from_slice(st);
    }
    f.fcw = r.fpu.fctrl as u16;
    f.fsw = r.fpu.fstat as u16;
    f.ftwx = (0..8).fold(0, |t, i| {
        if (r.fpu.ftag >> (2 * i)) & 3 == 3 {
            t
        } else {
            t | (1 << i)
        }
    });
    f.last_ip = u64::from(r.fpu.fioff) | (u64::from(r.fpu.fiseg) << 32);
    f.last_dp = u64::from(r.fpu.fooff) | (u64::from(r.fpu.foseg) << 32);
    f.last_opcode = r.fpu.fop as u16;
    for (x, k) in r.xmm.iter().zip(f.xmm.iter_mut()) {
        *k = x.to_le_bytes();
    }
    f.mxcsr = r.mxcsr;
}

fn gprs(r: &kvm_regs) -> [u64; 16] {
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
        r.r14, r.r15,
    ]
}

fn set_gprs(r: &mut kvm_regs, g: &[u64; 16]) {
    [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
        r.r14, r.r15,
    ] = *g;
}

impl MultiThreadBase for GuestTarget {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        let i = index(tid);
        self.current = i;
        let (r, s, f) = self.on_vcpu(i, |fd| Ok((fd.get_regs()?, fd.get_sregs()?, fd.get_fpu().ok())))?;
        regs.regs = gprs(&r);
        regs.rip = r.rip;
        regs.eflags = r.rflags as u32;
        regs.segments.cs = u32::from(s.cs.selector);
        regs.segments.ss = u32::from(s.ss.selector);
        regs.segments.ds = u32::from(s.ds.selector);
        regs.segments.es = u32::from(s.es.selector);
        regs.segments.fs = u32::from(s.fs.selector);
        regs.segments.gs = u32::from(s.gs.selector);
        if let Some(f) = f {
            fpu_to_gdb(&f, regs);
        }
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs, tid: Tid) -> TargetResult<(), Self> {
        let i = index(tid);
        let new = regs.clone();
        self.on_vcpu(i, move |fd| {
            let mut r = fd.get_regs()?;
            set_gprs(&mut r, &new.regs);
            r.rip = new.rip;
            r.rflags = (r.rflags & !0xffff_ffff) | u64::from(new.eflags);
            fd.set_regs(&r)?;
            // Selectors only: the hidden parts (base, limit, attributes) stay.
            let mut s = fd.get_sregs()?;
            let old = s;
            s.cs.selector = new.segments.cs as u16;
            s.ss.selector = new.segments.ss as u16;
            s.ds.selector = new.segments.ds as u16;
            s.es.selector = new.segments.es as u16;
            s.fs.selector = new.segments.fs as u16;
            s.gs.selector = new.segments.gs as u16;
            if [s.cs, s.ss, s.ds, s.es, s.fs, s.gs].map(|g| g.selector)
                != [old.cs, old.ss, old.ds, old.es, old.fs, old.gs].map(|g| g.selector)
            {
                fd.set_sregs(&s)?;
            }
            if let Ok(mut f) = fd.get_fpu() {
                gdb_to_fpu(&new, &mut f);
                fd.set_fpu(&f)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        // Nothing readable at `start`: EFAULT, as QEMU answers (an empty
        // reply would read as "not supported" to gdb).
        match self.read_virt(index(tid), start, data)? {
            0 if !data.is_empty() => Err(gdbstub::target::TargetError::Errno(14)),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        match self.write_virt(index(tid), start, data)? {
            true => Ok(()),
            false => Err(gdbstub::target::TargetError::Errno(14)),
        }
    }

    fn list_active_threads(&mut self, active: &mut dyn FnMut(Tid)) -> Result<(), Self::Error> {
        for i in 0..self.vcpus as u32 {
            active(tid(i));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for GuestTarget {
    fn resume(&mut self) -> Result<(), Self::Error> {
        for i in 0..self.vcpus as u32 {
            let d = self.guest_debug(i);
            let blockirq = d.control & KVM_GUESTDBG_BLOCKIRQ != 0;
            let refused = self.on_vcpu(i, move |fd| match fd.set_guest_debug(&d) {
                // Older hosts lack BLOCKIRQ: step with interrupts then.
                Err(e) if blockirq && e.errno() == libc::EINVAL => {
                    let mut d = d;
                    d.control &= !KVM_GUESTDBG_BLOCKIRQ;
                    fd.set_guest_debug(&d).map(|()| true)
                }
                r => r.map(|()| false),
            });
            match refused {
                Ok(true) => {
                    log::info!("gdb: the host refuses KVM_GUESTDBG_BLOCKIRQ; interrupts may be stepped into");
                    self.no_blockirq = true;
                }
                Ok(false) => {}
                // A vCPU that ended (or never parked) runs on as it is.
                Err(e) => log::warn!("gdb: {e}"),
            }
        }
        let held = if self.lock_others {
            (0..self.vcpus as u32)
                .filter(|i| !self.resumed.contains(i))
                .collect()
        } else {
            BTreeSet::new()
        };
        self.step.clear();
        self.guest_bp.retain(|i| held.contains(i));
        self.stops.clear();
        self.shared.pause.release_holding(held);
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.step.clear();
        self.resumed.clear();
        self.lock_others = false;
        Ok(())
    }

    fn set_resume_action_continue(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resumed.insert(index(tid));
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSingleStep for GuestTarget {
    fn set_resume_action_step(&mut self, tid: Tid, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.step.insert(index(tid));
        self.resumed.insert(index(tid));
        Ok(())
    }
}

impl MultiThreadSchedulerLocking for GuestTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        self.lock_others = true;
        Ok(())
    }
}

impl Breakpoints for GuestTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for GuestTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.sw.contains_key(&addr) {
            return Ok(true);
        }
        let mmu = self.mmu(self.current)?;
        let Ok(t) = self.translate(&mmu, addr) else {
            return Ok(false);
        };
        let Ok(orig) = self.shared.mem.read_obj::<u8>(GuestAddress(t.gpa)) else {
            return Ok(false);
        };
        if self.shared.mem.write_obj(INT3, GuestAddress(t.gpa)).is_err() {
            return Ok(false);
        }
        self.sw.insert(addr, SwBp { gpa: t.gpa, orig });
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(bp) = self.sw.remove(&addr) else {
            return Ok(false);
        };
        Ok(self.shared.mem.write_obj(bp.orig, GuestAddress(bp.gpa)).is_ok())
    }
}

impl HwBreakpoint for GuestTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_hw(HwSlot {
            addr,
            len: 1,
            kind: HwKind::Exec,
        }))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_hw(HwSlot {
            addr,
            len: 1,
            kind: HwKind::Exec,
        }))
    }
}

impl HwWatchpoint for GuestTarget {
    fn add_hw_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        // The debug registers watch 1, 2, 4 or 8 aligned bytes.
        if !matches!(len, 1 | 2 | 4 | 8) || !addr.is_multiple_of(len) {
            return Ok(false);
        }
        Ok(self.add_hw(HwSlot {
            addr,
            len,
            kind: HwKind::Watch(kind),
        }))
    }

    fn remove_hw_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        Ok(self.remove_hw(HwSlot {
            addr,
            len,
            kind: HwKind::Watch(kind),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dr7_encodes_slots_like_the_sdm() {
        let mut s = [None; 4];
        assert_eq!(dr7(&s), 0x600);
        s[0] = Some(HwSlot {
            addr: 0x1000,
            len: 1,
            kind: HwKind::Exec,
        });
        assert_eq!(dr7(&s), 0x602);
        s[1] = Some(HwSlot {
            addr: 0x2000,
            len: 4,
            kind: HwKind::Watch(WatchKind::Write),
        });
        // G1 (bit 3), R/W1 = 01 (bits 20-21), LEN1 = 11 (bits 22-23).
        assert_eq!(dr7(&s), 0x602 | 0x8 | (1 << 20) | (3 << 22));
        s[3] = Some(HwSlot {
            addr: 0x3000,
            len: 8,
            kind: HwKind::Watch(WatchKind::ReadWrite),
        });
        assert_eq!(dr7(&s) >> 28, 0b1011);
        assert_eq!((dr7(&s) >> 6) & 3, 2);
    }

    #[test]
    fn fpu_round_trips_through_gdb_registers() {
        let mut f = kvm_fpu {
            fcw: 0x37f,
            fsw: 0x3800,
            ftwx: 0b1000_0001,
            last_opcode: 0x5d9,
            last_ip: 0x1_0000_1234,
            last_dp: 0x5678,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        f.fpr[7][..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        f.xmm[15] = [0xab; 16];
        let mut r = X86_64CoreRegs::default();
        fpu_to_gdb(&f, &mut r);
        assert_eq!(r.fpu.ftag, 0x3ffc);
        assert_eq!(r.st[7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(r.fpu.fiseg, 1);
        let mut back = kvm_fpu::default();
        gdb_to_fpu(&r, &mut back);
        assert_eq!(
            (back.fcw, back.fsw, back.ftwx, back.last_ip),
            (f.fcw, f.fsw, f.ftwx, f.last_ip)
        );
        assert_eq!((back.xmm, back.mxcsr, back.fpr), (f.xmm, f.mxcsr, f.fpr));
    }

    #[test]
    fn thread_ids_start_at_one() {
        assert_eq!(tid(0).get(), 1);
        assert_eq!(index(tid(3)), 3);
    }
}
