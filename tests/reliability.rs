//! Hostile guests, signals, timeouts, panics and limits: every outcome is
//! defined, nothing hangs, nothing is left behind. Guests are in guests/test/.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn machine_file(dir: &TempDir, guest_name: &str, vcpus: u32, extra: &str) -> std::path::PathBuf {
    dir.write(
        &format!("{guest_name}-{vcpus}.toml"),
        &machine(&guest(guest_name), vcpus, extra),
    )
}

fn spawn(args: &[&str], file: &std::path::Path, env: &[(&str, &str)]) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.current_dir(repo()).arg("run").args(args).arg(file);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn berth")
}

/// Reads stdout lines until one contains `want` (or fails after `limit`);
/// returns the lines read so far and the rest of the stream's reader.
fn wait_for_line(
    child: &mut Child,
    want: &str,
    limit: Duration,
) -> (Vec<String>, BufReader<std::process::ChildStdout>) {
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let start = Instant::now();
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            panic!("stdout closed before `{want}`: {lines:?}");
        }
        lines.push(l.trim_end().to_string());
        if l.contains(want) {
            return (lines, r);
        }
        assert!(start.elapsed() < limit, "no `{want}` within {limit:?}");
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s.code(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("berth still running {limit:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process by pid.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn sigterm_stops_spinning_vcpus_within_a_second() {
    guests();
    let dir = TempDir::new("spin");
    let f = machine_file(&dir, "spin", 2, "");
    let mut child = spawn(&["--stats"], &f, &[]);
    let (lines, mut rest) = wait_for_line(&mut child, "spin: ready", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    kill(&child, libc::SIGTERM);
    let (code, took) = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(code, Some(143));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        lines.last().unwrap(),
        "spin: ready",
        "the last serial line made it out"
    );
    let mut tail = String::new();
    rest.read_to_string(&mut tail).unwrap();
    let err = stderr_of(&mut child);
    assert!(!err.contains("did not stop"), "{err}");
    for v in 0..2 {
        assert!(
            err.contains(&format!("stats: vcpu{v} exit")),
            "every vCPU thread reported (joined)\n{err}"
        );
    }
}

#[test]
fn sigint_stops_a_guest_halted_with_interrupts_off() {
    guests();
    let dir = TempDir::new("halt");
    let f = machine_file(&dir, "halt", 1, "");
    let mut child = spawn(&[], &f, &[]);
    wait_for_line(&mut child, "halt: ready", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    kill(&child, libc::SIGINT);
    let (code, took) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(130));
    // A vCPU the kick did not reach is only given up after the 5 s stop
    // grace period; a working kick ends the run in milliseconds (1.26 s
    // was seen with both cores busy, so the bound is below the grace
    // period, not a speed target).
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn timeout_ends_a_halted_guest_with_exit_6_and_vcpu_states() {
    guests();
    let dir = TempDir::new("timeout");
    for (args, extra) in [
        (vec!["--timeout", "2s"], ""),
        (vec![], "\n[machine]\ntimeout = \"2s\"\n"),
    ] {
        // [machine] is already in the file: put timeout there via replace.
        let text = machine(&guest("halt"), 2, "");
        let text = if extra.is_empty() {
            text
        } else {
            text.replace("vcpus = 2", "vcpus = 2\ntimeout = \"2s\"")
        };
        let f = dir.write("t.toml", &text);
        let start = Instant::now();
        let mut c = berth();
        c.arg("run").args(&args).arg(&f);
        let o = run_with_limit(c, Duration::from_secs(20));
        let took = start.elapsed();
        assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(6),
            "{took:?}"
        );
        let err = stderr(&o);
        assert!(err.contains("timeout: the VM ran longer than 2000 ms"), "{err}");
        assert!(
            err.lines()
                .any(|l| l.contains("vcpu0: rip 0x") && l.contains("halted") && l.contains("interrupts off")),
            "{err}"
        );
        assert!(
            err.contains("vcpu1: rip 0x") && err.contains("waiting for INIT/SIPI"),
            "{err}"
        );
    }
}

#[test]
fn triple_fault_exits_4_with_one_line_reason() {
    guests();
    let dir = TempDir::new("triple");
    let f = machine_file(&dir, "triple", 1, "");
    let mut c = berth();
    c.arg("run").arg(&f);
    let o = run_with_limit(c, Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    let first = err.lines().find(|l| l.starts_with("berth: ")).unwrap();
    // `ud2` with an empty IDT at CPL0 is a real triple fault on hardware KVM
    // and on PVM alike (int3 would be an internal error on PVM: not used).
    assert!(
        first.starts_with("berth: guest fault on vcpu0: triple fault (KVM_EXIT_SHUTDOWN): rip 0x"),
        "{err}"
    );
    assert!(!stdout(&o).contains("triple: survived"), "{}", stdout(&o));
}

#[test]
fn triple_fault_with_on_reboot_restart_resets_the_machine() {
    // A PC resets on a triple fault (QEMU too, unless -no-reboot): with
    // on_reboot = "restart" berth rebuilds the machine and boots again.
    guests();
    let dir = TempDir::new("triplerestart");
    let text = machine(&guest("triple"), 1, "").replace("vcpus = 1", "vcpus = 1\non_reboot = \"restart\"");
    let f = dir.write("triple.toml", &text);
    let mut child = spawn(&[], &f, &[]);
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let start = Instant::now();
    let mut boots = 0;
    while boots < 3 {
        let mut l = String::new();
        assert!(
            r.read_line(&mut l).unwrap() > 0,
            "berth ended after {boots} boots: {}",
            stderr_of(&mut child)
        );
        if l.trim_end() == "triple: start" {
            boots += 1;
        }
        assert!(!l.contains("survived"), "{l}");
        assert!(start.elapsed() < Duration::from_secs(60), "only {boots} boots");
    }
    kill(&child, libc::SIGTERM);
    let (code, _) = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(code, Some(143));
    let err = stderr_of(&mut child);
    let restarts = err
        .lines()
        .filter(|l| {
            l.starts_with("berth: guest fault on vcpu0: triple fault (KVM_EXIT_SHUTDOWN)")
                && l.ends_with("; rebuilding the machine (on_reboot = \"restart\")")
        })
        .count();
    assert!(restarts >= 2, "{err}");
}

#[test]
fn emulation_failure_is_reported_not_hung() {
    guests();
    let dir = TempDir::new("cx16");
    let f = machine_file(&dir, "cmpxchg16b", 1, "");
    let start = Instant::now();
    let mut c = berth();
    c.arg("run").arg(&f);
    let o = run_with_limit(c, Duration::from_secs(20));
    let err = stderr(&o);
    if host_is_pvm() {
        assert_eq!(o.status.code(), Some(4), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(err.contains("suberror 1 (emulation failure)"), "{err}");
        assert!(
            err.contains("instruction bytes f0 48 0f c7"),
            "decoded lock cmpxchg16b: {err}"
        );
        assert!(err.contains("rip=0x") && err.contains("cr3="), "registers: {err}");
    } else {
        // Hardware runs it; the guest reports and exits with value 0x10.
        assert_eq!(o.status.code(), Some(33), "{err}");
    }
}

#[test]
fn port_and_mmio_sweep_keeps_running_with_bounded_logs() {
    guests();
    let dir = TempDir::new("ports");
    let f = machine_file(&dir, "ports", 1, "");
    let mut c = berth();
    c.env("BERTH_LOG", "debug").arg("run").arg("--stats").arg(&f);
    let o = run_with_limit(c, Duration::from_secs(120));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(out.contains("ports: done"), "{out}");
    assert!(
        out.contains("ports: non-ff mmio=0"),
        "unmapped MMIO reads are all-ones: {out}"
    );
    // The only ports that answer are KVM's in-kernel PIC/PIT/ELCR and berth's
    // ACPI PM block and PM timer; everything else reads all-ones.
    let answering: Vec<u16> = vec![
        0x20, 0x21, 0x40, 0x41, 0x42, 0x43, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x600, 0x601, 0x602, 0x603, 0x604,
        0x605, 0x608, 0x609, 0x60a, 0x60b,
    ];
    for l in out.lines().filter_map(|l| l.strip_prefix("ports: port ")) {
        let port = u16::from_str_radix(l.split('=').next().unwrap().trim_start_matches("0x"), 16).unwrap();
        assert!(answering.contains(&port), "port {port:#x} answered: {l}");
    }
    let unhandled = err.lines().find(|l| l.starts_with("stats: unhandled")).unwrap();
    let reads: u64 = unhandled.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(
        reads > 65_000,
        "nearly every port read went unclaimed and got all-ones: {unhandled}"
    );
    // Debug logging of unclaimed accesses is rate limited.
    let log_lines = err
        .lines()
        .filter(|l| l.contains("unhandled") || l.contains("suppress"))
        .count();
    assert!(log_lines < 40, "{log_lines} log lines");
    assert!(
        err.lines().count() < 200,
        "stderr stays bounded: {} lines",
        err.lines().count()
    );
}

#[test]
fn one_vcpu_ends_the_vm_while_the_others_wait() {
    guests();
    let dir = TempDir::new("apspin");
    let f = machine_file(&dir, "apspin", 4, "");
    let mut c = berth();
    c.arg("run").arg("--stats").arg(&f);
    let o = run_with_limit(c, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains("did not stop"), "{err}");
    for v in 1..4 {
        assert!(
            err.contains(&format!("stats: vcpu{v} exit interrupted")),
            "vcpu{v} was kicked and joined\n{err}"
        );
    }
}

#[test]
fn blocked_stdout_never_blocks_a_vcpu() {
    guests();
    let dir = TempDir::new("flood");
    let f = machine_file(&dir, "flood", 1, "");
    // stdout is a pipe nobody reads: it fills at 64 KiB, berth's buffer
    // (256 KiB) fills next, then bytes are dropped and counted. The guest
    // writes 512 KiB without ever polling and then exits through debug-exit:
    // it can only get there if no vCPU ever waited for the pipe. The bound
    // is generous for a loaded PVM host (~20 KB/s there, many times that
    // elsewhere); no fixed sleep.
    const FLOOD_BYTES: u64 = 512 * 1024;
    let limit = Duration::from_secs(180);
    let mut child = spawn(&["--stats"], &f, &[]);
    let start = Instant::now();
    let mut hwm_kib = 0u64;
    let code = loop {
        // Peak RSS, sampled while it runs (the last sample is the highest).
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            if let Some(v) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                hwm_kib = hwm_kib.max(v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the flood guest did not finish within {limit:?} with stdout blocked:\n{}",
                stderr_of(&mut child)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    let err = stderr_of(&mut child);
    assert_eq!(code, Some(1), "the guest finished its flood and exited: {err}");
    assert!(hwm_kib > 0 && hwm_kib < 64 * 1024, "peak RSS {hwm_kib} KiB");
    let serial = err
        .lines()
        .find_map(|l| l.strip_prefix("stats: serial bytes-out "))
        .unwrap_or_else(|| panic!("{err}"));
    let mut nums = serial
        .split(" bytes-dropped ")
        .map(|v| v.trim().parse::<u64>().unwrap());
    let (out, dropped) = (nums.next().unwrap(), nums.next().unwrap());
    assert!(dropped > 0, "{err}");
    // Every byte the guest wrote was either written out or counted dropped
    // ("flood: start\n", the flood, "flood: done\n").
    assert_eq!(out + dropped, FLOOD_BYTES + 13 + 12, "{err}");
    // Stopping with a blocked stdout is bounded (the flush gives up after
    // 2 s): the time outside the guest's run stays small.
    let run_ms: f64 = err
        .lines()
        .find_map(|l| l.strip_prefix("stats: run-time-ms "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{err}"));
    let outside = wall.saturating_sub(Duration::from_secs_f64(run_ms / 1000.0));
    assert!(
        outside < Duration::from_secs(4),
        "start plus stop took {outside:?} with a blocked stdout"
    );
}

#[test]
fn a_panic_in_any_thread_ends_berth_promptly() {
    guests();
    let dir = TempDir::new("panic");
    let f = machine_file(&dir, "spin", 2, "");
    for thread in ["vcpu0", "vcpu1", "serial-out", "main"] {
        let start = Instant::now();
        let mut c = berth();
        c.env("BERTH_TEST_PANIC", thread).arg("run").arg(&f);
        let o = run_with_limit(c, Duration::from_secs(20));
        assert_eq!(o.status.code(), Some(70), "{thread}: {}", stderr(&o));
        assert!(start.elapsed() < Duration::from_secs(5), "{thread}");
        assert!(
            stderr(&o).contains(&format!("thread {thread} panicked")),
            "{thread}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn address_space_limit_is_a_host_error() {
    guests();
    let mut c = Command::new("prlimit");
    c.current_dir(repo())
        .arg(format!("--as={}", 160u64 << 20))
        .arg(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "configs/default.toml"]);
    let o = run_with_limit(c, Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot map 0x10000000 bytes for memslot 0"),
        "{}",
        stderr(&o)
    );
}

/// The default machine with on_reboot = "restart" and a probe that resets
/// as soon as it is done: a guest that reboots for ever.
fn reboot_loop(dir: &TempDir) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("configs/default.toml"))
        .unwrap()
        .replace("../guests/", &format!("{}/", repo().join("guests").display()))
        .replace("vcpus = 2", "vcpus = 2\non_reboot = \"restart\"")
        .replace("cmdline = \"", "cmdline = \"probe.exit=reset ");
    dir.write("loop.toml", &text)
}

#[test]
fn sigterm_works_while_the_guest_keeps_rebooting() {
    guests();
    let dir = TempDir::new("rebootloop");
    let f = reboot_loop(&dir);
    let mut child = spawn(&[], &f, &[]);
    std::thread::sleep(Duration::from_secs(2));
    kill(&child, libc::SIGTERM);
    let (code, took) = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(code, Some(143));
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_forbidden_syscall_from_a_vcpu_thread_ends_berth_with_159() {
    guests();
    let dir = TempDir::new("seccomp");
    let f = machine_file(&dir, "spin", 2, "");
    let mut c = berth();
    c.env("BERTH_TEST_SYSCALL", "vcpu1").arg("run").arg(&f);
    let o = run_with_limit(c, Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(159), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("berth: seccomp: thread vcpu1 made a forbidden system call 110 (getppid)"),
        "{}",
        stderr(&o)
    );
    // --no-seccomp: the same call goes through and the guest runs on.
    let mut c = berth();
    c.env("BERTH_TEST_SYSCALL", "vcpu1")
        .args(["run", "--no-seccomp", "--timeout", "1s"])
        .arg(&f);
    let o = run_with_limit(c, Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
}

#[test]
fn restarts_leave_no_threads_behind() {
    guests();
    let dir = TempDir::new("threads");
    let f = reboot_loop(&dir);
    let mut child = spawn(&[], &f, &[]);
    let threads = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // Peak thread count over a window (a sample may fall between boots).
    let peak = |pid: u32, window: Duration| {
        let end = Instant::now() + window;
        let mut max = 0;
        while Instant::now() < end {
            max = max.max(threads(pid));
            std::thread::sleep(Duration::from_millis(5));
        }
        max
    };
    let early = peak(child.id(), Duration::from_millis(1000));
    std::thread::sleep(Duration::from_secs(2));
    let late = peak(child.id(), Duration::from_millis(1000));
    kill(&child, libc::SIGTERM);
    let (code, _) = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(code, Some(143));
    assert!(
        late <= early + 2,
        "threads grew from {early} to {late} across restarts"
    );
}

/// The memread guest with its second region backed by a shared file
/// (`data`, 1 MiB at 0x20000000) whose first bytes are "ABCDEFGH".
fn memread_with_file(dir: &TempDir, extra_region: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let img = dir.0.join("data.img");
    let mut bytes = b"ABCDEFGH".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&img, &bytes).unwrap();
    let text = machine(&guest("memread"), 1, "").replace(
        "\n[kernel]",
        &format!(
            "\n[[memory]]\nname = \"data\"\nguest_addr = 0x2000_0000\nsize = \"1MiB\"\nfile = \"{}\"\n{extra_region}\n[kernel]",
            img.display()
        ),
    );
    (dir.write("memread.toml", &text), img)
}

#[test]
fn truncating_a_running_guests_backing_file_stops_it_naming_the_file() {
    guests();
    let dir = TempDir::new("lostram");
    let (f, img) = memread_with_file(&dir, "shared = true");
    let mut child = spawn(&["--stats"], &f, &[]);
    let (lines, _rest) = wait_for_line(&mut child, "memread: ready", Duration::from_secs(30));
    assert!(
        lines.contains(&"memread: value=4847464544434241".to_string()),
        "{lines:?}"
    );
    // The guest reads that RAM in a loop: take the file away under it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(0)
        .unwrap();
    let (code, took) = wait_exit(&mut child, Duration::from_secs(30));
    let err = stderr_of(&mut child);
    assert_eq!(code, Some(135), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let line = err
        .lines()
        .find(|l| l.starts_with("berth: guest memory lost its backing: vcpu0: "))
        .unwrap_or_else(|| panic!("{err}"));
    let region = format!(
        "region \"data\" (memslot 1, 0x20000000..0x20100000, file {})",
        img.display()
    );
    assert!(line.contains(&region), "{line}");
    // No device saw the RAM access: it was never turned into all-ones reads.
    assert!(
        err.contains("stats: unhandled pio-reads 0 pio-writes 0 mmio-reads 0 mmio-writes 0"),
        "{err}"
    );
}

#[test]
fn sigbus_in_a_berth_thread_is_reported_with_the_region() {
    // BERTH_TEST_LOSE_RAM truncates the backing file right after berth
    // mapped it; the boot digest (main thread) then reads the lost pages.
    guests();
    let dir = TempDir::new("sigbus");
    let (f, img) = memread_with_file(&dir, "");
    let mut c = berth();
    c.env("BERTH_TEST_LOSE_RAM", "1")
        .args(["run", "--boot-digest"])
        .arg(&f);
    let o = run_with_limit(c, Duration::from_secs(20));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(135), "{err}");
    let want = format!(
        ", guest address 0x20000000 in region \"data\" (memslot 1, 0x20000000..0x20100000, file {}) (was its file truncated?)",
        img.display()
    );
    assert!(
        err.lines().any(|l| l
            .starts_with("berth: guest memory lost its backing: thread main got SIGBUS at host address 0x")
            && l.ends_with(&want)),
        "{err}"
    );
    assert!(!err.contains("boot-sha256:"), "{err}");
}
