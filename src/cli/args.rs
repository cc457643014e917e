//! The command line's grammar: subcommands, their options and arguments,
//! `--help`/`--version`, and usage errors (exit 2) that name the option.
//!
//! Hand-written from one table per subcommand ([`SPECS`]), in the format
//! clap printed before: clap and its helper crates were about 200 KiB of
//! berth's text, and berth's text is its resident memory (issue 15).

use super::{Command, OverrideArgs, PlanFormat, SnapshotArgs};
use crate::config;
use std::ffi::OsString;
use std::path::PathBuf;

/// One `--long [<VALUE>]` option.
struct Opt {
    long: &'static str,
    /// `Some(name)`: takes a value, shown as `<name>`.
    value: Option<&'static str>,
    help: &'static str,
    /// May be given more than once (values accumulate).
    repeat: bool,
}

/// One positional argument.
struct Pos {
    name: &'static str,
    help: &'static str,
    /// Takes every remaining argument, `-`-prefixed ones too (optional).
    rest: bool,
}

/// One subcommand.
struct Spec {
    name: &'static str,
    about: &'static str,
    positionals: &'static [Pos],
    options: &'static [&'static [Opt]],
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
const SPECS: &[Spec] = &[
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
const TRY: &str = "For more information, try '--help'.";

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// A subcommand to run.
    Command(Box<Command>),
    /// Help, the version or a usage error, to print.
    Print(Printout),
}

/// Text to print and the exit code: help and version (stdout, 0) or a usage
/// error (stderr, 2).
#[derive(Debug)]
pub struct Printout {
    /// The whole text, ending in a newline.
    pub text: String,
    /// Print on stderr (an error) rather than stdout.
    pub stderr: bool,
    /// The process exit code.
    pub code: i32,
}

fn print_out(text: String) -> Printout {
    Printout {
        text,
        stderr: false,
        code: 0,
    }
}

fn error(text: String) -> Printout {
    Printout {
        text,
        stderr: true,
        code: crate::outcome::exit_code::USAGE,
    }
}

impl Spec {
    fn opts(&self) -> impl Iterator<Item = &Opt> {
        self.options.iter().flat_map(|g| g.iter())
    }

    fn usage(&self, bin: &str) -> String {
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

    fn help(&self, bin: &str) -> String {
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
        let label = |o: &Opt| match o.value {
            Some(v) => format!("--{} <{v}>", o.long),
            None => format!("--{}", o.long),
        };
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

    fn error(&self, bin: &str, msg: &str) -> Printout {
        error(format!("error: {msg}\n\nUsage: {}\n\n{TRY}\n", self.usage(bin)))
    }
}

fn top_help(bin: &str) -> String {
    let w = SPECS.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut h = format!("{ABOUT}\n\nUsage: {bin} <COMMAND>\n\nCommands:\n");
    for s in SPECS {
        h.push_str(&format!("  {:<w$}  {}\n", s.name, s.about));
    }
    h.push_str(&format!("  {:<w$}  {HELP_ABOUT}\n", "help"));
    h.push_str("\nOptions:\n  -h, --help     Print help\n  -V, --version  Print version\n");
    h
}

fn top_error(bin: &str, msg: &str) -> Printout {
    error(format!("error: {msg}\n\nUsage: {bin} <COMMAND>\n\n{TRY}\n"))
}

/// The parsed arguments of one subcommand, before their types.
struct Matches<'s> {
    spec: &'s Spec,
    positionals: Vec<OsString>,
    /// (option, value) in command-line order; flags have an empty value.
    given: Vec<(&'s Opt, OsString)>,
}

impl Matches<'_> {
    fn flag(&self, long: &str) -> bool {
        self.given.iter().any(|(o, _)| o.long == long)
    }

    fn all<'a>(&'a self, long: &'a str) -> impl Iterator<Item = &'a OsString> + 'a {
        self.given
            .iter()
            .filter(move |(o, _)| o.long == long)
            .map(|(_, v)| v)
    }

    fn path(&self, long: &str) -> Option<PathBuf> {
        self.all(long).next().map(PathBuf::from)
    }

