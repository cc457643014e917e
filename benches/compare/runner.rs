//! Running one VMM process and measuring it.
//!
//! Every measured run goes through [`run`]:
//! - the clock ([`Instant`], CLOCK_MONOTONIC) starts just before `spawn`;
//! - stdout is read on this thread, so the first complete line is timestamped the moment it
//!   arrives; stderr is drained by a helper thread;
//! - `waitid(WEXITED | WNOWAIT)` observes the exit without reaping, which stops the clock;
//! - `wait4` on that pid then reaps the child and returns its own CPU time (user + sys) and peak
//!   RSS (`ru_maxrss`). `Child::wait` is never called.
//!
//! `ru_maxrss` is not the child's own peak: a child's high-water mark starts from its parent's
//! (the mm it runs in before `exec` is the harness's, and the kernel carries that mm's peak over),
//! so it can never read below the harness's own RSS. [`Spec::peak_rss_at_exit`] therefore
//! traces the child (PTRACE_TRACEME, then PTRACE_O_TRACEEXIT) and reads `VmHWM` from
//! `/proc/PID/status` while it is stopped on its way out: the peak of its own address space since
//! `exec`, nothing of the harness's. Only the footprint benchmark uses it (the stops cost time).
//!
//! A watchdog thread sends SIGKILL when the run outlives its timeout. Because the child is only
//! reaped after the watchdog has stopped, that pid cannot belong to another process by then.
//!
//! A run whose exit status, stdout or stderr differs from what its [`Spec`] expects is an error:
//! its numbers are never returned.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What to run and what a good run looks like.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Short name used in progress and error messages.
    pub label: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// The exit status a good run ends with (1: the guest wrote 0 to isa-debug-exit).
    pub expect_status: i32,
    /// The first complete stdout line (without the newline) must be exactly this.
    pub expect_first_line: Option<String>,
    /// Each of these must appear somewhere in stderr.
    pub expect_stderr: Vec<String>,
    /// SIGKILL the child after this long; the run then fails.
    pub timeout: Duration,
    /// Measure the peak RSS as `VmHWM` at the child's exit (ptrace; see the module docs).
    pub trace_peak_rss: bool,
}

impl Spec {
    /// A run of `program args…` expected to exit with status 1 within `timeout`.
    pub fn new<I, S>(label: &str, program: impl Into<PathBuf>, args: I, timeout: Duration) -> Spec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Spec {
            label: label.to_string(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            expect_status: 1,
            expect_first_line: None,
            expect_stderr: Vec::new(),
            timeout,
            trace_peak_rss: false,
        }
    }

    /// Takes the peak RSS from `VmHWM` at the child's exit instead of `ru_maxrss`.
    pub fn peak_rss_at_exit(mut self) -> Spec {
        self.trace_peak_rss = true;
        self
    }

    /// Expects this exit status instead of 1.
    pub fn status(mut self, status: i32) -> Spec {
        self.expect_status = status;
        self
    }

    /// Expects this exact first line on stdout.
    pub fn first_line(mut self, line: &str) -> Spec {
        self.expect_first_line = Some(line.to_string());
        self
    }

    /// Expects `text` somewhere in stderr.
    pub fn stderr_has(mut self, text: &str) -> Spec {
        self.expect_stderr.push(text.to_string());
        self
    }

    /// The command line, for messages and results.json.
    pub fn command_line(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// The measurements of one good run.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Spawn → exit observed.
    pub wall: Duration,
    /// Spawn → first `\n` read from stdout (None when stdout had no complete line).
    pub first_line: Option<Duration>,
    /// The child's user + system CPU time.
    pub cpu: Duration,
    /// The child's peak resident set size in KiB: `VmHWM` at its exit when the spec asked for
    /// it, else `ru_maxrss` (which never reads below the harness's own RSS).
    pub max_rss_kib: u64,
    /// Everything the child wrote to stdout.
    pub stdout: String,
    /// Everything the child wrote to stderr.
    pub stderr: String,
}

impl Measured {
    /// Wall time in milliseconds.
    pub fn wall_ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }

