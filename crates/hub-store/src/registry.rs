//! Tenants, their group trees and devices.

use serde::{Deserialize, Serialize};

use hub_core::{BoxFuture, DeviceId, GroupPath, Result, TenantId, Timestamp};

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

/// Tenants, groups and devices.
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

    /// Deletes a group that has no child groups and no devices. A tenant's root group cannot be
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

    /// Removes a device.
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
}
