//! The recorder: an MMIO or PIO window that keeps every write (offset, size,
//! value) in order, for tests and benchmarks. Memory is bounded: the first
//! [`KEEP`] records are kept, all of them go into a running sha256.

use crate::bus::{BusDevice, VmEvent};
use crate::state::devices::RecorderState;
use crate::state::{DeviceState, StateError};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};

/// Records kept in memory (later ones are only counted and hashed).
pub const KEEP: usize = 1 << 20;

/// One write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Offset in the window.
    pub offset: u64,
    /// Access size in bytes.
    pub size: u8,
    /// Value (little endian, zero-extended).
    pub value: u64,
}

impl Record {
    /// The bytes hashed for this record: offset (8, LE), size (1), value (8, LE).
    pub fn digest_bytes(&self) -> [u8; 17] {
        let mut b = [0u8; 17];
        b[..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8] = self.size;
        b[9..].copy_from_slice(&self.value.to_le_bytes());
        b
    }
}

/// What the recorder saw.
#[derive(Debug, Default)]
pub struct RecorderLog {
    /// The first [`KEEP`] records.
    pub records: Vec<Record>,
    /// All writes.
    pub count: u64,
    hasher: Sha256,
}

impl RecorderLog {
    /// sha256 over every record's [`Record::digest_bytes`], in order.
    pub fn digest(&self) -> String {
        crate::plan::dump::hex(&self.hasher.clone().finalize())
    }
}

/// The device.
pub struct Recorder {
    log: Arc<Mutex<RecorderLog>>,
}

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Recorder {
            log: Arc::new(Mutex::new(RecorderLog::default())),
        }
    }

    /// The shared log (read it after the run).
    pub fn log(&self) -> Arc<Mutex<RecorderLog>> {
        self.log.clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for Recorder {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let mut v = [0u8; 8];
        let n = data.len().min(8);
        v[..n].copy_from_slice(&data[..n]);
        let r = Record {
            offset,
            size: n as u8,
            value: u64::from_le_bytes(v),
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.hasher.update(r.digest_bytes());
        log.count += 1;
        if log.records.len() < KEEP {
            log.records.push(r);
        }
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        Some(DeviceState::Recorder(RecorderState {
            count: log.count,
            hasher: log.hasher.serialize().to_vec(),
        }))
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Recorder(s) = state else {
            return Err(state.wrong("recorder"));
        };
        let ser = SerializedState::<Sha256>::try_from(s.hasher.as_slice())
            .map_err(|_| StateError::Mismatch(format!("recorder hash state of {} bytes", s.hasher.len())))?;
        let hasher = Sha256::deserialize(&ser)
            .map_err(|_| StateError::Mismatch("recorder hash state does not decode".into()))?;
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.count = s.count;
        log.hasher = hasher;
        log.records.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_digest() {
        let mut r = Recorder::new();
        let log = r.log();
        r.write(0, &1u32.to_le_bytes());
        r.write(4, &[0xaa]);
        r.write(8, &u64::MAX.to_le_bytes());
        let l = log.lock().unwrap();
        assert_eq!(l.count, 3);
        assert_eq!(
            l.records[1],
            Record {
                offset: 4,
                size: 1,
                value: 0xaa
            }
        );
        let mut h = Sha256::new();
        for rec in &l.records {
            h.update(rec.digest_bytes());
        }
        assert_eq!(l.digest(), crate::plan::dump::hex(&h.finalize()));
        let mut b = [0xffu8; 4];
        drop(l);
        r.read(0, &mut b);
        assert_eq!(b, [0; 4]);
    }
}