    /// CPU time (user + sys) in milliseconds.
    pub fn cpu_ms(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e3
    }

    /// Peak RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.max_rss_kib as f64 / 1024.0
    }

    /// The values of the `stats: KEY v1 v2 …` line berth's `--stats` printed, if any.
    pub fn stats(&self, key: &str) -> Option<Vec<&str>> {
        let prefix = format!("stats: {key} ");
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|rest| rest.split_whitespace().collect())
    }

    /// The integer of a `stats: KEY N` line (0 when berth printed no such line).
    pub fn stats_count(&self, key: &str) -> Result<u64, String> {
        match self.stats(key) {
            None => Ok(0),
            Some(v) => v
                .first()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("cannot parse `stats: {key}` in:\n{}", self.stderr)),
        }
    }
}

/// The last `n` lines of `text`, indented, for error messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("    | {l}\n")).collect()
}

/// Runs `spec` once, measures it and checks it (see the module docs).
pub fn run(spec: &Spec) -> Result<Measured, String> {
    run_driven(spec, &|| Ok(()))
}

/// [`run`], with `driver` called on a helper thread once the child is spawned (e.g. a QMP
/// client that resumes a VM after `-incoming`); its error fails the run.
pub fn run_driven(spec: &Spec, driver: &(dyn Fn() -> Result<(), String> + Sync)) -> Result<Measured, String> {
    thread::scope(|scope| run_inner(spec, scope, driver))
}

fn run_inner<'s, 'e>(
    spec: &Spec,
    scope: &'s thread::Scope<'s, 'e>,
    driver: &'e (dyn Fn() -> Result<(), String> + Sync),
) -> Result<Measured, String> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if spec.trace_peak_rss {
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // async-signal-safe ptrace(2) call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: cannot start `{}`: {e}", spec.label, spec.command_line()))?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    drop(child); // Dropping a std Child neither waits for nor kills it.
    let driven = scope.spawn(driver);

    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let timeout = spec.timeout;
    let watchdog = thread::spawn(move || match stop_rx.recv_timeout(timeout) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // SAFETY: kill(2) has no memory effects. The child is not reaped until this thread
            // has been joined, so `pid` still names it (running or a zombie).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        }
        _ => false,
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });

    let mut read_stdout = move || {
        let mut out = Vec::new();
        let mut first_line = None;
        let mut chunk = [0u8; 4096];
        loop {
            match stdout.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if first_line.is_none() && chunk[..n].contains(&b'\n') {
                        first_line = Some(start.elapsed());
                    }
                    out.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        (out, first_line)
    };
    // The tracer must be the thread that spawned the child, so a traced run reads stdout on a
    // helper thread while this one answers the child's stops.
    let (out, first_line, hwm_kib) = if spec.trace_peak_rss {
        let reader = thread::spawn(read_stdout);
        let hwm = trace_to_exit(pid).map_err(|e| format!("{}: ptrace: {e}", spec.label))?;
        let (out, first_line) = reader.join().unwrap_or_default();
        (out, first_line, hwm)
    } else {
        let (out, first_line) = read_stdout();
        (out, first_line, None)
    };

    wait_exited(pid).map_err(|e| format!("{}: waitid: {e}", spec.label))?;
    let wall = start.elapsed();
    drop(stop_tx);
    let killed = watchdog.join().unwrap_or(false);
    let (status, usage) = reap(pid).map_err(|e| format!("{}: wait4: {e}", spec.label))?;
    let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let out = String::from_utf8_lossy(&out).into_owned();

    let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    let m = Measured {
        wall,
        first_line,
        cpu,
        max_rss_kib: if spec.trace_peak_rss {
            hwm_kib.ok_or_else(|| format!("{}: the child exited without an exit stop", spec.label))?
        } else {
            usage.ru_maxrss.max(0) as u64
        },
        stdout: out,
        stderr: err,
    };
    check(spec, &m, status, killed)?;
    driven
        .join()
        .unwrap_or_else(|_| Err("the driver panicked".into()))
        .map_err(|e| format!("{}: {e}", spec.label))?;
    Ok(m)
}

