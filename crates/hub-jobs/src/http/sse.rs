//! `GET /v1/tenants/{tenant}/events`: the caller's view of the event bus as server-sent events.
//!
//! Each event is sent with the SSE event name of its kind in snake_case (`job_state_changed`,
//! `device_connected`, ...) and the `hub_core::Event` JSON as data. Only events of the path's
//! tenant on devices (or groups) the caller may read jobs of (`hub_core::authorize` with
//! `ReadJobs`) are sent. `?kinds=a,b` keeps only those kinds. An idle stream carries keep-alive
//! comments. A subscriber that fell behind the bus receives an event named `lagged` with data
//! `{"missed": N}`: it missed N events and should re-read what it follows.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use hub_core::{Action, Error, Event, EventKind, Principal, Resource, Result, TenantId, authorize};
use serde::Deserialize;

use super::extract::{Params, Segments};
use super::{JobsHttp, tenant_id};
use crate::events::{Received, Subscriber};

/// The query of the event stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only these event kinds, comma-separated (e.g. `job_state_changed`).
    kinds: Option<String>,
}

/// Which events one subscriber sees.
#[derive(Debug)]
struct Filter {
    principal: Principal,
    tenant: TenantId,
    kinds: Option<Vec<String>>,
}

impl Filter {
    /// The SSE frame for `event`, if the subscriber may and wants to see it.
    fn frame(&self, event: &Event) -> Option<SseEvent> {
        if event.group.tenant() != self.tenant {
            return None;
        }
        let resource = match event_device(&event.kind) {
            Some(d) => Resource::device(event.group.clone(), d.clone()),
            None => Resource::group(event.group.clone()),
        };
        authorize(&self.principal, Action::ReadJobs, &resource).ok()?;
        let json = serde_json::to_value(event).ok()?;
        let kind = json.get("type")?.as_str()?.to_owned();
        if let Some(kinds) = &self.kinds
            && !kinds.contains(&kind)
        {
            return None;
        }
        Some(SseEvent::default().event(kind).data(json.to_string()))
    }
}

/// The device an event is about, if any.
fn event_device(kind: &EventKind) -> Option<&hub_core::DeviceId> {
    match kind {
        EventKind::DeviceConnected { device, .. }
        | EventKind::DeviceDisconnected { device, .. }
        | EventKind::DeviceSeen { device }
        | EventKind::DeviceRegistered { device }
        | EventKind::DeviceMoved { device, .. }
        | EventKind::DeviceRemoved { device }
        | EventKind::JobStateChanged { device, .. }
        | EventKind::MeasurementsReceived { device, .. } => Some(device),
        _ => None,
    }
}

/// Refuses subscriptions that could never see an event of `tenant`, so that a caller learns at
/// once rather than from a silent stream.
fn check_reach(principal: &Principal, tenant: &TenantId) -> Result<()> {
    if matches!(principal, Principal::Device(_)) {
        return Err(Error::forbidden("devices may not read the event stream"));
    }
    let root = super::anchor(principal);
    match root {
        Some(root) if root.tenant() != *tenant => {
            Err(Error::not_found(format!("tenant {tenant} does not exist")))
        }
        _ => Ok(()),
    }
}

fn stream(
    sub: Subscriber,
    filter: Filter,
) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
    futures_util::stream::unfold((sub, filter), |(mut sub, filter)| async move {
        let frame = next_frame(&mut sub, &filter).await?;
        Some((Ok(frame), (sub, filter)))
    })
}

async fn next_frame(sub: &mut Subscriber, filter: &Filter) -> Option<SseEvent> {
    loop {
        match sub.recv().await {
            Received::Event(e) => {
                if let Some(frame) = filter.frame(&e) {
                    return Some(frame);
                }
            }
            Received::Lagged(n) => {
                return Some(
                    SseEvent::default()
                        .event("lagged")
                        .data(serde_json::json!({ "missed": n }).to_string()),
                );
            }
            Received::Closed => return None,
        }
    }
}

/// Streams the caller's events.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/events",
    tag = "jobs",
    params(("tenant" = String, Path), EventsQuery),
    responses(
        (status = 200, description = "`text/event-stream`: event name = kind (or `lagged`), data = the event JSON", content_type = "text/event-stream", body = String),
        (status = 401, description = "No credentials"),
        (status = 403, description = "Devices may not subscribe"),
        (status = 404, description = "Another tenant, or no event stream configured")
    )
)]
pub(super) async fn events(
    State(http): State<Arc<JobsHttp>>,
    principal: Principal,
    Segments(tenant): Segments<String>,
    Params(q): Params<EventsQuery>,
) -> Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>> {
    let tenant = tenant_id(&tenant)?;
    check_reach(&principal, &tenant)?;
    let bus = http
        .events
        .as_ref()
        .ok_or_else(|| Error::not_found("this hub has no event stream"))?;
    let kinds = q.kinds.map(|k| {
        k.split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let filter = Filter {
        principal,
        tenant,
        kinds,
    };
    Ok(Sse::new(stream(bus.subscribe(), filter))
        .keep_alive(KeepAlive::new().interval(http.config.keep_alive)))
}
