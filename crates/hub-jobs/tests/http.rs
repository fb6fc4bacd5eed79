//! The Job API over HTTP: the router driven with `tower::ServiceExt::oneshot` (no port), over the
//! in-memory store with a manual clock. Principals are put into the request extensions, as the
//! authentication layer does.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use hub_core::{Event, EventKind, EventSink, JobId, ManualClock, Principal, Timestamp};
use hub_jobs::events::EventBus;
use hub_jobs::http::{HttpConfig, JobsHttp, TokioSleep, router};
use hub_jobs::{JobService, Sleep};
use hub_store::StoreLimits;
use hub_store::memory::MemoryStore;
use serde_json::{Value, json};
use tower::ServiceExt;

struct App {
    router: Router,
    bus: EventBus,
    clock: ManualClock,
}

async fn app_with(sleep: Arc<dyn Sleep>, config: HttpConfig, bus_capacity: usize) -> App {
    let stores = MemoryStore::new(StoreLimits::default()).into_stores();
    register_devices(stores.registry.as_ref()).await;
    let bus = EventBus::new(bus_capacity);
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000).unwrap());
    let svc = JobService::new(
        stores.jobs.clone(),
        stores.registry.clone(),
        Arc::new(Notices::default()),
        Arc::new(FakePresence::default()),
        Arc::new(bus.clone()),
        Arc::new(clock.clone()),
    )
    .with_sleep(sleep);
    let bulk = hub_jobs::BulkJobs::new(
        stores.bulk.clone(),
        stores.jobs.clone(),
        stores.registry.clone(),
        svc.clone(),
        Arc::new(clock.clone()),
    );
    let router = router(
        JobsHttp::new(svc)
            .with_events(bus.clone())
            .with_bulk(bulk)
            .with_config(config),
    );
    App { router, bus, clock }
}

/// Long polls whose wait has always already run out.
async fn app() -> App {
    app_with(Arc::new(Elapsed), HttpConfig::default(), 256).await
}

fn bob() -> Principal {
    user("bob", "globex")
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn etag(&self) -> &str {
        self.headers["etag"].to_str().unwrap()
    }

    /// Asserts an RFC 9457 problem with `status`.
    fn assert_problem(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.headers["content-type"], "application/problem+json");
        assert_eq!(self.body["status"], status);
        assert!(
            self.body["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:iot-hub:problem:")
        );
        assert!(self.body["title"].is_string());
    }
}

async fn call(
    app: &App,
    who: Option<&Principal>,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let mut req = req.body(body).unwrap();
    if let Some(p) = who {
        req.extensions_mut().insert(p.clone());
    }
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Reply {
        status,
        headers,
        body,
    }
}

async fn create(app: &App, who: &Principal, tenant: &str, body: Value) -> Reply {
    call(
        app,
        Some(who),
        Method::POST,
        &format!("/v1/tenants/{tenant}/jobs"),
        &[],
        Some(body),
    )
    .await
}

async fn next(app: &App, device: &Principal, query: &str) -> Reply {
    call(
        app,
        Some(device),
        Method::POST,
        &format!("/v1/device/jobs/next{query}"),
        &[],
        None,
    )
    .await
}

async fn report(app: &App, device: &Principal, job: &str, body: Value) -> Reply {
    call(
        app,
        Some(device),
        Method::POST,
        &format!("/v1/device/jobs/{job}"),
        &[],
        Some(body),
    )
    .await
}

