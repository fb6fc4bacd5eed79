//! Bulk jobs in PostgreSQL. An update is one transaction: the compare-and-set on the version
//! (whose row lock makes a concurrent updater wait and then find the version moved on) and the
//! target inserts, which the primary key on (bulk, device) keeps unique.

use tokio_postgres::Row;

use hub_core::{
    BoxFuture, BulkJobId, DeviceId, Error, GroupPath, JobId, Result, TenantId, Timestamp,
};

use super::{
    PostgresStore, below_pattern, col, corrupt, db_error, execute, json_text, parse_cursor,
    parse_json, query, query_opt, to_i64, to_u64, ts,
};
use crate::bulk::{
    BulkJobRecord, BulkJobState, BulkJobStore, BulkTarget, NewBulkJob, already_targeted, missing,
    record_of, stale, validate_new, validate_update,
};
use crate::{Page, PageRequest};

const COLS: &str = "id, tenant, group_path, state, version, definition, progress, created_by, \
                    created_at, updated_at, due_at";

fn from_row(row: &Row) -> Result<BulkJobRecord> {
    Ok(BulkJobRecord {
        id: BulkJobId::from_uuid(col(row, "id")?).ok_or_else(|| corrupt("bulk job id"))?,
        tenant: col::<&str>(row, "tenant")?
            .parse()
            .map_err(|_| corrupt("tenant id"))?,
        group: col::<&str>(row, "group_path")?
            .parse()
            .map_err(|_| corrupt("group path"))?,
        state: BulkJobState::from_name(col(row, "state")?)
            .ok_or_else(|| corrupt("bulk job state"))?,
        version: to_u64(col(row, "version")?)?,
        definition: parse_json(col(row, "definition")?)?,
        progress: parse_json(col(row, "progress")?)?,
        created_by: col(row, "created_by")?,
        created_at: ts(col(row, "created_at")?)?,
        updated_at: ts(col(row, "updated_at")?)?,
        due_at: col::<Option<i64>>(row, "due_at")?.map(ts).transpose()?,
    })
}

