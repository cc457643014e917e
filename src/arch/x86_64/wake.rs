//! The vCPU state after an ACPI S3 wake-up, as firmware (SeaBIOS under
//! QEMU) leaves it (ACPI 6.4 §4.8.3.3 and §5.2.10):
//!
//! - The BSP starts at the FACS waking vector. With a non-zero
//!   `X_Firmware_Waking_Vector` (FACS version ≥ 1) it enters 32-bit flat
//!   protected mode, paging off, at that address (64-bit wake, `64BIT_WAKE_F`,
//!   is not offered: FACS flags stay 0). Otherwise, with a non-zero
//!   `Firmware_Waking_Vector`, it enters real mode with CS = vector >> 4 and
//!   IP = vector & 0xf. Interrupts are off.
//! - Every AP waits for INIT/SIPI (`KVM_MP_STATE_UNINITIALIZED`).
//!
//! The rest of the vCPU (MSRs, LAPIC, FPU) keeps its state.

use kvm_bindings::{
    kvm_mp_state, kvm_regs, kvm_segment, kvm_sregs, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// FACS offset of `Firmware_Waking_Vector` (u32).
const FACS_WAKING_VECTOR: u64 = 12;
/// FACS offset of `X_Firmware_Waking_Vector` (u64).
const FACS_X_WAKING_VECTOR: u64 = 24;
/// FACS offset of its version byte.
const FACS_VERSION: u64 = 32;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
/// Code segment type: execute/read, accessed.
const TYPE_CODE: u8 = 0xb;
/// Data segment type: read/write, accessed.
const TYPE_DATA: u8 = 0x3;
/// System segment types: LDT, busy 32-bit TSS.
const TYPE_LDT: u8 = 0x2;
const TYPE_TSS: u8 = 0xb;

/// Where the BSP resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeEntry {
    /// Real mode at `cs:ip`.
    RealMode {
        /// Code segment (base = cs << 4).
        cs: u16,
        /// Instruction pointer.
        ip: u16,
    },
    /// 32-bit flat protected mode at `eip`.
    Protected32 {
        /// Entry address.
        eip: u32,
    },
}

/// The BSP's entry from the FACS at `facs`, or `None` when the guest set no
/// waking vector (or the FACS cannot be read).
pub fn waking_entry(mem: &GuestMemoryMmap, facs: u64) -> Option<WakeEntry> {
    let read32 = |off: u64| mem.read_obj::<u32>(GuestAddress(facs.checked_add(off)?)).ok();
    let version = mem
        .read_obj::<u8>(GuestAddress(facs.checked_add(FACS_VERSION)?))
        .ok()?;
    if version >= 1 {
        let x = mem
            .read_obj::<u64>(GuestAddress(facs.checked_add(FACS_X_WAKING_VECTOR)?))
            .ok()?;
        if x != 0 {
            return u32::try_from(x).ok().map(|eip| WakeEntry::Protected32 { eip });
        }
    }
    match read32(FACS_WAKING_VECTOR)? {
        0 => None,
        // A real-mode vector is below 1 MiB; higher bits are dropped.
        v => Some(WakeEntry::RealMode {
            cs: ((v >> 4) & 0xffff) as u16,
            ip: (v & 0xf) as u16,
        }),
    }
}

