//! One vCPU's KVM state. Saved on the vCPU's own thread while it is parked
//! (after a KVM_RUN with `immediate_exit` completed any pending I/O), loaded
//! on a fresh vCPU before its thread starts.
//!
//! Save order follows KVM's constraints: MP state first (KVM_GET_MP_STATE
//! delivers pending INIT/SIPI events into the LAPIC), events last.

use super::StateError;
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

/// MSRs read or written per KVM_GET_MSRS / KVM_SET_MSRS call.
const MSR_CHUNK: usize = 64;

/// What the host offers for the optional parts of the state.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct VcpuCaps {
    /// KVM_CAP_XSAVE.
    pub xsave: bool,
    /// KVM_CAP_XCRS.
    pub xcrs: bool,
}

impl VcpuCaps {
    /// This host's.
    pub fn of(kvm: &kvm_ioctls::Kvm) -> VcpuCaps {
        VcpuCaps {
            xsave: kvm.check_extension(kvm_ioctls::Cap::Xsave),
            xcrs: kvm.check_extension(kvm_ioctls::Cap::Xcrs),
        }
    }
}

/// KVM_GET_MSR_INDEX_LIST: the MSRs [`save`] reads (none when KVM does not
/// say).
pub fn msr_indices(kvm: &kvm_ioctls::Kvm) -> Vec<u32> {
    kvm.get_msr_index_list()
        .map(|l| l.as_slice().to_vec())
        .unwrap_or_default()
}

/// One vCPU's state.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// vCPU index.
    pub index: u32,
    /// KVM_GET_CPUID2.
    #[serde(with = "super::hexpod::vec")]
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// KVM_GET_MP_STATE.
    #[serde(with = "super::hexpod")]
    pub mp_state: kvm_mp_state,
    /// KVM_GET_REGS.
    #[serde(with = "super::hexpod")]
    pub regs: kvm_regs,
    /// KVM_GET_SREGS.
    #[serde(with = "super::hexpod")]
    pub sregs: kvm_sregs,
    /// The x87/SSE state as the bytes of a `struct kvm_fpu`: KVM_GET_FPU's,
    /// or, where the host has XSAVE, read from the XSAVE image (which KVM
    /// loads instead; unlike KVM_GET_FPU, which leaves it 0, with MXCSR).
    #[serde(with = "super::hexpod::bytes")]
    pub fpu: Vec<u8>,
    /// KVM_GET_XSAVE, where the host has it.
    #[serde(with = "super::hexpod::option")]
    pub xsave: Option<kvm_xsave>,
    /// KVM_GET_XCRS, where the host has it.
    #[serde(with = "super::hexpod::option")]
    pub xcrs: Option<kvm_xcrs>,
    /// KVM_GET_DEBUGREGS.
    #[serde(with = "super::hexpod")]
    pub debugregs: kvm_debugregs,
    /// KVM_GET_LAPIC.
    #[serde(with = "super::hexpod")]
    pub lapic: kvm_lapic_state,
    /// Every MSR of KVM_GET_MSR_INDEX_LIST that KVM_GET_MSRS could read.
    #[serde(with = "super::hexpod::vec")]
    pub msrs: Vec<kvm_msr_entry>,
    /// KVM_GET_VCPU_EVENTS.
    #[serde(with = "super::hexpod")]
    pub events: kvm_vcpu_events,
}

impl Clone for VcpuState {
    fn clone(&self) -> Self {
        VcpuState {
            index: self.index,
            cpuid: self.cpuid.clone(),
            mp_state: self.mp_state,
            regs: self.regs,
            sregs: self.sregs,
            fpu: self.fpu.clone(),
            // SAFETY: kvm_xsave is plain data (its flexible array member is
            // zero-sized and unused for the legacy 4 KiB layout), so a
            // bitwise copy is a valid, independent value.
            xsave: self.xsave.as_ref().map(|x| unsafe { std::ptr::read(x) }),
            xcrs: self.xcrs,
            debugregs: self.debugregs,
            lapic: self.lapic,
            msrs: self.msrs.clone(),
            events: self.events,
        }
    }
}

