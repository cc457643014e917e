//! Seccomp-BPF allow-lists, one per kind of berth thread.
//!
//! Every thread that runs while the guest runs installs the filter of its
//! kind at its top with [`install`]: a system call outside the thread's
//! allow-list does not run; the kernel raises SIGSYS in that thread instead
//! (the filters' default action is `Trap`), and the handler from
//! [`install_sigsys_handler`] prints one line naming the thread and the call,
//! then ends the process with exit code 159 (128 + SIGSYS).
//!
//! The lists were measured with `strace -f` on the probe configurations
//! (kernel and split irqchip, 2 and 4 vCPUs, `--stats`, `--disable-cap
//! SIGNAL_MSI`, `BERTH_LOG=trace`, serial output to stdout, a file and
//! null), faults, timeouts, injected panics and SIGINT/SIGTERM/SIGHUP on a
//! spinning guest, and then widened by the calls
//! that any Rust thread may make in its lifetime (allocation, locks, sleeps,
//! logging, panics, thread exit). Every kind may make these calls:
//!
//! - allocation: `brk`, `mmap`, `munmap`, `mremap`, `mprotect`, `madvise`;
//! - locks, channels, joins: `futex`, `sched_yield`;
//! - clocks and sleeps: `clock_gettime`, `clock_nanosleep`, `nanosleep`, `restart_syscall`;
//! - signals and thread exit: `rt_sigreturn`, `rt_sigprocmask`, `sigaltstack`, `exit`, `exit_group`;
//! - `getrandom` (HashMap keys), `getpid`, `gettid`, `write` (stderr, eventfds, serial output),
//!   `close` (dropped files);
//! - `tgkill` only to this process (vCPU kicks, `abort`);
//! - `fcntl` only with `F_GETFD` (debug builds check that an fd is open before closing it).
//!
//! and each kind adds its own:
//!
//! | kind | own calls |
//! | --- | --- |
//! | [`ThreadKind::Vcpu`] | `ioctl` with one of nine KVM requests only (KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_TRANSLATE, KVM_GET_MP_STATE on the vCPU fd; KVM_IRQ_LINE, KVM_IRQ_LINE_STATUS, KVM_SET_GSI_ROUTING, KVM_SIGNAL_MSI on the VM fd) |
//! | [`ThreadKind::SerialOut`] | none |
//! | [`ThreadKind::Signals`] | `recvfrom`, `sendto` with flags `MSG_DONTWAIT` and no address (a signal-hook iterator's self-pipe) |
//! | [`ThreadKind::Main`] | none |
//!
//! Filters are per thread and inherited by threads created afterwards, so
//! the main thread installs [`ThreadKind::Main`] only after it has started
//! every other thread, and only when it will not build another VM (a reset
//! with `on_reboot = "restart"` rebuilds the machine: `openat`, `ioctl`,
//! `clone3`... which `Main` forbids). [`install_sigsys_handler`] runs first,
//! before any thread installs a filter.

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

/// `&[Sys]` from `libc::SYS_*` constant names.
macro_rules! sys {
    ($($n:ident),* $(,)?) => {
        &[$(Sys { nr: libc::$n, name: stringify!($n) }),*]
    };
}

/// The process exit code after a forbidden system call: 128 + SIGSYS.
pub const EXIT_CODE: i32 = 128 + libc::SIGSYS;

/// Which allow-list a thread gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread: KVM_RUN, register reads for reports, device emulation
    /// (VM-fd interrupt ioctls, eventfd writes).
    Vcpu,
    /// The `serial-out` thread: writes guest serial output to stdout or a file.
    SerialOut,
    /// A thread that waits for SIGINT/SIGTERM/SIGHUP on a signal-hook
    /// iterator (berth now catches them with a flag the main thread polls, so
    /// no thread uses this kind today). A signal-hook iterator's handler also
    /// calls `sendto` on whichever thread the signal hits: bringing one back
    /// means allowing that call in every kind.
    Signals,
    /// The main thread once every other thread runs: waits, kicks vCPUs,
    /// joins, reports, exits.
    Main,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::Vcpu,
        ThreadKind::SerialOut,
        ThreadKind::Signals,
        ThreadKind::Main,
    ];

    /// The kind's name, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::SerialOut => "serial-out",
            ThreadKind::Signals => "signals",
            ThreadKind::Main => "main",
        }
    }

    /// The calls this kind makes beyond `THREAD_LIFETIME` (unconditional ones).
    fn own_calls(self) -> &'static [Sys] {
        match self {
            // ioctl, with its request checked, is added by `rules`.
            ThreadKind::Vcpu | ThreadKind::SerialOut | ThreadKind::Main => &[],
            // signal-hook's self-pipe (sendto, checked, is added by `rules`).
            ThreadKind::Signals => sys![SYS_recvfrom],
        }
    }
}

