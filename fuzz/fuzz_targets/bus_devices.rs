//! bus_devices: bytes → a sequence of port-I/O and MMIO accesses on a
//! [`Bus`] holding every device berth has, plus direct IOAPIC input-pin and
//! EOI calls and host serial input.
//!
//! The machine is the split-irqchip one of configs/irq-split-2.toml: COM1,
//! debug-exit, irq-lines (GSI n < 24 drives IOAPIC pin n, as berth's
//! `SplitLines` does), PIO and MMIO recorders, a doorbell, a boot timer (on
//! a fixed clock), PIO and MMIO null devices and the IOAPIC,
//! with a checking (otherwise no-op) `MsiSink`; plus the i8042 (both ports),
//! the CMOS/RTC (on a fuzzed clock and memory size), the ACPI PM1a event
//! and control blocks, the PM timer (on the same clock) and the reset
//! register. A few extra recorder ranges at
//! fuzzed addresses exercise `Bus::insert`.
//!
//! Two identical machines run the same operations; every read starts from a
//! different buffer pattern in each (0x00 and 0xa5). Any difference between
//! them means a device left part of a read buffer unwritten (or is not
//! deterministic). Other checks: an unhandled read is all-ones, debug-exit's
//! status is `(v << 1) | 1`, only the devices that may ask for an exit,
//! reset or power-off do, ranges the bus accepted never overlap, the
//! IOAPIC's MSIs and routes are well formed and only reported when they
//! change, edge-triggered RTEs never show Remote IRR, and the device counters
//! agree with the bus's (the boot timer's signals and other writes add up to
//! its bus writes).
//!
//! Input format (fuzz/fixtures/make_bus_seeds.py writes the checked-in
//! seeds): byte 0 = header: bits 0-1 number of extra ranges, each 17 bytes
//! (space, base u64 LE, len u64 LE) right after it; bits 2-3 and 4-5 pick
//! the RAM size below and above 4 GiB the CMOS reports. Then operations, each
//! an opcode byte followed by its arguments:
//!
//! | opcode % 16 | operation | arguments |
//! |---|---|---|
//! | 0..=4 | bus read | target, offset u16, size code |
//! | 5..=9 | bus write | target, offset u16, size code, `size` value bytes |
//! | 10 | `Ioapic::set_irq` | pin (0..=255), level |
//! | 11 | `Ioapic::end_of_interrupt` | vector |
//! | 12 | EOI burst | vector, count code (< 0xf0: that many; else just around the storm threshold) |
//! | 13 | serial host input | n (mod 32), n bytes |
//! | 14 | set the CMOS clock | u32: seconds since the epoch / 2 |
//! | 15 | `AcpiPmEvt::set_status` | u16 |
//!
//! Target = index into [`TARGETS`] (then the extra ranges), mod their count;
//! the address is `base + offset % (len + 8) - 4`, so accesses straddle both
//! ends of each range. Size codes 0..=7: 1, 2, 4, 8, 1, 4, 3, 16 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth::bus::{AddressSpace, Bus, BusDevice, VmEvent};
use berth::devices::acpi_pm::{AcpiPmCnt, AcpiPmEvt, ResetReg, PM1_CNT_LEN, PM1_EVT_LEN, RESET_REG_LEN};
use berth::devices::boot_timer::{BootTimer, BootTimes, WINDOW as BOOT_TIMER_WINDOW};
use berth::devices::cmos::{Cmos, CMOS_PORT_BASE, CMOS_PORT_LEN};
use berth::devices::pm_timer::{PmTimer, PM_TMR_LEN};
use berth::devices::i8042::{insert_i8042, I8042, I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_PORT_LEN};
use berth::devices::ioapic::{
    Ioapic, MsiRoute, MsiSink, IOAPIC_MMIO_BASE, IOAPIC_MMIO_SIZE, IOAPIC_NUM_PINS, IOAPIC_STORM_THRESHOLD,
};
use berth::devices::irq_lines::{IrqLines, LineSink};
use berth::devices::null::Null;
use berth::devices::recorder::{Recorder, RecorderLog};
use berth::devices::serial::SERIAL_REGS_LEN;
use berth::devices::{doorbell::Doorbell, DebugExit, SerialDevice, SerialOutput};
use berth::devices::{fw_cfg, pc_testdev, pci, pci_testdev};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const MAX_OPS: usize = 4096;
/// EOIs all bursts of one input may make together (bounds the run time).
const EOI_BUDGET: u32 = 2 * IOAPIC_STORM_THRESHOLD + 1000;
const SIZES: [usize; 8] = [1, 2, 4, 8, 1, 4, 3, 16];

