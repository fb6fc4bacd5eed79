//! The registry REST API: authorization on every route, the problem answers, secrets shown once.

#[path = "registry_common/mod.rs"]
mod common;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{Hub, hub_admin, service, user};
use hub_core::Role;

/// Every route of the registry with a body where it takes one. `{t}` is the tenant, the device is
/// `pump-7` in `acme/plant-2`.
fn every_route(t: &str, group: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::GET,
            format!("/v1/tenants/{t}/groups?under={group}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/tenants/{t}/groups"),
            Some(json!({"path": format!("{group}/new")})),
        ),
        (Method::GET, format!("/v1/tenants/{t}/groups/plant-2"), None),
        (
            Method::DELETE,
            format!("/v1/tenants/{t}/groups/plant-2"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/tenants/{t}/devices?group={group}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/tenants/{t}/devices"),
            Some(json!({"id": "intruder", "group": group})),
        ),
        (Method::GET, format!("/v1/tenants/{t}/devices/pump-7"), None),
        (
            Method::PATCH,
            format!("/v1/tenants/{t}/devices/pump-7"),
            Some(json!({"enabled": false})),
        ),
        (
            Method::DELETE,
            format!("/v1/tenants/{t}/devices/pump-7"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/tenants/{t}/devices/pump-7/access-keys"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/tenants/{t}/devices/pump-7/access-keys"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/tenants/{t}/devices/pump-7/access-keys/aaaaaaaaaaaaaaaa"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/tenants/{t}/users?group={group}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/tenants/{t}/users"),
            Some(json!({"id": "mallory", "group": group, "role": "viewer",
                "password": "a long enough password"})),
        ),
        (Method::GET, format!("/v1/tenants/{t}/users/bob"), None),
        (Method::DELETE, format!("/v1/tenants/{t}/users/bob"), None),
        (
            Method::GET,
            format!("/v1/tenants/{t}/clients?group={group}"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/tenants/{t}/clients"),
            Some(
                json!({"group": group, "grant_types": ["client_credentials"],
                "scopes": "devices:read"}),
            ),
        ),
        (Method::GET, format!("/v1/tenants/{t}/clients/dash"), None),
        (
            Method::DELETE,
            format!("/v1/tenants/{t}/clients/dash"),
            None,
        ),
    ]
}

