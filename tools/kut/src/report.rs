//! bench/kut.md: berth and QEMU over the same kvm-unit-tests list, whole-run
//! wall time and per-test outcomes side by side.

use crate::qemu::Line;
use crate::run::{self, Status};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Everything the report shows.
pub struct Report<'a> {
    /// The berth binary that ran.
    pub berth: &'a Path,
    /// Whole berth run.
    pub berth_wall: Duration,
    /// Whole run_tests.sh run.
    pub qemu_wall: Duration,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu_version: String,
    /// `-j`.
    pub jobs: usize,
    /// berth's results in list order.
    pub results: &'a [(String, run::Result)],
    /// QEMU's results by name.
    pub qemu: &'a BTreeMap<String, Line>,
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A wall time cell; filtered tests (no process) show a dash.
fn secs(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        "—".into()
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Table cells must not break the row.
fn cell(s: &str) -> String {
    let s = s.replace('|', "\\|");
    if s.chars().count() > 90 {
        format!("{}…", s.chars().take(90).collect::<String>())
    } else {
        s
    }
}

impl Report<'_> {
    /// Tests QEMU passes here and berth does not: (name, berth's word, reason).
    pub fn qemu_only_passes(&self) -> Vec<(&str, Status, &str)> {
        self.results
            .iter()
            .filter(|(n, r)| {
                r.status != Status::Pass && self.qemu.get(n).is_some_and(|q| q.status == Status::Pass)
            })
            .map(|(n, r)| (n.as_str(), r.status, r.details.as_str()))
            .collect()
    }

    /// The markdown text.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let b = self.berth_wall.as_secs_f64();
        let q = self.qemu_wall.as_secs_f64();
        let count = |f: &dyn Fn(Status) -> bool| self.results.iter().filter(|(_, r)| f(r.status)).count();
        let qcount = |f: &dyn Fn(Status) -> bool| self.qemu.values().filter(|l| f(l.status)).count();
        let _ = writeln!(s, "# kvm-unit-tests: berth vs QEMU\n");
        let _ = writeln!(
            s,
            "Written by `make kut QEMU=1` (tools/kut): the x86 tests of kvm-unit-tests' `x86/unittests.cfg`, \
             run once under berth (one generated machine file per test, `target/kut/machines/`) and once \
             through KUT's own `./run_tests.sh` under QEMU (`QEMU=tools/kut/qemu-wrap.sh ACCEL=kvm`; the \
             wrapper only adds `-arch-capabilities` to `-cpu host`/`-cpu max`, which abort on this host), \
             one after the other, `-j {}`. QEMU's per-test wall is the time between its result lines.\n",
            self.jobs
        );
        let _ = writeln!(s, "- date: {}", sh("date -u '+%Y-%m-%d %H:%M UTC'"));
        let _ = writeln!(s, "- host: {} CPUs, kernel {}", sh("nproc"), sh("uname -r"));
        let _ = writeln!(
            s,
            "- load average at the end: {}",
            sh("cut -d' ' -f1-3 /proc/loadavg")
        );
        let _ = writeln!(s, "- berth: `{}`", self.berth.display());
        let _ = writeln!(s, "- QEMU: {}\n", self.qemu_version);
        let _ = writeln!(s, "| | berth | QEMU |\n|---|---|---|");
        let _ = writeln!(s, "| whole run, wall | {b:.1} s | {q:.1} s |");
        let _ = writeln!(s, "| speed-up | {:.1}× | 1× |", q / b.max(1e-9));
        let pass = |x: Status| x == Status::Pass;
        let fail = |x: Status| x == Status::Fail;
        let skip = |x: Status| x == Status::Skip;
        let tmo = |x: Status| x == Status::Timeout;
        let _ = writeln!(s, "| PASS | {} | {} |", count(&pass), qcount(&pass));
        let _ = writeln!(s, "| FAIL | {} | {} |", count(&fail), qcount(&fail));
        let _ = writeln!(s, "| TIMEOUT | {} | {} |", count(&tmo), qcount(&tmo));
        let _ = writeln!(s, "| SKIP | {} | {} |\n", count(&skip), qcount(&skip));
        let _ = writeln!(
            s,
            "QEMU boots each test through SeaBIOS (about 4 s per test on this host) and, on an emulation \
             failure, stops and waits for its timeout; berth starts each test in milliseconds and exits 4 at \
             once.\n"
        );
        let _ = writeln!(s, "## Per test\n");
        let _ = writeln!(
            s,
            "| test | berth | berth wall | QEMU | berth details | QEMU details |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for (n, r) in self.results {
            let (qs, qd, qw) = match self.qemu.get(n) {
                Some(l) => (l.status.to_string(), l.details.clone(), secs(l.wall)),
                None => ("—".into(), String::new(), "—".into()),
            };
            let _ = writeln!(
                s,
                "| {n} | {} | {} | {qs} | {qw} | {} | {} |",
                r.status,
                secs(r.wall),
                cell(&r.details),
                cell(&qd)
            );
        }
        let only = self.qemu_only_passes();
        let _ = writeln!(s, "\n## Passes under QEMU, not (yet) under berth\n");
        if only.is_empty() {
            let _ = writeln!(s, "None.");
        }
        for (n, st, why) in only {
            let _ = writeln!(s, "- `{n}`: {st} ({why})");
        }
        s
    }
}
