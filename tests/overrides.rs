//! Command-line overrides (`--kernel`, `--append`, `--initrd`, `--vcpus`,
//! `--memory`): applied before planning, shown in the plan, and errors name
//! the option.

mod common;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn berth_out(args: &[&str]) -> std::process::Output {
    let mut c = berth();
    c.args(args);
    run_with_limit(c, LIMIT)
}

#[test]
fn the_plan_shows_every_override() {
    guests();
    let o = berth_out(&[
        "plan",
        "--format",
        "json",
        "configs/default.toml",
        "--vcpus",
        "4",
        "--memory",
        "512MiB",
        "--append",
        "x y",
        "--kernel",
        "guests/probe-pvh.elf",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let json = text.rsplit_once("plan-sha256:").unwrap().0;
    let p: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(p["machine"]["vcpus"], 4);
    assert_eq!(p["cpus"].as_array().unwrap().len(), 4);
    assert_eq!(p["memslots"][0]["size"], "0x0000000020000000");
    assert_eq!(p["kernel"]["cmdline"], "x y");
    assert_eq!(p["kernel"]["path"], "guests/probe-pvh.elf");
    // The file said format = "elf"; a new image is detected.
    assert_eq!(p["kernel"]["format"], "pvh");
    // Without overrides the plan is the file's.
    let plain = stdout(&berth_out(&["plan", "configs/default.toml"]));
    assert_ne!(
        plain.rsplit_once("plan-sha256:").unwrap().1,
        text.rsplit_once("plan-sha256:").unwrap().1
    );
}

#[test]
fn the_guest_sees_the_overrides() {
    guests();
    let o = berth_out(&[
        "run",
        "configs/default.toml",
        "--kernel",
        "guests/probe-pvh.elf",
        "--append",
        "probe.greeting=overridden",
        "--vcpus",
        "3",
        "--memory",
        "192MiB",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
    assert!(out.contains("probe: protocol pvh"), "{out}");
    assert!(
        out.contains("probe: cmdline \"probe.greeting=overridden\""),
        "{out}"
    );
    // 192 MiB: the RAM above 1 MiB ends at 0xc000000.
    assert!(
        out.contains("probe: e820 addr=0x0000000000100000 size=0x000000000bf00000 type=1"),
        "{out}"
    );
    assert!(out.contains("probe: cpus=3 "), "{out}");
    assert!(out.contains("probe: smp online=3"), "{out}");
}

#[test]
fn errors_name_the_option_with_the_right_exit_code() {
    guests();
    for (args, code, want) in [
        (
            &["--vcpus", "300"][..],
            2,
            "berth: --vcpus: must be between 1 and 254, got 300",
        ),
        (
            &["--kernel", "/nonexistent/k.elf"][..],
            5,
            "berth: --kernel: cannot read kernel image /nonexistent/k.elf",
        ),
        (&["--initrd", "/nonexistent/initrd"][..], 5, "berth: --initrd: "),
        (&["--memory", "4095"][..], 2, "berth: --memory: "),
        (&["--memory", "64 MB"][..], 2, "--memory <SIZE>"),
    ] {
        for cmd in ["check", "plan", "run"] {
            let mut all = vec![cmd, "configs/default.toml"];
            all.extend_from_slice(args);
            let o = berth_out(&all);
            assert_eq!(o.status.code(), Some(code), "{all:?}: {}", stderr(&o));
            assert!(stderr(&o).contains(want), "{all:?}: {}", stderr(&o));
        }
    }
}

#[test]
fn memory_needs_a_machine_with_one_region() {
    guests();
    let dir = TempDir::new("overrides");
    let text = machine(&guest("halt"), 1, "").replace(
        "[kernel]",
        "[[memory]]\nguest_addr = 0x10000000\nsize = \"64MiB\"\n\n[kernel]",
    );
    let f = dir.write("two.toml", &text);
    let o = berth_out(&["check", f.to_str().unwrap(), "--memory", "1GiB"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--memory: the machine file has 2 [[memory]] regions"),
        "{}",
        stderr(&o)
    );
}
