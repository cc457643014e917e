//! Level-triggered irq-lines through resample irqfds (`resample = true` on
//! an irq-lines device; kernel irqchip only), as QEMU's and crosvm's KVM
//! layers drive level INTx:
//!
//! - Each line whose GSI reaches an IOAPIC pin is an irqfd registered with
//!   KVM_IRQFD_FLAG_RESAMPLE. Raising the line writes its trigger eventfd;
//!   KVM asserts the GSI (from a workqueue: the interrupt reaches the guest
//!   shortly after the write, not before the guest's next instruction) and
//!   holds it until the guest's EOI.
//! - At the EOI KVM lowers the GSI itself and signals the resample eventfd.
//!   The `irq-resample` thread wakes and writes the trigger again for every
//!   line that is still high on a level-triggered pin (the guest's
//!   redirection entry, read with KVM_GET_IRQCHIP): the interrupt comes
//!   again, as a level interrupt must. An edge-triggered pin is not
//!   re-asserted: that would be an edge the device never made.
//! - Lowering the line deassigns its irqfd and assigns it again. KVM waits
//!   for a pending injection to finish and lowers the GSI when the last
//!   resample irqfd on it goes, so a line lowered before its interrupt was
//!   taken (masked pin) raises nothing later, and a low-high pair (a new
//!   edge, before or after the EOI) is a real edge that KVM delivers.
//!   Without this, a lowering would only take effect at the next EOI and an
//!   edge made while KVM still held the line would be lost.
//! - Each line's state and its eventfd writes are under one lock, so the
//!   resample thread never re-asserts a line that the guest has lowered
//!   meanwhile, and an edge between the EOI and the resample is kept.
//!
//! GSIs without an IOAPIC pin route go to KVM_IRQ_LINE(_STATUS) as usual.
//! Not carried across a snapshot: a restored machine's resampled lines start
//! low here (the device's saved levels are restored, KVM's resample source
//! is not), so a line that was high must be raised again by the guest.
//! Split irqchip: KVM refuses resample irqfds (they need its IOAPIC), and
//! berth's IOAPIC sees every EOI itself (KVM_EXIT_IOAPIC_EOI) and re-delivers
//! a level line that is still high, so `resample` is refused there
//! (config validation).

use super::eventfds::Registrations;
use super::irq::KvmIrq;
use crate::devices::irq_lines::LineSink;
use kvm_bindings::{kvm_irqchip, KVM_IRQCHIP_IOAPIC};
use kvm_ioctls::VmFd;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use vmm_sys_util::eventfd::EventFd;

/// IOAPIC redirection entry: trigger mode bit (1 = level).
const RTE_LEVEL: u64 = 1 << 15;

#[derive(Default)]
struct Level {
    /// The device's level (the guest's last write).
    high: bool,
    /// The trigger was written since the irqfd was last (re)assigned: KVM
    /// may hold the GSI asserted.
    held: bool,
}

struct Line {
    /// The IOAPIC pin the GSI is routed to.
    pin: u32,
    level: Mutex<Level>,
    /// The irqfd's trigger.
    trigger: EventFd,
}

