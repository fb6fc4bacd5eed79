//! The HTTP surface of the job service (feature `http`): the REST Job API for controllers, the
//! device pull API and the SSE event stream, as one axum [`Router`] ([`router`]) and its OpenAPI
//! description ([`openapi`]).
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | `/v1/tenants/{tenant}/jobs` | create ([`CreateJobBody`]); 201 with `Location` and `ETag`; a repeated `Idempotency-Key` answers 200 with the first job |
//! | GET | `/v1/tenants/{tenant}/jobs` | list, paged (`limit`, `after`), filtered by `group` (subtree), `state` (comma-separated), `device`, `bulk` |
//! | GET | `/v1/tenants/{tenant}/jobs/{job}` | one job ([`JobView`]) with its `ETag` |
//! | DELETE | `/v1/tenants/{tenant}/jobs/{job}` | remove a queued or finished job (`If-Match`); 200 with the tombstone |
//! | POST | `/v1/tenants/{tenant}/jobs/{job}/cancel` | cancel (`{"force": false}`, `If-Match`) |
//! | PUT | `/v1/tenants/{tenant}/devices/{device}/control` | take or renew exclusive control (`{"duration_ms": N}`) |
//! | DELETE | `/v1/tenants/{tenant}/devices/{device}/control` | release it; 204 |
//! | POST / GET | `/v1/tenants/{tenant}/bulk-jobs` | create a bulk job ([`CreateBulkJob`](crate::bulk::CreateBulkJob)) / list them (`under`, `limit`, `after`); needs [`JobsHttp::with_bulk`] |
//! | GET | `/v1/tenants/{tenant}/bulk-jobs/{bulk}` | one bulk job with its `ETag` |
//! | GET | `/v1/tenants/{tenant}/bulk-jobs/{bulk}/summary` | children per state |
//! | POST | `/v1/tenants/{tenant}/bulk-jobs/{bulk}/cancel` | stop the rollout, cancel queued children (`If-Match`) |
//! | GET | `/v1/tenants/{tenant}/events` | server-sent events (`?kinds=`), see [`events`](crate::events) |
//! | POST | `/v1/device/jobs/next` | device: claim the next job (`?lane=&wait=<seconds>`); 200 with the job or 204 |
//! | POST | `/v1/device/jobs/{job}` | device: report ([`DeviceReportBody`]); 200 with the job as the device sees it |
//!
//! Every handler takes the caller's [`Principal`] (put into the request by the authentication
//! layer; 401 without one) and calls the [`JobService`], which applies `hub_core::authorize`.
//! Errors are `application/problem+json`; a job or device outside the caller's reach, in
//! another tenant or named by a malformed id is 404.
//!
//! Long polls wait with the service's [`Sleep`]; when the application set none,
//! [`JobsHttp::new`] installs [`TokioSleep`].
//!
//! Wiring, in the application:
//!
//! ```
//! use std::sync::Arc;
//! use hub_jobs::JobService;
//! use hub_jobs::events::EventBus;
//! use hub_jobs::http::{HttpConfig, JobsHttp};
//!
//! /// `service` was built with `Arc::new(bus.clone())` as its event sink.
//! fn job_api(service: JobService, bus: EventBus) -> (axum::Router, utoipa::openapi::OpenApi) {
//!     let config = HttpConfig { max_wait: std::time::Duration::from_secs(20), ..HttpConfig::default() };
//!     let state = JobsHttp::new(service).with_events(bus).with_config(config);
//!     (hub_jobs::http::router(state), hub_jobs::http::openapi())
//! }
//! ```

mod bulk;
mod extract;
mod sse;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hub_core::http::{IfMatch, Json, with_etag};
use hub_core::{
    BoxFuture, DeviceId, DeviceJobs, Error, GroupPath, JobId, JobState, Principal, Result, TenantId,
};
use hub_store::{JobFilter, PageRequest};
use serde::Deserialize;
use utoipa::OpenApi;

