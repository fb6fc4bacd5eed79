//! The measurement REST API (feature `http`): devices upload, apps read series and statistics.
//!
//! | method and path | who | what |
//! |---|---|---|
//! | `POST /v1/device/measurements` | the device | upload a [`MeasurementUpload`] |
//! | `POST /v1/tenants/{tenant}/devices/{device}/measurements` | a controller with `measurements:write` | upload for a device (gateways, imports) |
//! | `GET /v1/tenants/{tenant}/devices/{device}/series` | `measurements:read` | the device's series |
//! | `GET /v1/tenants/{tenant}/devices/{device}/series/{series}?from=&to=&limit=&after=` | `measurements:read` | points in time order, paged |
//! | `GET /v1/tenants/{tenant}/devices/{device}/series/{series}/stats?from=&to=&bucket=` | `measurements:read` | count, min, max, sum, mean, first, last per bucket |
//! | `GET /v1/tenants/{tenant}/stats/{series}?group=&from=&to=&bucket=` | `measurements:read` on the group | the same across a group subtree |
//!
//! Times are RFC 3339; `to` defaults to now and `from` to [`MeasurementApiConfig::default_range`]
//! before `to`; `bucket` is a duration such as `30s`, `5m`, `1h` or `1d` (default `1h`). Series
//! names containing `/` are percent-encoded in paths (`motor%2F1%2Fcurrent`). Every request passes
//! [`hub_core::authorize`]; a device or group outside the caller's reach is 404.
//!
//! ```
//! use std::sync::Arc;
//! use hub_core::SystemClock;
//! use hub_store::http::{MeasurementApi, MeasurementApiConfig};
//! use hub_store::{memory::MemoryStore, StoreLimits};
//!
//! let stores = MemoryStore::new(StoreLimits::default()).into_stores();
//! let api = MeasurementApi::new(
//!     stores.measurements.clone(),
//!     stores.registry.clone(),
//!     Arc::new(SystemClock),
//!     MeasurementApiConfig::default(),
//! );
//! let router: axum::Router = api.router();
//! # let _ = router;
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use hub_core::http::Json;
use hub_core::{
    Action, Clock, DeviceId, Error, GroupPath, Principal, Resource, Result, TenantId, Timestamp,
    authorize,
};

use crate::measurements::{
    AggregateQuery, AggregateScope, AppendOutcome, Bucket, MeasurementStore, MeasurementUpload,
    Point, SeriesName,
};
use crate::registry::RegistryStore;
use crate::{Page, PageRequest};

/// The limits and defaults of the measurement API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasurementApiConfig {
    /// The largest upload body accepted, in bytes (default 1 MiB).
    pub max_upload_bytes: usize,
    /// The range read when a query gives no `from` (default 24 hours).
    #[serde(with = "millis")]
    pub default_range: Duration,
    /// The points per page when a query gives no `limit` (default 1,000; the store's
    /// `max_page_size` caps it).
    pub default_page_size: u32,
}

impl Default for MeasurementApiConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 1 << 20,
            default_range: Duration::from_secs(24 * 3600),
            default_page_size: 1000,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The measurement API: the stores it reads and writes, and its limits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MeasurementApi {
    measurements: Arc<dyn MeasurementStore>,
    registry: Arc<dyn RegistryStore>,
    clock: Arc<dyn Clock>,
    config: Arc<MeasurementApiConfig>,
}

impl MeasurementApi {
    /// An API over `measurements`, resolving devices' groups through `registry`.
    pub fn new(
        measurements: Arc<dyn MeasurementStore>,
        registry: Arc<dyn RegistryStore>,
        clock: Arc<dyn Clock>,
        config: MeasurementApiConfig,
    ) -> Self {
        Self {
            measurements,
            registry,
            clock,
            config: Arc::new(config),
        }
    }

