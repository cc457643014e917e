//! serde for kvm-bindings' plain-data structs as one hex string of their
//! bytes (state version 2), for `#[serde(with = …)]`.
//!
//! kvm-bindings serialises each struct as its bytes, which JSON writes as an
//! array of numbers: a vCPU's XSAVE area alone is 4096 of them, and parsing
//! such arrays was most of the state's decode time (the migration target
//! decodes the state inside the guest's downtime; measured with
//! `serde_json::Value` on a 1-vCPU state: 264 µs with arrays, 30 µs with hex
//! strings). Version 1's arrays are still read, so older snapshots restore.
//!
//! Struct bytes come from zerocopy's `IntoBytes` (the trait kvm-bindings'
//! own serde uses: no padding, no `unsafe` here); they go back through the
//! struct's own `Deserialize` (its bytes visitor), after a length check.

use serde::de::value::{BytesDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::Serializer;
use std::fmt;
use std::marker::PhantomData;
use zerocopy::{Immutable, IntoBytes};

/// Each ASCII byte's value as a hex digit, 0xff if it is none.
const NIBBLES: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Bytes as lowercase hex (the project's one encoder, [`crate::plan::dump::hex`]).
fn encode(b: &[u8]) -> String {
    crate::plan::dump::hex(b)
}

/// Hex (either case) back to bytes: the state's one decoder (device states
/// use it through [`super::devices::from_hex`]). Table-driven: it runs
/// inside a migration's downtime, over ~10 KiB per vCPU.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return Err("hex of odd length".into());
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut bad = 0u8;
    for p in s.chunks_exact(2) {
        let (hi, lo) = (NIBBLES[usize::from(p[0])], NIBBLES[usize::from(p[1])]);
        bad |= hi | lo;
        out.push(hi << 4 | (lo & 15));
    }
    if bad & 0xf0 != 0 {
        let c = s
            .iter()
            .find(|&&c| NIBBLES[usize::from(c)] == 0xff)
            .copied()
            .unwrap_or(b'?');
        return Err(format!("bad hex digit {:?}", c as char));
    }
    Ok(out)
}

/// [`decode_hex`] for serde.
fn decode<E: de::Error>(s: &str) -> Result<Vec<u8>, E> {
    decode_hex(s).map_err(E::custom)
}

/// `T` from exactly its bytes.
fn from_bytes<T: DeserializeOwned, E: de::Error>(b: &[u8]) -> Result<T, E> {
    let want = std::mem::size_of::<T>();
    if b.len() != want {
        return Err(E::invalid_length(b.len(), &format!("{want} bytes").as_str()));
    }
    T::deserialize(BytesDeserializer::<E>::new(b))
}

/// One struct: a hex string (version 2) or an array of byte values (1).
struct One<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for One<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a hex string or an array of bytes")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        from_bytes(&decode::<E>(s)?)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::deserialize(SeqAccessDeserializer::new(seq))
    }
}

/// Serialises `t` as the hex of its bytes.
pub fn serialize<T: IntoBytes + Immutable, S: Serializer>(t: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&encode(t.as_bytes()))
}

/// Reads what [`serialize`] wrote, or version 1's array of bytes.
pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(One(PhantomData))
}

/// `Option<T>`: `null` or one hex string.
pub mod option {
    use super::*;

    /// `None` as `null`, `Some` as the hex of its bytes.
    pub fn serialize<T: IntoBytes + Immutable, S: Serializer>(
        t: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&encode(t.as_bytes())),
            None => s.serialize_none(),
        }
    }

    struct Opt<T>(PhantomData<T>);

    impl<'de, T: DeserializeOwned> Visitor<'de> for Opt<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("null, a hex string or an array of bytes")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    /// Reads what [`serialize`] wrote, or version 1's form.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_option(Opt(PhantomData))
    }
}

/// `Vec<T>`: one hex string of the structs' bytes, end to end.
pub mod vec {
    use super::*;

    /// The structs' bytes, end to end, as hex.
    pub fn serialize<T: IntoBytes + Immutable, S: Serializer>(t: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(t.as_bytes()))
    }

    struct Many<T>(PhantomData<T>);

    impl<'de, T: DeserializeOwned> Visitor<'de> for Many<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a hex string or an array of byte arrays")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<T>, E> {
            let b = decode::<E>(s)?;
            let size = std::mem::size_of::<T>().max(1);
            if !b.len().is_multiple_of(size) {
                return Err(E::invalid_length(
                    b.len(),
                    &format!("a multiple of {size} bytes").as_str(),
                ));
            }
            b.chunks(size).map(from_bytes).collect()
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Vec::<T>::deserialize(SeqAccessDeserializer::new(seq))
        }
    }

    /// Reads what [`serialize`] wrote, or version 1's array of arrays.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_any(Many(PhantomData))
    }
}

