//! The machine file, schema v1, as serde data only. Validation lives in
//! [`super::validate`]; nothing here looks at the host.

use super::size::Size;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The whole machine file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineFile {
    /// `[machine]`: name and vCPU count.
    #[serde(default)]
    pub machine: MachineSection,
    /// `[[memory]]`: RAM regions, each becomes one memslot.
    #[serde(default)]
    pub memory: Vec<MemoryRegion>,
    /// `[irqchip]`: interrupt controller model.
    #[serde(default)]
    pub irqchip: IrqchipSection,
    /// `[kernel]`: what to boot.
    pub kernel: KernelSection,
    /// `[serial]`: where COM1 output goes.
    #[serde(default)]
    pub serial: SerialSection,
    /// `[[device]]`: extra devices.
    #[serde(default)]
    pub device: Vec<DeviceConfig>,
}

/// `[machine]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MachineSection {
    /// Free-form machine name, shown in the plan.
    #[serde(default)]
    pub name: Option<String>,
    /// Number of vCPUs (1..=254).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
}

fn default_vcpus() -> u32 {
    1
}

impl Default for MachineSection {
    fn default() -> Self {
        MachineSection {
            name: None,
            vcpus: default_vcpus(),
        }
    }
}

/// One `[[memory]]` region.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryRegion {
    /// Optional name, shown in the plan.
    #[serde(default)]
    pub name: Option<String>,
    /// Guest physical start address.
    pub guest_addr: u64,
    /// Size in bytes.
    pub size: Size,
    /// Map read-only (KVM_MEM_READONLY): guest writes exit as MMIO.
    #[serde(default)]
    pub readonly: bool,
    /// Back with a shared mapping (MAP_SHARED) instead of a private one.
    #[serde(default)]
    pub shared: bool,
    /// Back with huge pages (MAP_HUGETLB).
    #[serde(default)]
    pub hugepages: bool,
    /// Enable KVM dirty-page logging on this slot.
    #[serde(default)]
    pub dirty_log: bool,
    /// Back the region with this file (relative to the machine file).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[irqchip]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IrqchipSection {
    /// Which interrupt controllers KVM provides.
    #[serde(default)]
    pub mode: IrqchipMode,
    /// Create the in-kernel i8254 PIT.
    #[serde(default = "yes")]
    pub pit: bool,
}

fn yes() -> bool {
    true
}

impl Default for IrqchipSection {
    fn default() -> Self {
        IrqchipSection {
            mode: IrqchipMode::default(),
            pit: true,
        }
    }
}

/// `[irqchip] mode`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IrqchipMode {
    /// PIC + IOAPIC + LAPIC inside KVM (KVM_CREATE_IRQCHIP).
    #[default]
    Kernel,
}

/// `[kernel]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KernelSection {
    /// Kernel image, relative to the machine file.
    pub path: PathBuf,
    /// Image format; `auto` detects it from the file.
    #[serde(default)]
    pub format: KernelFormat,
    /// Kernel command line, passed verbatim.
    #[serde(default)]
    pub cmdline: String,
}

/// `[kernel] format`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFormat {
    /// Detect from the image's magic numbers.
    #[default]
    Auto,
    /// ELF64 image entered at its 64-bit entry point (Linux 64-bit boot protocol).
    Elf,
}

/// `[serial]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SerialSection {
    /// Where COM1 output goes.
    #[serde(default)]
    pub output: SerialOutputConfig,
}

/// `[serial] output`: `"stdout"`, `"null"` or `{ file = "path" }`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged, expecting = "\"stdout\", \"null\" or { file = \"path\" }")]
pub enum SerialOutputConfig {
    /// A named sink.
    Named(SerialSink),
    /// A file (relative to the machine file), truncated at start.
    File {
        /// Path of the file.
        file: PathBuf,
    },
}

impl Default for SerialOutputConfig {
    fn default() -> Self {
        SerialOutputConfig::Named(SerialSink::Stdout)
    }
}

/// Named serial sinks.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SerialSink {
    /// berth's standard output.
    Stdout,
    /// Discard.
    Null,
}

/// One `[[device]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DeviceConfig {
    /// QEMU isa-debug-exit: a write of v ends the VM with status (v << 1) | 1.
    DebugExit {
        /// I/O port (default 0xf4).
        #[serde(default = "default_debug_exit_port")]
        port: u16,
        /// Port width in bytes: 1, 2 or 4 (default 4).
        #[serde(default = "default_debug_exit_size")]
        size: u8,
    },
}

fn default_debug_exit_port() -> u16 {
    0xf4
}

fn default_debug_exit_size() -> u8 {
    4
}
