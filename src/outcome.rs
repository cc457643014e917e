//! How a VM run ends, and the one place that maps every error and outcome
//! to berth's exit code (README "Exit codes").

use std::fmt;

/// Why a guest fault ended the VM (exit code 4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// KVM_EXIT_SHUTDOWN: triple fault.
    TripleFault,
    /// KVM_EXIT_INTERNAL_ERROR (emulation failure and friends).
    InternalError,
    /// KVM_EXIT_FAIL_ENTRY: hardware refused the guest state.
    FailEntry,
    /// KVM_EXIT_UNKNOWN or an exit berth does not handle.
    UnhandledExit,
    /// KVM_EXIT_SYSTEM_EVENT of type KVM_SYSTEM_EVENT_CRASH: the guest
    /// reported a crash (e.g. the Hyper-V crash MSRs).
    GuestCrash,
}

/// Test-only fault injection: when the environment variable `BERTH_TEST_PANIC`
/// names the current thread (e.g. `vcpu0`, `serial-out`, `main`), that thread
/// panics at its first opportunity. Used by tests/reliability.rs to prove a
/// panic anywhere ends berth promptly.
pub fn inject_panic_here() {
    if let Ok(want) = std::env::var("BERTH_TEST_PANIC") {
        let me = std::thread::current().name().unwrap_or("main").to_string();
        if want == me {
            panic!("BERTH_TEST_PANIC: injected panic in thread {me}");
        }
    }
}

/// An exit the vCPU loop is handed instead of a KVM_RUN's (test-only, see
/// [`injected_exit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InjectedExit {
    /// KVM_EXIT_FAIL_ENTRY with this hardware reason, on this host CPU.
    FailEntry {
        /// `hardware_entry_failure_reason`.
        reason: u64,
        /// `cpu`.
        cpu: u32,
    },
    /// KVM_EXIT_UNKNOWN with this `hardware_exit_reason`.
    Unknown {
        /// `hardware_exit_reason`.
        hardware_reason: u64,
    },
    /// KVM_EXIT_SYSTEM_EVENT of this type (KVM_SYSTEM_EVENT_*), no data.
    SystemEvent {
        /// `system_event.type`.
        kind: u32,
    },
}

/// The values `BERTH_TEST_EXIT` takes, and what each injects.
pub const INJECTABLE_EXITS: &str = "fail-entry, unknown, system-event=shutdown|reset|crash|<type number>";

impl InjectedExit {
    /// `fail-entry`: reason 0x80000021 (VMX: invalid guest state) on CPU 0;
    /// `unknown`: hardware reason 0xbe7; `system-event=shutdown|reset|crash|N`.
    pub fn parse(s: &str) -> Option<Self> {
        use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
        Some(match s.trim() {
            "fail-entry" => InjectedExit::FailEntry {
                reason: 0x8000_0021,
                cpu: 0,
            },
            "unknown" => InjectedExit::Unknown {
                hardware_reason: 0xbe7,
            },
            other => {
                let kind = match other.strip_prefix("system-event=")? {
                    "shutdown" => KVM_SYSTEM_EVENT_SHUTDOWN,
                    "reset" => KVM_SYSTEM_EVENT_RESET,
                    "crash" => KVM_SYSTEM_EVENT_CRASH,
                    n => n.parse().ok()?,
                };
                InjectedExit::SystemEvent { kind }
            }
        })
    }
}

/// Test-only exit injection (debug builds only; release builds ignore it):
/// when `BERTH_TEST_EXIT` holds one of [`INJECTABLE_EXITS`], vCPU 0's first
/// KVM_RUN of the process is not made and this exit is handled in its place,
/// through the same dispatch as a real one. Once per process: after a reset
/// with `on_reboot = "restart"` the rebuilt machine runs normally. Used by
/// tests/exits.rs; FAIL_ENTRY, UNKNOWN and (on x86) SYSTEM_EVENT exits
/// cannot be provoked by a guest on demand. An unknown value is ignored with
/// a warning.
pub fn injected_exit(vcpu: u32) -> Option<InjectedExit> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    static WANTED: OnceLock<Option<InjectedExit>> = OnceLock::new();
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if !cfg!(debug_assertions) || vcpu != 0 || TAKEN.load(Ordering::Relaxed) {
        return None;
    }
    // Read once per process; every later KVM_RUN costs one atomic load.
    let wanted = WANTED.get_or_init(|| {
        let want = std::env::var("BERTH_TEST_EXIT").ok()?;
        let exit = InjectedExit::parse(&want);
        if exit.is_none() {
            log::warn!("BERTH_TEST_EXIT={want}: not one of {INJECTABLE_EXITS}; ignored");
        }
        exit
    });
    if wanted.is_none() || TAKEN.swap(true, Ordering::SeqCst) {
        TAKEN.store(true, Ordering::Relaxed);
        return None;
    }
    wanted.clone()
}

