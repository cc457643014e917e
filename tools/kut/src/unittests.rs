//! `x86/unittests.cfg`: the test list, read with the semantics of KUT's
//! `scripts/common.bash` (`for_each_unittest`), and the per-test filters of
//! `scripts/runtime.bash` (`run`): arch, nodefault, accel, disabled_if,
//! check, missing file.

use std::path::Path;

/// One `[section]` of unittests.cfg.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitTest {
    /// The section name.
    pub name: String,
    /// `file =`: the .flat under x86/.
    pub file: String,
    /// `smp =` (default "1"), unexpanded.
    pub smp: String,
    /// `test_args =`, unexpanded (becomes QEMU's `-append`).
    pub test_args: Option<String>,
    /// `extra_params =` / `qemu_params =`, unexpanded, newlines kept.
    pub params: String,
    /// `groups =`, split on blanks.
    pub groups: Vec<String>,
    /// `arch =`.
    pub arch: Option<String>,
    /// `check =`: `path=value` words.
    pub check: Vec<String>,
    /// `accel =`.
    pub accel: Option<String>,
    /// `timeout =` as written (timeout(1) syntax).
    pub timeout: Option<String>,
    /// `disabled_if =`: a bash condition.
    pub disabled_if: Option<String>,
}

/// `key *= *value` on one line, as the bash regexes in common.bash match it.
fn key_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?;
    let rest = rest.trim_start_matches(' ');
    let rest = rest.strip_prefix('=')?;
    Some(rest.trim_start_matches(' '))
}

/// Parses unittests.cfg text. Lines are trimmed like bash `read -r` does;
/// lines matching no rule (comments, blanks) are ignored. A params value
/// starting with `"""` runs to the line ending in `"""`.
pub fn parse(text: &str) -> Vec<UnitTest> {
    let mut tests = Vec::new();
    let mut cur: Option<UnitTest> = None;
    let mut lines = text.lines();
    while let Some(raw) = lines.next() {
        let line = raw.trim_matches(|c| c == ' ' || c == '\t');
        if line.starts_with('[') && line.ends_with(']') && line.len() >= 2 {
            if let Some(t) = cur.take() {
                tests.push(t);
            }
            cur = Some(UnitTest {
                name: line[1..line.len() - 1].to_string(),
                smp: "1".into(),
                ..UnitTest::default()
            });
            continue;
        }
        let Some(t) = cur.as_mut() else { continue };
        if let Some(v) = key_value(line, "file") {
            t.file = v.to_string();
        } else if let Some(v) = key_value(line, "smp") {
            t.smp = v.to_string();
        } else if let Some(v) = key_value(line, "test_args") {
            t.test_args = Some(v.to_string());
        } else if let Some(v) = key_value(line, "extra_params").or_else(|| key_value(line, "qemu_params")) {
            if let Some(first) = v.strip_prefix("\"\"\"") {
                let mut opts = format!("{first}\n");
                for more in lines.by_ref() {
                    let more = more.trim_matches(|c| c == ' ' || c == '\t');
                    if let Some(end) = more.trim_end().strip_suffix("\"\"\"") {
                        opts.push_str(end);
                        break;
                    }
                    opts.push_str(more);
                    opts.push('\n');
                }
                t.params = opts;
            } else {
                t.params = v.to_string();
            }
        } else if let Some(v) = key_value(line, "groups") {
            t.groups = v.split_whitespace().map(String::from).collect();
        } else if let Some(v) = key_value(line, "arch") {
            t.arch = Some(v.to_string());
        } else if let Some(v) = key_value(line, "check") {
            t.check = v.split_whitespace().map(String::from).collect();
        } else if let Some(v) = key_value(line, "accel") {
            t.accel = Some(v.to_string());
        } else if let Some(v) = key_value(line, "timeout") {
            t.timeout = Some(v.to_string());
        } else if let Some(v) = key_value(line, "disabled_if") {
            t.disabled_if = Some(v.to_string());
        }
    }
    if let Some(t) = cur.take() {
        tests.push(t);
    }
    tests
}

/// What the user asked for on the command line.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Test names (KUT's `only_tests`); empty = all.
    pub names: Vec<String>,
    /// `-g GROUP` (KUT's `only_group`).
    pub group: Option<String>,
    /// `-a`: run nodefault tests too.
    pub all: bool,
}