/// What the checking MSI sink saw.
#[derive(Debug, Default, PartialEq)]
struct MsiLog {
    msis: u64,
    last: Option<(u64, u32)>,
    routes: Vec<Option<MsiRoute>>,
    route_updates: u64,
}

struct CheckingSink(Arc<Mutex<MsiLog>>);

/// MSI address bits an IOAPIC may set: 0xfee00000 | dest << 12 | logical << 2.
const MSI_ADDR_VARIABLE: u64 = (0xff << 12) | (1 << 2);
/// MSI data bits: vector, delivery mode, assert, level.
const MSI_DATA_VARIABLE: u32 = 0xff | (0x7 << 8) | (1 << 14) | (1 << 15);

fn check_msi(address: u64, data: u32) {
    assert_eq!(
        address & !MSI_ADDR_VARIABLE,
        0xfee0_0000,
        "malformed MSI address {address:#x}"
    );
    assert_eq!(data & !MSI_DATA_VARIABLE, 0, "malformed MSI data {data:#x}");
    // Assert (bit 14) goes with level (bit 15).
    assert_eq!(
        data >> 14 & 1,
        data >> 15 & 1,
        "MSI data {data:#x}: assert without level"
    );
}

impl MsiSink for CheckingSink {
    fn send_msi(&mut self, address: u64, data: u32) {
        check_msi(address, data);
        let mut log = self.0.lock().unwrap();
        log.msis += 1;
        log.last = Some((address, data));
    }

    fn update_route(&mut self, pin: usize, route: Option<MsiRoute>) {
        assert!(pin < IOAPIC_NUM_PINS, "route update for pin {pin}");
        if let Some(r) = route {
            check_msi(r.address, r.data);
            assert_eq!(
                r.level,
                r.data & (1 << 15) != 0,
                "route level flag disagrees with data: {r:?}"
            );
        }
        let mut log = self.0.lock().unwrap();
        assert_ne!(
            log.routes[pin], route,
            "update_route for pin {pin} without a change"
        );
        log.routes[pin] = route;
        log.route_updates += 1;
    }
}

/// irq-lines in split mode: GSI n < 24 is IOAPIC pin n, the rest go nowhere.
struct ToIoapic(Arc<Mutex<Ioapic>>);

impl LineSink for ToIoapic {
    fn set_gsi(&self, gsi: u32, level: bool) {
        if (gsi as usize) < IOAPIC_NUM_PINS {
            self.0.lock().unwrap().set_irq(gsi as usize, level);
        }
    }
}

/// One machine: the bus and handles on its devices.
struct Rig {
    bus: Bus,
    ioapic: Arc<Mutex<Ioapic>>,
    serial: Arc<Mutex<SerialDevice>>,
    msi: Arc<Mutex<MsiLog>>,
    recorders: Vec<Arc<Mutex<RecorderLog>>>,
    doorbell: Arc<AtomicU64>,
    boot_timer: Arc<Mutex<BootTimes>>,
    pm_evt: Arc<Mutex<AcpiPmEvt>>,
    i8042: Arc<Mutex<I8042>>,
    clock: Arc<AtomicI64>,
    _serial_irq: EventFd,
}

