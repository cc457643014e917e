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
//! | [`ThreadKind::Vcpu`] | `ioctl` with one of twenty-three KVM requests only (KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_TRANSLATE, KVM_GET_MP_STATE, for the S3 wake-up reset KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_MP_STATE, to save a parked vCPU KVM_GET_FPU, _XSAVE, _XCRS, _DEBUGREGS, _LAPIC, _MSRS, _CPUID2, _VCPU_EVENTS, for the gdb stub KVM_SET_GUEST_DEBUG and KVM_SET_FPU on the vCPU fd; KVM_IRQ_LINE, KVM_IRQ_LINE_STATUS, KVM_SET_GSI_ROUTING, KVM_SIGNAL_MSI, and KVM_IRQFD to lower a resampled irq-line, on the VM fd) |
//! | [`ThreadKind::SerialOut`] | none |
//! | [`ThreadKind::RtcTimer`] | `ioctl` with the four interrupt requests on the VM fd only (KVM_IRQ_LINE, KVM_IRQ_LINE_STATUS, KVM_SET_GSI_ROUTING, KVM_SIGNAL_MSI) |
//! | [`ThreadKind::IrqResample`] | `read` (the resample eventfd), `ioctl` with KVM_GET_IRQCHIP only (the IOAPIC's trigger modes) |
//! | [`ThreadKind::Main`] | `ioctl` with the teardown's three KVM requests only (KVM_IRQFD, KVM_IOEVENTFD, KVM_UNREGISTER_COALESCED_MMIO on the VM fd: deassigning) |
//! | [`ThreadKind::Control`] | `poll`, `accept4`, `read`, `recvfrom`, `sendto`, `setsockopt`, `unlink` (the control socket) |
//! | [`ThreadKind::Gdb`] | `poll`, `accept4`, `read`, `recvfrom`, `sendto`, `setsockopt`, `unlink` (the debugger's socket) |
//! | [`ThreadKind::Snapshot`] | the main thread when snapshots are on: files (`openat`, `read`, `pread64` (`/proc/self/pagemap`), `mkdir`, `pwrite64`, `ftruncate`, `fsync`, `rename`, stat calls, `lseek`, `unlinkat`, `rmdir`, `getdents64`, `getcwd`, `readlink`, `fcntl` F_GETFL/F_SETFD), a migration's connection (`socket`, `connect`, `sendto`, `writev`, `recvfrom`, `setsockopt`), `setpriority` (its teardown after the commit) and `ioctl`: the Main kind's three, and KVM_SET_USER_MEMORY_REGION (dirty logging on and off), KVM_GET_IRQCHIP, KVM_GET_PIT2, KVM_GET_CLOCK, KVM_GET_DIRTY_LOG on the VM fd |
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
use std::collections::BTreeMap;
use std::fmt;

mod dispatch;
mod sigsys;

pub use sigsys::install_sigsys_handler;
pub(crate) use sigsys::{remember_thread_name, thread_name, Line, NAME_LEN};

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
    /// The `rtc` thread: raises the RTC's IRQ 8 (VM-fd interrupt ioctls).
    RtcTimer,
    /// The `irq-resample` thread: waits on the resample eventfd, reads the
    /// IOAPIC's trigger modes, re-asserts level lines (`kvm::resample`).
    IrqResample,
    /// The main thread once every other thread runs: waits, kicks vCPUs,
    /// joins, reports, exits.
    Main,
    /// The `control` thread: serves the control socket.
    Control,
    /// The main thread of a run that takes snapshots or reads the dirty log
    /// (`--control`, `--snapshot-at`, `dirty_log`): [`ThreadKind::Main`]
    /// plus writing the snapshot directory and the VM-wide KVM reads.
    Snapshot,
    /// The `gdb` thread (`--gdb`): serves the debugger's connection; the
    /// vCPUs make every KVM call for it.
    Gdb,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 8] = [
        ThreadKind::Vcpu,
        ThreadKind::SerialOut,
        ThreadKind::RtcTimer,
        ThreadKind::IrqResample,
        ThreadKind::Main,
        ThreadKind::Control,
        ThreadKind::Snapshot,
        ThreadKind::Gdb,
    ];

    /// The kind's name, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::SerialOut => "serial-out",
            ThreadKind::RtcTimer => "rtc",
            ThreadKind::IrqResample => "irq-resample",
            ThreadKind::Main => "main",
            ThreadKind::Control => "control",
            ThreadKind::Snapshot => "main",
            ThreadKind::Gdb => "gdb",
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

/// The `control` thread's own calls: wait for and accept clients, read
/// requests, set the reply timeout, remove the socket file at the end.
const CONTROL_CALLS: &[Sys] = sys![
    SYS_poll,
    SYS_accept4,
    SYS_read,
    SYS_recvfrom,
    SYS_sendto,
    SYS_setsockopt,
    SYS_unlink
];

