//! Foundation: the real binary against real KVM — the probe boots and
//! reports exactly the plan's machine; digests are reproducible; bad input
//! never creates a VM.

mod common;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn plan_json(file: &str) -> serde_json::Value {
    guests();
    let o = run_with_limit(
        {
            let mut c = berth();
            c.args(["plan", "--format", "json", file]);
            c
        },
        LIMIT,
    );
    assert!(o.status.success(), "berth plan failed: {}", stderr(&o));
    let text = stdout(&o);
    let json_end = text.rfind("plan-sha256:").unwrap();
    serde_json::from_str(&text[..json_end]).unwrap()
}

fn hex(v: &serde_json::Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn run_default(extra: &[&str]) -> std::process::Output {
    guests();
    let mut c = berth();
    c.arg("run").args(extra).arg("configs/default.toml");
    run_with_limit(c, LIMIT)
}

#[test]
fn probe_boots_and_reports_the_planned_machine() {
    let plan = plan_json("configs/default.toml");
    let o = run_default(&[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("probe: ")).collect();
    assert_eq!(lines.first(), Some(&"probe: berth probe v1"), "{out}");
    assert_eq!(lines.last(), Some(&"probe: done"), "{out}");

    let cmdline = plan["kernel"]["cmdline"].as_str().unwrap();
    assert!(
        lines.contains(&format!("probe: cmdline \"{cmdline}\"").as_str()),
        "{out}"
    );

    let vendor = lines
        .iter()
        .find_map(|l| l.strip_prefix("probe: vendor "))
        .expect("vendor line");
    assert!(
        ["GenuineIntel", "AuthenticAMD", "HygonGenuine"].contains(&vendor),
        "vendor {vendor}"
    );

    let want: Vec<String> = plan["e820"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let ty = match e["kind"].as_str().unwrap() {
                "ram" => 1,
                "reserved" => 2,
                k => panic!("kind {k}"),
            };
            format!(
                "probe: e820 addr={:#018x} size={:#018x} type={ty}",
                hex(&e["addr"]),
                hex(&e["size"])
            )
        })
        .collect();
    let got: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("probe: e820 addr="))
        .map(|l| l.to_string())
        .collect();
    assert_eq!(got, want, "e820 map seen by the guest differs from the plan");
    assert!(lines.contains(&format!("probe: e820 count={}", want.len()).as_str()));
}

#[test]
fn boot_digest_is_reproducible() {
    let digest = |o: &std::process::Output| {
        stderr(o)
            .lines()
            .find_map(|l| l.strip_prefix("boot-sha256:").map(str::to_string))
            .expect("digest line")
    };
    let a = run_default(&["--boot-digest"]);
    let b = run_default(&["--boot-digest"]);
    assert_eq!(a.status.code(), Some(1));
    assert_eq!(b.status.code(), Some(1));
    let (da, db) = (digest(&a), digest(&b));
    assert_eq!(da.len(), 64);
    assert_eq!(da, db);
}

#[test]
fn plan_output_is_byte_identical_across_runs() {
    guests();
    let plan = || {
        let mut c = berth();
        c.args(["plan", "configs/default.toml"]);
        run_with_limit(c, LIMIT)
    };
    let (a, b) = (plan(), plan());
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let text = stdout(&a);
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("plan-sha256:") && last.len() == "plan-sha256:".len() + 64,
        "{last}"
    );
    // JSON carries the same digest line.
    let mut c = berth();
    c.args(["plan", "--format", "json", "configs/default.toml"]);
    let j = run_with_limit(c, LIMIT);
    assert_eq!(stdout(&j).lines().last().unwrap(), last);
}

#[test]
fn expect_plan_guards_the_boot() {
    guests();
    let mut c = berth();
    c.args(["plan", "configs/default.toml"]);
    let o = run_with_limit(c, LIMIT);
    let digest = stdout(&o)
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("plan-sha256:")
        .to_string();

    let good = run_default(&["--expect-plan", &digest]);
    assert_eq!(good.status.code(), Some(1), "{}", stderr(&good));

    let bad = run_default(&["--expect-plan", &"0".repeat(64)]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("refusing to boot"), "{}", stderr(&bad));
    assert!(stdout(&bad).is_empty());
}

