//! Build step 5's firmware tables: the MP table and the ACPI tables where the
//! plan puts them, and (for a restore) where those tables keep the FACS.

use super::BuildError;
use crate::arch::x86_64::{acpi, layout, mptable};
use crate::devices::fw_cfg;
use crate::plan::{DeviceKind, Plan};
use vm_memory::GuestMemoryMmap;

/// Step 5: the MP table, where the plan puts it.
pub(super) fn write_mptable(plan: &Plan, mem: &GuestMemoryMmap) -> Result<(), BuildError> {
    let Some(at) = plan.boot.mptable else {
        return Ok(());
    };
    mptable::write(&plan.mptable_spec(), mem, at.0).map_err(|e| BuildError::Device {
        name: "mptable".into(),
        message: e.to_string(),
    })
}

/// Step 5: the ACPI tables (RSDP, XSDT, FADT, DSDT, MADT, FACS), when
/// planned; returns the FACS address.
pub(super) fn write_acpi(plan: &Plan, mem: &GuestMemoryMmap) -> Result<Option<u64>, BuildError> {
    let Some((spec, rsdp)) = acpi_spec(plan) else {
        return Ok(None);
    };
    acpi::write(&spec, mem, rsdp).map(Some).map_err(acpi_error)
}

/// A restore: where the tables in the restored memory keep the FACS.
pub(super) fn acpi_facs(plan: &Plan) -> Result<Option<u64>, BuildError> {
    let Some((spec, rsdp)) = acpi_spec(plan) else {
        return Ok(None);
    };
    acpi::facs_address(&spec, rsdp).map(Some).map_err(acpi_error)
}

fn acpi_error(e: acpi::AcpiError) -> BuildError {
    BuildError::Device {
        name: "acpi".into(),
        message: e.to_string(),
    }
}

/// The ACPI tables' description and RSDP address, when planned.
fn acpi_spec(plan: &Plan) -> Option<(acpi::AcpiSpec, u64)> {
    let (Some(rsdp), Some(pm)) = (plan.boot.acpi_rsdp, plan.boot.acpi_pm_port) else {
        return None;
    };
    let spec = acpi::AcpiSpec {
        cpus: plan.cpus.iter().map(|c| c.apic_id as u8).collect(),
        ioapic_id: plan.irqchip.ioapic_id as u8,
        ioapic_addr: plan.irqchip.ioapic_addr.0 as u32,
        lapic_addr: plan.irqchip.lapic_addr.0 as u32,
        pm1a_evt_port: pm.0 as u16,
        pm1a_cnt_port: pm.0 as u16 + 4,
        pm_tmr_port: layout::ACPI_PM_TMR_PORT,
        reset_port: layout::RESET_PORT,
        legacy_pic: plan.irqchip.mode == "kernel",
        fw_cfg: fw_cfg_ports(plan),
    };
    Some((spec, rsdp.0))
}

/// The fw_cfg device's I/O range for the DSDT: selector and data, plus the
/// DMA register when there is one (QEMU's 0x510, 12 ports).
fn fw_cfg_ports(plan: &Plan) -> Option<(u16, u8)> {
    plan.devices.iter().find_map(|d| match &d.kind {
        DeviceKind::FwCfg { dma, .. } => {
            let len = if *dma {
                fw_cfg::DMA_OFFSET + fw_cfg::DMA_LEN
            } else {
                fw_cfg::CTL_LEN
            };
            Some((d.base.0 as u16, len as u8))
        }
        _ => None,
    })
}
