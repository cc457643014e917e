//! tests/kut/expected.toml: what this host must give for each test, under
//! berth and (for the record) under QEMU.

use crate::run::Status;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One test's entry.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// What berth must give.
    pub berth: Status,
    /// Why, when it is not PASS (the reason seen, in words).
    pub why: Option<String>,
    /// What QEMU gave on this host (`make kut QEMU=1`), for the record.
    pub qemu: Option<Status>,
    /// QEMU's reason, when it is not PASS.
    pub qemu_why: Option<String>,
    /// For a test known to time out here: stop it after this long instead
    /// of KUT's timeout (keeps make test short; --kut-timeouts and --qemu
    /// ignore it).
    pub timeout: Option<String>,
}

/// The whole file: test name → expectation.
pub type Expectations = BTreeMap<String, Expectation>;

/// Reads the file; errors name it.
pub fn load(path: &Path) -> Result<Expectations, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// How a run compares with the file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Expected PASS, got something else: these fail `make kut`.
    pub regressions: Vec<(String, Status, String)>,
    /// Expected something else, got PASS: the file needs updating.
    pub unexpected_passes: Vec<(String, Status, String)>,
    /// Neither PASS, but not the expected word (e.g. FAIL instead of TIMEOUT).
    pub changed: Vec<(String, Status, Status)>,
    /// Tests the file does not list.
    pub unlisted: Vec<(String, Status)>,
}

impl Verdict {
    /// Compares `(name, status, details)` results with `exp`.
    pub fn new<'a>(exp: &Expectations, results: impl Iterator<Item = (&'a str, Status, &'a str)>) -> Verdict {
        let mut v = Verdict::default();
        for (name, got, details) in results {
            let Some(e) = exp.get(name) else {
                v.unlisted.push((name.to_string(), got));
                continue;
            };
            match (e.berth, got) {
                (a, b) if a == b => {}
                (Status::Pass, b) => v.regressions.push((name.to_string(), b, details.to_string())),
                (a, Status::Pass) => {
                    let why = e.why.clone().unwrap_or_default();
                    v.unexpected_passes.push((name.to_string(), a, why))
                }
                (a, b) => v.changed.push((name.to_string(), a, b)),
            }
        }
        v
    }

    /// Prints the comparison; true when there is no regression.
    pub fn report(&self, file: &Path) -> bool {
        let f = file.display();
        for (n, got, d) in &self.regressions {
            println!("kut: REGRESSION {n}: expected PASS, got {got} ({d})");
        }
        for (n, was, why) in &self.unexpected_passes {
            println!("kut: unexpected PASS {n} (expected {was}: {why}): update {f}");
        }
        for (n, was, got) in &self.changed {
            println!("kut: {n}: expected {was}, got {got}: update {f} if this is the new normal");
        }
        for (n, got) in &self.unlisted {
            println!("kut: {n} ({got}) is not in {f}: add it");
        }
        println!(
            "kut: against {f}: {} regressions, {} unexpected passes, {} other changes, {} unlisted",
            self.regressions.len(),
            self.unexpected_passes.len(),
            self.changed.len(),
            self.unlisted.len()
        );
        self.regressions.is_empty()
    }
}

/// The file rewritten from a run (`--bless`): berth's word for every test
/// that ran, its details as `why` (an existing `why` stays while the word
/// is the same), and QEMU's word and details from `qemu` when that ran,
/// else the file's. Entries for tests that did not run are kept.
pub fn bless(
    old: &Expectations,
    results: &[(String, crate::run::Result)],
    qemu: Option<&BTreeMap<String, crate::qemu::Line>>,
) -> String {
    let mut s = String::from(
        "# What `make kut` must give on this repository's dev host (PVM nested KVM: guest CPL0 code is\n\
         # emulated, and the emulator cannot do int3, 32-bit iret, cmpxchg16b, xrstor, clwb, invpcid,\n\
         # xgetbv, stac, movbe, rdpru; vmcall hangs). `berth` is checked: a test expected to PASS that\n\
         # does not fails make kut. `qemu` is what KUT's run_tests.sh gave under QEMU here\n\
         # (make kut QEMU=1), for the record. Rewrite with `make kut KUT_ARGS=--bless` and review the diff.\n",
    );
    for (name, r) in results {
        let prev = old.get(name);
        let why = match prev {
            _ if r.status == Status::Pass => None,
            Some(p) if p.berth == r.status && p.why.is_some() => p.why.clone(),
            _ => Some(r.details.clone()),
        };
        let (q, qwhy) = match qemu {
            Some(q) => (
                q.get(name).map(|l| l.status),
                q.get(name).map(|l| l.details.clone()),
            ),
            None => (prev.and_then(|p| p.qemu), prev.and_then(|p| p.qemu_why.clone())),
        };
        let cap = prev
            .filter(|p| p.berth == r.status)
            .and_then(|p| p.timeout.clone());
        entry(&mut s, name, r.status, why, q, qwhy, cap);
    }
    for (name, p) in old {
        if !results.iter().any(|(n, _)| n == name) {
            entry(
                &mut s,
                name,
                p.berth,
                p.why.clone(),
                p.qemu,
                p.qemu_why.clone(),
                p.timeout.clone(),
            );
        }
    }
    s
}

