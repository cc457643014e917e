//! Interrupt delivery at run time: the KVM GSI routing table (committed whole
//! with KVM_SET_GSI_ROUTING), line assertion with KVM_IRQ_LINE_STATUS (plain
//! KVM_IRQ_LINE when the host lacks KVM_CAP_IRQ_INJECT_STATUS), and
//! MSIs with KVM_SIGNAL_MSI or, when the host lacks it, a bounded cache of
//! dynamic MSI routes (flushed when GSIs run out).

use crate::plan::irq::GsiAllocator;
use crate::plan::{Plan, RouteTarget};
use kvm_bindings::{
    kvm_irq_level, kvm_irq_routing_entry, kvm_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;

/// KVM_IRQ_LINE_STATUS (not wrapped by kvm-ioctls): like KVM_IRQ_LINE but
/// returns whether the interrupt was delivered, coalesced or masked.
mod ioctls {
    #![allow(missing_docs)]
    use kvm_bindings::kvm_irq_level;
    vmm_sys_util::ioctl_iowr_nr!(KVM_IRQ_LINE_STATUS, kvm_bindings::KVMIO, 0x67, kvm_irq_level);
}
use ioctls::KVM_IRQ_LINE_STATUS;

/// Most dynamic MSI routes the fallback cache holds before it is flushed.
pub const MSI_CACHE_ENTRIES: usize = 32;

/// Interrupt errors.
#[derive(Debug, thiserror::Error)]
pub enum IrqError {
    /// KVM_SET_GSI_ROUTING failed.
    #[error("KVM_SET_GSI_ROUTING with {entries} entries failed: {source}")]
    Routing {
        /// Entry count.
        entries: usize,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// The routing table could not be assembled.
    #[error("cannot build the routing table: {0}")]
    Table(String),
}

/// Counters shown by `--stats`.
#[derive(Debug, Default)]
pub struct IrqStats {
    /// KVM_IRQ_LINE_STATUS raises that reached at least one CPU.
    pub line_delivered: AtomicU64,
    /// Raises merged with an interrupt already pending.
    pub line_coalesced: AtomicU64,
    /// Raises that went nowhere (masked pin, no route).
    pub line_masked: AtomicU64,
    /// Raises with plain KVM_IRQ_LINE (no KVM_CAP_IRQ_INJECT_STATUS), whose
    /// result KVM does not report.
    pub line_raised_no_status: AtomicU64,
    /// Line lowerings.
    pub line_lowered: AtomicU64,
    /// MSIs sent with KVM_SIGNAL_MSI.
    pub msi_signaled: AtomicU64,
    /// MSIs sent through a cached dynamic route.
    pub msi_via_route: AtomicU64,
    /// Times the dynamic route cache was flushed.
    pub msi_cache_flushes: AtomicU64,
    /// KVM_SET_GSI_ROUTING commits.
    pub routing_commits: AtomicU64,
    /// Resampled irq-lines (`kvm::resample`): raises (trigger writes).
    pub resample_raised: AtomicU64,
    /// Resampled lines lowered while KVM could hold them (irqfd cycled).
    pub resample_lowered: AtomicU64,
    /// Resample notifications (EOIs of resampled GSIs).
    pub resample_eois: AtomicU64,
    /// Lines re-asserted after an EOI (still high, level-triggered pin).
    pub resample_reasserted: AtomicU64,
}

#[derive(Default)]
struct Table {
    /// Fixed entries from the plan.
    fixed: Vec<kvm_irq_routing_entry>,
    /// Routes that change at run time, by GSI (split IOAPIC pins, MSI cache).
    dynamic: BTreeMap<u32, kvm_irq_routing_entry>,
    /// Fallback MSI cache: (address, data) → GSI.
    cache: BTreeMap<(u64, u32), u32>,
    /// GSIs free for the cache.
    alloc: Option<GsiAllocator>,
}

/// What the host offers for interrupt delivery.
#[derive(Clone, Copy, Debug)]
pub struct HostIrq {
    /// KVM_CAP_SIGNAL_MSI: MSIs directly, else through cached routes.
    pub signal_msi: bool,
    /// KVM_CAP_IRQ_INJECT_STATUS: KVM_IRQ_LINE_STATUS, else KVM_IRQ_LINE.
    pub inject_status: bool,
    /// KVM_CAP_IRQ_ROUTING: the host's GSI count.
    pub gsis: u32,
}

/// The VM's interrupt delivery.
pub struct KvmIrq {
    vm: Arc<VmFd>,
    signal_msi: bool,
    inject_status: bool,
    table: Mutex<Table>,
    /// Counters.
    pub stats: IrqStats,
}

/// An MSI routing entry.
pub fn msi_entry(gsi: u32, address: u64, data: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = address as u32;
    e.u.msi.address_hi = (address >> 32) as u32;
    e.u.msi.data = data;
    e
}

fn irqchip_entry(gsi: u32, chip: &str, pin: u32) -> Result<kvm_irq_routing_entry, IrqError> {
    let irqchip = match chip {
        "ioapic" => KVM_IRQCHIP_IOAPIC,
        "pic-master" => KVM_IRQCHIP_PIC_MASTER,
        "pic-slave" => KVM_IRQCHIP_PIC_SLAVE,
        other => return Err(IrqError::Table(format!("unknown irqchip {other}"))),
    };
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = irqchip;
    e.u.irqchip.pin = pin;
    Ok(e)
}

impl KvmIrq {
    /// The fixed part of the plan's routing table; `host` says which
    /// delivery ioctls the host has.
    pub fn new(vm: Arc<VmFd>, plan: &Plan, host: HostIrq) -> Result<Self, IrqError> {
        let HostIrq {
            signal_msi,
            inject_status,
            gsis: host_gsis,
        } = host;
        let mut fixed = Vec::new();
        let mut alloc = GsiAllocator::new(host_gsis);
        for r in &plan.irqchip.routes {
            alloc.reserve(r.gsi);
            match &r.target {
                RouteTarget::Irqchip { chip, pin } => fixed.push(irqchip_entry(r.gsi, chip, *pin)?),
                RouteTarget::Msi { address, data, .. } => {
                    fixed.push(msi_entry(r.gsi, address.0, data.0 as u32))
                }
                // Set by the guest through berth's IOAPIC (see `set_dynamic`).
                RouteTarget::BerthIoapic { .. } => {}
            }
        }
        Ok(KvmIrq {
            vm,
            signal_msi,
            inject_status,
            table: Mutex::new(Table {
                fixed,
                alloc: Some(alloc),
                ..Default::default()
            }),
            stats: IrqStats::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits the whole table (KVM_SET_GSI_ROUTING replaces it).
    pub fn commit(&self) -> Result<(), IrqError> {
        let t = self.lock();
        self.commit_locked(&t)
    }

    fn commit_locked(&self, t: &Table) -> Result<(), IrqError> {
        let mut entries = t.fixed.clone();
        entries.extend(t.dynamic.values().copied());
        let routing = KvmIrqRouting::from_entries(&entries).map_err(|e| IrqError::Table(format!("{e:?}")))?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|source| IrqError::Routing {
                entries: entries.len(),
                source,
            })?;
        self.stats.routing_commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sets (or removes, with `None`) the MSI route of a run-time GSI, e.g. a
    /// split-mode IOAPIC pin whose redirection entry the guest changed.
    pub fn set_dynamic(&self, gsi: u32, msi: Option<(u64, u32)>) -> Result<(), IrqError> {
        let mut t = self.lock();
        let changed = match msi {
            Some((a, d)) => t.dynamic.insert(gsi, msi_entry(gsi, a, d)).is_none_or(|old| {
                // SAFETY: entries in `dynamic` are always MSI entries.
                let o = unsafe { old.u.msi };
                (o.address_lo, o.address_hi, o.data) != (a as u32, (a >> 32) as u32, d)
            }),
            None => t.dynamic.remove(&gsi).is_some(),
        };
        if changed {
            self.commit_locked(&t)?;
        }
        Ok(())
    }

    /// Asserts (`true`) or lowers a GSI with KVM_IRQ_LINE_STATUS, or with
    /// KVM_IRQ_LINE when the host lacks KVM_CAP_IRQ_INJECT_STATUS; returns
    /// whether KVM accepted the ioctl.
    pub fn set_line(&self, gsi: u32, level: bool) -> bool {
        if !self.inject_status {
            if let Err(e) = self.vm.set_irq_line(gsi, level) {
                log::debug!("KVM_IRQ_LINE gsi {gsi} level {level}: {e}");
                return false;
            }
            let counter = if level {
                &self.stats.line_raised_no_status
            } else {
                &self.stats.line_lowered
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let mut irq = kvm_irq_level {
            level: u32::from(level),
            ..Default::default()
        };
        irq.__bindgen_anon_1.irq = gsi;
        // SAFETY: the fd is a VM fd, the ioctl reads and writes exactly one
        // kvm_irq_level, which lives on this stack frame; the result is checked.
        let ret = unsafe { ioctl_with_mut_ref(&*self.vm, KVM_IRQ_LINE_STATUS(), &mut irq) };
        if ret != 0 {
            log::debug!(
                "KVM_IRQ_LINE_STATUS gsi {gsi} level {level}: {}",
                std::io::Error::last_os_error()
            );
            return false;
        }
        if !level {
            log::trace!("KVM_IRQ_LINE_STATUS gsi {gsi} level 0");
            self.stats.line_lowered.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // SAFETY: after KVM_IRQ_LINE_STATUS the kernel stores the status in the union.
        let status = unsafe { irq.__bindgen_anon_1.status };
        log::trace!("KVM_IRQ_LINE_STATUS gsi {gsi} level 1: status {status}");
        let counter = match status {
            s if s > 0 => &self.stats.line_delivered,
            0 => &self.stats.line_coalesced,
            _ => &self.stats.line_masked,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Delivers one MSI.
    pub fn send_msi(&self, address: u64, data: u32) {
        if self.signal_msi {
            let msi = kvm_msi {
                address_lo: address as u32,
                address_hi: (address >> 32) as u32,
                data,
                ..Default::default()
            };
            match self.vm.signal_msi(msi) {
                Ok(_) => {
                    self.stats.msi_signaled.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => log::debug!("KVM_SIGNAL_MSI {address:#x}/{data:#x}: {e}"),
            }
            return;
        }
        match self.cached_route(address, data) {
            Ok(gsi) => {
                if self.vm.set_irq_line(gsi, true).is_ok() {
                    self.stats.msi_via_route.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => log::warn!("cannot route MSI {address:#x}/{data:#x}: {e}"),
        }
    }

    /// The GSI of a cached MSI route for (address, data), adding one (and
    /// flushing the cache when full or out of GSIs) as needed.
    fn cached_route(&self, address: u64, data: u32) -> Result<u32, IrqError> {
        let mut t = self.lock();
        if let Some(gsi) = t.cache.get(&(address, data)) {
            return Ok(*gsi);
        }
        let mut gsi = t.alloc.as_mut().and_then(GsiAllocator::alloc);
        if gsi.is_none() || t.cache.len() >= MSI_CACHE_ENTRIES {
            // Flush: give every cached GSI back and drop its route.
            let cached: Vec<u32> = t.cache.values().copied().collect();
            for g in cached {
                t.dynamic.remove(&g);
                if let Some(a) = t.alloc.as_mut() {
                    a.release(g);
                }
            }
            t.cache.clear();
            self.stats.msi_cache_flushes.fetch_add(1, Ordering::Relaxed);
            if gsi.is_none() {
                gsi = t.alloc.as_mut().and_then(GsiAllocator::alloc);
            }
        }
        let gsi = gsi.ok_or_else(|| IrqError::Table("no GSI is free for an MSI route".into()))?;
        t.cache.insert((address, data), gsi);
        t.dynamic.insert(gsi, msi_entry(gsi, address, data));
        self.commit_locked(&t)?;
        Ok(gsi)
    }
}