impl fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Seccomp failures.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The allow-list could not be compiled to BPF (e.g. an unsupported architecture).
    #[error("seccomp: cannot compile the filter for the {kind} thread: {source}")]
    Compile {
        /// Which filter.
        kind: ThreadKind,
        /// What seccompiler said.
        #[source]
        source: BackendError,
    },
    /// The kernel refused the filter (prctl(PR_SET_NO_NEW_PRIVS) or seccomp(2) failed).
    #[error("seccomp: cannot install the filter for the {kind} thread: {source}")]
    Install {
        /// Which filter.
        kind: ThreadKind,
        /// What seccompiler said.
        #[source]
        source: seccompiler::Error,
    },
    /// sigaction(SIGSYS) failed.
    #[error("seccomp: cannot install the SIGSYS handler: {0}")]
    Handler(#[source] std::io::Error),
}

/// A system call: its number and its `libc` constant's name (`SYS_...`).
#[derive(Clone, Copy, Debug)]
struct Sys {
    nr: i64,
    name: &'static str,
}

impl Sys {
    /// The name without the `SYS_` prefix.
    fn short(&self) -> &'static [u8] {
        self.name.as_bytes().get(4..).unwrap_or(b"?")
    }
}

/// Calls every berth thread may make once its filter is installed: what a
/// Rust thread needs to allocate, lock, sleep, log, panic, be signalled and
/// end. `rules` adds the calls of [`CHECKED`] with their argument checks.
const THREAD_LIFETIME: &[Sys] = sys![
    // Allocation: malloc arenas and large blocks, freeing thread stacks.
    SYS_brk,
    SYS_mmap,
    SYS_munmap,
    SYS_mremap,
    SYS_mprotect,
    SYS_madvise,
    // Mutexes, condvars, channels, joins; spin loops.
    SYS_futex,
    SYS_sched_yield,
    // Clocks (normally the vDSO; these are its fallbacks) and thread::sleep.
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_nanosleep,
    // A sleep or wait interrupted by a signal handler resumes through this.
    SYS_restart_syscall,
    // Signal handlers (the vCPU kick, signal-hook's) and thread exit.
    SYS_rt_sigreturn,
    SYS_rt_sigprocmask,
    SYS_sigaltstack,
    // HashMap keys on first use in a thread.
    SYS_getrandom,
    // Dropping files: the VcpuFd when a vCPU thread ends, signal-hook's
    // socket, the VM's fds and eventfds after the run, a sink if its thread ends.
    SYS_close,
    // pthread_kill and abort.
    SYS_getpid,
    SYS_gettid,
    // stderr (logging, panic messages, this module's SIGSYS line), eventfds, serial output.
    SYS_write,
    // Thread and process exit (the SIGSYS handler's _exit included).
    SYS_exit,
    SYS_exit_group,
];

/// Calls allowed only with an argument check, in every kind unless noted:
/// `tgkill` to this process (vCPU kicks, `abort`), `fcntl` with `F_GETFD`
/// (std's debug-build check before closing a file), in vCPU threads only
/// `ioctl` with one of [`vcpu_ioctls`], in a signals thread only `sendto`
/// with flags `MSG_DONTWAIT` and no address.
const CHECKED: &[Sys] = sys![SYS_sendto, SYS_tgkill, SYS_fcntl, SYS_ioctl];

