//! 82093AA-style I/O APIC emulated in userspace for KVM's split irqchip.
//!
//! In split-irqchip mode KVM keeps the local APICs in the kernel and the I/O
//! APIC lives in the VMM, as with QEMU's `kernel-irqchip=split`; the behaviour
//! here is modelled on QEMU's `hw/intc/ioapic.c`. Interrupts leave the IOAPIC
//! as MSIs through an [`MsiSink`], and every change of a pin's redirection
//! table entry (RTE) is mirrored to the sink as an [`MsiRoute`] so that KVM's
//! GSI routing table knows which vectors are level-triggered (and therefore
//! reports their EOIs with `KVM_EXIT_IOAPIC_EOI`).
//!
//! # MSI encoding
//!
//! For an RTE the MSI is (see [`MsiRoute::from_rte`]):
//!
//! - address = `0xfee00000 | dest_id << 12 | dest_mode_logical << 2`, where
//!   `dest_id` is RTE bits 63:56;
//! - data = `vector | delivery_mode << 8 | trigger_level << 15`, plus bit 14
//!   ("assert") for level-triggered entries.
//!
//! Every delivery mode (fixed, lowest priority, SMI, NMI, INIT, ExtINT and the
//! reserved ones) is encoded as written; none is dropped here. Unlike QEMU,
//! ExtINT does not read a vector from an 8259 (berth has none): the RTE's
//! vector field is sent. Unlike QEMU, the reserved RTE bits 55:48 (the
//! "extended destination ID") are not copied into address bits 11:4, and the
//! level-assert bit 14 is set for level-triggered entries (KVM ignores it).
//!
//! # Inputs and triggering
//!
//! [`Ioapic::set_irq`] takes the *electrical* level of an input pin. A pin
//! is asserted when its input is high, or low if the RTE's polarity bit (13,
//! active low) is set. Inputs start low, so an active-low line must be driven
//! high by its device while idle. Pins map 1:1 to GSIs; the ISA IRQ0 → GSI2
//! override is the caller's business.
//!
//! - Edge-triggered pins send one MSI when the pin goes from deasserted to
//!   asserted while unmasked. Edges seen while masked are lost (82093AA
//!   manual, QEMU).
//! - Level-triggered pins send an MSI while asserted, unmasked and with Remote
//!   IRR (bit 14) clear, and set Remote IRR when they do.
//!   [`Ioapic::end_of_interrupt`] (or a write to the EOI register) clears
//!   Remote IRR and re-sends if the pin is still asserted. Writing an RTE
//!   re-evaluates its pin, so unmasking an asserted level pin fires it.
//!   Switching a pin to edge-triggered clears its Remote IRR (Linux relies on
//!   this to EOI IOAPICs without an EOI register; QEMU does the same).
//! - Storm guard: if an EOI finds a pin still asserted
//!   [`IOAPIC_STORM_THRESHOLD`] times in a row (the line never dropped), a
//!   warning is logged and the pin is left pending, not re-sent, until the
//!   next [`Ioapic::set_irq`] for it or the next write of its RTE. QEMU
//!   instead delays that re-send by 10 ms; berth has no timers here.
//!
//! # Registers
//!
//! MMIO window of [`IOAPIC_MMIO_SIZE`] bytes, usually at
//! [`IOAPIC_MMIO_BASE`]. As in QEMU only the low 8 bits of the offset are
//! decoded (the 256-byte block repeats through the window):
//!
//! | offset | register |
//! |--------|----------|
//! | `0x00` | IOREGSEL: 8-bit index of the register seen through IOWIN |
//! | `0x10` | IOWIN: the selected register, 32-bit accesses only |
//! | `0x40` | EOI (version 0x20): writing a vector acts like [`Ioapic::end_of_interrupt`] |
//!
//! Indirect registers: `0x00` ID (bits 27:24 writable), `0x01` VERSION
//! (read-only, `0x20 | (IOAPIC_NUM_PINS - 1) << 16`), `0x02` ARB (read-only,
//! reads as ID), `0x10..=0x3f` the RTEs (even index = low dword, odd = high
//! dword). Delivery status (bit 12) and Remote IRR (bit 14) are read-only;
//! all other RTE bits, reserved ones included, read back as written.
//!
//! Access sizes follow QEMU's memory core: accesses wider than 4 bytes are
//! split into 4-byte accesses at increasing offsets. Any write to IOREGSEL
//! sets the selector to the low byte of the value; IOREGSEL reads return the
//! selector zero-extended to the access size. IOWIN and EOI accesses other
//! than 4 bytes are ignored (reads return 0). **Reads of unknown offsets or
//! unknown indirect registers return 0** and writes to them are ignored, as
//! in QEMU. Nothing a guest does can make this device panic.
//!
//! The sink is called with the device borrowed mutably (in berth, with the
//! bus device's mutex held), so it must not call back into the [`Ioapic`].

