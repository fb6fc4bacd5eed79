//! Measurements in PostgreSQL: points, and hourly rollups maintained from newly stored points.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use hub_core::{BoxFuture, DeviceId, Error, Result, TenantId, Timestamp};

use super::{PostgresStore, below_pattern, col, corrupt, db_error, parse_cursor, query, to_u64};
use crate::measurements::{
    AggregateQuery, AggregateScope, AppendOutcome, Bucket, HOUR_MS, MeasurementStore, Point,
    SeriesName, SeriesPoints, bucket_start,
};
use crate::rollup::{Acc, fold};
use crate::{Page, PageRequest, validate};

/// Looks up the ids of existing series among the `(tenant, device, name)` arrays.
const FIND_SERIES: &str = "SELECT s.id, s.tenant, s.device, s.name FROM series s \
     JOIN unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS k (tenant, device, name) \
     ON s.tenant = k.tenant AND s.device = k.device AND s.name = k.name";

/// Creates the missing series among the arrays (a racing creator's row is found afterwards).
const CREATE_SERIES: &str = "INSERT INTO series (tenant, device, name) \
     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) ORDER BY 1, 2, 3 \
     ON CONFLICT DO NOTHING";

/// Inserts points (arrays sorted by series and time, keys unique), skipping stored ones, and
/// folds the new ones into the hourly rollups; returns how many points were new. Rollups merge
/// with the documented tie-breaks: first = earliest time, then smallest value; last = latest
/// time, then largest value.
const INSERT_POINTS: &str = "WITH new AS ( \
       INSERT INTO points (series_id, ts, value) \
       SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::FLOAT8[]) \
       ON CONFLICT DO NOTHING RETURNING series_id, ts, value \
     ), agg AS ( \
       SELECT series_id, ts - (((ts % 3600000) + 3600000) % 3600000) AS hour, \
              count(*) AS n, min(value) AS lo, max(value) AS hi, sum(value) AS total, \
              min(ARRAY[ts::FLOAT8, value]) AS f, max(ARRAY[ts::FLOAT8, value]) AS l \
       FROM new GROUP BY 1, 2 \
     ), up AS ( \
       INSERT INTO rollups AS r (series_id, hour, count, min, max, sum, first_ts, first_value, \
                                 last_ts, last_value) \
       SELECT series_id, hour, n, lo, hi, total, f[1]::BIGINT, f[2], l[1]::BIGINT, l[2] \
       FROM agg ORDER BY series_id, hour \
       ON CONFLICT (series_id, hour) DO UPDATE SET \
         count = r.count + EXCLUDED.count, \
         min = LEAST(r.min, EXCLUDED.min), \
         max = GREATEST(r.max, EXCLUDED.max), \
         sum = r.sum + EXCLUDED.sum, \
         first_ts = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_value) < (r.first_ts, r.first_value) \
                    THEN EXCLUDED.first_ts ELSE r.first_ts END, \
         first_value = CASE WHEN (EXCLUDED.first_ts, EXCLUDED.first_value) < (r.first_ts, r.first_value) \
                    THEN EXCLUDED.first_value ELSE r.first_value END, \
         last_ts = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_value) > (r.last_ts, r.last_value) \
                    THEN EXCLUDED.last_ts ELSE r.last_ts END, \
         last_value = CASE WHEN (EXCLUDED.last_ts, EXCLUDED.last_value) > (r.last_ts, r.last_value) \
                    THEN EXCLUDED.last_value ELSE r.last_value END \
       RETURNING 1 \
     ) \
     SELECT (SELECT count(*) FROM new) AS inserted, (SELECT count(*) FROM up) AS rolled";

/// The series ids an aggregate reads: one device's series, or the series of the devices now in
/// a group subtree.
const SCOPE_DEVICE: &str = "SELECT id FROM series WHERE tenant = $1 AND device = $2 AND name = $3";
const SCOPE_SUBTREE: &str = "SELECT s.id FROM series s JOIN devices d \
     ON d.tenant = s.tenant AND d.id = s.device \
     WHERE s.tenant = $1 AND s.name = $3 AND (d.group_path = $2 OR d.group_path LIKE $7)";

type SeriesKey = (TenantId, DeviceId, SeriesName);

