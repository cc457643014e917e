//! Benchmarks 4 and 5: the cost of one PIO or MMIO exit (berth vs QEMU), and how many exits a
//! `[[coalesced_mmio]]` zone saves (berth only).

use crate::qemu::Serial;
use crate::results::{Bench, Better, Row, Stat};
use crate::runner::{self, Measured};
use crate::{column, Ctx};

/// Reads `NAME V` out of a `stats: unhandled …` / `stats: recorder …` token list.
fn token_after(tokens: &[&str], name: &str) -> Option<u64> {
    tokens
        .iter()
        .position(|t| *t == name)
        .and_then(|i| tokens.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// The sum of `stats: exit mmio*` counts (berth names them by direction).
fn mmio_exits(m: &Measured) -> Result<u64, String> {
    let mut n = 0;
    for l in m.stderr.lines() {
        if let Some(rest) = l.strip_prefix("stats: exit mmio") {
            let v = rest.split_whitespace().last().and_then(|v| v.parse::<u64>().ok());
            n += v.ok_or_else(|| format!("cannot parse {l:?}"))?;
        }
    }
    Ok(n)
}

/// One extra berth --stats run of a loop machine: at least `n` exits of the loop's kind, and
/// none of the loop's writes unclaimed (the null device took them).
fn cross_check(ctx: &Ctx, machine: &str, n: u64, pio: bool) -> Result<String, String> {
    let m = runner::run(&ctx.berth_run(&format!("berth --stats {machine}"), machine, true))?;
    let exits = if pio {
        m.stats_count("exit io")?
    } else {
        mmio_exits(&m)?
    };
    let unhandled = m.stats("unhandled").ok_or("no `stats: unhandled` line")?;
    let key = if pio { "pio-writes" } else { "mmio-writes" };
    let stray = token_after(&unhandled, key).ok_or("cannot parse `stats: unhandled`")?;
    let null = m
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("stats: device null@"));
    let null_writes = null.and_then(|l| token_after(&l.split_whitespace().collect::<Vec<_>>(), "writes"));
    if exits < n || stray != 0 || null_writes != Some(n) {
        return Err(format!(
            "{machine}: --stats shows {exits} exits (expected ≥ {n}), {stray} unhandled {key} \
             (expected 0) and {null_writes:?} null-device writes (expected exactly N = {n}; \
             set BENCH_N to the N the guests were built with)\n{}",
            m.stderr
        ));
    }
    Ok(format!(
        "cross-check {machine}: berth --stats counts {exits} exits (≥ N = {n}), {n} writes on \
         the null device, 0 unhandled {key}"
    ))
}

/// Benchmark 4: exits/s = N / (median T_loop − median T_exit), for PIO (port 0x80) and MMIO
/// (0xd0001000) writes; berth has null devices there, QEMU nothing.
pub fn exit_cost(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    let n = ctx.cfg.loop_n;
    b.method = format!(
        "Guests bench-pio-pvh.elf (N = {n} `outb` to port 0x80) and bench-mmio-pvh.elf (N = {n} \
         1-byte stores to 0xd0001000), and bench-exit-pvh.elf for the fixed cost. Per-exit cost \
         = (median T_loop − median T_exit) / N; exits/s is its inverse. berth has `null` \
         devices at both addresses; QEMU has nothing there (unassigned accesses are dropped). \
         All six sides alternate."
    );
    let specs = [
        ctx.berth_run("berth exit", "exit-pvh", false),
        ctx.qemu_microvm("qemu exit", "bench-exit-pvh", "128M", Serial::Null),
        ctx.berth_run("berth pio", "pio-pvh", false),
        ctx.qemu_microvm("qemu pio", "bench-pio-pvh", "128M", Serial::Null),
        ctx.berth_run("berth mmio", "mmio-pvh", false),
        ctx.qemu_microvm("qemu mmio", "bench-mmio-pvh", "128M", Serial::Null),
    ];
    b.commands.extend(specs[2..].iter().map(|s| s.command_line()));
    let r = ctx.alternate("exit/pio/mmio", &specs.iter().collect::<Vec<_>>())?;
    let wall: Vec<Stat> = r
        .iter()
        .map(|runs| Stat::of(column(runs, Measured::wall_ms)))
        .collect();
    let pair = |metric: &str, i: usize| {
        Row::new(
            metric,
            "ms",
            Some(wall[i].clone()),
            Some(wall[i + 1].clone()),
            Better::Lower,
        )
    };
    b.rows.push(pair("T_exit: exit guest, wall", 0));
    b.rows.push(pair("T_loop: pio guest, wall", 2));
    b.rows.push(pair("T_loop: mmio guest, wall", 4));

    for (kind, i) in [("PIO", 2), ("MMIO", 4)] {
        let cost = |side: usize| -> Result<f64, String> {
            let d = wall[i + side].value() - wall[side].value();
            if d <= 0.0 {
                return Err(format!(
                    "{kind}: median T_loop ≤ median T_exit; raise N (BENCH_N)"
                ));
            }
            Ok(d * 1e3 / n as f64)
        };
        let (bc, qc) = (cost(0)?, cost(1)?);
        let from = format!("(median T_loop − median T_exit) / {n}");
        let derived = |v: f64| {
            Some(Stat::Derived {
                value: v,
                from: from.clone(),
            })
        };
        let mut row = Row::new(
            &format!("{kind} exit cost"),
            "µs",
            derived(bc),
            derived(qc),
            Better::Lower,
        );
        if kind == "PIO" {
            let met = row.ratio.is_some_and(|r| r <= 1.2);
            row = row.target("≤ 1.2× QEMU's", met);
        }
        b.rows.push(row);
        let rate = |c: f64| {
            Some(Stat::Derived {
                value: 1e6 / c,
                from: format!("1 / {kind} exit cost"),
            })
        };
        b.rows.push(
            Row::new(
                &format!("{kind} exits/s"),
                "1/s",
                rate(bc),
                rate(qc),
                Better::Higher,
            )
            .chart(&format!("{kind} exits/s")),
        );
    }
    b.notes.push(cross_check(ctx, "pio-pvh", n, true)?);
    b.notes.push(cross_check(ctx, "mmio-pvh", n, false)?);
    Ok(())
}

/// The recorder's write count and digest, the MMIO exits and the coalesced ring entries of one
/// `--stats` run.
fn recorder_stats(m: &Measured) -> Result<(u64, String, u64, u64), String> {
    let rec = m.stats("recorder").ok_or("no `stats: recorder` line")?;
    let writes = token_after(&rec, "writes").ok_or("cannot parse `stats: recorder`")?;
    let digest = rec
        .iter()
        .position(|t| *t == "sha256")
        .and_then(|i| rec.get(i + 1))
        .unwrap_or(&"");
    let entries = m
        .stats("coalesced")
        .map_or(Some(0), |z| token_after(&z, "entries"))
        .ok_or("cannot parse `stats: coalesced`")?;
    Ok((writes, digest.to_string(), mmio_exits(m)?, entries))
}

/// Benchmark 5: The mmio guest writing into a recorder, without and with a `[[coalesced_mmio]]` zone:
/// time and MMIO exits.
pub fn coalescing(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    let n = ctx.cfg.loop_n;
    b.method = format!(
        "Guest bench-mmio-pvh.elf: N = {n} 1-byte stores into a recorder at 0xd0001000 (4 KiB), \
         without and with a [[coalesced_mmio]] zone over it; berth --stats on every run gives \
         the MMIO exit count and the recorder's write count (must be N in both) and digest \
         (must be equal)."
    );
    let plain = ctx.berth_run("recorder", "mmio-recorder", true);
    let zone = ctx.berth_run("recorder+zone", "mmio-coalesced", true);
    b.commands.push(plain.command_line());
    b.commands.push(zone.command_line());
    let r = ctx.alternate("coalescing", &[&plain, &zone])?;
    let mut digests = Vec::new();
    let mut exits = [Vec::new(), Vec::new()];
    let mut entries = 0;
    for (side, runs) in r.iter().enumerate() {
        for m in runs {
            let (writes, digest, x, e) = recorder_stats(m)?;
            if writes != n {
                return Err(format!(
                    "{}: recorder saw {writes} writes, expected N = {n}",
                    [&plain, &zone][side].label
                ));
            }
            if side == 1 && e == 0 {
                return Err("recorder+zone: the zone queued no ring entries".into());
            }
            entries = entries.max(e);
            digests.push(digest);
            exits[side].push(x as f64);
        }
    }
    digests.dedup();
    if digests.len() != 1 {
        return Err(format!("recorder digests differ between runs: {digests:?}"));
    }
    let one = |side: usize, f: fn(&Measured) -> f64| Some(Stat::of(column(&r[side], f)));
    b.rows.push(Row::new(
        "wall, no zone",
        "ms",
        one(0, Measured::wall_ms),
        None,
        Better::Lower,
    ));
    b.rows.push(Row::new(
        "wall, [[coalesced_mmio]] zone",
        "ms",
        one(1, Measured::wall_ms),
        None,
        Better::Lower,
    ));
    let [without, with] = exits;
    let without = Stat::of(without);
    let with = Stat::of(with);
    let ratio = without.value() / with.value().max(1.0);
    b.rows.push(Row::new(
        "MMIO exits, no zone",
        "exits",
        Some(without),
        None,
        Better::Lower,
    ));
    b.rows.push(Row::new(
        "MMIO exits, [[coalesced_mmio]] zone",
        "exits",
        Some(with),
        None,
        Better::Lower,
    ));
    let derived = Stat::Derived {
        value: ratio,
        from: "median exits no zone / median exits with zone".into(),
    };
    b.rows.push(
        Row::new(
            "exit-count reduction (no zone / zone)",
            "×",
            Some(derived),
            None,
            Better::Higher,
        )
        .target("≥ 5× fewer exits", ratio >= 5.0),
    );
    b.notes.push(format!(
        "every run: recorder writes = {n}, one digest ({}); with the zone, up to {entries} \
         writes per run came through the ring",
        digests[0]
    ));
    Ok(())
}
