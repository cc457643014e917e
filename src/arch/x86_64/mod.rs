//! x86-64: guest layout, boot CPU state, CPUID and MSR set-up.

pub mod acpi;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
pub mod tables;
pub mod wake;

/// The local APIC ID that addresses every CPU; no CPU may have it.
pub const BROADCAST_APIC_ID: u8 = 0xff;

/// Why a list of local APIC IDs (index 0: the bootstrap processor) cannot
/// describe a machine's CPUs in a firmware table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicIdError {
    /// No CPU at all.
    Empty,
    /// More CPUs than the table can list.
    TooMany {
        /// CPUs listed.
        count: usize,
    },
    /// A CPU uses the broadcast ID 0xff.
    Broadcast {
        /// Its position.
        index: usize,
    },
    /// Two CPUs share an ID.
    Duplicate {
        /// The shared ID.
        id: u8,
        /// Position of the first CPU with it.
        first: usize,
        /// Position of the second.
        second: usize,
    },
}

/// The rules the MP table and the ACPI MADT share for their CPU lists: at
/// least one CPU, at most `max`, none with the broadcast ID 0xff, no two
/// with the same ID. The first broken rule, in list order, is the error.
pub fn check_apic_ids(cpus: &[u8], max: usize) -> Result<(), ApicIdError> {
    if cpus.is_empty() {
        return Err(ApicIdError::Empty);
    }
    if cpus.len() > max {
        return Err(ApicIdError::TooMany { count: cpus.len() });
    }
    let mut seen: [Option<usize>; 256] = [None; 256];
    for (index, &id) in cpus.iter().enumerate() {
        if id == BROADCAST_APIC_ID {
            return Err(ApicIdError::Broadcast { index });
        }
        let slot = &mut seen[usize::from(id)];
        if let Some(first) = *slot {
            return Err(ApicIdError::Duplicate {
                id,
                first,
                second: index,
            });
        }
        *slot = Some(index);
    }
    Ok(())
}
