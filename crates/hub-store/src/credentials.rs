//! Credentials, stored hashed: device access keys, user password hashes, single-use OAuth grants
//! (authorization codes, device codes) and refresh-token families.
//!
//! The store never sees a secret: `hub-auth` generates a key, code or token, shows it once, and
//! hands the store only a hash of it (and, for access keys, a public prefix for lookup). A leak
//! of the database therefore leaks no usable credential.

use serde::{Deserialize, Serialize};

use hub_core::{
    BoxFuture, ClientId, DeviceId, Error, GroupPath, Result, ScopeSet, TenantId, Timestamp, UserId,
};

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

/// A group enrollment: a shared secret with which devices register themselves into a group
/// (zero-touch provisioning), a limited number of times until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    /// The public id that identifies the enrollment, unique hub-wide.
    pub id: String,
    /// The group enrolled devices are placed in; its first segment is the tenant.
    pub group: GroupPath,
    /// A hash of the secret (the format is `hub-auth`'s business).
    pub hash: String,
    /// How many devices may enroll with it.
    pub max_uses: u32,
    /// How many have.
    pub uses: u32,
    /// When it stops working; usable while `now < expires_at`.
    pub expires_at: Timestamp,
    /// When it was created.
    pub created_at: Timestamp,
}

impl EnrollmentRecord {
    /// Whether one more device may enroll at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.uses < self.max_uses && now < self.expires_at
    }
}

fn no_enrollments() -> Error {
    Error::unavailable("this credential store does not keep enrollments")
}

/// What a single-use grant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// An OAuth 2.0 authorization code (RFC 6749 section 4.1).
    AuthorizationCode,
    /// An OAuth 2.0 device code (RFC 8628), with its user code.
    DeviceCode,
}

impl GrantKind {
    /// The stable snake_case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            GrantKind::AuthorizationCode => "authorization_code",
            GrantKind::DeviceCode => "device_code",
        }
    }

    /// The kind named by [`GrantKind::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        [GrantKind::AuthorizationCode, GrantKind::DeviceCode]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where a grant is in its approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Waiting for the user (device flow).
    #[default]
    Pending,
    /// The user approved it.
    Approved,
    /// The user denied it.
    Denied,
}

impl GrantState {
    /// The stable snake_case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            GrantState::Pending => "pending",
            GrantState::Approved => "approved",
            GrantState::Denied => "denied",
        }
    }

    /// The state named by [`GrantState::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        [
            GrantState::Pending,
            GrantState::Approved,
            GrantState::Denied,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A single-use grant: an authorization code or a device code, stored by the hash of the code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// What it is.
    pub kind: GrantKind,
    /// A hash of the code; unique per kind.
    pub key_hash: String,
    /// The short code a user types (device flow only); unique among live device codes.
    pub user_code: Option<String>,
    /// What `hub-auth` needs to finish the flow (client, user, scopes, PKCE challenge, ...),
    /// size-limited by [`StoreLimits::max_grant_payload_bytes`](crate::StoreLimits).
    pub payload: serde_json::Value,
    /// When it stops working; a grant is live while `now < expires_at`.
    pub expires_at: Timestamp,
    /// Its approval state.
    pub state: GrantState,
}

/// One refresh token of a family, stored by the hash of the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    /// A hash of the token; unique hub-wide.
    pub token_hash: String,
    /// The family: every token descending from one authorization by rotation.
    pub family: String,
    /// The tenant the grant is in.
    pub tenant: TenantId,
    /// The user who authorized it (`None` for a client acting on its own).
    pub user: Option<UserId>,
    /// The client it was issued to.
    pub client: ClientId,
    /// The scopes it grants.
    pub scopes: ScopeSet,
    /// When it stops working; usable while `now < expires_at`.
    pub expires_at: Timestamp,
    /// When it was issued.
    pub created_at: Timestamp,
}

/// A stored refresh token with its use and revocation marks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// The token.
    pub token: RefreshToken,
    /// It was rotated (exchanged for a new one); presenting it again is a replay.
    pub used: bool,
    /// Its family was revoked.
    pub revoked: bool,
}

impl RefreshRecord {
    /// Whether the token may be rotated at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        !self.used && !self.revoked && now < self.token.expires_at
    }
}

/// What [`CredentialStore::rotate_refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotateOutcome {
    /// The old token is now used and the new one is stored in its family; carries the old
    /// token as it was.
    Rotated(RefreshToken),
    /// The old token had been used already: a replay. The whole family is now revoked.
    Reused {
        /// The revoked family.
        family: String,
    },
    /// Unknown, expired or revoked: nothing changed.
    Invalid,
}

