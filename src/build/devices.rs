//! Build step 12: a back-end for every planned device, inserted on the one
//! [`Bus`] at its window, and the line and MSI sinks that connect the
//! devices' interrupts to KVM (kernel irqchip) or to berth's IOAPIC (split).

use super::BuildError;
use crate::arch::x86_64::layout;
use crate::bus::{AddressSpace, Bus, BusDevice};
use crate::devices::acpi_pm::{AcpiPmCnt, AcpiPmEvt, ResetReg};
use crate::devices::boot_timer::{BootTimer, BootTimes};
use crate::devices::cmos::{host_wall_clock_ns, Cmos};
use crate::devices::doorbell::Doorbell;
use crate::devices::fw_cfg::{FwCfg, FwCfgDma, FwCfgPorts};
use crate::devices::i8042::{insert_i8042, I8042};
use crate::devices::ioapic::{Ioapic, MsiRoute, MsiSink};
use crate::devices::irq_lines::{IrqLines, LineSink};
use crate::devices::null::Null;
use crate::devices::pc_testdev::{DataPort, FlushPage, Iomem};
use crate::devices::pci::{PciAddress, PciConfig, PciData};
use crate::devices::pci_testdev::{PciTestdev, PciTestdevBar};
use crate::devices::pm_timer::{host_monotonic_ns, PmTimer};
use crate::devices::recorder::{Recorder, RecorderLog};
use crate::devices::rtc::Rtc;
use crate::devices::sleep::SleepControl;
use crate::devices::{DebugExit, SerialDevice, SerialOutput};
use crate::kvm::eventfds::Registrations;
use crate::kvm::irq::KvmIrq;
use crate::kvm::resample::ResampleLines;
use crate::plan::{DeviceKind, Plan, RouteTarget, Space};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// An irq-lines device with `resample = true` (kernel irqchip): its GSIs
/// below `n` that reach an IOAPIC pin go through resample irqfds.
fn resample_lines(
    plan: &Plan,
    n: u32,
    irq: &Arc<KvmIrq>,
    regs: &mut Registrations,
) -> Result<Arc<dyn LineSink>, String> {
    let pins: BTreeMap<u32, u32> = plan
        .irqchip
        .routes
        .iter()
        .filter_map(|r| match &r.target {
            RouteTarget::Irqchip { chip, pin } if chip == "ioapic" && r.gsi < n => Some((r.gsi, *pin)),
            _ => None,
        })
        .collect();
    Ok(Arc::new(ResampleLines::new(regs, &pins, irq.clone())?))
}

/// Line levels in kernel mode: KVM's irqchips, through the routing table.
struct KernelLines(Arc<KvmIrq>);

impl LineSink for KernelLines {
    fn set_gsi(&self, gsi: u32, level: bool) {
        self.0.set_line(gsi, level);
    }
}

/// Line levels in split mode: GSIs routed to berth's IOAPIC pins go there;
/// the rest (MSI routes) go to KVM.
struct SplitLines {
    irq: Arc<KvmIrq>,
    ioapic: Arc<Mutex<Ioapic>>,
    pins: BTreeMap<u32, Vec<u32>>,
}

impl LineSink for SplitLines {
    fn set_gsi(&self, gsi: u32, level: bool) {
        match self.pins.get(&gsi) {
            Some(pins) => {
                let mut io = self.ioapic.lock().unwrap_or_else(|e| e.into_inner());
                for p in pins {
                    io.set_irq(*p as usize, level);
                }
            }
            None => {
                self.irq.set_line(gsi, level);
            }
        }
    }
}

/// berth's IOAPIC sends MSIs and mirrors its redirection table into KVM's
/// routes (so KVM reports EOIs of level-triggered vectors).
struct IoapicMsi(Arc<KvmIrq>);

impl MsiSink for IoapicMsi {
    fn send_msi(&mut self, address: u64, data: u32) {
        self.0.send_msi(address, data);
    }

    fn update_route(&mut self, pin: usize, route: Option<MsiRoute>) {
        if let Err(e) = self.0.set_dynamic(pin as u32, route.map(|r| (r.address, r.data))) {
            log::warn!("ioapic pin {pin}: {e}");
        }
    }
}

