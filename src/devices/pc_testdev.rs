//! QEMU's pc-testdev (hw/misc/pc-testdev.c), the device kvm-unit-tests'
//! x86 tests expect, at QEMU's fixed places:
//!
//! - 0x2000–0x2017: irq lines (berth's [`IrqLines`](super::irq_lines::IrqLines), 24 GSIs);
//! - 0xe0–0xe3: a 32-bit data register, readable and writable at every width
//!   and byte offset (string I/O tests: `rep insb`/`outsw` …) — [`DataPort`];
//! - 0xe8–0xeb: the same register, which QEMU reaches one byte at a time;
//!   the result is the same, so it is a second [`DataPort`] window on it;
//! - 0xe4: flush page — a 32-bit write of a guest-physical address makes the
//!   host drop KVM's mapping of that page ([`FlushPage`]);
//! - 0xff00_0000: a 64 KiB memory-backed MMIO window ("iomem") — [`Iomem`].

use crate::state::devices::{from_hex, to_hex};
use crate::state::{DeviceState, StateError};
use std::sync::{Arc, Mutex};

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::bus::{BusDevice, VmEvent};

/// Length of the iomem window.
pub const IOMEM_LEN: u64 = 0x1_0000;
/// Where QEMU maps the iomem window.
pub const IOMEM_ADDR: u64 = 0xff00_0000;
/// Number of irq lines (ISA IRQs 0..24 = GSIs 0..24).
pub const IRQ_LINES: u32 = 24;
/// First irq-line port.
pub const IRQ_PORT: u16 = 0x2000;
/// The data register.
pub const DATA_PORT: u16 = 0xe0;
/// The flush-page register.
pub const FLUSH_PORT: u16 = 0xe4;
/// The byte-wise view of the data register.
pub const DATA_BYTE_PORT: u16 = 0xe8;

/// One of pc-testdev's windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestdevWindow {
    /// Which part ("irq", "ioport", "flush", "ioport-byte", "iomem").
    pub part: &'static str,
    /// MMIO (true) or port I/O.
    pub mmio: bool,
    /// Base port or address.
    pub base: u64,
    /// Length.
    pub len: u64,
}

/// Every window of pc-testdev, as QEMU places them.
pub const WINDOWS: [TestdevWindow; 5] = [
    TestdevWindow {
        part: "ioport",
        mmio: false,
        base: DATA_PORT as u64,
        len: 4,
    },
    TestdevWindow {
        part: "flush",
        mmio: false,
        base: FLUSH_PORT as u64,
        len: 4,
    },
    TestdevWindow {
        part: "ioport-byte",
        mmio: false,
        base: DATA_BYTE_PORT as u64,
        len: 4,
    },
    TestdevWindow {
        part: "irq",
        mmio: false,
        base: IRQ_PORT as u64,
        len: IRQ_LINES as u64,
    },
    TestdevWindow {
        part: "iomem",
        mmio: true,
        base: IOMEM_ADDR,
        len: IOMEM_LEN,
    },
];

/// A window on the 32-bit data register. An access of `n` bytes at offset
/// `o` reads or replaces bytes `o..o+n` of the register (little-endian);
/// bytes past the register read as zero and are dropped on writes.
pub struct DataPort {
    reg: Arc<Mutex<u32>>,
}

impl DataPort {
    /// A window on `reg`, which every window of one pc-testdev shares.
    pub fn new(reg: Arc<Mutex<u32>>) -> DataPort {
        DataPort { reg }
    }
}

impl BusDevice for DataPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let bytes = self.reg.lock().unwrap_or_else(|e| e.into_inner()).to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = reg.to_le_bytes();
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = bytes.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
        *reg = u32::from_le_bytes(bytes);
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::TestdevData {
            value: *self.reg.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::TestdevData { value } = state else {
            return Err(state.wrong("testdev-data"));
        };
        *self.reg.lock().unwrap_or_else(|e| e.into_inner()) = *value;
        Ok(())
    }
}

/// The flush-page register: a 32-bit write of a guest-physical address
/// revokes and restores access to the host page behind it (mprotect
/// PROT_NONE, then back), so KVM's MMU notifier drops its mapping and the
/// guest's next access to that page faults into KVM again. Other widths and
/// addresses outside guest RAM are ignored, as in QEMU.
pub struct FlushPage {
    mem: GuestMemoryMmap,
    flushes: u64,
}

impl FlushPage {
    /// The register, flushing pages of `mem`.
    pub fn new(mem: GuestMemoryMmap) -> FlushPage {
        FlushPage { mem, flushes: 0 }
    }