/// Well-known calls no filter allows, so the SIGSYS line can name them.
const FORBIDDEN_NAMES: &[Sys] = sys![
    SYS_getppid,
    SYS_read,
    SYS_readv,
    SYS_writev,
    SYS_pread64,
    SYS_pwrite64,
    SYS_open,
    SYS_openat,
    SYS_openat2,
    SYS_stat,
    SYS_fstat,
    SYS_lstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_lseek,
    SYS_access,
    SYS_readlink,
    SYS_unlink,
    SYS_unlinkat,
    SYS_rename,
    SYS_mkdir,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_pipe,
    SYS_pipe2,
    SYS_eventfd2,
    SYS_poll,
    SYS_ppoll,
    SYS_select,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_wait,
    SYS_epoll_pwait,
    SYS_socket,
    SYS_socketpair,
    SYS_connect,
    SYS_bind,
    SYS_listen,
    SYS_accept,
    SYS_accept4,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_clone,
    SYS_clone3,
    SYS_fork,
    SYS_vfork,
    SYS_execve,
    SYS_execveat,
    SYS_kill,
    SYS_tkill,
    SYS_wait4,
    SYS_ptrace,
    SYS_prctl,
    SYS_arch_prctl,
    SYS_seccomp,
    SYS_rt_sigaction,
    SYS_set_robust_list,
    SYS_rseq,
    SYS_sched_getaffinity,
    SYS_prlimit64,
    SYS_setrlimit,
    SYS_setuid,
    SYS_setgid,
    SYS_mount,
    SYS_umount2,
    SYS_chroot,
    SYS_pivot_root,
    SYS_unshare,
    SYS_setns,
    SYS_memfd_create,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_io_uring_setup,
    SYS_uname,
];

/// The KVM ioctl requests of a vCPU thread, computed the way kvm-ioctls
/// computes them (its `kvm_ioctls` module is private). The unit tests compare
/// them to the numbers in `<linux/kvm.h>`.
mod kvm_nr {
    #![allow(missing_docs)]
    use kvm_bindings::{
        kvm_irq_level, kvm_irq_routing, kvm_mp_state, kvm_msi, kvm_regs, kvm_sregs, kvm_translation, KVMIO,
    };
    // On the vCPU fd: the run loop and the state read for reports.
    vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    vmm_sys_util::ioctl_iowr_nr!(KVM_TRANSLATE, KVMIO, 0x85, kvm_translation);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
    // On the VM fd: interrupts raised by device emulation.
    vmm_sys_util::ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_irq_level);
    vmm_sys_util::ioctl_iowr_nr!(KVM_IRQ_LINE_STATUS, KVMIO, 0x67, kvm_irq_level);
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
    vmm_sys_util::ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_msi);
}

/// The only ioctl requests a vCPU thread may make (name, request).
fn vcpu_ioctls() -> [(&'static str, u64); 9] {
    [
        ("KVM_RUN", kvm_nr::KVM_RUN()),
        ("KVM_GET_REGS", kvm_nr::KVM_GET_REGS()),
        ("KVM_GET_SREGS", kvm_nr::KVM_GET_SREGS()),
        ("KVM_TRANSLATE", kvm_nr::KVM_TRANSLATE()),
        ("KVM_GET_MP_STATE", kvm_nr::KVM_GET_MP_STATE()),
        ("KVM_IRQ_LINE", kvm_nr::KVM_IRQ_LINE()),
        ("KVM_IRQ_LINE_STATUS", kvm_nr::KVM_IRQ_LINE_STATUS()),
        ("KVM_SET_GSI_ROUTING", kvm_nr::KVM_SET_GSI_ROUTING()),
        ("KVM_SIGNAL_MSI", kvm_nr::KVM_SIGNAL_MSI()),
    ]
}

fn cond(
    kind: ThreadKind,
    arg: u8,
    len: SeccompCmpArgLen,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, SeccompCmpOp::Eq, value)
        .map_err(|source| SeccompError::Compile { kind, source })
}

fn rule(kind: ThreadKind, conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|source| SeccompError::Compile { kind, source })
}

/// The kind's rules: syscall number → rules (empty: allowed whatever the arguments).
fn rules(kind: ThreadKind, pid: u32) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for s in THREAD_LIFETIME.iter().chain(kind.own_calls()) {
        map.insert(s.nr, Vec::new());
    }
    // tgkill(this process, any thread, any signal).
    map.insert(
        libc::SYS_tgkill,
        vec![rule(
            kind,
            vec![cond(kind, 0, SeccompCmpArgLen::Dword, u64::from(pid))?],
        )?],
    );
    // fcntl(fd, F_GETFD): std's debug-build check in OwnedFd::drop.
    map.insert(
        libc::SYS_fcntl,
        vec![rule(
            kind,
            vec![cond(kind, 1, SeccompCmpArgLen::Dword, libc::F_GETFD as u64)?],
        )?],
    );
    if kind == ThreadKind::Signals {
        // sendto(fd, buf, len, MSG_DONTWAIT, NULL, 0): signal-hook's wake-up.
        map.insert(
            libc::SYS_sendto,
            vec![rule(
                kind,
                vec![
                    cond(kind, 3, SeccompCmpArgLen::Dword, libc::MSG_DONTWAIT as u64)?,
                    cond(kind, 4, SeccompCmpArgLen::Qword, 0)?,
                ],
            )?],
        );
    }
    if kind == ThreadKind::Vcpu {
        // The kernel reads the request as an unsigned int: compare 32 bits.
        let mut chain = Vec::new();
        for (_, req) in vcpu_ioctls() {
            chain.push(rule(kind, vec![cond(kind, 1, SeccompCmpArgLen::Dword, req)?])?);
        }
        map.insert(libc::SYS_ioctl, chain);
    }
    Ok(map)
}

