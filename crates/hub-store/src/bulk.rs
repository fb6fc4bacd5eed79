//! Bulk jobs as stored: one record per bulk job (compare-and-set on a version) and the list of
//! devices that already got their child job.
//!
//! A bulk job sends one job document to many devices. The store keeps the bulk job's record
//! (its definition and rollout progress are opaque JSON written by `hub-jobs`, which owns the
//! rollout rules) and, per bulk job, one [`BulkTarget`] per device that was handed its child job.
//! The child jobs themselves are ordinary [`JobRecord`](crate::JobRecord)s whose `bulk` field
//! names the bulk job, so [`JobStore::count_jobs`](crate::JobStore::count_jobs) with
//! [`JobFilter::bulk`](crate::JobFilter) gives the counts per state.
//!
//! [`BulkJobStore::update_bulk_job`] writes the record and records new targets in one atomic
//! step, conditioned on the version read: several hub nodes advancing the same rollout at once
//! cannot both record a batch.

use serde::{Deserialize, Serialize};

use hub_core::{
    BoxFuture, BulkJobId, DeviceId, Error, GroupPath, JobId, Result, TenantId, Timestamp,
};

use crate::{Page, PageRequest, StoreLimits, validate};

pub(crate) mod memory;

/// The largest error text stored with a target, bytes.
pub const MAX_TARGET_ERROR: usize = 512;

/// The life cycle of a bulk job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkJobState {
    /// Rolling out (or waiting for its scheduling window, or for children to finish).
    InProgress,
    /// Every target got its child job and every child finished. Terminal.
    Completed,
    /// Canceled by a controller. Terminal.
    Canceled,
    /// Stopped by an abort criterion. Terminal.
    Aborted,
}

impl BulkJobState {
    /// Every state.
    pub const ALL: [BulkJobState; 4] = [
        BulkJobState::InProgress,
        BulkJobState::Completed,
        BulkJobState::Canceled,
        BulkJobState::Aborted,
    ];

    /// Whether nothing more happens to the bulk job.
    pub const fn is_terminal(self) -> bool {
        !matches!(self, BulkJobState::InProgress)
    }

    /// The stable snake_case name used in APIs and storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            BulkJobState::InProgress => "in_progress",
            BulkJobState::Completed => "completed",
            BulkJobState::Canceled => "canceled",
            BulkJobState::Aborted => "aborted",
        }
    }

    /// The state named by [`BulkJobState::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A bulk job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkJobRecord {
    /// The bulk job.
    pub id: BulkJobId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The group whose subtree it targets (and which access checks look at).
    pub group: GroupPath,
    /// Its state.
    pub state: BulkJobState,
    /// Starts at 1 and increases by one with every update; exposed as the ETag.
    pub version: u64,
    /// What to send to whom and how (opaque to the store; written by `hub-jobs`). Never changes.
    pub definition: serde_json::Value,
    /// The rollout's progress (opaque to the store; written by `hub-jobs`).
    pub progress: serde_json::Value,
    /// Who created it (a principal description).
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
    /// When the rollout must be looked at again; `None` when nothing is pending.
    pub due_at: Option<Timestamp>,
}

/// A bulk job to create. The store sets `version` to 1 and `updated_at` to `created_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBulkJob {
    /// The bulk job id (time-ordered).
    pub id: BulkJobId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The targeted group.
    pub group: GroupPath,
    /// The initial state (normally [`BulkJobState::InProgress`]).
    pub state: BulkJobState,
    /// The definition (opaque).
    pub definition: serde_json::Value,
    /// The initial progress (opaque).
    pub progress: serde_json::Value,
    /// Who creates it.
    pub created_by: String,
    /// When it is created.
    pub created_at: Timestamp,
    /// When to look at it first.
    pub due_at: Option<Timestamp>,
}

/// A device that was handed its child job (or whose child could not be created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkTarget {
    /// The device.
    pub device: DeviceId,
    /// The child job, `None` when its creation was refused.
    pub job: Option<JobId>,
    /// Why the child could not be created, at most [`MAX_TARGET_ERROR`] bytes.
    pub error: Option<String>,
    /// When the target was recorded.
    pub at: Timestamp,
}