/// The `gdb` thread's own calls: the control thread's, for the same
/// reasons (wait for and accept a debugger, read its packets, set
/// TCP_NODELAY, remove a Unix socket file at the end).
const GDB_CALLS: &[Sys] = CONTROL_CALLS;

/// The snapshot-writing main thread's own calls: create, write and rename
/// the directory and its (sparse) files, read manifests and
/// `/proc/self/pagemap` (untouched pages are skipped), clean up a failed
/// write.
const SNAPSHOT_CALLS: &[Sys] = sys![
    SYS_openat,
    SYS_read,
    SYS_pread64,
    SYS_mkdir,
    SYS_pwrite64,
    SYS_ftruncate,
    SYS_fsync,
    SYS_rename,
    SYS_statx,
    SYS_newfstatat,
    SYS_fstat,
    SYS_lseek,
    SYS_unlinkat,
    SYS_rmdir,
    SYS_getdents64,
    SYS_getcwd,
    SYS_readlink,
    // A live migration's connection (unix or TCP).
    SYS_socket,
    SYS_connect,
    SYS_sendto,
    SYS_recvfrom,
    SYS_setsockopt,
    // A stream section in one write (src/migrate/stream.rs).
    SYS_writev,
    // After a migration's commit: the source's teardown yields the CPU to
    // the guest now running at the target (src/migrate/source.rs).
    SYS_setpriority,
];

/// A vCPU thread's own call: writing a complete serial line to the output
/// itself, never waiting (`pwritev2` with `RWF_NOWAIT`, devices/serial_out.rs).
const VCPU_CALLS: &[Sys] = sys![SYS_pwritev2];

/// The `irq-resample` thread's own call: blocking on the resample eventfd.
const RESAMPLE_CALLS: &[Sys] = sys![SYS_read];

impl ThreadKind {
    /// Calls this kind adds to [`THREAD_LIFETIME`] without argument checks.
    fn own_calls(self) -> &'static [Sys] {
        match self {
            ThreadKind::Control => CONTROL_CALLS,
            ThreadKind::Snapshot => SNAPSHOT_CALLS,
            ThreadKind::IrqResample => RESAMPLE_CALLS,
            ThreadKind::Gdb => GDB_CALLS,
            ThreadKind::Vcpu => VCPU_CALLS,
            _ => &[],
        }
    }
}

/// Calls allowed only with an argument check, in every kind unless noted:
/// `tgkill` to this process (vCPU kicks, `abort`), `fcntl` with `F_GETFD`
/// (std's debug-build check before closing a file), in vCPU threads only
/// `ioctl` with one of [`vcpu_ioctls`]. (SIGINT/SIGTERM/SIGHUP only set a
/// flag the main thread polls, so no thread needs signal-hook's `sendto`.)
const CHECKED: &[Sys] = sys![SYS_tgkill, SYS_fcntl, SYS_ioctl];

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
    SYS_sendto,
    SYS_sendmsg,
    SYS_recvfrom,
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
        kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_dirty_log, kvm_fpu, kvm_irq_level, kvm_irq_routing,
        kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msi, kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs,
        kvm_translation, kvm_vcpu_events, kvm_xcrs, kvm_xsave, KVMIO,
    };
    // On the vCPU fd: the run loop and the state read for reports.
    vmm_sys_util::ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
    vmm_sys_util::ioctl_iowr_nr!(KVM_TRANSLATE, KVMIO, 0x85, kvm_translation);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
    // On the vCPU fd: the reset after an ACPI S3 wake-up.
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_regs);
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_SREGS, KVMIO, 0x84, kvm_sregs);
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_MP_STATE, KVMIO, 0x99, kvm_mp_state);
    // On the VM fd: interrupts raised by device emulation.
    vmm_sys_util::ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_irq_level);
    vmm_sys_util::ioctl_iowr_nr!(KVM_IRQ_LINE_STATUS, KVMIO, 0x67, kvm_irq_level);
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
    vmm_sys_util::ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_msi);
    // On the VM fd, from the main thread: teardown deassigns what the build
    // registered (kvm::eventfds::Registrations).
    vmm_sys_util::ioctl_iow_nr!(KVM_IRQFD, KVMIO, 0x76, kvm_bindings::kvm_irqfd);
    vmm_sys_util::ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_bindings::kvm_ioeventfd);
    vmm_sys_util::ioctl_iow_nr!(
        KVM_UNREGISTER_COALESCED_MMIO,
        KVMIO,
        0x68,
        kvm_bindings::kvm_coalesced_mmio_zone
    );
    // On the vCPU fd: saving the state of a parked vCPU.
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_FPU, KVMIO, 0x8c, kvm_fpu);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_CPUID2, KVMIO, 0x91, kvm_cpuid2);
    // On the VM fd, from the main thread: a migration's dirty logging.
    vmm_sys_util::ioctl_iow_nr!(
        KVM_SET_USER_MEMORY_REGION,
        KVMIO,
        0x46,
        kvm_bindings::kvm_userspace_memory_region
    );
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
    // On the vCPU fd: the gdb stub's breakpoints, single-step and FPU writes.
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_GUEST_DEBUG, KVMIO, 0x9b, kvm_bindings::kvm_guest_debug);
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_FPU, KVMIO, 0x8d, kvm_fpu);
    // On the VM fd: the chips and the dirty log, read by the snapshot thread.
    vmm_sys_util::ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
    vmm_sys_util::ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
    vmm_sys_util::ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);
}

