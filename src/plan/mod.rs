//! The plan: a pure function from a validated [`Config`] to every address,
//! memslot, APIC ID and device window the VM will have. No host access, no
//! host-derived values: the same machine file gives a byte-identical plan
//! (and digest) on any host. [`dump`] renders it canonically.

pub mod boot;
mod devices;
pub mod dump;
mod fw_cfg;
pub mod irq;

pub use devices::{DeviceKind, DevicePlan, FwCfgItemPlan};
pub use irq::{RoutePlan, RouteTarget, ZonePlan};

use crate::arch::x86_64::{layout, mptable};
use crate::config::{Config, IrqchipMode, KernelFormat, OnReboot, Tables};
use serde::{Serialize, Serializer};
use std::fmt;

/// An address or size, rendered as fixed-width hex in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex(pub u64);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A byte-sized value (vector, MSI data byte), rendered as `0x41`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex8(pub u32);

impl Serialize for Hex8 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#04x}", self.0))
    }
}

/// Version of the plan format; bumped whenever its meaning changes.
pub const PLAN_FORMAT: u32 = 1;

/// The resolved machine.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Plan {
    /// Plan format version.
    pub format: u32,
    /// Machine identity.
    pub machine: MachinePlan,
    /// One entry per vCPU, by index.
    pub cpus: Vec<CpuPlan>,
    /// KVM memslots, numbered in guest address order.
    pub memslots: Vec<MemslotPlan>,
    /// The e820 map handed to the guest.
    pub e820: Vec<E820Entry>,
    /// Interrupt controllers.
    pub irqchip: IrqchipPlan,
    /// Devices on the bus, sorted by address space then base.
    pub devices: Vec<DevicePlan>,
    /// Coalesced MMIO/PIO zones.
    pub coalesced: Vec<ZonePlan>,
    /// What to boot.
    pub kernel: KernelPlan,
    /// Where boot structures go.
    pub boot: BootPlan,
}

/// `[machine]`, resolved.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MachinePlan {
    /// Name (the file's, or "berth").
    pub name: String,
    /// vCPU count.
    pub vcpus: u32,
    /// "acpi", "mptable" or "both".
    pub tables: String,
    /// "exit" or "restart".
    pub on_reboot: String,
    /// Run-time limit in milliseconds (`--timeout` overrides it at run time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// One vCPU.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CpuPlan {
    /// vCPU index (KVM vcpu id).
    pub index: u32,
    /// Initial local APIC ID (also CPUID leaf 1 `EBX[31:24]` and leaf 0xB).
    pub apic_id: u32,
    /// Whether this is the bootstrap processor.
    pub bsp: bool,
}

/// One memslot.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemslotPlan {
    /// KVM slot id.
    pub slot: u32,
    /// Region name.
    pub name: String,
    /// Guest physical start.
    pub guest_addr: Hex,
    /// Size in bytes.
    pub size: Hex,
    /// KVM_MEM_READONLY.
    pub readonly: bool,
    /// MAP_SHARED backing.
    pub shared: bool,
    /// MAP_HUGETLB backing.
    pub hugepages: bool,
    /// KVM_MEM_LOG_DIRTY_PAGES.
    pub dirty_log: bool,
    /// Backing file, as written in the machine file (relative to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// e820 entry types.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum E820Kind {
    /// Usable RAM (type 1).
    Ram,
    /// Reserved (type 2).
    Reserved,
}

impl E820Kind {
    /// The numeric e820 type.
    pub fn code(self) -> u32 {
        match self {
            E820Kind::Ram => 1,
            E820Kind::Reserved => 2,
        }
    }
}

/// One e820 entry.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct E820Entry {
    /// Start.
    pub addr: Hex,
    /// Length.
    pub size: Hex,
    /// Type.
    pub kind: E820Kind,
}

/// Interrupt controllers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IrqchipPlan {
    /// "kernel".
    pub mode: String,
    /// In-kernel PIT.
    pub pit: bool,
    /// IOAPIC MMIO base.
    pub ioapic_addr: Hex,
    /// IOAPIC ID.
    pub ioapic_id: u32,
    /// IOAPIC pins (GSIs 0..pins).
    pub ioapic_pins: u32,
    /// LAPIC MMIO base.
    pub lapic_addr: Hex,
    /// GSIs the routing table spans (highest GSI + 1); the host must have as many.
    pub gsi_count: u32,
    /// Kernel mode: the 8259 PICs' vector bases (master, slave), as a BIOS
    /// leaves them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pic_vector_bases: Option<(Hex8, Hex8)>,
    /// The complete GSI routing table, sorted by GSI.
    pub routes: Vec<RoutePlan>,
}