/// `acme/plant-2` holds device pump-7 with a key, user bob and client dash.
async fn populated() -> (Hub, String) {
    let hub = Hub::new().await;
    let key = hub.register("pump-7", "acme/plant-2").await;
    let (s, b) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/users",
            Some(
                json!({"id": "bob", "group": "acme/plant-2", "role": "operator",
                "password": "bob's long password"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants/acme/clients",
            Some(json!({"id": "dash", "group": "acme/plant-2",
                "grant_types": ["authorization_code"], "scopes": "devices:read",
                "redirect_uris": ["https://dash.example/cb"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (hub, key)
}

async fn assert_untouched(hub: &Hub, key: &str) {
    assert!(hub.auth(Some("pump-7"), key).await.is_ok());
    let (s, d) = hub
        .call(
            Some(&hub_admin()),
            Method::GET,
            "/v1/tenants/acme/devices/pump-7",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["enabled"], true);
    assert_eq!(d["version"], 1);
    for uri in [
        "/v1/tenants/acme/users/bob",
        "/v1/tenants/acme/clients/dash",
    ] {
        let (s, _) = hub.call(Some(&hub_admin()), Method::GET, uri, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
    let (_, groups) = hub
        .call(
            Some(&hub_admin()),
            Method::GET,
            "/v1/tenants/acme/groups?under=acme",
            None,
        )
        .await;
    assert_eq!(groups["items"].as_array().unwrap().len(), 3, "{groups}");
}

#[tokio::test]
async fn another_tenant_gets_404_on_every_route() {
    let (hub, key) = populated().await;
    let intruder = user("other", Role::Admin);
    for (method, uri, body) in every_route("acme", "acme/plant-2") {
        let (status, problem) = hub.call(Some(&intruder), method.clone(), &uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {problem}");
        assert_eq!(problem["status"], 404);
    }
    assert_untouched(&hub, &key).await;
}

#[tokio::test]
async fn another_subtree_gets_404_on_every_route() {
    let (hub, key) = populated().await;
    let neighbour = user("acme/plant-1", Role::Admin);
    for (method, uri, body) in every_route("acme", "acme/plant-2") {
        let (status, problem) = hub.call(Some(&neighbour), method.clone(), &uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {problem}");
    }
    assert_untouched(&hub, &key).await;
}

#[tokio::test]
async fn no_principal_is_401_on_every_route() {
    let (hub, key) = populated().await;
    for (method, uri, body) in every_route("acme", "acme/plant-2") {
        let (status, headers, _) = hub.call_raw(None, method.clone(), &uri, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(headers["content-type"], "application/problem+json");
    }
    assert_untouched(&hub, &key).await;
}

#[tokio::test]
async fn a_device_principal_reads_itself_and_manages_nothing() {
    let (hub, key) = populated().await;
    let device = hub.auth(None, &key).await.unwrap();
    for (method, uri, body) in every_route("acme", "acme/plant-2") {
        let (status, _) = hub.call(Some(&device), method.clone(), &uri, body).await;
        if method == Method::GET && uri.ends_with("/devices/pump-7") {
            // The policy lets a device read itself.
            assert_eq!(status, StatusCode::OK);
            continue;
        }
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{method} {uri}: {status}"
        );
    }
    assert_untouched(&hub, &key).await;
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_register_or_change() {
    let (hub, key) = populated().await;
    let viewer = user("acme/plant-2", Role::Viewer);
    let (s, _) = hub
        .call(
            Some(&viewer),
            Method::GET,
            "/v1/tenants/acme/devices/pump-7",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, list) = hub
        .call(Some(&viewer), Method::GET, "/v1/tenants/acme/devices", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"][0]["id"], "pump-7");
    let (s, problem) = hub
        .call(
            Some(&viewer),
            Method::POST,
            "/v1/tenants/acme/devices",
            Some(json!({"id": "pump-8", "group": "acme/plant-2"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["status"], 403);
    for (method, uri, body) in [
        (
            Method::PATCH,
            "/v1/tenants/acme/devices/pump-7",
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, "/v1/tenants/acme/devices/pump-7", None),
        (
            Method::POST,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            None,
        ),
    ] {
        let (s, _) = hub.call(Some(&viewer), method, uri, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}");
    }
    assert_untouched(&hub, &key).await;
}

#[tokio::test]
async fn an_operator_manages_devices_in_its_subtree() {
    let hub = Hub::new().await;
    let op = user("acme/plant-1", Role::Operator);
    let (s, body) = hub
        .call(
            Some(&op),
            Method::POST,
            "/v1/tenants/acme/devices",
            Some(json!({"id": "valve-1", "group": "acme/plant-1",
                "attributes": {"model": "v2"}, "display_name": "Valve 1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["device"]["attributes"]["model"], "v2");
    assert_eq!(body["device"]["lifecycle"], "provisioned");
    let key = body["access_key"].as_str().unwrap();
    assert_eq!(body["key"]["key_id"], &key[3..19]);

    // GET gives an ETag; PATCH with a stale If-Match is 412, with the right one 200.
    let (s, headers, _) = hub
        .call_raw(
            Some(&op),
            Method::GET,
            "/v1/tenants/acme/devices/valve-1",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["etag"], "\"1\"");
    let patch = |etag: &'static str| {
        let mut req = axum::http::Request::builder()
            .method(Method::PATCH)
            .uri("/v1/tenants/acme/devices/valve-1")
            .header("content-type", "application/json")
            .header("if-match", etag)
            .body(axum::body::Body::from(
                json!({"attributes": {"model": "v3"}}).to_string(),
            ))
            .unwrap();
        req.extensions_mut().insert(op.clone());
        req
    };
    use tower::ServiceExt;
    let r = hub.app.clone().oneshot(patch("\"7\"")).await.unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let r = hub.app.clone().oneshot(patch("\"1\"")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"], "\"2\"");

    // A duplicate id is a conflict; a group elsewhere in the tenant is out of reach.
    let (s, _) = hub
        .call(
            Some(&op),
            Method::POST,
            "/v1/tenants/acme/devices",
            Some(json!({"id": "valve-1", "group": "acme/plant-1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = hub
        .call(
            Some(&op),
            Method::POST,
            "/v1/tenants/acme/devices",
            Some(json!({"id": "valve-2", "group": "acme/plant-2"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Bad input is a 400 problem, not a panic or a plain-text rejection.
    for body in [
        json!({"id": "bad/id", "group": "acme/plant-1"}),
        json!({"id": "x", "group": "acme/plant-1", "attributes": [1, 2]}),
        json!({"id": "x"}),
        json!({"id": "x", "group": "acme/plant-1", "extra": 1}),
    ] {
        let (s, headers, text) = hub
            .call_raw(
                Some(&op),
                Method::POST,
                "/v1/tenants/acme/devices",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert_eq!(headers["content-type"], "application/problem+json");
    }

    let (s, _) = hub
        .call(
            Some(&op),
            Method::DELETE,
            "/v1/tenants/acme/devices/valve-1",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(hub.auth(None, key).await.is_err(), "its keys went with it");
    // Registered again under the same id, it starts without the old key.
    let new_key = hub.register("valve-1", "acme/plant-1").await;
    assert!(hub.auth(None, key).await.is_err());
    assert!(hub.auth(None, &new_key).await.is_ok());
}

#[tokio::test]
async fn groups_are_created_listed_read_and_deleted() {
    let hub = Hub::new().await;
    let admin = user("acme", Role::Admin);
    let (s, g) = hub
        .call(
            Some(&admin),
            Method::POST,
            "/v1/tenants/acme/groups",
            Some(json!({"path": "acme/plant-1/line-2"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    assert_eq!(g["path"], "acme/plant-1/line-2");
    assert_eq!(g["display_name"], "line-2");
    let (s, g) = hub
        .call(
            Some(&admin),
            Method::GET,
            "/v1/tenants/acme/groups/plant-1/line-2",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(g["path"], "acme/plant-1/line-2");
    let (_, list) = hub
        .call(
            Some(&admin),
            Method::GET,
            "/v1/tenants/acme/groups?under=acme/plant-1",
            None,
        )
        .await;
    let paths: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["acme/plant-1", "acme/plant-1/line-2"]);
    // A group with a device in it cannot go.
    hub.register("pump-1", "acme/plant-1/line-2").await;
    let (s, _) = hub
        .call(
            Some(&admin),
            Method::DELETE,
            "/v1/tenants/acme/groups/plant-1/line-2",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = hub
        .call(
            Some(&admin),
            Method::DELETE,
            "/v1/tenants/acme/groups/plant-2",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = hub
        .call(
            Some(&admin),
            Method::GET,
            "/v1/tenants/acme/groups/plant-2",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Nobody deletes the group that anchors their own reach.
    let plant1 = user("acme/plant-1", Role::Admin);
    let (s, _) = hub
        .call(
            Some(&plant1),
            Method::DELETE,
            "/v1/tenants/acme/groups/plant-1",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn tenants_are_created_by_hub_wide_administrators_only() {
    let hub = Hub::new().await;
    let body = json!({"id": "initech"});
    for p in [user("acme", Role::Admin), service("acme", "groups:admin")] {
        let (s, _) = hub
            .call(Some(&p), Method::POST, "/v1/tenants", Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    let (s, g) = hub
        .call(
            Some(&hub_admin()),
            Method::POST,
            "/v1/tenants",
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    assert_eq!(g["path"], "initech");
    let (s, _) = hub
        .call(Some(&hub_admin()), Method::POST, "/v1/tenants", Some(body))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn users_get_an_argon2id_hash_and_no_more_than_the_caller_holds() {
    let hub = Hub::new().await;
    let admin = user("acme", Role::Admin);
    let (s, u) = hub
        .call(
            Some(&admin),
            Method::POST,
            "/v1/tenants/acme/users",
            Some(json!({"id": "erin@acme.example", "group": "acme/plant-1",
                "role": "viewer", "password": "erin's long password"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert_eq!(u["role"], "viewer");
    assert_eq!(
        u["scopes"],
        "devices:read jobs:read measurements:read artifacts:read"
    );
    let hash = hub
        .stores
        .credentials
        .get_password_hash(
            &"acme".parse().unwrap(),
            &"erin@acme.example".parse().unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(hub_auth::password::verify_password(
        &hash,
        "erin's long password"
    ));
    assert!(!hub_auth::password::verify_password(
        &hash,
        "erin's long passwort"
    ));

    // Too short a password: 400, and no user was created.
    let (s, _) = hub
        .call(
            Some(&admin),
            Method::POST,
            "/v1/tenants/acme/users",
            Some(json!({"id": "frank", "group": "acme", "role": "viewer", "password": "short"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = hub
        .call(
            Some(&admin),
            Method::GET,
            "/v1/tenants/acme/users/frank",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A service that manages users but holds few scopes cannot make an admin.
    let svc = service("acme", "groups:admin devices:read");
    let (s, _) = hub
        .call(
            Some(&svc),
            Method::POST,
            "/v1/tenants/acme/users",
            Some(json!({"id": "root2", "group": "acme", "role": "admin",
                "password": "a long enough password"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, list) = hub
        .call(Some(&admin), Method::GET, "/v1/tenants/acme/users", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains("argon2"));
    assert!(!list.to_string().contains("password"));

    let (s, _) = hub
        .call(
            Some(&admin),
            Method::DELETE,
            "/v1/tenants/acme/users/erin@acme.example",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let gone = hub
        .stores
        .credentials
        .get_password_hash(
            &"acme".parse().unwrap(),
            &"erin@acme.example".parse().unwrap(),
        )
        .await
        .unwrap();
    assert!(gone.is_none());
}

#[tokio::test]
async fn client_secrets_are_shown_once_and_verify() {
    let hub = Hub::new().await;
    let admin = user("acme", Role::Admin);
    let (s, c) = hub
        .call(
            Some(&admin),
            Method::POST,
            "/v1/tenants/acme/clients",
            Some(json!({"group": "acme/plant-1", "display_name": "Reporter",
                "grant_types": ["client_credentials"], "scopes": "devices:read jobs:read"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["client"]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("c-"));
    assert_eq!(c["client"]["confidential"], true);
    let secret = c["client_secret"].as_str().unwrap().to_owned();
    let stored = hub
        .stores
        .registry
        .get_client(&id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let hash = stored.secret_hash.clone().unwrap();
    assert!(!hash.contains(&secret));
    assert!(hub_auth::client_secrets::verify_client_secret(
        &hash, &secret
    ));
    assert!(hub_auth::password::verify_password(&hash, &secret));
    assert!(!hub_auth::client_secrets::verify_client_secret(
        &hash, "guess"
    ));

    // Never again: not in the listing, not in a read.
    for uri in [
        "/v1/tenants/acme/clients".to_owned(),
        format!("/v1/tenants/acme/clients/{id}"),
    ] {
        let (s, text) = hub
            .call_raw(Some(&admin), Method::GET, &uri, None)
            .await
            .into_ok();
        assert_eq!(s, StatusCode::OK);
        assert!(!text.contains(&secret), "{uri}");
        assert!(!text.contains("sha256"), "{uri}");
    }

    // Public clients get no secret and may not use client_credentials.
    let (s, c) = hub
        .call(
            Some(&admin),
            Method::POST,
            "/v1/tenants/acme/clients",
            Some(
                json!({"id": "mobile", "group": "acme", "confidential": false,
                "grant_types": ["authorization_code", "refresh_token"],
                "redirect_uris": ["http://127.0.0.1:8123/cb"], "scopes": "devices:read"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert!(c.get("client_secret").is_none());
    assert_eq!(c["client"]["confidential"], false);
    for body in [
        json!({"group": "acme", "confidential": false, "grant_types": ["client_credentials"],
            "scopes": "devices:read"}),
        json!({"group": "acme", "grant_types": ["password"], "scopes": "devices:read"}),
        json!({"group": "acme", "grant_types": ["client_credentials"], "scopes": "root:all"}),
    ] {
        let (s, _) = hub
            .call(
                Some(&admin),
                Method::POST,
                "/v1/tenants/acme/clients",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    }
    // No more scopes than the caller holds.
    let svc = service("acme", "groups:admin devices:read");
    let (s, _) = hub
        .call(
            Some(&svc),
            Method::POST,
            "/v1/tenants/acme/clients",
            Some(
                json!({"group": "acme", "grant_types": ["client_credentials"],
                "scopes": "devices:read jobs:write"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, _) = hub
        .call(
            Some(&admin),
            Method::DELETE,
            &format!("/v1/tenants/acme/clients/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // The other tenant's path does not reach acme's client even with the right id.
    let (s, _) = hub
        .call(
            Some(&hub_admin()),
            Method::GET,
            "/v1/tenants/other/clients/mobile",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

trait IntoOk {
    fn into_ok(self) -> (StatusCode, String);
}

impl IntoOk for (StatusCode, axum::http::HeaderMap, String) {
    fn into_ok(self) -> (StatusCode, String) {
        (self.0, self.2)
    }
}

#[tokio::test]
async fn access_key_secrets_never_appear_in_listings_or_debug() {
    let hub = Hub::new().await;
    let key = hub.register("pump-7", "acme/plant-1").await;
    let secret = &key[20..];
    for uri in [
        "/v1/tenants/acme/devices/pump-7/access-keys",
        "/v1/tenants/acme/devices/pump-7",
        "/v1/tenants/acme/devices",
    ] {
        let (s, _, text) = hub
            .call_raw(Some(&hub_admin()), Method::GET, uri, None)
            .await;
        assert_eq!(s, StatusCode::OK);
        assert!(!text.contains(secret), "{uri}");
    }
    let (_, keys) = hub
        .call(
            Some(&hub_admin()),
            Method::GET,
            "/v1/tenants/acme/devices/pump-7/access-keys",
            None,
        )
        .await;
    assert_eq!(keys[0]["key_id"], &key[3..19]);
    assert_eq!(keys[0]["usable"], true);

    let issued = hub
        .keys
        .rotate(&"acme".parse().unwrap(), &"pump-7".parse().unwrap(), None)
        .await
        .unwrap();
    let full = issued.access_key.expose().to_owned();
    let debug = format!(
        "{issued:?} {:?} {:?}",
        hub.keys,
        hub_auth::access_keys::AccessKey::parse(&full).unwrap()
    );
    assert!(!debug.contains(&full[20..]), "{debug}");
    assert!(!debug.contains(secret), "{debug}");
}

#[tokio::test]
async fn the_openapi_description_names_every_route() {
    let doc = serde_json::to_value(hub_auth::registry_api::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/tenants",
        "/v1/tenants/{tenant}/groups",
        "/v1/tenants/{tenant}/groups/{path}",
        "/v1/tenants/{tenant}/devices",
        "/v1/tenants/{tenant}/devices/{device}",
        "/v1/tenants/{tenant}/devices/{device}/access-keys",
        "/v1/tenants/{tenant}/devices/{device}/access-keys/{key_id}",
        "/v1/tenants/{tenant}/users",
        "/v1/tenants/{tenant}/users/{user}",
        "/v1/tenants/{tenant}/clients",
        "/v1/tenants/{tenant}/clients/{client}",
        "/v1/tenants/{tenant}/enrollments",
        "/v1/tenants/{tenant}/enrollments/{id}",
        "/v1/enroll",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert!(doc["components"]["schemas"]["RegisteredDevice"].is_object());
}
