//! Tenants, their group trees, devices, users and OAuth clients.

use serde::{Deserialize, Serialize};

use hub_core::{
    BoxFuture, ClientId, DeviceId, GroupPath, Result, Role, ScopeSet, TenantId, Timestamp, UserId,
};

use crate::{Page, PageRequest};

/// A group of a tenant's hierarchy. A tenant is its root group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group's path; its first segment is the tenant.
    pub path: GroupPath,
    /// A human name.
    pub display_name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Registered, has never connected.
    #[default]
    Provisioned,
    /// In service.
    Active,
    /// Temporarily barred from connecting.
    Suspended,
    /// Taken out of service for good; kept for its history.
    Decommissioned,
}

impl Lifecycle {
    /// The stable snake_case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Provisioned => "provisioned",
            Lifecycle::Active => "active",
            Lifecycle::Suspended => "suspended",
            Lifecycle::Decommissioned => "decommissioned",
        }
    }

    /// The state named by [`Lifecycle::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Lifecycle::Provisioned,
            Lifecycle::Active,
            Lifecycle::Suspended,
            Lifecycle::Decommissioned,
        ]
        .into_iter()
        .find(|l| l.as_str() == s)
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The device, unique within its tenant.
    pub id: DeviceId,
    /// The group it is in; its first segment is the tenant.
    pub group: GroupPath,
    /// A human name.
    pub display_name: String,
    /// Schemaless attributes (a JSON object), size-limited by
    /// [`StoreLimits::max_attributes_bytes`](crate::StoreLimits::max_attributes_bytes).
    pub attributes: serde_json::Value,
    /// Its life-cycle state.
    pub lifecycle: Lifecycle,
    /// Increases by one with every change; exposed as the device's ETag.
    pub version: u64,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

impl Device {
    /// The device's tenant.
    pub fn tenant(&self) -> TenantId {
        self.group.tenant()
    }
}

/// What is needed to register a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDevice {
    /// The device id.
    pub id: DeviceId,
    /// The group to put it in (must exist).
    pub group: GroupPath,
    /// A human name.
    #[serde(default)]
    pub display_name: String,
    /// Attributes: a JSON object (defaults to `{}`).
    #[serde(default = "empty_object")]
    pub attributes: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A change to a device; `None` fields stay as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DevicePatch {
    /// A new human name.
    pub display_name: Option<String>,
    /// New attributes, replacing the old ones whole.
    pub attributes: Option<serde_json::Value>,
    /// A new life-cycle state.
    pub lifecycle: Option<Lifecycle>,
}

/// A person with an account in a group of a tenant. Credentials are kept apart, hashed, by the
/// [`CredentialStore`](crate::CredentialStore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's tenant (the first segment of `group`).
    pub tenant: TenantId,
    /// The user, unique within the tenant.
    pub id: UserId,
    /// The group the user belongs to; the user acts within its subtree.
    pub group: GroupPath,
    /// A human name.
    pub display_name: String,
    /// A contact address, if known.
    pub email: Option<String>,
    /// The role the user has in the group's subtree.
    pub role: Role,
    /// A disabled user may not sign in.
    pub disabled: bool,
    /// Increases by one with every change (including a move of its group); the user's ETag.
    pub version: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

/// What is needed to create a user; the tenant is the group's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// The user id.
    pub id: UserId,
    /// The group to put the user in (must exist).
    pub group: GroupPath,
    /// A human name.
    #[serde(default)]
    pub display_name: String,
    /// A contact address.
    #[serde(default)]
    pub email: Option<String>,
    /// The user's role.
    pub role: Role,
}

/// A change to a user; `None` fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserPatch {
    /// A new human name.
    pub display_name: Option<String>,
    /// A new contact address: `Some(None)` clears it.
    pub email: Option<Option<String>>,
    /// A new role.
    pub role: Option<Role>,
    /// Disables or re-enables the user.
    pub disabled: Option<bool>,
    /// Moves the user to another existing group of the same tenant.
    pub group: Option<GroupPath>,
}