fn id(r: &Reply) -> String {
    r.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_controller_and_a_device_run_a_job_to_its_result() {
    let app = app().await;
    let created = create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {"op": "reboot"}, "options": {"max_attempts": 2}}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let job = id(&created);
    assert_eq!(
        created.headers["location"],
        format!("/v1/tenants/acme/jobs/{job}").as_str()
    );
    assert_eq!(created.etag(), "\"1\"");
    let b = &created.body;
    assert_eq!(b["device"], "pump-7");
    assert_eq!(b["group"], "acme/plant-1");
    assert_eq!(b["lane"], "default");
    assert_eq!(b["state"], "queued");
    assert_eq!(b["version"], 1);
    assert_eq!(b["execution"], 0);
    assert_eq!(b["attempts"], 0);
    assert_eq!(b["document"], json!({"op": "reboot"}));
    assert_eq!(b["options"]["max_attempts"], 2);
    assert!(b["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(b["result"], Value::Null);

    // The device claims it.
    let claimed = next(&app, &pump(), "").await;
    assert_eq!(claimed.status, StatusCode::OK);
    assert_eq!(claimed.body["id"], job.as_str());
    assert_eq!(claimed.body["execution"], 1);
    assert_eq!(claimed.body["state"], "delivered");
    assert_eq!(claimed.body["document"], json!({"op": "reboot"}));

    let r = report(
        &app,
        &pump(),
        &job,
        json!({"execution": 1, "status": "in_progress", "details": {"percent": 40}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["state"], "in_progress");

    app.clock.advance(Duration::from_secs(3));
    let r = report(
        &app,
        &pump(),
        &job,
        json!({"execution": 1, "status": "succeeded", "result": {"uptime": 3}}),
    )
    .await;
    assert_eq!(r.body["state"], "succeeded");

    // The controller reads the result inside the job resource.
    let got = call(
        &app,
        Some(&alice()),
        Method::GET,
        &format!("/v1/tenants/acme/jobs/{job}"),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["state"], "succeeded");
    assert_eq!(got.body["result"], json!({"uptime": 3}));
    assert_eq!(got.body["status_details"], json!({"percent": 40}));
    assert_eq!(got.body["execution"], 1);
    let version = got.body["version"].as_u64().unwrap();
    assert_eq!(got.etag(), format!("\"{version}\""));
    assert_ne!(got.body["updated_at"], got.body["created_at"]);

    // Nothing left for the device.
    let none = next(&app, &pump(), "?wait=0").await;
    assert_eq!(none.status, StatusCode::NO_CONTENT);

    // The listing shows it with its filters.
    let list = call(
        &app,
        Some(&alice()),
        Method::GET,
        "/v1/tenants/acme/jobs?state=succeeded&device=pump-7&group=acme/plant-1",
        &[],
        None,
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["items"][0]["id"], job.as_str());
    let list = call(
        &app,
        Some(&alice()),
        Method::GET,
        "/v1/tenants/acme/jobs?state=queued,in_progress",
        &[],
        None,
    )
    .await;
    assert_eq!(list.body["items"], json!([]));
}

#[tokio::test]
async fn listings_are_paged() {
    let app = app().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        app.clock.advance(Duration::from_millis(1));
        ids.push(id(&create(
            &app,
            &alice(),
            "acme",
            json!({"device": "pump-8", "document": {"n": n}}),
        )
        .await));
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/tenants/acme/jobs?limit=2".to_owned();
    loop {
        let page = call(&app, Some(&alice()), Method::GET, &uri, &[], None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page.body["next"].as_str() {
            Some(next) => uri = format!("/v1/tenants/acme/jobs?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let bad = call(
        &app,
        Some(&alice()),
        Method::GET,
        "/v1/tenants/acme/jobs?state=done",
        &[],
        None,
    )
    .await;
    bad.assert_problem(400);
    let bad = call(
        &app,
        Some(&alice()),
        Method::GET,
        "/v1/tenants/acme/jobs?limit=lots",
        &[],
        None,
    )
    .await;
    bad.assert_problem(400);
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_job() {
    let app = app().await;
    let body = json!({"device": "pump-7", "group": "acme/plant-1", "document": {"op": "x"}});
    let key = [("Idempotency-Key", "order-42")];
    let uri = "/v1/tenants/acme/jobs";
    let first = call(
        &app,
        Some(&alice()),
        Method::POST,
        uri,
        &key,
        Some(body.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = call(&app, Some(&alice()), Method::POST, uri, &key, Some(body)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.headers["location"], first.headers["location"]);
    // The same key for a different job is a conflict.
    let other = json!({"device": "pump-7", "document": {"op": "y"}});
    let r = call(&app, Some(&alice()), Method::POST, uri, &key, Some(other)).await;
    r.assert_problem(409);
    let list = call(&app, Some(&alice()), Method::GET, uri, &[], None).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_creations_are_problems() {
    let app = app().await;
    let uri = "/v1/tenants/acme/jobs";
    // Not JSON, unknown fields, options out of range, unknown device, device not in the group.
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        uri,
        &[("content-type", "text/plain")],
        None,
    )
    .await;
    r.assert_problem(400);
    let r = create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}, "colour": 1}),
    )
    .await;
    r.assert_problem(400);
    let r = create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}, "options": {"max_attempts": 0}}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    let r = create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-99", "document": {}}),
    )
    .await;
    r.assert_problem(404);
    let r = create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "group": "acme/plant-2", "document": {}}),
    )
    .await;
    r.assert_problem(404);
    let long_key = "k".repeat(300);
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        uri,
        &[("idempotency-key", &long_key)],
        Some(json!({"device": "pump-7", "document": {}})),
    )
    .await;
    r.assert_problem(400);
    // A viewer may read but not create.
    let viewer = Principal::User(hub_core::UserPrincipal {
        id: "vera".parse().unwrap(),
        group: group("acme"),
        scopes: hub_core::Role::Viewer.scopes(),
    });
    let r = create(
        &app,
        &viewer,
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await;
    r.assert_problem(403);
}