const DEBUG_EXIT_PORT: u64 = 0xf4;
const COM1: u64 = 0x3f8;
const IRQ_LINES_PORT: u64 = 0x2000;
const IRQ_LINES: u32 = 64;
const PIO_RECORDER: u64 = 0x80;
const MMIO_RECORDER: u64 = 0xd000_0000;
const DOORBELL: u64 = 0xd000_1000;
const BOOT_TIMER: u64 = 0xd000_2000;
const PIO_NULL: u64 = 0x84;
const MMIO_NULL: u64 = 0xd000_3000;
const PM1_EVT: u64 = 0x600;
const PM1_CNT: u64 = 0x604;
const PM_TMR: u64 = 0x608;
const RESET_REG: u64 = 0xcf9;
const TESTDEV_DATA: u64 = 0xe0;
const TESTDEV_FLUSH: u64 = 0xe4;
const TESTDEV_BYTE: u64 = 0xe8;
const TESTDEV_IOMEM: u64 = 0xff00_0000;
const FW_CFG: u64 = 0x510;
const FW_CFG_DMA: u64 = 0x514;
/// The PCI address and data registers, away from the reset register here
/// (the device does not care where it sits).
const PCI_ADDRESS: u64 = 0xcf0;
const PCI_DATA: u64 = 0xcf4;
const PCI_TESTDEV_MMIO: u64 = 0xfea0_0000;
const PCI_TESTDEV_PIO: u64 = 0xc000;
/// Guest RAM for fw_cfg DMA and the flush page.
const RAM: u64 = 0x10000;
/// The CMOS clock before any "set clock" operation: 2026-01-01T00:00:00Z.
const CLOCK_START: i64 = 1_767_225_600;
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// RAM below / above 4 GiB the CMOS is told about, picked by the header.
const MEM_BELOW_4G: [u64; 4] = [256 * MIB, 640 * KIB, 3 * GIB + 512 * MIB, MIB + 4 * KIB];
const MEM_ABOVE_4G: [u64; 4] = [0, 4 * GIB, 1 << 51, 64 * KIB];

fn dev<D: BusDevice + 'static>(d: D) -> Arc<Mutex<dyn BusDevice>> {
    Arc::new(Mutex::new(d))
}

