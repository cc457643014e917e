//! The results model: what every benchmark reports, serialised as-is to `bench/results.json`
//! and rendered by [`crate::markdown`] and [`crate::chart`].

use crate::stats::Summary;
use serde::{Deserialize, Serialize};

/// One side's value in a row.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stat {
    /// Measured: one sample per counted run.
    Samples(Summary),
    /// Computed from the medians of other rows (no spread of its own).
    Derived {
        /// The value.
        value: f64,
        /// How it was computed.
        from: String,
    },
}

impl Stat {
    /// The median, or the derived value.
    pub fn value(&self) -> f64 {
        match self {
            Stat::Samples(s) => s.median,
            Stat::Derived { value, .. } => *value,
        }
    }

    /// A measured statistic from samples.
    pub fn of(samples: Vec<f64>) -> Stat {
        Stat::Samples(Summary::of(samples))
    }
}

/// Which direction is good for a metric.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Smaller values are better (times, memory, exit counts).
    Lower,
    /// Larger values are better (rates).
    Higher,
}

/// A goal from the issue; recorded and evaluated, never asserted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    /// The goal as written, e.g. "≤ 3.5 ms".
    pub text: String,
    /// Whether this run met it.
    pub met: bool,
}

/// One metric: berth and (when comparable) QEMU.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// What is measured.
    pub metric: String,
    /// Unit of both values.
    pub unit: String,
    /// berth's value.
    pub berth: Option<Stat>,
    /// QEMU's value (None: not applicable).
    pub qemu: Option<Stat>,
    /// berth / QEMU of the medians.
    pub ratio: Option<f64>,
    /// Good direction.
    pub better: Better,
    /// The target for this metric, if any.
    pub target: Option<Target>,
    /// Short label for the chart; rows without one are not charted.
    pub chart: Option<String>,
}

impl Row {
    /// A row; the ratio is filled in when both sides are present.
    pub fn new(metric: &str, unit: &str, berth: Option<Stat>, qemu: Option<Stat>, better: Better) -> Row {
        let ratio = match (&berth, &qemu) {
            (Some(b), Some(q)) if q.value() != 0.0 => Some(b.value() / q.value()),
            _ => None,
        };
        Row {
            metric: metric.into(),
            unit: unit.into(),
            berth,
            qemu,
            ratio,
            better,
            target: None,
            chart: None,
        }
    }

    /// Attaches a target and whether it was met.
    pub fn target(mut self, text: &str, met: bool) -> Row {
        self.target = Some(Target {
            text: text.into(),
            met,
        });
        self
    }

    /// Puts the row on the chart under `label`.
    pub fn chart(mut self, label: &str) -> Row {
        self.chart = Some(label.into());
        self
    }

    /// berth's median (or derived value); 0 when absent.
    pub fn berth_value(&self) -> f64 {
        self.berth.as_ref().map_or(0.0, Stat::value)
    }
}

/// One benchmark's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bench {
    /// Short id (`startup`, `first-line`, …), also the BENCH_ONLY name.
    pub id: String,
    /// Heading.
    pub title: String,
    /// How it was measured, in a sentence or two.
    pub method: String,
    /// The commands run for each side (one example each).
    pub commands: Vec<String>,
    /// Results; empty when the benchmark failed.
    pub rows: Vec<Row>,
    /// Remarks (run counts that differ from the default, cross-checks).
    pub notes: Vec<String>,
    /// Why it failed; no numbers are reported then.
    pub error: Option<String>,
    /// How long the benchmark took, in seconds.
    pub seconds: f64,
}

/// Facts about the machine the numbers come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Host {
    /// `uname -r`.
    pub kernel: String,
    /// /proc/cpuinfo "model name".
    pub cpu_model: String,
    /// Online CPUs.
    pub nproc: usize,
    /// Whether /dev/kvm is PVM (`/sys/module/kvm_pvm` exists).
    pub pvm: bool,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu_version: String,
    /// The `-cpu` model QEMU runs with (see the harness's QEMU probe).
    pub qemu_cpu: String,
    /// `git describe --always --dirty` of the berth tree.
    pub berth_git_rev: String,
    /// UTC date and time of the run.
    pub date: String,
    /// /proc/loadavg (1, 5, 15 min) when the harness started: other work on the host.
    pub load_start: String,
    /// /proc/loadavg when the harness finished.
    pub load_end: String,
}

/// The harness settings of this run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Counted runs per side (BENCH_RUNS).
    pub runs: usize,
    /// Warm-up runs per side (BENCH_WARMUP).
    pub warmup: usize,
    /// Per-run timeout in seconds (BENCH_TIMEOUT).
    pub timeout_s: u64,
    /// Loop count the pio/mmio guests were built with (BENCH_N).
    pub loop_n: u64,
    /// VMs per churn batch (BENCH_CHURN_M).
    pub churn_m: usize,
    /// Counted churn batches per side and K (BENCH_CHURN_BATCHES).
    pub churn_batches: usize,
}

/// Everything written to results.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// Host facts.
    pub host: Host,
    /// Settings.
    pub settings: Settings,
    /// Every benchmark, in run order.
    pub benchmarks: Vec<Bench>,
    /// Wall time of the whole harness, in seconds.
    pub total_seconds: f64,
}
