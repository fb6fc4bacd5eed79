//! Device configuration documents in PostgreSQL.
//!
//! A new version is `max(version) + 1`, computed in the inserting statement itself. Two nodes
//! racing on one device compute the same number; the primary key on (tenant, device, kind,
//! version) lets the first commit win and fails the other with a unique violation. A
//! compare-and-set loser answers `PreconditionFailed` (the latest version is no longer the one
//! it expected); an unconditional writer simply tries again with the new maximum.

use tokio_postgres::Row;

use hub_core::{BoxFuture, DeviceId, Error, ErrorKind, Result, TenantId, Timestamp};

use super::{
    PostgresStore, col, corrupt, execute, json_text, parse_cursor, parse_json, query, query_opt,
    to_i64, to_u64, ts,
};
use crate::config::{ConfigDocument, ConfigKind, ConfigStore};
use crate::{Page, PageRequest, validate};

const COLS: &str = "tenant, device, kind, version, document, created_at, created_by";

/// How often an unconditional write retries after losing a race for a version number. Each
/// loss means another writer committed, so running out takes that many writers in a row.
const MAX_ATTEMPTS: usize = 64;

fn doc_from_row(row: &Row) -> Result<ConfigDocument> {
    Ok(ConfigDocument {
        tenant: col::<&str>(row, "tenant")?
            .parse()
            .map_err(|_| corrupt("tenant id"))?,
        device: col::<&str>(row, "device")?
            .parse()
            .map_err(|_| corrupt("device id"))?,
        version: to_u64(col(row, "version")?)?,
        document: parse_json(col(row, "document")?)?,
        kind: ConfigKind::from_name(col(row, "kind")?).ok_or_else(|| corrupt("config kind"))?,
        created_at: ts(col(row, "created_at")?)?,
        created_by: col(row, "created_by")?,
    })
}

fn lost_race() -> Error {
    Error::unavailable("too many concurrent writers on this configuration; try again")
}