/// Installs the process-wide panic policy: print one line naming the thread,
/// then end the process with [`exit_code::PANIC`]. vCPU threads catch their
/// own panics first and stop the VM in order, so this only ends the process
/// directly for the other threads (and for the main thread).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current().name().unwrap_or("main").to_string();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        eprintln!("berth: internal error: thread {thread} panicked{place}: {msg}");
        if !thread.starts_with("vcpu") {
            std::process::exit(exit_code::PANIC);
        }
    }));
}

/// How the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Guest powered off.
    PowerOff,
    /// Guest asked for a reset (on_reboot = "exit").
    Reset,
    /// Guest wrote to isa-debug-exit; the status is already (v << 1) | 1.
    DebugExit(i32),
    /// Guest fault.
    Fault {
        /// vCPU index.
        vcpu: u32,
        /// Which fault.
        kind: FaultKind,
        /// One-line reason, then optional register dump lines.
        detail: String,
    },
    /// SIGINT/SIGTERM/SIGHUP arrived.
    Signal(i32),
    /// The run-time limit ran out (each vCPU's state is in the report).
    Timeout(u64),
    /// A host failure while running (KVM_RUN failed).
    Host(String),
    /// A berth thread panicked (a bug).
    Panic(String),
    /// Guest RAM lost its backing (a file truncated, huge pages gone): an
    /// access to planned RAM reached berth as an exit (`ram_loss`).
    MemoryLost(String),
    /// `stop` on the control socket.
    Stopped,
    /// `--snapshot-at`: the snapshot was written (to this directory).
    Snapshotted(String),
    /// `--snapshot-at`: the snapshot could not be written.
    SnapshotFailed(String),
    /// gdb's `kill` command (`--gdb`).
    DebuggerKill,
    /// The guest migrated away (to this address) and runs there now.
    Migrated(String),
}

impl Outcome {
    /// Whether a PC would reset here: the guest asked for a reset (i8042,
    /// reset register, KVM's reset system event), or it triple-faulted. A
    /// triple fault drives the CPU's shutdown cycle, which the PC chipset
    /// turns into a reset; QEMU does the same unless told `-no-reboot`
    /// (`-action reboot=shutdown`). With `on_reboot = "restart"` berth
    /// rebuilds the machine for both; with `on_reboot = "exit"` a reset
    /// request ends with 0 and a triple fault stays a guest fault (4).
    pub fn resets_the_machine(&self) -> bool {
        matches!(
            self,
            Outcome::Reset
                | Outcome::Fault {
                    kind: FaultKind::TripleFault,
                    ..
                }
        )
    }

    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::PowerOff | Outcome::Reset => 0,
            // The shell sees the low 8 bits of QEMU's exit((v << 1) | 1).
            Outcome::DebugExit(s) => s & 0xff,
            Outcome::Fault { .. } => exit_code::GUEST_FAULT,
            Outcome::Signal(n) => 128 + n,
            Outcome::Timeout(_) => exit_code::TIMEOUT,
            Outcome::Host(_) => exit_code::HOST,
            Outcome::Panic(_) => exit_code::PANIC,
            Outcome::MemoryLost(_) => exit_code::MEMORY_LOST,
            Outcome::Stopped | Outcome::Snapshotted(_) | Outcome::Migrated(_) => 0,
            Outcome::SnapshotFailed(_) => exit_code::SNAPSHOT_WRITE,
            Outcome::DebuggerKill => exit_code::DEBUGGER_KILL,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::PowerOff => write!(f, "guest powered off"),
            Outcome::Reset => write!(f, "guest requested a reset"),
            Outcome::DebugExit(s) => write!(f, "guest wrote {} to debug-exit (status {})", s >> 1, s & 0xff),
            Outcome::Fault { vcpu, kind, detail } => {
                let what = match kind {
                    FaultKind::TripleFault => "triple fault (KVM_EXIT_SHUTDOWN)",
                    FaultKind::InternalError => "KVM internal error",
                    FaultKind::FailEntry => "VM entry failed",
                    FaultKind::UnhandledExit => "unhandled exit",
                    FaultKind::GuestCrash => "guest reported a crash (KVM_SYSTEM_EVENT_CRASH)",
                };
                write!(f, "guest fault on vcpu{vcpu}: {what}: {detail}")
            }
            Outcome::Signal(n) => write!(f, "stopped by signal {n}"),
            Outcome::Timeout(ms) => write!(f, "timeout: the VM ran longer than {ms} ms"),
            Outcome::Host(m) => write!(f, "host error while running: {m}"),
            Outcome::Panic(m) => write!(f, "internal error: {m}"),
            Outcome::MemoryLost(m) => write!(f, "guest memory lost its backing: {m}"),
            Outcome::Stopped => write!(f, "stopped through the control socket"),
            Outcome::Snapshotted(d) => write!(f, "snapshot written to {d}"),
            Outcome::SnapshotFailed(m) => write!(f, "snapshot failed: {m}"),
            Outcome::DebuggerKill => write!(f, "killed by the debugger (gdb kill)"),
            Outcome::Migrated(to) => write!(f, "migrated to {to}"),
        }
    }
}

