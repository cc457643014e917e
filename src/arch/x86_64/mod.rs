//! x86-64: guest layout, boot CPU state, CPUID and MSR set-up.

pub mod acpi;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
pub mod tables;