    /// The routes. Mount them under an authentication layer that puts the caller's
    /// [`Principal`] into the request extensions.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/device/measurements", post(device_upload))
            .route(
                "/v1/tenants/{tenant}/devices/{device}/measurements",
                post(controller_upload),
            )
            .route(
                "/v1/tenants/{tenant}/devices/{device}/series",
                get(list_series),
            )
            .route(
                "/v1/tenants/{tenant}/devices/{device}/series/{series}",
                get(read_points),
            )
            .route(
                "/v1/tenants/{tenant}/devices/{device}/series/{series}/stats",
                get(device_stats),
            )
            .route("/v1/tenants/{tenant}/stats/{series}", get(group_stats))
            .layer(DefaultBodyLimit::max(self.config.max_upload_bytes))
            .layer(axum::middleware::map_response(
                hub_core::http::rejections_as_problems,
            ))
            .with_state(self.clone())
    }

    /// Checks that `principal` may do `action` on the device and returns the device's group.
    async fn device_group(
        &self,
        principal: &Principal,
        action: Action,
        tenant: &TenantId,
        device: &DeviceId,
    ) -> Result<GroupPath> {
        let Some(found) = self.registry.get_device(tenant, device).await? else {
            return Err(Error::not_found(format!("device {device} does not exist")));
        };
        authorize(
            principal,
            action,
            &Resource::device(found.group.clone(), device.clone()),
        )?;
        Ok(found.group)
    }

    async fn store_upload(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        body: &[u8],
    ) -> Result<AppendOutcome> {
        let upload = MeasurementUpload::parse(body)?;
        let batch = upload.into_batch(tenant, device, self.clock.now());
        self.measurements.append(&batch).await
    }

    fn range(&self, q: &RangeQuery) -> (Timestamp, Timestamp) {
        // `to` is exclusive: by default it lies just after now, so a point taken now is included.
        let to =
            q.to.unwrap_or_else(|| self.clock.now().saturating_add(Duration::from_millis(1)));
        let from = q
            .from
            .unwrap_or_else(|| to.saturating_sub(self.config.default_range));
        (from, to)
    }
}

/// What an upload stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadResult {
    /// Points stored now.
    pub inserted: u64,
    /// Points already stored (same series and time), ignored: re-uploads are harmless.
    pub duplicates: u64,
}

impl From<AppendOutcome> for UploadResult {
    fn from(o: AppendOutcome) -> Self {
        Self {
            inserted: o.inserted,
            duplicates: o.duplicates,
        }
    }
}

/// A time range, from the query string.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// From this time, inclusive (RFC 3339); default: `to` minus the configured range.
    #[param(value_type = Option<String>)]
    pub from: Option<Timestamp>,
    /// To this time, exclusive (RFC 3339); default: just after now, so now is included.
    #[param(value_type = Option<String>)]
    pub to: Option<Timestamp>,
}

/// Paging of points.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PointsQuery {
    /// At most this many points.
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// Statistics parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// The bucket width: a number and a unit, `ms`, `s`, `m`, `h` or `d` (default `1h`).
    pub bucket: Option<String>,
    /// For group statistics: the subtree's root below the tenant (`plant-1/line-2`); the whole
    /// tenant when absent.
    pub group: Option<String>,
}

/// A page of points.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PointsPage {
    /// The points, in time order.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Point>,
    /// The cursor of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl From<Page<Point>> for PointsPage {
    fn from(p: Page<Point>) -> Self {
        Self {
            items: p.items,
            next: p.next,
        }
    }
}

/// The series of a device.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeriesList {
    /// The series names, sorted.
    #[schema(value_type = Vec<String>)]
    pub series: Vec<SeriesName>,
}

/// Statistics per bucket.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    /// The series.
    #[schema(value_type = String)]
    pub series: SeriesName,
    /// The bucket width in milliseconds.
    pub bucket_ms: u64,
    /// The buckets with points, in time order: start, count, min, max, sum, mean, first, last.
    #[schema(value_type = Vec<Object>)]
    pub buckets: Vec<Bucket>,
}

