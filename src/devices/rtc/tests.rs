//! Unit tests of the RTC's flags, IRQ 8, alarm wake-up and timer thread.
use super::*;
use crate::devices::cmos::host_wall_clock_ns;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// 2026-11-24 13:45:56 UTC, in ns.
const T0: i128 = (1_795_478_400 + 13 * 3600 + 45 * 60 + 56) * NS_PER_SEC;
const MS: i128 = 1_000_000;

#[derive(Default)]
struct Lines(Mutex<Vec<(u32, bool)>>);
impl LineSink for Lines {
    fn set_gsi(&self, gsi: u32, level: bool) {
        self.0.lock().unwrap().push((gsi, level));
    }
}
impl Lines {
    fn take(&self) -> Vec<(u32, bool)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[derive(Default)]
struct Wake {
    armed: AtomicBool,
    fired: AtomicU64,
}
impl AlarmWake for Wake {
    fn alarm_armed(&self, armed: bool) {
        self.armed.store(armed, Ordering::SeqCst);
    }
    fn alarm_fired(&self) -> bool {
        self.fired.fetch_add(1, Ordering::SeqCst);
        false
    }
}

/// A device at `now` (ns) with IRQ 8 and the wake-up recorded.
fn rtc_at(now: i128) -> (Cmos, Arc<Mutex<i128>>, Arc<Lines>, Arc<Wake>) {
    let clock = Arc::new(Mutex::new(now));
    let c = clock.clone();
    let mut dev = Cmos::with_clock_ns(256 << 20, 0, Box::new(move || *c.lock().unwrap()));
    let lines = Arc::new(Lines::default());
    dev.connect_irq(lines.clone(), 8);
    let wake = Arc::new(Wake::default());
    dev.connect_wake(wake.clone());
    (dev, clock, lines, wake)
}

fn set(clock: &Mutex<i128>, ns: i128) {
    *clock.lock().unwrap() = ns;
}

fn rd(dev: &mut Cmos, reg: u8) -> u8 {
    dev.write(0, &[reg]);
    let mut b = [0u8];
    dev.read(1, &mut b);
    b[0]
}

fn wr(dev: &mut Cmos, reg: u8, v: u8) {
    dev.write(0, &[reg]);
    dev.write(1, &[v]);
}

const REG_C: u8 = 0x0c;

#[test]
fn uip_in_the_last_244_us_of_each_second() {
    let (mut dev, clock, _, _) = rtc_at(T0);
    assert_eq!(rd(&mut dev, REG_A) & 0x80, 0);
    set(&clock, T0 + NS_PER_SEC - UIP_HOLD_NS - 1);
    assert_eq!(rd(&mut dev, REG_A), 0x26, "just before the hold");
    set(&clock, T0 + NS_PER_SEC - UIP_HOLD_NS);
    assert_eq!(rd(&mut dev, REG_A), 0xa6);
    set(&clock, T0 + NS_PER_SEC - 1);
    assert_eq!(rd(&mut dev, REG_A), 0xa6);
    set(&clock, T0 + NS_PER_SEC);
    assert_eq!(rd(&mut dev, REG_A), 0x26, "update done");
    assert_eq!(UIP_HOLD_NS, 244_140);
    // SET halts updates: no UIP.
    wr(&mut dev, REG_B, 0x82);
    set(&clock, T0 + 2 * NS_PER_SEC - 1000);
    assert_eq!(rd(&mut dev, REG_A) & 0x80, 0);
}

#[test]
fn update_and_periodic_flags_read_to_clear() {
    let (mut dev, clock, lines, _) = rtc_at(T0 + 100 * MS);
    // Rate select 0: no periodic flag; the update flag after the second.
    wr(&mut dev, REG_A, 0x20);
    set(&clock, T0 + 900 * MS);
    assert_eq!(rd(&mut dev, REG_C), 0);
    set(&clock, T0 + NS_PER_SEC + MS);
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF, "no IRQF: UIE clear");
    assert_eq!(rd(&mut dev, REG_C), 0, "cleared by the read");
    // 1024 Hz: a tick every 976.5625 µs.
    wr(&mut dev, REG_A, 0x26);
    set(&clock, T0 + NS_PER_SEC + MS + 500_000);
    assert_eq!(
        rd(&mut dev, REG_C),
        0,
        "the tick after 1.000977 s is at 1.001953 s"
    );
    set(&clock, T0 + NS_PER_SEC + 2 * MS);
    assert_eq!(rd(&mut dev, REG_C), REG_C_PF);
    // 2 Hz (RS 15): ticks at .0 and .5 of each second.
    wr(&mut dev, REG_A, 0x2f);
    set(&clock, T0 + NS_PER_SEC + 400 * MS);
    assert_eq!(rd(&mut dev, REG_C), 0);
    set(&clock, T0 + NS_PER_SEC + 500 * MS);
    assert_eq!(rd(&mut dev, REG_C), REG_C_PF);
    // RS 1 and 2 are RS 8 and 9 (256 Hz, 128 Hz).
    assert_eq!(period_cycles(0x21), Some(128));
    assert_eq!(period_cycles(0x22), Some(256));
    assert_eq!(period_cycles(0x23), Some(4));
    assert!(lines.take().is_empty(), "nothing enabled, nothing raised");
}

