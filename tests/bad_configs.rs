//! The bad-config corpus: every `tests/bad-configs/*.toml` is a machine file
//! with exactly one mistake. Each is run with `berth run` under strace and
//! must exit with the expected code, print the expected message, and never
//! create a VM; `berth check` must agree on the exit code.
//!
//! Each file starts with a header of comment lines:
//!
//! ```text
//! # expect-exit: 2                    required: exit code of `berth run`
//! # expect-stderr: :9:14: memory[1]…  required, repeatable: each fragment must
//! #                                   appear in berth's stderr
//! # check-exit: 0                     optional: exit code of `berth check`
//! #                                   (default: the same as expect-exit)
//! # known-bug: …                      optional: skip this file, say why
//! # mistake: …                        free text, ignored
//! ```
//!
//! Header values are trimmed. Paths inside the files are relative to the file
//! (`../../guests/probe.elf`), and the files are passed to berth relative to
//! the repository root, so messages name `tests/bad-configs/NNN-….toml`.

mod common;

use common::*;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CORPUS: &str = "tests/bad-configs";
const MIN_CASES: usize = 40;
/// Per-process limit; berth refuses these files in milliseconds (and every
/// file ends with a debug-exit device, so an accepted one ends at once too).
const LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Case {
    path: PathBuf,
    name: String,
    expect_exit: i32,
    fragments: Vec<String>,
    check_exit: i32,
    known_bug: Option<String>,
}

/// Parses the leading comment block of a corpus file.
fn parse_header(path: &Path, text: &str) -> Result<Case, String> {
    let mut expect_exit = None;
    let mut check_exit = None;
    let mut fragments = Vec::new();
    let mut known_bug = None;
    for line in text.lines() {
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = comment.trim_start().split_once(':') else {
            continue;
        };
        let value = value.trim();
        let code = |v: &str| {
            v.parse::<i32>()
                .map_err(|_| format!("`{key}: {v}` is not an exit code"))
        };
        match key.trim() {
            "expect-exit" => expect_exit = Some(code(value)?),
            "check-exit" => check_exit = Some(code(value)?),
            "expect-stderr" if value.is_empty() => return Err("empty `expect-stderr` line".into()),
            "expect-stderr" => fragments.push(value.to_string()),
            "known-bug" => known_bug = Some(value.to_string()),
            _ => {}
        }
    }
    let expect_exit = expect_exit.ok_or("header has no `# expect-exit:` line")?;
    if fragments.is_empty() {
        return Err("header has no `# expect-stderr:` line".into());
    }
    Ok(Case {
        path: path.to_path_buf(),
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        expect_exit,
        check_exit: check_exit.unwrap_or(expect_exit),
        fragments,
        known_bug,
    })
}

/// Runs `cmd` in its own process group; on timeout kills the whole group
/// (strace and berth) and reports an error instead of panicking.
fn run_capped(mut cmd: Command) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot spawn {cmd:?}: {e}"))?;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if start.elapsed() > LIMIT {
            // SAFETY: kill(2) on the process group this test created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            return Err(format!("did not finish within {LIMIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    })
}

/// `berth ARGS` under `strace -f -e trace=ioctl`, the trace written to
/// `trace` so berth's stderr stays its own. Returns (output, trace text).
fn traced(args: &[&str], trace: &Path) -> Result<(Output, String), String> {
    let mut c = Command::new("strace");
    c.current_dir(repo())
        .args(["-f", "-qq", "-e", "trace=ioctl", "-o"])
        .arg(trace)
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(args);
    let o = run_capped(c)?;
    let t = std::fs::read_to_string(trace).map_err(|e| {
        format!(
            "no strace output at {}: {e} (is strace installed?)",
            trace.display()
        )
    })?;
    Ok((o, t))
}

fn berth_check(file: &Path) -> Result<Output, String> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.current_dir(repo()).arg("check").arg(file);
    run_capped(c)
}

