//! Device access keys: issue, rotate with an overlap, revoke, list, and authenticate.
//!
//! A key looks like `hk_<key id>_<secret>`:
//!
//! - `hk_` tells it from a JWT in an `Authorization: Bearer` header;
//! - the **key id** (16 characters of lowercase base32, 80 bits) is public: it is how the key is
//!   found in the store, and what listings and audit records show;
//! - the **secret** is 32 random bytes from aws-lc-rs as base64url without padding (43
//!   characters, 256 bits). It is shown once, when the key is issued.
//!
//! The store keeps only `$sha256$<digest>` of the whole key. SHA-256 rather than argon2 because
//! the secret is random with 256 bits of entropy: nobody can enumerate it however fast the hash is,
//! so a slow hash would buy nothing but CPU on every device CONNECT. The comparison is constant
//! time.
//!
//! [`AccessKeys`] implements [`Authenticator`] for [`Credentials::AccessKey`] and produces a
//! [`Principal::Device`]. Every failure (malformed key, unknown key id, wrong secret, revoked or
//! expired key, unknown, suspended or decommissioned device, a claimed device id that is not the
//! key's) is the same [`ErrorKind::Unauthenticated`](hub_core::ErrorKind) error, so a guesser
//! learns nothing.
//!
//! # The cache, and what it means for other nodes
//!
//! A reconnect storm (a broker restart, a network blip) makes every device CONNECT at once. So
//! that this does not become one store round trip per CONNECT, a bounded cache keeps, per key id,
//! the stored key record and the device's group and state for [`AccessKeyConfig::cache_ttl`].
//! On a cache hit the secret is still checked against the cached hash and the expiry against the
//! clock, so a rotation's overlap ends on time everywhere.
//!
//! Revoking or rotating a key, or changing or deleting a device, **through this node** removes the
//! affected entries at once. Another node that cached the key keeps accepting it until its entry
//! is older than `cache_ttl` (30 seconds by default): that is the window in which a key revoked
//! elsewhere, or a device suspended elsewhere, may still authenticate a *new* connection. Sessions
//! already open are not affected by the cache either way; closing them is the transport's job.
//! Set `cache_ttl` to zero to turn the cache off.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use hub_core::{
    Authenticator, BoxFuture, Clock, Credentials, DeviceId, DevicePrincipal, Error, GroupPath,
    Principal, Result, Secret, TenantId, Timestamp,
};
use hub_store::{AccessKeyRecord, CredentialStore, Lifecycle, RegistryStore, Stores};

use crate::secrets::{random_base32, random_secret, sha256_hash, verify_sha256};

/// What every access key starts with.
pub const KEY_PREFIX: &str = "hk_";
/// The length of a key id, in characters.
pub const KEY_ID_LEN: usize = 16;
/// The length of a key's secret part, in characters (32 bytes in base64url without padding).
pub const SECRET_LEN: usize = 43;

/// The one answer to every failed authentication.
fn rejected() -> Error {
    Error::unauthenticated("the access key is not valid")
}

/// Why a string is not an access key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// It does not start with `hk_`.
    Prefix,
    /// The key id is not 16 characters of lowercase base32.
    KeyId,
    /// The secret is not 43 characters of base64url.
    Secret,
}

impl fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFormatError::Prefix => "an access key starts with hk_",
            KeyFormatError::KeyId => "the key id is not 16 characters of a-z and 2-7",
            KeyFormatError::Secret => "the secret is not 43 characters of base64url",
        })
    }
}

impl std::error::Error for KeyFormatError {}

impl From<KeyFormatError> for Error {
    fn from(e: KeyFormatError) -> Self {
        Error::invalid_input(e.to_string())
    }
}

/// A well-formed access key. `Debug` shows the key id only.
///
/// ```
/// use hub_auth::access_keys::AccessKey;
/// let key = AccessKey::generate()?;
/// let text = key.expose().to_owned();
/// let parsed = AccessKey::parse(&text)?;
/// assert_eq!(parsed.key_id(), key.key_id());
/// assert!(!format!("{parsed:?}").contains(&text[20..]));
/// assert!(AccessKey::parse("hk_short_secret").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    full: String,
}

