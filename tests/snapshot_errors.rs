//! Snapshot and restore refusals and failures on real KVM: the control
//! socket's protocol and its error replies; every kind of bad snapshot is
//! refused with its exit code before any VM exists; a full disk fails the
//! snapshot, not the VM; a VM in S3 refuses a pause at once; `restore
//! --verify` finds a changed memory byte.

mod common;

use common::snapshot::*;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Memory files carry a checksum over their non-zero pages: `restore
/// --verify` checks it before anything starts (exit 7 on a changed byte);
/// a sound snapshot passes and runs.
#[test]
fn restore_verify_finds_a_changed_memory_byte() {
    guests();
    let dir = TempDir::new("snap-verify");
    let f = dir.write("spin.toml", &machine(&guest("spin"), 1, ""));
    let snap = dir.0.join("snap");
    snapshot_at("spin: ready", &snap, &f);
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