/// Every way `case` misbehaved (empty when it passed).
fn run_case(case: &Case, traces: &TempDir) -> Vec<String> {
    let mut why = Vec::new();
    let file = case.path.to_str().unwrap();
    let trace = traces.0.join(format!("{}.strace", case.name));
    match traced(&["run", file], &trace) {
        Err(e) => why.push(format!("run: {e}")),
        Ok((o, t)) => {
            let err = stderr(&o);
            if o.status.code() != Some(case.expect_exit) {
                why.push(format!(
                    "run: exit {:?}, expected {}",
                    o.status.code(),
                    case.expect_exit
                ));
            }
            for f in &case.fragments {
                if !err.contains(f.as_str()) {
                    why.push(format!("run: stderr lacks {f:?}"));
                }
            }
            if !o.stdout.is_empty() {
                let out: String = stdout(&o).chars().take(300).collect();
                why.push(format!("run: the guest ran; stdout began {out:?}"));
            }
            if let Some(l) = t.lines().find(|l| l.contains("KVM_CREATE_VM")) {
                why.push(format!("run: a VM was created: {l}"));
            }
            if !why.is_empty() {
                why.push(format!("run: stderr was {:?}", err.trim_end()));
            }
        }
    }
    match berth_check(&case.path) {
        Err(e) => why.push(format!("check: {e}")),
        Ok(o) => {
            let err = stderr(&o);
            let mut bad = false;
            if o.status.code() != Some(case.check_exit) {
                why.push(format!(
                    "check: exit {:?}, expected {}",
                    o.status.code(),
                    case.check_exit
                ));
                bad = true;
            }
            // When check refuses the file it must say the same thing as run.
            if case.check_exit != 0 {
                for f in &case.fragments {
                    if !err.contains(f.as_str()) {
                        why.push(format!("check: stderr lacks {f:?}"));
                        bad = true;
                    }
                }
            }
            if bad {
                why.push(format!("check: stderr was {:?}", err.trim_end()));
            }
        }
    }
    why
}

fn corpus() -> Vec<PathBuf> {
    let dir = repo().join(CORPUS);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| Path::new(CORPUS).join(p.file_name().unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn every_bad_config_is_refused_before_any_vm_exists() {
    let start = Instant::now();
    guests();
    let traces = TempDir::new("bad-configs");

    // The absence of KVM_CREATE_VM means something only if strace would
    // have shown it: a good machine does create a VM under the same trace.
    let good = traces.write("good.toml", &machine(&guest("probe"), 1, ""));
    let (o, t) = traced(&["run", good.to_str().unwrap()], &traces.0.join("good.strace"))
        .unwrap_or_else(|e| panic!("control run: {e}"));
    assert_eq!(o.status.code(), Some(1), "control run: {}", stderr(&o));
    assert!(
        t.contains("KVM_CREATE_VM"),
        "strace did not see KVM_CREATE_VM:\n{t}"
    );

    let files = corpus();
    let mut failures: Vec<String> = Vec::new();
    let mut cases = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(repo().join(f)).unwrap();
        match parse_header(f, &text) {
            Ok(c) => cases.push(c),
            Err(e) => failures.push(format!("{}: bad header: {e}", f.display())),
        }
    }
    let (skipped, active): (Vec<&Case>, Vec<&Case>) = cases.iter().partition(|c| c.known_bug.is_some());
    for c in &skipped {
        // On the real stderr (the harness captures eprintln!): a skip shows.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED bad-config {} (known bug: {})",
            c.name,
            c.known_bug.as_deref().unwrap()
        );
    }
    if active.len() < MIN_CASES {
        failures.push(format!(
            "{CORPUS}: only {} runnable files, expected at least {MIN_CASES}",
            active.len()
        ));
    }

    // Cases are independent: run them on a few threads to keep this quick
    // under strace. Results are reported in file order.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get().min(8));
    let results: Vec<Vec<String>> = std::thread::scope(|s| {
        let chunk = active.len().div_ceil(threads).max(1);
        let handles: Vec<_> = active
            .chunks(chunk)
            .map(|part| {
                let traces = &traces;
                s.spawn(move || part.iter().map(|c| run_case(c, traces)).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for (c, why) in active.iter().zip(results) {
        if !why.is_empty() {
            failures.push(format!("{}:\n    {}", c.path.display(), why.join("\n    ")));
        }
    }

    // A truly empty file (the corpus files all carry a header).
    let empty = traces.write("empty.toml", "");
    let empty_case = Case {
        name: "empty.toml".into(),
        path: empty.clone(),
        expect_exit: 2,
        check_exit: 2,
        fragments: vec![format!("{}:1:1: (file): missing field `kernel`", empty.display())],
        known_bug: None,
    };
    let why = run_case(&empty_case, &traces);
    if !why.is_empty() {
        failures.push(format!("(zero-byte file):\n    {}", why.join("\n    ")));
    }

    eprintln!(
        "{} corpus files ({} skipped) checked in {:.1?}",
        files.len(),
        skipped.len(),
        start.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} bad-config cases failed:\n{}",
        failures.len(),
        files.len() + 1,
        failures.join("\n")
    );
}
