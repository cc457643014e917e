//! The MC146818 RTC's interrupts, on top of [`Cmos`]'s registers: register
//! C's flags, IRQ 8, the alarm that wakes a suspended VM, and the timer
//! thread that makes interrupts happen while no vCPU touches the device.
//!
//! # Flags (register C)
//!
//! Events are defined by the guest time (the clock plus the guest's offset)
//! and accounted lazily: whenever the device is touched (and by the timer
//! thread at each event), the events since the last accounting set flags:
//!
//! - `UF` (bit 4): the time crossed a whole second (the once-per-second
//!   update), unless register B's `SET` halts updates;
//! - `AF` (bit 5): at such an update, the new time matched the alarm
//!   registers (seconds 0x01, minutes 0x03, hours 0x05, in the current data
//!   mode; a value with bits 7:6 = 11, e.g. 0xC0, matches anything);
//! - `PF` (bit 6): a periodic tick passed: register A's rate select RS
//!   (bits 3:0) gives 32768 >> (RS - 1) Hz (RS 1 and 2 mean RS 8 and 9, 0
//!   is off), as a divider chain aligned to the second; flagged whether or
//!   not `PIE` is set, as on hardware (QEMU flags it only with `PIE`);
//! - `IRQF` (bit 7): one of the above with its enable bit in register B
//!   (`UIE` bit 4, `AIE` bit 5, `PIE` bit 6).
//!
//! Reading register C returns the flags and clears them (and lowers IRQ 8).
//! Setting `SET` clears `UIE`, as QEMU does. When the alarm wakes the VM
//! from S3, the RTC is reset like QEMU's (its machine resets on wake-up):
//! `PIE`, `AIE` and `SQWE` off, flags clear, IRQ 8 low.
//!
//! # IRQ 8
//!
//! When `IRQF` becomes set the line goes high (through the same
//! [`LineSink`] as the irq-lines device: `KVM_IRQ_LINE_STATUS` in kernel
//! irqchip mode, berth's IOAPIC in split mode); it goes low when the guest
//! reads register C. It is an ISA edge: one interrupt per register C read.
//!
//! # The timer thread
//!
//! [`Rtc`] is the bus device: a [`Cmos`] behind a mutex shared with the
//! `rtc` thread. The thread sleeps (on a condvar, so a register write
//! re-programs it at once) until the next event of an enabled interrupt, then
//! accounts the events and raises IRQ 8. With no interrupt enabled it sleeps
//! until one is. It is started with the device, before the seccomp filters
//! are installed: a vCPU thread (where the guest's enabling write arrives)
//! may not create threads. It installs [`ThreadKind::RtcTimer`]'s
//! allow-list, and dropping the [`Rtc`] stops and joins it.
//!
//! [`ThreadKind::RtcTimer`]: crate::seccomp::ThreadKind::RtcTimer

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::cmos::{CivilTime, Cmos, NS_PER_SEC, REG_A, REG_B, REG_B_SET};
use super::irq_lines::LineSink;
use crate::bus::{BusDevice, VmEvent};
use crate::state::{DeviceState, StateError};

/// Register B: periodic interrupt enable.
pub const REG_B_PIE: u8 = 0x40;
/// Register B: alarm interrupt enable.
pub const REG_B_AIE: u8 = 0x20;
/// Register B: update-ended interrupt enable.
pub const REG_B_UIE: u8 = 0x10;
/// Register B: square-wave output enable (stored only).
pub const REG_B_SQWE: u8 = 0x08;
/// Register C: interrupt request (some enabled flag is set).
pub const REG_C_IRQF: u8 = 0x80;
/// Register C: periodic flag.
pub const REG_C_PF: u8 = 0x40;
/// Register C: alarm flag.
pub const REG_C_AF: u8 = 0x20;
/// Register C: update-ended flag.
pub const REG_C_UF: u8 = 0x10;