#[test]
fn alarm_matches_encoded_time_and_dont_care() {
    let (mut dev, clock, _, wake) = rtc_at(T0 + 500 * MS); // 13:45:56.5
    wr(&mut dev, REG_A, 0x20);
    wr(&mut dev, 0x01, 0x58);
    wr(&mut dev, 0x03, 0x45);
    wr(&mut dev, 0x05, 0x13);
    set(&clock, T0 + NS_PER_SEC + MS); // :57
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF);
    set(&clock, T0 + 2 * NS_PER_SEC + MS); // :58
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF | REG_C_AF);
    assert_eq!(wake.fired.load(Ordering::SeqCst), 0, "AIE clear: no wake-up");
    // Hours mismatch: never.
    wr(&mut dev, 0x05, 0x14);
    set(&clock, T0 + 62 * NS_PER_SEC + MS); // 13:46:58
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF);
    // Don't care everywhere: every update.
    for r in [0x01, 0x03, 0x05] {
        wr(&mut dev, r, 0xc0);
    }
    set(&clock, T0 + 63 * NS_PER_SEC + MS);
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF | REG_C_AF);
    // Seconds don't care, minute 0x47: first at 13:47:00, seen a day later too.
    wr(&mut dev, 0x03, 0x47);
    set(&clock, T0 + 64 * NS_PER_SEC + MS); // 13:47:00
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF | REG_C_AF);
    set(&clock, T0 + 3 * 86_400 * NS_PER_SEC);
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF | REG_C_AF, "long gap: possible");
    // An impossible pattern (hour 0x25) never matches, however long the gap.
    wr(&mut dev, 0x05, 0x25);
    set(&clock, T0 + 30 * 86_400 * NS_PER_SEC);
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF, "hour 0x25");
    set(&clock, T0 + 30 * 86_400 * NS_PER_SEC + 3600 * NS_PER_SEC);
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF, "hour 0x25, scanned");
    wr(&mut dev, 0x05, 0xc0);
    // Binary mode compares binary values.
    wr(&mut dev, REG_B, 0x06);
    wr(&mut dev, 0x03, 0xc0);
    let now = T0 + 31 * 86_400 * NS_PER_SEC;
    wr(&mut dev, 0x01, ((now / NS_PER_SEC + 1) % 60) as u8);
    set(&clock, now + NS_PER_SEC);
    assert_eq!(rd(&mut dev, REG_C), REG_C_UF | REG_C_AF);
}

#[test]
fn irq8_follows_irqf_and_register_c_reads() {
    let (mut dev, clock, lines, wake) = rtc_at(T0 + 500 * MS);
    for r in [0x01, 0x03, 0x05] {
        wr(&mut dev, r, 0xc0);
    }
    rd(&mut dev, REG_C);
    wr(&mut dev, REG_B, 0x02 | REG_B_AIE);
    assert!(wake.armed.load(Ordering::SeqCst));
    dev.tick();
    assert!(lines.take().is_empty());
    set(&clock, T0 + NS_PER_SEC + MS);
    dev.tick();
    assert_eq!(lines.take(), [(8, true)]);
    assert_eq!(wake.fired.load(Ordering::SeqCst), 1);
    // Still high: no second edge until register C is read.
    set(&clock, T0 + 2 * NS_PER_SEC + MS);
    dev.tick();
    assert!(lines.take().is_empty());
    // PF is flagged too (rate 1024 Hz), as on hardware, though PIE is clear.
    assert_eq!(rd(&mut dev, REG_C), REG_C_IRQF | REG_C_PF | REG_C_AF | REG_C_UF);
    assert_eq!(lines.take(), [(8, false)]);
    set(&clock, T0 + 3 * NS_PER_SEC + MS);
    dev.tick();
    assert_eq!(lines.take(), [(8, true)]);
    assert_eq!(dev.interrupts_raised(), 2);
    // Turning AIE off disarms the wake-up; a pending UF with UIE newly
    // enabled interrupts at once.
    rd(&mut dev, REG_C);
    lines.take();
    set(&clock, T0 + 4 * NS_PER_SEC + MS);
    wr(&mut dev, REG_B, 0x02 | REG_B_UIE);
    assert!(!wake.armed.load(Ordering::SeqCst));
    assert_eq!(lines.take(), [(8, true)]);
    // SET clears UIE (QEMU).
    wr(&mut dev, REG_B, 0x82 | REG_B_UIE | REG_B_PIE);
    assert_eq!(rd(&mut dev, REG_B), 0x82 | REG_B_PIE);
}

