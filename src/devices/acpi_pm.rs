//! ACPI fixed hardware behind berth's (not hardware-reduced) FADT: the PM1a
//! event block, the PM1a control block and the reset register.
//!
//! Each register block is its own small device, inserted at its own bus
//! range; offsets are relative to each range's base, so one type per block
//! keeps the decoding trivial and lets the blocks sit at unrelated ports:
//!
//! | device        | FADT field     | berth's port | length              |
//! |---------------|----------------|--------------|---------------------|
//! | [`AcpiPmEvt`] | `PM1a_EVT_BLK` | 0x600        | [`PM1_EVT_LEN`] (4) |
//! | [`AcpiPmCnt`] | `PM1a_CNT_BLK` | 0x604        | [`PM1_CNT_LEN`] (2) |
//! | [`ResetReg`]  | `RESET_REG`    | 0xcf9        | [`RESET_REG_LEN`] (1) |
//!
//! Accesses of any width at any offset are handled byte lane by byte lane,
//! as the registers' little-endian bytes: a 16-bit register can be written
//! as one 16-bit access or as two 8-bit ones. Lanes outside a block read as
//! `0xff` and are dropped on write. Nothing here panics on guest input.
//!
//! What the guest can ask for:
//!
//! - power off: `SLP_EN` written as 1 to PM1_CNT with `SLP_TYP` =
//!   [`S5_SLP_TYP`] (the DSDT's `\_S5`) → [`VmEvent::PowerOff`].
//! - suspend to RAM: `SLP_TYP` = [`S3_SLP_TYP`] (`\_S3`) with `SLP_EN`, when
//!   the block has a [`SleepControl`] → [`VmEvent::Suspend`]; a wake event
//!   sets `WAK_STS` (and e.g. `RTC_STS`) in PM1_STS, and PM1_EN's `RTC_EN`
//!   decides whether the RTC alarm is one ([`super::sleep`]). Other sleep
//!   types (S1, S2, S4) are not supported: logged at debug level and
//!   ignored, so the guest simply keeps running.
//! - reset: a write to the reset register with [`RESET_BIT`] set (the
//!   FADT's `RESET_VALUE` 0x06; Linux's 0xcf9 fallback writes 0x06 or 0x0e)
//!   → [`VmEvent::Reset`].
//!
//! The platform is always in ACPI mode (the FADT has no SMI command port),
//! so `SCI_EN` always reads as 1. No SCI is raised by these devices: the
//! only status bits that can become set are the ones the VMM sets with
//! [`AcpiPmEvt::set_status`], and [`AcpiPmEvt::sci_level`] says what the SCI
//! line should be if the VMM wires one.

use std::sync::Arc;

use super::sleep::SleepControl;
use crate::bus::{BusDevice, VmEvent};
use crate::state::{DeviceState, StateError};

/// Bytes of the PM1a event block: PM1_STS (u16 at +0), PM1_EN (u16 at +2).
pub const PM1_EVT_LEN: u64 = 4;
/// Bytes of the PM1a control block: PM1_CNT (u16 at +0).
pub const PM1_CNT_LEN: u64 = 2;
/// Bytes of the reset register.
pub const RESET_REG_LEN: u64 = 1;

/// PM1_STS / PM1_EN: PM timer.
pub const PM1_TMR: u16 = 1 << 0;
/// PM1_STS / PM1_EN: global lock release.
pub const PM1_GBL: u16 = 1 << 5;
/// PM1_STS / PM1_EN: power button.
pub const PM1_PWRBTN: u16 = 1 << 8;
/// PM1_STS / PM1_EN: sleep button.
pub const PM1_SLPBTN: u16 = 1 << 9;
/// PM1_STS / PM1_EN: RTC alarm.
pub const PM1_RTC: u16 = 1 << 10;
/// PM1_STS: wake status (no enable bit).
pub const PM1_STS_WAK: u16 = 1 << 15;
/// The fixed events that raise the SCI when both their status and enable
/// bits are set.
const PM1_SCI_EVENTS: u16 = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_SLPBTN | PM1_RTC;

/// PM1_CNT: SCI_EN, the platform is in ACPI mode (always 1 here).
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
/// PM1_CNT: GBL_RLS, global lock released (write-only, reads 0).
pub const PM1_CNT_GBL_RLS: u16 = 1 << 2;
/// PM1_CNT: shift of the 3-bit SLP_TYP field (bits 12:10).
pub const PM1_CNT_SLP_TYP_SHIFT: u32 = 10;
/// PM1_CNT: mask of the SLP_TYP field.
pub const PM1_CNT_SLP_TYP_MASK: u16 = 0b111 << PM1_CNT_SLP_TYP_SHIFT;
/// PM1_CNT: SLP_EN, enter the sleep state in SLP_TYP (write-only, reads 0).
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;

