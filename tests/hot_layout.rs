//! The release binary's code layout: the functions of a typical run
//! (tools/hot/functions.txt) sit together at the start of .text, ahead of
//! every other berth function, so a run maps a small part of the binary
//! (tools/hot/cc-hot; the footprint benchmark measures the effect).
//!
//! Checks the binary `make` builds (target/<host>/release/berth): a link
//! that skipped the ordering, or a list gone stale, fails here.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

/// The name without the legacy mangling's hash (`17h<16 hex>E` → `E`).
fn key(name: &str) -> &str {
    let b = name.as_bytes();
    if b.len() > 20 && name.ends_with('E') && &name[b.len() - 20..b.len() - 17] == "17h" {
        &name[..b.len() - 20]
    } else {
        name
    }
}

#[test]
fn hot_functions_come_first_in_the_release_binary() {
    let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let bin = common::repo().join("target").join(host).join("release/berth");
    if !bin.exists() {
        return common::missing_input(
            "hot_functions_come_first_in_the_release_binary",
            &format!("{} is not built (make berth)", bin.display()),
        );
    }
    let list = std::fs::read_to_string(common::repo().join("tools/hot/functions.txt")).unwrap();
    let listed: Vec<&str> = list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let listed_keys: BTreeSet<&str> = listed.iter().map(|n| key(n)).collect();
    let nm = Command::new("nm")
        .arg("--defined-only")
        .arg(&bin)
        .output()
        .expect("run nm");
    assert!(nm.status.success());
    let nm = String::from_utf8(nm.stdout).unwrap();
    let mut text = Vec::new();
    for line in nm.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 3 && matches!(f[1], "t" | "T") {
            text.push((u64::from_str_radix(f[0], 16).unwrap(), f[2]));
        }
    }
    let names: BTreeSet<&str> = text.iter().map(|t| t.1).collect();
    let keys: BTreeSet<&str> = text.iter().map(|t| key(t.1)).collect();
    // cc-hot's rule: a listed name that exists is ordered as it is; one that
    // does not (its hash differs: another rustc, other flags) brings every
    // symbol with its key.
    let exact: BTreeSet<&str> = listed.iter().copied().filter(|n| names.contains(n)).collect();
    let by_key: BTreeSet<&str> = listed
        .iter()
        .filter(|n| !names.contains(*n))
        .map(|n| key(n))
        .collect();
    let berth_listed: Vec<&&str> = listed.iter().filter(|n| n.starts_with("_ZN5berth")).collect();
    let berth_found = berth_listed.iter().filter(|n| keys.contains(key(n))).count();
    assert!(
        berth_found * 10 >= berth_listed.len() * 8,
        "only {berth_found} of the {} listed berth functions exist: the list is stale (make hot-functions)",
        berth_listed.len()
    );
    let hot: Vec<u64> = text
        .iter()
        .filter(|(_, n)| exact.contains(n) || by_key.contains(key(n)))
        .map(|t| t.0)
        .collect();
    let cold: Vec<(u64, &str)> = text
        .iter()
        .filter(|(_, n)| n.starts_with("_ZN5berth") && !listed_keys.contains(key(n)))
        .copied()
        .collect();
    let last_hot = *hot.iter().max().expect("listed functions in the binary");
    let first_cold = cold.iter().min().expect("unlisted berth functions");
    assert!(
        last_hot < first_cold.0,
        "{} (not listed) at {:#x} lies before the end of the hot block at {last_hot:#x}: \
         the binary was not linked through tools/hot/cc-hot",
        first_cold.1,
        first_cold.0
    );
}
