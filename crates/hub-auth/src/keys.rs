//! Signing keys: ES256 and EdDSA (Ed25519) keys generated with aws-lc-rs, a key set with one
//! current signing key and retired keys kept for verification, the JWKS document, and
//! persistence as a JSON file of PKCS#8 keys that the application keeps in its data directory.
//!
//! A key decides its algorithm: a verifying key knows the one algorithm it accepts, so a token
//! cannot choose how it is checked (no `none`, no HMAC with a public key).
//!
//! ```
//! use hub_auth::keys::{Algorithm, KeySet};
//! use hub_core::Timestamp;
//! use std::time::Duration;
//!
//! let now = Timestamp::from_millis(1_700_000_000_000)?;
//! let mut keys = KeySet::generate(Algorithm::Es256, now)?;
//! let old = keys.signing_key().kid().to_owned();
//! keys.rotate(Algorithm::EdDsa, now, Duration::from_secs(3600))?;
//! // The old key still verifies until its last token has expired.
//! assert!(keys.verifying_key(&old).is_some());
//! assert_eq!(keys.jwks().keys.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use hub_core::{Error, Result, Timestamp};

/// A JWS algorithm the hub knows. The hub signs with ES256 or EdDSA; RS256 is accepted only on
/// keys of an external identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (RFC 7518).
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519 (RFC 8037).
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256; verification only, keys of 2048 bits or more.
    #[serde(rename = "RS256")]
    Rs256,
}

impl Algorithm {
    /// The JWS `alg` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Rs256 => "RS256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key of a JWKS document (RFC 7517), public parts only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC`, `OKP` or `RSA`.
    pub kty: String,
    /// The key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm the key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig` for signature keys.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Curve (`P-256`, `Ed25519`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate or the Ed25519 public key, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A JWKS document: `{"keys": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

#[derive(Clone)]
enum PublicKeyInner {
    Parsed(Arc<ParsedPublicKey>),
    Rsa(Arc<RsaPublicKeyComponents<Vec<u8>>>),
}

/// A public key that verifies signatures of exactly one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    alg: Algorithm,
    inner: PublicKeyInner,
    jwk: Jwk,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

fn b64(field: &Option<String>, what: &str) -> Result<Vec<u8>> {
    let s = field
        .as_deref()
        .ok_or_else(|| Error::invalid_input(format!("the JWK has no {what}")))?;
    B64.decode(s)
        .map_err(|_| Error::invalid_input(format!("the JWK's {what} is not base64url")))
}

impl VerifyingKey {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key as a JWK.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Reads a public JWK. The key type decides the algorithm; a JWK whose `alg` names another
    /// algorithm, whose `use` is not `sig`, or that has no `kid` is refused. RSA keys need at least
    /// 2048 bits.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self> {
        let kid = jwk
            .kid
            .clone()
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or_else(|| Error::invalid_input("the JWK has no usable kid"))?;
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(Error::invalid_input("the JWK is not a signature key"));
        }
        let (alg, inner) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let (x, y) = (b64(&jwk.x, "x")?, b64(&jwk.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(Error::invalid_input("the P-256 JWK has bad coordinates"));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .map_err(|_| Error::invalid_input("the P-256 JWK is not a valid point"))?;
                (Algorithm::Es256, PublicKeyInner::Parsed(Arc::new(key)))
            }
            ("OKP", Some("Ed25519")) => {
                let x = b64(&jwk.x, "x")?;
                let key = ParsedPublicKey::new(&ED25519, x)
                    .map_err(|_| Error::invalid_input("the Ed25519 JWK is not valid"))?;
                (Algorithm::EdDsa, PublicKeyInner::Parsed(Arc::new(key)))
            }
            ("RSA", _) => {
                let n = b64(&jwk.n, "n")?;
                let e = b64(&jwk.e, "e")?;
                let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
                if n.len() < 256 || n.len() > 1024 || e.is_empty() || e.len() > 8 {
                    return Err(Error::invalid_input("the RSA JWK's size is not allowed"));
                }
                (
                    Algorithm::Rs256,
                    PublicKeyInner::Rsa(Arc::new(RsaPublicKeyComponents { n, e })),
                )
            }
            _ => return Err(Error::invalid_input("the JWK's key type is not supported")),
        };
        if jwk.alg.as_deref().is_some_and(|a| a != alg.as_str()) {
            return Err(Error::invalid_input(
                "the JWK's alg does not match its key type",
            ));
        }
        let mut jwk = jwk.clone();
        jwk.alg = Some(alg.as_str().to_owned());
        Ok(Self {
            kid,
            alg,
            inner,
            jwk,
        })
    }

    /// Verifies `signature` over `message`, if `alg` (the token's header) is this key's algorithm.
    pub fn verify(&self, alg: &str, message: &[u8], signature: &[u8]) -> bool {
        if alg != self.alg.as_str() {
            return false;
        }
        match &self.inner {
            PublicKeyInner::Parsed(k) => k.verify_sig(message, signature).is_ok(),
            PublicKeyInner::Rsa(k) => k
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

enum KeyPairInner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private signing key with its id. `Debug` shows only the id and algorithm.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    pkcs8: Vec<u8>,
    pair: KeyPairInner,
    verifying: VerifyingKey,
    created_at: Timestamp,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn internal(what: &'static str) -> Error {
    Error::internal(std::io::Error::other(what))
}

/// The RFC 7638 thumbprint of a public JWK: the key's id.
fn thumbprint(jwk: &Jwk) -> String {
    let canonical = match jwk.kty.as_str() {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk.crv.as_deref().unwrap_or(""),
            jwk.x.as_deref().unwrap_or(""),
            jwk.y.as_deref().unwrap_or("")
        ),
        _ => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk.crv.as_deref().unwrap_or(""),
            jwk.x.as_deref().unwrap_or("")
        ),
    };
    B64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
}

