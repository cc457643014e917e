//! One bus for port I/O and MMIO.
//!
//! The [`Bus`] maps non-overlapping address ranges in each [`AddressSpace`]
//! to devices implementing [`BusDevice`]. It is built once before the vCPUs
//! start (insertion takes `&mut self`) and then shared read-only by all vCPU
//! threads behind an `Arc`; dispatch only takes the device's own mutex.
//!
//! Accesses that hit no device (or that start inside a range but run past its
//! end) are "unhandled": reads see all-ones, writes are dropped. They are
//! counted per address space and the first few are logged at debug level.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::state::{DeviceState, StateError};
use thiserror::Error;

/// Number of unhandled accesses logged before the log is suppressed.
const UNHANDLED_LOG_LIMIT: u64 = 16;

/// Which address space an access is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressSpace {
    /// x86 port I/O (`in`/`out` instructions).
    Pio,
    /// Memory-mapped I/O.
    Mmio,
}

impl fmt::Display for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressSpace::Pio => f.write_str("pio"),
            AddressSpace::Mmio => f.write_str("mmio"),
        }
    }
}

/// What a device asks of the VM after a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// isa-debug-exit: the process must exit with this status
    /// (`(value << 1) | 1`, already computed by the device).
    DebugExit(i32),
    /// Guest requested a reset (e.g. i8042 command 0xfe).
    Reset,
    /// Guest requested power off.
    PowerOff,
    /// Guest entered ACPI S3 (suspend to RAM): every vCPU must stop until a
    /// wake event ([`crate::devices::sleep`]).
    Suspend,
}

/// A device on the bus.
///
/// `offset` is relative to the start of the range the device was inserted
/// at. The bus guarantees `offset + data.len()` does not exceed the range.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset`; may ask the VM for something.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent>;
    /// The device's state for a snapshot ([`crate::state`]); `None`: the
    /// device has none (or another bus entry saves it), which it must say
    /// with [`BusDevice::stateless`].
    fn save_state(&self) -> Option<DeviceState> {
        None
    }
    /// Whether the device has no state a snapshot must keep (or another
    /// bus entry saves it). A device that neither saves a state nor says
    /// this makes every snapshot fail, naming it ([`Bus::unsaved`]), so a
    /// new device cannot be silently lost by a snapshot.
    fn stateless(&self) -> bool {
        false
    }
    /// Loads a state saved by [`BusDevice::save_state`].
    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        Err(StateError::Mismatch(format!(
            "this device has no state, the snapshot has {}",
            state.kind()
        )))
    }
}

/// Errors from building a [`Bus`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// A range of length zero was requested.
    #[error("{space} range for device `{name}` at {base:#x} has zero length")]
    ZeroLength {
        /// Address space of the refused range.
        space: AddressSpace,
        /// Name of the device being inserted.
        name: String,
        /// Requested base address.
        base: u64,
    },
    /// `base + len` does not fit in 64 bits.
    #[error(
        "{space} range for device `{name}` at {base:#x} with length {len:#x} overflows the address space"
    )]
    Overflow {
        /// Address space of the refused range.
        space: AddressSpace,
        /// Name of the device being inserted.
        name: String,
        /// Requested base address.
        base: u64,
        /// Requested length.
        len: u64,
    },
    /// The requested range overlaps one already on the bus.
    #[error(
        "{space} range [{base:#x}, {end:#x}) for device `{name}` overlaps \
         [{existing_base:#x}, {existing_end:#x}) of device `{existing}`"
    )]
    Overlap {
        /// Address space of both ranges.
        space: AddressSpace,
        /// Name of the device being inserted.
        name: String,
        /// Requested base address.
        base: u64,
        /// Requested end address (exclusive).
        end: u64,
        /// Name of the device already on the bus.
        existing: String,
        /// Base address of the existing range.
        existing_base: u64,
        /// End address (exclusive) of the existing range.
        existing_end: u64,
    },
}

/// Access counters of one inserted range, as returned by [`Bus::stats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    /// Device name given at insertion.
    pub name: String,
    /// Address space of the range.
    pub space: AddressSpace,
    /// Base address of the range.
    pub base: u64,
    /// Length of the range in bytes.
    pub len: u64,
    /// Number of handled reads dispatched to this range.
    pub reads: u64,
    /// Number of handled writes dispatched to this range.
    pub writes: u64,
}

/// Counts of accesses that hit no device, as returned by [`Bus::unhandled`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnhandledStats {
    /// Unhandled port I/O reads.
    pub pio_reads: u64,
    /// Unhandled port I/O writes.
    pub pio_writes: u64,
    /// Unhandled MMIO reads.
    pub mmio_reads: u64,
    /// Unhandled MMIO writes.
    pub mmio_writes: u64,
}

