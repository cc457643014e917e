//! KVM's teardown runs in berth's teardown helper (src/teardown.rs), not on
//! berth's exit path: the helper holds the VM while berth runs, lets go of
//! stdout at once, and is gone soon after berth exits; restarts do not pile
//! helpers up.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn spawn(file: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(repo())
        .env("BERTH_LOG", "berth::teardown=debug")
        .arg("run")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn berth")
}

/// Reads stderr until berth logs its helper's pid.
fn helper_pid(child: &mut Child) -> (i32, BufReader<std::process::ChildStderr>) {
    let mut r = BufReader::new(child.stderr.take().unwrap());
    let start = Instant::now();
    loop {
        let mut l = String::new();
        assert!(
            r.read_line(&mut l).unwrap() > 0,
            "stderr closed before the helper's pid"
        );
        if let Some(pid) = l.trim_end().rsplit_once("teardown helper pid ") {
            return (pid.1.parse().unwrap(), r);
        }
        assert!(start.elapsed() < LIMIT, "no helper pid logged");
    }
}

fn fd_targets(pid: i32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut v: Vec<(i32, String)> = dir
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?.display().to_string()))
        })
        .collect();
    v.sort();
    v
}

/// True once `pid` has exited (gone, or a zombie waiting for init).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn check_machine(extra_irqchip: &str, vcpus: u32) {
    guests();
    let dir = TempDir::new("teardown");
    let text = machine(&guest("spin"), vcpus, "") + extra_irqchip;
    let f = dir.write("m.toml", &text);
    let mut child = spawn(&f);
    let (pid, mut err) = helper_pid(&mut child);
    // While berth runs, the helper holds the VM and one fd per vCPU, and
    // nothing else but its pipe: not stdout, stderr or the machine's files.
    wait_until(LIMIT, "the helper closing every other fd", || {
        let fds = fd_targets(pid);
        !fds.iter().any(|(fd, _)| *fd <= 2) && fds.len() == vcpus as usize + 2
    });
    let fds = fd_targets(pid);
    assert_eq!(
        fds.iter().filter(|(_, t)| t == "anon_inode:kvm-vm").count(),
        1,
        "{fds:?}"
    );
    assert_eq!(
        fds.iter()
            .filter(|(_, t)| t.starts_with("anon_inode:kvm-vcpu"))
            .count(),
        vcpus as usize,
        "{fds:?}"
    );
    assert!(!ended(pid), "the helper ended while berth runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("spin: ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "stdout ended before `spin: ready`"
        );
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_with_limit(&mut child, Instant::now(), LIMIT);
    assert_eq!(status.code(), Some(143));
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("panicked"), "{rest}");
    // stdout reached EOF when berth exited (the helper had let go of it).
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    wait_until(LIMIT, "the helper's exit after berth's", || ended(pid));
}

#[test]
fn helper_holds_the_vm_kernel_irqchip_with_pit() {
    check_machine("\n[irqchip]\nmode = \"kernel\"\npit = true\n", 2);
}

#[test]
fn helper_holds_the_vm_kernel_irqchip_without_pit() {
    check_machine("\n[irqchip]\nmode = \"kernel\"\npit = false\n", 1);
}

#[test]
fn helper_holds_the_vm_split_irqchip() {
    check_machine("\n[irqchip]\nmode = \"split\"\n", 2);
}

#[test]
fn the_helper_not_berth_pays_the_settle_slot() {
    // KVM's one-time wait after the irqchip is paid by adding and removing a
    // one-page slot above guest RAM (teardown::Settle). It must happen in the
    // helper, a process berth's exit does not wait for, not in a thread of
    // berth's (whose exit would join it).
    let dir = TempDir::new("teardown-settle");
    let text = machine(&guest("bench-exit-pvh"), 1, "port = 0xf4\nsize = 4\n")
        + "\n[irqchip]\nmode = \"kernel\"\npit = true\n";
    let f = dir.write("m.toml", &text);
    let trace = dir.0.join("strace.txt");
    let mut c = Command::new("strace");
    c.current_dir(repo())
        .args(["-f", "-qq", "-e", "trace=ioctl", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_LOG", "berth::teardown=debug")
        .arg("run")
        .arg(&f);
    let o = run_with_limit(c, LIMIT);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let helper = stderr(&o)
        .lines()
        .find_map(|l| {
            l.rsplit_once("teardown helper pid ")?
                .1
                .trim()
                .parse::<u32>()
                .ok()
        })
        .expect("no helper pid logged");
    let calls = strace_calls(&std::fs::read_to_string(&trace).unwrap());
    let settle: Vec<&String> = calls
        .iter()
        .filter(|l| l.contains("KVM_SET_USER_MEMORY_REGION") && l.contains("guest_phys_addr=0x100000000"))
        .collect();
    assert_eq!(settle.len(), 2, "{settle:#?}");
    assert!(settle[0].contains("memory_size=4096"), "{settle:#?}");
    assert!(settle[1].contains("memory_size=0"), "{settle:#?}");
    for l in &settle {
        assert!(
            l.starts_with(&format!("{helper} ")),
            "not the helper ({helper}): {l}"
        );
        assert!(l.ends_with("= 0"), "{l}");
    }
}

/// berth's children (helpers, running or zombie).
fn children(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(1).map(|p| p == pid.to_string()))
                    .unwrap_or(false)
            })
        })
        .count()
}

#[test]
fn restarts_do_not_pile_up_helpers() {
    guests();
    let dir = TempDir::new("teardown-restart");
    let text = std::fs::read_to_string(repo().join("configs/default.toml"))
        .unwrap()
        .replace("../guests/", &format!("{}/", repo().join("guests").display()))
        .replace("vcpus = 2", "vcpus = 2\non_reboot = \"restart\"")
        .replace("cmdline = \"", "cmdline = \"probe.exit=reset ");
    let f = dir.write("loop.toml", &text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(repo())
        .arg("run")
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Count boots on stdout while sampling berth's children: each restart
    // reaps the helpers that have ended, so they never pile up.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut boots = 0;
    let mut most = 0;
    let start = Instant::now();
    while boots < 10 {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).unwrap() > 0,
            "berth ended after {boots} boots"
        );
        if l.starts_with("probe: berth probe") {
            boots += 1;
        }
        most = most.max(children(child.id()));
        assert!(start.elapsed() < Duration::from_secs(120), "only {boots} boots");
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_with_limit(&mut child, Instant::now(), LIMIT);
    assert_eq!(status.code(), Some(143));
    assert!(most <= 3, "berth had {most} children at once across 10 boots");
}
