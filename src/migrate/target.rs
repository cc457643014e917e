//! The target side of a live migration (`berth run --incoming ADDR FILE`):
//! build the VM from this machine's plan around fresh (zero) memory, wait
//! for one source, refuse another machine before it pauses anything,
//! receive pages and state, load the state, acknowledge, and hand the VM to
//! the run loop only after the source's `commit`. Any failure before that
//! ends here with an error, and no vCPU has run.

use super::stream::{self, End, Hello, Kind, Reply, StreamError, PAGE};
use super::{Conn, Listener, MigrateError};
use crate::build::{self, BuildOptions, Vm};
use crate::clock::Timeline;
use crate::config::Config;
use crate::plan::Plan;
use crate::state::{restore, VmState};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// What was received, besides the VM.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Page records received.
    pub pages: u64,
    /// The source's rounds.
    pub rounds: u32,
}

fn refuse(conn: &mut Conn, kind: Kind, e: MigrateError) -> MigrateError {
    let reply = Reply {
        ok: false,
        error: Some(e.to_string()),
    };
    let _ = stream::write_json(conn, kind, &reply);
    e
}

/// The source's `hello` against this machine.
fn check(hello: &Hello, plan: &Plan, digest: &str) -> Result<(), MigrateError> {
    if hello.plan_sha256 != digest {
        return Err(MigrateError::OtherMachine {
            source_digest: hello.plan_sha256.clone(),
            this: digest.to_string(),
        });
    }
    let slots: Vec<(u32, u64, u64)> = plan
        .memslots
        .iter()
        .map(|s| (s.slot, s.guest_addr.0, s.size.0))
        .collect();
    if hello.vcpus as usize != plan.cpus.len() || hello.slots != slots {
        return Err(MigrateError::Refused(
            "the source's vCPUs or memslots differ from this machine's".into(),
        ));
    }
    Ok(())
}

/// Writes one `pages` section into guest memory.
fn apply(payload: &[u8], plan: &Plan, mem: &GuestMemoryMmap) -> Result<u64, MigrateError> {
    let zero = [0u8; PAGE];
    let recs = stream::records(payload)?;
    for (slot, page, data) in &recs {
        let s = plan
            .memslots
            .iter()
            .find(|s| s.slot == *slot)
            .ok_or_else(|| StreamError::BadPage(format!("no memslot {slot}")))?;
        if *page >= s.size.0 / PAGE as u64 {
            return Err(StreamError::BadPage(format!("page {page} is outside memslot {slot}")).into());
        }
        mem.write_slice(
            data.unwrap_or(&zero),
            GuestAddress(s.guest_addr.0 + page * PAGE as u64),
        )
        .map_err(|e| StreamError::BadPage(format!("page {page} of memslot {slot}: {e}")))?;
    }
    Ok(recs.len() as u64)
}

/// Sets the source's vCPUs' CPUID (a `cpuid` section) on this VM's vCPUs,
/// and records it: the state's copy is then set only when KVM's view after
/// the load differs from it (`state::vcpu::load`).
fn set_cpuid(vm: &mut Vm, payload: &[u8]) -> Result<(), MigrateError> {
    let cpuid: stream::Cpuid = stream::parse_json(payload, "cpuid")?;
    if cpuid.vcpus.len() != vm.vcpus.len() {
        return Err(MigrateError::Refused(format!(
            "{} vCPU CPUID tables for {} vCPUs",
            cpuid.vcpus.len(),
            vm.vcpus.len()
        )));
    }
    for (i, ((fd, c), set)) in vm.vcpus.iter().zip(cpuid.vcpus).zip(&mut vm.cpuid).enumerate() {
        crate::state::vcpu::set_cpuid(fd, &c.entries)
            .map_err(|e| MigrateError::Refused(format!("vcpu{i}: the source's CPUID: {e}")))?;
        *set = c.entries;
    }
    Ok(())
}