impl PostgresStore {
    /// The ids of the batch's series, creating missing ones.
    async fn series_ids<C: deadpool_postgres::GenericClient>(
        c: &C,
        keys: &[SeriesKey],
    ) -> Result<HashMap<SeriesKey, i64>> {
        let tenants: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let devices: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let names: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
        let mut ids = HashMap::with_capacity(keys.len());
        for attempt in 0..2 {
            if attempt == 1 {
                super::execute(c, CREATE_SERIES, &[&tenants, &devices, &names]).await?;
            }
            for row in query(c, FIND_SERIES, &[&tenants, &devices, &names]).await? {
                let key = (
                    col::<&str>(&row, "tenant")?
                        .parse()
                        .map_err(|_| corrupt("tenant id"))?,
                    col::<&str>(&row, "device")?
                        .parse()
                        .map_err(|_| corrupt("device id"))?,
                    SeriesName::new(col(&row, "name")?).map_err(|_| corrupt("series name"))?,
                );
                ids.insert(key, col::<i64>(&row, "id")?);
            }
            if ids.len() == keys.len() {
                return Ok(ids);
            }
        }
        Err(Error::internal("a measurement series could not be created"))
    }
}

impl MeasurementStore for PostgresStore {
    fn append<'a>(&'a self, batch: &'a [SeriesPoints]) -> BoxFuture<'a, Result<AppendOutcome>> {
        Box::pin(async move {
            validate::points(batch, &self.limits)?;
            let total: usize = batch.iter().map(|s| s.points.len()).sum();
            if total == 0 {
                return Ok(AppendOutcome::default());
            }
            let mut keys: Vec<SeriesKey> = batch
                .iter()
                .filter(|s| !s.points.is_empty())
                .map(|s| (s.tenant.clone(), s.device.clone(), s.series.clone()))
                .collect();
            keys.sort();
            keys.dedup();
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db_error)?;
            let ids = Self::series_ids(&tx, &keys).await?;
            // The first occurrence of a (series, time) in the batch wins, as if the points were
            // stored one by one; later ones are duplicates. Sorting gives every writer the same
            // lock order.
            let mut rows: Vec<(i64, i64, f64, usize)> = Vec::with_capacity(total);
            let mut n = 0usize;
            for s in batch {
                let Some(&id) = ids.get(&(s.tenant.clone(), s.device.clone(), s.series.clone()))
                else {
                    continue;
                };
                for p in &s.points {
                    rows.push((id, p.ts.as_millis(), p.value, n));
                    n += 1;
                }
            }
            rows.sort_by_key(|&(id, ts, _, order)| (id, ts, order));
            rows.dedup_by_key(|r| (r.0, r.1));
            let series: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let values: Vec<f64> = rows.iter().map(|r| r.2).collect();
            let out = query(&tx, INSERT_POINTS, &[&series, &times, &values]).await?;
            let inserted = match out.first() {
                Some(row) => to_u64(col(row, "inserted")?)?,
                None => return Err(Error::internal("the point insert returned no row")),
            };
            tx.commit().await.map_err(db_error)?;
            let total = total as u64;
            Ok(AppendOutcome {
                inserted,
                duplicates: total.saturating_sub(inserted),
            })
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
        Box::pin(async move {
            validate::range(from, to)?;
            let after: Option<i64> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let start = after.map_or(from.as_millis(), |a| {
                a.saturating_add(1).max(from.as_millis())
            });
            let c = self.client().await?;
            let rows = query(
                &c,
                "SELECT p.ts, p.value FROM points p JOIN series s ON s.id = p.series_id \
                 WHERE s.tenant = $1 AND s.device = $2 AND s.name = $3 \
                 AND p.ts >= $4 AND p.ts < $5 ORDER BY p.ts LIMIT $6",
                &[
                    &tenant.as_str(),
                    &device.as_str(),
                    &series.as_str(),
                    &start,
                    &to.as_millis(),
                    &(i64::from(limit) + 1),
                ],
            )
            .await?;
            let mut items = Vec::with_capacity(rows.len());
            for row in &rows {
                items.push(Point {
                    ts: super::ts(col(row, "ts")?)?,
                    value: col(row, "value")?,
                });
            }
            Ok(Page::from_overfetch(items, limit, |p| {
                p.ts.as_millis().to_string()
            }))
        })
    }

    fn aggregate<'a>(&'a self, query_: &'a AggregateQuery) -> BoxFuture<'a, Result<Vec<Bucket>>> {
        Box::pin(async move {
            let width = validate::aggregate(query_, &self.limits)?;
            let (from, to) = (query_.from.as_millis(), query_.to.as_millis());
            // Whole hours come from the rollups, the partial hours at either end from the points.
            let span = crate::rollup::span(from, to, width);
            // Stored times are never negative, so `t - t % width` is the epoch-aligned bucket
            // start and cannot overflow, even for the widest bucket.
            // $1 tenant, $2 device or group, $3 series, $4 width, $5 from, $6 to, and for a
            // subtree $7 the pattern of the groups below it.
            let (tenant, who, pattern, scope) = match &query_.scope {
                AggregateScope::Device { tenant, device } => {
                    (tenant.clone(), device.as_str(), None, SCOPE_DEVICE)
                }
                AggregateScope::Subtree { group } => (
                    group.tenant(),
                    group.as_str(),
                    Some(below_pattern(group)),
                    SCOPE_SUBTREE,
                ),
            };
            let rollup_sql = format!(
                "SELECT hour - hour % $4 AS bucket, \
                 sum(count)::BIGINT AS n, min(min) AS lo, max(max) AS hi, sum(sum) AS total, \
                 min(ARRAY[first_ts::FLOAT8, first_value]) AS f, \
                 max(ARRAY[last_ts::FLOAT8, last_value]) AS l \
                 FROM rollups WHERE series_id IN ({scope}) AND hour >= $5 AND hour < $6 \
                 GROUP BY 1 ORDER BY 1"
            );
            let raw_sql = format!(
                "SELECT ts - ts % $4 AS bucket, \
                 count(*) AS n, min(value) AS lo, max(value) AS hi, sum(value) AS total, \
                 min(ARRAY[ts::FLOAT8, value]) AS f, max(ARRAY[ts::FLOAT8, value]) AS l \
                 FROM points WHERE series_id IN ({scope}) AND ts >= $5 AND ts < $6 \
                 GROUP BY 1 ORDER BY 1"
            );
            let mut ranges: Vec<(&str, i64, i64)> = Vec::new();
            match span {
                Some((first, end)) => {
                    ranges.push((&raw_sql, from, first));
                    ranges.push((&rollup_sql, first, end));
                    ranges.push((&raw_sql, end, to));
                }
                None => ranges.push((&raw_sql, from, to)),
            }
            let series = query_.series.as_str();
            let tenant_str = tenant.as_str();
            let c = self.client().await?;
            let mut parts: Vec<(i64, Acc)> = Vec::new();
            for (sql, a, b) in ranges {
                if a >= b {
                    continue;
                }
                let mut params: Vec<&(dyn ToSql + Sync)> =
                    vec![&tenant_str, &who, &series, &width, &a, &b];
                if let Some(p) = &pattern {
                    params.push(p);
                }
                for row in &query(&c, sql, &params).await? {
                    let start: i64 = col(row, "bucket")?;
                    let first: Vec<f64> = col(row, "f")?;
                    let last: Vec<f64> = col(row, "l")?;
                    let (Some(&first_ts), Some(&first), Some(&last_ts), Some(&last)) =
                        (first.first(), first.get(1), last.first(), last.get(1))
                    else {
                        return Err(corrupt("rollup"));
                    };
                    parts.push((
                        start,
                        Acc {
                            count: to_u64(col(row, "n")?)?,
                            min: col(row, "lo")?,
                            max: col(row, "hi")?,
                            sum: col(row, "total")?,
                            first_ts: first_ts as i64,
                            first,
                            last_ts: last_ts as i64,
                            last,
                        },
                    ));
                }
            }
            let buckets = fold(parts, width);
            Ok(buckets)
        })
    }

    fn list_series<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<SeriesName>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = query(
                &c,
                "SELECT s.name FROM series s WHERE s.tenant = $1 AND s.device = $2 \
                 AND EXISTS (SELECT 1 FROM points p WHERE p.series_id = s.id) ORDER BY s.name",
                &[&tenant.as_str(), &device.as_str()],
            )
            .await?;
            rows.iter()
                .map(|r| SeriesName::new(col(r, "name")?).map_err(|_| corrupt("series name")))
                .collect()
        })
    }

    fn delete_before<'a>(&'a self, before: Timestamp) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let cut = bucket_start(before.as_millis(), HOUR_MS);
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db_error)?;
            // Every stored point has a rollup row for its hour, so the rollups name the series
            // that have points before the cut, and the primary key finds them.
            let deleted = super::execute(
                &tx,
                "DELETE FROM points WHERE series_id IN \
                 (SELECT DISTINCT series_id FROM rollups WHERE hour < $1) AND ts < $1",
                &[&cut],
            )
            .await?;
            super::execute(&tx, "DELETE FROM rollups WHERE hour < $1", &[&cut]).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(deleted)
        })
    }
}
