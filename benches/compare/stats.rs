//! Summaries of samples and the alternating run order every benchmark uses.

use serde::{Deserialize, Serialize};
use std::io::Write;

/// Median, minimum and maximum of a set of samples, with the samples themselves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (the mean of the two middle samples when `n` is even).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Every counted sample, in run order.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarises `samples` (at least one).
    pub fn of(samples: Vec<f64>) -> Summary {
        assert!(!samples.is_empty(), "a summary needs at least one sample");
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Summary {
            n,
            median,
            min: sorted[0],
            max: sorted[n - 1],
            samples,
        }
    }
}

/// One side of an alternating benchmark: a label and a function doing one run.
pub type Side<'a, T> = (&'a str, Box<dyn Fn() -> Result<T, String> + 'a>);

/// Runs `warmup` uncounted rounds, then `runs` counted rounds; each round runs every side once,
/// in order (A B A B …), so slow drift of the host hits every side alike. Warm-up runs are
/// checked like counted ones. The first failing run ends everything with its error. Returns the
/// counted results per side.
pub fn alternate<T>(
    name: &str,
    warmup: usize,
    runs: usize,
    sides: &[Side<'_, T>],
) -> Result<Vec<Vec<T>>, String> {
    let labels: Vec<&str> = sides.iter().map(|s| s.0).collect();
    eprint!(
        "  {name}: {} × ({warmup} warm-up + {runs} counted) ",
        labels.join(" / ")
    );
    let mut out: Vec<Vec<T>> = sides.iter().map(|_| Vec::with_capacity(runs)).collect();
    for round in 0..warmup + runs {
        for (i, (label, f)) in sides.iter().enumerate() {
            let v = f().map_err(|e| {
                eprintln!();
                let which = if round < warmup {
                    "warm-up".to_string()
                } else {
                    format!("run {}", round - warmup + 1)
                };
                if e.starts_with(&format!("{label}:")) {
                    format!("{which}: {e}")
                } else {
                    format!("{which} of {label}: {e}")
                }
            })?;
            if round >= warmup {
                out[i].push(v);
            }
        }
        eprint!(".");
        let _ = std::io::stderr().flush();
    }
    eprintln!(" done");
    Ok(out)
}