/// Address spaces of the bus.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Space {
    /// I/O ports.
    Pio,
    /// Memory-mapped I/O.
    Mmio,
}

/// `[kernel]`, resolved.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KernelPlan {
    /// Image path as written (relative to the machine file).
    pub path: String,
    /// Format as written ("auto" is detected at load time).
    pub format: String,
    /// Command line, verbatim.
    pub cmdline: String,
    /// The string the guest receives, when it is not `cmdline`: multiboot
    /// passes `<path> <cmdline>` (QEMU's convention: `argv[0]` first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_cmdline: Option<String>,
}

/// Where an initrd may go: the highest RAM below 4 GiB. The exact address
/// depends on the initrd's size (and a bzImage's initrd_addr_max) and is
/// chosen at build time, top-down, page aligned.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InitrdPlan {
    /// The initrd file as written (relative to the machine file).
    pub path: String,
    /// Lowest address it may start at.
    pub window_start: Hex,
    /// First address past its highest possible end.
    pub window_end: Hex,
}

/// Boot structure placement.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BootPlan {
    /// "linux-64bit" (ELF64), "linux-bzimage", "pvh" or "multiboot".
    pub protocol: String,
    /// "long-mode" or "protected-32".
    pub entry_mode: String,
    /// GDT.
    pub gdt: Hex,
    /// IDT (empty).
    pub idt: Hex,
    /// boot_params / zero page (Linux protocols).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_page: Option<Hex>,
    /// hvm_start_info (PVH) or multiboot_info (multiboot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_info: Option<Hex>,
    /// PVH module list / multiboot module array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules: Option<Hex>,
    /// Multiboot module strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_strings: Option<Hex>,
    /// PVH memory map / multiboot mmap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memmap: Option<Hex>,
    /// Command line.
    pub cmdline: Hex,
    /// Room for the command line including NUL.
    pub cmdline_max: Hex,
    /// PML4 of the identity map.
    pub pml4: Hex,
    /// PDPT of the identity map.
    pub pdpte: Hex,
    /// Page directory of the identity map.
    pub pde: Hex,
    /// Bytes identity-mapped with 2 MiB pages.
    pub identity_mapped: Hex,
    /// Initial rsp of the BSP.
    pub stack_pointer: Hex,
    /// Where a bzImage's protected-mode kernel loads. ELF and multiboot
    /// segments load where they say, anywhere that overlaps nothing above.
    pub kernel_min_addr: Hex,
    /// Initrd placement window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<InitrdPlan>,
    /// MP floating pointer + configuration table, when `tables` includes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mptable: Option<Hex>,
    /// ACPI RSDP, when `tables` includes ACPI (tables follow it up to 0xf0000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acpi_rsdp: Option<Hex>,
    /// ACPI PM1a event block port (PM1a control block is at +4), with ACPI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acpi_pm_port: Option<Hex>,
    /// KVM_SET_TSS_ADDR.
    pub kvm_tss: Hex,
    /// KVM_SET_IDENTITY_MAP_ADDR.
    pub kvm_identity_map: Hex,
}

