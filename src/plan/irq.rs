//! The planned interrupt fabric: the complete GSI routing table (standard PC
//! pin routes, the file's routes, routes devices need), the GSI allocator
//! devices draw from, and the coalesced zones.

use super::{DevicePlan, Hex, Hex8, Space};
use crate::config::{standard_routes, Config, IrqChipName, IrqchipMode, Trigger, MAX_GSI, PC_GSIS};
use serde::Serialize;

/// Where a GSI goes.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RouteTarget {
    /// A pin of an in-kernel interrupt controller.
    Irqchip {
        /// "ioapic", "pic-master" or "pic-slave".
        chip: String,
        /// Input pin.
        pin: u32,
    },
    /// An MSI.
    Msi {
        /// MSI address.
        address: Hex,
        /// MSI data.
        data: Hex,
        /// Destination APIC ID (address bits 19:12).
        dest_apic_id: u32,
        /// Vector (data bits 7:0).
        vector: Hex8,
        /// "edge" or "level" (data bit 15).
        trigger: String,
    },
    /// Split mode: a pin of berth's IOAPIC; its MSI route follows the
    /// redirection entry the guest programs.
    BerthIoapic {
        /// Input pin.
        pin: u32,
    },
}

/// One routing-table entry.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RoutePlan {
    /// The GSI.
    pub gsi: u32,
    /// Where it goes.
    #[serde(flatten)]
    pub target: RouteTarget,
    /// Who asked for it: `pc`, `irq_route[i]`, `msi_route[i]`, `device <name>`.
    pub source: String,
}

/// A coalesced zone.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ZonePlan {
    /// Address space.
    pub space: Space,
    /// Start.
    pub base: Hex,
    /// Length.
    pub len: Hex,
    /// The device whose window holds it.
    pub device: String,
}

/// GSI allocator: a bitmap, lowest free first.
#[derive(Clone, Debug)]
pub struct GsiAllocator {
    bits: Vec<u64>,
    limit: u32,
}

impl GsiAllocator {
    /// GSIs 0..limit are allocatable.
    pub fn new(limit: u32) -> Self {
        GsiAllocator {
            bits: vec![0; (limit as usize).div_ceil(64)],
            limit,
        }
    }

    /// Marks a GSI used.
    pub fn reserve(&mut self, gsi: u32) {
        if gsi < self.limit {
            self.bits[gsi as usize / 64] |= 1 << (gsi % 64);
        }
    }

    /// Marks every GSI at or above `count` used (the host's limit).
    pub fn limit_to(&mut self, count: u32) {
        for g in count..self.limit {
            self.reserve(g);
        }
    }

    /// Whether a GSI is used.
    pub fn is_used(&self, gsi: u32) -> bool {
        gsi >= self.limit || self.bits[gsi as usize / 64] & (1 << (gsi % 64)) != 0
    }

    /// The lowest free GSI, now used.
    pub fn alloc(&mut self) -> Option<u32> {
        for (w, word) in self.bits.iter_mut().enumerate() {
            if *word != u64::MAX {
                let bit = word.trailing_ones();
                let gsi = w as u32 * 64 + bit;
                if gsi >= self.limit {
                    return None;
                }
                *word |= 1 << bit;
                return Some(gsi);
            }
        }
        None
    }

    /// Frees a GSI.
    pub fn release(&mut self, gsi: u32) {
        if gsi < self.limit {
            self.bits[gsi as usize / 64] &= !(1 << (gsi % 64));
        }
    }
}

/// MSI address and data for a destination APIC ID and vector.
pub fn msi_message(dest_apic_id: u32, vector: u32, trigger: Trigger) -> (u64, u32) {
    let address = 0xfee0_0000 | (u64::from(dest_apic_id & 0xff) << 12);
    let level = match trigger {
        Trigger::Edge => 0,
        Trigger::Level => (1 << 15) | (1 << 14),
    };
    (address, (vector & 0xff) | level)
}

fn msi_target(address: u64, data: u32) -> RouteTarget {
    RouteTarget::Msi {
        address: Hex(address),
        data: Hex(data.into()),
        dest_apic_id: ((address >> 12) & 0xff) as u32,
        vector: Hex8(data & 0xff),
        trigger: if data & (1 << 15) != 0 { "level" } else { "edge" }.into(),
    }
}

fn chip_name(c: IrqChipName) -> String {
    match c {
        IrqChipName::Ioapic => "ioapic",
        IrqChipName::PicMaster => "pic-master",
        IrqChipName::PicSlave => "pic-slave",
    }
    .into()
}