impl Rig {
    fn new(header: u8) -> Rig {
        use AddressSpace::{Mmio, Pio};
        let mut bus = Bus::new();
        let msi = Arc::new(Mutex::new(MsiLog {
            routes: vec![None; IOAPIC_NUM_PINS],
            ..MsiLog::default()
        }));
        let ioapic = Arc::new(Mutex::new(Ioapic::new(2, Box::new(CheckingSink(msi.clone())))));
        bus.insert(Mmio, IOAPIC_MMIO_BASE, IOAPIC_MMIO_SIZE, "ioapic", ioapic.clone())
            .unwrap();

        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            SerialOutput::Null,
            serial_irq.try_clone().expect("eventfd clone"),
        )));
        bus.insert(Pio, COM1, SERIAL_REGS_LEN, "com1", serial.clone())
            .unwrap();

        let de = DebugExit::new(4).unwrap();
        bus.insert(Pio, DEBUG_EXIT_PORT, de.width().into(), "debug-exit", dev(de))
            .unwrap();

        let lines = IrqLines::new(IRQ_LINES, Arc::new(ToIoapic(ioapic.clone())));
        bus.insert(Pio, IRQ_LINES_PORT, IRQ_LINES.into(), "irq-lines", dev(lines))
            .unwrap();

        let mut recorders = Vec::new();
        for (space, base, len) in [(Pio, PIO_RECORDER, 1), (Mmio, MMIO_RECORDER, 0x1000)] {
            let r = Recorder::new();
            recorders.push(r.log());
            bus.insert(space, base, len, "recorder", dev(r)).unwrap();
        }

        let db = Doorbell::new();
        let doorbell = db.unmatched();
        bus.insert(Mmio, DOORBELL, 4, "doorbell", dev(db)).unwrap();

        // A fixed clock: the two machines must record the same times.
        let timer = BootTimer::with_clock(|| (Duration::from_micros(1500), Duration::from_micros(700)));
        let boot_timer = timer.times();
        bus.insert(Mmio, BOOT_TIMER, BOOT_TIMER_WINDOW, "boot-timer", dev(timer))
            .unwrap();
        bus.insert(Pio, PIO_NULL, 2, "null", dev(Null)).unwrap();
        bus.insert(Mmio, MMIO_NULL, 0x1000, "null", dev(Null)).unwrap();

        let i8042 = Arc::new(Mutex::new(I8042::new()));
        insert_i8042(&mut bus, &i8042).unwrap();

        let clock = Arc::new(AtomicI64::new(CLOCK_START));
        let c = clock.clone();
        let below = MEM_BELOW_4G[usize::from(header >> 2 & 3)];
        let above = MEM_ABOVE_4G[usize::from(header >> 4 & 3)];
        let cmos = Cmos::new(below, above, Box::new(move || c.load(Ordering::Relaxed)));
        bus.insert(Pio, CMOS_PORT_BASE, CMOS_PORT_LEN, "cmos", dev(cmos))
            .unwrap();

        let pm_evt = Arc::new(Mutex::new(AcpiPmEvt::new()));
        bus.insert(Pio, PM1_EVT, PM1_EVT_LEN, "acpi-pm-evt", pm_evt.clone())
            .unwrap();
        bus.insert(Pio, PM1_CNT, PM1_CNT_LEN, "acpi-pm-cnt", dev(AcpiPmCnt::new()))
            .unwrap();
        bus.insert(Pio, RESET_REG, RESET_REG_LEN, "reset", dev(ResetReg::new()))
            .unwrap();
        let c = clock.clone();
        let pm_timer = PmTimer::new(Box::new(move || {
            (c.load(Ordering::Relaxed) - CLOCK_START).unsigned_abs() * 1_000_000_000
        }));
        bus.insert(Pio, PM_TMR, PM_TMR_LEN, "acpi-pm-timer", dev(pm_timer))
            .unwrap();

        // QEMU's test devices: pc-testdev, fw_cfg (DMA into a little RAM), PCI.
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("ram");
        let data = Arc::new(Mutex::new(0u32));
        bus.insert(
            Pio,
            TESTDEV_DATA,
            4,
            "testdev-data",
            dev(pc_testdev::DataPort::new(data.clone())),
        )
        .unwrap();
        bus.insert(
            Pio,
            TESTDEV_BYTE,
            4,
            "testdev-byte",
            dev(pc_testdev::DataPort::new(data)),
        )
        .unwrap();
        bus.insert(
            Pio,
            TESTDEV_FLUSH,
            4,
            "testdev-flush",
            dev(pc_testdev::FlushPage::new(ram.clone())),
        )
        .unwrap();
        bus.insert(
            Mmio,
            TESTDEV_IOMEM,
            pc_testdev::IOMEM_LEN,
            "testdev-iomem",
            dev(pc_testdev::Iomem::new()),
        )
        .unwrap();
        let e820 = [(0, RAM, 1)];
        let items = fw_cfg::items(&fw_cfg::Inputs {
            ram_size: RAM,
            cpus: 2,
            max_cpus: 2,
            cmdline: "console=ttyS0",
            e820: &e820,
            dma: true,
        });
        let fw = Arc::new(Mutex::new(fw_cfg::FwCfg::new(
            items.into_iter().map(|i| (i.key, i.data)),
            ram,
        )));
        bus.insert(
            Pio,
            FW_CFG,
            fw_cfg::CTL_LEN,
            "fw-cfg",
            dev(fw_cfg::FwCfgPorts(fw.clone())),
        )
        .unwrap();
        bus.insert(
            Pio,
            FW_CFG_DMA,
            fw_cfg::DMA_LEN,
            "fw-cfg-dma",
            dev(fw_cfg::FwCfgDma(fw)),
        )
        .unwrap();
        let config = Arc::new(Mutex::new(pci::PciConfig::new(Some((
            PCI_TESTDEV_MMIO as u32,
            PCI_TESTDEV_PIO as u32,
        )))));
        let reset: Box<dyn BusDevice> = Box::new(ResetReg::new());
        bus.insert(
            Pio,
            PCI_ADDRESS,
            4,
            "pci-address",
            dev(pci::PciAddress::new(config.clone(), Some(reset))),
        )
        .unwrap();
        bus.insert(Pio, PCI_DATA, 4, "pci-data", dev(pci::PciData(config)))
            .unwrap();
        let td = Arc::new(Mutex::new(pci_testdev::PciTestdev::new()));
        bus.insert(
            Mmio,
            PCI_TESTDEV_MMIO,
            pci_testdev::MMIO_LEN,
            "pci-testdev-mmio",
            dev(pci_testdev::PciTestdevBar::new(td.clone(), false)),
        )
        .unwrap();
        bus.insert(
            Pio,
            PCI_TESTDEV_PIO,
            pci_testdev::PIO_LEN,
            "pci-testdev-pio",
            dev(pci_testdev::PciTestdevBar::new(td, true)),
        )
        .unwrap();

        // EXTEND: a new device goes here, with its ranges in TARGETS and, if
        // it asks the VM for something, its events in `check_event`.

        Rig {
            bus,
            ioapic,
            serial,
            msi,
            recorders,
            doorbell,
            boot_timer,
            pm_evt,
            i8042,
            clock,
            _serial_irq: serial_irq,
        }
    }
}

