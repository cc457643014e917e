//! The VM's eventfd and zone registrations: irqfds (optionally with a
//! resample fd), ioeventfds (MMIO or port, 1/2/4/8 bytes, with datamatch or
//! wildcard) and coalesced zones. Each is recorded when KVM accepts it and
//! deassigned, newest first, when the VM is torn down (a reset with
//! `on_reboot = "restart"`, or the end of the run), as QEMU's KVM layer
//! does, so nothing stays bound to a VM that is going away.

use kvm_bindings::{kvm_ioeventfd, KVMIO};
use kvm_ioctls::{IoEventAddress, VmFd};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::ioctl_with_ref;

/// KVM_IOEVENTFD, issued directly: kvm-ioctls ties the length to the
/// datamatch type, so it cannot register a wildcard of a given length.
mod ioctls {
    #![allow(missing_docs)]
    vmm_sys_util::ioctl_iow_nr!(KVM_IOEVENTFD, super::KVMIO, 0x79, kvm_bindings::kvm_ioeventfd);
}

/// Where an ioeventfd listens and what it matches.
#[derive(Clone, Copy, Debug)]
pub struct IoEvent {
    /// Port or MMIO address.
    pub addr: IoEventAddress,
    /// Access length in bytes: 1, 2, 4 or 8 (ports: at most 4).
    pub len: u32,
    /// The value that rings; `None`: any value (wildcard).
    pub datamatch: Option<u64>,
}

impl IoEvent {
    fn ioctl_arg(&self, fd: &EventFd, deassign: bool) -> kvm_ioeventfd {
        let mut flags = 0;
        if self.datamatch.is_some() {
            flags |= 1 << kvm_bindings::kvm_ioeventfd_flag_nr_datamatch;
        }
        let addr = match self.addr {
            IoEventAddress::Pio(p) => {
                flags |= 1 << kvm_bindings::kvm_ioeventfd_flag_nr_pio;
                p
            }
            IoEventAddress::Mmio(m) => m,
        };
        if deassign {
            flags |= 1 << kvm_bindings::kvm_ioeventfd_flag_nr_deassign;
        }
        kvm_ioeventfd {
            datamatch: self.datamatch.unwrap_or(0),
            addr,
            len: self.len,
            fd: fd.as_raw_fd(),
            flags,
            ..Default::default()
        }
    }
}

enum Item {
    /// A plain irqfd, or one with a resample fd (kept open while registered).
    Irqfd {
        fd: EventFd,
        gsi: u32,
        _resample: Option<EventFd>,
    },
    Ioevent {
        fd: EventFd,
        at: IoEvent,
    },
    Zone {
        addr: IoEventAddress,
        len: u32,
    },
}

/// Every eventfd and zone registered on one VM, undone on drop.
pub struct Registrations {
    vm: Arc<VmFd>,
    items: Vec<Item>,
}

impl Registrations {
    /// No registrations yet on `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        Registrations {
            vm,
            items: Vec::new(),
        }
    }

    /// KVM_IRQFD: writes to `fd` raise `gsi` (edge: assert and release).
    pub fn irqfd(&mut self, fd: EventFd, gsi: u32) -> Result<(), kvm_ioctls::Error> {
        self.vm.register_irqfd(&fd, gsi)?;
        self.items.push(Item::Irqfd {
            fd,
            gsi,
            _resample: None,
        });
        Ok(())
    }

    /// KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE (kernel irqchip only): a write
    /// to `fd` asserts `gsi` until the guest's EOI; then KVM lowers it and
    /// signals `resample` (`kvm::resample` re-asserts a line still high).
    pub fn irqfd_resample(
        &mut self,
        fd: EventFd,
        resample: EventFd,
        gsi: u32,
    ) -> Result<(), kvm_ioctls::Error> {
        self.vm.register_irqfd_with_resample(&fd, &resample, gsi)?;
        self.items.push(Item::Irqfd {
            fd,
            gsi,
            _resample: Some(resample),
        });
        Ok(())
    }

    /// The VM these registrations are on.
    pub fn vm(&self) -> &Arc<VmFd> {
        &self.vm
    }

    /// KVM_IOEVENTFD: guest writes that `at` matches signal `fd` inside KVM,
    /// without a vCPU exit.
    pub fn ioeventfd(&mut self, fd: EventFd, at: IoEvent) -> Result<(), kvm_ioctls::Error> {
        ioeventfd_ioctl(&self.vm, &at.ioctl_arg(&fd, false))?;
        self.items.push(Item::Ioevent { fd, at });
        Ok(())
    }

    /// KVM_REGISTER_COALESCED_MMIO (MMIO or port zone).
    pub fn zone(&mut self, addr: IoEventAddress, len: u32) -> Result<(), kvm_ioctls::Error> {
        self.vm.register_coalesced_mmio(addr, len)?;
        self.items.push(Item::Zone { addr, len });
        Ok(())
    }

    /// Deassigns everything, newest first (a refusal is logged).
    pub fn undo(&mut self) {
        while let Some(item) = self.items.pop() {
            let r = match &item {
                // KVM finds an irqfd by its eventfd and GSI, resampling or not.
                Item::Irqfd { fd, gsi, .. } => self.vm.unregister_irqfd(fd, *gsi),
                Item::Ioevent { fd, at } => ioeventfd_ioctl(&self.vm, &at.ioctl_arg(fd, true)),
                Item::Zone { addr, len } => self.vm.unregister_coalesced_mmio(*addr, *len),
            };
            if let Err(e) = r {
                log::warn!("teardown: cannot deassign a registration: {e}");
            }
        }
    }
}

impl Drop for Registrations {
    fn drop(&mut self) {
        self.undo();
    }
}

fn ioeventfd_ioctl(vm: &VmFd, arg: &kvm_ioeventfd) -> Result<(), kvm_ioctls::Error> {
    // SAFETY: the fd is a VM fd; the kernel reads exactly one kvm_ioeventfd,
    // which lives in the caller's frame; the result is checked.
    let ret = unsafe { ioctl_with_ref(vm, ioctls::KVM_IOEVENTFD(), arg) };
    if ret == 0 {
        Ok(())
    } else {
        Err(kvm_ioctls::Error::last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioeventfd_arguments() {
        let fd = EventFd::new(0).unwrap();
        let at = IoEvent {
            addr: IoEventAddress::Pio(0x510),
            len: 2,
            datamatch: None,
        };
        let a = at.ioctl_arg(&fd, false);
        assert_eq!((a.addr, a.len, a.datamatch), (0x510, 2, 0));
        assert_eq!(a.flags, 1 << kvm_bindings::kvm_ioeventfd_flag_nr_pio);
        let at = IoEvent {
            addr: IoEventAddress::Mmio(0xd000_1000),
            len: 8,
            datamatch: Some(0x5a),
        };
        let a = at.ioctl_arg(&fd, true);
        assert_eq!((a.addr, a.len, a.datamatch), (0xd000_1000, 8, 0x5a));
        assert_eq!(
            a.flags,
            (1 << kvm_bindings::kvm_ioeventfd_flag_nr_datamatch)
                | (1 << kvm_bindings::kvm_ioeventfd_flag_nr_deassign)
        );
        // The request number is <linux/kvm.h>'s KVM_IOEVENTFD.
        assert_eq!(ioctls::KVM_IOEVENTFD(), 0x4040_ae79);
    }
}
