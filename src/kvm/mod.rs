//! The host's KVM: open /dev/kvm, check the API version and every capability
//! berth needs (naming the missing one), find the limits, and report them
//! for `berth caps`.

pub mod eventfds;
pub mod irq;
pub mod resample;

use kvm_bindings::CpuId;
use kvm_ioctls::{Cap, Kvm};
use std::fmt::Write as _;

/// The only KVM API version there has ever been.
pub const KVM_API_VERSION: i32 = 12;

/// Host errors (exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// /dev/kvm can't be opened.
    #[error("cannot open /dev/kvm: {0} (is KVM enabled, and may this user use it?)")]
    Open(#[source] kvm_ioctls::Error),
    /// Wrong API version.
    #[error("/dev/kvm reports API version {0}; berth needs {KVM_API_VERSION}")]
    ApiVersion(i32),
    /// A required capability is missing.
    #[error("kvm does not support {name} (KVM_CAP_{cap}), needs Linux >= {since}; required {why}")]
    MissingCap {
        /// Human name.
        name: &'static str,
        /// KVM_CAP_ suffix.
        cap: &'static str,
        /// First Linux version that has it.
        since: &'static str,
        /// What needs it.
        why: &'static str,
    },
    /// Too many vCPUs for this host.
    #[error("machine.vcpus = {want} exceeds this host's KVM limit of {max} vCPUs (KVM_CAP_MAX_VCPUS)")]
    TooManyVcpus {
        /// Requested.
        want: u32,
        /// Host limit.
        max: usize,
    },
    /// A GSI beyond the host's routing table.
    #[error("GSI {gsi} is beyond this host's {max} GSIs (KVM_CAP_IRQ_ROUTING)")]
    TooManyGsis {
        /// Highest GSI the plan routes.
        gsi: u32,
        /// Host count.
        max: u32,
    },
    /// Too many memslots for this host.
    #[error("{want} memory regions exceed this host's KVM limit of {max} memslots (KVM_CAP_NR_MEMSLOTS)")]
    TooManyMemslots {
        /// Requested.
        want: usize,
        /// Host limit.
        max: usize,
    },
    /// Guest memory beyond the host CPU's physical address width.
    #[error(
        "memory region \"{name}\" (memslot {slot}) ends at {end:#x}, beyond this host's {bits}-bit guest physical address space"
    )]
    PhysAddrBits {
        /// The region's name (the plan's: `name`, else `memory<index in the file>`).
        name: String,
        /// Its memslot (regions are slotted in address order, not file order).
        slot: u32,
        /// Its end.
        end: u64,
        /// Host width.
        bits: u32,
    },
}

/// One capability berth knows about.
#[derive(Clone, Copy, Debug)]
pub struct CapInfo {
    /// kvm-ioctls name.
    pub cap: Cap,
    /// KVM_CAP_ suffix.
    pub id: &'static str,
    /// Human name.
    pub name: &'static str,
    /// First Linux version that has it.
    pub since: &'static str,
    /// Whether berth refuses to run without it.
    pub required: bool,
    /// What berth uses it for.
    pub why: &'static str,
}

macro_rules! cap {
    ($cap:ident, $id:literal, $name:literal, $since:literal, $req:literal, $why:literal) => {
        CapInfo {
            cap: Cap::$cap,
            id: $id,
            name: $name,
            since: $since,
            required: $req,
            why: $why,
        }
    };
}