use crate::events::EventBus;
use crate::service::{CreateJob, JobService, Sleep};
use extract::{OptionalJson, Params, Segments};
pub use view::{
    CancelBody, ControlBody, ControlView, CreateJobBody, DeviceJobView, DeviceReportBody, JobPage,
    JobView,
};

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The limits of the HTTP surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// The longest a device's long poll (`wait=`) may wait. Default 30 s.
    pub max_wait: Duration,
    /// A control lease's duration when the request names none. Default 5 minutes.
    pub default_control: Duration,
    /// The longest control lease. Default 1 hour.
    pub max_control: Duration,
    /// How often an idle event stream sends a keep-alive comment. Default 15 s.
    pub keep_alive: Duration,
    /// The largest page of a job listing. Default 500.
    pub max_page: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(30),
            default_control: Duration::from_secs(300),
            max_control: Duration::from_secs(3600),
            keep_alive: Duration::from_secs(15),
            max_page: 500,
        }
    }
}

/// What the routes share: the job service, the event bus for SSE and the limits.
#[derive(Debug, Clone)]
pub struct JobsHttp {
    service: JobService,
    events: Option<EventBus>,
    bulk: Option<crate::bulk::BulkJobs>,
    config: HttpConfig,
}

/// Sleeps with tokio's timer: the [`Sleep`] for long polls in a tokio application.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleep;

impl Sleep for TokioSleep {
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

impl JobsHttp {
    /// The routes' state over `service`, with the default limits and no event stream. A service
    /// without a [`Sleep`] gets [`TokioSleep`], so that long polls wait.
    pub fn new(service: JobService) -> Self {
        let service = if service.has_sleep() {
            service
        } else {
            service.with_sleep(Arc::new(TokioSleep))
        };
        Self {
            service,
            events: None,
            bulk: None,
            config: HttpConfig::default(),
        }
    }

    /// Serves the bulk-job routes (`/v1/tenants/{tenant}/bulk-jobs…`) from `bulk`; without it
    /// they answer 404.
    pub fn with_bulk(mut self, bulk: crate::bulk::BulkJobs) -> Self {
        self.bulk = Some(bulk);
        self
    }

    /// Serves `/v1/tenants/{tenant}/events` from `bus` (without one the route answers 404).
    /// Publish the service's events into the same bus.
    pub fn with_events(mut self, bus: EventBus) -> Self {
        self.events = Some(bus);
        self
    }

    /// Sets the limits.
    pub fn with_config(mut self, config: HttpConfig) -> Self {
        self.config = config;
        self
    }
}

type St = State<Arc<JobsHttp>>;

/// The Job API's routes, ready to be merged into the application's router (under the
/// authentication layer that inserts the [`Principal`]).
pub fn router(state: JobsHttp) -> Router {
    Router::new()
        .route("/v1/tenants/{tenant}/jobs", post(create_job).get(list_jobs))
        .route(
            "/v1/tenants/{tenant}/jobs/{job}",
            get(get_job).delete(remove_job),
        )
        .route("/v1/tenants/{tenant}/jobs/{job}/cancel", post(cancel_job))
        .route(
            "/v1/tenants/{tenant}/devices/{device}/control",
            put(acquire_control).delete(release_control),
        )
        .route(
            "/v1/tenants/{tenant}/bulk-jobs",
            post(bulk::create).get(bulk::list),
        )
        .route("/v1/tenants/{tenant}/bulk-jobs/{bulk}", get(bulk::get))
        .route(
            "/v1/tenants/{tenant}/bulk-jobs/{bulk}/summary",
            get(bulk::summary),
        )
        .route(
            "/v1/tenants/{tenant}/bulk-jobs/{bulk}/cancel",
            post(bulk::cancel),
        )
        .route("/v1/tenants/{tenant}/events", get(sse::events))
        .route("/v1/device/jobs/next", post(device_next))
        .route("/v1/device/jobs/{job}", post(device_report))
        .with_state(Arc::new(state))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        create_job,
        list_jobs,
        get_job,
        remove_job,
        cancel_job,
        acquire_control,
        release_control,
        bulk::create,
        bulk::list,
        bulk::get,
        bulk::summary,
        bulk::cancel,
        sse::events,
        device_next,
        device_report
    ),
    components(schemas(
        JobView,
        JobPage,
        DeviceJobView,
        ControlView,
        CreateJobBody,
        CancelBody,
        ControlBody,
        DeviceReportBody
    )),
    tags((name = "jobs", description = "The Job API: jobs for devices, exclusive control, events, and the device pull API"))
)]
struct ApiDoc;

