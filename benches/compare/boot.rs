//! Benchmarks 1–3: startup (process start → exit), first line on the serial console, and the
//! VMM's peak RSS.

use crate::markdown::num;
use crate::qemu::Serial;
use crate::results::{Bench, Better, Row, Stat};
use crate::runner::{Measured, Spec};
use crate::stats::Summary;
use crate::{column, Ctx};

/// The line the `line` guest prints first.
const FIRST_LINE: &str = "bench: first line";

/// Wall and CPU time rows for one berth/QEMU pair of run sets.
fn time_rows(what: &str, chart: &str, berth: &[Measured], qemu: &[Measured]) -> Vec<Row> {
    vec![
        Row::new(
            &format!("{what}: wall, spawn → exit"),
            "ms",
            Some(Stat::of(column(berth, Measured::wall_ms))),
            Some(Stat::of(column(qemu, Measured::wall_ms))),
            Better::Lower,
        )
        .chart(chart),
        Row::new(
            &format!("{what}: CPU, user + sys"),
            "ms",
            Some(Stat::of(column(berth, Measured::cpu_ms))),
            Some(Stat::of(column(qemu, Measured::cpu_ms))),
            Better::Lower,
        ),
    ]
}

/// Benchmark 1: Process start → exit with the `exit` guest (its first instructions leave through
/// debug-exit): berth PVH vs QEMU microvm, and berth multiboot vs QEMU -M pc.
pub fn startup(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    b.method = "Guest bench-exit-*.elf: its first instructions write 0 to isa-debug-exit. Wall \
                time from just before spawn until the process has exited; CPU time = the child's \
                user + sys from wait4. 128 MiB, 1 vCPU, in-kernel irqchip on both sides \
                (one pair with the split irqchip on both sides). berth's tuned machine \
                (exit-pvh.toml) sets `pit = false` like QEMU's pit=off; its default-style one \
                (exit-pvh-default.toml) keeps the in-kernel PIT, as configs/default.toml and \
                users' machines do, and runs in the same alternation. Their ratio comes from a \
                second alternation of the two alone (tuned, default, tuned, …): in the four-way \
                one the default machine always starts right after QEMU's exit, whose aftermath \
                slows whatever runs next (`true` there takes about 3× its usual time). QEMU -M pc \
                runs SeaBIOS before the multiboot loader; berth has no firmware."
        .into();
    let pvh = ctx.berth_run("berth pvh", "exit-pvh", false);
    let pvh_default = ctx.berth_run("berth pvh default", "exit-pvh-default", false);
    let microvm = ctx.qemu_microvm("qemu microvm", "bench-exit-pvh", "128M", Serial::Null);
    let mb = ctx.berth_run("berth multiboot", "exit-mb", false);
    let pc = ctx.qemu_pc("qemu pc", "bench-exit-mb", "128M");
    let split = ctx.berth_run("berth pvh split", "exit-pvh-split", false);
    let microvm_split = ctx.qemu_microvm_split("qemu microvm split", "bench-exit-pvh", "128M");
    for s in [&pvh, &pvh_default, &microvm, &split, &microvm_split, &mb, &pc] {
        b.commands.push(s.command_line());
    }
    let floor = Spec::new("true", "true", Vec::<String>::new(), ctx.cfg.timeout).status(0);
    let r = ctx.alternate("pvh/microvm", &[&pvh, &microvm, &floor, &pvh_default])?;
    let s = Summary::of(column(&r[2], Measured::wall_ms));
    b.notes.push(format!(
        "harness floor: spawn → exit of `true`, in the same alternation: median {} ms ({}–{})",
        num(s.median),
        num(s.min),
        num(s.max)
    ));
    b.rows.extend(time_rows(
        "PVH: berth vs QEMU microvm",
        "startup PVH (ms)",
        &r[0],
        &r[1],
    ));
    b.rows.extend(time_rows(
        "PVH, default machine (PIT on): berth vs QEMU microvm",
        "startup PVH default (ms)",
        &r[3],
        &r[1],
    ));
    let pit = ctx.alternate("pit off/on", &[&pvh, &pvh_default])?;
    let (tuned, default) = (
        Summary::of(column(&pit[0], Measured::wall_ms)).median,
        Summary::of(column(&pit[1], Measured::wall_ms)).median,
    );
    let ratio = default / tuned;
    b.rows.push(
        Row::new(
            "default machine (PIT on) / tuned (pit = false): wall, spawn → exit",
            "×",
            Some(Stat::Derived {
                value: ratio,
                from: format!(
                    "median wall of berth pvh default ({} ms) / berth pvh ({} ms), alternating \
                     the two alone",
                    num(default),
                    num(tuned)
                ),
            }),
            None,
            Better::Lower,
        )
        .target("≤ 1.3×", ratio <= 1.3),
    );
    let pairs = [
        (
            "split irqchip",
            "PVH, split irqchip: berth vs QEMU microvm",
            "startup PVH split (ms)",
            [&split, &microvm_split],
        ),
        (
            "multiboot/pc",
            "multiboot: berth vs QEMU -M pc",
            "startup multiboot (ms)",
            [&mb, &pc],
        ),
    ];
    for (name, what, chart, sides) in pairs {
        let r = ctx.alternate(name, &sides)?;
        b.rows.extend(time_rows(what, chart, &r[0], &r[1]));
    }
    Ok(())
}

