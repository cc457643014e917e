//! QEMU's test devices on real KVM: guests/test/testdev.S drives
//! pc-testdev (string I/O on 0xe0/0xe8, the iomem window, the flush page),
//! fw_cfg (selector/data and DMA) and the PCI host bridge the way
//! kvm-unit-tests and Linux do, then resets through 0xcf9.

mod common;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
const DEVICES: &str =
    "\n[[device]]\nkind = \"pc-testdev\"\n\n[[device]]\nkind = \"fw-cfg\"\n\n[[device]]\nkind = \"pci\"\n";
const CHECKS: [&str; 16] = [
    "insb",
    "outsb-insl",
    "byte-port",
    "iomem-q",
    "iomem-end",
    "insb-mmio",
    "flush",
    "fwcfg-sig",
    "fwcfg-id",
    "fwcfg-cpus",
    "dma-ctl",
    "dma-count",
    "dma-name",
    "dma-e820",
    "pci-host",
    "pci-absent",
];

fn run(dir: &TempDir, extra: &str) -> (Option<i32>, String) {
    guests();
    let m = dir.write("m.toml", &machine(&guest("testdev"), 1, extra));
    let mut cmd = berth();
    cmd.arg("run").arg(&m);
    let o = run_with_limit(cmd, LIMIT);
    (
        o.status.code(),
        format!("{}\n--- stderr\n{}", stdout(&o), stderr(&o)),
    )
}

#[test]
fn testdev_guest_passes_every_check_and_resets_through_cf9() {
    let dir = TempDir::new("testdevs");
    let (code, out) = run(&dir, DEVICES);
    for c in CHECKS {
        assert!(out.contains(&format!("testdev: {c} ok\n")), "{c}: {out}");
    }
    assert!(out.contains("testdev: failures=0\n"), "{out}");
    assert!(out.contains("testdev: pci 00:01.0=0xffffffff\n"), "{out}");
    assert_eq!(code, Some(0), "the 0xcf9 reset ends the run: {out}");
}

#[test]
fn without_the_devices_every_check_fails() {
    let dir = TempDir::new("testdevs-none");
    let (code, out) = run(&dir, "");
    // A flush and an absent PCI function look the same with or without the
    // devices; every other check needs them.
    for c in CHECKS.iter().filter(|c| !["flush", "pci-absent"].contains(c)) {
        assert!(out.contains(&format!("testdev: {c} FAIL")), "{c}: {out}");
    }
    assert!(out.contains("testdev: failures=14\n"), "{out}");
    assert_eq!(code, Some(3), "{out}");
}

#[test]
fn pci_testdev_answers_at_00_01_0() {
    let dir = TempDir::new("testdevs-pci");
    let (code, out) = run(&dir, &format!("{DEVICES}testdev = true\n"));
    assert!(out.contains("testdev: pci 00:01.0=0x00051b36\n"), "{out}");
    assert!(out.contains("testdev: failures=0\n"), "{out}");
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn plan_lists_every_window_and_fw_cfg_item() {
    guests();
    let mut cmd = berth();
    cmd.args(["plan", "configs/kvm-unit-tests.toml"])
        .current_dir(repo());
    let o = run_with_limit(cmd, LIMIT);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = stdout(&o);
    for name in [
        "\"pc-testdev.ioport@0xe0\"",
        "\"pc-testdev.flush@0xe4\"",
        "\"pc-testdev.ioport-byte@0xe8\"",
        "\"pc-testdev.irq@0x2000\"",
        "\"pc-testdev.iomem@0xff000000\"",
        "\"fw-cfg@0x510\"",
        "\"fw-cfg.dma@0x514\"",
        "\"pci.address@0xcf8\"",
        "\"pci.data@0xcfc\"",
        "\"pci.testdev-mmio@0xfea00000\"",
        "\"pci.testdev-pio@0xc000\"",
        "00:01.0 1b36:0005 pci-testdev",
        "name = \"etc/e820\"",
        "name = \"file_dir\"",
    ] {
        assert!(plan.contains(name), "{name} missing:\n{plan}");
    }
    // 0xcf9 is inside the PCI address register now.
    assert!(!plan.contains("name = \"reset\""), "{plan}");
}
