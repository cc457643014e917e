//! Shared helpers for integration tests: the built binary, the guests, and
//! running berth with a deadline.
#![allow(dead_code)]

pub mod snapshot;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The berth binary cargo built for this test run.
pub fn berth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.current_dir(repo());
    c
}

static GUESTS: Once = Once::new();

/// Builds the guests (once per test binary).
pub fn guests() {
    GUESTS.call_once(|| {
        let st = Command::new("make")
            .args(["-s", "-C", "guests"])
            .current_dir(repo())
            .status()
            .expect("run make -C guests");
        assert!(st.success(), "make -C guests failed");
    });
}

/// Path of a built guest.
pub fn guest(name: &str) -> PathBuf {
    guests();
    repo().join("guests").join(format!("{name}.elf"))
}

static LINUX: Once = Once::new();

/// Fetches the Debian kernel, its vmlinux and the initramfs (once per test
/// binary; cached outside the repo by tests/linux/fetch.sh).
pub fn linux_artifacts() {
    LINUX.call_once(|| {
        let st = Command::new("sh")
            .arg("tests/linux/fetch.sh")
            .current_dir(repo())
            .status()
            .expect("run fetch.sh");
        assert!(st.success(), "tests/linux/fetch.sh failed");
    });
}

/// Where fetch.sh links the Linux artifacts.
pub fn linux_dir() -> PathBuf {
    repo().join("target/linux")
}

/// Whether this host's KVM is PVM (CPL0 emulated).
pub fn host_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// Waits for `child`, started at `start`; after `limit` kills it and fails
/// the test.
pub fn wait_with_limit(child: &mut Child, start: Instant, limit: Duration) -> ExitStatus {
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command to completion, failing the test after `limit`.
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn berth");
    let start = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_with_limit(&mut child, start, limit);
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates a fresh directory under the target dir.
    pub fn new(tag: &str) -> TempDir {
        let base = repo().join("target").join("test-tmp");
        std::fs::create_dir_all(&base).unwrap();
        let p = base.join(format!("{tag}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// Writes a file inside and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    t ^ (N.fetch_add(1, Ordering::SeqCst) << 32)
}

/// A machine file for `kernel` (absolute path) with the given extra text.
pub fn machine(kernel: &Path, vcpus: u32, extra: &str) -> String {
    format!(
        "[machine]\nvcpus = {vcpus}\n\n[[memory]]\nguest_addr = 0\nsize = \"128MiB\"\n\n[kernel]\npath = \"{}\"\ncmdline = \"console=ttyS0\"\n\n[[device]]\nkind = \"debug-exit\"\n{extra}",
        kernel.display()
    )
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// sha256 of the recorder's write sequence, computed independently.
pub fn recorder_digest(records: impl Iterator<Item = (u64, u8, u64)>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (off, size, val) in records {
        h.update(off.to_le_bytes());
        h.update([size]);
        h.update(val.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `berth plan --format json FILE` as JSON (without the digest line).
pub fn plan_of(file: impl AsRef<std::ffi::OsStr>) -> serde_json::Value {
    let mut c = berth();
    c.args(["plan", "--format", "json"]).arg(file);
    let o = run_with_limit(c, Duration::from_secs(120));
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    serde_json::from_str(&t[..t.rfind("plan-sha256:").unwrap()]).unwrap()
}

/// A plan number: a `"0x…"` string or a JSON number.
pub fn hexnum(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap(),
        serde_json::Value::Number(n) => n.as_u64().unwrap(),
        other => panic!("not a plan number: {other}"),
    }
}

/// strace -f output with each call whole: a `<unfinished ...>` line joined
/// with its thread's `<... NAME resumed>` line.
pub fn strace_calls(text: &str) -> Vec<String> {
    let mut open: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut out: Vec<String> = Vec::new();
    for l in text.lines() {
        let pid = l.split_whitespace().next().unwrap_or("").to_string();
        if let Some(head) = l.strip_suffix(" <unfinished ...>") {
            open.insert(pid, out.len());
            out.push(head.to_string());
        } else if let Some(rest) = l.split_once(" resumed>").map(|(_, r)| r) {
            match open.remove(&pid) {
                Some(i) => out[i].push_str(rest),
                None => out.push(l.to_string()),
            }
        } else {
            out.push(l.to_string());
        }
    }
    out
}

/// Runs berth under strace and returns (exit code, stderr, whether KVM_CREATE_VM was called).
pub fn traced(args: &[&str]) -> (Option<i32>, String, bool) {
    let mut c = Command::new("strace");
    c.current_dir(repo())
        .args(["-f", "-qq", "-e", "trace=ioctl", "-o", "/dev/stderr"]);
    c.arg(env!("CARGO_BIN_EXE_berth")).args(args);
    let o = run_with_limit(c, Duration::from_secs(60));
    let err = stderr(&o);
    (o.status.code(), err.clone(), err.contains("KVM_CREATE_VM"))
}

/// Runs berth plainly (stderr kept whole: under strace its lines can be
/// split by strace's own) and under strace; returns (exit code, stderr,
/// whether the traced run called KVM_CREATE_VM).
pub fn run_and_trace(args: &[&str]) -> (Option<i32>, String, bool) {
    let mut c = berth();
    c.args(args);
    let o = run_with_limit(c, Duration::from_secs(60));
    let (traced_code, trace, created) = traced(args);
    assert_eq!(traced_code, o.status.code(), "{trace}");
    (o.status.code(), stderr(&o), created)
}

/// A test whose input is missing: under `make test` (which sets
/// `BERTH_REQUIRE_INPUTS=1`) that is a failure; a bare `cargo test` skips it
/// and says so on the real stderr, next to the run's summary (as
/// `boot::testutil::missing_input` does for the unit tests).
pub fn missing_input(test: &str, why: &str) {
    if std::env::var_os("BERTH_REQUIRE_INPUTS").is_some_and(|v| v != "0") {
        panic!("{test}: {why} (BERTH_REQUIRE_INPUTS is set: a missing input is a failure)");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}