/// The full routing table, plus device GSIs handed out from the allocator.
/// `device_routes` are (device name, dest APIC ID, vector) for devices that
/// need an MSI GSI; the returned Vec gives each one's GSI, in order.
pub fn routes(c: &Config, device_routes: &[(String, u32, u32)]) -> (Vec<RoutePlan>, Vec<u32>) {
    let m = &c.machine;
    let split = m.irqchip.mode == IrqchipMode::Split;
    let mut out: Vec<RoutePlan> = Vec::new();
    let mut alloc = GsiAllocator::new(MAX_GSI + 1);
    for gsi in 0..PC_GSIS {
        alloc.reserve(gsi);
    }
    if split {
        for pin in 0..PC_GSIS {
            out.push(RoutePlan {
                gsi: pin,
                target: RouteTarget::BerthIoapic { pin },
                source: "berth-ioapic".into(),
            });
        }
    } else {
        for (gsi, chip, pin) in standard_routes() {
            out.push(RoutePlan {
                gsi,
                target: RouteTarget::Irqchip {
                    chip: chip_name(chip),
                    pin,
                },
                source: "pc".into(),
            });
        }
    }
    for (i, r) in m.irq_route.iter().enumerate() {
        alloc.reserve(r.gsi);
        let target = if split {
            RouteTarget::BerthIoapic { pin: r.pin }
        } else {
            RouteTarget::Irqchip {
                chip: chip_name(r.chip),
                pin: r.pin,
            }
        };
        let src = format!("irq_route[{i}]");
        match out.iter_mut().find(|e| e.gsi == r.gsi && e.target == target) {
            Some(existing) => existing.source = format!("{}, {src}", existing.source),
            None => out.push(RoutePlan {
                gsi: r.gsi,
                target,
                source: src,
            }),
        }
    }
    for (i, r) in m.msi_route.iter().enumerate() {
        alloc.reserve(r.gsi);
        let (address, data) = match (r.dest_apic_id, r.vector, r.address, r.data) {
            (Some(d), Some(v), _, _) => msi_message(d, v, r.trigger.unwrap_or_default()),
            (_, _, Some(a), Some(d)) => (a, d),
            _ => continue, // validation refuses this
        };
        out.push(RoutePlan {
            gsi: r.gsi,
            target: msi_target(address, data),
            source: format!("msi_route[{i}]"),
        });
    }
    let mut gsis = Vec::new();
    for (name, dest, vector) in device_routes {
        let Some(gsi) = alloc.alloc() else { break };
        let (address, data) = msi_message(*dest, *vector, Trigger::Edge);
        out.push(RoutePlan {
            gsi,
            target: msi_target(address, data),
            source: format!("device {name}"),
        });
        gsis.push(gsi);
    }
    out.sort_by_key(|r| (r.gsi, route_rank(&r.target)));
    (out, gsis)
}

fn route_rank(t: &RouteTarget) -> (u8, u32) {
    match t {
        RouteTarget::Irqchip { chip, pin } => (if chip == "ioapic" { 2 } else { 1 }, *pin),
        RouteTarget::BerthIoapic { pin } => (3, *pin),
        RouteTarget::Msi { .. } => (4, 0),
    }
}

/// Coalesced zones with the device each lies in, sorted.
pub fn zones(c: &Config, devices: &[DevicePlan]) -> Vec<ZonePlan> {
    let m = &c.machine;
    let mut out = Vec::new();
    let mut add = |space: Space, base: u64, len: u64| {
        let device = devices
            .iter()
            .find(|d| d.space == space && d.base.0 <= base && base + len <= d.base.0 + d.len.0)
            .map(|d| d.name.clone())
            .unwrap_or_default();
        out.push(ZonePlan {
            space,
            base: Hex(base),
            len: Hex(len),
            device,
        });
    };
    for z in &m.coalesced_mmio {
        add(Space::Mmio, z.guest_addr, z.size.bytes());
    }
    for z in &m.coalesced_pio {
        add(Space::Pio, z.port.into(), z.size.into());
    }
    out.sort_by_key(|z| (z.space, z.base));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_lowest_free_first() {
        let mut a = GsiAllocator::new(130);
        for g in 0..24 {
            a.reserve(g);
        }
        a.reserve(25);
        assert_eq!(a.alloc(), Some(24));
        assert_eq!(a.alloc(), Some(26));
        a.release(24);
        assert_eq!(a.alloc(), Some(24));
        a.limit_to(28);
        assert_eq!(a.alloc(), Some(27));
        assert_eq!(a.alloc(), None);
        assert!(a.is_used(200));
    }

    #[test]
    fn msi_encoding() {
        assert_eq!(msi_message(1, 0x41, Trigger::Edge), (0xfee0_1000, 0x41));
        assert_eq!(msi_message(3, 0x50, Trigger::Level), (0xfee0_3000, 0xc050));
    }
}
