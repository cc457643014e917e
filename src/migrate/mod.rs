//! Live migration between berth processes (README "Live migration").
//!
//! - [`stream`]: the versioned stream format (sections with checksums,
//!   page records);
//! - [`source`]: the running VM's side (`berth ctl SOCKET migrate ADDR`):
//!   pre-copy rounds on the dirty log while the guest runs, then pause,
//!   the last pages and the state ([`crate::state`]), the target's ack, commit;
//! - [`target`]: `berth run --incoming ADDR FILE`: wait for a source,
//!   refuse another machine, build the VM, receive, load, run after commit.
//!
//! The commit protocol keeps the guest in exactly one place: the target
//! runs nothing until the source's `commit`, and the source sends `commit`
//! only after the target's `ack`, and then never runs again. Any failure
//! before `commit` leaves the source running and the target exiting.

mod crc32c;
pub mod source;
pub mod stream;
pub mod target;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// How long one read or write on the connection may block.
pub const IO_LIMIT: Duration = Duration::from_secs(10);

/// Where a migration goes: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A Unix stream socket.
    Unix(PathBuf),
    /// TCP.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl Address {
    /// Parses `unix:PATH` or `tcp:HOST:PORT`; `resolve` allows host names
    /// (a name lookup), otherwise HOST must be an IP address.
    pub fn parse(s: &str, resolve: bool) -> Result<Address, MigrateError> {
        let bad = |m: &str| MigrateError::Address(format!("{s:?}: {m}"));
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(bad("unix: needs a path"));
            }
            return Ok(Address::Unix(PathBuf::from(p)));
        }
        let Some(hp) = s.strip_prefix("tcp:") else {
            return Err(bad("expected unix:PATH or tcp:HOST:PORT"));
        };
        if let Ok(a) = hp.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        if !resolve {
            return Err(bad("expected tcp:IP:PORT"));
        }
        let mut addrs = hp
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve: {e}")))?;
        addrs
            .next()
            .map(Address::Tcp)
            .ok_or_else(|| bad("the host name has no address"))
    }
}

/// A migration connection.
pub enum Conn {
    /// Unix.
    Unix(UnixStream),
    /// TCP.
    Tcp(TcpStream),
}

impl Conn {
    /// Connects to `addr` (blocking; a refused or missing peer fails at once).
    pub fn connect(addr: &Address) -> std::io::Result<Conn> {
        let c = match addr {
            Address::Unix(p) => Conn::Unix(UnixStream::connect(p)?),
            Address::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
        };
        c.set_timeouts(IO_LIMIT)?;
        Ok(c)
    }

