//! Guest serial output on its way to stdout or a file, without ever
//! blocking a vCPU.
//!
//! [`AsyncOutput`] is the UART's writer. The vCPU appends each byte to a
//! bounded buffer ([`OUTPUT_BUFFER`] bytes; a byte that finds it full is
//! refused and counted as dropped). A complete line is then written by the
//! vCPU itself with `pwritev2(RWF_NOWAIT)`, which never blocks: it writes
//! what fits in the pipe now, or nothing. What it leaves (a full pipe, an
//! unfinished line, an output that does not take `RWF_NOWAIT`, such as a
//! terminal) is written by a `serial-out` thread, in batches: the bytes of an
//! unfinished line gather for at most [`BATCH_DELAY`]. Bytes reach the output
//! in the order the guest sent them: the vCPU writes only while the thread
//! holds no batch, under the buffer's lock.
//!
//! Why the vCPU writes: waking the thread costs a scheduler round trip per
//! line, and on a busy host the thread can wait milliseconds for a CPU (seen
//! on the dev host with `perf sched`: 1.8-3.6 ms behind a running vCPU while
//! the other CPU idled). QEMU writes from the vCPU thread too.
//!
//! Bytes after a quiet spell (no output for [`BATCH_DELAY`], or none yet)
//! go out at once, as Nagle's rule sends a segment when nothing is in
//! flight: a guest's first output after silence, or right after it moved
//! here (a migration), waits neither for its newline nor for the delay,
//! which is what a user at a console, or QEMU's byte-by-byte output, gives.
//! The rest of that line gathers as usual.
//!
//! After such a write the vCPU yields its CPU once (`hand_over_cpu`): a
//! pipe write wakes its reader on the writer's own CPU, expecting the
//! writer to sleep, and a vCPU thread does not, so the reader would wait
//! for the vCPU's time slice to end (0.3 ms more to a migrated guest's
//! first line on the dev host, and up to 4 ms seen with `perf sched`).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the output thread lets bytes of an unfinished line gather
/// before writing them; a complete line is written at once.
pub const BATCH_DELAY: Duration = Duration::from_millis(1);

/// Bytes of guest output buffered between the vCPU and the output.
pub const OUTPUT_BUFFER: usize = 256 << 10;

