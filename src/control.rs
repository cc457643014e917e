//! The control socket: a Unix stream socket speaking one JSON object per
//! line, request then reply (README "Control socket"). One client at a time;
//! a second one, a half-written line or garbage gets an error reply and the
//! VM keeps running. The `control` thread only parses and answers: each
//! request goes to the run loop ([`crate::vmm`]) as a
//! [`crate::vcpu::VmMessage::Control`], which carries it out.
//!
//! `berth ctl` is the client ([`client`]).

use crate::vcpu::VmMessage;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// How long the control thread waits for the run loop to answer.
const REPLY_LIMIT: Duration = Duration::from_secs(600);
/// How often the thread looks at its stop flag.
const POLL_MS: i32 = 50;

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Park every vCPU.
    Pause,
    /// Let them run again.
    Resume,
    /// Write a snapshot to `dir` (pausing meanwhile if running).
    Snapshot {
        /// Target directory (must not exist).
        dir: PathBuf,
        /// Only the pages dirtied since the previous snapshot.
        #[serde(default)]
        incremental: bool,
    },
    /// Counters.
    Stats,
    /// Live-migrate the VM to a `berth run --incoming` at `to`.
    Migrate {
        /// `unix:PATH` or `tcp:IP:PORT` (`berth ctl` resolves host names).
        to: String,
        /// The downtime budget, ms (default 50).
        #[serde(default)]
        max_downtime_ms: Option<u64>,
        /// Rounds of dirty pages before pausing regardless (default 30).
        #[serde(default)]
        max_rounds: Option<u32>,
        /// Bytes per second at most while the guest runs (default: no limit).
        #[serde(default)]
        max_bandwidth: Option<u64>,
    },
    /// End the VM (exit 0).
    Stop,
}

/// A reply: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
pub type Reply = Value;

/// An error reply.
pub fn error_reply(message: impl Into<String>) -> Reply {
    json!({"ok": false, "error": message.into()})
}

/// Control socket errors (user errors, before the VM exists; or client errors).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket path is taken or unusable.
    #[error("{path}: cannot create the control socket: {message}")]
    Bind {
        /// Path.
        path: String,
        /// Why.
        message: String,
    },
    /// `berth ctl` could not reach the VMM.
    #[error("{path}: cannot connect to the control socket: {source}")]
    Connect {
        /// Path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// `berth ctl`: arguments.
    #[error("{0}")]
    Usage(String),
    /// The VMM answered with an error.
    #[error("{0}")]
    Replied(String),
}

/// A bound control socket, not yet served.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

/// Creates the socket at `path` (which must not exist).
pub fn bind(path: &Path) -> Result<Listener, ControlError> {
    let err = |message: String| ControlError::Bind {
        path: path.display().to_string(),
        message,
    };
    if path.symlink_metadata().is_ok() {
        return Err(err("the path exists already".into()));
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    Ok(Listener {
        listener,
        path: path.to_path_buf(),
    })
}

/// The running `control` thread; dropping it stops the thread and removes
/// the socket file.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the `control` thread.
pub fn serve(l: Listener, tx: Sender<VmMessage>) -> std::io::Result<Server> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Control) {
                log::warn!("control: {e}");
                return;
            }
            crate::seccomp::test_forbidden_syscall_here();
            let mut s = Session {
                listener: l.listener,
                client: None,
                buf: Vec::new(),
                tx,
            };
            while !flag.load(Ordering::SeqCst) {
                s.step();
            }
            drop(s);
            let _ = std::fs::remove_file(&l.path);
        })?;
    Ok(Server {
        stop,
        thread: Some(thread),
    })
}

struct Session {
    listener: UnixListener,
    client: Option<UnixStream>,
    buf: Vec<u8>,
    tx: Sender<VmMessage>,
}

fn readable(fds: &mut [libc::pollfd]) -> bool {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of the
    // given length; poll only writes their `revents`.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
    n > 0
}

impl Session {
    fn step(&mut self) {
        let mut fds = vec![libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(c) = &self.client {
            fds.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if !readable(&mut fds) {
            return;
        }
        // The client first: one that hung up before the next connected is
        // gone before that one is accepted.
        if fds.len() > 1 && fds[1].revents != 0 {
            self.read_client();
        }
        if fds[0].revents != 0 {
            if let Ok((mut conn, _)) = self.listener.accept() {
                // A client that has just hung up (its EOF not read yet) is
                // gone, not busy.
                self.reap_client();
                if self.client.is_some() {
                    let _ = send(
                        &mut conn,
                        &error_reply("another client is connected; one at a time"),
                    );
                } else {
                    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                    self.client = Some(conn);
                    self.buf.clear();
                }
            }
        }
    }

    /// Reads the current client if it has input or hung up, without waiting.
    fn reap_client(&mut self) {
        let Some(c) = &self.client else { return };
        let mut fds = [libc::pollfd {
            fd: c.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd, exclusively borrowed; poll only writes
        // its `revents`. A zero timeout does not block.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        if n > 0 && fds[0].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            self.read_client();
        }
    }

    fn read_client(&mut self) {
        let Some(c) = self.client.as_mut() else { return };
        let mut chunk = [0u8; 4096];
        let n: usize = c.read(&mut chunk).unwrap_or_default();
        if n == 0 {
            // End of input: a line without its newline is incomplete.
            if !self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                let _ = send(c, &error_reply("incomplete request: the line has no newline"));
            }
            self.client = None;
            return;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let reply = self.handle(&line);
            let Some(c) = self.client.as_mut() else { return };
            if send(c, &reply).is_err() {
                self.client = None;
                return;
            }
        }
        if self.buf.len() > MAX_LINE {
            if let Some(c) = self.client.as_mut() {
                let _ = send(
                    c,
                    &error_reply(format!("request line longer than {MAX_LINE} bytes")),
                );
            }
            self.client = None;
        }
    }

    fn handle(&mut self, line: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return error_reply("empty request");
        }
        let req: Request = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => return error_reply(format!("bad request: {e}")),
        };
        let (rtx, rrx) = mpsc::channel();
        if self.tx.send(VmMessage::Control(req, rtx)).is_err() {
            return error_reply("the VM has stopped");
        }
        rrx.recv_timeout(REPLY_LIMIT)
            .unwrap_or_else(|_| error_reply("the VM did not answer"))
    }
}

