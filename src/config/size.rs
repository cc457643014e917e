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

/// A duration in the machine file: `"30s"`, `"2m"`, `"500ms"`, `"1h"`, or an
/// integer number of seconds. Stored in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

/// Parses a duration string (see [`Millis`]).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: u64 = num
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: expected e.g. \"30s\", \"2m\" or \"500ms\""))?;
    let mult = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("`{s}` has unknown unit `{other}`: use ms, s, m or h")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{s}` must be positive and below 2^64 ms"))
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Millis;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration: seconds, or a string such as \"30s\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Millis, E> {
                u64::try_from(v)
                    .ok()
                    .and_then(|s| s.checked_mul(1000))
                    .filter(|&ms| ms > 0)
                    .map(Millis)
                    .ok_or_else(|| E::custom(format!("timeout must be positive, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Millis, E> {
                self.visit_i64(i64::try_from(v).map_err(|_| E::custom("timeout too large"))?)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Millis, E> {
                parse_duration(v).map(Millis).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("2m"), Ok(120_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("7"), Ok(7000));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
    }

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
