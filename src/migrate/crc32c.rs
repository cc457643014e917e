//! CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the migration
//! stream's section checksum. It guards against damage, not tampering (as
//! an Ethernet or iSCSI CRC does), at the speed of the link: with SSE4.2's
//! `crc32` instruction it runs at several GB/s, where sha256 held a
//! migration to about 300 MB/s on the dev host. Hosts without SSE4.2 use
//! the table-driven form (same result).

const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn update_table(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn update_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut words = data.chunks_exact(8);
    let mut c = u64::from(crc);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        c = _mm_crc32_u64(c, u64::from_le_bytes(b));
    }
    let mut crc = c as u32;
    for &b in words.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

fn update(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2 (checked just above), the only
        // requirement of `update_sse42`.
        return unsafe { update_sse42(crc, data) };
    }
    update_table(crc, data)
}

/// The CRC-32C of the concatenation of `parts`.
pub fn crc32c(parts: &[&[u8]]) -> u32 {
    !parts.iter().fold(!0u32, |crc, p| update(crc, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_both_forms_agree() {
        assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(&[b"1234", b"56789"]), 0xE306_9283);
        assert_eq!(crc32c(&[]), 0);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 7, 8, 9, 4096, 9999] {
            assert_eq!(
                !update(!0, &data[..len]),
                !update_table(!0, &data[..len]),
                "length {len}"
            );
        }
    }
}
