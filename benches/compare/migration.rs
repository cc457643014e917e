//! Benchmark 9: live migration on localhost TCP, berth (`run --incoming` + the control
//! socket's `migrate`) vs QEMU (`-incoming tcp:` + QMP `migrate`), both driven from this
//! process over their Unix sockets, for 128 MiB and 1 GiB guests, idle (bench-tick)
//! and busy (bench-dirty). Per run: total time and downtime as each VMM reports them, bytes
//! sent, and the guest-visible gap: the host timestamps every counter line on the source's and
//! the target's stdout, and the gap is the last source line → the first target line.

use crate::qemu::{Serial, QEMU};
use crate::results::{Bench, Better, Row, Stat};
use crate::Ctx;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counter lines the source prints before the migration starts (the guest is warm).
const LINES_BEFORE: usize = 200;
/// Counter lines the target must print after it, to show the guest runs on.
const LINES_AFTER: usize = 50;
/// berth's and QEMU's downtime budget (ms) for the comparison.
const DOWNTIME_MS: u64 = 50;

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Sample {
    total_ms: f64,
    downtime_ms: f64,
    gap_ms: f64,
    /// The guest's line period before the migration (median, host-side).
    period_ms: f64,
    /// The source's last complete line → the target's first.
    line_gap_ms: f64,
    mib: f64,
}

/// What a VMM printed on stdout, and when each read of it returned.
#[derive(Default)]
struct Output {
    text: String,
    chunks: Vec<Instant>,
    /// When each complete line arrived: the time of the read holding its newline.
    lines: Vec<Instant>,
}

/// A VMM process whose stdout is timestamped as it arrives.
struct Vmm {
    child: Child,
    out: Arc<Mutex<Output>>,
    err: Arc<Mutex<String>>,
}

