//! QEMU's `pci-testdev` (hw/misc/pci-testdev.c, vendor 0x1b36 device
//! 0x0005): the device kvm-unit-tests' `vmexit` pci-mem/pci-io tests time.
//!
//! It has a 4 KiB memory BAR and a 256-port I/O BAR. A byte written at
//! offset 0 (`test`) of either selects test `n` (0 no-eventfd, 1
//! wildcard-eventfd, 2 datamatch-eventfd) of that BAR's type; reads then
//! return the test's header, byte by byte:
//!
//! ```text
//! 0 test u8 | 1 width u8 | 2 pad[2] | 4 offset le32 | 8 data u8 | 9 pad[3] | 12 count le32 | 16 name, NUL
//! ```
//!
//! A write of `width` bytes at `offset` (matching `data` unless the test is
//! the wildcard one) counts in `count`. QEMU hands the two eventfd tests to
//! KVM (ioeventfd), so their writes never reach it and are not counted;
//! berth has no ioeventfd here and counts every matching write. Like QEMU,
//! every access is split into byte accesses.

use crate::state::devices::{from_hex, to_hex};
use crate::state::{DeviceState, StateError};
use std::sync::{Arc, Mutex};

use crate::bus::{BusDevice, VmEvent};

/// Red Hat, Inc.
pub const VENDOR: u16 = 0x1b36;
/// PCI test device.
pub const DEVICE: u16 = 0x0005;
/// The memory BAR's length (BAR 0).
pub const MMIO_LEN: u64 = 0x1000;
/// The I/O BAR's length (BAR 1).
pub const PIO_LEN: u64 = 0x100;

const VARIANTS: [&str; 3] = ["no-eventfd", "wildcard-eventfd", "datamatch-eventfd"];
const DATAMATCH: u8 = 0xfa;
const NOMATCH: u8 = 0xce;

/// The device state both BARs share: the selected test and the headers.
pub struct PciTestdev {
    current: Option<usize>,
    headers: Vec<Vec<u8>>,
}

impl PciTestdev {
    /// The six tests (mmio and portio × three variants), none selected.
    pub fn new() -> PciTestdev {
        let mut headers = Vec::new();
        for (ty, space_len) in [("mmio", MMIO_LEN / 2), ("portio", PIO_LEN / 2)] {
            for (v, variant) in VARIANTS.iter().enumerate() {
                let i = headers.len();
                let data = if v == 1 { NOMATCH } else { DATAMATCH };
                let mut h = vec![i as u8, 1, 0, 0];
                h.extend_from_slice(&(space_len as u32 + i as u32).to_le_bytes());
                h.extend_from_slice(&[data, 0, 0, 0]);
                h.extend_from_slice(&0u32.to_le_bytes());
                h.extend_from_slice(format!("{ty}-{variant}").as_bytes());
                h.push(0);
                headers.push(h);
            }
        }
        PciTestdev {
            current: None,
            headers,
        }
    }

    fn write_byte(&mut self, io: bool, addr: u64, val: u8) {
        if addr == 0 {
            self.current = None;
            if usize::from(val) < VARIANTS.len() {
                let t = usize::from(io) * VARIANTS.len() + usize::from(val);
                self.headers[t][12..16].copy_from_slice(&0u32.to_le_bytes());
                self.current = Some(t);
            }
            return;
        }
        let Some(t) = self.current else {
            return;
        };
        let h = &mut self.headers[t];
        let offset = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let wildcard = t % VARIANTS.len() == 1;
        if addr == u64::from(offset) && (wildcard || val == h[8]) {
            let count = u32::from_le_bytes([h[12], h[13], h[14], h[15]]).wrapping_add(1);
            h[12..16].copy_from_slice(&count.to_le_bytes());
        }
    }

    fn read_byte(&self, addr: u64) -> u8 {
        let Some(h) = self.current.map(|t| &self.headers[t]) else {
            return 0;
        };
        // As QEMU: the last byte (the name's NUL) and beyond read 0.
        if addr + 1 >= h.len() as u64 {
            return 0;
        }
        h[addr as usize]
    }
}

impl Default for PciTestdev {
    fn default() -> Self {
        PciTestdev::new()
    }
}

/// One BAR window of a shared [`PciTestdev`]: `io` for the I/O BAR.
pub struct PciTestdevBar {
    dev: Arc<Mutex<PciTestdev>>,
    io: bool,
}

impl PciTestdevBar {
    /// The memory BAR (`io = false`) or the I/O BAR of `dev`.
    pub fn new(dev: Arc<Mutex<PciTestdev>>, io: bool) -> PciTestdevBar {
        PciTestdevBar { dev, io }
    }
}

impl BusDevice for PciTestdevBar {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let d = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in data.iter_mut().enumerate() {
            *b = d.read_byte(offset + i as u64);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let mut d = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in data.iter().enumerate() {
            d.write_byte(self.io, offset + i as u64, *b);
        }
        None
    }

    // The shared state is saved once, with the memory BAR.
    fn save_state(&self) -> Option<DeviceState> {
        if self.io {
            return None;
        }
        let d = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        Some(DeviceState::PciTestdev {
            current: d.current.map(|c| c as u64),
            headers: d.headers.iter().map(|h| to_hex(h)).collect(),
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::PciTestdev { current, headers } = state else {
            return Err(state.wrong("pci-testdev"));
        };
        let mut d = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        d.headers = headers.iter().map(|h| from_hex(h)).collect::<Result<_, _>>()?;
        d.current = current.map(|c| c as usize);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(bar: &mut PciTestdevBar) -> Vec<u8> {
        (0..40)
            .map(|a| {
                let mut b = [0u8];
                bar.read(a, &mut b);
                b[0]
            })
            .collect()
    }

    #[test]
    fn headers_and_counting_as_vmexit_reads_them() {
        let dev = Arc::new(Mutex::new(PciTestdev::new()));
        let (mut mem, mut io) = (
            PciTestdevBar::new(dev.clone(), false),
            PciTestdevBar::new(dev, true),
        );
        assert_eq!(hdr(&mut mem)[..4], [0; 4], "nothing selected");
        // vmexit's pci_next: select test n, read width, data, offset and the name.
        mem.write(0, &[0]);
        let h = hdr(&mut mem);
        assert_eq!((h[0], h[1], h[8]), (0, 1, 0xfa));
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 0x800);
        assert_eq!(&h[16..31], b"mmio-no-eventfd");
        // A matching byte counts; a wrong value or offset does not.
        mem.write(0x800, &[0xfa]);
        mem.write(0x800, &[0x01]);
        mem.write(0x801, &[0xfa]);
        assert_eq!(hdr(&mut mem)[12], 1);
        // The I/O BAR's tests are 3..6; the wildcard one counts any value.
        io.write(0, &[1]);
        let h = hdr(&mut io);
        assert_eq!((h[0], h[8]), (4, 0xce));
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 0x80 + 4);
        assert_eq!(&h[16..38], b"portio-wildcard-eventf");
        io.write(0x84, &[0x33]);
        assert_eq!(hdr(&mut io)[12], 1);
        // Selecting an unknown test deselects.
        io.write(0, &[3]);
        assert_eq!(hdr(&mut io)[..2], [0, 0]);
    }
}
