//! The bulk-job routes: one job document rolled out to a device list or a group subtree.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hub_core::http::{IfMatch, Json, with_etag};
use hub_core::{BulkJobId, Error, GroupPath, Principal, Result};
use hub_store::PageRequest;
use serde::{Deserialize, Serialize};

use super::extract::{Params, Segments};
use super::{JobsHttp, anchor, tenant_id};
use crate::bulk::{BulkJob, BulkJobs, BulkSummary, CreateBulkJob};

type St = State<Arc<JobsHttp>>;

fn bulk_jobs(http: &JobsHttp) -> Result<&BulkJobs> {
    http.bulk
        .as_ref()
        .ok_or_else(|| Error::not_found("bulk jobs are not enabled on this hub"))
}

fn bulk_id(s: &str) -> Result<BulkJobId> {
    BulkJobId::parse(s).map_err(|_| Error::not_found(format!("bulk job {s:?} does not exist")))
}

fn bulk_response(status: StatusCode, job: BulkJob) -> Response {
    with_etag(job.version, (status, Json(job)))
}

/// Creates a bulk job: its first batch of children starts before the answer.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/bulk-jobs", tag = "bulk-jobs",
    params(("tenant" = String, Path, description = "The tenant")),
    request_body(content = Object, description = "CreateBulkJob: group, targets (a device list or the group's subtree, optionally continuous), lane, document, options, rollout (rate, abort criteria, windows)"),
    responses(
        (status = 201, description = "Created; `Location` and `ETag` set; body: the bulk job"),
        (status = 400, description = "Invalid request"),
        (status = 404, description = "The group or a device is not within reach")))]
pub(super) async fn create(
    State(http): St,
    principal: Principal,
    Segments(tenant): Segments<String>,
    Json(body): Json<CreateBulkJob>,
) -> Result<Response> {
    let tenant = tenant_id(&tenant)?;
    if body.group.tenant() != tenant {
        return Err(Error::not_found("no such group"));
    }
    let job = bulk_jobs(&http)?.create(&principal, body).await?;
    let location = format!("/v1/tenants/{tenant}/bulk-jobs/{}", job.id);
    let mut response = bulk_response(StatusCode::CREATED, job);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, v);
    }
    Ok(response)
}

/// The query of a bulk-job listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// The subtree's root (`acme/plant-1`); the caller's whole reach in the tenant by default.
    under: Option<String>,
    /// At most this many.
    limit: Option<u32>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

/// A page of bulk jobs.
#[derive(Debug, Serialize)]
pub(super) struct BulkPage {
    items: Vec<BulkJob>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The bulk jobs of a subtree, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/bulk-jobs", tag = "bulk-jobs",
    params(("tenant" = String, Path, description = "The tenant"), ListQuery),
    responses((status = 200, description = "`{items, next}`"), (status = 404, description = "Not within reach")))]
pub(super) async fn list(
    State(http): St,
    principal: Principal,
    Segments(tenant): Segments<String>,
    Params(q): Params<ListQuery>,
) -> Result<Json<BulkPage>> {
    let tenant = tenant_id(&tenant)?;
    let root = match q.under.as_deref() {
        Some(path) => path
            .parse::<GroupPath>()
            .map_err(|e| Error::invalid_input(format!("under: {e}")))?,
        None => match anchor(&principal) {
            Some(g) if g.tenant() == tenant => g.clone(),
            _ => GroupPath::root(&tenant),
        },
    };
    if root.tenant() != tenant {
        return Err(Error::not_found("no such group"));
    }
    let limit = q
        .limit
        .unwrap_or(http.config.max_page)
        .min(http.config.max_page);
    let page = bulk_jobs(&http)?
        .list(
            &principal,
            &root,
            PageRequest {
                limit,
                after: q.after,
            },
        )
        .await?;
    Ok(Json(BulkPage {
        items: page.items,
        next: page.next,
    }))
}

/// One bulk job, with its `ETag`.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/bulk-jobs/{bulk}", tag = "bulk-jobs",
    params(("tenant" = String, Path), ("bulk" = String, Path)),
    responses((status = 200, description = "The bulk job"), (status = 404, description = "Not within reach")))]
pub(super) async fn get(
    State(http): St,
    principal: Principal,
    Segments((tenant, id)): Segments<(String, String)>,
) -> Result<Response> {
    let (tenant, id) = (tenant_id(&tenant)?, bulk_id(&id)?);
    let job = bulk_jobs(&http)?.get(&principal, &tenant, &id).await?;
    Ok(bulk_response(StatusCode::OK, job))
}

/// How many children are in each state.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/bulk-jobs/{bulk}/summary", tag = "bulk-jobs",
    params(("tenant" = String, Path), ("bulk" = String, Path)),
    responses((status = 200, description = "total, targeted, pending, refused, children per state"), (status = 404, description = "Not within reach")))]
pub(super) async fn summary(
    State(http): St,
    principal: Principal,
    Segments((tenant, id)): Segments<(String, String)>,
) -> Result<Json<BulkSummary>> {
    let (tenant, id) = (tenant_id(&tenant)?, bulk_id(&id)?);
    Ok(Json(
        bulk_jobs(&http)?.summary(&principal, &tenant, &id).await?,
    ))
}

/// Cancels a bulk job: no more children start and its queued children are canceled.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/bulk-jobs/{bulk}/cancel", tag = "bulk-jobs",
    params(("tenant" = String, Path), ("bulk" = String, Path),
        ("If-Match" = Option<String>, Header, description = "The ETag the bulk job was read with")),
    responses((status = 200, description = "The canceled bulk job"), (status = 409, description = "Already completed or aborted"),
        (status = 412, description = "Stale If-Match")))]
pub(super) async fn cancel(
    State(http): St,
    principal: Principal,
    Segments((tenant, id)): Segments<(String, String)>,
    IfMatch(if_match): IfMatch,
) -> Result<Response> {
    let (tenant, id) = (tenant_id(&tenant)?, bulk_id(&id)?);
    let job = bulk_jobs(&http)?
        .cancel(&principal, &tenant, &id, if_match)
        .await?;
    Ok(bulk_response(StatusCode::OK, job).into_response())
}
