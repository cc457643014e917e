//! The VM-wide KVM state: the in-kernel PIC master/slave and IOAPIC (kernel
//! irqchip mode), the PIT2, and the KVM clock. Saved while every vCPU is
//! parked; loaded after the chips are created and before the vCPUs run.

use super::StateError;
use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

/// Which chips the VM has (from the plan).
#[derive(Clone, Copy, Debug)]
pub struct ChipSet {
    /// Kernel irqchip mode (PIC + IOAPIC in KVM).
    pub kernel_irqchip: bool,
    /// In-kernel PIT.
    pub pit: bool,
}

/// The chips' state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChipState {
    /// KVM_GET_IRQCHIP: PIC master, PIC slave, IOAPIC (kernel mode only).
    #[serde(with = "super::hexpod::vec")]
    pub irqchips: Vec<kvm_irqchip>,
    /// KVM_GET_PIT2 (when the VM has the in-kernel PIT).
    #[serde(with = "super::hexpod::option")]
    pub pit: Option<kvm_pit_state2>,
    /// KVM_GET_CLOCK.
    #[serde(with = "super::hexpod::option")]
    pub clock: Option<kvm_clock_data>,
}

/// Saves the chips of `set`.
pub fn save(fd: &VmFd, set: ChipSet) -> Result<ChipState, StateError> {
    let mut irqchips = Vec::new();
    if set.kernel_irqchip {
        for chip_id in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC] {
            let mut c = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            fd.get_irqchip(&mut c)
                .map_err(StateError::kvm("KVM_GET_IRQCHIP"))?;
            irqchips.push(c);
        }
    }
    let pit = if set.pit {
        Some(fd.get_pit2().map_err(StateError::kvm("KVM_GET_PIT2"))?)
    } else {
        None
    };
    let mut clock = fd.get_clock().map_err(StateError::kvm("KVM_GET_CLOCK"))?;
    // KVM_SET_CLOCK accepts only KVM_CLOCK_REALTIME; the rest are reports.
    clock.flags = 0;
    Ok(ChipState {
        irqchips,
        pit,
        clock: Some(clock),
    })
}

/// Loads saved chips into a VM built from the same plan.
pub fn load(fd: &VmFd, set: ChipSet, s: &ChipState) -> Result<(), StateError> {
    if set.kernel_irqchip == s.irqchips.is_empty() || set.pit != s.pit.is_some() {
        return Err(StateError::Mismatch(
            "the saved interrupt controllers differ from the machine's".into(),
        ));
    }
    if let Some(p) = &s.pit {
        fd.set_pit2(p).map_err(StateError::kvm("KVM_SET_PIT2"))?;
    }
    for c in &s.irqchips {
        fd.set_irqchip(c).map_err(StateError::kvm("KVM_SET_IRQCHIP"))?;
    }
    if let Some(c) = &s.clock {
        fd.set_clock(c).map_err(StateError::kvm("KVM_SET_CLOCK"))?;
    }
    Ok(())
}
