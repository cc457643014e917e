//! QEMU command lines, built so the comparison stays fair: the same guest file, memory size,
//! one vCPU, KVM with its in-kernel irqchip (QEMU's default under `-accel kvm`), no firmware
//! tables or option ROMs that berth does not have either, and the host CPU model.

use crate::runner::{self, Spec};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The QEMU binary this harness runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// `-M microvm` options: no option ROMs, PIT, PIC or RTC; the ISA serial port on.
const MICROVM: &str = "microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=on";

/// The isa-debug-exit device at berth's port and width (status = (v << 1) | 1).
const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0xf4,iosize=4";

/// Where the guest's COM1 output goes.
#[derive(Clone, Copy, Debug)]
pub enum Serial {
    /// To QEMU's stdout (`-serial stdio`).
    Stdio,
    /// Dropped (`-serial null`).
    Null,
}

/// A working QEMU and the `-cpu` model that runs on this host.
#[derive(Clone, Debug)]
pub struct Qemu {
    /// `qemu-system-x86_64 --version`, first line.
    pub version: String,
    /// The `-cpu` argument, or None for QEMU's default model.
    pub cpu: Option<String>,
    /// Why this `-cpu` was chosen (for the notes).
    pub cpu_note: String,
}

impl Qemu {
    /// Finds QEMU and the first `-cpu` model that boots `exit_image` under microvm: `host`
    /// (what berth gives its guests: KVM's supported CPUID), then `host,-arch-capabilities`
    /// (some nested hosts, PVM among them, refuse MSR 0x10a), then QEMU's default.
    pub fn probe(exit_image: &Path, timeout: Duration) -> Result<Qemu, String> {
        let out = Command::new(QEMU)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {QEMU} (apt-get install qemu-system-x86): {e}"))?;
        let version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut failures = Vec::new();
        for cpu in [Some("host"), Some("host,-arch-capabilities"), None] {
            let q = Qemu {
                version: version.clone(),
                cpu: cpu.map(str::to_string),
                cpu_note: String::new(),
            };
            let spec = Spec::new(
                "qemu probe",
                QEMU,
                q.microvm(exit_image, "128M", Serial::Null),
                timeout,
            );
            match runner::run(&spec) {
                Ok(_) => {
                    let note = if failures.is_empty() {
                        format!("QEMU runs with -cpu {}", cpu.unwrap_or("(default)"))
                    } else {
                        format!(
                            "QEMU runs with -cpu {} because {}",
                            cpu.unwrap_or("(default)"),
                            failures.join("; ")
                        )
                    };
                    return Ok(Qemu { cpu_note: note, ..q });
                }
                Err(e) => {
                    let first = e
                        .lines()
                        .find(|l| l.contains("qemu-system") && !l.contains("command:"));
                    failures.push(format!(
                        "-cpu {} fails ({})",
                        cpu.unwrap_or("(default)"),
                        first
                            .unwrap_or("see results.json")
                            .trim_start_matches("    | ")
                            .trim()
                    ));
                }
            }
        }
        Err(format!(
            "QEMU boots the exit guest with no -cpu model: {}",
            failures.join("; ")
        ))
    }

    /// The `-cpu` model as shown in the results.
    pub fn cpu_name(&self) -> String {
        self.cpu.clone().unwrap_or_else(|| "(default)".into())
    }

    fn common(&self, machine: &str, mem: &str, serial: Serial) -> Vec<String> {
        self.common_accel(machine, "kvm", mem, serial)
    }

    fn common_accel(&self, machine: &str, accel: &str, mem: &str, serial: Serial) -> Vec<String> {
        let mut a: Vec<String> = vec!["-M".into(), machine.into(), "-accel".into(), accel.into()];
        if let Some(cpu) = &self.cpu {
            a.extend(["-cpu".into(), cpu.clone()]);
        }
        let serial = match serial {
            Serial::Stdio => "stdio",
            Serial::Null => "null",
        };
        a.extend(
            [
                "-m",
                mem,
                "-smp",
                "1",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-serial",
                serial,
                "-device",
                DEBUG_EXIT,
            ]
            .map(String::from),
        );
        a
    }

    /// `-M microvm` booting `image` (a PVH ELF) with `mem` of RAM.
    pub fn microvm(&self, image: &Path, mem: &str, serial: Serial) -> Vec<String> {
        let mut a = self.common(MICROVM, mem, serial);
        a.extend(["-kernel".into(), image.display().to_string()]);
        a
    }

    /// `-M microvm` with `-accel kvm,kernel-irqchip=split`: only the LAPICs in KVM, QEMU's
    /// own IOAPIC (berth's `[irqchip] mode = "split"`).
    pub fn microvm_split(&self, image: &Path, mem: &str) -> Vec<String> {
        let mut a = self.common_accel(MICROVM, "kvm,kernel-irqchip=split", mem, Serial::Null);
        a.extend(["-kernel".into(), image.display().to_string()]);
        a
    }

    /// `-M pc` (SeaBIOS, then QEMU's multiboot loader) booting `image` (a multiboot ELF).
    pub fn pc(&self, image: &Path, mem: &str) -> Vec<String> {
        let mut a = self.common("pc", mem, Serial::Null);
        a.extend(["-kernel".into(), image.display().to_string()]);
        a
    }
}