#[tokio::test]
async fn a_stale_if_match_is_refused_with_412() {
    let app = app().await;
    let job = id(&create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await);
    let cancel_uri = format!("/v1/tenants/acme/jobs/{job}/cancel");
    // The device claims it: version 2. The controller still holds version 1.
    next(&app, &pump(), "").await;
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        &cancel_uri,
        &[("if-match", "\"1\"")],
        None,
    )
    .await;
    r.assert_problem(412);
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        &cancel_uri,
        &[("if-match", "1")],
        None,
    )
    .await;
    r.assert_problem(412);
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        &format!("/v1/tenants/acme/jobs/{job}"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["state"], "delivered");
    // With the current ETag the cancel request goes to the device.
    let etag = r.etag().to_owned();
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        &cancel_uri,
        &[("if-match", &etag)],
        Some(json!({"force": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["state"], "canceling");
    // Forced, unconditionally.
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        &cancel_uri,
        &[],
        Some(json!({"force": true})),
    )
    .await;
    assert_eq!(r.body["state"], "canceled");
    // Removal is conditional too.
    let uri = format!("/v1/tenants/acme/jobs/{job}");
    let r = call(
        &app,
        Some(&alice()),
        Method::DELETE,
        &uri,
        &[("if-match", &etag)],
        None,
    )
    .await;
    r.assert_problem(412);
    let etag = r#""4""#;
    let r = call(
        &app,
        Some(&alice()),
        Method::DELETE,
        &uri,
        &[("if-match", etag)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["state"], "removed");
    assert_eq!(r.etag(), "\"5\"");
}

#[tokio::test]
async fn an_illegal_transition_is_409() {
    let app = app().await;
    let job = id(&create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await);
    next(&app, &pump(), "").await;
    // An active job cannot be removed.
    let r = call(
        &app,
        Some(&alice()),
        Method::DELETE,
        &format!("/v1/tenants/acme/jobs/{job}"),
        &[],
        None,
    )
    .await;
    r.assert_problem(409);
    let r = report(
        &app,
        &pump(),
        &job,
        json!({"execution": 1, "status": "succeeded"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // A finished job cannot be canceled, nor reported on differently.
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        &format!("/v1/tenants/acme/jobs/{job}/cancel"),
        &[],
        None,
    )
    .await;
    r.assert_problem(409);
    let r = report(
        &app,
        &pump(),
        &job,
        json!({"execution": 1, "status": "failed"}),
    )
    .await;
    r.assert_problem(409);
    // A stale execution is a conflict, an unknown status bad input.
    let r = report(
        &app,
        &pump(),
        &job,
        json!({"execution": 7, "status": "in_progress"}),
    )
    .await;
    r.assert_problem(409);
    let r = report(
        &app,
        &pump(),
        &job,
        json!({"execution": 1, "status": "exploded"}),
    )
    .await;
    r.assert_problem(400);
}

#[tokio::test]
async fn another_tenants_job_is_not_found_through_every_route() {
    let app = app().await;
    let job = id(&create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await);
    // Bob (globex) has a job of his own, so globex is a real tenant with jobs.
    let r = create(
        &app,
        &bob(),
        "globex",
        json!({"device": "pump-7", "document": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let globex_device = device("pump-7", "globex/plant-1");

    for tenant in ["acme", "globex"] {
        let uri = format!("/v1/tenants/{tenant}/jobs/{job}");
        call(&app, Some(&bob()), Method::GET, &uri, &[], None)
            .await
            .assert_problem(404);
        call(&app, Some(&bob()), Method::DELETE, &uri, &[], None)
            .await
            .assert_problem(404);
        call(
            &app,
            Some(&bob()),
            Method::POST,
            &format!("{uri}/cancel"),
            &[],
            None,
        )
        .await
        .assert_problem(404);
    }
    call(
        &app,
        Some(&bob()),
        Method::GET,
        "/v1/tenants/acme/jobs",
        &[],
        None,
    )
    .await
    .assert_problem(404);
    call(
        &app,
        Some(&bob()),
        Method::GET,
        "/v1/tenants/globex/jobs?group=acme",
        &[],
        None,
    )
    .await
    .assert_problem(404);
    create(
        &app,
        &bob(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await
    .assert_problem(404);
    create(
        &app,
        &bob(),
        "globex",
        json!({"device": "pump-7", "group": "acme/plant-1", "document": {}}),
    )
    .await
    .assert_problem(404);
    for m in [Method::PUT, Method::DELETE] {
        call(
            &app,
            Some(&bob()),
            m,
            "/v1/tenants/acme/devices/pump-7/control",
            &[],
            None,
        )
        .await
        .assert_problem(404);
    }
    call(
        &app,
        Some(&bob()),
        Method::GET,
        "/v1/tenants/acme/events",
        &[],
        None,
    )
    .await
    .assert_problem(404);
    // The globex device with the same id never sees or touches the acme job.
    let r = next(&app, &globex_device, "").await;
    assert_ne!(r.body["id"], job.as_str());
    report(
        &app,
        &globex_device,
        &job,
        json!({"execution": 1, "status": "succeeded"}),
    )
    .await
    .assert_problem(404);
    // A malformed job id is just as unknown.
    call(
        &app,
        Some(&alice()),
        Method::GET,
        "/v1/tenants/acme/jobs/not-a-job",
        &[],
        None,
    )
    .await
    .assert_problem(404);
    // Alice's job is untouched.
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        &format!("/v1/tenants/acme/jobs/{job}"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["state"], "queued");
    assert_eq!(r.body["version"], 1);
}

#[tokio::test]
async fn every_route_needs_a_principal() {
    let app = app().await;
    let job = JobId::new(Timestamp::EPOCH).to_string();
    let routes = [
        (Method::POST, "/v1/tenants/acme/jobs".to_owned()),
        (Method::GET, "/v1/tenants/acme/jobs".to_owned()),
        (Method::GET, format!("/v1/tenants/acme/jobs/{job}")),
        (Method::DELETE, format!("/v1/tenants/acme/jobs/{job}")),
        (Method::POST, format!("/v1/tenants/acme/jobs/{job}/cancel")),
        (
            Method::PUT,
            "/v1/tenants/acme/devices/pump-7/control".to_owned(),
        ),
        (
            Method::DELETE,
            "/v1/tenants/acme/devices/pump-7/control".to_owned(),
        ),
        (Method::GET, "/v1/tenants/acme/events".to_owned()),
        (Method::POST, "/v1/device/jobs/next".to_owned()),
        (Method::POST, format!("/v1/device/jobs/{job}")),
    ];
    for (method, uri) in routes {
        let body = (method == Method::POST).then(
            || json!({"device": "pump-7", "document": {}, "execution": 1, "status": "canceled"}),
        );
        let r = call(&app, None, method.clone(), &uri, &[], body).await;
        r.assert_problem(401);
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{method} {uri}");
    }
}

#[tokio::test]
async fn devices_and_controllers_keep_to_their_own_routes() {
    let app = app().await;
    // A user cannot pull jobs as a device; a device cannot use the controller API.
    next(&app, &alice(), "").await.assert_problem(403);
    let r = create(
        &app,
        &pump(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await;
    assert!(matches!(r.status.as_u16(), 403 | 404), "{}", r.status);
    call(
        &app,
        Some(&pump()),
        Method::GET,
        "/v1/tenants/acme/events",
        &[],
        None,
    )
    .await
    .assert_problem(403);
}

#[tokio::test]
async fn control_leases_keep_other_controllers_out() {
    let app = app().await;
    let carol = user("carol", "acme/plant-1");
    let uri = "/v1/tenants/acme/devices/pump-7/control";
    let r = call(
        &app,
        Some(&alice()),
        Method::PUT,
        uri,
        &[],
        Some(json!({"duration_ms": 60_000})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["device"], "pump-7");
    assert_eq!(r.body["holder"], alice().describe());
    // Carol can neither take control nor create jobs while Alice holds it.
    call(&app, Some(&carol), Method::PUT, uri, &[], None)
        .await
        .assert_problem(409);
    create(
        &app,
        &carol,
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await
    .assert_problem(409);
    // Alice renews (empty body: the default duration), then releases.
    let r = call(&app, Some(&alice()), Method::PUT, uri, &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, Some(&alice()), Method::DELETE, uri, &[], None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = create(
        &app,
        &carol,
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A lease lapses on its own.
    let r = call(
        &app,
        Some(&carol),
        Method::PUT,
        uri,
        &[],
        Some(json!({"duration_ms": 1000})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    app.clock.advance(Duration::from_secs(2));
    let r = call(&app, Some(&alice()), Method::PUT, uri, &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    call(
        &app,
        Some(&alice()),
        Method::PUT,
        "/v1/tenants/acme/devices/pump-99/control",
        &[],
        None,
    )
    .await
    .assert_problem(404);
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_answers_204_after_its_bounded_wait() {
    let config = HttpConfig {
        max_wait: Duration::from_secs(30),
        ..HttpConfig::default()
    };
    let app = app_with(Arc::new(TokioSleep), config, 16).await;
    let started = tokio::time::Instant::now();
    // Asks for an hour; the hub's maximum (30 s of the paused tokio clock) bounds it.
    let r = next(&app, &pump(), "?wait=3600").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(3600),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_job_is_created() {
    // A timer that never runs out: only the job's creation can end the poll.
    let app = Arc::new(app_with(Arc::new(Never), HttpConfig::default(), 16).await);
    let poll = {
        let app = app.clone();
        tokio::spawn(async move { next(&app, &pump(), "?wait=30&lane=default").await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let job = id(&create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {"op": 1}}),
    )
    .await);
    let r = tokio::time::timeout(Duration::from_secs(60), poll)
        .await
        .expect("the long poll must end when the job is created")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], job.as_str());
    assert_eq!(r.body["execution"], 1);
}

/// Reads SSE frames `(event name, data)` from a streaming body until `done` says so.
async fn read_frames(
    body: &mut Body,
    mut done: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut frames = Vec::new();
    let mut buf = String::new();
    while !done(&frames) {
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("the stream must deliver the expected events")
            .expect("the stream ended")
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !name.is_empty() {
                frames.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    frames
}

async fn subscribe(app: &App, who: &Principal, uri: &str) -> Body {
    let mut req = Request::get(uri).body(Body::empty()).unwrap();
    req.extensions_mut().insert(who.clone());
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    res.into_body()
}

#[tokio::test]
async fn the_event_stream_delivers_a_cycle_and_hides_other_tenants() {
    let app = app().await;
    let mut stream = subscribe(&app, &alice(), "/v1/tenants/acme/events").await;
    // Globex's job comes first; Alice must never see it.
    create(
        &app,
        &bob(),
        "globex",
        json!({"device": "pump-7", "document": {}}),
    )
    .await;
    let job = id(&create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await);
    next(&app, &pump(), "").await;
    report(
        &app,
        &pump(),
        &job,
        json!({"execution": 1, "status": "in_progress"}),
    )
    .await;
    report(
        &app,
        &pump(),
        &job,
        json!({"execution": 1, "status": "succeeded"}),
    )
    .await;
    let frames = read_frames(&mut stream, |f| {
        f.iter().any(|(_, d)| d["to"] == "succeeded")
    })
    .await;
    let states: Vec<(Value, Value)> = frames
        .iter()
        .map(|(name, d)| {
            assert_eq!(name, "job_state_changed");
            assert_eq!(d["type"], "job_state_changed");
            assert_eq!(d["job"], job.as_str(), "only Alice's job: {d}");
            assert_eq!(d["group"], "acme/plant-1");
            (d["from"].clone(), d["to"].clone())
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (Value::Null, json!("queued")),
            (json!("queued"), json!("delivered")),
            (json!("delivered"), json!("in_progress")),
            (json!("in_progress"), json!("succeeded")),
        ]
    );
}

#[tokio::test]
async fn the_event_stream_filters_by_reach_and_kind() {
    let app = app().await;
    // Carol reaches plant-1 only, and wants device events only.
    let carol = user("carol", "acme/plant-1");
    let mut stream = subscribe(&app, &carol, "/v1/tenants/acme/events?kinds=device_seen").await;
    let event = |g: &str, d: &str| Event {
        at: Timestamp::from_millis(1).unwrap(),
        group: group(g),
        kind: EventKind::DeviceSeen { device: dev(d) },
    };
    // A job event in reach (wrong kind), a device event out of reach, then one she may see.
    create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await;
    app.bus.publish(event("acme/plant-2", "pump-9"));
    app.bus.publish(event("globex/plant-1", "pump-7"));
    app.bus.publish(event("acme/plant-1", "pump-8"));
    let frames = read_frames(&mut stream, |f| !f.is_empty()).await;
    assert_eq!(frames[0].0, "device_seen");
    assert_eq!(frames[0].1["device"], "pump-8");
    assert_eq!(frames[0].1["group"], "acme/plant-1");
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_how_many_events_it_missed() {
    let app = app_with(Arc::new(Elapsed), HttpConfig::default(), 2).await;
    let mut stream = subscribe(&app, &alice(), "/v1/tenants/acme/events").await;
    for n in 0..5 {
        app.bus.publish(Event {
            at: Timestamp::from_millis(n).unwrap(),
            group: group("acme/plant-1"),
            kind: EventKind::DeviceSeen {
                device: dev("pump-7"),
            },
        });
    }
    let frames = read_frames(&mut stream, |f| f.len() >= 3).await;
    assert_eq!(frames[0].0, "lagged");
    assert_eq!(frames[0].1, json!({"missed": 3}));
    // Then the two events the bus still held, in order.
    assert_eq!(
        frames[1].1["at"],
        Timestamp::from_millis(3).unwrap().to_string()
    );
    assert_eq!(
        frames[2].1["at"],
        Timestamp::from_millis(4).unwrap().to_string()
    );
}

#[test]
fn the_openapi_description_lists_exactly_the_mounted_routes() {
    let doc = hub_jobs::http::openapi();
    let mut paths: Vec<(String, Vec<String>)> = doc
        .paths
        .paths
        .iter()
        .map(|(p, item)| {
            let mut methods = Vec::new();
            for (m, op) in [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
            ] {
                if op.is_some() {
                    methods.push(m.to_owned());
                }
            }
            (p.clone(), methods)
        })
        .collect();
    paths.sort();
    let expected = [
        ("/v1/device/jobs/next", &["post"][..]),
        ("/v1/device/jobs/{job}", &["post"]),
        ("/v1/tenants/{tenant}/bulk-jobs", &["get", "post"]),
        ("/v1/tenants/{tenant}/bulk-jobs/{bulk}", &["get"]),
        ("/v1/tenants/{tenant}/bulk-jobs/{bulk}/cancel", &["post"]),
        ("/v1/tenants/{tenant}/bulk-jobs/{bulk}/summary", &["get"]),
        (
            "/v1/tenants/{tenant}/devices/{device}/control",
            &["put", "delete"],
        ),
        ("/v1/tenants/{tenant}/events", &["get"]),
        ("/v1/tenants/{tenant}/jobs", &["get", "post"]),
        ("/v1/tenants/{tenant}/jobs/{job}", &["get", "delete"]),
        ("/v1/tenants/{tenant}/jobs/{job}/cancel", &["post"]),
    ];
    let expected: Vec<(String, Vec<String>)> = expected
        .iter()
        .map(|(p, m)| (p.to_string(), m.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(paths, expected);
    let schemas = doc.components.unwrap().schemas;
    for s in [
        "JobView",
        "JobPage",
        "DeviceJobView",
        "CreateJobBody",
        "DeviceReportBody",
    ] {
        assert!(schemas.contains_key(s), "{s}");
    }
}

#[tokio::test]
async fn a_listing_covers_the_callers_reach_by_default() {
    let app = app().await;
    let carol = user("carol", "acme/plant-1");
    let mine = id(&create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await);
    create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-9", "document": {}}),
    )
    .await;
    let r = call(
        &app,
        Some(&carol),
        Method::GET,
        "/v1/tenants/acme/jobs",
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], mine.as_str());
    // Naming a group above her reach is 404; Alice sees both.
    call(
        &app,
        Some(&carol),
        Method::GET,
        "/v1/tenants/acme/jobs?group=acme",
        &[],
        None,
    )
    .await
    .assert_problem(404);
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        "/v1/tenants/acme/jobs",
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn optional_bodies_and_bad_paths_are_problems_too() {
    let app = app().await;
    let job = id(&create(
        &app,
        &alice(),
        "acme",
        json!({"device": "pump-7", "document": {}}),
    )
    .await);
    let uri = format!("/v1/tenants/acme/jobs/{job}/cancel");
    // A body that is there must be JSON of the right shape.
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        &uri,
        &[],
        Some(json!({"force": "yes"})),
    )
    .await;
    r.assert_problem(400);
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        &uri,
        &[],
        Some(json!({"forse": true})),
    )
    .await;
    r.assert_problem(400);
    let r = call(
        &app,
        Some(&alice()),
        Method::PUT,
        "/v1/tenants/acme/devices/pump-7/control",
        &[],
        Some(json!({"duration_ms": 0})),
    )
    .await;
    r.assert_problem(400);
    // Ids that cannot exist are 404.
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        &format!("/v1/tenants/NOT%20A%20TENANT/jobs/{job}"),
        &[],
        None,
    )
    .await;
    r.assert_problem(404);
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        "/v1/tenants/acme/jobs/%FF",
        &[],
        None,
    )
    .await;
    r.assert_problem(404);
    // The job is still queued.
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        &format!("/v1/tenants/acme/jobs/{job}"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["state"], "queued");
}

#[tokio::test(start_paused = true)]
async fn an_idle_event_stream_sends_keep_alive_comments() {
    let config = HttpConfig {
        keep_alive: Duration::from_secs(15),
        ..HttpConfig::default()
    };
    let app = app_with(Arc::new(Elapsed), config, 16).await;
    let mut stream = subscribe(&app, &alice(), "/v1/tenants/acme/events").await;
    // Nothing is published; the paused tokio clock runs to the keep-alive.
    let frame = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    let text = std::str::from_utf8(&frame).unwrap();
    assert!(text.starts_with(':'), "a comment line: {text:?}");
}

#[tokio::test]
async fn a_bulk_job_rolls_out_to_a_group_and_is_summarized_and_canceled() {
    let app = app().await;
    let body = json!({
        "group": "acme/plant-1",
        "targets": {"type": "group", "continuous": false},
        "document": {"firmware": "2.1.0"},
        "rollout": {"rate": {"type": "fixed", "per_minute": 1}}
    });
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        "/v1/tenants/acme/bulk-jobs",
        &[],
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let bulk = r.body["id"].as_str().unwrap().to_owned();
    assert!(r.headers["location"].to_str().unwrap().ends_with(&bulk));
    let etag = r.etag().to_owned();

    // One child per minute: the first started with the creation.
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        &format!("/v1/tenants/acme/bulk-jobs/{bulk}/summary"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["targeted"], 1, "{}", r.body);
    assert_eq!(r.body["children"]["queued"], 1, "{}", r.body);
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        &format!("/v1/tenants/acme/jobs?bulk={bulk}"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{}", r.body);

    // Listing, another tenant, a stale If-Match, then a cancel that cancels the queued child.
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        "/v1/tenants/acme/bulk-jobs",
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{}", r.body);
    for uri in [
        format!("/v1/tenants/acme/bulk-jobs/{bulk}"),
        format!("/v1/tenants/globex/bulk-jobs/{bulk}"),
        format!("/v1/tenants/acme/bulk-jobs/{bulk}/summary"),
    ] {
        call(&app, Some(&bob()), Method::GET, &uri, &[], None)
            .await
            .assert_problem(404);
    }
    call(
        &app,
        Some(&bob()),
        Method::POST,
        "/v1/tenants/acme/bulk-jobs",
        &[],
        Some(body),
    )
    .await
    .assert_problem(404);
    call(
        &app,
        Some(&alice()),
        Method::POST,
        &format!("/v1/tenants/acme/bulk-jobs/{bulk}/cancel"),
        &[("if-match", "\"999\"")],
        None,
    )
    .await
    .assert_problem(412);
    let r = call(
        &app,
        Some(&alice()),
        Method::POST,
        &format!("/v1/tenants/acme/bulk-jobs/{bulk}/cancel"),
        &[("if-match", etag.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["state"], "canceled");
    let r = call(
        &app,
        Some(&alice()),
        Method::GET,
        &format!("/v1/tenants/acme/bulk-jobs/{bulk}/summary"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["children"]["canceled"], 1, "{}", r.body);
}
