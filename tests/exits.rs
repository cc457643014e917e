//! The vCPU loop's FAIL_ENTRY, UNKNOWN and SYSTEM_EVENT exits, each with its
//! defined outcome (message and exit code, README "Exit codes"). A guest
//! cannot provoke them on demand (and on this host the Hyper-V MSRs that
//! make KVM raise SYSTEM_EVENT on x86 #GP), so the test-only
//! `BERTH_TEST_EXIT` hook (debug builds, `outcome::injected_exit`) hands
//! vCPU 0 the exit in place of its first KVM_RUN; the dispatch is the real one.

mod common;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

/// apspin: prints `apspin: start`, `apspin: exiting`, debug-exit 0 (status 1).
fn run_injected(exit: &str, extra: &str) -> Run {
    let dir = TempDir::new("exits");
    let f = dir.write("m.toml", &machine(&guest("apspin"), 1, extra));
    let mut c = berth();
    c.arg("run")
        .arg(&f)
        .env("BERTH_TEST_EXIT", exit)
        .env("BERTH_LOG", "info");
    let o = run_with_limit(c, LIMIT);
    Run {
        code: o.status.code(),
        out: stdout(&o),
        err: stderr(&o),
    }
}

/// The injected exit stood in for the first KVM_RUN: the guest never ran.
fn never_ran(r: &Run) {
    assert!(!r.out.contains("apspin: start"), "{}\n{}", r.out, r.err);
}

#[test]
fn fail_entry_is_a_guest_fault_with_the_hardware_reason() {
    let r = run_injected("fail-entry", "");
    assert_eq!(r.code, Some(4), "{}", r.err);
    assert!(
        r.err.contains(
            "berth: guest fault on vcpu0: VM entry failed: hardware entry failure reason 0x80000021 on host cpu 0\n"
        ),
        "{}",
        r.err
    );
    // The register dump follows: the BSP's entry state (64-bit, rip = entry).
    assert!(r.err.contains("rip=0x0000000000100000"), "{}", r.err);
    never_ran(&r);
}

#[test]
fn unknown_exit_is_a_guest_fault_with_the_hardware_reason() {
    let r = run_injected("unknown", "");
    assert_eq!(r.code, Some(4), "{}", r.err);
    assert!(
        r.err.contains(
            "berth: guest fault on vcpu0: unhandled exit: KVM_EXIT_UNKNOWN, hardware exit reason 0xbe7"
        ),
        "{}",
        r.err
    );
    never_ran(&r);
}

#[test]
fn system_events_power_off_reset_or_fault() {
    // SHUTDOWN: a power-off, exit 0.
    let r = run_injected("system-event=shutdown", "");
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert!(r.err.contains("guest powered off"), "{}", r.err);
    never_ran(&r);
    // RESET with on_reboot = "exit" (the default): exit 0.
    let r = run_injected("system-event=reset", "");
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert!(r.err.contains("guest requested a reset"), "{}", r.err);
    assert!(!r.err.contains("rebuilding"), "{}", r.err);
    never_ran(&r);
    // CRASH: a guest fault, exit 4.
    let r = run_injected("system-event=crash", "");
    assert_eq!(r.code, Some(4), "{}", r.err);
    assert!(
        r.err.contains("berth: guest fault on vcpu0: guest reported a crash (KVM_SYSTEM_EVENT_CRASH): system event data []"),
        "{}",
        r.err
    );
    never_ran(&r);
    // A type berth does not know (KVM_SYSTEM_EVENT_SEV_TERM is 6 on x86): exit 4.
    let r = run_injected("system-event=6", "");
    assert_eq!(r.code, Some(4), "{}", r.err);
    assert!(
        r.err.contains(
            "berth: guest fault on vcpu0: unhandled exit: KVM_EXIT_SYSTEM_EVENT of type 6, data []"
        ),
        "{}",
        r.err
    );
    never_ran(&r);
}

#[test]
fn system_event_reset_with_on_reboot_restart_rebuilds_the_machine() {
    // The hook fires once per process: the rebuilt machine runs the guest,
    // which ends with debug-exit 0 (status 1).
    let dir = TempDir::new("exits-restart");
    let text =
        machine(&guest("apspin"), 1, "").replace("[machine]\n", "[machine]\non_reboot = \"restart\"\n");
    let f = dir.write("m.toml", &text);
    let mut c = berth();
    c.arg("run").arg(&f).env("BERTH_TEST_EXIT", "system-event=reset");
    let o = run_with_limit(c, LIMIT);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert_eq!(
        err.matches("berth: guest requested a reset; rebuilding the machine (on_reboot = \"restart\")")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(out.matches("apspin: start").count(), 1, "{out}");
    assert!(out.contains("apspin: exiting"), "{out}");
}

#[test]
fn an_unknown_injection_is_ignored_with_a_warning() {
    let r = run_injected("frob", "");
    assert_eq!(r.code, Some(1), "{}\n{}", r.out, r.err);
    assert!(r.err.contains("BERTH_TEST_EXIT=frob: not one of"), "{}", r.err);
    assert!(r.out.contains("apspin: exiting"), "{}", r.out);
}
