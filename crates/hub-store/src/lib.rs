//! # hub-store: pluggable storage for the IoT hub
//!
//! The hub keeps its state behind a few object-safe traits, so an application picks a backend at
//! start-up (`Arc<dyn JobStore>`) and an integrator can bring their own:
//!
//! | trait | what it keeps |
//! |---|---|
//! | [`RegistryStore`] | tenants and their group trees, devices with attributes and life cycle |
//! | [`CredentialStore`] | hashed device access keys, looked up by a public prefix |
//! | [`JobStore`] | jobs in per-device FIFO order, compare-and-set on a version, due times, idempotency keys, exclusive-control leases |
//! | [`MeasurementStore`] | time series points, idempotent on (device, series, time), with hourly rollups for fast aggregates |
//! | [`AuditStore`] | the append-only audit log (who did what to which resource), queried by group subtree, removed only by retention |
//! | [`ConfigStore`] | versioned device configuration documents (desired and reported), compare-and-set, copy onto a replacement unit, pruning |
//! | [`ArtifactStore`] | content-addressed blobs per tenant (firmware, packages, backups), streamed in and out, SHA-256 verified, size limited |
//! | [`BulkJobStore`] | bulk jobs (one job document for many devices): compare-and-set records and the devices that got their child job |
//!
//! Backends:
//!
//! - [`memory::MemoryStore`]: everything in RAM, for tests and as the reference model.
//! - `sqlite::SqliteStore` (feature `sqlite`, default): one file, WAL, the embedded default. Writes
//!   go through one writer thread that **group-commits** concurrent requests into one transaction
//!   and acknowledges each only after the commit, at the configured [`Durability`].
//! - `postgres::PostgresStore` (feature `postgres`): several hub nodes sharing one database.
//!
//! The store does not enforce business rules (which job state may follow which: that is
//! `hub-jobs`); it stores what it is told atomically, refuses a write whose expected version is
//! stale, and validates sizes and values so that bad input never lands half-written.
//!
//! With feature `http`, [`http::MeasurementApi`] serves the measurement REST API.
//!
//! Every backend must pass the conformance kit (feature `conformance`):
//! `hub_store::conformance::run_all(hub_store::conformance::factory(|| async { my_stores() })).await`.
//!
//! ```
//! use hub_store::{memory::MemoryStore, StoreLimits};
//! let stores = MemoryStore::new(StoreLimits::default()).into_stores();
//! # let _ = stores;
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod artifacts;
pub mod audit;
pub mod bulk;
pub mod config;
pub mod credentials;
pub mod jobs;
pub mod measurements;
pub mod memory;
pub mod registry;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

mod rollup;
mod validate;

pub use artifacts::{ArtifactMeta, ArtifactStore};
pub use audit::{AuditOutcome, AuditQuery, AuditRecord, AuditStore, NewAuditRecord};
pub use bulk::{BulkJobRecord, BulkJobState, BulkJobStore, BulkTarget, NewBulkJob};
pub use config::{ConfigDocument, ConfigKind, ConfigStore};
pub use credentials::{
    AccessKeyRecord, CredentialStore, Grant, GrantKind, GrantState, RefreshRecord, RefreshToken,
    RotateOutcome,
};
pub use jobs::{ControlLease, CreateOutcome, DEFAULT_LANE, JobFilter, JobRecord, JobStore, NewJob};
pub use measurements::{
    AggregateQuery, AggregateScope, AppendOutcome, Bucket, MeasurementStore, MeasurementUpload,
    Point, SeriesName, SeriesPoints,
};
pub use registry::{
    Device, DevicePatch, Group, Lifecycle, NewDevice, NewUser, OAuthClient, RegistryStore, User,
    UserPatch,
};

pub use hub_core::{BoxFuture, Error, ErrorKind, Result};

/// The stores an application needs, usually all served by one backend.
#[derive(Clone, Debug)]
pub struct Stores {
    /// Tenants, groups, devices, users and OAuth clients.
    pub registry: Arc<dyn RegistryStore>,
    /// Credentials (hashes only).
    pub credentials: Arc<dyn CredentialStore>,
    /// Jobs.
    pub jobs: Arc<dyn JobStore>,
    /// Measurements.
    pub measurements: Arc<dyn MeasurementStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditStore>,
    /// Device configuration documents.
    pub config: Arc<dyn ConfigStore>,
    /// Artifacts (content-addressed blobs).
    pub artifacts: Arc<dyn ArtifactStore>,
    /// Bulk jobs and their targets.
    pub bulk: Arc<dyn BulkJobStore>,
}