#[test]
fn next_event_deadlines() {
    let (mut dev, _clock, _, _) = rtc_at(T0 + 250 * MS);
    assert_eq!(dev.next_event_in(), None, "nothing enabled");
    wr(&mut dev, REG_B, 0x02 | REG_B_UIE);
    assert_eq!(dev.next_event_in(), Some(Duration::from_millis(750)));
    // 2 Hz periodic: the tick at .5 comes first.
    wr(&mut dev, REG_A, 0x2f);
    wr(&mut dev, REG_B, 0x02 | REG_B_UIE | REG_B_PIE);
    assert_eq!(dev.next_event_in(), Some(Duration::from_millis(250)));
    // 1024 Hz from .25 s: the next tick is 257 * 976.5625 µs = 250.976 ms.
    wr(&mut dev, REG_A, 0x26);
    wr(&mut dev, REG_B, 0x02 | REG_B_PIE);
    assert_eq!(dev.next_event_in(), Some(Duration::from_nanos(976_563)));
    wr(&mut dev, REG_A, 0x20);
    assert_eq!(dev.next_event_in(), None, "PIE with rate 0");
}

#[test]
fn timer_thread_raises_periodic_interrupts_and_joins() {
    let mut cmos = Cmos::with_clock_ns(256 << 20, 0, Box::new(host_wall_clock_ns));
    let lines = Arc::new(Lines::default());
    cmos.connect_irq(lines.clone(), 8);
    let mut rtc = Rtc::start(cmos).unwrap();
    wr_rtc(&mut rtc, REG_A, 0x2a); // 64 Hz
    wr_rtc(&mut rtc, REG_B, 0x02 | REG_B_PIE);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while seen < 3 && Instant::now() < deadline {
        if lines.take().contains(&(8, true)) {
            seen += 1;
            rd_rtc(&mut rtc, REG_C);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(seen, 3, "three periodic interrupts, each after a register C read");
    assert!(rtc.interrupts_raised() >= 3);
    assert!(format!("{rtc:?}").contains("Rtc"));
    drop(rtc); // joins the thread
}

fn wr_rtc(dev: &mut Rtc, reg: u8, v: u8) {
    dev.write(0, &[reg]);
    dev.write(1, &[v]);
}

fn rd_rtc(dev: &mut Rtc, reg: u8) -> u8 {
    dev.write(0, &[reg]);
    let mut b = [0u8];
    dev.read(1, &mut b);
    b[0]
}

#[test]
fn waking_alarm_resets_the_rtc_like_qemu() {
    use crate::devices::sleep::SleepControl;
    let (mut dev, clock, lines, _) = rtc_at(T0 + 500 * MS);
    let sleep = Arc::new(SleepControl::new(1, 0));
    dev.connect_wake(sleep.clone());
    sleep.set_rtc_wake(true);
    for r in [0x01, 0x03, 0x05] {
        wr(&mut dev, r, 0xc0);
    }
    wr(&mut dev, REG_B, 0x02 | REG_B_AIE | REG_B_PIE);
    assert!(sleep.can_wake());
    sleep.suspend();
    set(&clock, T0 + NS_PER_SEC + MS);
    dev.tick();
    assert_eq!(sleep.take_status(), 0x8400, "WAK_STS | RTC_STS");
    assert_eq!(rd(&mut dev, REG_B), 0x02, "PIE and AIE off");
    assert_eq!(rd(&mut dev, REG_C), 0, "flags cleared");
    assert!(lines.take().is_empty(), "reset before IRQ 8 was raised");
    assert!(!sleep.can_wake());
}
