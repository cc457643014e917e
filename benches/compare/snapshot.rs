//! Benchmark 9: snapshot and restore, berth (`--snapshot-at`, `berth restore`) vs QEMU's own
//! save and load (`migrate "exec:cat > FILE"` over QMP, `-incoming "exec:cat FILE"`), with
//! 128 MiB and 1 GiB guests.
//!
//! The guest is bench-snap-pvh.elf: it prints "bench: ready", then "bench: resumed", writes the
//! boot timer and exits. berth is snapshotted exactly after a line (`--snapshot-at` parks the
//! vCPU that completes the line before it runs the guest again): after "bench: ready" its
//! restore prints "bench: resumed" next; after "bench: resumed" the restored guest's first
//! instructions end the VM (boot-timer write, debug-exit). QEMU cannot stop at a serial line, so
//! it is saved before its first instruction (`-S`, then `migrate`): its restore prints
//! "bench: ready" first, the same amount of guest work. For the first-instruction time QEMU
//! saves bench-exit-pvh.elf the same way. A VM saved before it ran loads paused (run state
//! `prelaunch`), so the harness sends QMP `cont` as soon as `query-migrate` says the load
//! completed, the way libvirt resumes a restored domain.

use crate::qemu::{Serial, QEMU};
use crate::results::{Bench, Better, Row, Stat};
use crate::runner::{self, Measured, Spec};
use crate::stats::{self, Side};
use crate::Ctx;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The sizes measured: label, berth machine, QEMU -m.
const SIZES: [(&str, &str, &str); 2] = [("128 MiB", "snap-pvh", "128M"), ("1 GiB", "snap-pvh-1g", "1G")];

/// A QMP connection (one JSON object per line; events are skipped).
struct Qmp {
    out: UnixStream,
    inp: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects to `path` (retrying until QEMU has created it, at most `limit`) and leaves
    /// capabilities negotiation.
    fn connect(path: &Path, limit: Duration) -> Result<Qmp, String> {
        let deadline = Instant::now() + limit;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(format!("QMP {}: {e}", path.display())),
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        };
        s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
        let inp = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut q = Qmp { out: s, inp };
        q.read()?; // the greeting
        q.cmd("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        loop {
            let mut line = String::new();
            match self.inp.read_line(&mut line) {
                Ok(0) => return Err("QMP: QEMU closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("QMP: {e}")),
            }
            let v: Value = serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line}"))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    fn cmd(&mut self, name: &str, args: Value) -> Result<Value, String> {
        let req = json!({"execute": name, "arguments": args});
        writeln!(self.out, "{req}").map_err(|e| format!("QMP {name}: {e}"))?;
        let v = self.read()?;
        if let Some(e) = v.get("error") {
            return Err(format!("QMP {name}: {e}"));
        }
        Ok(v["return"].clone())
    }

    /// Polls `query-migrate` until it completes (bounded by the socket's read timeout per
    /// reply and by `limit` overall).
    fn wait_migrated(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.cmd("query-migrate", json!({}))?;
            match r["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => return Err(format!("migration {r}")),
                _ if Instant::now() >= deadline => return Err(format!("migration not done: {r}")),
                _ => {}
            }
        }
    }
}