    /// Pages flushed so far.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    fn flush(&mut self, gpa: u64) {
        const PAGE: u64 = 4096;
        let page = gpa & !(PAGE - 1);
        let Some(region) = self.mem.find_region(GuestAddress(page)) else {
            log::debug!("pc-testdev: flush of {gpa:#x}, which is not RAM; ignored");
            return;
        };
        let Ok(host) = self.mem.get_host_address(GuestAddress(page)) else {
            return;
        };
        // Only a whole page inside the region (regions are page aligned).
        if page + PAGE > region.start_addr().0 + region.len() {
            return;
        }
        let prot = region.prot();
        // SAFETY: `host` is the start of a page-aligned 4 KiB range inside a
        // mapping this process made for guest RAM and keeps for the VM's
        // life (`mem` holds it). mprotect changes only that page's access and
        // the second call restores the mapping's own protection at once; no
        // Rust reference to guest RAM exists across the two calls. As in QEMU,
        // another vCPU that touches the page in between gets EFAULT from
        // KVM_RUN, which ends the VM as lost memory (exit 135): the guest
        // flushed a page it was using at that instant.
        let ok = unsafe {
            libc::mprotect(host.cast(), PAGE as usize, libc::PROT_NONE) == 0
                && libc::mprotect(host.cast(), PAGE as usize, prot) == 0
        };
        if ok {
            self.flushes += 1;
        } else {
            // e.g. a hugetlbfs mapping, which has no 4 KiB pages to protect.
            log::debug!(
                "pc-testdev: flush of {gpa:#x}: mprotect: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl BusDevice for FlushPage {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // QEMU's flush region has no read handler: reads see all-ones.
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        if let (0, Ok(bytes)) = (offset, <[u8; 4]>::try_from(data)) {
            self.flush(u32::from_le_bytes(bytes).into());
        }
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::TestdevFlush {
            flushes: self.flushes,
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::TestdevFlush { flushes } = state else {
            return Err(state.wrong("testdev-flush"));
        };
        self.flushes = *flushes;
        Ok(())
    }
}

/// The 64 KiB iomem window: plain memory behind MMIO exits, readable and
/// writable at any width and offset.
pub struct Iomem {
    buf: Vec<u8>,
}

impl Iomem {
    /// A zeroed window.
    pub fn new() -> Iomem {
        Iomem {
            buf: vec![0; IOMEM_LEN as usize],
        }
    }
}

impl Default for Iomem {
    fn default() -> Self {
        Iomem::new()
    }
}

impl BusDevice for Iomem {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The bus keeps offset + len within the window.
        match self.buf.get(offset as usize..offset as usize + data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        if let Some(dst) = self.buf.get_mut(offset as usize..offset as usize + data.len()) {
            dst.copy_from_slice(data);
        }
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        let bytes = if self.buf.iter().all(|&b| b == 0) {
            String::new()
        } else {
            to_hex(&self.buf)
        };
        Some(DeviceState::TestdevIomem { bytes })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::TestdevIomem { bytes } = state else {
            return Err(state.wrong("testdev-iomem"));
        };
        if bytes.is_empty() {
            self.buf.fill(0);
            return Ok(());
        }
        let b = from_hex(bytes)?;
        if b.len() != self.buf.len() {
            return Err(StateError::Mismatch(format!("iomem of {} bytes", b.len())));
        }
        self.buf.copy_from_slice(&b);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn ram() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap()
    }

    #[test]
    fn data_register_at_every_width_and_offset() {
        let reg = Arc::new(Mutex::new(0));
        let (mut port, mut bytewise) = (DataPort::new(reg.clone()), DataPort::new(reg.clone()));
        port.write(0, &0x1122_3344u32.to_le_bytes());
        let mut w = [0u8; 2];
        port.read(2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1122);
        // outw 0x9999 at 0xe0 then rep insb reads 0x99 (kvm-unit-tests' string_io_mmio).
        port.write(0, &[0x99, 0x99]);
        let mut b = [0u8; 1];
        port.read(0, &mut b);
        assert_eq!(b, [0x99]);
        // A byte at offset 3 replaces only that byte, seen through both windows.
        bytewise.write(3, &[0xab]);
        let mut d = [0u8; 4];
        port.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xab22_9999);
        bytewise.read(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xab22_9999);
        // Bytes past the register read zero.
        port.read(3, &mut w);
        assert_eq!(w, [0xab, 0]);
    }

    #[test]
    fn iomem_keeps_what_was_written() {
        let mut m = Iomem::new();
        m.write(0xfff8, &0x0102_0304_0506_0708u64.to_le_bytes());
        let mut q = [0u8; 8];
        m.read(0xfff8, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x0102_0304_0506_0708);
        let mut b = [0u8; 1];
        m.read(0xfffc, &mut b);
        assert_eq!(b, [0x04]);
        m.read(0, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn flush_page_keeps_the_page_and_ignores_what_is_not_ram() {
        let mem = ram();
        mem.write_slice(&[1, 2, 3, 4], GuestAddress(0x1000)).unwrap();
        let mut f = FlushPage::new(mem.clone());
        f.write(0, &0x1234u32.to_le_bytes());
        assert_eq!(f.flushes(), 1);
        // The page is readable and writable again, with its contents.
        let mut back = [0u8; 4];
        mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert_eq!(back, [1, 2, 3, 4]);
        mem.write_slice(&[5; 4], GuestAddress(0x1ffc)).unwrap();
        // Outside RAM, a narrow write, or an offset: nothing happens.
        f.write(0, &0x10_0000u32.to_le_bytes());
        f.write(0, &[0x10, 0x00]);
        f.write(1, &[0; 3]);
        assert_eq!(f.flushes(), 1);
    }

    #[test]
    fn windows_are_qemus() {
        let ports: Vec<(u64, u64)> = WINDOWS
            .iter()
            .filter(|w| !w.mmio)
            .map(|w| (w.base, w.len))
            .collect();
        assert_eq!(ports, [(0xe0, 4), (0xe4, 4), (0xe8, 4), (0x2000, 24)]);
        assert!(WINDOWS
            .iter()
            .any(|w| w.mmio && w.base == 0xff00_0000 && w.len == 0x1_0000));
    }
}
