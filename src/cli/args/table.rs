//! The command line's tables: one [`Spec`] per subcommand (its positionals
//! and option groups, in `--help` order), and the help text they print in
//! clap's former format. The parser is [`super`].

/// One `--long [<VALUE>]` option.
pub(super) struct Opt {
    pub(super) long: &'static str,
    /// `Some(name)`: takes a value, shown as `<name>`.
    pub(super) value: Option<&'static str>,
    pub(super) help: &'static str,
    /// May be given more than once (values accumulate).
    pub(super) repeat: bool,
}

impl Opt {
    /// How help and usage errors show the option: `--long <VALUE>` or `--long`.
    pub(super) fn shown(&self) -> String {
        match self.value {
            Some(v) => format!("--{} <{v}>", self.long),
            None => format!("--{}", self.long),
        }
    }
}

/// One positional argument.
pub(super) struct Pos {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    /// Takes every remaining argument, `-`-prefixed ones too (optional).
    pub(super) rest: bool,
}

/// One subcommand.
pub(super) struct Spec {
    pub(super) name: &'static str,
    pub(super) about: &'static str,
    pub(super) positionals: &'static [Pos],
    pub(super) options: &'static [&'static [Opt]],
}

const fn flag(long: &'static str, help: &'static str) -> Opt {
    Opt {
        long,
        value: None,
        help,
        repeat: false,
    }
}

const fn valued(long: &'static str, value: &'static str, help: &'static str) -> Opt {
    Opt {
        long,
        value: Some(value),
        help,
        repeat: false,
    }
}

const FILE: Pos = Pos {
    name: "FILE",
    help: "Machine file",
    rest: false,
};

const RUN: &[Opt] = &[
    flag(
        "stats",
        "Print exit counts per reason and per device at the end (stderr)",
    ),
    flag(
        "boot-digest",
        "Print boot-sha256:<hex> over guest RAM and vCPU registers before the first KVM_RUN (stderr)",
    ),
    valued(
        "expect-plan",
        "HEX",
        "Refuse to boot (exit 2) unless the plan digest equals this",
    ),
    Opt {
        long: "disable-cap",
        value: Some("CAP"),
        help: "Treat an optional KVM capability as absent (e.g. SIGNAL_MSI), to exercise fallbacks",
        repeat: true,
    },
    Opt {
        long: "host-limit",
        value: Some("NAME=N"),
        help: "Treat a host limit as at most N: vcpus=N, memslots=N or gsis=N (lowers only), to exercise the limit errors",
        repeat: true,
    },
    flag(
        "no-seccomp",
        "Run without the per-thread seccomp filters (for debugging)",
    ),
    valued(
        "timeout",
        "DURATION",
        "End the VM with exit 6 after this long (e.g. 30s, 500ms, 2m); overrides [machine] timeout",
    ),
    valued(
        "incoming",
        "ADDR",
        "Wait for a live migration on ADDR (unix:PATH or tcp:HOST:PORT) instead of booting; run the guest it brings",
    ),
    valued(
        "gdb",
        "ADDR",
        "Serve the GDB remote protocol at ADDR: tcp:HOST:PORT or unix:PATH (README \"Debugging with gdb\")",
    ),
    flag(
        "gdb-wait",
        "With --gdb: hold every vCPU before its first instruction until gdb attaches and continues",
    ),
];

const OVERRIDES: &[Opt] = &[
    valued(
        "kernel",
        "PATH",
        "Boot this kernel image instead of [kernel] path",
    ),
    valued(
        "append",
        "TEXT",
        "Use this kernel command line instead of [kernel] cmdline",
    ),
    valued(
        "initrd",
        "PATH",
        "Use this initrd (multiboot, PVH: module 0) instead of [kernel] initrd",
    ),
    valued("vcpus", "N", "Number of vCPUs, instead of [machine] vcpus"),
    valued(
        "memory",
        "SIZE",
        "RAM size (e.g. 256MiB) of the machine's one memory region",
    ),
];

const SNAPSHOT: &[Opt] = &[
    valued(
        "control",
        "PATH",
        "Serve the control socket at PATH (one JSON object per line; README \"Control socket\")",
    ),
    valued(
        "snapshot-at",
        "LINE",
        "When a complete serial line contains LINE, pause, snapshot to --snapshot-to and exit 0",
    ),
    valued(
        "snapshot-to",
        "DIR",
        "Where --snapshot-at writes the snapshot (must not exist)",
    ),
    flag(
        "snapshot-continue",
        "Keep running after the --snapshot-at snapshot",
    ),
];

