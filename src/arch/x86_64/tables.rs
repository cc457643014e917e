//! Helpers shared by the firmware-table writers (MP table, ACPI).

/// Sets `bytes[at]` so that all of `bytes` sums to 0 mod 256 (the checksum
/// rule of MP-table structures and ACPI tables).
pub fn set_checksum(bytes: &mut [u8], at: usize) {
    if let Some(slot) = bytes.get_mut(at) {
        *slot = 0;
    }
    let sum = bytes.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
    if let Some(slot) = bytes.get_mut(at) {
        *slot = 0u8.wrapping_sub(sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_to_zero() {
        let mut b = vec![1u8, 2, 3, 0, 250];
        set_checksum(&mut b, 3);
        assert_eq!(b.iter().fold(0u8, |a, &x| a.wrapping_add(x)), 0);
        set_checksum(&mut b, 99); // out of range: no panic
    }
}