/// Credentials: device access keys, password hashes, single-use grants and refresh tokens.
///
/// Only hashes are stored; see the [module documentation](self).
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
    /// Sets (or replaces) a user's password hash; [`NotFound`](hub_core::ErrorKind::NotFound) if
    /// the user does not exist. Deleting the user deletes the hash.
    fn set_password_hash<'a>(
        &'a self,
        tenant: &'a TenantId,
        user: &'a UserId,
        hash: String,
    ) -> BoxFuture<'a, Result<()>>;

    /// A user's password hash, `None` if the user has none (or does not exist).
    fn get_password_hash<'a>(
        &'a self,
        tenant: &'a TenantId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<String>>>;

    /// Stores a grant. [`Conflict`](hub_core::ErrorKind::Conflict) if a grant of this kind has
    /// this key hash, or a live device code has this user code (expired holders of the user code
    /// are purged first); [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for a user code on
    /// an authorization code; [`TooLarge`](hub_core::ErrorKind::TooLarge) for a payload over the
    /// limit.
    fn put_grant<'a>(&'a self, grant: Grant, now: Timestamp) -> BoxFuture<'a, Result<()>>;

    /// A live grant; an expired one is `None`.
    fn get_grant<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>>;

    /// The live device code with this user code.
    fn find_grant_by_user_code<'a>(
        &'a self,
        user_code: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>>;

    /// Approves or denies a pending grant, replacing its payload when `payload` is given.
    /// [`NotFound`](hub_core::ErrorKind::NotFound) if missing or expired,
    /// [`Conflict`](hub_core::ErrorKind::Conflict) if it is not pending,
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) if `state` is `Pending`.
    fn set_grant_state<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        state: GrantState,
        payload: Option<serde_json::Value>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Grant>>;

    /// Atomically deletes and returns a live grant that may be redeemed: any live authorization
    /// code, or a live device code in state `Approved`. Otherwise `None` and nothing changes.
    /// Of concurrent consumers of one grant exactly one gets it.
    fn consume_grant<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>>;

    /// Deletes expired grants and expired refresh tokens; returns how many records went.
    fn purge_expired<'a>(&'a self, now: Timestamp) -> BoxFuture<'a, Result<u64>>;

    /// Stores the first token of a new family. [`Conflict`](hub_core::ErrorKind::Conflict) if
    /// the token hash or the family exists.
    fn create_refresh<'a>(&'a self, token: RefreshToken) -> BoxFuture<'a, Result<()>>;

    /// Rotates a refresh token (RFC 9700 section 4.14.2), atomically:
    ///
    /// - `old_hash` unknown → [`RotateOutcome::Invalid`];
    /// - already used (a replay) → the whole family is revoked, [`RotateOutcome::Reused`];
    /// - revoked or expired → [`RotateOutcome::Invalid`];
    /// - otherwise `old_hash` is marked used and `new` is stored in the old token's family,
    ///   [`RotateOutcome::Rotated`] with the old token. `new`'s family, tenant, user and client
    ///   are taken from the old token; its hash, scopes and times are the caller's.
    ///
    /// Of concurrent rotations of one token exactly one is `Rotated`; the others see a used
    /// token, so they are `Reused` and the family (the new token included) is revoked. That is
    /// deliberate: the authorization server cannot tell a legitimate client's retry from an
    /// attacker's replay, and RFC 9700 asks for the family to be revoked on any reuse.
    /// [`Conflict`](hub_core::ErrorKind::Conflict) (nothing changed) if `new`'s hash exists.
    fn rotate_refresh<'a>(
        &'a self,
        old_hash: &'a str,
        new: RefreshToken,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<RotateOutcome>>;

    /// Revokes every token of a family; returns how many were not revoked before. An unknown
    /// family revokes nothing.
    fn revoke_family<'a>(&'a self, family: &'a str) -> BoxFuture<'a, Result<u64>>;

    /// A refresh token with its marks, usable or not.
    fn get_refresh<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<Option<RefreshRecord>>>;

    /// Stores a new enrollment. [`Conflict`](hub_core::ErrorKind::Conflict) if the id exists,
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for an id or hash that is empty, too
    /// long or not printable ASCII.
    ///
    /// The enrollment methods have default implementations that answer
    /// [`Unavailable`](hub_core::ErrorKind::Unavailable), so that a store written before them
    /// still compiles; every backend of this crate implements them.
    fn put_enrollment<'a>(&'a self, enrollment: EnrollmentRecord) -> BoxFuture<'a, Result<()>> {
        let _ = enrollment;
        Box::pin(std::future::ready(Err(no_enrollments())))
    }

    /// The enrollment with this id, usable or not.
    fn get_enrollment<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<EnrollmentRecord>>> {
        let _ = id;
        Box::pin(std::future::ready(Err(no_enrollments())))
    }

    /// The enrollments of `root`'s subtree, ordered by id (byte order).
    fn list_enrollments<'a>(
        &'a self,
        root: &'a GroupPath,
    ) -> BoxFuture<'a, Result<Vec<EnrollmentRecord>>> {
        let _ = root;
        Box::pin(std::future::ready(Err(no_enrollments())))
    }

    /// Deletes an enrollment; [`NotFound`](hub_core::ErrorKind::NotFound) if there is none.
    fn delete_enrollment<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
        let _ = id;
        Box::pin(std::future::ready(Err(no_enrollments())))
    }

    /// Atomically counts one use: if the enrollment exists and
    /// [is usable](EnrollmentRecord::is_usable) at `now`, its `uses` grows by one and it is
    /// returned as it is after; otherwise `None` and nothing changes. Of concurrent uses of an
    /// enrollment with `n` uses left exactly `n` succeed.
    fn use_enrollment<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<EnrollmentRecord>>> {
        let _ = (id, now);
        Box::pin(std::future::ready(Err(no_enrollments())))
    }
}
