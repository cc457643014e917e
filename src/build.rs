//! Build: plan → a ready-to-run VM, in one fixed, documented order (see
//! ARCHITECTURE.md "Boot steps"). Every user and kernel-image error is found
//! before step 7 creates the VM.

mod devices;
mod tables;

use crate::arch::x86_64::{cpuid, layout, regs};
use crate::boot::{self, KernelError, LoadedKernel};
use crate::bus::{AddressSpace, Bus, BusError};
use crate::clock::Timeline;
use crate::config::Config;
use crate::devices::boot_timer::BootTimes;
use crate::devices::ioapic::Ioapic;
use crate::devices::recorder::RecorderLog;
use crate::devices::sleep::SleepControl;
use crate::devices::{SerialCounters, SerialDevice, SerialOutput};
use crate::kvm::eventfds::{IoEvent, Registrations};
use crate::kvm::irq::{HostIrq, IrqError, KvmIrq};
use crate::kvm::{self, HostError, HostKvm};
use crate::memory::{self, MemoryError};
use crate::plan::{DeviceKind, Plan, Space};
use crate::ram_loss;
use crate::teardown::{Reaper, Settle};
use devices::build_bus;
use kvm_bindings::{
    kvm_enable_cap, kvm_irqchip, kvm_pit_config, CpuId, KVM_CAP_SPLIT_IRQCHIP, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, IoEventAddress, VcpuFd, VmFd};
use log::debug;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tables::{acpi_facs, write_acpi, write_mptable};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};
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
    /// Interrupt routing.
    #[error(transparent)]
    Irq(#[from] IrqError),
    /// A build option is wrong.
    #[error("{0}")]
    Usage(String),
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

/// A coalesced zone and how many ring entries it produced.
pub struct ZoneCounter {
    /// PIO or MMIO.
    pub space: AddressSpace,
    /// Start.
    pub base: u64,
    /// Length.
    pub len: u64,
    /// Owning device.
    pub device: String,
    /// Ring entries drained for this zone.
    pub entries: AtomicU64,
}

/// A built VM, ready for its first KVM_RUN.
pub struct Vm {
    /// /dev/kvm.
    pub host: HostKvm,
    /// The VM fd (shared with the interrupt code).
    pub fd: Arc<VmFd>,
    /// Guest RAM (outlives the memslots: dropped after `fd`).
    pub mem: GuestMemoryMmap,
    /// All devices.
    pub bus: Arc<Bus>,
    /// vCPU fds, by index.
    pub vcpus: Vec<VcpuFd>,
    /// Each vCPU's CPUID as berth set it (by step 15, or by a restore's
    /// state load; empty until set), by index: a migration sends it ahead.
    pub cpuid: Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>,
    /// COM1, for flushing at shutdown.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// COM1 byte counters.
    pub serial_counters: Arc<SerialCounters>,
    /// irqfds, ioeventfds and coalesced zones, deassigned when dropped.
    pub registrations: Registrations,
    /// Interrupt delivery.
    pub irq: Arc<KvmIrq>,
    /// berth's IOAPIC (split mode).
    pub ioapic: Option<Arc<Mutex<Ioapic>>>,
    /// Recorder logs by device name.
    pub recorders: Vec<(String, Arc<Mutex<RecorderLog>>)>,
    /// The boot timer's record, when the machine has one.
    pub boot_timer: Option<Arc<Mutex<BootTimes>>>,
    /// Doorbell non-matching write counters by device name.
    pub doorbells: Vec<(String, Arc<AtomicU64>)>,
    /// Coalesced zones.
    pub zones: Arc<Vec<ZoneCounter>>,
    /// Where the kernel went (`None`: restored from a snapshot).
    pub kernel: Option<LoadedKernel>,
    /// ACPI S3 state, with ACPI tables.
    pub sleep: Option<Arc<SleepControl>>,
    /// The teardown helper: holds the VM and vCPU fds so that KVM's teardown
    /// runs there, off berth's exit path. Last field: dropped after `fd`.
    pub reaper: Option<Reaper>,
}

/// Build options that are not part of the machine (debugging switches).
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Capabilities to treat as absent (KVM_CAP_ suffixes).
    pub disable_caps: Vec<String>,
    /// Host limits to treat as lower (`--host-limit`).
    pub host_limits: kvm::HostLimits,
}

