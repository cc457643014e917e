//! ACPI S3 (suspend to RAM): the state the PM1a blocks, the RTC alarm, the
//! vCPU threads and the run loop share.
//!
//! 1. The guest writes `SLP_TYP = 1 | SLP_EN` to PM1a_CNT:
//!    [`AcpiPmCnt`](super::acpi_pm::AcpiPmCnt) calls [`SleepControl::suspend`]
//!    and returns [`VmEvent::Suspend`](crate::bus::VmEvent::Suspend); the
//!    vCPU tells the run loop, which kicks every vCPU out of `KVM_RUN`.
//! 2. Each vCPU thread sees the new suspend epoch before its next `KVM_RUN`
//!    and parks in [`SleepControl::park`]: no vCPU runs.
//! 3. A wake event ([`SleepControl::wake`]: the RTC alarm with `AIE` set and
//!    PM1_EN's `RTC_EN`; later a control socket) sets PM1_STS `WAK_STS` (and
//!    the source's status bit) and releases the vCPUs once all are parked.
//! 4. Each vCPU resets itself (the BSP to the FACS waking vector, APs to
//!    wait-for-SIPI: [`crate::arch::x86_64::wake`]) and waits in
//!    [`SleepControl::resumed`] until all have, so no AP is reset after the
//!    BSP has started it again.
//!
//! Stopping the VM ([`SleepControl::release`]) lets parked vCPUs go.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::acpi_pm::{PM1_RTC, PM1_STS_WAK};
use super::rtc::AlarmWake;

#[derive(Debug, Default)]
struct State {
    /// Suspends so far.
    epoch: u64,
    /// The epoch of the last wake; `woken < epoch` means suspended.
    woken: u64,
    /// PM1_EN.RTC_EN: the RTC alarm may wake the VM.
    rtc_wake: bool,
    /// RTC register B's AIE.
    alarm_armed: bool,
    /// PM1_STS bits set by wake events, not yet merged into PM1_STS.
    status: u16,
    /// vCPUs parked in this epoch.
    parked: usize,
    /// vCPUs reset after this epoch's wake.
    reset: usize,
    /// The VM is stopping.
    stop: bool,
}

/// The VM's sleep state (one per VM, only with ACPI).
#[derive(Debug)]
pub struct SleepControl {
    state: Mutex<State>,
    /// `state.epoch`, readable without the lock: every vCPU checks it
    /// before each KVM_RUN. Written only under the lock, in `suspend`.
    epoch: AtomicU64,
    changed: Condvar,
    vcpus: usize,
    facs: u64,
}

impl SleepControl {
    /// For a VM with `vcpus` vCPUs whose FACS is at guest-physical `facs`.
    pub fn new(vcpus: usize, facs: u64) -> SleepControl {
        SleepControl {
            state: Mutex::new(State::default()),
            epoch: AtomicU64::new(0),
            changed: Condvar::new(),
            vcpus,
            facs,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the FACS (and its waking vectors) is.
    pub fn facs_addr(&self) -> u64 {
        self.facs
    }

    /// The number of suspends so far; a vCPU whose last seen epoch differs
    /// must [`park`](Self::park).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether the VM is suspended (entered S3 and not woken since).
    pub fn is_suspended(&self) -> bool {
        let s = self.lock();
        s.woken < s.epoch
    }

    /// Enters S3: a new epoch starts.
    pub fn suspend(&self) {
        let mut s = self.lock();
        s.epoch += 1;
        self.epoch.store(s.epoch, Ordering::SeqCst);
        s.parked = 0;
        s.reset = 0;
    }

    /// Whether something can wake the VM now: the RTC alarm is armed and
    /// enabled as a wake source.
    pub fn can_wake(&self) -> bool {
        let s = self.lock();
        s.rtc_wake && s.alarm_armed
    }

    /// PM1_EN was written: whether `RTC_EN` is set.
    pub fn set_rtc_wake(&self, enabled: bool) {
        self.lock().rtc_wake = enabled;
    }

    /// The PM1_STS bits wake events set, not yet taken.
    pub fn peek_status(&self) -> u16 {
        self.lock().status
    }

    /// Takes the PM1_STS bits wake events set.
    pub fn take_status(&self) -> u16 {
        std::mem::take(&mut self.lock().status)
    }

    /// Wakes a suspended VM, setting PM1_STS `WAK_STS | status`. Returns
    /// whether the VM was suspended. The seam for other wake sources (a
    /// control socket's `wake` command).
    pub fn wake(&self, status: u16) -> bool {
        let mut s = self.lock();
        if s.woken >= s.epoch {
            return false;
        }
        s.woken = s.epoch;
        s.status |= PM1_STS_WAK | status;
        drop(s);
        log::debug!("acpi: woken from S3 (PM1_STS bits {:#06x})", PM1_STS_WAK | status);
        self.changed.notify_all();
        true
    }

    /// Called by a vCPU thread that saw a new epoch: waits until every vCPU
    /// is parked and the VM is woken. Returns the epoch it woke in, or
    /// `None` when the VM is stopping.
    pub fn park(&self) -> Option<u64> {
        let mut s = self.lock();
        s.parked += 1;
        self.changed.notify_all();
        loop {
            if s.stop {
                return None;
            }
            if s.woken == s.epoch && s.parked >= self.vcpus {
                return Some(s.epoch);
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Called by a vCPU thread after it reset itself for the wake: waits
    /// until every vCPU has. Returns `false` when the VM is stopping.
    pub fn resumed(&self) -> bool {
        let mut s = self.lock();
        s.reset += 1;
        self.changed.notify_all();
        loop {
            if s.stop {
                return false;
            }
            if s.reset >= self.vcpus {
                return true;
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The VM is stopping: parked vCPUs return.
    pub fn release(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

impl AlarmWake for SleepControl {
    fn alarm_armed(&self, armed: bool) {
        self.lock().alarm_armed = armed;
    }

    fn alarm_fired(&self) -> bool {
        let rtc_wake = self.lock().rtc_wake;
        rtc_wake && self.wake(PM1_RTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn wake_needs_a_suspend_and_rtc_en() {
        let s = SleepControl::new(1, 0xe0040);
        assert!(!s.wake(0), "not suspended");
        assert!(!s.is_suspended());
        s.suspend();
        assert!(s.is_suspended());
        s.alarm_armed(true);
        assert!(!s.can_wake());
        s.alarm_fired();
        assert_eq!(s.take_status(), 0, "RTC_EN clear: no wake-up");
        s.set_rtc_wake(true);
        assert!(s.can_wake());
        s.alarm_fired();
        assert_eq!(s.take_status(), PM1_STS_WAK | PM1_RTC);
        assert!(!s.is_suspended());
        assert!(!s.wake(0), "already awake");
        assert_eq!(s.facs_addr(), 0xe0040);
    }

    #[test]
    fn vcpus_park_until_all_are_parked_and_woken() {
        let s = Arc::new(SleepControl::new(2, 0));
        s.suspend();
        assert_eq!(s.epoch(), 1);
        s.wake(0); // before anyone parked: still honoured
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            let e = s2.park();
            (e, s2.resumed())
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!t.is_finished(), "one vCPU parked is not enough");
        assert_eq!(s.park(), Some(1));
        assert!(s.resumed());
        assert_eq!(t.join().unwrap(), (Some(1), true));
    }

    #[test]
    fn release_lets_parked_vcpus_go() {
        let s = Arc::new(SleepControl::new(2, 0));
        s.suspend();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.park());
        std::thread::sleep(Duration::from_millis(10));
        s.release();
        assert_eq!(t.join().unwrap(), None);
        assert!(!s.resumed());
    }
}
