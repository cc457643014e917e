//! AML encoding for the DSDT (ACPI 6.4 §20): the few opcodes, small
//! resource descriptors and `PkgLength`s berth's DSDT needs, encoded the
//! way `iasl` encodes them.

use super::AcpiError;

// AML opcodes and prefixes (ACPI 6.4 §20.3).
pub(super) const AML_ZERO_OP: u8 = 0x00;
pub(super) const AML_ONE_OP: u8 = 0x01;
pub(super) const AML_NAME_OP: u8 = 0x08;
pub(super) const AML_BYTE_PREFIX: u8 = 0x0a;
pub(super) const AML_WORD_PREFIX: u8 = 0x0b;
pub(super) const AML_DWORD_PREFIX: u8 = 0x0c;
pub(super) const AML_QWORD_PREFIX: u8 = 0x0e;
pub(super) const AML_STRING_PREFIX: u8 = 0x0d;
pub(super) const AML_SCOPE_OP: u8 = 0x10;
pub(super) const AML_BUFFER_OP: u8 = 0x11;
pub(super) const AML_PACKAGE_OP: u8 = 0x12;
pub(super) const AML_EXT_OP_PREFIX: u8 = 0x5b;
pub(super) const AML_DEVICE_OP: u8 = 0x82;

// Small resource descriptors (ACPI 6.4 §6.4.2).
/// IRQ descriptor without the optional flags byte (`IRQNoFlags`).
pub(super) const RES_IRQ_NO_FLAGS: u8 = 0x22;
/// I/O port descriptor.
pub(super) const RES_IO: u8 = 0x47;
/// I/O port descriptor information: 16-bit decode.
pub(super) const RES_IO_DECODE16: u8 = 0x01;
/// End tag; followed by a checksum byte, 0 meaning "valid".
pub(super) const RES_END_TAG: u8 = 0x79;

/// PkgLength for a package whose contents after the PkgLength are
/// `body_len` bytes; the encoded length counts its own bytes too
/// (ACPI 6.4 §20.2.4).
pub(super) fn pkg_length(body_len: usize) -> Result<Vec<u8>, AcpiError> {
    // One byte: 6-bit length.
    if body_len < 0x3f {
        return Ok(vec![(body_len + 1) as u8]);
    }
    // 2..=4 bytes: a lead byte with the byte count in bits 7:6 and the low
    // nibble in bits 3:0, then 8 bits per following byte.
    for extra in 1..=3usize {
        // Saturates to a value no encoding accepts.
        let total = body_len.saturating_add(extra + 1);
        if total < 1 << (4 + 8 * extra) {
            let mut out = Vec::with_capacity(extra + 1);
            out.push(((extra as u8) << 6) | (total & 0xf) as u8);
            for i in 0..extra {
                out.push((total >> (4 + 8 * i)) as u8);
            }
            return Ok(out);
        }
    }
    Err(AcpiError::TooLarge {
        what: "AML package",
        len: body_len,
    })
}

/// The shortest AML encoding of an integer constant.
pub(super) fn aml_integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![AML_ZERO_OP],
        1 => vec![AML_ONE_OP],
        _ => {
            let bytes = v.to_le_bytes();
            let (prefix, n) = if v <= 0xff {
                (AML_BYTE_PREFIX, 1)
            } else if v <= 0xffff {
                (AML_WORD_PREFIX, 2)
            } else if v <= 0xffff_ffff {
                (AML_DWORD_PREFIX, 4)
            } else {
                (AML_QWORD_PREFIX, 8)
            };
            let mut out = vec![prefix];
            out.extend_from_slice(&bytes[..n]);
            out
        }
    }
}

/// `Name (seg, value)`.
pub(super) fn aml_name(seg: &[u8; 4], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + value.len());
    out.push(AML_NAME_OP);
    out.extend_from_slice(seg);
    out.extend_from_slice(value);
    out
}

/// `Package (n) { elements }`.
pub(super) fn aml_package(elements: &[Vec<u8>]) -> Result<Vec<u8>, AcpiError> {
    let count = u8::try_from(elements.len()).map_err(|_| AcpiError::TooLarge {
        what: "AML package element list",
        len: elements.len(),
    })?;
    let mut body = vec![count];
    for e in elements {
        body.extend_from_slice(e);
    }
    with_pkg_length(&[AML_PACKAGE_OP], &body)
}

/// `Buffer () { data }`.
pub(super) fn aml_buffer(data: &[u8]) -> Result<Vec<u8>, AcpiError> {
    let mut body = aml_integer(data.len() as u64);
    body.extend_from_slice(data);
    with_pkg_length(&[AML_BUFFER_OP], &body)
}

/// `Scope (seg) { body }`.
pub(super) fn aml_scope(seg: &[u8; 4], body: &[u8]) -> Result<Vec<u8>, AcpiError> {
    let mut inner = seg.to_vec();
    inner.extend_from_slice(body);
    with_pkg_length(&[AML_SCOPE_OP], &inner)
}

/// `Device (seg) { body }`.
pub(super) fn aml_device(seg: &[u8; 4], body: &[u8]) -> Result<Vec<u8>, AcpiError> {
    let mut inner = seg.to_vec();
    inner.extend_from_slice(body);
    with_pkg_length(&[AML_EXT_OP_PREFIX, AML_DEVICE_OP], &inner)
}

/// `opcode PkgLength body`.
pub(super) fn with_pkg_length(opcode: &[u8], body: &[u8]) -> Result<Vec<u8>, AcpiError> {
    let len = pkg_length(body.len())?;
    let mut out = Vec::with_capacity(opcode.len() + len.len() + body.len());
    out.extend_from_slice(opcode);
    out.extend_from_slice(&len);
    out.extend_from_slice(body);
    Ok(out)
}

/// The compressed EISA ID of a 7-character `UUUNNNN` PNP ID, as `EisaId()`
/// in ASL produces it: three 5-bit letters and four hex digits, stored
/// big-endian. Only called with constant, well-formed IDs.
pub(super) fn eisa_id(id: &[u8; 7]) -> u32 {
    let letter = |c: u8| u32::from(c.wrapping_sub(b'@') & 0x1f);
    let hex = |c: u8| char::from(c).to_digit(16).unwrap_or(0);
    let value = (letter(id[0]) << 26)
        | (letter(id[1]) << 21)
        | (letter(id[2]) << 16)
        | (hex(id[3]) << 12)
        | (hex(id[4]) << 8)
        | (hex(id[5]) << 4)
        | hex(id[6]);
    value.swap_bytes()
}
