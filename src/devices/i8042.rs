//! The PC keyboard controller (i8042), for CPU reset only.
//!
//! Wraps `vm-superio`'s [`I8042Device`], which emulates just the "pulse reset
//! line" command: the guest writing `0xfe` to the command port 0x64 asks for
//! a CPU reset, which berth reports as [`VmEvent::Reset`]. Every read of
//! either port returns 0 (output buffer empty, input buffer empty), so a guest
//! waiting for the input buffer to drain before sending `0xfe` proceeds at
//! once, and Linux's i8042 driver finds no controller and gives up.
//!
//! # Ports and insertion
//!
//! The controller answers at two ports that are not contiguous: 0x60 (data)
//! and 0x64 (command on write, status on read). Offsets on the bus are
//! relative to each range, so one [`BusDevice`] inserted twice could not tell
//! the ports apart. Instead the state lives in one shared [`I8042`] and each
//! port gets its own thin wrapper, [`I8042Data`] and [`I8042Command`]; each
//! is inserted once with length [`I8042_PORT_LEN`]. [`insert_i8042`] does
//! exactly that:
//!
//! ```
//! # use std::sync::{Arc, Mutex};
//! # use berth::bus::{AddressSpace, Bus, VmEvent};
//! # use berth::devices::i8042::{insert_i8042, I8042};
//! let mut bus = Bus::new();
//! insert_i8042(&mut bus, &Arc::new(Mutex::new(I8042::new()))).unwrap();
//! assert_eq!(bus.write(AddressSpace::Pio, 0x64, &[0xfe]), (true, Some(VmEvent::Reset)));
//! ```
//!
//! # Keyboard interrupt
//!
//! `vm-superio` 0.8's `I8042Device` has no keyboard (IRQ 1) interrupt
//! trigger, only the reset trigger: it never has data for the guest, so
//! there is nothing to interrupt for. This device therefore takes no
//! interrupt eventfd and IRQ 1 is never raised.

use crate::state::{DeviceState, StateError};
use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use vm_superio::{I8042Device, Trigger};

use crate::bus::{AddressSpace, Bus, BusDevice, BusError, VmEvent};

/// Port of the data register.
pub const I8042_DATA_PORT: u64 = 0x60;
/// Port of the command register (writes) and status register (reads).
pub const I8042_COMMAND_PORT: u64 = 0x64;
/// Length of the bus range of each port wrapper.
pub const I8042_PORT_LEN: u64 = 1;
/// The command that pulses the CPU reset line.
pub const I8042_CMD_RESET_CPU: u8 = 0xfe;

/// `vm-superio` addresses the registers by offset from port 0x60.
const SUPERIO_DATA_OFFSET: u8 = 0;
/// See [`SUPERIO_DATA_OFFSET`].
const SUPERIO_COMMAND_OFFSET: u8 = 4;

/// A [`Trigger`] that just records that it fired.
///
/// A `Cell` suffices: the device is only used under its mutex, and the flag
/// is taken right after the write that may set it.
#[derive(Debug, Default)]
struct ResetFlag(Cell<bool>);

impl Trigger for ResetFlag {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.set(true);
        Ok(())
    }
}

/// One of the two i8042 ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum I8042Port {
    /// Port 0x60, the data register.
    Data,
    /// Port 0x64, the command (write) and status (read) register.
    Command,
}

impl I8042Port {
    /// The port's I/O address.
    pub fn port(self) -> u64 {
        match self {
            I8042Port::Data => I8042_DATA_PORT,
            I8042Port::Command => I8042_COMMAND_PORT,
        }
    }

    /// The register offset `vm-superio` expects for this port.
    fn superio_offset(self) -> u8 {
        match self {
            I8042Port::Data => SUPERIO_DATA_OFFSET,
            I8042Port::Command => SUPERIO_COMMAND_OFFSET,
        }
    }
}

/// The i8042 controller state, shared by its two port wrappers.
pub struct I8042 {
    dev: I8042Device<ResetFlag>,
    resets: u64,
}

impl fmt::Debug for I8042 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I8042")
            .field("resets", &self.resets)
            .finish_non_exhaustive()
    }
}

impl Default for I8042 {
    fn default() -> I8042 {
        I8042::new()
    }
}

impl I8042 {
    /// Creates the controller.
    pub fn new() -> I8042 {
        I8042 {
            dev: I8042Device::new(ResetFlag::default()),
            resets: 0,
        }
    }

    /// Reads the register behind `port` (always 0 with `vm-superio` 0.8).
    pub fn read_port(&mut self, port: I8042Port) -> u8 {
        self.dev.read(port.superio_offset())
    }

