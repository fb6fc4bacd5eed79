//! Jobs on SQLite. Every write runs on the single writer, so compare-and-set and sequence
//! numbers need no further locking.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use hub_core::{
    BoxFuture, BulkJobId, DeviceId, Error, GroupPath, JobId, JobState, Result, TenantId, Timestamp,
};

use super::registry::{in_subtree, ts};
use super::{SqliteStore, corrupt, db_err};
use crate::jobs::{
    ControlLease, CreateOutcome, JobFilter, JobRecord, JobStore, NewJob, controlled,
};
use crate::{Page, PageRequest, bad_cursor, validate};

const COLS: &str = "id, tenant, device, group_path, lane, seq, state, version, execution, \
                    attempts, document, options, idempotency_key, created_by, bulk, created_at, \
                    updated_at, due_at, status_details, result";

struct RawJob {
    id: Vec<u8>,
    tenant: String,
    device: String,
    group: String,
    lane: String,
    seq: i64,
    state: String,
    version: i64,
    execution: i64,
    attempts: i64,
    document: String,
    options: String,
    idempotency_key: Option<String>,
    created_by: String,
    bulk: Option<Vec<u8>>,
    created_at: i64,
    updated_at: i64,
    due_at: Option<i64>,
    status_details: Option<String>,
    result: Option<String>,
}

fn raw(r: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: r.get(0)?,
        tenant: r.get(1)?,
        device: r.get(2)?,
        group: r.get(3)?,
        lane: r.get(4)?,
        seq: r.get(5)?,
        state: r.get(6)?,
        version: r.get(7)?,
        execution: r.get(8)?,
        attempts: r.get(9)?,
        document: r.get(10)?,
        options: r.get(11)?,
        idempotency_key: r.get(12)?,
        created_by: r.get(13)?,
        bulk: r.get(14)?,
        created_at: r.get(15)?,
        updated_at: r.get(16)?,
        due_at: r.get(17)?,
        status_details: r.get(18)?,
        result: r.get(19)?,
    })
}

fn uuid_of(bytes: &[u8]) -> Result<uuid::Uuid> {
    uuid::Uuid::from_slice(bytes).map_err(|_| corrupt("job id"))
}

fn json(s: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|_| corrupt("JSON document"))
}

fn to_job(r: RawJob) -> Result<JobRecord> {
    let int = |v: i64, what: &str| u64::try_from(v).map_err(|_| corrupt(what));
    let small = |v: i64, what: &str| u32::try_from(v).map_err(|_| corrupt(what));
    Ok(JobRecord {
        id: JobId::from_uuid(uuid_of(&r.id)?).ok_or_else(|| corrupt("job id"))?,
        tenant: r.tenant.parse().map_err(|_| corrupt("tenant id"))?,
        device: r.device.parse().map_err(|_| corrupt("device id"))?,
        group: r.group.parse().map_err(|_| corrupt("group path"))?,
        lane: r.lane,
        seq: int(r.seq, "seq")?,
        state: JobState::from_name(&r.state).ok_or_else(|| corrupt("job state"))?,
        version: int(r.version, "version")?,
        execution: small(r.execution, "execution")?,
        attempts: small(r.attempts, "attempts")?,
        document: json(&r.document)?,
        options: json(&r.options)?,
        idempotency_key: r.idempotency_key,
        created_by: r.created_by,
        bulk: r
            .bulk
            .map(|b| {
                uuid_of(&b).and_then(|u| BulkJobId::from_uuid(u).ok_or_else(|| corrupt("bulk id")))
            })
            .transpose()?,
        created_at: ts(r.created_at)?,
        updated_at: ts(r.updated_at)?,
        due_at: r.due_at.map(ts).transpose()?,
        status_details: r.status_details.as_deref().map(json).transpose()?,
        result: r.result.as_deref().map(json).transpose()?,
    })
}

fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<JobRecord>> {
    let rows = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(params, raw)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    rows.into_iter().map(to_job).collect()
}