/// Builds the VM the plan describes.
pub fn build(config: &Config, plan: &Plan, opts: &BuildOptions, tl: &mut Timeline) -> Result<Vm, BuildError> {
    build_from(config, plan, opts, tl, None)
}

/// Builds the VM the plan describes around guest memory restored from a
/// snapshot: steps 3–5 (RAM, kernel, boot structures) and the BSP's entry
/// state are skipped; the caller loads the saved state next
/// ([`crate::state::restore::load`]).
pub fn build_restored(
    config: &Config,
    plan: &Plan,
    opts: &BuildOptions,
    tl: &mut Timeline,
    mem: GuestMemoryMmap,
) -> Result<Vm, BuildError> {
    build_from(config, plan, opts, tl, Some(mem))
}

fn build_from(
    config: &Config,
    plan: &Plan,
    opts: &BuildOptions,
    tl: &mut Timeline,
    restored: Option<GuestMemoryMmap>,
) -> Result<Vm, BuildError> {
    // 1. /dev/kvm and its API version (and capabilities the user switched off).
    let mut host = HostKvm::open()?;
    host.disable(&opts.disable_caps).map_err(BuildError::Usage)?;
    host.limits = opts.host_limits;
    // 2. Capabilities and limits, named when missing; nothing created yet.
    let host_gsis = check_host(&host, plan)?;
    //    The vCPUs' CPUID template is fetched meanwhile (joined in step 15);
    //    a restore loads each vCPU's saved CPUID instead and fetches none.
    let supported_cpuid = restored.is_none().then(|| host.supported_cpuid_in_background());
    tl.mark("1-2 host");
    // 3. Guest RAM, mapped in this process (no KVM object yet); a restore
    //    brings its own, mapped from the snapshot, and skips steps 4–5.
    let (mem, kernel, facs) = match restored {
        Some(mem) => (mem, None, acpi_facs(plan)?),
        None => {
            let mem = memory::create(&plan.memslots, |p| config.resolve(p))?;
            tl.mark("3 ram");
            // 4. Kernel into RAM: image errors end here, before any VM exists.
            let kernel = boot::load_kernel(config, plan, &mem)?;
            tl.mark("4 kernel");
            // 5. Boot structures: command line, the protocol's boot info (zero
            //    page, hvm_start_info or multiboot info), GDT/IDT, page
            //    tables, MP table, ACPI.
            boot::write_boot_structures(plan, &mem, &kernel)?;
            regs::write_tables(plan, &mem)?;
            write_mptable(plan, &mem)?;
            let facs = write_acpi(plan, &mem)?;
            tl.mark("5 boot-structures");
            (mem, Some(kernel), facs)
        }
    };
    //    Lost backing (a truncated file) is reported by region from here on.
    ram_loss::register(&plan.memslots, &mem, |p| config.resolve(p));
    // 6. Device back-ends that depend on the host (serial output file).
    let serial_out = serial_output(config, plan)?;
    // 7. KVM_CREATE_VM.
    debug!("build: KVM_CREATE_VM");
    let fd = Arc::new(kvm("KVM_CREATE_VM", host.kvm.create_vm())?);
    tl.mark("6-7 create-vm");
    // 8. Identity map and TSS: must precede vCPU creation (VMX real-mode support).
    kvm(
        "KVM_SET_IDENTITY_MAP_ADDR",
        fd.set_identity_map_address(plan.boot.kvm_identity_map.0),
    )?;
    kvm(
        "KVM_SET_TSS_ADDR",
        fd.set_tss_address(plan.boot.kvm_tss.0 as usize),
    )?;
    // 9. Memslots, in plan order. Before the irqchip: once an in-kernel
    //    irqchip exists, the first memslot costs milliseconds more on some
    //    hosts (measured: 6–10 ms vs 0.1 ms on PVM); KVM needs no order.
    memory::register(&fd, &plan.memslots, &mem)?;
    tl.mark("8-9 memslots");
    // 10. Interrupt controllers, before vCPUs so each gets an in-kernel LAPIC:
    //     kernel mode = PIC + IOAPIC (+ PIT), split mode = LAPICs only.
    create_irqchip(&fd, plan)?;
    tl.mark("10 irqchip");
    // 11. The GSI routing table, in one KVM_SET_GSI_ROUTING (needs the irqchip).
    let host_irq = HostIrq {
        signal_msi: host.has(Cap::SignalMsi),
        inject_status: host.has(Cap::IrqInjectStatus),
        gsis: host_gsis,
    };
    let irq = Arc::new(KvmIrq::new(fd.clone(), plan, host_irq)?);
    irq.commit()?;
    tl.mark("11 gsi-routing");
    // 12. Devices on the bus (split mode: berth's IOAPIC at its window).
    //     With ACPI, the S3 state the PM1a blocks, the RTC and the vCPUs share.
    let sleep = facs.map(|f| Arc::new(SleepControl::new(plan.cpus.len(), f)));
    //     Every irqfd, ioeventfd and zone from here on (resampled irq-lines
    //     among them) is deassigned again when the VM is torn down.
    let mut registrations = Registrations::new(fd.clone());
    let parts = build_bus(plan, serial_out, &irq, &mem, sleep.as_ref(), &mut registrations)?;
    // 13. irqfds and ioeventfds: COM1 → its GSI; doorbells ring in-kernel.
    bind_eventfds(&mut registrations, plan, &parts.serial_irq)?;
    // 14. Coalesced MMIO/PIO zones (writes queue in the shared ring).
    let zones = register_zones(&mut registrations, plan)?;
    tl.mark("12-14 devices");
    // 15. vCPUs: CPUID, MSRs, FPU, LAPIC LINT pins; the BSP gets the boot
    //     state; each maps the coalesced ring when zones exist.
    //     A restore creates them bare: the saved state sets all of it
    //     (crate::state::restore::load), so nothing here is done twice.
    let (vcpus, cpuid) = match supported_cpuid {
        Some(pending) => {
            let supported = kvm("KVM_GET_SUPPORTED_CPUID", pending.wait(&host))?;
            create_vcpus(&fd, plan, kernel.as_ref(), &supported, !zones.is_empty())?
        }
        None => (
            create_bare_vcpus(&fd, plan, !zones.is_empty())?,
            vec![Vec::new(); plan.cpus.len()],
        ),
    };
    tl.mark("15 vcpus");
    // 16. The teardown helper takes its own reference to the VM and vCPU
    //     fds (after step 15, so it has them all): KVM's teardown then runs
    //     there, not in berth's last close() or exit (teardown.rs). It first
    //     adds and removes a one-page slot, so KVM's one-time wait after the
    //     irqchip passes there while the guest boots (teardown::Settle).
    let settle = settle_slot(&host, plan).and_then(|(slot, guest_addr)| {
        Some(Settle {
            slot,
            guest_addr,
            host_addr: mem.iter().next()?.as_ptr() as u64,
        })
    });
    let reaper = Reaper::spawn(fd.as_raw_fd(), vcpus.iter().map(|v| v.as_raw_fd()), settle)
        .map_err(|e| log::warn!("no teardown helper ({e}); the VM is torn down in-process"))
        .ok();
    tl.mark("16 reaper");
    let serial_counters = parts.serial.lock().unwrap_or_else(|e| e.into_inner()).counters();
    Ok(Vm {
        host,
        fd,
        mem,
        bus: Arc::new(parts.bus),
        vcpus,
        cpuid,
        serial: parts.serial,
        serial_counters,
        registrations,
        irq,
        ioapic: parts.ioapic,
        recorders: parts.recorders,
        boot_timer: parts.boot_timer,
        doorbells: parts.doorbells,
        zones: Arc::new(zones),
        kernel,
        sleep,
        reaper,
    })
}

