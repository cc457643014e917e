//! machine_file: bytes → machine-file text → `config::parse` → `plan::plan`
//! → `dump::render` (TOML and JSON) and `dump::digest`.
//!
//! Never panics; on top of that it checks:
//! - parsing and planning are deterministic (the same text twice gives equal
//!   plans and equal digests);
//! - rendering never fails (a `DumpError` is documented as a bug);
//! - the canonical TOML parses back as TOML, the JSON as JSON, and both carry
//!   the same data (what `berth plan --format json` promises).
//!
//! Two input modes:
//! - valid UTF-8: the text itself is the machine file (finds parser and error
//!   reporting bugs; the dictionary in fuzz/dicts/ helps it build files);
//! - first byte 0xff (never valid UTF-8): the rest drives a generator that
//!   writes a syntactically valid machine file with every section and field
//!   picked from interesting values (addresses on and around the platform
//!   windows, overlapping regions, GSIs at the limits, every device kind,
//!   ...), so most inputs get past the TOML parser into validation and the
//!   planner. Field names are strings here, so schema changes never break
//!   the build; files using removed fields are just rejected.
//!
//! The machine file is parsed as `<repo>/configs/fuzz.toml` (an absolute path
//! fixed at build time), so relative paths in it resolve against `configs/`
//! exactly as for the checked-in machine files, whatever the fuzzer's working
//! directory. Seeds name `../Cargo.toml` (always there) as the kernel so they
//! pass validation and reach the planner; verbatim copies of configs/*.toml
//! name `../guests/probe.elf`, which reaches the planner only after
//! `make -C guests`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

use berth::plan::dump::{self, Format};

const MACHINE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/fuzz.toml");

fuzz_target!(|data: &[u8]| {
    let generated;
    let text = match data.split_first() {
        Some((0xff, rest)) => {
            generated = generate(&mut Input { data: rest });
            if verbose() {
                eprintln!("generated:\n{generated}");
            }
            generated.as_str()
        }
        _ => match std::str::from_utf8(data) {
            Ok(text) => text,
            Err(_) => return,
        },
    };
    check(text);
});

fn check(text: &str) {
    let file = Path::new(MACHINE_FILE);
    let cfg = match berth::config::parse(file, text) {
        Ok(cfg) => cfg,
        Err(e) => {
            // Error rendering (line/column lookup) must not panic either.
            let msg = e.to_string();
            assert!(!msg.is_empty());
            if verbose() {
                eprintln!("rejected: {msg}");
            }
            return;
        }
    };
    let plan = berth::plan::plan(&cfg);

    // Determinism: the same text parsed and planned again gives the same plan.
    let cfg2 = berth::config::parse(file, text).expect("second parse of an accepted file failed");
    let plan2 = berth::plan::plan(&cfg2);
    assert_eq!(plan, plan2, "planning is not deterministic");
    assert_eq!(
        berth::plan::plan(&cfg),
        plan,
        "planning the same config twice differs"
    );

    let toml_text = dump::render(&plan, Format::Toml).expect("plan cannot be rendered as TOML");
    let json_text = dump::render(&plan, Format::Json).expect("plan cannot be rendered as JSON");
    let d1 = dump::digest(&plan).expect("plan digest failed");
    let d2 = dump::digest(&plan2).expect("plan digest failed");
    assert_eq!(d1, d2, "plan digest is not deterministic");
    assert_eq!(d1.len(), 64);
    assert_eq!(
        dump::canonical(&plan).expect("canonical rendering failed"),
        toml_text,
        "canonical text differs from the TOML rendering"
    );

    // Both renderings parse back and carry the same data.
    let back: toml::Value = toml::from_str(&toml_text)
        .unwrap_or_else(|e| panic!("canonical plan TOML does not parse back: {e}\n{toml_text}"));
    let json: serde_json::Value = serde_json::from_str(&json_text)
        .unwrap_or_else(|e| panic!("plan JSON does not parse back: {e}\n{json_text}"));
    let back_json = serde_json::to_value(&back).expect("TOML value to JSON");
    assert_eq!(back_json, json, "TOML and JSON renderings of the plan disagree");
    if verbose() {
        eprintln!("planned: plan-sha256 {d1}");
    }
}

