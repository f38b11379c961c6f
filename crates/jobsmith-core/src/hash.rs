//! The stable hashes: FNV-1a 64, fast, for names built from what the
//! application chooses (AMQP queue names); and SHA-256, for names built
//! from what a job's caller may choose (idempotency keys), which a fast
//! hash would let them make collide on purpose.
//!
//! Their values name things users already store (the `unique` keys of
//! earlier versions, AMQP queue names), so they never change with the Rust
//! version, the platform or the process, as `std`'s hashers may. Public for
//! the backend crates, hidden: not an API for applications.

/// The standard FNV-1a 64 offset basis: [`fnv1a_64`] from it is plain FNV-1a 64.
pub const FNV1A_64_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits, over `bytes`, starting from `basis` ([`FNV1A_64_BASIS`]
/// for the standard hash; another basis gives an independent second hash).
pub fn fnv1a_64(basis: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(basis, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The first `bytes_kept` bytes of the SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8], bytes_kept: usize) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(2 * bytes_kept);
    for b in digest.iter().take(bytes_kept) {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys and queue names built from these are stored by users: the values must not move.
    #[test]
    fn values_stay_the_ones_already_stored() {
        assert_eq!(fnv1a_64(FNV1A_64_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(FNV1A_64_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(FNV1A_64_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            fnv1a_64(FNV1A_64_BASIS, br#"{"id":7}"#),
            0xd514_21b3_d1d9_d8b9
        );
        assert_eq!(fnv1a_64(0x6c62_272e_07bb_0142, b"a"), 0xe5c9_b637_22c2_ee79);
        assert_eq!(
            sha256_hex(b"abc", 32),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_hex(b"abc", 16), "ba7816bf8f01cfea414140de5dae2223");
    }
}