impl AccessKey {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        let full = format!(
            "{KEY_PREFIX}{}_{}",
            random_base32(KEY_ID_LEN)?,
            random_secret()?
        );
        Ok(Self { full })
    }

    /// Parses `hk_<key id>_<secret>`. Never panics, whatever the input.
    pub fn parse(s: &str) -> std::result::Result<Self, KeyFormatError> {
        let rest = s.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
        // The key id has no `_`; the secret may (base64url), so split at the first one.
        let (id, secret) = rest.split_once('_').ok_or(KeyFormatError::KeyId)?;
        if id.len() != KEY_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err(KeyFormatError::KeyId);
        }
        if secret.len() != SECRET_LEN
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(KeyFormatError::Secret);
        }
        Ok(Self { full: s.to_owned() })
    }

    /// The public key id.
    pub fn key_id(&self) -> &str {
        &self.full[KEY_PREFIX.len()..KEY_PREFIX.len() + KEY_ID_LEN]
    }

    /// The whole key; call only to show it once or to send it.
    pub fn expose(&self) -> &str {
        &self.full
    }

    /// The whole key as a [`Secret`].
    pub fn into_secret(self) -> Secret {
        Secret::new(self.full)
    }

    /// The stored form: `$sha256$<digest>` of the whole key.
    pub fn hash(&self) -> String {
        sha256_hash(&self.full)
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessKey({}, <redacted>)", self.key_id())
    }
}

/// The limits and timings of access keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyConfig {
    /// The most key ids the authentication cache holds (0 turns the cache off).
    pub cache_capacity: usize,
    /// How long a cached entry is trusted; the window in which a change made on another node is
    /// not yet seen here (0 turns the cache off).
    pub cache_ttl: Duration,
    /// How long the old keys keep working after a rotation when the caller does not say.
    pub default_overlap: Duration,
    /// The longest overlap a rotation may ask for.
    pub max_overlap: Duration,
    /// The most usable keys one device may hold at once (expiring ones count until they expire).
    pub max_keys_per_device: usize,
}

impl Default for AccessKeyConfig {
    /// 10 000 cached keys for 30 s; a one-day default overlap, at most 30 days; 5 keys per device.
    fn default() -> Self {
        Self {
            cache_capacity: 10_000,
            cache_ttl: Duration::from_secs(30),
            default_overlap: Duration::from_secs(24 * 3600),
            max_overlap: Duration::from_secs(30 * 24 * 3600),
            max_keys_per_device: 5,
        }
    }
}

/// A key as listings show it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct AccessKeyInfo {
    /// The public key id.
    pub key_id: String,
    /// The device it belongs to.
    #[cfg_attr(feature = "http", schema(value_type = String))]
    pub device: DeviceId,
    /// When it was issued.
    #[cfg_attr(feature = "http", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When it stops working (set by a rotation).
    #[cfg_attr(feature = "http", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<Timestamp>,
    /// When it was revoked.
    #[cfg_attr(feature = "http", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<Timestamp>,
    /// Whether it works now.
    pub usable: bool,
}

impl AccessKeyInfo {
    fn new(r: &AccessKeyRecord, now: Timestamp) -> Self {
        Self {
            key_id: r.prefix.clone(),
            device: r.device.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            usable: r.is_usable(now),
        }
    }
}

/// A key just issued: the only time its secret is seen.
#[derive(Debug, Clone)]
pub struct IssuedAccessKey {
    /// The key as listings will show it.
    pub info: AccessKeyInfo,
    /// The whole key, `hk_<key id>_<secret>`.
    pub access_key: Secret,
}

/// Whether a device in this state may authenticate.
pub fn lifecycle_allows_connect(l: Lifecycle) -> bool {
    matches!(l, Lifecycle::Provisioned | Lifecycle::Active)
}

#[derive(Debug, Clone)]
struct CacheEntry {
    record: AccessKeyRecord,
    group: GroupPath,
    enabled: bool,
    fetched_at: Timestamp,
}

/// A bounded map of key id to what authentication needs. Never held across an await.
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<String, CacheEntry>,
}