/// Work the guest's downtime would otherwise pay for the first time in
/// this process, done while no source waits. Nothing runs the guest, and
/// a failure here only means a colder start.
///
/// 1. A KVM_RUN with `immediate_exit` set on each vCPU: KVM returns EINTR
///    before it would enter the guest, but only after its first-run work:
///    the VM's first KVM_RUN starts KVM's NX huge page recovery task (a
///    fork, about 50 µs on the dev host, sampled with perf in the target's
///    first KVM_RUN), and each vCPU's first load.
/// 2. This VM's own fresh state, saved, encoded and decoded once: the
///    `state` section's decode took 0.09-0.12 ms cold (its code and the
///    allocator's pages touched for the first time in the process), 0.08
///    warm in the target (timeline harness, 16 runs each).
fn warm_up(vm: &mut Vm, plan: &Plan) {
    for fd in &mut vm.vcpus {
        let r = crate::vcpu::run_without_entering(fd);
        log::debug!("first KVM_RUN, immediate exit: {r:?}");
    }
    let (msrs, caps) = (
        crate::state::vcpu::msr_indices(&vm.host.kvm),
        crate::state::vcpu::VcpuCaps::of(&vm.host.kvm),
    );
    let vcpus = (0..)
        .zip(&vm.vcpus)
        .map(|(i, fd)| {
            (
                i,
                crate::state::vcpu::save(fd, i, &msrs, caps).map_err(|e| e.to_string()),
            )
        })
        .collect();
    if let Ok(own) = crate::state::take::vm_state(restore::chip_set(plan), vcpus, &vm.fd, &vm.bus) {
        let decoded = VmState::from_bytes(&own.to_bytes());
        log::debug!("decoder warmed up: {}", decoded.is_ok());
    }
}

/// Receives a migration on `l` into `vm` (built from `plan`, around zeroed
/// memory, nothing run): returns it, its state loaded, once the source has
/// committed, with the connection (closed once the guest runs). `give_up`
/// is polled while waiting for a source.
pub fn receive(
    l: &Listener,
    mut vm: Vm,
    plan: &Plan,
    digest: &str,
    give_up: impl Fn() -> Option<String>,
) -> Result<(Vm, Received, Conn), MigrateError> {
    let mut conn = l.accept(give_up)?;
    stream::read_magic(&mut conn)?;
    let hello: Hello = stream::read_json(&mut conn, Kind::Hello, "hello")?;
    stream::write_magic(&mut conn)?;
    if let Err(e) = check(&hello, plan, digest) {
        return Err(refuse(&mut conn, Kind::Reply, e));
    }
    stream::write_json(
        &mut conn,
        Kind::Reply,
        &Reply {
            ok: true,
            error: None,
        },
    )?;
    eprintln!("berth: incoming migration accepted; receiving");
    let mut got = Received::default();
    let mut steps = super::Steps::default();
    // Pages, the state once (parsed as it arrives: the source sends it
    // ahead of the last pages), more pages, `end`. The state is loaded only
    // after the last page is in memory.
    let mut state = None;
    let (state, end): (VmState, End) = loop {
        // Sections come back to back, the last ones after the source's
        // pause: the next one is polled for before the read sleeps.
        conn.poll_readable(crate::clock::HANDOVER_POLL);
        let (kind, payload) = stream::read_section(&mut conn)?;
        match kind {
            Kind::Pages => got.pages += apply(&payload, plan, &vm.mem)?,
            // Before the first pages only, once.
            Kind::Cpuid if got.pages == 0 && state.is_none() && vm.cpuid.iter().all(Vec::is_empty) => {
                set_cpuid(&mut vm, &payload)?;
            }
            // Every section before it is applied: say so.
            Kind::Sync if state.is_none() => {
                stream::write_section(&mut conn, Kind::Synced, &[])?;
            }
            Kind::State if state.is_none() => {
                steps.mark("state received");
                state = Some(VmState::from_bytes(&payload)?);
                steps.mark("state parsed");
            }
            Kind::End if state.is_some() => {
                let end = stream::parse_json(&payload, "end")?;
                if let Some(state) = state.take() {
                    break (state, end);
                }
            }
            other => {
                return Err(StreamError::Unexpected {
                    got: other,
                    want: if state.is_none() {
                        "pages, sync or state"
                    } else {
                        "pages or end"
                    },
                }
                .into())
            }
        }
    };
    steps.mark("end received");
    got.rounds = end.rounds;
    if end.pages != got.pages {
        return Err(StreamError::Garbage(format!(
            "the source sent {} pages, {} arrived",
            end.pages, got.pages
        ))
        .into());
    }
    if state.vcpus.len() != plan.cpus.len() {
        let e = MigrateError::Refused(format!(
            "{} vCPU states for {} vCPUs",
            state.vcpus.len(),
            plan.cpus.len()
        ));
        return Err(refuse(&mut conn, Kind::Ack, e));
    }
    if let Err(e) = restore::load(&mut vm, plan, &state) {
        return Err(refuse(&mut conn, Kind::Ack, e.into()));
    }
    steps.mark("state loaded");
    stream::write_json(
        &mut conn,
        Kind::Ack,
        &Reply {
            ok: true,
            error: None,
        },
    )?;
    steps.mark("ack sent");
    // Only the source's commit makes the guest ours. It follows the ack
    // within a fraction of a millisecond.
    conn.poll_readable(crate::clock::HANDOVER_POLL);
    let (kind, _) = stream::read_section(&mut conn)
        .map_err(|e| MigrateError::Aborted(format!("the source's commit did not come: {e}")))?;
    steps.mark("commit received");
    steps.log("target");
    if kind != Kind::Commit {
        return Err(StreamError::Unexpected {
            got: kind,
            want: "commit",
        }
        .into());
    }
    Ok((vm, got, conn))
}

