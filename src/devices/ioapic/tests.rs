//! Unit tests of the parent module.
use super::*;
use std::sync::{Arc, Mutex};

/// A call made to the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Msi(u64, u32),
    Route(usize, Option<MsiRoute>),
}

#[derive(Clone, Default)]
struct FakeSink(Arc<Mutex<Vec<Call>>>);

impl MsiSink for FakeSink {
    fn send_msi(&mut self, address: u64, data: u32) {
        self.0.lock().unwrap().push(Call::Msi(address, data));
    }

    fn update_route(&mut self, pin: usize, route: Option<MsiRoute>) {
        self.0.lock().unwrap().push(Call::Route(pin, route));
    }
}

impl FakeSink {
    /// Takes the recorded calls.
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Takes the recorded calls, keeping only MSIs.
    fn msis(&self) -> Vec<(u64, u32)> {
        self.take()
            .into_iter()
            .filter_map(|c| match c {
                Call::Msi(a, d) => Some((a, d)),
                Call::Route(..) => None,
            })
            .collect()
    }
}

fn ioapic() -> (Ioapic, FakeSink) {
    let sink = FakeSink::default();
    (Ioapic::new(0, Box::new(sink.clone())), sink)
}

fn write32(io: &mut Ioapic, offset: u64, value: u32) {
    assert_eq!(io.write(offset, &value.to_le_bytes()), None);
}

