//! Password hashing: argon2id, PHC strings, OWASP parameters.
//!
//! [`hash_password`] and [`verify_password`] are what the login page, user management and client
//! authentication use. The parameters are OWASP's first recommendation for argon2id (19 MiB of
//! memory, 2 passes, 1 lane); they travel inside each PHC string, so raising them later still
//! verifies every hash written before.
//!
//! ```
//! use hub_auth::password::{hash_password, verify_password};
//! let phc = hash_password("correct horse battery staple")?;
//! assert!(phc.starts_with("$argon2id$"));
//! assert!(verify_password(&phc, "correct horse battery staple"));
//! assert!(!verify_password(&phc, "Tr0ub4dor&3"));
//! # Ok::<(), hub_core::Error>(())
//! ```

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};

use hub_core::{Error, Result};

use crate::secrets::{SHA256_PREFIX, random_bytes, verify_sha256};

/// What a password must be, and how hard it is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    /// The fewest characters a password may have.
    pub min_length: usize,
    /// The most bytes a password may have (hashing is linear in its length; nobody types more).
    pub max_bytes: usize,
    /// argon2 memory, KiB.
    pub memory_kib: u32,
    /// argon2 passes.
    pub iterations: u32,
    /// argon2 lanes.
    pub parallelism: u32,
}

impl Default for PasswordPolicy {
    /// At least 12 characters (NIST SP 800-63B asks for 8, more where it is the only factor),
    /// at most 1024 bytes; m = 19 MiB, t = 2, p = 1 (OWASP).
    fn default() -> Self {
        Self {
            min_length: 12,
            max_bytes: 1024,
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordPolicy {
    fn argon2(&self) -> Result<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::invalid_input(format!("argon2 parameters are not valid: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Checks `password` against the policy and hashes it into an argon2id PHC string.
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for a password too short or too long.
    pub fn hash(&self, password: &str) -> Result<String> {
        let chars = password.chars().count();
        if chars < self.min_length {
            return Err(Error::invalid_input(format!(
                "the password must have at least {} characters",
                self.min_length
            )));
        }
        if password.len() > self.max_bytes {
            return Err(Error::invalid_input(format!(
                "the password must have at most {} bytes",
                self.max_bytes
            )));
        }
        self.hash_unchecked(password)
    }

    /// Hashes without the length rules: for generated secrets.
    pub(crate) fn hash_unchecked(&self, password: &str) -> Result<String> {
        let salt = random_bytes::<16>()?;
        self.argon2()?
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::internal(format!("argon2 hashing failed: {e}")))
    }
}

/// Hashes a password with the default [`PasswordPolicy`] into an argon2id PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
/// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for a password shorter than 12 characters
/// or longer than 1024 bytes.
pub fn hash_password(password: &str) -> Result<String> {
    PasswordPolicy::default().hash(password)
}

/// Whether `password` matches `phc`.
///
/// `phc` is an argon2 PHC string as [`hash_password`] writes (its own parameters are used), or
/// the `$sha256$<digest>` form hub-auth stores for generated high-entropy secrets such as OAuth
/// client secrets (see [`verify_client_secret`](crate::client_secrets::verify_client_secret)), so client
/// authentication may call either function. Anything else, an empty or malformed string
/// included, is `false`, never a panic.
///
/// For a user that does not exist, call [`dummy_verify`] instead so that the answer takes as long.
pub fn verify_password(phc: &str, password: &str) -> bool {
    if phc.starts_with(SHA256_PREFIX) {
        return verify_sha256(phc, password);
    }
    if !phc.starts_with("$argon2") {
        return false;
    }
    // The parameters come from the PHC string; the instance's own do not matter.
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// Spends the time a real [`verify_password`] would and returns `false`: call it when the user is
/// unknown, so that the response time does not tell a guesser which user names exist.
pub fn dummy_verify(password: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| {
        PasswordPolicy::default()
            .hash_unchecked("hub-auth dummy password")
            .unwrap_or_default()
    });
    // Verify for the time it takes, then refuse whatever the outcome.
    let _ = verify_password(phc, password);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> PasswordPolicy {
        // Small parameters keep the unit tests quick; the PHC string carries them.
        PasswordPolicy {
            memory_kib: 64,
            iterations: 1,
            ..PasswordPolicy::default()
        }
    }

    #[test]
    fn hashes_are_salted_argon2id_phc_strings() {
        let a = fast().hash("a long enough password").unwrap();
        let b = fast().hash("a long enough password").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password(&a, "a long enough password"));
        assert!(verify_password(&b, "a long enough password"));
        assert!(!verify_password(&a, "a long enough passwore"));
    }

    #[test]
    fn the_default_parameters_are_owasp_s() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(&phc, "correct horse battery staple"));
    }

    #[test]
    fn the_length_rules_are_enforced_and_configurable() {
        let e = fast().hash("short").unwrap_err();
        assert_eq!(e.kind(), hub_core::ErrorKind::InvalidInput);
        assert!(fast().hash(&"x".repeat(1025)).is_err());
        let lenient = PasswordPolicy {
            min_length: 4,
            ..fast()
        };
        assert!(lenient.hash("four").is_ok());
        // Characters, not bytes: four characters of two bytes each are four.
        assert!(lenient.hash("éééé").is_ok());
    }

    #[test]
    fn malformed_hashes_never_verify() {
        for bad in ["", "$argon2id$", "$argon2id$v=19$m=x", "plain", "$sha256$"] {
            assert!(!verify_password(bad, ""), "{bad:?}");
            assert!(!verify_password(bad, "password"), "{bad:?}");
        }
        assert!(!dummy_verify("anything"));
    }
}
