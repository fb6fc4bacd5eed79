//! Jobs and exclusive-control leases in PostgreSQL.

use std::collections::BTreeMap;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use hub_core::{
    BoxFuture, BulkJobId, DeviceId, Error, GroupPath, JobId, JobState, Result, TenantId, Timestamp,
};

use super::{
    PostgresStore, below_pattern, col, corrupt, db_error, execute, json_text, parse_cursor,
    parse_json, query, query_opt, to_i64, to_u64, ts,
};
use crate::jobs::{
    ControlLease, CreateOutcome, JobFilter, JobRecord, JobStore, NewJob, controlled,
};
use crate::{Page, PageRequest, validate};

const JOB_COLS: &str = "id, tenant, device, group_path, lane, seq, state, version, execution, \
     attempts, document, options, idempotency_key, created_by, bulk, created_at, updated_at, \
     due_at, status_details, result";

/// The names of the terminal states, for `state <> ALL($n)`.
fn terminal_states() -> Vec<&'static str> {
    JobState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(JobState::as_str)
        .collect()
}

fn job_from_row(row: &Row) -> Result<JobRecord> {
    let u32_col = |name: &str| -> Result<u32> {
        u32::try_from(col::<i64>(row, name)?).map_err(|_| corrupt("job counter"))
    };
    Ok(JobRecord {
        id: JobId::from_uuid(col(row, "id")?).ok_or_else(|| corrupt("job id"))?,
        tenant: col::<&str>(row, "tenant")?
            .parse()
            .map_err(|_| corrupt("tenant id"))?,
        device: col::<&str>(row, "device")?
            .parse()
            .map_err(|_| corrupt("device id"))?,
        group: col::<&str>(row, "group_path")?
            .parse()
            .map_err(|_| corrupt("group path"))?,
        lane: col(row, "lane")?,
        seq: to_u64(col(row, "seq")?)?,
        state: JobState::from_name(col(row, "state")?).ok_or_else(|| corrupt("job state"))?,
        version: to_u64(col(row, "version")?)?,
        execution: u32_col("execution")?,
        attempts: u32_col("attempts")?,
        document: parse_json(col(row, "document")?)?,
        options: parse_json(col(row, "options")?)?,
        idempotency_key: col(row, "idempotency_key")?,
        created_by: col(row, "created_by")?,
        bulk: col::<Option<uuid::Uuid>>(row, "bulk")?
            .map(|u| BulkJobId::from_uuid(u).ok_or_else(|| corrupt("bulk job id")))
            .transpose()?,
        created_at: ts(col(row, "created_at")?)?,
        updated_at: ts(col(row, "updated_at")?)?,
        due_at: col::<Option<i64>>(row, "due_at")?.map(ts).transpose()?,
        status_details: col::<Option<&str>>(row, "status_details")?
            .map(parse_json)
            .transpose()?,
        result: col::<Option<&str>>(row, "result")?
            .map(parse_json)
            .transpose()?,
    })
}

/// The SQL condition and parameters selecting `root`'s subtree and `filter`, numbered from `$1`.
struct JobWhere {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

fn job_where(root: &GroupPath, filter: &JobFilter) -> JobWhere {
    let states: Vec<&'static str> = filter.states.iter().map(|s| s.as_str()).collect();
    let params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(root.tenant().as_str().to_owned()),
        Box::new(root.as_str().to_owned()),
        Box::new(below_pattern(root)),
        Box::new(filter.device.as_ref().map(|d| d.as_str().to_owned())),
        Box::new(states),
        Box::new(filter.bulk.map(|b| b.as_uuid())),
    ];
    JobWhere {
        sql: "tenant = $1 AND (group_path = $2 OR group_path LIKE $3) \
              AND ($4::TEXT IS NULL OR device = $4) \
              AND (cardinality($5::TEXT[]) = 0 OR state = ANY($5)) \
              AND ($6::UUID IS NULL OR bulk = $6)"
            .to_owned(),
        params,
    }
}

