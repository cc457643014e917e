//! Benchmark 6: churn, i.e. how many short-lived VMs per second one host can start and finish,
//! one at a time and K at a time.

use crate::qemu::Serial;
use crate::results::{Bench, Better, Row, Stat};
use crate::runner::{self, Spec};
use crate::stats::{self, Side};
use crate::Ctx;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

/// Parallelism levels measured.
const KS: [usize; 3] = [1, 2, 4];

/// Boots `spec` `m` times with `k` worker threads, each starting its next VM as soon as its
/// last one exited; every run is checked. Returns VMs per second over the whole batch.
fn batch(spec: &Spec, m: usize, k: usize) -> Result<f64, String> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..k {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) && next.fetch_add(1, Ordering::Relaxed) < m {
                    if let Err(e) = runner::run(spec) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(m as f64 / secs),
    }
}

/// Benchmark 6: M boots of the exit guest back to back (K = 1) and K in parallel (K = 2, 4): VMs/s,
/// berth vs QEMU microvm, alternating whole batches.
pub fn churn(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    let (m, batches) = (ctx.cfg.churn_m, ctx.cfg.churn_batches);
    b.method = format!(
        "Guest bench-exit-pvh.elf, 128 MiB, 1 vCPU. A batch = M = {m} boots by K worker \
         threads, each starting its next VM when its last one exited; VMs/s = M / batch wall \
         time. Every VM's exit status is checked. berth runs its tuned machine (exit-pvh.toml, \
         `pit = false`) and its default-style one (exit-pvh-default.toml, the in-kernel PIT \
         kept as users write it); QEMU microvm runs with pit=off. Batches alternate berth / \
         QEMU / berth default for K = 1, 2, 4; {batches} counted batches per side and K after \
         one warm-up VM per side."
    );
    let berth = ctx.berth_run("berth", "exit-pvh", false);
    let default = ctx.berth_run("berth default", "exit-pvh-default", false);
    let qemu = ctx.qemu_microvm("qemu microvm", "bench-exit-pvh", "128M", Serial::Null);
    b.commands.push(berth.command_line());
    b.commands.push(default.command_line());
    b.commands.push(qemu.command_line());
    runner::run(&berth)?;
    runner::run(&default)?;
    runner::run(&qemu)?;

    const SIDES: usize = 3;
    let labels: Vec<String> = KS
        .iter()
        .flat_map(|k| {
            [
                format!("berth K={k}"),
                format!("qemu K={k}"),
                format!("berth default K={k}"),
            ]
        })
        .collect();
    let mut sides: Vec<Side<'_, f64>> = Vec::new();
    for (i, k) in KS.iter().enumerate() {
        for (j, spec) in [&berth, &qemu, &default].into_iter().enumerate() {
            let k = *k;
            let f: Box<dyn Fn() -> Result<f64, String>> = Box::new(move || batch(spec, m, k));
            sides.push((labels[SIDES * i + j].as_str(), f));
        }
    }
    let r = stats::alternate("batches", 0, batches, &sides)?;
    for (i, k) in KS.iter().enumerate() {
        let what = if *k == 1 {
            format!("M = {m} back to back (K = 1)")
        } else {
            format!("M = {m}, K = {k} in parallel")
        };
        let mut row = Row::new(
            &format!("VMs/s, {what}"),
            "VMs/s",
            Some(Stat::of(r[SIDES * i].clone())),
            Some(Stat::of(r[SIDES * i + 1].clone())),
            Better::Higher,
        )
        .chart(&format!("churn K={k} (VMs/s)"));
        if *k == 2 {
            let met = row.berth_value() >= 50.0;
            row = row.target("≥ 50 VMs/s on 2 cores", met);
        }
        b.rows.push(row);
        let mut row = Row::new(
            &format!("VMs/s, default machine (PIT on), {what}"),
            "VMs/s",
            Some(Stat::of(r[SIDES * i + 2].clone())),
            Some(Stat::of(r[SIDES * i + 1].clone())),
            Better::Higher,
        )
        .chart(&format!("churn default K={k} (VMs/s)"));
        if *k == 1 {
            let met = row.berth_value() >= 100.0;
            row = row.target("≥ 100 VMs/s", met);
        }
        b.rows.push(row);
    }
    if batches < ctx.cfg.runs {
        b.notes.push(format!(
            "{batches} counted batches per side and K (BENCH_CHURN_BATCHES), fewer than the {} runs of the \
             other benchmarks, to stay in the time budget; each batch is {m} checked VM runs.",
            ctx.cfg.runs
        ));
    }
    Ok(())
}