use crate::state::devices::IoapicState;
use crate::state::{DeviceState, StateError};
use std::fmt;

use serde::Serialize;

use crate::bus::{BusDevice, VmEvent};

/// Number of input pins (and redirection table entries); GSIs `0..24`.
pub const IOAPIC_NUM_PINS: usize = 24;

/// Conventional guest-physical base address of the IOAPIC's MMIO window.
pub const IOAPIC_MMIO_BASE: u64 = 0xfec0_0000;

/// Length of the IOAPIC's MMIO window in bytes.
pub const IOAPIC_MMIO_SIZE: u64 = 0x1000;

/// Value of the version field of the VERSION register (0x20: has an EOI
/// register).
pub const IOAPIC_VERSION: u32 = 0x20;

/// Number of successive EOI re-sends of a still-asserted level pin after
/// which the storm guard stops re-sending it (QEMU's
/// `SUCCESSIVE_IRQ_MAX_COUNT`).
pub const IOAPIC_STORM_THRESHOLD: u32 = 10_000;

// Pin state is kept in `u32` bitmasks.
const _: () = assert!(IOAPIC_NUM_PINS <= 32);

/// Only the low 8 bits of an MMIO offset are decoded.
const OFFSET_MASK: u64 = 0xff;
/// MMIO offset of IOREGSEL.
const IOREGSEL: u64 = 0x00;
/// MMIO offset of IOWIN.
const IOWIN: u64 = 0x10;
/// MMIO offset of the EOI register.
const EOI: u64 = 0x40;

/// Indirect register: ID.
const REG_ID: u8 = 0x00;
/// Indirect register: VERSION.
const REG_VER: u8 = 0x01;
/// Indirect register: arbitration ID.
const REG_ARB: u8 = 0x02;
/// Indirect register: first dword of the redirection table.
const REG_REDTBL_BASE: u8 = 0x10;

/// Position of the ID in the ID and ARB registers.
const ID_SHIFT: u32 = 24;
/// Width of the ID.
const ID_MASK: u8 = 0x0f;
/// Position of the maximum redirection entry in the VERSION register.
const VER_ENTRIES_SHIFT: u32 = 16;

/// RTE: interrupt vector.
const RTE_VECTOR: u64 = 0xff;
/// RTE: position of the delivery mode.
const RTE_DELIVERY_MODE_SHIFT: u32 = 8;
/// RTE: delivery mode, after shifting.
const RTE_DELIVERY_MODE: u64 = 0x7;
/// RTE: logical destination mode.
const RTE_DEST_LOGICAL: u64 = 1 << 11;
/// RTE: delivery status (read-only, always 0 here).
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
/// RTE: input polarity active low.
const RTE_ACTIVE_LOW: u64 = 1 << 13;
/// RTE: Remote IRR (read-only).
const RTE_REMOTE_IRR: u64 = 1 << 14;
/// RTE: level-triggered.
const RTE_LEVEL: u64 = 1 << 15;
/// RTE: masked.
const RTE_MASKED: u64 = 1 << 16;
/// RTE: position of the destination ID.
const RTE_DEST_SHIFT: u32 = 56;
/// RTE bits the guest cannot write.
const RTE_RO_BITS: u64 = RTE_REMOTE_IRR | RTE_DELIVERY_STATUS;

/// MSI address: fixed upper bits.
const MSI_ADDR_BASE: u64 = 0xfee0_0000;
/// MSI address: position of the destination ID.
const MSI_ADDR_DEST_SHIFT: u32 = 12;
/// MSI address: logical destination mode.
const MSI_ADDR_DEST_LOGICAL: u64 = 1 << 2;
/// MSI data: position of the delivery mode.
const MSI_DATA_DELIVERY_MODE_SHIFT: u32 = 8;
/// MSI data: level assert.
const MSI_DATA_ASSERT: u32 = 1 << 14;
/// MSI data: level-triggered.
const MSI_DATA_LEVEL: u32 = 1 << 15;

/// Where the IOAPIC sends interrupts and keeps KVM's routes in sync.
pub trait MsiSink: Send {
    /// Deliver one MSI now (berth: KVM_SIGNAL_MSI or the route-cache fallback).
    fn send_msi(&mut self, address: u64, data: u32);
    /// The RTE of `pin` changed: the MSI route for GSI `pin` must now be `route` (None = masked).
    /// berth mirrors these into KVM's GSI routing table, so that KVM knows which vectors are
    /// level-triggered and reports their EOIs (KVM_EXIT_IOAPIC_EOI).
    ///
    /// Only called when the route actually changes; every pin starts with
    /// `None` (all RTEs masked), and no call is made for that initial state.
    fn update_route(&mut self, pin: usize, route: Option<MsiRoute>);
}

