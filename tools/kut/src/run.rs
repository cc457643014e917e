//! Running one machine under berth with a bound, and reading its end.
//!
//! berth runs in a process group of its own with `--timeout`; a watchdog a
//! few seconds later kills the whole group, so nothing is left behind even
//! if berth itself hangs.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The result word of one test, as KUT's run_tests.sh prints it (plus
/// TIMEOUT, which KUT prints as FAIL with "timeout").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Exit status 1 (debug-exit 0).
    Pass,
    /// Anything else that is not SKIP or TIMEOUT.
    Fail,
    /// Exit status 77 (debug-exit 38), or a runtime.bash filter.
    Skip,
    /// The test's timeout ran out.
    Timeout,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
            Status::Timeout => "TIMEOUT",
        })
    }
}

/// One finished test.
#[derive(Clone, Debug)]
pub struct Result {
    /// The word.
    pub status: Status,
    /// What goes in the parentheses.
    pub details: String,
    /// Wall time of the berth process (zero for filtered tests).
    pub wall: Duration,
}

/// Extra time the watchdog gives berth after its own `--timeout`.
const GRACE: Duration = Duration::from_secs(5);

/// Runs `berth run --timeout T machine`, guest serial and berth's stderr to
/// `log`, and classifies the end.
pub fn berth(berth: &Path, machine: &Path, timeout: Duration, log: &Path) -> std::io::Result<Result> {
    let out = File::create(log)?;
    let err_path = log.with_extension("stderr");
    let err = File::create(&err_path)?;
    let start = Instant::now();
    let mut child = Command::new(berth)
        .arg("run")
        .arg("--timeout")
        .arg(format!("{}ms", timeout.as_millis()))
        .arg(machine)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()?;
    let pgid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let (status, killed) = match rx.recv_timeout(timeout + GRACE) {
        Ok(s) => (s?, false),
        Err(_) => {
            kill_group(pgid);
            (rx.recv().map_err(std::io::Error::other)??, true)
        }
    };
    let _ = waiter.join();
    let wall = start.elapsed();
    let serial = std::fs::read_to_string(log).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let (status, details) = if killed {
        (
            Status::Timeout,
            format!(
                "killed: berth still ran {} s after its --timeout",
                GRACE.as_secs()
            ),
        )
    } else {
        classify(status, &serial, &stderr, timeout)
    };
    Ok(Result {
        status,
        details,
        wall,
    })
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill(2) with a negative pid signals that process group only;
    // pgid is the group this tool created for the child.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// KUT's `extract_summary`: a `SUMMARY: ` line among the last five lines,
/// as `(…)` text.
pub fn summary(serial: &str) -> Option<String> {
    let lines: Vec<&str> = serial.lines().collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    tail.iter()
        .find_map(|l| l.strip_prefix("SUMMARY: "))
        .map(|s| s.trim_end_matches('\r').to_string())
}

/// Reads berth's exit status. Odd statuses are debug-exit values
/// ((v << 1) | 1) unless berth printed an error of its own (its exit codes
/// 3, 5, 143, 159 are odd too); even ones are always berth's.
pub fn classify(status: ExitStatus, serial: &str, stderr: &str, timeout: Duration) -> (Status, String) {
    use std::os::unix::process::ExitStatusExt;
    let summary = summary(serial).unwrap_or_default();
    let berth_msg = stderr
        .lines()
        .find(|l| l.starts_with("berth:"))
        .map(|l| l.trim_start_matches("berth:").trim().to_string());
    let Some(code) = status.code() else {
        let sig = status.signal().unwrap_or(0);
        return (Status::Fail, format!("terminated on signal {sig}"));
    };
    if code % 2 == 1 && berth_msg.is_none() {
        return match code {
            1 => (Status::Pass, summary),
            77 => (Status::Skip, summary),
            _ if summary.is_empty() => {
                // An unhandled exception or a failed assert ends a test
                // through abort(): name it.
                let why = serial
                    .lines()
                    .find(|l| l.contains("Unhandled exception") || l.contains("assert failed"))
                    .map(|l| format!(": {}", l.trim()))
                    .unwrap_or_default();
                (Status::Fail, format!("debug-exit status {code}{why}"))
            }
            _ => (Status::Fail, summary),
        };
    }
    let msg = berth_msg.unwrap_or_default();
    match code {
        6 => {
            let vcpus: Vec<String> = stderr
                .lines()
                .filter_map(|l| l.trim_start_matches("berth:").trim().strip_prefix("vcpu"))
                .map(|v| format!("vcpu{v}"))
                .collect();
            (
                Status::Timeout,
                format!(
                    "timeout; duration={}s; {}",
                    timeout.as_secs_f64(),
                    vcpus.join("; ")
                ),
            )
        }
        4 => (Status::Fail, format!("berth exit 4: {}", describe_fault(&msg))),
        0 => (
            Status::Fail,
            "berth exit 0: the guest powered off or reset without writing debug-exit".into(),
        ),
        _ => (Status::Fail, format!("berth exit {code}: {msg}")),
    }
}

/// Shortens a guest-fault message and names the instruction KVM could not
/// emulate, when berth printed its bytes.
fn describe_fault(msg: &str) -> String {
    let Some((head, bytes)) = msg.split_once("instruction bytes ") else {
        return msg.to_string();
    };
    let bytes: Vec<u8> = bytes
        .split(' ')
        .map_while(|b| u8::from_str_radix(b.trim_end_matches(','), 16).ok())
        .collect();
    let head = head.trim_end_matches([',', ' ']);
    match mnemonic(&bytes) {
        Some(m) => format!("{head}: {m}"),
        None => {
            let hex: Vec<String> = bytes.iter().take(6).map(|b| format!("{b:02x}")).collect();
            format!("{head}: bytes {}", hex.join(" "))
        }
    }
}

/// The instructions this host's KVM emulator is known to refuse at CPL0
/// (and a few neighbours), from their first bytes.
pub fn mnemonic(bytes: &[u8]) -> Option<&'static str> {
    let mut i = 0;
    let mut opsize = false;
    let mut lock = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 => opsize = true,
            0xf0 => lock = true,
            0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0x40..=0x4f => {}
            _ => break,
        }
        i += 1;
    }
    let op = &bytes[i.min(bytes.len())..];
    let reg = |modrm: u8| (modrm >> 3) & 7;
    Some(match op {
        [0xcc, ..] => "int3",
        [0xcd, ..] => "int n",
        [0xcf, ..] if i > 0 && bytes[i - 1] == 0x48 => "iretq",
        [0xcf, ..] => "iret",
        [0x0f, 0x01, 0xd0, ..] => "xgetbv",
        [0x0f, 0x01, 0xd1, ..] => "xsetbv",
        [0x0f, 0x01, 0xcb, ..] => "stac",
        [0x0f, 0x01, 0xca, ..] => "clac",
        [0x0f, 0x01, 0xfd, ..] => "rdpru",
        [0x0f, 0x01, 0xc1, ..] => "vmcall",
        [0x0f, 0x01, 0xd9, ..] => "vmmcall",
        [0x0f, 0xc7, m, ..] if reg(*m) == 1 && lock => "lock cmpxchg16b/8b",
        [0x0f, 0xc7, m, ..] if reg(*m) == 1 => "cmpxchg16b/8b",
        [0x0f, 0xae, m, ..] if reg(*m) == 6 && opsize => "clwb",
        [0x0f, 0xae, m, ..] if reg(*m) == 5 && *m < 0xc0 => "xrstor",
        [0x0f, 0xae, m, ..] if reg(*m) == 4 && *m < 0xc0 => "xsave",
        [0x0f, 0x38, 0x82, ..] if opsize => "invpcid",
        [0x0f, 0x38, 0xf0 | 0xf1, ..] => "movbe",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn debug_exit_statuses() {
        let serial = "x\nSUMMARY: 3 tests\n";
        let t = Duration::from_secs(90);
        assert_eq!(classify(exit(1), serial, "", t), (Status::Pass, "3 tests".into()));
        assert_eq!(classify(exit(3), serial, "", t).0, Status::Fail);
        assert_eq!(
            classify(exit(77), "SUMMARY: 0 tests, 1 skipped", "", t).0,
            Status::Skip
        );
        assert_eq!(classify(exit(5), "", "", t).1, "debug-exit status 5");
        let serial = "a\nUnhandled exception 6 #UD(0) at ip 00000000004002ee\nregs\n";
        assert_eq!(
            classify(exit(127), serial, "", t).1,
            "debug-exit status 127: Unhandled exception 6 #UD(0) at ip 00000000004002ee"
        );
    }

    #[test]
    fn berth_statuses() {
        let t = Duration::from_secs(90);
        let err = "berth: guest fault on vcpu0: KVM internal error: suberror 1 (emulation failure), rip 0x40029a, instruction bytes 0f 01 d0 41 89, data [0x1]\n  rax=0\n";
        let (s, d) = classify(exit(4), "", err, t);
        assert_eq!(s, Status::Fail);
        assert_eq!(
            d,
            "berth exit 4: guest fault on vcpu0: KVM internal error: suberror 1 (emulation failure), rip 0x40029a: xgetbv"
        );
        let err = "berth: timeout: the VM ran longer than 90000 ms\nberth:   vcpu0: rip 0x405d95, running, interrupts on\n";
        let (s, d) = classify(exit(6), "", err, t);
        assert_eq!(s, Status::Timeout);
        assert_eq!(
            d,
            "timeout; duration=90s; vcpu0: rip 0x405d95, running, interrupts on"
        );
        // Odd, but berth's own: a host error.
        let (s, d) = classify(exit(3), "", "berth: /dev/kvm: permission denied\n", t);
        assert_eq!(
            (s, d.as_str()),
            (Status::Fail, "berth exit 3: /dev/kvm: permission denied")
        );
        assert_eq!(classify(exit(0), "", "", t).0, Status::Fail);
        assert_eq!(
            classify(ExitStatus::from_raw(9), "", "", t).1,
            "terminated on signal 9"
        );
    }

    #[test]
    fn mnemonics() {
        assert_eq!(mnemonic(&[0xcc]), Some("int3"));
        assert_eq!(mnemonic(&[0xcf]), Some("iret"));
        assert_eq!(mnemonic(&[0x48, 0xcf]), Some("iretq"));
        assert_eq!(
            mnemonic(&[0xf0, 0x48, 0x0f, 0xc7, 0x0e]),
            Some("lock cmpxchg16b/8b")
        );
        assert_eq!(mnemonic(&[0x0f, 0xae, 0x2f]), Some("xrstor"));
        assert_eq!(mnemonic(&[0x66, 0x0f, 0xae, 0x30]), Some("clwb"));
        assert_eq!(mnemonic(&[0x66, 0x0f, 0x38, 0x82, 0x00]), Some("invpcid"));
        assert_eq!(mnemonic(&[0x0f, 0x38, 0xf0, 0x00]), Some("movbe"));
        assert_eq!(mnemonic(&[0x90]), None);
    }

    #[test]
    fn summary_is_read_from_the_tail() {
        assert_eq!(
            summary("a\nSUMMARY: 5 tests, 1 unexpected failures\r\n").as_deref(),
            Some("5 tests, 1 unexpected failures")
        );
        assert_eq!(summary("SUMMARY: old\n1\n2\n3\n4\n5\n"), None);
    }
}
