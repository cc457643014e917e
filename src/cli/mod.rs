//! The command line: `berth run | restore | ctl | check | plan | caps`.

use crate::error::Error;
use crate::outcome::Outcome;
use crate::plan::dump::{self, Format};
use crate::{build, config, kvm, plan, vmm};
use std::path::PathBuf;

pub mod args;

/// Subcommands (their options and help text: [`args`]).
#[derive(Debug)]
pub enum Command {
    /// Build and boot the machine; exit with the guest's status.
    Run {
        /// Machine file.
        file: PathBuf,
        /// Print exit counts per reason and per device at the end (stderr).
        stats: bool,
        /// Print `boot-sha256:<hex>` over guest RAM and vCPU registers before the first KVM_RUN (stderr).
        boot_digest: bool,
        /// Refuse to boot (exit 2) unless the plan digest equals this.
        expect_plan: Option<String>,
        /// Treat an optional KVM capability as absent (e.g. SIGNAL_MSI), to exercise fallbacks.
        disable_cap: Vec<String>,
        /// Treat a host limit as at most N: vcpus=N, memslots=N or gsis=N (lowers only), to exercise the limit errors.
        host_limit: Vec<String>,
        /// Run without the per-thread seccomp filters (for debugging).
        no_seccomp: bool,
        /// End the VM with exit 6 after this long (e.g. 30s, 500ms, 2m); overrides `[machine] timeout`.
        timeout: Option<u64>,
        /// Wait for a live migration on ADDR (unix:PATH or tcp:HOST:PORT) instead of booting; run the guest it brings.
        incoming: Option<String>,
        /// Overrides of the machine file.
        overrides: OverrideArgs,
        /// Snapshot options and the control socket.
        snap: SnapshotArgs,
        /// Serve the GDB remote protocol at ADDR: tcp:HOST:PORT or unix:PATH (README "Debugging with gdb").
        gdb: Option<String>,
        /// With --gdb: hold every vCPU before its first instruction until gdb attaches and continues.
        gdb_wait: bool,
    },
    /// Restore a snapshot and run it on.
    Restore {
        /// Snapshot directory.
        dir: PathBuf,
        /// The machine file; its plan digest must equal the snapshot's (default: the saved copy).
        machine: Option<PathBuf>,
        /// Print the `--stats` report at the end (stderr).
        stats: bool,
        /// Check the memory files against their checksums first (reads every
        /// non-zero page; without it they are checked for their length).
        verify: bool,
        /// Run without the per-thread seccomp filters (for debugging).
        no_seccomp: bool,
        /// End the VM with exit 6 after this long.
        timeout: Option<u64>,
        /// Snapshot options and the control socket.
        snap: SnapshotArgs,
    },
    /// Send one request to a running berth's control socket; print the reply.
    Ctl {
        /// The control socket.
        socket: PathBuf,
        /// pause, resume, snapshot DIR [--incremental], stats, stop, migrate ADDR [--max-downtime D] [--max-rounds N] [--max-bandwidth SIZE].
        command: String,
        /// The command's arguments.
        args: Vec<String>,
    },
    /// Parse and validate the machine file only.
    Check {
        /// Machine file.
        file: PathBuf,
        /// Overrides of the machine file.
        overrides: OverrideArgs,
    },
    /// Print the fully resolved plan, then `plan-sha256:<hex>`.
    Plan {
        /// Machine file.
        file: PathBuf,
        /// Output format.
        format: PlanFormat,
        /// Overrides of the machine file.
        overrides: OverrideArgs,
    },
    /// Report the host's KVM: API version, capabilities, limits.
    Caps,
}

/// Command-line overrides of the machine file (QEMU's `-kernel`, `-append`,
/// `-initrd`, `-smp`, `-m`), applied before planning. Paths are relative to
/// the current directory.
#[derive(Debug, Default)]
pub struct OverrideArgs {
    /// Boot this kernel image instead of `[kernel] path`.
    pub kernel: Option<PathBuf>,
    /// Use this kernel command line instead of `[kernel] cmdline`.
    pub append: Option<String>,
    /// Use this initrd (multiboot, PVH: module 0) instead of `[kernel] initrd`.
    pub initrd: Option<PathBuf>,
    /// Number of vCPUs, instead of `[machine] vcpus`.
    pub vcpus: Option<u32>,
    /// RAM size (e.g. 256MiB) of the machine's one memory region.
    pub memory: Option<u64>,
}

impl From<OverrideArgs> for config::Overrides {
    fn from(a: OverrideArgs) -> Self {
        config::Overrides {
            kernel: a.kernel,
            append: a.append,
            initrd: a.initrd,
            vcpus: a.vcpus,
            memory: a.memory,
        }
    }
}