/// The x87/SSE state in an XSAVE image's legacy area (the FXSAVE layout:
/// fcw, fsw, abridged ftw, fop, fip, fdp, mxcsr, st0-7, xmm0-15), as the
/// `kvm_fpu` KVM_GET_FPU returns (KVM fills both from the same state; it
/// leaves MXCSR out of KVM_GET_FPU). So a host with XSAVE needs neither
/// KVM_GET_FPU nor KVM_SET_FPU (QEMU uses neither there either): one
/// ioctl less on each side of a migration's downtime.
fn fpu_of_xsave(x: &kvm_xsave) -> kvm_fpu {
    use zerocopy::IntoBytes;
    let b = x.region.as_bytes();
    let at = |o: usize, n: usize| &b[o..o + n];
    let mut f = kvm_fpu::default();
    for (i, st) in f.fpr.iter_mut().enumerate() {
        st.copy_from_slice(at(32 + 16 * i, 16));
    }
    for (i, xmm) in f.xmm.iter_mut().enumerate() {
        xmm.copy_from_slice(at(160 + 16 * i, 16));
    }
    f.fcw = u16::from_le_bytes([b[0], b[1]]);
    f.fsw = u16::from_le_bytes([b[2], b[3]]);
    f.ftwx = b[4];
    f.last_opcode = u16::from_le_bytes([b[6], b[7]]);
    f.last_ip = u64::from_le_bytes(at(8, 8).try_into().unwrap_or_default());
    f.last_dp = u64::from_le_bytes(at(16, 8).try_into().unwrap_or_default());
    f.mxcsr = u32::from_le_bytes(at(24, 4).try_into().unwrap_or_default());
    f
}

fn fpu_bytes(f: &kvm_fpu) -> Vec<u8> {
    // SAFETY: kvm_fpu is a plain repr(C) struct of integers and byte arrays;
    // viewing its storage as bytes for its own size is sound.
    unsafe { std::slice::from_raw_parts(f as *const kvm_fpu as *const u8, std::mem::size_of::<kvm_fpu>()) }
        .to_vec()
}

fn fpu_from(b: &[u8]) -> Result<kvm_fpu, StateError> {
    if b.len() != std::mem::size_of::<kvm_fpu>() {
        return Err(StateError::Mismatch(format!("fpu state of {} bytes", b.len())));
    }
    let mut f = kvm_fpu::default();
    // SAFETY: the lengths are equal (checked above) and every bit pattern is
    // a valid kvm_fpu (integers and byte arrays only).
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), &mut f as *mut kvm_fpu as *mut u8, b.len()) };
    Ok(f)
}

/// The MSRs in `indices` that KVM_GET_MSRS reads, with their values (the
/// ones it refuses are left out).
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, StateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let n = rest.len().min(MSR_CHUNK);
        let entries: Vec<kvm_msr_entry> = rest[..n]
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs =
            Msrs::from_entries(&entries).map_err(|e| StateError::Mismatch(format!("msrs: {e:?}")))?;
        let read = fd.get_msrs(&mut msrs).map_err(StateError::kvm("KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..read]);
        // KVM stops at the first MSR it cannot read: skip that one.
        rest = &rest[if read < n { read + 1 } else { n }..];
    }
    Ok(out)
}