/// The OpenAPI description of exactly the routes [`router`] mounts.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

// Ids in paths: a malformed one cannot name anything that exists, so it is a 404 like any other
// unknown resource.
fn tenant_id(s: &str) -> Result<TenantId> {
    s.parse()
        .map_err(|_| Error::not_found(format!("tenant {s:?} does not exist")))
}

fn job_id(s: &str) -> Result<JobId> {
    JobId::parse(s).map_err(|_| Error::not_found(format!("job {s:?} does not exist")))
}

fn device_id(s: &str) -> Result<DeviceId> {
    s.parse()
        .map_err(|_| Error::not_found(format!("device {s:?} does not exist")))
}

fn job_response(status: StatusCode, job: &hub_store::JobRecord) -> Response {
    with_etag(job.version, (status, Json(JobView::from(job))))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// The group anchoring a principal's reach (`None`: a device, or a hub-wide service).
fn anchor(principal: &Principal) -> Option<&GroupPath> {
    match principal {
        Principal::User(u) => Some(&u.group),
        Principal::App(a) => Some(&a.user().group),
        Principal::Service(s) => s.root.as_ref(),
        Principal::Device(_) => None,
    }
}

/// The device's group: as named, or as registered. Named groups must lie in the path's tenant.
async fn device_group(
    http: &JobsHttp,
    tenant: &TenantId,
    device: &DeviceId,
    named: Option<GroupPath>,
) -> Result<GroupPath> {
    if let Some(g) = named {
        if g.tenant() != *tenant {
            return Err(Error::not_found("no such device"));
        }
        return Ok(g);
    }
    match http.service.registry().get_device(tenant, device).await? {
        Some(d) => Ok(d.group),
        None => Err(Error::not_found("no such device")),
    }
}

/// Creates a job.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/jobs",
    tag = "jobs",
    params(
        ("tenant" = String, Path, description = "The tenant"),
        ("Idempotency-Key" = Option<String>, Header, description = "Repeating a creation with the same key returns the first job (200)")
    ),
    request_body = CreateJobBody,
    responses(
        (status = 201, description = "Created; `Location` and `ETag` set", body = JobView),
        (status = 200, description = "The job created earlier with this Idempotency-Key", body = JobView),
        (status = 400, description = "Invalid body or options"),
        (status = 401, description = "No credentials"),
        (status = 404, description = "No such device within reach"),
        (status = 409, description = "Another controller holds the device, or the key was used for a different job"),
        (status = 503, description = "The delivery policy needs the device online and it is not")
    )
)]
async fn create_job(
    State(http): St,
    principal: Principal,
    Segments(tenant): Segments<String>,
    headers: HeaderMap,
    Json(body): Json<CreateJobBody>,
) -> Result<Response> {
    let tenant = tenant_id(&tenant)?;
    let idempotency_key = idempotency_key(&headers)?;
    let group = device_group(&http, &tenant, &body.device, body.group).await?;
    let outcome = http
        .service
        .create(
            &principal,
            CreateJob {
                device: body.device,
                group,
                lane: body.lane,
                document: body.document,
                options: body.options,
                idempotency_key,
            },
        )
        .await?;
    let job = &outcome.job;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = job_response(status, job);
    let location = format!("/v1/tenants/{}/jobs/{}", tenant, job.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, v);
    }
    Ok(response)
}

/// The query of a job listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs in this group's subtree (default: everything the caller reaches in the tenant).
    group: Option<String>,
    /// Only jobs in these states, comma-separated (e.g. `queued,in_progress`).
    state: Option<String>,
    /// Only this device's jobs.
    device: Option<String>,
    /// Only this bulk job's jobs.
    bulk: Option<String>,
    /// The most jobs per page.
    limit: Option<u32>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

