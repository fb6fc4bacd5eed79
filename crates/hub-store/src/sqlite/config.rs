//! Device configuration documents on SQLite. Versions are assigned inside the writer's
//! transaction, which serializes every write, so `max(version) + 1` cannot race.

use rusqlite::{Connection, OptionalExtension, Row, params};

use hub_core::{BoxFuture, DeviceId, Error, Result, TenantId, Timestamp};

use super::registry::ts;
use super::{SqliteStore, corrupt, db_err};
use crate::config::{ConfigDocument, ConfigKind, ConfigStore};
use crate::{Page, PageRequest, bad_cursor, validate};

const COLS: &str = "tenant, device, kind, version, document, created_at, created_by";

type ConfigRow = (String, String, String, i64, String, i64, String);

fn config_row(r: &Row<'_>) -> rusqlite::Result<ConfigRow> {
    r.try_into()
}

fn to_doc(row: ConfigRow) -> Result<ConfigDocument> {
    let (tenant, device, kind, version, document, created_at, created_by) = row;
    Ok(ConfigDocument {
        tenant: tenant.parse().map_err(|_| corrupt("tenant id"))?,
        device: device.parse().map_err(|_| corrupt("device id"))?,
        version: u64::try_from(version).map_err(|_| corrupt("config version"))?,
        document: serde_json::from_str(&document).map_err(|_| corrupt("JSON document"))?,
        kind: ConfigKind::from_name(&kind).ok_or_else(|| corrupt("config kind"))?,
        created_at: ts(created_at)?,
        created_by,
    })
}

fn latest_in(
    conn: &Connection,
    tenant: &str,
    device: &str,
    kind: ConfigKind,
) -> Result<Option<ConfigDocument>> {
    conn.prepare_cached(&format!(
        "SELECT {COLS} FROM config_documents WHERE tenant = ?1 AND device = ?2 AND kind = ?3 \
         ORDER BY version DESC LIMIT 1"
    ))
    .and_then(|mut s| {
        s.query_row(params![tenant, device, kind.as_str()], config_row)
            .optional()
    })
    .map_err(db_err)?
    .map(to_doc)
    .transpose()
}

/// Inserts the next version inside the writer's transaction.
#[allow(clippy::too_many_arguments)]
fn insert_next(
    conn: &Connection,
    tenant: &TenantId,
    device: &DeviceId,
    kind: ConfigKind,
    document: serde_json::Value,
    text: &str,
    created_by: &str,
    expected: Option<u64>,
    now: Timestamp,
) -> Result<ConfigDocument> {
    let latest = latest_in(conn, tenant.as_str(), device.as_str(), kind)?.map_or(0, |d| d.version);
    if let Some(v) = expected
        && v != latest
    {
        return Err(Error::precondition_failed(format!(
            "the {} configuration of device {device} is at version {latest}, not {v}",
            kind.as_str()
        )));
    }
    let version = latest + 1;
    conn.prepare_cached(&format!(
        "INSERT INTO config_documents ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            tenant.as_str(),
            device.as_str(),
            kind.as_str(),
            i64::try_from(version).unwrap_or(i64::MAX),
            text,
            now.as_millis(),
            created_by,
        ])
    })
    .map_err(db_err)?;
    Ok(ConfigDocument {
        tenant: tenant.clone(),
        device: device.clone(),
        version,
        document,
        kind,
        created_at: now,
        created_by: created_by.to_owned(),
    })
}

fn version_param(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl ConfigStore for SqliteStore {
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
            validate::config_document(&document, self.limits())?;
            validate::created_by(created_by)?;
            let text = serde_json::to_string(&document).map_err(Error::internal)?;
            let (tenant, device, by) = (tenant.clone(), device.clone(), created_by.to_owned());
            self.write(move |conn| {
                insert_next(
                    conn,
                    &tenant,
                    &device,
                    kind,
                    document,
                    &text,
                    &by,
                    expected_latest_version,
                    now,
                )
            })
            .await
        })
    }

    fn latest<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
    ) -> BoxFuture<'a, Result<Option<ConfigDocument>>> {
        let (tenant, device) = (tenant.clone(), device.clone());
        Box::pin(self.read(move |conn| latest_in(conn, tenant.as_str(), device.as_str(), kind)))
    }

    fn get<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<ConfigDocument>>> {
        let (tenant, device) = (tenant.clone(), device.clone());
        Box::pin(self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COLS} FROM config_documents \
                 WHERE tenant = ?1 AND device = ?2 AND kind = ?3 AND version = ?4"
            ))
            .and_then(|mut s| {
                s.query_row(
                    params![
                        tenant.as_str(),
                        device.as_str(),
                        kind.as_str(),
                        version_param(version)
                    ],
                    config_row,
                )
                .optional()
            })
            .map_err(db_err)?
            .map(to_doc)
            .transpose()
        }))
    }

    fn list<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<ConfigDocument>>> {
        Box::pin(async move {
            let before: i64 = match page.after.as_deref() {
                None => i64::MAX,
                Some(c) => c
                    .parse::<u64>()
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                    .map_err(|_| bad_cursor())?,
            };
            let limit = page.effective_limit(self.limits());
            let (tenant, device) = (tenant.clone(), device.clone());
            self.read(move |conn| {
                let rows = conn
                    .prepare_cached(&format!(
                        "SELECT {COLS} FROM config_documents \
                         WHERE tenant = ?1 AND device = ?2 AND kind = ?3 AND version < ?4 \
                         ORDER BY version DESC LIMIT ?5"
                    ))
                    .and_then(|mut s| {
                        s.query_map(
                            params![
                                tenant.as_str(),
                                device.as_str(),
                                kind.as_str(),
                                before,
                                i64::from(limit) + 1
                            ],
                            config_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                let items = rows.into_iter().map(to_doc).collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, limit, |d| {
                    d.version.to_string()
                }))
            })
            .await
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
            let (tenant, from, to, by) = (
                tenant.clone(),
                from.clone(),
                to.clone(),
                created_by.to_owned(),
            );
            self.write(move |conn| {
                let source =
                    latest_in(conn, tenant.as_str(), from.as_str(), kind)?.ok_or_else(|| {
                        Error::not_found(format!(
                            "device {from} has no {} configuration",
                            kind.as_str()
                        ))
                    })?;
                let text = serde_json::to_string(&source.document).map_err(Error::internal)?;
                insert_next(
                    conn,
                    &tenant,
                    &to,
                    kind,
                    source.document,
                    &text,
                    &by,
                    None,
                    now,
                )
            })
            .await
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
            let (tenant, device) = (tenant.clone(), device.clone());
            self.write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "DELETE FROM config_documents \
                         WHERE tenant = ?1 AND device = ?2 AND kind = ?3 AND version < \
                         (SELECT version FROM config_documents \
                          WHERE tenant = ?1 AND device = ?2 AND kind = ?3 \
                          ORDER BY version DESC LIMIT 1 OFFSET ?4)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            tenant.as_str(),
                            device.as_str(),
                            kind.as_str(),
                            i64::from(keep) - 1
                        ])
                    })
                    .map_err(db_err)?;
                Ok(n as u64)
            })
            .await
        })
    }
}