/// UIP is set this long before each update: 8 cycles of the 32768 Hz base
/// (244.14 µs).
pub const UIP_HOLD_NS: i128 = 8 * NS_PER_SEC / 32_768;
/// The divider chain's base frequency.
const BASE_HZ: i128 = 32_768;
/// Alarm register bits 7:6 both set: "don't care".
const ALARM_DONT_CARE: u8 = 0xc0;
/// The alarm registers: seconds, minutes, hours (compared as encoded, like
/// the time registers 0x00, 0x02 and 0x04).
const ALARM_REGS: [u8; 3] = [0x01, 0x03, 0x05];
/// Updates spanning a day hold every hours/minutes/seconds pattern: longer
/// spans are not scanned one by one.
const ALARM_SCAN_LIMIT: i128 = 86_400;

/// Who hears about the alarm for S3 wake-up (the ACPI sleep control).
pub trait AlarmWake: Send + Sync {
    /// Whether the alarm interrupt is enabled (`AIE`), so it may wake a
    /// suspended VM.
    fn alarm_armed(&self, armed: bool);
    /// The alarm fired with `AIE` set; returns whether that woke the VM.
    fn alarm_fired(&self) -> bool;
}

/// Register C's flags and IRQ 8, part of [`Cmos`].
#[derive(Default)]
pub struct RtcIrq {
    /// PF, AF, UF (not IRQF, which is computed).
    flags: u8,
    /// Guest time (ns) up to which events are accounted in `flags`.
    pub(super) settled_ns: i128,
    /// The line and GSI of IRQ 8, once connected.
    line: Option<(Arc<dyn LineSink>, u32)>,
    /// Whether the line is high.
    high: bool,
    /// S3 wake-up.
    wake: Option<Arc<dyn AlarmWake>>,
    /// Interrupts raised (for tests and debugging).
    raised: u64,
}

impl RtcIrq {
    /// The interrupt state a snapshot keeps: flags, settled time, line level.
    pub(super) fn saved(&self) -> (u8, i128, bool) {
        (self.flags, self.settled_ns, self.high)
    }

    /// Loads what [`RtcIrq::saved`] returned (the line stays as the
    /// restored interrupt controllers have it).
    pub(super) fn load(&mut self, flags: u8, settled_ns: i128, high: bool) {
        self.flags = flags;
        self.settled_ns = settled_ns;
        self.high = high;
    }
}

impl fmt::Debug for RtcIrq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtcIrq")
            .field("flags", &self.flags)
            .field("gsi", &self.line.as_ref().map(|l| l.1))
            .field("high", &self.high)
            .field("raised", &self.raised)
            .finish_non_exhaustive()
    }
}

/// Register B as stored after the guest writes `value`: `SET` clears `UIE`.
pub(super) fn reg_b_written(value: u8) -> u8 {
    if value & REG_B_SET != 0 {
        value & !REG_B_UIE
    } else {
        value
    }
}

/// 32768 Hz cycles of the periodic rate in register A, if it is on.
fn period_cycles(reg_a: u8) -> Option<i128> {
    let rs = match reg_a & 0x0f {
        0 => return None,
        rs @ 1..=2 => rs + 7,
        rs => rs,
    };
    Some(1 << (rs - 1))
}

/// Number of periods of `cycles` base cycles completed at guest time `ns`.
fn periods_at(ns: i128, cycles: i128) -> i128 {
    (ns.saturating_mul(BASE_HZ))
        .div_euclid(NS_PER_SEC)
        .div_euclid(cycles)
}

impl Cmos {
    /// Connects IRQ 8: `gsi` on `line`.
    pub fn connect_irq(&mut self, line: Arc<dyn LineSink>, gsi: u32) {
        self.irq.line = Some((line, gsi));
    }

    /// Connects the S3 wake-up.
    pub fn connect_wake(&mut self, wake: Arc<dyn AlarmWake>) {
        wake.alarm_armed(self.ram[usize::from(REG_B)] & REG_B_AIE != 0);
        self.irq.wake = Some(wake);
    }

    /// How many times IRQ 8 went high.
    pub fn interrupts_raised(&self) -> u64 {
        self.irq.raised
    }

    /// Register A's UIP: in the last [`UIP_HOLD_NS`] of a second, unless
    /// `SET` halts updates.
    pub(super) fn update_in_progress(&self) -> bool {
        !self.setting() && self.guest_ns().rem_euclid(NS_PER_SEC) >= NS_PER_SEC - UIP_HOLD_NS
    }