fn send(c: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = reply.to_string();
    line.push('\n');
    c.write_all(line.as_bytes())
}

/// `berth ctl PATH COMMAND [ARGS]`: the request for a command line.
pub fn request_from_args(command: &str, args: &[String]) -> Result<Request, ControlError> {
    let usage = |m: &str| ControlError::Usage(format!("berth ctl: {m}"));
    let none = |r: Request| {
        if args.is_empty() {
            Ok(r)
        } else {
            Err(usage(&format!("{command} takes no arguments")))
        }
    };
    match command {
        "pause" => none(Request::Pause),
        "resume" => none(Request::Resume),
        "stats" => none(Request::Stats),
        "stop" => none(Request::Stop),
        "snapshot" => {
            let mut dir = None;
            let mut incremental = false;
            for a in args {
                match a.as_str() {
                    "--incremental" => incremental = true,
                    d if dir.is_none() && !d.starts_with("--") => dir = Some(PathBuf::from(d)),
                    other => return Err(usage(&format!("snapshot: unexpected argument {other:?}"))),
                }
            }
            let dir = dir.ok_or_else(|| usage("snapshot needs a directory: snapshot DIR [--incremental]"))?;
            // The VMM resolves relative paths from its own directory: send an absolute one.
            let dir = if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir)
            };
            Ok(Request::Snapshot { dir, incremental })
        }
        "migrate" => migrate_from_args(args).map_err(|m| usage(&format!("migrate: {m}"))),
        other => Err(usage(&format!(
            "unknown command {other:?} (pause, resume, snapshot, stats, stop, migrate)"
        ))),
    }
}

/// `migrate ADDR [--max-downtime DURATION] [--max-rounds N] [--max-bandwidth SIZE]`
/// (SIZE per second); a host name in ADDR is resolved here.
fn migrate_from_args(args: &[String]) -> Result<Request, String> {
    let mut to = None;
    let (mut max_downtime_ms, mut max_rounds, mut max_bandwidth) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--max-downtime" => {
                max_downtime_ms = Some(
                    crate::config::parse_duration(&value(a)?).map_err(|e| format!("--max-downtime: {e}"))?,
                )
            }
            "--max-rounds" => max_rounds = Some(value(a)?.parse().map_err(|e| format!("--max-rounds: {e}"))?),
            "--max-bandwidth" => {
                max_bandwidth = Some(
                    crate::config::size::parse_size(&value(a)?)
                        .map_err(|e| format!("--max-bandwidth: {e}"))?,
                )
            }
            t if to.is_none() && !t.starts_with("--") => {
                to = Some(
                    crate::migrate::Address::parse(t, true)
                        .map_err(|e| e.to_string())?
                        .to_string(),
                )
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    crate::migrate::Options {
        max_bandwidth,
        ..Default::default()
    }
    .check()?;
    Ok(Request::Migrate {
        to: to.ok_or("needs an address: migrate unix:PATH | tcp:HOST:PORT")?,
        max_downtime_ms,
        max_rounds,
        max_bandwidth,
    })
}

/// Sends one request and returns the reply.
pub fn client(path: &Path, req: &Request) -> Result<Reply, ControlError> {
    let connect = |source| ControlError::Connect {
        path: path.display().to_string(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(connect)?;
    let mut line = serde_json::to_string(req).unwrap_or_default();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(connect)?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => reply.push(byte[0]),
            Err(e) => return Err(connect(e)),
        }
    }
    serde_json::from_slice(&reply).map_err(|e| ControlError::Replied(format!("unreadable reply: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"snapshot","dir":"/tmp/x","incremental":true}"#).unwrap();
        assert_eq!(
            r,
            Request::Snapshot {
                dir: "/tmp/x".into(),
                incremental: true
            }
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"pause"}"#).unwrap();
        assert_eq!(r, Request::Pause);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"fly"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"snapshot"}"#).is_err());
        assert_eq!(request_from_args("stop", &[]).unwrap(), Request::Stop);
        assert!(request_from_args("stop", &["x".into()]).is_err());
        assert!(request_from_args("snapshot", &[]).is_err());
        assert!(request_from_args("dance", &[]).is_err());
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            request_from_args(
                "migrate",
                &args(&[
                    "unix:/t",
                    "--max-downtime",
                    "20ms",
                    "--max-rounds",
                    "3",
                    "--max-bandwidth",
                    "8MiB"
                ])
            )
            .unwrap(),
            Request::Migrate {
                to: "unix:/t".into(),
                max_downtime_ms: Some(20),
                max_rounds: Some(3),
                max_bandwidth: Some(8 << 20),
            }
        );
        assert!(request_from_args("migrate", &[]).is_err());
        assert!(request_from_args("migrate", &args(&["tcp:nowhere"])).is_err());
        assert!(request_from_args("migrate", &args(&["unix:/t", "--max-bandwidth", "1KiB"])).is_err());
        assert!(request_from_args("migrate", &args(&["unix:/t", "--max-rounds"])).is_err());
    }
}
