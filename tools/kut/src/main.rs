//! berth-kut: kvm-unit-tests' x86 suite under berth.
//!
//! Builds KUT once from its source (source.rs), reads x86/unittests.cfg
//! (unittests.rs), writes one machine file per test (machine.rs), runs each
//! under berth with a bound (run.rs), prints KUT's result lines and a
//! summary, and compares with tests/kut/expected.toml (expect.rs). With
//! `--qemu` it then runs the same list through KUT's own run_tests.sh under
//! QEMU (qemu.rs) and writes the side-by-side report (report.rs).

mod expect;
mod machine;
mod qemu;
mod report;
mod run;
mod source;
mod unittests;

use run::Status;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use unittests::{Selection, UnitTest};

const USAGE: &str = "\
usage: berth-kut [options] [TEST...]
  --src PATH        kvm-unit-tests tarball or source dir
                    (default ../shared/kvm-unit-tests-1da1819e.tar.gz)
  --berth PATH      the berth binary (default target/debug/berth)
  --out DIR         work directory: build cache, machines, logs (default target/kut)
  --expected FILE   expectations (default tests/kut/expected.toml); --no-expected to skip
  -j N              tests at a time (default 1)
  -g GROUP          only tests in GROUP (KUT's -g)
  -a                nodefault tests too (KUT's -a)
  --timeout DUR     every test's timeout (KUT's TIMEOUT), e.g. 30s
  --kut-timeouts    ignore the expectations file's shorter timeouts for tests
                    known to time out here (--qemu does too)
  --list            print the selected test names and stop
  --qemu            then run the same tests through KUT's run_tests.sh under QEMU
  --qemu-wrapper P  QEMU= for run_tests.sh (default tools/kut/qemu-wrap.sh)
  --report FILE     with --qemu: the markdown comparison (default bench/kut.md)
  --bless           rewrite the expectations file from this run (review the diff)";

struct Options {
    src: PathBuf,
    berth: PathBuf,
    out: PathBuf,
    expected: Option<PathBuf>,
    jobs: usize,
    sel: Selection,
    timeout: Option<Duration>,
    list: bool,
    qemu: bool,
    wrapper: PathBuf,
    report: PathBuf,
    bless: bool,
    kut_timeouts: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        src: "../shared/kvm-unit-tests-1da1819e.tar.gz".into(),
        berth: "target/debug/berth".into(),
        out: "target/kut".into(),
        expected: Some("tests/kut/expected.toml".into()),
        jobs: 1,
        sel: Selection::default(),
        timeout: None,
        list: false,
        qemu: false,
        wrapper: "tools/kut/qemu-wrap.sh".into(),
        report: "bench/kut.md".into(),
        bless: false,
        kut_timeouts: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--src" => o.src = val()?.into(),
            "--berth" => o.berth = val()?.into(),
            "--out" => o.out = val()?.into(),
            "--expected" => o.expected = Some(val()?.into()),
            "--no-expected" => o.expected = None,
            "-j" => {
                let v = val()?;
                o.jobs = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("-j {v}: not a positive number"))?;
            }
            "-g" => o.sel.group = Some(val()?),
            "-a" => o.sel.all = true,
            "--timeout" => {
                let v = val()?;
                let s = unittests::parse_duration(&v).ok_or(format!("--timeout {v}: not a duration"))?;
                o.timeout = Some(Duration::from_secs_f64(s));
            }
            "--list" => o.list = true,
            "--qemu" => o.qemu = true,
            "--qemu-wrapper" => o.wrapper = val()?.into(),
            "--report" => o.report = val()?.into(),
            "--bless" => o.bless = true,
            "--kut-timeouts" => o.kut_timeouts = true,
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            // Names may come as one blank-separated word (make KUT_TESTS="a b").
            s => o.sel.names.extend(s.split_whitespace().map(String::from)),
        }
    }
    Ok(o)
}

/// One test, ready to run or already decided (filtered, or not translatable).
struct Job {
    name: String,
    machine: Option<PathBuf>,
    timeout: Duration,
    decided: Option<run::Result>,
}

fn decided(status: Status, details: String) -> Option<run::Result> {
    Some(run::Result {
        status,
        details,
        wall: Duration::ZERO,
    })
}

/// A path for the machine file: relative to `from` when both lie under the
/// same work directory, else absolute.
fn path_from(from: &Path, to: &Path) -> String {
    let (f, t) = (
        from.components().collect::<Vec<_>>(),
        to.components().collect::<Vec<_>>(),
    );
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    if common < 2 {
        return to.display().to_string();
    }
    let mut p = PathBuf::new();
    for _ in common..f.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c);
    }
    p.display().to_string()
}