/// Addresses the fuzzer picks from: (space, base, length to roam over).
const TARGETS: &[(AddressSpace, u64, u64)] = &[
    (AddressSpace::Mmio, IOAPIC_MMIO_BASE, IOAPIC_MMIO_SIZE),
    (AddressSpace::Mmio, IOAPIC_MMIO_BASE, 0x100),
    (AddressSpace::Pio, COM1, SERIAL_REGS_LEN),
    (AddressSpace::Pio, DEBUG_EXIT_PORT, 4),
    (AddressSpace::Pio, IRQ_LINES_PORT, IRQ_LINES as u64),
    (AddressSpace::Pio, PIO_RECORDER, 1),
    (AddressSpace::Mmio, MMIO_RECORDER, 0x1000),
    (AddressSpace::Mmio, DOORBELL, 4),
    (AddressSpace::Pio, I8042_DATA_PORT, I8042_PORT_LEN),
    (AddressSpace::Pio, I8042_COMMAND_PORT, I8042_PORT_LEN),
    (AddressSpace::Pio, CMOS_PORT_BASE, CMOS_PORT_LEN),
    (AddressSpace::Pio, PM1_EVT, PM1_EVT_LEN),
    (AddressSpace::Pio, PM1_CNT, PM1_CNT_LEN),
    (AddressSpace::Pio, RESET_REG, RESET_REG_LEN),
    // Holes and the ends of the address spaces.
    (AddressSpace::Pio, 0, 0x10),
    (AddressSpace::Pio, 0xfff8, 0x10),
    (AddressSpace::Mmio, 0, 0x10),
    (AddressSpace::Mmio, u64::MAX - 7, 0x10),
    // Devices added later, kept after the older entries so the seeds'
    // target indices (fuzz/fixtures/make_bus_seeds.py) stay put.
    (AddressSpace::Mmio, BOOT_TIMER, BOOT_TIMER_WINDOW),
    (AddressSpace::Mmio, BOOT_TIMER, 8),
    (AddressSpace::Pio, PIO_NULL, 2),
    (AddressSpace::Mmio, MMIO_NULL, 0x1000),
    (AddressSpace::Pio, TESTDEV_DATA, 0x10),
    (AddressSpace::Mmio, TESTDEV_IOMEM, pc_testdev::IOMEM_LEN),
    (AddressSpace::Mmio, TESTDEV_IOMEM, 0x10),
    (AddressSpace::Pio, FW_CFG, 0x10),
    (AddressSpace::Pio, PCI_ADDRESS, 8),
    (AddressSpace::Mmio, PCI_TESTDEV_MMIO, pci_testdev::MMIO_LEN),
    (AddressSpace::Pio, PCI_TESTDEV_PIO, pci_testdev::PIO_LEN),
    (AddressSpace::Pio, PM_TMR, PM_TMR_LEN),
];

