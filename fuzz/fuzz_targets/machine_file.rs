//! machine_file: bytes → machine-file text → `config::parse` → `plan::plan`
//! → `dump::render` (TOML and JSON) and `dump::digest`.
//!
//! Never panics; on top of that it checks:
//! - parsing and planning are deterministic (the same text twice gives equal
//!   plans and equal digests);
//! - rendering never fails (a `DumpError` is documented as a bug);
//! - the canonical TOML parses back as TOML, the JSON as JSON, and both carry
//!   the same data (what `berth plan --format json` promises).
//!
//! The machine file is parsed as `<repo>/configs/fuzz.toml` (an absolute path
//! fixed at build time), so relative paths in it resolve against `configs/`
//! exactly as for the checked-in machine files, whatever the fuzzer's working
//! directory. Seeds name `../Cargo.toml` (always there) as the kernel so they
//! pass validation and reach the planner; verbatim copies of configs/*.toml
//! name `../guests/probe.elf`, which reaches the planner only after
//! `make -C guests`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

use berth::plan::dump::{self, Format};

const MACHINE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/fuzz.toml");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new(MACHINE_FILE);
    let cfg = match berth::config::parse(file, text) {
        Ok(cfg) => cfg,
        Err(e) => {
            // Error rendering (line/column lookup) must not panic either.
            let msg = e.to_string();
            assert!(!msg.is_empty());
            if verbose() {
                eprintln!("rejected: {msg}");
            }
            return;
        }
    };
    let plan = berth::plan::plan(&cfg);

    // Determinism: the same text parsed and planned again gives the same plan.
    let cfg2 = berth::config::parse(file, text).expect("second parse of an accepted file failed");
    let plan2 = berth::plan::plan(&cfg2);
    assert_eq!(plan, plan2, "planning is not deterministic");
    assert_eq!(berth::plan::plan(&cfg), plan, "planning the same config twice differs");

    let toml_text = dump::render(&plan, Format::Toml).expect("plan cannot be rendered as TOML");
    let json_text = dump::render(&plan, Format::Json).expect("plan cannot be rendered as JSON");
    let d1 = dump::digest(&plan).expect("plan digest failed");
    let d2 = dump::digest(&plan2).expect("plan digest failed");
    assert_eq!(d1, d2, "plan digest is not deterministic");
    assert_eq!(d1.len(), 64);
    assert_eq!(
        dump::canonical(&plan).expect("canonical rendering failed"),
        toml_text,
        "canonical text differs from the TOML rendering"
    );

    // Both renderings parse back and carry the same data.
    let back: toml::Value = toml::from_str(&toml_text)
        .unwrap_or_else(|e| panic!("canonical plan TOML does not parse back: {e}\n{toml_text}"));
    let json: serde_json::Value = serde_json::from_str(&json_text)
        .unwrap_or_else(|e| panic!("plan JSON does not parse back: {e}\n{json_text}"));
    let back_json = serde_json::to_value(&back).expect("TOML value to JSON");
    assert_eq!(back_json, json, "TOML and JSON renderings of the plan disagree");
    if verbose() {
        eprintln!("planned: plan-sha256 {d1}");
    }
});

/// BERTH_FUZZ_VERBOSE=1: say what happened to each input (for triage).
fn verbose() -> bool {
    static V: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V.get_or_init(|| std::env::var_os("BERTH_FUZZ_VERBOSE").is_some_and(|v| v != "0"))
}
