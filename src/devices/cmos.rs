//! A minimal MC146818 CMOS RAM and real-time clock at ports 0x70/0x71.
//!
//! Enough for Linux's RTC probe and boot-time clock read not to spin:
//!
//! - Port 0x70 (offset 0) selects a register: bits 0..=6 are the index into
//!   the 128 bytes of CMOS RAM, bit 7 disables NMIs (recorded, see
//!   [`Cmos::nmi_disabled`], but otherwise ignored). It reads as all-ones,
//!   like QEMU's write-only index port.
//! - Port 0x71 (offset 1) reads or writes the selected register.
//!
//! Insert one [`Cmos`] at [`CMOS_PORT_BASE`] with length [`CMOS_PORT_LEN`].
//!
//! # Clock
//!
//! The time registers (seconds, minutes, hours, day of week, day of month,
//! month, year, century) are computed at read time from a clock returning
//! seconds since the Unix epoch, plus an offset that starts at 0. They are in
//! BCD and 24-hour mode by default (register B = 0x02) and follow the guest's
//! register B data-mode (bit 2, binary) and 24/12 (bit 1) bits. Day of week
//! counts from Sunday = 1, and the century register 0x32 follows the data
//! mode too (QEMU's behaviour).
//!
//! A guest setting the time is honoured like in QEMU: a write to a time
//! register while register B's SET bit (bit 7) is clear takes effect at
//! once; while SET is set the registers are frozen, take writes as plain RAM
//! and take effect when SET is cleared. Either way the new time is kept as an
//! offset from the clock, so it keeps running from what the guest set. Out of
//! range values are normalised (e.g. 61 seconds carries into the minute),
//! never refused.
//!
//! The clock has nanosecond resolution: the once-per-second update happens
//! when the guest time crosses a whole second. Setting the time starts a new
//! second at that instant (as in QEMU).
//!
//! # Status registers and interrupts
//!
//! Register A's UIP (bit 7) reads 1 during the 244 µs before each update,
//! computed from the clock; its other bits are storage (default 0x26), the
//! rate select bits (3:0) set the periodic rate, and the divider bits never
//! stop the clock. Register D always reads 0x80 (VRT: RAM and time valid).
//! Register C's flags (PF periodic, AF alarm, UF update-ended, IRQF) and the
//! interrupt on IRQ 8 are in [`super::rtc`].
//!
//! # Memory size
//!
//! The RAM bytes the BIOS would fill with the memory size are set like QEMU's
//! `pc_cmos_init`, see [`Cmos::new`].

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::rtc::RtcIrq;
use crate::bus::{BusDevice, VmEvent};

/// First I/O port (index port 0x70; the data port 0x71 follows).
pub const CMOS_PORT_BASE: u64 = 0x70;
/// Length of the bus range: the index and data ports.
pub const CMOS_PORT_LEN: u64 = 2;
/// Bytes of CMOS RAM (including the clock and status registers).
pub const CMOS_RAM_LEN: usize = 128;

/// Offset of the index port within the range.
const INDEX_OFFSET: u64 = 0;
/// Offset of the data port within the range.
const DATA_OFFSET: u64 = 1;
/// Index port bit that disables NMIs.
const INDEX_NMI_DISABLE: u8 = 0x80;
/// Index port bits that select the register.
const INDEX_MASK: u8 = 0x7f;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
pub(super) const REG_A: u8 = 0x0a;
pub(super) const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Registers computed from the clock.
const TIME_REGS: [u8; 8] = [
    REG_SECONDS,
    REG_MINUTES,
    REG_HOURS,
    REG_DAY_OF_WEEK,
    REG_DAY_OF_MONTH,
    REG_MONTH,
    REG_YEAR,
    REG_CENTURY,
];

