//! QEMU's firmware configuration device (fw_cfg), x86 I/O interface, as
//! QEMU's docs/specs/fw_cfg.rst and Linux's drivers/firmware/qemu_fw_cfg.c
//! use it:
//!
//! - `port` (0x510): selector, written with a 16-bit `out` (little-endian);
//!   selecting resets the read offset. A 1-byte read there reads data too.
//! - `port + 1` (0x511): data, read one byte at a time (`rep insb`); past the
//!   item's end, or for an item that does not exist, reads are 0.
//! - `port + 4` (0x514, 8 ports): DMA. Reads give the signature "QEMU CFG";
//!   the guest writes the guest-physical address of a big-endian
//!   `FWCfgDmaAccess { be32 control; be32 length; be64 address; }` as two
//!   big-endian 32-bit halves (high at +0, low at +4; the low write starts
//!   the transfer) or one 64-bit write at +0. Control bits: error 0x01,
//!   read 0x02, skip 0x04, select 0x08 (key in bits 16–31), write 0x10. When
//!   done, control is written back as 0 or error; length and address are not.
//!
//! The items are computed by [`items`] from plan values only; none is
//! writable, so a DMA write sets the error bit, as QEMU does for read-only
//! items.

use crate::state::{DeviceState, StateError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::{BusDevice, VmEvent};

/// QEMU's x86 selector port.
pub const DEFAULT_PORT: u16 = 0x510;
/// Selector + data ports.
pub const CTL_LEN: u64 = 2;
/// The DMA address register's offset from the selector port.
pub const DMA_OFFSET: u64 = 4;
/// The DMA address register's length (64 bits).
pub const DMA_LEN: u64 = 8;

/// Key: the signature "QEMU".
pub const KEY_SIGNATURE: u16 = 0x00;
/// Key: the interface id (bit 0 traditional, bit 1 DMA), le32.
pub const KEY_ID: u16 = 0x01;
/// Key: the VM's UUID (16 bytes).
pub const KEY_UUID: u16 = 0x02;
/// Key: RAM size in bytes, le64.
pub const KEY_RAM_SIZE: u16 = 0x03;
/// Key: boot vCPUs, le16.
pub const KEY_NB_CPUS: u16 = 0x05;
/// Key: one past the highest APIC ID, le16.
pub const KEY_MAX_CPUS: u16 = 0x0f;
/// Key: command line length including its NUL, le32.
pub const KEY_CMDLINE_SIZE: u16 = 0x14;
/// Key: command line bytes and NUL.
pub const KEY_CMDLINE_DATA: u16 = 0x15;
/// Key: the file directory.
pub const KEY_FILE_DIR: u16 = 0x19;
/// Key of the first file.
pub const KEY_FILE_FIRST: u16 = 0x20;

/// ID bit: the traditional (selector/data) interface.
pub const ID_TRADITIONAL: u32 = 1 << 0;
/// ID bit: the DMA interface.
pub const ID_DMA: u32 = 1 << 1;

/// DMA control: error (set by the device).
pub const DMA_CTL_ERROR: u32 = 0x01;
/// DMA control: read the selected item into guest memory.
pub const DMA_CTL_READ: u32 = 0x02;
/// DMA control: skip bytes of the selected item.
pub const DMA_CTL_SKIP: u32 = 0x04;
/// DMA control: select the item in bits 16–31 first.
pub const DMA_CTL_SELECT: u32 = 0x08;
/// DMA control: write guest memory into the selected item.
pub const DMA_CTL_WRITE: u32 = 0x10;

/// What the DMA register reads as, big-endian: "QEMU CFG".
pub const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";
/// Length of a file name in the directory, NUL included.
pub const FILE_NAME_LEN: usize = 56;

/// One fw_cfg item: its key, a name for the plan dump (the file name for
/// files), and the bytes the guest reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Selector key.
    pub key: u16,
    /// "signature", "id", …, or the file's name.
    pub name: String,
    /// Contents.
    pub data: Vec<u8>,
}

/// What the items are made of (all from the plan).
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// Bytes of writable RAM.
    pub ram_size: u64,
    /// vCPUs at boot.
    pub cpus: u16,
    /// One past the highest APIC ID.
    pub max_cpus: u16,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// The e820 map: (address, length, type).
    pub e820: &'a [(u64, u64, u32)],
    /// Whether the DMA interface exists.
    pub dma: bool,
}

