//! Bulk jobs on SQLite. The writer's transaction serializes every write, so the version check
//! and the target inserts of an update cannot interleave with another update.

use rusqlite::{Connection, OptionalExtension, Row, params};

use hub_core::{
    BoxFuture, BulkJobId, DeviceId, Error, GroupPath, JobId, Result, TenantId, Timestamp,
};

use super::registry::{in_subtree, ts};
use super::{SqliteStore, corrupt, db_err};
use crate::bulk::{
    BulkJobRecord, BulkJobState, BulkJobStore, BulkTarget, NewBulkJob, already_targeted, missing,
    record_of, stale, validate_new, validate_update,
};
use crate::{Page, PageRequest, bad_cursor};

const COLS: &str = "id, tenant, group_path, state, version, definition, progress, created_by, \
                    created_at, updated_at, due_at";

type BulkRow = (
    Vec<u8>,
    String,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

fn bulk_row(r: &Row<'_>) -> rusqlite::Result<BulkRow> {
    r.try_into()
}

fn bulk_id(bytes: &[u8]) -> Result<BulkJobId> {
    uuid::Uuid::from_slice(bytes)
        .ok()
        .and_then(BulkJobId::from_uuid)
        .ok_or_else(|| corrupt("bulk job id"))
}

fn json(s: &str) -> Result<serde_json::Value> {
    serde_json::from_str(s).map_err(|_| corrupt("JSON document"))
}

fn to_record(row: BulkRow) -> Result<BulkJobRecord> {
    let (id, tenant, group, state, version, definition, progress, created_by, c, u, due) = row;
    Ok(BulkJobRecord {
        id: bulk_id(&id)?,
        tenant: tenant.parse().map_err(|_| corrupt("tenant id"))?,
        group: group.parse().map_err(|_| corrupt("group path"))?,
        state: BulkJobState::from_name(&state).ok_or_else(|| corrupt("bulk job state"))?,
        version: u64::try_from(version).map_err(|_| corrupt("version"))?,
        definition: json(&definition)?,
        progress: json(&progress)?,
        created_by,
        created_at: ts(c)?,
        updated_at: ts(u)?,
        due_at: due.map(ts).transpose()?,
    })
}

fn query(conn: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Result<Vec<BulkJobRecord>> {
    let rows = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.query_map(p, bulk_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err)?;
    rows.into_iter().map(to_record).collect()
}

fn get(conn: &Connection, tenant: &str, id: &BulkJobId) -> Result<Option<BulkJobRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLS} FROM bulk_jobs WHERE id = ?1 AND tenant = ?2"
    ))
    .and_then(|mut s| {
        s.query_row(params![id.as_uuid().as_bytes(), tenant], bulk_row)
            .optional()
    })
    .map_err(db_err)?
    .map(to_record)
    .transpose()
}

fn active(state: BulkJobState) -> i64 {
    i64::from(!state.is_terminal())
}

