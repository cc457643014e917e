//! QEMU-compatible `isa-debug-exit` device.
//!
//! A guest write of value `v` asks the VMM to exit with status
//! `(v << 1) | 1`, exactly like QEMU's `exit((val << 1) | 1)`. The full value
//! is carried in [`VmEvent::DebugExit`]; a process exit status only has 8
//! bits, so the CLI masks it to `0..=255` when exiting (which is what a shell
//! sees from QEMU too). Reads return all-ones.

use thiserror::Error;

use crate::bus::{BusDevice, VmEvent};

/// Errors from creating a [`DebugExit`] device.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DebugExitError {
    /// The I/O width is not 1, 2 or 4 bytes.
    #[error("isa-debug-exit width must be 1, 2 or 4 bytes, got {0}")]
    InvalidWidth(u8),
}

/// The `isa-debug-exit` device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugExit {
    width: u8,
}

impl DebugExit {
    /// Creates the device with an I/O region of `width` bytes (1, 2 or 4;
    /// QEMU's `iosize`).
    pub fn new(width: u8) -> Result<DebugExit, DebugExitError> {
        match width {
            1 | 2 | 4 => Ok(DebugExit { width }),
            _ => Err(DebugExitError::InvalidWidth(width)),
        }
    }

    /// Width of the I/O region in bytes; use it as the bus range length.
    pub fn width(&self) -> u8 {
        self.width
    }

    /// Exit status for a written value: `(v << 1) | 1`, computed in 64 bits
    /// and truncated to `i32`. Not masked to 8 bits; the CLI does that.
    pub fn status_for(value: u32) -> i32 {
        ((u64::from(value) << 1) | 1) as i32
    }
}

impl BusDevice for DebugExit {
    /// A write ends the VM: nothing to keep.
    fn stateless(&self) -> bool {
        true
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<VmEvent> {
        if data.is_empty() {
            return None;
        }
        // Little endian, of the access size; larger accesses use the low
        // 4 bytes.
        let value = data
            .iter()
            .take(4)
            .rev()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        Some(VmEvent::DebugExit(DebugExit::status_for(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DebugExit {
        DebugExit::new(4).unwrap()
    }

    #[test]
    fn widths() {
        for w in [1, 2, 4] {
            assert_eq!(DebugExit::new(w).unwrap().width(), w);
        }
        for w in [0, 3, 8] {
            assert_eq!(DebugExit::new(w), Err(DebugExitError::InvalidWidth(w)));
        }
    }

    #[test]
    fn zero_gives_one() {
        assert_eq!(dev().write(0, &[0]), Some(VmEvent::DebugExit(1)));
    }

    #[test]
    fn one_gives_three() {
        assert_eq!(dev().write(0, &[1]), Some(VmEvent::DebugExit(3)));
    }

    #[test]
    fn two_byte_write() {
        assert_eq!(dev().write(0, &[0x10, 0x00]), Some(VmEvent::DebugExit(33)));
    }

    #[test]
    fn wide_values() {
        // 4-byte write: 0x12345678 << 1 | 1 = 0x2468acf1, fits in i32.
        assert_eq!(
            dev().write(0, &[0x78, 0x56, 0x34, 0x12]),
            Some(VmEvent::DebugExit(0x2468_acf1))
        );
        // High bit set: truncated to i32 like a C int.
        assert_eq!(
            dev().write(0, &[0xff, 0xff, 0xff, 0xff]),
            Some(VmEvent::DebugExit(-1))
        );
        // 8-byte write uses the low 4 bytes.
        assert_eq!(
            dev().write(0, &[2, 0, 0, 0, 9, 9, 9, 9]),
            Some(VmEvent::DebugExit(5))
        );
        // Low 8 bits are what the shell sees.
        assert_eq!(DebugExit::status_for(0x80) & 0xff, 1);
    }

    #[test]
    fn empty_write_ignored() {
        assert_eq!(dev().write(0, &[]), None);
    }

    #[test]
    fn reads_all_ones() {
        let mut data = [0u8; 4];
        dev().read(0, &mut data);
        assert_eq!(data, [0xff; 4]);
    }
}
