//! A 4-byte MMIO doorbell. Writes of the configured value never reach this
//! device: berth registers one eventfd both as a KVM ioeventfd (datamatch on
//! the value) and as an irqfd on the doorbell's GSI, so the ring becomes an
//! MSI inside KVM with no vCPU exit. Other writes land here and are counted.

use crate::bus::{BusDevice, VmEvent};
use crate::state::{DeviceState, StateError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The bus side of a doorbell: counts writes that did not match.
pub struct Doorbell {
    unmatched: Arc<AtomicU64>,
}

impl Doorbell {
    /// A new doorbell.
    pub fn new() -> Self {
        Doorbell {
            unmatched: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Count of writes that did not ring (shared).
    pub fn unmatched(&self) -> Arc<AtomicU64> {
        self.unmatched.clone()
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for Doorbell {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> Option<VmEvent> {
        self.unmatched.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::Doorbell {
            unmatched: self.unmatched.load(Ordering::Relaxed),
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Doorbell { unmatched } = state else {
            return Err(state.wrong("doorbell"));
        };
        self.unmatched.store(*unmatched, Ordering::Relaxed);
        Ok(())
    }
}