fn read32(io: &mut Ioapic, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    io.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn reg_write(io: &mut Ioapic, reg: u8, value: u32) {
    write32(io, IOREGSEL, u32::from(reg));
    write32(io, IOWIN, value);
}

fn reg_read(io: &mut Ioapic, reg: u8) -> u32 {
    write32(io, IOREGSEL, u32::from(reg));
    read32(io, IOWIN)
}

fn set_rte(io: &mut Ioapic, pin: usize, rte: u64) {
    let reg = REG_REDTBL_BASE + 2 * pin as u8;
    reg_write(io, reg + 1, (rte >> 32) as u32);
    reg_write(io, reg, rte as u32);
}

fn get_rte(io: &mut Ioapic, pin: usize) -> u64 {
    let reg = REG_REDTBL_BASE + 2 * pin as u8;
    u64::from(reg_read(io, reg)) | (u64::from(reg_read(io, reg + 1)) << 32)
}

/// Level-triggered, fixed, physical destination 0.
fn level(vector: u8) -> u64 {
    RTE_LEVEL | u64::from(vector)
}

/// MSI data of a level-triggered fixed `vector`.
fn level_data(vector: u8) -> u32 {
    u32::from(vector) | MSI_DATA_LEVEL | MSI_DATA_ASSERT
}

#[test]
fn id_version_arb() {
    let sink = FakeSink::default();
    let mut io = Ioapic::new(3, Box::new(sink.clone()));
    assert_eq!(reg_read(&mut io, REG_ID), 3 << 24);
    assert_eq!(reg_read(&mut io, REG_ARB), 3 << 24);
    assert_eq!(reg_read(&mut io, REG_VER), 0x0017_0020);

    // Only ID bits 27:24 are writable.
    reg_write(&mut io, REG_ID, 0xffff_ffff);
    assert_eq!(reg_read(&mut io, REG_ID), 0x0f00_0000);
    reg_write(&mut io, REG_ID, 0x0500_0000);
    assert_eq!(reg_read(&mut io, REG_ID), 0x0500_0000);
    assert_eq!(reg_read(&mut io, REG_ARB), 0x0500_0000);

    // VERSION and ARB are read-only.
    reg_write(&mut io, REG_VER, 0);
    reg_write(&mut io, REG_ARB, 0);
    assert_eq!(reg_read(&mut io, REG_VER), 0x0017_0020);
    assert_eq!(reg_read(&mut io, REG_ARB), 0x0500_0000);

    // Unknown indirect registers read 0.
    for reg in (0x03..0x10).chain(0x40..=0xff) {
        assert_eq!(reg_read(&mut io, reg), 0, "reg {reg:#x}");
        reg_write(&mut io, reg, 0xffff_ffff);
    }
    assert_eq!(reg_read(&mut io, REG_ID), 0x0500_0000);
    assert!(sink.take().is_empty());

    // IDs wider than 4 bits are truncated.
    let mut io = Ioapic::new(0x1f, Box::new(FakeSink::default()));
    assert_eq!(reg_read(&mut io, REG_ID), 0x0f00_0000);
}

#[test]
fn ioregsel_access_sizes() {
    let (mut io, _) = ioapic();
    write32(&mut io, IOREGSEL, 0x1234_5601);
    assert_eq!(read32(&mut io, IOREGSEL), 0x01, "selector is 8 bits");
    assert_eq!(read32(&mut io, IOWIN), 0x0017_0020);

    // A 1-byte write sets the selector.
    io.write(IOREGSEL, &[0x02]);
    assert_eq!(read32(&mut io, IOREGSEL), 0x02);
    let mut b = [0u8; 1];
    io.read(IOREGSEL, &mut b);
    assert_eq!(b, [0x02]);
    let mut b = [0xaau8; 2];
    io.read(IOREGSEL, &mut b);
    assert_eq!(b, [0x02, 0]);

    // Non-4-byte IOWIN accesses: reads 0, writes ignored.
    io.write(IOREGSEL, &[REG_VER]);
    let mut b = [0xaau8; 2];
    io.read(IOWIN, &mut b);
    assert_eq!(b, [0, 0]);
    let mut b = [0xaau8; 1];
    io.read(IOWIN, &mut b);
    assert_eq!(b, [0]);
    io.write(IOREGSEL, &[REG_REDTBL_BASE]);
    io.write(IOWIN, &[0x30, 0x00]);
    io.write(IOWIN, &[0x30]);
    assert_eq!(read32(&mut io, IOWIN), RTE_MASKED as u32);

    // 8-byte accesses split into two 4-byte ones.
    io.write(IOREGSEL, &[REG_VER, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let mut b = [0xaau8; 8];
    io.read(IOWIN, &mut b);
    assert_eq!(b, [0x20, 0, 0x17, 0, 0, 0, 0, 0]);
    io.read(IOREGSEL, &mut b);
    assert_eq!(b, [REG_VER, 0, 0, 0, 0, 0, 0, 0]);

    // The low 8 bits of the offset are decoded, as in QEMU.
    write32(&mut io, 0x100, u32::from(REG_ARB));
    assert_eq!(read32(&mut io, IOREGSEL), u32::from(REG_ARB));
    write32(&mut io, 0x700, u32::from(REG_VER));
    assert_eq!(read32(&mut io, 0xf10), 0x0017_0020);
    // Unknown offsets read 0.
    for off in [0x04, 0x08, 0x0c, 0x14, 0x20, 0x30, 0x40, 0x44, 0xfc] {
        assert_eq!(read32(&mut io, off), 0, "offset {off:#x}");
    }
}

#[test]
fn rte_round_trip_and_read_only_bits() {
    let (mut io, sink) = ioapic();
    assert_eq!(io.redirection_table(), [RTE_MASKED; IOAPIC_NUM_PINS]);
    for pin in 0..IOAPIC_NUM_PINS {
        assert_eq!(get_rte(&mut io, pin), RTE_MASKED);
    }

    // Every writable bit reads back; the read-only ones stay clear.
    set_rte(&mut io, 5, u64::MAX);
    assert_eq!(get_rte(&mut io, 5), !RTE_RO_BITS);
    set_rte(&mut io, 5, 0x5a00_0000_0000_8931 | RTE_RO_BITS);
    assert_eq!(get_rte(&mut io, 5), 0x5a00_0000_0000_8931 & !RTE_RO_BITS);
    assert_eq!(io.redirection_table()[5], 0x5a00_0000_0000_8931 & !RTE_RO_BITS);
    // Writing one half leaves the other alone.
    reg_write(&mut io, REG_REDTBL_BASE + 11, 0x0100_0000);
    assert_eq!(get_rte(&mut io, 5), 0x0100_0000_0000_8931 & !RTE_RO_BITS);
    // Other pins untouched.
    assert_eq!(get_rte(&mut io, 4), RTE_MASKED);
    assert_eq!(get_rte(&mut io, 6), RTE_MASKED);

    // Remote IRR set by delivery survives guest writes that clear it...
    set_rte(&mut io, 7, level(0x41));
    io.set_irq(7, true);
    assert_eq!(get_rte(&mut io, 7), level(0x41) | RTE_REMOTE_IRR);
    reg_write(&mut io, REG_REDTBL_BASE + 14, level(0x41) as u32);
    assert_eq!(get_rte(&mut io, 7), level(0x41) | RTE_REMOTE_IRR);
    // ...and masking: no new MSI while it is set.
    set_rte(&mut io, 7, level(0x41) | RTE_MASKED);
    set_rte(&mut io, 7, level(0x41));
    assert_eq!(get_rte(&mut io, 7), level(0x41) | RTE_REMOTE_IRR);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x41))]);

    // Switching to edge clears Remote IRR (Linux's EOI emulation).
    set_rte(&mut io, 7, 0x41 | RTE_MASKED);
    assert_eq!(get_rte(&mut io, 7), 0x41 | RTE_MASKED);
    set_rte(&mut io, 7, level(0x41));
    // Still asserted: fires again now that Remote IRR is clear.
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x41))]);
}