impl SigningKey {
    /// Generates a new key.
    pub fn generate(alg: Algorithm, now: Timestamp) -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Algorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| internal("P-256 key generation failed"))?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| internal("Ed25519 key generation failed"))?
                .as_ref()
                .to_vec(),
            Algorithm::Rs256 => {
                return Err(Error::invalid_input(
                    "the hub signs with ES256 or EdDSA, not RS256",
                ));
            }
        };
        Self::from_pkcs8(alg, pkcs8, now)
    }

    /// Reads a PKCS#8 private key of `alg`.
    pub fn from_pkcs8(alg: Algorithm, pkcs8: Vec<u8>, created_at: Timestamp) -> Result<Self> {
        let bad = || Error::invalid_input(format!("the stored {alg} key is not valid PKCS#8"));
        let (pair, jwk) = match alg {
            Algorithm::Es256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .map_err(|_| bad())?;
                let point = pair.public_key().as_ref();
                if point.len() != 65 {
                    return Err(bad());
                }
                let jwk = Jwk {
                    kty: "EC".into(),
                    crv: Some("P-256".into()),
                    x: Some(B64.encode(&point[1..33])),
                    y: Some(B64.encode(&point[33..65])),
                    ..Jwk::default()
                };
                (KeyPairInner::Ecdsa(pair), jwk)
            }
            Algorithm::EdDsa => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|_| bad())?;
                let jwk = Jwk {
                    kty: "OKP".into(),
                    crv: Some("Ed25519".into()),
                    x: Some(B64.encode(pair.public_key().as_ref())),
                    ..Jwk::default()
                };
                (KeyPairInner::Ed25519(pair), jwk)
            }
            Algorithm::Rs256 => return Err(bad()),
        };
        let kid = thumbprint(&jwk);
        let jwk = Jwk {
            kid: Some(kid.clone()),
            alg: Some(alg.as_str().into()),
            use_: Some("sig".into()),
            ..jwk
        };
        let verifying = VerifyingKey::from_jwk(&jwk)?;
        Ok(Self {
            kid,
            alg,
            pkcs8,
            pair,
            verifying,
            created_at,
        })
    }

    /// The key id (the RFC 7638 thumbprint of the public key).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// When the key was made.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// Signs `message`: the JWS signature (for ES256 the fixed-size `r || s`).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match &self.pair {
            KeyPairInner::Ecdsa(p) => p
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| internal("ES256 signing failed")),
            KeyPairInner::Ed25519(p) => Ok(p.sign(message).as_ref().to_vec()),
        }
    }
}

struct Retired {
    key: SigningKey,
    keep_until: Timestamp,
}