/// Compiles the kind's filter for this process (`tgkill` is checked against `pid`).
fn program(kind: ThreadKind, pid: u32) -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|source| SeccompError::Compile { kind, source })?;
    let filter = SeccompFilter::new(rules(kind, pid)?, SeccompAction::Trap, SeccompAction::Allow, arch)
        .map_err(|source| SeccompError::Compile { kind, source })?;
    BpfProgram::try_from(filter).map_err(|source| SeccompError::Compile { kind, source })
}

/// Bytes of the thread name the SIGSYS line shows (Linux itself keeps 15).
const NAME_LEN: usize = 16;

thread_local! {
    /// This thread's name, for the SIGSYS handler (which may not allocate).
    /// A const-initialised `Copy` cell: reading it is a plain TLS load.
    static THREAD_NAME: Cell<([u8; NAME_LEN], usize)> = const { Cell::new(([0; NAME_LEN], 0)) };
}

fn remember_thread_name(kind: ThreadKind) {
    let current = std::thread::current();
    let name = current.name().unwrap_or(kind.name()).as_bytes();
    let mut buf = [0u8; NAME_LEN];
    let len = name.len().min(NAME_LEN);
    buf[..len].copy_from_slice(&name[..len]);
    THREAD_NAME.with(|n| n.set((buf, len)));
}