/// Decides each selected test: the runtime.bash filters, the QEMU options,
/// and writes its machine file and env module.
/// `cap` is the expectations file's timeout for a test known to time out
/// here (ignored with --qemu and --kut-timeouts, so comparisons use KUT's).
fn prepare(
    t: &UnitTest,
    o: &Options,
    cap: Option<&str>,
    tree: &Path,
    machines: &Path,
) -> Result<Job, String> {
    let kernel = tree.join("x86").join(&t.file);
    let cap = cap.filter(|_| !o.qemu && !o.kut_timeouts);
    let secs = match (&o.timeout, cap, &t.timeout) {
        (Some(d), _, _) => d.as_secs_f64(),
        (None, Some(s), _) => unittests::parse_duration(s)
            .ok_or_else(|| format!("expectations: {}: timeout = {s}: not a duration", t.name))?,
        (None, None, Some(s)) => unittests::parse_duration(s)
            .ok_or_else(|| format!("{}: timeout = {s}: not a duration", t.name))?,
        (None, None, None) => 90.0,
    };
    let mut job = Job {
        name: t.name.clone(),
        machine: None,
        timeout: Duration::from_secs_f64(secs),
        decided: None,
    };
    if let Some(reason) = unittests::skip_reason(t, &o.sel, &kernel, tree) {
        job.decided = decided(Status::Skip, reason);
        return Ok(job);
    }
    let mut line = format!("-smp {}", t.smp);
    if let Some(a) = &t.test_args {
        line.push_str(&format!(" -append {a}"));
    }
    line.push(' ');
    line.push_str(&t.params);
    let m = machine::shell_words(&line, tree).and_then(|w| machine::Machine::from_qemu_args(&w));
    let m = match m {
        Ok(m) => m,
        Err(e) => {
            job.decided = decided(Status::Fail, format!("cannot translate its QEMU options: {e}"));
            return Ok(job);
        }
    };
    if !m.missing_devices.is_empty() {
        let reason = format!(
            "needs QEMU -device {}, berth has none",
            m.missing_devices.join(", ")
        );
        job.decided = decided(Status::Skip, reason);
        return Ok(job);
    }
    let toml_path = machines.join(format!("{}.toml", t.name));
    let env_path = machines.join(format!("{}.env", t.name));
    std::fs::write(&env_path, m.env()).map_err(|e| format!("{}: {e}", env_path.display()))?;
    let text = m.toml(&t.name, &path_from(machines, &kernel), &format!("{}.env", t.name));
    std::fs::write(&toml_path, text).map_err(|e| format!("{}: {e}", toml_path.display()))?;
    job.machine = Some(toml_path);
    Ok(job)
}

fn line(name: &str, r: &run::Result) -> String {
    if r.details.is_empty() {
        format!("{} {name}", r.status)
    } else {
        format!("{} {name} ({})", r.status, r.details)
    }
}

