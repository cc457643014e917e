//! `bench/results.png`: grouped bars, berth vs QEMU medians per charted metric, on a log y-axis;
//! "lower is better" metrics on the left, "higher is better" on the right. The harness writes
//! the data (`results.dat`) and the gnuplot script (`results.gp`) next to the picture, so the
//! chart can be redrawn with `gnuplot bench/results.gp` from inside `bench/`.

use crate::results::{Better, Results, Row};
use std::fmt::Write;
use std::path::Path;
use std::process::Command;

/// Rows with both sides and a chart label, split by direction.
fn charted(res: &Results, better: Better) -> Vec<&Row> {
    res.benchmarks
        .iter()
        .flat_map(|b| b.rows.iter())
        .filter(|r| r.chart.is_some() && r.berth.is_some() && r.qemu.is_some() && r.better == better)
        .collect()
}

/// Log-axis limits with room for the value labels above the bars.
fn range(rows: &[&Row]) -> (f64, f64) {
    let vals = rows
        .iter()
        .flat_map(|r| [r.berth_value(), r.qemu.as_ref().map_or(0.0, |q| q.value())]);
    let vals: Vec<f64> = vals.filter(|v| *v > 0.0).collect();
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(0.0, f64::max);
    (
        10f64.powf((lo / 2.0).log10().floor()),
        10f64.powf((hi * 4.0).log10().ceil()),
    )
}

/// One data block: `"label" berth qemu` per row.
fn block(rows: &[&Row]) -> String {
    let mut s = String::new();
    for r in rows {
        let label = r.chart.as_deref().unwrap_or("").replace('"', "'");
        let q = r.qemu.as_ref().map_or(0.0, |q| q.value());
        let _ = writeln!(s, "\"{label}\" {} {}", r.berth_value(), q);
    }
    s
}

/// gnuplot's `using` expression for a value label: 3 significant digits, whole numbers from
/// 1000, thousands as "k" from 10000 (so neighbouring labels do not overlap).
fn label(col: u32) -> String {
    format!(
        "(${col} < 1000 ? sprintf('%.3g', ${col}) : ${col} < 10000 ? sprintf('%.0f', ${col}) : \
         sprintf('%.0fk', ${col} / 1000))"
    )
}

/// The plot commands of one panel (data block `index`). With two bars per cluster and gap 1,
/// the bars are centred at x − 1/6 and x + 1/6.
fn panel(title: &str, index: usize, bars: usize, (lo, hi): (f64, f64)) -> String {
    let data = format!("'results.dat' index {index}");
    let text = "with labels offset 0,0.8 font ',10' notitle";
    [
        format!("set title '{title}'"),
        format!("set yrange [{lo}:{hi}]"),
        format!("set xrange [-0.6:{}]", bars as f64 - 0.4),
        format!("plot {data} using 2:xtic(1) title 'berth' lc rgb '#1f77b4', \\"),
        format!("  {data} using 3 title 'QEMU' lc rgb '#d62728', \\"),
        format!("  {data} using ($0-1.0/6):2:{} {text}, \\", label(2)),
        format!("  {data} using ($0+1.0/6):3:{} {text}", label(3)),
        String::new(),
    ]
    .join("\n")
}

/// Writes results.dat and results.gp into `out` and runs gnuplot there.
pub fn render(out: &Path, res: &Results) -> Result<(), String> {
    let lower = charted(res, Better::Lower);
    let higher = charted(res, Better::Higher);
    if lower.is_empty() && higher.is_empty() {
        return Err("nothing to chart".into());
    }
    let data = format!(
        "# berth vs QEMU medians; written by benches/compare/chart.rs\n\
         # index 0: lower is better\n{}\n\n# index 1: higher is better\n{}",
        block(&lower),
        block(&higher)
    );
    std::fs::write(out.join("results.dat"), data).map_err(|e| e.to_string())?;

    let h = &res.host;
    let title = format!(
        "berth vs QEMU {} (medians of {} runs; log scale)\\n{} | {} CPUs | PVM: {} | {}",
        h.qemu_version.split_whitespace().nth(3).unwrap_or(""),
        res.settings.runs,
        h.kernel,
        h.nproc,
        if h.pvm { "yes" } else { "no" },
        h.date
    );
    let mut gp = [
        "# Redraw: cd bench && gnuplot results.gp",
        "set terminal pngcairo size 1600,760 font 'Sans,12'",
        "set output 'results.png'",
        &format!("set multiplot layout 1,2 title \"{title}\" font ',13'"),
        "set style data histograms",
        "set style histogram clustered gap 1",
        "set style fill solid 0.85 border -1",
        "set boxwidth 0.9",
        "set logscale y",
        "set format y '%.0s%c'",
        "set grid ytics",
        "set key top left",
        "set xtics rotate by 25 right scale 0 nomirror",
        "set bmargin 7",
        "set lmargin 10",
        "",
    ]
    .join("\n");
    if !lower.is_empty() {
        gp += &panel("lower is better (ms, MiB)", 0, lower.len(), range(&lower));
    }
    if !higher.is_empty() {
        gp += &panel("higher is better (per second)", 1, higher.len(), range(&higher));
    }
    gp += "unset multiplot\n";
    std::fs::write(out.join("results.gp"), gp).map_err(|e| e.to_string())?;
    let status = Command::new("gnuplot")
        .arg("results.gp")
        .current_dir(out)
        .status()
        .map_err(|e| format!("cannot run gnuplot (apt-get install gnuplot-nox): {e}"))?;
    if !status.success() {
        return Err(format!("gnuplot failed: {status}"));
    }
    Ok(())
}
