//! kernel_image: bytes → a kernel image file → the same steps `berth run`
//! takes with it: `config::parse` of a fixed machine file naming that image
//! (validation detects the format: bzImage, PVH, multiboot, ELF64), `plan`,
//! `boot::load_kernel` into a small guest memory (4 MiB at 0) and, when it
//! loaded, `boot::write_boot_structures`; then the same again with the image
//! also given as the initrd (initrd placement). `boot::format::detect_bytes`
//! also runs on the raw bytes.
//!
//! berth takes the image by path, so the bytes go to one in-memory file per
//! process (a memfd, named as `/proc/self/fd/N`; falls back to a file in
//! /dev/shm or the temp dir), rewritten for every input. The guest memory is
//! mapped once and reused. Errors are fine; panics are not. New image formats
//! are reached through the same entry points as they are added.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vm_memory::GuestMemoryMmap;

/// The machine the image is loaded into; `@KERNEL@` becomes the image path.
const MACHINE: &str = r#"
[machine]
vcpus = 1

[[memory]]
name = "ram"
guest_addr = 0x0
size = "4MiB"

[kernel]
path = "@KERNEL@"
cmdline = "console=ttyS0"
"#;

/// The same, with the image as its own initrd.
const INITRD: &str = "initrd = \"@KERNEL@\"\n";

/// A valid image, written before the fixture's own parse.
const BOOTSTRAP_IMAGE: &[u8] = include_bytes!("../fixtures/elf64");

struct Fixture {
    machine_file: PathBuf,
    machine_text: String,
    machine_text_initrd: String,
    mem: GuestMemoryMmap,
    image: File,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (image, image_path) = image_file();
        write_image(&image, BOOTSTRAP_IMAGE);
        let machine_file = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/kernel_image.toml"));
        let image_name = image_path.to_str().expect("UTF-8 image path");
        let machine_text = MACHINE.replace("@KERNEL@", image_name);
        let machine_text_initrd = format!("{MACHINE}{INITRD}").replace("@KERNEL@", image_name);
        let cfg = berth::config::parse(&machine_file, &machine_text)
            .unwrap_or_else(|e| panic!("fixture machine file is invalid: {e}"));
        let plan = berth::plan::plan(&cfg);
        let mem = berth::memory::create(&plan.memslots, |p| cfg.resolve(p)).expect("guest memory");
        Fixture {
            machine_file,
            machine_text,
            machine_text_initrd,
            mem,
            image,
        }
    })
}

/// A writable file and a path that opens it.
fn image_file() -> (File, PathBuf) {
    // SAFETY: a valid NUL-terminated name; on success the new fd is ours.
    let fd = unsafe { libc::memfd_create(c"berth-fuzz-kernel".as_ptr(), libc::MFD_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let f = unsafe { File::from_raw_fd(fd) };
        let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        return (f, path);
    }
    let dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("berth-fuzz-kernel-{}", std::process::id()));
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("kernel image scratch file");
    (f, path)
}

fn write_image(mut f: &File, data: &[u8]) {
    f.set_len(0).expect("truncate image");
    f.seek(SeekFrom::Start(0)).expect("seek image");
    f.write_all(data).expect("write image");
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    write_image(&fx.image, data);

    // Format detection on the raw bytes (the first 8 KiB and the whole file).
    let head = &data[..data.len().min(berth::boot::format::MULTIBOOT_SEARCH)];
    let detected = berth::boot::format::detect_bytes(head, &mut std::io::Cursor::new(data));
    if verbose() {
        eprintln!("detected: {detected:?}");
    }

    // What `berth run` does: validate (detects the format), plan, load.
    if boot(&fx.machine_file, &fx.machine_text, &fx.mem) {
        boot(&fx.machine_file, &fx.machine_text_initrd, &fx.mem);
    }
});

/// Parses, plans, loads and writes the boot structures; true if it loaded.
fn boot(machine_file: &Path, machine_text: &str, mem: &GuestMemoryMmap) -> bool {
    let cfg = match berth::config::parse(machine_file, machine_text) {
        Ok(cfg) => cfg,
        Err(e) => {
            let msg = e.to_string();
            if verbose() {
                eprintln!("rejected by validation: {msg}");
            }
            return false;
        }
    };
    let plan = berth::plan::plan(&cfg);
    match berth::boot::load_kernel(&cfg, &plan, mem) {
        Ok(k) => {
            check_loaded(&plan, &k);
            let loaded = format!("{k:?}");
            let boot = berth::boot::write_boot_structures(&plan, mem, &k).map_err(|e| e.to_string());
            if verbose() {
                eprintln!("loaded: {loaded}; boot structures: {boot:?}");
            }
            true
        }
        Err(e) => {
            let msg = e.to_string();
            if verbose() {
                eprintln!("load failed: {msg}");
            }
            false
        }
    }
}

/// Size of the guest RAM in `MACHINE`.
const RAM: u64 = 4 << 20;

/// What `LoadedKernel`'s documentation promises about a successful load.
fn check_loaded(plan: &berth::plan::Plan, k: &berth::boot::LoadedKernel) {
    // "Image format (matches the plan's protocol)".
    let format = format!("{:?}", k.format).to_lowercase();
    let want = match plan.boot.protocol.as_str() {
        "linux-64bit" => "elf64",
        "linux-bzimage" => "bzimage",
        other => other,
    };
    assert_eq!(
        format, want,
        "loaded format disagrees with the plan's protocol: {k:?}"
    );
    // The image, bss included, lies in guest RAM. (An empty image is let
    // through wherever it claims to be: see regress-multiboot-empty-image.)
    assert!(k.load <= k.end, "image ends before it starts: {k:?}");
    if k.end > k.load {
        assert!(
            k.end <= RAM,
            "image {:#x}..{:#x} outside RAM: {k:?}",
            k.load,
            k.end
        );
    }
    // The 32-bit entry registers.
    match want {
        "multiboot" => assert_eq!(k.entry_regs.0, 0x2bad_b002, "{k:?}"),
        "pvh" => assert_eq!(k.entry_regs.0, 0, "{k:?}"),
        _ => assert_eq!(k.entry_regs, (0, 0), "{k:?}"),
    }
    // The initrd is page aligned, in RAM, and clear of the image.
    if let Some((addr, size)) = k.initrd {
        assert_eq!(addr % 4096, 0, "initrd at {addr:#x}: {k:?}");
        assert!(
            addr.checked_add(size).is_some_and(|e| e <= RAM),
            "initrd {addr:#x}+{size:#x} outside RAM"
        );
        if size > 0 {
            assert!(
                addr + size <= k.load || addr >= k.end,
                "initrd {addr:#x}+{size:#x} overlaps the image {:#x}..{:#x}",
                k.load,
                k.end
            );
        }
    }
}

/// BERTH_FUZZ_VERBOSE=1: say what happened to each input (for triage).
fn verbose() -> bool {
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| std::env::var_os("BERTH_FUZZ_VERBOSE").is_some_and(|v| v != "0"))
}
