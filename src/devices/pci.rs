//! A PCI host bridge with configuration mechanism #1 (the PC's 0xcf8/0xcfc
//! ports) and one function on bus 0: an i440FX host bridge at 00:00.0, as
//! in QEMU's `-M pc`. Other functions are absent: their configuration
//! space reads all-ones (vendor 0xffff) and writes are dropped. The bridge
//! routes no BARs and no interrupts.
//!
//! - 0xcf8 ([`PciAddress`]): the 32-bit address register (bit 31 enable,
//!   bus 23:16, device 15:11, function 10:8, register 7:2); only dword
//!   accesses reach it. 0xcf9 is also the PC's reset control register: byte
//!   accesses there go to it, as on PIIX.
//! - 0xcfc–0xcff ([`PciData`]): the selected dword of configuration space,
//!   accessed at any width and byte offset.

use std::sync::{Arc, Mutex};

use crate::bus::{BusDevice, VmEvent};

/// The address register.
pub const ADDRESS_PORT: u16 = 0xcf8;
/// The data window (4 ports).
pub const DATA_PORT: u16 = 0xcfc;
/// Intel.
pub const I440FX_VENDOR: u16 = 0x8086;
/// 82441FX PMC (the i440FX host bridge).
pub const I440FX_DEVICE: u16 = 0x1237;

const ENABLE: u32 = 1 << 31;

/// The configuration space of the bus: the address register and the
/// functions that exist.
pub struct PciConfig {
    address: u32,
    host_bridge: [u8; 256],
}

impl PciConfig {
    /// Bus 0 with the host bridge at 00:00.0.
    pub fn new() -> PciConfig {
        let mut c = [0u8; 256];
        c[0x00..0x02].copy_from_slice(&I440FX_VENDOR.to_le_bytes());
        c[0x02..0x04].copy_from_slice(&I440FX_DEVICE.to_le_bytes());
        c[0x08] = 0x02; // revision, as QEMU's i440FX
        c[0x0a] = 0x00; // subclass: host bridge
        c[0x0b] = 0x06; // class: bridge
        c[0x0e] = 0x00; // header type 0, single function
                        // QEMU's default subsystem IDs.
        c[0x2c..0x2e].copy_from_slice(&0x1af4u16.to_le_bytes());
        c[0x2e..0x30].copy_from_slice(&0x1100u16.to_le_bytes());
        PciConfig {
            address: 0,
            host_bridge: c,
        }
    }

    /// The configuration space the address register selects, and the
    /// register's byte offset in it; None when disabled or absent.
    fn selected(&self) -> Option<(&[u8; 256], usize)> {
        if self.address & ENABLE == 0 {
            return None;
        }
        let bus = (self.address >> 16) & 0xff;
        let devfn = (self.address >> 8) & 0xff;
        let reg = (self.address & 0xfc) as usize;
        (bus == 0 && devfn == 0).then_some((&self.host_bridge, reg))
    }
}

impl Default for PciConfig {
    fn default() -> Self {
        PciConfig::new()
    }
}

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
        let c = lock(&self.0);
        match c.selected() {
            Some((space, reg)) => {
                let at = reg + offset as usize;
                match space.get(at..at + data.len()) {
                    Some(src) => data.copy_from_slice(src),
                    None => data.fill(0xff),
                }
            }
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> Option<VmEvent> {
        // The host bridge has no writable register berth models (no BARs,
        // no PAM/SMRAM); absent functions drop writes.
        None
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
        let c = Arc::new(Mutex::new(PciConfig::new()));
        (PciAddress::new(c.clone(), Some(Box::new(Reset))), PciData(c))
    }

    /// kvm-unit-tests' pci_config_readl/readw/readb.
    fn read(a: &mut PciAddress, d: &mut PciData, devfn: u32, reg: u32, width: usize) -> u32 {
        a.write(0, &(ENABLE | devfn << 8 | reg & 0xfc).to_le_bytes());
        let mut buf = [0u8; 4];
        d.read(u64::from(reg & 3), &mut buf[..width]);
        u32::from_le_bytes(buf)
    }

    #[test]
    fn host_bridge_and_absent_functions() {
        let (mut a, mut d) = bus();
        assert_eq!(read(&mut a, &mut d, 0, 0, 4), 0x1237_8086);
        assert_eq!(read(&mut a, &mut d, 0, 2, 2), 0x1237);
        assert_eq!(read(&mut a, &mut d, 0, 0x0b, 1), 0x06);
        assert_eq!(read(&mut a, &mut d, 0, 0x08, 4), 0x0600_0002);
        // 00:01.0, 00:00.1 and bus 1 are absent.
        assert_eq!(read(&mut a, &mut d, 1 << 3, 0, 4), 0xffff_ffff);
        assert_eq!(read(&mut a, &mut d, 1, 0, 2), 0xffff);
        assert_eq!(read(&mut a, &mut d, 1 << 8, 0, 4), 0xffff_ffff);
        // Without the enable bit nothing is selected.
        a.write(0, &0u32.to_le_bytes());
        let mut buf = [0u8; 4];
        d.read(0, &mut buf);
        assert_eq!(buf, [0xff; 4]);
        // Writes change nothing.
        a.write(0, &ENABLE.to_le_bytes());
        d.write(0, &0u32.to_le_bytes());
        assert_eq!(read(&mut a, &mut d, 0, 0, 4), 0x1237_8086);
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
        let mut plain = PciAddress::new(Arc::new(Mutex::new(PciConfig::new())), None);
        assert_eq!(plain.write(1, &[6]), None);
        plain.read(1, &mut b);
        assert_eq!(b, [0xff]);
    }
}
