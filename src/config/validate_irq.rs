//! Checks of the interrupt fabric in a machine file: irqchip mode, pin and
//! MSI routes, coalesced zones. GSI limits of the host are checked at build.

use super::validate::{check_dest, check_vector, invalid, Invalid};
use super::{Config, FieldPath, IrqChipName, IrqchipMode, Trigger, WindowSpace};
use std::collections::BTreeMap;

/// GSIs below this carry the standard PC pin routes (kernel mode) or are
/// reserved for the IOAPIC's pins (split mode).
pub const PC_GSIS: u32 = 24;

/// Highest GSI a machine file may name (KVM's routing table holds 4096).
pub const MAX_GSI: u32 = 4095;

/// MSI address window.
pub const MSI_ADDR_BASE: u64 = 0xfee0_0000;

pub(super) fn check_irqchip(c: &Config) -> Result<(), Invalid> {
    let ic = &c.machine.irqchip;
    if ic.mode == IrqchipMode::Split && ic.pit == Some(true) {
        return Err(invalid(
            FieldPath::of("irqchip", None, Some("pit")),
            "the in-kernel PIT needs mode = \"kernel\" (split mode has no in-kernel PIC/IOAPIC for it to drive); leave pit out or set it to false".into(),
        ));
    }
    Ok(())
}

/// The standard PC pin routes KVM_CREATE_IRQCHIP installs: GSI n → PIC pin
/// (n < 16) and IOAPIC pin n (n < 24).
pub fn standard_routes() -> Vec<(u32, IrqChipName, u32)> {
    let mut v = Vec::new();
    for gsi in 0..PC_GSIS {
        if gsi < 8 {
            v.push((gsi, IrqChipName::PicMaster, gsi));
        } else if gsi < 16 {
            v.push((gsi, IrqChipName::PicSlave, gsi - 8));
        }
        v.push((gsi, IrqChipName::Ioapic, gsi));
    }
    v
}

pub(super) fn check_routes(c: &Config) -> Result<(), Invalid> {
    let split = c.machine.irqchip.mode == IrqchipMode::Split;
    // GSI → where the file first named it.
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    for (i, r) in c.machine.irq_route.iter().enumerate() {
        let at = |f: &str| FieldPath::of("irq_route", Some(i), Some(f));
        if r.gsi > MAX_GSI {
            return Err(invalid(
                at("gsi"),
                format!("must be at most {MAX_GSI}, got {}", r.gsi),
            ));
        }
        let pins = match r.chip {
            IrqChipName::Ioapic => 24,
            IrqChipName::PicMaster | IrqChipName::PicSlave => 8,
        };
        if r.pin >= pins {
            return Err(invalid(
                at("pin"),
                format!("{:?} has pins 0..{pins}, got {}", r.chip, r.pin),
            ));
        }
        if split && r.chip != IrqChipName::Ioapic {
            return Err(invalid(
                at("chip"),
                "split mode has no PIC; only \"ioapic\" pins can be routed".into(),
            ));
        }
        if let Some(first) = seen.get(&r.gsi) {
            return Err(invalid(
                at("gsi"),
                format!("GSI {} is already routed by {first}", r.gsi),
            ));
        }
        if !split {
            if let Some((_, chip, pin)) = standard_routes()
                .into_iter()
                .find(|(g, ch, _)| *g == r.gsi && *ch == r.chip)
            {
                if pin != r.pin {
                    return Err(invalid(
                        at("pin"),
                        format!(
                            "GSI {} already routes to {chip:?} pin {pin} (standard PC route); KVM allows one pin per chip per GSI",
                            r.gsi
                        ),
                    ));
                }
            }
        } else if r.gsi < PC_GSIS && r.gsi != r.pin {
            return Err(invalid(
                at("gsi"),
                format!(
                    "in split mode GSIs 0..{PC_GSIS} are the IOAPIC's own pins; GSI {} is pin {}",
                    r.gsi, r.gsi
                ),
            ));
        }
        seen.insert(r.gsi, format!("irq_route[{i}]"));
    }
    for (i, m) in c.machine.msi_route.iter().enumerate() {
        let at = |f: &str| FieldPath::of("msi_route", Some(i), Some(f));
        if m.gsi > MAX_GSI {
            return Err(invalid(
                at("gsi"),
                format!("must be at most {MAX_GSI}, got {}", m.gsi),
            ));
        }
        if m.gsi < PC_GSIS {
            return Err(invalid(
                at("gsi"),
                format!(
                    "GSIs 0..{PC_GSIS} carry the {} routes; use GSI {PC_GSIS} or above for MSI",
                    if split { "IOAPIC pin" } else { "standard PC pin" }
                ),
            ));
        }
        if let Some(first) = seen.get(&m.gsi) {
            return Err(invalid(
                at("gsi"),
                format!("GSI {} is already routed by {first}", m.gsi),
            ));
        }
        match (m.dest_apic_id, m.vector, m.address, m.data) {
            (Some(dest), Some(vector), None, None) => {
                check_vector(vector, at("vector"))?;
                check_dest(c, dest, at("dest_apic_id"))?;
            }
            (None, None, Some(address), Some(data)) => {
                if !(MSI_ADDR_BASE..MSI_ADDR_BASE + 0x10_0000).contains(&address) {
                    return Err(invalid(
                        at("address"),
                        format!("an MSI address lies in 0xfee00000..0xfef00000, got {address:#x}"),
                    ));
                }
                check_dest(c, ((address >> 12) & 0xff) as u32, at("address"))?;
                check_vector(data & 0xff, at("data"))?;
                let level = data & (1 << 15) != 0;
                if let Some(t) = m.trigger {
                    if (t == Trigger::Level) != level {
                        return Err(invalid(
                            at("trigger"),
                            format!("disagrees with bit 15 of data {data:#x} (the trigger-mode bit)"),
                        ));
                    }
                }
            }
            _ => {
                return Err(invalid(
                    FieldPath::of("msi_route", Some(i), None),
                    "give either dest_apic_id and vector, or address and data".into(),
                ))
            }
        }
        seen.insert(m.gsi, format!("msi_route[{i}]"));
    }
    Ok(())
}

