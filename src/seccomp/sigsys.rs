//! The SIGSYS report: when a filter traps a call, one line naming the thread
//! and the system call, then exit 159. Runs in a signal handler, so it only
//! formats into fixed buffers and calls `write` and `_exit`.

use super::{named_calls, SeccompError, Sys, ThreadKind, EXIT_CODE};
use std::cell::Cell;

/// Bytes of the thread name the SIGSYS line shows (Linux itself keeps 15).
pub(crate) const NAME_LEN: usize = 16;

thread_local! {
    /// This thread's name, for the SIGSYS handler (which may not allocate).
    /// A const-initialised `Copy` cell: reading it is a plain TLS load.
    static THREAD_NAME: Cell<([u8; NAME_LEN], usize)> = const { Cell::new(([0; NAME_LEN], 0)) };
}

/// This thread's name as remembered for the signal reporters (empty if the
/// thread never installed a filter); safe to call in a signal handler.
pub(crate) fn thread_name() -> ([u8; NAME_LEN], usize) {
    THREAD_NAME.with(|n| n.get())
}

pub(crate) fn remember_thread_name(kind: ThreadKind) {
    let current = std::thread::current();
    let name = current.name().unwrap_or(kind.name()).as_bytes();
    let mut buf = [0u8; NAME_LEN];
    let len = name.len().min(NAME_LEN);
    buf[..len].copy_from_slice(&name[..len]);
    THREAD_NAME.with(|n| n.set((buf, len)));
}

/// The SIGSYS part of `siginfo_t` on 64-bit Linux (`_sigsys` in
/// `<asm-generic/siginfo.h>`; the `libc` crate has no accessor for it).
#[repr(C)]
#[allow(dead_code)]
pub(super) struct SigsysInfo {
    si_signo: libc::c_int,
    si_errno: libc::c_int,
    si_code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    pub(super) syscall: libc::c_int,
    arch: libc::c_uint,
}

// seccompiler supports x86_64, aarch64 and riscv64 only: all 64-bit, where
// the union starts at offset 16.
const _: () = assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<libc::siginfo_t>());

/// A fixed buffer the handler formats into without allocating.
pub(crate) struct Line {
    pub(crate) buf: [u8; 512],
    pub(crate) len: usize,
}

impl Line {
    /// An empty line.
    pub(crate) const fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    pub(crate) fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    /// `0x` and `n` in lowercase hex.
    pub(crate) fn push_hex(&mut self, n: u64) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push(b"0x");
        self.push(&digits[i..]);
    }

    /// Writes the line to stderr (async-signal-safe).
    pub(crate) fn write_stderr(&self) {
        // SAFETY: write(2) is async-signal-safe and in every filter; the
        // buffer lives in `self` and `len` is within it.
        unsafe { libc::write(2, self.buf.as_ptr() as *const libc::c_void, self.len) };
    }

    pub(crate) fn push_decimal(&mut self, n: i64) {
        if n < 0 {
            self.push(b"-");
        }
        let mut v = n.unsigned_abs();
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The syscall's name if it is one this module lists.
pub(super) fn syscall_name(nr: i64) -> Option<&'static [u8]> {
    named_calls().find(|s| s.nr == nr).map(Sys::short)
}

/// The SIGSYS line for thread `thread` and syscall `nr`.
pub(super) fn message(thread: &[u8], nr: i64) -> Line {
    let mut line = Line::new();
    line.push(b"berth: seccomp: thread ");
    line.push(if thread.is_empty() { b"?" } else { thread });
    line.push(b" made a forbidden system call ");
    line.push_decimal(nr);
    line.push(b" (");
    line.push(syscall_name(nr).unwrap_or(b"unknown"));
    line.push(b")\n");
    line
}

extern "C" fn sigsys_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let nr = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a valid siginfo_t (SA_SIGINFO); for a
        // seccomp SIGSYS its union is `_sigsys`, laid out as SigsysInfo, which
        // is no larger than siginfo_t.
        i64::from(unsafe { (*(info as *const SigsysInfo)).syscall })
    };
    let (name, len) = thread_name();
    message(&name[..len.min(NAME_LEN)], nr).write_stderr();
    // SAFETY: _exit(2) is async-signal-safe and in every filter.
    unsafe { libc::_exit(EXIT_CODE) }
}

/// Installs the process-wide SIGSYS handler: it prints
/// `berth: seccomp: thread <name> made a forbidden system call <nr> (<name>)`
/// to stderr and ends the process with exit code 159 ([`EXIT_CODE`]). It uses
/// only `write` and `_exit`, so it is async-signal-safe. Call it once, before
/// any thread installs a filter.
pub fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: an all-zero sigaction is a valid value (no flags, empty mask)
    // that is filled in below.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = sigsys_handler as *const () as libc::sighandler_t;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `act.sa_mask` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: `act` is fully initialised, the handler is an extern "C" fn with
    // the SA_SIGINFO signature, and the old action is not asked for.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}