/// Every capability berth uses, in the order they are checked.
pub const CAPS: &[CapInfo] = &[
    cap!(
        UserMemory,
        "USER_MEMORY",
        "user memory regions",
        "2.6.27",
        true,
        "for guest RAM"
    ),
    cap!(
        SetTssAddr,
        "SET_TSS_ADDR",
        "TSS address",
        "2.6.24",
        true,
        "by VMX hosts"
    ),
    cap!(
        SetIdentityMapAddr,
        "SET_IDENTITY_MAP_ADDR",
        "identity map address",
        "2.6.32",
        true,
        "by VMX hosts"
    ),
    cap!(
        Irqchip,
        "IRQCHIP",
        "in-kernel irqchip",
        "2.6.20",
        true,
        "by [irqchip] mode = \"kernel\""
    ),
    cap!(
        Pit2,
        "PIT2",
        "in-kernel PIT",
        "2.6.31",
        true,
        "by [irqchip] pit = true"
    ),
    cap!(
        ExtCpuid,
        "EXT_CPUID",
        "KVM_GET_SUPPORTED_CPUID",
        "2.6.25",
        true,
        "for vCPU CPUID"
    ),
    cap!(Irqfd, "IRQFD", "irqfd", "2.6.32", true, "for device interrupts"),
    cap!(
        Ioeventfd,
        "IOEVENTFD",
        "ioeventfd",
        "2.6.32",
        true,
        "for device doorbells"
    ),
    cap!(
        ImmediateExit,
        "IMMEDIATE_EXIT",
        "immediate_exit",
        "4.13",
        true,
        "to stop vCPUs"
    ),
    cap!(MpState, "MP_STATE", "MP state", "2.6.24", true, "for AP start-up"),
    cap!(
        IrqRouting,
        "IRQ_ROUTING",
        "GSI routing",
        "2.6.30",
        true,
        "for interrupt routes"
    ),
    cap!(
        ReadonlyMem,
        "READONLY_MEM",
        "read-only memslots",
        "3.16",
        false,
        "by memory readonly = true"
    ),
    cap!(
        SignalMsi,
        "SIGNAL_MSI",
        "KVM_SIGNAL_MSI",
        "3.5",
        false,
        "for direct MSI"
    ),
    cap!(
        CoalescedMmio,
        "COALESCED_MMIO",
        "coalesced MMIO",
        "2.6.24",
        false,
        "by [[coalesced_mmio]]"
    ),
    cap!(
        CoalescedPio,
        "COALESCED_PIO",
        "coalesced PIO",
        "4.20",
        false,
        "by [[coalesced_pio]]"
    ),
    cap!(
        SplitIrqchip,
        "SPLIT_IRQCHIP",
        "split irqchip",
        "4.5",
        false,
        "by [irqchip] mode = \"split\""
    ),
    cap!(
        IrqInjectStatus,
        "IRQ_INJECT_STATUS",
        "KVM_IRQ_LINE_STATUS",
        "2.6.25",
        false,
        "for line delivery status in --stats (else plain KVM_IRQ_LINE)"
    ),
];

/// KVM_GET_SUPPORTED_CPUID under way (see
/// [`HostKvm::supported_cpuid_in_background`]).
pub struct SupportedCpuid(Option<std::thread::JoinHandle<Result<CpuId, kvm_ioctls::Error>>>);

impl SupportedCpuid {
    /// The answer: the background thread's, or (when the thread could not be
    /// started or died) asked again here.
    pub fn wait(self, host: &HostKvm) -> Result<CpuId, kvm_ioctls::Error> {
        match self.0.map(|t| t.join()) {
            Some(Ok(answer)) => answer,
            _ => host.kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES),
        }
    }
}

/// Host limits lowered with `--host-limit NAME=N` (to exercise the limit
/// errors on a host whose real limits are above berth's own caps). Each can
/// only lower what the host reports, never raise it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostLimits {
    /// At most this many vCPUs (KVM_CAP_MAX_VCPUS).
    pub vcpus: Option<usize>,
    /// At most this many memslots (KVM_CAP_NR_MEMSLOTS).
    pub memslots: Option<usize>,
    /// At most this many GSIs (KVM_CAP_IRQ_ROUTING).
    pub gsis: Option<u32>,
}

impl HostLimits {
    /// Parses `--host-limit` values: `vcpus=N`, `memslots=N`, `gsis=N`.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut l = HostLimits::default();
        for a in args {
            let bad = || format!("--host-limit {a}: expected vcpus=N, memslots=N or gsis=N");
            let (name, n) = a.split_once('=').ok_or_else(bad)?;
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            match name.trim() {
                "vcpus" => l.vcpus = Some(n as usize),
                "memslots" => l.memslots = Some(n as usize),
                "gsis" => l.gsis = Some(n),
                _ => return Err(bad()),
            }
        }
        Ok(l)
    }
}

