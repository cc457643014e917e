//! Guest RAM that lost its backing: a backing file truncated under a running
//! guest, huge pages taken away. Then an access to planned RAM is a host
//! memory fault, never a device access: a vCPU exit on it stops the VM, and
//! a SIGBUS in any berth thread (boot digest, loaders, fault reports) ends
//! berth with a message naming the region and its file, both with
//! [`crate::outcome::exit_code::MEMORY_LOST`].
//!
//! [`register`] records the RAM map of the VM being built in one
//! process-wide table, which the SIGBUS handler can read without locking or
//! allocating (the signal is synchronous: it arrives in the thread that
//! touched the lost page). A restart registers the new VM's map; the old
//! table is left allocated (a few hundred bytes per boot) because a handler
//! on another thread could still be reading it.

use crate::outcome::{exit_code, Outcome};
use crate::plan::MemslotPlan;
use crate::seccomp::{thread_name, Line, NAME_LEN};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// One planned RAM region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamRegion {
    /// Guest physical start.
    pub guest: u64,
    /// Length in bytes.
    pub len: u64,
    /// Host virtual start of its mapping (0 when not mapped).
    pub host: u64,
    /// A KVM read-only memslot: guest writes exit as MMIO by design.
    pub readonly: bool,
    /// `region "NAME" (memslot N, 0xSTART..0xEND, file PATH)`.
    pub what: String,
    /// What probably took the memory away.
    pub hint: &'static str,
}

impl RamRegion {
    /// The region as the plan has it; `file` is the resolved backing file.
    pub fn new(slot: &MemslotPlan, file: Option<&Path>) -> RamRegion {
        let (guest, len) = (slot.guest_addr.0, slot.size.0);
        let mut what = format!(
            "region \"{}\" (memslot {}, {guest:#x}..{:#x}, ",
            slot.name,
            slot.slot,
            guest + len
        );
        let hint = match file {
            Some(f) => {
                let _ = write!(what, "file {})", f.display());
                "was its file truncated?"
            }
            None if slot.hugepages => {
                what.push_str("anonymous huge pages)");
                "did the host run out of huge pages?"
            }
            None => {
                what.push_str("anonymous memory)");
                "did the host take it away?"
            }
        };
        RamRegion {
            guest,
            len,
            host: 0,
            readonly: slot.readonly,
            what,
            hint,
        }
    }

    fn holds_guest(&self, gpa: u64) -> bool {
        gpa >= self.guest && gpa - self.guest < self.len
    }

    fn holds_host(&self, hva: u64) -> bool {
        self.host != 0 && hva >= self.host && hva - self.host < self.len
    }
}

static TABLE: AtomicPtr<Vec<RamRegion>> = AtomicPtr::new(std::ptr::null_mut());
static HANDLER: Once = Once::new();

/// Records the RAM map of the VM being built (its planned slots and their
/// mappings in `mem`; `resolve` turns a machine-file path into a host path)
/// and installs the SIGBUS handler (once per process).
pub fn register(slots: &[MemslotPlan], mem: &GuestMemoryMmap, resolve: impl Fn(&Path) -> PathBuf) {
    let table: Vec<RamRegion> = slots
        .iter()
        .map(|s| {
            let file = s.file.as_ref().map(|f| resolve(Path::new(f)));
            let mut r = RamRegion::new(s, file.as_deref());
            r.host = mem
                .find_region(GuestAddress(r.guest))
                .map_or(0, |m| m.as_ptr() as u64);
            r
        })
        .collect();
    // The previous table stays allocated: see the module comment.
    TABLE.swap(Box::into_raw(Box::new(table)), Ordering::SeqCst);
    HANDLER.call_once(|| {
        if let Err(e) = install_sigbus_handler() {
            log::warn!("cannot install the SIGBUS handler: {e}");
        }
    });
    // The building thread (main) reads RAM too: the boot digest.
    crate::seccomp::remember_thread_name(crate::seccomp::ThreadKind::Main);
    test_lose_backing_here(slots, resolve);
}

/// Test-only fault injection: with `BERTH_TEST_LOSE_RAM` set, every
/// file-backed region's file is truncated to nothing right after it was
/// mapped, as if someone truncated it under the VM. Used by
/// tests/reliability.rs: the boot digest (main thread) then reads lost pages.
fn test_lose_backing_here(slots: &[MemslotPlan], resolve: impl Fn(&Path) -> PathBuf) {
    if std::env::var_os("BERTH_TEST_LOSE_RAM").is_none() {
        return;
    }
    for f in slots.iter().filter_map(|s| s.file.as_ref()) {
        let path = resolve(Path::new(f));
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
        {
            log::warn!("BERTH_TEST_LOSE_RAM: cannot truncate {}: {e}", path.display());
        }
    }
}

fn table() -> &'static [RamRegion] {
    let t = TABLE.load(Ordering::SeqCst);
    if t.is_null() {
        return &[];
    }
    // SAFETY: a non-null pointer comes from `Box::into_raw` in `register`
    // and is never freed, so it is valid for the rest of the process.
    unsafe { &*t }
}

/// If a vCPU exit on guest address `gpa` (a write when `write`) means RAM
/// lost its backing, the region it lies in. An access to planned RAM exits
/// only when the page behind it is gone, except a write to a read-only
/// region, which KVM hands to the bus by design.
pub fn lost_region(gpa: u64, write: bool) -> Option<&'static RamRegion> {
    table()
        .iter()
        .find(|r| r.holds_guest(gpa) && !(write && r.readonly))
}