/// The authorization server's keys: one current signing key, and retired keys that still verify
/// until their last token has expired.
pub struct KeySet {
    current: SigningKey,
    retired: Vec<Retired>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field("current", &self.current)
            .field(
                "retired",
                &self.retired.iter().map(|r| &r.key).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The persisted form of a key set.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

#[derive(Serialize, Deserialize)]
struct KeyRecord {
    kid: String,
    alg: Algorithm,
    /// PKCS#8, base64url.
    pkcs8: String,
    created_at: i64,
    /// `None` for the current key.
    keep_until: Option<i64>,
}

fn ts(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millis(ms).map_err(|_| Error::invalid_input("a key file time is out of range"))
}

impl KeySet {
    /// A key set with one fresh key.
    pub fn generate(alg: Algorithm, now: Timestamp) -> Result<Self> {
        Ok(Self {
            current: SigningKey::generate(alg, now)?,
            retired: Vec::new(),
        })
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> &SigningKey {
        &self.current
    }

    /// Makes a new current key of `alg`; the old one keeps verifying for `keep_for` (at least the
    /// longest token lifetime plus the validators' leeway).
    pub fn rotate(&mut self, alg: Algorithm, now: Timestamp, keep_for: Duration) -> Result<()> {
        let new = SigningKey::generate(alg, now)?;
        let old = std::mem::replace(&mut self.current, new);
        self.retired.push(Retired {
            key: old,
            keep_until: now.saturating_add(keep_for),
        });
        Ok(())
    }

    /// Forgets retired keys whose last token has expired at `now`; returns how many went.
    pub fn prune(&mut self, now: Timestamp) -> usize {
        let before = self.retired.len();
        self.retired.retain(|r| now < r.keep_until);
        before - self.retired.len()
    }

    /// The key with this id, current or retired.
    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        std::iter::once(&self.current)
            .chain(self.retired.iter().map(|r| &r.key))
            .find(|k| k.kid == kid)
            .map(|k| &k.verifying)
    }

    /// The public JWKS document (current key first).
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: std::iter::once(&self.current)
                .chain(self.retired.iter().map(|r| &r.key))
                .map(|k| k.verifying.jwk.clone())
                .collect(),
        }
    }

    /// The key set as JSON, private keys included: store it where only the hub can read it.
    pub fn to_json(&self) -> hub_core::Secret {
        let record = |k: &SigningKey, keep_until: Option<Timestamp>| KeyRecord {
            kid: k.kid.clone(),
            alg: k.alg,
            pkcs8: B64.encode(&k.pkcs8),
            created_at: k.created_at.as_millis(),
            keep_until: keep_until.map(Timestamp::as_millis),
        };
        let file = KeyFile {
            version: 1,
            keys: std::iter::once(record(&self.current, None))
                .chain(
                    self.retired
                        .iter()
                        .map(|r| record(&r.key, Some(r.keep_until))),
                )
                .collect(),
        };
        // Strings and numbers always serialize.
        hub_core::Secret::new(serde_json::to_string_pretty(&file).unwrap_or_default())
    }

    /// Reads a key set written by [`KeySet::to_json`].
    pub fn from_json(json: &str) -> Result<Self> {
        let file: KeyFile = serde_json::from_str(json)
            .map_err(|e| Error::invalid_input(format!("the key file is not valid: {e}")))?;
        if file.version != 1 {
            return Err(Error::invalid_input(
                "the key file's version is not supported",
            ));
        }
        let mut current = None;
        let mut retired = Vec::new();
        for r in file.keys {
            let pkcs8 = B64
                .decode(&r.pkcs8)
                .map_err(|_| Error::invalid_input("a stored key is not base64url"))?;
            let key = SigningKey::from_pkcs8(r.alg, pkcs8, ts(r.created_at)?)?;
            if key.kid != r.kid {
                return Err(Error::invalid_input("a stored key does not match its kid"));
            }
            match r.keep_until {
                None if current.is_none() => current = Some(key),
                None => return Err(Error::invalid_input("the key file has two current keys")),
                Some(t) => retired.push(Retired {
                    key,
                    keep_until: ts(t)?,
                }),
            }
        }
        let current =
            current.ok_or_else(|| Error::invalid_input("the key file has no current key"))?;
        Ok(Self { current, retired })
    }

    /// Writes the key set to `path` atomically (a temporary file, fsynced, renamed), readable
    /// only by the owner (mode 0600 on Unix).
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(Error::internal)?;
        f.write_all(self.to_json().expose().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(Error::internal)?;
        std::fs::rename(&tmp, path).map_err(Error::internal)
    }

    /// Reads a key set saved with [`KeySet::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let json = std::fs::read_to_string(path).map_err(Error::internal)?;
        Self::from_json(&json)
    }

    /// Loads the key set at `path`, or generates one of `alg` and saves it there.
    pub fn load_or_generate(path: &Path, alg: Algorithm, now: Timestamp) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        let keys = Self::generate(alg, now)?;
        keys.save(path)?;
        Ok(keys)
    }
}

