//! The dirty log: KVM_GET_DIRTY_LOG on every memslot with `dirty_log =
//! true`. Pages KVM reports are kept until a snapshot that includes them is
//! written, so a read for `stats` loses nothing for the next incremental
//! snapshot.

use super::take::Slot;
use super::StateError;
use kvm_ioctls::VmFd;
use std::collections::{BTreeMap, BTreeSet};

/// Dirty pages per slot since the last snapshot.
pub struct DirtyLog {
    slots: Vec<Slot>,
    pending: BTreeMap<u32, BTreeSet<u64>>,
}

/// Page numbers of the set bits of a KVM dirty bitmap (64 pages a word).
pub fn bitmap_pages(bitmap: &[u64]) -> impl Iterator<Item = u64> + '_ {
    bitmap.iter().enumerate().flat_map(|(w, &word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let b = bits.trailing_zeros() as u64;
            bits &= bits - 1;
            Some(w as u64 * 64 + b)
        })
    })
}

/// Reads and resets KVM's dirty log of slot `s`: the pages written since
/// the last read (or since logging was turned on).
pub fn read_slot(fd: &VmFd, s: &Slot) -> Result<Vec<u64>, StateError> {
    let bitmap = fd
        .get_dirty_log(s.slot, s.size as usize)
        .map_err(StateError::kvm(format!("KVM_GET_DIRTY_LOG (slot {})", s.slot)))?;
    Ok(bitmap_pages(&bitmap).collect())
}

impl DirtyLog {
    /// Tracks the slots that have dirty logging on.
    pub fn new(slots: Vec<Slot>) -> DirtyLog {
        DirtyLog {
            slots,
            pending: BTreeMap::new(),
        }
    }

    /// Whether every slot is tracked (an incremental snapshot needs that).
    pub fn tracks_all(&self) -> bool {
        !self.slots.is_empty() && self.slots.iter().all(|s| s.dirty_log)
    }

    fn read(&mut self, fd: &VmFd) -> Result<(), StateError> {
        for s in self.slots.iter().filter(|s| s.dirty_log) {
            let pages = read_slot(fd, s)?;
            self.pending.entry(s.slot).or_default().extend(pages);
        }
        Ok(())
    }

    /// Pages someone else read from KVM's log of `slot` (a migration): kept
    /// for the next incremental snapshot when this log tracks the slot.
    pub fn note(&mut self, slot: u32, pages: &[u64]) {
        if self.slots.iter().any(|s| s.slot == slot && s.dirty_log) {
            self.pending.entry(slot).or_default().extend(pages);
        }
    }

    /// Reads the log; returns every page dirtied since the last committed
    /// snapshot, per tracked slot.
    pub fn collect(&mut self, fd: &VmFd) -> Result<BTreeMap<u32, Vec<u64>>, StateError> {
        self.read(fd)?;
        Ok(self
            .slots
            .iter()
            .filter(|s| s.dirty_log)
            .map(|s| {
                let pages = self
                    .pending
                    .get(&s.slot)
                    .map(|p| p.iter().copied().collect())
                    .unwrap_or_default();
                (s.slot, pages)
            })
            .collect())
    }

    /// A snapshot holding the collected pages was written.
    pub fn commit(&mut self) {
        self.pending.clear();
    }

    /// Dirty page counts per tracked slot (slot, region name, pages),
    /// without losing any.
    pub fn peek(&mut self, fd: &VmFd) -> Vec<(u32, String, u64)> {
        let _ = self.read(fd);
        self.slots
            .iter()
            .filter(|s| s.dirty_log)
            .map(|s| {
                let n = self.pending.get(&s.slot).map_or(0, |p| p.len() as u64);
                (s.slot, s.name.clone(), n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_walk() {
        let pages: Vec<u64> = bitmap_pages(&[0b1001, 0, 1 << 63]).collect();
        assert_eq!(pages, vec![0, 3, 191]);
        assert_eq!(bitmap_pages(&[]).count(), 0);
    }
}
