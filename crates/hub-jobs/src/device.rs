//! The device side of the Job API as the `hub-core` seam [`DeviceJobs`]: what a device protocol
//! (MQTT in `hub-transport`, the HTTP pull API of the `http` feature) calls, so that every
//! protocol keeps the same exactly-once and ordering guarantees.
//!
//! - [`DeviceJobs::next_job`] is [`JobService::claim_next`]: asking again before starting
//!   returns the same job and execution.
//! - [`DeviceJobs::report`] maps the wire form [`DeviceReport`] onto a machine [`Command`]
//!   ([`report_command`]) and runs [`JobService::report`].
//!
//! ```
//! use hub_core::DeviceReport;
//! use hub_jobs::{Command, device::report_command};
//!
//! let report: DeviceReport = serde_json::from_str(r#"{"status":"succeeded","result":{"ok":true}}"#)?;
//! assert_eq!(
//!     report_command(report)?,
//!     Command::Succeed { result: Some(serde_json::json!({"ok": true})) }
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use hub_core::{BoxFuture, DeviceJob, DeviceJobs, DeviceReport, Error, JobId, Principal, Result};
use hub_store::JobRecord;

use crate::machine::Command;
use crate::service::JobService;

/// The machine command a device report stands for.
///
/// `in_progress` is always a progress report: from `delivered` it starts the execution, later it
/// replaces the status details (when given) and may move the step deadline, and while a cancel
/// request is pending it is still accepted (the device has not seen the request yet).
pub fn report_command(report: DeviceReport) -> Result<Command> {
    Ok(match report {
        DeviceReport::InProgress {
            details,
            step_timeout_ms,
        } => Command::Progress {
            details,
            step_timeout_ms,
        },
        DeviceReport::Succeeded { result } => Command::Succeed { result },
        DeviceReport::Failed { result } => Command::Fail { result },
        DeviceReport::Rejected { result } => Command::Reject { result },
        DeviceReport::Canceled => Command::AcceptCancel,
        DeviceReport::CancelRefused => Command::RefuseCancel,
        // A report added to hub-core that this version does not know yet.
        _ => {
            return Err(Error::invalid_input(
                "this job report status is not supported",
            ));
        }
    })
}

/// A job as its device sees it.
pub fn device_job(job: &JobRecord) -> DeviceJob {
    DeviceJob {
        id: job.id,
        execution: job.execution,
        version: job.version,
        lane: job.lane.clone(),
        state: job.state,
        document: job.document.clone(),
    }
}

impl DeviceJobs for JobService {
    fn next_job<'a>(
        &'a self,
        device: &'a Principal,
        lane: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<DeviceJob>>> {
        Box::pin(async move {
            Ok(self
                .claim_next(device, lane)
                .await?
                .as_ref()
                .map(device_job))
        })
    }

    fn report<'a>(
        &'a self,
        device: &'a Principal,
        job: &'a JobId,
        execution: u32,
        report: DeviceReport,
    ) -> BoxFuture<'a, Result<DeviceJob>> {
        Box::pin(async move {
            let cmd = report_command(report)?;
            let record = JobService::report(self, device, job, execution, cmd).await?;
            Ok(device_job(&record))
        })
    }
}