impl Selection {
    /// KUT leaves these out silently (not even a SKIP line).
    pub fn selects(&self, t: &UnitTest) -> bool {
        (self.names.is_empty() || self.names.contains(&t.name))
            && self
                .group
                .as_ref()
                .is_none_or(|g| t.groups.iter().any(|x| x == g))
    }
}

/// The runtime.bash filters, in its order. `Some(reason)` = SKIP with that
/// reason. `kernel` is the .flat path; `build_dir` the KUT tree (cwd for
/// disabled_if).
pub fn skip_reason(t: &UnitTest, sel: &Selection, kernel: &Path, build_dir: &Path) -> Option<String> {
    let has = |g: &str| t.groups.iter().any(|x| x == g);
    if has("pv-host") {
        return Some("no gen-se-header available for pv-host test".into());
    }
    if sel.group.is_none() && has("nodefault") && !sel.all {
        return Some("test marked as manual run only".into());
    }
    if let Some(arch) = &t.arch {
        if arch != "x86_64" {
            return Some(format!("{arch} only"));
        }
    }
    if let Some(accel) = &t.accel {
        if accel != "kvm" {
            return Some(format!("{accel} only, but ACCEL=kvm"));
        }
    }
    if let Some(cond) = &t.disabled_if {
        let disabled = std::process::Command::new("bash")
            .arg("-c")
            .arg(cond)
            .current_dir(build_dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if disabled {
            return Some(format!("disabled because: {cond}"));
        }
    }
    for c in &t.check {
        let (path, value) = c.split_once('=').unwrap_or((c, ""));
        let ok = std::fs::read_to_string(path)
            .map(|s| s.strip_suffix('\n').unwrap_or(&s) == value)
            .unwrap_or(false);
        if !ok {
            return Some(format!("{path} not equal to {value}"));
        }
    }
    if !kernel.is_file() {
        return Some(format!("Test file '{}' not found", kernel.display()));
    }
    None
}

/// timeout(1) durations: a number with an optional s/m/h/d suffix.
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        's' => (&s[..s.len() - 1], 1.0),
        'm' => (&s[..s.len() - 1], 60.0),
        'h' => (&s[..s.len() - 1], 3600.0),
        'd' => (&s[..s.len() - 1], 86400.0),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v >= 0.0).then_some(v * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
# comment
[x2apic]
file = apic.flat
smp = 2
qemu_params = -cpu qemu64,+x2apic,+tsc-deadline
arch = x86_64
timeout = 30
groups = apic

#[init]
#file = init.flat

[vmexit_cpuid]
file = vmexit.flat
test_args = 'cpuid'
groups = vmexit nodefault

[multi]
file = m.flat
extra_params = """-cpu max
  -m 2048"""
check = /a=Y /b=0
"#;

    #[test]
    fn parses_sections_keys_and_multiline_params() {
        let t = parse(CFG);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].name, "x2apic");
        assert_eq!(t[0].smp, "2");
        assert_eq!(t[0].params, "-cpu qemu64,+x2apic,+tsc-deadline");
        assert_eq!(t[0].timeout.as_deref(), Some("30"));
        assert_eq!(t[1].name, "vmexit_cpuid");
        assert_eq!(t[1].smp, "1");
        assert_eq!(t[1].test_args.as_deref(), Some("'cpuid'"));
        assert_eq!(t[1].groups, ["vmexit", "nodefault"]);
        assert_eq!(t[2].params, "-cpu max\n-m 2048");
        assert_eq!(t[2].check, ["/a=Y", "/b=0"]);
    }

    #[test]
    fn filters_follow_runtime_bash() {
        let t = parse(CFG);
        let sel = Selection::default();
        let k = Path::new("/nonexistent.flat");
        let d = Path::new("/");
        assert_eq!(
            skip_reason(&t[1], &sel, k, d).unwrap(),
            "test marked as manual run only"
        );
        let grp = Selection {
            group: Some("vmexit".into()),
            ..Selection::default()
        };
        assert!(grp.selects(&t[1]) && !grp.selects(&t[0]));
        assert!(skip_reason(&t[1], &grp, k, d).unwrap().starts_with("Test file"));
        assert_eq!(skip_reason(&t[2], &sel, k, d).unwrap(), "/a not equal to Y");
        let mut i386 = t[0].clone();
        i386.arch = Some("i386".into());
        assert_eq!(skip_reason(&i386, &sel, k, d).unwrap(), "i386 only");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90.0));
        assert_eq!(parse_duration("30"), Some(30.0));
        assert_eq!(parse_duration("2m"), Some(120.0));
        assert_eq!(parse_duration("x"), None);
    }
}
