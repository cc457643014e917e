//! Snapshot and restore on real KVM: `--snapshot-at` then `berth restore`
//! continues the guest exactly (serial output and recorder digests equal an
//! uninterrupted run's) in both irqchip modes and for the testdev guest;
//! incremental snapshots hold the pages dirtied since their base; CMOS/RTC
//! state, a restored reset, shared file regions, `--snapshot-at`'s exact
//! stop. The refusals and failures are in `tests/snapshot_errors.rs`.

mod common;

use common::snapshot::*;
use common::*;

fn recorder_digests(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("stats: recorder "))
        .map(str::to_string)
        .collect()
}

/// On PVM the probe's level-triggered count is 2 or 3 in any run, restored
/// or not (tests/irq.rs: the EOI reaches the IOAPIC as a deferred request
/// and races the line change): there, that one number is not compared.
fn level_race(out: &str) -> String {
    if !host_is_pvm() {
        return out.to_string();
    }
    out.lines()
        .map(|l| match l.split_once(" fired=") {
            Some((head, n)) if l.starts_with("probe: level gsi=") && (n == "2" || n == "3") => {
                format!("{head} fired=2-or-3\n")
            }
            _ => format!("{l}\n"),
        })
        .collect()
}

/// Snapshot the probe at `marker`, restore in a new process: the two halves
/// of the serial output and the final recorder digests equal an
/// uninterrupted run's.
fn split_run_equals_whole(machine: &str, marker: &str) {
    let dir = TempDir::new("snap-eq");
    let snap = dir.0.join("snap");
    let cfg = config(machine);
    let cfg = cfg.to_str().unwrap();
    let whole = run(&["run", "--stats", cfg]);
    assert_eq!(whole.status.code(), Some(1), "{}", stderr(&whole));
    let first = run(&[
        "run",
        "--stats",
        "--snapshot-at",
        marker,
        "--snapshot-to",
        snap.to_str().unwrap(),
        cfg,
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("berth: snapshot written to"),
        "{}",
        stderr(&first)
    );
    assert!(stdout(&first).contains(marker));
    let second = run(&["restore", "--stats", snap.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert_eq!(
        level_race(&format!("{}{}", stdout(&first), stdout(&second))),
        level_race(&stdout(&whole)),
        "{machine} at {marker:?}"
    );
    assert_eq!(
        recorder_digests(&stderr(&second)),
        recorder_digests(&stderr(&whole))
    );
    assert!(!recorder_digests(&stderr(&whole)).is_empty());
}

#[test]
fn restore_continues_exactly_kernel_irqchip() {
    // After SMP bring-up; in the interrupt tests (line raised, vector
    // pending); just before the coalesced recorder writes.
    for marker in [
        "probe: smp online=2",
        "probe: ioapic pin=23",
        "probe: gsi=10",
        "probe: level gsi=12",
    ] {
        split_run_equals_whole("irq-kernel-2", marker);
    }
}

#[test]
fn restore_continues_exactly_split_irqchip() {
    for marker in [
        "probe: smp online=2",
        "probe: ioapic pin=23",
        "probe: gsi=10",
        "probe: level gsi=12",
    ] {
        split_run_equals_whole("irq-split-2", marker);
    }
}

#[test]
fn incremental_snapshot_holds_the_dirtied_pages() {
    let dir = TempDir::new("inc");
    let m = dir.write(
        "pages.toml",
        &machine(&guest("pages"), 1, "").replace("size = \"128MiB\"", "size = \"128MiB\"\ndirty_log = true"),
    );
    let base = dir.0.join("base");
    let o = run(&[
        "run",
        "--snapshot-at",
        "pages: one",
        "--snapshot-to",
        base.to_str().unwrap(),
        m.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sock = dir.0.join("s");
    let vm = Vm::start(
        &["restore", "--stats", base.to_str().unwrap()],
        &sock,
        "pages: two",
    );
    let st = vm.request(r#"{"cmd":"stats"}"#);
    assert_eq!(st["dirty_pages"]["slot0"], 10, "{st}");
    let inc = dir.0.join("inc");
    let r = vm.request(&format!(
        r#"{{"cmd":"snapshot","dir":"{}","incremental":true}}"#,
        inc.display()
    ));
    assert_eq!(r["ok"], true, "{r}");
    let pages: Vec<u64> = manifest(&inc)["memory"][0]["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    // The 8 pages written after "pages: one" (0x810000..0x818000), and the
    // guest's stack (0x101010..0x105010, its top two pages: `call fill` and
    // the print routines). Nothing else: the page tables' accessed/dirty
    // bits were already set before the base snapshot.
    let mut want: Vec<u64> = (0x810..0x818).collect();
    want.extend([0x104, 0x105]);
    want.sort();
    assert_eq!(pages, want);
    assert_eq!(std::fs::metadata(inc.join("mem-0.bin")).unwrap().len(), 10 * 4096);
    let r = vm.request(r#"{"cmd":"stop"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let out = vm.wait();
    // Everything dirtied was in the snapshot just written.
    let line = stderr(&out)
        .lines()
        .find(|l| l.starts_with("stats: dirty slot 0 region "))
        .map(str::to_string);
    assert!(
        line.as_deref().is_some_and(|l| l.ends_with(" pages 0")),
        "{line:?}"
    );
    // The chain restores: a full snapshot of it has both page sets.
    let sock = dir.0.join("s2");
    let vm = Vm::start(&["restore", inc.to_str().unwrap()], &sock, "");
    let full = dir.0.join("full");
    let r = vm.request(&format!(r#"{{"cmd":"snapshot","dir":"{}"}}"#, full.display()));
    assert_eq!(r["ok"], true, "{r}");
    vm.request(r#"{"cmd":"stop"}"#);
    vm.wait();
    let mem = std::fs::read(full.join("mem-0.bin")).unwrap();
    let q = |at: usize| u64::from_le_bytes(mem[at..at + 8].try_into().unwrap());
    for i in 0..8 {
        assert_eq!(q(0x800000 + i * 4096), 0x1111);
        assert_eq!(q(0x810000 + i * 4096), 0x2222);
    }
}

#[test]
fn restore_continues_the_testdev_guest() {
    // fw-cfg (selected item, DMA), pc-testdev (data register, iomem, flush
    // page) are restored as saved mid-test. (Not the PCI lines: the guest
    // ends two lines later, and a pause that arrives after the guest ended
    // fails the snapshot, as it must.)
    let dir = TempDir::new("snap-testdev");
    let m = dir.write(
        "m.toml",
        &(machine(&guest("testdev"), 1, "")
            .replace("cmdline = \"console=ttyS0\"", "cmdline = \"testdev.elf\"")
            .replace("size = \"128MiB\"", "size = \"64MiB\"")
            + "\n[[device]]\nkind = \"pc-testdev\"\n\n[[device]]\nkind = \"fw-cfg\"\n\n[[device]]\nkind = \"pci\"\n"),
    );
    let m = m.to_str().unwrap();
    let whole = run(&["run", m]);
    assert_eq!(whole.status.code(), Some(0), "{}", stderr(&whole));
    assert!(stdout(&whole).contains("testdev: failures=0"));
    for marker in [
        "testdev: iomem-q ok",
        "testdev: fwcfg-id ok",
        "testdev: dma-ctl ok",
        "testdev: dma-name ok",
    ] {
        let snap = dir.0.join(marker.replace([':', ' '], "-"));
        let snap = snap.to_str().unwrap();
        let first = run(&["run", "--snapshot-at", marker, "--snapshot-to", snap, m]);
        assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
        let second = run(&["restore", snap]);
        assert_eq!(second.status.code(), Some(0), "{marker}: {}", stderr(&second));
        assert_eq!(
            format!("{}{}", stdout(&first), stdout(&second)),
            stdout(&whole),
            "{marker}"
        );
    }
}

/// The CMOS/RTC is saved (it was once silently left out: its bus entry is
/// the RTC timer wrapper): a snapshot after the RTC alarm holds register B
/// with AIE set, and the restored guest goes on to its periodic interrupt.
#[test]
fn cmos_rtc_state_is_saved_and_restored() {
    guests();
    let dir = TempDir::new("snap-rtc");
    let f = dir.write("rtc.toml", &machine(&guest("rtc"), 1, ""));
    let snap = dir.0.join("snap");
    snapshot_at("rtc: alarm irq", &snap, &f);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap.join("state.json")).unwrap()).unwrap();
    let cmos = state["devices"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("cmos@pio:0x70"))
        .unwrap_or_else(|| {
            panic!(
                "no cmos state: {:?}",
                state["devices"].as_object().unwrap().keys()
            )
        })
        .1
        .to_string();
    assert!(cmos.contains("\"ram\""), "{cmos}");
    let v: serde_json::Value = serde_json::from_str(&cmos).unwrap();
    let reg_b = v["ram"][0x0b].as_u64().unwrap();
    assert_eq!(reg_b & 0x20, 0x20, "register B has AIE: {cmos}");
    let second = run(&["restore", "--timeout", "30s", snap.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(stdout(&second).contains("rtc: done"), "{}", stdout(&second));
}

/// A restored machine follows its own `on_reboot`: with "restart", the
/// restored guest's triple fault boots the machine afresh (its banner comes
/// again), as `berth run` does, until the timeout.
#[test]
fn a_restored_guest_reset_follows_on_reboot_restart() {
    guests();
    let dir = TempDir::new("snap-reboot");
    let text = machine(&guest("triple"), 1, "").replace("vcpus = 1", "vcpus = 1\non_reboot = \"restart\"");
    let f = dir.write("triple.toml", &text);
    let snap = dir.0.join("snap");
    snapshot_at("triple: start", &snap, &f);
    let second = run(&["restore", "--timeout", "3s", snap.to_str().unwrap()]);
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(6), "restarts until the timeout: {err}");
    assert!(
        stdout(&second).contains("triple: start"),
        "booted again: {}",
        stdout(&second)
    );
    assert!(err.contains("rebuilding the machine"), "{err}");
}

/// A region the machine file shares with its file comes back as a private
/// copy of the snapshot: the restore says so and never writes the file.
#[test]
fn a_shared_file_region_is_restored_private_and_said_so() {
    guests();
    let dir = TempDir::new("snap-shared");
    let shm = dir.0.join("shm.bin");
    std::fs::write(&shm, vec![0x5au8; 2 << 20]).unwrap();
    let extra = format!(
        "\n[[memory]]\nname = \"shm\"\nguest_addr = 0x10000000\nsize = \"2MiB\"\nshared = true\nfile = \"{}\"\n",
        shm.display()
    );
    let f = dir.write("spin.toml", &machine(&guest("spin"), 1, &extra));
    let snap = dir.0.join("snap");
    snapshot_at("spin: ready", &snap, &f);
    let second = run(&["restore", "--timeout", "500ms", snap.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(6), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("memory region \"shm\" (shared = true")
            && stderr(&second).contains("restored as a private copy"),
        "{}",
        stderr(&second)
    );
    assert_eq!(std::fs::read(&shm).unwrap(), vec![0x5au8; 2 << 20]);
}

/// `--snapshot-at` stops the guest exactly after the marker line, even when
/// the guest prints on at once: the snapshot run's output ends with the
/// marker, and the restore's output begins with the next line.
#[test]
fn snapshot_at_stops_exactly_after_the_marker_line() {
    guests();
    let dir = TempDir::new("snap-exact");
    let m = repo().join("bench/machines/snap-pvh.toml");
    for i in 0..5 {
        let snap = dir.0.join(format!("snap{i}"));
        let first = run(&[
            "run",
            "--snapshot-at",
            "bench: ready",
            "--snapshot-to",
            snap.to_str().unwrap(),
            m.to_str().unwrap(),
        ]);
        assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
        assert_eq!(stdout(&first), "bench: ready\n");
        let second = run(&["restore", snap.to_str().unwrap()]);
        assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
        assert_eq!(stdout(&second), "bench: resumed\n");
    }
}