    /// Writes `value` to `port`; returns [`VmEvent::Reset`] if that was the
    /// CPU reset command.
    pub fn write_port(&mut self, port: I8042Port, value: u8) -> Option<VmEvent> {
        // The trigger cannot fail (`Infallible`), so there is no error to handle.
        let _ = self.dev.write(port.superio_offset(), value);
        if self.dev.reset_evt().0.replace(false) {
            self.resets = self.resets.saturating_add(1);
            log::debug!("i8042: guest requested a CPU reset");
            Some(VmEvent::Reset)
        } else {
            None
        }
    }

    /// How many CPU resets the guest has requested so far.
    pub fn reset_requests(&self) -> u64 {
        self.resets
    }

    /// Bus read of `data.len()` bytes at `offset` within `port`'s range: byte
    /// 0 is the register at offset 0, everything else reads all-ones.
    fn bus_read(&mut self, port: I8042Port, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if offset == 0 {
            if let Some(first) = data.first_mut() {
                *first = self.read_port(port);
            }
        }
    }

    /// Bus write at `offset` within `port`'s range: byte 0 is written to the
    /// register at offset 0, everything else is dropped.
    fn bus_write(&mut self, port: I8042Port, offset: u64, data: &[u8]) -> Option<VmEvent> {
        match (offset, data.first()) {
            (0, Some(&value)) => self.write_port(port, value),
            _ => None,
        }
    }
}

/// Locks the shared controller, recovering from poisoning (the state is a
/// flag and a counter; a panicked holder cannot leave it inconsistent).
fn lock(dev: &Mutex<I8042>) -> MutexGuard<'_, I8042> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bus device for port 0x60 (data); insert it at [`I8042_DATA_PORT`] with
/// length [`I8042_PORT_LEN`].
#[derive(Clone, Debug)]
pub struct I8042Data(Arc<Mutex<I8042>>);

impl I8042Data {
    /// Wraps the shared controller `dev`.
    pub fn new(dev: Arc<Mutex<I8042>>) -> I8042Data {
        I8042Data(dev)
    }
}

impl BusDevice for I8042Data {
    /// The controller is saved by its command port (`I8042Command`).
    fn stateless(&self) -> bool {
        true
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.0).bus_read(I8042Port::Data, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        lock(&self.0).bus_write(I8042Port::Data, offset, data)
    }
}

/// Bus device for port 0x64 (command/status); insert it at
/// [`I8042_COMMAND_PORT`] with length [`I8042_PORT_LEN`].
#[derive(Clone, Debug)]
pub struct I8042Command(Arc<Mutex<I8042>>);

impl I8042Command {
    /// Wraps the shared controller `dev`.
    pub fn new(dev: Arc<Mutex<I8042>>) -> I8042Command {
        I8042Command(dev)
    }
}

impl BusDevice for I8042Command {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.0).bus_read(I8042Port::Command, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        lock(&self.0).bus_write(I8042Port::Command, offset, data)
    }

    // The controller's state is saved once, with its command port.
    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::I8042 {
            resets: lock(&self.0).resets,
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::I8042 { resets } = state else {
            return Err(state.wrong("i8042"));
        };
        lock(&self.0).resets = *resets;
        Ok(())
    }
}