/// The opened host KVM.
pub struct HostKvm {
    /// The /dev/kvm handle.
    pub kvm: Kvm,
    /// Capabilities to treat as absent (`--disable-cap`, to exercise fallbacks).
    pub disabled: Vec<Cap>,
    /// Limits to treat as lower than the host's (`--host-limit`).
    pub limits: HostLimits,
}

impl HostKvm {
    /// Opens /dev/kvm and checks the API version.
    pub fn open() -> Result<Self, HostError> {
        let kvm = Kvm::new().map_err(HostError::Open)?;
        let v = kvm.get_api_version();
        if v != KVM_API_VERSION {
            return Err(HostError::ApiVersion(v));
        }
        Ok(HostKvm {
            kvm,
            disabled: Vec::new(),
            limits: HostLimits::default(),
        })
    }

    /// Starts KVM_GET_SUPPORTED_CPUID on a thread of its own (with its own
    /// /dev/kvm handle): it is one of the slowest build steps (~0.4 ms) and
    /// only the vCPUs need its answer, so the build goes on meanwhile.
    pub fn supported_cpuid_in_background(&self) -> SupportedCpuid {
        let spawned = std::thread::Builder::new()
            .name("cpuid".into())
            .spawn(|| Kvm::new()?.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES));
        SupportedCpuid(spawned.ok())
    }

    /// Checks every capability that `needed` says is needed, in table order;
    /// the first missing one is the error.
    pub fn require(&self, needed: impl Fn(&CapInfo) -> bool) -> Result<(), HostError> {
        for c in CAPS.iter().filter(|c| needed(c)) {
            if !self.has(c.cap) {
                return Err(HostError::MissingCap {
                    name: c.name,
                    cap: c.id,
                    since: c.since,
                    why: c.why,
                });
            }
        }
        Ok(())
    }

    /// The vCPU limit, the documented way: KVM_CAP_MAX_VCPUS, else
    /// KVM_CAP_NR_VCPUS, else 4 (kvm-ioctls implements that fallback chain).
    /// `--host-limit vcpus=N` lowers it.
    pub fn max_vcpus(&self) -> usize {
        let host = self.kvm.get_max_vcpus();
        self.limits.vcpus.map_or(host, |n| n.min(host))
    }

    /// The memslot limit (KVM_CAP_NR_MEMSLOTS, else 32); `--host-limit
    /// memslots=N` lowers it.
    pub fn max_memslots(&self) -> usize {
        let host = self.kvm.get_nr_memslots();
        self.limits.memslots.map_or(host, |n| n.min(host))
    }

    /// The GSI count (KVM_CAP_IRQ_ROUTING's value); `--host-limit gsis=N`
    /// lowers it.
    pub fn gsis(&self) -> u32 {
        let host = self.kvm.check_extension_int(Cap::IrqRouting).max(0) as u32;
        self.limits.gsis.map_or(host, |n| n.min(host))
    }

    /// Whether a capability is present.
    pub fn has(&self, cap: Cap) -> bool {
        !self.disabled.contains(&cap) && self.kvm.check_extension(cap)
    }

    /// Treats the named capabilities (`--disable-cap`) as absent (see
    /// [`optional_caps_named`]).
    pub fn disable(&mut self, names: &[String]) -> Result<(), String> {
        self.disabled.extend(optional_caps_named(names)?);
        Ok(())
    }
}

/// The capabilities `names` (KVM_CAP_ suffixes, e.g. `SIGNAL_MSI`, with or
/// without the prefix, any case) name. Only optional ones can be switched
/// off: an unknown or a required name is an error naming the ones that can.
pub fn optional_caps_named(names: &[String]) -> Result<Vec<Cap>, String> {
    let optional = || {
        let names: Vec<&str> = CAPS.iter().filter(|c| !c.required).map(|c| c.id).collect();
        names.join(", ")
    };
    let mut out = Vec::new();
    for n in names {
        let upper = n.to_ascii_uppercase();
        let want = upper.trim_start_matches("KVM_CAP_");
        match CAPS.iter().find(|c| c.id == want) {
            Some(c) if c.required => {
                return Err(format!(
                    "--disable-cap {n}: KVM_CAP_{} is required ({}); berth cannot run without it \
                     (optional capabilities: {})",
                    c.id,
                    c.why,
                    optional()
                ))
            }
            Some(c) => out.push(c.cap),
            None => {
                return Err(format!(
                    "--disable-cap {n}: unknown capability (optional capabilities: {})",
                    optional()
                ))
            }
        }
    }
    Ok(out)
}