/// Checks one finished run against its spec; the message says what went wrong and shows the
/// output.
fn check(spec: &Spec, m: &Measured, status: libc::c_int, killed: bool) -> Result<(), String> {
    let context = || {
        format!(
            "\n  command: {}\n  stdout (last lines):\n{}  stderr (last lines):\n{}",
            spec.command_line(),
            tail(&m.stdout, 8),
            tail(&m.stderr, 12)
        )
    };
    if killed {
        return Err(format!(
            "{}: no exit after {:?}; killed (SIGKILL){}",
            spec.label,
            spec.timeout,
            context()
        ));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        return Err(format!("{}: killed by signal {sig}{}", spec.label, context()));
    }
    let code = libc::WEXITSTATUS(status);
    if code != spec.expect_status {
        return Err(format!(
            "{}: exit status {code}, expected {}{}",
            spec.label,
            spec.expect_status,
            context()
        ));
    }
    if let Some(want) = &spec.expect_first_line {
        let got = m.stdout.split('\n').next().unwrap_or("").trim_end_matches('\r');
        if m.first_line.is_none() || got != want {
            return Err(format!(
                "{}: first stdout line is {got:?}, expected {want:?}{}",
                spec.label,
                context()
            ));
        }
    }
    for want in &spec.expect_stderr {
        if !m.stderr.contains(want.as_str()) {
            return Err(format!("{}: stderr lacks {want:?}{}", spec.label, context()));
        }
    }
    Ok(())
}

/// Answers the stops of a child started with PTRACE_TRACEME until it exits: the stop after
/// `exec` sets PTRACE_O_TRACEEXIT (and EXITKILL), signal-delivery stops pass the signal on, and
/// at the exit stop `VmHWM` is read. The exit itself is left unreaped (WNOWAIT). Returns `VmHWM`
/// in KiB, or None when the child died without an exit stop (SIGKILL).
fn trace_to_exit(pid: libc::pid_t) -> std::io::Result<Option<u64>> {
    let mut hwm = None;
    let mut execed = false;
    loop {
        let info = peek(pid, libc::WEXITED | libc::WSTOPPED)?;
        if info.si_code == libc::CLD_EXITED
            || info.si_code == libc::CLD_KILLED
            || info.si_code == libc::CLD_DUMPED
        {
            return Ok(hwm);
        }
        // A stop: consume it.
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only into `status`.
        if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } != pid {
            return Err(std::io::Error::last_os_error());
        }
        if !libc::WIFSTOPPED(status) {
            return Ok(hwm);
        }
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        let mut pass = 0;
        if !execed && sig == libc::SIGTRAP {
            execed = true;
            let opts = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
            // SAFETY: PTRACE_SETOPTIONS on our stopped tracee; no memory is passed.
            if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, opts) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
        } else if sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXIT {
            hwm = vm_hwm_kib(pid);
        } else {
            pass = sig;
        }
        // SAFETY: PTRACE_CONT on our stopped tracee, `pass` is a signal number or 0.
        if unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, pass) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
}

/// `VmHWM` of `pid` in KiB.
fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Blocks until `pid` has exited, leaving it a zombie (WNOWAIT).
fn wait_exited(pid: libc::pid_t) -> std::io::Result<()> {
    peek(pid, libc::WEXITED).map(|_| ())
}

/// `waitid(P_PID, pid, flags | WNOWAIT)`, retried when interrupted: what `pid` did, left to be
/// reported again.
fn peek(pid: libc::pid_t, flags: libc::c_int) -> std::io::Result<libc::siginfo_t> {
    loop {
        // SAFETY: siginfo_t is plain data for which all-zero bytes are valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`, which lives for the whole call.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags | libc::WNOWAIT) };
        if r == 0 {
            return Ok(info);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reaps `pid` and returns its wait status and resource usage.
fn reap(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain data for which all-zero bytes are valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only into `status` and `usage`, which live for the whole call.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}
