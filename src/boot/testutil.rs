//! Test support: synthetic kernel images of each format, and a machine file
//! on disk naming one, parsed and planned exactly as `berth` would.

use crate::config::{self, Config};
use crate::plan::{self, Plan};
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The PVH entry point of [`image_for`]`("pvh")` and [`pvh_elf32`].
pub const PVH_ENTRY: u64 = 0x10_0008;

/// A machine file in its own temporary directory, parsed and planned.
pub struct Machine {
    /// Directory holding machine.toml, the kernel and the initrd.
    pub dir: PathBuf,
    /// The parsed config.
    pub config: Config,
    /// Its plan.
    pub plan: Plan,
}

impl Machine {
    /// `kernel` bytes written as `kernel`, `initrd` (if any) as `initrd.img`,
    /// one RAM region of `mem` at 0.
    pub fn new(
        name: &str,
        kernel: &[u8],
        format: &str,
        mem: &str,
        initrd: Option<&[u8]>,
        cmdline: &str,
    ) -> Machine {
        let dir = Self::dir(name);
        std::fs::write(dir.join("kernel"), kernel).unwrap();
        Self::at(dir, "kernel", format, mem, initrd, cmdline)
    }

    /// A machine naming the kernel at `kernel` (absolute, or relative to the
    /// machine file's directory).
    pub fn with_kernel_path(
        name: &str,
        kernel: &Path,
        format: &str,
        mem: &str,
        initrd: Option<&[u8]>,
        cmdline: &str,
    ) -> Machine {
        let dir = Self::dir(name);
        Self::at(dir, &kernel.display().to_string(), format, mem, initrd, cmdline)
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-boot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn at(
        dir: PathBuf,
        kernel: &str,
        format: &str,
        mem: &str,
        initrd: Option<&[u8]>,
        cmdline: &str,
    ) -> Machine {
        let mut text = format!(
            "[machine]\nvcpus = 1\n\n[[memory]]\nguest_addr = 0\nsize = \"{mem}\"\n\n[kernel]\npath = {kernel:?}\nformat = \"{format}\"\ncmdline = {cmdline:?}\n"
        );
        if let Some(bytes) = initrd {
            std::fs::write(dir.join("initrd.img"), bytes).unwrap();
            text += "initrd = \"initrd.img\"\n";
        }
        let file = dir.join("machine.toml");
        std::fs::write(&file, &text).unwrap();
        let config = config::parse(&file, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let plan = plan::plan(&config);
        Machine { dir, config, plan }
    }

    /// Guest RAM as `berth` maps it for this plan.
    pub fn memory(&self) -> GuestMemoryMmap {
        crate::memory::create(&self.plan.memslots, |p| self.config.resolve(p)).unwrap()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An ELF64 x86-64 executable: PT_LOADs `(paddr, bytes, memsz)` and an
/// optional PT_NOTE with the given note bytes.
pub fn elf64(entry: u64, segs: &[(u64, &[u8], u64)], note: Option<&[u8]>) -> Vec<u8> {
    let phnum = segs.len() + usize::from(note.is_some());
    let mut b = vec![0u8; 64 + 56 * phnum];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[0x18..0x20].copy_from_slice(&entry.to_le_bytes());
    b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    b[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    b[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
    let mut phdr = |i: usize, ty: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| {
        let p = 64 + 56 * i;
        b[p..p + 4].copy_from_slice(&ty.to_le_bytes());
        b[p + 4..p + 8].copy_from_slice(&7u32.to_le_bytes());
        b[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
        b[p + 16..p + 24].copy_from_slice(&paddr.to_le_bytes());
        b[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
        b[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
        b[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
        b[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    };
    let mut data = Vec::new();
    let base = (64 + 56 * phnum) as u64;
    for (i, (paddr, bytes, memsz)) in segs.iter().enumerate() {
        phdr(i, 1, base + data.len() as u64, *paddr, bytes.len() as u64, *memsz);
        data.extend_from_slice(bytes);
    }
    if let Some(n) = note {
        while data.len() % 4 != 0 {
            data.push(0);
        }
        phdr(
            segs.len(),
            4,
            base + data.len() as u64,
            0,
            n.len() as u64,
            n.len() as u64,
        );
        data.extend_from_slice(n);
    }
    b.extend_from_slice(&data);
    b
}

/// A XEN_ELFNOTE_PHYS32_ENTRY note (after an unrelated Xen note).
pub fn pvh_note(entry: u32) -> Vec<u8> {
    let mut n = Vec::new();
    for (ty, desc) in [
        (6u32, b"linux\0\0\0".to_vec()),
        (18, entry.to_le_bytes().to_vec()),
    ] {
        n.extend_from_slice(&4u32.to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&ty.to_le_bytes());
        n.extend_from_slice(b"Xen\0");
        n.extend_from_slice(&desc);
    }
    n
}

/// A multiboot v1 header (magic, flags, checksum, then `fields`).
pub fn multiboot_header(flags: u32, fields: &[u32]) -> Vec<u8> {
    let magic = super::format::MULTIBOOT_MAGIC;
    let mut h = Vec::new();
    for v in [magic, flags, 0u32.wrapping_sub(magic.wrapping_add(flags))]
        .iter()
        .chain(fields)
    {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// A flat multiboot image using the a.out kludge: header at file offset
/// 0x40 (header_addr 0x200040), load 0x200000..0x200400, bss to 0x201000,
/// entry 0x200080; 0x100 trailing bytes past load_end are not loaded.
pub fn multiboot_aout() -> Vec<u8> {
    let mut b: Vec<u8> = (0..0x500u32).map(|i| (i % 253) as u8 + 1).collect();
    let h = multiboot_header(
        0x0001_0003,
        &[0x20_0040, 0x20_0000, 0x20_0400, 0x20_1000, 0x20_0080],
    );
    b[0x40..0x40 + h.len()].copy_from_slice(&h);
    b
}

/// An ELF32 PVH kernel: PT_LOAD at 1 MiB (0x10 bytes, 0x2000 in memory)
/// and the PHYS32_ENTRY note, built by hand (ELF32 phdrs).
pub fn pvh_elf32() -> Vec<u8> {
    let note = pvh_note(PVH_ENTRY as u32);
    let mut b = super::elf::tests::elf32(
        PVH_ENTRY as u32,
        &[(0x10_0000, b"PVH32CODE.......", 0x2000)],
        &note,
    );
    // Add the PT_NOTE as a second program header: the note sits at 0x100.
    let ph = 52 + 32;
    b[0x2c..0x2e].copy_from_slice(&2u16.to_le_bytes());
    b[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
    b[ph + 4..ph + 8].copy_from_slice(&0x100u32.to_le_bytes());
    b[ph + 16..ph + 20].copy_from_slice(&(note.len() as u32).to_le_bytes());
    b[ph + 20..ph + 24].copy_from_slice(&(note.len() as u32).to_le_bytes());
    b
}

/// A small valid image of each format berth boots.
pub fn image_for(format: &str) -> Vec<u8> {
    match format {
        "elf" => elf64(0x10_0000, &[(0x10_0000, b"ELF64CODE", 0x1000)], None),
        "bzimage" => super::linux::tests::bzimage(0x020f, 1, 0x3000),
        "pvh" => elf64(
            0x100_0000,
            &[(0x10_0000, b"PVHCODE!", 0x2000)],
            Some(&pvh_note(PVH_ENTRY as u32)),
        ),
        "multiboot" => super::elf::tests::elf32(
            0x10_0010,
            &[(0x10_0000, b"MB32............entry...", 0x3000)],
            &multiboot_header(0x3, &[]),
        ),
        other => panic!("no test image for {other}"),
    }
}

/// The little-endian u32 at guest address `a`.
pub fn u32_at(mem: &GuestMemoryMmap, a: u64) -> u32 {
    mem.read_obj(GuestAddress(a)).unwrap()
}

/// The little-endian u64 at guest address `a`.
pub fn u64_at(mem: &GuestMemoryMmap, a: u64) -> u64 {
    mem.read_obj(GuestAddress(a)).unwrap()
}

/// A test whose input is missing: under `make test` (which sets
/// `BERTH_REQUIRE_INPUTS=1`) that is a failure; a bare `cargo test` skips
/// it, and says so on the real stderr (not captured by the test harness),
/// so the skip shows next to the run's summary.
pub fn missing_input(test: &str, why: &str) {
    if std::env::var_os("BERTH_REQUIRE_INPUTS").is_some_and(|v| v != "0") {
        panic!("{test}: {why} (BERTH_REQUIRE_INPUTS is set: a missing input is a failure)");
    }
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}
