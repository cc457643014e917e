//! Emulated devices that sit on the [`Bus`](crate::bus::Bus).
//!
//! - [`serial`]: the COM1 8250/16550A UART (via `vm-superio`).
//! - [`debug_exit`]: QEMU's `isa-debug-exit` test device.
//! - [`irq_lines`]: QEMU pc-testdev irq lines (port + n sets GSI n).
//! - [`recorder`]: keeps every write, in order.
//! - [`doorbell`]: ioeventfd + irqfd doorbell.
//! - [`boot_timer`]: the guest writes 123 when booted; berth prints the time.
//! - [`null`]: drops writes, reads zeros.
//! - [`fw_cfg`]: QEMU's firmware configuration device (I/O interface + DMA).
//! - [`pc_testdev`]: QEMU's pc-testdev (data port, flush page, iomem window).
//! - [`pci`]: PCI host bridge, configuration mechanism #1, i440FX at 00:00.0.
//! - [`pci_testdev`]: QEMU's pci-testdev behind the host bridge (00:01.0).
//! - [`cmos`], [`acpi_pm`], [`pm_timer`]: the PC platform's RTC and ACPI
//!   fixed hardware.

use std::io;

use vmm_sys_util::eventfd::EventFd;

pub mod acpi_pm;
pub mod boot_timer;
pub mod cmos;
pub mod debug_exit;
pub mod doorbell;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod irq_lines;
pub mod null;
pub mod pc_testdev;
pub mod pci;
pub mod pci_testdev;
pub mod pm_timer;
pub mod recorder;
pub mod rtc;
pub mod serial;
pub mod serial_out;
pub mod sleep;

pub use debug_exit::{DebugExit, DebugExitError};
pub use serial::{SerialCounters, SerialDevice, SerialError, SerialOutput};

/// A `vm_superio::Trigger` that raises an interrupt by writing 1 to an
/// eventfd, meant to be registered with KVM as an irqfd.
#[derive(Debug)]
pub struct EventFdTrigger {
    evt: EventFd,
}

impl EventFdTrigger {
    /// Wraps `evt`; keep a clone (`EventFd::try_clone`) to register it with
    /// KVM, or get it back with [`EventFdTrigger::evt`].
    pub fn new(evt: EventFd) -> EventFdTrigger {
        EventFdTrigger { evt }
    }

    /// The eventfd written on every trigger.
    pub fn evt(&self) -> &EventFd {
        &self.evt
    }
}

impl vm_superio::Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.evt.write(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_superio::Trigger;

    #[test]
    fn trigger_writes_one() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let t = EventFdTrigger::new(evt.try_clone().unwrap());
        t.trigger().unwrap();
        t.trigger().unwrap();
        assert_eq!(evt.read().unwrap(), 2);
        assert_eq!(t.evt().read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
