//! The gdb stub (`--gdb`, `--gdb-wait`) driven by the real gdb in batch mode
//! and by raw protocol packets, against `guests/gdb.elf` (guests/test/gdb.S).
//!
//! What PVM (this dev host's nested KVM) can do differs from hardware KVM
//! (DEVELOPERS.md "Guest debugging"): at CPL0 (emulated) hardware
//! breakpoints and single-step work, but an int3 is an emulation failure
//! and data watchpoints do not fire; at CPL3 (native) no debug event
//! reaches KVM. Those tests check PVM's behaviour there and the full
//! behaviour on hardware KVM.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
/// The guest's normal end: debug-exit 0x21.
const GUEST_DONE: i32 = 67;

/// A berth run with `--gdb unix:...`, its output collected.
struct Vm {
    child: Child,
    socket: PathBuf,
    dir: TempDir,
    started: Instant,
}

impl Vm {
    /// Starts `kernel` (2 vCPUs) with `--gdb` and `extra` options; waits
    /// (bounded) until the socket exists.
    fn start(kernel: &Path, extra: &[&str]) -> Vm {
        let dir = TempDir::new("gdb");
        let m = dir.write("m.toml", &machine(kernel, 2, ""));
        let socket = dir.0.join("gdb.sock");
        let mut cmd = berth();
        cmd.arg("run")
            .arg(&m)
            .arg("--gdb")
            .arg(format!("unix:{}", socket.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.0.join("out")).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.0.join("err")).unwrap()));
        let child = cmd.spawn().expect("spawn berth");
        let started = Instant::now();
        while !socket.exists() {
            assert!(started.elapsed() < LIMIT, "no gdb socket");
            std::thread::sleep(Duration::from_millis(5));
        }
        Vm {
            child,
            socket,
            dir,
            started,
        }
    }

    /// Runs gdb on the guest's ELF with `target remote` and the commands.
    fn gdb(&self, elf: &Path, cmds: &[&str]) -> String {
        let mut c = Command::new("gdb");
        c.args(["-batch", "-nx"]).arg(elf);
        c.arg("-ex")
            .arg(format!("target remote {}", self.socket.display()));
        for e in cmds {
            c.arg("-ex").arg(e);
        }
        let o = run_with_limit(c, LIMIT);
        format!("{}{}", stdout(&o), stderr(&o))
    }

    /// Waits for berth's end: its exit code and its stdout, stderr.
    fn finish(mut self) -> (i32, String, String) {
        let st = wait_with_limit(&mut self.child, self.started, LIMIT);
        let out = std::fs::read_to_string(self.dir.0.join("out")).unwrap();
        let err = std::fs::read_to_string(self.dir.0.join("err")).unwrap();
        (st.code().unwrap_or(-1), out, err)
    }

    /// Waits (bounded) until the guest printed `text`.
    fn wait_output(&self, text: &str) {
        while !std::fs::read_to_string(self.dir.0.join("out"))
            .unwrap()
            .contains(text)
        {
            assert!(self.started.elapsed() < LIMIT, "no '{text}' from the guest");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }
}

/// A symbol's address in the ELF (`nm`).
fn sym(elf: &Path, name: &str) -> u64 {
    let o = Command::new("nm").arg(elf).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(name))
        .unwrap_or_else(|| panic!("{name} not in nm output"));
    u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
}

/// `len` bytes of the ELF's file image at virtual address `addr` (through
/// its ELF64 program headers).
fn elf_bytes(elf: &Path, addr: u64, len: usize) -> Vec<u8> {
    let f = std::fs::read(elf).unwrap();
    let u64_at = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(f[o..o + 2].try_into().unwrap());
    let (phoff, phentsize, phnum) = (
        u64_at(0x20) as usize,
        u16_at(0x36) as usize,
        u16_at(0x38) as usize,
    );
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (off, vaddr, filesz) = (u64_at(ph + 8), u64_at(ph + 16), u64_at(ph + 32));
        if vaddr <= addr && addr + len as u64 <= vaddr + filesz {
            let start = (off + addr - vaddr) as usize;
            return f[start..start + len].to_vec();
        }
    }
    panic!("{addr:#x} is in no PT_LOAD");
}

