//! Canonical rendering of a [`Plan`] and its digest. The digest is sha256
//! over the canonical TOML text, so a reviewer can recompute it from the
//! `berth plan` output alone (everything before the `plan-sha256:` line).

use super::Plan;
use sha2::{Digest, Sha256};

/// Output formats of `berth plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Canonical TOML (what the digest covers).
    Toml,
    /// The same data as pretty JSON.
    Json,
}

/// Errors rendering a plan (a bug, not a user error).
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// TOML serialization failed.
    #[error("cannot render plan as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
    /// JSON serialization failed.
    #[error("cannot render plan as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The canonical TOML text of a plan.
pub fn canonical(plan: &Plan) -> Result<String, DumpError> {
    Ok(toml::to_string(plan)?)
}

/// The plan in the requested format.
pub fn render(plan: &Plan, format: Format) -> Result<String, DumpError> {
    match format {
        Format::Toml => canonical(plan),
        Format::Json => Ok(serde_json::to_string_pretty(plan)? + "\n"),
    }
}

/// Lowercase hex sha256 of the canonical text.
pub fn digest(plan: &Plan) -> Result<String, DumpError> {
    Ok(digest_of_canonical(&canonical(plan)?))
}

/// The digest of an already rendered canonical text ([`render`] with
/// [`Format::Toml`]), so a caller that prints the plan renders it once.
pub fn digest_of_canonical(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    // Table-driven: the VM state's KVM structs (tens of KiB per snapshot or
    // migration, state::hexpod) are encoded here too.
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
            i += 1;
        }
        t
    };
    let mut s = vec![0u8; 2 * bytes.len()];
    for (pair, &b) in s.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
    // Only ASCII digits were written.
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::parse;
    use std::path::Path;

    const FILE: &str = "[machine]\nvcpus = 2\n[[memory]]\nguest_addr = 0\nsize = \"128MiB\"\n[kernel]\npath = \"@KERNEL@\"\n";

    #[test]
    fn digest_is_stable_and_sensitive() {
        let p = super::super::plan(&parse(Path::new("x.toml"), FILE).unwrap());
        let d1 = digest(&p).unwrap();
        let d2 = digest(&p.clone()).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(d1.len(), 64);
        let q =
            super::super::plan(&parse(Path::new("x.toml"), &FILE.replace("vcpus = 2", "vcpus = 3")).unwrap());
        assert_ne!(d1, digest(&q).unwrap());
        // Comments and key order in the file don't change the plan.
        let r = super::super::plan(
            &parse(
                Path::new("y.toml"),
                &format!(
                    "# hello\n{}",
                    FILE.replace(
                        "guest_addr = 0\nsize = \"128MiB\"",
                        "size = 0x800_0000\nguest_addr = 0x0"
                    )
                ),
            )
            .unwrap(),
        );
        assert_eq!(d1, digest(&r).unwrap());
    }

    #[test]
    fn resample_is_shown_only_when_set() {
        let plan = |resample: &str| {
            let text = format!("{FILE}[[device]]\nkind = \"irq-lines\"\n{resample}");
            super::super::plan(&parse(Path::new("x.toml"), &text).unwrap())
        };
        let (off, default, on) = (plan("resample = false\n"), plan(""), plan("resample = true\n"));
        let t = render(&off, Format::Toml).unwrap();
        assert!(t.contains("kind = \"irq-lines\"\nlines = 24\n"), "{t}");
        assert!(!t.contains("resample"), "{t}");
        assert_eq!(digest(&off).unwrap(), digest(&default).unwrap());
        let t = render(&on, Format::Toml).unwrap();
        assert!(
            t.contains("kind = \"irq-lines\"\nlines = 24\nresample = true\n"),
            "{t}"
        );
        assert_ne!(digest(&off).unwrap(), digest(&on).unwrap());
    }

    #[test]
    fn toml_and_json_carry_the_same_fields() {
        let p = super::super::plan(&parse(Path::new("x.toml"), FILE).unwrap());
        let t = render(&p, Format::Toml).unwrap();
        let j: serde_json::Value = serde_json::from_str(&render(&p, Format::Json).unwrap()).unwrap();
        let back: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), j);
        assert!(t.contains("zero_page = \"0x0000000000007000\""), "{t}");
    }
}
