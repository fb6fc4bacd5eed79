//! Zero-touch enrollment through the API: a shared secret admits a bounded number of devices.

#[path = "registry_common/mod.rs"]
mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{Hub, hub_admin, user};
use hub_core::{ErrorKind, Principal, Role};

async fn create(hub: &Hub, p: &Principal, group: &str, max_uses: u32) -> (StatusCode, Value) {
    hub.call(
        Some(p),
        Method::POST,
        "/v1/tenants/acme/enrollments",
        Some(json!({"group": group, "max_uses": max_uses, "expires_in_seconds": 600})),
    )
    .await
}

async fn enroll(hub: &Hub, secret: &str, device: &str) -> (StatusCode, Value) {
    hub.call(
        None,
        Method::POST,
        "/v1/enroll",
        Some(json!({"enrollment": secret, "device_id": device})),
    )
    .await
}

#[tokio::test]
async fn a_device_enrolls_itself_and_authenticates_with_its_own_key() {
    let hub = Hub::new().await;
    let admin = user("acme", Role::Admin);
    let (s, e) = create(&hub, &admin, "acme/plant-1", 2).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let secret = e["enrollment"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("he_"));
    assert_eq!(e["info"]["uses"], 0);

    let (s, d) = enroll(&hub, &secret, "sn-0001").await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["device"]["group"], "acme/plant-1");
    let key = d["access_key"].as_str().unwrap();
    match hub.auth(Some("sn-0001"), key).await.unwrap() {
        Principal::Device(p) => assert_eq!(p.group.as_str(), "acme/plant-1"),
        other => panic!("{other:?}"),
    }

    // An id that exists is a conflict and spends no use.
    let (s, _) = enroll(&hub, &secret, "sn-0001").await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = enroll(&hub, &secret, "sn-0002").await;
    assert_eq!(s, StatusCode::CREATED);
    // Used up.
    let (s, p) = enroll(&hub, &secret, "sn-0003").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{p}");

    // The listing shows the count and never the secret.
    let (s, _, text) = hub
        .call_raw(
            Some(&admin),
            Method::GET,
            "/v1/tenants/acme/enrollments",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list[0]["uses"], 2);
    assert_eq!(list[0]["usable"], false);
    assert!(!text.contains(&secret[20..]));
}

#[tokio::test]
async fn wrong_expired_and_deleted_enrollments_are_the_same_401() {
    let hub = Hub::new().await;
    let (_, e) = create(&hub, &hub_admin(), "acme/plant-1", 10).await;
    let secret = e["enrollment"].as_str().unwrap().to_owned();
    let id = e["info"]["id"].as_str().unwrap().to_owned();
    let mut wrong = secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    let access_key_shaped = secret.replacen("he_", "hk_", 1);

    let mut problems = Vec::new();
    for s in [
        wrong.as_str(),
        "he_nonsense",
        "",
        access_key_shaped.as_str(),
    ] {
        let (status, p) = enroll(&hub, s, "sn-1").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{s}");
        problems.push(p);
    }
    hub.clock.advance(Duration::from_secs(600));
    let (status, p) = enroll(&hub, &secret, "sn-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired");
    problems.push(p);
    problems.dedup();
    assert_eq!(problems.len(), 1, "{problems:?}");
    // Nothing was registered.
    let (s, _) = hub
        .call(
            Some(&hub_admin()),
            Method::GET,
            "/v1/tenants/acme/devices/sn-1",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (_, e2) = create(&hub, &hub_admin(), "acme/plant-1", 10).await;
    let id2 = e2["info"]["id"].as_str().unwrap();
    let (s, _) = hub
        .call(
            Some(&hub_admin()),
            Method::DELETE,
            &format!("/v1/tenants/acme/enrollments/{id2}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (status, _) = enroll(&hub, e2["enrollment"].as_str().unwrap(), "sn-2").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "deleted");
    let _ = id;
}

#[tokio::test]
async fn enrollments_are_guarded_like_the_rest_of_the_registry() {
    let hub = Hub::new().await;
    // A viewer, an operator (no groups:admin), another subtree, another tenant.
    for (p, want) in [
        (user("acme/plant-1", Role::Viewer), StatusCode::FORBIDDEN),
        (user("acme/plant-1", Role::Operator), StatusCode::FORBIDDEN),
        (user("acme/plant-2", Role::Admin), StatusCode::NOT_FOUND),
        (user("other", Role::Admin), StatusCode::NOT_FOUND),
    ] {
        let (s, _) = create(&hub, &p, "acme/plant-1", 1).await;
        assert_eq!(s, want, "{p:?}");
    }
    // Managing clients is not enough: the enrollment registers devices.
    let svc = common::service("acme", "groups:admin devices:read");
    let (s, _) = create(&hub, &svc, "acme/plant-1", 1).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Limits.
    for (group, uses) in [
        ("acme/plant-1", 0),
        ("acme/plant-1", 1_000_000),
        ("acme/ghost", 1),
    ] {
        let (s, _) = create(&hub, &hub_admin(), group, uses).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
            "{group} {uses}: {s}"
        );
    }

    let (_, e) = create(&hub, &hub_admin(), "acme/plant-1", 1).await;
    let id = e["info"]["id"].as_str().unwrap();
    for p in [
        user("acme/plant-2", Role::Admin),
        user("other", Role::Admin),
    ] {
        let (s, _) = hub
            .call(
                Some(&p),
                Method::DELETE,
                &format!("/v1/tenants/acme/enrollments/{id}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = hub
            .call(
                Some(&p),
                Method::GET,
                "/v1/tenants/acme/enrollments?group=acme/plant-1",
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    // The other tenant's URL does not reach it either.
    let (s, _) = hub
        .call(
            Some(&hub_admin()),
            Method::DELETE,
            &format!("/v1/tenants/other/enrollments/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn concurrent_enrollments_never_exceed_max_uses() {
    use std::sync::Arc;
    let hub = Arc::new(Hub::new().await);
    let created = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/enrollments",
            Some(json!({"group": "acme", "max_uses": 3})),
        )
        .await
        .1;
    let secret = created["enrollment"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let hub = hub.clone();
        let secret = secret.clone();
        tasks.push(tokio::spawn(async move {
            enroll(&hub, &secret, &format!("sn-{i}")).await.0
        }));
    }
    let mut created_n = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(
            s == StatusCode::CREATED || s == StatusCode::UNAUTHORIZED,
            "{s}"
        );
        if s == StatusCode::CREATED {
            created_n += 1;
        }
    }
    assert_eq!(created_n, 3);
    let e = hub
        .stores
        .credentials
        .get_enrollment(created["info"]["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.uses, 3);
    let _ = ErrorKind::Unauthenticated;
}
