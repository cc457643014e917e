//! The gdb stub (`berth run --gdb ADDR`): the GDB remote protocol through the
//! `gdbstub` crate, one gdb thread per vCPU.
//!
//! The `gdb` thread owns the connection. It stops the guest with
//! [`crate::pause::Pause`] (the same park the control socket and snapshots
//! use, without saving state) and has every KVM call made by the parked
//! vCPU's own thread ([`crate::pause::Pause::run_on`]). A vCPU that leaves
//! KVM_RUN with `KVM_EXIT_DEBUG` calls [`Stops::debug_exit`]: the exit is
//! recorded, a pause requested and the other vCPUs kicked, so a stop on one
//! stops all. The vCPU loop knows nothing else of gdb.
//!
//! `target.rs` is the gdbstub target (registers, memory, breakpoints,
//! resume), `monitor.rs` the `monitor` commands; `translate.rs` walks the
//! guest's page tables.

mod monitor;
pub mod target;
pub mod translate;
mod wire;

use crate::pause::Pause;
use crate::vcpu::{VmMessage, VmShared};
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, MultiThreadStopReason};
use kvm_bindings::kvm_debug_exit_arch;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use target::GuestTarget;

/// How long the gdb thread waits for every vCPU to park after a stop.
const PARK_LIMIT: Duration = Duration::from_secs(2);
/// How often blocked waits look at the VM's stop flag.
const POLL_MS: i32 = 20;

/// gdb stub errors (all before any VM exists, except the thread's start).
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    /// `--gdb` is not `tcp:HOST:PORT` or `unix:PATH`.
    #[error("--gdb {0}: expected tcp:HOST:PORT (e.g. tcp:127.0.0.1:1234) or unix:PATH")]
    Address(String),
    /// The socket could not be created.
    #[error("--gdb {addr}: cannot listen: {message}")]
    Bind {
        /// The address as given.
        addr: String,
        /// Why.
        message: String,
    },
}

/// A bound, listening gdb socket (before the VM exists).
pub struct Listener {
    inner: ListenerKind,
    /// The Unix socket file is gone already.
    unlinked: std::sync::atomic::AtomicBool,
}

/// What a run needs for `--gdb`.
pub struct GdbControl {
    /// The listening socket (shared by the runs of a restarting machine).
    pub listener: Arc<Listener>,
    /// `--gdb-wait`: the vCPUs wait for gdb before their first instruction.
    pub wait: bool,
    /// This is the last run (no restart follows): the `gdb` thread removes
    /// a Unix socket's file as it ends, since the main thread's seccomp
    /// filter will not let it.
    pub last_run: bool,
}

enum ListenerKind {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Parses and binds `--gdb ADDR` (a Unix path must not exist).
pub fn bind(addr: &str) -> Result<Listener, GdbError> {
    let err = |message: String| GdbError::Bind {
        addr: addr.to_string(),
        message,
    };
    let inner = if let Some(rest) = addr.strip_prefix("tcp:") {
        let sa: SocketAddr = rest.parse().map_err(|_| GdbError::Address(addr.to_string()))?;
        ListenerKind::Tcp(TcpListener::bind(sa).map_err(|e| err(e.to_string()))?)
    } else if let Some(path) = addr.strip_prefix("unix:").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.symlink_metadata().is_ok() {
            return Err(err("the path exists already".into()));
        }
        ListenerKind::Unix(UnixListener::bind(&path).map_err(|e| err(e.to_string()))?, path)
    } else {
        return Err(GdbError::Address(addr.to_string()));
    };
    match &inner {
        ListenerKind::Tcp(l) => l.set_nonblocking(true),
        ListenerKind::Unix(l, _) => l.set_nonblocking(true),
    }
    .map_err(|e| err(e.to_string()))?;
    Ok(Listener {
        inner,
        unlinked: std::sync::atomic::AtomicBool::new(false),
    })
}

impl Listener {
    fn fd(&self) -> RawFd {
        match &self.inner {
            ListenerKind::Tcp(l) => l.as_raw_fd(),
            ListenerKind::Unix(l, _) => l.as_raw_fd(),
        }
    }

    fn accept(&self) -> std::io::Result<Conn> {
        let c = match &self.inner {
            ListenerKind::Tcp(l) => Stream::Tcp(l.accept()?.0),
            ListenerKind::Unix(l, _) => Stream::Unix(l.accept()?.0),
        };
        Ok(Conn {
            stream: c,
            wire: wire::Wire::new(),
        })
    }
}

