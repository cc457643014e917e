//! Benchmark 8: density, i.e. how many idle VMs one host holds: N VMs started at once, the time
//! until all run, the host memory each one costs, and the time until all have stopped.

use crate::fleet::Fleet;
use crate::qemu::Serial;
use crate::results::{Bench, Better, Row, Stat};
use crate::Ctx;
use std::collections::BTreeMap;
use std::path::Path;

/// The line the idle guest prints before it halts.
const IDLE_LINE: &str = "bench: idle";

/// /proc/meminfo fields (KiB) that hold KVM's and the VMMs' kernel-side memory: kernel stacks
/// (vCPU threads, the PIT worker), page tables (the VMMs' own and KVM's shadow/secondary ones)
/// and slab (kvm, kvm_vcpu, kvm_mmu_page_header, …).
const KERNEL_FIELDS: [&str; 4] = ["KernelStack", "PageTables", "SecPageTables", "Slab"];

/// One side's figures for one fleet.
struct Sample {
    running_ms: f64,
    exited_ms: f64,
    ended_ms: f64,
    gone_ms: f64,
    /// Per VM, MiB.
    meminfo_mib: f64,
    uss_mib: f64,
    pss_mib: f64,
    /// Per VM, KiB.
    kernel_kib: f64,
}

/// /proc/meminfo as field → KiB.
fn meminfo() -> Result<BTreeMap<String, i64>, String> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect())
}

/// Memory in use by the host, KiB: MemTotal − MemAvailable.
fn used_kib(m: &BTreeMap<String, i64>) -> i64 {
    m.get("MemTotal").copied().unwrap_or(0) - m.get("MemAvailable").copied().unwrap_or(0)
}

/// The kernel-side fields summed, KiB (a field this kernel lacks counts 0).
fn kernel_kib(m: &BTreeMap<String, i64>) -> i64 {
    KERNEL_FIELDS
        .iter()
        .map(|f| m.get(*f).copied().unwrap_or(0))
        .sum()
}

/// (USS, PSS) of `pid` in KiB from /proc/PID/smaps_rollup: USS = Private_Clean + Private_Dirty.
fn uss_pss_kib(pid: libc::pid_t) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("Private_Clean") + field("Private_Dirty"), field("Pss")))
}

/// Starts `n` VMs of one side, measures them, stops them. The [`Fleet`] kills and reaps
/// everything on every error path (its drop).
fn one_fleet(
    ctx: &Ctx,
    n: usize,
    program: &Path,
    args: &[String],
    expect_status: i32,
) -> Result<Sample, String> {
    let before = meminfo()?;
    let tmp = std::env::temp_dir().join(format!("berth-bench-density-{}.stderr", std::process::id()));
    // BENCH_TIMEOUT per 50 VMs: 200 QEMUs take tens of seconds to start on 2 busy CPUs.
    let timeout = ctx.cfg.timeout * n.div_ceil(50).max(1) as u32;
    let result = (|| {
        let mut fleet = Fleet::start(n, program, args, IDLE_LINE, &tmp)?;
        let running = fleet.wait_running(timeout)?;
        let after = meminfo()?;
        let (mut uss, mut pss) = (0u64, 0u64);
        for pid in fleet.pids() {
            let (u, p) = uss_pss_kib(pid)?;
            uss += u;
            pss += p;
        }
        let exited = fleet.terminate(timeout)?;
        let (ended, gone) = fleet.wait_groups_empty(timeout)?;
        fleet.check_statuses(&format!("exit status {expect_status}"), |s| {
            libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == expect_status
        })?;
        let per_vm = |kib: f64| kib / fleet.len() as f64;
        Ok(Sample {
            running_ms: running.as_secs_f64() * 1e3,
            exited_ms: exited.as_secs_f64() * 1e3,
            ended_ms: (exited + ended).as_secs_f64() * 1e3,
            gone_ms: (exited + gone).as_secs_f64() * 1e3,
            meminfo_mib: per_vm((used_kib(&after) - used_kib(&before)) as f64) / 1024.0,
            uss_mib: per_vm(uss as f64) / 1024.0,
            pss_mib: per_vm(pss as f64) / 1024.0,
            kernel_kib: per_vm((kernel_kib(&after) - kernel_kib(&before)) as f64),
        })
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// The fleet sizes (BENCH_DENSITY_NS, default 50,100,200).
fn sizes() -> Result<Vec<usize>, String> {
    let s = std::env::var("BENCH_DENSITY_NS").unwrap_or_default();
    if s.trim().is_empty() {
        return Ok(vec![50, 100, 200]);
    }
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("BENCH_DENSITY_NS={s:?}: expected sizes like 50,100,200"))
        })
        .collect()
}

