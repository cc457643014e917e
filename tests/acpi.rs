//! The PC platform's timekeeping and ACPI sleep on real KVM: the PM timer
//! and the RTC's UIP bit, alarm and periodic interrupts on IRQ 8 (kernel and
//! split irqchip), and an S3 round trip through the FACS waking vector,
//! woken by the RTC alarm (`guests/test/rtc.S`, `s3.S`, `s3nowake.S`).

mod common;

use common::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn run(guest_name: &str, vcpus: u32, extra: &str, args: &[&str]) -> (Option<i32>, String, String, Duration) {
    guests();
    let dir = TempDir::new(guest_name);
    let f = dir.write(
        &format!("{guest_name}-{vcpus}.toml"),
        &machine(&guest(guest_name), vcpus, extra),
    );
    let mut c = berth();
    c.arg("run").args(args).arg(&f);
    let start = Instant::now();
    let o = run_with_limit(c, LIMIT);
    (o.status.code(), stdout(&o), stderr(&o), start.elapsed())
}

#[test]
fn rtc_uip_alarm_and_periodic_interrupts_in_both_irqchip_modes() {
    for mode in ["kernel", "split"] {
        let extra = format!("\n[irqchip]\nmode = \"{mode}\"\n");
        let (code, out, err, _) = run("rtc", 1, &extra, &["--timeout", "30s"]);
        assert_eq!(code, Some(1), "{mode}: {err}\n{out}");
        for line in ["rtc: pm timer ok", "rtc: uip ok", "rtc: done"] {
            assert!(out.contains(line), "{mode}: {line}: {out}");
        }
        // The handler's register C reads: IRQF and the flag it waited for.
        let flags = |prefix: &str| {
            let l = out.lines().find(|l| l.starts_with(prefix)).unwrap();
            u8::from_str_radix(l.rsplit("0x").next().unwrap(), 16).unwrap()
        };
        assert_eq!(flags("rtc: alarm irq") & 0xa0, 0xa0, "{mode}: IRQF | AF: {out}");
        assert_eq!(
            flags("rtc: periodic irq") & 0xc0,
            0xc0,
            "{mode}: IRQF | PF: {out}"
        );
    }
}

#[test]
fn s3_suspends_every_vcpu_and_the_rtc_alarm_resumes_at_the_waking_vector() {
    for vcpus in [1, 2] {
        let (code, out, err, took) = run("s3", vcpus, "", &["--stats"]);
        // 0x21 from the real-mode resume routine: WAK_STS and RTC_STS set.
        assert_eq!(code, Some(67), "{vcpus} vCPUs: {err}\n{out}");
        assert!(
            out.contains("s3: suspending\ns3: resumed\n"),
            "{vcpus} vCPUs: {out}"
        );
        for v in 0..vcpus {
            assert!(
                err.contains(&format!("stats: vcpu{v} exit s3-suspend 1\n")),
                "vcpu{v} parked once: {err}"
            );
        }
        // The alarm fires at the next update: within a second or so.
        assert!(took < Duration::from_secs(30), "{took:?}");
    }
}

#[test]
fn s3_with_nothing_to_wake_it_ends_as_power_off() {
    let (code, out, err, _) = run("s3nowake", 2, "", &[]);
    assert_eq!(code, Some(0), "{err}\n{out}");
    assert!(out.ends_with("s3: suspending\n"), "{out}");
    assert!(err.contains("no wake source"), "{err}");
}

#[test]
fn suspended_vm_still_obeys_the_timeout() {
    // The alarm is armed but never matches: the VM stays suspended until
    // the machine timeout ends it (exit 6); the parked vCPUs are released
    // and joined.
    let (code, out, err, took) = run("s3never", 2, "", &["--timeout", "15s"]);
    assert_eq!(code, Some(6), "{err}\n{out}");
    assert!(out.ends_with("s3: suspending\n"), "{out}");
    assert!(err.contains("suspended to RAM (ACPI S3)"), "{err}");
    assert!(!err.contains("did not stop"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn the_rtc_thread_runs_under_its_own_seccomp_filter() {
    guests();
    let dir = TempDir::new("rtc-seccomp");
    let f = dir.write("halt.toml", &machine(&guest("halt"), 1, ""));
    let mut c = berth();
    c.env("BERTH_TEST_SYSCALL", "rtc").arg("run").arg(&f);
    let o = run_with_limit(c, LIMIT);
    assert_eq!(o.status.code(), Some(159), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("thread rtc made a forbidden system call"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn s3_without_a_waking_vector_resets_on_wake() {
    // With on_reboot = "restart" the machine boots again after the wake-up.
    guests();
    let dir = TempDir::new("s3novec");
    let text =
        machine(&guest("s3novec"), 1, "").replace("[machine]\n", "[machine]\non_reboot = \"restart\"\n");
    let f = dir.write("s3novec.toml", &text);
    let mut c = berth();
    c.args(["run", "--timeout", "10s"]).arg(&f);
    let child_out = run_with_limit(c, LIMIT);
    let out = stdout(&child_out);
    assert_eq!(child_out.status.code(), Some(6), "{}\n{out}", stderr(&child_out));
    assert!(
        out.matches("s3: suspending\ns3: start\n").count() >= 1,
        "woke into a fresh boot: {out}"
    );
    assert!(!out.contains("s3: resumed"), "{out}");
}