/// Every item, by key: the fixed ones, then the file directory, then the
/// files (keys from 0x20 in name order, as QEMU assigns them).
pub fn items(i: &Inputs) -> Vec<Item> {
    let item = |key, name: &str, data: Vec<u8>| Item {
        key,
        name: name.into(),
        data,
    };
    let id = ID_TRADITIONAL | if i.dma { ID_DMA } else { 0 };
    let mut cmdline = i.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    let mut files: Vec<(String, Vec<u8>)> = vec![("etc/e820".into(), e820_file(i.e820))];
    files.sort();
    let mut dir = (files.len() as u32).to_be_bytes().to_vec();
    for (n, (name, data)) in files.iter().enumerate() {
        dir.extend_from_slice(&(data.len() as u32).to_be_bytes());
        dir.extend_from_slice(&(KEY_FILE_FIRST + n as u16).to_be_bytes());
        dir.extend_from_slice(&[0, 0]);
        let mut field = [0u8; FILE_NAME_LEN];
        let len = name.len().min(FILE_NAME_LEN - 1);
        field[..len].copy_from_slice(&name.as_bytes()[..len]);
        dir.extend_from_slice(&field);
    }
    let mut out = vec![
        item(KEY_SIGNATURE, "signature", b"QEMU".to_vec()),
        item(KEY_ID, "id", id.to_le_bytes().to_vec()),
        item(KEY_UUID, "uuid", vec![0; 16]),
        item(KEY_RAM_SIZE, "ram_size", i.ram_size.to_le_bytes().to_vec()),
        item(KEY_NB_CPUS, "nb_cpus", i.cpus.to_le_bytes().to_vec()),
        item(KEY_MAX_CPUS, "max_cpus", i.max_cpus.to_le_bytes().to_vec()),
        item(
            KEY_CMDLINE_SIZE,
            "cmdline_size",
            (cmdline.len() as u32).to_le_bytes().to_vec(),
        ),
        item(KEY_CMDLINE_DATA, "cmdline_data", cmdline),
        item(KEY_FILE_DIR, "file_dir", dir),
    ];
    for (n, (name, data)) in files.into_iter().enumerate() {
        out.push(item(KEY_FILE_FIRST + n as u16, &name, data));
    }
    out
}