/// Computes the plan. The config must have passed validation.
pub fn plan(c: &Config) -> Plan {
    let m = &c.machine;
    let vcpus = m.machine.vcpus;
    let cpus = (0..vcpus)
        .map(|i| CpuPlan {
            index: i,
            apic_id: i,
            bsp: i == 0,
        })
        .collect();

    let mut regions: Vec<_> = m.memory.iter().enumerate().collect();
    regions.sort_by_key(|(_, r)| r.guest_addr);
    let memslots: Vec<MemslotPlan> = regions
        .iter()
        .enumerate()
        .map(|(slot, (i, r))| MemslotPlan {
            slot: slot as u32,
            name: r.name.clone().unwrap_or_else(|| format!("memory{i}")),
            guest_addr: Hex(r.guest_addr),
            size: Hex(r.size.bytes()),
            readonly: r.readonly,
            shared: r.shared,
            hugepages: r.hugepages,
            dirty_log: r.dirty_log,
            file: r.file.as_ref().map(|f| f.display().to_string()),
        })
        .collect();
    let e820 = e820_map(&memslots);
    let boot = boot_plan(c, &e820);

    let doorbells = devices::doorbells(c);
    let (routes, doorbell_gsis) = irq::routes(c, &doorbells);
    let devices = devices::windows(c, &memslots, &e820, doorbell_gsis);
    let coalesced = irq::zones(c, &devices);
    let gsi_count = routes.iter().map(|r| r.gsi + 1).max().unwrap_or(0);

    let mut p = Plan {
        format: PLAN_FORMAT,
        machine: MachinePlan {
            name: m.machine.name.clone().unwrap_or_else(|| "berth".into()),
            vcpus,
            tables: match m.machine.tables {
                Tables::Acpi => "acpi",
                Tables::Mptable => "mptable",
                Tables::Both => "both",
            }
            .into(),
            on_reboot: match m.machine.on_reboot {
                OnReboot::Exit => "exit",
                OnReboot::Restart => "restart",
            }
            .into(),
            timeout_ms: m.machine.timeout.map(|t| t.0),
        },
        cpus,
        memslots,
        e820,
        irqchip: IrqchipPlan {
            mode: match m.irqchip.mode {
                IrqchipMode::Kernel => "kernel".into(),
                IrqchipMode::Split => "split".into(),
            },
            pit: m.irqchip.pit(),
            ioapic_addr: Hex(layout::IOAPIC_ADDR),
            ioapic_id: vcpus,
            ioapic_pins: 24,
            lapic_addr: Hex(layout::LAPIC_ADDR),
            gsi_count,
            pic_vector_bases: (m.irqchip.mode == IrqchipMode::Kernel)
                .then_some((Hex8(layout::PIC_VECTOR_BASES.0), Hex8(layout::PIC_VECTOR_BASES.1))),
            routes,
        },
        devices,
        coalesced,
        kernel: KernelPlan {
            path: m.kernel.path.display().to_string(),
            format: c.kernel_format.name().into(),
            cmdline: m.kernel.cmdline.clone(),
            guest_cmdline: (c.kernel_format == KernelFormat::Multiboot)
                .then(|| format!("{} {}", m.kernel.path.display(), m.kernel.cmdline)),
        },
        boot,
    };
    if m.machine.tables.mptable() {
        p.boot.mptable = Some(Hex(mptable::place(&p.mptable_spec())));
    }
    // Structures move out of the image's way; `config::parse` refused
    // images that leave no placement.
    if let Ok(placed) = boot::layout_of(c) {
        boot::apply(&mut p.boot, &placed);
    }
    p
}

/// Boot structure placement for the resolved kernel format.
fn boot_plan(c: &Config, e820: &[E820Entry]) -> BootPlan {
    let m = &c.machine;
    let (protocol, long) = match c.kernel_format {
        KernelFormat::Bzimage => ("linux-bzimage", true),
        KernelFormat::Pvh => ("pvh", false),
        KernelFormat::Multiboot => ("multiboot", false),
        KernelFormat::Elf | KernelFormat::Auto => ("linux-64bit", true),
    };
    let linux = long;
    let initrd = m.kernel.initrd.as_ref().map(|p| {
        // The highest RAM entry below 4 GiB.
        let below = e820
            .iter()
            .filter(|e| e.kind == E820Kind::Ram && e.addr.0 < 1 << 32)
            .max_by_key(|e| e.addr.0);
        let (start, end) = below
            .map(|e| {
                (
                    e.addr.0.max(layout::HIMEM_START),
                    (e.addr.0 + e.size.0).min(1 << 32),
                )
            })
            .unwrap_or((0, 0));
        InitrdPlan {
            path: p.display().to_string(),
            window_start: Hex(start),
            window_end: Hex(end),
        }
    });
    let acpi = m.machine.tables.acpi();
    BootPlan {
        protocol: protocol.into(),
        entry_mode: if long { "long-mode" } else { "protected-32" }.into(),
        gdt: Hex(layout::GDT_ADDR),
        idt: Hex(layout::IDT_ADDR),
        zero_page: linux.then_some(Hex(layout::ZERO_PAGE_ADDR)),
        boot_info: (!linux).then_some(Hex(layout::BOOT_INFO_ADDR)),
        modules: (!linux).then_some(Hex(layout::BOOT_MODULES_ADDR)),
        module_strings: (c.kernel_format == KernelFormat::Multiboot)
            .then_some(Hex(layout::BOOT_STRINGS_ADDR)),
        memmap: (!linux).then_some(Hex(layout::BOOT_MEMMAP_ADDR)),
        cmdline: Hex(layout::CMDLINE_ADDR),
        cmdline_max: Hex(layout::CMDLINE_MAX),
        pml4: Hex(layout::PML4_ADDR),
        pdpte: Hex(layout::PDPTE_ADDR),
        pde: Hex(layout::PDE_ADDR),
        identity_mapped: Hex(1 << 30),
        stack_pointer: Hex(layout::BOOT_STACK_POINTER),
        kernel_min_addr: Hex(layout::HIMEM_START),
        initrd,
        mptable: None,
        acpi_rsdp: acpi.then_some(Hex(layout::ACPI_RSDP_ADDR)),
        acpi_pm_port: acpi.then_some(Hex(layout::ACPI_PM_PORT.into())),
        kvm_tss: Hex(layout::KVM_TSS_ADDR),
        kvm_identity_map: Hex(layout::KVM_IDENTITY_MAP_ADDR),
    }
}