impl Cache {
    fn get(&self, key_id: &str, now: Timestamp, ttl: Duration) -> Option<CacheEntry> {
        let e = self.entries.get(key_id)?;
        // A clock that jumped backwards makes the entry stale too.
        (e.fetched_at <= now && now.duration_since(e.fetched_at) < ttl).then(|| e.clone())
    }

    fn insert(&mut self, key_id: String, entry: CacheEntry, capacity: usize, ttl: Duration) {
        if self.entries.len() >= capacity && !self.entries.contains_key(&key_id) {
            let now = entry.fetched_at;
            self.entries
                .retain(|_, e| e.fetched_at <= now && now.duration_since(e.fetched_at) < ttl);
            // Still full: drop an arbitrary entry (the map's order is randomized per process).
            while self.entries.len() >= capacity {
                let Some(victim) = self.entries.keys().next().cloned() else {
                    break;
                };
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(key_id, entry);
    }
}

/// Issues, rotates, revokes and lists device access keys, and authenticates devices with them.
///
/// Cheap to share: wrap it in an `Arc` and hand it to the transport as
/// `Arc<dyn Authenticator>` and to the registry API.
pub struct AccessKeys {
    registry: Arc<dyn RegistryStore>,
    credentials: Arc<dyn CredentialStore>,
    clock: Arc<dyn Clock>,
    config: AccessKeyConfig,
    cache: Mutex<Cache>,
}

/// The name the seam's users look for: [`AccessKeys`] is the access-key [`Authenticator`].
pub type AccessKeyAuthenticator = AccessKeys;

impl fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeys")
            .field("config", &self.config)
            .field("cached", &self.cached_len())
            .finish_non_exhaustive()
    }
}