/// Register A: update in progress.
pub(super) const REG_A_UIP: u8 = 0x80;
/// Register A default: 32.768 kHz time base, 1024 Hz periodic rate.
const REG_A_DEFAULT: u8 = 0x26;
/// Register B: updates halted, the guest is setting the time.
pub(super) const REG_B_SET: u8 = 0x80;
/// Register B: binary (not BCD) data mode.
const REG_B_DM: u8 = 0x04;
/// Register B: 24-hour mode.
const REG_B_24H: u8 = 0x02;
/// Register B default: BCD, 24-hour mode.
const REG_B_DEFAULT: u8 = REG_B_24H;
/// Register D: valid RAM and time.
const REG_D_VRT: u8 = 0x80;
/// Hours register: PM flag in 12-hour mode.
const HOURS_PM: u8 = 0x80;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

const SECS_PER_DAY: i64 = 86_400;
/// Nanoseconds per second.
pub(super) const NS_PER_SEC: i128 = 1_000_000_000;

/// A clock returning seconds since the Unix epoch.
pub type Clock = Box<dyn Fn() -> i64 + Send>;

/// A clock returning nanoseconds since the Unix epoch.
pub type ClockNs = Box<dyn Fn() -> i128 + Send>;

/// The host's wall clock in nanoseconds since the Unix epoch; a ready-made
/// [`ClockNs`] for [`Cmos::with_clock_ns`].
pub fn host_wall_clock_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

/// The host's wall clock in seconds since the Unix epoch (negative before
/// 1970); a ready-made [`Clock`] for [`Cmos::new`].
pub fn host_wall_clock() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// A broken-down UTC date and time (proleptic Gregorian calendar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Year, e.g. 2026 (may be zero or negative far before the epoch).
    pub year: i64,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
    /// Day of the week, 0 = Sunday ..= 6 = Saturday.
    pub weekday: u8,
}

/// Days since 1970-01-01 of the given date (Howard Hinnant's
/// `days_from_civil`). `month` must be 1..=12; `day` may be any value and
/// simply counts on from the first of the month.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = if month > 2 { month - 3 } else { month + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of the given count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction.
    (year, month as u8, day as u8)
}

impl CivilTime {
    /// Breaks `secs` seconds since the Unix epoch down into UTC calendar
    /// fields. Defined for every `i64`.
    pub fn from_unix(secs: i64) -> CivilTime {
        let days = secs.div_euclid(SECS_PER_DAY);
        let rem = secs.rem_euclid(SECS_PER_DAY); // [0, 86399]
        let (year, month, day) = civil_from_days(days);
        CivilTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            // 1970-01-01 was a Thursday (4).
            weekday: (days + 4).rem_euclid(7) as u8,
        }
    }

    /// Seconds since the Unix epoch of these fields (`weekday` is ignored).
    ///
    /// Out-of-range fields are normalised rather than refused: the month is
    /// clamped to 1..=12 and excess days, hours, minutes and seconds carry
    /// over. Saturates instead of overflowing for absurd years.
    pub fn to_unix(&self) -> i64 {
        // Keep the year where the day arithmetic cannot overflow.
        const YEAR_LIMIT: i64 = 1 << 40;
        let year = self.year.clamp(-YEAR_LIMIT, YEAR_LIMIT);
        let month = i64::from(self.month.clamp(1, 12));
        let days = days_from_civil(year, month, i64::from(self.day));
        days.saturating_mul(SECS_PER_DAY).saturating_add(
            i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second),
        )
    }
}

/// Binary to packed BCD (of the value modulo 100).
fn to_bcd(v: u8) -> u8 {
    let v = v % 100;
    ((v / 10) << 4) | (v % 10)
}

/// Packed BCD to binary; invalid digits are taken at face value (0xff is
/// 15 * 10 + 15 = 165), as on real hardware garbage in is garbage out.
fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0f)
}

/// The CMOS RAM and RTC.
pub struct Cmos {
    /// Selected register (0..=127).
    index: u8,
    /// Last NMI-disable bit written to the index port.
    nmi_disabled: bool,
    pub(super) ram: [u8; CMOS_RAM_LEN],
    clock: ClockNs,
    /// Guest time minus clock time, in nanoseconds.
    offset_ns: i128,
    /// Register C flags, IRQ 8 and the alarm wake-up ([`super::rtc`]).
    pub(super) irq: RtcIrq,
}

