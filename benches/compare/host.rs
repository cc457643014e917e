//! Facts about the host, recorded next to the numbers.

use crate::results::Host;
use std::path::Path;
use std::process::Command;

/// Whether /dev/kvm is PVM (guest CPL0 code emulated; see DEVELOPERS.md). Recorded only.
pub fn is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// stdout of a command, trimmed; "unknown" when it cannot run or fails.
fn output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

/// Collects the host facts; `root` is the berth checkout.
pub fn facts(root: &Path, qemu_version: &str, qemu_cpu: &str) -> Host {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let root = root.display().to_string();
    Host {
        kernel: output("uname", &["-r"]),
        cpu_model,
        nproc: std::thread::available_parallelism().map_or(1, usize::from),
        pvm: is_pvm(),
        qemu_version: qemu_version.to_string(),
        qemu_cpu: qemu_cpu.to_string(),
        berth_git_rev: output("git", &["-C", &root, "describe", "--always", "--dirty"]),
        date: output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        load_start: loadavg(),
        load_end: String::new(),
    }
}

/// The 1-, 5- and 15-minute load averages from /proc/loadavg ("unknown" when unreadable).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
