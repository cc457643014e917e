//! The command-line grammar's tests: every option in both spellings, usage
//! errors and their exit code, help and version.

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