/// The MSI a redirection table entry translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiRoute {
    /// MSI address (`0xfee00000 | dest_id << 12 | logical << 2`).
    pub address: u64,
    /// MSI data (vector, delivery mode, trigger mode, level assert).
    pub data: u32,
    /// The entry is level-triggered (KVM must report its EOIs).
    pub level: bool,
}

impl MsiRoute {
    /// Translates a redirection table entry, ignoring its mask bit; see the
    /// module documentation for the encoding.
    pub fn from_rte(rte: u64) -> MsiRoute {
        let dest_id = (rte >> RTE_DEST_SHIFT) & 0xff;
        let mut address = MSI_ADDR_BASE | (dest_id << MSI_ADDR_DEST_SHIFT);
        if rte & RTE_DEST_LOGICAL != 0 {
            address |= MSI_ADDR_DEST_LOGICAL;
        }
        let level = rte & RTE_LEVEL != 0;
        // Both casts take masked values of at most 8 bits.
        let vector = (rte & RTE_VECTOR) as u32;
        let delivery_mode = ((rte >> RTE_DELIVERY_MODE_SHIFT) & RTE_DELIVERY_MODE) as u32;
        let mut data = vector | (delivery_mode << MSI_DATA_DELIVERY_MODE_SHIFT);
        if level {
            data |= MSI_DATA_LEVEL | MSI_DATA_ASSERT;
        }
        MsiRoute { address, data, level }
    }
}

/// Event counters of an [`Ioapic`], as returned by [`Ioapic::counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoapicCounters {
    /// MSIs sent to the sink (re-sends included).
    pub msis_sent: u64,
    /// EOIs handled: calls of [`Ioapic::end_of_interrupt`] and writes of the
    /// EOI register, whether or not a pin matched.
    pub eois: u64,
    /// MSIs re-sent because an EOI found a level pin still asserted.
    pub refires: u64,
    /// Times the storm guard stopped re-sending a pin.
    pub storms: u64,
    /// Route updates passed to the sink.
    pub route_updates: u64,
}

/// The I/O APIC.
pub struct Ioapic {
    /// 4-bit IOAPIC ID.
    id: u8,
    /// IOREGSEL.
    ioregsel: u8,
    /// Redirection table.
    table: [u64; IOAPIC_NUM_PINS],
    /// Electrical input level of each pin (bit n = pin n high).
    inputs: u32,
    /// Route last passed to the sink for each pin.
    routes: [Option<MsiRoute>; IOAPIC_NUM_PINS],
    /// Successive EOI re-sends of each pin without its line dropping.
    refire_streak: [u32; IOAPIC_NUM_PINS],
    counters: IoapicCounters,
    sink: Box<dyn MsiSink>,
}

