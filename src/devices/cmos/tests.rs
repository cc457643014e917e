//! Unit tests of the CMOS RAM and clock registers.
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
