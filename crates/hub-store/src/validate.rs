//! Input checks shared by every backend, run before anything is written, so that bad input gets
//! the same typed error whatever the backend and nothing is ever half-written.

use hub_core::{Error, Result};

use crate::StoreLimits;
use crate::jobs::NewJob;
use crate::measurements::{AggregateQuery, SeriesPoints};

/// The largest magnitude of a measurement value. No physical quantity comes near it, and it keeps
/// every sum a backend computes (billions of points) far from overflowing to infinity, which
/// PostgreSQL would refuse and SQLite would store as NULL.
pub(crate) const MAX_ABS_VALUE: f64 = 1e100;

/// The largest idempotency key, bytes.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The largest lane name, bytes.
pub(crate) const MAX_LANE: usize = 64;
/// The largest display name, bytes.
pub(crate) const MAX_DISPLAY_NAME: usize = 256;

pub(crate) fn json_size(value: &serde_json::Value, max: usize, what: &str) -> Result<()> {
    let len = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if len > max {
        return Err(Error::too_large(format!(
            "{what} is {len} bytes of JSON, at most {max} are allowed"
        )));
    }
    Ok(())
}

pub(crate) fn display_name(name: &str) -> Result<()> {
    if name.len() > MAX_DISPLAY_NAME {
        return Err(Error::invalid_input(format!(
            "display name is {} bytes, at most {MAX_DISPLAY_NAME} are allowed",
            name.len()
        )));
    }
    Ok(())
}

pub(crate) fn attributes(value: &serde_json::Value, limits: &StoreLimits) -> Result<()> {
    if !value.is_object() {
        return Err(Error::invalid_input(
            "device attributes must be a JSON object",
        ));
    }
    json_size(value, limits.max_attributes_bytes, "device attributes")
}

pub(crate) fn new_job(job: &NewJob, limits: &StoreLimits) -> Result<()> {
    if job.tenant != job.group.tenant() {
        return Err(Error::invalid_input(
            "the job's group is not in the job's tenant",
        ));
    }
    json_size(
        &job.document,
        limits.max_job_document_bytes,
        "the job document",
    )?;
    json_size(
        &job.options,
        limits.max_job_document_bytes,
        "the job options",
    )?;
    let lane_ok = !job.lane.is_empty()
        && job.lane.len() <= MAX_LANE
        && job
            .lane
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !lane_ok {
        return Err(Error::invalid_input(format!(
            "lane must be 1 to {MAX_LANE} bytes of A-Z a-z 0-9 - _ ."
        )));
    }
    if let Some(key) = &job.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(Error::invalid_input(format!(
            "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
        )));
    }
    Ok(())
}

pub(crate) fn job_status(
    status: Option<&serde_json::Value>,
    result: Option<&serde_json::Value>,
    limits: &StoreLimits,
) -> Result<()> {
    if let Some(s) = status {
        json_size(s, limits.max_job_status_bytes, "the job status details")?;
    }
    if let Some(r) = result {
        json_size(r, limits.max_job_status_bytes, "the job result")?;
    }
    Ok(())
}

pub(crate) fn points(batch: &[SeriesPoints], limits: &StoreLimits) -> Result<()> {
    let total: usize = batch.iter().map(|s| s.points.len()).sum();
    if total > limits.max_points_per_append {
        return Err(Error::too_large(format!(
            "{total} points in one append, at most {} are allowed",
            limits.max_points_per_append
        )));
    }
    for s in batch {
        if let Some(p) = s
            .points
            .iter()
            .find(|p| !p.value.is_finite() || p.value.abs() > MAX_ABS_VALUE)
        {
            return Err(Error::invalid_input(format!(
                "series {} of device {} has the value {} at {}: values must be finite and \
                 within ±1e100",
                s.series, s.device, p.value, p.ts
            )));
        }
    }
    Ok(())
}

/// Checks an aggregate query and returns the bucket width in milliseconds.
pub(crate) fn aggregate(q: &AggregateQuery, limits: &StoreLimits) -> Result<i64> {
    let width = i64::try_from(q.bucket.as_millis()).unwrap_or(i64::MAX);
    if width <= 0 {
        return Err(Error::invalid_input(
            "the bucket width must be at least 1 ms",
        ));
    }
    if q.from >= q.to {
        return Err(Error::invalid_input(
            "the range is empty: `from` must be before `to`",
        ));
    }
    let span = q.to.as_millis() - q.from.as_millis();
    let buckets = span / width + 2;
    if buckets > i64::from(limits.max_buckets) {
        return Err(Error::invalid_input(format!(
            "the query spans about {buckets} buckets, at most {} are allowed",
            limits.max_buckets
        )));
    }
    Ok(width)
}

pub(crate) fn range(from: hub_core::Timestamp, to: hub_core::Timestamp) -> Result<()> {
    if from >= to {
        return Err(Error::invalid_input(
            "the range is empty: `from` must be before `to`",
        ));
    }
    Ok(())
}

/// The largest audit action name, bytes.
pub(crate) const MAX_ACTION: usize = 64;
/// The largest audit resource name, bytes.
pub(crate) const MAX_RESOURCE: usize = 256;
/// The largest actor or `created_by` description, bytes.
pub(crate) const MAX_ACTOR: usize = 256;

/// A required plain string of 1 to `max` bytes without U+0000 (which PostgreSQL text cannot
/// hold, so every backend refuses it alike).
fn plain(value: &str, max: usize, what: &str) -> Result<()> {
    if value.is_empty() || value.len() > max || value.contains('\0') {
        return Err(Error::invalid_input(format!(
            "{what} must be 1 to {max} bytes without U+0000"
        )));
    }
    Ok(())
}

pub(crate) fn actor(value: &str) -> Result<()> {
    plain(value, MAX_ACTOR, "the actor")
}

pub(crate) fn resource(value: &str) -> Result<()> {
    plain(value, MAX_RESOURCE, "the resource")
}

pub(crate) fn created_by(value: &str) -> Result<()> {
    plain(value, MAX_ACTOR, "created_by")
}

pub(crate) fn audit_record(r: &crate::audit::NewAuditRecord, limits: &StoreLimits) -> Result<()> {
    if r.group.tenant() != r.tenant {
        return Err(Error::invalid_input(
            "the audit record's group is not in its tenant",
        ));
    }
    let action_ok = !r.action.is_empty()
        && r.action.len() <= MAX_ACTION
        && r.action.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if !action_ok {
        return Err(Error::invalid_input(format!(
            "the action must be 1 to {MAX_ACTION} bytes of a-z 0-9 . _ -"
        )));
    }
    actor(&r.actor)?;
    resource(&r.resource)?;
    json_size(
        &r.details,
        limits.max_audit_details_bytes,
        "the audit details",
    )
}

pub(crate) fn audit_query(q: &crate::audit::AuditQuery) -> Result<()> {
    if let Some(r) = &q.resource {
        resource(r)?;
    }
    if let Some(a) = &q.actor {
        actor(a)?;
    }
    if let (Some(from), Some(to)) = (q.from, q.to) {
        range(from, to)?;
    }
    Ok(())
}

pub(crate) fn config_document(document: &serde_json::Value, limits: &StoreLimits) -> Result<()> {
    json_size(
        document,
        limits.max_config_bytes,
        "the configuration document",
    )
}

pub(crate) fn prune_keep(keep: u32) -> Result<()> {
    if keep == 0 {
        return Err(Error::invalid_input(
            "prune must keep at least the latest version",
        ));
    }
    Ok(())
}