/// Parses a bucket width such as `30s`, `5m`, `1h`, `1d` or `250ms`.
pub fn parse_bucket(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad_bucket(s))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad_bucket(s)),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(bad_bucket(s)),
    }
}

fn bad_bucket(s: &str) -> Error {
    Error::invalid_input(format!(
        "bucket {s:?} is not a positive duration such as 30s, 5m, 1h or 1d"
    ))
}

fn series_name(s: &str) -> Result<SeriesName> {
    SeriesName::new(s)
}

/// Upload measurements as the device.
#[utoipa::path(post, path = "/v1/device/measurements", tag = "measurements",
    request_body(content = Object, description = "a MeasurementUpload: {\"values\": {...}, \"ts\"?} or {\"series\": {...}}"),
    responses((status = 200, body = UploadResult), (status = 400, description = "problem+json"),
        (status = 401, description = "problem+json"), (status = 413, description = "problem+json")))]
async fn device_upload(
    State(api): State<MeasurementApi>,
    principal: Principal,
    body: Bytes,
) -> Result<Json<UploadResult>> {
    let Principal::Device(device) = &principal else {
        return Err(Error::forbidden(
            "only devices upload here; controllers use /v1/tenants/{tenant}/devices/{device}/measurements",
        ));
    };
    authorize(
        &principal,
        Action::WriteMeasurements,
        &Resource::device(device.group.clone(), device.id.clone()),
    )?;
    let outcome = api
        .store_upload(&device.tenant(), &device.id, &body)
        .await?;
    Ok(Json(outcome.into()))
}

/// Upload measurements for a device (a gateway or an import).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/devices/{device}/measurements", tag = "measurements",
    params(("tenant" = String, Path), ("device" = String, Path)),
    request_body(content = Object, description = "a MeasurementUpload"),
    responses((status = 200, body = UploadResult), (status = 404, description = "problem+json")))]
async fn controller_upload(
    State(api): State<MeasurementApi>,
    principal: Principal,
    Path((tenant, device)): Path<(TenantId, DeviceId)>,
    body: Bytes,
) -> Result<Json<UploadResult>> {
    api.device_group(&principal, Action::WriteMeasurements, &tenant, &device)
        .await?;
    Ok(Json(
        api.store_upload(&tenant, &device, &body).await?.into(),
    ))
}

/// The series a device has points in.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/devices/{device}/series", tag = "measurements",
    params(("tenant" = String, Path), ("device" = String, Path)),
    responses((status = 200, body = SeriesList), (status = 404, description = "problem+json")))]
async fn list_series(
    State(api): State<MeasurementApi>,
    principal: Principal,
    Path((tenant, device)): Path<(TenantId, DeviceId)>,
) -> Result<Json<SeriesList>> {
    api.device_group(&principal, Action::ReadMeasurements, &tenant, &device)
        .await?;
    let series = api.measurements.list_series(&tenant, &device).await?;
    Ok(Json(SeriesList { series }))
}

/// Points of a series in a time range, in time order.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/devices/{device}/series/{series}", tag = "measurements",
    params(("tenant" = String, Path), ("device" = String, Path), ("series" = String, Path), RangeQuery, PointsQuery),
    responses((status = 200, body = PointsPage), (status = 404, description = "problem+json")))]
async fn read_points(
    State(api): State<MeasurementApi>,
    principal: Principal,
    Path((tenant, device, series)): Path<(TenantId, DeviceId, String)>,
    Query(range): Query<RangeQuery>,
    Query(paging): Query<PointsQuery>,
) -> Result<Json<PointsPage>> {
    api.device_group(&principal, Action::ReadMeasurements, &tenant, &device)
        .await?;
    let series = series_name(&series)?;
    let (from, to) = api.range(&range);
    let page = PageRequest {
        limit: paging.limit.unwrap_or(api.config.default_page_size),
        after: paging.after,
    };
    let points = api
        .measurements
        .read_range(&tenant, &device, &series, from, to, page)
        .await?;
    Ok(Json(points.into()))
}