#[test]
fn bad_machine_file_exits_2_and_creates_no_vm() {
    guests();
    let dir = TempDir::new("bad");
    let probe = guest("probe");
    let text = machine(&probe, 1, "").replace("size = \"128MiB\"", "size = \"128MiB\"\ncolour = \"red\"");
    let f = dir.write("bad.toml", &text);
    let (code, err, created) = traced(&["run", f.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!created, "a VM was created for a bad machine file:\n{err}");
    assert!(
        err.contains(&format!(
            "{}:7:1: memory[0].colour: unknown field `colour`",
            f.display()
        )),
        "{err}"
    );

    // The sanity check of the check: a good file does create a VM under strace.
    let good = dir.write("good.toml", &machine(&probe, 1, ""));
    let (code, err, created) = traced(&["run", good.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(created, "strace did not see KVM_CREATE_VM:\n{err}");
}

#[test]
fn overlapping_regions_name_the_field() {
    guests();
    let dir = TempDir::new("overlap");
    let text = machine(&guest("probe"), 1, "").replace(
        "[kernel]",
        "[[memory]]\nguest_addr = 0x4000000\nsize = \"1GiB\"\n\n[kernel]",
    );
    let f = dir.write("o.toml", &text);
    let (code, err, created) = traced(&["check", f.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(!created);
    assert!(
        err.contains(":9:14: memory[1].guest_addr: region 0x4000000..0x44000000 overlaps memory[0]"),
        "{err}"
    );
}

#[test]
fn kernel_errors_exit_5_before_any_vm() {
    guests();
    let dir = TempDir::new("kernel");
    // Missing file.
    let f = dir.write("missing.toml", &machine(&dir.0.join("nope.elf"), 1, ""));
    let (code, err, created) = traced(&["run", f.to_str().unwrap()]);
    assert_eq!(code, Some(5), "{err}");
    assert!(!created);
    assert!(err.contains("kernel.path: cannot read kernel image"), "{err}");
    // Not a kernel.
    let junk = dir.write("junk.bin", "this is not a kernel image at all");
    let f = dir.write("junk.toml", &machine(&junk, 1, ""));
    let (code, err, created) = traced(&["run", f.to_str().unwrap()]);
    assert_eq!(code, Some(5), "{err}");
    assert!(!created);
    assert!(err.contains("unknown format"), "{err}");
    // Does not fit: the probe loads at 1 MiB but RAM ends there.
    let text = machine(&guest("probe"), 1, "").replace("\"128MiB\"", "\"1MiB\"");
    let f = dir.write("small.toml", &text);
    let (code, err, created) = traced(&["run", f.to_str().unwrap()]);
    assert_eq!(code, Some(5), "{err}");
    assert!(!created, "{err}");
}

#[test]
fn check_subcommand() {
    guests();
    let mut c = berth();
    c.args(["check", "configs/default.toml"]);
    let o = run_with_limit(c, LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut c = berth();
    c.args(["check", "configs/does-not-exist.toml"]);
    let o = run_with_limit(c, LIMIT);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read machine file"));
}

#[test]
fn caps_reports_the_host() {
    let mut c = berth();
    c.arg("caps");
    let o = run_with_limit(c, LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("api-version: 12"), "{out}");
    assert!(out.contains(&format!("pvm: {}", if host_is_pvm() { "yes" } else { "no" })));
    assert!(
        out.lines()
            .any(|l| l.starts_with("cap IRQCHIP") && l.contains("present")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("max-vcpus: ")));
}

#[test]
fn stats_count_exits_and_device_accesses() {
    let o = run_default(&["--stats"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let out = stdout(&o);
    let com1 = err
        .lines()
        .find(|l| l.starts_with("stats: device com1 "))
        .expect("com1 stats");
    let writes: u64 = com1.rsplit(' ').next().unwrap().parse().unwrap();
    // Every byte the probe printed was one THR write.
    assert_eq!(writes as usize, out.len(), "{com1}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("stats: device debug-exit@0xf4 ") && l.ends_with("writes 1")),
        "{err}"
    );
    assert!(
        err.contains(&format!("stats: serial bytes-out {} bytes-dropped 0", out.len())),
        "{err}"
    );
    assert!(err.lines().any(|l| l.starts_with("stats: exit io ")), "{err}");
}

#[test]
fn serial_to_file() {
    guests();
    let dir = TempDir::new("serial");
    let f = dir.write(
        "f.toml",
        &machine(
            &guest("probe"),
            1,
            "\n[serial]\noutput = { file = \"console.log\" }\n",
        ),
    );
    let o = run_with_limit(
        {
            let mut c = berth();
            c.arg("run").arg(&f);
            c
        },
        LIMIT,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    let log = std::fs::read_to_string(dir.0.join("console.log")).unwrap();
    assert!(
        log.starts_with("probe: berth probe v1\n") && log.ends_with("probe: done\n"),
        "{log}"
    );
}

#[test]
fn smp_machine_boots_with_parked_aps() {
    guests();
    let dir = TempDir::new("smp");
    for n in [1, 4] {
        let f = dir.write(&format!("smp{n}.toml"), &machine(&guest("probe"), n, ""));
        let o = run_with_limit(
            {
                let mut c = berth();
                c.arg("run").arg("--stats").arg(&f);
                c
            },
            LIMIT,
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        // Every vCPU thread reported its counters: all were joined.
        let err = stderr(&o);
        assert!(!err.contains("did not stop"), "{err}");
        // Every AP came online, then parked: halted with interrupts on, all
        // in the same `hlt` loop, when the BSP ended the run.
        let out = stdout(&o);
        for apic in 0..n {
            assert!(
                out.lines().any(|l| l == format!("probe: cpu apic={apic} online")),
                "{out}"
            );
        }
        assert!(
            out.lines().any(|l| l == format!("probe: smp online={n}")),
            "{out}"
        );
        let mut ap_rips = std::collections::BTreeSet::new();
        for v in 1..n {
            let state = err
                .lines()
                .find_map(|l| l.strip_prefix(&format!("stats: state vcpu{v}: rip ")))
                .unwrap_or_else(|| panic!("no state for vcpu{v}\n{err}"));
            assert!(state.ends_with(", halted, interrupts on"), "vcpu{v}: {state}");
            ap_rips.insert(state.split(',').next().unwrap().to_string());
        }
        assert!(ap_rips.len() <= 1, "APs parked in different places: {ap_rips:?}");
        assert_eq!(err.matches("stats: state vcpu").count(), n as usize, "{err}");
    }
}

/// A number after `key ` in `line` (e.g. "wall-ms 1.234").
fn field(line: &str, key: &str) -> f64 {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        }
    }
    panic!("no `{key}` in {line:?}")
}

#[test]
fn boot_timer_reports_time_since_start_and_the_start_path() {
    // The line guest prints one line, writes 123 to 0xd0000000, then exits.
    for image in ["bench-line-pvh", "bench-line-mb"] {
        let dir = TempDir::new("boot-timer");
        let f = dir.write(
            "m.toml",
            &machine(&guest(image), 1, "\n[[device]]\nkind = \"boot-timer\"\n"),
        );
        let started = std::time::Instant::now();
        let o = run_with_limit(
            {
                let mut c = berth();
                c.arg("run").arg("--stats").arg(&f);
                c
            },
            LIMIT,
        );
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{image}: {err}");
        assert_eq!(stdout(&o), "bench: first line\n", "{image}");
        let told = err
            .lines()
            .find(|l| l.starts_with("berth: boot-timer: "))
            .unwrap_or_else(|| panic!("{image}: no boot-timer line in {err}"));
        let stat = err
            .lines()
            .find(|l| l.starts_with("stats: boot-timer "))
            .unwrap_or_else(|| panic!("{image}: no boot-timer stats in {err}"));
        let at = field(stat, "wall-ms");
        assert!(
            at > 0.0 && at < wall_ms,
            "{image}: {stat} (whole run {wall_ms:.1} ms)"
        );
        assert!(field(stat, "cpu-ms") > 0.0, "{stat}");
        assert_eq!(field(stat, "signals"), 1.0, "{stat}");
        assert!(
            told.contains(&format!("{at:.3} ms since start")),
            "{told} vs {stat}"
        );
        // The start path: every step marked, in order, before the guest's signal.
        let steps: Vec<(String, f64)> = err
            .lines()
            .filter(|l| l.starts_with("stats: startup "))
            .map(|l| {
                (
                    l.split_whitespace().nth(2).unwrap().to_string(),
                    field(l, "at-ms"),
                )
            })
            .collect();
        let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["config", "plan", "1-2", "3", "4", "5", "6-7", "8-9", "10", "11", "12-14", "15", "16", "17"],
            "{err}"
        );
        assert!(steps.windows(2).all(|w| w[0].1 <= w[1].1), "{steps:?}");
        assert!(steps.last().unwrap().1 < at, "{steps:?} vs boot timer {at}");
    }
}

#[test]
fn null_device_takes_every_write_without_an_unhandled_access() {
    // The pio guest writes port 0x80 100000 times; the mmio guest stores to
    // 0xd0001000 100000 times.
    let cases = [
        ("bench-pio-pvh", "port = 0x80\nsize = 1", "null@0x80 pio 0x80+0x1"),
        (
            "bench-mmio-pvh",
            "guest_addr = 0xd0001000\nsize = \"4KiB\"",
            "null@0xd0001000 mmio 0xd0001000+0x1000",
        ),
    ];
    for (image, window, stat) in cases {
        let dir = TempDir::new("null");
        let f = dir.write(
            "m.toml",
            &machine(
                &guest(image),
                1,
                &format!("\n[[device]]\nkind = \"null\"\n{window}\n"),
            ),
        );
        let o = run_with_limit(
            {
                let mut c = berth();
                c.arg("run").arg("--stats").arg(&f);
                c
            },
            LIMIT,
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{image}: {err}");
        assert!(
            err.contains(&format!("stats: device {stat} reads 0 writes 100000\n")),
            "{image}: {err}"
        );
        assert!(
            err.contains("stats: unhandled pio-reads 0 pio-writes 0 mmio-reads 0 mmio-writes 0"),
            "{image}: {err}"
        );
    }
}

#[test]
fn host_limits_and_missing_capabilities_exit_3_before_any_vm() {
    guests();
    let dir = TempDir::new("hostlimits");
    let probe = guest("probe");
    // Guest RAM just beyond the host CPU's physical address width (as
    // `berth caps` reports it; the machine file allows up to 52 bits).
    let caps = run_with_limit(
        {
            let mut c = berth();
            c.arg("caps");
            c
        },
        LIMIT,
    );
    let host_bits: u32 = stdout(&caps)
        .lines()
        .find_map(|l| l.strip_prefix("phys-addr-bits: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        host_bits < 52,
        "a {host_bits}-bit host leaves no room to test the limit"
    );
    let at = 1u64 << host_bits;
    let bits = dir.write(
        "bits.toml",
        &machine(&probe, 1, "").replace(
            "\n[kernel]",
            &format!("\n[[memory]]\nname = \"far\"\nguest_addr = {at:#x}\nsize = \"4KiB\"\n[kernel]"),
        ),
    );
    let (code, err, created) = run_and_trace(&["run", bits.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(!created, "{err}");
    assert!(
        err.contains(&format!(
            "memory region \"far\" (memslot 1) ends at {:#x}, beyond this host's {host_bits}-bit guest physical address space",
            at + 4096
        )),
        "{err}"
    );
    // Each optional capability a machine needs, switched off: the error
    // names it, the Linux version that has it and what needs it.
    let readonly = dir.write(
        "ro.toml",
        &machine(&probe, 1, "").replace(
            "\n[kernel]",
            "\n[[memory]]\nguest_addr = 0x2000_0000\nsize = \"4KiB\"\nreadonly = true\n[kernel]",
        ),
    );
    let readonly = readonly.to_str().unwrap();
    for (cap, file, want) in [
        (
            "SPLIT_IRQCHIP",
            "configs/irq-split-1.toml",
            "kvm does not support split irqchip (KVM_CAP_SPLIT_IRQCHIP), needs Linux >= 4.5; required by [irqchip] mode = \"split\"",
        ),
        (
            "COALESCED_PIO",
            "configs/irq-kernel-1.toml",
            "kvm does not support coalesced PIO (KVM_CAP_COALESCED_PIO), needs Linux >= 4.20; required by [[coalesced_pio]]",
        ),
        (
            "READONLY_MEM",
            readonly,
            "kvm does not support read-only memslots (KVM_CAP_READONLY_MEM), needs Linux >= 3.16; required by memory readonly = true",
        ),
    ] {
        let (code, err, created) = run_and_trace(&["run", "--disable-cap", cap, file]);
        assert_eq!(code, Some(3), "{cap}: {err}");
        assert!(!created, "{cap}: {err}");
        assert!(err.contains(&format!("berth: {want}")), "{cap}: {err}");
    }
    // The vCPU, memslot and GSI limits: this host's (1024, 32764, 4096) are
    // above what a machine file may ask for, so `--host-limit` lowers them.
    let two = dir.write("two.toml", &machine(&probe, 2, ""));
    let two = two.to_str().unwrap();
    for (limit, file, want) in [
        (
            "vcpus=1",
            two,
            "machine.vcpus = 2 exceeds this host's KVM limit of 1 vCPUs (KVM_CAP_MAX_VCPUS)",
        ),
        (
            "memslots=1",
            readonly,
            "2 memory regions exceed this host's KVM limit of 1 memslots (KVM_CAP_NR_MEMSLOTS)",
        ),
        (
            "gsis=24",
            "configs/irq-kernel-1.toml",
            "GSI 40 is beyond this host's 24 GSIs (KVM_CAP_IRQ_ROUTING)",
        ),
    ] {
        let (code, err, created) = run_and_trace(&["run", "--host-limit", limit, file]);
        assert_eq!(code, Some(3), "{limit}: {err}");
        assert!(!created, "{limit}: {err}");
        assert!(err.contains(&format!("berth: {want}")), "{limit}: {err}");
    }
    // At the limit the machine runs; a bad limit is a usage error.
    let (code, err, _) = run_and_trace(&["run", "--host-limit", "vcpus=2", two]);
    assert_eq!(code, Some(1), "{err}");
    let (code, err, created) = run_and_trace(&["run", "--host-limit", "cpus=1", two]);
    assert_eq!((code, created), (Some(2), false), "{err}");
    assert!(
        err.contains("berth: --host-limit cpus=1: expected vcpus=N, memslots=N or gsis=N"),
        "{err}"
    );
}

#[test]
fn string_port_io_is_count_items_of_size_bytes() {
    // guests/test/strio.S: rep outsb (16 x 1 byte), rep outsl (2 x 4 bytes)
    // to recorders, rep insb (8 x 1 byte) from an unclaimed port.
    guests();
    let dir = TempDir::new("strio");
    let devices = "\n[[device]]\nkind = \"recorder\"\nport = 0x80\nsize = 1\n\
                   \n[[device]]\nkind = \"recorder\"\nport = 0x84\nsize = 4\n";
    let f = dir.write("strio.toml", &machine(&guest("strio"), 1, devices));
    let mut c = berth();
    c.args(["run", "--stats"]).arg(&f);
    let o = run_with_limit(c, LIMIT);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let bytes = recorder_digest(b"0123456789abcdef".iter().map(|&b| (0, 1, u64::from(b))));
    assert!(
        err.contains(&format!("stats: recorder recorder@0x80 writes 16 sha256 {bytes}")),
        "{err}"
    );
    let dwords = recorder_digest([0x1122_3344u64, 0x5566_7788].into_iter().map(|v| (0, 4, v)));
    assert!(
        err.contains(&format!("stats: recorder recorder@0x84 writes 2 sha256 {dwords}")),
        "{err}"
    );
    // Eight unclaimed one-byte reads, each all-ones.
    assert!(out.lines().any(|l| l == "strio: in=ffffffffffffffff"), "{out}");
    assert!(
        err.contains("stats: unhandled pio-reads 8 pio-writes 0 mmio-reads 0 mmio-writes 0"),
        "{err}"
    );
}
