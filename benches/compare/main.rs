//! `cargo bench --bench compare` (run by `make bench`): berth and QEMU side by side on the same
//! tiny guests (guests/bench-*.elf), written to `bench/results.{json,md,png}`.
//!
//! Benchmarks, in order: startup, first-line, footprint, exit-cost, coalescing, churn, plan,
//! density, snapshot, migration. Each one alternates its sides (A B A B …) after warm-up runs, checks every run (exit
//! status, expected output) and reports median, min and max. A benchmark whose run misbehaves stops and
//! reports its error instead of numbers; the harness then exits 1 after writing the rest.
//!
//! Knobs (environment): BENCH_RUNS (counted runs per side, default 10), BENCH_WARMUP (default
//! 1), BENCH_TIMEOUT (seconds per run, default 60), BENCH_N (loop count the pio/mmio guests were
//! built with, default 100000), BENCH_CHURN_M (VMs per churn batch, default 50),
//! BENCH_CHURN_BATCHES (counted batches per side, default 10), BENCH_ONLY (comma-separated ids),
//! BENCH_OUT (output directory, default `bench/`), BENCH_BERTH (the berth binary to measure,
//! default the one cargo built for this bench), BENCH_DENSITY_NS (fleet sizes, default
//! 50,100,200), BENCH_DENSITY_RUNS (runs per side and size, default 3), BENCH_MIGRATE_RUNS
//! (migrations per side, guest and size, default 3).

mod boot;
mod chart;
mod churn;
mod density;
mod exits;
mod fleet;
mod host;
mod markdown;
mod migration;
mod plan;
mod qemu;
mod results;
mod runner;
mod snapshot;
mod stats;

use qemu::{Qemu, Serial};
use results::{Bench, Results, Settings};
use runner::{Measured, Spec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Harness settings, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Counted runs per side.
    pub runs: usize,
    /// Warm-up runs per side.
    pub warmup: usize,
    /// Per-run timeout.
    pub timeout: Duration,
    /// The pio/mmio guests' loop count.
    pub loop_n: u64,
    /// VMs per churn batch.
    pub churn_m: usize,
    /// Counted churn batches per side and parallelism.
    pub churn_batches: usize,
    /// Benchmark ids to run (None: all).
    pub only: Option<Vec<String>>,
    /// Where results go.
    pub out: PathBuf,
}

fn env_num<T>(name: &str, default: T, min: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let v = match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .map_err(|_| format!("{name}={s:?}: not a number"))?,
        _ => default,
    };
    if v < min {
        return Err(format!("{name}={v}: must be at least {min}"));
    }
    Ok(v)
}

impl Config {
    /// Reads the BENCH_* variables.
    fn from_env(root: &Path) -> Result<Config, String> {
        let only = std::env::var("BENCH_ONLY")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
        let out = std::env::var_os("BENCH_OUT").map_or_else(|| root.join("bench"), PathBuf::from);
        Ok(Config {
            runs: env_num("BENCH_RUNS", 10, 1)?,
            warmup: env_num("BENCH_WARMUP", 1, 0)?,
            timeout: Duration::from_secs(env_num("BENCH_TIMEOUT", 60, 1)?),
            loop_n: env_num("BENCH_N", 100_000, 1)?,
            churn_m: env_num("BENCH_CHURN_M", 50, 1)?,
            churn_batches: env_num("BENCH_CHURN_BATCHES", 10, 1)?,
            only,
            out,
        })
    }
}

/// What every benchmark gets: settings, paths and the QEMU set-up.
pub struct Ctx {
    /// Settings.
    pub cfg: Config,
    /// The berth binary cargo built for this bench.
    pub berth: PathBuf,
    /// The berth checkout.
    pub root: PathBuf,
    /// QEMU and its `-cpu` model.
    pub qemu: Qemu,
}

impl Ctx {
    /// `bench/machines/NAME.toml`.
    pub fn machine(&self, name: &str) -> PathBuf {
        self.root.join("bench/machines").join(format!("{name}.toml"))
    }

    /// `guests/NAME.elf`.
    pub fn guest(&self, name: &str) -> PathBuf {
        guest_path(&self.root, name)
    }

    /// `berth run [--stats] bench/machines/MACHINE.toml`, expected to exit 1.
    pub fn berth_run(&self, label: &str, machine: &str, with_stats: bool) -> Spec {
        let mut args = vec!["run".to_string()];
        if with_stats {
            args.push("--stats".into());
        }
        args.push(self.machine(machine).display().to_string());
        Spec::new(label, &self.berth, args, self.cfg.timeout)
    }

