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
//! Insert one [`Cmos`] at [`CMOS_PORT_BASE`] with length [`CMOS_PORT_LEN`],
//! wrapped in a [`super::rtc::Rtc`] when its interrupts should be timed.
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

use crate::state::devices::CmosState;
use crate::state::{DeviceState, StateError};
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

/// Nanoseconds for the snapshot (i64: ±292 years around the host clock).
fn clamp_ns(ns: i128) -> i64 {
    i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
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

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::Cmos(CmosState {
            index: self.index,
            nmi_disabled: self.nmi_disabled,
            ram: self.ram.to_vec(),
            offset_ns: clamp_ns(self.offset_ns),
            rtc_flags: self.irq.saved().0,
            rtc_settled_ns: clamp_ns(self.irq.saved().1),
            rtc_line_high: self.irq.saved().2,
        }))
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Cmos(c) = state else {
            return Err(state.wrong("cmos"));
        };
        if c.ram.len() != CMOS_RAM_LEN {
            return Err(StateError::Mismatch(format!("cmos ram of {} bytes", c.ram.len())));
        }
        self.index = c.index;
        self.nmi_disabled = c.nmi_disabled;
        self.ram.copy_from_slice(&c.ram);
        self.offset_ns = i128::from(c.offset_ns);
        self.irq
            .load(c.rtc_flags, i128::from(c.rtc_settled_ns), c.rtc_line_high);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