impl Listener {
    /// Removes a Unix socket's file (once).
    fn unlink(&self) {
        if let ListenerKind::Unix(_, path) = &self.inner {
            if !self.unlinked.swap(true, Ordering::SeqCst) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Waits until `fd` is readable or `ms` pass; true when readable (or hung up).
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents != 0
}

/// The debugger's connection. Reads wait in `poll` so the thread sees the
/// VM stop even while gdb is silent, and pass through the transport filter (`wire.rs`).
pub struct Conn {
    stream: Stream,
    wire: wire::Wire,
}

/// The socket under a [`Conn`].
enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
}

/// The VM is stopping: the session ends.
fn vm_stopping() -> std::io::Error {
    std::io::Error::other("the VM is stopping")
}

impl Conn {
    fn fd(&self) -> RawFd {
        match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match &mut self.stream {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// A byte that passed the wire and was not taken yet is waiting.
    fn buffered(&self) -> bool {
        self.wire.has_ready()
    }

    /// The next byte for gdbstub: one already through the wire, or what one
    /// read of the socket (which must be readable) lets through; `None` when
    /// that was noise or part of a packet.
    fn pump(&mut self) -> std::io::Result<Option<u8>> {
        if let Some(b) = self.wire.take() {
            return Ok(Some(b));
        }
        let mut buf = [0u8; 512];
        let n = self.stream().read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        for &b in &buf[..n] {
            let back = self.wire.received(b);
            if !back.is_empty() {
                self.stream().write_all(&back)?;
            }
        }
        Ok(self.wire.take())
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

thread_local! {
    /// The VM's stop flag, for reads on this (the gdb) thread.
    static STOP: std::cell::RefCell<Option<Arc<VmShared>>> = const { std::cell::RefCell::new(None) };
}

fn stopping() -> bool {
    STOP.with(|s| s.borrow().as_ref().is_some_and(|v| v.stop.load(Ordering::SeqCst)))
}

impl Connection for Conn {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> Result<(), Self::Error> {
        self.wire.sent(&[byte]);
        self.stream().write_all(&[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> Result<(), Self::Error> {
        self.wire.sent(buf);
        self.stream().write_all(buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.stream().flush()
    }

    fn on_session_start(&mut self) -> Result<(), Self::Error> {
        match &self.stream {
            Stream::Tcp(s) => s.set_nodelay(true),
            Stream::Unix(_) => Ok(()),
        }
    }
}

impl ConnectionExt for Conn {
    fn read(&mut self) -> Result<u8, Self::Error> {
        loop {
            if let Some(b) = self.wire.take() {
                return Ok(b);
            }
            if stopping() {
                return Err(vm_stopping());
            }
            if readable(self.fd(), POLL_MS) {
                if let Some(b) = self.pump()? {
                    return Ok(b);
                }
            }
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, Self::Error> {
        // Only used by gdbstub's own blocking helpers, which berth does not call.
        Ok(None)
    }
}

/// The vCPUs' side of the stub: debug exits reported by vCPU threads.
pub struct Stops {
    /// Debug exits since the last resume: (vCPU, KVM's report).
    events: Mutex<Vec<(u32, kvm_debug_exit_arch)>>,
    /// To the run loop: kick every vCPU.
    tx: Mutex<Sender<VmMessage>>,
    /// The run's exit code once it is decided (reported to gdb as `W`).
    exit_code: AtomicI32,
}

impl Stops {
    /// A new hook that asks the run loop for kicks through `tx`.
    pub fn new(tx: Sender<VmMessage>) -> Stops {
        Stops {
            events: Mutex::new(Vec::new()),
            tx: Mutex::new(tx),
            exit_code: AtomicI32::new(-1),
        }
    }

    /// Called by vCPU `index` after `KVM_EXIT_DEBUG`: records it and stops
    /// every vCPU (this one parks before its next KVM_RUN).
    pub fn debug_exit(&self, pause: &Pause, index: u32, arch: kvm_debug_exit_arch) {
        pause.request_quiet();
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, arch));
        self.kick_all();
    }

    fn kick_all(&self) {
        self.send(VmMessage::KickAll);
    }

    fn send(&self, msg: VmMessage) {
        let _ = self.tx.lock().unwrap_or_else(|e| e.into_inner()).send(msg);
    }

    fn take_first(&self) -> Option<(u32, kvm_debug_exit_arch)> {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let first = ev.first().copied();
        if first.is_some() {
            ev.clear();
        }
        first
    }

    /// Forgets debug exits from before a resume (a Ctrl-C stop can come
    /// with one; it must not be reported after the next resume).
    pub(super) fn clear(&self) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The run ends with this exit code (set before the VM's stop flag).
    pub fn set_exit_code(&self, code: i32) {
        self.exit_code.store(code, Ordering::SeqCst);
    }
}

/// Stops every vCPU (pause + kick) and waits, bounded, until all parked.
fn stop_all(shared: &VmShared, stops: &Stops, vcpus: usize) {
    shared.pause.request_quiet();
    stops.kick_all();
    wait_all_parked(shared, vcpus);
}

fn wait_all_parked(shared: &VmShared, vcpus: usize) {
    let deadline = Instant::now() + PARK_LIMIT;
    while shared.pause.parked() < vcpus && !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            log::warn!("gdb: only {} of {vcpus} vCPUs stopped", shared.pause.parked());
            break;
        }
        shared
            .pause
            .wait_parked((deadline - now).min(Duration::from_millis(50)));
    }
}

/// The running `gdb` thread; dropping it ends the session and joins.
pub struct Server {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The thread watches the VM's stop flag, which the owner sets first.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the `gdb` thread for a VM whose vCPUs share `shared`. With
/// `--gdb-wait` the caller has requested a pause before starting them.
pub fn serve(
    g: GdbControl,
    shared: Arc<VmShared>,
    stops: Arc<Stops>,
    vcpus: usize,
) -> std::io::Result<Server> {
    let thread = std::thread::Builder::new().name("gdb".into()).spawn(move || {
        if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::Gdb) {
            log::error!("gdb: {e}; the stub is off");
            shared.pause.release();
            return;
        }
        STOP.with(|s| *s.borrow_mut() = Some(shared.clone()));
        accept_loop(&g.listener, &shared, &stops, vcpus);
        if g.last_run {
            g.listener.unlink();
        }
    })?;
    Ok(Server { thread: Some(thread) })
}

fn accept_loop(l: &Listener, shared: &Arc<VmShared>, stops: &Arc<Stops>, vcpus: usize) {
    while !shared.stop.load(Ordering::SeqCst) {
        if !readable(l.fd(), POLL_MS) {
            continue;
        }
        let conn = match l.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                log::warn!("gdb: accept: {e}");
                continue;
            }
        };
        log::info!("gdb: debugger attached");
        stop_all(shared, stops, vcpus);
        let mut t = GuestTarget::new(shared.clone(), stops.clone(), vcpus);
        let reason = GdbStub::new(conn).run_blocking::<EventLoop>(&mut t);
        // Whatever ended the session (gdb may have gone while the guest
        // ran): stop it, and no breakpoint stays in it.
        if !shared.stop.load(Ordering::SeqCst) {
            stop_all(shared, stops, vcpus);
            t.remove_all();
        }
        match reason {
            Ok(DisconnectReason::Kill) => {
                log::info!("gdb: kill");
                stops.send(VmMessage::Outcome(crate::outcome::Outcome::DebuggerKill));
                return;
            }
            Ok(r) => log::info!("gdb: session ended ({r:?})"),
            Err(e) => log::warn!("gdb: session ended: {e}"),
        }
        shared.pause.release();
    }
}

/// gdbstub's blocking loop: wait for a stop, Ctrl-C or the VM's end.
enum EventLoop {}

impl BlockingEventLoop for EventLoop {
    type Target = GuestTarget;
    type Connection = Conn;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut GuestTarget,
        conn: &mut Conn,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<target::TargetError, std::io::Error>> {
        loop {
            if let Some(code) = target.vm_ended() {
                return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(code)));
            }
            if let Some((index, arch)) = target.stops().take_first() {
                target.wait_stopped();
                let why = target.stop_reason(index, arch);
                return Ok(Event::TargetStopped(why));
            }
            if conn.buffered() || readable(conn.fd(), POLL_MS) {
                if let Some(byte) = conn.pump().map_err(WaitForStopReasonError::Connection)? {
                    return Ok(Event::IncomingData(byte));
                }
            }
        }
    }

    fn on_interrupt(target: &mut GuestTarget) -> Result<Option<Self::StopReason>, target::TargetError> {
        target.interrupt();
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: target::tid(0),
            signal: gdbstub::common::Signal::SIGINT,
        }))
    }
}
