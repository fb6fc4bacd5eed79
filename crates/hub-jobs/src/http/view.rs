//! The JSON representations of the Job API: stable, documented, independent of how a job is
//! stored.

use hub_core::{DeviceJob, JobState};
use hub_store::{ControlLease, JobRecord, Page};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::machine::{JobOptions, StoredOptions};

/// A job as controllers see it (`GET /v1/tenants/{tenant}/jobs/{job}`). Its `version` is also
/// the response's `ETag` (`"7"`); send it back in `If-Match` to cancel or remove exactly the
/// state you saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// The job id (a UUIDv7, time-ordered).
    #[schema(value_type = String, format = "uuid")]
    pub id: hub_core::JobId,
    /// The device that executes it.
    #[schema(value_type = String, example = "pump-7")]
    pub device: hub_core::DeviceId,
    /// The device's group when the job was created.
    #[schema(value_type = String, example = "acme/plant-1")]
    pub group: hub_core::GroupPath,
    /// The lane: jobs of one lane run one after another.
    pub lane: String,
    /// The state of the current execution.
    #[schema(value_type = String, example = "in_progress")]
    pub state: JobState,
    /// Increases with every change; the ETag.
    pub version: u64,
    /// The current execution (0 before the first delivery); device reports name it.
    pub execution: u32,
    /// How many executions ended in failure or timeout.
    pub attempts: u32,
    /// The opaque job document.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// The creator's settings (timeouts, retries, delivery policy, concurrency).
    #[schema(value_type = Object)]
    pub options: JobOptions,
    /// When it was created (RFC 3339, UTC, milliseconds).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: hub_core::Timestamp,
    /// When it last changed.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: hub_core::Timestamp,
    /// Progress details reported by the device.
    #[schema(value_type = Option<Object>)]
    pub status_details: Option<serde_json::Value>,
    /// The result reported by the device (the latest execution's).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The bulk job it belongs to.
    #[schema(value_type = Option<String>, format = "uuid")]
    pub bulk: Option<hub_core::BulkJobId>,
}

impl From<&JobRecord> for JobView {
    fn from(job: &JobRecord) -> Self {
        // A record this service did not write shows default options rather than failing the read.
        let options = StoredOptions::from_record(job)
            .map(|s| s.options)
            .unwrap_or_default();
        Self {
            id: job.id,
            device: job.device.clone(),
            group: job.group.clone(),
            lane: job.lane.clone(),
            state: job.state,
            version: job.version,
            execution: job.execution,
            attempts: job.attempts,
            document: job.document.clone(),
            options,
            created_at: job.created_at,
            updated_at: job.updated_at,
            status_details: job.status_details.clone(),
            result: job.result.clone(),
            bulk: job.bulk,
        }
    }
}

/// One page of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// The jobs, oldest first.
    pub items: Vec<JobView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl From<Page<JobRecord>> for JobPage {
    fn from(page: Page<JobRecord>) -> Self {
        Self {
            items: page.items.iter().map(JobView::from).collect(),
            next: page.next,
        }
    }
}

/// A job as its device sees it (the device pull API and the MQTT `start-next` answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceJobView {
    /// The job.
    #[schema(value_type = String, format = "uuid")]
    pub id: hub_core::JobId,
    /// The execution the device holds; every report names it.
    pub execution: u32,
    /// The job's version.
    pub version: u64,
    /// The lane.
    pub lane: String,
    /// The job's state.
    #[schema(value_type = String, example = "delivered")]
    pub state: JobState,
    /// The opaque job document.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

impl From<DeviceJob> for DeviceJobView {
    fn from(j: DeviceJob) -> Self {
        Self {
            id: j.id,
            execution: j.execution,
            version: j.version,
            lane: j.lane,
            state: j.state,
            document: j.document,
        }
    }
}

/// A controller's exclusive control of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ControlView {
    /// The device.
    #[schema(value_type = String)]
    pub device: hub_core::DeviceId,
    /// Who holds it.
    pub holder: String,
    /// When it lapses unless renewed.
    #[schema(value_type = String, format = DateTime)]
    pub until: hub_core::Timestamp,
}

impl From<ControlLease> for ControlView {
    fn from(l: ControlLease) -> Self {
        Self {
            device: l.device,
            holder: l.holder,
            until: l.until,
        }
    }
}

/// `POST /v1/tenants/{tenant}/jobs`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobBody {
    /// The device that executes the job.
    #[schema(value_type = String, example = "pump-7")]
    pub device: hub_core::DeviceId,
    /// The device's group; looked up in the registry when absent. A device that is not in this
    /// group is answered 404.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "acme/plant-1")]
    pub group: Option<hub_core::GroupPath>,
    /// The lane (`default` when absent).
    #[serde(default)]
    pub lane: Option<String>,
    /// The opaque job document.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// Timeouts, retries, delivery policy, concurrency; every field optional.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub options: JobOptions,
}

/// `POST /v1/tenants/{tenant}/jobs/{job}/cancel` (the body may be empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Cancel an active job at once instead of asking the device.
    #[serde(default)]
    pub force: bool,
}

/// `PUT /v1/tenants/{tenant}/devices/{device}/control` (the body may be empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    /// How long the lease lasts from now; the configured default when absent, cut to the
    /// configured maximum.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// `POST /v1/device/jobs/{job}`: a device report plus the execution it is about.
///
/// `{"execution": 1, "status": "in_progress", "details": {...}, "step_timeout_ms": 60000}`,
/// `{"execution": 1, "status": "succeeded" | "failed" | "rejected", "result": {...}}`,
/// `{"execution": 1, "status": "canceled" | "cancel_refused"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceReportBody {
    /// The execution the device was delivered.
    pub execution: u32,
    /// The report: `status` and its fields.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub report: hub_core::DeviceReport,
}