fn entry(
    s: &mut String,
    name: &str,
    berth: Status,
    why: Option<String>,
    qemu: Option<Status>,
    qwhy: Option<String>,
    timeout: Option<String>,
) {
    use crate::machine::quote;
    let _ = write!(s, "\n[{name}]\nberth = \"{berth}\"\n");
    if let Some(why) = why.filter(|w| !w.is_empty()) {
        let _ = writeln!(s, "why = {}", quote(&why));
    }
    if let Some(t) = timeout {
        let _ = writeln!(s, "timeout = {}", quote(&t));
    }
    if let Some(q) = qemu {
        let _ = writeln!(s, "qemu = \"{q}\"");
        if let Some(why) = qwhy.filter(|w| q != Status::Pass && !w.is_empty()) {
            let _ = writeln!(s, "qemu_why = {}", quote(&why));
        }
    }
}

/// QEMU results that differ from the file's `qemu` words: (name, file,
/// got). Informational: QEMU is not what `make kut` checks.
pub fn qemu_changes<'a>(
    exp: &Expectations,
    got: impl Iterator<Item = (&'a str, Status, &'a str)>,
) -> Vec<String> {
    got.filter_map(|(name, status, details)| {
        let e = exp.get(name)?;
        match e.qemu {
            Some(want) if want == status => None,
            want => Some(format!(
                "{name}: QEMU gave {status} ({details}); {} says {} ({})",
                "the file",
                want.map_or("nothing".to_string(), |w| w.to_string()),
                e.qemu_why.as_deref().unwrap_or("")
            )),
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_each_way() {
        let exp: Expectations = toml::from_str(
            r#"
            [a]
            berth = "PASS"
            [b]
            berth = "FAIL"
            why = "xgetbv"
            qemu = "FAIL"
            [c]
            berth = "TIMEOUT"
            [d]
            berth = "SKIP"
            "#,
        )
        .unwrap();
        let got = [
            ("a", Status::Fail, "boom"),
            ("b", Status::Pass, ""),
            ("c", Status::Fail, ""),
            ("d", Status::Skip, ""),
            ("e", Status::Pass, ""),
        ];
        let v = Verdict::new(&exp, got.into_iter());
        assert_eq!(v.regressions, [("a".into(), Status::Fail, "boom".into())]);
        assert_eq!(v.unexpected_passes, [("b".into(), Status::Fail, "xgetbv".into())]);
        assert_eq!(v.changed, [("c".into(), Status::Timeout, Status::Fail)]);
        assert_eq!(v.unlisted, [("e".into(), Status::Pass)]);
        assert!(!v.report(Path::new("x.toml")));
    }

    #[test]
    fn bless_round_trips_and_keeps_reasons() {
        let old: Expectations = toml::from_str(
            "[a]\nberth = \"FAIL\"\nwhy = \"curated\"\nqemu = \"FAIL\"\n[z]\nberth = \"TIMEOUT\"\ntimeout = \"5s\"\n",
        )
        .unwrap();
        let r = |status, details: &str| crate::run::Result {
            status,
            details: details.into(),
            wall: std::time::Duration::ZERO,
        };
        let results = [
            ("a".to_string(), r(Status::Fail, "raw")),
            ("b".to_string(), r(Status::Timeout, "t \"q\"")),
        ];
        let text = bless(&old, &results, None);
        let new: Expectations = toml::from_str(&text).unwrap();
        assert_eq!(new["a"].why.as_deref(), Some("curated"));
        assert_eq!(new["a"].qemu, Some(Status::Fail));
        assert_eq!(new["b"].berth, Status::Timeout);
        assert_eq!(new["b"].why.as_deref(), Some("t \"q\""));
        assert_eq!(new["z"].timeout.as_deref(), Some("5s"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Expectations>("[a]\nberth = \"PASS\"\nwhy_not = 1\n").is_err());
        assert!(toml::from_str::<Expectations>("[a]\nberth = \"MAYBE\"\n").is_err());
    }
}