#[test]
fn route_updates_only_on_change() {
    let (mut io, sink) = ioapic();
    assert!(sink.take().is_empty(), "no calls for the initial state");

    // Writing the high dword of a masked entry: route stays None.
    reg_write(&mut io, REG_REDTBL_BASE + 1, 0x0300_0000);
    assert!(sink.take().is_empty());

    reg_write(&mut io, REG_REDTBL_BASE, 0x30);
    let route = MsiRoute {
        address: 0xfee0_3000,
        data: 0x30,
        level: false,
    };
    assert_eq!(sink.take(), vec![Call::Route(0, Some(route))]);

    // Same value again: nothing.
    reg_write(&mut io, REG_REDTBL_BASE, 0x30);
    reg_write(&mut io, REG_REDTBL_BASE + 1, 0x0300_0000);
    assert!(sink.take().is_empty());
    // Read-only and reserved bits do not change the route.
    reg_write(&mut io, REG_REDTBL_BASE, 0x30 | RTE_RO_BITS as u32);
    reg_write(&mut io, REG_REDTBL_BASE + 1, 0x0300_0001);
    assert!(sink.take().is_empty());

    // Level-triggered.
    reg_write(&mut io, REG_REDTBL_BASE, 0x30 | RTE_LEVEL as u32);
    let lroute = MsiRoute {
        address: 0xfee0_3000,
        data: level_data(0x30),
        level: true,
    };
    assert_eq!(sink.take(), vec![Call::Route(0, Some(lroute))]);

    // Mask: None; masking again or changing a masked entry: nothing.
    reg_write(&mut io, REG_REDTBL_BASE, 0x30 | (RTE_LEVEL | RTE_MASKED) as u32);
    assert_eq!(sink.take(), vec![Call::Route(0, None)]);
    reg_write(&mut io, REG_REDTBL_BASE, 0x31 | RTE_MASKED as u32);
    assert!(sink.take().is_empty());

    // Other pins are independent.
    set_rte(&mut io, 23, 0xff00_0000_0000_0822);
    let route23 = MsiRoute::from_rte(0xff00_0000_0000_0822);
    assert_eq!(sink.take(), vec![Call::Route(23, Some(route23))]);
    assert_eq!(io.counters().route_updates, 4);
    assert_eq!(io.counters().msis_sent, 0);
}

#[test]
fn edge_fires_once_per_rising_edge() {
    let (mut io, sink) = ioapic();
    set_rte(&mut io, 4, 0x24);
    sink.take();
    io.set_irq(4, true);
    assert_eq!(sink.take(), vec![Call::Msi(0xfee0_0000, 0x24)]);
    // Held high: nothing more.
    io.set_irq(4, true);
    io.set_irq(4, true);
    assert!(sink.take().is_empty());
    // EOI does nothing for edge pins.
    io.end_of_interrupt(0x24);
    assert!(sink.take().is_empty());
    // Falling edge: nothing.
    io.set_irq(4, false);
    assert!(sink.take().is_empty());
    // Next rising edge fires again.
    io.set_irq(4, true);
    io.set_irq(4, false);
    io.set_irq(4, true);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, 0x24); 2]);
    assert_eq!(get_rte(&mut io, 4) & RTE_REMOTE_IRR, 0);
    assert_eq!(io.counters().msis_sent, 3);
}

