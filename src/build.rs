//! Build: plan → a ready-to-run VM, in one fixed, documented order (see
//! ARCHITECTURE.md "Boot steps"). Every user and kernel-image error is found
//! before step 7 creates the VM.

use crate::arch::x86_64::{cpuid, layout, regs};
use crate::boot::{self, KernelError, LoadedKernel};
use crate::bus::{AddressSpace, Bus, BusDevice, BusError};
use crate::config::Config;
use crate::devices::{DebugExit, SerialCounters, SerialDevice, SerialOutput};
use crate::kvm::{self, HostError, HostKvm};
use crate::memory::{self, MemoryError};
use crate::plan::{DeviceKind, Plan, Space};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, VcpuFd, VmFd};
use log::debug;
use std::sync::{Arc, Mutex};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Build errors. Kernel errors map to exit code 5, the rest to 3.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Host KVM lacks something.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel image.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Boot CPU state.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// Device windows.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// A device back-end could not be set up.
    #[error("device {name}: {message}")]
    Device {
        /// Device.
        name: String,
        /// What went wrong.
        message: String,
    },
}

fn kvm<T>(what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, BuildError> {
    r.map_err(|source| BuildError::Kvm { what, source })
}

/// A built VM, ready for its first KVM_RUN.
pub struct Vm {
    /// /dev/kvm.
    pub host: HostKvm,
    /// The VM fd.
    pub fd: VmFd,
    /// Guest RAM (outlives the memslots: dropped after `fd`).
    pub mem: GuestMemoryMmap,
    /// All devices.
    pub bus: Arc<Bus>,
    /// vCPU fds, by index.
    pub vcpus: Vec<VcpuFd>,
    /// COM1, for flushing at shutdown.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// COM1 byte counters.
    pub serial_counters: Arc<SerialCounters>,
    /// Eventfds bound to GSIs (kept alive with the VM).
    pub irq_fds: Vec<EventFd>,
    /// Where the kernel went.
    pub kernel: LoadedKernel,
}

/// Builds the VM the plan describes.
pub fn build(config: &Config, plan: &Plan) -> Result<Vm, BuildError> {
    // 1. /dev/kvm and its API version.
    let host = HostKvm::open()?;
    // 2. Capabilities and limits, named when missing; nothing created yet.
    check_host(&host, plan)?;
    // 3. Guest RAM, mapped in this process (no KVM object yet).
    let mem = memory::create(&plan.memslots, |p| config.resolve(p))?;
    // 4. Kernel into RAM: image errors end here, before any VM exists.
    let kernel = boot::load_kernel(&config.resolve(&config.machine.kernel.path), plan, &mem)?;
    // 5. Boot structures: command line, zero page, GDT/IDT, page tables.
    boot::write_boot_structures(plan, &mem)?;
    regs::write_tables(plan, &mem)?;
    // 6. Device back-ends and the bus (serial output opened here).
    let (bus, serial, serial_irq) = build_bus(config, plan)?;
    // 7. KVM_CREATE_VM.
    debug!("build: KVM_CREATE_VM");
    let fd = kvm("KVM_CREATE_VM", host.kvm.create_vm())?;
    // 8. Identity map and TSS: must precede vCPU creation (VMX real-mode support).
    kvm(
        "KVM_SET_IDENTITY_MAP_ADDR",
        fd.set_identity_map_address(plan.boot.kvm_identity_map.0),
    )?;
    kvm(
        "KVM_SET_TSS_ADDR",
        fd.set_tss_address(plan.boot.kvm_tss.0 as usize),
    )?;
    // 9. In-kernel PIC + IOAPIC + LAPICs, and the PIT: before vCPUs, so each
    //    vCPU is created with an in-kernel LAPIC.
    kvm("KVM_CREATE_IRQCHIP", fd.create_irq_chip())?;
    if plan.irqchip.pit {
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        kvm("KVM_CREATE_PIT2", fd.create_pit2(pit))?;
    }
    // 10. Memslots, in plan order.
    memory::register(&fd, &plan.memslots, &mem)?;
    // 11. Device interrupts: COM1's eventfd → its GSI (needs the irqchip).
    let com1_gsi = serial_gsi(plan);
    kvm("KVM_IRQFD (com1)", fd.register_irqfd(&serial_irq, com1_gsi))?;
    // 12. vCPUs: CPUID, MSRs, FPU, LAPIC LINT pins; the BSP gets the boot state.
    let vcpus = create_vcpus(&host, &fd, plan, kernel.entry)?;
    let serial_counters = serial.lock().unwrap_or_else(|e| e.into_inner()).counters();
    Ok(Vm {
        host,
        fd,
        mem,
        bus: Arc::new(bus),
        vcpus,
        serial,
        serial_counters,
        irq_fds: vec![serial_irq],
        kernel,
    })
}

/// Step 2: every capability the plan needs, and the host's limits.
fn check_host(host: &HostKvm, plan: &Plan) -> Result<(), BuildError> {
    let readonly = plan.memslots.iter().any(|s| s.readonly);
    host.require(|c| c.required || (c.cap == Cap::ReadonlyMem && readonly))?;
    let max = host.max_vcpus();
    if plan.machine.vcpus as usize > max {
        return Err(HostError::TooManyVcpus {
            want: plan.machine.vcpus,
            max,
        }
        .into());
    }
    let slots = host.max_memslots();
    if plan.memslots.len() > slots {
        return Err(HostError::TooManyMemslots {
            want: plan.memslots.len(),
            max: slots,
        }
        .into());
    }
    let bits = kvm::host_phys_addr_bits();
    for s in &plan.memslots {
        let end = s.guest_addr.0 + s.size.0;
        if bits < 64 && end > (1u64 << bits) {
            return Err(HostError::PhysAddrBits {
                region: s.slot,
                end,
                bits,
            }
            .into());
        }
    }
    Ok(())
}

fn serial_gsi(plan: &Plan) -> u32 {
    plan.devices
        .iter()
        .find_map(|d| match d.kind {
            DeviceKind::Serial8250 { gsi, .. } => Some(gsi),
            _ => None,
        })
        .unwrap_or(layout::COM1_GSI)
}

type BusParts = (Bus, Arc<Mutex<SerialDevice>>, EventFd);

/// Step 6: back-ends for every planned device, inserted at its window.
fn build_bus(config: &Config, plan: &Plan) -> Result<BusParts, BuildError> {
    let mut bus = Bus::new();
    let dev_err = |name: &str, message: String| BuildError::Device {
        name: name.to_string(),
        message,
    };
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| dev_err("com1", format!("eventfd: {e}")))?;
    let mut serial = None;
    for d in &plan.devices {
        let space = match d.space {
            Space::Pio => AddressSpace::Pio,
            Space::Mmio => AddressSpace::Mmio,
        };
        let dev: Arc<Mutex<dyn BusDevice>> = match &d.kind {
            DeviceKind::Serial8250 { output, .. } => {
                let out = serial_output(config, output).map_err(|m| dev_err(&d.name, m))?;
                let evt = irq
                    .try_clone()
                    .map_err(|e| dev_err(&d.name, format!("eventfd: {e}")))?;
                let s = Arc::new(Mutex::new(SerialDevice::new(out, evt)));
                serial = Some(s.clone());
                s
            }
            DeviceKind::DebugExit { width } => {
                let de = DebugExit::new(*width).map_err(|e| dev_err(&d.name, e.to_string()))?;
                Arc::new(Mutex::new(de))
            }
        };
        bus.insert(space, d.base.0, d.len.0, &d.name, dev)?;
    }
    let serial = serial.ok_or_else(|| dev_err("com1", "the plan has no serial device".into()))?;
    Ok((bus, serial, irq))
}

