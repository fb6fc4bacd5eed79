//! Device configuration documents: versioned JSON per device and kind.
//!
//! A controller writes the **desired** configuration ("change config"); a device uploads its
//! **reported** configuration as a backup. Both keep every version (1, 2, 3, ... per device and
//! kind) until retention prunes old ones, so a configuration can be rolled back and a backup
//! restored onto a replacement unit with [`ConfigStore::copy_latest`].
//!
//! The store does not check that the devices exist in the registry: like the other stores it
//! keeps what it is told, and the caller (who has already authorized the request against the
//! device) decides what makes sense.

use serde::{Deserialize, Serialize};

use hub_core::{BoxFuture, DeviceId, Result, TenantId, Timestamp};

use crate::{Page, PageRequest};

/// Which configuration a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigKind {
    /// The configuration a controller wants the device to run.
    Desired,
    /// A backup the device uploaded of the configuration it runs.
    Reported,
}

impl ConfigKind {
    /// The stable snake_case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Desired => "desired",
            ConfigKind::Reported => "reported",
        }
    }

    /// The kind named by [`ConfigKind::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        [ConfigKind::Desired, ConfigKind::Reported]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One stored version of a device's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigDocument {
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
    /// 1 for the first document of this device and kind, then one more with every put; never
    /// reused, also after pruning.
    pub version: u64,
    /// The configuration, at most
    /// [`StoreLimits::max_config_bytes`](crate::StoreLimits::max_config_bytes) of serialized
    /// JSON.
    pub document: serde_json::Value,
    /// Desired or reported.
    pub kind: ConfigKind,
    /// When it was stored.
    pub created_at: Timestamp,
    /// Who stored it (a principal description), 1 to 256 bytes.
    pub created_by: String,
}

/// Versioned device configuration documents.
pub trait ConfigStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `document` as the next version of `device`'s `kind` configuration.
    ///
    /// `expected_latest_version` is a compare-and-set: `None` writes unconditionally,
    /// `Some(v)` writes only if the latest version is `v` (`Some(0)`: only if there is none yet),
    /// else [`PreconditionFailed`](hub_core::ErrorKind::PreconditionFailed). Of several
    /// concurrent puts expecting the same version exactly one succeeds.
    ///
    /// Errors also: [`TooLarge`](hub_core::ErrorKind::TooLarge) for an oversized document,
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for a malformed `created_by`;
    /// nothing is written.
    #[allow(clippy::too_many_arguments)]
    fn put<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        document: serde_json::Value,
        created_by: &'a str,
        expected_latest_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ConfigDocument>>;

    /// The newest version, if any.
    fn latest<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
    ) -> BoxFuture<'a, Result<Option<ConfigDocument>>>;

    /// One version, if it exists (and was not pruned).
    fn get<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<ConfigDocument>>>;

    /// The stored versions, newest first; the page cursor is the version.
    fn list<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<ConfigDocument>>>;

    /// Restores a backup onto a replacement unit: the latest `kind` document of `from` becomes
    /// the next version of `to` (unconditionally), stamped with `created_by` and `now`.
    ///
    /// Errors: [`NotFound`](hub_core::ErrorKind::NotFound) when `from` has no such document,
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for a malformed `created_by`.
    fn copy_latest<'a>(
        &'a self,
        tenant: &'a TenantId,
        from: &'a DeviceId,
        to: &'a DeviceId,
        kind: ConfigKind,
        created_by: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ConfigDocument>>;

    /// Retention: keeps the newest `keep` versions of `device`'s `kind` configuration, removes
    /// the older ones and returns how many were removed. The latest is always kept, so `keep`
    /// 0 is [`InvalidInput`](hub_core::ErrorKind::InvalidInput).
    fn prune<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        keep: u32,
    ) -> BoxFuture<'a, Result<u64>>;
}