/// The exit-code contract.
pub mod exit_code {
    /// Usage or machine-file error (nothing was created).
    pub const USAGE: i32 = 2;
    /// Host error: /dev/kvm, a capability, a resource limit.
    pub const HOST: i32 = 3;
    /// Guest fault.
    pub const GUEST_FAULT: i32 = 4;
    /// Kernel image error.
    pub const KERNEL: i32 = 5;
    /// Timeout.
    pub const TIMEOUT: i32 = 6;
    /// The snapshot to restore is unreadable, damaged, truncated, of another
    /// format version, or a memory file is missing.
    pub const SNAPSHOT_BAD: i32 = 7;
    /// The snapshot is of another machine (its plan digest differs).
    pub const SNAPSHOT_OTHER_MACHINE: i32 = 8;
    /// A snapshot could not be written (the directory exists, disk full,
    /// permission): `--snapshot-at` exits with it.
    pub const SNAPSHOT_WRITE: i32 = 9;
    /// `berth ctl`: the VMM answered with an error.
    pub const CONTROL_REPLY: i32 = 10;
    /// `--incoming`: the migration failed before the guest could run here
    /// (the stream broke, timed out or is not a migration stream, the source
    /// went away before committing, the state did not load).
    pub const MIGRATE_FAILED: i32 = 11;
    /// `--incoming`: the source is another machine (its plan digest differs).
    pub const MIGRATE_OTHER_MACHINE: i32 = 12;
    /// berth itself failed: a thread panicked (a bug; the message says where).
    pub const PANIC: i32 = 70;
    /// Guest RAM lost its backing (a file truncated under the guest): a vCPU
    /// exit on planned RAM, or SIGBUS in a berth thread. 128 + SIGBUS, as a
    /// process killed by SIGBUS would report, but after a message naming the
    /// region and its file.
    pub const MEMORY_LOST: i32 = 128 + libc::SIGBUS;
    /// gdb's `kill` (`--gdb`): 128 + SIGKILL, what a shell reports for a
    /// process killed outright, after an orderly stop.
    pub const DEBUGGER_KILL: i32 = 128 + libc::SIGKILL;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Outcome::PowerOff.exit_code(), 0);
        assert_eq!(Outcome::DebugExit(1).exit_code(), 1);
        assert_eq!(Outcome::DebugExit((0x80 << 1) | 1).exit_code(), 1);
        assert_eq!(Outcome::Signal(15).exit_code(), 143);
        assert_eq!(Outcome::Signal(2).exit_code(), 130);
        let f = Outcome::Fault {
            vcpu: 0,
            kind: FaultKind::TripleFault,
            detail: String::new(),
        };
        assert_eq!(f.exit_code(), 4);
        assert_eq!(Outcome::Host("x".into()).exit_code(), 3);
        assert_eq!(Outcome::Timeout(1).exit_code(), 6);
        assert_eq!(Outcome::MemoryLost(String::new()).exit_code(), 135);
    }

    #[test]
    fn injectable_exits_parse() {
        assert_eq!(
            InjectedExit::parse("fail-entry"),
            Some(InjectedExit::FailEntry {
                reason: 0x8000_0021,
                cpu: 0
            })
        );
        assert_eq!(
            InjectedExit::parse("unknown"),
            Some(InjectedExit::Unknown {
                hardware_reason: 0xbe7
            })
        );
        assert_eq!(
            InjectedExit::parse("system-event=reset"),
            Some(InjectedExit::SystemEvent {
                kind: kvm_bindings::KVM_SYSTEM_EVENT_RESET
            })
        );
        assert_eq!(
            InjectedExit::parse("system-event=9"),
            Some(InjectedExit::SystemEvent { kind: 9 })
        );
        assert_eq!(InjectedExit::parse("system-event=frob"), None);
        assert_eq!(InjectedExit::parse("shutdown"), None);
    }

    #[test]
    fn triple_faults_and_reset_requests_reset_the_machine() {
        let fault = |kind| Outcome::Fault {
            vcpu: 1,
            kind,
            detail: String::new(),
        };
        assert!(Outcome::Reset.resets_the_machine());
        assert!(fault(FaultKind::TripleFault).resets_the_machine());
        assert!(!fault(FaultKind::InternalError).resets_the_machine());
        assert!(!fault(FaultKind::FailEntry).resets_the_machine());
        assert!(!Outcome::PowerOff.resets_the_machine());
        assert!(!Outcome::DebugExit(1).resets_the_machine());
    }
}