/// Saves vCPU `index`'s state. `msr_indices` is KVM_GET_MSR_INDEX_LIST.
pub fn save(fd: &VcpuFd, index: u32, msr_indices: &[u32], caps: VcpuCaps) -> Result<VcpuState, StateError> {
    let mp_state = fd.get_mp_state().map_err(StateError::kvm("KVM_GET_MP_STATE"))?;
    let regs = fd.get_regs().map_err(StateError::kvm("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(StateError::kvm("KVM_GET_SREGS"))?;
    let xsave = if caps.xsave {
        Some(fd.get_xsave().map_err(StateError::kvm("KVM_GET_XSAVE"))?)
    } else {
        None
    };
    let fpu = fpu_bytes(&match &xsave {
        Some(x) => fpu_of_xsave(x),
        None => fd.get_fpu().map_err(StateError::kvm("KVM_GET_FPU"))?,
    });
    let xcrs = if caps.xcrs {
        Some(fd.get_xcrs().map_err(StateError::kvm("KVM_GET_XCRS"))?)
    } else {
        None
    };
    let debugregs = fd
        .get_debug_regs()
        .map_err(StateError::kvm("KVM_GET_DEBUGREGS"))?;
    let lapic = fd.get_lapic().map_err(StateError::kvm("KVM_GET_LAPIC"))?;
    let msrs = read_msrs(fd, msr_indices)?;
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(StateError::kvm("KVM_GET_CPUID2"))?
        .as_slice()
        .to_vec();
    let events = fd
        .get_vcpu_events()
        .map_err(StateError::kvm("KVM_GET_VCPU_EVENTS"))?;
    Ok(VcpuState {
        index,
        cpuid,
        mp_state,
        regs,
        sregs,
        fpu,
        xsave,
        xcrs,
        debugregs,
        lapic,
        msrs,
        events,
    })
}

/// Sets a vCPU's CPUID (before its first KVM_RUN; KVM takes a new table
/// until then).
pub fn set_cpuid(fd: &VcpuFd, entries: &[kvm_cpuid_entry2]) -> Result<(), StateError> {
    let cpuid = CpuId::from_entries(entries).map_err(|e| StateError::Mismatch(format!("cpuid: {e:?}")))?;
    fd.set_cpuid2(&cpuid).map_err(StateError::kvm("KVM_SET_CPUID2"))
}

/// Whether two CPUID tables are the same, entry by entry and byte by byte.
fn same_cpuid(a: &[kvm_cpuid_entry2], b: &[kvm_cpuid_entry2]) -> bool {
    use zerocopy::IntoBytes;
    a.as_bytes() == b.as_bytes()
}

/// Loads a saved state into a fresh vCPU (before its first KVM_RUN).
///
/// `preset`: the vCPU has a CPUID already, as berth set it on the same VM
/// (a migration target sets the source's before the guest pauses). The
/// rest is then loaded under it, and the saved table, which is KVM's view
/// (with the bits KVM keeps from CR4, XCR0 and the APIC base, and whatever
/// the host's KVM adds), is compared with KVM's view after the load: when
/// they are the same, KVM_SET_CPUID2, the costliest load (about 0.1 ms on
/// the dev host), is saved inside the downtime. When they differ, or the
/// load fails under the preset table, the vCPU is loaded again as without
/// it: the saved CPUID first, then the rest.
pub fn load(fd: &VcpuFd, s: &VcpuState, preset: bool) -> Result<(), StateError> {
    if preset {
        let loaded = load_after_cpuid(fd, s).and_then(|()| {
            fd.get_cpuid2(KVM_MAX_CPUID_ENTRIES)
                .map_err(StateError::kvm("KVM_GET_CPUID2"))
        });
        match loaded {
            Ok(now) if same_cpuid(now.as_slice(), &s.cpuid) => return Ok(()),
            Ok(_) => log::debug!("the preset CPUID is not the saved one: loading it"),
            Err(e) => log::debug!("loading under the preset CPUID failed ({e}): loading the saved one"),
        }
    }
    set_cpuid(fd, &s.cpuid)?;
    load_after_cpuid(fd, s)
}

/// Everything but the CPUID, in KVM's order.
fn load_after_cpuid(fd: &VcpuFd, s: &VcpuState) -> Result<(), StateError> {
    fd.set_mp_state(s.mp_state)
        .map_err(StateError::kvm("KVM_SET_MP_STATE"))?;
    fd.set_regs(&s.regs).map_err(StateError::kvm("KVM_SET_REGS"))?;
    fd.set_sregs(&s.sregs).map_err(StateError::kvm("KVM_SET_SREGS"))?;
    // The XSAVE image holds the FPU state too (`fpu_of_xsave`).
    match &s.xsave {
        // SAFETY: `x` is a whole kvm_xsave (4 KiB), the legacy layout KVM
        // reads when KVM_CAP_XSAVE2 has not been enabled on this VM.
        Some(x) => unsafe { fd.set_xsave(x) }.map_err(StateError::kvm("KVM_SET_XSAVE"))?,
        None => fd
            .set_fpu(&fpu_from(&s.fpu)?)
            .map_err(StateError::kvm("KVM_SET_FPU"))?,
    }
    if let Some(x) = &s.xcrs {
        fd.set_xcrs(x).map_err(StateError::kvm("KVM_SET_XCRS"))?;
    }
    fd.set_debug_regs(&s.debugregs)
        .map_err(StateError::kvm("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&s.lapic).map_err(StateError::kvm("KVM_SET_LAPIC"))?;
    for chunk in s.msrs.chunks(MSR_CHUNK) {
        let msrs = Msrs::from_entries(chunk).map_err(|e| StateError::Mismatch(format!("msrs: {e:?}")))?;
        let n = fd.set_msrs(&msrs).map_err(StateError::kvm("KVM_SET_MSRS"))?;
        if n != chunk.len() {
            return Err(StateError::Mismatch(format!(
                "KVM_SET_MSRS refused MSR {:#x}",
                chunk[n].index
            )));
        }
    }
    fd.set_vcpu_events(&s.events)
        .map_err(StateError::kvm("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fpu_bytes_round_trip() {
        let mut f = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        f.xmm[3][5] = 9;
        let b = fpu_bytes(&f);
        let g = fpu_from(&b).unwrap();
        assert_eq!(g.fcw, 0x37f);
        assert_eq!(g.mxcsr, 0x1f80);
        assert_eq!(g.xmm[3][5], 9);
        assert!(fpu_from(&b[1..]).is_err());
    }

    /// Against KVM: the FPU state read from an XSAVE image is KVM_GET_FPU's
    /// (for a vCPU whose XSAVE header marks x87 and SSE in use, as KVM's own
    /// XSAVE leaves it once the guest used them), and KVM_SET_XSAVE alone
    /// carries it to another vCPU.
    #[test]
    fn xsave_holds_the_fpu_state() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("no /dev/kvm: skipped");
            return;
        };
        assert!(kvm.check_extension(kvm_ioctls::Cap::Xsave), "this host has XSAVE");
        let vm = kvm.create_vm().unwrap();
        let (a, b) = (vm.create_vcpu(0).unwrap(), vm.create_vcpu(1).unwrap());
        // An image with every legacy field set, x87 and SSE marked in use
        // (XSTATE_BV, the first word of the header at byte 512).
        let mut x = a.get_xsave().unwrap();
        {
            use zerocopy::IntoBytes;
            let r = x.region.as_mut_bytes();
            r[0..2].copy_from_slice(&0x27fu16.to_le_bytes());
            r[2..4].copy_from_slice(&0x3800u16.to_le_bytes());
            r[4] = 0x81;
            r[6..8].copy_from_slice(&0x5d9u16.to_le_bytes());
            r[8..16].copy_from_slice(&0x1234_5678_9abcu64.to_le_bytes());
            r[16..24].copy_from_slice(&0xfeed_beef_0042u64.to_le_bytes());
            r[24..28].copy_from_slice(&0x1fa0u32.to_le_bytes());
            for i in 0..8 {
                r[32 + 16 * i..42 + 16 * i].fill(i as u8 + 1);
            }
            for i in 0..16 {
                r[160 + 16 * i..176 + 16 * i].fill(0x40 + i as u8);
            }
            r[512] |= 0b11;
        }
        // SAFETY: `x` came from KVM_GET_XSAVE on this VM (legacy 4 KiB layout).
        unsafe { a.set_xsave(&x) }.unwrap();
        let read = fpu_of_xsave(&a.get_xsave().unwrap());
        assert_eq!(read.xmm[15], [0x4f; 16]);
        assert_eq!(read.fpr[7][..10], [8; 10]);
        assert_eq!(
            (read.fcw, read.ftwx, read.last_dp),
            (0x27f, 0x81, 0xfeed_beef_0042)
        );
        assert_eq!(read.mxcsr, 0x1fa0);
        // KVM_GET_FPU leaves MXCSR out (0); everything else is the same.
        let without_mxcsr = kvm_fpu { mxcsr: 0, ..read };
        assert_eq!(
            fpu_bytes(&without_mxcsr),
            fpu_bytes(&a.get_fpu().unwrap()),
            "KVM_GET_FPU's view"
        );
        // SAFETY: as above.
        unsafe { b.set_xsave(&a.get_xsave().unwrap()) }.unwrap();
        assert_eq!(
            fpu_bytes(&b.get_fpu().unwrap()),
            fpu_bytes(&without_mxcsr),
            "KVM_SET_XSAVE set it"
        );
        assert_eq!(fpu_of_xsave(&b.get_xsave().unwrap()).mxcsr, 0x1fa0);
    }
}