fn get(conn: &Connection, tenant: &str, id: &JobId) -> Result<Option<JobRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLS} FROM jobs WHERE id = ?1 AND tenant = ?2"
    ))
    .and_then(|mut s| {
        s.query_row(params![id.as_uuid().as_bytes(), tenant], raw)
            .optional()
    })
    .map_err(db_err)?
    .map(to_job)
    .transpose()
}

fn active(state: JobState) -> i64 {
    i64::from(!state.is_terminal())
}

fn opt_json(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

/// The WHERE clause and parameters of a [`JobFilter`] over a subtree, starting at `?1`.
fn filter_sql(
    root: &GroupPath,
    filter: &JobFilter,
) -> (String, Vec<Box<dyn rusqlite::ToSql + Send>>) {
    let mut sql = in_subtree("group_path", 1);
    let mut params: Vec<Box<dyn rusqlite::ToSql + Send>> = vec![Box::new(root.to_string())];
    if let Some(device) = &filter.device {
        params.push(Box::new(root.tenant().to_string()));
        params.push(Box::new(device.to_string()));
        sql.push_str(&format!(
            " AND tenant = ?{} AND device = ?{}",
            params.len() - 1,
            params.len()
        ));
    }
    if !filter.states.is_empty() {
        let mut placeholders = Vec::new();
        for s in &filter.states {
            params.push(Box::new(s.as_str()));
            placeholders.push(format!("?{}", params.len()));
        }
        sql.push_str(&format!(" AND state IN ({})", placeholders.join(", ")));
    }
    if let Some(bulk) = &filter.bulk {
        params.push(Box::new(bulk.as_uuid().as_bytes().to_vec()));
        sql.push_str(&format!(" AND bulk = ?{}", params.len()));
    }
    (sql, params)
}

impl SqliteStore {
    /// Creates a job; with `unless_controlled_at`, refuses it while another holder's control
    /// lease is in force then. Both happen on the single writer, in one savepoint.
    async fn insert_job(
        &self,
        job: NewJob,
        unless_controlled_at: Option<Timestamp>,
    ) -> Result<CreateOutcome> {
        validate::new_job(&job, self.limits())?;
        self.write(move |conn| {
            let tenant = job.tenant.as_str();
            if let Some(key) = &job.idempotency_key {
                let existing = query_jobs(
                    conn,
                    &format!("SELECT {COLS} FROM jobs WHERE tenant = ?1 AND idempotency_key = ?2"),
                    &[&tenant, key],
                )?;
                if let Some(existing) = existing.into_iter().next() {
                    return Ok(CreateOutcome {
                        job: existing,
                        created: false,
                    });
                }
            }
            if let Some(now) = unless_controlled_at
                && let Some(l) = lease(conn, &job.tenant, &job.device)?
                && l.holder != job.created_by
                && l.until > now
            {
                return Err(controlled(&job.device, l.until));
            }
            let exists: Option<i64> = conn
                .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
                .and_then(|mut s| {
                    s.query_row([job.id.as_uuid().as_bytes()], |r| r.get(0))
                        .optional()
                })
                .map_err(db_err)?;
            if exists.is_some() {
                return Err(Error::conflict(format!("job {} already exists", job.id)));
            }
            let seq: i64 = conn
                .prepare_cached(
                    "INSERT INTO job_queues (tenant, device, last_seq) VALUES (?1, ?2, 1) \
                         ON CONFLICT (tenant, device) DO UPDATE SET last_seq = last_seq + 1 \
                         RETURNING last_seq",
                )
                .and_then(|mut s| s.query_row([tenant, job.device.as_str()], |r| r.get(0)))
                .map_err(db_err)?;
            let record = JobRecord {
                id: job.id,
                tenant: job.tenant.clone(),
                device: job.device,
                group: job.group,
                lane: job.lane,
                seq: seq as u64,
                state: job.state,
                version: 1,
                execution: 0,
                attempts: 0,
                document: job.document,
                options: job.options,
                idempotency_key: job.idempotency_key,
                created_by: job.created_by,
                bulk: job.bulk,
                created_at: job.created_at,
                updated_at: job.created_at,
                due_at: job.due_at,
                status_details: None,
                result: None,
            };
            conn.prepare_cached(&format!(
                "INSERT INTO jobs ({COLS}, active) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                     ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    record.id.as_uuid().as_bytes(),
                    record.tenant.as_str(),
                    record.device.as_str(),
                    record.group.as_str(),
                    record.lane,
                    seq,
                    record.state.as_str(),
                    1i64,
                    0i64,
                    0i64,
                    record.document.to_string(),
                    record.options.to_string(),
                    record.idempotency_key,
                    record.created_by,
                    record.bulk.map(|b| b.as_uuid().as_bytes().to_vec()),
                    record.created_at.as_millis(),
                    record.updated_at.as_millis(),
                    record.due_at.map(Timestamp::as_millis),
                    Option::<String>::None,
                    Option::<String>::None,
                    active(record.state),
                ])
            })
            .map_err(db_err)?;
            Ok(CreateOutcome {
                job: record,
                created: true,
            })
        })
        .await
    }
}

