//! Unit tests of the seccomp filters and the SIGSYS report.

use super::sigsys::*;
use super::*;
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

/// The environment variable that turns [`child`] into a scenario.
const CHILD_ENV: &str = "BERTH_SECCOMP_TEST_CHILD";

fn all_names() -> Vec<Sys> {
    named_calls().copied().collect()
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
    for kind in ThreadKind::ALL {
        let rules = rules(kind, 1).unwrap();
        for s in CHECKED {
            assert!(
                !lifetime.contains(&s.nr),
                "{kind}: {} must keep its argument check",
                s.name
            );
        }
        // The SIGSYS handler's own calls must never trap.
        for nr in [libc::SYS_write, libc::SYS_exit_group] {
            assert_eq!(rules.get(&nr).map(Vec::len), Some(0), "{kind}: syscall {nr}");
        }
        // The test hook's call is allowed nowhere, nor are a few others.
        for nr in [libc::SYS_getppid, libc::SYS_execve, libc::SYS_clone3] {
            assert!(!rules.contains_key(&nr), "{kind} allows syscall {nr}");
        }
        // Only a run that can migrate opens sockets (its connection).
        assert_eq!(
            rules.contains_key(&libc::SYS_socket),
            kind == ThreadKind::Snapshot,
            "{kind}: socket"
        );
        // ioctl: vCPUs (their twelve requests), main (the teardown's three), the RTC timer (four).
        assert_eq!(
            rules.get(&libc::SYS_ioctl).map(Vec::len),
            match kind {
                ThreadKind::Vcpu => Some(23),
                ThreadKind::IrqResample => Some(1),
                ThreadKind::Main => Some(3),
                ThreadKind::RtcTimer => Some(4),
                ThreadKind::Snapshot => Some(8),
                ThreadKind::SerialOut | ThreadKind::Control | ThreadKind::Gdb => None,
            },
            "{kind}: ioctl"
        );
        if kind == ThreadKind::RtcTimer {
            // Interrupt requests only: no KVM_RUN, no register reads.
            assert_eq!(rules[&libc::SYS_ioctl].len(), 4);
            assert_eq!(vcpu_ioctls()[VCPU_FD_IOCTLS].0, "KVM_IRQ_LINE");
            assert_eq!(vcpu_ioctls()[VCPU_FD_IOCTLS - 1].0, "KVM_SET_FPU");
            // The vCPUs' KVM_IRQFD (resampled irq-lines) is not the RTC's.
            assert_eq!(vcpu_ioctls()[VCPU_FD_IOCTLS + 4].0, "KVM_IRQFD");
        }
        assert_eq!(
            rules.contains_key(&libc::SYS_openat),
            kind == ThreadKind::Snapshot,
            "{kind}: openat"
        );
        assert_eq!(
            rules.contains_key(&libc::SYS_sendto),
            matches!(kind, ThreadKind::Control | ThreadKind::Gdb | ThreadKind::Snapshot),
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
            if kind.own_calls().iter().any(|o| o.nr == s.nr) {
                continue;
            }
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
        ("KVM_SET_REGS", 0x4090_ae82),
        ("KVM_SET_SREGS", 0x4138_ae84),
        ("KVM_SET_MP_STATE", 0x4004_ae99),
        ("KVM_GET_FPU", 0x81a0_ae8c),
        ("KVM_GET_XSAVE", 0x9000_aea4),
        ("KVM_GET_XCRS", 0x8188_aea6),
        ("KVM_GET_DEBUGREGS", 0x8080_aea1),
        ("KVM_GET_LAPIC", 0x8400_ae8e),
        ("KVM_GET_MSRS", 0xc008_ae88),
        ("KVM_GET_CPUID2", 0xc008_ae91),
        ("KVM_GET_VCPU_EVENTS", 0x8040_ae9f),
        ("KVM_SET_GUEST_DEBUG", 0x4048_ae9b),
        ("KVM_SET_FPU", 0x41a0_ae8d),
        ("KVM_IRQ_LINE", 0x4008_ae61),
        ("KVM_IRQ_LINE_STATUS", 0xc008_ae67),
        ("KVM_SET_GSI_ROUTING", 0x4008_ae6a),
        ("KVM_SIGNAL_MSI", 0x4020_aea5),
        ("KVM_IRQFD", 0x4020_ae76),
    ];
    #[cfg(target_arch = "x86_64")]
    assert_eq!(resample_ioctls(), [("KVM_GET_IRQCHIP", 0xc208_ae62)]);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        snapshot_ioctls(),
        [
            ("KVM_SET_USER_MEMORY_REGION", 0x4020_ae46),
            ("KVM_GET_IRQCHIP", 0xc208_ae62),
            ("KVM_GET_PIT2", 0x8070_ae9f),
            ("KVM_GET_CLOCK", 0x8030_ae7c),
            ("KVM_GET_DIRTY_LOG", 0x4010_ae42),
        ]
    );
    #[cfg(target_arch = "x86_64")]
    assert_eq!(vcpu_ioctls(), want);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        main_ioctls(),
        [
            ("KVM_IRQFD", 0x4020_ae76),
            ("KVM_IOEVENTFD", 0x4040_ae79),
            ("KVM_UNREGISTER_COALESCED_MMIO", 0x4010_ae68),
        ]
    );
    // Every request fits the 32 bits the filter compares.
    assert!(vcpu_ioctls()
        .iter()
        .chain(&main_ioctls())
        .all(|(_, r)| *r <= u64::from(u32::MAX)));
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
    let mut l = Line::new();
    for n in [0, 7, -12, i64::MAX, i64::MIN] {
        l.len = 0;
        l.push_decimal(n);
        assert_eq!(std::str::from_utf8(&l.buf[..l.len]).unwrap(), n.to_string());
    }
    // An overlong line is cut, never overrun.
    l.len = 0;
    l.push(&[b'x'; 600]);
    assert_eq!(l.len, l.buf.len());
    l.len = 0;
    l.push_hex(0);
    l.push(b" ");
    l.push_hex(0xdead_beef_0000_0001);
    assert_eq!(
        std::str::from_utf8(&l.buf[..l.len]).unwrap(),
        "0x0 0xdeadbeef00000001"
    );
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