#[test]
fn masked_pins_do_not_fire() {
    let (mut io, sink) = ioapic();
    // Initial state: everything masked.
    for pin in 0..IOAPIC_NUM_PINS {
        io.set_irq(pin, true);
        io.set_irq(pin, false);
    }
    assert!(sink.take().is_empty());

    // Masked edge pin: the edge is lost, unmasking does not fire.
    set_rte(&mut io, 1, 0x31 | RTE_MASKED);
    io.set_irq(1, true);
    set_rte(&mut io, 1, 0x31);
    assert_eq!(sink.msis(), vec![]);
    io.set_irq(1, false);
    io.set_irq(1, true);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, 0x31)]);

    // Masked level pin: nothing while masked.
    set_rte(&mut io, 2, level(0x32) | RTE_MASKED);
    io.set_irq(2, true);
    assert_eq!(sink.msis(), vec![]);
    assert_eq!(get_rte(&mut io, 2) & RTE_REMOTE_IRR, 0);
}

#[test]
fn level_lifecycle() {
    let (mut io, sink) = ioapic();
    set_rte(&mut io, 9, level(0x49));
    sink.take();
    io.set_irq(9, true);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x49))]);
    assert_ne!(io.redirection_table()[9] & RTE_REMOTE_IRR, 0);

    // Remote IRR set: no re-fire, even on a new assertion.
    io.set_irq(9, true);
    io.set_irq(9, false);
    io.set_irq(9, true);
    assert!(sink.take().is_empty());

    // EOI of another vector: nothing.
    io.end_of_interrupt(0x48);
    assert!(sink.take().is_empty());
    assert_ne!(io.redirection_table()[9] & RTE_REMOTE_IRR, 0);

    // EOI while still asserted: re-fire.
    io.end_of_interrupt(0x49);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x49))]);
    assert_ne!(io.redirection_table()[9] & RTE_REMOTE_IRR, 0);
    assert_eq!(io.counters().refires, 1);

    // Line drops, then EOI: Remote IRR clear, nothing sent.
    io.set_irq(9, false);
    io.end_of_interrupt(0x49);
    assert!(sink.take().is_empty());
    assert_eq!(io.redirection_table()[9] & RTE_REMOTE_IRR, 0);
    // A duplicate EOI is harmless.
    io.end_of_interrupt(0x49);
    assert!(sink.take().is_empty());

    // Asserting again fires.
    io.set_irq(9, true);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x49))]);

    let c = io.counters();
    assert_eq!((c.msis_sent, c.eois, c.refires, c.storms), (3, 4, 1, 0));
}

#[test]
fn eoi_clears_every_pin_with_the_vector() {
    let (mut io, sink) = ioapic();
    set_rte(&mut io, 10, level(0x50));
    set_rte(&mut io, 11, level(0x50));
    set_rte(&mut io, 12, 0x50);
    io.set_irq(10, true);
    io.set_irq(11, true);
    io.set_irq(12, true);
    assert_eq!(sink.msis().len(), 3);
    io.set_irq(11, false);
    io.end_of_interrupt(0x50);
    // Pin 10 re-fires, pin 11 dropped, pin 12 is edge.
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x50))]);
    let t = io.redirection_table();
    assert_ne!(t[10] & RTE_REMOTE_IRR, 0);
    assert_eq!(t[11] & RTE_REMOTE_IRR, 0);
    assert_eq!(t[12] & RTE_REMOTE_IRR, 0);
}

#[test]
fn masked_during_service_fires_on_unmask() {
    let (mut io, sink) = ioapic();
    set_rte(&mut io, 3, level(0x33));
    io.set_irq(3, true);
    sink.take();
    // Guest masks, EOIs (clears Remote IRR, no re-fire while masked).
    set_rte(&mut io, 3, level(0x33) | RTE_MASKED);
    io.end_of_interrupt(0x33);
    assert_eq!(sink.msis(), vec![]);
    assert_eq!(io.redirection_table()[3] & RTE_REMOTE_IRR, 0);
    // Unmasking the still-asserted pin fires it.
    set_rte(&mut io, 3, level(0x33));
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x33))]);
}

#[test]
fn unmask_asserted_level_pin_fires() {
    let (mut io, sink) = ioapic();
    io.set_irq(6, true);
    assert!(sink.take().is_empty());
    set_rte(&mut io, 6, level(0x66) | RTE_MASKED);
    assert!(sink.take().is_empty());
    set_rte(&mut io, 6, level(0x66) | (0x02 << 56));
    let route = MsiRoute {
        address: 0xfee0_2000,
        data: level_data(0x66),
        level: true,
    };
    assert_eq!(
        sink.take(),
        vec![
            Call::Route(6, Some(route)),
            Call::Msi(0xfee0_2000, level_data(0x66))
        ]
    );
    // Unmasking a deasserted level pin does not fire.
    set_rte(&mut io, 8, level(0x68));
    assert_eq!(sink.msis(), vec![]);
}

