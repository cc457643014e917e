//! The fixed guest-physical layout berth uses for boot structures and the
//! platform windows no RAM may cover. These are constants of the machine
//! model (the same on every host) and every one of them appears in the plan.

/// Global descriptor table for the boot vCPU state.
pub const GDT_ADDR: u64 = 0x500;
/// Interrupt descriptor table (empty) for the boot vCPU state.
pub const IDT_ADDR: u64 = 0x540;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// PVH `hvm_start_info`, or the multiboot information structure.
pub const BOOT_INFO_ADDR: u64 = 0x6000;
/// PVH module list / multiboot module array (after the info structure).
pub const BOOT_MODULES_ADDR: u64 = 0x6100;
/// Multiboot module strings.
pub const BOOT_STRINGS_ADDR: u64 = 0x6200;
/// PVH memory map / multiboot mmap (these protocols have no zero page).
pub const BOOT_MEMMAP_ADDR: u64 = 0x7000;
/// ACPI RSDP (the guest scans 0xe0000..0xfffff); tables follow it.
pub const ACPI_RSDP_ADDR: u64 = super::acpi::RSDP_ADDR;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 of the identity map.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table of the identity map.
pub const PDPTE_ADDR: u64 = 0xa000;
/// Page directory of the identity map (512 × 2 MiB = the first 1 GiB).
pub const PDE_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Room for the command line, including its NUL terminator.
pub const CMDLINE_MAX: u64 = 0x1000;
/// Start of the extended BIOS data area; the e820 RAM map stops here.
pub const EBDA_START: u64 = 0x9fc00;
/// First byte of high memory: a bzImage loads here; the e820 RAM map resumes here.
pub const HIMEM_START: u64 = 0x10_0000;
/// RAM that must exist, starting at 0, for the boot structures.
pub const LOW_RAM_REQUIRED: u64 = HIMEM_START;

/// Interrupt vector bases of the 8259 PICs (master, slave) as a PC BIOS
/// leaves them (IRQ 0–7 → 0x08–0x0f, IRQ 8–15 → 0x70–0x77): what real-mode
/// code and kvm-unit-tests' realmode expect, and what an OS reprograms.
pub const PIC_VECTOR_BASES: (u32, u32) = (0x08, 0x70);

/// I/O APIC MMIO window.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Size of the I/O APIC window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Local APIC MMIO window (the same address on every vCPU).
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// Size of the local APIC window.
pub const LAPIC_SIZE: u64 = 0x1000;
/// KVM's identity-map page (KVM_SET_IDENTITY_MAP_ADDR), below the TSS.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// KVM's three-page TSS area (KVM_SET_TSS_ADDR).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// Size of identity map page + TSS pages.
pub const KVM_PRIVATE_SIZE: u64 = 0x4000;

/// ACPI PM1a event block (4 ports); the PM1a control block is at +4 (2 ports).
pub const ACPI_PM_PORT: u16 = 0x600;
/// ACPI PM1a control block.
pub const ACPI_PM_CNT_PORT: u16 = 0x604;
/// ACPI PM timer (4 ports, FADT PM_TMR_BLK), as in QEMU's PIIX4 (0x608).
pub const ACPI_PM_TMR_PORT: u16 = 0x608;
/// The PC reset control register (FADT RESET_REG).
pub const RESET_PORT: u16 = 0xcf9;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 command/status port.
pub const I8042_CMD_PORT: u16 = 0x64;
/// CMOS/RTC index + data ports.
pub const CMOS_PORT: u16 = 0x70;
/// The RTC's interrupt line (ISA IRQ 8 = GSI 8).
pub const RTC_GSI: u32 = 8;

/// COM1 base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 register count.
pub const COM1_LEN: u16 = 8;
/// COM1 interrupt line (ISA IRQ 4 = GSI 4).
pub const COM1_GSI: u32 = 4;

/// Largest guest-physical address width x86-64 defines.
pub const MAX_PHYS_ADDR_BITS: u32 = 52;

/// A platform window no RAM or device may overlap.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// What lives there.
    pub name: &'static str,
    /// Start address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The MMIO windows owned by the platform.
pub const PLATFORM_WINDOWS: [Window; 3] = [
    Window {
        name: "IOAPIC",
        base: IOAPIC_ADDR,
        len: IOAPIC_SIZE,
    },
    Window {
        name: "LAPIC",
        base: LAPIC_ADDR,
        len: LAPIC_SIZE,
    },
    Window {
        name: "KVM TSS and identity map",
        base: KVM_IDENTITY_MAP_ADDR,
        len: KVM_PRIVATE_SIZE,
    },
];

/// Port ranges owned by the platform (in-kernel PIC/PIT/ELCR and berth's
/// fixed devices); no `[[device]]` may use them. (name, base, length).
pub const PLATFORM_PORTS: [(&str, u16, u16); 9] = [
    ("8259 PIC master", 0x20, 2),
    ("8254 PIT", 0x40, 4),
    ("i8042 data", I8042_DATA_PORT, 1),
    ("i8042 command", I8042_CMD_PORT, 1),
    ("CMOS/RTC", CMOS_PORT, 2),
    ("8259 PIC slave", 0xa0, 2),
    ("COM1", COM1_PORT, COM1_LEN),
    ("8259 ELCR", 0x4d0, 2),
    ("ACPI PM1a / PM timer", ACPI_PM_PORT, 12),
];