/// A slot number and address for [`memory::settle_in_background`]: the
/// first slot after the plan's, if the host has one, and an address above
/// everything the plan maps.
fn settle_slot(host: &HostKvm, plan: &Plan) -> Option<(u32, u64)> {
    let slot = plan.memslots.iter().map(|s| s.slot + 1).max().unwrap_or(0);
    if slot as usize >= host.max_memslots() {
        return None;
    }
    Some((slot, memory::settle_address(plan, kvm::host_phys_addr_bits())?))
}

/// Step 2: every capability the plan needs, and the host's limits; returns
/// the host's GSI count (KVM_CAP_IRQ_ROUTING).
fn check_host(host: &HostKvm, plan: &Plan) -> Result<u32, BuildError> {
    let readonly = plan.memslots.iter().any(|s| s.readonly);
    let split = plan.irqchip.mode == "split";
    let mmio_zones = plan.coalesced.iter().any(|z| z.space == Space::Mmio);
    let pio_zones = plan.coalesced.iter().any(|z| z.space == Space::Pio);
    host.require(|c| match c.cap {
        Cap::ReadonlyMem => readonly,
        Cap::SplitIrqchip => split,
        Cap::CoalescedMmio => mmio_zones || pio_zones,
        Cap::CoalescedPio => pio_zones,
        Cap::Irqchip => !split,
        Cap::Pit2 => !split && plan.irqchip.pit,
        _ => c.required,
    })?;
    let host_gsis = host.gsis();
    if plan.irqchip.gsi_count > host_gsis {
        let worst = plan.irqchip.routes.iter().map(|r| r.gsi).max().unwrap_or(0);
        return Err(HostError::TooManyGsis {
            gsi: worst,
            max: host_gsis,
        }
        .into());
    }
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
                name: s.name.clone(),
                slot: s.slot,
                end,
                bits,
            }
            .into());
        }
    }
    Ok(host_gsis)
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

