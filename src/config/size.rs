//! Byte sizes in the machine file: an integer (bytes) or a string with a
//! binary unit (`"256MiB"`, `"4 KiB"`, `"1GiB"`).

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A size in bytes, as written in the machine file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Parses `"<integer>[ ]<unit>"` where unit is B, KiB, MiB, GiB, TiB (or
/// none). Underscores are allowed between digits, hex with `0x`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && !(t.starts_with("0x") || t.starts_with("0X")))
        .unwrap_or(t.len());
    // Hex numbers contain letters; only a known unit suffix ends them.
    let (num, unit) = if t.starts_with("0x") || t.starts_with("0X") {
        let units = ["KiB", "MiB", "GiB", "TiB", "B"];
        match units.iter().find(|u| t.ends_with(*u)) {
            Some(u) => (&t[..t.len() - u.len()], *u),
            None => (t, ""),
        }
    } else {
        (&t[..split], &t[split..])
    };
    let num = num.trim().replace('_', "");
    if num.is_empty() {
        return Err(format!("`{s}` is not a size: expected a number, e.g. \"256MiB\""));
    }
    let value = if let Some(hex) = num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        num.parse::<u64>()
    }
    .map_err(|_| format!("`{s}` is not a size: `{num}` is not a whole number that fits 64 bits"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => {
            return Err(format!(
                "`{s}` has unknown unit `{other}`: use B, KiB, MiB, GiB or TiB"
            ))
        }
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` overflows 64 bits"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: a byte count or a string such as \"256MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size must not be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        assert_eq!(parse_size("0x10KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1_024B"), Ok(1024));
    }

    #[test]
    fn errors() {
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12 MB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("16777216TiB").unwrap_err().contains("overflows"));
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("-1").is_err());
    }
}