impl UserPatch {
    /// Applies the patch to `user` if it is at `expected_version` (when given): the one
    /// definition every backend uses, so they cannot drift.
    pub(crate) fn apply_to(
        self,
        user: &mut User,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> Result<()> {
        check_version("user", user.id.as_str(), user.version, expected_version)?;
        if let Some(name) = self.display_name {
            user.display_name = name;
        }
        if let Some(email) = self.email {
            user.email = email;
        }
        if let Some(role) = self.role {
            user.role = role;
        }
        if let Some(disabled) = self.disabled {
            user.disabled = disabled;
        }
        if let Some(g) = self.group {
            user.group = g;
        }
        user.version += 1;
        user.updated_at = now;
        Ok(())
    }
}

impl DevicePatch {
    /// Applies the patch to `device` if it is at `expected_version` (when given): the one
    /// definition every backend uses, so they cannot drift.
    pub(crate) fn apply_to(
        self,
        device: &mut Device,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> Result<()> {
        check_version(
            "device",
            device.id.as_str(),
            device.version,
            expected_version,
        )?;
        if let Some(name) = self.display_name {
            device.display_name = name;
        }
        if let Some(attrs) = self.attributes {
            device.attributes = attrs;
        }
        if let Some(l) = self.lifecycle {
            device.lifecycle = l;
        }
        device.version += 1;
        device.updated_at = now;
        Ok(())
    }
}

fn check_version(what: &str, id: &str, version: u64, expected: Option<u64>) -> Result<()> {
    match expected {
        Some(v) if v != version => Err(hub_core::Error::precondition_failed(format!(
            "{what} {id} is at version {version}, not {v}"
        ))),
        _ => Ok(()),
    }
}

/// An application registered with the hub (an OAuth 2.0 client).
///
/// The client id is unique hub-wide, because `client_id` reaches the token endpoint without a
/// tenant. The store never sees a client secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClient {
    /// The client id, unique hub-wide.
    pub id: ClientId,
    /// The group that owns the client; its first segment is the tenant.
    pub group: GroupPath,
    /// A human name, shown on the consent page.
    pub display_name: String,
    /// The exact redirect URIs the client may use: absolute `https://` URIs, or `http://` on
    /// `localhost`, `127.0.0.1` or `[::1]` (native apps), never with a fragment (RFC 9700).
    pub redirect_uris: Vec<String>,
    /// A hash of the client secret (the format is `hub-auth`'s business); `None` for a public
    /// client.
    pub secret_hash: Option<String>,
    /// The grant types the client may use (`authorization_code`, `refresh_token`, ...).
    pub grant_types: Vec<String>,
    /// The most the client may ask for.
    pub scopes: ScopeSet,
    /// When it was registered.
    pub created_at: Timestamp,
}

impl OAuthClient {
    /// The client's tenant.
    pub fn tenant(&self) -> TenantId {
        self.group.tenant()
    }
}

/// Tenants, groups, devices, users and OAuth clients.
///
/// Errors: [`NotFound`](hub_core::ErrorKind::NotFound) for a missing group or device,
/// [`Conflict`](hub_core::ErrorKind::Conflict) for a duplicate or a non-empty group on delete,
/// [`PreconditionFailed`](hub_core::ErrorKind::PreconditionFailed) when an expected version is
/// stale, [`TooLarge`](hub_core::ErrorKind::TooLarge) / [`InvalidInput`](hub_core::ErrorKind::InvalidInput)
/// for attributes over the limit or not a JSON object.
pub trait RegistryStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a tenant's root group.
    fn create_tenant<'a>(
        &'a self,
        tenant: &'a TenantId,
        display_name: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>>;

    /// Creates a group under an existing parent.
    fn create_group<'a>(
        &'a self,
        path: &'a GroupPath,
        display_name: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>>;

    /// One group.
    fn get_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<Option<Group>>>;

    /// The groups of `root`'s subtree (itself included), ordered by path.
    fn list_groups<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Group>>>;

