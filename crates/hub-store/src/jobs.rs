//! Jobs as stored: per-device FIFO order, compare-and-set on a version, due times.
//!
//! The store keeps job records and guarantees atomicity; the rules of the life cycle (which state
//! may follow which, what a claim does) belong to `hub-jobs`, which reads a record, decides, and
//! writes it back with [`JobStore::update_job`] conditioned on the version it read. Two writers
//! racing on one job: exactly one wins, the other gets
//! [`PreconditionFailed`](hub_core::ErrorKind::PreconditionFailed) and re-reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use hub_core::{
    BoxFuture, BulkJobId, DeviceId, GroupPath, JobId, JobState, Result, TenantId, Timestamp,
};

use crate::{Page, PageRequest};

/// The lane a job runs in when the caller names none.
pub const DEFAULT_LANE: &str = "default";

/// One job execution on one device, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub id: JobId,
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device that executes it.
    pub device: DeviceId,
    /// The device's group when the job was created (for subtree queries and access checks).
    pub group: GroupPath,
    /// The lane: jobs of one lane run one after another; lanes of a device are independent.
    pub lane: String,
    /// The position in the device's queue, assigned by the store: strictly increasing per
    /// (tenant, device) in creation order.
    pub seq: u64,
    /// The current state.
    pub state: JobState,
    /// Starts at 1 and increases by one with every update; exposed as the ETag.
    pub version: u64,
    /// How many times the job was handed to the device (each claim or retry starts a new
    /// execution); results must name the execution they belong to.
    pub execution: u32,
    /// How many executions ended in failure or timeout.
    pub attempts: u32,
    /// The job document: opaque to the hub.
    pub document: serde_json::Value,
    /// The job service's per-job settings (timeouts, retries, delivery policy), stored as given.
    pub options: serde_json::Value,
    /// The creator's idempotency key, unique per tenant.
    pub idempotency_key: Option<String>,
    /// Who created it (a principal description).
    pub created_by: String,
    /// The bulk job it belongs to.
    pub bulk: Option<BulkJobId>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
    /// When the job service must look at it again (time-to-live, timeouts, retry backoff);
    /// `None` when no timer runs.
    pub due_at: Option<Timestamp>,
    /// Progress details reported by the device (opaque JSON).
    pub status_details: Option<serde_json::Value>,
    /// The result reported by the device (opaque JSON).
    pub result: Option<serde_json::Value>,
}

/// A job to create. The store assigns `seq` and sets `version` to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The job id (time-ordered).
    pub id: JobId,
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
    /// The device's current group.
    pub group: GroupPath,
    /// The lane ([`DEFAULT_LANE`] unless the caller names one).
    pub lane: String,
    /// The initial state (normally [`JobState::Queued`]).
    pub state: JobState,
    /// The opaque job document.
    pub document: serde_json::Value,
    /// The job service's settings.
    pub options: serde_json::Value,
    /// An idempotency key, unique per tenant.
    pub idempotency_key: Option<String>,
    /// Who creates it.
    pub created_by: String,
    /// The bulk job it belongs to.
    pub bulk: Option<BulkJobId>,
    /// When it is created.
    pub created_at: Timestamp,
    /// The first timer (usually the time-to-live).
    pub due_at: Option<Timestamp>,
}

/// The result of [`JobStore::create_job`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateOutcome {
    /// The job: the new one, or the one created earlier with the same idempotency key.
    pub job: JobRecord,
    /// `false` when the idempotency key was already used and `job` is the earlier job.
    pub created: bool,
}

/// Which jobs a listing returns. Empty fields do not filter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only this device's jobs.
    pub device: Option<DeviceId>,
    /// Only jobs in one of these states (empty: any state).
    pub states: Vec<JobState>,
    /// Only jobs of this bulk job.
    pub bulk: Option<BulkJobId>,
}

/// A controller's exclusive control of a device: while it holds, other controllers' jobs wait or
/// are refused (the job service decides which).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlLease {
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
    /// Who holds it (a principal description).
    pub holder: String,
    /// When it lapses unless renewed.
    pub until: Timestamp,
}

/// Jobs.
pub trait JobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a job at the end of its device's queue. If the tenant already has a job with the
    /// same idempotency key, returns that job with `created: false` and stores nothing.
    fn create_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<CreateOutcome>>;

    /// [`JobStore::create_job`], unless a holder other than the job's creator
    /// ([`NewJob::created_by`]) has the device's control lease in force at `now`: then
    /// [`Conflict`](hub_core::ErrorKind::Conflict) and nothing is stored. The lease check and the
    /// insert are one atomic step against [`JobStore::acquire_control`]: a lease granted before
    /// the creation refuses it, and a lease granted after it finds the job already stored. An
    /// idempotent repeat (the key was used) returns the earlier job whoever holds the lease.
    fn create_job_unless_controlled<'a>(
        &'a self,
        job: NewJob,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<CreateOutcome>>;

    /// One job of a tenant.
    fn get_job<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<JobRecord>>>;

    /// Writes the mutable fields of `job` (state, execution, attempts, options, due time, status
    /// details, result, updated time) if the stored version is `expected_version`; the stored
    /// version becomes `expected_version + 1`. The identity fields (tenant, device, group,
    /// lane, seq, document, idempotency key, creator, bulk, creation time) never change.
    fn update_job<'a>(
        &'a self,
        job: &'a JobRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<JobRecord>>;

    /// The first `n` jobs of a device's lane that are not in a terminal state, in queue order.
    fn queue_head<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        lane: &'a str,
        n: u32,
    ) -> BoxFuture<'a, Result<Vec<JobRecord>>>;

    /// The non-terminal jobs whose `due_at` is at or before `at`, earliest first, at most
    /// `limit` of them (every tenant: this feeds the job service's timer).
    fn due_jobs<'a>(&'a self, at: Timestamp, limit: u32) -> BoxFuture<'a, Result<Vec<JobRecord>>>;

    /// The jobs of `root`'s subtree that match `filter`, ordered by id (creation time). Ids
    /// carry their creator's clock, so while jobs are being created a new job can sort before a
    /// cursor already passed (same millisecond, or another node's clock behind): a live listing
    /// may miss it, a listing of a quiet subtree never does.
    fn list_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<JobRecord>>>;

    /// How many jobs of `root`'s subtree that match `filter` are in each state (states with no
    /// job are absent).
    fn count_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
    ) -> BoxFuture<'a, Result<BTreeMap<JobState, u64>>>;

    /// Takes or renews exclusive control of a device until `until`. Succeeds if nobody holds it,
    /// the holder is `holder`, or the current lease lapsed before `now`; otherwise
    /// [`Conflict`](hub_core::ErrorKind::Conflict).
    fn acquire_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ControlLease>>;

    /// Gives up control. Releasing a lease one does not hold is
    /// [`Conflict`](hub_core::ErrorKind::Conflict); releasing when nobody holds it is a no-op.
    fn release_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<()>>;

    /// The lease in force at `now`, if any.
    fn get_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ControlLease>>>;
}

/// The refusal of [`JobStore::create_job_unless_controlled`], worded alike on every backend.
pub(crate) fn controlled(device: &DeviceId, until: Timestamp) -> hub_core::Error {
    hub_core::Error::conflict(format!(
        "device {device} is under another controller's exclusive control until {until}"
    ))
}
