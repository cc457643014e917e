//! The command line: `berth run | check | plan | caps`.

use crate::error::Error;
use crate::outcome::{exit_code, Outcome};
use crate::plan::dump::{self, Format};
use crate::{build, config, kvm, plan, vmm};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// berth: boot a whole machine from one TOML file, deterministically.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build and boot the machine; exit with the guest's status.
    Run {
        /// Machine file.
        file: PathBuf,
        /// Print exit counts per reason and per device at the end (stderr).
        #[arg(long)]
        stats: bool,
        /// Print boot-sha256:<hex> over guest RAM and vCPU registers before the first KVM_RUN (stderr).
        #[arg(long)]
        boot_digest: bool,
        /// Refuse to boot (exit 2) unless the plan digest equals this.
        #[arg(long, value_name = "HEX")]
        expect_plan: Option<String>,
        /// Treat an optional KVM capability as absent (e.g. SIGNAL_MSI), to exercise fallbacks.
        #[arg(long, value_name = "CAP")]
        disable_cap: Vec<String>,
        /// Run without the per-thread seccomp filters (for debugging).
        #[arg(long)]
        no_seccomp: bool,
        /// End the VM with exit 6 after this long (e.g. 30s, 500ms, 2m); overrides [machine] timeout.
        #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
        timeout: Option<u64>,
        /// Wait for a live migration on ADDR (unix:PATH or tcp:HOST:PORT) instead of booting; run the guest it brings.
        #[arg(long, value_name = "ADDR")]
        incoming: Option<String>,
        /// Overrides of the machine file.
        #[command(flatten)]
        overrides: OverrideArgs,
        /// Snapshot options and the control socket.
        #[command(flatten)]
        snap: SnapshotArgs,
    },
    /// Restore a snapshot and run it on.
    Restore {
        /// Snapshot directory.
        dir: PathBuf,
        /// The machine file; its plan digest must equal the snapshot's (default: the saved copy).
        #[arg(long, value_name = "FILE")]
        machine: Option<PathBuf>,
        /// Print the `--stats` report at the end (stderr).
        #[arg(long)]
        stats: bool,
        /// Run without the per-thread seccomp filters (for debugging).
        #[arg(long)]
        no_seccomp: bool,
        /// End the VM with exit 6 after this long.
        #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
        timeout: Option<u64>,
        /// Snapshot options and the control socket.
        #[command(flatten)]
        snap: SnapshotArgs,
    },
    /// Send one request to a running berth's control socket; print the reply.
    Ctl {
        /// The control socket.
        socket: PathBuf,
        /// pause, resume, snapshot DIR [--incremental], stats, stop, migrate ADDR [--max-downtime D] [--max-rounds N] [--max-bandwidth SIZE].
        command: String,
        /// The command's arguments.
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Parse and validate the machine file only.
    Check {
        /// Machine file.
        file: PathBuf,
        /// Overrides of the machine file.
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Print the fully resolved plan, then plan-sha256:<hex>.
    Plan {
        /// Machine file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Toml)]
        format: PlanFormat,
        /// Overrides of the machine file.
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Report the host's KVM: API version, capabilities, limits.
    Caps,
}

/// Command-line overrides of the machine file (QEMU's `-kernel`, `-append`,
/// `-initrd`, `-smp`, `-m`), applied before planning. Paths are relative to
/// the current directory.
#[derive(clap::Args, Debug, Default)]
pub struct OverrideArgs {
    /// Boot this kernel image instead of [kernel] path.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Use this kernel command line instead of [kernel] cmdline.
    #[arg(long, value_name = "TEXT")]
    pub append: Option<String>,
    /// Use this initrd (multiboot, PVH: module 0) instead of [kernel] initrd.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Number of vCPUs, instead of [machine] vcpus.
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// RAM size (e.g. 256MiB) of the machine's one memory region.
    #[arg(long, value_name = "SIZE", value_parser = config::size::parse_size)]
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
#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotArgs {
    /// Serve the control socket at PATH (one JSON object per line; README "Control socket").
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// When a complete serial line contains LINE, pause, snapshot to --snapshot-to and exit 0.
    #[arg(long, value_name = "LINE", requires = "snapshot_to")]
    pub snapshot_at: Option<String>,
    /// Where --snapshot-at writes the snapshot (must not exist).
    #[arg(long, value_name = "DIR", requires = "snapshot_at")]
    pub snapshot_to: Option<PathBuf>,
    /// Keep running after the --snapshot-at snapshot.
    #[arg(long, requires = "snapshot_at")]
    pub snapshot_continue: bool,
}

/// `berth plan --format`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PlanFormat {
    /// Canonical TOML (the digest covers this text).
    Toml,
    /// JSON.
    Json,
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit_code::USAGE } else { 0 };
        }
    };
    match dispatch(cli.command) {
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
            no_seccomp,
            timeout,
            snap,
        } => {
            if no_seccomp {
                crate::seccomp::disable();
            }
            crate::snapshot_cli::restore(&dir, machine.as_deref(), stats, timeout, &snap)
        }
        Command::Run {
            file,
            stats,
            boot_digest,
            expect_plan,
            disable_cap,
            timeout,
            no_seccomp,
            incoming,
            overrides,
            snap,
        } => {
            if no_seccomp {
                crate::seccomp::disable();
            }
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
            loop {
                if let Some(sig) = signals.pending() {
                    return Ok(Outcome::Signal(sig).exit_code());
                }
                let controls = crate::snapshot_cli::controls(&c, &p, &snap)?;
                let mut tl = start_path.clone();
                let vm = build::build(&c, &p, &opts, &mut tl).map_err(|e| match e {
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
                let report = vmm::run_controlled(vm, &run_opts, controls).map_err(Error::Run)?;
                if report.outcome.resets_the_machine() && p.machine.on_reboot == "restart" {
                    print_report(&report, stats, &mut tl, true);
                    continue;
                }
                return Ok(print_report(&report, stats, &mut tl, false));
            }
        }
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
        | Outcome::SnapshotFailed(_)) => {
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