/// BERTH_FUZZ_VERBOSE=1: say what happened to each input (for triage).
fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("BERTH_FUZZ_VERBOSE").is_some_and(|v| v != "0"))
}

/// A cursor over the generator's input; runs dry as zeros.
struct Input<'a> {
    data: &'a [u8],
}

/// Out of 256: how often a field takes a value the validator should refuse.
const BAD: u8 = 0x10;

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// True one time in four.
    fn maybe(&mut self) -> bool {
        self.u8().is_multiple_of(4)
    }

    /// Mostly one of `good`; rarely one of `bad` (values the validator
    /// should refuse, or that should collide with something). A dry input
    /// picks `good[0]`.
    fn pick<T: Copy>(&mut self, good: &[T], bad: &[T]) -> T {
        let sel = self.u8();
        if (sel > u8::MAX - BAD || good.is_empty()) && !bad.is_empty() {
            return bad[usize::from(self.u8()) % bad.len()];
        }
        good[usize::from(sel) % good.len()]
    }

    /// An integer: mostly from `good`, rarely from `bad` or a raw value.
    fn int(&mut self, good: &[i64], bad: &[i64]) -> Value {
        match self.u8() {
            0xfc..=0xfd => Value::Integer(self.u64() as i64),
            0xfe..=0xff => Value::Integer(i64::from(self.u8()) << (self.u8() % 56)),
            _ => Value::Integer(self.pick(good, bad)),
        }
    }

    fn str(&mut self, good: &[&str], bad: &[&str]) -> Value {
        Value::String(self.pick(good, bad).to_string())
    }
}

use toml::{Table, Value};

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

/// Platform windows, their edges, RAM and other places a region or device
/// must not (or may just) sit.
const BAD_ADDRS: &[i64] = &[
    0,
    0x1000,
    0x9f000,
    0xfebf_f000,
    0xfec0_0000,
    0xfec0_0800,
    0xfee0_0000,
    0xfee0_1000,
    0xfffb_c000,
    0xfffb_f000,
    0xffff_f000,
    (1 << 52) - 0x1000,
    1 << 52,
    0xfff,
    0x1001,
];
const RAM_ADDRS: &[i64] = &[1 << 32, (1 << 32) + 0x1000, 8 * GIB, 512 * MIB, GIB, 0xc000_0000];
const DEV_ADDRS: &[i64] = &[
    0xd000_0000,
    0xd000_1000,
    0xd000_2000,
    0xe000_0000,
    0xfeb0_0000,
    3 * (1 << 32),
];
const SIZES: &[&str] = &["4KiB", "8KiB", "64KiB", "1MiB", "2MiB", "64MiB"];
const BAD_SIZES: &[&str] = &["0", "4 KiB", "1MB", "1.5MiB", "1GiB", "3GiB", "4097", "16TiB", ""];
const GOOD_PORTS: &[i64] = &[0x80, 0xf4, 0x2000, 0x501, 0x510, 0x3000, 0xfffc, 0x84];
const BAD_PORTS: &[i64] = &[
    0x3f8, 0x3fc, 0x60, 0x64, 0x70, 0x71, 0x600, 0x604, 0xcf9, 0xffff, 0x10000, -1,
];
/// (path, the format it is) of the images validation accepts.
const KERNELS: &[(&str, &str)] = &[
    ("../fuzz/fixtures/elf64", "elf"),
    ("../fuzz/fixtures/pvh", "pvh"),
    ("../fuzz/fixtures/multiboot", "multiboot"),
    ("../fuzz/fixtures/bzimage", "bzimage"),
    ("/proc/self/exe", "elf"),
    ("../guests/probe.elf", "elf"),
];
const BAD_KERNELS: &[(&str, &str)] = &[
    ("../Cargo.toml", "elf"),
    ("no-such-file", "auto"),
    ("..", "auto"),
    ("", "auto"),
];
const INITRDS: &[&str] = &[
    "../fuzz/fixtures/multiboot",
    "../fuzz/fixtures/bzimage",
    "../Cargo.lock",
];
const BAD_FILES: &[&str] = &["no-such-file", "..", "", "/dev/null"];

