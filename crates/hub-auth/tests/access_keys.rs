//! Device access keys end to end: registered through the API, checked by the authenticator.

#[path = "registry_common/mod.rs"]
mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use common::{Hub, hub_admin};
use hub_core::{ErrorKind, Principal};

#[tokio::test]
async fn a_registered_device_authenticates_with_its_key() {
    let hub = Hub::new().await;
    let key = hub.register("pump-7", "acme/plant-1").await;
    assert!(key.starts_with("hk_"));

    for claimed in [Some("pump-7"), None] {
        match hub.auth(claimed, &key).await.unwrap() {
            Principal::Device(d) => {
                assert_eq!(d.id.as_str(), "pump-7");
                assert_eq!(d.group.as_str(), "acme/plant-1");
            }
            other => panic!("not a device: {other:?}"),
        }
    }
}

/// Every way of failing answers exactly alike, so a guesser learns nothing.
#[tokio::test]
async fn every_failure_is_the_same_unauthenticated_error() {
    let hub = Hub::new().await;
    let key = hub.register("pump-7", "acme/plant-1").await;
    let other_key = hub.register("pump-8", "acme/plant-1").await;
    let disabled_key = hub.register("pump-9", "acme/plant-1").await;
    let (status, _) = hub
        .call(
            Some(&hub_admin()),
            Method::PATCH,
            "/v1/tenants/acme/devices/pump-9",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let deleted_key = hub.register("pump-10", "acme/plant-1").await;
    let (status, _) = hub
        .call(
            Some(&hub_admin()),
            Method::DELETE,
            "/v1/tenants/acme/devices/pump-10",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The same key id with another secret.
    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    // A well-formed key nobody issued.
    let unknown = hub_auth::access_keys::AccessKey::generate().unwrap();

    let attempts: Vec<(Option<&str>, &str)> = vec![
        (Some("pump-7"), &wrong),
        (None, &wrong),
        (None, unknown.expose()),
        (Some("ghost"), unknown.expose()),
        (Some("pump-8"), &key), // pump-7's key claimed by pump-8
        (Some("pump-7"), &other_key),
        (Some("pump-9"), &disabled_key),
        (None, &disabled_key),
        (Some("pump-10"), &deleted_key),
        (None, "hk_not-a-key"),
        (None, ""),
        (None, "eyJhbGciOiJSUzI1NiJ9.e30.sig"),
    ];
    let mut seen = Vec::new();
    for (claimed, k) in attempts {
        let e = hub.auth(claimed, k).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{claimed:?}");
        seen.push(serde_json::to_string(&e.problem()).unwrap());
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "the answers differ: {seen:?}");
    // The good key still works.
    assert!(hub.auth(Some("pump-7"), &key).await.is_ok());
}

#[tokio::test]
async fn re_enabling_a_device_lets_it_back_in_at_once() {
    let hub = Hub::new().await;
    let key = hub.register("pump-7", "acme/plant-1").await;
    assert!(hub.auth(None, &key).await.is_ok()); // now cached
    for (enabled, ok) in [(false, false), (true, true)] {
        let (status, body) = hub
            .call(
                Some(&hub_admin()),
                Method::PATCH,
                "/v1/tenants/acme/devices/pump-7",
                Some(json!({ "enabled": enabled })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["enabled"], enabled);
        assert_eq!(hub.auth(None, &key).await.is_ok(), ok, "enabled={enabled}");
    }
}

#[tokio::test]
async fn rotation_keeps_the_old_key_working_during_the_overlap_only() {
    let hub = Hub::new().await;
    let old = hub.register("pump-7", "acme/plant-1").await;
    assert!(hub.auth(None, &old).await.is_ok()); // cached before the rotation

    let (status, body) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            Some(json!({"overlap_seconds": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let new = body["access_key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    hub.clock.advance(Duration::from_secs(59));
    assert!(hub.auth(None, &old).await.is_ok(), "old key within overlap");
    assert!(hub.auth(None, &new).await.is_ok());
    hub.clock.advance(Duration::from_secs(1));
    assert!(hub.auth(None, &old).await.is_err(), "old key after overlap");
    assert!(hub.auth(Some("pump-7"), &new).await.is_ok());

    let (_, keys) = hub
        .call(
            Some(&hub_admin()),
            Method::GET,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            None,
        )
        .await;
    let usable: Vec<bool> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["usable"].as_bool().unwrap())
        .collect();
    assert_eq!(usable.len(), 2);
    assert_eq!(usable.iter().filter(|u| **u).count(), 1);
}

#[tokio::test]
async fn rotation_without_overlap_and_without_body() {
    let hub = Hub::new().await;
    let old = hub.register("pump-7", "acme/plant-1").await;
    let (status, body) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            Some(json!({"overlap_seconds": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(hub.auth(None, &old).await.is_err());
    let newer = body["access_key"].as_str().unwrap().to_owned();
    assert!(hub.auth(None, &newer).await.is_ok());

    // No body: the configured default overlap (one hour in these tests).
    let (status, body) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    hub.clock.advance(Duration::from_secs(3599));
    assert!(hub.auth(None, &newer).await.is_ok());
    hub.clock.advance(Duration::from_secs(1));
    assert!(hub.auth(None, &newer).await.is_err());

    // An overlap above the maximum is refused.
    let (status, body) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            Some(json!({"overlap_seconds": 365 * 24 * 3600})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_device_holds_a_bounded_number_of_keys() {
    let hub = Hub::new().await;
    hub.register("pump-7", "acme/plant-1").await;
    let max = hub.keys.config().max_keys_per_device;
    for _ in 1..max {
        let (status, _) = hub
            .call(
                Some(&hub_admin()),
                Method::POST,
                "/v1/tenants/acme/devices/pump-7/access-keys",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, body) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Without overlap the old keys end, so there is room.
    let (status, _) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            Some(json!({"overlap_seconds": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn revocation_through_this_node_takes_effect_at_once() {
    let hub = Hub::new().await;
    let key = hub.register("pump-7", "acme/plant-1").await;
    assert!(hub.auth(None, &key).await.is_ok()); // cached
    let key_id = &key[3..19];
    let (status, _) = hub
        .call(
            Some(&hub_admin()),
            Method::DELETE,
            &format!("/v1/tenants/acme/devices/pump-7/access-keys/{key_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(hub.auth(None, &key).await.is_err());

    // Revoking a key of another device through this device's URL is "not found".
    let other = hub.register("pump-8", "acme/plant-1").await;
    let (status, _) = hub
        .call(
            Some(&hub_admin()),
            Method::DELETE,
            &format!(
                "/v1/tenants/acme/devices/pump-7/access-keys/{}",
                &other[3..19]
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(hub.auth(None, &other).await.is_ok());
}

/// A revocation made on another node (here: straight in the store) is seen once the cached entry
/// is older than the TTL: the documented window.
#[tokio::test]
async fn a_revocation_elsewhere_is_seen_within_the_cache_ttl() {
    let hub = Hub::new().await;
    let key = hub.register("pump-7", "acme/plant-1").await;
    assert!(hub.auth(None, &key).await.is_ok());
    assert_eq!(hub.keys.cached_len(), 1);
    hub.stores
        .credentials
        .revoke_access_key(&key[3..19], hub.clock_now())
        .await
        .unwrap();
    hub.clock.advance(Duration::from_secs(29));
    assert!(
        hub.auth(None, &key).await.is_ok(),
        "still cached: the window"
    );
    hub.clock.advance(Duration::from_secs(1));
    assert!(hub.auth(None, &key).await.is_err(), "after the TTL");
}

#[tokio::test]
async fn without_a_cache_every_change_is_seen_at_once() {
    let hub = Hub::with_config(hub_auth::access_keys::AccessKeyConfig {
        cache_ttl: Duration::ZERO,
        ..common::config()
    })
    .await;
    let key = hub.register("pump-7", "acme/plant-1").await;
    assert!(hub.auth(None, &key).await.is_ok());
    assert_eq!(hub.keys.cached_len(), 0);
    hub.stores
        .credentials
        .revoke_access_key(&key[3..19], hub.clock_now())
        .await
        .unwrap();
    assert!(hub.auth(None, &key).await.is_err());
}

#[tokio::test]
async fn the_cache_stays_within_its_capacity() {
    let hub = Hub::with_config(hub_auth::access_keys::AccessKeyConfig {
        cache_capacity: 3,
        ..common::config()
    })
    .await;
    let mut keys = Vec::new();
    for i in 0..6 {
        keys.push(hub.register(&format!("d-{i}"), "acme/plant-1").await);
    }
    for k in &keys {
        assert!(hub.auth(None, k).await.is_ok());
        assert!(hub.keys.cached_len() <= 3);
    }
    // Evicted keys still authenticate (from the store).
    for k in &keys {
        assert!(hub.auth(None, k).await.is_ok());
    }
}

#[tokio::test]
async fn the_authenticator_refuses_bearer_tokens() {
    use hub_core::{Authenticator, Credentials, Secret};
    let hub = Hub::new().await;
    let e = hub
        .keys
        .authenticate(&Credentials::Bearer(Secret::new("eyJ.x.y")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
}

#[tokio::test]
async fn keys_work_on_sqlite_too() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = hub_store::sqlite::SqliteStore::open(hub_store::sqlite::SqliteConfig::new(
        dir.path().join("hub.db"),
    ))
    .await
    .unwrap();
    let stores = store.into_stores();
    let clock = hub_core::ManualClock::new(hub_core::Timestamp::from_millis(1_000_000).unwrap());
    let now = hub_core::Clock::now(&clock);
    stores
        .registry
        .create_tenant(&"acme".parse().unwrap(), "Acme", now)
        .await
        .unwrap();
    stores
        .registry
        .create_device(
            hub_store::NewDevice {
                id: "pump-7".parse().unwrap(),
                group: "acme".parse().unwrap(),
                display_name: String::new(),
                attributes: json!({}),
            },
            now,
        )
        .await
        .unwrap();
    let keys = hub_auth::access_keys::AccessKeys::new(
        &stores,
        Arc::new(clock.clone()),
        Default::default(),
    );
    let issued = keys
        .issue(&"acme".parse().unwrap(), &"pump-7".parse().unwrap())
        .await
        .unwrap();
    let p = keys
        .authenticate_key(None, issued.access_key.expose())
        .await
        .unwrap();
    assert_eq!(p.id.as_str(), "pump-7");
    let listed = keys
        .list(&"acme".parse().unwrap(), &"pump-7".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, issued.info.key_id);
    // The store holds a hash, never the key.
    let rec = stores
        .credentials
        .find_access_key(&issued.info.key_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!rec.hash.contains(&issued.access_key.expose()[20..]));
}