fn serial_output(config: &Config, output: &str) -> Result<SerialOutput, String> {
    match output {
        "stdout" => Ok(SerialOutput::Stdout),
        "null" => Ok(SerialOutput::Null),
        other => {
            let path = other
                .strip_prefix("file:")
                .ok_or_else(|| format!("unknown serial output {other}"))?;
            let path = config.resolve(std::path::Path::new(path));
            std::fs::File::create(&path)
                .map(SerialOutput::File)
                .map_err(|e| format!("cannot create serial output file {}: {e}", path.display()))
        }
    }
}

/// Step 12.
fn create_vcpus(host: &HostKvm, vm: &VmFd, plan: &Plan, entry: u64) -> Result<Vec<VcpuFd>, BuildError> {
    let supported = kvm(
        "KVM_GET_SUPPORTED_CPUID",
        host.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES),
    )?;
    let mut out = Vec::with_capacity(plan.cpus.len());
    for cpu in &plan.cpus {
        let v = kvm("KVM_CREATE_VCPU", vm.create_vcpu(u64::from(cpu.index)))?;
        let mut c = supported.clone();
        cpuid::for_vcpu(&mut c, cpu.apic_id, plan.machine.vcpus);
        kvm("KVM_SET_CPUID2", v.set_cpuid2(&c))?;
        regs::setup_msrs(&v)?;
        regs::setup_fpu(&v)?;
        regs::setup_lint(&v)?;
        if cpu.bsp {
            regs::setup_bsp(&v, plan, entry)?;
        }
        out.push(v);
    }
    Ok(out)
}