    /// Deletes a group that has no child groups, no devices, no users and no OAuth clients
    /// ([`Conflict`](hub_core::ErrorKind::Conflict) otherwise). A tenant's root group cannot be
    /// deleted this way.
    fn delete_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<()>>;

    /// Registers a device.
    fn create_device<'a>(
        &'a self,
        device: NewDevice,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>>;

    /// One device.
    fn get_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Option<Device>>>;

    /// Changes a device; with `expected_version`, only if the device is still at that version.
    fn update_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
        patch: DevicePatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>>;

    /// Moves a device to another existing group of the same tenant.
    fn move_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
        to: &'a GroupPath,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>>;

    /// Removes a device and its access keys, in one change: a device registered again later
    /// under the same id starts without credentials.
    fn delete_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<()>>;

    /// The devices of `root`'s subtree, ordered by id, optionally in one life-cycle state.
    fn list_devices<'a>(
        &'a self,
        root: &'a GroupPath,
        lifecycle: Option<Lifecycle>,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Device>>>;
    /// Moves (or renames) the group `from` with its whole subtree to `to`, in one atomic change:
    /// every descendant group, and every device, user, OAuth client, job and bulk job of the subtree gets
    /// its path rewritten with [`GroupPath::rebase`]. Moved groups get `updated_at = now`; moved
    /// devices and users get a new version and `updated_at = now`. Returns the group at `to`.
    ///
    /// Refused with [`InvalidInput`](hub_core::ErrorKind::InvalidInput) when `from` or `to` is a
    /// root group, they lie in different tenants, `to` lies inside `from` or the subtree would
    /// grow deeper than [`MAX_GROUP_DEPTH`](hub_core::MAX_GROUP_DEPTH);
    /// [`NotFound`](hub_core::ErrorKind::NotFound) when `from` or `to`'s parent does not exist;
    /// [`Conflict`](hub_core::ErrorKind::Conflict) when `to` exists.
    fn move_group<'a>(
        &'a self,
        from: &'a GroupPath,
        to: &'a GroupPath,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>>;

    /// Creates a user at version 1, enabled. [`NotFound`](hub_core::ErrorKind::NotFound) if the
    /// group does not exist, [`Conflict`](hub_core::ErrorKind::Conflict) if the tenant has a user
    /// with this id.
    fn create_user<'a>(&'a self, user: NewUser, now: Timestamp) -> BoxFuture<'a, Result<User>>;

    /// One user.
    fn get_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<User>>>;

    /// Changes a user; with `expected_version`, only if the user is still at that version
    /// ([`PreconditionFailed`](hub_core::ErrorKind::PreconditionFailed) otherwise). A new group
    /// must exist ([`NotFound`](hub_core::ErrorKind::NotFound)) in the same tenant
    /// ([`InvalidInput`](hub_core::ErrorKind::InvalidInput)).
    fn update_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
        patch: UserPatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<User>>;

    /// Removes a user and its password hash.
    fn delete_user<'a>(&'a self, tenant: &'a TenantId, id: &'a UserId)
    -> BoxFuture<'a, Result<()>>;

    /// The users of `root`'s subtree, ordered by id (byte order).
    fn list_users<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<User>>>;

    /// Registers an OAuth client. [`NotFound`](hub_core::ErrorKind::NotFound) if its group does
    /// not exist, [`Conflict`](hub_core::ErrorKind::Conflict) if the id is taken (in any tenant),
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for a redirect URI that is not allowed.
    fn create_client<'a>(&'a self, client: OAuthClient) -> BoxFuture<'a, Result<OAuthClient>>;

    /// One OAuth client, looked up hub-wide.
    fn get_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<Option<OAuthClient>>>;

    /// Removes an OAuth client.
    fn delete_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<()>>;

    /// The OAuth clients owned by groups of `root`'s subtree, ordered by id (byte order).
    fn list_clients<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<OAuthClient>>>;
}

/// The stable snake_case name of a role, as stored.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn role_name(role: Role) -> String {
    match serde_json::to_value(role) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The role named by [`role_name`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn role_from_name(name: &str) -> Option<Role> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}
