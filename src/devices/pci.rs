//! A PCI host bridge with configuration mechanism #1 (the PC's 0xcf8/0xcfc
//! ports) and bus 0 holding an i440FX host bridge at 00:00.0, as in QEMU's
//! `-M pc`, and optionally QEMU's pci-testdev at 00:01.0 with its BARs
//! where the plan put them (berth plays the firmware: BARs can be sized
//! but do not move). Other functions are absent: their configuration space
//! reads all-ones (vendor 0xffff) and writes are dropped. No interrupts are
//! routed.
//!
//! - 0xcf8 ([`PciAddress`]): the 32-bit address register (bit 31 enable,
//!   bus 23:16, device 15:11, function 10:8, register 7:2); only dword
//!   accesses reach it. 0xcf9 is also the PC's reset control register: byte
//!   accesses there go to it, as on PIIX.
//! - 0xcfc–0xcff ([`PciData`]): the selected dword of configuration space,
//!   accessed at any width and byte offset.

use crate::state::devices::{from_hex, to_hex};
use crate::state::{DeviceState, StateError};
use std::sync::{Arc, Mutex};

use crate::bus::{BusDevice, VmEvent};

/// The address register.
pub const ADDRESS_PORT: u16 = 0xcf8;
/// The data window (4 ports).
pub const DATA_PORT: u16 = 0xcfc;
/// Where berth puts pci-testdev's memory BAR (below the IOAPIC).
pub const TESTDEV_MMIO_ADDR: u64 = 0xfea0_0000;
/// Where berth puts pci-testdev's I/O BAR (where SeaBIOS starts I/O BARs).
pub const TESTDEV_PIO_PORT: u16 = 0xc000;
/// Intel.
pub const I440FX_VENDOR: u16 = 0x8086;
/// 82441FX PMC (the i440FX host bridge).
pub const I440FX_DEVICE: u16 = 0x1237;

const ENABLE: u32 = 1 << 31;

/// A BAR berth placed (as firmware would): its address, length and space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Where its window is on the bus.
    pub addr: u32,
    /// Length (a power of two).
    pub len: u32,
    /// I/O space (else 32-bit non-prefetchable memory).
    pub io: bool,
}

impl Bar {
    fn flags(&self) -> u32 {
        u32::from(self.io)
    }

    fn mask(&self) -> u32 {
        let space = if self.io { 0xffff_fffc } else { 0xffff_fff0 };
        !(self.len - 1) & space
    }
}

/// One function's configuration space.
struct Function {
    config: [u8; 256],
    bars: [Option<Bar>; 6],
}

impl Function {
    fn new(vendor: u16, device: u16, revision: u8, class: u8, subclass: u8) -> Function {
        let mut c = [0u8; 256];
        c[0x00..0x02].copy_from_slice(&vendor.to_le_bytes());
        c[0x02..0x04].copy_from_slice(&device.to_le_bytes());
        c[0x08] = revision;
        c[0x0a] = subclass;
        c[0x0b] = class;
        // Header type 0, single function; QEMU's default subsystem IDs.
        c[0x2c..0x2e].copy_from_slice(&0x1af4u16.to_le_bytes());
        c[0x2e..0x30].copy_from_slice(&0x1100u16.to_le_bytes());
        Function {
            config: c,
            bars: [None; 6],
        }
    }

    fn set_bar(&mut self, n: usize, bar: Bar) {
        self.bars[n] = Some(bar);
        let at = 0x10 + 4 * n;
        self.config[at..at + 4].copy_from_slice(&(bar.addr | bar.flags()).to_le_bytes());
    }