/// The file-backed regions, one `region …` text each (for a KVM_RUN that
/// failed with EFAULT, which names no address).
pub fn file_backed() -> Vec<&'static str> {
    table()
        .iter()
        .filter(|r| r.what.contains(", file "))
        .map(|r| r.what.as_str())
        .collect()
}

/// How the VM ends when vCPU `vcpu` exits on guest address `gpa` (a write
/// when `write`) that [`lost_region`] says is lost RAM.
pub fn exit_outcome(vcpu: u32, gpa: u64, write: bool) -> Option<Outcome> {
    let r = lost_region(gpa, write)?;
    let access = if write { "write" } else { "read" };
    Some(Outcome::MemoryLost(format!(
        "vcpu{vcpu}: a guest {access} at {gpa:#x} exited as MMIO, but that is RAM: {} \
         has no memory behind it any more ({})",
        r.what, r.hint
    )))
}

/// How the VM ends when KVM_RUN fails with EFAULT: KVM could not reach
/// the memory behind a guest page (it names no address).
pub fn efault_outcome(vcpu: u32) -> Outcome {
    let files = file_backed();
    let suspects = if files.is_empty() {
        String::new()
    } else {
        format!("; file-backed: {}", files.join(", "))
    };
    Outcome::MemoryLost(format!(
        "vcpu{vcpu}: KVM_RUN failed with EFAULT: KVM could not reach the memory behind a guest \
         page{suspects}"
    ))
}

/// The SIGBUS line: names the thread, the host address and, when it lies in
/// guest RAM, the region and its file.
fn message(thread: &[u8], hva: u64, regions: &[RamRegion]) -> Line {
    let mut line = Line::new();
    line.push(b"berth: guest memory lost its backing: thread ");
    line.push(if thread.is_empty() { b"?" } else { thread });
    line.push(b" got SIGBUS at host address ");
    line.push_hex(hva);
    match regions.iter().find(|r| r.holds_host(hva)) {
        Some(r) => {
            line.push(b", guest address ");
            line.push_hex(r.guest + (hva - r.host));
            line.push(b" in ");
            line.push(r.what.as_bytes());
            line.push(b" (");
            line.push(r.hint.as_bytes());
            line.push(b")");
        }
        None => line.push(b", outside guest RAM"),
    }
    line.push(b"\n");
    line
}

extern "C" fn sigbus_handler(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let hva = if info.is_null() {
        0
    } else {
        // SAFETY: the kernel passes a valid siginfo_t (SA_SIGINFO); for
        // SIGBUS the union holds the faulting address.
        unsafe { (*info).si_addr() as u64 }
    };
    let (name, len) = thread_name();
    message(&name[..len.min(NAME_LEN)], hva, table()).write_stderr();
    // SAFETY: _exit(2) is async-signal-safe and in every seccomp filter.
    unsafe { libc::_exit(exit_code::MEMORY_LOST) }
}

fn install_sigbus_handler() -> std::io::Result<()> {
    // SAFETY: an all-zero sigaction is a valid value (no flags, empty mask)
    // that is filled in below.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = sigbus_handler as *const () as libc::sighandler_t;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `act.sa_mask` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut act.sa_mask) };
    // SAFETY: `act` is fully initialised, the handler is an extern "C" fn with
    // the SA_SIGINFO signature, and the old action is not asked for.
    if unsafe { libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Hex;

    fn slot(n: u32, at: u64, readonly: bool, file: Option<&str>) -> MemslotPlan {
        MemslotPlan {
            slot: n,
            name: format!("memory{n}"),
            guest_addr: Hex(at),
            size: Hex(0x10_0000),
            readonly,
            shared: true,
            hugepages: false,
            dirty_log: false,
            file: file.map(str::to_string),
        }
    }

    #[test]
    fn regions_name_their_file() {
        let r = RamRegion::new(&slot(1, 0x2000_0000, false, None), Some(Path::new("/x/ram.img")));
        assert_eq!(
            r.what,
            "region \"memory1\" (memslot 1, 0x20000000..0x20100000, file /x/ram.img)"
        );
        let r = RamRegion::new(&slot(0, 0, false, None), None);
        assert!(r.what.ends_with("anonymous memory)"), "{}", r.what);
    }

    #[test]
    fn sigbus_line_names_the_region() {
        let mut r = RamRegion::new(&slot(1, 0x2000_0000, false, None), Some(Path::new("/x/ram.img")));
        r.host = 0x7f00_0000_0000;
        let line = message(b"vcpu0", 0x7f00_0000_1234, std::slice::from_ref(&r));
        assert_eq!(
            std::str::from_utf8(&line.buf[..line.len]).unwrap(),
            "berth: guest memory lost its backing: thread vcpu0 got SIGBUS at host address \
             0x7f0000001234, guest address 0x20001234 in region \"memory1\" (memslot 1, \
             0x20000000..0x20100000, file /x/ram.img) (was its file truncated?)\n"
        );
        let line = message(b"", 0x1000, std::slice::from_ref(&r));
        assert!(std::str::from_utf8(&line.buf[..line.len])
            .unwrap()
            .ends_with("thread ? got SIGBUS at host address 0x1000, outside guest RAM\n"));
    }
}