#[derive(Default)]
struct Pending {
    buf: VecDeque<u8>,
    /// Counts the times `buf` went from empty to not empty: the output
    /// thread's batch delay starts again when this changes.
    batches: u64,
    /// A batch is being written by the output thread.
    writing: bool,
    /// `buf` holds a complete line, or bytes after a quiet spell: write
    /// without waiting.
    newline: bool,
    /// When bytes last went out (either path); `None` before the first.
    last_out: Option<Instant>,
    /// The output failed for good.
    failed: bool,
    /// The device is gone: the output thread ends once the buffer is empty.
    closed: bool,
    /// The vCPU writes complete lines itself ([`Shared::direct`]); off for
    /// good once the output refuses `RWF_NOWAIT` or fails.
    direct: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    cond: Condvar,
    cap: usize,
    /// The batch delay, and the quiet spell after which a byte goes out
    /// at once.
    delay: Duration,
    /// The output's fd for the vCPU's own writes (a dup of the thread's).
    direct: Option<OwnedFd>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A bounded, non-blocking writer: `write` copies into a buffer (or fails
/// when it is full); complete lines go out from the writing thread when the
/// output takes them at once, everything else from a `serial-out` thread.
#[derive(Clone)]
pub struct AsyncOutput {
    shared: Arc<Shared>,
}

/// Writes the front of `buf` to `fd` at its file position, only as far as
/// that needs no wait (`RWF_NOWAIT`); returns the bytes written.
fn write_nowait(fd: &OwnedFd, buf: &VecDeque<u8>) -> io::Result<usize> {
    let (a, b) = buf.as_slices();
    let iov = [
        libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        },
    ];
    let count = if b.is_empty() { 1 } else { 2 };
    // SAFETY: both iovecs describe live slices of `buf`, which the caller's
    // lock keeps unchanged for the call; the kernel only reads them. Offset
    // -1 writes at (and advances) the file position, as write(2) does.
    let n = unsafe { libc::pwritev2(fd.as_raw_fd(), iov.as_ptr(), count, -1, libc::RWF_NOWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncOutput {
    /// Starts the output thread for `sink` with a buffer of `cap` bytes;
    /// `direct`, the same output's fd, lets the writer write complete lines
    /// itself.
    pub fn spawn(
        sink: Box<dyn Write + Send>,
        cap: usize,
        direct: Option<OwnedFd>,
    ) -> io::Result<AsyncOutput> {
        Self::spawn_with_delay(sink, cap, BATCH_DELAY, direct)
    }

    /// [`AsyncOutput::spawn`] with `delay` instead of [`BATCH_DELAY`] for
    /// the bytes of an unfinished line.
    pub fn spawn_with_delay(
        mut sink: Box<dyn Write + Send>,
        cap: usize,
        delay: Duration,
        direct: Option<OwnedFd>,
    ) -> io::Result<AsyncOutput> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                direct: direct.is_some(),
                ..Pending::default()
            }),
            cond: Condvar::new(),
            cap,
            delay,
            direct,
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("serial-out".into())
            .spawn(move || {
                if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::SerialOut) {
                    log::error!("{e}; serial output is dropped");
                    let mut p = s.lock();
                    p.failed = true;
                    s.cond.notify_all();
                    return;
                }
                loop {
                    crate::outcome::inject_panic_here();
                    // A vCPU emits one byte per exit: let the bytes of a line
                    // gather (at most `delay` from the first) so the output
                    // sees one write per line, or per burst under load, not
                    // one per byte. A complete line goes out at once (from
                    // the vCPU, or here).
                    let batch: Vec<u8> = {
                        let mut p = s.lock();
                        let mut started: Option<(u64, Instant)> = None;
                        loop {
                            if p.buf.is_empty() {
                                if p.closed {
                                    return; // closed and drained
                                }
                                started = None;
                                p = s.cond.wait(p).unwrap_or_else(|e| e.into_inner());
                                continue;
                            }
                            let now = Instant::now();
                            let deadline = match started {
                                Some((b, d)) if b == p.batches => d,
                                _ => {
                                    let d = now + delay;
                                    started = Some((p.batches, d));
                                    d
                                }
                            };
                            if p.newline || p.closed || now >= deadline {
                                break;
                            }
                            p = s
                                .cond
                                .wait_timeout(p, deadline - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        p.newline = false;
                        p.writing = true;
                        p.buf.drain(..).collect()
                    };
                    let ok = sink.write_all(&batch).and_then(|_| sink.flush()).is_ok();
                    let mut p = s.lock();
                    p.writing = false;
                    p.last_out = Some(Instant::now());
                    if !ok {
                        p.failed = true;
                    }
                    s.cond.notify_all();
                }
            })?;
        Ok(AsyncOutput { shared })
    }

    /// Tells the output thread to end once everything buffered is written.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.cond.notify_all();
    }

    /// [`AsyncOutput::drain`], but an unfinished line goes out at once,
    /// without waiting for the [`BATCH_DELAY`]: a pause for a snapshot or a
    /// migration waits here with the guest stopped.
    pub fn flush_now(&self, limit: Duration) -> bool {
        {
            let mut p = self.shared.lock();
            if !p.buf.is_empty() {
                p.newline = true;
                self.shared.cond.notify_all();
            }
        }
        self.drain(limit)
    }

    /// Waits up to `limit` for everything buffered to be written; returns
    /// whether it was.
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut p = self.shared.lock();
        loop {
            if (p.buf.is_empty() && !p.writing) || p.failed {
                return p.buf.is_empty() && !p.writing;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            p = self
                .shared
                .cond
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Writes the buffered complete line(s) from this thread, as far as the
    /// output takes them without waiting. Called with a newline buffered and
    /// no batch in the output thread's hands, so nothing can overtake them.
    fn write_direct(&self, p: &mut Pending) {
        let Some(fd) = &self.shared.direct else {
            return;
        };
        match write_nowait(fd, &p.buf) {
            Ok(n) => {
                if n > 0 {
                    p.last_out = Some(Instant::now());
                }
                p.buf.drain(..n.min(p.buf.len()));
                if p.buf.is_empty() {
                    p.newline = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // No RWF_NOWAIT here (a terminal: EOPNOTSUPP), or the output
                // failed (EPIPE): the thread writes from now on, and reports
                // a failure as before.
                log::debug!("serial output: the vCPU stops writing lines itself: {e}");
                p.direct = false;
            }
        }
    }
}

/// Lets a reader just woken by a write run now if it waits for this CPU
/// (see the module's notes); returns at once when nothing else waits.
fn hand_over_cpu() {
    // SAFETY: sched_yield(2) takes no arguments and touches no memory.
    unsafe { libc::sched_yield() };
}

impl Write for AsyncOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut p = self.shared.lock();
        if p.failed {
            return Err(io::Error::other("serial output failed"));
        }
        if p.buf.len() + data.len() > self.shared.cap {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "serial output buffer full",
            ));
        }
        let was_empty = p.buf.is_empty();
        // Bytes after a quiet spell go out at once (Nagle's rule): the
        // first output of a guest that was silent, or had just moved here,
        // waits neither for its newline nor for the batch delay. The rest
        // of its line gathers as usual.
        let quiet = was_empty && !p.writing && p.last_out.is_none_or(|t| t.elapsed() >= self.shared.delay);
        let line_done = data.contains(&b'\n');
        p.buf.extend(data);
        if was_empty {
            p.batches += 1;
        }
        p.newline |= line_done || quiet;
        if (line_done || quiet) && p.direct && !p.writing {
            self.write_direct(&mut p);
            if p.buf.is_empty() {
                drop(p);
                hand_over_cpu();
                return Ok(data.len());
            }
        }
        if (was_empty && !p.writing) || line_done || quiet {
            self.shared.cond.notify_all();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Never waits: the output thread writes as soon as bytes arrive.
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    /// A writer into shared memory, for tests of the output (here and in
    /// `serial.rs`).
    #[derive(Clone, Default)]
    pub(crate) struct SharedBuf(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    /// A pipe: (read end, non-blocking; write end).
    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills both ints with new fds, owned from here on.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        // SAFETY: fresh fds from pipe2, owned by nothing else.
        unsafe { (std::fs::File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn read_now(r: &mut std::fs::File) -> Vec<u8> {
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while let Ok(n) = r.read(&mut b) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&b[..n]);
        }
        got
    }

    /// A complete line is written at once, however long unfinished lines
    /// may wait; an unfinished line waits for its newline (or the delay).
    #[test]
    fn a_line_goes_out_without_waiting_for_the_batch_delay() {
        let got = SharedBuf::default();
        let mut out = AsyncOutput::spawn_with_delay(Box::new(got.clone()), 1024, WEEK, None).unwrap();
        // (The first output ever goes out at once: see the quiet-spell test.)
        out.write_all(b"first\n").unwrap();
        assert!(out.drain(Duration::from_secs(10)));
        out.write_all(b"partial").unwrap();
        assert!(
            !out.drain(Duration::from_millis(50)),
            "an unfinished line was written before its newline or the delay"
        );
        assert_eq!(&*got.0.lock().unwrap(), b"first\n");
        out.write_all(b" line\n").unwrap();
        assert!(
            out.drain(Duration::from_secs(10)),
            "a complete line waited for the batch delay"
        );
        assert_eq!(&*got.0.lock().unwrap(), b"first\npartial line\n");
        // A flush (a pause) writes an unfinished line without the delay.
        out.write_all(b"half").unwrap();
        assert!(
            out.flush_now(Duration::from_secs(10)),
            "a flush waited for the batch delay"
        );
        assert_eq!(&*got.0.lock().unwrap(), b"first\npartial line\nhalf");
        // Closing writes what is left, newline or not.
        out.write_all(b"tail").unwrap();
        out.close();
        assert!(out.drain(Duration::from_secs(10)));
        assert_eq!(&*got.0.lock().unwrap(), b"first\npartial line\nhalftail");
    }

    /// With a direct fd (here a pipe apart from the thread's sink, to tell
    /// the two paths apart), a complete line is in the pipe when `write`
    /// returns; an unfinished line is the thread's.
    #[test]
    fn the_writer_writes_complete_lines_itself() {
        let (mut r, w) = pipe();
        let thread = SharedBuf::default();
        let mut out = AsyncOutput::spawn_with_delay(Box::new(thread.clone()), 1024, WEEK, Some(w)).unwrap();
        out.write_all(b"zero\n").unwrap();
        assert_eq!(read_now(&mut r), b"zero\n");
        out.write_all(b"one ").unwrap();
        assert!(read_now(&mut r).is_empty(), "an unfinished line went out");
        out.write_all(b"line\n").unwrap();
        assert_eq!(
            read_now(&mut r),
            b"one line\n",
            "the line was not written at once"
        );
        out.write_all(b"two\nthr").unwrap();
        assert_eq!(
            read_now(&mut r),
            b"two\nthr",
            "everything buffered goes with a line"
        );
        out.write_all(b"ee").unwrap();
        assert!(out.flush_now(Duration::from_secs(10)));
        assert_eq!(
            &*thread.0.lock().unwrap(),
            b"ee",
            "the thread writes an unfinished line"
        );
        assert!(read_now(&mut r).is_empty());
    }

    /// Nagle's rule: bytes after a quiet spell (the batch delay without
    /// output, or none yet) go out at once, from the writer when it writes
    /// itself, else from the thread; the rest of their line gathers.
    #[test]
    fn bytes_after_a_quiet_spell_go_out_at_once() {
        // Long enough that no scheduling delay between two writes below
        // makes a quiet spell of it.
        let delay = Duration::from_millis(300);
        let (mut r, w) = pipe();
        let thread = SharedBuf::default();
        let mut out = AsyncOutput::spawn_with_delay(Box::new(thread.clone()), 1024, delay, Some(w)).unwrap();
        out.write_all(b"t").unwrap();
        assert_eq!(read_now(&mut r), b"t", "the first output waited");
        out.write_all(b" 01").unwrap();
        assert!(
            read_now(&mut r).is_empty(),
            "the rest of the line went out at once"
        );
        out.write_all(b"\n").unwrap();
        assert_eq!(read_now(&mut r), b" 01\n");
        // The quiet spell itself: time has to pass.
        std::thread::sleep(delay);
        out.write_all(b"t").unwrap();
        assert_eq!(read_now(&mut r), b"t", "a byte after a quiet spell waited");
        assert!(thread.0.lock().unwrap().is_empty());
        // Without the writer's own writes, the thread writes it at once.
        let got = SharedBuf::default();
        let mut out = AsyncOutput::spawn_with_delay(Box::new(got.clone()), 1024, WEEK, None).unwrap();
        out.write_all(b"t").unwrap();
        assert!(
            out.drain(Duration::from_secs(10)),
            "the thread waited for the delay"
        );
        assert_eq!(&*got.0.lock().unwrap(), b"t");
    }

    /// A full pipe never blocks the writer: what does not fit stays for the
    /// thread, in order.
    #[test]
    fn a_full_pipe_leaves_the_line_to_the_thread() {
        let (mut r, w) = pipe();
        // Fill the pipe.
        let fill = vec![b'x'; 4096];
        let mut filled = 0usize;
        loop {
            // SAFETY: a plain write of a live buffer to our own pipe fd.
            let n = unsafe { libc::write(w.as_raw_fd(), fill.as_ptr().cast(), fill.len()) };
            if n <= 0 {
                break;
            }
            filled += n as usize;
        }
        assert!(filled > 0);
        let thread = SharedBuf::default();
        let mut out = AsyncOutput::spawn_with_delay(Box::new(thread.clone()), 1024, WEEK, Some(w)).unwrap();
        let t = Instant::now();
        out.write_all(b"late line\n").unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the writer waited for the pipe"
        );
        assert!(out.drain(Duration::from_secs(10)));
        assert_eq!(&*thread.0.lock().unwrap(), b"late line\n");
        assert_eq!(
            read_now(&mut r).len(),
            filled,
            "nothing was added to the full pipe"
        );
    }

    /// An output without RWF_NOWAIT (here a terminal: EOPNOTSUPP) falls
    /// back to the thread for good.
    #[test]
    fn an_output_without_nowait_writes_are_the_threads() {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty fills both ints with new fds (owned from here on);
        // the null name, termios and winsize pointers are allowed.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: fresh fds from openpty, owned by nothing else.
        let (_master, tty) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let thread = SharedBuf::default();
        let mut out = AsyncOutput::spawn_with_delay(Box::new(thread.clone()), 1024, WEEK, Some(tty)).unwrap();
        out.write_all(b"a\n").unwrap();
        out.write_all(b"b\n").unwrap();
        assert!(out.drain(Duration::from_secs(10)));
        assert_eq!(&*thread.0.lock().unwrap(), b"a\nb\n");
        assert!(!out.shared.lock().direct);
    }
}
