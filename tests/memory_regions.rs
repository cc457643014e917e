//! Guest RAM beyond the first region, as the guest sees it on real KVM: a
//! second anonymous region is RAM; a shared file region keeps the guest's
//! writes in the file, a private one never writes it; a read-only region
//! sends writes to the bus and keeps its data; a huge-page region is RAM or
//! a clear host error before any VM.

mod common;

use common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// Boots guests/test/memread.S with a second region at 0x20000000 (1 MiB,
/// the given options) until it reports, then SIGTERMs it. Returns
/// (value, readback, stderr with --stats).
fn memread(dir: &TempDir, region: &str) -> (String, String, String) {
    let text = machine(&guest("memread"), 1, "").replace(
        "\n[kernel]",
        &format!(
            "\n[[memory]]\nname = \"second\"\nguest_addr = 0x2000_0000\nsize = \"1MiB\"\n{region}\n[kernel]"
        ),
    );
    let f = dir.write("memread.toml", &text);
    let mut child = berth()
        .args(["run", "--stats"])
        .arg(&f)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        use std::io::BufRead as _;
        if out.read_line(&mut l).unwrap() == 0 {
            break;
        }
        let l = l.trim_end().to_string();
        let ready = l == "memread: ready";
        lines.push(l);
        if ready {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        assert!(start.elapsed() < LIMIT, "{lines:?}");
    }
    let status = wait_with_limit(&mut child, start, LIMIT);
    let mut err = String::new();
    use std::io::Read as _;
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(143), "{lines:?}\n{err}");
    let get = |k: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("memread: {k}=")))
            .unwrap_or_else(|| panic!("no {k}: {lines:?}\n{err}"))
            .to_string()
    };
    (get("value"), get("readback"), err)
}

/// A 1 MiB backing file starting with "ABCDEFGH".
fn backing_file(dir: &TempDir) -> std::path::PathBuf {
    let p = dir.0.join("second.img");
    let mut b = b"ABCDEFGH".to_vec();
    b.resize(1 << 20, 0);
    std::fs::write(&p, b).unwrap();
    p
}

const BERTH_PATTERN: &str = "0000006874726562"; // "berth" as a little-endian qword
const FILE_HEAD: &str = "4847464544434241"; // "ABCDEFGH"

fn unhandled_mmio_writes(err: &str) -> u64 {
    let l = err.lines().find(|l| l.starts_with("stats: unhandled ")).unwrap();
    l.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn a_second_anonymous_region_is_ram_the_guest_can_use() {
    guests();
    let dir = TempDir::new("region-anon");
    let (value, readback, err) = memread(&dir, "");
    assert_eq!(value, "0000000000000000");
    assert_eq!(readback, BERTH_PATTERN);
    assert_eq!(unhandled_mmio_writes(&err), 0, "{err}");
}

#[test]
fn a_shared_file_region_keeps_the_guests_writes_in_the_file() {
    guests();
    let dir = TempDir::new("region-shared");
    let img = backing_file(&dir);
    let (value, readback, _) = memread(&dir, &format!("shared = true\nfile = \"{}\"", img.display()));
    assert_eq!(value, FILE_HEAD, "the guest sees the file");
    assert_eq!(readback, BERTH_PATTERN);
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(
        &bytes[..16],
        b"ABCDEFGHberth\0\0\0",
        "the guest's write is in the file"
    );
    assert_eq!(bytes.len(), 1 << 20);
}

#[test]
fn a_private_file_region_never_writes_the_file() {
    guests();
    let dir = TempDir::new("region-private");
    let img = backing_file(&dir);
    let (value, readback, _) = memread(&dir, &format!("file = \"{}\"", img.display()));
    assert_eq!(value, FILE_HEAD);
    assert_eq!(readback, BERTH_PATTERN, "the guest sees its own write");
    assert_eq!(&std::fs::read(&img).unwrap()[..16], b"ABCDEFGH\0\0\0\0\0\0\0\0");
}

#[test]
fn a_readonly_region_sends_writes_to_the_bus_and_keeps_its_data() {
    guests();
    // Anonymous (berth's mapping is writable: only KVM_MEM_READONLY stops
    // the write), and file-backed private and shared (readonly + shared +
    // file: the file opened and mapped read-only).
    for (file, shared) in [(false, false), (true, false), (true, true)] {
        let dir = TempDir::new("region-ro");
        let img = backing_file(&dir);
        let backing = if file {
            format!("shared = {shared}\nfile = \"{}\"", img.display())
        } else {
            String::new()
        };
        let (value, readback, err) = memread(&dir, &format!("readonly = true\n{backing}"));
        let case = format!("file = {file}, shared = {shared}");
        assert_eq!(value, if file { FILE_HEAD } else { "0000000000000000" }, "{case}");
        assert_eq!(readback, "0000000000000000", "{case}: the write did not land");
        // The write exited as MMIO and reached the bus, where nothing claims it.
        assert_eq!(unhandled_mmio_writes(&err), 1, "{case}\n{err}");
        assert!(err.contains("stats: exit mmio-write 1"), "{case}\n{err}");
        assert_eq!(&std::fs::read(&img).unwrap()[..16], b"ABCDEFGH\0\0\0\0\0\0\0\0");
    }
}

#[test]
fn a_hugepage_region_is_ram_or_a_clear_host_error() {
    guests();
    let dir = TempDir::new("region-huge");
    let free: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    if free >= 1 {
        let text = "hugepages = true\n".replace("1MiB", "2MiB");
        let (value, readback, _) = memread(&dir, &text);
        assert_eq!(
            (value.as_str(), readback.as_str()),
            ("0000000000000000", BERTH_PATTERN)
        );
        return;
    }
    // No huge pages on this host: the mapping fails before any VM, exit 3,
    // naming the memslot.
    let text = machine(&guest("memread"), 1, "").replace(
        "\n[kernel]",
        "\n[[memory]]\nname = \"huge\"\nguest_addr = 0x2000_0000\nsize = \"2MiB\"\nhugepages = true\n[kernel]",
    );
    let f = dir.write("huge.toml", &text);
    let (code, err, created) = run_and_trace(&["run", f.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(!created, "{err}");
    assert!(
        err.contains("cannot map 0x200000 bytes for memslot 1 (huge)"),
        "{err}"
    );
}
