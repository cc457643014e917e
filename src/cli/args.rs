//! The command line's grammar: subcommands, their options and arguments,
//! `--help`/`--version`, and usage errors (exit 2) that name the option.
//!
//! Hand-written from one table per subcommand (`table.rs`), in the format
//! clap printed before: clap and its helper crates were about 200 KiB of
//! berth's text, and berth's text is its resident memory (issue 15).

mod table;

use super::{Command, OverrideArgs, PlanFormat, SnapshotArgs};
use crate::config;
use std::ffi::OsString;
use std::path::PathBuf;
use table::{top_help, Opt, Spec, SPECS, TRY};

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
    fn error(&self, bin: &str, msg: &str) -> Printout {
        error(format!("error: {msg}\n\nUsage: {}\n\n{TRY}\n", self.usage(bin)))
    }
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
        let shown = opt.shown();
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
        Some((opt, _)) if !m.flag(needed) => Err(error(format!(
            "error: '{}' needs '--{needed}', which was not given\n\n{TRY}\n",
            opt.shown()
        ))),
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
mod tests;