/// The search prefix changes no verdict: for every call number up to
/// 1023 (and x32 numbers, and another architecture), with argument sets
/// that meet each kind's checks (ioctl requests, fcntl commands, tgkill's
/// pid) and that miss them, the prefixed program returns what
/// seccompiler's alone returns. And it is what makes the kernel's per-call
/// walk short: an unlisted number is decided within 16 instructions.
#[test]
fn the_search_prefix_keeps_every_verdict_and_shortens_the_walk() {
    use super::dispatch::tests::run;
    const X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const I386: u32 = 3 | 0x4000_0000;
    let pid = 4242u32;
    let requests: Vec<u64> = vcpu_ioctls()
        .iter()
        .chain(main_ioctls().iter())
        .chain(snapshot_ioctls().iter())
        .chain(resample_ioctls().iter())
        .map(|&(_, r)| r)
        .collect();
    let mut args: Vec<[u64; 6]> = vec![[0; 6], [u64::MAX; 6], [u64::from(pid), 1, 2, 3, 4, 5]];
    for arg1 in requests.iter().copied().chain(0..8) {
        args.push([3, arg1, 0, 0, 0, 0]);
        args.push([3, arg1 | 1 << 32, 0, 0, 0, 0]);
    }
    let mut numbers: Vec<u32> = (0..1024).collect();
    numbers.extend([0x4000_0000, 0x4000_0010, 0x4000_0200, u32::MAX]);
    for kind in ThreadKind::ALL {
        let rules = rules(kind, pid).unwrap();
        let listed: Vec<i64> = rules.keys().copied().collect();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Trap,
            SeccompAction::Allow,
            TargetArch::try_from("x86_64").unwrap(),
        )
        .unwrap();
        let plain = BpfProgram::try_from(filter).unwrap();
        let prefixed = super::dispatch::prefixed(&listed, plain.clone());
        assert!(prefixed.len() > plain.len(), "{kind}: no prefix");
        assert_eq!(prefixed.len(), program(kind, pid).unwrap().len(), "{kind}");
        let mut worst = (0, 0);
        for &nr in &numbers {
            for arch in [X86_64, I386] {
                for a in &args {
                    let (want, walked) = run(&plain, nr, arch, *a);
                    let (got, steps) = run(&prefixed, nr, arch, *a);
                    assert_eq!(got, want, "{kind}: call {nr:#x} arch {arch:#x} args {a:x?}");
                    if arch == X86_64 && !listed.contains(&i64::from(nr)) {
                        worst = (worst.0.max(steps), worst.1.max(walked));
                    }
                }
            }
        }
        assert!(
            worst.0 <= 16,
            "{kind}: an unlisted call takes {} instructions (seccompiler's alone: {})",
            worst.0,
            worst.1
        );
    }
}