/// Bulk jobs and their targets.
pub trait BulkJobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new bulk job. [`Conflict`](hub_core::ErrorKind::Conflict) when the id exists;
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) when the group is not in the tenant;
    /// [`TooLarge`](hub_core::ErrorKind::TooLarge) when the definition or progress exceeds
    /// [`StoreLimits::max_bulk_definition_bytes`].
    fn create_bulk_job<'a>(&'a self, job: NewBulkJob) -> BoxFuture<'a, Result<BulkJobRecord>>;

    /// One bulk job of a tenant.
    fn get_bulk_job<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a BulkJobId,
    ) -> BoxFuture<'a, Result<Option<BulkJobRecord>>>;

    /// The bulk jobs whose group lies in `root`'s subtree, ordered by id (creation time).
    fn list_bulk_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<BulkJobRecord>>>;

    /// Writes the mutable fields of `job` (state, progress, due time, updated time) and records
    /// `new_targets`, all or nothing, if the stored version is `expected_version`; the stored
    /// version becomes `expected_version + 1`. Errors:
    /// [`PreconditionFailed`](hub_core::ErrorKind::PreconditionFailed) for a stale version,
    /// [`NotFound`](hub_core::ErrorKind::NotFound) when the bulk job does not exist,
    /// [`Conflict`](hub_core::ErrorKind::Conflict) when a device in `new_targets` is already a
    /// target (or named twice); nothing is written then.
    fn update_bulk_job<'a>(
        &'a self,
        job: &'a BulkJobRecord,
        expected_version: u64,
        new_targets: &'a [BulkTarget],
    ) -> BoxFuture<'a, Result<BulkJobRecord>>;

    /// The recorded targets of a bulk job, ordered by device id; the page cursor is the device
    /// id. An unknown bulk job has no targets.
    fn list_bulk_targets<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a BulkJobId,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<BulkTarget>>>;

    /// The bulk jobs that are not terminal and whose `due_at` is at or before `at`, earliest
    /// first, at most `limit` (every tenant: this feeds the rollout timer).
    fn due_bulk_jobs<'a>(
        &'a self,
        at: Timestamp,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<BulkJobRecord>>>;
}

/// Checks a new bulk job before anything is written.
pub(crate) fn validate_new(job: &NewBulkJob, limits: &StoreLimits) -> Result<()> {
    if job.group.tenant() != job.tenant {
        return Err(Error::invalid_input(
            "the bulk job's group is not in its tenant",
        ));
    }
    validate::created_by(&job.created_by)?;
    validate_json(&job.definition, &job.progress, limits)
}

/// Checks an update before anything is written.
pub(crate) fn validate_update(
    job: &BulkJobRecord,
    targets: &[BulkTarget],
    limits: &StoreLimits,
) -> Result<()> {
    validate_json(&job.definition, &job.progress, limits)?;
    let mut seen = std::collections::BTreeSet::new();
    for t in targets {
        if !seen.insert(&t.device) {
            return Err(Error::conflict(format!(
                "device {} is named twice among the new targets",
                t.device
            )));
        }
        if let Some(e) = &t.error
            && (e.len() > MAX_TARGET_ERROR || e.contains('\0'))
        {
            return Err(Error::invalid_input(format!(
                "a target's error must be at most {MAX_TARGET_ERROR} bytes without U+0000"
            )));
        }
    }
    Ok(())
}

fn validate_json(
    definition: &serde_json::Value,
    progress: &serde_json::Value,
    limits: &StoreLimits,
) -> Result<()> {
    validate::json_size(
        definition,
        limits.max_bulk_definition_bytes,
        "the bulk job definition",
    )?;
    validate::json_size(
        progress,
        limits.max_bulk_definition_bytes,
        "the bulk job progress",
    )
}

/// The record a new bulk job is stored as.
pub(crate) fn record_of(job: NewBulkJob) -> BulkJobRecord {
    BulkJobRecord {
        id: job.id,
        tenant: job.tenant,
        group: job.group,
        state: job.state,
        version: 1,
        definition: job.definition,
        progress: job.progress,
        created_by: job.created_by,
        created_at: job.created_at,
        updated_at: job.created_at,
        due_at: job.due_at,
    }
}

/// The error for a stale compare-and-set.
pub(crate) fn stale(id: &BulkJobId, stored: u64, expected: u64) -> Error {
    Error::precondition_failed(format!(
        "bulk job {id} is at version {stored}, not {expected}"
    ))
}

/// The error for a missing bulk job.
pub(crate) fn missing(id: &BulkJobId) -> Error {
    Error::not_found(format!("bulk job {id} does not exist"))
}

/// The error for a device that is already a target.
pub(crate) fn already_targeted(device: &DeviceId) -> Error {
    Error::conflict(format!(
        "device {device} is already a target of the bulk job"
    ))
}