/// Inserts `dev` on `bus` at both its ports: an [`I8042Data`] at 0x60 named
/// `i8042-data` and an [`I8042Command`] at 0x64 named `i8042-command`, each of
/// length 1.
pub fn insert_i8042(bus: &mut Bus, dev: &Arc<Mutex<I8042>>) -> Result<(), BusError> {
    bus.insert(
        AddressSpace::Pio,
        I8042_DATA_PORT,
        I8042_PORT_LEN,
        "i8042-data",
        Arc::new(Mutex::new(I8042Data::new(Arc::clone(dev)))),
    )?;
    bus.insert(
        AddressSpace::Pio,
        I8042_COMMAND_PORT,
        I8042_PORT_LEN,
        "i8042-command",
        Arc::new(Mutex::new(I8042Command::new(Arc::clone(dev)))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Mutex<I8042>> {
        Arc::new(Mutex::new(I8042::new()))
    }

    #[test]
    fn reset_command_yields_reset() {
        let dev = shared();
        let mut cmd = I8042Command::new(Arc::clone(&dev));
        assert_eq!(cmd.write(0, &[I8042_CMD_RESET_CPU]), Some(VmEvent::Reset));
        assert_eq!(lock(&dev).reset_requests(), 1);
        // The flag is consumed: the next unrelated write is not a reset.
        assert_eq!(cmd.write(0, &[0x20]), None);
        // Every reset command is reported.
        assert_eq!(cmd.write(0, &[I8042_CMD_RESET_CPU]), Some(VmEvent::Reset));
        assert_eq!(lock(&dev).reset_requests(), 2);
    }

    #[test]
    fn status_read() {
        let dev = shared();
        let mut cmd = I8042Command::new(Arc::clone(&dev));
        let mut data = I8042Data::new(dev);
        let mut b = [0x55u8];
        cmd.read(0, &mut b);
        // Input buffer empty (bit 1) and no output (bit 0): reset may proceed.
        assert_eq!(b, [0]);
        b = [0x55];
        data.read(0, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn other_commands_do_not_reset() {
        let dev = shared();
        let mut cmd = I8042Command::new(Arc::clone(&dev));
        let mut data = I8042Data::new(Arc::clone(&dev));
        for v in 0..=u8::MAX {
            if v != I8042_CMD_RESET_CPU {
                assert_eq!(cmd.write(0, &[v]), None, "command {v:#x}");
            }
            // 0xfe on the data port is a keyboard byte, not a reset.
            assert_eq!(data.write(0, &[v]), None, "data {v:#x}");
        }
        assert_eq!(lock(&dev).reset_requests(), 0);
    }

    #[test]
    fn wide_and_odd_accesses() {
        let dev = shared();
        let mut cmd = I8042Command::new(Arc::clone(&dev));
        // Wide write: byte 0 is the command.
        assert_eq!(
            cmd.write(0, &[I8042_CMD_RESET_CPU, 0, 0, 0]),
            Some(VmEvent::Reset)
        );
        assert_eq!(cmd.write(0, &[0, I8042_CMD_RESET_CPU]), None);
        // Wide read: byte 0 is the status, the rest all-ones.
        let mut w = [0u8; 4];
        cmd.read(0, &mut w);
        assert_eq!(w, [0, 0xff, 0xff, 0xff]);
        // Offsets past the one-byte register (not possible through the bus).
        let mut b = [0u8];
        cmd.read(1, &mut b);
        assert_eq!(b, [0xff]);
        cmd.read(u64::MAX, &mut b);
        assert_eq!(b, [0xff]);
        assert_eq!(cmd.write(4, &[I8042_CMD_RESET_CPU]), None);
        assert_eq!(cmd.write(u64::MAX, &[I8042_CMD_RESET_CPU]), None);
        // Empty accesses.
        cmd.read(0, &mut []);
        assert_eq!(cmd.write(0, &[]), None);
        assert_eq!(lock(&dev).reset_requests(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        let dev = shared();
        let mut cmd = I8042Command::new(Arc::clone(&dev));
        let mut data = I8042Data::new(Arc::clone(&dev));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 9];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 10) as usize;
            let offset = if x & 0x100 != 0 { x >> 32 } else { x & 3 };
            buf.fill((x >> 16) as u8);
            let dev: &mut dyn BusDevice = if x & 0x200 != 0 { &mut cmd } else { &mut data };
            if x & 0x400 != 0 {
                dev.read(offset, &mut buf[..len]);
            } else {
                let _ = dev.write(offset, &buf[..len]);
            }
        }
    }

    #[test]
    fn poisoned_lock_recovers() {
        let dev = shared();
        let d2 = Arc::clone(&dev);
        let _ = std::thread::spawn(move || {
            let _g = d2.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(dev.is_poisoned());
        let mut cmd = I8042Command::new(dev);
        assert_eq!(cmd.write(0, &[I8042_CMD_RESET_CPU]), Some(VmEvent::Reset));
    }

    #[test]
    fn inserted_on_bus() {
        let dev = shared();
        let mut bus = Bus::new();
        insert_i8042(&mut bus, &dev).unwrap();
        assert_eq!(
            bus.write(AddressSpace::Pio, I8042_COMMAND_PORT, &[I8042_CMD_RESET_CPU]),
            (true, Some(VmEvent::Reset))
        );
        assert_eq!(
            bus.write(AddressSpace::Pio, I8042_DATA_PORT, &[I8042_CMD_RESET_CPU]),
            (true, None)
        );
        let mut b = [0xaau8];
        assert!(bus.read(AddressSpace::Pio, I8042_COMMAND_PORT, &mut b));
        assert_eq!(b, [0]);
        // Ports in between are not claimed.
        assert!(!bus.read(AddressSpace::Pio, 0x61, &mut b));
        // A 2-byte access at 0x64 runs past the range: unhandled.
        assert_eq!(
            bus.write(AddressSpace::Pio, I8042_COMMAND_PORT, &[0xfe, 0]),
            (false, None)
        );
        assert_eq!(lock(&dev).reset_requests(), 1);
        assert_eq!(I8042Port::Data.port(), 0x60);
        assert_eq!(I8042Port::Command.port(), 0x64);
        // Inserting twice overlaps.
        assert!(insert_i8042(&mut bus, &dev).is_err());
    }

    #[test]
    fn wrappers_are_send() {
        fn check<T: Send>() {}
        check::<I8042>();
        check::<I8042Data>();
        check::<I8042Command>();
    }
}