/// The SLP_TYP of S5 (soft off), as the DSDT's `\_S5` package gives it.
pub const S5_SLP_TYP: u16 = 5;
/// The SLP_TYP of S3 (suspend to RAM), as the DSDT's `\_S3` package gives it.
pub const S3_SLP_TYP: u16 = 1;

/// Reset register: the bit that resets the VM ("reset CPU" in a PC's
/// port 0xcf9).
pub const RESET_BIT: u8 = 1 << 2;

/// The byte lane `offset + i` of an access, if it is representable.
fn lane(offset: u64, i: usize) -> Option<u64> {
    offset.checked_add(u64::try_from(i).ok()?)
}

/// Replaces byte `index` (0 = low) of `reg` with `byte`.
fn set_byte(reg: u16, index: u64, byte: u8) -> u16 {
    let shift = if index == 0 { 0 } else { 8 };
    (reg & !(0xff << shift)) | (u16::from(byte) << shift)
}

/// Byte `index` (0 = low) of `reg`.
fn get_byte(reg: u16, index: u64) -> u8 {
    reg.to_le_bytes()[usize::from(index != 0)]
}

/// The PM1a event block: PM1_STS (write 1 to clear) at +0 and PM1_EN at +2.
#[derive(Clone, Debug, Default)]
pub struct AcpiPmEvt {
    status: u16,
    enable: u16,
    sleep: Option<Arc<SleepControl>>,
}

impl AcpiPmEvt {
    /// The block after power-on: no status, nothing enabled.
    pub fn new() -> AcpiPmEvt {
        AcpiPmEvt::default()
    }

    /// The block of a VM that can suspend: wake events set status bits, and
    /// `RTC_EN` makes the RTC alarm a wake source.
    pub fn with_sleep(sleep: Arc<SleepControl>) -> AcpiPmEvt {
        AcpiPmEvt {
            sleep: Some(sleep),
            ..AcpiPmEvt::default()
        }
    }

    /// PM1_STS, including bits wake events set since the last access.
    pub fn status(&self) -> u16 {
        self.status | self.sleep.as_ref().map_or(0, |s| s.peek_status())
    }

    /// Moves the bits wake events set into PM1_STS.
    fn merge_wake_status(&mut self) {
        if let Some(s) = &self.sleep {
            self.status |= s.take_status();
        }
    }

    /// PM1_EN, as last written by the guest (all 16 bits are kept, so the
    /// guest's read-back checks of the enable bits succeed).
    pub fn enable(&self) -> u16 {
        self.enable
    }

    /// Sets status bits as the hardware would when a fixed event happens
    /// (e.g. [`PM1_PWRBTN`] for a power-button press). The guest clears
    /// them by writing 1s.
    pub fn set_status(&mut self, bits: u16) {
        self.status |= bits;
    }

    /// Whether the SCI should be asserted: some fixed event has both its
    /// status and its enable bit set.
    pub fn sci_level(&self) -> bool {
        self.status() & self.enable & PM1_SCI_EVENTS != 0
    }
}