    /// QEMU `-M microvm` booting guests/IMAGE.elf with `mem` of RAM, expected to exit 1.
    pub fn qemu_microvm(&self, label: &str, image: &str, mem: &str, serial: Serial) -> Spec {
        let args = self.qemu.microvm(&self.guest(image), mem, serial);
        Spec::new(label, qemu::QEMU, args, self.cfg.timeout)
    }

    /// QEMU `-M microvm` with the split irqchip, booting guests/IMAGE.elf; expected to exit 1.
    pub fn qemu_microvm_split(&self, label: &str, image: &str, mem: &str) -> Spec {
        let args = self.qemu.microvm_split(&self.guest(image), mem);
        Spec::new(label, qemu::QEMU, args, self.cfg.timeout)
    }

    /// QEMU `-M pc` booting guests/IMAGE.elf (multiboot), expected to exit 1.
    pub fn qemu_pc(&self, label: &str, image: &str, mem: &str) -> Spec {
        let args = self.qemu.pc(&self.guest(image), mem);
        Spec::new(label, qemu::QEMU, args, self.cfg.timeout)
    }

    /// Runs `specs` alternately (warm-up first) and returns each side's counted runs.
    pub fn alternate(&self, name: &str, specs: &[&Spec]) -> Result<Vec<Vec<Measured>>, String> {
        let sides: Vec<stats::Side<'_, Measured>> = specs
            .iter()
            .map(|s| {
                let f: Box<dyn Fn() -> Result<Measured, String>> = Box::new(move || runner::run(s));
                (s.label.as_str(), f)
            })
            .collect();
        stats::alternate(name, self.cfg.warmup, self.cfg.runs, &sides)
    }
}

/// `ROOT/guests/NAME.elf`.
fn guest_path(root: &Path, name: &str) -> PathBuf {
    root.join("guests").join(format!("{name}.elf"))
}

/// One column of values over a side's runs.
pub fn column(runs: &[Measured], f: impl Fn(&Measured) -> f64) -> Vec<f64> {
    runs.iter().map(f).collect()
}

/// A benchmark: fills in its [`Bench`] or fails with a message.
type BenchFn = fn(&Ctx, &mut Bench) -> Result<(), String>;

/// Every benchmark: id, title, function.
const BENCHES: &[(&str, &str, BenchFn)] = &[
    ("startup", "1. Startup: process start to exit", boot::startup),
    (
        "first-line",
        "2. First line on the serial console",
        boot::first_line,
    ),
    ("footprint", "3. Footprint: peak RSS of the VMM", boot::footprint),
    ("exit-cost", "4. Exit cost: PIO and MMIO", exits::exit_cost),
    ("coalescing", "5. Coalesced MMIO (berth only)", exits::coalescing),
    ("churn", "6. Churn: VMs per second", churn::churn),
    ("plan", "7. Plan of a large machine (berth only)", plan::plan),
    ("density", "8. Density: idle VMs at once", density::density),
    ("snapshot", "9. Snapshot and restore", snapshot::snapshot),
    ("migration", "10. Live migration", migration::migration),
];

/// The guest images every benchmark needs.
const IMAGES: &[&str] = &[
    "bench-exit-pvh",
    "bench-exit-mb",
    "bench-line-pvh",
    "bench-pio-pvh",
    "bench-mmio-pvh",
    "bench-idle-pvh",
    "bench-snap-pvh",
    "bench-tick-pvh",
    "bench-dirty-pvh",
];