#[test]
fn eoi_register() {
    let (mut io, sink) = ioapic();
    set_rte(&mut io, 0, level(0x70));
    io.set_irq(0, true);
    sink.take();
    // Non-4-byte writes and values above 0xff are ignored.
    io.write(EOI, &[0x70]);
    io.write(EOI, &[0x70, 0]);
    write32(&mut io, EOI, 0x170);
    assert_ne!(io.redirection_table()[0] & RTE_REMOTE_IRR, 0);
    assert_eq!(io.counters().eois, 0);
    // Reads return 0.
    assert_eq!(read32(&mut io, EOI), 0);

    io.set_irq(0, false);
    write32(&mut io, EOI, 0x70);
    assert_eq!(io.redirection_table()[0] & RTE_REMOTE_IRR, 0);
    assert_eq!(io.counters().eois, 1);
    assert!(sink.take().is_empty());

    // Re-fire through the register; the 8-byte form splits and works too.
    io.set_irq(0, true);
    io.write(EOI, &[0x70, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x70)); 2]);
    assert_eq!(io.counters().refires, 1);
}

#[test]
fn msi_encoding() {
    // (RTE, address, data)
    let cases: &[(u64, u64, u32)] = &[
        // Fixed, physical, dest 0.
        (0x20, 0xfee0_0000, 0x20),
        // Fixed, physical, dest 0xff (broadcast).
        (0xff00_0000_0000_0021, 0xfeef_f000, 0x21),
        // Fixed, logical, dest 0x01.
        (0x0100_0000_0000_0830, 0xfee0_1004, 0x30),
        // Lowest priority, logical, dest 0x0f.
        (0x0f00_0000_0000_0940, 0xfee0_f004, 0x140),
        // SMI.
        (0x0200_0000_0000_0200, 0xfee0_2000, 0x200),
        // NMI, physical dest 3.
        (0x0300_0000_0000_0402, 0xfee0_3000, 0x402),
        // INIT.
        (0x0000_0000_0000_0500, 0xfee0_0000, 0x500),
        // ExtINT, vector from the entry.
        (0x0000_0000_0000_0708, 0xfee0_0000, 0x708),
        // Level, fixed, vector 0xfe, logical dest 0x80.
        (0x8000_0000_0000_88fe, 0xfee8_0004, 0xc0fe),
        // Level, lowest priority, physical dest 0x12.
        (0x1200_0000_0000_8131, 0xfee1_2000, 0xc131),
        // Reserved bits 55:17, polarity, status and Remote IRR do not leak.
        (0x05ff_ffff_fffe_7060, 0xfee0_5000, 0x60),
    ];
    for &(rte, address, data) in cases {
        let route = MsiRoute::from_rte(rte);
        assert_eq!((route.address, route.data), (address, data), "rte {rte:#018x}");
        assert_eq!(route.level, rte & RTE_LEVEL != 0);
        assert_eq!(MsiRoute::from_rte(rte | RTE_MASKED), route, "mask is ignored");
    }

    // Through the device: one pin per case, fired by a rising edge.
    let (mut io, sink) = ioapic();
    for (pin, &(rte, address, data)) in cases.iter().enumerate() {
        // Make every case active high for the test.
        let rte = rte & !RTE_ACTIVE_LOW;
        set_rte(&mut io, pin, rte);
        sink.take();
        io.set_irq(pin, true);
        assert_eq!(sink.msis(), vec![(address, data)], "rte {rte:#018x}");
    }
}

#[test]
fn active_low_polarity() {
    let (mut io, sink) = ioapic();
    // Level, active low: input low (the initial state) is asserted.
    set_rte(&mut io, 16, level(0x90) | RTE_ACTIVE_LOW);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x90))]);
    io.set_irq(16, true); // Deassert.
    io.end_of_interrupt(0x90);
    assert!(sink.msis().is_empty());
    io.set_irq(16, false); // Assert.
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x90))]);

    // Edge, active low: fires on the falling edge.
    io.set_irq(17, true);
    set_rte(&mut io, 17, 0x91 | RTE_ACTIVE_LOW);
    sink.take();
    io.set_irq(17, true);
    assert!(sink.take().is_empty());
    io.set_irq(17, false);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, 0x91)]);
    io.set_irq(17, false);
    io.set_irq(17, true);
    assert!(sink.take().is_empty());
}