/// `berth run --incoming ADDR FILE`: binds ADDR (a usage error if it
/// cannot), serves the run's controls, waits for a source (bounded by the
/// run's deadline and signals), then runs the received guest to its end.
pub fn run_incoming(
    addr: &str,
    config: &Config,
    plan: &Plan,
    snap: &crate::cli::SnapshotArgs,
    opts: &BuildOptions,
    run_opts: &crate::vmm::RunOptions,
    tl: &mut Timeline,
) -> Result<crate::vmm::RunReport, crate::error::Error> {
    let addr = super::Address::parse(addr, true)?;
    let listener = Listener::bind(&addr)?;
    let controls = crate::snapshot_cli::controls(config, plan, snap)?;
    let digest = crate::plan::dump::digest(plan)?;
    // The run's thread filters, compiled while nothing waits for them: the
    // vCPU threads start after the commit, inside the guest's downtime. A
    // filter that does not compile fails again where it is installed, and
    // ends the run there as it would without this.
    if let Err(e) = crate::seccomp::prepare(&crate::seccomp::ThreadKind::ALL) {
        log::debug!("seccomp filters not prepared: {e}");
    }
    // And the vCPU threads themselves, waiting for their vCPUs (each with
    // its filter in place): after the commit they only have to be handed
    // their fds. Threads that cannot start now start then.
    let prestarted = crate::vcpu::Prestarted::start(plan.cpus.len() as u32).unwrap_or_else(|e| {
        log::debug!("vCPU threads not started ahead: {e}");
        crate::vcpu::Prestarted::default()
    });
    let controls = crate::vmm::RunControls {
        prestarted,
        ..controls
    };
    // The VM, around zeroed memory, before any source connects: its
    // errors are the run's own (as in `berth run`), a source does not wait
    // for it, and KVM's one-time settle (`teardown::Settle`, 5-10 ms after
    // the build on the dev host) is over before the guest runs here. Its
    // memslot removal zaps every shadow page of the VM: in the guest's
    // first milliseconds here it cost a rebuild of them and a preempted
    // vCPU. Nothing runs until the commit.
    let mem =
        crate::memory::create(&plan.memslots, |p| config.resolve(p)).map_err(build::BuildError::from)?;
    let mut vm = build::build_restored(config, plan, opts, tl, mem)?;
    warm_up(&mut vm, plan);
    eprintln!("berth: waiting for a migration on {addr}");
    let give_up = || {
        if let Some(sig) = run_opts.signals.pending() {
            return Some(format!("signal {sig} arrived before a migration"));
        }
        match run_opts.deadline {
            Some((d, ms)) if std::time::Instant::now() >= d => {
                Some(format!("no migration arrived within the {ms} ms timeout"))
            }
            _ => None,
        }
    };
    let (vm, got, conn) = receive(&listener, vm, plan, &digest, give_up)?;
    let note = format!(
        "berth: migration received ({} pages, {} rounds); the guest runs here now",
        got.pages, got.rounds
    );
    let controls = crate::vmm::RunControls {
        after_start: Some(Box::new(move || {
            // Closing a TCP connection sends its FIN and wakes the source
            // (30 µs under strace); not while the guest waits.
            drop((conn, listener));
            eprintln!("{note}");
        })),
        ..controls
    };
    crate::vmm::run_controlled(vm, run_opts, controls).map_err(crate::error::Error::Run)
}