/// Statistics of one device's series per time bucket.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/devices/{device}/series/{series}/stats", tag = "measurements",
    params(("tenant" = String, Path), ("device" = String, Path), ("series" = String, Path), RangeQuery, StatsQuery),
    responses((status = 200, body = Stats), (status = 400, description = "problem+json"), (status = 404, description = "problem+json")))]
async fn device_stats(
    State(api): State<MeasurementApi>,
    principal: Principal,
    Path((tenant, device, series)): Path<(TenantId, DeviceId, String)>,
    Query(range): Query<RangeQuery>,
    Query(stats): Query<StatsQuery>,
) -> Result<Json<Stats>> {
    api.device_group(&principal, Action::ReadMeasurements, &tenant, &device)
        .await?;
    let scope = AggregateScope::Device { tenant, device };
    aggregate(&api, scope, &series, &range, &stats).await
}

/// Statistics of a series across the devices of a group subtree, per time bucket.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/stats/{series}", tag = "measurements",
    params(("tenant" = String, Path), ("series" = String, Path), RangeQuery, StatsQuery),
    responses((status = 200, body = Stats), (status = 400, description = "problem+json"), (status = 404, description = "problem+json")))]
async fn group_stats(
    State(api): State<MeasurementApi>,
    principal: Principal,
    Path((tenant, series)): Path<(TenantId, String)>,
    Query(range): Query<RangeQuery>,
    Query(stats): Query<StatsQuery>,
) -> Result<Json<Stats>> {
    let root = match stats.group.as_deref().map(str::trim) {
        None | Some("") => tenant.to_string(),
        Some(below) => format!("{tenant}/{}", below.trim_matches('/')),
    };
    let group: GroupPath = root
        .parse()
        .map_err(|e| Error::invalid_input(format!("group: {e}")))?;
    authorize(
        &principal,
        Action::ReadMeasurements,
        &Resource::group(group.clone()),
    )?;
    aggregate(
        &api,
        AggregateScope::Subtree { group },
        &series,
        &range,
        &stats,
    )
    .await
}

async fn aggregate(
    api: &MeasurementApi,
    scope: AggregateScope,
    series: &str,
    range: &RangeQuery,
    stats: &StatsQuery,
) -> Result<Json<Stats>> {
    let series = series_name(series)?;
    let bucket = parse_bucket(stats.bucket.as_deref().unwrap_or("1h"))?;
    let (from, to) = api.range(range);
    let buckets = api
        .measurements
        .aggregate(&AggregateQuery {
            scope,
            series: series.clone(),
            from,
            to,
            bucket,
        })
        .await?;
    Ok(Json(Stats {
        series,
        bucket_ms: u64::try_from(bucket.as_millis()).unwrap_or(u64::MAX),
        buckets,
    }))
}

/// The OpenAPI description of the routes of [`MeasurementApi::router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;

    #[derive(OpenApi)]
    #[openapi(
        paths(
            device_upload,
            controller_upload,
            list_series,
            read_points,
            device_stats,
            group_stats
        ),
        components(schemas(UploadResult, PointsPage, SeriesList, Stats)),
        tags((name = "measurements", description = "Time series uploaded by devices"))
    )]
    struct Doc;

    Doc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_widths() {
        assert_eq!(parse_bucket("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_bucket("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_bucket("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_bucket("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_bucket("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "0s", "h", "1w", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_openapi_description_lists_every_route() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/v1/device/measurements",
            "/v1/tenants/{tenant}/devices/{device}/measurements",
            "/v1/tenants/{tenant}/devices/{device}/series",
            "/v1/tenants/{tenant}/devices/{device}/series/{series}",
            "/v1/tenants/{tenant}/devices/{device}/series/{series}/stats",
            "/v1/tenants/{tenant}/stats/{series}",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
    }
}