static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--no-seccomp`: every later [`install`] does nothing (for debugging with
/// strace, gdb or extra logging).
pub fn disable() {
    DISABLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Installs the allow-list filter of `kind` on the calling thread.
///
/// Seccomp filters are per thread and inherited by threads created
/// afterwards (they stack: a call must pass every filter). So each thread
/// installs its own at its top, and the main thread installs
/// [`ThreadKind::Main`] last, after spawning every other thread, and only
/// when it will not build another VM. Call [`install_sigsys_handler`] before
/// the first `install`, or a forbidden call kills the process with the
/// default SIGSYS action (a core dump and no message).
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    if DISABLED.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let prog = program(kind, std::process::id())?;
    remember_thread_name(kind);
    seccompiler::apply_filter(&prog).map_err(|source| SeccompError::Install { kind, source })
}

/// The SIGSYS part of `siginfo_t` on 64-bit Linux (`_sigsys` in
/// `<asm-generic/siginfo.h>`; the `libc` crate has no accessor for it).
#[repr(C)]
#[allow(dead_code)]
struct SigsysInfo {
    si_signo: libc::c_int,
    si_errno: libc::c_int,
    si_code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

// seccompiler supports x86_64, aarch64 and riscv64 only: all 64-bit, where
// the union starts at offset 16.
const _: () = assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<libc::siginfo_t>());

/// A fixed buffer the handler formats into without allocating.
struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn push_decimal(&mut self, n: i64) {
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
fn syscall_name(nr: i64) -> Option<&'static [u8]> {
    THREAD_LIFETIME
        .iter()
        .chain(CHECKED)
        .chain(ThreadKind::ALL.iter().flat_map(|k| k.own_calls()))
        .chain(FORBIDDEN_NAMES)
        .find(|s| s.nr == nr)
        .map(Sys::short)
}

/// The SIGSYS line for thread `thread` and syscall `nr`.
fn message(thread: &[u8], nr: i64) -> Line {
    let mut line = Line {
        buf: [0; 192],
        len: 0,
    };
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
    let (name, len) = THREAD_NAME.with(|n| n.get());
    let line = message(&name[..len.min(NAME_LEN)], nr);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer lives on
    // this stack frame and `len` is within it. Both calls are in every filter.
    unsafe {
        libc::write(2, line.buf.as_ptr() as *const libc::c_void, line.len);
        libc::_exit(EXIT_CODE);
    }
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

/// Test-only fault injection: when the environment variable
/// `BERTH_TEST_SYSCALL` names the current thread (e.g. `vcpu0`,
/// `serial-out`, `signals`, `main`), makes a system call that no filter
/// allows (`getppid`), so the thread's filter traps it. Without a filter the
/// call just succeeds. Used by the integration tests to prove a forbidden
/// call ends berth with exit code 159 and a message naming the thread.
pub fn test_forbidden_syscall_here() {
    if let Some(want) = std::env::var_os("BERTH_TEST_SYSCALL") {
        let current = std::thread::current();
        if want.to_str() == Some(current.name().unwrap_or("main")) {
            // SAFETY: getppid takes no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::fd::AsRawFd;
    use std::process::{Command, Output};

    /// The environment variable that turns [`child`] into a scenario.
    const CHILD_ENV: &str = "BERTH_SECCOMP_TEST_CHILD";

    fn all_names() -> Vec<Sys> {
        THREAD_LIFETIME
            .iter()
            .chain(CHECKED)
            .chain(ThreadKind::ALL.iter().flat_map(|k| k.own_calls()))
            .chain(FORBIDDEN_NAMES)
            .copied()
            .collect()
    }

    #[test]
    fn every_kind_compiles() {
        for kind in ThreadKind::ALL {
            let prog = program(kind, std::process::id()).unwrap();
            assert!(
                prog.len() > 10 && prog.len() < 4096,
                "{kind}: {} instructions",
                prog.len()
            );
        }
    }

    #[test]
    fn lists_are_consistent() {
        let lifetime: BTreeSet<i64> = THREAD_LIFETIME.iter().map(|s| s.nr).collect();
        assert_eq!(
            lifetime.len(),
            THREAD_LIFETIME.len(),
            "duplicate in THREAD_LIFETIME"
        );
        let checked: BTreeSet<i64> = CHECKED.iter().map(|s| s.nr).collect();
        for kind in ThreadKind::ALL {
            let rules = rules(kind, 1).unwrap();
            for s in kind.own_calls() {
                assert!(
                    !lifetime.contains(&s.nr),
                    "{kind}: {} is already in THREAD_LIFETIME",
                    s.name
                );
                assert!(
                    !checked.contains(&s.nr),
                    "{kind}: {} must keep its argument check",
                    s.name
                );
            }
            // The SIGSYS handler's own calls must never trap.
            for nr in [libc::SYS_write, libc::SYS_exit_group] {
                assert_eq!(rules.get(&nr).map(Vec::len), Some(0), "{kind}: syscall {nr}");
            }
            // The test hook's call is allowed nowhere, nor are a few others.
            for nr in [
                libc::SYS_getppid,
                libc::SYS_openat,
                libc::SYS_execve,
                libc::SYS_clone3,
                libc::SYS_socket,
            ] {
                assert!(!rules.contains_key(&nr), "{kind} allows syscall {nr}");
            }
            assert_eq!(
                rules.contains_key(&libc::SYS_ioctl),
                kind == ThreadKind::Vcpu,
                "{kind}: ioctl"
            );
            assert_eq!(
                rules.contains_key(&libc::SYS_sendto),
                kind == ThreadKind::Signals,
                "{kind}: sendto"
            );
        }
        // Names: one name per number, and every forbidden name really is forbidden.
        let names = all_names();
        for a in &names {
            assert!(
                names.iter().all(|b| a.nr != b.nr || a.name == b.name),
                "{} has two names",
                a.name
            );
        }
        let forbidden: BTreeSet<i64> = FORBIDDEN_NAMES.iter().map(|s| s.nr).collect();
        assert_eq!(
            forbidden.len(),
            FORBIDDEN_NAMES.len(),
            "duplicate in FORBIDDEN_NAMES"
        );
        for s in FORBIDDEN_NAMES {
            for kind in ThreadKind::ALL {
                assert!(
                    !rules(kind, 1).unwrap().contains_key(&s.nr),
                    "{kind} allows {}",
                    s.name
                );
            }
        }
        assert!(names.iter().all(|s| s.name.starts_with("SYS_")));
    }

    #[test]
    fn kvm_request_numbers_match_linux_headers() {
        // From <linux/kvm.h> on x86_64 (printed by a C program with the
        // macros); the sizes of kvm_regs/kvm_sregs differ on other arches.
        #[cfg(target_arch = "x86_64")]
        let want = [
            ("KVM_RUN", 0xae80u64),
            ("KVM_GET_REGS", 0x8090_ae81),
            ("KVM_GET_SREGS", 0x8138_ae83),
            ("KVM_TRANSLATE", 0xc018_ae85),
            ("KVM_GET_MP_STATE", 0x8004_ae98),
            ("KVM_IRQ_LINE", 0x4008_ae61),
            ("KVM_IRQ_LINE_STATUS", 0xc008_ae67),
            ("KVM_SET_GSI_ROUTING", 0x4008_ae6a),
            ("KVM_SIGNAL_MSI", 0x4020_aea5),
        ];
        #[cfg(target_arch = "x86_64")]
        assert_eq!(vcpu_ioctls(), want);
        // Every request fits the 32 bits the filter compares.
        assert!(vcpu_ioctls().iter().all(|(_, r)| *r <= u64::from(u32::MAX)));
    }

    #[test]
    fn message_format() {
        // `_sigsys._syscall` sits at offset 24 of siginfo_t on 64-bit Linux.
        assert_eq!(std::mem::offset_of!(SigsysInfo, syscall), 24);
        let l = message(b"vcpu0", libc::SYS_getppid);
        assert_eq!(
            std::str::from_utf8(&l.buf[..l.len]).unwrap(),
            format!(
                "berth: seccomp: thread vcpu0 made a forbidden system call {} (getppid)\n",
                libc::SYS_getppid
            )
        );
        let l = message(b"", 4095);
        assert_eq!(
            std::str::from_utf8(&l.buf[..l.len]).unwrap(),
            "berth: seccomp: thread ? made a forbidden system call 4095 (unknown)\n"
        );
        let mut l = Line {
            buf: [0; 192],
            len: 0,
        };
        for n in [0, 7, -12, i64::MAX, i64::MIN] {
            l.len = 0;
            l.push_decimal(n);
            assert_eq!(std::str::from_utf8(&l.buf[..l.len]).unwrap(), n.to_string());
        }
        // An overlong line is cut, never overrun.
        l.len = 0;
        l.push(&[b'x'; 500]);
        assert_eq!(l.len, 192);
    }

    #[test]
    fn errors_name_the_kind() {
        let e = SeccompError::Compile {
            kind: ThreadKind::SerialOut,
            source: BackendError::EmptyRule,
        };
        assert!(e.to_string().contains("serial-out thread"), "{e}");
    }

    /// Runs the [`child`] test in a new process of this test binary with
    /// `scenario`, and returns what it did.
    fn run_child(scenario: &str, extra_env: &[(&str, &str)]) -> Output {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            "seccomp::tests::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, scenario)
        .env_remove("BERTH_TEST_SYSCALL")
        // A backtrace would open files, which no filter allows.
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn forbidden_line(thread: &str) -> String {
        format!(
            "berth: seccomp: thread {thread} made a forbidden system call {} (getppid)",
            libc::SYS_getppid
        )
    }

    #[test]
    fn vcpu_filter_traps_getppid() {
        let o = run_child("getppid", &[]);
        assert_eq!(o.status.code(), Some(EXIT_CODE), "stderr: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&forbidden_line("vcpu0")),
            "stderr: {}",
            stderr(&o)
        );
    }

    #[test]
    fn vcpu_filter_traps_other_ioctls() {
        let o = run_child("ioctl", &[]);
        assert_eq!(o.status.code(), Some(EXIT_CODE), "stderr: {}", stderr(&o));
        let want = format!(
            "thread vcpu1 made a forbidden system call {} (ioctl)",
            libc::SYS_ioctl
        );
        assert!(stderr(&o).contains(&want), "stderr: {}", stderr(&o));
    }

    #[test]
    fn test_hook_traps_in_the_named_thread_only() {
        let o = run_child("hook", &[("BERTH_TEST_SYSCALL", "serial-out")]);
        assert_eq!(o.status.code(), Some(EXIT_CODE), "stderr: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&forbidden_line("serial-out")),
            "stderr: {}",
            stderr(&o)
        );
        // Naming no filtered thread: the hook never fires and the child passes.
        let o = run_child("hook", &[("BERTH_TEST_SYSCALL", "nobody")]);
        assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    }

    #[test]
    fn allowed_calls_succeed_in_every_kind() {
        for kind in ThreadKind::ALL {
            let o = run_child(&format!("allowed-{}", kind.name()), &[]);
            assert_eq!(o.status.code(), Some(0), "{kind}: stderr: {}", stderr(&o));
            assert!(
                stderr(&o).contains(&format!("allowed calls ok in {}", kind.name())),
                "{}",
                stderr(&o)
            );
        }
    }

    /// Spawns a thread named `name` that installs `kind` and runs `body`;
    /// returns what the thread returned.
    fn in_filtered_thread<T: Send + 'static>(
        name: &str,
        kind: ThreadKind,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                install(kind).unwrap();
                body()
            })
            .unwrap()
            .join()
            .unwrap()
    }

    /// What a thread of any kind does in its life: allocate (small and mmap-
    /// sized, grow with mremap), lock, use a channel, sleep, read the clock,
    /// log to stderr, hash, spawn nothing.
    fn thread_life(kind: ThreadKind) {
        let mut v = vec![0u8; 64 << 20];
        v[12345] = 1;
        v.resize(128 << 20, 2);
        let m = std::sync::Mutex::new(v.len());
        *m.lock().unwrap() += 1;
        drop(v);
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(1u32).unwrap();
        assert_eq!(rx.recv_timeout(std::time::Duration::from_millis(5)), Ok(1));
        std::thread::sleep(std::time::Duration::from_millis(2));
        std::thread::yield_now();
        let t = std::time::Instant::now();
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let _ = std::time::SystemTime::now();
        let mut h = std::collections::HashMap::new();
        h.insert(kind.name(), 1);
        // A caught panic unwinds without trapping (the panic message goes to stderr).
        assert!(std::panic::catch_unwind(|| panic!("expected test panic")).is_err());
        eprintln!("allowed calls ok in {}", kind.name());
    }

    /// A child scenario; a no-op unless [`CHILD_ENV`] is set (see [`run_child`]).
    #[test]
    fn child() {
        let Ok(scenario) = std::env::var(CHILD_ENV) else {
            return;
        };
        install_sigsys_handler().unwrap();
        match scenario.as_str() {
            "getppid" => in_filtered_thread("vcpu0", ThreadKind::Vcpu, || {
                // SAFETY: getppid takes no arguments.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }),
            "ioctl" => {
                let stderr = std::io::stderr();
                let fd = stderr.as_raw_fd();
                in_filtered_thread("vcpu1", ThreadKind::Vcpu, move || {
                    let mut ws = [0u16; 4];
                    // SAFETY: TIOCGWINSZ writes one winsize (4 u16) into `ws`.
                    unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, ws.as_mut_ptr()) };
                })
            }
            "hook" => {
                for (name, kind) in [("vcpu0", ThreadKind::Vcpu), ("serial-out", ThreadKind::SerialOut)] {
                    in_filtered_thread(name, kind, test_forbidden_syscall_here);
                }
                // Unfiltered here, so the hook's call would succeed.
                test_forbidden_syscall_here();
            }
            s if s.starts_with("allowed-") => {
                let kind = *ThreadKind::ALL.iter().find(|k| s.ends_with(k.name())).unwrap();
                // Before the filter: an eventfd to write, a file to close.
                let evt = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
                let spare = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
                let pid = std::process::id() as libc::pid_t;
                let name = format!("t-{}", kind.name());
                in_filtered_thread(&name, kind, move || {
                    thread_life(kind);
                    evt.write(1).unwrap();
                    // SAFETY: getpid/gettid take no arguments.
                    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
                    // SAFETY: signal 0 only checks that this thread exists.
                    assert_eq!(unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) }, 0);
                    drop(spare);
                    if kind == ThreadKind::Vcpu {
                        // An allowed request on a non-KVM fd: the filter lets
                        // it through and the kernel answers ENOTTY.
                        let fd = evt.as_raw_fd();
                        // SAFETY: KVM_RUN takes no argument; on an eventfd it fails.
                        let rc = unsafe { libc::ioctl(fd, kvm_nr::KVM_RUN() as _, 0) };
                        assert_eq!(rc, -1);
                        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOTTY));
                    }
                });
                // The filtered thread has ended (exit, stack freed): still alive.
            }
            other => panic!("unknown scenario {other}"),
        }
    }
}