impl ConfigStore for PostgresStore {
    fn put<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        document: serde_json::Value,
        created_by: &'a str,
        expected_latest_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ConfigDocument>> {
        Box::pin(async move {
            validate::config_document(&document, &self.limits)?;
            validate::created_by(created_by)?;
            let text = json_text(&document)?;
            let expected = expected_latest_version.map(to_i64);
            let c = self.client().await?;
            for _ in 0..MAX_ATTEMPTS {
                let inserted = query_opt(
                    &c,
                    "INSERT INTO config_documents \
                     (tenant, device, kind, version, document, created_at, created_by) \
                     SELECT $1::TEXT, $2::TEXT, $3::TEXT, coalesce(max(version), 0) + 1, \
                            $4::TEXT, $5::BIGINT, $6::TEXT \
                     FROM config_documents WHERE tenant = $1 AND device = $2 AND kind = $3 \
                     HAVING $7::BIGINT IS NULL OR coalesce(max(version), 0) = $7 \
                     RETURNING version",
                    &[
                        &tenant.as_str(),
                        &device.as_str(),
                        &kind.as_str(),
                        &text,
                        &now.as_millis(),
                        &created_by,
                        &expected,
                    ],
                )
                .await;
                match inserted {
                    Ok(Some(row)) => {
                        return Ok(ConfigDocument {
                            tenant: tenant.clone(),
                            device: device.clone(),
                            version: to_u64(col(&row, "version")?)?,
                            document,
                            kind,
                            created_at: now,
                            created_by: created_by.to_owned(),
                        });
                    }
                    Ok(None) => return Err(stale(device, kind, expected_latest_version)),
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        if expected_latest_version.is_some() {
                            return Err(stale(device, kind, expected_latest_version));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(lost_race())
        })
    }

    fn latest<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
    ) -> BoxFuture<'a, Result<Option<ConfigDocument>>> {
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                &format!(
                    "SELECT {COLS} FROM config_documents \
                     WHERE tenant = $1 AND device = $2 AND kind = $3 \
                     ORDER BY version DESC LIMIT 1"
                ),
                &[&tenant.as_str(), &device.as_str(), &kind.as_str()],
            )
            .await?
            .as_ref()
            .map(doc_from_row)
            .transpose()
        })
    }

    fn get<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<ConfigDocument>>> {
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                &format!(
                    "SELECT {COLS} FROM config_documents \
                     WHERE tenant = $1 AND device = $2 AND kind = $3 AND version = $4"
                ),
                &[
                    &tenant.as_str(),
                    &device.as_str(),
                    &kind.as_str(),
                    &to_i64(version),
                ],
            )
            .await?
            .as_ref()
            .map(doc_from_row)
            .transpose()
        })
    }

    fn list<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<ConfigDocument>>> {
        Box::pin(async move {
            let before: Option<u64> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let c = self.client().await?;
            let rows = query(
                &c,
                &format!(
                    "SELECT {COLS} FROM config_documents \
                     WHERE tenant = $1 AND device = $2 AND kind = $3 AND version < $4 \
                     ORDER BY version DESC LIMIT $5"
                ),
                &[
                    &tenant.as_str(),
                    &device.as_str(),
                    &kind.as_str(),
                    &before.map_or(i64::MAX, to_i64),
                    &(i64::from(limit) + 1),
                ],
            )
            .await?;
            let items = rows.iter().map(doc_from_row).collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |d| {
                d.version.to_string()
            }))
        })
    }

    fn copy_latest<'a>(
        &'a self,
        tenant: &'a TenantId,
        from: &'a DeviceId,
        to: &'a DeviceId,
        kind: ConfigKind,
        created_by: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ConfigDocument>> {
        Box::pin(async move {
            validate::created_by(created_by)?;
            let c = self.client().await?;
            for _ in 0..MAX_ATTEMPTS {
                let inserted = query_opt(
                    &c,
                    "INSERT INTO config_documents \
                     (tenant, device, kind, version, document, created_at, created_by) \
                     SELECT $1::TEXT, $3::TEXT, $4::TEXT, \
                            (SELECT coalesce(max(version), 0) + 1 FROM config_documents \
                             WHERE tenant = $1 AND device = $3 AND kind = $4), \
                            src.document, $5::BIGINT, $6::TEXT \
                     FROM (SELECT document FROM config_documents \
                           WHERE tenant = $1 AND device = $2 AND kind = $4 \
                           ORDER BY version DESC LIMIT 1) AS src \
                     RETURNING version, document",
                    &[
                        &tenant.as_str(),
                        &from.as_str(),
                        &to.as_str(),
                        &kind.as_str(),
                        &now.as_millis(),
                        &created_by,
                    ],
                )
                .await;
                match inserted {
                    Ok(Some(row)) => {
                        return Ok(ConfigDocument {
                            tenant: tenant.clone(),
                            device: to.clone(),
                            version: to_u64(col(&row, "version")?)?,
                            document: parse_json(col(&row, "document")?)?,
                            kind,
                            created_at: now,
                            created_by: created_by.to_owned(),
                        });
                    }
                    Ok(None) => {
                        return Err(Error::not_found(format!(
                            "device {from} has no {} configuration",
                            kind.as_str()
                        )));
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
            Err(lost_race())
        })
    }

    fn prune<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        keep: u32,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            validate::prune_keep(keep)?;
            let c = self.client().await?;
            execute(
                &c,
                "DELETE FROM config_documents \
                 WHERE tenant = $1 AND device = $2 AND kind = $3 AND version < \
                 (SELECT version FROM config_documents \
                  WHERE tenant = $1 AND device = $2 AND kind = $3 \
                  ORDER BY version DESC OFFSET $4 LIMIT 1)",
                &[
                    &tenant.as_str(),
                    &device.as_str(),
                    &kind.as_str(),
                    &(i64::from(keep) - 1),
                ],
            )
            .await
        })
    }
}

fn stale(device: &DeviceId, kind: ConfigKind, expected: Option<u64>) -> Error {
    Error::precondition_failed(format!(
        "the latest {} configuration of device {device} is not version {}",
        kind.as_str(),
        expected.unwrap_or(0)
    ))
}
