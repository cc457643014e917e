//! Per-vCPU CPUID: what KVM supports, with each vCPU's APIC ID and topology
//! written in, and the hypervisor bit set.

use kvm_bindings::CpuId;

/// Leaves berth edits.
const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;

/// CPUID.1:ECX hypervisor-present bit.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX HTT (multiple logical processors).
const EDX_HTT: u32 = 1 << 28;

/// Rewrites `cpuid` (from KVM_GET_SUPPORTED_CPUID) for vCPU `apic_id` of a
/// `vcpus`-CPU machine with one thread per core and all cores in one package.
pub fn for_vcpu(cpuid: &mut CpuId, apic_id: u32, vcpus: u32) {
    // Bits needed to number `vcpus` cores.
    let core_bits = 32 - vcpus.saturating_sub(1).leading_zeros();
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors.
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((vcpus.min(255)) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if vcpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26] cores per package - 1.
                e.eax = (e.eax & 0x03ff_ffff) | ((vcpus.saturating_sub(1).min(63)) << 26);
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        // SMT level: one thread per core.
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 0x100;
                    }
                    1 => {
                        // Core level: all vCPUs.
                        e.eax = core_bits;
                        e.ebx = vcpus;
                        e.ecx = 0x200 | 1;
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n;
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn apic_id_and_topology() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xdead_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ];
        let mut c = CpuId::from_entries(&entries).unwrap();
        for_vcpu(&mut c, 3, 4);
        let s = c.as_slice();
        assert_eq!(s[0].ebx >> 24, 3);
        assert_eq!((s[0].ebx >> 16) & 0xff, 4);
        assert_eq!(s[0].ebx & 0xffff, 0x0800);
        assert_ne!(s[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!((s[1].edx, s[1].ebx), (3, 1));
        assert_eq!((s[2].eax, s[2].ebx, s[2].edx), (2, 4, 3));
    }
}