impl BusDevice for AcpiPmEvt {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.merge_wake_status();
        let status = self.status;
        for (i, b) in data.iter_mut().enumerate() {
            *b = match lane(offset, i) {
                Some(l @ 0..=1) => get_byte(status, l),
                Some(l @ 2..=3) => get_byte(self.enable, l - 2),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        self.merge_wake_status();
        for (i, &b) in data.iter().enumerate() {
            match lane(offset, i) {
                // Write 1 to clear; 0 bits leave the status alone.
                Some(l @ 0..=1) => self.status &= !set_byte(0, l, b),
                Some(l @ 2..=3) => self.enable = set_byte(self.enable, l - 2, b),
                _ => {}
            }
        }
        if let Some(s) = &self.sleep {
            s.set_rtc_wake(self.enable & PM1_RTC != 0);
        }
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::AcpiPmEvt {
            status: self.status,
            enable: self.enable,
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::AcpiPmEvt { status, enable } = state else {
            return Err(state.wrong("acpi-pm-evt"));
        };
        self.status = *status;
        self.enable = *enable;
        Ok(())
    }
}

/// The PM1a control block: PM1_CNT at +0.
///
/// Reads return the last written value with `SCI_EN` forced to 1 and the
/// write-only `SLP_EN` and `GBL_RLS` as 0.
#[derive(Clone, Debug)]
pub struct AcpiPmCnt {
    value: u16,
    sleep: Option<Arc<SleepControl>>,
}

impl Default for AcpiPmCnt {
    fn default() -> AcpiPmCnt {
        AcpiPmCnt {
            value: PM1_CNT_SCI_EN,
            sleep: None,
        }
    }
}

impl AcpiPmCnt {
    /// The block after power-on: in ACPI mode, sleep type 0.
    pub fn new() -> AcpiPmCnt {
        AcpiPmCnt::default()
    }

    /// The block of a VM that can suspend to RAM (S3).
    pub fn with_sleep(sleep: Arc<SleepControl>) -> AcpiPmCnt {
        AcpiPmCnt {
            sleep: Some(sleep),
            ..AcpiPmCnt::default()
        }
    }

    /// PM1_CNT as the guest reads it.
    pub fn value(&self) -> u16 {
        self.value | PM1_CNT_SCI_EN
    }
}

impl BusDevice for AcpiPmCnt {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.value();
        for (i, b) in data.iter_mut().enumerate() {
            *b = match lane(offset, i) {
                Some(l @ 0..=1) => get_byte(value, l),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        // Merge the written lanes into the current value: SLP_TYP and SLP_EN
        // share the high byte, so a byte-wide write of it carries both.
        let mut written = self.value();
        for (i, &b) in data.iter().enumerate() {
            if let Some(l @ 0..=1) = lane(offset, i) {
                written = set_byte(written, l, b);
            }
        }
        self.value = (written & !(PM1_CNT_SLP_EN | PM1_CNT_GBL_RLS)) | PM1_CNT_SCI_EN;

        // The stored value never has SLP_EN, so it is set only if this
        // access wrote it.
        if written & PM1_CNT_SLP_EN == 0 {
            return None;
        }
        let slp_typ = (written & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
        if slp_typ == S5_SLP_TYP {
            Some(VmEvent::PowerOff)
        } else if let (S3_SLP_TYP, Some(s)) = (slp_typ, &self.sleep) {
            s.suspend();
            Some(VmEvent::Suspend)
        } else {
            log::debug!("ACPI PM1_CNT: sleep type {slp_typ} requested (only S5 is supported); ignored");
            None
        }
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::AcpiPmCnt { value: self.value })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::AcpiPmCnt { value } = state else {
            return Err(state.wrong("acpi-pm-cnt"));
        };
        self.value = *value;
        Ok(())
    }
}

/// The FADT reset register: writing a value with [`RESET_BIT`] set resets
/// the VM. Reads return 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetReg;

impl ResetReg {
    /// The reset register.
    pub fn new() -> ResetReg {
        ResetReg
    }
}

impl BusDevice for ResetReg {
    /// A write resets the machine: nothing to keep.
    fn stateless(&self) -> bool {
        true
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let value = data
            .iter()
            .enumerate()
            .find(|&(i, _)| lane(offset, i) == Some(0))
            .map(|(_, &b)| b)?;
        if value & RESET_BIT != 0 {
            Some(VmEvent::Reset)
        } else {
            log::debug!("ACPI reset register: {value:#04x} written without the reset bit; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S5_WRITE: u16 = (5 << 10) | (1 << 13);

    fn read16(dev: &mut dyn BusDevice, offset: u64) -> u16 {
        let mut b = [0u8; 2];
        dev.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn s5_word_write_powers_off() {
        let mut cnt = AcpiPmCnt::new();
        assert_eq!(cnt.write(0, &S5_WRITE.to_le_bytes()), Some(VmEvent::PowerOff));
        // With SCI_EN and other bits, as ACPICA writes it (it preserves the
        // read value).
        let mut cnt = AcpiPmCnt::new();
        let v = read16(&mut cnt, 0) | S5_WRITE;
        assert_eq!(cnt.write(0, &v.to_le_bytes()), Some(VmEvent::PowerOff));
        // A 32-bit access at offset 0 carries the same two lanes.
        let mut cnt = AcpiPmCnt::new();
        let mut four = [0xffu8; 4];
        four[..2].copy_from_slice(&S5_WRITE.to_le_bytes());
        assert_eq!(cnt.write(0, &four), Some(VmEvent::PowerOff));
    }

    #[test]
    fn s5_like_acpica_two_step() {
        // ACPICA writes SLP_TYP first, then SLP_TYP | SLP_EN.
        let mut cnt = AcpiPmCnt::new();
        let typ = read16(&mut cnt, 0) | (5 << 10);
        assert_eq!(cnt.write(0, &typ.to_le_bytes()), None);
        assert_eq!(read16(&mut cnt, 0), typ | 1);
        assert_eq!(
            cnt.write(0, &(typ | (1 << 13)).to_le_bytes()),
            Some(VmEvent::PowerOff)
        );
    }

    #[test]
    fn s5_byte_writes_fire_on_high_byte() {
        let mut cnt = AcpiPmCnt::new();
        let [lo, hi] = S5_WRITE.to_le_bytes();
        assert_eq!(cnt.write(0, &[lo]), None, "low byte alone does nothing");
        assert_eq!(cnt.write(1, &[hi]), Some(VmEvent::PowerOff));
        // The high byte alone is enough too.
        let mut cnt = AcpiPmCnt::new();
        assert_eq!(cnt.write(1, &[hi]), Some(VmEvent::PowerOff));
        // A low-byte write after SLP_TYP was set does not fire: SLP_EN is
        // write-only and never remembered.
        let mut cnt = AcpiPmCnt::new();
        assert_eq!(cnt.write(1, &[(5 << 2) as u8]), None);
        assert_eq!(cnt.write(0, &[1]), None);
    }

    #[test]
    fn other_sleep_types_ignored() {
        // Without a SleepControl, S3 is ignored too.
        for typ in (0u16..8).filter(|&t| t != 5) {
            let mut cnt = AcpiPmCnt::new();
            let v = (typ << 10) | (1 << 13);
            assert_eq!(cnt.write(0, &v.to_le_bytes()), None, "SLP_TYP {typ}");
            // The guest keeps running and sees SLP_TYP, not SLP_EN.
            assert_eq!(read16(&mut cnt, 0), (typ << 10) | 1);
        }
        // S5 type without SLP_EN does nothing.
        let mut cnt = AcpiPmCnt::new();
        assert_eq!(cnt.write(0, &(5u16 << 10).to_le_bytes()), None);
    }

    #[test]
    fn s3_suspends_and_wake_sets_status() {
        let sleep = Arc::new(SleepControl::new(1, 0));
        let mut cnt = AcpiPmCnt::with_sleep(sleep.clone());
        let mut evt = AcpiPmEvt::with_sleep(sleep.clone());
        // kvm-unit-tests' s3: RTC_EN, then outw 0x2400.
        evt.write(2, &0x400u16.to_le_bytes());
        assert_eq!(cnt.write(0, &0x2400u16.to_le_bytes()), Some(VmEvent::Suspend));
        assert_eq!(sleep.epoch(), 1);
        assert_eq!(read16(&mut cnt, 0), (1 << 10) | 1);
        use crate::devices::rtc::AlarmWake;
        sleep.alarm_armed(true);
        assert!(sleep.can_wake());
        sleep.alarm_fired();
        assert_eq!(read16(&mut evt, 0), PM1_STS_WAK | PM1_RTC);
        evt.write(0, &(PM1_STS_WAK | PM1_RTC).to_le_bytes());
        assert_eq!(read16(&mut evt, 0), 0);
        // RTC_EN cleared: the alarm no longer wakes.
        evt.write(2, &[0, 0]);
        assert!(!sleep.can_wake());
        // S5 still powers off.
        assert_eq!(cnt.write(0, &S5_WRITE.to_le_bytes()), Some(VmEvent::PowerOff));
    }

    #[test]
    fn sci_en_reads_one() {
        let mut cnt = AcpiPmCnt::new();
        assert_eq!(read16(&mut cnt, 0), 1);
        cnt.write(0, &[0, 0]);
        assert_eq!(read16(&mut cnt, 0), 1, "SCI_EN cannot be cleared");
        cnt.write(0, &[0xfe, 0x03]);
        assert_eq!(read16(&mut cnt, 0), 0x03fb, "GBL_RLS reads 0, others kept");
        let mut b = [0u8; 1];
        cnt.read(0, &mut b);
        assert_eq!(b[0] & 1, 1);
        cnt.read(1, &mut b);
        assert_eq!(b[0], 0x03);
        assert_eq!(cnt.value() & PM1_CNT_SLP_EN, 0);
    }

    #[test]
    fn pm1_sts_write_one_to_clear() {
        let mut evt = AcpiPmEvt::new();
        evt.set_status(PM1_PWRBTN | PM1_STS_WAK | PM1_TMR);
        assert_eq!(read16(&mut evt, 0), PM1_PWRBTN | PM1_STS_WAK | PM1_TMR);
        // Writing 0s leaves everything set.
        evt.write(0, &[0, 0]);
        assert_eq!(evt.status(), PM1_PWRBTN | PM1_STS_WAK | PM1_TMR);
        // Clear only the power button, with a 16-bit write.
        evt.write(0, &PM1_PWRBTN.to_le_bytes());
        assert_eq!(evt.status(), PM1_STS_WAK | PM1_TMR);
        // Clear WAK_STS with a byte write to the high byte.
        evt.write(1, &[0x80]);
        assert_eq!(evt.status(), PM1_TMR);
        // ACPICA's "clear all": 0xffff.
        evt.write(0, &[0xff, 0xff]);
        assert_eq!(evt.status(), 0);
    }

    #[test]
    fn pm1_en_reads_back() {
        let mut evt = AcpiPmEvt::new();
        evt.write(2, &(PM1_GBL | PM1_PWRBTN).to_le_bytes());
        assert_eq!(read16(&mut evt, 2), PM1_GBL | PM1_PWRBTN);
        assert_eq!(evt.enable(), PM1_GBL | PM1_PWRBTN);
        // Byte write of the high byte keeps the low one.
        evt.write(3, &[0x04]);
        assert_eq!(evt.enable(), PM1_GBL | PM1_RTC);
        // A 32-bit access covers both registers; status stays write-1-to-clear.
        evt.set_status(PM1_PWRBTN);
        evt.write(0, &[0, 0, 0x20, 0x01]);
        assert_eq!(evt.status(), PM1_PWRBTN);
        assert_eq!(evt.enable(), PM1_GBL | PM1_PWRBTN);
        let mut four = [0u8; 4];
        evt.read(0, &mut four);
        assert_eq!(four, [0x00, 0x01, 0x20, 0x01]);
    }

    #[test]
    fn sci_level_follows_status_and_enable() {
        let mut evt = AcpiPmEvt::new();
        evt.set_status(PM1_PWRBTN);
        assert!(!evt.sci_level(), "not enabled");
        evt.write(2, &PM1_PWRBTN.to_le_bytes());
        assert!(evt.sci_level());
        evt.write(0, &PM1_PWRBTN.to_le_bytes());
        assert!(!evt.sci_level(), "cleared");
        evt.set_status(PM1_STS_WAK);
        evt.write(2, &[0xff, 0xff]);
        assert!(!evt.sci_level(), "WAK_STS has no enable and raises no SCI");
    }

    #[test]
    fn reset_register() {
        let mut r = ResetReg::new();
        assert_eq!(r.write(0, &[0x06]), Some(VmEvent::Reset));
        assert_eq!(r.write(0, &[0x0e]), Some(VmEvent::Reset));
        assert_eq!(r.write(0, &[0x04]), Some(VmEvent::Reset));
        assert_eq!(r.write(0, &[0x02]), None);
        assert_eq!(r.write(0, &[0x00]), None);
        assert_eq!(r.write(0, &[]), None);
        // Only lane 0 is the register.
        assert_eq!(r.write(1, &[0x06]), None);
        assert_eq!(r.write(0, &[0x06, 0x00]), Some(VmEvent::Reset));
        assert_eq!(r.write(0, &[0x00, 0x06]), None);
        let mut b = [0xaau8; 4];
        r.read(0, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn out_of_window_lanes() {
        let mut evt = AcpiPmEvt::new();
        let mut b = [0u8; 4];
        evt.read(2, &mut b);
        assert_eq!(b, [0, 0, 0xff, 0xff]);
        let mut cnt = AcpiPmCnt::new();
        cnt.read(1, &mut b);
        assert_eq!(b, [0, 0xff, 0xff, 0xff]);
        // Writes past the window are dropped.
        assert_eq!(cnt.write(2, &S5_WRITE.to_le_bytes()), None);
        assert_eq!(cnt.value(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        let mut evt = AcpiPmEvt::new();
        let mut cnt = AcpiPmCnt::new();
        let mut rst = ResetReg::new();
        let offsets = [0u64, 1, 2, 3, 4, 5, 7, 8, 0xffff, u64::MAX - 1, u64::MAX];
        let mut seed = 0x1234_5678u32;
        for &offset in &offsets {
            for len in 0..=9usize {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                        (seed >> 16) as u8
                    })
                    .collect();
                let mut buf = vec![0u8; len];
                for dev in [&mut evt as &mut dyn BusDevice, &mut cnt, &mut rst] {
                    dev.read(offset, &mut buf);
                    let _ = dev.write(offset, &data);
                    let _ = dev.write(offset, &[0xff; 9][..len]);
                }
            }
        }
        // Still sane afterwards.
        assert_eq!(cnt.value() & (PM1_CNT_SCI_EN | PM1_CNT_SLP_EN), PM1_CNT_SCI_EN);
    }
}
