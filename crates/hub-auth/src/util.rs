//! Small helpers shared by the modules: randomness, hashes, constant-time comparison.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use hub_core::{Error, Result};

/// `n` random bytes, base64url without padding.
pub(crate) fn random_token(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::internal(std::io::Error::other("the random generator failed")))?;
    Ok(B64.encode(buf))
}

/// Random bytes.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| Error::internal(std::io::Error::other("the random generator failed")))
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of `data`, base64url: how codes, refresh tokens and client secrets are stored.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn sha256_b64(data: &str) -> String {
    B64.encode(sha256(data.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