impl fmt::Debug for Cmos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmos")
            .field("index", &self.index)
            .field("nmi_disabled", &self.nmi_disabled)
            .field("offset_ns", &self.offset_ns)
            .field("irq", &self.irq)
            .finish_non_exhaustive()
    }
}

impl Cmos {
    /// Creates the device for a guest with `mem_below_4g` bytes of RAM below
    /// 4 GiB and `mem_above_4g` bytes above, reading the time from `clock`
    /// (seconds since the Unix epoch; e.g. [`host_wall_clock`]).
    ///
    /// The memory size bytes are set like QEMU's `pc_cmos_init`:
    /// 0x15/0x16 base memory in KiB (at most 640), 0x17/0x18 and 0x30/0x31
    /// memory above 1 MiB in KiB (at most 0xffff), 0x34/0x35 memory above
    /// 16 MiB in 64 KiB units (at most 0xffff), and 0x5b..=0x5d memory above
    /// 4 GiB in 64 KiB units (at most 0xff_ffff). All little-endian.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64, clock: Box<dyn Fn() -> i64 + Send>) -> Cmos {
        Cmos::with_clock_ns(
            mem_below_4g,
            mem_above_4g,
            Box::new(move || i128::from(clock()) * NS_PER_SEC),
        )
    }

    /// Like [`Cmos::new`] with a nanosecond clock (e.g.
    /// [`host_wall_clock_ns`]), which the update-in-progress bit and the
    /// interrupts need.
    pub fn with_clock_ns(mem_below_4g: u64, mem_above_4g: u64, clock: ClockNs) -> Cmos {
        let mut ram = [0u8; CMOS_RAM_LEN];
        ram[usize::from(REG_A)] = REG_A_DEFAULT;
        ram[usize::from(REG_B)] = REG_B_DEFAULT;
        ram[usize::from(REG_D)] = REG_D_VRT;

        let mut put = |reg: usize, bytes: usize, value: u64| {
            for (i, b) in value.to_le_bytes().iter().take(bytes).enumerate() {
                ram[reg + i] = *b;
            }
        };
        put(0x15, 2, (mem_below_4g / KIB).min(640));
        let ext = (mem_below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        put(0x17, 2, ext);
        put(0x30, 2, ext);
        put(
            0x34,
            2,
            (mem_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff),
        );
        put(0x5b, 3, (mem_above_4g / (64 * KIB)).min(0xff_ffff));

        let mut cmos = Cmos {
            index: 0,
            nmi_disabled: false,
            ram,
            clock,
            offset_ns: 0,
            irq: RtcIrq::default(),
        };
        cmos.irq.settled_ns = cmos.guest_ns();
        cmos
    }

    /// Whether the guest last wrote the index port with bit 7 (NMI disable)
    /// set. Informational only: berth does not gate NMIs on it.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// The guest's current time in seconds since the Unix epoch: the clock
    /// plus whatever offset the guest's own time setting introduced.
    pub fn guest_time(&self) -> i64 {
        let secs = self.guest_ns().div_euclid(NS_PER_SEC);
        i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX })
    }

    /// The guest's current time in nanoseconds since the Unix epoch.
    pub(super) fn guest_ns(&self) -> i128 {
        (self.clock)().saturating_add(self.offset_ns)
    }

    /// Reads CMOS register `reg` (masked to 0..=127) as the guest would.
    pub fn read_reg(&mut self, reg: u8) -> u8 {
        let reg = reg & INDEX_MASK;
        match reg {
            REG_A => {
                let uip = if self.update_in_progress() { REG_A_UIP } else { 0 };
                (self.ram[usize::from(REG_A)] & !REG_A_UIP) | uip
            }
            REG_C => self.read_reg_c(),
            REG_D => REG_D_VRT,
            _ if TIME_REGS.contains(&reg) => {
                if !self.setting() {
                    self.store_time(self.guest_time());
                }
                self.ram[usize::from(reg)]
            }
            _ => self.ram[usize::from(reg)],
        }
    }

    /// Writes CMOS register `reg` (masked to 0..=127) as the guest would.
    pub fn write_reg(&mut self, reg: u8, value: u8) {
        let reg = reg & INDEX_MASK;
        match reg {
            REG_A => {
                // Events so far count at the old rate.
                self.settle();
                self.ram[usize::from(REG_A)] = value & !REG_A_UIP;
            }
            REG_B => {
                self.settle();
                let value = super::rtc::reg_b_written(value);
                let was_setting = self.setting();
                if !was_setting {
                    // Freeze the time as of now, in the new data mode, so
                    // that reads while SET is held and the final commit agree.
                    self.ram[usize::from(REG_B)] = value;
                    if self.setting() {
                        self.store_time(self.guest_time());
                    }
                } else {
                    self.ram[usize::from(REG_B)] = value;
                    if !self.setting() {
                        self.commit_time();
                    }
                }
                self.enables_changed();
            }
            REG_C | REG_D => {}
            _ if TIME_REGS.contains(&reg) => {
                if self.setting() {
                    self.ram[usize::from(reg)] = value;
                } else {
                    self.settle();
                    self.store_time(self.guest_time());
                    self.ram[usize::from(reg)] = value;
                    self.commit_time();
                }
            }
            _ => self.ram[usize::from(reg)] = value,
        }
    }

    /// Whether register B's SET bit halts the clock registers.
    pub(super) fn setting(&self) -> bool {
        self.ram[usize::from(REG_B)] & REG_B_SET != 0
    }

    /// Whether the time registers are binary rather than BCD.
    fn binary(&self) -> bool {
        self.ram[usize::from(REG_B)] & REG_B_DM != 0
    }

    /// Whether hours are in 24-hour rather than 12-hour mode.
    fn hours_24(&self) -> bool {
        self.ram[usize::from(REG_B)] & REG_B_24H != 0
    }

    /// Encodes a binary value 0..=99 in the current data mode.
    pub(super) fn encode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            to_bcd(v)
        }
    }

    /// Decodes a register value in the current data mode.
    fn decode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            from_bcd(v)
        }
    }

    /// Writes `secs` (seconds since the epoch) into the time registers in
    /// the current data and hour modes.
    fn store_time(&mut self, secs: i64) {
        let t = CivilTime::from_unix(secs);
        let hours = self.encode_hours(t.hour);
        let year = t.year.rem_euclid(100) as u8;
        let century = t.year.div_euclid(100).rem_euclid(100) as u8;
        let fields = [
            (REG_SECONDS, self.encode(t.second)),
            (REG_MINUTES, self.encode(t.minute)),
            (REG_HOURS, hours),
            (REG_DAY_OF_WEEK, self.encode(t.weekday + 1)),
            (REG_DAY_OF_MONTH, self.encode(t.day)),
            (REG_MONTH, self.encode(t.month)),
            (REG_YEAR, self.encode(year)),
            (REG_CENTURY, self.encode(century)),
        ];
        for (reg, v) in fields {
            self.ram[usize::from(reg)] = v;
        }
    }

    /// Hours 0..=23 in the current data and 12/24-hour modes.
    pub(super) fn encode_hours(&self, hour: u8) -> u8 {
        if self.hours_24() {
            self.encode(hour)
        } else {
            let h = match hour % 12 {
                0 => 12,
                h => h,
            };
            self.encode(h) | if hour >= 12 { HOURS_PM } else { 0 }
        }
    }

    /// Takes the time registers as the new guest time, kept as an offset
    /// from the clock; the new second starts now.
    fn commit_time(&mut self) {
        let reg = |r: u8| self.ram[usize::from(r)];
        let raw_hours = reg(REG_HOURS);
        let mut hour = self.decode(raw_hours & !HOURS_PM);
        if !self.hours_24() {
            hour %= 12;
            if raw_hours & HOURS_PM != 0 {
                hour += 12;
            }
        }
        let t = CivilTime {
            year: i64::from(self.decode(reg(REG_CENTURY))) * 100 + i64::from(self.decode(reg(REG_YEAR))),
            month: self.decode(reg(REG_MONTH)),
            day: self.decode(reg(REG_DAY_OF_MONTH)),
            hour,
            minute: self.decode(reg(REG_MINUTES)),
            second: self.decode(reg(REG_SECONDS)),
            weekday: 0,
        };
        let secs = t.to_unix();
        self.offset_ns = (i128::from(secs) * NS_PER_SEC).saturating_sub((self.clock)());
        // Events before the new time were settled by the caller.
        self.irq.settled_ns = self.guest_ns();
        log::debug!(
            "cmos: guest set the time to {secs} (offset {} ns)",
            self.offset_ns
        );
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == DATA_OFFSET {
            if let Some(first) = data.first_mut() {
                *first = self.read_reg(self.index);
            }
        }
        // The index port (offset 0) is write-only and reads as all-ones.
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        // Only byte 0 of a wider write is meaningful.
        match (offset, data.first()) {
            (INDEX_OFFSET, Some(&value)) => {
                self.index = value & INDEX_MASK;
                self.nmi_disabled = value & INDEX_NMI_DISABLE != 0;
            }
            (DATA_OFFSET, Some(&value)) => self.write_reg(self.index, value),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    /// 2026-11-24 (Tuesday) 13:45:56 UTC.
    const T0: i64 = 1_795_478_400 + 13 * 3600 + 45 * 60 + 56;

    /// A device with 512 MiB below 4 GiB and a settable clock.
    fn cmos_at(now: i64) -> (Cmos, Arc<AtomicI64>) {
        let clock = Arc::new(AtomicI64::new(now));
        let c = Arc::clone(&clock);
        let dev = Cmos::new(512 * MIB, 0, Box::new(move || c.load(Ordering::Relaxed)));
        (dev, clock)
    }

    fn rd(dev: &mut Cmos, reg: u8) -> u8 {
        assert_eq!(dev.write(INDEX_OFFSET, &[reg]), None);
        let mut b = [0u8];
        dev.read(DATA_OFFSET, &mut b);
        b[0]
    }

    fn wr(dev: &mut Cmos, reg: u8, value: u8) {
        assert_eq!(dev.write(INDEX_OFFSET, &[reg]), None);
        assert_eq!(dev.write(DATA_OFFSET, &[value]), None);
    }

    /// (sec, min, hour, wday, mday, month, year, century) as read.
    fn time_regs(dev: &mut Cmos) -> [u8; 8] {
        TIME_REGS.map(|r| rd(dev, r))
    }

    #[test]
    fn known_dates() {
        let cases = [
            (0, (1970, 1, 1, 0, 0, 0, 4)),
            (951_782_400, (2000, 2, 29, 0, 0, 0, 2)),
            (1_795_478_400, (2026, 11, 24, 0, 0, 0, 2)),
            (2_147_483_647, (2038, 1, 19, 3, 14, 7, 2)),
            (-1, (1969, 12, 31, 23, 59, 59, 3)),
            (4_102_444_800, (2100, 1, 1, 0, 0, 0, 5)),
            (951_868_799, (2000, 2, 29, 23, 59, 59, 2)),
            (951_868_800, (2000, 3, 1, 0, 0, 0, 3)),
        ];
        for (secs, (year, month, day, hour, minute, second, weekday)) in cases {
            let t = CivilTime::from_unix(secs);
            let want = CivilTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                weekday,
            };
            assert_eq!(t, want, "{secs}");
            assert_eq!(t.to_unix(), secs, "{secs}");
        }
    }

    #[test]
    fn civil_round_trip_and_extremes() {
        let mut s = -400 * 366 * SECS_PER_DAY;
        while s < 400 * 366 * SECS_PER_DAY {
            assert_eq!(CivilTime::from_unix(s).to_unix(), s);
            s += 7 * 3600 + 13;
        }
        for s in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
            let t = CivilTime::from_unix(s);
            assert!((1..=12).contains(&t.month) && (1..=31).contains(&t.day) && t.weekday < 7);
            let _ = t.to_unix();
        }
        // Normalisation of out-of-range fields.
        let t = CivilTime {
            year: 2000,
            month: 0,
            day: 32,
            hour: 24,
            minute: 60,
            second: 60,
            weekday: 9,
        };
        // Month clamped to January; Jan 32 = Feb 1; then +1 day +1 h +1 min.
        assert_eq!(t.to_unix(), 949_363_200 + SECS_PER_DAY + 3600 + 60);
        let huge = CivilTime { year: i64::MAX, ..t };
        assert_eq!(huge.to_unix(), i64::MAX);
    }

    #[test]
    fn ram_round_trip() {
        let (mut dev, _) = cmos_at(T0);
        for reg in (0x0e..0x32).chain(0x33..0x80).chain([0x01, 0x03, 0x05]) {
            wr(&mut dev, reg, reg ^ 0xa5);
        }
        for reg in (0x0e..0x32).chain(0x33..0x80).chain([0x01, 0x03, 0x05]) {
            assert_eq!(rd(&mut dev, reg), reg ^ 0xa5, "reg {reg:#x}");
        }
    }

    #[test]
    fn nmi_bit_ignored_for_addressing() {
        let (mut dev, _) = cmos_at(T0);
        wr(&mut dev, 0x80 | 0x40, 0x5a);
        assert!(dev.nmi_disabled());
        assert_eq!(rd(&mut dev, 0x40), 0x5a);
        assert!(!dev.nmi_disabled());
        assert_eq!(rd(&mut dev, 0x80 | 0x40), 0x5a);
        assert_eq!(rd(&mut dev, 0x80 | REG_D), REG_D_VRT);
    }

    #[test]
    fn time_bcd_default() {
        let (mut dev, _) = cmos_at(T0);
        assert_eq!(rd(&mut dev, REG_B), 0x02);
        assert_eq!(
            time_regs(&mut dev),
            [0x56, 0x45, 0x13, 0x03, 0x24, 0x11, 0x26, 0x20]
        );
    }

    #[test]
    fn time_binary_and_12h() {
        let (mut dev, clock) = cmos_at(T0);
        wr(&mut dev, REG_B, REG_B_DM | REG_B_24H);
        assert_eq!(time_regs(&mut dev), [56, 45, 13, 3, 24, 11, 26, 20]);
        // 12-hour binary: 13:45 is 1 PM.
        wr(&mut dev, REG_B, REG_B_DM);
        assert_eq!(rd(&mut dev, REG_HOURS), 0x80 | 1);
        // 12-hour BCD, just after midnight and noon.
        wr(&mut dev, REG_B, 0);
        clock.store(1_795_478_400 + 5, Ordering::Relaxed);
        assert_eq!(rd(&mut dev, REG_HOURS), 0x12);
        clock.store(1_795_478_400 + 12 * 3600, Ordering::Relaxed);
        assert_eq!(rd(&mut dev, REG_HOURS), 0x80 | 0x12);
        clock.store(1_795_478_400 + 23 * 3600, Ordering::Relaxed);
        assert_eq!(rd(&mut dev, REG_HOURS), 0x80 | 0x11);
        // The clock runs.
        wr(&mut dev, REG_B, REG_B_24H);
        clock.store(T0 + 1, Ordering::Relaxed);
        assert_eq!(rd(&mut dev, REG_SECONDS), 0x57);
        assert_eq!(dev.guest_time(), T0 + 1);
    }

    #[test]
    fn status_registers() {
        let (mut dev, _) = cmos_at(T0);
        assert_eq!(rd(&mut dev, REG_A), REG_A_DEFAULT);
        // UIP can never be set by the guest; with a whole-second clock it
        // reads 0 (the rtc tests cover it with a nanosecond clock).
        wr(&mut dev, REG_A, 0xff);
        assert_eq!(rd(&mut dev, REG_A), 0x7f);
        assert_eq!(rd(&mut dev, REG_A) & REG_A_UIP, 0);
        assert_eq!(rd(&mut dev, REG_D), 0x80);
        wr(&mut dev, REG_D, 0);
        assert_eq!(rd(&mut dev, REG_D), 0x80);
        wr(&mut dev, REG_C, 0xff);
        assert_eq!(rd(&mut dev, REG_C), 0, "read-only, nothing happened yet");
        assert_eq!(rd(&mut dev, REG_C), 0);
        // Interrupt enables are stored; with a frozen clock nothing is flagged.
        wr(&mut dev, REG_B, 0x70 | REG_B_24H);
        assert_eq!(rd(&mut dev, REG_B), 0x72);
        assert_eq!(rd(&mut dev, REG_C), 0);
    }

    #[test]
    fn memory_size_registers() {
        let mem = |dev: &mut Cmos, reg: u8, n: u8| {
            (0..n).fold(0u32, |acc, i| acc | u32::from(rd(dev, reg + i)) << (8 * i))
        };
        let (mut dev, _) = cmos_at(0);
        assert_eq!(mem(&mut dev, 0x15, 2), 640);
        // 511 MiB of extended memory does not fit in 16 bits of KiB.
        assert_eq!(mem(&mut dev, 0x17, 2), 0xffff);
        assert_eq!(mem(&mut dev, 0x30, 2), 0xffff);
        assert_eq!(mem(&mut dev, 0x34, 2), (512 - 16) * 16);
        assert_eq!(mem(&mut dev, 0x5b, 3), 0);

        let mut dev = Cmos::new(32 * MIB, 0, Box::new(|| 0));
        assert_eq!(mem(&mut dev, 0x15, 2), 640);
        assert_eq!(mem(&mut dev, 0x17, 2), 31 * 1024);
        assert_eq!(mem(&mut dev, 0x30, 2), 31 * 1024);
        assert_eq!(mem(&mut dev, 0x34, 2), 16 * 16);

        let mut dev = Cmos::new(3 * 1024 * MIB, 5 * 1024 * MIB, Box::new(|| 0));
        assert_eq!(mem(&mut dev, 0x15, 2), 640);
        assert_eq!(mem(&mut dev, 0x17, 2), 0xffff);
        assert_eq!(mem(&mut dev, 0x30, 2), 0xffff);
        assert_eq!(mem(&mut dev, 0x34, 2), (3 * 1024 - 16) * 16);
        assert_eq!(mem(&mut dev, 0x5b, 3), 5 * 1024 * 16);

        let mut dev = Cmos::new(512 * KIB, u64::MAX, Box::new(|| 0));
        assert_eq!(mem(&mut dev, 0x15, 2), 512);
        assert_eq!(mem(&mut dev, 0x17, 2), 0);
        assert_eq!(mem(&mut dev, 0x34, 2), 0);
        assert_eq!(mem(&mut dev, 0x5b, 3), 0xff_ffff);

        let mut dev = Cmos::new(u64::MAX, 0, Box::new(|| 0));
        assert_eq!(mem(&mut dev, 0x34, 2), 0xffff);
    }

    #[test]
    fn set_time_with_set_bit() {
        // Like Linux's mc146818_set_time: SET, write all fields, clear SET.
        let (mut dev, clock) = cmos_at(T0);
        wr(&mut dev, REG_B, REG_B_SET | REG_B_24H);
        // Frozen while SET is held.
        clock.store(T0 + 100, Ordering::Relaxed);
        assert_eq!(rd(&mut dev, REG_SECONDS), 0x56);
        for (reg, v) in [
            (REG_SECONDS, 0x07),
            (REG_MINUTES, 0x14),
            (REG_HOURS, 0x03),
            (REG_DAY_OF_MONTH, 0x19),
            (REG_MONTH, 0x01),
            (REG_YEAR, 0x38),
            (REG_CENTURY, 0x20),
        ] {
            wr(&mut dev, reg, v);
        }
        assert_eq!(rd(&mut dev, REG_MINUTES), 0x14);
        wr(&mut dev, REG_B, REG_B_24H);
        assert_eq!(dev.guest_time(), 2_147_483_647);
        assert_eq!(
            time_regs(&mut dev),
            [0x07, 0x14, 0x03, 0x03, 0x19, 0x01, 0x38, 0x20]
        );
        // And the clock keeps running from there.
        clock.store(T0 + 110, Ordering::Relaxed);
        assert_eq!(rd(&mut dev, REG_SECONDS), 0x17);
    }

    #[test]
    fn set_time_directly() {
        let (mut dev, clock) = cmos_at(T0);
        // One field at a time without SET, in binary 12-hour mode.
        wr(&mut dev, REG_B, REG_B_DM);
        wr(&mut dev, REG_YEAR, 99);
        wr(&mut dev, REG_CENTURY, 19);
        wr(&mut dev, REG_HOURS, 0x80 | 11); // 11 PM
        assert_eq!(rd(&mut dev, REG_YEAR), 99);
        assert_eq!(rd(&mut dev, REG_CENTURY), 19);
        assert_eq!(rd(&mut dev, REG_HOURS), 0x80 | 11);
        assert_eq!(rd(&mut dev, REG_MINUTES), 45);
        assert_eq!(rd(&mut dev, REG_MONTH), 11);
        // 1999-11-24 23:45:56 was a Wednesday.
        assert_eq!(rd(&mut dev, REG_DAY_OF_WEEK), 4);
        let want = CivilTime {
            year: 1999,
            month: 11,
            day: 24,
            hour: 23,
            minute: 45,
            second: 56,
            weekday: 3,
        };
        assert_eq!(CivilTime::from_unix(dev.guest_time()), want);
        // 16 minutes later the date rolls over.
        clock.store(T0 + 16 * 60, Ordering::Relaxed);
        wr(&mut dev, REG_B, REG_B_24H);
        assert_eq!(
            time_regs(&mut dev),
            [0x56, 0x01, 0x00, 0x05, 0x25, 0x11, 0x99, 0x19]
        );
    }

    #[test]
    fn index_port_and_wide_accesses() {
        let (mut dev, _) = cmos_at(T0);
        wr(&mut dev, 0x40, 0x12);
        let mut b = [0u8];
        dev.read(INDEX_OFFSET, &mut b);
        assert_eq!(b, [0xff]);
        let mut w = [0u8; 2];
        dev.read(DATA_OFFSET, &mut w);
        assert_eq!(w, [0x12, 0xff]);
        // A 2-byte write at the index port: byte 0 selects, byte 1 dropped.
        dev.write(INDEX_OFFSET, &[0x41, 0x99]);
        dev.write(DATA_OFFSET, &[0x34, 0x56]);
        assert_eq!(rd(&mut dev, 0x41), 0x34);
        assert_eq!(rd(&mut dev, 0x40), 0x12);
        dev.read(DATA_OFFSET, &mut []);
        assert_eq!(dev.write(DATA_OFFSET, &[]), None);
        dev.read(2, &mut b);
        assert_eq!(b, [0xff]);
        assert_eq!(dev.write(u64::MAX, &[1]), None);
    }

    #[test]
    fn garbage_never_panics() {
        for now in [i64::MIN, -1, 0, T0, i64::MAX] {
            let (mut dev, clock) = cmos_at(now);
            let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ now as u64;
            let mut buf = [0u8; 9];
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let len = (x % 10) as usize;
                let offset = if x & 0x100 != 0 { x >> 32 } else { x & 1 };
                buf.fill((x >> 16) as u8);
                if x & 0x200 != 0 {
                    dev.read(offset, &mut buf[..len]);
                } else {
                    dev.write(offset, &buf[..len]);
                }
                if x & 0xff_0000 == 0 {
                    clock.store((x as i64).wrapping_mul(31), Ordering::Relaxed);
                }
            }
            for reg in 0..=u8::MAX {
                let _ = dev.read_reg(reg);
                dev.write_reg(reg, reg);
                dev.write_reg(reg, 0xff);
            }
            let _ = dev.guest_time();
        }
    }

    #[test]
    fn host_clock_is_sane() {
        // After 2020-01-01 and is Send as a Clock.
        assert!(host_wall_clock() > 1_577_836_800);
        let clock: Clock = Box::new(host_wall_clock);
        let dev = Cmos::new(0, 0, clock);
        assert!(format!("{dev:?}").contains("Cmos"));
        fn check<T: Send>() {}
        check::<Cmos>();
    }
}