    /// Polls, for up to `limit`, until the next read would not block
    /// (bytes or the peer's end are waiting), yielding the CPU between
    /// tries ([`crate::clock::poll_until`]). Whether it became readable.
    pub fn poll_readable(&self, limit: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Tcp(s) => s.as_raw_fd(),
        };
        let mut byte = 0u8;
        crate::clock::poll_until(limit, || {
            // SAFETY: `fd` is this connection's open socket; the kernel
            // writes at most one byte into `byte`, and MSG_PEEK leaves it
            // queued for the read that follows.
            let n = unsafe {
                libc::recv(
                    fd,
                    &mut byte as *mut u8 as *mut libc::c_void,
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
        })
    }

    /// Bounds every later read and write.
    pub fn set_timeouts(&self, d: Duration) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => {
                s.set_read_timeout(Some(d))?;
                s.set_write_timeout(Some(d))
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(d))?;
                s.set_write_timeout(Some(d))
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write_vectored(bufs),
            Conn::Tcp(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A bound `--incoming` address, not yet accepting.
pub enum Listener {
    /// Unix (the socket file is removed on drop).
    Unix(UnixListener, PathBuf),
    /// TCP.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `addr` (a Unix path must not exist).
    pub fn bind(addr: &Address) -> Result<Listener, MigrateError> {
        let err = |m: String| MigrateError::Bind(format!("{addr}: {m}"));
        match addr {
            Address::Unix(p) => {
                if p.symlink_metadata().is_ok() {
                    return Err(err("the path exists already".into()));
                }
                let l = UnixListener::bind(p).map_err(|e| err(e.to_string()))?;
                Ok(Listener::Unix(l, p.clone()))
            }
            Address::Tcp(a) => Ok(Listener::Tcp(
                TcpListener::bind(a).map_err(|e| err(e.to_string()))?,
            )),
        }
    }

    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Unix(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }

    /// Waits for one connection, polling `give_up` every 100 ms.
    pub fn accept(&self, give_up: impl Fn() -> Option<String>) -> Result<Conn, MigrateError> {
        loop {
            if let Some(why) = give_up() {
                return Err(MigrateError::Aborted(why));
            }
            let mut fds = [libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd, exclusively borrowed; poll only
            // writes its `revents`.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
            if n <= 0 {
                continue;
            }
            let c = match self {
                Listener::Unix(l, _) => l.accept().map(|(s, _)| Conn::Unix(s)),
                Listener::Tcp(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    Conn::Tcp(s)
                }),
            };
            let c = c.map_err(|e| {
                MigrateError::Stream(stream::StreamError::Io {
                    what: "accepting",
                    source: e,
                })
            })?;
            c.set_timeouts(IO_LIMIT).map_err(|e| {
                MigrateError::Stream(stream::StreamError::Io {
                    what: "setting timeouts",
                    source: e,
                })
            })?;
            return Ok(c);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub use crate::clock::monotonic_ms;

/// The steps of one side's downtime path, logged at debug level
/// (`BERTH_LOG=berth::migrate=debug`) as CLOCK_MONOTONIC ms, so the two
/// sides' lines can be merged into one timeline.
#[derive(Default)]
pub struct Steps {
    marks: Vec<(&'static str, f64)>,
}

impl Steps {
    /// Notes that `what` has just happened.
    pub fn mark(&mut self, what: &'static str) {
        if log::log_enabled!(log::Level::Debug) {
            self.marks.push((what, monotonic_ms()));
        }
    }

    /// Logs the marks (one line each, with the step's own duration).
    pub fn log(&self, side: &str) {
        let mut last = None;
        for (what, at) in &self.marks {
            let step = last.map_or(0.0, |l| at - l);
            log::debug!("migration {side}: {at:.3} {what} (+{step:.3} ms)");
            last = Some(*at);
        }
    }
}

/// Source options (`berth ctl SOCKET migrate ADDR [...]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Options {
    /// The downtime budget: the guest is paused once the remaining dirty
    /// pages take this long to send at the observed bandwidth.
    pub max_downtime_ms: u64,
    /// Rounds of dirty pages sent while the guest runs before pausing
    /// regardless.
    pub max_rounds: u32,
    /// Bytes per second at most (`None`: as fast as the link goes).
    pub max_bandwidth: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_downtime_ms: 50,
            max_rounds: 30,
            max_bandwidth: None,
        }
    }
}

/// The lowest `--max-bandwidth`: a `pages` section (up to 1 MiB) must go
/// out well within [`IO_LIMIT`].
pub const MIN_BANDWIDTH: u64 = 1 << 20;

impl Options {
    /// Refuses options a migration cannot keep to.
    pub fn check(&self) -> Result<(), String> {
        match self.max_bandwidth {
            Some(b) if b < MIN_BANDWIDTH => {
                Err(format!("--max-bandwidth {b}: at least 1MiB (bytes per second)"))
            }
            _ => Ok(()),
        }
    }
}

/// Migration errors.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The address is malformed (a usage error).
    #[error("migration address {0}")]
    Address(String),
    /// `--incoming`: the address cannot be bound (a usage error).
    #[error("--incoming {0}")]
    Bind(String),
    /// The stream broke or is not a migration stream.
    #[error(transparent)]
    Stream(#[from] stream::StreamError),
    /// The target refused the source, or the source the target.
    #[error("{0}")]
    Refused(String),
    /// The source is of another machine (its plan digest differs).
    #[error("the source is another machine (plan-sha256:{source_digest}, this machine's is {this})")]
    OtherMachine {
        /// The source's digest.
        source_digest: String,
        /// This machine's.
        this: String,
    },
    /// The VM state could not be saved or loaded.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The migration was abandoned (a signal, the VM ending).
    #[error("{0}")]
    Aborted(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("unix:/tmp/m.sock", false).unwrap(),
            Address::Unix("/tmp/m.sock".into())
        );
        assert_eq!(
            Address::parse("tcp:127.0.0.1:4444", false).unwrap().to_string(),
            "tcp:127.0.0.1:4444"
        );
        assert!(Address::parse("tcp:localhost:4444", false).is_err());
        assert!(Address::parse("tcp:localhost:4444", true).is_ok());
        assert!(Address::parse("udp:1.2.3.4:5", true).is_err());
        assert!(Address::parse("unix:", true).is_err());
    }

    /// The downtime poll sees queued bytes without taking them, sees the
    /// peer's end, and gives up at its bound when nothing comes.
    #[test]
    fn poll_readable_peeks_and_gives_up_at_its_bound() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Conn::Unix(a), Conn::Unix(b));
        b.set_timeouts(Duration::from_secs(2)).unwrap();
        let t = std::time::Instant::now();
        assert!(!b.poll_readable(Duration::from_millis(20)));
        assert!(t.elapsed() >= Duration::from_millis(20));
        a.write_all(b"xy").unwrap();
        assert!(b.poll_readable(Duration::from_secs(5)));
        let mut got = [0u8; 2];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"xy", "the poll took nothing");
        drop(a);
        let t = std::time::Instant::now();
        assert!(b.poll_readable(Duration::from_secs(5)), "the end is readable");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