/// A cursor over the input; runs dry as zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// Checks that bus ranges never overlap.
fn check_ranges(bus: &Bus) {
    let ranges = bus.ranges();
    for w in ranges.windows(2) {
        let (s0, b0, l0, ref n0) = w[0];
        let (s1, b1, _, ref n1) = w[1];
        if s0 == s1 {
            assert!(
                u128::from(b0) + u128::from(l0) <= u128::from(b1),
                "bus ranges overlap: {n0} [{b0:#x}+{l0:#x}) and {n1} at {b1:#x}"
            );
        }
        assert!(l0 > 0);
    }
}

/// Checks that `event`, from a write of `value` at `addr`, comes from a
/// device that may ask for it.
fn check_event(bus: &Bus, space: AddressSpace, addr: u64, value: &[u8], event: VmEvent) {
    let name = bus
        .ranges()
        .into_iter()
        .find(|&(s, base, len, _)| s == space && addr >= base && addr - base < len)
        .map(|r| r.3)
        .unwrap_or_else(|| panic!("event {event:?} from a write to {space} {addr:#x}, where no device is"));
    match (event, name.as_str()) {
        (VmEvent::DebugExit(status), "debug-exit") => {
            let v = value
                .iter()
                .take(4)
                .rev()
                .fold(0u32, |acc, &x| acc << 8 | u32::from(x));
            assert_eq!(status, DebugExit::status_for(v));
            assert_eq!(status & 1, 1);
        }
        (VmEvent::Reset, "i8042-command" | "reset" | "pci-address") => {}
        (VmEvent::PowerOff, "acpi-pm-cnt") => {}
        (event, name) => {
            panic!("unexpected event {event:?} from {name} ({space} write at {addr:#x}: {value:x?})")
        }
    }
}