    /// The option's value as text, converted by `parse`; a bad value is a
    /// usage error naming the option.
    fn value<T>(&self, long: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, Printout> {
        let Some((opt, raw)) = self.given.iter().find(|(o, _)| o.long == long) else {
            return Ok(None);
        };
        let shown = format!("--{} <{}>", opt.long, opt.value.unwrap_or_default());
        let Some(text) = raw.to_str() else {
            return Err(error(format!(
                "error: invalid UTF-8 was detected in the value of '{shown}'\n\n{TRY}\n"
            )));
        };
        parse(text).map(Some).map_err(|why| {
            // A reason on lines of its own (the possible values) takes no colon.
            let why = if why.is_empty() || why.starts_with('\n') {
                why
            } else {
                format!(": {why}")
            };
            error(format!(
                "error: invalid value '{text}' for '{shown}'{why}\n\n{TRY}\n"
            ))
        })
    }

    fn text(&self, long: &str) -> Result<Option<String>, Printout> {
        self.value(long, |s| Ok(s.to_string()))
    }
}

fn parse_u32(s: &str) -> Result<u32, String> {
    s.parse().map_err(|e: std::num::ParseIntError| e.to_string())
}

fn parse_format(s: &str) -> Result<PlanFormat, String> {
    match s {
        "toml" => Ok(PlanFormat::Toml),
        "json" => Ok(PlanFormat::Json),
        _ => Err("\n  [possible values: toml, json]".into()),
    }
}

/// Splits one subcommand's arguments into options and positionals.
fn split<'s>(spec: &'s Spec, bin: &str, args: Vec<OsString>) -> Result<Matches<'s>, Printout> {
    let fixed = spec.positionals.iter().filter(|p| !p.rest).count();
    let takes_rest = spec.positionals.iter().any(|p| p.rest);
    let mut m = Matches {
        spec,
        positionals: Vec::new(),
        given: Vec::new(),
    };
    let mut only_positionals = false;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let text = arg.to_str().unwrap_or("");
        let rest_now = takes_rest && m.positionals.len() >= fixed;
        if only_positionals || rest_now || text == "-" || !text.starts_with('-') {
            if m.positionals.len() < fixed || takes_rest {
                m.positionals.push(arg);
                continue;
            }
            let shown = arg.to_string_lossy();
            return Err(spec.error(bin, &format!("unexpected argument '{shown}' found")));
        }
        if text == "--" {
            only_positionals = true;
            continue;
        }
        if text == "-h" || text == "--help" {
            return Err(print_out(spec.help(bin)));
        }
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) => (n, Some(OsString::from(v))),
            None => (text, None),
        };
        let Some(opt) = name
            .strip_prefix("--")
            .and_then(|long| spec.opts().find(|o| o.long == long))
        else {
            return Err(spec.error(
                bin,
                &format!("unexpected argument '{text}' found\n\n  tip: to pass '{text}' as a value, use '-- {text}'"),
            ));
        };
        let value = match (opt.value, inline) {
            (Some(_), Some(v)) => v,
            (Some(v), None) => match it.next() {
                Some(next) if next.to_str().is_none_or(|t| t == "-" || !t.starts_with('-')) => next,
                _ => {
                    return Err(error(format!(
                        "error: a value is required for '--{} <{v}>' but none was supplied\n\n{TRY}\n",
                        opt.long
                    )))
                }
            },
            (None, Some(v)) => {
                return Err(spec.error(
                    bin,
                    &format!(
                        "unexpected value '{}' for '--{}' found; no more were expected",
                        v.to_string_lossy(),
                        opt.long
                    ),
                ))
            }
            (None, None) => OsString::new(),
        };
        if !opt.repeat && m.given.iter().any(|(o, _)| o.long == opt.long) {
            return Err(spec.error(
                bin,
                &format!("the argument '--{}' cannot be used multiple times", opt.long),
            ));
        }
        m.given.push((opt, value));
    }
    // Missing positionals, then options another one needs.
    let mut missing: Vec<String> = spec
        .positionals
        .iter()
        .filter(|p| !p.rest)
        .skip(m.positionals.len())
        .map(|p| format!("<{}>", p.name))
        .collect();
    if spec.opts().any(|o| o.long == "snapshot-at") {
        let (at, to) = (m.flag("snapshot-at"), m.flag("snapshot-to"));
        if (to || m.flag("snapshot-continue")) && !at {
            missing.push("--snapshot-at <LINE>".into());
        }
        if at && !to {
            missing.push("--snapshot-to <DIR>".into());
        }
    }
    if !missing.is_empty() {
        let list: String = missing.iter().map(|a| format!("\n  {a}")).collect();
        return Err(spec.error(
            bin,
            &format!("the following required arguments were not provided:{list}"),
        ));
    }
    Ok(m)
}

