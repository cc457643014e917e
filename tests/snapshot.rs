//! Snapshot and restore on real KVM: `--snapshot-at` then `berth restore`
//! continues the guest exactly (serial output and recorder digests equal an
//! uninterrupted run's) in both irqchip modes; the control socket's
//! protocol and its error replies; incremental snapshots hold the pages
//! dirtied since their base; every kind of bad snapshot is refused with its
//! exit code before any VM exists.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn config(name: &str) -> PathBuf {
    repo().join("configs").join(format!("{name}.toml"))
}

fn run(args: &[&str]) -> Output {
    guests();
    let mut c = berth();
    c.args(args);
    run_with_limit(c, LIMIT)
}

fn recorder_digests(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("stats: recorder "))
        .map(str::to_string)
        .collect()
}

/// On PVM the probe's level-triggered count is 2 or 3 in any run, restored
/// or not (tests/irq.rs: the EOI reaches the IOAPIC as a deferred request
/// and races the line change): there, that one number is not compared.
fn level_race(out: &str) -> String {
    if !host_is_pvm() {
        return out.to_string();
    }
    out.lines()
        .map(|l| match l.split_once(" fired=") {
            Some((head, n)) if l.starts_with("probe: level gsi=") && (n == "2" || n == "3") => {
                format!("{head} fired=2-or-3\n")
            }
            _ => format!("{l}\n"),
        })
        .collect()
}

