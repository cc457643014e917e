//! The VM's state as data: every vCPU, the in-kernel chips and every device,
//! in versioned serde types that serialise to bytes. The directory format
//! ([`dir`]) is one consumer of these bytes; a stream (live migration) can be
//! another.
//!
//! - [`vcpu`]: save/load one vCPU's KVM state (regs, sregs, FPU, XSAVE,
//!   XCRs, MSRs, LAPIC, events, MP state, debug registers, CPUID);
//! - [`chips`]: the VM-wide KVM state (PIC, IOAPIC, PIT2, KVM clock);
//! - [`devices`]: each bus device's state ([`DeviceState`]);
//! - [`dirty`]: the KVM dirty log, for incremental snapshots;
//! - [`dir`]: the snapshot directory (manifest, checksums, sparse memory files);
//! - [`take`]: taking a snapshot of a paused VM; [`restore`]: loading one.
//!
//! Encoding: JSON through serde_json (already a dependency), each KVM struct
//! one hex string of its bytes ([`hexpod`]). The state is a few tens of KiB,
//! so a text encoding costs a few tens of microseconds, while it stays inspectable with `jq` and
//! every field is named, so a newer berth can tell which fields an older
//! snapshot lacks. Guest memory, the bulk, never goes through serde.

pub mod chips;
pub mod devices;
pub mod dir;
pub mod dirty;
pub mod hexpod;
pub mod restore;
pub mod take;
pub mod vcpu;

pub use devices::DeviceState;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The version of [`VmState`]'s layout that this berth writes. Version 2
/// writes each KVM struct as one hex string of its bytes ([`hexpod`]);
/// version 1 wrote arrays of byte values, and is still read
/// ([`READS_VERSIONS`]). A state of any other version is refused.
pub const STATE_VERSION: u32 = 2;

/// The state versions this berth reads.
pub const READS_VERSIONS: [u32; 2] = [1, 2];

/// Everything of a paused VM except its memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    /// [`STATE_VERSION`] when written.
    pub version: u32,
    /// Each vCPU, by index.
    pub vcpus: Vec<vcpu::VcpuState>,
    /// The VM-wide KVM state.
    pub chips: chips::ChipState,
    /// Each device's state by its bus name (devices without state are absent).
    pub devices: BTreeMap<String, DeviceState>,
}

/// State errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A KVM ioctl failed while saving or loading.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which call.
        what: String,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// The bytes are not a state of this version.
    #[error("cannot decode the VM state: {0}")]
    Decode(String),
    /// The state does not fit this VM.
    #[error("the state does not fit this VM: {0}")]
    Mismatch(String),
}

impl StateError {
    /// A failed KVM call named `what`.
    pub fn kvm(what: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> StateError {
        let what = what.into();
        move |source| StateError::Kvm { what, source }
    }
}

impl VmState {
    /// The state as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A state from bytes; refuses another [`STATE_VERSION`].
    ///
    /// One pass over the bytes when they are a state of this version (the
    /// migration target parses inside the guest's downtime); the version
    /// alone is read only to explain a failure.
    pub fn from_bytes(b: &[u8]) -> Result<VmState, StateError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let other = |version: u32| {
            StateError::Decode(format!(
                "state version {version} (this berth reads versions {READS_VERSIONS:?})"
            ))
        };
        match serde_json::from_slice::<VmState>(b) {
            Ok(s) if READS_VERSIONS.contains(&s.version) => Ok(s),
            Ok(s) => Err(other(s.version)),
            Err(e) => match serde_json::from_slice::<Version>(b) {
                Ok(v) if !READS_VERSIONS.contains(&v.version) => Err(other(v.version)),
                _ => Err(StateError::Decode(e.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version() {
        let s = VmState {
            version: STATE_VERSION,
            vcpus: Vec::new(),
            chips: chips::ChipState::default(),
            devices: BTreeMap::from([("x".to_string(), DeviceState::AcpiPmCnt { value: 7 })]),
        };
        let b = s.to_bytes();
        let back = VmState::from_bytes(&b).unwrap();
        assert_eq!(back.devices.len(), 1);
        let other = String::from_utf8(b)
            .unwrap()
            .replace("\"version\":2", "\"version\":99");
        let e = VmState::from_bytes(other.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");
        // Another version's shape: the version is still what is reported.
        let e = VmState::from_bytes(br#"{"version":3,"cpus":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("state version 3"), "{e}");
        let e = VmState::from_bytes(b"{garbage").unwrap_err().to_string();
        assert!(!e.contains("state version"), "{e}");
    }
}
