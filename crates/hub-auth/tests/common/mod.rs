//! A hub with the authorization server and one protected route, served on 127.0.0.1, and a tiny
//! HTTP/1 client over hyper that the `oauth2` crate uses as its async HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hub_auth::keys::{Algorithm, KeySet, SharedKeys};
use hub_auth::oauth::{AuthServer, OAuthConfig, hash_client_secret};
use hub_auth::password::hash_password;
use hub_auth::tokens::{TokenValidator, ValidatorConfig};
use hub_auth::{AuthLayer, HubAuthenticator};
use hub_core::{Action, Clock, Principal, Resource, Role, SystemClock, authorize};
use hub_store::memory::MemoryStore;
use hub_store::{NewUser, OAuthClient, StoreLimits, Stores};
use hyper_util::rt::TokioIo;

pub(crate) type HttpRequest = http::Request<Vec<u8>>;
pub(crate) type HttpResponse = http::Response<Vec<u8>>;

/// Sends one request on a fresh connection.
pub(crate) async fn send(req: HttpRequest) -> Result<HttpResponse, std::io::Error> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .ok_or_else(|| std::io::Error::other("no authority"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(std::io::Error::other)?;
    parts.headers.insert(
        http::header::HOST,
        authority.as_str().parse().map_err(std::io::Error::other)?,
    );
    let res = sender
        .send_request(http::Request::from_parts(
            parts,
            Full::new(Bytes::from(body)),
        ))
        .await
        .map_err(std::io::Error::other)?;
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes()
        .to_vec();
    Ok(http::Response::from_parts(parts, body))
}

/// The `oauth2` crate's async HTTP client.
pub(crate) fn oauth_client(
    req: oauth2::HttpRequest,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, std::io::Error>>>,
> {
    Box::pin(send(req))
}

pub(crate) struct Hub {
    pub(crate) addr: SocketAddr,
    pub(crate) base: String,
    pub(crate) stores: Stores,
    pub(crate) keys: SharedKeys,
    pub(crate) validator: Arc<TokenValidator>,
}

pub(crate) const PASSWORD: &str = "correct horse battery";
pub(crate) const SECRET: &str = "reporter-secret-0123456789abcdef0123456789abcdef";

/// A protected resource: pump-7 in acme/plant-1; answers whether the caller may read its jobs.
async fn pump(p: Principal) -> Result<String, hub_core::Error> {
    let r = Resource::device("acme/plant-1".parse().unwrap(), "pump-7".parse().unwrap());
    authorize(&p, Action::ReadJobs, &r)?;
    Ok(p.describe())
}

pub(crate) async fn start() -> Hub {
    let stores = MemoryStore::new(StoreLimits::default()).into_stores();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = SharedKeys::new(KeySet::generate(Algorithm::Es256, clock.now()).unwrap());
    let validator = Arc::new(
        TokenValidator::new(ValidatorConfig::new(&base), clock.clone())
            .with_local_issuer(&base, keys.clone()),
    );
    let mut config = OAuthConfig::new(&base);
    config.device_poll_interval = Duration::from_secs(1);
    let server = Arc::new(
        AuthServer::new(
            config,
            stores.registry.clone(),
            stores.credentials.clone(),
            keys.clone(),
            validator.clone(),
            clock.clone(),
        )
        .unwrap(),
    );
    let api = Router::new()
        .route("/v1/tenants/acme/devices/pump-7/jobs", get(pump))
        .layer(AuthLayer::new(Arc::new(HubAuthenticator::new(
            validator.clone(),
        ))));
    let app = hub_auth::oauth::router(server).merge(api);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    seed(&stores, &base).await;
    Hub {
        addr,
        base,
        stores,
        keys,
        validator,
    }
}

async fn seed(stores: &Stores, _base: &str) {
    let now = SystemClock.now();
    let r = &stores.registry;
    for t in ["acme", "globex"] {
        r.create_tenant(&t.parse().unwrap(), t, now).await.unwrap();
    }
    r.create_group(&"acme/plant-1".parse().unwrap(), "Plant 1", now)
        .await
        .unwrap();
    let hash = hash_password(PASSWORD).unwrap();
    for (user, group, role) in [
        ("alice", "acme/plant-1", Role::Operator),
        ("bob", "globex", Role::Admin),
    ] {
        let u = r
            .create_user(
                NewUser {
                    id: user.parse().unwrap(),
                    group: group.parse().unwrap(),
                    display_name: user.to_uppercase(),
                    email: Some(format!("{user}@example.com")),
                    role,
                },
                now,
            )
            .await
            .unwrap();
        stores
            .credentials
            .set_password_hash(&u.tenant, &u.id, hash.clone())
            .await
            .unwrap();
    }
    let client = |id: &str, group: &str, secret: Option<&str>, grants: &[&str]| OAuthClient {
        id: id.parse().unwrap(),
        group: group.parse().unwrap(),
        display_name: format!("The {id} app"),
        redirect_uris: vec!["http://127.0.0.1:8765/callback".into()],
        secret_hash: secret.map(hash_client_secret),
        grant_types: grants.iter().map(|g| g.to_string()).collect(),
        scopes: "jobs:read jobs:write devices:read".parse().unwrap(),
        created_at: now,
    };
    for c in [
        client(
            "dashboard",
            "acme",
            None,
            &["authorization_code", "refresh_token"],
        ),
        client(
            "cli",
            "acme",
            None,
            &[
                "urn:ietf:params:oauth:grant-type:device_code",
                "refresh_token",
            ],
        ),
        client(
            "reporter",
            "acme/plant-1",
            Some(SECRET),
            &["client_credentials"],
        ),
        client(
            "globex-reporter",
            "globex",
            Some(SECRET),
            &["client_credentials"],
        ),
        client("globex-app", "globex", None, &["authorization_code"]),
    ] {
        r.create_client(c).await.unwrap();
    }
}

/// A request with an optional form body.
pub(crate) fn request(
    method: &str,
    url: &str,
    form: Option<&[(&str, &str)]>,
    headers: &[(&str, &str)],
) -> HttpRequest {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = match form {
        Some(f) => {
            b = b.header("content-type", "application/x-www-form-urlencoded");
            oauth2::url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(f.iter())
                .finish()
                .into_bytes()
        }
        None => Vec::new(),
    };
    b.body(body).unwrap()
}

/// The CSRF cookie a page set.
pub(crate) fn csrf_of(res: &HttpResponse) -> String {
    let c = res.headers()["set-cookie"].to_str().unwrap();
    c.split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned()
}

/// Signs in on the authorization page the `authorize_url` leads to, and returns the redirect.
pub(crate) async fn sign_in(authorize_url: &str, user: &str, password: &str) -> HttpResponse {
    let page = send(request("GET", authorize_url, None, &[]))
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        200,
        "{}",
        String::from_utf8_lossy(page.body())
    );
    let csrf = csrf_of(&page);
    let url = oauth2::url::Url::parse(authorize_url).unwrap();
    let mut form: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("csrf".into(), csrf.clone()));
    form.push(("username".into(), user.into()));
    form.push(("password".into(), password.into()));
    form.push(("action".into(), "approve".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let target = format!("{}://{}/oauth/authorize", url.scheme(), url.authority());
    let cookie = format!("hub_csrf={csrf}");
    send(request(
        "POST",
        &target,
        Some(&pairs),
        &[("cookie", &cookie)],
    ))
    .await
    .unwrap()
}

/// The query parameters of a redirect's Location.
pub(crate) fn location_params(res: &HttpResponse) -> std::collections::HashMap<String, String> {
    let loc = res.headers()["location"].to_str().unwrap();
    oauth2::url::Url::parse(loc)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