/// Lists jobs.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/jobs",
    tag = "jobs",
    params(("tenant" = String, Path, description = "The tenant"), ListQuery),
    responses(
        (status = 200, description = "One page of jobs, oldest first", body = JobPage),
        (status = 400, description = "Invalid filter or cursor"),
        (status = 401, description = "No credentials"),
        (status = 404, description = "The group is outside the caller's reach")
    )
)]
async fn list_jobs(
    State(http): St,
    principal: Principal,
    Segments(tenant): Segments<String>,
    Params(q): Params<ListQuery>,
) -> Result<Json<JobPage>> {
    let tenant = tenant_id(&tenant)?;
    let root = match q.group.as_deref() {
        // The caller's whole reach within the tenant.
        None | Some("") => anchor(&principal)
            .filter(|g| g.tenant() == tenant)
            .cloned()
            .unwrap_or_else(|| GroupPath::root(&tenant)),
        Some(g) => g
            .parse::<GroupPath>()
            .ok()
            .filter(|g| g.tenant() == tenant)
            .ok_or_else(|| Error::not_found(format!("group {g:?} does not exist")))?,
    };
    let mut filter = JobFilter::default();
    if let Some(states) = q.state.as_deref() {
        for name in states.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            filter.states.push(
                JobState::from_name(name)
                    .ok_or_else(|| Error::invalid_input(format!("{name:?} is not a job state")))?,
            );
        }
    }
    if let Some(d) = q.device.as_deref().filter(|d| !d.is_empty()) {
        filter.device = Some(
            d.parse()
                .map_err(|_| Error::invalid_input(format!("{d:?} is not a device id")))?,
        );
    }
    if let Some(b) = q.bulk.as_deref().filter(|b| !b.is_empty()) {
        filter.bulk = Some(
            hub_core::BulkJobId::parse(b)
                .map_err(|_| Error::invalid_input(format!("{b:?} is not a bulk job id")))?,
        );
    }
    let limit = match q.limit {
        None | Some(0) => http.config.max_page,
        Some(n) => n.min(http.config.max_page),
    };
    let page = http
        .service
        .list(
            &principal,
            &root,
            &filter,
            PageRequest {
                limit,
                after: q.after,
            },
        )
        .await?;
    Ok(Json(page.into()))
}

/// Reads one job.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/jobs/{job}",
    tag = "jobs",
    params(("tenant" = String, Path), ("job" = String, Path)),
    responses(
        (status = 200, description = "The job; `ETag` is its version", body = JobView),
        (status = 401, description = "No credentials"),
        (status = 404, description = "No such job within reach")
    )
)]
async fn get_job(
    State(http): St,
    principal: Principal,
    Segments((tenant, job)): Segments<(String, String)>,
) -> Result<Response> {
    let (tenant, job) = (tenant_id(&tenant)?, job_id(&job)?);
    let job = http.service.get(&principal, &tenant, &job).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Removes a queued or finished job, leaving a `removed` tombstone.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/jobs/{job}",
    tag = "jobs",
    params(
        ("tenant" = String, Path), ("job" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag the job was read with")
    ),
    responses(
        (status = 200, description = "The tombstone", body = JobView),
        (status = 404, description = "No such job within reach"),
        (status = 409, description = "The job is active: cancel it first"),
        (status = 412, description = "The job changed since it was read")
    )
)]
async fn remove_job(
    State(http): St,
    principal: Principal,
    Segments((tenant, job)): Segments<(String, String)>,
    IfMatch(if_match): IfMatch,
) -> Result<Response> {
    let (tenant, job) = (tenant_id(&tenant)?, job_id(&job)?);
    let job = http
        .service
        .remove(&principal, &tenant, &job, if_match)
        .await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Cancels a job: a queued one at once, an active one by asking the device, or at once with
/// `force`.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/jobs/{job}/cancel",
    tag = "jobs",
    params(
        ("tenant" = String, Path), ("job" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag the job was read with")
    ),
    request_body(content = Option<CancelBody>, description = "May be empty"),
    responses(
        (status = 200, description = "The job after the cancel request", body = JobView),
        (status = 404, description = "No such job within reach"),
        (status = 409, description = "The job has finished"),
        (status = 412, description = "The job changed since it was read")
    )
)]
async fn cancel_job(
    State(http): St,
    principal: Principal,
    Segments((tenant, job)): Segments<(String, String)>,
    IfMatch(if_match): IfMatch,
    OptionalJson(body): OptionalJson<CancelBody>,
) -> Result<Response> {
    let (tenant, job) = (tenant_id(&tenant)?, job_id(&job)?);
    let job = http
        .service
        .cancel(&principal, &tenant, &job, body.force, if_match)
        .await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Takes or renews exclusive control of a device.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/devices/{device}/control",
    tag = "jobs",
    params(("tenant" = String, Path), ("device" = String, Path)),
    request_body(content = Option<ControlBody>, description = "May be empty"),
    responses(
        (status = 200, description = "The lease", body = ControlView),
        (status = 404, description = "No such device within reach"),
        (status = 409, description = "Another controller holds the device")
    )
)]
async fn acquire_control(
    State(http): St,
    principal: Principal,
    Segments((tenant, device)): Segments<(String, String)>,
    OptionalJson(body): OptionalJson<ControlBody>,
) -> Result<Json<ControlView>> {
    let (tenant, device) = (tenant_id(&tenant)?, device_id(&device)?);
    let duration = body
        .duration_ms
        .map_or(http.config.default_control, Duration::from_millis)
        .min(http.config.max_control);
    if duration.is_zero() {
        return Err(Error::invalid_input("duration_ms must be positive"));
    }
    let group = device_group(&http, &tenant, &device, None).await?;
    let lease = http
        .service
        .acquire_control(&principal, &group, &device, duration)
        .await?;
    Ok(Json(lease.into()))
}

