//! Live migration on real KVM, between two berth processes on this host:
//! the counter guest (guests/test/counter.S) migrates mid-run over unix and
//! TCP, in kernel and split irqchip mode, with 1 and 2 vCPUs, and the two
//! halves of its output equal an uninterrupted run's (no counter value
//! missing or repeated, the same final sum); every failure before the
//! target's ack leaves the source running the whole guest and the target
//! exiting without running it; a stream with `end` before the state is
//! refused without running anything; the vCPUs' CPUID is set at the target
//! before the pause, once; an idle 1 GiB guest sends far less than
//! 1 GiB; a guest dirtying faster than the bandwidth limit stops at the
//! round limit and reports its downtime.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

/// A machine file for a counter guest.
fn counter_machine(dir: &TempDir, name: &str, guest: &str, vcpus: u32, mode: &str) -> PathBuf {
    guests();
    let text = machine(
        &common::guest(guest),
        vcpus,
        &format!("\n[irqchip]\nmode = \"{mode}\"\n"),
    );
    dir.write(name, &text)
}

/// A berth process whose stdout and stderr are collected as they come.
struct Proc {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(r: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    })
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_with(berth(), args)
    }

    /// berth under `strace -f -e trace=ioctl`, the trace written to `trace`.
    fn spawn_traced(trace: &Path, args: &[&str]) -> Proc {
        let mut c = Command::new("strace");
        c.current_dir(repo())
            .args(["-f", "-qq", "-e", "trace=ioctl", "-o"])
            .arg(trace)
            .arg(env!("CARGO_BIN_EXE_berth"));
        Proc::spawn_with(c, args)
    }

    fn spawn_with(mut c: Command, args: &[&str]) -> Proc {
        guests();
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), out.clone()),
            collect(child.stderr.take().unwrap(), err.clone()),
        ];
        Proc {
            child,
            out,
            err,
            readers,
        }
    }

    /// Waits (bounded) until stdout or stderr contains `text`.
    fn wait_for(&mut self, stderr: bool, text: &str) {
        let start = Instant::now();
        loop {
            let have = if stderr { &self.err } else { &self.out };
            if have.lock().unwrap().contains(text) {
                return;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "berth ended ({st}) before {text:?}:\n{}",
                    self.err.lock().unwrap()
                );
            }
            assert!(start.elapsed() < LIMIT, "no {text:?} within {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait(mut self) -> Output {
        let status = wait_with_limit(&mut self.child, Instant::now(), LIMIT);
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let stdout = self.out.lock().unwrap().clone().into_bytes();
        let stderr = self.err.lock().unwrap().clone().into_bytes();
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    let mut c = berth();
    c.arg("ctl").arg(socket).args(args);
    run_with_limit(c, LIMIT)
}

fn whole_run(cfg: &Path, extra: &[&str]) -> String {
    let mut c = berth();
    c.arg("run").args(extra).arg(cfg);
    let o = run_with_limit(c, LIMIT);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("sum="), "{out}");
    out
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn reply(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// Migrates the counter guest at "c=100" and checks the output.
fn migrates_mid_run(mode: &str, vcpus: u32, tcp: bool) {
    let dir = TempDir::new("mig");
    let cfg = counter_machine(&dir, "m.toml", "counter", vcpus, mode);
    let whole = whole_run(&cfg, &[]);
    assert!(
        whole.contains(if vcpus == 2 { "ap: ok" } else { "ap: none" }),
        "{whole}"
    );
    let addr = if tcp {
        format!("tcp:127.0.0.1:{}", free_tcp_port())
    } else {
        format!("unix:{}", dir.0.join("in.sock").display())
    };
    let cfg_s = cfg.to_str().unwrap();
    let mut target = Proc::spawn(&["run", "--timeout", "60s", "--incoming", &addr, cfg_s]);
    let (o, source) = migrate_once_warm(&dir, cfg_s, &addr, &mut target);
    let r = reply(&o);
    assert_eq!(r["ok"], true);
    let source = source.wait();
    assert_eq!(source.status.code(), Some(0), "{}", stderr(&source));
    assert!(
        stderr(&source).contains("berth: migrated to "),
        "{}",
        stderr(&source)
    );
    assert!(
        stderr(&source).contains("migrate round 0:"),
        "{}",
        stderr(&source)
    );
    let target = target.wait();
    assert_eq!(target.status.code(), Some(1), "{}", stderr(&target));
    let (a, b) = (stdout(&source), stdout(&target));
    assert!(a.contains("c=100\n"), "{a}");
    assert!(!b.is_empty() && !b.starts_with("counter:"), "{b}");
    same_output(
        &format!("{a}{b}"),
        &whole,
        &format!("{mode} {vcpus} vCPUs over {addr}"),
    );
}

/// Once `target` waits at `addr`, starts the source of `cfg_s` (control
/// socket in `dir`) and migrates it after its counter reached 100; ctl must
/// succeed. Returns ctl's output and the source.
fn migrate_once_warm(dir: &TempDir, cfg_s: &str, addr: &str, target: &mut Proc) -> (Output, Proc) {
    target.wait_for(true, "waiting for a migration");
    let sock = dir.0.join("ctl.sock");
    let mut source = Proc::spawn(&["run", "--control", sock.to_str().unwrap(), cfg_s]);
    source.wait_for(false, "c=100\n");
    let o = ctl(&sock, &["migrate", addr]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    (o, source)
}

/// Compares two outputs line by line; a failure shows the first difference.
fn same_output(got: &str, want: &str, what: &str) {
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    if let Some(i) = (0..g.len().max(w.len())).find(|&i| g.get(i) != w.get(i)) {
        panic!(
            "{what}: line {}: got {:?}, want {:?} (tails: {:?} / {:?})",
            i + 1,
            g.get(i),
            w.get(i),
            &g[g.len().saturating_sub(3)..],
            &w[w.len().saturating_sub(3)..]
        );
    }
}

#[test]
fn migrates_kernel_irqchip_1_vcpu_unix() {
    migrates_mid_run("kernel", 1, false);
}

#[test]
fn migrates_kernel_irqchip_2_vcpus_tcp() {
    migrates_mid_run("kernel", 2, true);
}

#[test]
fn migrates_split_irqchip_1_vcpu_tcp() {
    migrates_mid_run("split", 1, true);
}

#[test]
fn migrates_split_irqchip_2_vcpus_unix() {
    migrates_mid_run("split", 2, false);
}

/// A source whose migration fails: it says why, and the guest runs to its
/// end there with nothing lost.
fn source_runs_on(source: Proc, ctl_out: &Output, whole: &str, why: &str) {
    assert_eq!(ctl_out.status.code(), Some(10), "{}", stdout(ctl_out));
    assert!(stdout(ctl_out).contains(why), "{}", stdout(ctl_out));
    let source = source.wait();
    assert_eq!(source.status.code(), Some(1), "{}", stderr(&source));
    assert!(
        stderr(&source).contains("the VM runs on here"),
        "{}",
        stderr(&source)
    );
    same_output(
        &stdout(&source),
        whole,
        "the source's output after a failed migration",
    );
}

struct Fault {
    dir: TempDir,
    cfg: PathBuf,
    whole: String,
    sock: PathBuf,
    addr: String,
}

fn fault_setup() -> Fault {
    let dir = TempDir::new("mig-fault");
    let cfg = counter_machine(&dir, "m.toml", "counter", 1, "kernel");
    let whole = whole_run(&cfg, &[]);
    let sock = dir.0.join("ctl.sock");
    let addr = format!("unix:{}", dir.0.join("in.sock").display());
    Fault {
        dir,
        cfg,
        whole,
        sock,
        addr,
    }
}

/// `run --incoming` on the fault machine, once it listens.
fn start_target(f: &Fault) -> Proc {
    let mut t = Proc::spawn(&["run", "--incoming", &f.addr, f.cfg.to_str().unwrap()]);
    t.wait_for(true, "waiting for a migration");
    t
}

fn start_source(f: &Fault) -> Proc {
    let mut s = Proc::spawn(&[
        "run",
        "--control",
        f.sock.to_str().unwrap(),
        f.cfg.to_str().unwrap(),
    ]);
    s.wait_for(false, "c=100\n");
    s
}

#[test]
fn target_killed_mid_stream() {
    let f = fault_setup();
    let mut target = start_target(&f);
    let source = start_source(&f);
    // 1 MiB/s: the first pass alone takes about a second.
    let sock = f.sock.clone();
    let addr = f.addr.clone();
    let migrate = std::thread::spawn(move || ctl(&sock, &["migrate", &addr, "--max-bandwidth", "1MiB"]));
    target.wait_for(true, "incoming migration accepted");
    target.child.kill().unwrap();
    let o = migrate.join().unwrap();
    source_runs_on(source, &o, &f.whole, "failed");
    assert!(target.wait().stdout.is_empty());
}

#[test]
fn a_lost_commit_runs_nothing_on_the_target() {
    // A proxy between source and target passes everything but the source's
    // commit, then hangs up both ways: the target, its state loaded and its
    // ack sent, must exit 11 without running a guest instruction.
    use berth::migrate::stream;
    use std::net::Shutdown;
    let f = fault_setup();
    let target = start_target(&f);
    let source = start_source(&f);
    let proxy_path = f.dir.0.join("proxy.sock");
    let l = UnixListener::bind(&proxy_path).unwrap();
    let target_sock = f.dir.0.join("in.sock");
    let proxy = std::thread::spawn(move || {
        let (mut from_source, _) = l.accept().unwrap();
        let mut to_target = UnixStream::connect(&target_sock).unwrap();
        let (mut back_from, mut back_to) = (to_target.try_clone().unwrap(), from_source.try_clone().unwrap());
        let back = std::thread::spawn(move || {
            let _ = std::io::copy(&mut back_from, &mut back_to);
        });
        stream::read_magic(&mut from_source).unwrap();
        stream::write_magic(&mut to_target).unwrap();
        let mut passed = Vec::new();
        loop {
            let (kind, payload) = stream::read_section(&mut from_source).unwrap();
            if kind == stream::Kind::Commit {
                break;
            }
            passed.push(kind);
            stream::write_section(&mut to_target, kind, &payload).unwrap();
        }
        let _ = to_target.shutdown(Shutdown::Both);
        let _ = from_source.shutdown(Shutdown::Both);
        back.join().unwrap();
        passed
    });
    let o = ctl(&f.sock, &["migrate", &format!("unix:{}", proxy_path.display())]);
    let passed = proxy.join().unwrap();
    assert!(passed.contains(&stream::Kind::End), "the proxy saw {passed:?}");
    let t = target.wait();
    assert_eq!(t.status.code(), Some(11), "{}", stderr(&t));
    assert!(!stderr(&t).contains("the guest runs here now"), "{}", stderr(&t));
    assert!(
        stderr(&t)
            .contains("the source's commit did not come: receiving: the other side closed the connection"),
        "{}",
        stderr(&t)
    );
    assert!(t.stdout.is_empty(), "the target ran a guest: {}", stdout(&t));
    // The source sent its commit: as far as it knows the guest moved.
    let s = source.wait();
    assert_eq!(s.status.code(), Some(0), "{}\n{}", reply(&o), stderr(&s));
}

#[test]
fn socket_closed_mid_stream() {
    let f = fault_setup();
    let path = f.dir.0.join("in.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // A fake target: accepts, answers the hello, reads some pages, hangs up.
    let fake = std::thread::spawn(move || {
        use berth::migrate::stream;
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        stream::read_magic(&mut c).unwrap();
        let (kind, _) = stream::read_section(&mut c).unwrap();
        assert_eq!(kind, stream::Kind::Hello);
        stream::write_magic(&mut c).unwrap();
        stream::write_json(
            &mut c,
            stream::Kind::Reply,
            &stream::Reply {
                ok: true,
                error: None,
            },
        )
        .unwrap();
        // The vCPUs' CPUID comes first, then pages.
        let (kind, _) = stream::read_section(&mut c).unwrap();
        assert_eq!(kind, stream::Kind::Cpuid);
        let (kind, _) = stream::read_section(&mut c).unwrap();
        assert_eq!(kind, stream::Kind::Pages);
        c.shutdown(std::net::Shutdown::Both).unwrap();
    });
    let source = start_source(&f);
    let o = ctl(&f.sock, &["migrate", &f.addr]);
    fake.join().unwrap();
    source_runs_on(source, &o, &f.whole, "failed");
}

#[test]
fn garbage_to_incoming() {
    let f = fault_setup();
    let target = start_target(&f);
    let mut c = UnixStream::connect(f.dir.0.join("in.sock")).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: berth\r\n\r\n").unwrap();
    let t = target.wait();
    assert_eq!(t.status.code(), Some(11), "{}", stderr(&t));
    assert!(
        stderr(&t).contains("not a berth migration stream"),
        "{}",
        stderr(&t)
    );
    assert!(t.stdout.is_empty(), "the target ran a guest: {}", stdout(&t));
}

/// A fake source that says the right hello, then sends `sections` (kind,
/// JSON) instead of a migration: the target must exit 11 naming `want`,
/// having run nothing.
fn fake_source_is_refused(sections: &[(berth::migrate::stream::Kind, &str)], want: &str) {
    use berth::migrate::stream;
    let dir = TempDir::new("mig-order");
    let cfg = counter_machine(&dir, "m.toml", "counter", 1, "kernel");
    let addr = format!("unix:{}", dir.0.join("in.sock").display());
    let mut target = Proc::spawn(&["run", "--incoming", &addr, cfg.to_str().unwrap()]);
    target.wait_for(true, "waiting for a migration");
    let plan = berth::plan::plan(&berth::config::load(&cfg).unwrap());
    let hello = stream::Hello {
        plan_sha256: berth::plan::dump::digest(&plan).unwrap(),
        vcpus: plan.cpus.len() as u32,
        slots: plan
            .memslots
            .iter()
            .map(|s| (s.slot, s.guest_addr.0, s.size.0))
            .collect(),
    };
    let mut c = UnixStream::connect(dir.0.join("in.sock")).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    stream::write_magic(&mut c).unwrap();
    stream::write_json(&mut c, stream::Kind::Hello, &hello).unwrap();
    stream::read_magic(&mut c).unwrap();
    let reply: stream::Reply = stream::read_json(&mut c, stream::Kind::Reply, "reply").unwrap();
    assert!(reply.ok, "{reply:?}");
    for (kind, json) in sections {
        stream::write_section(&mut c, *kind, json.as_bytes()).unwrap();
        if *kind == stream::Kind::Sync {
            // Answered before the next section is read.
            let (got, payload) = stream::read_section(&mut c).unwrap();
            assert_eq!((got, payload.len()), (stream::Kind::Synced, 0));
        }
    }
    let t = target.wait();
    assert_eq!(t.status.code(), Some(11), "{}", stderr(&t));
    assert!(stderr(&t).contains(want), "{}", stderr(&t));
    assert!(t.stdout.is_empty(), "the target ran a guest: {}", stdout(&t));
}

#[test]
fn end_before_the_state_is_refused() {
    use berth::migrate::stream::Kind;
    fake_source_is_refused(
        &[(Kind::End, r#"{"rounds":0,"pages":0}"#)],
        "unexpected section End (expected pages, sync or state)",
    );
}

#[test]
fn each_sync_is_answered_once_what_came_before_is_applied() {
    use berth::migrate::stream::Kind;
    // Two syncs, each answered `synced` (checked in the fake source), then
    // an end without a state: refused, nothing run.
    fake_source_is_refused(
        &[
            (Kind::Sync, ""),
            (Kind::Sync, ""),
            (Kind::End, r#"{"rounds":0,"pages":0}"#),
        ],
        "unexpected section End (expected pages, sync or state)",
    );
}

#[test]
fn cpuid_for_the_wrong_vcpu_count_is_refused() {
    use berth::migrate::stream::Kind;
    fake_source_is_refused(
        &[(Kind::Cpuid, r#"{"vcpus":[]}"#)],
        "0 vCPU CPUID tables for 1 vCPUs",
    );
}

/// The target sets each vCPU's CPUID from the source's `cpuid` section,
/// before the guest pauses, and not again when it loads the state (the
/// costliest load, inside the downtime): with 2 vCPUs, both KVM_SET_CPUID2
/// come before the first KVM_SET_REGS, and there are two. And KVM's
/// first-run work is done before the source arrives: each vCPU's first
/// KVM_RUN returns EINTR (immediate_exit) before the first KVM_SET_CPUID2.
#[test]
fn the_target_sets_cpuid_ahead_of_the_state_and_once() {
    let dir = TempDir::new("mig-cpuid");
    let cfg = counter_machine(&dir, "m.toml", "counter", 2, "kernel");
    let whole = whole_run(&cfg, &[]);
    let addr = format!("unix:{}", dir.0.join("in.sock").display());
    let cfg_s = cfg.to_str().unwrap();
    let trace = dir.0.join("target.trace");
    let mut target = Proc::spawn_traced(&trace, &["run", "--timeout", "60s", "--incoming", &addr, cfg_s]);
    let (_, source) = migrate_once_warm(&dir, cfg_s, &addr, &mut target);
    let (source, target) = (source.wait(), target.wait());
    same_output(
        &format!("{}{}", stdout(&source), stdout(&target)),
        &whole,
        "2 vCPUs, traced target",
    );
    let t = std::fs::read_to_string(&trace).expect("the target's strace output");
    let lines: Vec<&str> = t.lines().collect();
    let at = |what: &str| -> Vec<usize> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(what) && !l.contains("= -1"))
            .map(|(i, _)| i)
            .collect()
    };
    let (cpuid, regs) = (at("KVM_SET_CPUID2"), at("KVM_SET_REGS"));
    assert_eq!(cpuid.len(), 2, "one KVM_SET_CPUID2 per vCPU:\n{t}");
    assert!(!regs.is_empty(), "the state was loaded:\n{t}");
    assert!(
        cpuid.iter().all(|&c| c < regs[0]),
        "every CPUID set before any register was loaded:\n{t}"
    );
    // A call another thread's ioctl interrupts in strace's output ends on
    // a later "<... ioctl resumed>" line of the same pid.
    let result = |i: usize| -> &str {
        if !lines[i].contains("<unfinished") {
            return lines[i];
        }
        let pid = format!("{} ", lines[i].split_whitespace().next().unwrap_or_default());
        lines[i..]
            .iter()
            .find(|l| l.starts_with(&pid) && l.contains("resumed>"))
            .copied()
            .unwrap_or_default()
    };
    let runs: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("KVM_RUN"))
        .collect();
    assert!(
        runs.len() > 2
            && runs[..2]
                .iter()
                .all(|&r| result(r).contains("EINTR") && r < cpuid[0]),
        "each vCPU ran once with immediate_exit before the source's CPUID came:\n{t}"
    );
}

#[test]
fn different_plan_is_refused_before_the_source_pauses() {
    let f = fault_setup();
    let other = counter_machine(&f.dir, "other.toml", "counter", 2, "kernel");
    let mut target = Proc::spawn(&["run", "--incoming", &f.addr, other.to_str().unwrap()]);
    target.wait_for(true, "waiting for a migration");
    let source = start_source(&f);
    let o = ctl(&f.sock, &["migrate", &f.addr]);
    let t = target.wait();
    assert_eq!(t.status.code(), Some(12), "{}", stderr(&t));
    assert!(stderr(&t).contains("another machine"), "{}", stderr(&t));
    assert!(t.stdout.is_empty());
    let err_before = source.err.lock().unwrap().clone();
    assert!(
        !err_before.contains("migrate round"),
        "the source sent memory: {err_before}"
    );
    source_runs_on(source, &o, &f.whole, "another machine");
}

#[test]
fn idle_1gib_guest_sends_little() {
    let dir = TempDir::new("mig-1g");
    let cfg = counter_machine(&dir, "m.toml", "counter", 1, "kernel");
    let cfg_s = cfg.to_str().unwrap();
    let whole = whole_run(&cfg, &["--memory", "1GiB"]);
    let addr = format!("unix:{}", dir.0.join("in.sock").display());
    let mut target = Proc::spawn(&["run", "--memory", "1GiB", "--incoming", &addr, cfg_s]);
    target.wait_for(true, "waiting for a migration");
    let sock = dir.0.join("ctl.sock");
    let mut source = Proc::spawn(&[
        "run",
        "--memory",
        "1GiB",
        "--control",
        sock.to_str().unwrap(),
        cfg_s,
    ]);
    source.wait_for(false, "c=100\n");
    let o = ctl(&sock, &["migrate", &addr]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let bytes = reply(&o)["bytes"].as_u64().unwrap();
    // The guest's image, stack, page tables and data: a few MiB of 1 GiB.
    assert!(bytes < 16 << 20, "{bytes} bytes sent");
    let (s, t) = (source.wait(), target.wait());
    assert_eq!(t.status.code(), Some(1), "{}", stderr(&t));
    same_output(&format!("{}{}", stdout(&s), stdout(&t)), &whole, "1 GiB");
}

#[test]
fn hot_guest_stops_at_the_round_limit_and_reports_downtime() {
    let dir = TempDir::new("mig-hot");
    let cfg = counter_machine(&dir, "m.toml", "counter-hot", 2, "kernel");
    let cfg_s = cfg.to_str().unwrap();
    let addr = format!("unix:{}", dir.0.join("in.sock").display());
    let mut target = Proc::spawn(&["run", "--incoming", &addr, cfg_s]);
    target.wait_for(true, "waiting for a migration");
    let sock = dir.0.join("ctl.sock");
    let mut source = Proc::spawn(&["run", "--control", sock.to_str().unwrap(), cfg_s]);
    source.wait_for(false, "c=100\n");
    // 16 MiB/s while the guest runs; its AP rewrites 16 MiB a pass.
    let o = ctl(
        &sock,
        &["migrate", &addr, "--max-bandwidth", "16MiB", "--max-rounds", "2"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let r = reply(&o);
    assert_eq!(r["rounds"], 2, "{r}");
    assert!(r["estimated_downtime_ms"].as_f64().unwrap() > 50.0, "{r}");
    let downtime = r["downtime_ms"].as_f64().unwrap();
    assert!(downtime > 0.0, "{r}");
    let (s, t) = (source.wait(), target.wait());
    assert!(
        stderr(&s).contains(&format!("downtime {downtime:.1} ms")),
        "{}",
        stderr(&s)
    );
    assert_eq!(t.status.code(), Some(1), "{}", stderr(&t));
    let out = format!("{}{}", stdout(&s), stdout(&t));
    assert!(out.contains("c=10000\nap: ok\nsum="), "{out}");
    // Every counter value once, in order.
    let counts: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("c="))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts, (1..=10000).collect::<Vec<u64>>());
}

#[test]
fn incoming_address_errors_are_usage_errors() {
    let dir = TempDir::new("mig-usage");
    let cfg = counter_machine(&dir, "m.toml", "counter", 1, "kernel");
    let taken = dir.write("taken", "");
    for (addr, says) in [
        ("bogus:1", "expected unix:PATH or tcp:HOST:PORT"),
        (&*format!("unix:{}", taken.display()), "the path exists already"),
    ] {
        let mut c = berth();
        c.args(["run", "--incoming", addr]).arg(&cfg);
        let o = run_with_limit(c, LIMIT);
        assert_eq!(o.status.code(), Some(2), "{addr}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{addr}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn a_machine_this_host_cannot_build_ends_the_target_before_it_waits() {
    // The target builds its VM before it waits for a source: a capability
    // the host lacks is the run's own error (as in `berth run`, exit 3),
    // at once, not a source's refusal after it has connected.
    let dir = TempDir::new("mig-nobuild");
    let cfg = counter_machine(&dir, "m.toml", "counter", 1, "split");
    let addr = format!("unix:{}", dir.0.join("in.sock").display());
    let mut c = berth();
    c.args(["run", "--disable-cap", "SPLIT_IRQCHIP", "--incoming", &addr])
        .arg(&cfg);
    let o = run_with_limit(c, LIMIT);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("berth: kvm does not support split irqchip"), "{err}");
    assert!(!err.contains("waiting for a migration"), "{err}");
    assert!(!dir.0.join("in.sock").exists(), "the socket is removed");
    assert!(o.stdout.is_empty());
}