/// What step 12 hands back: the bus, and the devices the VM keeps handles to.
pub(super) struct BusParts {
    pub(super) bus: Bus,
    pub(super) serial: Arc<Mutex<SerialDevice>>,
    pub(super) serial_irq: EventFd,
    pub(super) ioapic: Option<Arc<Mutex<Ioapic>>>,
    pub(super) recorders: Vec<(String, Arc<Mutex<RecorderLog>>)>,
    pub(super) boot_timer: Option<Arc<Mutex<BootTimes>>>,
    pub(super) doorbells: Vec<(String, Arc<AtomicU64>)>,
}

/// Step 12: a back-end for every planned device, inserted at its window.
pub(super) fn build_bus(
    plan: &Plan,
    serial_out: SerialOutput,
    irq: &Arc<KvmIrq>,
    mem: &GuestMemoryMmap,
    sleep: Option<&Arc<SleepControl>>,
    regs: &mut Registrations,
) -> Result<BusParts, BuildError> {
    let mut bus = Bus::new();
    let dev_err = |name: &str, message: String| BuildError::Device {
        name: name.to_string(),
        message,
    };
    let serial_irq =
        EventFd::new(libc::EFD_NONBLOCK).map_err(|e| dev_err("com1", format!("eventfd: {e}")))?;
    let ioapic = (plan.irqchip.mode == "split").then(|| {
        Arc::new(Mutex::new(Ioapic::new(
            plan.irqchip.ioapic_id as u8,
            Box::new(IoapicMsi(irq.clone())),
        )))
    });
    if let Some(io) = &ioapic {
        bus.insert(
            AddressSpace::Mmio,
            plan.irqchip.ioapic_addr.0,
            layout::IOAPIC_SIZE,
            "ioapic",
            io.clone(),
        )?;
    }
    let lines: Arc<dyn LineSink> = match &ioapic {
        Some(io) => {
            let mut pins: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for r in &plan.irqchip.routes {
                if let RouteTarget::BerthIoapic { pin } = r.target {
                    pins.entry(r.gsi).or_default().push(pin);
                }
            }
            Arc::new(SplitLines {
                irq: irq.clone(),
                ioapic: io.clone(),
                pins,
            })
        }
        None => Arc::new(KernelLines(irq.clone())),
    };
    let mut serial_out = Some(serial_out);
    let mut serial = None;
    let mut recorders = Vec::new();
    let mut boot_timer = None;
    let mut doorbells = Vec::new();
    let mut i8042: Option<Arc<Mutex<I8042>>> = None;
    // State shared by the windows of one device.
    let fw_cfg = plan.devices.iter().find_map(|d| match &d.kind {
        DeviceKind::FwCfg { items, .. } => Some(Arc::new(Mutex::new(FwCfg::new(
            items.iter().map(|i| (i.key.0 as u16, i.data.clone())),
            mem.clone(),
        )))),
        _ => None,
    });
    let testdev_data = Arc::new(Mutex::new(0u32));
    let testdev_bar = |io: bool| {
        plan.devices.iter().find_map(|d| match d.kind {
            DeviceKind::PciTestdevBar { io: i } if i == io => Some(d.base.0 as u32),
            _ => None,
        })
    };
    let pci = Arc::new(Mutex::new(PciConfig::new(
        testdev_bar(false).zip(testdev_bar(true)),
    )));
    let pci_testdev = Arc::new(Mutex::new(PciTestdev::new()));
    for d in &plan.devices {
        let space = match d.space {
            Space::Pio => AddressSpace::Pio,
            Space::Mmio => AddressSpace::Mmio,
        };
        let dev: Arc<Mutex<dyn BusDevice>> = match &d.kind {
            DeviceKind::Serial8250 { .. } => {
                let out = serial_out
                    .take()
                    .ok_or_else(|| dev_err(&d.name, "a second serial port".into()))?;
                let evt = serial_irq
                    .try_clone()
                    .map_err(|e| dev_err(&d.name, format!("eventfd: {e}")))?;
                let s = Arc::new(Mutex::new(SerialDevice::new(out, evt)));
                serial = Some(s.clone());
                s
            }
            DeviceKind::I8042 {} => {
                // One controller at both its ports (the plan lists each port).
                if i8042.is_none() {
                    let kbd = Arc::new(Mutex::new(I8042::new()));
                    insert_i8042(&mut bus, &kbd)?;
                    i8042 = Some(kbd);
                }
                continue;
            }
            DeviceKind::Cmos { gsi } => {
                let (below, above) = ram_split(plan);
                let mut cmos = Cmos::with_clock_ns(below, above, Box::new(host_wall_clock_ns));
                cmos.connect_irq(lines.clone(), *gsi);
                if let Some(s) = sleep {
                    cmos.connect_wake(s.clone());
                }
                let rtc = Rtc::start(cmos).map_err(|e| dev_err(&d.name, format!("rtc thread: {e}")))?;
                Arc::new(Mutex::new(rtc))
            }
            DeviceKind::AcpiPmEvent {} => Arc::new(Mutex::new(match sleep {
                Some(s) => AcpiPmEvt::with_sleep(s.clone()),
                None => AcpiPmEvt::new(),
            })),
            DeviceKind::AcpiPmControl {} => Arc::new(Mutex::new(match sleep {
                Some(s) => AcpiPmCnt::with_sleep(s.clone()),
                None => AcpiPmCnt::new(),
            })),
            DeviceKind::AcpiPmTimer {} => Arc::new(Mutex::new(PmTimer::new(Box::new(host_monotonic_ns)))),
            DeviceKind::ResetControl {} => Arc::new(Mutex::new(ResetReg::new())),
            DeviceKind::DebugExit { width } => {
                let de = DebugExit::new(*width).map_err(|e| dev_err(&d.name, e.to_string()))?;
                Arc::new(Mutex::new(de))
            }
            DeviceKind::IrqLines { lines: n, resample } => {
                let sink = match resample {
                    true => resample_lines(plan, *n, irq, regs).map_err(|m| dev_err(&d.name, m))?,
                    false => lines.clone(),
                };
                Arc::new(Mutex::new(IrqLines::new(*n, sink)))
            }
            DeviceKind::Recorder {} => {
                let r = Recorder::new();
                recorders.push((d.name.clone(), r.log()));
                Arc::new(Mutex::new(r))
            }
            DeviceKind::Null {} => Arc::new(Mutex::new(Null)),
            DeviceKind::BootTimer {} => {
                let t = BootTimer::new();
                boot_timer = Some(t.times());
                Arc::new(Mutex::new(t))
            }
            DeviceKind::Doorbell { .. } => {
                let b = Doorbell::new();
                doorbells.push((d.name.clone(), b.unmatched()));
                Arc::new(Mutex::new(b))
            }
            DeviceKind::FwCfg { .. } | DeviceKind::FwCfgDma {} => {
                let state = fw_cfg
                    .clone()
                    .ok_or_else(|| dev_err(&d.name, "fw_cfg DMA without its fw-cfg window".into()))?;
                match d.kind {
                    DeviceKind::FwCfg { .. } => Arc::new(Mutex::new(FwCfgPorts(state))),
                    _ => Arc::new(Mutex::new(FwCfgDma(state))),
                }
            }
            DeviceKind::TestdevData {} => Arc::new(Mutex::new(DataPort::new(testdev_data.clone()))),
            DeviceKind::TestdevFlushPage {} => Arc::new(Mutex::new(FlushPage::new(mem.clone()))),
            DeviceKind::TestdevIomem {} => Arc::new(Mutex::new(Iomem::new())),
            DeviceKind::PciAddress { reset } => {
                let reset: Option<Box<dyn BusDevice>> = reset.then(|| Box::new(ResetReg::new()) as _);
                Arc::new(Mutex::new(PciAddress::new(pci.clone(), reset)))
            }
            DeviceKind::PciData { .. } => Arc::new(Mutex::new(PciData(pci.clone()))),
            DeviceKind::PciTestdevBar { io } => {
                Arc::new(Mutex::new(PciTestdevBar::new(pci_testdev.clone(), *io)))
            }
        };
        bus.insert(space, d.base.0, d.len.0, &d.name, dev)?;
    }
    let serial = serial.ok_or_else(|| dev_err("com1", "the plan has no serial device".into()))?;
    Ok(BusParts {
        bus,
        serial,
        serial_irq,
        ioapic,
        recorders,
        boot_timer,
        doorbells,
    })
}

/// RAM below and above 4 GiB, for the CMOS memory-size registers.
fn ram_split(plan: &Plan) -> (u64, u64) {
    let four_g = 1u64 << 32;
    plan.memslots
        .iter()
        .filter(|s| !s.readonly)
        .fold((0, 0), |(lo, hi), s| {
            let (start, end) = (s.guest_addr.0, s.guest_addr.0 + s.size.0);
            let below = end.min(four_g).saturating_sub(start.min(four_g));
            (lo + below, hi + (end - start - below))
        })
}
