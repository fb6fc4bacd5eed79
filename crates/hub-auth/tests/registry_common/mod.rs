//! A registry API over the in-memory store, driven with `oneshot`, with principals put straight
//! into the request's extensions (what the authentication layer does in a real hub).

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use hub_auth::access_keys::{AccessKeyConfig, AccessKeys};
use hub_auth::password::PasswordPolicy;
use hub_auth::registry_api::{RegistryState, router};
use hub_core::{
    Credentials, ManualClock, Principal, Role, ScopeSet, Secret, ServicePrincipal, Timestamp,
    UserPrincipal,
};
use hub_store::Stores;
use hub_store::memory::MemoryStore;

pub struct Hub {
    pub stores: Stores,
    pub clock: ManualClock,
    pub keys: Arc<AccessKeys>,
    pub app: Router,
}

pub fn config() -> AccessKeyConfig {
    AccessKeyConfig {
        cache_ttl: Duration::from_secs(30),
        default_overlap: Duration::from_secs(3600),
        ..AccessKeyConfig::default()
    }
}

impl Hub {
    /// Tenants `acme` (groups `acme/plant-1`, `acme/plant-2`) and `other`.
    pub async fn new() -> Self {
        Self::with_config(config()).await
    }

    pub async fn with_config(config: AccessKeyConfig) -> Self {
        let stores = MemoryStore::new(Default::default()).into_stores();
        let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000).unwrap());
        let keys = Arc::new(AccessKeys::new(&stores, Arc::new(clock.clone()), config));
        let mut state = RegistryState::new(stores.clone(), keys.clone(), Arc::new(clock.clone()));
        // Small argon2 parameters keep the tests quick; the PHC string carries them.
        state.passwords = PasswordPolicy {
            memory_kib: 64,
            iterations: 1,
            ..PasswordPolicy::default()
        };
        let hub = Hub {
            stores,
            clock,
            keys,
            app: router(state),
        };
        let now = hub.clock_now();
        for t in ["acme", "other"] {
            hub.stores
                .registry
                .create_tenant(&t.parse().unwrap(), t, now)
                .await
                .unwrap();
        }
        for g in ["acme/plant-1", "acme/plant-2", "other/site"] {
            hub.stores
                .registry
                .create_group(&g.parse().unwrap(), g, now)
                .await
                .unwrap();
        }
        hub
    }

    pub fn clock_now(&self) -> Timestamp {
        use hub_core::Clock;
        self.clock.now()
    }

    pub async fn call(
        &self,
        principal: Option<&Principal>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.call_raw(principal, method, uri, body).await;
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(Value::String(body))
        };
        (status, json)
    }

    pub async fn call_raw(
        &self,
        principal: Option<&Principal>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let mut req = req
            .body(match body {
                Some(b) => Body::from(b.to_string()),
                None => Body::empty(),
            })
            .unwrap();
        if let Some(p) = principal {
            req.extensions_mut().insert(p.clone());
        }
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// Registers `id` in `group` as the hub administrator; returns its access key.
    pub async fn register(&self, id: &str, group: &str) -> String {
        let tenant = group.split('/').next().unwrap();
        let (status, body) = self
            .call(
                Some(&hub_admin()),
                Method::POST,
                &format!("/v1/tenants/{tenant}/devices"),
                Some(serde_json::json!({"id": id, "group": group})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["access_key"].as_str().unwrap().to_owned()
    }

    pub async fn auth(
        &self,
        device: Option<&str>,
        key: &str,
    ) -> Result<Principal, hub_core::Error> {
        use hub_core::Authenticator;
        let c = Credentials::AccessKey {
            device: device.map(|d| d.parse().unwrap()),
            key: Secret::new(key),
        };
        self.keys.authenticate(&c).await
    }
}

pub fn user(group: &str, role: Role) -> Principal {
    Principal::User(UserPrincipal {
        id: "someone".parse().unwrap(),
        group: group.parse().unwrap(),
        scopes: role.scopes(),
    })
}

pub fn hub_admin() -> Principal {
    Principal::Service(ServicePrincipal {
        name: "hub-admin".into(),
        root: None,
        scopes: ScopeSet::all(),
    })
}

pub fn service(root: &str, scopes: &str) -> Principal {
    Principal::Service(ServicePrincipal {
        name: "svc".into(),
        root: Some(root.parse().unwrap()),
        scopes: scopes.parse().unwrap(),
    })
}