fn main() {
    // `cargo test --all-targets` (make test) builds and runs bench targets too, without
    // `--bench`: there, compiling is the check; only `cargo bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compare: built; `make bench` (cargo bench --bench compare) runs it");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match harness(&root) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs the chosen benchmarks and writes the results; Ok(false) when one failed.
fn harness(root: &Path) -> Result<bool, String> {
    let started = Instant::now();
    let cfg = Config::from_env(root)?;
    if let Some(only) = &cfg.only {
        if let Some(bad) = only.iter().find(|o| !BENCHES.iter().any(|b| b.0 == o.as_str())) {
            let ids: Vec<&str> = BENCHES.iter().map(|b| b.0).collect();
            return Err(format!(
                "BENCH_ONLY: unknown id {bad:?}; the ids are {}",
                ids.join(", ")
            ));
        }
    }
    for img in IMAGES {
        let p = guest_path(root, img);
        if !p.is_file() {
            return Err(format!("{} is missing: run `make -C guests` first", p.display()));
        }
    }
    let qemu = Qemu::probe(&guest_path(root, "bench-exit-pvh"), cfg.timeout)?;
    let ctx = Ctx {
        cfg,
        // BENCH_BERTH measures another build (e.g. an older commit's) with the same harness.
        berth: std::env::var_os("BENCH_BERTH")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth"))),
        root: root.into(),
        qemu,
    };
    let mut host = host::facts(root, &ctx.qemu.version, &ctx.qemu.cpu_name());
    eprintln!(
        "bench: {} | {} × {} | pvm: {} | {} | -cpu {} | berth {}",
        host.kernel,
        host.nproc,
        host.cpu_model,
        if host.pvm { "yes" } else { "no" },
        host.qemu_version,
        host.qemu_cpu,
        host.berth_git_rev
    );
    eprintln!("bench: {}", ctx.qemu.cpu_note);

    let mut benches = Vec::new();
    for (id, title, f) in BENCHES {
        if ctx.cfg.only.as_ref().is_some_and(|o| !o.iter().any(|x| x == id)) {
            continue;
        }
        eprintln!("== {title}");
        let t = Instant::now();
        let mut b = Bench {
            id: id.to_string(),
            title: title.to_string(),
            method: String::new(),
            commands: Vec::new(),
            rows: Vec::new(),
            notes: Vec::new(),
            error: None,
            seconds: 0.0,
        };
        if let Err(e) = f(&ctx, &mut b) {
            eprintln!("  FAILED: {e}");
            b.rows.clear();
            b.notes.clear();
            b.error = Some(e);
        }
        b.seconds = t.elapsed().as_secs_f64();
        // Paths relative to the checkout, so the committed report names no local directory.
        let prefix = format!("{}/", root.display());
        b.commands = b.commands.iter().map(|c| c.replace(&prefix, "")).collect();
        b.error = b.error.map(|e| e.replace(&prefix, ""));
        if id == &"startup" {
            b.notes.push(ctx.qemu.cpu_note.clone());
        }
        benches.push(b);
    }

    if ctx.cfg.only.is_some() && std::env::var_os("BENCH_KEEP").is_some() {
        keep_previous(&ctx.cfg.out, &mut benches)?;
    }
    let cfg = &ctx.cfg;
    host.load_end = host::loadavg();
    let results = Results {
        host,
        settings: Settings {
            runs: cfg.runs,
            warmup: cfg.warmup,
            timeout_s: cfg.timeout.as_secs(),
            loop_n: cfg.loop_n,
            churn_m: cfg.churn_m,
            churn_batches: cfg.churn_batches,
        },
        benchmarks: benches,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    write_outputs(&cfg.out, &results)?;
    let failed: Vec<&str> = results
        .benchmarks
        .iter()
        .filter(|b| b.error.is_some())
        .map(|b| b.id.as_str())
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "bench: FAILED: {} (see {}/results.md)",
            failed.join(", "),
            cfg.out.display()
        );
    }
    Ok(failed.is_empty())
}

/// `BENCH_KEEP=1` with `BENCH_ONLY`: the benchmarks this run skipped are
/// taken from the previous `results.json` in `out`, each with a note naming
/// the run they come from, and all are put back in the table's order.
fn keep_previous(out: &Path, benches: &mut Vec<Bench>) -> Result<(), String> {
    let path = out.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("BENCH_KEEP: {}: {e}", path.display()))?;
    let old: Results =
        serde_json::from_str(&text).map_err(|e| format!("BENCH_KEEP: {}: {e}", path.display()))?;
    for mut b in old.benchmarks {
        if benches.iter().any(|n| n.id == b.id) {
            continue;
        }
        b.notes.push(format!(
            "Kept from the run of {} (berth {}, load {} at the start, {} at the end); not run again here (BENCH_KEEP).",
            old.host.date, old.host.berth_git_rev, old.host.load_start, old.host.load_end
        ));
        benches.push(b);
    }
    let order = |id: &str| BENCHES.iter().position(|b| b.0 == id).unwrap_or(usize::MAX);
    benches.sort_by_key(|b| order(&b.id));
    Ok(())
}

/// Writes results.json, results.md and the chart into `out`.
fn write_outputs(out: &Path, results: &Results) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |name: &str, text: &str| {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let json = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
    write("results.json", &(json + "\n"))?;
    let md = markdown::render(results);
    write("results.md", &md)?;
    match chart::render(out, results) {
        Ok(()) => eprintln!("bench: wrote {}/results.{{json,md,png}}", out.display()),
        Err(e) => eprintln!(
            "bench: wrote {}/results.{{json,md}}; no chart: {e}",
            out.display()
        ),
    }
    println!("{md}");
    Ok(())
}