impl AccessKeys {
    /// Access keys kept in `stores`, timed by `clock`.
    pub fn new(stores: &Stores, clock: Arc<dyn Clock>, config: AccessKeyConfig) -> Self {
        Self {
            registry: stores.registry.clone(),
            credentials: stores.credentials.clone(),
            clock,
            config,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AccessKeyConfig {
        &self.config
    }

    /// How many key ids are cached now.
    pub fn cached_len(&self) -> usize {
        self.lock_cache().entries.len()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a map that is still consistent: keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_enabled(&self) -> bool {
        self.config.cache_capacity > 0 && !self.config.cache_ttl.is_zero()
    }

    /// Forgets every cached key of a device: call after changing or deleting the device on this
    /// node. The registry API does.
    pub fn forget_device(&self, tenant: &TenantId, device: &DeviceId) {
        self.lock_cache()
            .entries
            .retain(|_, e| !(e.record.tenant == *tenant && e.record.device == *device));
    }

    fn forget_key(&self, key_id: &str) {
        self.lock_cache().entries.remove(key_id);
    }

    /// Issues a new key to an existing device, leaving its other keys as they are.
    ///
    /// [`NotFound`](hub_core::ErrorKind::NotFound) if the device does not exist,
    /// [`Conflict`](hub_core::ErrorKind::Conflict) if it already holds
    /// [`AccessKeyConfig::max_keys_per_device`] usable keys.
    pub async fn issue(&self, tenant: &TenantId, device: &DeviceId) -> Result<IssuedAccessKey> {
        if self.registry.get_device(tenant, device).await?.is_none() {
            return Err(Error::not_found(format!("device {device} does not exist")));
        }
        self.issue_unchecked(tenant, device, &[]).await
    }

    /// Issues a key for a device known to exist (just created or just read); the keys in
    /// `ending` are about to end and do not count to the limit.
    pub(crate) async fn issue_unchecked(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        ending: &[AccessKeyRecord],
    ) -> Result<IssuedAccessKey> {
        let now = self.clock.now();
        let usable = self
            .credentials
            .list_access_keys(tenant, device)
            .await?
            .iter()
            .filter(|k| k.is_usable(now) && !ending.iter().any(|e| e.prefix == k.prefix))
            .count();
        if usable >= self.config.max_keys_per_device {
            return Err(Error::conflict(format!(
                "device {device} already holds {usable} usable access keys, the most allowed; \
                 revoke one first"
            )));
        }
        // A key id collision (80 random bits) is next to impossible; retry a few times anyway.
        let mut attempts = 0;
        loop {
            let key = AccessKey::generate()?;
            let record = AccessKeyRecord {
                prefix: key.key_id().to_owned(),
                tenant: tenant.clone(),
                device: device.clone(),
                hash: key.hash(),
                created_at: now,
                expires_at: None,
                revoked_at: None,
            };
            let info = AccessKeyInfo::new(&record, now);
            match self.credentials.put_access_key(record).await {
                Ok(()) => {
                    return Ok(IssuedAccessKey {
                        info,
                        access_key: key.into_secret(),
                    });
                }
                Err(e) if e.kind() == hub_core::ErrorKind::Conflict && attempts < 3 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Rotates a device's keys: issues a new key, and lets every key that is usable now keep
    /// working for `overlap` (the configured default when `None`), so the device can switch over
    /// without losing its connection. An overlap of zero ends the old keys at once.
    ///
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for an overlap above
    /// [`AccessKeyConfig::max_overlap`]; otherwise as [`AccessKeys::issue`].
    pub async fn rotate(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        overlap: Option<Duration>,
    ) -> Result<IssuedAccessKey> {
        let overlap = overlap.unwrap_or(self.config.default_overlap);
        if overlap > self.config.max_overlap {
            return Err(Error::invalid_input(format!(
                "the overlap may be at most {} seconds",
                self.config.max_overlap.as_secs()
            )));
        }
        if self.registry.get_device(tenant, device).await?.is_none() {
            return Err(Error::not_found(format!("device {device} does not exist")));
        }
        let now = self.clock.now();
        let old: Vec<AccessKeyRecord> = self
            .credentials
            .list_access_keys(tenant, device)
            .await?
            .into_iter()
            .filter(|k| k.is_usable(now))
            .collect();
        // The limit counts the keys that will still be usable, so a rotation without overlap
        // needs no free slot. The new key is stored first: a failure half-way leaves the device
        // with a working key rather than with none.
        let ending: &[AccessKeyRecord] = if overlap.is_zero() { &old } else { &[] };
        let issued = self.issue_unchecked(tenant, device, ending).await?;
        let end = now.saturating_add(overlap);
        for k in &old {
            let expiry = match k.expires_at {
                Some(e) if e < end => e,
                _ => end,
            };
            self.credentials
                .set_access_key_expiry(&k.prefix, Some(expiry))
                .await?;
            self.forget_key(&k.prefix);
        }
        Ok(issued)
    }

    /// Revokes one key of a device at once. [`NotFound`](hub_core::ErrorKind::NotFound) if the
    /// device has no key with this id.
    pub async fn revoke(&self, tenant: &TenantId, device: &DeviceId, key_id: &str) -> Result<()> {
        match self.credentials.find_access_key(key_id).await? {
            Some(k) if k.tenant == *tenant && k.device == *device => {
                self.credentials
                    .revoke_access_key(key_id, self.clock.now())
                    .await?;
                self.forget_key(key_id);
                Ok(())
            }
            _ => Err(Error::not_found(format!(
                "device {device} has no access key {key_id:?}"
            ))),
        }
    }

    /// A device's keys, newest first, without secrets.
    pub async fn list(&self, tenant: &TenantId, device: &DeviceId) -> Result<Vec<AccessKeyInfo>> {
        let now = self.clock.now();
        Ok(self
            .credentials
            .list_access_keys(tenant, device)
            .await?
            .iter()
            .map(|r| AccessKeyInfo::new(r, now))
            .collect())
    }

    /// Checks an access key, and the device id the client claims when it names one (the MQTT
    /// user name). Every failure is the same `Unauthenticated` error; a store failure is passed
    /// on as it is (it says nothing about the key).
    pub async fn authenticate_key(
        &self,
        claimed: Option<&DeviceId>,
        key: &str,
    ) -> Result<DevicePrincipal> {
        let Ok(key) = AccessKey::parse(key) else {
            return Err(rejected());
        };
        let now = self.clock.now();
        let entry = if self.cache_enabled() {
            self.lock_cache()
                .get(key.key_id(), now, self.config.cache_ttl)
        } else {
            None
        };
        let entry = match entry {
            Some(e) => e,
            None => {
                let Some(entry) = self.load(key.key_id(), now).await? else {
                    // Hash anyway, so an unknown key id costs about what a wrong secret does.
                    let _ = key.hash();
                    return Err(rejected());
                };
                if self.cache_enabled() {
                    self.lock_cache().insert(
                        key.key_id().to_owned(),
                        entry.clone(),
                        self.config.cache_capacity,
                        self.config.cache_ttl,
                    );
                }
                entry
            }
        };
        // Check everything, then decide once: no early return tells which part failed.
        let secret_ok = verify_sha256(&entry.record.hash, key.expose());
        let usable = entry.record.is_usable(now);
        let claim_ok = claimed.is_none_or(|d| *d == entry.record.device);
        if secret_ok && usable && claim_ok && entry.enabled {
            Ok(DevicePrincipal {
                id: entry.record.device,
                group: entry.group,
            })
        } else {
            Err(rejected())
        }
    }

    async fn load(&self, key_id: &str, now: Timestamp) -> Result<Option<CacheEntry>> {
        let Some(record) = self.credentials.find_access_key(key_id).await? else {
            return Ok(None);
        };
        let Some(device) = self
            .registry
            .get_device(&record.tenant, &record.device)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(CacheEntry {
            enabled: lifecycle_allows_connect(device.lifecycle),
            group: device.group,
            record,
            fetched_at: now,
        }))
    }
}

impl Authenticator for AccessKeys {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> BoxFuture<'a, Result<Principal, Error>> {
        Box::pin(async move {
            match credentials {
                Credentials::AccessKey { device, key } => self
                    .authenticate_key(device.as_ref(), key.expose())
                    .await
                    .map(Principal::Device),
                _ => Err(Error::unauthenticated(
                    "this authenticator accepts device access keys only",
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = AccessKey::generate().unwrap();
        let s = k.expose();
        assert!(s.starts_with("hk_"));
        assert_eq!(s.len(), 3 + KEY_ID_LEN + 1 + SECRET_LEN);
        assert_eq!(AccessKey::parse(s).unwrap(), k);
        assert!(k.hash().starts_with("$sha256$"));
        assert!(!format!("{k:?}").contains(&s[20..]));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = AccessKey::generate().unwrap();
        let s = good.expose();
        assert_eq!(
            AccessKey::parse(&s[1..]).unwrap_err(),
            KeyFormatError::Prefix
        );
        assert_eq!(
            AccessKey::parse(&s.to_uppercase().replacen("HK_", "hk_", 1)).unwrap_err(),
            KeyFormatError::KeyId
        );
        assert_eq!(
            AccessKey::parse(&s[..s.len() - 1]).unwrap_err(),
            KeyFormatError::Secret
        );
        assert_eq!(
            AccessKey::parse(&format!("{s}=")).unwrap_err(),
            KeyFormatError::Secret
        );
        assert!(AccessKey::parse("").is_err());
        assert!(AccessKey::parse("hk_").is_err());
    }

    fn arb_key() -> impl Strategy<Value = String> {
        ("[a-z2-7]{16}", "[A-Za-z0-9_-]{43}").prop_map(|(id, s)| format!("hk_{id}_{s}"))
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,120}") {
            let _ = AccessKey::parse(&s);
        }

        #[test]
        fn parse_never_panics_near_the_format(s in "hk_[a-z2-7_]{0,20}[A-Za-z0-9_=é-]{0,50}") {
            if let Ok(k) = AccessKey::parse(&s) {
                prop_assert_eq!(k.expose(), s.as_str());
            }
        }

        #[test]
        fn well_formed_keys_round_trip(s in arb_key()) {
            let k = AccessKey::parse(&s).unwrap();
            prop_assert_eq!(k.expose(), s.as_str());
            prop_assert_eq!(k.key_id(), &s[3..19]);
            prop_assert_eq!(AccessKey::parse(k.expose()).unwrap(), k);
        }

        #[test]
        fn any_single_character_change_of_the_secret_changes_the_hash(
            s in arb_key(), pos in 20usize..63, c in "[A-Za-z0-9_-]",
        ) {
            let k = AccessKey::parse(&s).unwrap();
            let mut t = s.clone();
            t.replace_range(pos..=pos, &c);
            prop_assume!(t != s);
            prop_assert!(!verify_sha256(&k.hash(), &t));
        }
    }
}