/// Releases exclusive control of a device.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/devices/{device}/control",
    tag = "jobs",
    params(("tenant" = String, Path), ("device" = String, Path)),
    responses(
        (status = 204, description = "Released (or not held by the caller)"),
        (status = 404, description = "No such device within reach")
    )
)]
async fn release_control(
    State(http): St,
    principal: Principal,
    Segments((tenant, device)): Segments<(String, String)>,
) -> Result<StatusCode> {
    let (tenant, device) = (tenant_id(&tenant)?, device_id(&device)?);
    let group = device_group(&http, &tenant, &device, None).await?;
    http.service
        .release_control(&principal, &group, &device)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of the device's long poll.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct NextQuery {
    /// The lane (`default` when absent).
    lane: Option<String>,
    /// How many seconds to wait for a job when none is claimable now (0 when absent), cut to the
    /// hub's maximum.
    wait: Option<u64>,
}

/// Device: claims the next job of a lane, waiting a bounded time for one.
#[utoipa::path(
    post,
    path = "/v1/device/jobs/next",
    tag = "jobs",
    params(NextQuery),
    responses(
        (status = 200, description = "The job, delivered to the device (again with the same execution when it was delivered and not started)", body = DeviceJobView),
        (status = 204, description = "No job within the wait"),
        (status = 401, description = "No credentials"),
        (status = 403, description = "Not a device")
    )
)]
async fn device_next(
    State(http): St,
    principal: Principal,
    Params(q): Params<NextQuery>,
) -> Result<Response> {
    let lane = q.lane.as_deref().filter(|l| !l.is_empty());
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(http.config.max_wait);
    let job = if wait.is_zero() {
        http.service.claim_next(&principal, lane).await?
    } else {
        http.service.wait_next(&principal, lane, wait).await?
    };
    Ok(match job {
        Some(job) => Json(DeviceJobView::from(crate::device::device_job(&job))).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Device: reports on a job it holds.
#[utoipa::path(
    post,
    path = "/v1/device/jobs/{job}",
    tag = "jobs",
    params(("job" = String, Path)),
    request_body = DeviceReportBody,
    responses(
        (status = 200, description = "The job after the report (a repeated report answers the job as it is)", body = DeviceJobView),
        (status = 400, description = "Invalid report"),
        (status = 404, description = "Not this device's job"),
        (status = 409, description = "Illegal transition, stale execution or a conflicting result")
    )
)]
async fn device_report(
    State(http): St,
    principal: Principal,
    Segments(job): Segments<String>,
    Json(body): Json<DeviceReportBody>,
) -> Result<Json<DeviceJobView>> {
    let job = job_id(&job)?;
    let dj =
        DeviceJobs::report(&http.service, &principal, &job, body.execution, body.report).await?;
    Ok(Json(dj.into()))
}
