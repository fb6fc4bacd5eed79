//! Device credentials, stored hashed.
//!
//! The store never sees a secret: `hub-auth` generates a key, shows it once, and hands the store a
//! record with the key's public prefix (for lookup) and a hash of the rest.

use serde::{Deserialize, Serialize};

use hub_core::{BoxFuture, DeviceId, Result, TenantId, Timestamp};

/// One device access key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    /// The public prefix that identifies the key, unique hub-wide.
    pub prefix: String,
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device the key belongs to.
    pub device: DeviceId,
    /// A hash of the secret part (the format is `hub-auth`'s business, e.g. a PHC string).
    pub hash: String,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When it stops working (set at rotation, so old and new keys overlap for a while).
    pub expires_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
}

impl AccessKeyRecord {
    /// Whether the key may be used at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// Device credentials.
pub trait CredentialStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new key; [`Conflict`](hub_core::ErrorKind::Conflict) if the prefix exists.
    fn put_access_key<'a>(&'a self, key: AccessKeyRecord) -> BoxFuture<'a, Result<()>>;

    /// The key with this prefix, usable or not.
    fn find_access_key<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessKeyRecord>>>;

    /// A device's keys, newest first.
    fn list_access_keys<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<AccessKeyRecord>>>;

    /// Sets or clears a key's expiry (rotation overlap).
    fn set_access_key_expiry<'a>(
        &'a self,
        prefix: &'a str,
        expires_at: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Revokes a key at `now`; revoking a revoked key keeps the first time.
    fn revoke_access_key<'a>(
        &'a self,
        prefix: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<()>>;
}