/// Runs the jobs `jobs` at a time and prints each line in list order.
fn run_all(list: Vec<Job>, berth: &Path, logs: &Path, jobs: usize) -> Vec<(String, run::Result)> {
    let n = list.len();
    let queue = Arc::new(Mutex::new(
        list.into_iter()
            .enumerate()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    for _ in 0..jobs.min(n.max(1)) {
        let (queue, tx) = (queue.clone(), tx.clone());
        let (berth, logs) = (berth.to_path_buf(), logs.to_path_buf());
        workers.push(std::thread::spawn(move || {
            while let Some((i, job)) = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None) {
                let r = match (job.decided, &job.machine) {
                    (Some(r), _) => r,
                    (None, Some(m)) => {
                        let log = logs.join(format!("{}.log", job.name));
                        run::berth(&berth, m, job.timeout, &log).unwrap_or_else(|e| run::Result {
                            status: Status::Fail,
                            details: format!("cannot run {}: {e}", berth.display()),
                            wall: Duration::ZERO,
                        })
                    }
                    (None, None) => unreachable!("a job is decided or has a machine"),
                };
                if tx.send((i, job.name, r)).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut done: Vec<Option<(String, run::Result)>> = (0..n).map(|_| None).collect();
    let mut next = 0;
    for (i, name, r) in rx {
        done[i] = Some((name, r));
        while let Some(Some((name, r))) = done.get(next) {
            println!("{}", line(name, r));
            next += 1;
        }
    }
    for w in workers {
        let _ = w.join();
    }
    done.into_iter().flatten().collect()
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kut: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    let o = parse_args()?;
    let exp = match &o.expected {
        Some(p) if o.bless && !p.exists() => Some(expect::Expectations::new()),
        Some(p) => Some(expect::load(p)?),
        None => None,
    };
    let tree = source::prepare(&o.src, &o.out.join("build"))?;
    let cfg_path = tree.join("x86/unittests.cfg");
    let cfg = std::fs::read_to_string(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let tests: Vec<UnitTest> = unittests::parse(&cfg)
        .into_iter()
        .filter(|t| o.sel.selects(t))
        .collect();
    if tests.is_empty() {
        return Err(format!("no test in {} matches the selection", cfg_path.display()));
    }
    if o.list {
        tests.iter().for_each(|t| println!("{}", t.name));
        return Ok(ExitCode::SUCCESS);
    }
    if !o.berth.is_file() {
        return Err(format!(
            "berth binary not found at {} (build it, or pass --berth)",
            o.berth.display()
        ));
    }
    let machines = o.out.join("machines");
    let logs = o.out.join("logs");
    for d in [&machines, &logs] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let machines = machines.canonicalize().map_err(|e| e.to_string())?;
    let jobs = tests
        .iter()
        .map(|t| {
            let cap = exp
                .as_ref()
                .and_then(|e| e.get(&t.name))
                .and_then(|e| e.timeout.as_deref());
            prepare(t, &o, cap, &tree, &machines)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let start = Instant::now();
    let results = run_all(jobs, &o.berth, &logs, o.jobs);
    let berth_wall = start.elapsed();
    let count = |s: Status| results.iter().filter(|(_, r)| r.status == s).count();
    let failed = count(Status::Fail) + count(Status::Timeout);
    // Not the plain "N passed, N failed" line: expected failures are not
    // make test failures; the verdict against the expectations follows.
    println!(
        "kut summary: {} PASS, {failed} FAIL or TIMEOUT, {} SKIP",
        count(Status::Pass),
        count(Status::Skip)
    );
    println!(
        "kut: {} tests in {:.1} s under {} (machines in {}, logs in {})",
        results.len(),
        berth_wall.as_secs_f64(),
        o.berth.display(),
        machines.display(),
        logs.display()
    );
    let ok = match (&exp, &o.expected) {
        (Some(exp), Some(path)) => {
            let v = expect::Verdict::new(
                exp,
                results
                    .iter()
                    .map(|(n, r)| (n.as_str(), r.status, r.details.as_str())),
            );
            v.report(path)
        }
        _ => true,
    };

    let mut qemu_lines = None;
    if o.qemu {
        let mut args = Vec::new();
        if o.sel.all {
            args.push("-a".to_string());
        }
        if let Some(g) = &o.sel.group {
            args.extend(["-g".to_string(), g.clone()]);
        }
        args.extend(o.sel.names.iter().cloned());
        let wrapper = o
            .wrapper
            .canonicalize()
            .map_err(|e| format!("{}: {e}", o.wrapper.display()))?;
        println!(
            "kut: the same tests under QEMU: {}/run_tests.sh -j {} {}",
            tree.display(),
            o.jobs,
            args.join(" ")
        );
        let (q, qemu_wall) = qemu::run(&tree, &wrapper, o.jobs, &args)?;
        if let Some(exp) = &exp {
            for c in expect::qemu_changes(
                exp,
                q.iter().map(|(n, l)| (n.as_str(), l.status, l.details.as_str())),
            ) {
                println!("kut: {c}");
            }
        }
        let rep = report::Report {
            berth: &o.berth,
            berth_wall,
            qemu_wall,
            qemu_version: qemu::version(),
            jobs: o.jobs,
            results: &results,
            qemu: &q,
        };
        let text = rep.markdown();
        std::fs::write(&o.report, &text).map_err(|e| format!("{}: {e}", o.report.display()))?;
        println!(
            "kut: berth {:.1} s, QEMU {:.1} s for the same {} tests ({:.1}x); side by side in {}",
            berth_wall.as_secs_f64(),
            qemu_wall.as_secs_f64(),
            results.len(),
            qemu_wall.as_secs_f64() / berth_wall.as_secs_f64().max(1e-9),
            o.report.display()
        );
        for (name, status, why) in rep.qemu_only_passes() {
            println!("kut: passes under QEMU, not under berth: {name}: {status} ({why})");
        }
        qemu_lines = Some(q);
    }
    if let (true, Some(exp), Some(path)) = (o.bless, &exp, &o.expected) {
        let text = expect::bless(exp, &results, qemu_lines.as_ref());
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("kut: wrote {}; review the diff", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