/// Guest physical address width the host CPU supports (CPUID 0x80000008 `EAX[7:0]`).
/// Read once per process: under nested virtualization each `cpuid` traps
/// (about 13 µs on the PVM dev host), and every build asks twice.
pub fn host_phys_addr_bits() -> u32 {
    static BITS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *BITS.get_or_init(|| {
        let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
        if max_ext < 0x8000_0008 {
            return 36;
        }
        std::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff
    })
}

/// Whether this host's KVM is the PVM flavour (reported, never acted upon).
pub fn host_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// The `berth caps` report.
pub fn caps_report(host: &HostKvm) -> String {
    let kvm = &host.kvm;
    let mut s = String::new();
    let _ = writeln!(s, "api-version: {}", kvm.get_api_version());
    let _ = writeln!(s, "pvm: {}", if host_is_pvm() { "yes" } else { "no" });
    let _ = writeln!(s, "max-vcpus: {}", kvm.get_max_vcpus());
    let _ = writeln!(s, "nr-vcpus: {}", kvm.get_nr_vcpus());
    let _ = writeln!(s, "max-vcpu-id: {}", kvm.get_max_vcpu_id());
    let _ = writeln!(s, "nr-memslots: {}", kvm.get_nr_memslots());
    let _ = writeln!(s, "phys-addr-bits: {}", host_phys_addr_bits());
    match kvm.get_vcpu_mmap_size() {
        Ok(n) => {
            let _ = writeln!(s, "vcpu-mmap-size: {n}");
        }
        Err(e) => {
            let _ = writeln!(s, "vcpu-mmap-size: error {e}");
        }
    }
    for c in CAPS {
        let v = kvm.check_extension_int(c.cap);
        let _ = writeln!(
            s,
            "cap {:<22} {:<7} value={v:<6} {}{}",
            c.id,
            if v > 0 { "present" } else { "absent" },
            if c.required { "required" } else { "optional" },
            if c.required {
                String::new()
            } else {
                format!(" ({})", c.why)
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_optional_caps_can_be_disabled() {
        assert_eq!(
            optional_caps_named(&names(&["SIGNAL_MSI", "kvm_cap_irq_inject_status"])).unwrap(),
            vec![Cap::SignalMsi, Cap::IrqInjectStatus]
        );
        let e = optional_caps_named(&names(&["IRQFD"])).unwrap_err();
        assert!(
            e.starts_with("--disable-cap IRQFD: KVM_CAP_IRQFD is required (for device interrupts)"),
            "{e}"
        );
        assert!(
            e.contains("optional capabilities: READONLY_MEM, SIGNAL_MSI"),
            "{e}"
        );
        let e = optional_caps_named(&names(&["FROB"])).unwrap_err();
        assert!(e.starts_with("--disable-cap FROB: unknown capability"), "{e}");
    }

    #[test]
    fn host_limits_parse() {
        let l = HostLimits::parse(&names(&["vcpus=1", "memslots=2", "gsis=24"])).unwrap();
        assert_eq!(
            l,
            HostLimits {
                vcpus: Some(1),
                memslots: Some(2),
                gsis: Some(24)
            }
        );
        for bad in ["vcpus", "cpus=1", "gsis=-1", "memslots=x"] {
            let e = HostLimits::parse(&names(&[bad])).unwrap_err();
            assert!(e.starts_with(&format!("--host-limit {bad}: expected")), "{e}");
        }
    }

    #[test]
    fn every_listed_cap_has_a_user() {
        // `berth caps` lists what berth uses: nothing unused stays listed.
        for c in CAPS {
            assert!(!c.why.is_empty(), "{}", c.id);
        }
        for gone in ["SET_GUEST_DEBUG", "TSC_DEADLINE_TIMER", "X2APIC_API"] {
            assert!(CAPS.iter().all(|c| c.id != gone), "{gone} is listed but unused");
        }
    }
}