/// The ioctl requests a snapshot-writing main thread may make.
fn snapshot_ioctls() -> [(&'static str, u64); 5] {
    [
        // A migration turns dirty logging on and off on live memslots.
        ("KVM_SET_USER_MEMORY_REGION", kvm_nr::KVM_SET_USER_MEMORY_REGION()),
        ("KVM_GET_IRQCHIP", kvm_nr::KVM_GET_IRQCHIP()),
        ("KVM_GET_PIT2", kvm_nr::KVM_GET_PIT2()),
        ("KVM_GET_CLOCK", kvm_nr::KVM_GET_CLOCK()),
        ("KVM_GET_DIRTY_LOG", kvm_nr::KVM_GET_DIRTY_LOG()),
    ]
}

/// How many of [`vcpu_ioctls`] are on the vCPU fd (the next four,
/// interrupt requests on the VM fd, are the `rtc` thread's too).
const VCPU_FD_IOCTLS: usize = 18;

/// The only ioctl requests a vCPU thread may make (name, request).
fn vcpu_ioctls() -> [(&'static str, u64); 23] {
    [
        ("KVM_RUN", kvm_nr::KVM_RUN()),
        ("KVM_GET_REGS", kvm_nr::KVM_GET_REGS()),
        ("KVM_GET_SREGS", kvm_nr::KVM_GET_SREGS()),
        ("KVM_TRANSLATE", kvm_nr::KVM_TRANSLATE()),
        ("KVM_GET_MP_STATE", kvm_nr::KVM_GET_MP_STATE()),
        ("KVM_SET_REGS", kvm_nr::KVM_SET_REGS()),
        ("KVM_SET_SREGS", kvm_nr::KVM_SET_SREGS()),
        ("KVM_SET_MP_STATE", kvm_nr::KVM_SET_MP_STATE()),
        ("KVM_GET_FPU", kvm_nr::KVM_GET_FPU()),
        ("KVM_GET_XSAVE", kvm_nr::KVM_GET_XSAVE()),
        ("KVM_GET_XCRS", kvm_nr::KVM_GET_XCRS()),
        ("KVM_GET_DEBUGREGS", kvm_nr::KVM_GET_DEBUGREGS()),
        ("KVM_GET_LAPIC", kvm_nr::KVM_GET_LAPIC()),
        ("KVM_GET_MSRS", kvm_nr::KVM_GET_MSRS()),
        ("KVM_GET_CPUID2", kvm_nr::KVM_GET_CPUID2()),
        ("KVM_GET_VCPU_EVENTS", kvm_nr::KVM_GET_VCPU_EVENTS()),
        ("KVM_SET_GUEST_DEBUG", kvm_nr::KVM_SET_GUEST_DEBUG()),
        ("KVM_SET_FPU", kvm_nr::KVM_SET_FPU()),
        ("KVM_IRQ_LINE", kvm_nr::KVM_IRQ_LINE()),
        ("KVM_IRQ_LINE_STATUS", kvm_nr::KVM_IRQ_LINE_STATUS()),
        ("KVM_SET_GSI_ROUTING", kvm_nr::KVM_SET_GSI_ROUTING()),
        ("KVM_SIGNAL_MSI", kvm_nr::KVM_SIGNAL_MSI()),
        // Lowering a resampled irq-line: deassign and assign its irqfd.
        ("KVM_IRQFD", kvm_nr::KVM_IRQFD()),
    ]
}

/// The only ioctl request the `irq-resample` thread may make.
fn resample_ioctls() -> [(&'static str, u64); 1] {
    [("KVM_GET_IRQCHIP", kvm_nr::KVM_GET_IRQCHIP())]
}

/// The only ioctl requests the main thread may make once filtered: the
/// teardown's deassignments (name, request).
fn main_ioctls() -> [(&'static str, u64); 3] {
    [
        ("KVM_IRQFD", kvm_nr::KVM_IRQFD()),
        ("KVM_IOEVENTFD", kvm_nr::KVM_IOEVENTFD()),
        (
            "KVM_UNREGISTER_COALESCED_MMIO",
            kvm_nr::KVM_UNREGISTER_COALESCED_MMIO(),
        ),
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
    for s in THREAD_LIFETIME {
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
    // fcntl(fd, F_GETFD): std's debug-build check in OwnedFd::drop; the
    // snapshot writer's directory removal (fdopendir) adds F_GETFL, F_SETFD.
    let mut fcntl = vec![rule(
        kind,
        vec![cond(kind, 1, SeccompCmpArgLen::Dword, libc::F_GETFD as u64)?],
    )?];
    if kind == ThreadKind::Snapshot {
        for cmd in [libc::F_GETFL, libc::F_SETFD] {
            fcntl.push(rule(
                kind,
                vec![cond(kind, 1, SeccompCmpArgLen::Dword, cmd as u64)?],
            )?);
        }
    }
    map.insert(libc::SYS_fcntl, fcntl);
    for s in kind.own_calls() {
        map.insert(s.nr, Vec::new());
    }
    let snapshot: Vec<(&str, u64)> = main_ioctls().into_iter().chain(snapshot_ioctls()).collect();
    let ioctls: &[(&str, u64)] = match kind {
        ThreadKind::Vcpu => &vcpu_ioctls(),
        ThreadKind::Main => &main_ioctls(),
        ThreadKind::RtcTimer => &vcpu_ioctls()[VCPU_FD_IOCTLS..VCPU_FD_IOCTLS + 4],
        ThreadKind::IrqResample => &resample_ioctls(),
        ThreadKind::Snapshot => &snapshot,
        ThreadKind::SerialOut | ThreadKind::Control | ThreadKind::Gdb => &[],
    };
    if !ioctls.is_empty() {
        // The kernel reads the request as an unsigned int: compare 32 bits.
        let mut chain = Vec::new();
        for &(_, req) in ioctls {
            chain.push(rule(kind, vec![cond(kind, 1, SeccompCmpArgLen::Dword, req)?])?);
        }
        map.insert(libc::SYS_ioctl, chain);
    }
    Ok(map)
}

/// Compiles the kind's filter for this process (`tgkill` is checked against `pid`).
/// seccompiler's program behind a search on the call number
/// ([`dispatch::prefixed`]: the kernel takes it about ten times faster).
fn program(kind: ThreadKind, pid: u32) -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|source| SeccompError::Compile { kind, source })?;
    let rules = rules(kind, pid)?;
    let listed: Vec<i64> = rules.keys().copied().collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)
        .map_err(|source| SeccompError::Compile { kind, source })?;
    let program = BpfProgram::try_from(filter).map_err(|source| SeccompError::Compile { kind, source })?;
    Ok(dispatch::prefixed(&listed, program))
}

static DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Compiled programs, by kind (index in [`ThreadKind::ALL`]): [`prepare`]
/// fills it ahead of time, [`install`] reads it (and fills it on a miss).
static PROGRAMS: std::sync::Mutex<[Option<BpfProgram>; ThreadKind::ALL.len()]> =
    std::sync::Mutex::new([const { None }; ThreadKind::ALL.len()]);

/// `kind`'s program for this process, compiled once.
fn cached_program(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let i = ThreadKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    let mut programs = PROGRAMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &programs[i] {
        return Ok(p.clone());
    }
    let p = program(kind, std::process::id())?;
    programs[i] = Some(p.clone());
    Ok(p)
}

/// Compiles the filters of `kinds` now, so that the threads that install
/// them later do not (compiling takes 0.1-0.3 ms of the thread's start on
/// the dev host). The migration target calls it while it waits for a
/// source: its vCPU threads start inside the guest's downtime.
pub fn prepare(kinds: &[ThreadKind]) -> Result<(), SeccompError> {
    if DISABLED.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    kinds.iter().try_for_each(|k| cached_program(*k).map(drop))
}

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
    // The signal reporters (SIGSYS, SIGBUS) name the thread, filter or not.
    remember_thread_name(kind);
    if DISABLED.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let prog = cached_program(kind)?;
    seccompiler::apply_filter(&prog).map_err(|source| SeccompError::Install { kind, source })
}

/// Every system call this module names: allowed, checked, or known forbidden.
fn named_calls() -> impl Iterator<Item = &'static Sys> {
    THREAD_LIFETIME
        .iter()
        .chain(CHECKED)
        .chain(FORBIDDEN_NAMES)
        .chain(CONTROL_CALLS)
        .chain(SNAPSHOT_CALLS)
        .chain(GDB_CALLS)
        .chain(VCPU_CALLS)
}

/// Test-only fault injection: when the environment variable
/// `BERTH_TEST_SYSCALL` names the current thread (e.g. `vcpu0`,
/// `serial-out`, `main`), makes a system call that no filter
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
mod tests;