/// Step 6: the serial back-end (opening a file can fail on user input).
fn serial_output(config: &Config, plan: &Plan) -> Result<SerialOutput, BuildError> {
    let output = plan
        .devices
        .iter()
        .find_map(|d| match &d.kind {
            DeviceKind::Serial8250 { output, .. } => Some(output.as_str()),
            _ => None,
        })
        .unwrap_or("stdout");
    let err = |message: String| BuildError::Device {
        name: "com1".into(),
        message,
    };
    match output {
        "stdout" => Ok(SerialOutput::Stdout),
        "null" => Ok(SerialOutput::Null),
        other => {
            let path = other
                .strip_prefix("file:")
                .ok_or_else(|| err(format!("unknown serial output {other}")))?;
            let path = config.resolve(std::path::Path::new(path));
            std::fs::File::create(&path).map(SerialOutput::File).map_err(|e| {
                err(format!(
                    "cannot create serial output file {}: {e}",
                    path.display()
                ))
            })
        }
    }
}

/// Step 9.
fn create_irqchip(fd: &VmFd, plan: &Plan) -> Result<(), BuildError> {
    if plan.irqchip.mode == "split" {
        let mut cap = kvm_enable_cap {
            cap: KVM_CAP_SPLIT_IRQCHIP,
            ..Default::default()
        };
        cap.args[0] = u64::from(plan.irqchip.ioapic_pins);
        return kvm("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)", fd.enable_cap(&cap));
    }
    kvm("KVM_CREATE_IRQCHIP", fd.create_irq_chip())?;
    //     The 8259s as a BIOS leaves them: initialised, with the plan's vector
    //     bases (KVM creates them with base 0); all else stays KVM's reset state.
    if let Some((master, slave)) = plan.irqchip.pic_vector_bases {
        for (chip, base) in [
            (KVM_IRQCHIP_PIC_MASTER, master.0),
            (KVM_IRQCHIP_PIC_SLAVE, slave.0),
        ] {
            let mut state = kvm_irqchip {
                chip_id: chip,
                ..Default::default()
            };
            kvm("KVM_GET_IRQCHIP", fd.get_irqchip(&mut state))?;
            // `chip_id` selects the union's PIC member, just filled by KVM.
            state.chip.pic.irq_base = base as u8;
            kvm("KVM_SET_IRQCHIP", fd.set_irqchip(&state))?;
        }
    }
    if plan.irqchip.pit {
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        kvm("KVM_CREATE_PIT2", fd.create_pit2(pit))?;
    }
    Ok(())
}