/// One range on the bus.
struct Entry {
    len: u64,
    name: String,
    dev: Arc<Mutex<dyn BusDevice>>,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl Entry {
    /// Exclusive end of the range; cannot overflow (checked at insertion).
    fn end(&self, base: u64) -> u64 {
        base.saturating_add(self.len)
    }
}

/// Unhandled-access counters of one address space.
#[derive(Default)]
struct Unhandled {
    reads: AtomicU64,
    writes: AtomicU64,
}

/// The device bus for both port I/O and MMIO.
///
/// `Send + Sync`; share it between vCPU threads with an `Arc`.
#[derive(Default)]
pub struct Bus {
    pio: BTreeMap<u64, Entry>,
    mmio: BTreeMap<u64, Entry>,
    unhandled_pio: Unhandled,
    unhandled_mmio: Unhandled,
    /// Number of unhandled accesses seen so far, for log rate limiting.
    unhandled_logged: AtomicU64,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (space, base, len, name) in self.ranges() {
            list.entry(&format_args!(
                "{space} [{base:#x}, {:#x}) {name}",
                base.saturating_add(len)
            ));
        }
        list.finish()
    }
}

/// Locks a device, recovering from poisoning (a panicked vCPU thread must not
/// take the others down with it).
fn lock<'a>(dev: &'a Mutex<dyn BusDevice + 'static>) -> MutexGuard<'a, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key of a device's state: `name@space:base`.
fn state_key(name: &str, space: AddressSpace, base: u64) -> String {
    format!("{name}@{space}:{base:#x}")
}