impl Line {
    fn lock(&self) -> MutexGuard<'_, Level> {
        self.level.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Shared {
    vm: Arc<VmFd>,
    lines: BTreeMap<u32, Line>,
    /// Signalled by KVM at each EOI of a resampled GSI (and at teardown).
    resample: EventFd,
    stop: AtomicBool,
    irq: Arc<KvmIrq>,
}

/// An irq-lines device's sink in kernel mode with `resample = true`.
pub struct ResampleLines {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn eventfd(flags: i32) -> Result<EventFd, String> {
    EventFd::new(flags).map_err(|e| format!("eventfd: {e}"))
}

fn clone(fd: &EventFd) -> Result<EventFd, String> {
    fd.try_clone().map_err(|e| format!("eventfd: {e}"))
}

impl ResampleLines {
    /// Registers a resample irqfd (in `regs`: deassigned at teardown) for
    /// each GSI in `pins` (GSI → IOAPIC pin) and starts the `irq-resample`
    /// thread; other GSIs go to `irq` (KVM_IRQ_LINE).
    pub fn new(
        regs: &mut Registrations,
        pins: &BTreeMap<u32, u32>,
        irq: Arc<KvmIrq>,
    ) -> Result<Self, String> {
        let resample = eventfd(0)?;
        let mut lines = BTreeMap::new();
        for (&gsi, &pin) in pins {
            let trigger = eventfd(libc::EFD_NONBLOCK)?;
            regs.irqfd_resample(clone(&trigger)?, clone(&resample)?, gsi)
                .map_err(|e| format!("KVM_IRQFD (resample) for GSI {gsi}: {e}"))?;
            let level = Mutex::new(Level::default());
            lines.insert(gsi, Line { pin, level, trigger });
        }
        let shared = Arc::new(Shared {
            vm: regs.vm().clone(),
            lines,
            resample,
            stop: AtomicBool::new(false),
            irq,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("irq-resample".into())
            .spawn(move || resample_loop(&s))
            .map_err(|e| format!("cannot start the irq-resample thread: {e}"))?;
        Ok(ResampleLines {
            shared,
            thread: Some(thread),
        })
    }
}

impl Shared {
    /// Asserts through the irqfd (the caller holds the line's lock).
    fn assert(&self, line: &Line, level: &mut Level) {
        level.held = true;
        if let Err(e) = line.trigger.write(1) {
            log::warn!("irq-lines: cannot write an irqfd: {e}");
        }
    }

    /// Lowers `gsi` now: deassigning the resample irqfd waits for a pending
    /// injection and lowers the GSI; it is assigned again at once (the
    /// deassignment consumed the trigger's count, so nothing fires).
    fn lower(&self, gsi: u32, line: &Line) -> Result<(), String> {
        self.vm
            .unregister_irqfd(&line.trigger, gsi)
            .map_err(|e| format!("deassign: {e}"))?;
        self.vm
            .register_irqfd_with_resample(&line.trigger, &self.resample, gsi)
            .map_err(|e| format!("assign: {e}"))
    }
}

impl LineSink for ResampleLines {
    fn set_gsi(&self, gsi: u32, high: bool) {
        let s = &self.shared;
        let Some(line) = s.lines.get(&gsi) else {
            s.irq.set_line(gsi, high);
            return;
        };
        let mut level = line.lock();
        if level.high == high {
            // No edge: the level the line already has.
            return;
        }
        level.high = high;
        if high {
            s.irq.stats.resample_raised.fetch_add(1, Ordering::Relaxed);
            s.assert(line, &mut level);
        } else if level.held {
            level.held = false;
            s.irq.stats.resample_lowered.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = s.lower(gsi, line) {
                log::error!("irq-lines: cannot lower GSI {gsi}: {e}");
            }
        }
    }
}

impl Drop for ResampleLines {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.resample.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The guest's trigger mode per IOAPIC pin (bit set: level), or None.
fn level_pins(vm: &VmFd) -> Option<u32> {
    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).ok()?;
    // SAFETY: for KVM_IRQCHIP_IOAPIC the kernel fills the `ioapic` member of
    // the union; its redirection table is plain data.
    let table = unsafe { chip.chip.ioapic.redirtbl };
    let mut mask = 0u32;
    for (pin, rte) in table.iter().enumerate() {
        // SAFETY: `bits` covers the whole 64-bit entry; any value is valid.
        if unsafe { rte.bits } & RTE_LEVEL != 0 {
            mask |= 1 << pin;
        }
    }
    Some(mask)
}

fn resample_loop(s: &Shared) {
    if let Err(e) = crate::seccomp::install(crate::seccomp::ThreadKind::IrqResample) {
        log::error!("{e}; level-triggered irq-lines are not re-asserted after EOI");
        return;
    }
    loop {
        // Blocks until KVM signals an EOI of a resampled GSI (or Drop does).
        if s.resample.read().is_err() || s.stop.load(Ordering::SeqCst) {
            return;
        }
        s.irq.stats.resample_eois.fetch_add(1, Ordering::Relaxed);
        let Some(level) = level_pins(&s.vm) else {
            continue;
        };
        for line in s.lines.values() {
            let mut l = line.lock();
            if l.high && line.pin < 32 && level & (1 << line.pin) != 0 {
                s.irq.stats.resample_reasserted.fetch_add(1, Ordering::Relaxed);
                s.assert(line, &mut l);
            }
        }
    }
}