impl BulkJobStore for SqliteStore {
    fn create_bulk_job<'a>(&'a self, job: NewBulkJob) -> BoxFuture<'a, Result<BulkJobRecord>> {
        Box::pin(async move {
            validate_new(&job, self.limits())?;
            let record = record_of(job);
            self.write(move |conn| {
                let exists: Option<i64> = conn
                    .prepare_cached("SELECT 1 FROM bulk_jobs WHERE id = ?1")
                    .and_then(|mut s| {
                        s.query_row([record.id.as_uuid().as_bytes()], |r| r.get(0))
                            .optional()
                    })
                    .map_err(db_err)?;
                if exists.is_some() {
                    return Err(Error::conflict(format!(
                        "bulk job {} already exists",
                        record.id
                    )));
                }
                conn.prepare_cached(&format!(
                    "INSERT INTO bulk_jobs ({COLS}, active) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        record.id.as_uuid().as_bytes(),
                        record.tenant.as_str(),
                        record.group.as_str(),
                        record.state.as_str(),
                        1i64,
                        record.definition.to_string(),
                        record.progress.to_string(),
                        record.created_by,
                        record.created_at.as_millis(),
                        record.updated_at.as_millis(),
                        record.due_at.map(Timestamp::as_millis),
                        active(record.state),
                    ])
                })
                .map_err(db_err)?;
                Ok(record)
            })
            .await
        })
    }

    fn get_bulk_job<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a BulkJobId,
    ) -> BoxFuture<'a, Result<Option<BulkJobRecord>>> {
        let (tenant, id) = (tenant.clone(), *id);
        Box::pin(self.read(move |conn| get(conn, tenant.as_str(), &id)))
    }

    fn list_bulk_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<BulkJobRecord>>> {
        let limit = page.effective_limit(self.limits());
        let root = root.to_string();
        Box::pin(async move {
            let after: Vec<u8> = match page.after {
                Some(a) => a
                    .parse::<BulkJobId>()
                    .map_err(|_| bad_cursor())?
                    .as_uuid()
                    .as_bytes()
                    .to_vec(),
                None => Vec::new(),
            };
            self.read(move |conn| {
                let sql = format!(
                    "SELECT {COLS} FROM bulk_jobs WHERE {} AND id > ?2 ORDER BY id LIMIT ?3",
                    in_subtree("group_path", 1)
                );
                let items = query(conn, &sql, &[&root, &after, &(i64::from(limit) + 1)])?;
                Ok(Page::from_overfetch(items, limit, |j| j.id.to_string()))
            })
            .await
        })
    }

    fn update_bulk_job<'a>(
        &'a self,
        job: &'a BulkJobRecord,
        expected_version: u64,
        new_targets: &'a [BulkTarget],
    ) -> BoxFuture<'a, Result<BulkJobRecord>> {
        let (job, targets) = (job.clone(), new_targets.to_vec());
        Box::pin(async move {
            validate_update(&job, &targets, self.limits())?;
            self.write(move |conn| {
                let updated = conn
                    .prepare_cached(&format!(
                        "UPDATE bulk_jobs SET state = ?3, active = ?4, progress = ?5, \
                         due_at = ?6, updated_at = ?7, version = version + 1 \
                         WHERE id = ?1 AND tenant = ?2 AND version = ?8 RETURNING {COLS}"
                    ))
                    .and_then(|mut s| {
                        s.query_row(
                            params![
                                job.id.as_uuid().as_bytes(),
                                job.tenant.as_str(),
                                job.state.as_str(),
                                active(job.state),
                                job.progress.to_string(),
                                job.due_at.map(Timestamp::as_millis),
                                job.updated_at.as_millis(),
                                i64::try_from(expected_version).unwrap_or(i64::MAX),
                            ],
                            bulk_row,
                        )
                        .optional()
                    })
                    .map_err(db_err)?;
                let Some(row) = updated else {
                    return match get(conn, job.tenant.as_str(), &job.id)? {
                        None => Err(missing(&job.id)),
                        Some(stored) => Err(stale(&job.id, stored.version, expected_version)),
                    };
                };
                // The update and the inserts share this request's savepoint: a duplicate target
                // fails the request and the writer rolls the version bump back with it.
                for t in &targets {
                    let inserted = conn
                        .prepare_cached(
                            "INSERT INTO bulk_targets (bulk, device, job, error, at) \
                             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                        )
                        .and_then(|mut s| {
                            s.execute(params![
                                job.id.as_uuid().as_bytes(),
                                t.device.as_str(),
                                t.job.map(|j| j.as_uuid().as_bytes().to_vec()),
                                t.error,
                                t.at.as_millis(),
                            ])
                        })
                        .map_err(db_err)?;
                    if inserted == 0 {
                        return Err(already_targeted(&t.device));
                    }
                }
                to_record(row)
            })
            .await
        })
    }

    fn list_bulk_targets<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a BulkJobId,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<BulkTarget>>> {
        let limit = page.effective_limit(self.limits());
        let (tenant, id) = (tenant.clone(), *id);
        Box::pin(async move {
            let after: String = match page.after {
                Some(a) => a.parse::<DeviceId>().map_err(|_| bad_cursor())?.to_string(),
                None => String::new(),
            };
            self.read(move |conn| {
                type TargetRow = (String, Option<Vec<u8>>, Option<String>, i64);
                let rows: Vec<TargetRow> = conn
                    .prepare_cached(
                        "SELECT t.device, t.job, t.error, t.at FROM bulk_targets t \
                         JOIN bulk_jobs b ON b.id = t.bulk \
                         WHERE t.bulk = ?1 AND b.tenant = ?2 AND t.device > ?3 \
                         ORDER BY t.device LIMIT ?4",
                    )
                    .and_then(|mut s| {
                        s.query_map(
                            params![
                                id.as_uuid().as_bytes(),
                                tenant.as_str(),
                                after,
                                i64::from(limit) + 1
                            ],
                            |r| r.try_into(),
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                let items = rows
                    .into_iter()
                    .map(|(device, job, error, at)| {
                        Ok(BulkTarget {
                            device: device.parse().map_err(|_| corrupt("device id"))?,
                            job: job
                                .map(|b| {
                                    uuid::Uuid::from_slice(&b)
                                        .ok()
                                        .and_then(JobId::from_uuid)
                                        .ok_or_else(|| corrupt("job id"))
                                })
                                .transpose()?,
                            error,
                            at: ts(at)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, limit, |t| t.device.to_string()))
            })
            .await
        })
    }

    fn due_bulk_jobs<'a>(
        &'a self,
        at: Timestamp,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<BulkJobRecord>>> {
        Box::pin(self.read(move |conn| {
            query(
                conn,
                &format!(
                    "SELECT {COLS} FROM bulk_jobs WHERE active = 1 AND due_at IS NOT NULL \
                     AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2"
                ),
                &[&at.as_millis(), &i64::from(limit)],
            )
        }))
    }
}
