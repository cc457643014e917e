//! The boot timer (Firecracker's convention): the guest writes the byte
//! [`MAGIC`] (123) at offset 0 of an MMIO page when it considers itself
//! booted, and berth prints the wall and CPU time since the process started
//! (`berth: boot-timer: …` on stderr, and a `stats: boot-timer` line). "Start"
//! is the first thing `main` does ([`crate::clock::mark_start`]), as in
//! Firecracker: exec and loading come before it (about 0.7 ms on the dev
//! host: the first-line benchmark's spawn-to-line time minus this one). A
//! Linux guest's init does it through `/dev/mem`; berth's benchmark guests
//! do it after their first serial line. Reads return zeros; other writes are
//! counted and ignored.

use crate::bus::{BusDevice, VmEvent};
use crate::clock;
use crate::state::{DeviceState, StateError};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The value that signals "booted".
pub const MAGIC: u8 = 123;

/// The default MMIO address (Firecracker's x86_64 boot-timer address).
pub const DEFAULT_ADDR: u64 = 0xd000_0000;

/// The window: one page.
pub const WINDOW: u64 = 0x1000;

/// What the timer saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootTimes {
    /// Wall and CPU time since process start at the first signal.
    pub first: Option<(Duration, Duration)>,
    /// How many times the guest signalled.
    pub signals: u64,
    /// Writes that were not a signal.
    pub other_writes: u64,
}

impl BootTimes {
    /// The `--stats` line.
    pub fn stats_line(&self) -> String {
        match self.first {
            Some((wall, cpu)) => format!(
                "stats: boot-timer wall-ms {:.3} cpu-ms {:.3} signals {}\n",
                clock::ms(wall),
                clock::ms(cpu),
                self.signals
            ),
            None => "stats: boot-timer not-signalled\n".to_string(),
        }
    }
}

/// The device.
pub struct BootTimer {
    times: Arc<Mutex<BootTimes>>,
    now: fn() -> (Duration, Duration),
    report: bool,
}

fn process_times() -> (Duration, Duration) {
    (clock::since_start(), clock::process_cpu())
}

impl BootTimer {
    /// A timer that reads the process clock and reports on stderr.
    pub fn new() -> Self {
        BootTimer {
            times: Arc::new(Mutex::new(BootTimes::default())),
            now: process_times,
            report: true,
        }
    }

    /// A quiet timer with its own clock (tests, fuzzing).
    pub fn with_clock(now: fn() -> (Duration, Duration)) -> Self {
        BootTimer {
            times: Arc::new(Mutex::new(BootTimes::default())),
            now,
            report: false,
        }
    }

    /// The shared record (read it after the run).
    pub fn times(&self) -> Arc<Mutex<BootTimes>> {
        self.times.clone()
    }
}

impl Default for BootTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        if offset != 0 || data.first() != Some(&MAGIC) {
            t.other_writes += 1;
            return None;
        }
        let (wall, cpu) = (self.now)();
        t.signals += 1;
        if t.first.is_none() {
            t.first = Some((wall, cpu));
        }
        if self.report {
            // One write(2) (eprintln! would make one per formatted piece).
            let line = format!(
                "berth: boot-timer: {:.3} ms since start (cpu {:.3} ms)\n",
                clock::ms(wall),
                clock::ms(cpu)
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        let t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        Some(DeviceState::BootTimer {
            first: t.first,
            signals: t.signals,
            other_writes: t.other_writes,
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::BootTimer {
            first,
            signals,
            other_writes,
        } = state
        else {
            return Err(state.wrong("boot-timer"));
        };
        *self.times.lock().unwrap_or_else(|e| e.into_inner()) = BootTimes {
            first: *first,
            signals: *signals,
            other_writes: *other_writes,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> (Duration, Duration) {
        (Duration::from_micros(3_250), Duration::from_micros(1_500))
    }

    #[test]
    fn magic_at_offset_zero_records_the_first_time() {
        let mut d = BootTimer::with_clock(fixed);
        let t = d.times();
        assert_eq!(
            t.lock().unwrap().stats_line(),
            "stats: boot-timer not-signalled\n"
        );
        assert!(d.write(0, &[MAGIC]).is_none());
        assert!(d.write(0, &[MAGIC, 0, 0, 0]).is_none());
        let got = *t.lock().unwrap();
        assert_eq!(got.first, Some(fixed()));
        assert_eq!(got.signals, 2);
        assert_eq!(
            got.stats_line(),
            "stats: boot-timer wall-ms 3.250 cpu-ms 1.500 signals 2\n"
        );
    }

    #[test]
    fn other_writes_are_counted_not_signals() {
        let mut d = BootTimer::with_clock(fixed);
        d.write(0, &[122]);
        d.write(1, &[MAGIC]);
        d.write(0, &[]);
        let got = *d.times().lock().unwrap();
        assert_eq!(got.first, None);
        assert_eq!(got.other_writes, 3);
        let mut buf = [0xffu8; 4];
        d.read(0, &mut buf);
        assert_eq!(buf, [0; 4]);
    }
}