pub(super) fn check_zones(c: &Config) -> Result<(), Invalid> {
    let m = &c.machine;
    let mut zones: Vec<(WindowSpace, u64, u64, FieldPath)> = Vec::new();
    for (i, z) in m.coalesced_mmio.iter().enumerate() {
        let at = |f: &str| FieldPath::of("coalesced_mmio", Some(i), Some(f));
        let size = z.size.bytes();
        if z.guest_addr % 4 != 0 {
            return Err(invalid(
                at("guest_addr"),
                format!("must be 4-byte aligned, got {:#x}", z.guest_addr),
            ));
        }
        if size == 0
            || size % 4 != 0
            || size > u64::from(u32::MAX)
            || z.guest_addr.checked_add(size).is_none()
        {
            return Err(invalid(
                at("size"),
                format!("must be a non-zero multiple of 4 below 4 GiB, got {size:#x}"),
            ));
        }
        if let Some(r) = m
            .memory
            .iter()
            .find(|r| overlaps(z.guest_addr, size, r.guest_addr, r.size.bytes()))
        {
            return Err(invalid(
                at("guest_addr"),
                format!(
                    "zone lies on RAM at {:#x}: coalescing only applies to MMIO",
                    r.guest_addr
                ),
            ));
        }
        zones.push((
            WindowSpace::Mmio,
            z.guest_addr,
            size,
            FieldPath::of("coalesced_mmio", Some(i), None),
        ));
    }
    for (i, z) in m.coalesced_pio.iter().enumerate() {
        let at = |f: &str| FieldPath::of("coalesced_pio", Some(i), Some(f));
        if z.size == 0 || u64::from(z.port) + u64::from(z.size) > 0x1_0000 {
            return Err(invalid(
                at("size"),
                format!(
                    "ports {:#x} + {} must be non-empty and end by 0xffff",
                    z.port, z.size
                ),
            ));
        }
        zones.push((
            WindowSpace::Pio,
            z.port.into(),
            z.size.into(),
            FieldPath::of("coalesced_pio", Some(i), None),
        ));
    }
    for (n, (space, base, len, path)) in zones.iter().enumerate() {
        if let Some((_, b, l, other)) = zones[..n]
            .iter()
            .find(|(s, b, l, _)| s == space && overlaps(*base, *len, *b, *l))
        {
            return Err(invalid(
                path.clone().key(if *space == WindowSpace::Pio {
                    "port"
                } else {
                    "guest_addr"
                }),
                format!(
                    "zone {base:#x}..{:#x} overlaps {other} {b:#x}..{:#x}",
                    base.saturating_add(*len),
                    b.saturating_add(*l)
                ),
            ));
        }
        let host = m.device.iter().find(|d| {
            d.windows().into_iter().any(|(_, s, b, l, _)| {
                s == *space && b <= *base && base.saturating_add(*len) <= b.saturating_add(l)
            })
        });
        match host {
            Some(d) if d.coalescable() => {}
            Some(d) => {
                return Err(invalid(
                    path.clone().key("size"),
                    format!(
                        "zone {base:#x}..{:#x} lies on a {} device, whose writes must not be delayed; only recorder windows can be coalesced",
                        base.saturating_add(*len),
                        d.kind()
                    ),
                ))
            }
            None => {
                return Err(invalid(
                    path.clone().key("size"),
                    format!("zone {base:#x}..{:#x} does not lie inside one device window that can take its writes (a recorder)", base.saturating_add(*len)),
                ))
            }
        }
    }
    Ok(())
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::parse;
    use super::super::ConfigError;
    use std::path::Path;

    const BASE: &str =
        "[machine]\nvcpus = 2\n[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\n[kernel]\npath = \"@KERNEL@\"\n";

    fn err(extra: &str) -> ConfigError {
        parse(Path::new("x.toml"), &format!("{BASE}{extra}")).unwrap_err()
    }

    fn ok(extra: &str) {
        parse(Path::new("x.toml"), &format!("{BASE}{extra}")).unwrap_or_else(|e| panic!("{e}"));
    }

    const REC: &str = "[[device]]\nkind = \"recorder\"\nguest_addr = 0xd0000000\nsize = \"4KiB\"\n";

    #[test]
    fn split_mode_refuses_pit_and_pic() {
        let e = err("[irqchip]\nmode = \"split\"\npit = true\n");
        assert_eq!(e.field.to_string(), "irqchip.pit");
        ok("[irqchip]\nmode = \"split\"\n");
        ok("[irqchip]\nmode = \"split\"\npit = false\n");
        let e = err("[irqchip]\nmode = \"split\"\npit = false\n[[irq_route]]\ngsi = 30\nchip = \"pic-master\"\npin = 3\n");
        assert_eq!(e.field.to_string(), "irq_route[0].chip");
    }

    #[test]
    fn pin_routes() {
        ok("[[irq_route]]\ngsi = 5\nchip = \"ioapic\"\npin = 5\n");
        ok("[[irq_route]]\ngsi = 40\nchip = \"ioapic\"\npin = 7\n");
        let e = err("[[irq_route]]\ngsi = 5\nchip = \"ioapic\"\npin = 7\n");
        assert!(e.message.contains("standard PC route"), "{e}");
        let e = err("[[irq_route]]\ngsi = 40\nchip = \"ioapic\"\npin = 24\n");
        assert_eq!(e.field.to_string(), "irq_route[0].pin");
        let e = err("[[irq_route]]\ngsi = 40\nchip = \"pic-slave\"\npin = 8\n");
        assert_eq!(e.field.to_string(), "irq_route[0].pin");
        let e = err("[[irq_route]]\ngsi = 5000\nchip = \"ioapic\"\npin = 1\n");
        assert_eq!(e.field.to_string(), "irq_route[0].gsi");
    }

    #[test]
    fn msi_routes() {
        ok("[[msi_route]]\ngsi = 24\ndest_apic_id = 1\nvector = 0x41\n");
        ok("[[msi_route]]\ngsi = 24\naddress = 0xfee01000\ndata = 0x41\n");
        ok("[[msi_route]]\ngsi = 24\naddress = 0xfee01000\ndata = 0xc041\ntrigger = \"level\"\n");
        let e = err("[[msi_route]]\ngsi = 24\naddress = 0xfee01000\ndata = 0x41\ntrigger = \"level\"\n");
        assert_eq!(e.field.to_string(), "msi_route[0].trigger");
        let e = err("[[msi_route]]\ngsi = 24\ndest_apic_id = 2\nvector = 0x41\n");
        assert!(e.message.contains("no vCPU has APIC ID 2"), "{e}");
        for v in ["0x0f", "0xff"] {
            let e = err(&format!(
                "[[msi_route]]\ngsi = 24\ndest_apic_id = 0\nvector = {v}\n"
            ));
            assert_eq!(e.field.to_string(), "msi_route[0].vector");
        }
        let e = err("[[msi_route]]\ngsi = 5\ndest_apic_id = 0\nvector = 0x41\n");
        assert_eq!(e.field.to_string(), "msi_route[0].gsi");
        let e = err("[[msi_route]]\ngsi = 24\ndest_apic_id = 0\n");
        assert!(e.message.contains("either"), "{e}");
        let e = err("[[msi_route]]\ngsi = 24\naddress = 0xfec00000\ndata = 0x41\n");
        assert_eq!(e.field.to_string(), "msi_route[0].address");
    }

    #[test]
    fn duplicate_gsis() {
        let e = err("[[irq_route]]\ngsi = 30\nchip = \"ioapic\"\npin = 3\n[[msi_route]]\ngsi = 30\ndest_apic_id = 0\nvector = 0x41\n");
        assert!(e.message.contains("already routed by irq_route[0]"), "{e}");
        assert_eq!((e.line, e.col), (Some(13), Some(7)), "{e}");
        let e = err("[[msi_route]]\ngsi = 30\ndest_apic_id = 0\nvector = 0x41\n[[msi_route]]\ngsi = 30\ndest_apic_id = 1\nvector = 0x42\n");
        assert_eq!(e.field.to_string(), "msi_route[1].gsi");
    }

    #[test]
    fn zones() {
        ok(&format!(
            "{REC}[[coalesced_mmio]]\nguest_addr = 0xd0000000\nsize = \"4KiB\"\n"
        ));
        let e = err(&format!(
            "{REC}[[coalesced_mmio]]\nguest_addr = 0xd0000002\nsize = 4\n"
        ));
        assert_eq!(e.field.to_string(), "coalesced_mmio[0].guest_addr");
        let e = err(&format!(
            "{REC}[[coalesced_mmio]]\nguest_addr = 0xd0000000\nsize = 6\n"
        ));
        assert_eq!(e.field.to_string(), "coalesced_mmio[0].size");
        let e = err("[[coalesced_mmio]]\nguest_addr = 0x1000\nsize = 4\n");
        assert!(e.message.contains("RAM"), "{e}");
        let e = err("[[coalesced_mmio]]\nguest_addr = 0xd0000000\nsize = 4\n");
        assert!(e.message.contains("does not lie inside"), "{e}");
        let e = err(&format!("{REC}[[coalesced_mmio]]\nguest_addr = 0xd0000000\nsize = 8\n[[coalesced_mmio]]\nguest_addr = 0xd0000004\nsize = 8\n"));
        assert!(e.message.contains("overlaps coalesced_mmio[0]"), "{e}");
        let e = err("[[device]]\nkind = \"debug-exit\"\n[[coalesced_pio]]\nport = 0xf4\nsize = 1\n");
        assert!(e.message.contains("debug-exit"), "{e}");
        ok("[[device]]\nkind = \"recorder\"\nport = 0x80\nsize = 1\n[[coalesced_pio]]\nport = 0x80\nsize = 1\n");
    }

    #[test]
    fn device_windows() {
        let e = err("[[device]]\nkind = \"recorder\"\nguest_addr = 0x1000\nsize = 4\n");
        assert!(e.message.contains("RAM"), "{e}");
        let e = err("[[device]]\nkind = \"recorder\"\nguest_addr = 0xfec00000\nsize = 4\n");
        assert!(e.message.contains("IOAPIC"), "{e}");
        let e = err("[[device]]\nkind = \"recorder\"\nsize = 4\n");
        assert!(e.message.contains("exactly one"), "{e}");
        let e = err(&format!("{REC}[[device]]\nkind = \"doorbell\"\nguest_addr = 0xd0000ffc\nvalue = 1\ndest_apic_id = 0\nvector = 0x50\n"));
        assert!(e.message.contains("collide with device[0] (recorder)"), "{e}");
        let e = err("[[device]]\nkind = \"irq-lines\"\n[[device]]\nkind = \"irq-lines\"\nport = 0x2010\n");
        assert_eq!(e.field.to_string(), "device[1].port");
        let e = err("[[device]]\nkind = \"doorbell\"\nguest_addr = 0xd0000000\nvalue = 1\ndest_apic_id = 9\nvector = 0x50\n");
        assert_eq!(e.field.to_string(), "device[0].dest_apic_id");
    }
}

#[cfg(test)]
mod overflow_tests {
    use super::super::test_support::parse;
    use std::path::Path;

    const BASE: &str = "[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\n[kernel]\npath = \"@KERNEL@\"\n";

    #[test]
    fn huge_zones_are_errors_not_panics() {
        for extra in [
            "[[coalesced_mmio]]\nguest_addr = 0xffff_ffff_ffff_fffc\nsize = 8\n",
            "[[device]]\nkind = \"recorder\"\nguest_addr = 0xd0000000\nsize = 4\n[[coalesced_mmio]]\nguest_addr = 0xffff_ffff_ffff_fffc\nsize = 8\n",
            "[[coalesced_pio]]\nport = 1\nsize = 4294967295\n",
        ] {
            assert!(parse(Path::new("x.toml"), &format!("{BASE}{extra}")).is_err(), "{extra}");
        }
    }
}