impl JobStore for SqliteStore {
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
        let (tenant, id) = (tenant.clone(), *id);
        Box::pin(self.read(move |conn| get(conn, tenant.as_str(), &id)))
    }

    fn update_job<'a>(
        &'a self,
        job: &'a JobRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<JobRecord>> {
        let job = job.clone();
        Box::pin(async move {
            validate::job_status(
                job.status_details.as_ref(),
                job.result.as_ref(),
                self.limits(),
            )?;
            validate::json_size(
                &job.options,
                self.limits().max_job_document_bytes,
                "the job options",
            )?;
            self.write(move |conn| {
                let updated = conn
                    .prepare_cached(&format!(
                        "UPDATE jobs SET state = ?3, active = ?4, execution = ?5, attempts = ?6, \
                         options = ?7, due_at = ?8, status_details = ?9, result = ?10, \
                         updated_at = ?11, version = version + 1 \
                         WHERE id = ?1 AND tenant = ?2 AND version = ?12 RETURNING {COLS}"
                    ))
                    .and_then(|mut s| {
                        s.query_row(
                            params![
                                job.id.as_uuid().as_bytes(),
                                job.tenant.as_str(),
                                job.state.as_str(),
                                active(job.state),
                                i64::from(job.execution),
                                i64::from(job.attempts),
                                job.options.to_string(),
                                job.due_at.map(Timestamp::as_millis),
                                opt_json(&job.status_details),
                                opt_json(&job.result),
                                job.updated_at.as_millis(),
                                expected_version as i64,
                            ],
                            raw,
                        )
                        .optional()
                    })
                    .map_err(db_err)?;
                if let Some(row) = updated {
                    return to_job(row);
                }
                match get(conn, job.tenant.as_str(), &job.id)? {
                    None => Err(Error::not_found(format!("job {} does not exist", job.id))),
                    Some(stored) => Err(Error::precondition_failed(format!(
                        "job {} is at version {}, not {expected_version}",
                        job.id, stored.version
                    ))),
                }
            })
            .await
        })
    }

    fn queue_head<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        lane: &'a str,
        n: u32,
    ) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
        let (tenant, device, lane) = (tenant.clone(), device.clone(), lane.to_owned());
        Box::pin(self.read(move |conn| {
            query_jobs(
                conn,
                &format!(
                    "SELECT {COLS} FROM jobs WHERE tenant = ?1 AND device = ?2 AND lane = ?3 \
                     AND active = 1 ORDER BY seq LIMIT ?4"
                ),
                &[&tenant.as_str(), &device.as_str(), &lane, &i64::from(n)],
            )
        }))
    }

    fn due_jobs<'a>(&'a self, at: Timestamp, limit: u32) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
        Box::pin(self.read(move |conn| {
            query_jobs(
                conn,
                &format!(
                    "SELECT {COLS} FROM jobs WHERE active = 1 AND due_at IS NOT NULL \
                     AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2"
                ),
                &[&at.as_millis(), &i64::from(limit)],
            )
        }))
    }

    fn list_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<JobRecord>>> {
        let limit = page.effective_limit(self.limits());
        let (where_sql, mut params) = filter_sql(root, filter);
        Box::pin(async move {
            let after: Vec<u8> = match page.after {
                Some(a) => a
                    .parse::<JobId>()
                    .map_err(|_| bad_cursor())?
                    .as_uuid()
                    .as_bytes()
                    .to_vec(),
                None => Vec::new(),
            };
            params.push(Box::new(after));
            let after_n = params.len();
            params.push(Box::new(i64::from(limit) + 1));
            let sql = format!(
                "SELECT {COLS} FROM jobs WHERE {where_sql} AND id > ?{after_n} ORDER BY id LIMIT ?{}",
                after_n + 1
            );
            self.read(move |conn| {
                let refs: Vec<&dyn rusqlite::ToSql> = params
                    .iter()
                    .map(|p| p.as_ref() as &dyn rusqlite::ToSql)
                    .collect();
                let items = query_jobs(conn, &sql, &refs)?;
                Ok(Page::from_overfetch(items, limit, |j| j.id.to_string()))
            })
            .await
        })
    }

    fn count_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
    ) -> BoxFuture<'a, Result<BTreeMap<JobState, u64>>> {
        let (where_sql, params) = filter_sql(root, filter);
        Box::pin(self.read(move |conn| {
            let refs: Vec<&dyn rusqlite::ToSql> = params
                .iter()
                .map(|p| p.as_ref() as &dyn rusqlite::ToSql)
                .collect();
            let sql = format!("SELECT state, count(*) FROM jobs WHERE {where_sql} GROUP BY state");
            let rows: Vec<(String, i64)> = conn
                .prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_map(refs.as_slice(), |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            rows.into_iter()
                .map(|(s, n)| {
                    let state = JobState::from_name(&s).ok_or_else(|| corrupt("job state"))?;
                    Ok((state, n as u64))
                })
                .collect()
        }))
    }

    fn acquire_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ControlLease>> {
        let (tenant, device, holder) = (tenant.clone(), device.clone(), holder.to_owned());
        Box::pin(self.write(move |conn| {
            let current = lease(conn, &tenant, &device)?;
            if let Some(current) = current
                && current.holder != holder && current.until > now {
                    return Err(Error::conflict(format!(
                        "device {device} is under exclusive control until {}",
                        current.until
                    )));
                }
            conn.prepare_cached(
                "INSERT INTO control_leases (tenant, device, holder, until) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tenant, device) DO UPDATE SET holder = ?3, until = ?4",
            )
            .and_then(|mut s| s.execute(params![tenant.as_str(), device.as_str(), holder, until.as_millis()]))
            .map_err(db_err)?;
            Ok(ControlLease { tenant, device, holder, until })
        }))
    }

    fn release_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        let (tenant, device, holder) = (tenant.clone(), device.clone(), holder.to_owned());
        Box::pin(
            self.write(move |conn| match lease(conn, &tenant, &device)? {
                None => Ok(()),
                Some(l) if l.holder == holder => {
                    conn.prepare_cached(
                        "DELETE FROM control_leases WHERE tenant = ?1 AND device = ?2",
                    )
                    .and_then(|mut s| s.execute([tenant.as_str(), device.as_str()]))
                    .map_err(db_err)?;
                    Ok(())
                }
                Some(_) => Err(Error::conflict(format!(
                    "exclusive control of device {device} is held by someone else"
                ))),
            }),
        )
    }

    fn get_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ControlLease>>> {
        let (tenant, device) = (tenant.clone(), device.clone());
        Box::pin(
            self.read(move |conn| Ok(lease(conn, &tenant, &device)?.filter(|l| l.until > now))),
        )
    }
}

fn lease(conn: &Connection, tenant: &TenantId, device: &DeviceId) -> Result<Option<ControlLease>> {
    let row: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT holder, until FROM control_leases WHERE tenant = ?1 AND device = ?2",
        )
        .and_then(|mut s| {
            s.query_row([tenant.as_str(), device.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(db_err)?;
    row.map(|(holder, until)| {
        Ok(ControlLease {
            tenant: tenant.clone(),
            device: device.clone(),
            holder,
            until: ts(until)?,
        })
    })
    .transpose()
}