const RESTORE: &[Opt] = &[
    valued(
        "machine",
        "FILE",
        "The machine file; its plan digest must equal the snapshot's (default: the saved copy)",
    ),
    flag("stats", "Print the `--stats` report at the end (stderr)"),
    flag(
        "verify",
        "Check the memory files against their checksums first (reads every non-zero page; without it they are checked for their length)",
    ),
    flag(
        "no-seccomp",
        "Run without the per-thread seccomp filters (for debugging)",
    ),
    valued("timeout", "DURATION", "End the VM with exit 6 after this long"),
];

const PLAN: &[Opt] = &[valued(
    "format",
    "FORMAT",
    "Output format: toml (canonical TOML; the digest covers this text) or json [default: toml]",
)];

/// Every subcommand, in `--help` order.
pub(super) const SPECS: &[Spec] = &[
    Spec {
        name: "run",
        about: "Build and boot the machine; exit with the guest's status",
        positionals: &[FILE],
        options: &[RUN, OVERRIDES, SNAPSHOT],
    },
    Spec {
        name: "restore",
        about: "Restore a snapshot and run it on",
        positionals: &[Pos {
            name: "DIR",
            help: "Snapshot directory",
            rest: false,
        }],
        options: &[RESTORE, SNAPSHOT],
    },
    Spec {
        name: "ctl",
        about: "Send one request to a running berth's control socket; print the reply",
        positionals: &[
            Pos {
                name: "SOCKET",
                help: "The control socket",
                rest: false,
            },
            Pos {
                name: "COMMAND",
                help: "pause, resume, snapshot DIR [--incremental], stats, stop, migrate ADDR [--max-downtime D] [--max-rounds N] [--max-bandwidth SIZE]",
                rest: false,
            },
            Pos {
                name: "ARGS",
                help: "The command's arguments",
                rest: true,
            },
        ],
        options: &[],
    },
    Spec {
        name: "check",
        about: "Parse and validate the machine file only",
        positionals: &[FILE],
        options: &[OVERRIDES],
    },
    Spec {
        name: "plan",
        about: "Print the fully resolved plan, then plan-sha256:<hex>",
        positionals: &[FILE],
        options: &[PLAN, OVERRIDES],
    },
    Spec {
        name: "caps",
        about: "Report the host's KVM: API version, capabilities, limits",
        positionals: &[],
        options: &[],
    },
];

const ABOUT: &str = "A small, fast, deterministic micro-VMM on Linux KVM driven by one TOML machine file";
const HELP_ABOUT: &str = "Print this message or the help of the given subcommand(s)";
pub(super) const TRY: &str = "For more information, try '--help'.";

impl Spec {
    pub(super) fn opts(&self) -> impl Iterator<Item = &Opt> {
        self.options.iter().flat_map(|g| g.iter())
    }

    pub(super) fn usage(&self, bin: &str) -> String {
        let mut u = format!("{bin} {}", self.name);
        if !self.options.is_empty() {
            u.push_str(" [OPTIONS]");
        }
        for p in self.positionals {
            if p.rest {
                u.push_str(&format!(" [{}]...", p.name));
            } else {
                u.push_str(&format!(" <{}>", p.name));
            }
        }
        u
    }

    pub(super) fn help(&self, bin: &str) -> String {
        let mut h = format!("{}\n\nUsage: {}\n", self.about, self.usage(bin));
        if !self.positionals.is_empty() {
            let label = |p: &Pos| {
                if p.rest {
                    format!("[{}]...", p.name)
                } else {
                    format!("<{}>", p.name)
                }
            };
            let w = self.positionals.iter().map(|p| label(p).len()).max().unwrap_or(0);
            h.push_str("\nArguments:\n");
            for p in self.positionals {
                h.push_str(&format!("  {:<w$}  {}\n", label(p), p.help));
            }
        }
        let label = Opt::shown;
        let w = self
            .opts()
            .map(|o| label(o).len())
            .max()
            .unwrap_or(0)
            .max("--help".len());
        h.push_str("\nOptions:\n");
        for o in self.opts() {
            h.push_str(&format!("      {:<w$}  {}\n", label(o), o.help));
        }
        h.push_str(&format!("  -h, {:<w$}  Print help\n", "--help"));
        h
    }
}

/// The top-level `--help`: every subcommand and its one-line summary.
pub(super) fn top_help(bin: &str) -> String {
    let w = SPECS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut h = format!("{ABOUT}\n\nUsage: {bin} <COMMAND>\n\nCommands:\n");
    for s in SPECS {
        h.push_str(&format!("  {:<w$}  {}\n", s.name, s.about));
    }
    h.push_str(&format!("  {:<w$}  {HELP_ABOUT}\n", "help"));
    h.push_str("\nOptions:\n  -h, --help     Print help\n  -V, --version  Print version\n");
    h
}