/// QEMU `-M microvm` running guests/IMAGE.elf with a QMP socket; `extra` appended.
fn qemu_args(ctx: &Ctx, image: &str, mem: &str, qmp: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = ctx.qemu.microvm(&ctx.guest(image), mem, Serial::Stdio);
    a.extend([
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp.display()),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Saves QEMU before its first instruction (`-S`) into `file`; returns the ms from the
/// `migrate` request to `query-migrate` saying completed.
fn qemu_save(ctx: &Ctx, image: &str, mem: &str, work: &Path, file: &Path) -> Result<f64, String> {
    let qmp = work.join("save.qmp");
    let _ = std::fs::remove_file(&qmp);
    let _ = std::fs::remove_file(file);
    let mut child = Command::new(QEMU)
        .args(qemu_args(ctx, image, mem, &qmp, &["-S"]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{QEMU}: {e}"))?;
    let result = (|| {
        let mut q = Qmp::connect(&qmp, ctx.cfg.timeout)?;
        let t = Instant::now();
        q.cmd(
            "migrate",
            json!({"uri": format!("exec:cat > {}", file.display())}),
        )?;
        q.wait_migrated(ctx.cfg.timeout)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let _ = q.cmd("quit", json!({}));
        Ok(ms)
    })();
    if result.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    result
}

/// `berth run --snapshot-at LINE --snapshot-to DIR MACHINE` (exits 0); returns berth's own
/// figure for the snapshot (pause → directory in place), from its stderr.
fn berth_save(ctx: &Ctx, machine: &str, line: &str, dir: &Path) -> Result<f64, String> {
    let _ = std::fs::remove_dir_all(dir);
    let spec = Spec::new(
        "berth snapshot",
        &ctx.berth,
        [
            "run".to_string(),
            "--snapshot-at".into(),
            line.into(),
            "--snapshot-to".into(),
            dir.display().to_string(),
            ctx.machine(machine).display().to_string(),
        ],
        ctx.cfg.timeout,
    )
    .status(0)
    .stderr_has("berth: snapshot written to");
    let m = runner::run(&spec)?;
    let text = m
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("berth: snapshot written to "))
        .unwrap_or("");
    text.split_once(" (")
        .and_then(|(_, rest)| rest.split_once(" ms"))
        .and_then(|(ms, _)| ms.parse().ok())
        .ok_or_else(|| format!("cannot read the snapshot time from {text:?}"))
}

/// A QEMU restore spec: `-incoming "exec:cat FILE"`, resumed over QMP by [`qemu_resume`].
fn qemu_restore(ctx: &Ctx, label: &str, image: &str, mem: &str, file: &Path, qmp: &Path) -> Spec {
    let incoming = format!("exec:cat {}", file.display());
    Spec::new(
        label,
        QEMU,
        qemu_args(ctx, image, mem, qmp, &["-incoming", &incoming]),
        ctx.cfg.timeout,
    )
}

/// The driver of a QEMU restore: `cont` once the incoming migration has completed.
fn qemu_resume(qmp: &Path, limit: Duration) -> Result<(), String> {
    let mut q = Qmp::connect(qmp, limit)?;
    q.wait_migrated(limit)?;
    q.cmd("cont", json!({}))?;
    Ok(())
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Benchmark 9: snapshot time and restore time, berth vs QEMU, 128 MiB and 1 GiB.
pub fn snapshot(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    b.method = "Guest bench-snap-pvh.elf prints \"bench: ready\", then \"bench: resumed\", writes the \
                boot timer and exits (status 1). Snapshot: berth `run --snapshot-at \"bench: ready\" \
                --snapshot-to DIR` (a new directory each run), its own figure from pausing the VM to the \
                directory in place (stderr); QEMU started with -S, QMP `migrate \"exec:cat > FILE\"` \
                until `query-migrate` says completed, timed by the harness. Restore → next line: berth \
                `restore DIR` of the snapshot at \"bench: ready\", spawn → \"bench: resumed\" read from \
                stdout; QEMU `-incoming \"exec:cat FILE\"` of the -S save (QEMU cannot stop at a serial \
                line), QMP `cont` once the load completed, spawn → \"bench: ready\" (the same guest \
                work: one line). Restore → first guest instruction: berth restores the snapshot taken \
                at \"bench: resumed\" (the guest's next instructions are the boot-timer write and \
                debug-exit), QEMU the -S save of bench-exit-pvh.elf; spawn → process exit. Snapshots \
                and saves are files on the same file system (the harness's temp directory)."
        .into();
    let work = std::env::temp_dir().join(format!("berth-bench-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let r = sizes(ctx, b, &work);
    let _ = std::fs::remove_dir_all(&work);
    r
}

fn sizes(ctx: &Ctx, b: &mut Bench, work: &Path) -> Result<(), String> {
    for (label, machine, mem) in SIZES {
        let dir = |name: &str| -> PathBuf { work.join(format!("{machine}-{name}")) };
        // Snapshot time, alternating.
        let n = std::cell::Cell::new(0u32);
        let save_sides: Vec<Side<'_, f64>> = vec![
            (
                "berth",
                Box::new(|| {
                    n.set(n.get() + 1);
                    let d = dir(&format!("save-{}", n.get()));
                    let r = berth_save(ctx, machine, "bench: ready", &d);
                    let _ = std::fs::remove_dir_all(&d);
                    r
                }),
            ),
            (
                "qemu",
                Box::new(|| {
                    let f = dir("save.mig");
                    let r = qemu_save(ctx, "bench-snap-pvh", mem, work, &f);
                    let _ = std::fs::remove_file(&f);
                    r
                }),
            ),
        ];
        let saved = stats::alternate(
            &format!("snapshot {label}"),
            ctx.cfg.warmup,
            ctx.cfg.runs,
            &save_sides,
        )?;
        b.rows.push(
            Row::new(
                &format!("snapshot, {label}: pause/migrate → written"),
                "ms",
                Some(Stat::of(saved[0].clone())),
                Some(Stat::of(saved[1].clone())),
                Better::Lower,
            )
            .chart(&format!("snapshot {label} (ms)")),
        );

        // The snapshots every restore run loads (restores never change them).
        let ready = dir("ready");
        let resumed = dir("resumed");
        berth_save(ctx, machine, "bench: ready", &ready)?;
        berth_save(ctx, machine, "bench: resumed", &resumed)?;
        let q_snap = dir("snap.mig");
        let q_exit = dir("exit.mig");
        qemu_save(ctx, "bench-snap-pvh", mem, work, &q_snap)?;
        qemu_save(ctx, "bench-exit-pvh", mem, work, &q_exit)?;
        let restore = |dir: &Path, stats: bool| {
            let mut args = vec!["restore".to_string()];
            if stats {
                args.push("--stats".into());
            }
            args.push(dir.display().to_string());
            Spec::new("berth restore", &ctx.berth, args, ctx.cfg.timeout)
        };
        let b_line = restore(&ready, false).first_line("bench: resumed");
        // The restored guest's first instruction writes the boot timer.
        let b_exit = restore(&resumed, true).stderr_has("stats: boot-timer");
        let qmp_line = work.join("line.qmp");
        let qmp_exit = work.join("exit.qmp");
        let q_line = qemu_restore(ctx, "qemu -incoming", "bench-snap-pvh", mem, &q_snap, &qmp_line)
            .first_line("bench: ready");
        let q_exit_spec = qemu_restore(ctx, "qemu -incoming", "bench-exit-pvh", mem, &q_exit, &qmp_exit);
        if label == SIZES[0].0 {
            for s in [&b_line, &q_line, &b_exit, &q_exit_spec] {
                b.commands.push(s.command_line());
            }
        }
        let limit = ctx.cfg.timeout;
        let sides: Vec<Side<'_, Measured>> = vec![
            ("berth line", Box::new(|| runner::run(&b_line))),
            (
                "qemu line",
                Box::new(|| {
                    let _ = std::fs::remove_file(&qmp_line);
                    runner::run_driven(&q_line, &|| qemu_resume(&qmp_line, limit))
                }),
            ),
            ("berth exit", Box::new(|| runner::run(&b_exit))),
            (
                "qemu exit",
                Box::new(|| {
                    let _ = std::fs::remove_file(&qmp_exit);
                    runner::run_driven(&q_exit_spec, &|| qemu_resume(&qmp_exit, limit))
                }),
            ),
        ];
        let r = stats::alternate(&format!("restore {label}"), ctx.cfg.warmup, ctx.cfg.runs, &sides)?;
        let line = Row::new(
            &format!("restore, {label}: spawn → next serial line"),
            "ms",
            Some(Stat::of(r[0].iter().map(|m| ms(m.first_line)).collect())),
            Some(Stat::of(r[1].iter().map(|m| ms(m.first_line)).collect())),
            Better::Lower,
        )
        .chart(&format!("restore to line {label} (ms)"));
        let line = if label == "1 GiB" {
            let v = line.berth_value();
            let ratio = v / Stat::of(r[1].iter().map(|m| ms(m.first_line)).collect()).value();
            line.target("≤ 5 ms and ≤ 0.1× QEMU", v <= 5.0 && ratio <= 0.1)
        } else {
            line
        };
        b.rows.push(line);
        b.rows.push(Row::new(
            &format!("restore, {label}: spawn → exit (first guest instructions)"),
            "ms",
            Some(Stat::of(r[2].iter().map(Measured::wall_ms).collect())),
            Some(Stat::of(r[3].iter().map(Measured::wall_ms).collect())),
            Better::Lower,
        ));
        let timers = r[2]
            .iter()
            .map(crate::boot::boot_timer)
            .collect::<Result<Vec<_>, _>>()?;
        b.rows.push(Row::new(
            &format!("restore, {label}: VMM start → first guest instruction (berth's boot timer, --stats)"),
            "ms",
            Some(Stat::of(timers.iter().map(|t| t.0).collect())),
            None,
            Better::Lower,
        ));
        b.rows.push(Row::new(
            &format!("restore, {label}: CPU of the line run, user + sys"),
            "ms",
            Some(Stat::of(r[0].iter().map(Measured::cpu_ms).collect())),
            Some(Stat::of(r[1].iter().map(Measured::cpu_ms).collect())),
            Better::Lower,
        ));
        for d in [&ready, &resumed] {
            let _ = std::fs::remove_dir_all(d);
        }
        for f in [&q_snap, &q_exit] {
            let _ = std::fs::remove_file(f);
        }
    }
    b.notes.push(
        "QEMU's restore times include the harness's QMP `cont` after the load (a QMP round trip); \
         berth's snapshot time is its own figure, QEMU's the harness's from the `migrate` request. \
         Spawn → exit includes the VMM's exit path (KVM's teardown and its one-time memslot \
         wait run in berth's teardown helper, src/teardown.rs, which the exit does not wait for); \
         the boot-timer row is the restore itself."
            .into(),
    );
    Ok(())
}
