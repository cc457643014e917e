//! The same tests under QEMU, run the way KUT runs them: its own
//! `./run_tests.sh` in the built tree with `QEMU=` pointing at
//! tools/kut/qemu-wrap.sh and `ACCEL=kvm`. Its result lines are read back
//! for the side-by-side report (bench/kut.md).

use crate::run::Status;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One QEMU result line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The word (KUT's "FAIL … (timeout; …)" becomes TIMEOUT).
    pub status: Status,
    /// The parenthesised text.
    pub details: String,
    /// Time since the previous result line (with -j 1: about the test's
    /// own wall time, QEMU start included).
    pub wall: Duration,
}

/// Reads one run_tests.sh output line: `PASS name (details)` with ANSI
/// colours around the word.
pub fn parse_line(line: &str) -> Option<(String, Line)> {
    let mut clean = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            clean.push(c);
        }
    }
    let (word, rest) = clean.split_once(' ')?;
    let mut status = match word {
        "PASS" => Status::Pass,
        "FAIL" => Status::Fail,
        "SKIP" => Status::Skip,
        _ => return None,
    };
    let (name, details) = rest.split_once(' ').unwrap_or((rest, ""));
    let details = details
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .to_string();
    if status == Status::Fail && details.starts_with("timeout;") {
        status = Status::Timeout;
    }
    Some((
        name.to_string(),
        Line {
            status,
            details,
            wall: Duration::ZERO,
        },
    ))
}

/// Runs `./run_tests.sh [-a] [-g G] [-j N] [names…]` in `tree`, echoing its
/// lines, and returns them with the whole run's wall time.
pub fn run(
    tree: &Path,
    wrapper: &Path,
    jobs: usize,
    args: &[String],
) -> Result<(BTreeMap<String, Line>, Duration), String> {
    let start = Instant::now();
    let mut child = Command::new("./run_tests.sh")
        .arg("-j")
        .arg(jobs.to_string())
        .args(args)
        .current_dir(tree)
        .env("QEMU", wrapper)
        .env("ACCEL", "kvm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{}/run_tests.sh: {e}", tree.display()))?;
    let mut lines = BTreeMap::new();
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut last = start;
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some((name, mut l)) = parse_line(&line) {
            l.wall = last.elapsed();
            last = Instant::now();
            match l.details.as_str() {
                "" => println!("qemu: {} {name}", l.status),
                d => println!("qemu: {} {name} ({d})", l.status),
            }
            lines.insert(name, l);
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let wall = start.elapsed();
    if lines.is_empty() {
        return Err(format!("run_tests.sh printed no results ({status})"));
    }
    Ok((lines, wall))
}

/// QEMU's version line, for the report.
pub fn version() -> String {
    Command::new(std::env::var("KUT_REAL_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()))
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_run_tests_lines() {
        let (n, l) = parse_line("\x1b[32mPASS\x1b[0m smptest (1 tests)").unwrap();
        assert_eq!(
            (n.as_str(), l.status, l.details.as_str()),
            ("smptest", Status::Pass, "1 tests")
        );
        let (n, l) = parse_line("\x1b[31mFAIL\x1b[0m vmexit_vmcall (timeout; duration=90s)").unwrap();
        assert_eq!((n.as_str(), l.status), ("vmexit_vmcall", Status::Timeout));
        let (_, l) = parse_line("\x1b[33mSKIP\x1b[0m cmpxchg8b (i386 only)").unwrap();
        assert_eq!((l.status, l.details.as_str()), (Status::Skip, "i386 only"));
        assert!(parse_line("qemu-system-x86_64: warning").is_none());
    }
}