fn table(pairs: Vec<(&str, Value)>) -> Value {
    Value::Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn size(input: &mut Input) -> Value {
    if input.u8() < 0xf0 {
        input.str(SIZES, BAD_SIZES)
    } else {
        input.int(&[0x1000, 0x10_0000, 0x400_0000], &[0, 0xfff, 1 << 40])
    }
}

/// Writes a machine file from `input`; always valid TOML, mostly a valid
/// machine file.
fn generate(input: &mut Input) -> String {
    let mut root = Table::new();

    let mut machine = vec![("vcpus", input.int(&[1, 2, 3, 4, 8, 64, 254], &[0, 255]))];
    if input.maybe() {
        machine.push((
            "name",
            input.str(&["m", "", "a \"quoted\" name", "ünï\u{1f600}", "x\ny\t'"], &[]),
        ));
    }
    if input.maybe() {
        machine.push(("tables", input.str(&["acpi", "mptable", "both"], &["none"])));
    }
    if input.maybe() {
        machine.push(("on_reboot", input.str(&["exit", "restart"], &["reset"])));
    }
    if input.maybe() {
        let t = if input.bool() {
            input.str(&["500ms", "2s", "1m", "1h"], &["0s", "-1s", "1.5s", "1d"])
        } else {
            input.int(&[1, 1000, 86_400_000], &[0, -5])
        };
        machine.push(("timeout", t));
    }
    root.insert("machine".into(), table(machine));

    let mut memory = Vec::new();
    if input.pick(&[true], &[false]) {
        let low = input.str(
            &["1MiB", "4MiB", "64MiB", "256MiB", "3GiB"],
            &["1020KiB", "3900MiB"],
        );
        let mut r = vec![("guest_addr", Value::Integer(0)), ("size", low)];
        if input.maybe() {
            r.push(("dirty_log", Value::Boolean(true)));
        }
        memory.push(table(r));
    }
    for _ in 0..input.u8() % 4 {
        let file = input.maybe().then(|| input.str(&["../Cargo.lock"], BAD_FILES));
        let size = match file {
            // Cargo.lock is over 16 KiB.
            Some(_) => input.str(&["16KiB", "4KiB"], &["64KiB"]),
            None => size(input),
        };
        let mut r = vec![("guest_addr", input.int(RAM_ADDRS, BAD_ADDRS)), ("size", size)];
        if let Some(f) = file {
            r.push(("file", f));
        }
        let flags = input.u8();
        for (bit, key) in ["readonly", "shared", "hugepages", "dirty_log"]
            .iter()
            .enumerate()
        {
            if flags & (1 << bit) != 0 {
                r.push((key, Value::Boolean(flags & (0x10 << bit) != 0)));
            }
        }
        if input.maybe() {
            r.push(("name", input.str(&["ram", "rom", "hi"], &[])));
        }
        memory.push(table(r));
    }
    root.insert("memory".into(), Value::Array(memory));

    let split = input.bool();
    if split || input.bool() {
        let mode = if split { "split" } else { "kernel" };
        let mut irqchip = vec![("mode", input.str(&[mode], &["userspace", "Split"]))];
        if input.bool() {
            // The PIT only exists with the in-kernel irqchip.
            irqchip.push(("pit", Value::Boolean(input.pick(&[!split], &[split]))));
        }
        root.insert("irqchip".into(), table(irqchip));
    }

    let routes: Vec<Value> = (0..input.u8() % 4)
        .map(|_| {
            let (chip, pins): (&str, &[i64]) = input.pick(
                &[
                    ("ioapic", &[0, 1, 2, 7, 15, 23]),
                    ("pic-master", &[0, 1, 3, 7]),
                    ("pic-slave", &[0, 1, 4, 7]),
                ],
                &[("lapic", &[0]), ("ioapic", &[24, 47]), ("pic-slave", &[8])],
            );
            table(vec![
                (
                    "gsi",
                    input.int(
                        &[24, 25, 30, 40, 63, 255, 1023, 4095, 5, 9, 16],
                        &[0, 2, 4, 4096, -1],
                    ),
                ),
                ("chip", Value::String(chip.into())),
                ("pin", Value::Integer(pins[usize::from(input.u8()) % pins.len()])),
            ])
        })
        .collect();
    if !routes.is_empty() {
        root.insert("irq_route".into(), Value::Array(routes));
    }

    let msis: Vec<Value> = (0..input.u8() % 5)
        .map(|_| {
            let mut m = vec![("gsi", input.int(&[24, 25, 26, 40, 100, 4095], &[0, 4, 23, 4096]))];
            let form = input.u8();
            let level = input.maybe();
            if form < 0x80 {
                m.push(("dest_apic_id", input.int(&[0, 1, 2, 3, 253], &[254, 255, 0x100])));
                m.push((
                    "vector",
                    input.int(&[0x10, 0x20, 0x30, 0x41, 0xef, 0xfe], &[0x0f, 0xff, 0x100]),
                ));
            } else if form < 0xf0 {
                m.push((
                    "address",
                    input.int(
                        &[0xfee0_0000, 0xfee0_1000, 0xfee0_3000],
                        &[0xfee0_1004, 0xfed0_0000, 0],
                    ),
                ));
                let data = if level { 0xc041 } else { 0x41 };
                m.push(("data", input.int(&[data, data | 0x100], &[0x10041, 0, 0x8041])));
            } else {
                for (bit, (key, v)) in [
                    ("dest_apic_id", 1),
                    ("vector", 0x41),
                    ("address", 0xfee0_0000),
                    ("data", 0x41),
                ]
                .iter()
                .enumerate()
                {
                    if form & (1 << bit) != 0 {
                        m.push((key, Value::Integer(*v)));
                    }
                }
            }
            if level || input.maybe() {
                let trigger = if level { "level" } else { "edge" };
                m.push(("trigger", input.str(&[trigger], &["both", "edge", "level"])));
            }
            table(m)
        })
        .collect();
    if !msis.is_empty() {
        root.insert("msi_route".into(), Value::Array(msis));
    }

    let zones: Vec<Value> = (0..input.u8() % 3)
        .map(|_| {
            table(vec![
                ("guest_addr", input.int(DEV_ADDRS, BAD_ADDRS)),
                ("size", size(input)),
            ])
        })
        .collect();
    if !zones.is_empty() {
        root.insert("coalesced_mmio".into(), Value::Array(zones));
    }
    let zones: Vec<Value> = (0..input.u8() % 3)
        .map(|_| {
            table(vec![
                ("port", input.int(GOOD_PORTS, BAD_PORTS)),
                ("size", input.int(&[1, 2, 4], &[0, 3, 8, 0x100])),
            ])
        })
        .collect();
    if !zones.is_empty() {
        root.insert("coalesced_pio".into(), Value::Array(zones));
    }

    let (path, format) = input.pick(KERNELS, BAD_KERNELS);
    let mut kernel = vec![("path", Value::String(path.into()))];
    if input.bool() {
        kernel.push((
            "format",
            input.str(&["auto", format], &["elf", "bzimage", "pvh", "multiboot", "pe"]),
        ));
    }
    if input.bool() {
        let len = input.pick(&[0usize, 13, 100, 4094], &[4095, 4096]);
        let mut cmdline = "console=ttyS0 ".repeat(len / 14 + 1);
        cmdline.truncate(len);
        if input.pick(&[false], &[true]) {
            cmdline.push('\0');
        }
        kernel.push(("cmdline", Value::String(cmdline)));
    }
    if input.maybe() {
        kernel.push(("initrd", input.str(INITRDS, BAD_FILES)));
    }
    root.insert("kernel".into(), table(kernel));

    if input.maybe() {
        let output = match input.pick(&[0, 1, 2], &[3, 4]) {
            0 => Value::String("stdout".into()),
            1 => Value::String("null".into()),
            2 => table(vec![("file", Value::String("serial.log".into()))]),
            3 => table(vec![("file", Value::String(String::new()))]),
            _ => Value::String("tty".into()),
        };
        root.insert("serial".into(), table(vec![("output", output)]));
    }

    let devices: Vec<Value> = (0..input.u8() % 6)
        .map(|_| match input.pick(&[0, 1, 2, 3, 5, 6, 7, 8, 9], &[4]) {
            0 => {
                let mut d = vec![("kind", Value::String("debug-exit".into()))];
                if input.bool() {
                    d.push(("port", input.int(GOOD_PORTS, BAD_PORTS)));
                }
                if input.bool() {
                    d.push(("size", input.int(&[1, 2, 4], &[3, 8, 0])));
                }
                table(d)
            }
            1 => {
                let mut d = vec![("kind", Value::String("irq-lines".into()))];
                if input.bool() {
                    d.push(("port", input.int(GOOD_PORTS, BAD_PORTS)));
                }
                if input.bool() {
                    d.push(("lines", input.int(&[1, 16, 24, 48, 64, 256], &[4096, 0])));
                }
                table(d)
            }
            k @ (2 | 5) => {
                // recorder and null take the same fields.
                let kind = if k == 2 { "recorder" } else { "null" };
                let mut d = vec![("kind", Value::String(kind.into()))];
                if input.bool() {
                    d.push(("size", size(input)));
                    d.push(("guest_addr", input.int(DEV_ADDRS, BAD_ADDRS)));
                } else {
                    d.push(("size", input.int(&[1, 2, 4, 8], &[0, 0x10000])));
                    d.push(("port", input.int(GOOD_PORTS, BAD_PORTS)));
                }
                if input.pick(&[false], &[true]) {
                    d.push(("port", Value::Integer(0x80)));
                }
                table(d)
            }
            6 => {
                let mut d = vec![("kind", Value::String("boot-timer".into()))];
                if input.bool() {
                    d.push(("guest_addr", input.int(DEV_ADDRS, BAD_ADDRS)));
                }
                table(d)
            }
            7 => {
                let mut d = vec![("kind", Value::String("fw-cfg".into()))];
                if input.bool() {
                    d.push((
                        "port",
                        input.int(&[0x510, 0x518, 0x1000], &[0xfffc, 0x3f8, 0xcf8]),
                    ));
                }
                if input.bool() {
                    d.push(("dma", Value::Boolean(input.bool())));
                }
                table(d)
            }
            8 => {
                let mut d = vec![("kind", Value::String("pc-testdev".into()))];
                if input.pick(&[false], &[true]) {
                    d.push(("port", Value::Integer(0xe0)));
                }
                table(d)
            }
            9 => {
                let mut d = vec![("kind", Value::String("pci".into()))];
                if input.bool() {
                    d.push(("testdev", Value::Boolean(input.bool())));
                }
                table(d)
            }
            3 => table(vec![
                ("kind", Value::String("doorbell".into())),
                ("guest_addr", input.int(DEV_ADDRS, &[0xd000_1001, 0, 0xfec0_0000])),
                ("value", input.int(&[0, 0x5a, 0xffff_ffff], &[-1, 1 << 32])),
                ("dest_apic_id", input.int(&[0, 1, 2, 3], &[255, 0x100])),
                ("vector", input.int(&[0x61, 0x30, 0xfe], &[0x0f, 0x100])),
            ]),
            _ => table(vec![(
                "kind",
                input.str(&["i8042", "cmos", "serial", "virtio"], &[]),
            )]),
        })
        .collect();
    if !devices.is_empty() {
        root.insert("device".into(), Value::Array(devices));
    }

    toml::to_string(&root).expect("a generated machine file serializes")
}
