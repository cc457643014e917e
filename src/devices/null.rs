//! The null device: a PIO or MMIO window whose writes are dropped and whose
//! reads return zeros. It gives a port or page a cheap owner, e.g. port 0x80,
//! which Linux writes for I/O delays, and lets benchmarks time the plain
//! exit-and-dispatch path to a device.

use crate::bus::{BusDevice, VmEvent};

/// The device.
#[derive(Clone, Copy, Debug, Default)]
pub struct Null;

impl BusDevice for Null {
    /// Reads zero, drops writes: nothing to keep.
    fn stateless(&self) -> bool {
        true
    }

    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> Option<VmEvent> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zero_and_drops_writes() {
        let mut n = Null;
        assert!(n.write(0, &[1, 2, 3, 4]).is_none());
        let mut buf = [0xaau8; 8];
        n.read(3, &mut buf);
        assert_eq!(buf, [0; 8]);
    }
}
