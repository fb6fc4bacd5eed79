//! Partial aggregates: what a bucket or an hourly rollup keeps, and how two of them merge.

use hub_core::Timestamp;

use crate::measurements::{Bucket, bucket_start};

/// The statistics of a set of points, mergeable with another set's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Acc {
    pub(crate) count: u64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) sum: f64,
    pub(crate) first_ts: i64,
    pub(crate) first: f64,
    pub(crate) last_ts: i64,
    pub(crate) last: f64,
}

impl Acc {
    /// The statistics of one point.
    pub(crate) fn point(ts: i64, value: f64) -> Self {
        Acc {
            count: 1,
            min: value,
            max: value,
            sum: value,
            first_ts: ts,
            first: value,
            last_ts: ts,
            last: value,
        }
    }

    /// Adds another set's statistics. Ties at the first (last) timestamp keep the smaller
    /// (larger) value, as documented on [`Bucket`].
    pub(crate) fn merge(&mut self, o: &Acc) {
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        if o.first_ts < self.first_ts || (o.first_ts == self.first_ts && o.first < self.first) {
            self.first_ts = o.first_ts;
            self.first = o.first;
        }
        if o.last_ts > self.last_ts || (o.last_ts == self.last_ts && o.last > self.last) {
            self.last_ts = o.last_ts;
            self.last = o.last;
        }
    }

    /// The bucket starting at `start`.
    pub(crate) fn into_bucket(self, start: i64) -> Bucket {
        Bucket {
            start: Timestamp::from_millis(start).unwrap_or(Timestamp::EPOCH),
            count: self.count,
            min: self.min,
            max: self.max,
            sum: self.sum,
            mean: self.sum / self.count as f64,
            first: self.first,
            last: self.last,
        }
    }
}

/// Folds `(start-aligned key, partial aggregate)` pairs into epoch-aligned buckets of `width_ms`,
/// in time order.
pub(crate) fn fold(parts: impl IntoIterator<Item = (i64, Acc)>, width_ms: i64) -> Vec<Bucket> {
    let mut buckets: std::collections::BTreeMap<i64, Acc> = std::collections::BTreeMap::new();
    for (ts, acc) in parts {
        buckets
            .entry(bucket_start(ts, width_ms))
            .and_modify(|b| b.merge(&acc))
            .or_insert(acc);
    }
    buckets
        .into_iter()
        .map(|(start, acc)| acc.into_bucket(start))
        .collect()
}

/// The hours that lie wholly in `[from, to)`, as `[first, end)`, when bucket boundaries fall on
/// hours (`width` a multiple of an hour); `None` when the rollups cannot serve the query.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn span(from: i64, to: i64, width: i64) -> Option<(i64, i64)> {
    use crate::measurements::HOUR_MS;
    if width % HOUR_MS != 0 {
        return None;
    }
    let first = bucket_start(from + HOUR_MS - 1, HOUR_MS);
    let end = bucket_start(to, HOUR_MS);
    (first < end).then_some((first, end))
}
