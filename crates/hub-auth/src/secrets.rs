//! Randomness, hashes of high-entropy secrets and constant-time comparison: the one place every
//! module of the crate (access keys, client and enrollment secrets, tokens, the authorization
//! server's codes) takes them from.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use hub_core::{Error, Result};

/// The lowercase base32 alphabet (RFC 4648 without padding, in lowercase): key ids are typed,
/// read aloud and logged, so no case and no look-alike `0`/`1`.
const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The prefix of every hash written by [`sha256_hash`]. A PHC-style string, so the
/// `$argon2id$...` hashes of passwords and these can share a column and be told apart.
pub(crate) const SHA256_PREFIX: &str = "$sha256$";

/// Fills `buf` from the operating system's CSPRNG (through aws-lc-rs, the one crypto provider).
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::unavailable("the system random number generator failed"))
}

/// `N` random bytes.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    fill_random(&mut buf)?;
    Ok(buf)
}

/// `n` random bytes, base64url without padding.
pub(crate) fn random_token(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    fill_random(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of `data`, base64url: how codes and refresh tokens are stored.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn sha256_b64(data: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(data.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    verify_slices_are_equal(a, b).is_ok()
}

/// `len` random characters of lowercase base32: 5 bits each.
pub(crate) fn random_base32(len: usize) -> Result<String> {
    let bytes = random_bytes::<64>()?;
    Ok(bytes
        .iter()
        .take(len)
        .map(|b| char::from(BASE32_LOWER[usize::from(b & 31)]))
        .collect())
}

/// 32 random bytes as base64url without padding (43 characters, 256 bits).
pub(crate) fn random_secret() -> Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// `$sha256$<base64url digest>`: the stored form of a secret with at least 128 bits of entropy.
///
/// A fast hash is right for such secrets: argon2 slows down guessing of *low*-entropy passwords,
/// but nobody can enumerate 2^256 random keys however fast the hash is, and a slow hash on every
/// device CONNECT would turn a reconnect storm into a CPU storm.
pub(crate) fn sha256_hash(secret: &str) -> String {
    format!("{SHA256_PREFIX}{}", sha256_b64(secret))
}

/// Whether `secret` hashes to `stored` (a [`sha256_hash`] string), compared in constant time.
pub(crate) fn verify_sha256(stored: &str, secret: &str) -> bool {
    let expected = sha256_hash(secret);
    // Lengths are public (the format fixes them); the contents are compared in constant time.
    ct_eq(stored.as_bytes(), expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hashes_verify_only_their_secret() {
        let h = sha256_hash("s3cret");
        assert!(h.starts_with(SHA256_PREFIX));
        assert!(verify_sha256(&h, "s3cret"));
        assert!(!verify_sha256(&h, "s3cret "));
        assert!(!verify_sha256("", "s3cret"));
    }

    #[test]
    fn random_values_have_their_shape() {
        let id = random_base32(16).unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| BASE32_LOWER.contains(&b)));
        let s = random_secret().unwrap();
        assert_eq!(s.len(), 43);
        assert_ne!(s, random_secret().unwrap());
    }
}
