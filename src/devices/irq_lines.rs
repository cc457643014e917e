//! QEMU pc-testdev "irq lines": a byte written to `base + n` sets GSI `n` to
//! that level (non-zero = asserted). kvm-unit-tests drive IOAPIC tests this way.

use crate::bus::{BusDevice, VmEvent};
use crate::state::{DeviceState, StateError};
use std::sync::Arc;

/// Where line levels go: KVM (KVM_IRQ_LINE_STATUS, or KVM_IRQ_LINE without
/// KVM_CAP_IRQ_INJECT_STATUS), or berth's IOAPIC in split mode.
pub trait LineSink: Send + Sync {
    /// Sets `gsi` to `level`.
    fn set_gsi(&self, gsi: u32, level: bool);
}

/// The irq-lines device.
pub struct IrqLines {
    lines: u32,
    levels: Vec<u8>,
    sink: Arc<dyn LineSink>,
}

impl IrqLines {
    /// `lines` GSIs (0..lines), delivered to `sink`.
    pub fn new(lines: u32, sink: Arc<dyn LineSink>) -> Self {
        IrqLines {
            lines,
            levels: vec![0; lines as usize],
            sink,
        }
    }
}

impl BusDevice for IrqLines {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Reads return the line's last written level (0 or 1) in every byte.
        let v = self.levels.get(offset as usize).copied().unwrap_or(0);
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let first = data.first()?;
        if offset >= u64::from(self.lines) {
            return None;
        }
        let level = *first != 0;
        self.levels[offset as usize] = u8::from(level);
        self.sink.set_gsi(offset as u32, level);
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::IrqLines {
            levels: self.levels.clone(),
        })
    }

    /// The levels only: the interrupt controllers' own state (restored
    /// separately) already holds what those levels caused.
    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::IrqLines { levels } = state else {
            return Err(state.wrong("irq-lines"));
        };
        if levels.len() != self.levels.len() {
            return Err(StateError::Mismatch(format!(
                "{} irq lines saved, {} planned",
                levels.len(),
                self.levels.len()
            )));
        }
        self.levels.clone_from(levels);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Rec(Mutex<Vec<(u32, bool)>>);
    impl LineSink for Rec {
        fn set_gsi(&self, gsi: u32, level: bool) {
            self.0.lock().unwrap().push((gsi, level));
        }
    }

    #[test]
    fn writes_set_levels() {
        let rec = Arc::new(Rec::default());
        let mut d = IrqLines::new(24, rec.clone());
        d.write(5, &[1]);
        d.write(5, &[0]);
        d.write(23, &[7]);
        d.write(24, &[1]); // beyond the lines: ignored
        d.write(3, &[]);
        assert_eq!(*rec.0.lock().unwrap(), vec![(5, true), (5, false), (23, true)]);
        let mut b = [0u8; 2];
        d.read(23, &mut b);
        assert_eq!(b, [1, 1]);
        d.read(100, &mut b);
        assert_eq!(b, [0, 0]);
    }
}
