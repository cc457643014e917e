//! Golden plans: every machine file in configs/ has its resolved plan checked
//! in under configs/golden/<name>.plan (canonical TOML + digest line). Any
//! change to what a file means shows up as a diff in review.
//! `make golden` (BERTH_BLESS=1) rewrites them.

mod common;

use berth::plan::dump;

#[test]
fn every_config_matches_its_golden_plan() {
    common::guests();
    common::linux_artifacts();
    let root = common::repo();
    let bless = std::env::var_os("BERTH_BLESS").is_some();
    let mut names: Vec<_> = std::fs::read_dir(root.join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    let mut failures = Vec::new();
    for path in &names {
        let rel = path.strip_prefix(&root).unwrap();
        let cfg = berth::config::load(rel).unwrap_or_else(|e| panic!("{e}"));
        let plan = berth::plan::plan(&cfg);
        let text = format!(
            "{}plan-sha256:{}\n",
            dump::canonical(&plan).unwrap(),
            dump::digest(&plan).unwrap()
        );
        let golden = root
            .join("configs/golden")
            .join(path.file_stem().unwrap())
            .with_extension("plan");
        if bless {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == text => {}
            Ok(_) => failures.push(format!(
                "{} differs from {} (run `make golden` and review the diff)",
                rel.display(),
                golden.display()
            )),
            Err(_) => failures.push(format!(
                "{} has no golden plan {}",
                rel.display(),
                golden.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_digest_matches_cli() {
    common::guests();
    let o = common::run_with_limit(
        {
            let mut c = common::berth();
            c.args(["plan", "configs/default.toml"]);
            c
        },
        std::time::Duration::from_secs(30),
    );
    let golden = std::fs::read_to_string(common::repo().join("configs/golden/default.plan")).unwrap();
    assert_eq!(common::stdout(&o), golden);
}
