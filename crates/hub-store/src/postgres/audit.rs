//! The audit log in PostgreSQL: ids from an identity column, never reused.

use tokio_postgres::Row;

use hub_core::{BoxFuture, Result, TenantId, Timestamp};

use super::{
    PostgresStore, below_pattern, col, corrupt, execute, json_text, parse_cursor, parse_json,
    query, query_opt, to_i64, to_u64, ts,
};
use crate::audit::{AuditOutcome, AuditQuery, AuditRecord, AuditStore, NewAuditRecord};
use crate::{Page, PageRequest, validate};

const COLS: &str = "id, at, tenant, actor, action, resource, group_path, outcome, details";

fn record_from_row(row: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: to_u64(col(row, "id")?)?,
        at: ts(col(row, "at")?)?,
        tenant: col::<&str>(row, "tenant")?
            .parse()
            .map_err(|_| corrupt("tenant id"))?,
        actor: col(row, "actor")?,
        action: col(row, "action")?,
        resource: col(row, "resource")?,
        group: col::<&str>(row, "group_path")?
            .parse()
            .map_err(|_| corrupt("group path"))?,
        outcome: AuditOutcome::from_name(col(row, "outcome")?)
            .ok_or_else(|| corrupt("audit outcome"))?,
        details: parse_json(col(row, "details")?)?,
    })
}

impl AuditStore for PostgresStore {
    fn record<'a>(&'a self, record: NewAuditRecord) -> BoxFuture<'a, Result<AuditRecord>> {
        Box::pin(async move {
            validate::audit_record(&record, &self.limits)?;
            let details = json_text(&record.details)?;
            let c = self.client().await?;
            let row = query_opt(
                &c,
                "INSERT INTO audit_log \
                 (at, tenant, actor, action, resource, group_path, outcome, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &record.at.as_millis(),
                    &record.tenant.as_str(),
                    &record.actor,
                    &record.action,
                    &record.resource,
                    &record.group.as_str(),
                    &record.outcome.as_str(),
                    &details,
                ],
            )
            .await?
            .ok_or_else(|| corrupt("audit insert without an id"))?;
            Ok(AuditRecord {
                id: to_u64(col(&row, "id")?)?,
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
    }

    fn query<'a>(
        &'a self,
        q: &'a AuditQuery,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<AuditRecord>>> {
        Box::pin(async move {
            validate::audit_query(q)?;
            let after: Option<u64> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let c = self.client().await?;
            let sql = format!(
                "SELECT {COLS} FROM audit_log \
                 WHERE (group_path = $1 OR group_path LIKE $2) \
                 AND ($3::TEXT IS NULL OR resource = $3) AND ($4::TEXT IS NULL OR actor = $4) \
                 AND ($5::BIGINT IS NULL OR at >= $5) AND ($6::BIGINT IS NULL OR at < $6) \
                 AND id > $7 ORDER BY id LIMIT $8"
            );
            let rows = query(
                &c,
                &sql,
                &[
                    &q.root.as_str(),
                    &below_pattern(&q.root),
                    &q.resource,
                    &q.actor,
                    &q.from.map(Timestamp::as_millis),
                    &q.to.map(Timestamp::as_millis),
                    &after.map_or(0, to_i64),
                    &(i64::from(limit) + 1),
                ],
            )
            .await?;
            let items = rows
                .iter()
                .map(record_from_row)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |r| r.id.to_string()))
        })
    }

    fn prune_before<'a>(
        &'a self,
        tenant: Option<&'a TenantId>,
        before: Timestamp,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "DELETE FROM audit_log WHERE at < $1 AND ($2::TEXT IS NULL OR tenant = $2)",
                &[&before.as_millis(), &tenant.map(TenantId::as_str)],
            )
            .await
        })
    }
}