/// Benchmark 8: N idle VMs at once (N = 50, 100, 200), berth vs QEMU microvm.
pub fn density(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    let ns = sizes()?;
    let runs = crate::env_num("BENCH_DENSITY_RUNS", 3usize, 1)?;
    b.method = format!(
        "Guest bench-idle-pvh.elf: prints {IDLE_LINE:?} on COM1, then `cli; hlt` for good. \
         1 vCPU, 128 MiB each; berth's machine is bench/machines/idle-pvh.toml (the in-kernel \
         irqchip with its default PIT, as users write it); QEMU is microvm with pit=off. N VMs \
         are spawned back to back, each in its own process group; \"all running\" = spawn of the \
         first → the last guest's line read from its stdout. Then memory is sampled: \
         /proc/meminfo Δ = the change of MemTotal − MemAvailable since just before the first \
         spawn, over N (the whole host: other processes add noise); USS (Private_Clean + \
         Private_Dirty) and PSS summed over the VMM processes' /proc/PID/smaps_rollup, over N; \
         kernel-side = Δ of {} in /proc/meminfo, over N (KVM's slab objects, the vCPU and PIT \
         threads' stacks, page tables; KVM's page allocations outside slab are only in the \
         meminfo Δ). VMs/GiB = 1024 / MiB per VM. Then SIGTERM to every VMM: time until the last \
         has exited (berth: status 143, QEMU: 0, each checked), until every process of its process \
         group has ended (berth's teardown helper has finished KVM's teardown; zombies count as \
         ended) and until the group is empty (the helper, which outlives berth, is reaped by the \
         host's init, so this adds init's reaping delay; both polled every 1 ms). Bounds: \
         BENCH_TIMEOUT per 50 VMs for each phase. Any VM left on an error path is killed with \
         its group and reaped. The sides alternate per N; \
         {runs} run(s) per side and N (BENCH_DENSITY_RUNS).",
        KERNEL_FIELDS.join(" + ")
    );
    let berth_args = vec!["run".to_string(), ctx.machine("idle-pvh").display().to_string()];
    let qemu_args = ctx
        .qemu
        .microvm(&ctx.guest("bench-idle-pvh"), "128M", Serial::Stdio);
    b.commands
        .push(format!("{} {}", ctx.berth.display(), berth_args.join(" ")));
    b.commands
        .push(format!("{} {}", crate::qemu::QEMU, qemu_args.join(" ")));
    let qemu_bin = Path::new(crate::qemu::QEMU);

    for n in ns {
        // QEMU holds about 40 MiB per idle VM: leave the host 2 GiB to spare, or skip this N.
        let avail_mib = meminfo()?.get("MemAvailable").copied().unwrap_or(0) / 1024;
        let need_mib = n as i64 * 64 + 2048;
        if avail_mib < need_mib {
            b.notes.push(format!(
                "N = {n} skipped: MemAvailable {avail_mib} MiB < {need_mib} MiB (64 MiB per QEMU \
                 VM + 2 GiB)"
            ));
            continue;
        }
        eprint!("  N = {n}: berth / qemu × {runs} ");
        let (mut bs, mut qs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            bs.push(
                one_fleet(ctx, n, &ctx.berth, &berth_args, 128 + libc::SIGTERM).map_err(|e| {
                    eprintln!();
                    format!("berth, N = {n}: {e}")
                })?,
            );
            eprint!(".");
            qs.push(one_fleet(ctx, n, qemu_bin, &qemu_args, 0).map_err(|e| {
                eprintln!();
                format!("qemu, N = {n}: {e}")
            })?);
            eprint!(".");
        }
        eprintln!();
        rows(b, n, &bs, &qs);
    }
    Ok(())
}

/// The table rows for one N.
fn rows(b: &mut Bench, n: usize, bs: &[Sample], qs: &[Sample]) {
    let stat = |s: &[Sample], f: &dyn Fn(&Sample) -> f64| Some(Stat::of(s.iter().map(f).collect()));
    let row = |what: &str, unit: &str, f: &dyn Fn(&Sample) -> f64, better| {
        Row::new(
            &format!("N = {n}: {what}"),
            unit,
            stat(bs, f),
            stat(qs, f),
            better,
        )
    };
    let mut running = row(
        "all running, spawn → last line",
        "ms",
        &|s| s.running_ms,
        Better::Lower,
    );
    if n == 200 {
        running = running.chart("density N=200: all running (ms)");
    }
    b.rows.push(running);
    b.rows
        .push(row("meminfo Δ per VM", "MiB", &|s| s.meminfo_mib, Better::Lower));
    b.rows.push(row(
        "USS per VM (summed / N)",
        "MiB",
        &|s| s.uss_mib,
        Better::Lower,
    ));
    b.rows.push(row(
        "PSS per VM (summed / N)",
        "MiB",
        &|s| s.pss_mib,
        Better::Lower,
    ));
    b.rows.push(row(
        "kernel-side per VM (meminfo Δ)",
        "KiB",
        &|s| s.kernel_kib,
        Better::Lower,
    ));
    let per_gib = |mib: f64| if mib > 0.0 { 1024.0 / mib } else { 0.0 };
    let mut dens = row(
        "VMs/GiB by meminfo Δ",
        "VMs/GiB",
        &|s| per_gib(s.meminfo_mib),
        Better::Higher,
    );
    let met = dens.ratio.is_some_and(|r| r >= 10.0);
    dens = dens.target("≥ 10× QEMU's density", met);
    if n == 200 {
        dens = dens.chart("density N=200 (VMs/GiB)");
    }
    b.rows.push(dens);
    b.rows.push(row(
        "VMs/GiB by PSS + kernel-side",
        "VMs/GiB",
        &|s| per_gib(s.pss_mib + s.kernel_kib / 1024.0),
        Better::Higher,
    ));
    b.rows.push(row(
        "SIGTERM → all VMMs exited",
        "ms",
        &|s| s.exited_ms,
        Better::Lower,
    ));
    b.rows.push(row(
        "SIGTERM → every process of the groups ended (teardown done)",
        "ms",
        &|s| s.ended_ms,
        Better::Lower,
    ));
    b.rows.push(row(
        "SIGTERM → all process groups empty (reaped by init)",
        "ms",
        &|s| s.gone_ms,
        Better::Lower,
    ));
    if bs.iter().chain(qs).any(|s| s.meminfo_mib <= 0.0) {
        b.notes.push(format!(
            "N = {n}: a meminfo Δ was ≤ 0 (other processes freed memory meanwhile); that run's \
             VMs/GiB reads 0 — read the USS/PSS rows"
        ));
    }
}
