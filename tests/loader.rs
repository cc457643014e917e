//! Images linked the way their authors link them boot: the issue-10 PVH
//! guest (`gcc -nostdlib -static -Wl,-Ttext=0x100000`, with a header-only
//! segment at 0xff000) and a multiboot image at 0x8000 like kvm-unit-tests'
//! realmode.flat, for which the plan moves the boot structures. Multiboot
//! guests receive `<kernel path> <cmdline>`.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn run(file: &Path) -> (Option<i32>, String, String) {
    let mut c = berth();
    c.arg("run").arg(file);
    let o = run_with_limit(c, LIMIT);
    (o.status.code(), stdout(&o), stderr(&o))
}

/// Every range the plan's boot section fills below 1 MiB: (name, start, end).
fn boot_areas(plan: &Value) -> Vec<(String, u64, u64)> {
    let b = &plan["boot"];
    let mut v = Vec::new();
    let mut add = |name: &str, len: u64| {
        if !b[name].is_null() {
            let a = hexnum(&b[name]);
            v.push((name.to_string(), a, a + len));
        }
    };
    add("gdt", 0x28);
    add("idt", 8);
    add("zero_page", 0x1000);
    add("boot_info", 0x100);
    add("modules", 0x100);
    add("module_strings", 0xe00);
    add("memmap", 0xc00);
    add("pml4", 0x1000);
    add("pdpte", 0x1000);
    add("pde", 0x1000);
    add("cmdline", 0x1000);
    let sp = hexnum(&b["stack_pointer"]);
    v.push(("stack".into(), sp + 0x10 - 0x1000, sp + 0x10));
    v
}

#[test]
fn a_pvh_guest_linked_without_a_script_boots() {
    let dir = TempDir::new("pvh-gcc");
    let f = dir.write("m.toml", &machine(&guest("pvh-gcc"), 1, ""));
    let plan = plan_of(&f);
    assert_eq!(plan["boot"]["protocol"], "pvh");
    // Its header-only segment at 0xff000 moves nothing.
    assert_eq!(plan["boot"]["stack_pointer"], "0x0000000000008ff0");
    assert_eq!(plan["boot"]["pml4"], "0x0000000000009000");
    let (code, out, err) = run(&f);
    assert_eq!(code, Some(1 + 2 * 0x2a), "{err}\n{out}");
    assert!(out.contains("pvh-gcc: hello from 32-bit code\n"), "{out}");
}

#[test]
fn an_image_at_0x8000_moves_the_boot_structures_and_boots() {
    let dir = TempDir::new("mb-low");
    // The path as written (relative to the machine file) is the guest's argv[0].
    let rel = format!("{}/guests/mb-low.elf", pathdiff(&dir.0, &repo()).display());
    guests();
    let text = machine(Path::new(&rel), 1, "").replace("console=ttyS0", "a=1 b");
    let f = dir.write("m.toml", &text);
    let plan = plan_of(&f);
    assert_eq!(plan["boot"]["protocol"], "multiboot");
    assert_eq!(plan["kernel"]["guest_cmdline"], format!("{rel} a=1 b").as_str());
    // Segments: header-only 0x7000..0x7074, the image 0x8000..0xc1c0.
    let segments = [(0x7000u64, 0x7074u64), (0x8000, 0xc1c0)];
    let areas = boot_areas(&plan);
    for (name, start, end) in &areas {
        for (s, e) in segments {
            assert!(
                *end <= s || e <= *start,
                "{name} {start:#x}..{end:#x} overlaps the segment {s:#x}..{e:#x}"
            );
        }
    }
    // What moved: the stack, the page tables and the memory map.
    assert_ne!(plan["boot"]["stack_pointer"], "0x0000000000008ff0");
    assert_ne!(plan["boot"]["pml4"], "0x0000000000009000");
    assert_ne!(plan["boot"]["memmap"], "0x0000000000007000");
    assert_eq!(plan["boot"]["boot_info"], "0x0000000000006000", "did not move");
    let (code, out, err) = run(&f);
    assert!(out.contains("mb-low: image intact\n"), "{err}\n{out}");
    assert!(
        out.contains(&format!("mb-low: cmdline \"{rel} a=1 b\"\n")),
        "{out}"
    );
    assert_eq!(code, Some(1 + 2 * 0x21), "{err}\n{out}");
}

#[test]
fn an_image_over_the_acpi_tables_is_refused_naming_both_ranges() {
    let dir = TempDir::new("mb-acpi");
    let f = dir.write("m.toml", &machine(&guest("mb-acpi"), 1, ""));
    for cmd in ["check", "plan", "run"] {
        let mut c = berth();
        c.arg(cmd).arg(&f);
        let o = run_with_limit(c, LIMIT);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(5), "{cmd}: {err}");
        assert!(
            err.contains("segment 0: 0xe7000..") && err.contains("overlaps the ACPI tables 0xe0000..0xf0000"),
            "{cmd}: {err}"
        );
    }
    // Without ACPI tables nothing is in its way.
    let f = dir.write(
        "m.toml",
        &machine(&guest("mb-acpi"), 1, "").replace("vcpus = 1", "vcpus = 1\ntables = \"mptable\""),
    );
    let (code, out, err) = run(&f);
    assert_eq!(code, Some(1 + 2 * 0x21), "{err}\n{out}");
}

/// `to` relative to `from` (both absolute, `from` inside `to`'s tree).
fn pathdiff(from: &Path, to: &Path) -> std::path::PathBuf {
    let rest = from.strip_prefix(to).expect("the temp dir is inside the repo");
    rest.components().map(|_| "..").collect()
}