    /// Accounts the events since the last accounting in the flags; fires the
    /// S3 wake-up on an alarm with `AIE` set.
    pub(super) fn settle(&mut self) {
        let now = self.guest_ns();
        let then = std::mem::replace(&mut self.irq.settled_ns, now);
        if self.setting() || now <= then {
            return;
        }
        let mut new = 0u8;
        if let Some(p) = period_cycles(self.ram[usize::from(REG_A)]) {
            if periods_at(now, p) > periods_at(then, p) {
                new |= REG_C_PF;
            }
        }
        let (s0, s1) = (then.div_euclid(NS_PER_SEC), now.div_euclid(NS_PER_SEC));
        if s1 > s0 {
            new |= REG_C_UF;
            // A whole day of updates holds every hours/minutes/seconds.
            let hit = if s1 - s0 >= ALARM_SCAN_LIMIT {
                self.alarm_possible()
            } else {
                (s0 + 1..=s1).any(|s| self.alarm_matches(s))
            };
            if hit {
                new |= REG_C_AF;
            }
        }
        self.irq.flags |= new;
        if new & REG_C_AF != 0 && self.ram[usize::from(REG_B)] & REG_B_AIE != 0 {
            let woke = self.irq.wake.as_ref().is_some_and(|w| w.alarm_fired());
            if woke {
                self.wake_reset();
            }
        }
    }

    /// What QEMU's RTC reset does when the machine resets on an S3 wake-up:
    /// `PIE`, `AIE` and `SQWE` off, no flags, IRQ 8 low. The time, the
    /// alarm registers and the rest of CMOS RAM are kept.
    fn wake_reset(&mut self) {
        self.ram[usize::from(REG_B)] &= !(REG_B_PIE | REG_B_AIE | REG_B_SQWE);
        self.irq.flags = 0;
        if std::mem::take(&mut self.irq.high) {
            if let Some((line, gsi)) = &self.irq.line {
                line.set_gsi(*gsi, false);
            }
        }
        if let Some(w) = &self.irq.wake {
            w.alarm_armed(false);
        }
    }

    /// Whether the alarm registers match the time `secs` (seconds since the
    /// epoch) in the current data mode.
    fn alarm_matches(&self, secs: i128) -> bool {
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        let t = CivilTime::from_unix(secs);
        let now = [
            self.encode(t.second),
            self.encode(t.minute),
            self.encode_hours(t.hour),
        ];
        ALARM_REGS.iter().zip(now).all(|(&alarm, value)| {
            let a = self.ram[usize::from(alarm)];
            a & ALARM_DONT_CARE == ALARM_DONT_CARE || a == value
        })
    }

    /// Whether the alarm registers match some time of day: each is "don't
    /// care" or a valid encoded value.
    fn alarm_possible(&self) -> bool {
        let [s, m, h] = ALARM_REGS.map(|r| self.ram[usize::from(r)]);
        let dc = |a: u8| a & ALARM_DONT_CARE == ALARM_DONT_CARE;
        (dc(s) || (0..60).any(|v| self.encode(v) == s))
            && (dc(m) || (0..60).any(|v| self.encode(v) == m))
            && (dc(h) || (0..24).any(|v| self.encode_hours(v) == h))
    }

    /// IRQF: some flag with its enable bit set.
    fn irqf(&self) -> bool {
        self.irq.flags & self.ram[usize::from(REG_B)] & (REG_C_PF | REG_C_AF | REG_C_UF) != 0
    }

    /// Raises IRQ 8 if IRQF is set and the line is low.
    fn update_line(&mut self) {
        if self.irqf() && !self.irq.high {
            if let Some((line, gsi)) = &self.irq.line {
                line.set_gsi(*gsi, true);
            }
            self.irq.high = true;
            self.irq.raised += 1;
        }
    }

    /// Register C: the flags (and IRQF), cleared by the read; IRQ 8 goes low.
    pub(super) fn read_reg_c(&mut self) -> u8 {
        self.settle();
        let value = self.irq.flags | if self.irqf() { REG_C_IRQF } else { 0 };
        self.irq.flags = 0;
        if std::mem::take(&mut self.irq.high) {
            if let Some((line, gsi)) = &self.irq.line {
                line.set_gsi(*gsi, false);
            }
        }
        value
    }