impl fmt::Debug for Ioapic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ioapic")
            .field("id", &self.id)
            .field("ioregsel", &self.ioregsel)
            .field("table", &format_args!("{:x?}", self.table))
            .field("inputs", &format_args!("{:#x}", self.inputs))
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Little-endian value of `data` (at most 4 bytes).
fn le_u32(data: &[u8]) -> u32 {
    data.iter()
        .take(4)
        .rev()
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

impl Ioapic {
    /// Creates an IOAPIC with ID `id` (only the low 4 bits are kept, the
    /// width of the ID register) delivering to `sink`. All RTEs start masked,
    /// everything else zero.
    pub fn new(id: u8, sink: Box<dyn MsiSink>) -> Self {
        if id > ID_MASK {
            log::debug!("ioapic: ID {id} truncated to 4 bits");
        }
        Ioapic {
            id: id & ID_MASK,
            ioregsel: 0,
            table: [RTE_MASKED; IOAPIC_NUM_PINS],
            inputs: 0,
            routes: [None; IOAPIC_NUM_PINS],
            refire_streak: [0; IOAPIC_NUM_PINS],
            counters: IoapicCounters::default(),
            sink,
        }
    }

    /// Sets input pin `pin` to `level` (true = asserted). Edge pins fire on a 0→1 transition; level
    /// pins fire while asserted and Remote IRR is clear. Out-of-range pins are ignored (logged at
    /// debug).
    ///
    /// `level` is the electrical input: on an active-low pin (RTE bit 13)
    /// `false` asserts. A call for a pin that the storm guard stopped makes
    /// it eligible to fire again.
    pub fn set_irq(&mut self, pin: usize, level: bool) {
        if pin >= IOAPIC_NUM_PINS {
            log::debug!("ioapic: set_irq on nonexistent pin {pin} (level {level}) ignored");
            return;
        }
        let was_asserted = self.asserted(pin);
        if level {
            self.inputs |= 1 << pin;
        } else {
            self.inputs &= !(1 << pin);
        }
        let now_asserted = self.asserted(pin);
        if !now_asserted {
            self.refire_streak[pin] = 0;
        }
        let rte = self.table[pin];
        if rte & RTE_LEVEL != 0 {
            self.service_level(pin);
        } else if !was_asserted && now_asserted && rte & RTE_MASKED == 0 {
            self.send(pin);
        }
    }

    /// The guest EOIed `vector` (KVM_EXIT_IOAPIC_EOI): clear Remote IRR on every level-triggered pin
    /// with that vector; if such a pin's input is still asserted and unmasked, fire it again
    /// (re-assertion), with a guard against interrupt storms like QEMU's (see the
    /// module documentation).
    pub fn end_of_interrupt(&mut self, vector: u8) {
        self.counters.eois = self.counters.eois.wrapping_add(1);
        for pin in 0..IOAPIC_NUM_PINS {
            let rte = self.table[pin];
            if rte & RTE_VECTOR != u64::from(vector) || rte & RTE_LEVEL == 0 || rte & RTE_REMOTE_IRR == 0 {
                continue;
            }
            self.table[pin] = rte & !RTE_REMOTE_IRR;
            if rte & RTE_MASKED != 0 || !self.asserted(pin) {
                self.refire_streak[pin] = 0;
                continue;
            }
            self.refire_streak[pin] += 1;
            if self.refire_streak[pin] >= IOAPIC_STORM_THRESHOLD {
                self.refire_streak[pin] = 0;
                self.counters.storms = self.counters.storms.wrapping_add(1);
                log::warn!(
                    "ioapic: interrupt storm on pin {pin} (vector {vector:#x}): still asserted after \
                     {IOAPIC_STORM_THRESHOLD} successive EOIs; not re-sending until the line changes"
                );
                continue;
            }
            if self.service_level(pin) {
                self.counters.refires = self.counters.refires.wrapping_add(1);
            }
        }
    }

    /// The state for a snapshot.
    pub fn save(&self) -> IoapicState {
        IoapicState {
            id: self.id,
            ioregsel: self.ioregsel,
            table: self.table.to_vec(),
            inputs: self.inputs,
            refire_streak: self.refire_streak.to_vec(),
        }
    }

    /// Loads a saved state and passes every pin's route to the sink again
    /// (a fresh VM has none of the dynamic routes yet).
    pub fn load(&mut self, s: &IoapicState) -> Result<(), StateError> {
        if s.table.len() != IOAPIC_NUM_PINS || s.refire_streak.len() != IOAPIC_NUM_PINS {
            return Err(StateError::Mismatch(format!(
                "ioapic with {} pins (this one has {IOAPIC_NUM_PINS})",
                s.table.len()
            )));
        }
        self.id = s.id & ID_MASK;
        self.ioregsel = s.ioregsel;
        self.table.copy_from_slice(&s.table);
        self.inputs = s.inputs;
        self.refire_streak.copy_from_slice(&s.refire_streak);
        for pin in 0..IOAPIC_NUM_PINS {
            self.sync_route(pin);
        }
        Ok(())
    }

    /// Snapshot of the redirection table (for tests and --stats).
    pub fn redirection_table(&self) -> [u64; IOAPIC_NUM_PINS] {
        self.table
    }

    /// Counters: MSIs sent, EOIs handled, re-fires.
    pub fn counters(&self) -> IoapicCounters {
        self.counters
    }

    /// Whether `pin` (in range) is asserted, taking its polarity into account.
    fn asserted(&self, pin: usize) -> bool {
        let high = self.inputs & (1 << pin) != 0;
        let active_low = self.table[pin] & RTE_ACTIVE_LOW != 0;
        high != active_low
    }

    /// Sends the MSI of `pin` (in range) now.
    fn send(&mut self, pin: usize) {
        let route = MsiRoute::from_rte(self.table[pin]);
        self.counters.msis_sent = self.counters.msis_sent.wrapping_add(1);
        self.sink.send_msi(route.address, route.data);
    }

    /// Fires level-triggered `pin` (in range) if it is asserted, unmasked and
    /// its Remote IRR is clear, setting Remote IRR. Returns whether it fired.
    fn service_level(&mut self, pin: usize) -> bool {
        let rte = self.table[pin];
        if rte & RTE_LEVEL == 0 || rte & (RTE_MASKED | RTE_REMOTE_IRR) != 0 || !self.asserted(pin) {
            return false;
        }
        self.table[pin] = rte | RTE_REMOTE_IRR;
        self.send(pin);
        true
    }

    /// Tells the sink about `pin`'s route if it changed.
    fn sync_route(&mut self, pin: usize) {
        let rte = self.table[pin];
        let route = (rte & RTE_MASKED == 0).then(|| MsiRoute::from_rte(rte));
        if route != self.routes[pin] {
            self.routes[pin] = route;
            self.counters.route_updates = self.counters.route_updates.wrapping_add(1);
            self.sink.update_route(pin, route);
        }
    }

    /// Reads the indirect register selected by IOREGSEL.
    fn read_window(&self) -> u32 {
        match self.ioregsel {
            REG_ID | REG_ARB => u32::from(self.id) << ID_SHIFT,
            REG_VER => IOAPIC_VERSION | ((IOAPIC_NUM_PINS as u32 - 1) << VER_ENTRIES_SHIFT),
            sel => match Self::rte_index(sel) {
                Some((pin, true)) => (self.table[pin] >> 32) as u32,
                // Truncation to the low dword intended.
                Some((pin, false)) => self.table[pin] as u32,
                None => 0,
            },
        }
    }

    /// Writes the indirect register selected by IOREGSEL.
    fn write_window(&mut self, value: u32) {
        match self.ioregsel {
            REG_ID => self.id = (value >> ID_SHIFT) as u8 & ID_MASK,
            REG_VER | REG_ARB => {}
            sel => match Self::rte_index(sel) {
                Some((pin, high)) => self.write_rte(pin, high, value),
                None => log::debug!("ioapic: write {value:#x} to unknown register {sel:#x} ignored"),
            },
        }
    }

    /// Pin and half (`true` = high dword) of indirect register `sel`, if it
    /// is an RTE.
    fn rte_index(sel: u8) -> Option<(usize, bool)> {
        let index = usize::from(sel.checked_sub(REG_REDTBL_BASE)?);
        let pin = index / 2;
        (pin < IOAPIC_NUM_PINS).then_some((pin, index % 2 == 1))
    }

    /// Writes one dword of `pin`'s RTE, then syncs its route and services it.
    fn write_rte(&mut self, pin: usize, high: bool, value: u32) {
        let old = self.table[pin];
        let mut rte = if high {
            (old & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (old & !0xffff_ffff) | u64::from(value)
        };
        rte = (rte & !RTE_RO_BITS) | (old & RTE_RO_BITS);
        if rte & RTE_LEVEL == 0 {
            // Edge-triggered entries have no Remote IRR.
            rte &= !RTE_REMOTE_IRR;
        }
        self.table[pin] = rte;
        self.refire_streak[pin] = 0;
        self.sync_route(pin);
        self.service_level(pin);
    }

    /// One access of at most 4 bytes at `offset`; returns the value read.
    fn read_reg(&self, offset: u64, size: usize) -> u32 {
        match offset & OFFSET_MASK {
            IOREGSEL => u32::from(self.ioregsel),
            IOWIN if size == 4 => self.read_window(),
            _ => 0,
        }
    }

    /// One access of at most 4 bytes at `offset`.
    fn write_reg(&mut self, offset: u64, size: usize, value: u32) {
        match offset & OFFSET_MASK {
            // Truncation to the 8-bit selector intended.
            IOREGSEL => self.ioregsel = value as u8,
            IOWIN if size == 4 => self.write_window(value),
            EOI if size == 4 => match u8::try_from(value) {
                Ok(vector) => self.end_of_interrupt(vector),
                Err(_) => log::debug!("ioapic: EOI register write {value:#x} ignored"),
            },
            off => {
                log::debug!("ioapic: {size}-byte write {value:#x} at offset {off:#x} ignored")
            }
        }
    }
}

impl BusDevice for Ioapic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut off = offset;
        for chunk in data.chunks_mut(4) {
            let value = self.read_reg(off, chunk.len()).to_le_bytes();
            chunk.copy_from_slice(&value[..chunk.len()]);
            off = off.wrapping_add(4);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let mut off = offset;
        for chunk in data.chunks(4) {
            self.write_reg(off, chunk.len(), le_u32(chunk));
            off = off.wrapping_add(4);
        }
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::Ioapic(self.save()))
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Ioapic(s) = state else {
            return Err(state.wrong("ioapic"));
        };
        self.load(s)
    }
}

#[cfg(test)]
mod tests;