/// Little-endian value of up to the first 8 bytes of `data`, for logging.
fn le_value(data: &[u8]) -> u64 {
    data.iter()
        .take(8)
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

impl Bus {
    /// Creates an empty bus.
    pub fn new() -> Bus {
        Bus::default()
    }

    fn map(&self, space: AddressSpace) -> &BTreeMap<u64, Entry> {
        match space {
            AddressSpace::Pio => &self.pio,
            AddressSpace::Mmio => &self.mmio,
        }
    }

    fn unhandled_counters(&self, space: AddressSpace) -> &Unhandled {
        match space {
            AddressSpace::Pio => &self.unhandled_pio,
            AddressSpace::Mmio => &self.unhandled_mmio,
        }
    }

    /// Inserts `dev` at `[base, base + len)` in `space` under `name`.
    ///
    /// Refuses a zero length, a range whose end overflows 64 bits, and any
    /// overlap with a range already in the same space. The same device may be
    /// inserted at several ranges; each range has its own counters.
    pub fn insert(
        &mut self,
        space: AddressSpace,
        base: u64,
        len: u64,
        name: &str,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength {
                space,
                name: name.to_owned(),
                base,
            });
        }
        let end = base.checked_add(len).ok_or_else(|| BusError::Overflow {
            space,
            name: name.to_owned(),
            base,
            len,
        })?;
        let map = match space {
            AddressSpace::Pio => &mut self.pio,
            AddressSpace::Mmio => &mut self.mmio,
        };
        // Ranges on the bus never overlap, so if any existing range overlaps
        // the new one, the one with the highest base below `end` does.
        if let Some((&ebase, entry)) = map.range(..end).next_back() {
            let eend = entry.end(ebase);
            if eend > base {
                return Err(BusError::Overlap {
                    space,
                    name: name.to_owned(),
                    base,
                    end,
                    existing: entry.name.clone(),
                    existing_base: ebase,
                    existing_end: eend,
                });
            }
        }
        map.insert(
            base,
            Entry {
                len,
                name: name.to_owned(),
                dev,
                reads: AtomicU64::new(0),
                writes: AtomicU64::new(0),
            },
        );
        Ok(())
    }

    /// Finds the range fully containing `[addr, addr + size)`; returns the
    /// entry and the offset of `addr` within it.
    fn lookup(&self, space: AddressSpace, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        let (&base, entry) = self.map(space).range(..=addr).next_back()?;
        let offset = addr - base;
        let size = u64::try_from(size).ok()?;
        let last = offset.checked_add(size)?;
        (offset < entry.len && last <= entry.len).then_some((entry, offset))
    }

    /// Logs an unhandled access, rate limited to the first
    /// [`UNHANDLED_LOG_LIMIT`] accesses.
    fn log_unhandled(&self, space: AddressSpace, addr: u64, write: Option<&[u8]>, size: usize) {
        let n = self.unhandled_logged.fetch_add(1, Ordering::Relaxed);
        if n < UNHANDLED_LOG_LIMIT {
            match write {
                Some(data) => log::debug!(
                    "unhandled {space} write at {addr:#x} size {size} value {:#x}",
                    le_value(data)
                ),
                None => log::debug!("unhandled {space} read at {addr:#x} size {size}"),
            }
        } else if n == UNHANDLED_LOG_LIMIT {
            log::debug!("more than {UNHANDLED_LOG_LIMIT} unhandled accesses; suppressing further messages");
        }
    }

    /// Reads `data.len()` bytes at `addr` in `space`.
    ///
    /// Returns `true` if a device handled the access. Otherwise `data` is
    /// filled with `0xff` (what an empty bus reads as) and `false` is
    /// returned. An access that starts inside a range but runs past its end
    /// is unhandled.
    pub fn read(&self, space: AddressSpace, addr: u64, data: &mut [u8]) -> bool {
        match self.lookup(space, addr, data.len()) {
            Some((entry, offset)) => {
                entry.reads.fetch_add(1, Ordering::Relaxed);
                lock(&entry.dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                self.unhandled_counters(space)
                    .reads
                    .fetch_add(1, Ordering::Relaxed);
                self.log_unhandled(space, addr, None, data.len());
                false
            }
        }
    }

    /// Writes `data` at `addr` in `space`.
    ///
    /// Returns whether a device handled the access and what, if anything, the
    /// device asks of the VM. Unhandled writes are dropped.
    pub fn write(&self, space: AddressSpace, addr: u64, data: &[u8]) -> (bool, Option<VmEvent>) {
        match self.lookup(space, addr, data.len()) {
            Some((entry, offset)) => {
                entry.writes.fetch_add(1, Ordering::Relaxed);
                let event = lock(&entry.dev).write(offset, data);
                (true, event)
            }
            None => {
                self.unhandled_counters(space)
                    .writes
                    .fetch_add(1, Ordering::Relaxed);
                self.log_unhandled(space, addr, Some(data), data.len());
                (false, None)
            }
        }
    }

    /// Access counters of every inserted range, ordered by space then base.
    pub fn stats(&self) -> Vec<DeviceStats> {
        [AddressSpace::Pio, AddressSpace::Mmio]
            .into_iter()
            .flat_map(|space| {
                self.map(space).iter().map(move |(&base, e)| DeviceStats {
                    name: e.name.clone(),
                    space,
                    base,
                    len: e.len,
                    reads: e.reads.load(Ordering::Relaxed),
                    writes: e.writes.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    /// Counts of unhandled accesses per address space.
    pub fn unhandled(&self) -> UnhandledStats {
        UnhandledStats {
            pio_reads: self.unhandled_pio.reads.load(Ordering::Relaxed),
            pio_writes: self.unhandled_pio.writes.load(Ordering::Relaxed),
            mmio_reads: self.unhandled_mmio.reads.load(Ordering::Relaxed),
            mmio_writes: self.unhandled_mmio.writes.load(Ordering::Relaxed),
        }
    }

    /// Each device's state ([`BusDevice::save_state`]), keyed
    /// `name@space:base`; devices without state are absent.
    pub fn save_states(&self) -> BTreeMap<String, DeviceState> {
        let mut out = BTreeMap::new();
        for space in [AddressSpace::Pio, AddressSpace::Mmio] {
            for (&base, e) in self.map(space) {
                if let Some(s) = lock(&e.dev).save_state() {
                    out.insert(state_key(&e.name, space, base), s);
                }
            }
        }
        out
    }

    /// The devices a snapshot would lose: no saved state, and not
    /// [`BusDevice::stateless`] (keyed like [`Bus::save_states`]).
    pub fn unsaved(&self) -> Vec<String> {
        let mut out = Vec::new();
        for space in [AddressSpace::Pio, AddressSpace::Mmio] {
            for (&base, e) in self.map(space) {
                let dev = lock(&e.dev);
                if !dev.stateless() && dev.save_state().is_none() {
                    out.push(state_key(&e.name, space, base));
                }
            }
        }
        out
    }

    /// Loads the states of [`Bus::save_states`]: every device with state
    /// must have one in `states`, and every state must find its device.
    pub fn load_states(&self, states: &BTreeMap<String, DeviceState>) -> Result<(), StateError> {
        let mut used = 0;
        for space in [AddressSpace::Pio, AddressSpace::Mmio] {
            for (&base, e) in self.map(space) {
                let key = state_key(&e.name, space, base);
                let mut dev = lock(&e.dev);
                match states.get(&key) {
                    Some(s) => {
                        dev.load_state(s)
                            .map_err(|err| StateError::Mismatch(format!("device {key}: {err}")))?;
                        used += 1;
                    }
                    None if dev.save_state().is_some() => {
                        return Err(StateError::Mismatch(format!("no state for device {key}")));
                    }
                    None => {}
                }
            }
        }
        if used != states.len() {
            let missing: Vec<&String> = states
                .keys()
                .filter(|k| {
                    !self
                        .ranges()
                        .iter()
                        .any(|(sp, b, _, n)| &&state_key(n, *sp, *b) == k)
                })
                .collect();
            return Err(StateError::Mismatch(format!(
                "state for unknown devices {missing:?}"
            )));
        }
        Ok(())
    }

    /// Every inserted range as `(space, base, len, name)`, ordered by space
    /// then base.
    pub fn ranges(&self) -> Vec<(AddressSpace, u64, u64, String)> {
        [AddressSpace::Pio, AddressSpace::Mmio]
            .into_iter()
            .flat_map(|space| {
                self.map(space)
                    .iter()
                    .map(move |(&base, e)| (space, base, e.len, e.name.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