/// `Vec<u8>`: one hex string.
pub mod bytes {
    use super::*;

    /// The bytes as hex.
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(b))
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a hex string or an array of bytes")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
            decode(s)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<u8>, A::Error> {
            Vec::<u8>::deserialize(SeqAccessDeserializer::new(seq))
        }
    }

    /// Reads what [`serialize`] wrote, or version 1's array of bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use kvm_bindings::{kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_xsave};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct New {
        #[serde(with = "super")]
        regs: kvm_regs,
        #[serde(with = "super::option")]
        xsave: Option<kvm_xsave>,
        #[serde(with = "super::option")]
        none: Option<kvm_regs>,
        #[serde(with = "super::vec")]
        msrs: Vec<kvm_msr_entry>,
        #[serde(with = "super::bytes")]
        fpu: Vec<u8>,
        #[serde(with = "super")]
        lapic: kvm_lapic_state,
    }

    /// Version 1's layout: kvm-bindings' own serde (arrays of numbers).
    #[derive(Serialize)]
    struct Old {
        regs: kvm_regs,
        xsave: Option<kvm_xsave>,
        none: Option<kvm_regs>,
        msrs: Vec<kvm_msr_entry>,
        fpu: Vec<u8>,
        lapic: kvm_lapic_state,
    }

    fn sample() -> (kvm_regs, kvm_xsave, Vec<kvm_msr_entry>, kvm_lapic_state) {
        let regs = kvm_regs {
            rax: 0x1122_3344_5566_7788,
            rip: 0xffff_ffff_8100_0000,
            rflags: 0x246,
            ..Default::default()
        };
        let mut xsave = kvm_xsave::default();
        xsave.region[0] = 0x037f;
        xsave.region[1023] = 0xdead_beef;
        let msrs = vec![
            kvm_msr_entry {
                index: 0x10,
                data: 12345,
                ..Default::default()
            },
            kvm_msr_entry {
                index: 0xc000_0080,
                data: 0xd01,
                ..Default::default()
            },
        ];
        let mut lapic = kvm_lapic_state::default();
        lapic.regs[0x20] = 1;
        lapic.regs[1023] = -1;
        (regs, xsave, msrs, lapic)
    }

    fn check(n: &New) {
        let (regs, xsave, msrs, lapic) = sample();
        assert_eq!(n.regs.rax, regs.rax);
        assert_eq!(n.regs.rip, regs.rip);
        assert_eq!(n.xsave.as_ref().unwrap().region, xsave.region);
        assert!(n.none.is_none());
        assert_eq!(n.msrs.len(), 2);
        assert_eq!((n.msrs[1].index, n.msrs[1].data), (msrs[1].index, msrs[1].data));
        assert_eq!(n.fpu, vec![1, 2, 255]);
        assert_eq!(n.lapic.regs, lapic.regs);
    }

    #[test]
    fn hex_round_trips_and_version_1_arrays_still_read() {
        let (regs, xsave, msrs, lapic) = sample();
        let new = New {
            regs,
            xsave: Some(xsave),
            none: None,
            msrs: msrs.clone(),
            fpu: vec![1, 2, 255],
            lapic,
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""fpu":"0102ff""#), "{json}");
        assert!(!json.contains("[0,"), "no arrays of numbers: {json}");
        check(&serde_json::from_str(&json).unwrap());
        let old = Old {
            regs,
            xsave: Some(sample().1),
            none: None,
            msrs,
            fpu: vec![1, 2, 255],
            lapic,
        };
        let json = serde_json::to_string(&old).unwrap();
        assert!(json.contains("[0,"), "version 1 writes arrays: {}", &json[..80]);
        check(&serde_json::from_str(&json).unwrap());
    }

    #[test]
    fn wrong_lengths_and_bad_digits_are_refused() {
        let e = serde_json::from_str::<New>(r#"{"regs":"00ff"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("144 bytes"), "{e}");
        #[derive(Deserialize, Debug)]
        struct M {
            #[serde(with = "super::vec")]
            #[allow(dead_code)]
            msrs: Vec<kvm_msr_entry>,
        }
        let e = serde_json::from_str::<M>(r#"{"msrs":"00"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple of 16"), "{e}");
        let e = serde_json::from_str::<M>(r#"{"msrs":"zz"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad hex digit"), "{e}");
    }
}
