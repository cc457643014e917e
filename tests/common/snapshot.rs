//! Helpers shared by the snapshot tests (`tests/snapshot.rs`,
//! `tests/snapshot_errors.rs`): running berth with a bound, a berth with a
//! control socket ([`Vm`]), a snapshot's manifest.

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any one berth of the snapshot tests may take.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A machine file in `configs/`.
pub fn config(name: &str) -> PathBuf {
    repo().join("configs").join(format!("{name}.toml"))
}

/// Runs berth with `args` (guests built), bounded by [`LIMIT`].
pub fn run(args: &[&str]) -> Output {
    guests();
    let mut c = berth();
    c.args(args);
    run_with_limit(c, LIMIT)
}

/// `berth run --snapshot-at MARKER --snapshot-to SNAP FILE`, which must
/// exit 0 (the snapshot written).
pub fn snapshot_at(marker: &str, snap: &Path, file: &Path) -> Output {
    let out = run(&[
        "run",
        "--snapshot-at",
        marker,
        "--snapshot-to",
        snap.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A running berth with a control socket; killed on drop.
pub struct Vm {
    child: Child,
    socket: PathBuf,
    out: BufReader<std::process::ChildStdout>,
}

impl Vm {
    /// Starts berth with `args` and a control socket, and waits for the
    /// guest's `wait_for` line on stdout and for the socket.
    pub fn start(args: &[&str], socket: &Path, wait_for: &str) -> Vm {
        guests();
        let mut c = berth();
        c.args(args)
            .arg("--control")
            .arg(socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let start = Instant::now();
        let mut line = String::new();
        while !line.contains(wait_for) {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "berth ended before {wait_for:?}"
            );
            assert!(start.elapsed() < LIMIT, "no {wait_for:?}");
        }
        while !socket.exists() {
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("berth ended ({st}) before its socket existed: {err}");
            }
            assert!(start.elapsed() < LIMIT, "no control socket");
            std::thread::sleep(Duration::from_millis(5));
        }
        Vm {
            child,
            socket: socket.to_path_buf(),
            out,
        }
    }

    /// Sends raw bytes on a new connection, then reads one reply line.
    pub fn raw(&self, bytes: &[u8], close_write: bool) -> String {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        // A refused second client may find the socket closed already: its
        // reply is waiting all the same.
        let _ = s.write_all(bytes);
        if close_write {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        // Shut the socket itself down: a child another test forks at this
        // moment holds a copy of the fd until its exec, and the server
        // would take this client for still connected.
        let _ = r.get_ref().shutdown(std::net::Shutdown::Both);
        line
    }

    /// Sends one JSON request line, returns the parsed reply.
    pub fn request(&self, json: &str) -> serde_json::Value {
        serde_json::from_str(&self.raw(format!("{json}\n").as_bytes(), false)).unwrap()
    }

    /// Waits (bounded) for berth to end: its status, the rest of its
    /// stdout and its stderr.
    pub fn wait(mut self) -> Output {
        let status = wait_with_limit(&mut self.child, Instant::now(), LIMIT);
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let mut err = Vec::new();
        let _ = self.child.stderr.take().unwrap().read_to_end(&mut err);
        Output {
            status,
            stdout: rest.into_bytes(),
            stderr: err,
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The spin guest's machine file, in `dir`.
pub fn spin_machine(dir: &TempDir, vcpus: u32, extra: &str) -> PathBuf {
    dir.write("spin.toml", &machine(&guest("spin"), vcpus, extra))
}

/// Page numbers an incremental snapshot holds for slot 0.
pub fn manifest(dir: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    serde_json::from_str(&t[..t.rfind("sha256:").unwrap()]).unwrap()
}
