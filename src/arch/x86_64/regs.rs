//! Boot CPU state: GDT, identity-mapped page tables, segment/control
//! registers and general registers for the two entry modes the boot
//! protocols use (64-bit long mode for the Linux protocols, 32-bit flat
//! protected mode with paging off for PVH and multiboot), plus FPU, boot
//! MSRs and the local APIC's LINT pins.

use crate::plan::Plan;
use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors setting up boot CPU state (host errors; exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A KVM register ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which ioctl.
        what: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// KVM set fewer MSRs than asked.
    #[error("KVM_SET_MSRS set {set} of {want} boot MSRs")]
    Msrs {
        /// Set.
        set: usize,
        /// Wanted.
        want: usize,
    },
    /// The plan names an entry mode berth does not know.
    #[error("unknown entry mode \"{0}\" (want \"long-mode\" or \"protected-32\")")]
    EntryMode(String),
    /// Guest memory write failed.
    #[error("cannot write {what} to guest memory: {source}")]
    Memory {
        /// Which structure.
        what: &'static str,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
}

fn kvm<T>(what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, RegsError> {
    r.map_err(|source| RegsError::Kvm { what, source })
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// GDT entries (selector = 8 × index): 0 null, 0x08 64-bit code, 0x10 flat
/// data, 0x18 32-bit TSS (base 0, limit 0x67: a busy 32-bit TSS, which VMX
/// accepts as TR in both modes), 0x20 flat 32-bit code (the protected-mode
/// entry's CS). In long mode a system descriptor is 16 bytes, so entry 4
/// doubles as the TSS's upper half there; TR's hidden state comes from
/// KVM_SET_SREGS and nothing reloads it from this table.
const GDT: [u64; 5] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
    gdt_entry(0xc09b, 0, 0xfffff),
];
/// GDT index of the 64-bit code segment.
const CODE64: u8 = 1;
/// GDT index of the flat data segment.
const DATA: u8 = 2;
/// GDT index of the TSS.
const TSS: u8 = 3;
/// GDT index of the 32-bit code segment.
const CODE32: u8 = 4;

/// Packs flags, base and limit into a descriptor (Intel SDM vol. 3, 3.4.5).
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// Turns a descriptor into the KVM segment it loads.
fn segment(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
    let limit = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
    let g = (entry >> 55) & 1;
    kvm_segment {
        base,
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: g as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

/// Writes the GDT, an empty IDT and the 1 GiB identity map into memory.
pub fn write_tables(plan: &Plan, mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let w = |what, addr: u64, v: u64| {
        mem.write_obj(v, GuestAddress(addr))
            .map_err(|source| RegsError::Memory { what, source })
    };
    let b = &plan.boot;
    // The IDT's one (empty) entry first: should the plan place the IDT
    // inside the GDT, the descriptors win (any interrupt shuts the guest
    // down either way).
    w("IDT", b.idt.0, 0)?;
    for (i, e) in GDT.iter().enumerate() {
        w("GDT", b.gdt.0 + 8 * i as u64, *e)?;
    }
    // PML4[0] → PDPT, PDPT[0] → PD, PD[i] → 2 MiB page i (present, writable, huge).
    w("PML4", b.pml4.0, b.pdpte.0 | 0x03)?;
    w("PDPT", b.pdpte.0, b.pde.0 | 0x03)?;
    let pages = b.identity_mapped.0 >> 21;
    for i in 0..pages {
        w("PD", b.pde.0 + 8 * i, (i << 21) | 0x83)?;
    }
    Ok(())
}

/// Puts the boot vCPU in the plan's entry mode at the kernel's entry point:
/// "long-mode" (paging on with the identity map, rsi = zero page) or
/// "protected-32" (flat 32-bit segments, paging off, eax/ebx from the
/// loader: the PVH start_info or multiboot magic and information).
pub fn setup_bsp(vcpu: &VcpuFd, plan: &Plan, kernel: &crate::boot::LoadedKernel) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = kvm("KVM_GET_SREGS", vcpu.get_sregs())?;
    let regs = boot_state(plan, kernel, &mut sregs)?;
    kvm("KVM_SET_SREGS", vcpu.set_sregs(&sregs))?;
    kvm("KVM_SET_REGS", vcpu.set_regs(&regs))
}

/// The BSP's registers for the plan's entry mode, applied to `sregs` (the
/// vCPU's reset state) and returned as the general registers.
pub fn boot_state(
    plan: &Plan,
    kernel: &crate::boot::LoadedKernel,
    sregs: &mut kvm_sregs,
) -> Result<kvm_regs, RegsError> {
    let b = &plan.boot;
    let data = segment(GDT[DATA as usize], DATA);
    sregs.gdt.base = b.gdt.0;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = b.idt.0;
    sregs.idt.limit = 7;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(GDT[TSS as usize], TSS);
    match b.entry_mode.as_str() {
        "long-mode" => {
            sregs.cs = segment(GDT[CODE64 as usize], CODE64);
            sregs.cr3 = b.pml4.0;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
            Ok(kvm_regs {
                rflags: 0x2,
                rip: kernel.entry,
                rsp: b.stack_pointer.0,
                rbp: b.stack_pointer.0,
                rsi: b
                    .zero_page
                    .map_or(crate::arch::x86_64::layout::ZERO_PAGE_ADDR, |z| z.0),
                ..Default::default()
            })
        }
        "protected-32" => {
            sregs.cs = segment(GDT[CODE32 as usize], CODE32);
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
            let (eax, ebx) = kernel.entry_regs;
            Ok(kvm_regs {
                rflags: 0x2,
                rip: kernel.entry,
                rsp: b.stack_pointer.0,
                rax: u64::from(eax),
                rbx: u64::from(ebx),
                ..Default::default()
            })
        }
        other => Err(RegsError::EntryMode(other.to_string())),
    }
}

/// Power-on FPU state: FCW 0x37f, MXCSR 0x1f80 (every vCPU).
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    kvm("KVM_SET_FPU", vcpu.set_fpu(&fpu))
}

/// MSR indices berth initialises.
mod msr {
    pub const IA32_SYSENTER_CS: u32 = 0x174;
    pub const IA32_SYSENTER_ESP: u32 = 0x175;
    pub const IA32_SYSENTER_EIP: u32 = 0x176;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SYSCALL_MASK: u32 = 0xc000_0084;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const IA32_TSC: u32 = 0x10;
    pub const IA32_MISC_ENABLE: u32 = 0x1a0;
    pub const MISC_ENABLE_FAST_STRING: u64 = 1;
}

/// Boot MSRs (every vCPU): syscall MSRs cleared, TSC 0, fast strings on.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let list = [
        entry(msr::IA32_SYSENTER_CS, 0),
        entry(msr::IA32_SYSENTER_ESP, 0),
        entry(msr::IA32_SYSENTER_EIP, 0),
        entry(msr::STAR, 0),
        entry(msr::CSTAR, 0),
        entry(msr::KERNEL_GS_BASE, 0),
        entry(msr::SYSCALL_MASK, 0),
        entry(msr::LSTAR, 0),
        entry(msr::IA32_TSC, 0),
        entry(msr::IA32_MISC_ENABLE, msr::MISC_ENABLE_FAST_STRING),
    ];
    let msrs = Msrs::from_entries(&list).map_err(|_| RegsError::Msrs {
        set: 0,
        want: list.len(),
    })?;
    let set = kvm("KVM_SET_MSRS", vcpu.set_msrs(&msrs))?;
    if set != list.len() {
        return Err(RegsError::Msrs {
            set,
            want: list.len(),
        });
    }
    Ok(())
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as a PC's BIOS leaves them.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = kvm("KVM_GET_LAPIC", vcpu.get_lapic())?;
    let rd = |regs: &[std::os::raw::c_char], off: usize| {
        u32::from_le_bytes([
            regs[off] as u8,
            regs[off + 1] as u8,
            regs[off + 2] as u8,
            regs[off + 3] as u8,
        ])
    };
    let wr = |regs: &mut [std::os::raw::c_char], off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            regs[off + i] = *b as std::os::raw::c_char;
        }
    };
    let lvt0 = rd(&lapic.regs, APIC_LVT0);
    wr(
        &mut lapic.regs,
        APIC_LVT0,
        set_delivery_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = rd(&lapic.regs, APIC_LVT1);
    wr(&mut lapic.regs, APIC_LVT1, set_delivery_mode(lvt1, APIC_MODE_NMI));
    kvm("KVM_SET_LAPIC", vcpu.set_lapic(&lapic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode() {
        let cs = segment(GDT[1], 1);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.present, cs.type_, cs.s),
            (8, 1, 0, 1, 0xb, 1)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment(GDT[2], 2);
        assert_eq!((ds.selector, ds.l, ds.db, ds.type_), (16, 0, 1, 3));
        assert_eq!(segment(GDT[0], 0).unusable, 1);
        assert_eq!(GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00cf_9300_0000_ffff);
        let c32 = segment(GDT[4], 4);
        assert_eq!(
            (c32.selector, c32.l, c32.db, c32.g, c32.type_, c32.s, c32.present),
            (0x20, 0, 1, 1, 0xb, 1, 1)
        );
        assert_eq!((c32.base, c32.limit), (0, 0xffff_ffff));
        assert_eq!(GDT[4], 0x00cf_9b00_0000_ffff);
        let tr = segment(GDT[3], 3);
        assert_eq!(
            (
                tr.selector,
                tr.base,
                tr.limit,
                tr.type_,
                tr.s,
                tr.g,
                tr.present,
                tr.unusable
            ),
            (0x18, 0, 0x67, 0xb, 0, 0, 1, 0)
        );
    }

    fn plan_for(format: &str) -> (Plan, crate::boot::LoadedKernel) {
        let m = crate::boot::testutil::Machine::new(
            &format!("regs-{format}"),
            &crate::boot::testutil::image_for(format),
            format,
            "64MiB",
            None,
            "x",
        );
        let mem = m.memory();
        let k = crate::boot::load_kernel(&m.config, &m.plan, &mem).unwrap();
        (m.plan.clone(), k)
    }

    fn reset_sregs() -> kvm_sregs {
        kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        }
    }

    #[test]
    fn long_mode_state() {
        let (plan, k) = plan_for("bzimage");
        let mut s = reset_sregs();
        let r = boot_state(&plan, &k, &mut s).unwrap();
        assert_eq!(r.rip, 0x10_0200);
        assert_eq!(r.rsi, 0x7000);
        assert_eq!(r.rflags, 2);
        assert_eq!(
            (s.cs.selector, s.cs.l, s.ds.selector, s.tr.selector),
            (8, 1, 0x10, 0x18)
        );
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_eq!((s.cr3, s.cr4 & X86_CR4_PAE), (plan.boot.pml4.0, X86_CR4_PAE));
        assert_eq!(s.gdt.limit, 39);
    }

    #[test]
    fn protected_mode_state() {
        for (format, eax) in [("pvh", 0), ("multiboot", 0x2bad_b002)] {
            let (plan, k) = plan_for(format);
            let mut s = reset_sregs();
            s.efer = EFER_LME;
            s.cr4 = X86_CR4_PAE;
            let r = boot_state(&plan, &k, &mut s).unwrap();
            assert_eq!(r.rip, k.entry, "{format}");
            assert_eq!((r.rax, r.rbx), (eax, 0x6000), "{format}");
            assert_eq!(r.rflags, 2);
            assert_eq!((s.cs.selector, s.cs.db, s.cs.l), (0x20, 1, 0), "{format}");
            assert_eq!((s.ss.selector, s.ds.db), (0x10, 1));
            assert_eq!((s.tr.selector, s.tr.limit, s.tr.type_), (0x18, 0x67, 0xb));
            assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (X86_CR0_PE | X86_CR0_ET, 0, 0, 0));
        }
    }

    #[test]
    fn delivery_mode() {
        assert_eq!(set_delivery_mode(0x10700, APIC_MODE_NMI), 0x10400);
        assert_eq!(set_delivery_mode(0, APIC_MODE_EXTINT), 0x700);
    }
}