/// Step 13: COM1's irqfd, and each doorbell's eventfd as both ioeventfd
/// (datamatch on its value, or any value) and irqfd (its planned GSI).
fn bind_eventfds(regs: &mut Registrations, plan: &Plan, serial_irq: &EventFd) -> Result<(), BuildError> {
    let evt = |name: &str, r: std::io::Result<EventFd>| {
        r.map_err(|e| BuildError::Device {
            name: name.to_string(),
            message: format!("eventfd: {e}"),
        })
    };
    kvm(
        "KVM_IRQFD (com1)",
        regs.irqfd(evt("com1", serial_irq.try_clone())?, serial_gsi(plan)),
    )?;
    for d in &plan.devices {
        if let DeviceKind::Doorbell { value, gsi, .. } = &d.kind {
            let ring = evt(&d.name, EventFd::new(libc::EFD_NONBLOCK))?;
            let at = IoEvent {
                addr: io_event_address(d.space, d.base.0),
                len: d.len.0 as u32,
                datamatch: value.map(|v| v.0),
            };
            kvm(
                "KVM_IRQFD (doorbell)",
                regs.irqfd(evt(&d.name, ring.try_clone())?, *gsi),
            )?;
            kvm("KVM_IOEVENTFD (doorbell)", regs.ioeventfd(ring, at))?;
        }
    }
    Ok(())
}

fn io_event_address(space: Space, base: u64) -> IoEventAddress {
    match space {
        Space::Mmio => IoEventAddress::Mmio(base),
        Space::Pio => IoEventAddress::Pio(base),
    }
}

/// Step 14.
fn register_zones(regs: &mut Registrations, plan: &Plan) -> Result<Vec<ZoneCounter>, BuildError> {
    let mut out = Vec::new();
    for z in &plan.coalesced {
        kvm(
            "KVM_REGISTER_COALESCED_MMIO",
            regs.zone(io_event_address(z.space, z.base.0), z.len.0 as u32),
        )?;
        out.push(ZoneCounter {
            space: match z.space {
                Space::Mmio => AddressSpace::Mmio,
                Space::Pio => AddressSpace::Pio,
            },
            base: z.base.0,
            len: z.len.0,
            device: z.device.clone(),
            entries: AtomicU64::new(0),
        });
    }
    Ok(out)
}

/// Step 15 for a restore: the vCPUs (and their coalesced ring mappings)
/// without any state; the snapshot's is loaded next.
fn create_bare_vcpus(vm: &VmFd, plan: &Plan, coalesced: bool) -> Result<Vec<VcpuFd>, BuildError> {
    let mut out = Vec::with_capacity(plan.cpus.len());
    for cpu in &plan.cpus {
        let mut v = kvm("KVM_CREATE_VCPU", vm.create_vcpu(u64::from(cpu.index)))?;
        if coalesced {
            kvm("mmap of the coalesced MMIO ring", v.map_coalesced_mmio_ring())?;
        }
        out.push(v);
    }
    Ok(out)
}

/// Step 15.
fn create_vcpus(
    vm: &VmFd,
    plan: &Plan,
    kernel: Option<&LoadedKernel>,
    supported: &CpuId,
    coalesced: bool,
) -> Result<(Vec<VcpuFd>, Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>), BuildError> {
    let mut out = Vec::with_capacity(plan.cpus.len());
    let mut cpuids = Vec::with_capacity(plan.cpus.len());
    for cpu in &plan.cpus {
        let mut v = kvm("KVM_CREATE_VCPU", vm.create_vcpu(u64::from(cpu.index)))?;
        if coalesced {
            kvm("mmap of the coalesced MMIO ring", v.map_coalesced_mmio_ring())?;
        }
        let mut c = supported.clone();
        cpuid::for_vcpu(&mut c, cpu.apic_id, plan.machine.vcpus);
        kvm("KVM_SET_CPUID2", v.set_cpuid2(&c))?;
        cpuids.push(c.as_slice().to_vec());
        regs::setup_msrs(&v)?;
        regs::setup_fpu(&v)?;
        regs::setup_lint(&v)?;
        if let (true, Some(kernel)) = (cpu.bsp, kernel) {
            regs::setup_bsp(&v, plan, kernel)?;
        }
        out.push(v);
    }
    Ok((out, cpuids))
}
