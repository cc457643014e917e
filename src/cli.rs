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
        /// Overrides of the machine file.
        #[command(flatten)]
        overrides: OverrideArgs,
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
        Command::Run {
            file,
            stats,
            boot_digest,
            expect_plan,
            disable_cap,
            timeout,
            no_seccomp,
            overrides,
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
            let limit = timeout.or(p.machine.timeout_ms);
            let run_opts = vmm::RunOptions {
                deadline: limit.map(|ms| {
                    (
                        std::time::Instant::now() + std::time::Duration::from_millis(ms),
                        ms,
                    )
                }),
                signals: signals.clone(),
                // A restart rebuilds the VM on this thread, which the Main filter forbids.
                seccomp_main: p.machine.on_reboot != "restart",
            };
            loop {
                if let Some(sig) = signals.pending() {
                    return Ok(Outcome::Signal(sig).exit_code());
                }
                let mut tl = start_path.clone();
                let vm = build::build(&c, &p, &opts, &mut tl).map_err(|e| match e {
                    build::BuildError::Kernel(source) => Error::Kernel {
                        file: c.locate_field("kernel.path"),
                        source,
                    },
                    other => Error::Build(other),
                })?;
                log::info!("kernel {:?} entry {:#x}", vm.kernel.format, vm.kernel.entry);
                if boot_digest {
                    eprintln!("boot-sha256:{}", vmm::boot_digest(&vm).map_err(Error::Run)?);
                }
                let report = vmm::run(vm, &run_opts).map_err(Error::Run)?;
                if stats {
                    tl.mark_at("17 vcpus-started", report.vcpus_started);
                    eprint!("{}{}", vmm::stats_text(&report), tl.stats_text());
                }
                if !report.stuck_vcpus.is_empty() {
                    eprintln!(
                        "berth: vCPUs {:?} did not stop within the grace period",
                        report.stuck_vcpus
                    );
                }
                match &report.outcome {
                    o if o.resets_the_machine() && p.machine.on_reboot == "restart" => {
                        // The first line: a triple fault's register dump stays out.
                        let text = o.to_string();
                        let why = text.lines().next().unwrap_or_default();
                        eprintln!("berth: {why}; rebuilding the machine (on_reboot = \"restart\")");
                        continue;
                    }
                    o @ (Outcome::Fault { .. }
                    | Outcome::Host(_)
                    | Outcome::Panic(_)
                    | Outcome::MemoryLost(_)) => {
                        eprintln!("berth: {o}")
                    }
                    o @ Outcome::Timeout(_) => {
                        eprintln!("berth: {o}");
                        for s in &report.vcpu_states {
                            eprintln!("berth:   {s}");
                        }
                    }
                    o => log::info!("{o}"),
                }
                return Ok(report.outcome.exit_code());
            }
        }
    }
}
