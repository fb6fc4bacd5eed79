//! Measurements: time series of `f64` points uploaded by devices.
//!
//! - **Idempotent**: a point is identified by (tenant, device, series, timestamp). Re-uploading it
//!   stores nothing and counts it as a duplicate, so a device that retries never double counts;
//!   the first value written wins.
//! - **Out of order** arrival is fine; reads are always in time order.
//! - **Aggregates** per time bucket (count, min, max, sum, mean, first, last) for one device or
//!   across the devices currently in a group subtree. Buckets are aligned to the Unix epoch.
//!   Backends keep hourly rollups, so bucket sizes that are whole hours over hour-aligned ranges
//!   read the rollups, not the points.
//! - **Retention** deletes whole hours of points older than a cut-off.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use hub_core::{BoxFuture, DeviceId, GroupPath, Result, TenantId, Timestamp};

use crate::{Page, PageRequest};

/// One hour in milliseconds: the rollup granularity.
pub const HOUR_MS: i64 = 3_600_000;

/// A series name: 1 to 128 bytes of `A-Z a-z 0-9 . _ : / -`, starting and ending with a letter or
/// digit (`temperature`, `motor/1/current`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesName(Arc<str>);

impl SeriesName {
    /// Parses and validates a series name.
    pub fn new(s: &str) -> Result<Self> {
        let ok_char =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-');
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 128
            && bytes.iter().all(|&b| ok_char(b))
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric();
        if valid {
            Ok(Self(Arc::from(s)))
        } else {
            let shown: String = s.chars().take(80).collect();
            Err(hub_core::Error::invalid_input(format!(
                "invalid series name {shown:?}: 1 to 128 bytes of A-Z a-z 0-9 . _ : / -, \
                 starting and ending with a letter or digit"
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SeriesName {
    type Err = hub_core::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl fmt::Display for SeriesName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SeriesName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeriesName({:?})", &*self.0)
    }
}

impl Serialize for SeriesName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SeriesName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When it was measured.
    pub ts: Timestamp,
    /// The value; must be finite and within ±1e100 (so that no sum can overflow).
    pub value: f64,
}

/// Points of one series of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoints {
    /// The device's tenant.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
    /// The series.
    pub series: SeriesName,
    /// The points, in any order.
    pub points: Vec<Point>,
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Points stored now.
    pub inserted: u64,
    /// Points that were already stored (same device, series and timestamp) and were ignored.
    pub duplicates: u64,
}

/// Whose points an aggregate covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AggregateScope {
    /// One device.
    Device {
        /// The tenant.
        tenant: TenantId,
        /// The device.
        device: DeviceId,
    },
    /// Every device currently registered in a group's subtree.
    Subtree {
        /// The subtree's root.
        group: GroupPath,
    },
}

/// An aggregate query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateQuery {
    /// Whose points.
    pub scope: AggregateScope,
    /// Which series.
    pub series: SeriesName,
    /// From this time, inclusive.
    pub from: Timestamp,
    /// To this time, exclusive.
    pub to: Timestamp,
    /// The bucket width (at least one millisecond).
    pub bucket: Duration,
}

/// The statistics of one bucket. Only buckets with points are returned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// The bucket's start (a multiple of the bucket width since the epoch).
    pub start: Timestamp,
    /// How many points.
    pub count: u64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The sum of the values.
    pub sum: f64,
    /// `sum / count`.
    pub mean: f64,
    /// The value at the earliest timestamp (ties across devices: the smallest such value).
    pub first: f64,
    /// The value at the latest timestamp (ties across devices: the largest such value).
    pub last: f64,
}

/// Measurements.
///
/// Bad input (a non-finite value, more points than
/// [`StoreLimits::max_points_per_append`](crate::StoreLimits::max_points_per_append), an empty
/// or reversed range, a zero bucket or too many buckets) is
/// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) or [`TooLarge`](hub_core::ErrorKind::TooLarge)
/// and stores nothing: an append is all or nothing.
pub trait MeasurementStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores points; duplicates of stored points are ignored and counted.
    fn append<'a>(&'a self, batch: &'a [SeriesPoints]) -> BoxFuture<'a, Result<AppendOutcome>>;

    /// The points of one series in `[from, to)`, in time order. The cursor is the last
    /// timestamp returned.
    fn read_range<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        series: &'a SeriesName,
        from: Timestamp,
        to: Timestamp,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Point>>>;

    /// Statistics per bucket, in time order, only for buckets with points.
    fn aggregate<'a>(&'a self, query: &'a AggregateQuery) -> BoxFuture<'a, Result<Vec<Bucket>>>;

    /// The series a device has points in, by name.
    fn list_series<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<SeriesName>>>;

    /// Deletes every point of every tenant older than `before` rounded down to a whole hour (so
    /// the hourly rollups stay exact), and returns how many points were deleted.
    fn delete_before<'a>(&'a self, before: Timestamp) -> BoxFuture<'a, Result<u64>>;
}

/// A measurement upload as devices send it, over HTTP or MQTT: either one sample of several
/// series, or batches of points per series.
///
/// ```
/// use hub_store::MeasurementUpload;
/// // One sample now: {"values": {"temperature": 21.5, "pressure": 1.02}}, optionally with "ts".
/// let sample: MeasurementUpload = serde_json::from_str(r#"{"values": {"temperature": 21.5}}"#)?;
/// // Batches: {"series": {"temperature": [{"ts": "2026-12-02T07:00:00Z", "value": 21.5}]}}.
/// let batch: MeasurementUpload = serde_json::from_str(
///     r#"{"series": {"temperature": [{"ts": "2026-12-02T07:00:00Z", "value": 21.5}]}}"#,
/// )?;
/// # let _ = (sample, batch);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MeasurementUpload {
    /// One sample: a value per series, taken at `ts` (the time of arrival when absent).
    Sample {
        /// When the sample was taken.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<Timestamp>,
        /// A value per series.
        values: std::collections::BTreeMap<SeriesName, f64>,
    },
    /// Points per series.
    Series {
        /// The points of each series, in any order.
        series: std::collections::BTreeMap<SeriesName, Vec<Point>>,
    },
}

impl MeasurementUpload {
    /// Parses an upload, with an error that says what shape is expected.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|_| {
            hub_core::Error::invalid_input(
                "a measurement upload is {\"values\": {\"<series>\": <number>, ...}, \"ts\": \
                 <optional RFC 3339 time>} or {\"series\": {\"<series>\": [{\"ts\": <RFC 3339 \
                 time>, \"value\": <number>}, ...]}}; series names are 1 to 128 characters of \
                 A-Z a-z 0-9 . _ : / -",
            )
        })
    }

    /// The batch to append for `device`; a sample without a time is taken `now`.
    pub fn into_batch(
        self,
        tenant: &TenantId,
        device: &DeviceId,
        now: Timestamp,
    ) -> Vec<SeriesPoints> {
        let entry = |series: SeriesName, points: Vec<Point>| SeriesPoints {
            tenant: tenant.clone(),
            device: device.clone(),
            series,
            points,
        };
        match self {
            MeasurementUpload::Sample { ts, values } => {
                let ts = ts.unwrap_or(now);
                values
                    .into_iter()
                    .map(|(series, value)| entry(series, vec![Point { ts, value }]))
                    .collect()
            }
            MeasurementUpload::Series { series } => series
                .into_iter()
                .map(|(name, points)| entry(name, points))
                .collect(),
        }
    }
}

/// `ts` rounded down to a multiple of `width_ms`.
pub fn bucket_start(ts: i64, width_ms: i64) -> i64 {
    ts - ts.rem_euclid(width_ms)
}