/// The tenant's job created earlier with `job`'s idempotency key, if it has a key and such a job
/// exists.
async fn by_idempotency_key<C: deadpool_postgres::GenericClient>(
    c: &C,
    job: &NewJob,
) -> Result<Option<JobRecord>> {
    let Some(key) = &job.idempotency_key else {
        return Ok(None);
    };
    let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE tenant = $1 AND idempotency_key = $2");
    query_opt(c, &sql, &[&job.tenant.as_str(), key])
        .await?
        .as_ref()
        .map(job_from_row)
        .transpose()
}

/// Takes the transaction-scoped lock that orders a device's lease grants against its
/// conditional job creations: without it a creation that found no lease row could commit after
/// a lease inserted meanwhile was granted.
async fn lock_control<C: deadpool_postgres::GenericClient>(
    c: &C,
    tenant: &TenantId,
    device: &DeviceId,
) -> Result<()> {
    execute(
        c,
        "SELECT pg_advisory_xact_lock(hashtext('hub-store control:' || $1 || '/' || $2))",
        &[&tenant.as_str(), &device.as_str()],
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    /// Creates a job; with `unless_controlled_at`, refuses it while another holder's control
    /// lease is in force then, checked in the insert's transaction under [`lock_control`].
    async fn insert_job(
        &self,
        job: NewJob,
        unless_controlled_at: Option<Timestamp>,
    ) -> Result<CreateOutcome> {
        validate::new_job(&job, &self.limits)?;
        let document = json_text(&job.document)?;
        let options = json_text(&job.options)?;
        let mut c = self.client().await?;
        if let Some(existing) = by_idempotency_key(&c, &job).await? {
            return Ok(CreateOutcome {
                job: existing,
                created: false,
            });
        }
        let tx = c.transaction().await.map_err(db_error)?;
        if let Some(now) = unless_controlled_at {
            lock_control(&tx, &job.tenant, &job.device).await?;
            let lease = query_opt(
                &tx,
                "SELECT holder, until FROM control_leases \
                     WHERE tenant = $1 AND device = $2 AND until > $3 AND holder <> $4",
                &[
                    &job.tenant.as_str(),
                    &job.device.as_str(),
                    &now.as_millis(),
                    &job.created_by,
                ],
            )
            .await?;
            if let Some(row) = lease {
                let until = ts(col(&row, "until")?)?;
                tx.rollback().await.map_err(db_error)?;
                return Err(controlled(&job.device, until));
            }
        }
        // The queue row's lock orders concurrent creators of one device's jobs, so `seq`
        // is strictly increasing in commit order and has no gaps (a failed insert rolls the
        // bump back).
        let seq_row = query_opt(
            &tx,
            "INSERT INTO job_queues (tenant, device, last_seq) VALUES ($1, $2, 1) \
                 ON CONFLICT (tenant, device) DO UPDATE SET last_seq = job_queues.last_seq + 1 \
                 RETURNING last_seq",
            &[&job.tenant.as_str(), &job.device.as_str()],
        )
        .await?
        .ok_or_else(|| Error::internal("the job queue row was not returned"))?;
        let seq: i64 = col(&seq_row, "last_seq")?;
        let sql = format!(
            "INSERT INTO jobs ({JOB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, 0, 0, $8, \
                 $9, $10, $11, $12, $13, $13, $14, NULL, NULL) \
                 ON CONFLICT DO NOTHING RETURNING {JOB_COLS}"
        );
        let inserted = query_opt(
            &tx,
            &sql,
            &[
                &job.id.as_uuid(),
                &job.tenant.as_str(),
                &job.device.as_str(),
                &job.group.as_str(),
                &job.lane,
                &seq,
                &job.state.as_str(),
                &document,
                &options,
                &job.idempotency_key,
                &job.created_by,
                &job.bulk.map(|b| b.as_uuid()),
                &job.created_at.as_millis(),
                &job.due_at.map(Timestamp::as_millis),
            ],
        )
        .await?;
        if let Some(row) = inserted {
            let record = job_from_row(&row)?;
            tx.commit().await.map_err(db_error)?;
            return Ok(CreateOutcome {
                job: record,
                created: true,
            });
        }
        // Nothing inserted: either a racing creator committed the same idempotency key
        // (ON CONFLICT waited for it), or the job id is taken.
        tx.rollback().await.map_err(db_error)?;
        if let Some(existing) = by_idempotency_key(&c, &job).await? {
            return Ok(CreateOutcome {
                job: existing,
                created: false,
            });
        }
        Err(Error::conflict(format!("job {} already exists", job.id)))
    }
}

impl JobStore for PostgresStore {
    fn create_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<CreateOutcome>> {
        Box::pin(self.insert_job(job, None))
    }

    fn create_job_unless_controlled<'a>(
        &'a self,
        job: NewJob,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<CreateOutcome>> {
        Box::pin(self.insert_job(job, Some(now)))
    }

    fn get_job<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<JobRecord>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1 AND tenant = $2");
            query_opt(&c, &sql, &[&id.as_uuid(), &tenant.as_str()])
                .await?
                .as_ref()
                .map(job_from_row)
                .transpose()
        })
    }

    fn update_job<'a>(
        &'a self,
        job: &'a JobRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<JobRecord>> {
        Box::pin(async move {
            validate::job_status(
                job.status_details.as_ref(),
                job.result.as_ref(),
                &self.limits,
            )?;
            validate::json_size(
                &job.options,
                self.limits.max_job_document_bytes,
                "the job options",
            )?;
            let options = json_text(&job.options)?;
            let status = job.status_details.as_ref().map(json_text).transpose()?;
            let result = job.result.as_ref().map(json_text).transpose()?;
            let expected = to_i64(expected_version);
            let c = self.client().await?;
            let sql = format!(
                "UPDATE jobs SET state = $4, execution = $5, attempts = $6, options = $7, \
                 due_at = $8, status_details = $9, result = $10, updated_at = $11, \
                 version = $3 + 1 \
                 WHERE id = $1 AND tenant = $2 AND version = $3 RETURNING {JOB_COLS}"
            );
            let row = query_opt(
                &c,
                &sql,
                &[
                    &job.id.as_uuid(),
                    &job.tenant.as_str(),
                    &expected,
                    &job.state.as_str(),
                    &i64::from(job.execution),
                    &i64::from(job.attempts),
                    &options,
                    &job.due_at.map(Timestamp::as_millis),
                    &status,
                    &result,
                    &job.updated_at.as_millis(),
                ],
            )
            .await?;
            if let Some(row) = row {
                return job_from_row(&row);
            }
            let current = query_opt(
                &c,
                "SELECT version FROM jobs WHERE id = $1 AND tenant = $2",
                &[&job.id.as_uuid(), &job.tenant.as_str()],
            )
            .await?;
            match current {
                Some(row) => Err(Error::precondition_failed(format!(
                    "job {} is at version {}, not {expected_version}",
                    job.id,
                    col::<i64>(&row, "version")?
                ))),
                None => Err(Error::not_found(format!("job {} does not exist", job.id))),
            }
        })
    }

    fn queue_head<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        lane: &'a str,
        n: u32,
    ) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql = format!(
                "SELECT {JOB_COLS} FROM jobs WHERE tenant = $1 AND device = $2 AND lane = $3 \
                 AND state <> ALL($4) ORDER BY seq LIMIT $5"
            );
            let rows = query(
                &c,
                &sql,
                &[
                    &tenant.as_str(),
                    &device.as_str(),
                    &lane,
                    &terminal_states(),
                    &i64::from(n),
                ],
            )
            .await?;
            rows.iter().map(job_from_row).collect()
        })
    }

    fn due_jobs<'a>(&'a self, at: Timestamp, limit: u32) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql = format!(
                "SELECT {JOB_COLS} FROM jobs WHERE due_at IS NOT NULL AND due_at <= $1 \
                 AND state <> ALL($2) ORDER BY due_at, id LIMIT $3"
            );
            let rows = query(
                &c,
                &sql,
                &[&at.as_millis(), &terminal_states(), &i64::from(limit)],
            )
            .await?;
            rows.iter().map(job_from_row).collect()
        })
    }

    fn list_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<JobRecord>>> {
        Box::pin(async move {
            let after: Option<JobId> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let w = job_where(root, filter);
            let sql = format!(
                "SELECT {JOB_COLS} FROM jobs WHERE {} AND ($7::UUID IS NULL OR id > $7) \
                 ORDER BY id LIMIT $8",
                w.sql
            );
            let after = after.map(|a| a.as_uuid());
            let fetch = i64::from(limit) + 1;
            let mut params: Vec<&(dyn ToSql + Sync)> = w
                .params
                .iter()
                .map(|p| &**p as &(dyn ToSql + Sync))
                .collect();
            params.push(&after);
            params.push(&fetch);
            let c = self.client().await?;
            let rows = query(&c, &sql, &params).await?;
            let items = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |j| j.id.to_string()))
        })
    }

    fn count_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
    ) -> BoxFuture<'a, Result<BTreeMap<JobState, u64>>> {
        Box::pin(async move {
            let w = job_where(root, filter);
            let sql = format!(
                "SELECT state, count(*) AS n FROM jobs WHERE {} GROUP BY state",
                w.sql
            );
            let params: Vec<&(dyn ToSql + Sync)> = w
                .params
                .iter()
                .map(|p| &**p as &(dyn ToSql + Sync))
                .collect();
            let c = self.client().await?;
            let rows = query(&c, &sql, &params).await?;
            let mut counts = BTreeMap::new();
            for row in &rows {
                let state =
                    JobState::from_name(col(row, "state")?).ok_or_else(|| corrupt("job state"))?;
                counts.insert(state, to_u64(col(row, "n")?)?);
            }
            Ok(counts)
        })
    }

    fn acquire_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ControlLease>> {
        Box::pin(async move {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db_error)?;
            lock_control(&tx, tenant, device).await?;
            let n = execute(
                &tx,
                "INSERT INTO control_leases AS l (tenant, device, holder, until) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, device) DO UPDATE \
                 SET holder = EXCLUDED.holder, until = EXCLUDED.until \
                 WHERE l.holder = EXCLUDED.holder OR l.until <= $5",
                &[
                    &tenant.as_str(),
                    &device.as_str(),
                    &holder,
                    &until.as_millis(),
                    &now.as_millis(),
                ],
            )
            .await?;
            tx.commit().await.map_err(db_error)?;
            if n == 1 {
                return Ok(ControlLease {
                    tenant: tenant.clone(),
                    device: device.clone(),
                    holder: holder.to_owned(),
                    until,
                });
            }
            let current = query_opt(
                &c,
                "SELECT until FROM control_leases WHERE tenant = $1 AND device = $2",
                &[&tenant.as_str(), &device.as_str()],
            )
            .await?;
            let shown = match current {
                Some(row) => ts(col(&row, "until")?)?.to_string(),
                None => "further notice".to_owned(),
            };
            Err(Error::conflict(format!(
                "device {device} is under exclusive control until {shown}"
            )))
        })
    }

    fn release_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "DELETE FROM control_leases WHERE tenant = $1 AND device = $2 AND holder = $3",
                &[&tenant.as_str(), &device.as_str(), &holder],
            )
            .await?;
            if n > 0 {
                return Ok(());
            }
            let other = query_opt(
                &c,
                "SELECT 1 FROM control_leases WHERE tenant = $1 AND device = $2",
                &[&tenant.as_str(), &device.as_str()],
            )
            .await?;
            match other {
                None => Ok(()),
                Some(_) => Err(Error::conflict(format!(
                    "exclusive control of device {device} is held by someone else"
                ))),
            }
        })
    }

    fn get_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ControlLease>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let row = query_opt(
                &c,
                "SELECT holder, until FROM control_leases \
                 WHERE tenant = $1 AND device = $2 AND until > $3",
                &[&tenant.as_str(), &device.as_str(), &now.as_millis()],
            )
            .await?;
            row.map(|row| {
                Ok(ControlLease {
                    tenant: tenant.clone(),
                    device: device.clone(),
                    holder: col(&row, "holder")?,
                    until: ts(col(&row, "until")?)?,
                })
            })
            .transpose()
        })
    }
}