/// gdb's `$N = 0x...` value of `p/x EXPR`.
fn printed_hex(out: &str, expr_index: usize) -> u64 {
    let tag = format!("${expr_index} = ");
    let line = out
        .lines()
        .find(|l| l.starts_with(&tag))
        .unwrap_or_else(|| panic!("no {tag} in:\n{out}"));
    let v = line[tag.len()..]
        .split_whitespace()
        .find(|w| w.starts_with("0x"))
        .unwrap();
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

fn gdb_elf() -> PathBuf {
    guest("gdb")
}

#[test]
fn registers_memory_step_threads_and_detach() {
    let elf = gdb_elf();
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s"]);
    let out = vm.gdb(
        &elf,
        &[
            "info threads",
            "hbreak k_break",
            "continue",
            "info registers rbx r12 rip cs",
            "x/16xb &gdb_data",
            "p/x $pc",
            "stepi",
            "p/x $pc",
            "info threads",
            "monitor sregs 0",
            "monitor phys 0x9000 8",
            "monitor translate 0x101000 0",
            "detach",
        ],
    );
    let (code, stdout, _) = vm.finish();
    // Two vCPUs, two threads, both stopped at each stop.
    assert!(out.contains("Thread 1.1") && out.contains("Thread 1.2"), "{out}");
    assert!(out.contains("hit Breakpoint 1"), "{out}");
    assert!(out.contains("rbx            0x1122334455667788"), "{out}");
    assert!(out.contains("r12            0x123456789abcdef"), "{out}");
    assert!(out.contains("cs             0x8"), "{out}");
    // x/ shows the ELF's bytes.
    let data = elf_bytes(&elf, sym(&elf, "gdb_data"), 16);
    let shown: Vec<u8> = out
        .lines()
        .filter(|l| l.starts_with("0x10100") && l.contains(":\t"))
        .flat_map(|l| {
            l.split('\t')
                .skip(1)
                .map(|b| u8::from_str_radix(&b[2..], 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(shown, data, "{out}");
    // stepi advances rip by the instruction's length (mov $0x99, %edx: 5 bytes).
    let (before, after) = (printed_hex(&out, 1), printed_hex(&out, 2));
    assert_eq!(before, sym(&elf, "k_break"));
    assert_eq!(after, sym(&elf, "k_next"));
    assert_eq!(after - before, 5);
    // monitor: control registers, physical memory, translation.
    assert!(out.contains("cr3 0x9000") && out.contains("efer 0x500"), "{out}");
    // PML4[0] -> the PDPT at 0xa000 (present, writable; the CPU may have set "accessed").
    assert!(out.contains(" a0 00 00 00 00 00 00\n"), "{out}");
    assert!(out.contains("0x101000\n"), "{out}");
    assert!(out.contains("detached"), "{out}");
    // After detach the guest runs to its normal end.
    assert_eq!(code, GUEST_DONE, "{stdout}");
    assert!(stdout.contains("gdb: done"));
}

#[test]
fn register_and_memory_writes_reach_the_guest() {
    // gdb writes rbx and the byte `go_user`; the guest then takes the ring-3
    // path and spins there, so the run ends with gdb's kill.
    let elf = gdb_elf();
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s"]);
    let out = vm.gdb(
        &elf,
        &[
            "hbreak k_break",
            "continue",
            "set var $rbx = 0xabcdef",
            "set var *(char*)&go_user = 1",
            "set var *(long*)&k_watched = 0x77",
            "p/x $rbx",
            "p/x *(long*)&k_watched",
            "monitor phys 0x101018 1",
            "monitor sreg cr8 0 0",
            "kill",
        ],
    );
    let (code, stdout, err) = vm.finish();
    assert_eq!(printed_hex(&out, 1), 0xabcdef, "{out}");
    assert_eq!(printed_hex(&out, 2), 0x77, "{out}");
    assert!(out.contains("0x00101018: 77"), "{out}");
    assert!(out.contains("ok"), "{out}");
    // gdb kill: 137, after an orderly stop.
    assert_eq!(code, 137, "{stdout}{err}");
    assert!(err.contains("killed by the debugger"), "{err}");
    assert!(!stdout.contains("gdb: done"), "the guest took the ring-3 path");
}

#[test]
fn software_breakpoints() {
    let elf = gdb_elf();
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s"]);
    let out = vm.gdb(
        &elf,
        &["break k_break", "continue", "p/x $pc", "x/1xb k_break", "detach"],
    );
    let (code, _, err) = vm.finish();
    if host_is_pvm() {
        // PVM: int3 at CPL0 is an emulation failure even with
        // KVM_GUESTDBG_USE_SW_BP; berth ends as on any guest fault, and gdb
        // hears the exit code.
        assert_eq!(code, 4, "{err}");
        assert!(
            err.contains("emulation failure") && err.contains("instruction bytes cc"),
            "{err}"
        );
        assert!(out.contains("exited with code 04"), "{out}");
        return;
    }
    assert_eq!(printed_hex(&out, 1), sym(&elf, "k_break"), "{out}");
    // Reads never show the int3: the original `mov $0x99, %edx` (0xba).
    assert!(out.contains(":\t0xba"), "{out}");
    assert_eq!(code, GUEST_DONE, "{err}");
}

#[test]
fn watchpoint_stops_after_the_writing_instruction() {
    let elf = gdb_elf();
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s"]);
    let out = vm.gdb(
        &elf,
        &[
            "watch *(long*)&k_watched",
            "continue",
            "p/x $pc",
            "p/x *(long*)&k_watched",
            "detach",
        ],
    );
    let (code, _, err) = vm.finish();
    assert!(out.contains("Hardware watchpoint 1"), "{out}");
    if host_is_pvm() {
        // PVM: a data breakpoint on a CPL0 store does not fire (as under
        // QEMU's stub here): the guest runs to its end.
        assert!(out.contains("exited with code 0103"), "{out}");
        assert_eq!(code, GUEST_DONE, "{err}");
        return;
    }
    // A data breakpoint traps after the store: rip is the next instruction.
    assert!(
        out.contains("Old value = 0") && out.contains("New value = 4660"),
        "{out}"
    );
    assert_eq!(printed_hex(&out, 1), sym(&elf, "k_after_store"), "{out}");
    assert_eq!(printed_hex(&out, 2), 0x1234, "{out}");
    assert_eq!(code, GUEST_DONE, "{err}");
}

#[test]
fn ring3_breakpoints_and_step() {
    // The ring-3 part: hbreak, stepi and a watchpoint on a CPL3 store.
    let elf = gdb_elf();
    let pvm = host_is_pvm();
    let timeout = if pvm { "3s" } else { "60s" };
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", timeout]);
    let out = vm.gdb(
        &elf,
        &[
            "set var *(char*)&go_user = 1",
            "hbreak u_break",
            "continue",
            "info registers r13 cs",
            "stepi",
            "p/x $pc",
            "watch *(long*)&u_watched",
            "continue",
            "p/x $pc",
            "kill",
        ],
    );
    let (code, _, err) = vm.finish();
    if pvm {
        // PVM runs CPL3 natively: no debug event reaches KVM; the guest
        // spins in ring 3 until the timeout (gdb hears the exit code, or
        // loses the connection if the timeout comes first under load).
        assert!(!out.contains("hit Breakpoint"), "{out}");
        assert_eq!(code, 6, "{err}");
        return;
    }
    assert!(
        out.contains("r13            0x5566") && out.contains("cs             0x23"),
        "{out}"
    );
    assert_eq!(printed_hex(&out, 1), sym(&elf, "u_next"), "{out}");
    assert_eq!(printed_hex(&out, 2), sym(&elf, "u_after_store"), "{out}");
    assert_eq!(code, 137, "{err}");
}

/// A raw GDB remote-protocol client.
struct Raw(UnixStream);

impl Raw {
    fn connect(vm: &Vm) -> Raw {
        let s = UnixStream::connect(&vm.socket).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        Raw(s)
    }

    fn packet(body: &str) -> String {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        format!("${body}#{sum:02x}")
    }

    fn send(&mut self, body: &str) {
        self.0.write_all(Self::packet(body).as_bytes()).unwrap();
    }

    /// Reads one reply packet's body (acks skipped, acked back).
    fn reply(&mut self) -> String {
        let mut byte = [0u8; 1];
        loop {
            self.0.read_exact(&mut byte).expect("a reply within the limit");
            if byte[0] == b'$' {
                break;
            }
        }
        let mut body = Vec::new();
        loop {
            self.0.read_exact(&mut byte).unwrap();
            if byte[0] == b'#' {
                break;
            }
            body.push(byte[0]);
        }
        let mut sum = [0u8; 2];
        self.0.read_exact(&mut sum).unwrap();
        // The stub may have hung up already (after `D`).
        let _ = self.0.write_all(b"+");
        // Run-length encoding: `c*n` repeats c (n - 29) more times.
        let mut out = Vec::new();
        let mut i = 0;
        while i < body.len() {
            if body[i] == b'*' && i + 1 < body.len() {
                let last = *out.last().unwrap();
                out.extend(std::iter::repeat_n(last, usize::from(body[i + 1]) - 29));
                i += 2;
            } else {
                out.push(body[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[test]
fn ctrl_c_stops_a_spinning_guest_and_kill_ends_berth() {
    let elf = gdb_elf();
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s"]);
    let mut g = Raw::connect(&vm);
    g.send("?");
    let stop = g.reply();
    assert!(stop.starts_with('T') || stop.starts_with('S'), "{stop}");
    // go_user = 1: the guest ends in `u_spin` (ring 3; natively on PVM).
    g.send(&format!("M{:x},1:01", sym(&elf, "go_user")));
    assert_eq!(g.reply(), "OK");
    g.send("vCont;c");
    // Nothing stops it on its own; Ctrl-C does.
    g.0.write_all(&[0x03]).unwrap();
    let stop = g.reply();
    assert!(stop.starts_with("T02"), "Ctrl-C stop reply {stop}");
    g.send("k");
    let (code, _, err) = vm.finish();
    assert_eq!(code, 137, "{err}");
}

#[test]
fn malformed_packets_and_disconnects_do_not_hurt_berth() {
    // Line noise, bad checksums, a retransmit request and an overlong
    // packet: the session goes on, as with QEMU's stub (berth's wire layer
    // under gdbstub). The guest is held by --gdb-wait meanwhile.
    let elf = gdb_elf();
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s"]);
    {
        let mut g = Raw::connect(&vm);
        g.send("?");
        let stop = g.reply();
        assert!(stop.starts_with('T') || stop.starts_with('S'), "{stop}");
        g.0.write_all(b"garbage\x00\xff#1").unwrap();
        // A bad checksum is refused with `-`; a `-` gets the last reply again.
        g.0.write_all(b"$m1000,4#00").unwrap();
        let mut nack = [0u8; 1];
        g.0.read_exact(&mut nack).unwrap();
        assert_eq!(&nack, b"-");
        g.0.write_all(b"-").unwrap();
        assert_eq!(g.reply(), stop, "a `-` resends the last packet");
        let mut long = vec![b'$'];
        long.extend(std::iter::repeat_n(b'a', 70_000));
        long.extend(b"#00");
        g.0.write_all(&long).unwrap();
        g.0.read_exact(&mut nack).unwrap();
        assert_eq!(&nack, b"-");
        // An unknown packet gets the empty reply, unmapped memory an error.
        g.send("qFoo:bar");
        assert_eq!(g.reply(), "");
        g.send("m7fff00000000,4");
        let r = g.reply();
        assert!(r.starts_with('E'), "{r}");
        g.send("?");
        assert_eq!(g.reply(), stop, "the session survived all of it");
        // A packet gdbstub cannot parse ends the session; the guest, no
        // longer held, runs on to its normal end.
        let bad = format!("M{:x},1:zz", sym(&elf, "go_user"));
        let _ = g.0.write_all(Raw::packet(&bad).as_bytes());
        let _ = g.0.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 4096];
        let _ = g.0.read(&mut sink);
    }
    let (code, stdout, err) = vm.finish();
    assert_eq!(code, GUEST_DONE, "{stdout}{err}");
    assert!(err.contains("gdb: session ended"), "{err}");

    // A session that continues and hangs up while the guest runs.
    let spin = guest("spin");
    let vm = Vm::start(&spin, &["--timeout", "60s"]);
    vm.wait_output("spin: ready");
    {
        let mut g = Raw::connect(&vm);
        g.send("?");
        g.reply();
        g.send("vCont;c");
    }
    // A third one still works: berth serves again, the guest is alive.
    {
        let mut g = Raw::connect(&vm);
        g.send("?");
        let stop = g.reply();
        assert!(stop.starts_with('T') || stop.starts_with('S'), "{stop}");
        g.send("qfThreadInfo");
        assert_eq!(g.reply(), "m01,02", "one thread per vCPU");
        g.send("D");
        assert_eq!(g.reply(), "OK");
    }
    // SIGTERM while a debugger holds the guest stopped and says nothing:
    // berth ends as usual.
    let mut g = Raw::connect(&vm);
    g.send("?");
    g.reply();
    vm.terminate();
    let (code, stdout, err) = vm.finish();
    assert_eq!(code, 143, "{stdout}{err}");
    drop(g);
}

#[test]
fn a_debugger_that_never_attaches() {
    // --gdb-wait: the vCPUs wait; the timeout ends the run as usual.
    let elf = gdb_elf();
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "1s"]);
    let (code, stdout, err) = vm.finish();
    assert_eq!(code, 6, "{err}");
    assert!(!stdout.contains("gdb: start"), "the guest ran: {stdout}");
    // Without --gdb-wait the guest runs to its end, and the socket is removed.
    let vm = Vm::start(&elf, &["--timeout", "60s"]);
    let socket = vm.socket.clone();
    let (code, stdout, _) = vm.finish();
    assert_eq!(code, GUEST_DONE, "{stdout}");
    assert!(!socket.exists());
}

#[test]
fn bad_gdb_addresses_are_usage_errors() {
    let elf = gdb_elf();
    let dir = TempDir::new("gdb-bad");
    let m = dir.write("m.toml", &machine(&elf, 1, ""));
    for (addr, want) in [
        ("localhost:1234", "expected tcp:HOST:PORT"),
        ("tcp:nohost", "expected tcp:HOST:PORT"),
        ("unix:", "expected tcp:HOST:PORT"),
    ] {
        let mut c = berth();
        c.arg("run").arg(&m).args(["--gdb", addr]);
        let o: Output = run_with_limit(c, LIMIT);
        assert_eq!(o.status.code(), Some(2), "{addr}");
        assert!(stderr(&o).contains(want), "{addr}: {}", stderr(&o));
    }
    // An existing path is refused, not replaced.
    let taken = dir.write("taken", "");
    let mut c = berth();
    c.arg("run")
        .arg(&m)
        .arg("--gdb")
        .arg(format!("unix:{}", taken.display()));
    let o = run_with_limit(c, LIMIT);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("exists already"), "{}", stderr(&o));
    // --gdb-wait needs --gdb.
    let mut c = berth();
    c.arg("run").arg(&m).arg("--gdb-wait");
    assert_eq!(run_with_limit(c, LIMIT).status.code(), Some(2));
}

#[test]
fn software_breakpoint_bytes_are_hidden_and_removed_on_detach() {
    // Raw packets, so nothing runs between insertion and the checks (gdb
    // itself inserts breakpoints only when it resumes).
    let elf = gdb_elf();
    let k_break = sym(&elf, "k_break");
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s"]);
    let mut g = Raw::connect(&vm);
    g.send("?");
    g.reply();
    g.send(&format!("Z0,{k_break:x},1"));
    assert_eq!(g.reply(), "OK");
    // Reads show the original `mov $0x99, %edx` (ba 99 00 00 00), not int3.
    g.send(&format!("m{k_break:x},5"));
    assert_eq!(g.reply(), "ba99000000");
    // So does physical memory through `monitor phys` (qRcmd, hex-encoded).
    let cmd: String = format!("phys {k_break:#x} 1")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    g.send(&format!("qRcmd,{cmd}"));
    let out = g.reply();
    let text: Vec<u8> = (1..out.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(out.get(i..i + 2)?, 16).ok())
        .collect();
    assert!(String::from_utf8_lossy(&text).contains(": ba"), "{out}");
    // A write over the breakpoint changes the byte it will restore.
    g.send(&format!("M{k_break:x},1:ba"));
    assert_eq!(g.reply(), "OK");
    // Detach without removing it: berth removes it, and the guest runs its
    // normal course (an int3 left behind would end it with exit 4 on PVM
    // or a #BP without IDT on hardware).
    g.send("D");
    assert_eq!(g.reply(), "OK");
    let (code, stdout, err) = vm.finish();
    assert_eq!(code, GUEST_DONE, "{stdout}{err}");
}

#[test]
fn protected_mode_without_paging_over_tcp() {
    // mb-low.elf: multiboot ELF32 at 0x8000, entered in 32-bit protected
    // mode with paging off (linear = physical), here through a TCP socket.
    let elf = guest("mb-low");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = TempDir::new("gdb-tcp");
    let m = dir.write("m.toml", &machine(&elf, 1, ""));
    let mut cmd = berth();
    cmd.arg("run")
        .arg(&m)
        .args([
            "--gdb",
            &format!("tcp:127.0.0.1:{port}"),
            "--gdb-wait",
            "--timeout",
            "60s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    // Listening: the port is in /proc/net/tcp in state 0A (LISTEN).
    let want = format!(":{port:04X} 00000000:0000 0A");
    while !std::fs::read_to_string("/proc/net/tcp").unwrap().contains(&want) {
        assert!(started.elapsed() < LIMIT, "berth does not listen on {port}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = Command::new("gdb");
    c.args(["-batch", "-nx"]);
    for e in [
        format!("target remote 127.0.0.1:{port}"),
        "p/x $pc".into(),
        "x/1xw 0x8000".into(),
        "monitor sregs 0".into(),
        "hbreak *0x800d".into(),
        "continue".into(),
        "p/x $pc".into(),
        "stepi".into(),
        "p/x $pc".into(),
        "detach".into(),
    ] {
        c.arg("-ex").arg(e);
    }
    let o = run_with_limit(c, LIMIT);
    let out = format!("{}{}", stdout(&o), stderr(&o));
    let st = wait_with_limit(&mut child, started, LIMIT);
    let entry = 0x800c;
    assert_eq!(printed_hex(&out, 1), entry, "{out}");
    // The multiboot magic at the image's start, as in the ELF.
    assert!(out.contains("0x8000:\t0x1badb002"), "{out}");
    // CR0: PE, no PG; CS: 32-bit (db 1, l 0).
    assert!(out.contains("cr0 0x11 ") || out.contains("cr0 0x10011 "), "{out}");
    assert!(out.contains("l 0 db 1"), "{out}");
    // 0x800d: `mov $0x81c0, %esp` (5 bytes).
    assert_eq!(printed_hex(&out, 2), 0x800d, "{out}");
    assert_eq!(printed_hex(&out, 3), 0x8012, "{out}");
    assert_eq!(st.code(), Some(GUEST_DONE), "{out}");
}

#[test]
fn stepping_does_not_enter_interrupt_handlers_unless_asked() {
    // gdbirq.elf takes LAPIC timer interrupts (1 ms) with IF on and loops
    // at `irq_loop`. Stepping there never lands in the handler
    // (KVM_GUESTDBG_BLOCKIRQ); with `monitor step-irqs on` a step soon does.
    let elf = guest("gdbirq");
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s"]);
    let script = vm.dir.write(
        "steps.gdb",
        r#"hbreak irq_loop
continue
delete
set $t0 = *(int*)&ticks
set $out = 0
set $i = 0
while $i < 40
  stepi
  if (long)$pc != (long)irq_loop && (long)$pc != (long)irq_loop + 3
    set $out = $out + 1
  end
  set $i = $i + 1
end
printf "blocked: out=%d ticks=%d\n", $out, *(int*)&ticks - $t0
monitor step-irqs on
set $in = 0
set $i = 0
while $i < 40 && $in == 0
  stepi
  if (long)$pc >= (long)tick_handler && (long)$pc < (long)tick_handler_end
    set $in = 1
  end
  set $i = $i + 1
end
printf "allowed: in=%d\n", $in
kill
"#,
    );
    let out = vm.gdb(&elf, &[&format!("source {}", script.display())]);
    let (code, stdout, err) = vm.finish();
    assert!(stdout.contains("gdbirq: ticking"), "{stdout}");
    assert!(out.contains("blocked: out=0 ticks=0"), "{out}");
    assert!(out.contains("allowed: in=1"), "{out}");
    assert_eq!(code, 137, "{err}");
}

#[test]
fn scheduler_locking_holds_the_other_vcpus() {
    // `set scheduler-locking on`: gdb resumes only the selected thread; the
    // other vCPU stays parked through the release and is still stopped (its
    // registers readable) at the next stop. `--stats` counts each vCPU's
    // parks: vCPU 1 parks at the start and at the breakpoint, and stays
    // parked through both locked steps.
    let elf = gdb_elf();
    let vm = Vm::start(&elf, &["--gdb-wait", "--timeout", "60s", "--stats"]);
    let out = vm.gdb(
        &elf,
        &[
            "hbreak k_break",
            "continue",
            "set scheduler-locking on",
            "stepi",
            "stepi",
            "p/x $pc",
            "info threads",
            "thread 2",
            "p/x $pc",
            "thread 1",
            "set scheduler-locking off",
            "detach",
        ],
    );
    let (code, _, err) = vm.finish();
    // k_break: mov (5 bytes), then nop (1 byte).
    assert_eq!(printed_hex(&out, 1), sym(&elf, "k_next") + 1, "{out}");
    assert_eq!(printed_hex(&out, 2), 0xfff0, "{out}");
    assert!(!out.contains("E0"), "{out}");
    assert_eq!(code, GUEST_DONE, "{err}");
    assert!(err.contains("stats: vcpu1 exit paused 2\n"), "{err}");
}
