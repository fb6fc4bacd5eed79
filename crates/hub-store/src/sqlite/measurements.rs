//! Measurements on SQLite: points keyed by (series, timestamp) in a `WITHOUT ROWID` table, and
//! hourly rollups maintained in the same transaction from the points that were really inserted.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use hub_core::{BoxFuture, DeviceId, Result, TenantId, Timestamp};

use super::registry::{in_subtree, ts};
use super::{SqliteStore, db_err};
use crate::measurements::{
    AggregateQuery, AggregateScope, AppendOutcome, Bucket, HOUR_MS, MeasurementStore, Point,
    SeriesName, SeriesPoints, bucket_start,
};
use crate::rollup::{Acc, fold};
use crate::{Page, PageRequest, bad_cursor, validate};

fn series_id(conn: &Connection, tenant: &str, device: &str, name: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM series WHERE tenant = ?1 AND device = ?2 AND name = ?3")
        .and_then(|mut s| s.query_row([tenant, device, name], |r| r.get(0)).optional())
        .map_err(db_err)
}

fn series_id_or_create(conn: &Connection, tenant: &str, device: &str, name: &str) -> Result<i64> {
    if let Some(id) = series_id(conn, tenant, device, name)? {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO series (tenant, device, name) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.insert([tenant, device, name]))
        .map_err(db_err)
}

const MERGE_ROLLUP: &str = "\
INSERT INTO rollups_hour (series_id, hour, count, min, max, sum, first_ts, first_value, last_ts, last_value)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (series_id, hour) DO UPDATE SET
    count = count + excluded.count,
    min = min(min, excluded.min),
    max = max(max, excluded.max),
    sum = sum + excluded.sum,
    first_value = CASE WHEN excluded.first_ts < first_ts
        OR (excluded.first_ts = first_ts AND excluded.first_value < first_value)
        THEN excluded.first_value ELSE first_value END,
    first_ts = min(first_ts, excluded.first_ts),
    last_value = CASE WHEN excluded.last_ts > last_ts
        OR (excluded.last_ts = last_ts AND excluded.last_value > last_value)
        THEN excluded.last_value ELSE last_value END,
    last_ts = max(last_ts, excluded.last_ts)";

fn append_series(conn: &Connection, sp: &SeriesPoints, out: &mut AppendOutcome) -> Result<()> {
    let sid = series_id_or_create(
        conn,
        sp.tenant.as_str(),
        sp.device.as_str(),
        sp.series.as_str(),
    )?;
    let mut insert = conn
        .prepare_cached("INSERT OR IGNORE INTO points (series_id, ts, value) VALUES (?1, ?2, ?3)")
        .map_err(db_err)?;
    let mut hours: HashMap<i64, Acc> = HashMap::new();
    for p in &sp.points {
        let ms = p.ts.as_millis();
        if insert.execute(params![sid, ms, p.value]).map_err(db_err)? == 1 {
            out.inserted += 1;
            let acc = Acc::point(ms, p.value);
            hours
                .entry(bucket_start(ms, HOUR_MS))
                .and_modify(|h| h.merge(&acc))
                .or_insert(acc);
        } else {
            out.duplicates += 1;
        }
    }
    let mut merge = conn.prepare_cached(MERGE_ROLLUP).map_err(db_err)?;
    for (hour, a) in hours {
        merge
            .execute(params![
                sid,
                hour,
                a.count as i64,
                a.min,
                a.max,
                a.sum,
                a.first_ts,
                a.first,
                a.last_ts,
                a.last
            ])
            .map_err(db_err)?;
    }
    Ok(())
}

/// The ids of the series an aggregate covers.
fn scope_series(conn: &Connection, scope: &AggregateScope, name: &str) -> Result<Vec<i64>> {
    match scope {
        AggregateScope::Device { tenant, device } => {
            Ok(series_id(conn, tenant.as_str(), device.as_str(), name)?
                .into_iter()
                .collect())
        }
        AggregateScope::Subtree { group } => {
            let sql = format!(
                "SELECT s.id FROM devices d JOIN series s ON s.tenant = d.tenant AND s.device = d.id \
                 WHERE d.tenant = ?2 AND s.name = ?3 AND {}",
                in_subtree("d.group_path", 1)
            );
            conn.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_map(
                        params![group.as_str(), group.tenant().as_str(), name],
                        |r| r.get(0),
                    )?
                    .collect::<rusqlite::Result<Vec<i64>>>()
                })
                .map_err(db_err)
        }
    }
}

fn rollup_parts(
    conn: &Connection,
    id: i64,
    from: i64,
    to: i64,
    parts: &mut Vec<(i64, Acc)>,
) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT hour, count, min, max, sum, first_ts, first_value, last_ts, last_value \
             FROM rollups_hour WHERE series_id = ?1 AND hour >= ?2 AND hour < ?3",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![id, from, to], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Acc {
                    count: r.get::<_, i64>(1)? as u64,
                    min: r.get(2)?,
                    max: r.get(3)?,
                    sum: r.get(4)?,
                    first_ts: r.get(5)?,
                    first: r.get(6)?,
                    last_ts: r.get(7)?,
                    last: r.get(8)?,
                },
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        parts.push(row.map_err(db_err)?);
    }
    Ok(())
}