/// The control socket and `--snapshot-at` (run and restore).
#[derive(Debug, Clone, Default)]
pub struct SnapshotArgs {
    /// Serve the control socket at PATH (one JSON object per line; README "Control socket").
    pub control: Option<PathBuf>,
    /// When a complete serial line contains LINE, pause, snapshot to --snapshot-to and exit 0.
    pub snapshot_at: Option<String>,
    /// Where --snapshot-at writes the snapshot (must not exist).
    pub snapshot_to: Option<PathBuf>,
    /// Keep running after the --snapshot-at snapshot.
    pub snapshot_continue: bool,
}

/// `berth plan --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanFormat {
    /// Canonical TOML (the digest covers this text).
    Toml,
    /// JSON.
    Json,
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let command = match args::parse(std::env::args_os().collect()) {
        args::Parsed::Command(c) => *c,
        args::Parsed::Print(args::Printout { text, stderr, code }) => {
            use std::io::Write as _;
            let _ = if stderr {
                std::io::stderr().write_all(text.as_bytes())
            } else {
                std::io::stdout().write_all(text.as_bytes())
            };
            return code;
        }
    };
    match dispatch(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cmd: Command) -> Result<i32, Error> {
    match cmd {
        Command::Check { file, overrides } => {
            config::load_with(&file, &overrides.into())?;
            println!("{}: ok", file.display());
            Ok(0)
        }
        Command::Plan {
            file,
            format,
            overrides,
        } => {
            let c = config::load_with(&file, &overrides.into())?;
            let p = plan::plan(&c);
            let canonical = dump::render(&p, Format::Toml)?;
            match format {
                PlanFormat::Toml => print!("{canonical}"),
                PlanFormat::Json => print!("{}", dump::render(&p, Format::Json)?),
            }
            println!("plan-sha256:{}", dump::digest_of_canonical(&canonical));
            Ok(0)
        }
        Command::Caps => {
            let host = kvm::HostKvm::open()?;
            print!("{}", kvm::caps_report(&host));
            Ok(0)
        }
        Command::Ctl {
            socket,
            command,
            args,
        } => {
            let req = crate::control::request_from_args(&command, &args)?;
            let reply = crate::control::client(&socket, &req)?;
            println!("{reply}");
            if reply.get("ok") == Some(&serde_json::Value::Bool(true)) {
                Ok(0)
            } else {
                let msg = reply.get("error").and_then(|e| e.as_str()).unwrap_or("error");
                Err(crate::control::ControlError::Replied(msg.to_string()).into())
            }
        }
        Command::Restore {
            dir,
            machine,
            stats,
            verify,
            no_seccomp,
            timeout,
            snap,
        } => {
            if no_seccomp {
                crate::seccomp::disable();
            }
            let opts = crate::snapshot_cli::RestoreOptions {
                stats,
                verify,
                timeout,
            };
            crate::snapshot_cli::restore(&dir, machine.as_deref(), &opts, &snap)
        }
        Command::Run {
            file,
            stats,
            boot_digest,
            expect_plan,
            disable_cap,
            host_limit,
            timeout,
            no_seccomp,
            incoming,
            overrides,
            snap,
            gdb,
            gdb_wait,
        } => {
            if no_seccomp {
                crate::seccomp::disable();
            }
            let host_limits = crate::kvm::HostLimits::parse(&host_limit).map_err(build::BuildError::Usage)?;
            let mut start_path = crate::clock::Timeline::default();
            let c = config::load_with(&file, &overrides.into())?;
            start_path.mark("config");
            let p = plan::plan(&c);
            start_path.mark("plan");
            if let Some(want) = expect_plan {
                let digest = dump::digest(&p)?;
                let want = want
                    .trim()
                    .trim_start_matches("plan-sha256:")
                    .to_ascii_lowercase();
                if want != digest {
                    return Err(Error::PlanMismatch {
                        file: file.display().to_string(),
                        want,
                        got: digest,
                    });
                }
            }
            if log::log_enabled!(log::Level::Info) {
                log::info!("plan-sha256:{}", dump::digest(&p)?);
            }
            let opts = build::BuildOptions {
                disable_caps: disable_cap,
                host_limits,
            };
            crate::outcome::inject_panic_here();
            let signals = vmm::Signals::install().map_err(Error::Run)?;
            // A restart rebuilds the VM on this thread, which the Main filter forbids.
            let run_opts = vmm::RunOptions::new(
                timeout.or(p.machine.timeout_ms),
                signals.clone(),
                p.machine.on_reboot != "restart",
            );
            if let Some(addr) = incoming {
                let mut tl = start_path.clone();
                let report =
                    crate::migrate::target::run_incoming(&addr, &c, &p, &snap, &opts, &run_opts, &mut tl)?;
                let restart = report.outcome.resets_the_machine() && p.machine.on_reboot == "restart";
                if !restart {
                    return Ok(print_report(&report, stats, &mut tl, false));
                }
                print_report(&report, stats, &mut tl, true);
            }
            // Bound once: gdb may stay attached across restarts; only the
            // first boot waits for it.
            let gdb = match gdb {
                Some(addr) => Some(BootGdb {
                    listener: std::sync::Arc::new(crate::gdb::bind(&addr)?),
                    wait: gdb_wait,
                }),
                None => None,
            };
            boot_loop(
                &c,
                &p,
                &opts,
                &run_opts,
                &snap,
                &start_path,
                stats,
                boot_digest,
                gdb,
            )
        }
    }
}

