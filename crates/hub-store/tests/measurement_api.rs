//! The measurement REST API over the memory store, driven without a port.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use hub_core::{DevicePrincipal, ManualClock, Principal, Role, Timestamp, UserPrincipal};
use hub_store::http::{MeasurementApi, MeasurementApiConfig};
use hub_store::memory::MemoryStore;
use hub_store::{NewDevice, StoreLimits};
use serde_json::{Value, json};
use tower::ServiceExt;

const NOW: &str = "2026-12-02T12:00:00Z";

async fn api() -> Router {
    let stores = MemoryStore::new(StoreLimits::default()).into_stores();
    let now: Timestamp = NOW.parse().unwrap();
    for tenant in ["acme", "globex"] {
        let t = tenant.parse().unwrap();
        stores
            .registry
            .create_tenant(&t, tenant, now)
            .await
            .unwrap();
        let line = format!("{tenant}/plant-1").parse().unwrap();
        stores
            .registry
            .create_group(&line, "plant", now)
            .await
            .unwrap();
        stores
            .registry
            .create_device(
                NewDevice {
                    id: "pump-7".parse().unwrap(),
                    group: line,
                    display_name: String::new(),
                    attributes: json!({}),
                },
                now,
            )
            .await
            .unwrap();
    }
    let clock = Arc::new(ManualClock::new(now));
    MeasurementApi::new(
        stores.measurements.clone(),
        stores.registry.clone(),
        clock,
        MeasurementApiConfig {
            max_upload_bytes: 4096,
            ..MeasurementApiConfig::default()
        },
    )
    .router()
}

fn device(tenant: &str) -> Principal {
    Principal::Device(DevicePrincipal {
        id: "pump-7".parse().unwrap(),
        group: format!("{tenant}/plant-1").parse().unwrap(),
    })
}

fn user(group: &str, role: Role) -> Principal {
    Principal::User(UserPrincipal {
        id: "erin".parse().unwrap(),
        group: group.parse().unwrap(),
        scopes: role.scopes(),
    })
}

async fn call(
    router: &Router,
    principal: Option<Principal>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let mut req = req
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, ct)
}