/// What an acknowledged write survives. Chosen by configuration; backends document how they keep
/// the promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every acknowledged write survives a crash of the hub process (SIGKILL, panic, OOM kill).
    /// A power loss may lose the last moments of writes. SQLite: WAL with `synchronous=NORMAL`.
    #[default]
    ProcessCrash,
    /// Every acknowledged write survives a power loss: the commit is fsynced before the
    /// acknowledgement. SQLite: WAL with `synchronous=FULL`.
    PowerLoss,
}

/// The explicit, configurable limits every backend enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreLimits {
    /// The largest device attribute document, serialized JSON bytes.
    pub max_attributes_bytes: usize,
    /// The largest job document, serialized JSON bytes.
    pub max_job_document_bytes: usize,
    /// The largest job status details or result, serialized JSON bytes.
    pub max_job_status_bytes: usize,
    /// The most points in one append call.
    pub max_points_per_append: usize,
    /// The largest page a list call returns; larger requests are cut to this.
    pub max_page_size: u32,
    /// The most aggregate buckets one query may produce.
    pub max_buckets: u32,
    /// The largest audit record details, serialized JSON bytes. Defaults to 4 KiB when missing
    /// from a configuration written before it existed.
    #[serde(default = "default_max_audit_details_bytes")]
    pub max_audit_details_bytes: usize,
    /// The largest device configuration document, serialized JSON bytes. Defaults to 64 KiB
    /// when missing from a configuration written before it existed.
    #[serde(default = "default_max_config_bytes")]
    pub max_config_bytes: usize,
    /// The largest grant payload, serialized JSON bytes.
    #[serde(default = "default_grant_payload")]
    pub max_grant_payload_bytes: usize,
    /// The largest artifact, bytes.
    #[serde(default = "default_max_artifact_bytes")]
    pub max_artifact_bytes: u64,
    /// The largest bulk job definition (or progress), serialized JSON bytes: the job document
    /// plus the device list. Defaults to 1 MiB.
    #[serde(default = "default_max_bulk_definition_bytes")]
    pub max_bulk_definition_bytes: usize,
}

fn default_max_bulk_definition_bytes() -> usize {
    1024 * 1024
}

fn default_grant_payload() -> usize {
    8 * 1024
}

fn default_max_artifact_bytes() -> u64 {
    1024 * 1024 * 1024
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_attributes_bytes: 16 * 1024,
            max_job_document_bytes: 64 * 1024,
            max_job_status_bytes: 16 * 1024,
            max_points_per_append: 100_000,
            max_page_size: 1000,
            max_buckets: 100_000,
            max_audit_details_bytes: default_max_audit_details_bytes(),
            max_config_bytes: default_max_config_bytes(),
            max_grant_payload_bytes: default_grant_payload(),
            max_artifact_bytes: default_max_artifact_bytes(),
            max_bulk_definition_bytes: default_max_bulk_definition_bytes(),
        }
    }
}

fn default_max_audit_details_bytes() -> usize {
    4 * 1024
}

fn default_max_config_bytes() -> usize {
    64 * 1024
}

/// A request for one page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PageRequest {
    /// The most items wanted; 0 means the backend's maximum.
    pub limit: u32,
    /// The `next` cursor of the previous page, or `None` for the first page.
    pub after: Option<String>,
}

impl PageRequest {
    /// The first page of at most `limit` items.
    pub fn first(limit: u32) -> Self {
        Self { limit, after: None }
    }

    /// The number of items to fetch under `limits`.
    pub fn effective_limit(&self, limits: &StoreLimits) -> u32 {
        match self.limit {
            0 => limits.max_page_size,
            n => n.min(limits.max_page_size),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// The cursor for the next page, `None` on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched items: if the extra one is there, it is dropped and
    /// `cursor(last kept item)` becomes `next`.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Self {
        let limit = limit as usize;
        if items.len() > limit {
            items.truncate(limit);
            let next = items.last().map(cursor);
            Page { items, next }
        } else {
            Page { items, next: None }
        }
    }
}

/// The error for a cursor that this backend did not produce.
pub(crate) fn bad_cursor() -> Error {
    Error::invalid_input("the page cursor is not valid for this listing")
}

#[cfg(test)]
mod tests {
    use super::StoreLimits;

    #[test]
    fn limits_written_before_the_audit_and_config_limits_still_load() {
        let mut old = serde_json::to_value(StoreLimits::default()).expect("serializes");
        let obj = old.as_object_mut().expect("an object");
        obj.remove("max_audit_details_bytes");
        obj.remove("max_config_bytes");
        obj.insert("max_page_size".into(), serde_json::json!(10));
        let limits: StoreLimits = serde_json::from_value(old).expect("old limits load");
        assert_eq!(limits.max_page_size, 10);
        assert_eq!(limits.max_audit_details_bytes, 4 * 1024);
        assert_eq!(limits.max_config_bytes, 64 * 1024);
    }
}
