//! berth's `monitor` commands (gdb's `monitor help`): control registers
//! and EFER, guest-physical memory, address translation, stepping with
//! interrupts.

use super::target::{GuestTarget, TargetError};
use gdbstub::outputln;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};
use vm_memory::{Bytes, GuestAddress};

/// Bytes `monitor phys` prints at most.
const PHYS_MAX: u64 = 4096;

/// `monitor help`.
const MONITOR_HELP: &[&str] = &[
    "berth monitor commands (N: vCPU index, default the selected thread's):",
    "  sregs [N]                     control registers, EFER, segments, GDT, IDT",
    "  sreg cr0|cr2|cr3|cr4|cr8|efer VALUE [N]   write one of them",
    "  phys ADDR [LEN]               guest-physical memory (LEN default 16, at most 4096)",
    "  physw ADDR BYTE...            write guest-physical memory (hex bytes)",
    "  translate ADDR [N]            guest-virtual to guest-physical",
    "  step-irqs on|off              let interrupts in while single-stepping (default off)",
];

impl GuestTarget {
    fn monitor(&mut self, cmd: &str, out: &mut ConsoleOutput<'_>) -> Result<(), String> {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let num = |s: &str| -> Result<u64, String> {
            let r = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            r.map_err(|_| format!("not a number: {s}"))
        };
        let vcpu = |w: Option<&&str>| -> Result<u32, String> {
            match w {
                Some(s) => num(s).map(|n| n as u32),
                None => Ok(self.current),
            }
        };
        let err = |e: TargetError| e.to_string();
        match words.as_slice() {
            [] | ["help"] => {
                for line in MONITOR_HELP {
                    outputln!(out, "{line}");
                }
            }
            ["sregs", rest @ ..] => {
                let s = self.sregs(vcpu(rest.first())?).map_err(err)?;
                outputln!(
                    out,
                    "cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} cr8 {:#x} efer {:#x}",
                    s.cr0,
                    s.cr2,
                    s.cr3,
                    s.cr4,
                    s.cr8,
                    s.efer
                );
                for (n, g) in [
                    ("cs", s.cs),
                    ("ds", s.ds),
                    ("es", s.es),
                    ("fs", s.fs),
                    ("gs", s.gs),
                    ("ss", s.ss),
                    ("tr", s.tr),
                    ("ldt", s.ldt),
                ] {
                    outputln!(
                        out,
                        "{n} {:#06x} base {:#x} limit {:#x} type {:#x} dpl {} present {} l {} db {}",
                        g.selector,
                        g.base,
                        g.limit,
                        g.type_,
                        g.dpl,
                        g.present,
                        g.l,
                        g.db
                    );
                }
                outputln!(out, "gdt base {:#x} limit {:#x}", s.gdt.base, s.gdt.limit);
                outputln!(out, "idt base {:#x} limit {:#x}", s.idt.base, s.idt.limit);
            }
            ["sreg", name, value, rest @ ..] => {
                let (i, v, name) = (vcpu(rest.first())?, num(value)?, name.to_string());
                self.on_vcpu(i, move |fd| {
                    let mut s = fd.get_sregs()?;
                    match name.as_str() {
                        "cr0" => s.cr0 = v,
                        "cr2" => s.cr2 = v,
                        "cr3" => s.cr3 = v,
                        "cr4" => s.cr4 = v,
                        "cr8" => s.cr8 = v,
                        "efer" => s.efer = v,
                        _ => return Err(kvm_ioctls::Error::new(libc::EINVAL)),
                    }
                    fd.set_sregs(&s)
                })
                .map_err(err)?;
                outputln!(out, "ok");
            }
            ["phys", addr, rest @ ..] => {
                let addr = num(addr)?;
                let len = rest
                    .first()
                    .map(|l| num(l))
                    .transpose()?
                    .unwrap_or(16)
                    .min(PHYS_MAX);
                let mut buf = vec![0u8; len as usize];
                self.shared
                    .mem
                    .read_slice(&mut buf, GuestAddress(addr))
                    .map_err(|e| format!("{addr:#x}: {e}"))?;
                self.hide_int3s(addr, &mut buf);
                for (n, line) in buf.chunks(16).enumerate() {
                    let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
                    outputln!(out, "{:#010x}: {}", addr + 16 * n as u64, hex.join(" "));
                }
            }
            ["physw", addr, bytes @ ..] if !bytes.is_empty() => {
                let addr = num(addr)?;
                let data = bytes
                    .iter()
                    .map(|b| {
                        u8::from_str_radix(b.trim_start_matches("0x"), 16)
                            .map_err(|_| format!("not a byte: {b}"))
                    })
                    .collect::<Result<Vec<u8>, String>>()?;
                if !self.write_phys(addr, &data) {
                    return Err(format!("{addr:#x}: not guest RAM"));
                }
                outputln!(out, "ok");
            }
            ["translate", gva, rest @ ..] => {
                let mmu = self.mmu(vcpu(rest.first())?).map_err(err)?;
                let t = self.translate(&mmu, num(gva)?).map_err(|e| e.to_string())?;
                outputln!(out, "{:#x}", t.gpa);
            }
            ["step-irqs", "on"] => self.step_irqs = true,
            ["step-irqs", "off"] => self.step_irqs = false,
            _ => return Err(format!("unknown command '{cmd}' (monitor help)")),
        }
        Ok(())
    }
}

impl MonitorCmd for GuestTarget {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(cmd).to_string();
        if let Err(e) = self.monitor(&cmd, &mut out) {
            outputln!(out, "error: {e}");
        }
        Ok(())
    }
}