fn seg(selector: u16, base: u64, limit: u32, type_: u8, s: u8, db: u8, g: u8) -> kvm_segment {
    kvm_segment {
        base,
        limit,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s,
        l: 0,
        g,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// `sregs` and fresh registers for `entry` (other `sregs` fields, such as
/// the APIC base, are kept).
pub fn entry_state(mut sregs: kvm_sregs, entry: WakeEntry) -> (kvm_sregs, kvm_regs) {
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    let (code, data) = match entry {
        WakeEntry::RealMode { cs, ip } => {
            regs.rip = u64::from(ip);
            sregs.cr0 = CR0_ET;
            (
                seg(cs, u64::from(cs) << 4, 0xffff, TYPE_CODE, 1, 0, 0),
                seg(0, 0, 0xffff, TYPE_DATA, 1, 0, 0),
            )
        }
        WakeEntry::Protected32 { eip } => {
            regs.rip = u64::from(eip);
            sregs.cr0 = CR0_PE | CR0_ET;
            (
                seg(0x08, 0, 0xffff_ffff, TYPE_CODE, 1, 1, 1),
                seg(0x10, 0, 0xffff_ffff, TYPE_DATA, 1, 1, 1),
            )
        }
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = seg(0, 0, 0xffff, TYPE_TSS, 0, 0, 0);
    sregs.ldt = seg(0, 0, 0xffff, TYPE_LDT, 0, 0, 0);
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0xffff;
    sregs.idt.base = 0;
    sregs.idt.limit = 0xffff;
    sregs.cr2 = 0;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    (sregs, regs)
}

/// Resets vCPU `fd` after a wake: the BSP to `entry`, an AP to
/// wait-for-SIPI.
pub fn reset_vcpu(fd: &VcpuFd, entry: Option<WakeEntry>) -> Result<(), kvm_ioctls::Error> {
    match entry {
        Some(entry) => {
            let (sregs, regs) = entry_state(fd.get_sregs()?, entry);
            fd.set_sregs(&sregs)?;
            fd.set_regs(&regs)?;
            fd.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
        }
        None => fd.set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_UNINITIALIZED,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_with_facs(version: u8, vector: u32, x_vector: u64) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let facs = 0xe0040;
        mem.write_obj(vector, GuestAddress(facs + FACS_WAKING_VECTOR))
            .unwrap();
        mem.write_obj(x_vector, GuestAddress(facs + FACS_X_WAKING_VECTOR))
            .unwrap();
        mem.write_obj(version, GuestAddress(facs + FACS_VERSION)).unwrap();
        mem
    }

    #[test]
    fn vectors() {
        let m = mem_with_facs(2, 0x1000, 0);
        assert_eq!(
            waking_entry(&m, 0xe0040),
            Some(WakeEntry::RealMode { cs: 0x100, ip: 0 })
        );
        let m = mem_with_facs(2, 0x9_8765, 0);
        assert_eq!(
            waking_entry(&m, 0xe0040),
            Some(WakeEntry::RealMode { cs: 0x9876, ip: 5 })
        );
        let m = mem_with_facs(2, 0x1000, 0x20_0000);
        assert_eq!(
            waking_entry(&m, 0xe0040),
            Some(WakeEntry::Protected32 { eip: 0x20_0000 })
        );
        // Version 0 has no X_ vector.
        let m = mem_with_facs(0, 0x1000, 0x20_0000);
        assert_eq!(
            waking_entry(&m, 0xe0040),
            Some(WakeEntry::RealMode { cs: 0x100, ip: 0 })
        );
        assert_eq!(waking_entry(&mem_with_facs(2, 0, 0), 0xe0040), None);
        assert_eq!(waking_entry(&m, u64::MAX - 4), None);
        let m = mem_with_facs(2, 0, 1 << 40);
        assert_eq!(waking_entry(&m, 0xe0040), None, "above 4 GiB");
    }

    #[test]
    fn real_mode_state() {
        let base = kvm_sregs {
            apic_base: 0xfee0_0900,
            cr0: 0x8000_0011,
            efer: 0x500,
            ..Default::default()
        };
        let (s, r) = entry_state(base, WakeEntry::RealMode { cs: 0x100, ip: 4 });
        assert_eq!((s.cs.selector, s.cs.base, s.cs.limit), (0x100, 0x1000, 0xffff));
        assert_eq!((s.cr0, s.efer, s.cr3, s.cr4), (CR0_ET, 0, 0, 0));
        assert_eq!(s.apic_base, 0xfee0_0900, "kept");
        assert_eq!((r.rip, r.rflags), (4, 2));
        let (s, r) = entry_state(base, WakeEntry::Protected32 { eip: 0x1234 });
        assert_eq!(
            (s.cs.db, s.cs.g, s.cs.limit, s.cr0 & CR0_PE),
            (1, 1, 0xffff_ffff, 1)
        );
        assert_eq!(r.rip, 0x1234);
    }
}
