//! The ACPI power-management timer (FADT `PM_TMR_BLK`, berth's port 0x608):
//! a free-running 24-bit counter at 3.579545 MHz, read-only, 4 bytes.
//!
//! The count is computed on every read from a monotonic clock (no thread,
//! no state that moves by itself), so successive reads never go backwards
//! modulo the 24-bit wrap: Linux's `acpi_pm` clocksource relies on that.
//! The FADT leaves `TMR_VAL_EXT` clear (24-bit timer); the upper byte of the
//! 32-bit register reads 0. The timer's overflow status (`TMR_STS`) is not
//! raised: berth's ACPI has no SCI source.
//!
//! Accesses of any width at any offset read the register's little-endian
//! byte lanes; lanes past the 4-byte block read `0xff`; writes are ignored.

use crate::state::{DeviceState, StateError};
use std::time::Instant;

use crate::bus::{BusDevice, VmEvent};

/// Bytes of the PM timer block (`PM_TMR_LEN`).
pub const PM_TMR_LEN: u64 = 4;
/// The timer's frequency in Hz (the PC's 14.31818 MHz crystal / 4).
pub const PM_TMR_HZ: u64 = 3_579_545;
/// The counter's width: 24 bits (`TMR_VAL_EXT` clear).
pub const PM_TMR_MASK: u32 = 0x00ff_ffff;

/// A clock returning nanoseconds since some fixed point, never decreasing.
pub type MonotonicNs = Box<dyn Fn() -> u64 + Send>;

/// Nanoseconds since the first call in this process: a ready-made
/// [`MonotonicNs`] built on [`Instant`].
pub fn host_monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The PM timer.
pub struct PmTimer {
    clock: MonotonicNs,
    /// Clock value at which the count was `base`.
    origin: u64,
    /// Nanoseconds already counted at `origin` (a restored timer goes on
    /// from its snapshot).
    base: u64,
}

impl std::fmt::Debug for PmTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PmTimer")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PmTimer {
    /// A timer that reads 0 now and counts from `clock`.
    pub fn new(clock: MonotonicNs) -> PmTimer {
        let origin = clock();
        PmTimer {
            clock,
            origin,
            base: 0,
        }
    }

    /// Nanoseconds counted so far.
    fn elapsed_ns(&self) -> u64 {
        (self.clock)()
            .saturating_sub(self.origin)
            .saturating_add(self.base)
    }

    /// The 24-bit count now.
    pub fn count(&self) -> u32 {
        let ns = self.elapsed_ns();
        // ns * 3579545 / 1e9 without overflow for any u64 ns (u128).
        let ticks = u128::from(ns) * u128::from(PM_TMR_HZ) / 1_000_000_000;
        (ticks as u64 as u32) & PM_TMR_MASK
    }
}

impl BusDevice for PmTimer {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let bytes = self.count().to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|l| usize::try_from(l).ok())
                .and_then(|l| bytes.get(l).copied())
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> Option<VmEvent> {
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::PmTimer {
            elapsed_ns: self.elapsed_ns(),
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::PmTimer { elapsed_ns } = state else {
            return Err(state.wrong("pm-timer"));
        };
        self.origin = (self.clock)();
        self.base = *elapsed_ns;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn timer_at(ns: u64) -> (PmTimer, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(ns));
        let n = now.clone();
        (PmTimer::new(Box::new(move || n.load(Ordering::Relaxed))), now)
    }

    fn read32(t: &mut PmTimer) -> u32 {
        let mut b = [0u8; 4];
        t.read(0, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn counts_at_3_579545_mhz_from_zero() {
        let (mut t, now) = timer_at(5_000_000_000);
        assert_eq!(read32(&mut t), 0, "starts at 0 whatever the clock says");
        now.store(5_000_000_000 + 1_000_000_000, Ordering::Relaxed);
        assert_eq!(read32(&mut t), 3_579_545);
        now.store(5_000_000_000 + 1_000, Ordering::Relaxed); // 1 µs: 3.58 ticks
        assert_eq!(read32(&mut t), 3);
    }

    #[test]
    fn wraps_at_24_bits_and_upper_byte_is_zero() {
        let (mut t, now) = timer_at(0);
        // 2^24 ticks = 4.687 s; one tick past the wrap.
        let wrap_ns = (1u64 << 24) * 1_000_000_000 / PM_TMR_HZ + 1;
        now.store(wrap_ns, Ordering::Relaxed);
        let v = read32(&mut t);
        assert!(v < 4, "wrapped: {v}");
        for ns in [1u64, 4_000_000_000, 9_999_999_999, u64::MAX / 2, u64::MAX] {
            now.store(ns, Ordering::Relaxed);
            assert_eq!(read32(&mut t) & !PM_TMR_MASK, 0);
        }
    }

    #[test]
    fn monotonic_modulo_wrap() {
        let (mut t, now) = timer_at(0);
        let mut last = 0u32;
        let mut ns = 0u64;
        for step in 0..20_000u64 {
            ns += 17 + step * 31 % 1_000_003;
            now.store(ns, Ordering::Relaxed);
            let v = read32(&mut t);
            // Forward distance modulo 2^24 is below half a wrap.
            let delta = v.wrapping_sub(last) & PM_TMR_MASK;
            assert!(delta < 1 << 23, "went backwards: {last} -> {v}");
            last = v;
        }
    }

    #[test]
    fn byte_lanes_and_writes() {
        let (mut t, now) = timer_at(0);
        now.store(1_000_000_000, Ordering::Relaxed); // 3579545 = 0x369e99
        let mut b = [0u8; 2];
        t.read(1, &mut b);
        assert_eq!(b, [0x9e, 0x36]);
        let mut b = [0u8; 4];
        t.read(2, &mut b);
        assert_eq!(b, [0x36, 0x00, 0xff, 0xff]);
        t.read(u64::MAX, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert_eq!(t.write(0, &[1, 2, 3, 4]), None);
        assert_eq!(read32(&mut t), 0x0036_9e99, "writes change nothing");
    }

    #[test]
    fn host_clock_moves_forward() {
        let t = PmTimer::new(Box::new(host_monotonic_ns));
        let a = host_monotonic_ns();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while host_monotonic_ns() == a && Instant::now() < deadline {}
        assert!(host_monotonic_ns() > a);
        let _ = t.count();
    }
}