fn overrides(m: &Matches) -> Result<OverrideArgs, Printout> {
    Ok(OverrideArgs {
        kernel: m.path("kernel"),
        append: m.text("append")?,
        initrd: m.path("initrd"),
        vcpus: m.value("vcpus", parse_u32)?,
        memory: m.value("memory", config::size::parse_size)?,
    })
}

fn snapshot(m: &Matches) -> Result<SnapshotArgs, Printout> {
    Ok(SnapshotArgs {
        control: m.path("control"),
        snapshot_at: m.text("snapshot-at")?,
        snapshot_to: m.path("snapshot-to"),
        snapshot_continue: m.flag("snapshot-continue"),
    })
}

/// A usage error for an option given without the one it needs.
fn requires(m: &Matches, long: &str, needed: &str) -> Result<(), Printout> {
    match m.given.iter().find(|(o, _)| o.long == long) {
        Some((opt, _)) if !m.flag(needed) => {
            let shown = match opt.value {
                Some(v) => format!("--{long} <{v}>"),
                None => format!("--{long}"),
            };
            Err(error(format!(
                "error: '{shown}' needs '--{needed}', which was not given\n\n{TRY}\n"
            )))
        }
        _ => Ok(()),
    }
}

/// A usage error for two options that cannot be given together.
fn conflicts(m: &Matches, a: &str, b: &str) -> Result<(), Printout> {
    if m.flag(a) && m.flag(b) {
        return Err(error(format!(
            "error: '--{a}' cannot be used with '--{b}'\n\n{TRY}\n"
        )));
    }
    Ok(())
}

/// The typed command of a subcommand's matches.
fn command(m: Matches) -> Result<Command, Printout> {
    let first = || PathBuf::from(&m.positionals[0]);
    if m.spec.name == "run" {
        requires(&m, "gdb-wait", "gdb")?;
        // A migrating guest is already running: there is no first
        // instruction for gdb to hold, and a restart would attach late.
        conflicts(&m, "incoming", "gdb")?;
    }
    Ok(match m.spec.name {
        "run" => Command::Run {
            file: first(),
            stats: m.flag("stats"),
            boot_digest: m.flag("boot-digest"),
            expect_plan: m.text("expect-plan")?,
            disable_cap: m
                .all("disable-cap")
                .map(|v| v.to_string_lossy().into_owned())
                .collect(),
            host_limit: m
                .all("host-limit")
                .map(|v| v.to_string_lossy().into_owned())
                .collect(),
            no_seccomp: m.flag("no-seccomp"),
            timeout: m.value("timeout", config::parse_duration)?,
            overrides: overrides(&m)?,
            snap: snapshot(&m)?,
            incoming: m.text("incoming")?,
            gdb: m.text("gdb")?,
            gdb_wait: m.flag("gdb-wait"),
        },
        "restore" => Command::Restore {
            dir: first(),
            machine: m.path("machine"),
            stats: m.flag("stats"),
            verify: m.flag("verify"),
            no_seccomp: m.flag("no-seccomp"),
            timeout: m.value("timeout", config::parse_duration)?,
            snap: snapshot(&m)?,
        },
        "ctl" => {
            let text = |v: &OsString| v.to_string_lossy().into_owned();
            Command::Ctl {
                socket: first(),
                command: text(&m.positionals[1]),
                args: m.positionals[2..].iter().map(text).collect(),
            }
        }
        "check" => Command::Check {
            file: first(),
            overrides: overrides(&m)?,
        },
        "plan" => Command::Plan {
            file: first(),
            format: m.value("format", parse_format)?.unwrap_or(PlanFormat::Toml),
            overrides: overrides(&m)?,
        },
        _ => Command::Caps,
    })
}

