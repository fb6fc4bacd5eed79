//! The audit log on SQLite: one table, ids from `AUTOINCREMENT` (never reused).

use rusqlite::{Row, params};

use hub_core::{BoxFuture, Error, Result, TenantId, Timestamp};

use super::registry::{in_subtree, ts};
use super::{SqliteStore, corrupt, db_err};
use crate::audit::{AuditOutcome, AuditQuery, AuditRecord, AuditStore, NewAuditRecord};
use crate::{Page, PageRequest, bad_cursor, validate};

const COLS: &str = "id, at, tenant, actor, action, resource, group_path, outcome, details";

type AuditRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    r.try_into()
}

fn to_record(row: AuditRow) -> Result<AuditRecord> {
    let (id, at, tenant, actor, action, resource, group, outcome, details) = row;
    Ok(AuditRecord {
        id: u64::try_from(id).map_err(|_| corrupt("audit id"))?,
        at: ts(at)?,
        tenant: tenant.parse().map_err(|_| corrupt("tenant id"))?,
        actor,
        action,
        resource,
        group: group.parse().map_err(|_| corrupt("group path"))?,
        outcome: AuditOutcome::from_name(&outcome).ok_or_else(|| corrupt("audit outcome"))?,
        details: serde_json::from_str(&details).map_err(|_| corrupt("JSON document"))?,
    })
}

impl AuditStore for SqliteStore {
    fn record<'a>(&'a self, record: NewAuditRecord) -> BoxFuture<'a, Result<AuditRecord>> {
        Box::pin(async move {
            validate::audit_record(&record, self.limits())?;
            let details = serde_json::to_string(&record.details).map_err(Error::internal)?;
            self.write(move |conn| {
                let id: i64 = conn
                    .prepare_cached(
                        "INSERT INTO audit_log \
                         (at, tenant, actor, action, resource, group_path, outcome, details) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                    )
                    .and_then(|mut s| {
                        s.query_row(
                            params![
                                record.at.as_millis(),
                                record.tenant.as_str(),
                                record.actor,
                                record.action,
                                record.resource,
                                record.group.as_str(),
                                record.outcome.as_str(),
                                details,
                            ],
                            |r| r.get(0),
                        )
                    })
                    .map_err(db_err)?;
                Ok(AuditRecord {
                    id: u64::try_from(id).map_err(|_| corrupt("audit id"))?,
                    at: record.at,
                    tenant: record.tenant,
                    actor: record.actor,
                    action: record.action,
                    resource: record.resource,
                    group: record.group,
                    outcome: record.outcome,
                    details: record.details,
                })
            })
            .await
        })
    }

    fn query<'a>(
        &'a self,
        query: &'a AuditQuery,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<AuditRecord>>> {
        Box::pin(async move {
            validate::audit_query(query)?;
            let after: i64 = match page.after.as_deref() {
                None => 0,
                Some(c) => c
                    .parse::<u64>()
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                    .map_err(|_| bad_cursor())?,
            };
            let limit = page.effective_limit(self.limits());
            let q = query.clone();
            self.read(move |conn| {
                let sql = format!(
                    "SELECT {COLS} FROM audit_log WHERE {} \
                     AND (?2 IS NULL OR resource = ?2) AND (?3 IS NULL OR actor = ?3) \
                     AND (?4 IS NULL OR at >= ?4) AND (?5 IS NULL OR at < ?5) \
                     AND id > ?6 ORDER BY id LIMIT ?7",
                    in_subtree("group_path", 1)
                );
                let rows = conn
                    .prepare_cached(&sql)
                    .and_then(|mut s| {
                        s.query_map(
                            params![
                                q.root.as_str(),
                                q.resource,
                                q.actor,
                                q.from.map(Timestamp::as_millis),
                                q.to.map(Timestamp::as_millis),
                                after,
                                i64::from(limit) + 1,
                            ],
                            audit_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                let items = rows
                    .into_iter()
                    .map(to_record)
                    .collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, limit, |r| r.id.to_string()))
            })
            .await
        })
    }

    fn prune_before<'a>(
        &'a self,
        tenant: Option<&'a TenantId>,
        before: Timestamp,
    ) -> BoxFuture<'a, Result<u64>> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        Box::pin(self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM audit_log WHERE at < ?1 AND (?2 IS NULL OR tenant = ?2)",
                )
                .and_then(|mut s| s.execute(params![before.as_millis(), tenant]))
                .map_err(db_err)?;
            Ok(n as u64)
        }))
    }
}