#[test]
fn storm_guard() {
    let (mut io, sink) = ioapic();
    set_rte(&mut io, 5, level(0x35));
    io.set_irq(5, true);
    assert_eq!(sink.msis().len(), 1);
    // A guest that EOIs without quieting the device.
    for _ in 1..IOAPIC_STORM_THRESHOLD {
        io.end_of_interrupt(0x35);
    }
    assert_eq!(sink.msis().len(), IOAPIC_STORM_THRESHOLD as usize - 1);
    assert_eq!(io.counters().storms, 0);
    // The next EOI trips the guard: no re-fire.
    io.end_of_interrupt(0x35);
    assert!(sink.take().is_empty());
    assert_eq!(io.counters().storms, 1);
    assert_eq!(io.redirection_table()[5] & RTE_REMOTE_IRR, 0);
    // Further EOIs do nothing (Remote IRR is clear).
    io.end_of_interrupt(0x35);
    assert!(sink.take().is_empty());
    // The next set_irq resumes delivery.
    io.set_irq(5, true);
    assert_eq!(sink.msis(), vec![(0xfee0_0000, level_data(0x35))]);
    io.end_of_interrupt(0x35);
    assert_eq!(sink.msis().len(), 1);
    let c = io.counters();
    assert_eq!(c.refires, u64::from(IOAPIC_STORM_THRESHOLD));
    assert_eq!(c.msis_sent, u64::from(IOAPIC_STORM_THRESHOLD) + 2);

    // The streak resets when the line drops.
    let (mut io, sink) = ioapic();
    set_rte(&mut io, 5, level(0x35));
    io.set_irq(5, true);
    for i in 0..2 * IOAPIC_STORM_THRESHOLD - 2 {
        if i == IOAPIC_STORM_THRESHOLD - 1 {
            io.set_irq(5, false);
            io.end_of_interrupt(0x35);
            io.set_irq(5, true);
        } else {
            io.end_of_interrupt(0x35);
        }
    }
    assert_eq!(io.counters().storms, 0);
    assert_eq!(sink.msis().len(), 2 * IOAPIC_STORM_THRESHOLD as usize - 1);
}

#[test]
fn out_of_range_pins_ignored() {
    let (mut io, sink) = ioapic();
    for pin in 0..IOAPIC_NUM_PINS {
        set_rte(&mut io, pin, level(0x40 + pin as u8));
    }
    sink.take();
    for pin in [IOAPIC_NUM_PINS, 31, 32, 64, usize::MAX] {
        io.set_irq(pin, true);
        io.set_irq(pin, false);
    }
    assert!(sink.take().is_empty());
    for vector in 0..=255 {
        io.end_of_interrupt(vector);
    }
    assert!(sink.take().is_empty());
}

#[test]
fn garbage_never_panics() {
    let (mut io, sink) = ioapic();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for pass in 0..3 {
        for offset in 0..IOAPIC_MMIO_SIZE {
            for size in [1usize, 2, 4, 8] {
                let value = next().to_le_bytes();
                let mut buf = [0u8; 8];
                io.read(offset, &mut buf[..size]);
                assert_eq!(io.write(offset, &value[..size]), None);
                // Steer IOREGSEL around so IOWIN writes hit every register.
                if pass > 0 && offset % 16 == 0 {
                    io.write(IOREGSEL, &[next() as u8]);
                }
                io.set_irq(next() as usize % 32, next() & 1 == 1);
                io.end_of_interrupt(next() as u8);
            }
        }
    }
    // Empty and oversized accesses, absurd offsets.
    io.read(0, &mut []);
    io.write(0, &[]);
    let mut big = [0u8; 64];
    io.read(0, &mut big);
    io.write(0x10, &[0xff; 64]);
    io.read(u64::MAX, &mut [0u8; 8]);
    io.write(u64::MAX - 3, &[0xff; 8]);
    io.write(u64::MAX, &[0xff; 4]);
    // Every indirect register.
    for reg in 0..=255u8 {
        reg_write(&mut io, reg, next() as u32);
        reg_read(&mut io, reg);
    }
    drop(sink.take());
    let _ = format!("{io:?}");
}