impl BulkJobStore for PostgresStore {
    fn create_bulk_job<'a>(&'a self, job: NewBulkJob) -> BoxFuture<'a, Result<BulkJobRecord>> {
        Box::pin(async move {
            validate_new(&job, &self.limits)?;
            let record = record_of(job);
            let c = self.client().await?;
            let inserted = execute(
                &c,
                &format!(
                    "INSERT INTO bulk_jobs ({COLS}, active) \
                     VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &record.id.as_uuid(),
                    &record.tenant.as_str(),
                    &record.group.as_str(),
                    &record.state.as_str(),
                    &json_text(&record.definition)?,
                    &json_text(&record.progress)?,
                    &record.created_by,
                    &record.created_at.as_millis(),
                    &record.updated_at.as_millis(),
                    &record.due_at.map(Timestamp::as_millis),
                    &!record.state.is_terminal(),
                ],
            )
            .await?;
            if inserted == 0 {
                return Err(Error::conflict(format!(
                    "bulk job {} already exists",
                    record.id
                )));
            }
            Ok(record)
        })
    }

    fn get_bulk_job<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a BulkJobId,
    ) -> BoxFuture<'a, Result<Option<BulkJobRecord>>> {
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                &format!("SELECT {COLS} FROM bulk_jobs WHERE id = $1 AND tenant = $2"),
                &[&id.as_uuid(), &tenant.as_str()],
            )
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
        })
    }

    fn list_bulk_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<BulkJobRecord>>> {
        Box::pin(async move {
            let after: Option<BulkJobId> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let c = self.client().await?;
            let rows = query(
                &c,
                &format!(
                    "SELECT {COLS} FROM bulk_jobs \
                     WHERE tenant = $1 AND (group_path = $2 OR group_path LIKE $3) \
                       AND ($4::UUID IS NULL OR id > $4) \
                     ORDER BY id LIMIT $5"
                ),
                &[
                    &root.tenant().as_str(),
                    &root.as_str(),
                    &below_pattern(root),
                    &after.map(|a| a.as_uuid()),
                    &(i64::from(limit) + 1),
                ],
            )
            .await?;
            let items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |j| j.id.to_string()))
        })
    }

    fn update_bulk_job<'a>(
        &'a self,
        job: &'a BulkJobRecord,
        expected_version: u64,
        new_targets: &'a [BulkTarget],
    ) -> BoxFuture<'a, Result<BulkJobRecord>> {
        Box::pin(async move {
            validate_update(job, new_targets, &self.limits)?;
            let progress = json_text(&job.progress)?;
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db_error)?;
            let row = query_opt(
                &tx,
                &format!(
                    "UPDATE bulk_jobs SET state = $4, active = $5, progress = $6, due_at = $7, \
                     updated_at = $8, version = $3 + 1 \
                     WHERE id = $1 AND tenant = $2 AND version = $3 RETURNING {COLS}"
                ),
                &[
                    &job.id.as_uuid(),
                    &job.tenant.as_str(),
                    &to_i64(expected_version),
                    &job.state.as_str(),
                    &!job.state.is_terminal(),
                    &progress,
                    &job.due_at.map(Timestamp::as_millis),
                    &job.updated_at.as_millis(),
                ],
            )
            .await?;
            let Some(row) = row else {
                let current = query_opt(
                    &tx,
                    "SELECT version FROM bulk_jobs WHERE id = $1 AND tenant = $2",
                    &[&job.id.as_uuid(), &job.tenant.as_str()],
                )
                .await?;
                return match current {
                    Some(r) => Err(stale(
                        &job.id,
                        to_u64(col(&r, "version")?)?,
                        expected_version,
                    )),
                    None => Err(missing(&job.id)),
                };
            };
            if !new_targets.is_empty() {
                let devices: Vec<&str> = new_targets.iter().map(|t| t.device.as_str()).collect();
                let jobs: Vec<Option<uuid::Uuid>> = new_targets
                    .iter()
                    .map(|t| t.job.map(|j| j.as_uuid()))
                    .collect();
                let errors: Vec<Option<&str>> =
                    new_targets.iter().map(|t| t.error.as_deref()).collect();
                let ats: Vec<i64> = new_targets.iter().map(|t| t.at.as_millis()).collect();
                let inserted = query(
                    &tx,
                    "INSERT INTO bulk_targets (bulk, device, job, error, at) \
                     SELECT $1, d, j, e, a \
                     FROM unnest($2::TEXT[], $3::UUID[], $4::TEXT[], $5::BIGINT[]) AS t(d, j, e, a) \
                     ON CONFLICT DO NOTHING RETURNING device",
                    &[&job.id.as_uuid(), &devices, &jobs, &errors, &ats],
                )
                .await?;
                if inserted.len() != new_targets.len() {
                    let got: Vec<&str> = inserted
                        .iter()
                        .filter_map(|r| col::<&str>(r, "device").ok())
                        .collect();
                    let dup = new_targets
                        .iter()
                        .find(|t| !got.contains(&t.device.as_str()))
                        .map(|t| t.device.clone());
                    // Dropping the transaction rolls the version bump back.
                    return Err(match dup {
                        Some(d) => already_targeted(&d),
                        None => Error::conflict("a device is already a target of the bulk job"),
                    });
                }
            }
            let record = from_row(&row)?;
            tx.commit().await.map_err(db_error)?;
            Ok(record)
        })
    }

    fn list_bulk_targets<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a BulkJobId,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<BulkTarget>>> {
        Box::pin(async move {
            let after: Option<DeviceId> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let c = self.client().await?;
            let rows = query(
                &c,
                "SELECT t.device, t.job, t.error, t.at FROM bulk_targets t \
                 JOIN bulk_jobs b ON b.id = t.bulk \
                 WHERE t.bulk = $1 AND b.tenant = $2 AND ($3::TEXT IS NULL OR t.device > $3) \
                 ORDER BY t.device LIMIT $4",
                &[
                    &id.as_uuid(),
                    &tenant.as_str(),
                    &after.as_ref().map(|d| d.as_str()),
                    &(i64::from(limit) + 1),
                ],
            )
            .await?;
            let items = rows
                .iter()
                .map(|r| {
                    Ok(BulkTarget {
                        device: col::<&str>(r, "device")?
                            .parse()
                            .map_err(|_| corrupt("device id"))?,
                        job: col::<Option<uuid::Uuid>>(r, "job")?
                            .map(|u| JobId::from_uuid(u).ok_or_else(|| corrupt("job id")))
                            .transpose()?,
                        error: col(r, "error")?,
                        at: ts(col(r, "at")?)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |t| t.device.to_string()))
        })
    }

    fn due_bulk_jobs<'a>(
        &'a self,
        at: Timestamp,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<BulkJobRecord>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = query(
                &c,
                &format!(
                    "SELECT {COLS} FROM bulk_jobs WHERE active AND due_at IS NOT NULL \
                     AND due_at <= $1 ORDER BY due_at, id LIMIT $2"
                ),
                &[&at.as_millis(), &i64::from(limit)],
            )
            .await?;
            rows.iter().map(from_row).collect()
        })
    }
}