    /// Writes bytes at `reg`: the command register's enable bits, and BARs
    /// (sizing with all-ones; any other value puts the BAR back where berth
    /// placed it: BARs do not move). Everything else is read-only.
    fn write(&mut self, reg: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            match reg + i {
                0x04 => self.config[0x04] = b & 0x07, // I/O, memory, bus master
                r @ 0x10..=0x27 => self.config[r] = *b,
                _ => {}
            }
        }
        for (n, bar) in self.bars.iter().enumerate() {
            let at = 0x10 + 4 * n;
            if at + 4 <= reg || reg + data.len() <= at {
                continue;
            }
            let written = u32::from_le_bytes(self.config[at..at + 4].try_into().unwrap_or_default());
            let value = match bar {
                None => 0,
                Some(b) if written & b.mask() == b.mask() => b.mask() | b.flags(),
                Some(b) => {
                    if written & b.mask() != b.addr {
                        log::debug!("pci: BAR {n} stays at {:#x} (moves are not supported)", b.addr);
                    }
                    b.addr | b.flags()
                }
            };
            self.config[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// The configuration space of the bus: the address register and the
/// functions that exist.
pub struct PciConfig {
    address: u32,
    functions: std::collections::BTreeMap<u8, Function>,
}

impl PciConfig {
    /// Bus 0 with the host bridge at 00:00.0 and, given its BARs (memory,
    /// I/O), QEMU's pci-testdev at 00:01.0.
    pub fn new(testdev: Option<(u32, u32)>) -> PciConfig {
        let mut functions = std::collections::BTreeMap::new();
        // Revision 2 and class 06/00 (host bridge), as QEMU's i440FX.
        functions.insert(0, Function::new(I440FX_VENDOR, I440FX_DEVICE, 0x02, 0x06, 0x00));
        if let Some((mmio, pio)) = testdev {
            use super::pci_testdev as t;
            // Class 0xff ("other"), no interrupt pin; decoding on, as a
            // firmware would leave it.
            let mut f = Function::new(t::VENDOR, t::DEVICE, 0, 0xff, 0);
            f.config[0x04] = 0x03;
            f.set_bar(
                0,
                Bar {
                    addr: mmio,
                    len: t::MMIO_LEN as u32,
                    io: false,
                },
            );
            f.set_bar(
                1,
                Bar {
                    addr: pio,
                    len: t::PIO_LEN as u32,
                    io: true,
                },
            );
            functions.insert(TESTDEV_DEVFN, f);
        }
        PciConfig {
            address: 0,
            functions,
        }
    }

    /// The function the address register selects and the register's byte
    /// offset in it; None when disabled or absent.
    fn selected(&mut self) -> Option<(&mut Function, usize)> {
        if self.address & ENABLE == 0 || (self.address >> 16) & 0xff != 0 {
            return None;
        }
        let devfn = ((self.address >> 8) & 0xff) as u8;
        // QEMU ORs the address register's low bits with the port offset;
        // kvm-unit-tests' pci_config_readw(dev, 2) relies on it.
        let reg = (self.address & 0xff) as usize;
        self.functions.get_mut(&devfn).map(|f| (f, reg))
    }
}

/// Where pci-testdev sits: device 1, function 0.
pub const TESTDEV_DEVFN: u8 = 1 << 3;

fn lock(c: &Mutex<PciConfig>) -> std::sync::MutexGuard<'_, PciConfig> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address register window (0xcf8, 4 ports), with the reset control
/// register at 0xcf9 when the machine has one.
pub struct PciAddress {
    config: Arc<Mutex<PciConfig>>,
    reset: Option<Box<dyn BusDevice>>,
}

impl PciAddress {
    /// The register of `config`; byte accesses at 0xcf9 go to `reset`.
    pub fn new(config: Arc<Mutex<PciConfig>>, reset: Option<Box<dyn BusDevice>>) -> PciAddress {
        PciAddress { config, reset }
    }
}

impl BusDevice for PciAddress {
    /// The configuration space (and its address register) is saved by the data port (`PciData`).
    fn stateless(&self) -> bool {
        true
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len(), self.reset.as_mut()) {
            (0, 4, _) => data.copy_from_slice(&lock(&self.config).address.to_le_bytes()),
            (1, 1, Some(r)) => r.read(0, data),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        match (offset, <[u8; 4]>::try_from(data), self.reset.as_mut()) {
            (0, Ok(v), _) => {
                lock(&self.config).address = u32::from_le_bytes(v);
                None
            }
            (1, _, Some(r)) if data.len() == 1 => r.write(0, data),
            _ => None,
        }
    }
}

/// The data window (0xcfc–0xcff).
pub struct PciData(pub Arc<Mutex<PciConfig>>);

impl BusDevice for PciData {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut c = lock(&self.0);
        match c.selected() {
            Some((f, reg)) => {
                let at = reg | offset as usize;
                match f.config.get(at..at + data.len()) {
                    Some(src) => data.copy_from_slice(src),
                    None => data.fill(0xff),
                }
            }
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        // Absent functions drop writes.
        if let Some((f, reg)) = lock(&self.0).selected() {
            f.write(reg | offset as usize, data);
        }
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        let c = lock(&self.0);
        Some(DeviceState::Pci {
            address: c.address,
            functions: c.functions.iter().map(|(d, f)| (*d, to_hex(&f.config))).collect(),
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Pci { address, functions } = state else {
            return Err(state.wrong("pci"));
        };
        let mut c = lock(&self.0);
        if functions.iter().map(|(d, _)| d).ne(c.functions.keys()) {
            return Err(StateError::Mismatch(
                "the saved PCI functions differ from the machine's".into(),
            ));
        }
        for (d, hex) in functions {
            let bytes = from_hex(hex)?;
            let f = c
                .functions
                .get_mut(d)
                .ok_or_else(|| StateError::Mismatch("pci".into()))?;
            if bytes.len() != f.config.len() {
                return Err(StateError::Mismatch(format!(
                    "pci config of {} bytes",
                    bytes.len()
                )));
            }
            f.config.copy_from_slice(&bytes);
        }
        c.address = *address;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reset;
    impl BusDevice for Reset {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) -> Option<VmEvent> {
            (data == [6]).then_some(VmEvent::Reset)
        }
    }

    fn bus() -> (PciAddress, PciData) {
        let c = Arc::new(Mutex::new(PciConfig::new(Some((0xfea0_0000, 0xc000)))));
        (PciAddress::new(c.clone(), Some(Box::new(Reset))), PciData(c))
    }

    /// kvm-unit-tests' pci_config_readl/readw/readb: the whole register
    /// number in the address, the access at 0xcfc.
    fn read(a: &mut PciAddress, d: &mut PciData, devfn: u32, reg: u32, width: usize) -> u32 {
        a.write(0, &(ENABLE | devfn << 8 | reg).to_le_bytes());
        let mut buf = [0u8; 4];
        d.read(0, &mut buf[..width]);
        u32::from_le_bytes(buf)
    }

    #[test]
    fn linux_style_offsets_in_the_data_port() {
        // Linux's pci_conf1_read: dword-aligned address, the low bits as the port offset.
        let (mut a, mut d) = bus();
        a.write(0, &(ENABLE | 2).to_le_bytes());
        let mut w = [0u8; 2];
        d.read(0, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1237);
        a.write(0, &ENABLE.to_le_bytes());
        d.read(2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1237);
        let mut b = [0u8];
        d.read(3, &mut b);
        assert_eq!(b, [0x12]);
    }

    #[test]
    fn host_bridge_and_absent_functions() {
        let (mut a, mut d) = bus();
        assert_eq!(read(&mut a, &mut d, 0, 0, 4), 0x1237_8086);
        assert_eq!(read(&mut a, &mut d, 0, 2, 2), 0x1237);
        assert_eq!(read(&mut a, &mut d, 0, 0x0b, 1), 0x06);
        assert_eq!(read(&mut a, &mut d, 0, 0x08, 4), 0x0600_0002);
        // 00:02.0, 00:00.1 and bus 1 are absent.
        assert_eq!(read(&mut a, &mut d, 2 << 3, 0, 4), 0xffff_ffff);
        assert_eq!(read(&mut a, &mut d, 1, 0, 2), 0xffff);
        assert_eq!(read(&mut a, &mut d, 1 << 8, 0, 4), 0xffff_ffff);
        // Without the enable bit nothing is selected.
        a.write(0, &0u32.to_le_bytes());
        let mut buf = [0u8; 4];
        d.read(0, &mut buf);
        assert_eq!(buf, [0xff; 4]);
        // Writes change nothing but the enable bits of the command register.
        a.write(0, &ENABLE.to_le_bytes());
        d.write(0, &0u32.to_le_bytes());
        assert_eq!(read(&mut a, &mut d, 0, 0, 4), 0x1237_8086);
        a.write(0, &(ENABLE | 4).to_le_bytes());
        d.write(0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(read(&mut a, &mut d, 0, 4, 4), 0x0000_0007);
    }

    /// kvm-unit-tests' pci_config_writel.
    fn write(a: &mut PciAddress, d: &mut PciData, devfn: u32, reg: u32, v: u32) {
        a.write(0, &(ENABLE | devfn << 8 | reg).to_le_bytes());
        d.write(0, &v.to_le_bytes());
    }

    #[test]
    fn testdev_bars_size_and_stay() {
        let (mut a, mut d) = bus();
        let dev = u32::from(TESTDEV_DEVFN);
        // pci_find_dev(0x1b36, 0x0005).
        assert_eq!(read(&mut a, &mut d, dev, 0, 2), 0x1b36);
        assert_eq!(read(&mut a, &mut d, dev, 2, 2), 0x0005);
        assert_eq!(read(&mut a, &mut d, dev, 0x08, 4), 0xff00_0000);
        assert_eq!(read(&mut a, &mut d, dev, 0x3d, 1), 0, "no interrupt pin");
        // pci_bar_size_helper: save, all-ones, read, restore.
        for (bar, addr, size) in [
            (0x10, 0xfea0_0000u32, 0xffff_f000u32),
            (0x14, 0xc001, 0xffff_ff01),
        ] {
            assert_eq!(read(&mut a, &mut d, dev, bar, 4), addr);
            write(&mut a, &mut d, dev, bar, !0);
            assert_eq!(read(&mut a, &mut d, dev, bar, 4), size);
            write(&mut a, &mut d, dev, bar, addr);
            assert_eq!(read(&mut a, &mut d, dev, bar, 4), addr);
        }
        // A move is refused; unimplemented BARs read 0 even after sizing.
        write(&mut a, &mut d, dev, 0x10, 0xd000_0000);
        assert_eq!(read(&mut a, &mut d, dev, 0x10, 4), 0xfea0_0000);
        write(&mut a, &mut d, dev, 0x18, !0);
        assert_eq!(read(&mut a, &mut d, dev, 0x18, 4), 0);
    }

    #[test]
    fn linux_conf1_probe_and_reset_register() {
        let (mut a, _) = bus();
        // pci_check_type1: outb 1 → 0xcfb (ignored), outl 0x80000000 → 0xcf8, inl reads it back.
        a.write(3, &[1]);
        a.write(0, &ENABLE.to_le_bytes());
        let mut v = [0u8; 4];
        a.read(0, &mut v);
        assert_eq!(u32::from_le_bytes(v), ENABLE);
        // 0xcf9 stays the reset register.
        assert_eq!(a.write(1, &[6]), Some(VmEvent::Reset));
        let mut b = [0xaa];
        a.read(1, &mut b);
        assert_eq!(b, [0]);
        // Without one, 0xcf9 bytes are ignored.
        let mut plain = PciAddress::new(Arc::new(Mutex::new(PciConfig::new(None))), None);
        assert_eq!(plain.write(1, &[6]), None);
        plain.read(1, &mut b);
        assert_eq!(b, [0xff]);
    }
}