impl Plan {
    /// The MP table this plan describes.
    pub fn mptable_spec(&self) -> mptable::MpTableSpec {
        mptable::MpTableSpec {
            cpus: self.cpus.iter().map(|c| c.apic_id as u8).collect(),
            ioapic_id: self.irqchip.ioapic_id as u8,
            ioapic_addr: self.irqchip.ioapic_addr.0 as u32,
            lapic_addr: self.irqchip.lapic_addr.0 as u32,
            ioapic_pins: self.irqchip.ioapic_pins as u8,
        }
    }
}

/// The e820 map: each writable region is RAM except the legacy hole
/// [EBDA_START, HIMEM_START), which is left out; read-only regions are
/// reserved. Entries are in address order.
fn e820_map(slots: &[MemslotPlan]) -> Vec<E820Entry> {
    let mut out = Vec::new();
    let mut push = |addr: u64, end: u64, kind| {
        if end > addr {
            out.push(E820Entry {
                addr: Hex(addr),
                size: Hex(end - addr),
                kind,
            });
        }
    };
    for s in slots {
        let (start, end) = (s.guest_addr.0, s.guest_addr.0 + s.size.0);
        if s.readonly {
            push(start, end, E820Kind::Reserved);
            continue;
        }
        push(start, end.min(layout::EBDA_START), E820Kind::Ram);
        push(start.max(layout::HIMEM_START), end, E820Kind::Ram);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::parse;
    use std::path::Path;

    fn plan_of(text: &str) -> Plan {
        plan(&parse(Path::new("x.toml"), text).unwrap())
    }

    const BASE: &str = "[machine]\nvcpus = 3\n[[memory]]\nname = \"high\"\nguest_addr = 0x1_0000_0000\nsize = \"1GiB\"\n[[memory]]\nguest_addr = 0\nsize = \"256MiB\"\n[[memory]]\nguest_addr = 0x2000_0000\nsize = \"1MiB\"\nreadonly = true\n[kernel]\npath = \"@KERNEL@\"\ncmdline = \"console=ttyS0\"\n[[device]]\nkind = \"debug-exit\"\n";

    #[test]
    fn memslots_in_address_order() {
        let p = plan_of(BASE);
        let addrs: Vec<u64> = p.memslots.iter().map(|s| s.guest_addr.0).collect();
        assert_eq!(addrs, vec![0, 0x2000_0000, 0x1_0000_0000]);
        let slots: Vec<u32> = p.memslots.iter().map(|s| s.slot).collect();
        assert_eq!(slots, vec![0, 1, 2]);
        assert_eq!(p.memslots[0].name, "memory1");
        assert_eq!(p.memslots[2].name, "high");
    }

    #[test]
    fn e820_skips_legacy_hole_and_reserves_rom() {
        let p = plan_of(BASE);
        let got: Vec<(u64, u64, u32)> = p
            .e820
            .iter()
            .map(|e| (e.addr.0, e.size.0, e.kind.code()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0x9fc00, 1),
                (0x10_0000, (256 << 20) - 0x10_0000, 1),
                (0x2000_0000, 1 << 20, 2),
                (0x1_0000_0000, 1 << 30, 1),
            ]
        );
    }

    #[test]
    fn cpus_and_devices() {
        let p = plan_of(BASE);
        assert_eq!(p.cpus.len(), 3);
        assert!(p.cpus[0].bsp && !p.cpus[1].bsp);
        assert_eq!(p.cpus[2].apic_id, 2);
        assert_eq!(p.irqchip.ioapic_id, 3);
        let names: Vec<&str> = p.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "i8042-data",
                "i8042-command",
                "cmos",
                "debug-exit@0xf4",
                "com1",
                "acpi-pm-event",
                "acpi-pm-control",
                "acpi-pm-timer",
                "reset"
            ]
        );
    }

    #[test]
    fn plan_is_independent_of_region_order_in_file() {
        let a = plan_of(BASE);
        let swapped = BASE.replace("name = \"high\"\n", "");
        let b = plan_of(&swapped);
        assert_eq!(a.e820, b.e820);
    }
}