#[tokio::test]
async fn a_device_uploads_and_an_app_reads_points_and_statistics() {
    let router = api().await;
    let (s, body, _) = call(
        &router,
        Some(device("acme")),
        "POST",
        "/v1/device/measurements",
        Some(json!({"series": {"temperature": [
            {"ts": "2026-12-02T10:00:00Z", "value": 20.0},
            {"ts": "2026-12-02T10:30:00Z", "value": 22.0},
            {"ts": "2026-12-02T11:15:00Z", "value": 30.0}
        ]}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"inserted": 3, "duplicates": 0}));

    // A sample without a time is taken now; a re-upload is counted as duplicates.
    let (_, body, _) = call(
        &router,
        Some(device("acme")),
        "POST",
        "/v1/device/measurements",
        Some(json!({"values": {"temperature": 25.0}})),
    )
    .await;
    assert_eq!(body["inserted"], 1);
    let (_, body, _) = call(
        &router,
        Some(device("acme")),
        "POST",
        "/v1/device/measurements",
        Some(json!({"values": {"temperature": 25.0}})),
    )
    .await;
    assert_eq!(body, json!({"inserted": 0, "duplicates": 1}));

    let viewer = user("acme/plant-1", Role::Viewer);
    let (s, body, _) = call(
        &router,
        Some(viewer.clone()),
        "GET",
        "/v1/tenants/acme/devices/pump-7/series",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, json!({"series": ["temperature"]}));

    let (s, body, _) = call(
        &router,
        Some(viewer.clone()),
        "GET",
        "/v1/tenants/acme/devices/pump-7/series/temperature?from=2026-12-02T10:00:00Z&limit=2",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    let next = body["next"].as_str().unwrap().to_owned();
    let (_, body, _) = call(
        &router,
        Some(viewer.clone()),
        "GET",
        &format!(
            "/v1/tenants/acme/devices/pump-7/series/temperature?from=2026-12-02T10:00:00Z&limit=2&after={next}"
        ),
        None,
    )
    .await;
    // 11:15 and the sample taken now (12:00): `to` defaults to just after now.
    assert_eq!(body["items"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["items"][1]["value"], 25.0);
    assert!(body.get("next").is_none(), "{body}");

    let (s, body, _) = call(
        &router,
        Some(viewer.clone()),
        "GET",
        "/v1/tenants/acme/devices/pump-7/series/temperature/stats?from=2026-12-02T10:00:00Z&to=2026-12-02T12:00:00Z&bucket=1h",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["bucket_ms"], 3_600_000);
    let buckets = body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{body}");
    assert_eq!(buckets[0]["count"], 2);
    assert_eq!(buckets[0]["mean"], 21.0);
    assert_eq!(buckets[1]["max"], 30.0);

    // The whole tenant: the same series across its devices.
    let (s, body, _) = call(
        &router,
        Some(user("acme", Role::Viewer)),
        "GET",
        "/v1/tenants/acme/stats/temperature?from=2026-12-02T00:00:00Z&to=2026-12-02T13:00:00Z&bucket=1d",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["buckets"][0]["count"], 4);
}

#[tokio::test]
async fn bad_uploads_and_queries_are_problems() {
    let router = api().await;
    let (s, body, ct) = call(
        &router,
        Some(device("acme")),
        "POST",
        "/v1/device/measurements",
        Some(json!({"values": {"temperature": "hot"}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(ct, "application/problem+json");
    assert!(body["detail"].as_str().unwrap().contains("values"));

    let big = json!({"values": {"t": 1.0}, "pad": "x".repeat(5000)});
    let (s, _, ct) = call(
        &router,
        Some(device("acme")),
        "POST",
        "/v1/device/measurements",
        Some(big),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ct, "application/problem+json");

    let viewer = user("acme", Role::Viewer);
    for uri in [
        "/v1/tenants/acme/devices/pump-7/series/temperature/stats?bucket=1w",
        "/v1/tenants/acme/devices/pump-7/series/bad%20name/stats",
        "/v1/tenants/acme/devices/pump-7/series/temperature?from=yesterday",
    ] {
        let (s, _, _) = call(&router, Some(viewer.clone()), "GET", uri, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
    }

    let (s, _, ct) = call(
        &router,
        None,
        "GET",
        "/v1/tenants/acme/devices/pump-7/series",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(ct, "application/problem+json");
}

#[tokio::test]
async fn nobody_reaches_another_tenant_or_subtree() {
    let router = api().await;
    let outsiders = [
        user("globex", Role::Admin),
        user("acme/plant-2", Role::Admin),
        device("globex"),
    ];
    for who in outsiders {
        for uri in [
            "/v1/tenants/acme/devices/pump-7/series",
            "/v1/tenants/acme/devices/pump-7/series/temperature",
            "/v1/tenants/acme/devices/pump-7/series/temperature/stats",
            "/v1/tenants/acme/stats/temperature",
        ] {
            let (s, _, _) = call(&router, Some(who.clone()), "GET", uri, None).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{who:?} {uri}");
        }
        let (s, _, _) = call(
            &router,
            Some(who.clone()),
            "POST",
            "/v1/tenants/acme/devices/pump-7/measurements",
            Some(json!({"values": {"t": 1}})),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{who:?}");
    }
    // A viewer may read but not write; a device may not read the controller routes.
    let (s, _, _) = call(
        &router,
        Some(user("acme", Role::Viewer)),
        "POST",
        "/v1/tenants/acme/devices/pump-7/measurements",
        Some(json!({"values": {"t": 1}})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &router,
        Some(user("acme", Role::Viewer)),
        "POST",
        "/v1/device/measurements",
        Some(json!({"values": {"t": 1}})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
