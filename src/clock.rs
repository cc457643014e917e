//! The process clock: when berth started, how much CPU it has used, and the
//! start path's timeline (`--stats`). The boot timer device and the startup
//! benchmarks measure from [`mark_start`], which `main` calls first.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// Records the process start; later calls return the first instant. The
/// binary calls it before anything else (logging, signal handlers).
pub fn mark_start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// How long a thread polls for another's hand-over before it sleeps, where
/// the hand-over is due within a fraction of a millisecond and the guest
/// waits for it (a migration's downtime, a pause).
///
/// Why: a thread that sleeps lets its CPU idle, and on a host whose idle
/// CPUs halt at once (a VM without guest halt-polling, like the PVM dev
/// host: `haltpoll.guest_halt_poll_ns=0`) waking it again costs 50-100 µs.
/// A migration hands over between threads and processes several times
/// while the guest is stopped. Polling keeps the waiting CPU awake, as
/// KVM's halt-polling does for a vCPU. [`poll_until`] yields between tries
/// (spinning without yielding starved the peer on a shared CPU: 4.5 ms
/// instead of 0.9 from pause to the target's vCPU loop), and gives up at
/// this bound.
pub const HANDOVER_POLL: Duration = Duration::from_millis(2);

/// Calls `ready` until it returns true or `limit` has passed, yielding the
/// CPU between calls; whether it returned true.
pub fn poll_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Wall time since [`mark_start`].
pub fn since_start() -> Duration {
    mark_start().elapsed()
}

/// Reads one clock; zero if it cannot be read.
fn read_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives on
    // this stack frame.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system, every thread) the process has used so far.
pub fn process_cpu() -> Duration {
    read_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CLOCK_MONOTONIC in ms: comparable between two berth processes on one
/// host (a migration's source and target log their steps with it).
pub fn monotonic_ms() -> f64 {
    ms(read_clock(libc::CLOCK_MONOTONIC))
}

/// Named points of the start path, each the wall time since start.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    marks: Vec<(&'static str, Duration)>,
}

impl Timeline {
    /// Records that `what` has just finished.
    pub fn mark(&mut self, what: &'static str) {
        self.marks.push((what, since_start()));
    }

    /// Records that `what` finished `at` (time since start), measured elsewhere.
    pub fn mark_at(&mut self, what: &'static str, at: Duration) {
        self.marks.push((what, at));
    }

    /// The marks in the order they were made.
    pub fn marks(&self) -> &[(&'static str, Duration)] {
        &self.marks
    }

    /// `stats: startup ...` lines: each mark's time since start and the
    /// step's own duration (since the previous mark), in ms.
    pub fn stats_text(&self) -> String {
        let mut s = String::new();
        let mut prev = Duration::ZERO;
        for (what, at) in &self.marks {
            s.push_str(&format!(
                "stats: startup {what} at-ms {:.3} step-ms {:.3}\n",
                ms(*at),
                ms(at.saturating_sub(prev))
            ));
            prev = *at;
        }
        s
    }
}

/// A duration in milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_marks_are_ordered_and_reported() {
        mark_start();
        let mut t = Timeline::default();
        t.mark("a");
        t.mark("b");
        let m = t.marks();
        assert_eq!(m.len(), 2);
        assert!(m[0].1 <= m[1].1);
        let text = t.stats_text();
        assert!(text.starts_with("stats: startup a at-ms "), "{text}");
        assert!(text.contains("\nstats: startup b at-ms "), "{text}");
    }

    #[test]
    fn poll_until_stops_when_ready_or_at_its_bound() {
        let mut calls = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        let t = Instant::now();
        assert!(!poll_until(Duration::from_millis(20), || false));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn process_cpu_grows() {
        let a = process_cpu();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu() > a);
    }
}