/// `--gdb` for [`boot_loop`]: the bound socket and `--gdb-wait`.
pub(crate) struct BootGdb {
    /// The listening socket, shared by the runs of a restarting machine.
    pub listener: std::sync::Arc<crate::gdb::Listener>,
    /// `--gdb-wait`: the first boot waits for gdb.
    pub wait: bool,
}

/// Boots the machine and runs it to its end; with `on_reboot = "restart"`
/// a reset (or triple fault) builds it again from the plan and boots anew.
/// Also where a restored VM goes on after such a reset.
#[allow(clippy::too_many_arguments)]
pub(crate) fn boot_loop(
    c: &config::Config,
    p: &plan::Plan,
    opts: &build::BuildOptions,
    run_opts: &vmm::RunOptions,
    snap: &SnapshotArgs,
    start_path: &crate::clock::Timeline,
    stats: bool,
    boot_digest: bool,
    gdb: Option<BootGdb>,
) -> Result<i32, Error> {
    let mut first_boot = true;
    loop {
        if let Some(sig) = run_opts.signals.pending() {
            return Ok(Outcome::Signal(sig).exit_code());
        }
        let mut controls = crate::snapshot_cli::controls(c, p, snap)?;
        controls.gdb = gdb.as_ref().map(|g| crate::gdb::GdbControl {
            listener: g.listener.clone(),
            wait: g.wait && first_boot,
            last_run: p.machine.on_reboot != "restart",
        });
        first_boot = false;
        let mut tl = start_path.clone();
        let vm = build::build(c, p, opts, &mut tl).map_err(|e| match e {
            build::BuildError::Kernel(source) => Error::Kernel {
                file: c.locate_field("kernel.path"),
                source,
            },
            other => Error::Build(other),
        })?;
        if let Some(k) = &vm.kernel {
            log::info!("kernel {:?} entry {:#x}", k.format, k.entry);
        }
        if boot_digest {
            eprintln!("boot-sha256:{}", vmm::boot_digest(&vm).map_err(Error::Run)?);
        }
        let report = vmm::run_controlled(vm, run_opts, controls).map_err(Error::Run)?;
        if report.outcome.resets_the_machine() && p.machine.on_reboot == "restart" {
            print_report(&report, stats, &mut tl, true);
            continue;
        }
        return Ok(print_report(&report, stats, &mut tl, false));
    }
}

/// Prints `--stats` and the outcome of a run (stderr); returns its exit
/// code. `restarting`: the machine is rebuilt next (`on_reboot = "restart"`).
pub(crate) fn print_report(
    report: &vmm::RunReport,
    stats: bool,
    tl: &mut crate::clock::Timeline,
    restarting: bool,
) -> i32 {
    if stats {
        tl.mark_at("17 vcpus-started", report.vcpus_started);
        eprint!("{}{}", vmm::stats_text(report), tl.stats_text());
    }
    if !report.stuck_vcpus.is_empty() {
        eprintln!(
            "berth: vCPUs {:?} did not stop within the grace period",
            report.stuck_vcpus
        );
    }
    match &report.outcome {
        o if restarting => {
            // The first line: a triple fault's register dump stays out.
            let text = o.to_string();
            let why = text.lines().next().unwrap_or_default();
            eprintln!("berth: {why}; rebuilding the machine (on_reboot = \"restart\")");
        }
        o @ (Outcome::Fault { .. }
        | Outcome::Host(_)
        | Outcome::Panic(_)
        | Outcome::MemoryLost(_)
        | Outcome::SnapshotFailed(_)
        | Outcome::DebuggerKill) => {
            eprintln!("berth: {o}")
        }
        o @ Outcome::Migrated(_) => eprintln!("berth: {o}"),
        o @ Outcome::Timeout(_) => {
            eprintln!("berth: {o}");
            for s in &report.vcpu_states {
                eprintln!("berth:   {s}");
            }
        }
        o => log::info!("{o}"),
    }
    report.outcome.exit_code()
}