/// Snapshot the probe at `marker`, restore in a new process: the two halves
/// of the serial output and the final recorder digests equal an
/// uninterrupted run's.
fn split_run_equals_whole(machine: &str, marker: &str) {
    let dir = TempDir::new("snap-eq");
    let snap = dir.0.join("snap");
    let cfg = config(machine);
    let cfg = cfg.to_str().unwrap();
    let whole = run(&["run", "--stats", cfg]);
    assert_eq!(whole.status.code(), Some(1), "{}", stderr(&whole));
    let first = run(&[
        "run",
        "--stats",
        "--snapshot-at",
        marker,
        "--snapshot-to",
        snap.to_str().unwrap(),
        cfg,
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("berth: snapshot written to"),
        "{}",
        stderr(&first)
    );
    assert!(stdout(&first).contains(marker));
    let second = run(&["restore", "--stats", snap.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert_eq!(
        level_race(&format!("{}{}", stdout(&first), stdout(&second))),
        level_race(&stdout(&whole)),
        "{machine} at {marker:?}"
    );
    assert_eq!(
        recorder_digests(&stderr(&second)),
        recorder_digests(&stderr(&whole))
    );
    assert!(!recorder_digests(&stderr(&whole)).is_empty());
}

#[test]
fn restore_continues_exactly_kernel_irqchip() {
    // After SMP bring-up; in the interrupt tests (line raised, vector
    // pending); just before the coalesced recorder writes.
    for marker in [
        "probe: smp online=2",
        "probe: ioapic pin=23",
        "probe: gsi=10",
        "probe: level gsi=12",
    ] {
        split_run_equals_whole("irq-kernel-2", marker);
    }
}

#[test]
fn restore_continues_exactly_split_irqchip() {
    for marker in [
        "probe: smp online=2",
        "probe: ioapic pin=23",
        "probe: gsi=10",
        "probe: level gsi=12",
    ] {
        split_run_equals_whole("irq-split-2", marker);
    }
}

/// A running berth with a control socket; killed on drop.
struct Vm {
    child: Child,
    socket: PathBuf,
    out: BufReader<std::process::ChildStdout>,
}

impl Vm {
    fn start(args: &[&str], socket: &Path, wait_for: &str) -> Vm {
        guests();
        let mut c = berth();
        c.args(args)
            .arg("--control")
            .arg(socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let start = Instant::now();
        let mut line = String::new();
        while !line.contains(wait_for) {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "berth ended before {wait_for:?}"
            );
            assert!(start.elapsed() < LIMIT, "no {wait_for:?}");
        }
        while !socket.exists() {
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("berth ended ({st}) before its socket existed: {err}");
            }
            assert!(start.elapsed() < LIMIT, "no control socket");
            std::thread::sleep(Duration::from_millis(5));
        }
        Vm {
            child,
            socket: socket.to_path_buf(),
            out,
        }
    }

    /// Sends raw bytes on a new connection, then reads one reply line.
    fn raw(&self, bytes: &[u8], close_write: bool) -> String {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        // A refused second client may find the socket closed already: its
        // reply is waiting all the same.
        let _ = s.write_all(bytes);
        if close_write {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        // Shut the socket itself down: a child another test forks at this
        // moment holds a copy of the fd until its exec, and the server
        // would take this client for still connected.
        let _ = r.get_ref().shutdown(std::net::Shutdown::Both);
        line
    }

    fn request(&self, json: &str) -> serde_json::Value {
        serde_json::from_str(&self.raw(format!("{json}\n").as_bytes(), false)).unwrap()
    }

    fn wait(mut self) -> Output {
        let status = wait_with_limit(&mut self.child, Instant::now(), LIMIT);
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let mut err = Vec::new();
        let _ = self.child.stderr.take().unwrap().read_to_end(&mut err);
        Output {
            status,
            stdout: rest.into_bytes(),
            stderr: err,
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spin_machine(dir: &TempDir, vcpus: u32, extra: &str) -> PathBuf {
    dir.write("spin.toml", &machine(&guest("spin"), vcpus, extra))
}

#[test]
fn control_socket_protocol_and_errors() {
    let dir = TempDir::new("ctl");
    let m = spin_machine(&dir, 2, "");
    let sock = dir.0.join("ctl.sock");
    let vm = Vm::start(&["run", m.to_str().unwrap()], &sock, "spin: ready");
    let ok = |v: &serde_json::Value| v["ok"] == serde_json::Value::Bool(true);

    let s = vm.request(r#"{"cmd":"stats"}"#);
    assert!(ok(&s) && s["paused"] == false && s["vcpus"] == 2, "{s}");
    // Garbage, an unknown command, a half-written line: error replies.
    for bad in [
        &b"hello\n"[..],
        b"{\"cmd\":\"fly\"}\n",
        b"{\"cmd\":\"snapshot\"}\n",
        b"\n",
    ] {
        let r: serde_json::Value = serde_json::from_str(&vm.raw(bad, false)).unwrap();
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap().len() > 5, "{r}");
    }
    let r: serde_json::Value = serde_json::from_str(&vm.raw(b"{\"cmd\":\"pa", true)).unwrap();
    assert!(r["error"].as_str().unwrap().contains("incomplete"), "{r}");
    // A second client while one is connected.
    // (The first is being served once it has had a reply: no fixed wait.)
    let mut first = UnixStream::connect(&sock).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    first.write_all(b"{\"cmd\":\"stats\"}\n").unwrap();
    let mut reply = String::new();
    BufReader::new(&first).read_line(&mut reply).unwrap();
    assert!(reply.contains("\"ok\":true"), "{reply}");
    let r: serde_json::Value = serde_json::from_str(&vm.raw(b"{\"cmd\":\"stats\"}\n", false)).unwrap();
    assert!(r["error"].as_str().unwrap().contains("another client"), "{r}");
    let _ = first.shutdown(std::net::Shutdown::Both);
    drop(first);
    // Pause, resume.
    let p = vm.request(r#"{"cmd":"pause"}"#);
    assert!(ok(&p), "{p}");
    assert_eq!(vm.request(r#"{"cmd":"stats"}"#)["paused"], true);
    assert!(ok(&vm.request(r#"{"cmd":"resume"}"#)));
    assert_eq!(vm.request(r#"{"cmd":"stats"}"#)["paused"], false);
    // A snapshot into an existing directory, or one that cannot be
    // written: an error reply, the existing directory untouched, the VM on.
    let existing = dir.0.join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("keep"), "x").unwrap();
    let r = vm.request(&format!(r#"{{"cmd":"snapshot","dir":"{}"}}"#, existing.display()));
    assert!(r["error"].as_str().unwrap().contains("exists already"), "{r}");
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 1);
    let blocked = dir.0.join("a-file");
    std::fs::write(&blocked, "").unwrap();
    let r = vm.request(&format!(
        r#"{{"cmd":"snapshot","dir":"{}/snap"}}"#,
        blocked.display()
    ));
    assert!(r["error"].as_str().unwrap().contains("cannot write"), "{r}");
    let r = vm.request(r#"{"cmd":"snapshot","dir":"/nonexistent-dir/x","incremental":true}"#);
    assert!(r["error"].as_str().unwrap().contains("previous snapshot"), "{r}");
    assert_eq!(vm.request(r#"{"cmd":"stats"}"#)["paused"], false);
    // A good snapshot, through `berth ctl`.
    let snap = dir.0.join("snap");
    let o = run(&["ctl", sock.to_str().unwrap(), "snapshot", snap.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"ok\":true"));
    assert!(snap.join("manifest.json").exists());
    // ctl's own errors: exit 10 for an error reply, 2 for usage.
    let o = run(&["ctl", sock.to_str().unwrap(), "snapshot", snap.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    assert!(stderr(&o).contains("exists already"));
    let o = run(&["ctl", sock.to_str().unwrap(), "dance"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(ok(&vm.request(r#"{"cmd":"stop"}"#)));
    let out = vm.wait();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!sock.exists(), "the socket file is removed at exit");
    // The snapshot of the spinning guest restores and runs on.
    let sock2 = dir.0.join("ctl2.sock");
    let vm = Vm::start(&["restore", snap.to_str().unwrap()], &sock2, "");
    assert_eq!(vm.request(r#"{"cmd":"stats"}"#)["vcpus"], 2);
    assert!(ok(&vm.request(r#"{"cmd":"stop"}"#)));
    assert_eq!(vm.wait().status.code(), Some(0));
}

/// Page numbers an incremental snapshot holds for slot 0.
fn manifest(dir: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    serde_json::from_str(&t[..t.rfind("sha256:").unwrap()]).unwrap()
}

#[test]
fn incremental_snapshot_holds_the_dirtied_pages() {
    let dir = TempDir::new("inc");
    let m = dir.write(
        "pages.toml",
        &machine(&guest("pages"), 1, "").replace("size = \"128MiB\"", "size = \"128MiB\"\ndirty_log = true"),
    );
    let base = dir.0.join("base");
    let o = run(&[
        "run",
        "--snapshot-at",
        "pages: one",
        "--snapshot-to",
        base.to_str().unwrap(),
        m.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sock = dir.0.join("s");
    let vm = Vm::start(
        &["restore", "--stats", base.to_str().unwrap()],
        &sock,
        "pages: two",
    );
    let st = vm.request(r#"{"cmd":"stats"}"#);
    assert_eq!(st["dirty_pages"]["slot0"], 10, "{st}");
    let inc = dir.0.join("inc");
    let r = vm.request(&format!(
        r#"{{"cmd":"snapshot","dir":"{}","incremental":true}}"#,
        inc.display()
    ));
    assert_eq!(r["ok"], true, "{r}");
    let pages: Vec<u64> = manifest(&inc)["memory"][0]["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    // The 8 pages written after "pages: one" (0x810000..0x818000), and the
    // guest's stack (0x101010..0x105010, its top two pages: `call fill` and
    // the print routines). Nothing else: the page tables' accessed/dirty
    // bits were already set before the base snapshot.
    let mut want: Vec<u64> = (0x810..0x818).collect();
    want.extend([0x104, 0x105]);
    want.sort();
    assert_eq!(pages, want);
    assert_eq!(std::fs::metadata(inc.join("mem-0.bin")).unwrap().len(), 10 * 4096);
    let r = vm.request(r#"{"cmd":"stop"}"#);
    assert_eq!(r["ok"], true, "{r}");
    let out = vm.wait();
    // Everything dirtied was in the snapshot just written.
    let line = stderr(&out)
        .lines()
        .find(|l| l.starts_with("stats: dirty slot 0 region "))
        .map(str::to_string);
    assert!(
        line.as_deref().is_some_and(|l| l.ends_with(" pages 0")),
        "{line:?}"
    );
    // The chain restores: a full snapshot of it has both page sets.
    let sock = dir.0.join("s2");
    let vm = Vm::start(&["restore", inc.to_str().unwrap()], &sock, "");
    let full = dir.0.join("full");
    let r = vm.request(&format!(r#"{{"cmd":"snapshot","dir":"{}"}}"#, full.display()));
    assert_eq!(r["ok"], true, "{r}");
    vm.request(r#"{"cmd":"stop"}"#);
    vm.wait();
    let mem = std::fs::read(full.join("mem-0.bin")).unwrap();
    let q = |at: usize| u64::from_le_bytes(mem[at..at + 8].try_into().unwrap());
    for i in 0..8 {
        assert_eq!(q(0x800000 + i * 4096), 0x1111);
        assert_eq!(q(0x810000 + i * 4096), 0x2222);
    }
}

/// A full snapshot of the probe (paused right after its SMP bring-up).
fn probe_snapshot(dir: &TempDir) -> PathBuf {
    let snap = dir.0.join("snap");
    let o = run(&[
        "run",
        "--snapshot-at",
        "probe: smp online=2",
        "--snapshot-to",
        snap.to_str().unwrap(),
        config("irq-kernel-2").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    snap
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let o = Command::new("cp")
            .arg("--sparse=always")
            .arg(e.path())
            .arg(to.join(e.file_name()))
            .status()
            .unwrap();
        assert!(o.success());
    }
}

/// Rewrites the manifest through `f` and gives it a valid checksum.
fn rewrite_manifest(dir: &Path, f: impl Fn(&mut serde_json::Value)) {
    use sha2::{Digest, Sha256};
    let mut m = manifest(dir);
    f(&mut m);
    let mut text = serde_json::to_string_pretty(&m).unwrap();
    text.push('\n');
    let digest: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    text.push_str(&format!("sha256:{digest}\n"));
    std::fs::write(dir.join("manifest.json"), text).unwrap();
}

#[test]
fn bad_snapshots_are_refused_before_any_vm() {
    let dir = TempDir::new("bad-snap");
    let snap = probe_snapshot(&dir);
    let case = |name: &str, damage: &dyn Fn(&Path), code: i32, message: &str| {
        let d = dir.0.join(name);
        copy_dir(&snap, &d);
        damage(&d);
        let o = run(&["restore", d.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(code), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(message), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one message: {err}");
        assert!(stdout(&o).is_empty(), "{name}: the guest ran");
    };
    let truncate = |p: PathBuf| {
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len / 2).unwrap();
    };
    case(
        "truncated-state",
        &|d| truncate(d.join("state.json")),
        7,
        "truncated",
    );
    case(
        "truncated-manifest",
        &|d| truncate(d.join("manifest.json")),
        7,
        "manifest",
    );
    case(
        "truncated-memory",
        &|d| truncate(d.join("mem-0.bin")),
        7,
        "truncated",
    );
    case(
        "corrupted-state",
        &|d| {
            let p = d.join("state.json");
            let mut b = std::fs::read(&p).unwrap();
            let i = b.len() / 2;
            b[i] ^= 1;
            std::fs::write(&p, b).unwrap();
        },
        7,
        "checksum",
    );
    case(
        "corrupted-manifest",
        &|d| {
            let p = d.join("manifest.json");
            let t = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, t.replacen("\"slot\": 0", "\"slot\": 1", 1)).unwrap();
        },
        7,
        "checksum",
    );
    case(
        "wrong-version",
        &|d| rewrite_manifest(d, |m| m["version"] = 99.into()),
        7,
        "format version 99",
    );
    case(
        "other-machine",
        &|d| rewrite_manifest(d, |m| m["plan_sha256"] = "00".into()),
        8,
        "another machine",
    );
    case(
        "missing-memory",
        &|d| std::fs::remove_file(d.join("mem-0.bin")).unwrap(),
        7,
        "missing memory file",
    );
    case(
        "not-a-snapshot",
        &|d| std::fs::remove_file(d.join("manifest.json")).unwrap(),
        7,
        "manifest",
    );
    // --machine must give the same plan.
    let o = run(&[
        "restore",
        "--machine",
        config("irq-kernel-1").to_str().unwrap(),
        snap.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(stderr(&o).contains("another machine"));
    let o = run(&[
        "restore",
        "--machine",
        config("irq-kernel-2").to_str().unwrap(),
        "--timeout",
        "20s",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // --snapshot-to an existing directory: refused before the VM starts.
    let o = run(&[
        "run",
        "--snapshot-at",
        "x",
        "--snapshot-to",
        snap.to_str().unwrap(),
        config("irq-kernel-2").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    assert!(stderr(&o).contains("--snapshot-to") && stderr(&o).contains("exists already"));
    assert!(stdout(&o).is_empty());
    // A control socket path that exists.
    let o = run(&[
        "run",
        "--control",
        snap.join("state.json").to_str().unwrap(),
        config("irq-kernel-2").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn restore_continues_the_testdev_guest() {
    // fw-cfg (selected item, DMA), pc-testdev (data register, iomem, flush
    // page) are restored as saved mid-test. (Not the PCI lines: the guest
    // ends two lines later, and a pause that arrives after the guest ended
    // fails the snapshot, as it must.)
    let dir = TempDir::new("snap-testdev");
    let m = dir.write(
        "m.toml",
        &(machine(&guest("testdev"), 1, "")
            .replace("cmdline = \"console=ttyS0\"", "cmdline = \"testdev.elf\"")
            .replace("size = \"128MiB\"", "size = \"64MiB\"")
            + "\n[[device]]\nkind = \"pc-testdev\"\n\n[[device]]\nkind = \"fw-cfg\"\n\n[[device]]\nkind = \"pci\"\n"),
    );
    let m = m.to_str().unwrap();
    let whole = run(&["run", m]);
    assert_eq!(whole.status.code(), Some(0), "{}", stderr(&whole));
    assert!(stdout(&whole).contains("testdev: failures=0"));
    for marker in [
        "testdev: iomem-q ok",
        "testdev: fwcfg-id ok",
        "testdev: dma-ctl ok",
        "testdev: dma-name ok",
    ] {
        let snap = dir.0.join(marker.replace([':', ' '], "-"));
        let snap = snap.to_str().unwrap();
        let first = run(&["run", "--snapshot-at", marker, "--snapshot-to", snap, m]);
        assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
        let second = run(&["restore", snap]);
        assert_eq!(second.status.code(), Some(0), "{marker}: {}", stderr(&second));
        assert_eq!(
            format!("{}{}", stdout(&first), stdout(&second)),
            stdout(&whole),
            "{marker}"
        );
    }
}

#[test]
fn a_full_disk_fails_the_snapshot_not_the_vm() {
    // A 64 KiB tmpfs cannot hold the snapshot (its state alone is ~48 KiB,
    // plus the spinning guest's pages). Needs mount(2): skipped without it.
    let dir = TempDir::new("full-disk");
    let small = dir.0.join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let m = spin_machine(&dir, 2, "");
    let sock = dir.0.join("ctl.sock");
    let vm = Vm::start(&["run", m.to_str().unwrap()], &sock, "spin: ready");
    let target = small.join("snap");
    let r = vm.request(&format!(r#"{{"cmd":"snapshot","dir":"{}"}}"#, target.display()));
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("No space left"), "{r}");
    // Nothing is left behind, and the VM runs on unpaused.
    assert_eq!(std::fs::read_dir(&small).unwrap().count(), 0);
    let s = vm.request(r#"{"cmd":"stats"}"#);
    assert_eq!(s["paused"], false, "{s}");
    assert_eq!(vm.request(r#"{"cmd":"stop"}"#)["ok"], true);
    assert_eq!(vm.wait().status.code(), Some(0));
}

/// The CMOS/RTC is saved (it was once silently left out: its bus entry is
/// the RTC timer wrapper): a snapshot after the RTC alarm holds register B
/// with AIE set, and the restored guest goes on to its periodic interrupt.
#[test]
fn cmos_rtc_state_is_saved_and_restored() {
    guests();
    let dir = TempDir::new("snap-rtc");
    let f = dir.write("rtc.toml", &machine(&guest("rtc"), 1, ""));
    let snap = dir.0.join("snap");
    let first = run(&[
        "run",
        "--snapshot-at",
        "rtc: alarm irq",
        "--snapshot-to",
        snap.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap.join("state.json")).unwrap()).unwrap();
    let cmos = state["devices"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("cmos@pio:0x70"))
        .unwrap_or_else(|| {
            panic!(
                "no cmos state: {:?}",
                state["devices"].as_object().unwrap().keys()
            )
        })
        .1
        .to_string();
    assert!(cmos.contains("\"ram\""), "{cmos}");
    let v: serde_json::Value = serde_json::from_str(&cmos).unwrap();
    let reg_b = v["ram"][0x0b].as_u64().unwrap();
    assert_eq!(reg_b & 0x20, 0x20, "register B has AIE: {cmos}");
    let second = run(&["restore", "--timeout", "30s", snap.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(stdout(&second).contains("rtc: done"), "{}", stdout(&second));
}

/// A VM suspended to RAM (ACPI S3) is refused a pause or a snapshot at once,
/// with an error reply naming S3, and keeps running (the 5 s pause limit
/// is not what answers).
#[test]
fn a_vm_in_s3_refuses_pause_and_snapshot_at_once() {
    guests();
    let dir = TempDir::new("snap-s3");
    let m = dir.write("s3never.toml", &machine(&guest("s3never"), 1, ""));
    let sock = dir.0.join("ctl.sock");
    let vm = Vm::start(
        &["run", "--timeout", "60s", m.to_str().unwrap()],
        &sock,
        "s3: suspending",
    );
    let start = Instant::now();
    while vm.request(r#"{"cmd":"stats"}"#)["suspended"] != true {
        assert!(start.elapsed() < LIMIT, "the guest never reached S3");
    }
    for req in [
        r#"{"cmd":"pause"}"#.to_string(),
        format!(r#"{{"cmd":"snapshot","dir":"{}"}}"#, dir.0.join("snap").display()),
    ] {
        let t = Instant::now();
        let r = vm.request(&req);
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap().contains("ACPI S3"), "{r}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    assert!(!dir.0.join("snap").exists());
    let s = vm.request(r#"{"cmd":"stats"}"#);
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(s["paused"], false, "{s}");
    assert!(vm.request(r#"{"cmd":"stop"}"#)["ok"] == true);
    let out = vm.wait();
    assert!(out.status.code().is_some(), "{}", stderr(&out));
}

/// A restored machine follows its own `on_reboot`: with "restart", the
/// restored guest's triple fault boots the machine afresh (its banner comes
/// again), as `berth run` does, until the timeout.
#[test]
fn a_restored_guest_reset_follows_on_reboot_restart() {
    guests();
    let dir = TempDir::new("snap-reboot");
    let text = machine(&guest("triple"), 1, "").replace("vcpus = 1", "vcpus = 1\non_reboot = \"restart\"");
    let f = dir.write("triple.toml", &text);
    let snap = dir.0.join("snap");
    let first = run(&[
        "run",
        "--snapshot-at",
        "triple: start",
        "--snapshot-to",
        snap.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let second = run(&["restore", "--timeout", "3s", snap.to_str().unwrap()]);
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(6), "restarts until the timeout: {err}");
    assert!(
        stdout(&second).contains("triple: start"),
        "booted again: {}",
        stdout(&second)
    );
    assert!(err.contains("rebuilding the machine"), "{err}");
}

/// A region the machine file shares with its file comes back as a private
/// copy of the snapshot: the restore says so and never writes the file.
#[test]
fn a_shared_file_region_is_restored_private_and_said_so() {
    guests();
    let dir = TempDir::new("snap-shared");
    let shm = dir.0.join("shm.bin");
    std::fs::write(&shm, vec![0x5au8; 2 << 20]).unwrap();
    let extra = format!(
        "\n[[memory]]\nname = \"shm\"\nguest_addr = 0x10000000\nsize = \"2MiB\"\nshared = true\nfile = \"{}\"\n",
        shm.display()
    );
    let f = dir.write("spin.toml", &machine(&guest("spin"), 1, &extra));
    let snap = dir.0.join("snap");
    let first = run(&[
        "run",
        "--snapshot-at",
        "spin: ready",
        "--snapshot-to",
        snap.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let second = run(&["restore", "--timeout", "500ms", snap.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(6), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("memory region \"shm\" (shared = true")
            && stderr(&second).contains("restored as a private copy"),
        "{}",
        stderr(&second)
    );
    assert_eq!(std::fs::read(&shm).unwrap(), vec![0x5au8; 2 << 20]);
}

/// Memory files carry a checksum over their non-zero pages: `restore
/// --verify` checks it before anything starts (exit 7 on a changed byte);
/// a sound snapshot passes and runs.
#[test]
fn restore_verify_finds_a_changed_memory_byte() {
    guests();
    let dir = TempDir::new("snap-verify");
    let f = dir.write("spin.toml", &machine(&guest("spin"), 1, ""));
    let snap = dir.0.join("snap");
    let first = run(&[
        "run",
        "--snapshot-at",
        "spin: ready",
        "--snapshot-to",
        snap.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let ok = run(&[
        "restore",
        "--verify",
        "--timeout",
        "500ms",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(ok.status.code(), Some(6), "{}", stderr(&ok));
    // The kernel's first page (1 MiB) is data in the sparse file.
    use std::os::unix::fs::FileExt;
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(snap.join("mem-0.bin"))
        .unwrap();
    let mut b = [0u8; 1];
    mem.read_exact_at(&mut b, 0x100010).unwrap();
    mem.write_all_at(&[b[0] ^ 0x40], 0x100010).unwrap();
    let bad = run(&["restore", "--verify", snap.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(7), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("mem-0.bin: corrupted: the memory does not match its checksum"),
        "{}",
        stderr(&bad)
    );
}

/// `--snapshot-at` stops the guest exactly after the marker line, even when
/// the guest prints on at once: the snapshot run's output ends with the
/// marker, and the restore's output begins with the next line.
#[test]
fn snapshot_at_stops_exactly_after_the_marker_line() {
    guests();
    let dir = TempDir::new("snap-exact");
    let m = repo().join("bench/machines/snap-pvh.toml");
    for i in 0..5 {
        let snap = dir.0.join(format!("snap{i}"));
        let first = run(&[
            "run",
            "--snapshot-at",
            "bench: ready",
            "--snapshot-to",
            snap.to_str().unwrap(),
            m.to_str().unwrap(),
        ]);
        assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
        assert_eq!(stdout(&first), "bench: ready\n");
        let second = run(&["restore", snap.to_str().unwrap()]);
        assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
        assert_eq!(stdout(&second), "bench: resumed\n");
    }
}