fn raw_parts(
    conn: &Connection,
    id: i64,
    from: i64,
    to: i64,
    parts: &mut Vec<(i64, Acc)>,
) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT ts, value FROM points WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![id, from, to], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        })
        .map_err(db_err)?;
    for row in rows {
        let (t, v) = row.map_err(db_err)?;
        parts.push((t, Acc::point(t, v)));
    }
    Ok(())
}

/// Whole hours come from the rollups, the partial hours at either end from the points.
fn aggregate_blocking(conn: &Connection, q: &AggregateQuery, width: i64) -> Result<Vec<Bucket>> {
    let ids = scope_series(conn, &q.scope, q.series.as_str())?;
    let (from, to) = (q.from.as_millis(), q.to.as_millis());
    let mut parts: Vec<(i64, Acc)> = Vec::new();
    for id in ids {
        match crate::rollup::span(from, to, width) {
            Some((first, end)) => {
                raw_parts(conn, id, from, first, &mut parts)?;
                rollup_parts(conn, id, first, end, &mut parts)?;
                raw_parts(conn, id, end, to, &mut parts)?;
            }
            None => raw_parts(conn, id, from, to, &mut parts)?,
        }
    }
    Ok(fold(parts, width))
}

impl MeasurementStore for SqliteStore {
    fn append<'a>(&'a self, batch: &'a [SeriesPoints]) -> BoxFuture<'a, Result<AppendOutcome>> {
        Box::pin(async move {
            validate::points(batch, self.limits())?;
            let batch = batch.to_vec();
            self.write(move |conn| {
                let mut out = AppendOutcome::default();
                for sp in &batch {
                    append_series(conn, sp, &mut out)?;
                }
                Ok(out)
            })
            .await
        })
    }

    fn read_range<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        series: &'a SeriesName,
        from: Timestamp,
        to: Timestamp,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Point>>> {
        let (tenant, device, series) = (tenant.clone(), device.clone(), series.clone());
        let limit = page.effective_limit(self.limits());
        Box::pin(async move {
            validate::range(from, to)?;
            let start = match page.after {
                Some(a) => {
                    let after: i64 = a.parse().map_err(|_| bad_cursor())?;
                    after.saturating_add(1).max(from.as_millis())
                }
                None => from.as_millis(),
            };
            self.read(move |conn| {
                let Some(sid) = series_id(conn, tenant.as_str(), device.as_str(), series.as_str())?
                else {
                    return Ok(Page { items: Vec::new(), next: None });
                };
                let rows: Vec<(i64, f64)> = conn
                    .prepare_cached(
                        "SELECT ts, value FROM points WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 \
                         ORDER BY ts LIMIT ?4",
                    )
                    .and_then(|mut s| {
                        s.query_map(
                            params![sid, start, to.as_millis(), i64::from(limit) + 1],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                let items = rows
                    .into_iter()
                    .map(|(t, value)| Ok(Point { ts: ts(t)?, value }))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, limit, |p| p.ts.as_millis().to_string()))
            })
            .await
        })
    }

    fn aggregate<'a>(&'a self, query: &'a AggregateQuery) -> BoxFuture<'a, Result<Vec<Bucket>>> {
        Box::pin(async move {
            let width = validate::aggregate(query, self.limits())?;
            let q = query.clone();
            // One read transaction: the rollups and the points of partial hours are read from the
            // same snapshot, so a concurrent append is seen whole or not at all.
            self.read(move |conn| {
                conn.execute_batch("BEGIN").map_err(db_err)?;
                let out = aggregate_blocking(conn, &q, width);
                let _ = conn.execute_batch("COMMIT");
                out
            })
            .await
        })
    }

    fn list_series<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<SeriesName>>> {
        let (tenant, device) = (tenant.clone(), device.clone());
        Box::pin(self.read(move |conn| {
            let names: Vec<String> = conn
                .prepare_cached(
                    "SELECT name FROM series s WHERE tenant = ?1 AND device = ?2 \
                     AND EXISTS (SELECT 1 FROM points p WHERE p.series_id = s.id) ORDER BY name",
                )
                .and_then(|mut s| {
                    s.query_map([tenant.as_str(), device.as_str()], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            names
                .iter()
                .map(|n| SeriesName::new(n).map_err(|_| super::corrupt("series name")))
                .collect()
        }))
    }

    fn delete_before<'a>(&'a self, before: Timestamp) -> BoxFuture<'a, Result<u64>> {
        let cut = bucket_start(before.as_millis(), HOUR_MS);
        Box::pin(self.write(move |conn| {
            let ids: Vec<i64> = conn
                .prepare_cached("SELECT id FROM series")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(db_err)?;
            let mut deleted = 0u64;
            let mut points = conn
                .prepare_cached("DELETE FROM points WHERE series_id = ?1 AND ts < ?2")
                .map_err(db_err)?;
            let mut rollups = conn
                .prepare_cached("DELETE FROM rollups_hour WHERE series_id = ?1 AND hour < ?2")
                .map_err(db_err)?;
            for id in ids {
                deleted += points.execute(params![id, cut]).map_err(db_err)? as u64;
                rollups.execute(params![id, cut]).map_err(db_err)?;
            }
            Ok(deleted)
        }))
    }
}
