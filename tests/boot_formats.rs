//! Every entry format berth supports, booted with the probe built for it,
//! and the report compared with the plan; ACPI power-off, i8042 reset,
//! restart, and the firmware-table switch.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn hexfield(line: &str, key: &str) -> u64 {
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap();
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

/// A copy of `configs/NAME` in `dir` with absolute paths and `edit` applied.
fn variant(dir: &TempDir, name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    guests();
    let text = std::fs::read_to_string(repo().join("configs").join(name))
        .unwrap()
        .replace("../guests/", &format!("{}/", repo().join("guests").display()));
    dir.write(name, &edit(text))
}

fn boot(file: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = berth();
    c.arg("run").args(args).arg(file);
    let o = run_with_limit(c, LIMIT);
    (o.status.code(), stdout(&o), stderr(&o))
}

/// The probe's report matches the plan: protocol, command line, e820, CPUs.
fn check_report(file: &std::path::Path, protocol: &str) -> (Value, String) {
    let plan = plan_of(file);
    assert_eq!(plan["boot"]["protocol"], protocol);
    let (code, out, err) = boot(file, &[]);
    assert_eq!(code, Some(1), "{protocol}: {err}\n{out}");
    let short = match protocol {
        "linux-64bit" | "linux-bzimage" => "linux",
        p => p,
    };
    assert!(out.contains(&format!("probe: protocol {short}\n")), "{out}");
    // Multiboot: `<kernel path as written> <cmdline>` (QEMU's convention).
    let cmdline = plan["kernel"]["cmdline"].as_str().unwrap();
    let guest_cmdline = match protocol {
        "multiboot" => format!("{} {cmdline}", plan["kernel"]["path"].as_str().unwrap()),
        _ => cmdline.to_string(),
    };
    if protocol == "multiboot" {
        assert_eq!(plan["kernel"]["guest_cmdline"], guest_cmdline.as_str());
    }
    assert!(
        out.contains(&format!("probe: cmdline \"{guest_cmdline}\"\n")),
        "{out}"
    );
    let want: Vec<String> = plan["e820"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let t = if e["kind"] == "ram" { 1 } else { 2 };
            format!(
                "probe: e820 addr={:#018x} size={:#018x} type={t}",
                hexnum(&e["addr"]),
                hexnum(&e["size"])
            )
        })
        .collect();
    let got: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("probe: e820 addr="))
        .collect();
    assert_eq!(got, want, "{protocol}: the guest's memory map is the plan's");
    let n = plan["machine"]["vcpus"].as_u64().unwrap();
    assert!(out.contains(&format!("probe: smp online={n}")), "{out}");
    (plan, out)
}

#[test]
fn every_entry_format_reports_the_planned_machine() {
    let dir = TempDir::new("formats");
    check_report(&variant(&dir, "default.toml", |t| t), "linux-64bit");
    let (_, out) = check_report(&variant(&dir, "probe-pvh.toml", |t| t), "pvh");
    assert!(
        out.contains("probe: pvh rsdp=0x00000000000e0000 modules=0"),
        "{out}"
    );
    let (_, out) = check_report(&variant(&dir, "multiboot.toml", |t| t), "multiboot");
    assert!(
        out.contains("probe: multiboot mem_lower=639 mem_upper=130048 mods=0"),
        "{out}"
    );
}

#[test]
fn initrd_lands_in_the_planned_window_for_every_protocol() {
    let dir = TempDir::new("initrd");
    let data: Vec<u8> = (0..3 * 4096 + 123).map(|i| (i % 251) as u8).collect();
    let initrd = dir.0.join("initrd.img");
    std::fs::write(&initrd, &data).unwrap();
    let size = data.len() as u64;
    for (name, proto) in [
        ("default.toml", "linux-64bit"),
        ("probe-pvh.toml", "pvh"),
        ("multiboot.toml", "multiboot"),
    ] {
        let f = variant(&dir, name, |t| {
            t.replace(
                "[kernel]\n",
                &format!("[kernel]\ninitrd = \"{}\"\n", initrd.display()),
            )
        });
        let (plan, out) = check_report(&f, proto);
        let (lo, hi) = (
            hexnum(&plan["boot"]["initrd"]["window_start"]),
            hexnum(&plan["boot"]["initrd"]["window_end"]),
        );
        let line = out
            .lines()
            .find(|l| l.starts_with("probe: initrd ") || l.starts_with("probe: module "))
            .unwrap_or_else(|| panic!("{proto}: no initrd/module line\n{out}"));
        let start = hexfield(line, "start");
        let len = if line.contains(" size=") {
            hexfield(line, "size")
        } else {
            hexfield(line, "end") - start
        };
        assert_eq!(len, size, "{proto}: {line}");
        assert_eq!(start % 4096, 0, "{proto}: page aligned: {line}");
        assert!(
            lo <= start && start + size <= hi,
            "{proto}: {line} outside {lo:#x}..{hi:#x}"
        );
        // Top-down: as high as the window allows.
        assert!(
            start + size + 4096 > hi,
            "{proto}: {line} is not at the top of {lo:#x}..{hi:#x}"
        );
        if proto == "multiboot" {
            assert!(
                line.contains(&format!("string \"{}\"", initrd.display())),
                "{line}"
            );
        }
    }
}

#[test]
fn acpi_poweroff_and_i8042_reset_end_berth_with_0() {
    let dir = TempDir::new("power");
    for (mode, line) in [
        ("acpi", "probe: poweroff pm1a_cnt=0x0604"),
        ("reset", "probe: reset"),
    ] {
        for name in ["default.toml", "probe-pvh.toml"] {
            let f = variant(&dir, name, |t| {
                t.replace("cmdline = \"", &format!("cmdline = \"probe.exit={mode} "))
                    .replace("probe.exit=debug", "")
            });
            let (code, out, err) = boot(&f, &[]);
            assert_eq!(code, Some(0), "{name} {mode}: {err}\n{out}");
            assert!(out.contains(line), "{name} {mode}: {out}");
        }
    }
}

#[test]
fn on_reboot_restart_boots_the_machine_again() {
    let dir = TempDir::new("restart");
    let f = variant(&dir, "default.toml", |t| {
        t.replace("vcpus = 2", "vcpus = 2\non_reboot = \"restart\"")
            .replace("cmdline = \"", "cmdline = \"probe.exit=reset ")
    });
    let (code, out, err) = boot(&f, &["--timeout", "3s"]);
    assert_eq!(code, Some(6), "restarts until the timeout: {err}");
    let banners = out.matches("probe: berth probe v1").count();
    assert!(banners >= 2, "booted {banners} times\n{err}");
    assert!(err.contains("rebuilding the machine"), "{err}");
}

#[test]
fn tables_switch_decides_what_the_guest_finds() {
    let dir = TempDir::new("tables");
    let f = variant(&dir, "default.toml", |t| {
        t.replace("vcpus = 2", "vcpus = 2\ntables = \"acpi\"")
    });
    let (code, out, _) = boot(&f, &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("probe: mptable missing"), "{out}");
    let f = variant(&dir, "default.toml", |t| {
        t.replace("vcpus = 2", "vcpus = 2\ntables = \"mptable\"")
            .replace("cmdline = \"", "cmdline = \"probe.exit=acpi ")
    });
    let (code, out, _) = boot(&f, &[]);
    assert!(out.contains("probe: acpi missing"), "{out}");
    assert_eq!(code, Some(1 + 2 * 0x7e), "falls back to debug-exit 0x7e");
    assert!(
        out.contains("probe: smp online=2"),
        "the MP table still describes the CPUs: {out}"
    );
}