    /// After a register B write: a newly enabled flag that is already set
    /// interrupts at once; the wake-up hears whether the alarm is armed.
    pub(super) fn enables_changed(&mut self) {
        self.update_line();
        if let Some(w) = &self.irq.wake {
            w.alarm_armed(self.ram[usize::from(REG_B)] & REG_B_AIE != 0);
        }
    }

    /// What the timer thread does at each event: account the events,
    /// raise IRQ 8 if due.
    pub fn tick(&mut self) {
        self.settle();
        self.update_line();
    }

    /// Time (of the clock) until the next event of an enabled interrupt,
    /// or `None` when no interrupt is enabled.
    pub fn next_event_in(&self) -> Option<Duration> {
        let b = self.ram[usize::from(REG_B)];
        if self.setting() {
            return None;
        }
        let now = self.guest_ns();
        let mut next: Option<i128> = None;
        if b & (REG_B_UIE | REG_B_AIE) != 0 {
            next = Some((now.div_euclid(NS_PER_SEC) + 1) * NS_PER_SEC);
        }
        if b & REG_B_PIE != 0 {
            if let Some(p) = period_cycles(self.ram[usize::from(REG_A)]) {
                let k = periods_at(now, p) + 1;
                // First ns at which periods_at reaches k.
                let at = (k * p * NS_PER_SEC + BASE_HZ - 1).div_euclid(BASE_HZ);
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let wait = next?.saturating_sub(now).max(0);
        Some(Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX)))
    }
}

/// What the bus device and the timer thread share.
struct Shared {
    cmos: Mutex<Cmos>,
    /// Signalled after every guest write and at stop.
    changed: Condvar,
    /// Set when the device is dropped.
    stop: Mutex<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cmos> {
        self.cmos.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The CMOS/RTC bus device with its timer thread.
pub struct Rtc {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Rtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rtc").field("cmos", &*self.shared.lock()).finish()
    }
}

impl Rtc {
    /// Wraps `cmos` and starts its timer thread, named `rtc`.
    pub fn start(cmos: Cmos) -> std::io::Result<Rtc> {
        let shared = Arc::new(Shared {
            cmos: Mutex::new(cmos),
            changed: Condvar::new(),
            stop: Mutex::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rtc".into())
            .spawn(move || timer_thread(&s))?;
        Ok(Rtc {
            shared,
            thread: Some(thread),
        })
    }

    /// How many times IRQ 8 went high.
    pub fn interrupts_raised(&self) -> u64 {
        self.shared.lock().interrupts_raised()
    }
}

/// The `rtc` thread: sleep until the next event, account it, repeat.
fn timer_thread(s: &Shared) {
    if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::RtcTimer) {
        // Without its filter the thread does not run guest-driven work.
        log::error!("rtc: {e}; the RTC raises no interrupts");
        return;
    }
    crate::seccomp::test_forbidden_syscall_here();
    let mut stop = s.stop.lock().unwrap_or_else(|e| e.into_inner());
    while !*stop {
        let wait = {
            let mut cmos = s.lock();
            cmos.tick();
            cmos.next_event_in()
        };
        // The condvar pairs with `stop`; device writes notify it too, so a
        // new rate or enable takes effect at once. A little past the event,
        // so the accounting sees it.
        stop = match wait {
            Some(d) => {
                s.changed
                    .wait_timeout(stop, d + Duration::from_micros(20))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => s.changed.wait(stop).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

impl Drop for Rtc {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.shared.lock().read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let ev = self.shared.lock().write(offset, data);
        // Take the stop lock so the notification cannot fall between the
        // thread's computing its wait and starting it.
        let _g = self.shared.stop.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.changed.notify_all();
        ev
    }

    /// The CMOS/RTC state (the timer thread keeps none of its own).
    fn save_state(&self) -> Option<DeviceState> {
        self.shared.lock().save_state()
    }

    /// Loads the CMOS/RTC state, then wakes the timer thread to re-plan its
    /// wait from the loaded registers.
    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        self.shared.lock().load_state(state)?;
        let _g = self.shared.stop.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.changed.notify_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