/// Parses a whole command line (`args[0]` is the program).
pub fn parse(args: Vec<OsString>) -> Parsed {
    match parse_or_print(args) {
        Ok(c) => Parsed::Command(Box::new(c)),
        Err(p) => Parsed::Print(p),
    }
}

fn parse_or_print(args: Vec<OsString>) -> Result<Command, Printout> {
    let mut it = args.into_iter();
    let bin = it
        .next()
        .map(PathBuf::from)
        .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "berth".into());
    let Some(first) = it.next() else {
        return Err(error(top_help(&bin)));
    };
    let first = first.to_string_lossy().into_owned();
    let find = |name: &str| SPECS.iter().find(|s| s.name == name);
    Err(match first.as_str() {
        "-h" | "--help" => print_out(top_help(&bin)),
        "-V" | "--version" => print_out(format!("berth {}\n", env!("CARGO_PKG_VERSION"))),
        "help" => match it.next().map(|a| a.to_string_lossy().into_owned()) {
            None => print_out(top_help(&bin)),
            Some(name) => match find(&name) {
                Some(spec) => print_out(spec.help(&bin)),
                None if name == "help" => print_out(top_help(&bin)),
                None => top_error(&bin, &format!("unrecognized subcommand '{name}'")),
            },
        },
        name => match find(name) {
            Some(spec) => return split(spec, &bin, it.collect()).and_then(command),
            None if name.starts_with('-') => top_error(&bin, &format!("unexpected argument '{name}' found")),
            None => top_error(&bin, &format!("unrecognized subcommand '{name}'")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Parsed {
        parse(
            std::iter::once("berth")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect(),
        )
    }

    fn printed(args: &[&str]) -> (String, bool, i32) {
        match parse_str(args) {
            Parsed::Print(Printout { text, stderr, code }) => (text, stderr, code),
            Parsed::Command(c) => panic!("{args:?} parsed as {c:?}"),
        }
    }

    fn command_of(args: &[&str]) -> Command {
        match parse_str(args) {
            Parsed::Command(c) => *c,
            Parsed::Print(p) => panic!("{args:?}: {}", p.text),
        }
    }

    #[test]
    fn run_takes_every_option_in_both_spellings() {
        let c = command_of(&[
            "run",
            "m.toml",
            "--stats",
            "--timeout=2m",
            "--disable-cap",
            "SIGNAL_MSI",
            "--disable-cap=IRQFD",
            "--host-limit",
            "memslots=3",
            "--memory",
            "64MiB",
            "--vcpus",
            "3",
            "--snapshot-at",
            "ready",
            "--snapshot-to",
            "/tmp/s",
            "--append",
            "console=ttyS0 x=-1",
        ]);
        let Command::Run {
            file,
            stats,
            boot_digest,
            timeout,
            disable_cap,
            host_limit,
            overrides,
            snap,
            ..
        } = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(file, PathBuf::from("m.toml"));
        assert!(stats && !boot_digest);
        assert_eq!(timeout, Some(120_000));
        assert_eq!(disable_cap, ["SIGNAL_MSI", "IRQFD"]);
        assert_eq!(host_limit, ["memslots=3"]);
        assert_eq!(overrides.memory, Some(64 << 20));
        assert_eq!(overrides.vcpus, Some(3));
        assert_eq!(overrides.append.as_deref(), Some("console=ttyS0 x=-1"));
        assert_eq!(snap.snapshot_at.as_deref(), Some("ready"));
        assert!(!snap.snapshot_continue);
    }

    #[test]
    fn ctl_passes_dashed_arguments_through() {
        let c = command_of(&["ctl", "/tmp/sock", "snapshot", "/tmp/d", "--incremental"]);
        let Command::Ctl { command, args, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(command, "snapshot");
        assert_eq!(args, ["/tmp/d", "--incremental"]);
    }

    #[test]
    fn errors_name_the_option_and_exit_2() {
        for (args, want) in [
            (
                &["run"][..],
                "the following required arguments were not provided:\n  <FILE>",
            ),
            (
                &["run", "m", "--bogus"][..],
                "unexpected argument '--bogus' found",
            ),
            (&["run", "m", "n"][..], "unexpected argument 'n' found"),
            (
                &["run", "m", "--timeout"][..],
                "a value is required for '--timeout <DURATION>' but none was supplied",
            ),
            (
                &["run", "m", "--timeout", "5q"][..],
                "invalid value '5q' for '--timeout <DURATION>': `5q` has unknown unit `q`",
            ),
            (
                &["check", "m", "--memory", "64 MB"][..],
                "invalid value '64 MB' for '--memory <SIZE>': ",
            ),
            (
                &["run", "m", "--vcpus", "abc"][..],
                "invalid value 'abc' for '--vcpus <N>': invalid digit found in string",
            ),
            (
                &["run", "m", "--gdb=tcp:127.0.0.1:1", "--incoming", "unix:/x"][..],
                "'--incoming' cannot be used with '--gdb'",
            ),
            (
                &["run", "m", "--gdb-wait"][..],
                "'--gdb-wait' needs '--gdb', which was not given",
            ),
            (
                &["plan", "m", "--format", "yaml"][..],
                "invalid value 'yaml' for '--format <FORMAT>'\n  [possible values: toml, json]",
            ),
            (
                &["run", "m", "--snapshot-at", "x"][..],
                "provided:\n  --snapshot-to <DIR>",
            ),
            (
                &["run", "m", "--snapshot-continue"][..],
                "provided:\n  --snapshot-at <LINE>",
            ),
            (
                &["run", "m", "--stats", "--stats"][..],
                "the argument '--stats' cannot be used multiple times",
            ),
            (&["ctl", "s"][..], "provided:\n  <COMMAND>"),
            (&["frob"][..], "unrecognized subcommand 'frob'"),
            (&[][..], "Usage: berth <COMMAND>"),
        ] {
            let (text, stderr, code) = printed(args);
            assert!(stderr, "{args:?}: {text}");
            assert_eq!(code, 2, "{args:?}");
            assert!(text.contains(want), "{args:?}: {text}");
        }
    }

    #[test]
    fn help_and_version_go_to_stdout() {
        let (top, stderr, code) = printed(&["--help"]);
        assert!(!stderr && code == 0);
        assert!(
            top.contains("\n  restore  Restore a snapshot and run it on\n"),
            "{top}"
        );
        let (run, _, _) = printed(&["run", "--help"]);
        assert_eq!(run, printed(&["help", "run"]).0);
        assert!(run.starts_with("Build and boot the machine"), "{run}");
        assert!(run.contains("Usage: berth run [OPTIONS] <FILE>\n"), "{run}");
        assert!(run.contains("\n  <FILE>  Machine file\n"), "{run}");
        // One column for every option, as wide as the widest.
        let column = |start: &str, help: &str| {
            let line = run
                .lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no {start:?} in {run}"));
            assert!(line[start.len()..].trim_start().starts_with(help), "{line}");
            line.find(help).unwrap()
        };
        let at = column("      --timeout <DURATION>", "End the VM with exit 6");
        assert_eq!(column("      --stats", "Print exit counts"), at, "{run}");
        assert_eq!(column("  -h, --help", "Print help"), at, "{run}");
        assert!(
            run.lines()
                .filter(|l| l.starts_with("      --"))
                .all(|l| l[..at].ends_with(' ') && !l[at..].starts_with(' ')),
            "{run}"
        );
        let (ctl, _, _) = printed(&["ctl", "-h"]);
        assert!(
            ctl.contains("Usage: berth ctl <SOCKET> <COMMAND> [ARGS]...\n"),
            "{ctl}"
        );
        assert!(ctl.contains("\n  [ARGS]...  The command's arguments\n"), "{ctl}");
        assert_eq!(
            printed(&["-V"]).0,
            format!("berth {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}