/// A key set shared between the authorization server (which signs and rotates) and the token
/// validator (which verifies). Readers take a cheap snapshot.
#[derive(Debug, Clone)]
pub struct SharedKeys(Arc<RwLock<Arc<KeySet>>>);

impl SharedKeys {
    /// Shares `keys`.
    pub fn new(keys: KeySet) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(keys))))
    }

    /// The key set as it is now.
    pub fn snapshot(&self) -> Arc<KeySet> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the key set (after a rotation, or a reload).
    pub fn replace(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.0.write() {
            Ok(mut g) => *g = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// Rotates under the lock: a new current key of `alg`, old ones pruned at `now`. Returns the
    /// new key set for the application to persist.
    pub fn rotate(
        &self,
        alg: Algorithm,
        now: Timestamp,
        keep_for: Duration,
    ) -> Result<Arc<KeySet>> {
        let mut guard = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let old = guard.clone();
        let mut next = KeySet {
            current: SigningKey::from_pkcs8(
                old.current.alg,
                old.current.pkcs8.clone(),
                old.current.created_at,
            )?,
            retired: Vec::new(),
        };
        for r in &old.retired {
            next.retired.push(Retired {
                key: SigningKey::from_pkcs8(r.key.alg, r.key.pkcs8.clone(), r.key.created_at)?,
                keep_until: r.keep_until,
            });
        }
        next.prune(now);
        next.rotate(alg, now, keep_for)?;
        *guard = Arc::new(next);
        Ok(guard.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::EPOCH.saturating_add(Duration::from_secs(s))
    }

    #[test]
    fn keys_survive_a_save_and_load_with_their_ids() {
        let mut ks = KeySet::generate(Algorithm::Es256, t(10)).unwrap();
        ks.rotate(Algorithm::EdDsa, t(20), Duration::from_secs(100))
            .unwrap();
        let back = KeySet::from_json(ks.to_json().expose()).unwrap();
        assert_eq!(back.jwks(), ks.jwks());
        assert_eq!(back.signing_key().algorithm(), Algorithm::EdDsa);
        let sig = back.signing_key().sign(b"msg").unwrap();
        assert!(
            ks.verifying_key(back.signing_key().kid())
                .unwrap()
                .verify("EdDSA", b"msg", &sig)
        );
        assert!(!format!("{ks:?}").contains(&B64.encode(&ks.current.pkcs8)));
    }

    #[test]
    fn retired_keys_verify_until_pruned() {
        let mut ks = KeySet::generate(Algorithm::Es256, t(0)).unwrap();
        let old = ks.signing_key().kid().to_owned();
        ks.rotate(Algorithm::Es256, t(10), Duration::from_secs(60))
            .unwrap();
        assert_eq!(ks.prune(t(69)), 0);
        assert!(ks.verifying_key(&old).is_some());
        assert_eq!(ks.prune(t(70)), 1);
        assert!(ks.verifying_key(&old).is_none());
    }

    #[test]
    fn a_key_verifies_only_its_own_algorithm() {
        let ks = KeySet::generate(Algorithm::Es256, t(0)).unwrap();
        let k = ks.signing_key();
        let sig = k.sign(b"m").unwrap();
        let v = k.verifying_key();
        assert!(v.verify("ES256", b"m", &sig));
        for alg in ["none", "HS256", "ES384", "EdDSA", "RS256", "es256"] {
            assert!(!v.verify(alg, b"m", &sig), "{alg}");
        }
        assert!(!v.verify("ES256", b"n", &sig));
    }

    #[test]
    fn jwk_alg_must_match_the_key_type() {
        let ks = KeySet::generate(Algorithm::EdDsa, t(0)).unwrap();
        let mut jwk = ks.jwks().keys[0].clone();
        jwk.alg = Some("HS256".into());
        assert!(VerifyingKey::from_jwk(&jwk).is_err());
        jwk.alg = None;
        assert_eq!(
            VerifyingKey::from_jwk(&jwk).unwrap().algorithm(),
            Algorithm::EdDsa
        );
        jwk.kty = "oct".into();
        assert!(VerifyingKey::from_jwk(&jwk).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn saved_key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hub-auth-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        let _ = std::fs::remove_file(&path);
        let a = KeySet::load_or_generate(&path, Algorithm::Es256, t(0)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = KeySet::load_or_generate(&path, Algorithm::EdDsa, t(0)).unwrap();
        assert_eq!(a.jwks(), b.jwks());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