impl Vmm {
    fn spawn(program: &Path, args: &[String]) -> Result<Vmm, String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let out = Arc::new(Mutex::new(Output::default()));
        let err = Arc::new(Mutex::new(String::new()));
        let (o, mut stdout) = (out.clone(), child.stdout.take().ok_or("no stdout")?);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                let mut o = o.lock().unwrap();
                let now = Instant::now();
                o.chunks.push(now);
                let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                o.lines.extend(std::iter::repeat_n(now, newlines));
                o.text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (e, stderr) = (err.clone(), child.stderr.take().ok_or("no stderr")?);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut e = e.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        Ok(Vmm { child, out, err })
    }

    /// Waits (bounded) for `cond`; fails if the process ends first.
    fn wait(&mut self, what: &str, limit: Duration, cond: impl Fn(&Vmm) -> bool) -> Result<(), String> {
        let start = Instant::now();
        while !cond(self) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "ended ({st}) before {what}: {}",
                    self.err.lock().unwrap()
                ));
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "no {what} within {limit:?}: {}",
                    self.err.lock().unwrap()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Complete lines so far.
    fn count(&self) -> usize {
        self.out.lock().unwrap().text.matches('\n').count()
    }

    /// Waits (bounded) for the exit; returns the status code.
    fn exit(mut self, limit: Duration) -> Result<Option<i32>, String> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(st.code());
            }
            if start.elapsed() > limit {
                return Err(format!("did not exit within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The guest-visible gap: the source's last output → the target's first (a line may be split
/// between them), with the counter checked to go on by one across the two.
fn gap(source: &Vmm, target: &Vmm) -> Result<f64, String> {
    let s = source.out.lock().unwrap();
    let t = target.out.lock().unwrap();
    let (Some(ts), Some(tt)) = (s.chunks.last(), t.chunks.first()) else {
        return Err("no output on one side".into());
    };
    let all = format!("{}{}", s.text, t.text);
    for (want, l) in all.lines().take(all.matches('\n').count()).enumerate() {
        let want = want as u64;
        let n = l
            .strip_prefix("t ")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or(format!("not a counter line: {l:?}"))?;
        if n != want {
            return Err(format!("the counter goes from {} to {n}", want.wrapping_sub(1)));
        }
    }
    Ok(tt.duration_since(*ts).as_secs_f64() * 1000.0)
}

/// The guest's line period as the host sees it: the median interval between the source's last
/// 100 complete lines before the migration.
fn period(source: &Vmm) -> f64 {
    let s = source.out.lock().unwrap();
    let lines = &s.lines[s.lines.len().saturating_sub(101)..];
    let mut gaps: Vec<f64> = lines
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
        .collect();
    gaps.sort_by(f64::total_cmp);
    gaps.get(gaps.len() / 2).copied().unwrap_or(0.0)
}

/// The line gap: the source's last complete line → the target's first (both VMMs write a line
/// out as soon as it is complete; berth gathers the bytes of an unfinished line for up to 1 ms,
/// QEMU writes each byte, so "any output" times differ in kind between them).
fn line_gap(source: &Vmm, target: &Vmm) -> Result<f64, String> {
    let s = source.out.lock().unwrap();
    let t = target.out.lock().unwrap();
    let (Some(ts), Some(tt)) = (s.lines.last(), t.lines.first()) else {
        return Err("no complete line on one side".into());
    };
    Ok(tt.duration_since(*ts).as_secs_f64() * 1000.0)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn berth_once(ctx: &Ctx, machine: &Path, mem: &str, dir: &Path) -> Result<Sample, String> {
    let limit = ctx.cfg.timeout;
    let addr = format!("tcp:127.0.0.1:{}", free_port()?);
    let sock = dir.join("ctl.sock");
    let _ = std::fs::remove_file(&sock);
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["run".to_string(), "--memory".into(), mem.into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(machine.display().to_string());
        a
    };
    let mut target = Vmm::spawn(&ctx.berth, &base(&["--incoming", &addr]))?;
    target.wait("the target's listener", limit, |v| {
        v.err.lock().unwrap().contains("waiting for a migration")
    })?;
    let mut source = Vmm::spawn(&ctx.berth, &base(&["--control", &sock.display().to_string()]))?;
    source.wait("counter lines", limit, |v| v.count() >= LINES_BEFORE)?;
    let reply = control(
        &sock,
        &format!(
            r#"{{"cmd":"migrate","to":"{addr}","max_downtime_ms":{DOWNTIME_MS},"max_rounds":30,"max_bandwidth":null}}"#
        ),
        limit,
    )?;
    if reply["ok"] != true {
        return Err(format!("control migrate: {reply}"));
    }
    target.wait("counter lines at the target", limit, |v| v.count() >= LINES_AFTER)?;
    let gap_ms = gap(&source, &target)?;
    let period_ms = period(&source);
    let line_gap_ms = line_gap(&source, &target)?;
    match source.exit(limit)? {
        Some(0) => {}
        other => return Err(format!("the source exited with {other:?}")),
    }
    target.terminate();
    target.exit(limit)?;
    let f = |k: &str| reply[k].as_f64().ok_or(format!("reply without {k}: {reply}"));
    Ok(Sample {
        total_ms: f("total_ms")?,
        downtime_ms: f("downtime_ms")?,
        gap_ms,
        period_ms,
        line_gap_ms,
        mib: f("bytes")? / (1 << 20) as f64,
    })
}

/// One request on berth's control socket (README "Control socket": a JSON line in, a JSON
/// line out), from this process, as QMP is for QEMU. A `berth ctl` process would start, and
/// exit on the reply, inside the guest's downtime on the same two cores: 0.3 ms more of the
/// idle 128 MiB guest's gap (median of 14 runs each) that is the client's, not the VMM's.
fn control(sock: &Path, json: &str, limit: Duration) -> Result<serde_json::Value, String> {
    let s = UnixStream::connect(sock).map_err(|e| format!("control socket {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let mut s = BufReader::new(s);
    s.get_mut()
        .write_all(format!("{json}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    s.read_line(&mut line)
        .map_err(|e| format!("control socket: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("control socket reply {line:?}: {e}"))
}

/// A QMP connection: commands in, their `return` out (events skipped).
struct Qmp(BufReader<UnixStream>);

impl Qmp {
    fn connect(path: &Path, limit: Duration) -> Result<Qmp, String> {
        let start = Instant::now();
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > limit => return Err(format!("QMP {}: {e}", path.display())),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
        let mut q = Qmp(BufReader::new(s));
        let mut greeting = String::new();
        q.0.read_line(&mut greeting).map_err(|e| e.to_string())?;
        q.cmd(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(q)
    }

    fn cmd(&mut self, json: &str) -> Result<serde_json::Value, String> {
        self.0
            .get_mut()
            .write_all(format!("{json}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        loop {
            let mut line = String::new();
            if self.0.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("QMP closed".into());
            }
            let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            if v.get("return").is_some() {
                return Ok(v["return"].clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP {json}: {e}"));
            }
        }
    }
}

fn qemu_once(ctx: &Ctx, image: &str, mem: &str, dir: &Path) -> Result<Sample, String> {
    let limit = ctx.cfg.timeout;
    let port = free_port()?;
    let (sq, tq) = (dir.join("src.qmp"), dir.join("tgt.qmp"));
    let _ = std::fs::remove_file(&sq);
    let _ = std::fs::remove_file(&tq);
    let args = |qmp: &Path, incoming: bool| -> Vec<String> {
        let mut a = ctx.qemu.microvm(&ctx.guest(image), mem, Serial::Stdio);
        a.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
        if incoming {
            a.extend(["-incoming".into(), format!("tcp:127.0.0.1:{port}")]);
        }
        a
    };
    let qemu = Path::new(QEMU);
    let mut target = Vmm::spawn(qemu, &args(&tq, true))?;
    // The target listens once its main loop answers QMP.
    let mut tqmp = Qmp::connect(&tq, limit)?;
    let status = tqmp.cmd(r#"{"execute":"query-status"}"#)?;
    if status["status"] != "inmigrate" {
        return Err(format!("the QEMU target is {status}"));
    }
    let mut source = Vmm::spawn(qemu, &args(&sq, false))?;
    let mut sqmp = Qmp::connect(&sq, limit)?;
    source.wait("counter lines", limit, |v| v.count() >= LINES_BEFORE)?;
    sqmp.cmd(&format!(
        r#"{{"execute":"migrate-set-parameters","arguments":{{"downtime-limit":{DOWNTIME_MS},"max-bandwidth":{}}}}}"#,
        100u64 << 30
    ))?;
    sqmp.cmd(&format!(
        r#"{{"execute":"migrate","arguments":{{"uri":"tcp:127.0.0.1:{port}"}}}}"#
    ))?;
    let start = Instant::now();
    let info = loop {
        let info = sqmp.cmd(r#"{"execute":"query-migrate"}"#)?;
        match info["status"].as_str() {
            Some("completed") => break info,
            Some("failed") | Some("cancelled") => return Err(format!("QEMU migration: {info}")),
            _ if start.elapsed() > limit => return Err(format!("QEMU migration still {info}")),
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    target.wait("counter lines at the target", limit, |v| v.count() >= LINES_AFTER)?;
    let gap_ms = gap(&source, &target)?;
    let period_ms = period(&source);
    let line_gap_ms = line_gap(&source, &target)?;
    let _ = sqmp.cmd(r#"{"execute":"quit"}"#);
    let _ = tqmp.cmd(r#"{"execute":"quit"}"#);
    source.exit(limit)?;
    target.exit(limit)?;
    let f = |v: &serde_json::Value| v.as_f64().ok_or(format!("query-migrate: {info}"));
    Ok(Sample {
        total_ms: f(&info["total-time"])?,
        downtime_ms: f(&info["downtime"])?,
        gap_ms,
        period_ms,
        line_gap_ms,
        mib: f(&info["ram"]["transferred"])? / (1 << 20) as f64,
    })
}

/// Benchmark 9 (see the module comment).
pub fn migration(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    let runs = crate::env_num("BENCH_MIGRATE_RUNS", 3usize, 1)?;
    b.method = format!(
        "Guests bench-tick-pvh.elf (idle: prints a counter line \"t <hex>\" after each fixed \
         busy loop, touches nothing else) and bench-dirty-pvh.elf (busy: before each line writes 256 pages, \
         round-robin over 32 MiB), 1 vCPU, kernel irqchip, 128 MiB and 1 GiB, on localhost TCP. \
         berth: `run --incoming tcp:…` and `run --control`, then the control socket's migrate \
         (max_downtime_ms {DOWNTIME_MS}, sent from the harness as QMP is, not by a `berth ctl` \
         process) once the source printed {LINES_BEFORE} lines; QEMU: microvm with \
         `-incoming tcp:…` (ready when QMP says inmigrate), then QMP migrate-set-parameters \
         downtime-limit {DOWNTIME_MS} and max-bandwidth 100 GiB/s (no cap, like berth's \
         default), migrate, query-migrate until completed. Total time and downtime as each VMM \
         reports them (berth: connect → commit, pause → ack; QEMU: total-time, downtime); MiB \
         sent (berth: stream bytes; QEMU: ram.transferred); guest-visible gap: host timestamps \
         of the last output on the source's stdout and the first on the target's (the counter \
         must go on by one). The gap holds the guest's own time to its next line besides the \
         downtime: the line period row is the median interval between the source's output \
         reads before the migration (the guests pace lines by instructions, so it is the same \
         under both VMMs; on the dev host about 0.7 ms idle and 1.6 ms busy). Sides alternate; {runs} run(s) per side and guest (BENCH_MIGRATE_RUNS)."
    );
    b.commands.push(format!(
        "{} run --incoming tcp:127.0.0.1:PORT bench/machines/mig-tick.toml; {} run --control SOCK …; \
         SOCK ← {{\"cmd\":\"migrate\",\"to\":\"tcp:127.0.0.1:PORT\",\"max_downtime_ms\":{DOWNTIME_MS},…}}",
        ctx.berth.display(),
        ctx.berth.display()
    ));
    b.commands.push(format!(
        "{QEMU} {} -qmp unix:QMP,server=on,wait=off -incoming tcp:127.0.0.1:PORT; QMP migrate",
        ctx.qemu
            .microvm(&ctx.guest("bench-tick-pvh"), "128M", Serial::Stdio)
            .join(" ")
    ));
    let dir = std::env::temp_dir().join(format!("berth-bench-mig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = (|| {
        for (kind, image) in [("idle", "bench-tick-pvh"), ("busy", "bench-dirty-pvh")] {
            let machine: PathBuf = ctx.machine(if kind == "idle" { "mig-tick" } else { "mig-dirty" });
            for (mem, label) in [("128MiB", "128 MiB"), ("1GiB", "1 GiB")] {
                let qmem = if mem == "1GiB" { "1G" } else { "128M" };
                eprint!("  {label} {kind}: berth / qemu × {runs} ");
                let (mut bs, mut qs) = (Vec::new(), Vec::new());
                for _ in 0..runs {
                    bs.push(
                        berth_once(ctx, &machine, mem, &dir)
                            .map_err(|e| format!("berth, {label} {kind}: {e}"))?,
                    );
                    eprint!(".");
                    qs.push(
                        qemu_once(ctx, image, qmem, &dir)
                            .map_err(|e| format!("qemu, {label} {kind}: {e}"))?,
                    );
                    eprint!(".");
                }
                eprintln!();
                rows(b, &format!("{label} {kind}"), &bs, &qs);
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn rows(b: &mut Bench, what: &str, bs: &[Sample], qs: &[Sample]) {
    let stat = |s: &[Sample], f: fn(&Sample) -> f64| Some(Stat::of(s.iter().map(f).collect()));
    let row = |m: &str, unit: &str, f: fn(&Sample) -> f64| {
        Row::new(
            &format!("{what}: {m}"),
            unit,
            stat(bs, f),
            stat(qs, f),
            Better::Lower,
        )
    };
    b.rows.push(row("total time", "ms", |s| s.total_ms));
    b.rows.push(row("downtime (VMM)", "ms", |s| s.downtime_ms));
    let gap = row("guest-visible gap", "ms", |s| s.gap_ms);
    let met = gap.ratio.is_some_and(|r| r <= 0.5);
    b.rows.push(
        gap.target("≤ 0.5× QEMU", met)
            .chart(&format!("migrate {what} gap")),
    );
    b.rows
        .push(row("line gap (last complete line → first)", "ms", |s| {
            s.line_gap_ms
        }));
    b.rows
        .push(row("line period before (source)", "ms", |s| s.period_ms));
    b.rows.push(row("line gap − line period", "ms", |s| {
        s.line_gap_ms - s.period_ms
    }));
    b.rows.push(row("sent", "MiB", |s| s.mib));
}