/// Parses `stats: boot-timer wall-ms X cpu-ms Y` from a berth --stats run.
pub fn boot_timer(m: &Measured) -> Result<(f64, f64), String> {
    let v = m.stats("boot-timer").ok_or("no `stats: boot-timer` line")?;
    let field = |name: &str| {
        v.iter()
            .position(|t| *t == name)
            .and_then(|i| v.get(i + 1))
            .and_then(|x| x.parse::<f64>().ok())
            .ok_or_else(|| format!("cannot read {name} from `stats: boot-timer {}`", v.join(" ")))
    };
    Ok((field("wall-ms")?, field("cpu-ms")?))
}

/// Benchmark 2: Spawn → first complete line on the child's stdout, with the `line` guest; plus berth's
/// guest-side boot timer.
pub fn first_line(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    b.method = format!(
        "Guest bench-line-pvh.elf prints {FIRST_LINE:?} on COM1, writes 123 to the boot timer at \
         0xd0000000, then exits. Time from just before spawn until the first `\\n` is read \
         from the child's stdout pipe (the line must be exactly that text). berth runs with \
         --stats; its boot-timer row is berth's own measurement (VMM start → the guest's \
         write), which QEMU has no equivalent of."
    );
    let berth = ctx
        .berth_run("berth", "line-pvh", true)
        .first_line(FIRST_LINE)
        .stderr_has("stats: boot-timer");
    let qemu = ctx
        .qemu_microvm("qemu microvm", "bench-line-pvh", "128M", Serial::Stdio)
        .first_line(FIRST_LINE);
    b.commands.push(berth.command_line());
    b.commands.push(qemu.command_line());
    let r = ctx.alternate("line", &[&berth, &qemu])?;
    let line_ms = |m: &Measured| m.first_line.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let line = Row::new(
        "first line on stdout: spawn → line read",
        "ms",
        Some(Stat::of(column(&r[0], line_ms))),
        Some(Stat::of(column(&r[1], line_ms))),
        Better::Lower,
    )
    .chart("first line (ms)");
    let met = line.berth_value() <= 3.5;
    b.rows.push(line.target("≤ 3.5 ms", met));
    b.rows.push(Row::new(
        "process exit: spawn → exit",
        "ms",
        Some(Stat::of(column(&r[0], Measured::wall_ms))),
        Some(Stat::of(column(&r[1], Measured::wall_ms))),
        Better::Lower,
    ));
    let timers = r[0].iter().map(boot_timer).collect::<Result<Vec<_>, _>>()?;
    let wall = timers.iter().map(|t| t.0).collect();
    let cpu = timers.iter().map(|t| t.1).collect();
    b.rows.push(Row::new(
        "berth boot-timer wall-ms (VMM start → guest write, --stats)",
        "ms",
        Some(Stat::of(wall)),
        None,
        Better::Lower,
    ));
    b.rows.push(Row::new(
        "berth boot-timer cpu-ms (--stats)",
        "ms",
        Some(Stat::of(cpu)),
        None,
        Better::Lower,
    ));
    Ok(())
}

/// Benchmark 3: Peak RSS of the VMM process with 128 MiB and 1 GiB guests that never touch their memory.
pub fn footprint(ctx: &Ctx, b: &mut Bench) -> Result<(), String> {
    b.method = "Guest bench-exit-pvh.elf (touches no memory). Peak RSS = VmHWM of the VMM \
                process read from /proc/PID/status at its exit (ptrace exit stop): the peak of its \
                own address space since exec. (ru_maxrss from wait4 would never read below the \
                harness's own RSS: a child inherits its parent's high-water mark.) It includes \
                what the VMM itself writes into guest RAM (boot structures, the kernel image)."
        .into();
    let b128 = ctx.berth_run("berth 128M", "exit-pvh", false).peak_rss_at_exit();
    let q128 = ctx
        .qemu_microvm("qemu 128M", "bench-exit-pvh", "128M", Serial::Null)
        .peak_rss_at_exit();
    let b1g = ctx.berth_run("berth 1G", "exit-pvh-1g", false).peak_rss_at_exit();
    let q1g = ctx
        .qemu_microvm("qemu 1G", "bench-exit-pvh", "1G", Serial::Null)
        .peak_rss_at_exit();
    for s in [&b128, &q128, &b1g, &q1g] {
        b.commands.push(s.command_line());
    }
    let r = ctx.alternate("rss", &[&b128, &q128, &b1g, &q1g])?;
    let row = Row::new(
        "peak RSS, 128 MiB guest",
        "MiB",
        Some(Stat::of(column(&r[0], Measured::rss_mib))),
        Some(Stat::of(column(&r[1], Measured::rss_mib))),
        Better::Lower,
    )
    .chart("peak RSS 128M (MiB)");
    let met = row.berth_value() <= 2.0;
    b.rows.push(row.target("≤ 2 MiB", met));
    b.rows.push(
        Row::new(
            "peak RSS, 1 GiB guest",
            "MiB",
            Some(Stat::of(column(&r[2], Measured::rss_mib))),
            Some(Stat::of(column(&r[3], Measured::rss_mib))),
            Better::Lower,
        )
        .chart("peak RSS 1G (MiB)"),
    );
    Ok(())
}