fn check_final(a: &Rig, b: &Rig) {
    for rig in [a, b] {
        check_ranges(&rig.bus);
        let io = rig.ioapic.lock().unwrap();
        let counters = io.counters();
        let table = io.redirection_table();
        drop(io);
        let msi = rig.msi.lock().unwrap();
        assert_eq!(
            counters.msis_sent, msi.msis,
            "IOAPIC MSI counter disagrees with its sink"
        );
        assert_eq!(counters.route_updates, msi.route_updates);
        for (pin, rte) in table.iter().enumerate() {
            assert_eq!(rte & (1 << 12), 0, "pin {pin}: delivery status set: {rte:#x}");
            if rte & (1 << 15) == 0 {
                assert_eq!(
                    rte & (1 << 14),
                    0,
                    "pin {pin}: edge-triggered RTE with Remote IRR: {rte:#x}"
                );
            }
            // The route the sink holds is the RTE's (None when masked).
            let want = (rte & (1 << 16) == 0).then(|| MsiRoute::from_rte(*rte));
            assert_eq!(
                msi.routes[pin], want,
                "pin {pin}: sink route out of date for RTE {rte:#x}"
            );
        }
        drop(msi);
        let stats = rig.bus.stats();
        let recorder_writes: u64 = stats
            .iter()
            .filter(|s| s.name.starts_with("recorder"))
            .map(|s| s.writes)
            .sum();
        let logged: u64 = rig.recorders.iter().map(|r| r.lock().unwrap().count).sum();
        assert_eq!(recorder_writes, logged, "recorder counts disagree with the bus");
        let doorbell_writes: u64 = stats
            .iter()
            .filter(|s| s.name == "doorbell")
            .map(|s| s.writes)
            .sum();
        assert_eq!(doorbell_writes, rig.doorbell.load(Ordering::Relaxed));
        let timer_writes: u64 = stats
            .iter()
            .filter(|s| s.name == "boot-timer")
            .map(|s| s.writes)
            .sum();
        let t = *rig.boot_timer.lock().unwrap();
        assert_eq!(
            timer_writes,
            t.signals + t.other_writes,
            "boot-timer counts disagree with the bus"
        );
        assert_eq!(t.first.is_some(), t.signals > 0);
    }
    // The two machines agree on everything.
    assert_eq!(a.bus.stats(), b.bus.stats());
    assert_eq!(a.bus.unhandled(), b.bus.unhandled());
    let (ia, ib) = (a.ioapic.lock().unwrap(), b.ioapic.lock().unwrap());
    assert_eq!(ia.redirection_table(), ib.redirection_table());
    assert_eq!(ia.counters(), ib.counters());
    drop((ia, ib));
    assert_eq!(*a.msi.lock().unwrap(), *b.msi.lock().unwrap());
    for (ra, rb) in a.recorders.iter().zip(&b.recorders) {
        let (ra, rb) = (ra.lock().unwrap(), rb.lock().unwrap());
        assert_eq!((ra.count, ra.digest()), (rb.count, rb.digest()));
        assert_eq!(ra.records, rb.records);
    }
    assert_eq!(*a.boot_timer.lock().unwrap(), *b.boot_timer.lock().unwrap());
    let (pa, pb) = (a.pm_evt.lock().unwrap(), b.pm_evt.lock().unwrap());
    assert_eq!(
        (pa.status(), pa.enable(), pa.sci_level()),
        (pb.status(), pb.enable(), pb.sci_level())
    );
    drop((pa, pb));
    assert_eq!(
        a.i8042.lock().unwrap().reset_requests(),
        b.i8042.lock().unwrap().reset_requests()
    );
    let (sa, sb) = (
        a.serial.lock().unwrap().counters(),
        b.serial.lock().unwrap().counters(),
    );
    assert_eq!(
        (sa.bytes_out(), sa.bytes_dropped()),
        (sb.bytes_out(), sb.bytes_dropped())
    );
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let header = input.u8();
    let mut a = Rig::new(header);
    let mut b = Rig::new(header);
    let mut targets = TARGETS.to_vec();
    let mut a_recorders = Vec::new();
    let mut b_recorders = Vec::new();

    // Extra recorder ranges at fuzzed places.
    for _ in 0..header % 4 {
        let space = if input.u8() & 1 == 0 {
            AddressSpace::Pio
        } else {
            AddressSpace::Mmio
        };
        let (base, len) = (input.u64(), input.u64());
        let (ra, rb) = (Recorder::new(), Recorder::new());
        let (la, lb) = (ra.log(), rb.log());
        let res_a = a.bus.insert(space, base, len, "recorder-extra", dev(ra));
        let res_b = b.bus.insert(space, base, len, "recorder-extra", dev(rb));
        assert_eq!(res_a, res_b);
        if res_a.is_ok() {
            let end = base
                .checked_add(len)
                .expect("bus accepted a range that overflows");
            assert!(len > 0 && end > base);
            a_recorders.push(la);
            b_recorders.push(lb);
            targets.push((space, base, len));
        }
        check_ranges(&a.bus);
    }
    a.recorders.extend(a_recorders);
    b.recorders.extend(b_recorders);

    let mut ops = 0;
    let mut eoi_budget = EOI_BUDGET;
    while !input.done() && ops < MAX_OPS {
        ops += 1;
        let op = input.u8() % 16;
        match op {
            0..=9 => {
                let (space, base, len) = targets[usize::from(input.u8()) % targets.len()];
                let off = u64::from(input.u16()) % len.saturating_add(8);
                let addr = base.wrapping_add(off).wrapping_sub(4);
                let size = SIZES[usize::from(input.u8() & 7)];
                if op < 5 {
                    let mut da = vec![0x00u8; size];
                    let mut db = vec![0xa5u8; size];
                    let ha = a.bus.read(space, addr, &mut da);
                    let hb = b.bus.read(space, addr, &mut db);
                    assert_eq!(ha, hb);
                    if !ha {
                        assert!(
                            da.iter().all(|&x| x == 0xff),
                            "unhandled read not all-ones: {da:x?}"
                        );
                    }
                    assert_eq!(
                        da, db,
                        "{space} read of {size} at {addr:#x} left bytes unwritten or is not deterministic"
                    );
                } else {
                    let value = input.bytes(size);
                    let ra = a.bus.write(space, addr, &value);
                    let rb = b.bus.write(space, addr, &value);
                    assert_eq!(ra, rb, "{space} write at {addr:#x}");
                    if let Some(event) = ra.1 {
                        check_event(&a.bus, space, addr, &value, event);
                    }
                }
            }
            10 => {
                let pin = usize::from(input.u8());
                let level = input.u8() & 1 == 1;
                a.ioapic.lock().unwrap().set_irq(pin, level);
                b.ioapic.lock().unwrap().set_irq(pin, level);
            }
            11 => {
                let vector = input.u8();
                a.ioapic.lock().unwrap().end_of_interrupt(vector);
                b.ioapic.lock().unwrap().end_of_interrupt(vector);
            }
            12 => {
                let vector = input.u8();
                let code = u32::from(input.u8());
                // Storm-sized bursts are slow, so only 1 code in 16 asks for one.
                let count = if code < 0xf0 {
                    code
                } else {
                    IOAPIC_STORM_THRESHOLD - 8 + code % 16
                };
                let count = count.min(eoi_budget);
                eoi_budget -= count;
                for rig in [&a, &b] {
                    let mut io = rig.ioapic.lock().unwrap();
                    for _ in 0..count {
                        io.end_of_interrupt(vector);
                    }
                }
            }
            13 => {
                let n = usize::from(input.u8() % 32);
                let bytes = input.bytes(n);
                let qa = a
                    .serial
                    .lock()
                    .unwrap()
                    .enqueue_input(&bytes)
                    .map_err(|e| e.to_string());
                let qb = b
                    .serial
                    .lock()
                    .unwrap()
                    .enqueue_input(&bytes)
                    .map_err(|e| e.to_string());
                assert_eq!(qa, qb);
                if let Ok(q) = qa {
                    assert!(q <= n);
                }
            }
            14 => {
                let t = i64::from(u32::from_le_bytes([
                    input.u8(),
                    input.u8(),
                    input.u8(),
                    input.u8(),
                ])) * 2;
                a.clock.store(t, Ordering::Relaxed);
                b.clock.store(t, Ordering::Relaxed);
            }
            _ => {
                let bits = input.u16();
                a.pm_evt.lock().unwrap().set_status(bits);
                b.pm_evt.lock().unwrap().set_status(bits);
            }
        }
    }
    check_final(&a, &b);
    if verbose() {
        let io = a.ioapic.lock().unwrap();
        eprintln!(
            "{ops} ops; ioapic {:?}\n  table {:x?}\n  unhandled {:?}",
            io.counters(),
            io.redirection_table(),
            a.bus.unhandled()
        );
        drop(io);
        for s in a.bus.stats() {
            eprintln!(
                "  {} {} {:#x}+{:#x}: {} reads, {} writes",
                s.name, s.space, s.base, s.len, s.reads, s.writes
            );
        }
    }
});

/// BERTH_FUZZ_VERBOSE=1: print what an input did (for triage).
fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("BERTH_FUZZ_VERBOSE").is_some_and(|v| v != "0"))
}