/// QEMU's `etc/e820`: packed little-endian { u64 address; u64 length; u32 type }.
fn e820_file(e820: &[(u64, u64, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(e820.len() * 20);
    for (addr, len, kind) in e820 {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
    }
    out
}

/// The device state: the items, the selected key and read offset, and the
/// DMA address being written.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    /// The selected key, or None after selecting a key with no item.
    selected: Option<u16>,
    offset: usize,
    dma_addr: u64,
    mem: GuestMemoryMmap,
}

impl FwCfg {
    /// A device serving `items`; DMA transfers reach `mem`.
    pub fn new(items: impl IntoIterator<Item = (u16, Vec<u8>)>, mem: GuestMemoryMmap) -> FwCfg {
        FwCfg {
            items: items.into_iter().collect(),
            selected: None,
            offset: 0,
            dma_addr: 0,
            mem,
        }
    }

    fn select(&mut self, key: u16) {
        self.offset = 0;
        self.selected = self.items.contains_key(&key).then_some(key);
    }

    /// The rest of the selected item (empty when none or past its end).
    fn remaining(&self) -> &[u8] {
        self.selected
            .and_then(|k| self.items.get(&k))
            .and_then(|d| d.get(self.offset..))
            .unwrap_or(&[])
    }

    fn read_byte(&mut self) -> u8 {
        match self.remaining().first().copied() {
            Some(b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// Runs the transfer whose descriptor is at `desc` and writes its
    /// status back into the descriptor's control word.
    fn dma(&mut self, desc: u64) {
        let mut raw = [0u8; 16];
        if self.mem.read_slice(&mut raw, GuestAddress(desc)).is_err() {
            self.dma_status(desc, DMA_CTL_ERROR);
            return;
        }
        let control = u32::from_be_bytes(raw[0..4].try_into().unwrap_or_default());
        let mut length = u32::from_be_bytes(raw[4..8].try_into().unwrap_or_default());
        let mut address = u64::from_be_bytes(raw[8..16].try_into().unwrap_or_default());
        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        // Read wins over write, write over skip; none of them: nothing to do.
        let (read, write) = if control & DMA_CTL_READ != 0 {
            (true, false)
        } else if control & DMA_CTL_WRITE != 0 {
            (false, true)
        } else if control & DMA_CTL_SKIP != 0 {
            (false, false)
        } else {
            length = 0;
            (false, false)
        };
        let mut status = 0;
        while length > 0 && status & DMA_CTL_ERROR == 0 {
            let rest = self.remaining();
            let len = if rest.is_empty() {
                // Past the end (or no item): reads fill zeros, writes fail.
                if read && !self.zero(address, length) {
                    status |= DMA_CTL_ERROR;
                }
                length
            } else {
                let len = rest.len().min(length as usize);
                if read && self.mem.write_slice(&rest[..len], GuestAddress(address)).is_err() {
                    status |= DMA_CTL_ERROR;
                }
                self.offset += len;
                len as u32
            };
            if write {
                // No item is writable.
                status |= DMA_CTL_ERROR;
            }
            address = address.wrapping_add(len.into());
            length -= len;
        }
        self.dma_status(desc, status);
    }

    fn zero(&self, mut address: u64, mut length: u32) -> bool {
        const CHUNK: [u8; 4096] = [0; 4096];
        while length > 0 {
            let n = length.min(CHUNK.len() as u32);
            if self
                .mem
                .write_slice(&CHUNK[..n as usize], GuestAddress(address))
                .is_err()
            {
                return false;
            }
            address = address.wrapping_add(n.into());
            length -= n;
        }
        true
    }

    fn dma_status(&self, desc: u64, control: u32) {
        if self
            .mem
            .write_slice(&control.to_be_bytes(), GuestAddress(desc))
            .is_err()
        {
            log::debug!("fw_cfg: DMA descriptor at {desc:#x} is not in RAM");
        }
    }
}

/// The selector/data window (`port`, 2 ports) on a shared [`FwCfg`].
pub struct FwCfgPorts(pub Arc<Mutex<FwCfg>>);

impl BusDevice for FwCfgPorts {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        if data.len() != 1 {
            // Only byte reads are valid on QEMU's I/O interface.
            data.fill(0xff);
            return;
        }
        data[0] = self.0.lock().unwrap_or_else(|e| e.into_inner()).read_byte();
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> Option<VmEvent> {
        // A 16-bit write selects; byte writes to the data port are ignored
        // (QEMU ≥ 2.4), other widths are invalid.
        if let Ok(key) = <[u8; 2]>::try_from(data) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .select(u16::from_le_bytes(key));
        }
        None
    }

    // The shared state is saved once, with the selector/data window.
    fn save_state(&self) -> Option<DeviceState> {
        let d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Some(DeviceState::FwCfg {
            selected: d.selected,
            offset: d.offset as u64,
            dma_addr: d.dma_addr,
        })
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::FwCfg {
            selected,
            offset,
            dma_addr,
        } = state
        else {
            return Err(state.wrong("fw-cfg"));
        };
        let mut d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        d.selected = *selected;
        d.offset = usize::try_from(*offset).unwrap_or(usize::MAX);
        d.dma_addr = *dma_addr;
        Ok(())
    }
}

/// The DMA address window (`port + 4`, 8 ports) on a shared [`FwCfg`].
pub struct FwCfgDma(pub Arc<Mutex<FwCfg>>);

impl BusDevice for FwCfgDma {
    /// fw_cfg is saved by its selector/data ports (`FwCfgPorts`).
    fn stateless(&self) -> bool {
        true
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = DMA_SIGNATURE.get(offset as usize + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        let mut dev = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (offset, data.len()) {
            (0, 4) => {
                let high = u32::from_be_bytes(data.try_into().unwrap_or_default());
                dev.dma_addr = u64::from(high) << 32;
            }
            (4, 4) => {
                let low = u32::from_be_bytes(data.try_into().unwrap_or_default());
                let desc = dev.dma_addr | u64::from(low);
                dev.dma_addr = 0;
                dev.dma(desc);
            }
            (0, 8) => {
                dev.dma_addr = 0;
                dev.dma(u64::from_be_bytes(data.try_into().unwrap_or_default()));
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
#[path = "fw_cfg_tests.rs"]
mod tests;
