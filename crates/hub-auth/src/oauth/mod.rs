//! The authorization server (feature `http`): discovery (RFC 8414, OpenID Connect), JWKS, the
//! token endpoint (authorization code with PKCE S256, refresh tokens with rotation and reuse
//! detection, client credentials, the device authorization grant of RFC 8628), the sign-in and
//! consent page, the device code entry page, userinfo, revocation (RFC 7009) and introspection
//! (RFC 7662).
//!
//! Mount [`router`] at the root of the hub's HTTPS server; [`openapi`] describes its routes.
//!
//! Client secrets are stored hashed in `OAuthClient::secret_hash`: either an argon2id PHC string
//! ([`crate::password::hash_password`]) or [`hash_client_secret`]'s `$sha256$` form (enough for
//! the hub's random 256-bit secrets, and much cheaper per token request).
//!
//! The token, revocation and introspection endpoints answer errors in RFC 6749's form
//! (`{"error", "error_description"}`), which OAuth clients parse; the body also carries the
//! problem fields `title`, `status` and `detail`.

pub mod core;
mod pages;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64STD;
use http::header::{AUTHORIZATION, CACHE_CONTROL, SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use hub_core::{
    AppPrincipal, Clock, Principal, ScopeSet, ServicePrincipal, Timestamp, UserPrincipal,
};
use hub_store::{
    CredentialStore, Grant, GrantKind, GrantState, OAuthClient, RefreshToken, RegistryStore,
    RotateOutcome, User,
};

use self::core::{ScopeRequest, Throttle, ThrottleConfig};
use crate::keys::SharedKeys;
use crate::password::verify_password;
use crate::secrets::{ct_eq, fill_random, random_token, sha256_b64};
use crate::tokens::{AccessClaims, IdClaims, TokenValidator};

/// The grant type name of the device authorization grant.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How the authorization server behaves.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The issuer identifier: the server's https URL without a trailing slash.
    pub issuer: String,
    /// The audience of the access tokens (the hub's Web API).
    pub audience: String,
    /// Access token lifetime. Default 10 minutes.
    pub access_token_ttl: Duration,
    /// ID token lifetime. Default 10 minutes.
    pub id_token_ttl: Duration,
    /// Refresh token lifetime. Default 30 days.
    pub refresh_token_ttl: Duration,
    /// Authorization code lifetime. Default 60 s.
    pub code_ttl: Duration,
    /// Device code lifetime. Default 10 minutes.
    pub device_code_ttl: Duration,
    /// The device flow's polling interval. Default 5 s.
    pub device_poll_interval: Duration,
    /// Brute-force throttling of sign-ins.
    pub throttle: ThrottleConfig,
}

impl OAuthConfig {
    /// The defaults for `issuer`, which is also the audience.
    pub fn new(issuer: impl Into<String>) -> Self {
        let issuer: String = issuer.into();
        Self {
            audience: issuer.clone(),
            issuer,
            access_token_ttl: Duration::from_secs(600),
            id_token_ttl: Duration::from_secs(600),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            code_ttl: Duration::from_secs(60),
            device_code_ttl: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(5),
            throttle: ThrottleConfig::default(),
        }
    }
}

/// The `secret_hash` of a client secret: the `$sha256$` form of
/// [`client_secrets`](crate::client_secrets), for the hub's random 256-bit secrets.
pub fn hash_client_secret(secret: &str) -> String {
    crate::secrets::sha256_hash(secret)
}

fn client_secret_matches(hash: &str, secret: &str) -> bool {
    crate::client_secrets::verify_client_secret(hash, secret)
}

/// The authorization server's state, shared by its routes.
pub struct AuthServer {
    config: OAuthConfig,
    registry: Arc<dyn RegistryStore>,
    credentials: Arc<dyn CredentialStore>,
    keys: SharedKeys,
    validator: Arc<TokenValidator>,
    clock: Arc<dyn Clock>,
    throttle: Mutex<Throttle>,
    polls: Mutex<HashMap<String, Timestamp>>,
    /// Redeemed authorization codes and what they gave, so that a replay revokes it.
    redeemed: Mutex<HashMap<String, Redeemed>>,
    dummy_hash: String,
}

impl fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AuthServer {
    /// A server that signs with `keys` and checks its own tokens (userinfo, revocation,
    /// introspection) with `validator`, which must accept `config.issuer` with the same keys.
    pub fn new(
        config: OAuthConfig,
        registry: Arc<dyn RegistryStore>,
        credentials: Arc<dyn CredentialStore>,
        keys: SharedKeys,
        validator: Arc<TokenValidator>,
        clock: Arc<dyn Clock>,
    ) -> hub_core::Result<Self> {
        Ok(Self {
            throttle: Mutex::new(Throttle::new(config.throttle)),
            config,
            registry,
            credentials,
            keys,
            validator,
            clock,
            polls: Mutex::new(HashMap::new()),
            redeemed: Mutex::new(HashMap::new()),
            // Unknown users cost the same argon2 work as known ones.
            dummy_hash: crate::password::hash_password(&random_token(16)?)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a redeemed authorization code gave, remembered for the access token's lifetime.
#[derive(Debug)]
struct Redeemed {
    family: String,
    jti: Option<String>,
    until: Timestamp,
}

/// The most redeemed codes remembered.
const MAX_REDEEMED: usize = 100_000;

/// An OAuth error response (RFC 6749 section 5.2).
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    basic_challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }
    fn request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    fn grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    fn client() -> Self {
        Self {
            basic_challenge: true,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
    }
}

impl From<hub_core::Error> for OAuthError {
    fn from(e: hub_core::Error) -> Self {
        tracing::error!(error = %e, "authorization server failure");
        Self::new(
            StatusCode::from_u16(e.kind().http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            if e.kind().is_retryable() {
                "temporarily_unavailable"
            } else {
                "server_error"
            },
            e.detail().to_owned(),
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.error,
            "error_description": self.description,
            "title": self.error,
            "status": self.status.as_u16(),
            "detail": self.description,
        });
        let mut r = (self.status, axum::Json(body)).into_response();
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.basic_challenge {
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oauth\""),
            );
        }
        r
    }
}

/// A form body whose rejection is an OAuth `invalid_request`.
struct OForm<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for OForm<T> {
    type Rejection = OAuthError;
    async fn from_request(req: Request, state: &S) -> Result<Self, OAuthError> {
        Form::<T>::from_request(req, state)
            .await
            .map(|Form(t)| OForm(t))
            .map_err(|e| OAuthError::request(format!("the form is not valid: {e}")))
    }
}

type Shared = State<Arc<AuthServer>>;

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The authorization server's routes, at the paths of the Web API conventions.
pub fn router(server: Arc<AuthServer>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/oauth/jwks", get(jwks))
        .route("/oauth/token", post(token))
        .route(
            "/oauth/authorize",
            get(authorize_page).post(authorize_submit),
        )
        .route("/oauth/device_authorization", post(device_authorization))
        .route("/oauth/device", get(device_page).post(device_submit))
        .route("/oauth/revoke", post(revoke))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/userinfo", get(userinfo).post(userinfo))
        .with_state(server)
}

/// The OpenAPI description of [`router`]'s routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{PathsBuilder, ResponseBuilder};
    let op = |summary: &str, tag: &str| {
        OperationBuilder::new()
            .summary(Some(summary))
            .tag(tag)
            .response("200", ResponseBuilder::new().description("Success").build())
            .build()
    };
    let routes: [(&str, HttpMethod, &str); 14] = [
        (
            "/.well-known/openid-configuration",
            HttpMethod::Get,
            "OpenID Connect discovery",
        ),
        (
            "/.well-known/oauth-authorization-server",
            HttpMethod::Get,
            "RFC 8414 metadata",
        ),
        ("/oauth/jwks", HttpMethod::Get, "The signing keys (JWKS)"),
        (
            "/oauth/token",
            HttpMethod::Post,
            "Token endpoint (authorization_code, refresh_token, client_credentials, device_code)",
        ),
        (
            "/oauth/authorize",
            HttpMethod::Get,
            "Sign-in and consent page",
        ),
        (
            "/oauth/authorize",
            HttpMethod::Post,
            "Sign-in and consent form",
        ),
        (
            "/oauth/device_authorization",
            HttpMethod::Post,
            "Device authorization (RFC 8628)",
        ),
        ("/oauth/device", HttpMethod::Get, "User code entry page"),
        ("/oauth/device", HttpMethod::Post, "User code entry form"),
        (
            "/oauth/revoke",
            HttpMethod::Post,
            "Token revocation (RFC 7009)",
        ),
        (
            "/oauth/introspect",
            HttpMethod::Post,
            "Token introspection (RFC 7662)",
        ),
        (
            "/oauth/userinfo",
            HttpMethod::Get,
            "OpenID Connect userinfo",
        ),
        (
            "/oauth/userinfo",
            HttpMethod::Post,
            "OpenID Connect userinfo",
        ),
        ("/oauth/token", HttpMethod::Post, "Token endpoint"),
    ];
    let mut paths = PathsBuilder::new();
    for (path, method, summary) in routes.iter().take(13) {
        paths = paths.path(*path, PathItem::new(method.clone(), op(summary, "oauth")));
    }
    let mut api = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("hub-auth")
                .version("0.1.0")
                .build(),
        )
        .paths(paths.build())
        .build();
    // PathsBuilder::path replaces an item per path; merge the second method of a path back in.
    for (path, method, summary) in routes.iter().take(13) {
        if let Some(item) = api.paths.paths.get_mut(*path) {
            let present = match method {
                HttpMethod::Get => item.get.is_some(),
                HttpMethod::Post => item.post.is_some(),
                _ => true,
            };
            if !present {
                let o = op(summary, "oauth");
                match method {
                    HttpMethod::Get => item.get = Some(o),
                    HttpMethod::Post => item.post = Some(o),
                    _ => {}
                }
            }
        }
    }
    api
}

async fn discovery(State(s): Shared) -> Response {
    let i = &s.config.issuer;
    let doc = json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/oauth/authorize"),
        "token_endpoint": format!("{i}/oauth/token"),
        "jwks_uri": format!("{i}/oauth/jwks"),
        "userinfo_endpoint": format!("{i}/oauth/userinfo"),
        "revocation_endpoint": format!("{i}/oauth/revoke"),
        "introspection_endpoint": format!("{i}/oauth/introspect"),
        "device_authorization_endpoint": format!("{i}/oauth/device_authorization"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", DEVICE_CODE_GRANT],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": core::OIDC_SCOPES.iter().copied().chain(hub_core::Scope::ALL.iter().map(|s| s.as_str())).collect::<Vec<_>>(),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "EdDSA"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "name", "email", "hub_grp"],
        "authorization_response_iss_parameter_supported": true,
    });
    axum::Json(doc).into_response()
}

async fn jwks(State(s): Shared) -> Response {
    let mut r = axum::Json(s.keys.snapshot().jwks()).into_response();
    r.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Client authentication.

fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `client_id` and `client_secret` as sent in a form (client_secret_post).
#[derive(Debug, Default, Deserialize)]
struct ClientForm {
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl AuthServer {
    /// Authenticates the client of a back-channel request. A public client names itself with
    /// `client_id` alone; a confidential one must prove its secret (basic or post, not both).
    async fn client(
        &self,
        headers: &HeaderMap,
        form: &ClientForm,
        confidential_only: bool,
    ) -> Result<OAuthClient, OAuthError> {
        let basic = match headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            Some(v) if v.len() > 6 && v[..6].eq_ignore_ascii_case("basic ") => {
                let raw = B64STD
                    .decode(v[6..].trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(OAuthError::client)?;
                let (id, secret) = raw.split_once(':').ok_or_else(OAuthError::client)?;
                Some((
                    pct_decode(id).ok_or_else(OAuthError::client)?,
                    pct_decode(secret).ok_or_else(OAuthError::client)?,
                ))
            }
            _ => None,
        };
        let (id, secret) = match (basic, &form.client_secret) {
            (Some(_), Some(_)) => {
                return Err(OAuthError::request("use one client authentication method"));
            }
            (Some((id, secret)), None) => {
                if form.client_id.as_deref().is_some_and(|f| f != id) {
                    return Err(OAuthError::client());
                }
                (id, Some(secret))
            }
            (None, secret) => (
                form.client_id
                    .clone()
                    .ok_or_else(|| OAuthError::request("client_id is missing"))?,
                secret.clone(),
            ),
        };
        let id: hub_core::ClientId = id.parse().map_err(|_| OAuthError::client())?;
        let client = self
            .registry
            .get_client(&id)
            .await?
            .ok_or_else(OAuthError::client)?;
        match (&client.secret_hash, secret) {
            (Some(hash), Some(secret)) if client_secret_matches(hash, &secret) => Ok(client),
            (None, None) if !confidential_only => Ok(client),
            _ => Err(OAuthError::client()),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

fn allows(client: &OAuthClient, grant: &str) -> bool {
    client
        .grant_types
        .iter()
        .any(|g| g == grant || (grant == DEVICE_CODE_GRANT && g == "device_code"))
}

// ---------------------------------------------------------------------------------------------
// Token endpoint.

#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    device_code: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// What a grant stores to finish a user-delegated flow.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct GrantPayload {
    client_id: String,
    #[serde(default)]
    redirect_uri: Option<String>,
    scope: ScopeSet,
    #[serde(default)]
    oidc: String,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    auth_time: Option<i64>,
}

async fn token(State(s): Shared, headers: HeaderMap, OForm(f): OForm<TokenForm>) -> Response {
    match s.token(&headers, f).await {
        Ok(body) => no_store(axum::Json(body).into_response()),
        Err(e) => e.into_response(),
    }
}

impl AuthServer {
    async fn token(&self, headers: &HeaderMap, f: TokenForm) -> Result<Value, OAuthError> {
        let cf = ClientForm {
            client_id: f.client_id.clone(),
            client_secret: f.client_secret.clone(),
        };
        let grant_type = f
            .grant_type
            .clone()
            .ok_or_else(|| OAuthError::request("grant_type is missing"))?;
        let confidential_only = grant_type == "client_credentials";
        let client = self.client(headers, &cf, confidential_only).await?;
        if !allows(&client, &grant_type) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "the client may not use this grant type",
            ));
        }
        match grant_type.as_str() {
            "client_credentials" => self.client_credentials(&client, f).await,
            "authorization_code" => self.authorization_code(&client, f).await,
            "refresh_token" => self.refresh(&client, f).await,
            DEVICE_CODE_GRANT => self.device_code(&client, f).await,
            _ => Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "the grant type is not supported",
            )),
        }
    }

    fn access_token(
        &self,
        principal: &Principal,
        client: &OAuthClient,
    ) -> Result<(String, ScopeSet), OAuthError> {
        let claims = AccessClaims::for_principal(
            &self.config.issuer,
            &self.config.audience,
            principal,
            client.id.as_str(),
            self.now(),
            self.config.access_token_ttl,
        )?;
        let token = claims.sign(&self.keys.snapshot())?;
        Ok((token, crate::tokens::parse_scopes_lenient(&claims.scope)))
    }

    async fn client_credentials(
        &self,
        client: &OAuthClient,
        f: TokenForm,
    ) -> Result<Value, OAuthError> {
        let req = ScopeRequest::parse(f.scope.as_deref())
            .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e))?;
        let scopes = req
            .grant(client.scopes)
            .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e))?;
        let principal = Principal::Service(ServicePrincipal {
            name: client.id.to_string(),
            root: Some(client.group.clone()),
            scopes,
        });
        let (token, scopes) = self.access_token(&principal, client)?;
        Ok(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.config.access_token_ttl.as_secs(),
            "scope": scopes.to_string(),
        }))
    }

    /// The user a grant names, if they may still act: it exists in the client's tenant and is
    /// not disabled.
    async fn grant_user(
        &self,
        client: &OAuthClient,
        user: Option<&str>,
    ) -> Result<User, OAuthError> {
        let id: hub_core::UserId = user
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| OAuthError::grant("the grant names no user"))?;
        match self.registry.get_user(&client.tenant(), &id).await? {
            Some(u) if !u.disabled => Ok(u),
            _ => Err(OAuthError::grant("the user may no longer sign in")),
        }
    }

    /// Issues the tokens of a user-delegated grant: an access token for the app acting for the
    /// user, an ID token when `openid` was granted, a refresh token when the client may refresh.
    #[allow(clippy::too_many_arguments)]
    async fn user_tokens(
        &self,
        client: &OAuthClient,
        user: &User,
        scopes: ScopeSet,
        oidc: &str,
        nonce: Option<String>,
        auth_time: i64,
        refresh: Option<String>,
    ) -> Result<Value, OAuthError> {
        let up = UserPrincipal {
            id: user.id.clone(),
            group: user.group.clone(),
            scopes: user.role.scopes(),
        };
        let principal = Principal::App(AppPrincipal::new(client.id.clone(), up, scopes));
        let (access, granted) = self.access_token(&principal, client)?;
        let now = self.now();
        let mut scope_str = granted.to_string();
        if !oidc.is_empty() {
            scope_str = format!("{oidc} {scope_str}").trim().to_owned();
        }
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.config.access_token_ttl.as_secs(),
            "scope": scope_str,
        });
        if oidc.split(' ').any(|s| s == "openid") {
            let id = IdClaims {
                iss: self.config.issuer.clone(),
                sub: user.id.to_string(),
                aud: client.id.to_string(),
                exp: now.saturating_add(self.config.id_token_ttl).as_millis() / 1000,
                iat: now.as_millis() / 1000,
                auth_time,
                nonce,
                name: oidc
                    .split(' ')
                    .any(|s| s == "profile")
                    .then(|| user.display_name.clone()),
                email: if oidc.split(' ').any(|s| s == "email") {
                    user.email.clone()
                } else {
                    None
                },
                hub_grp: user.group.clone(),
            };
            body["id_token"] = Value::String(id.sign(&self.keys.snapshot())?);
        }
        if let Some(r) = refresh {
            body["refresh_token"] = Value::String(r);
        }
        Ok(body)
    }

    fn new_refresh(
        &self,
        client: &OAuthClient,
        user: &User,
        scopes: ScopeSet,
        family: String,
    ) -> Result<(String, RefreshToken), OAuthError> {
        let secret = random_token(32)?;
        let now = self.now();
        Ok((
            secret.clone(),
            RefreshToken {
                token_hash: sha256_b64(&secret),
                family,
                tenant: client.tenant(),
                user: Some(user.id.clone()),
                client: client.id.clone(),
                scopes,
                expires_at: now.saturating_add(self.config.refresh_token_ttl),
                created_at: now,
            },
        ))
    }

    async fn finish_user_grant(
        &self,
        client: &OAuthClient,
        p: GrantPayload,
        family: String,
    ) -> Result<Value, OAuthError> {
        let user = self.grant_user(client, p.user.as_deref()).await?;
        let refresh = if allows(client, "refresh_token") {
            let (secret, rt) = self.new_refresh(client, &user, p.scope, family)?;
            self.credentials.create_refresh(rt).await?;
            Some(secret)
        } else {
            None
        };
        self.user_tokens(
            client,
            &user,
            p.scope,
            &p.oidc,
            p.nonce,
            p.auth_time.unwrap_or(self.now().as_millis() / 1000),
            refresh,
        )
        .await
    }

    async fn authorization_code(
        &self,
        client: &OAuthClient,
        f: TokenForm,
    ) -> Result<Value, OAuthError> {
        let code = f
            .code
            .ok_or_else(|| OAuthError::request("code is missing"))?;
        let verifier = f
            .code_verifier
            .ok_or_else(|| OAuthError::request("code_verifier is missing (PKCE is required)"))?;
        // Consumed first: a code works once, whatever happens next.
        let hash = sha256_b64(&code);
        let Some(grant) = self
            .credentials
            .consume_grant(GrantKind::AuthorizationCode, &hash, self.now())
            .await?
        else {
            self.revoke_replayed(&hash).await?;
            return Err(OAuthError::grant("the code is unknown, used or expired"));
        };
        let p: GrantPayload = serde_json::from_value(grant.payload)
            .map_err(|_| OAuthError::grant("the code is not valid"))?;
        if p.client_id != client.id.as_str() {
            return Err(OAuthError::grant("the code was issued to another client"));
        }
        if p.redirect_uri.as_deref() != f.redirect_uri.as_deref() {
            return Err(OAuthError::grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        let challenge = p.code_challenge.as_deref().unwrap_or("");
        if !core::pkce_s256_matches(&verifier, challenge) {
            return Err(OAuthError::grant("the PKCE code_verifier does not match"));
        }
        let family = random_token(16)?;
        let body = self.finish_user_grant(client, p, family.clone()).await?;
        let jti = match body["access_token"].as_str() {
            Some(t) => self
                .validator
                .validate(t)
                .await
                .ok()
                .and_then(|v| v.jti.clone()),
            None => None,
        };
        let now = self.now();
        let mut redeemed = lock(&self.redeemed);
        redeemed.retain(|_, r| now < r.until);
        if redeemed.len() < MAX_REDEEMED {
            let until = now.saturating_add(self.config.access_token_ttl.max(self.config.code_ttl));
            redeemed.insert(hash, Redeemed { family, jti, until });
        }
        Ok(body)
    }

    /// A used code presented again (RFC 6749 section 4.1.2): the tokens it gave are revoked.
    async fn revoke_replayed(&self, hash: &str) -> Result<(), OAuthError> {
        let Some(r) = lock(&self.redeemed).remove(hash) else {
            return Ok(());
        };
        tracing::warn!("authorization code replayed; its tokens are revoked");
        self.credentials.revoke_family(&r.family).await?;
        if let Some(jti) = &r.jti {
            self.validator
                .revocations()
                .revoke(jti, r.until, self.now());
        }
        Ok(())
    }

    async fn refresh(&self, client: &OAuthClient, f: TokenForm) -> Result<Value, OAuthError> {
        let old = f
            .refresh_token
            .ok_or_else(|| OAuthError::request("refresh_token is missing"))?;
        let old_hash = sha256_b64(&old);
        let record = self
            .credentials
            .get_refresh(&old_hash)
            .await?
            .ok_or_else(|| OAuthError::grant("the refresh token is not valid"))?;
        if record.token.client != client.id {
            return Err(OAuthError::grant("the refresh token is not valid"));
        }
        let req = ScopeRequest::parse(f.scope.as_deref())
            .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e))?;
        let scopes = req
            .grant(record.token.scopes)
            .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e))?;
        let user = self
            .grant_user(client, record.token.user.as_ref().map(|u| u.as_str()))
            .await?;
        let (secret, new) = self.new_refresh(
            client,
            &user,
            record.token.scopes,
            record.token.family.clone(),
        )?;
        match self
            .credentials
            .rotate_refresh(&old_hash, new, self.now())
            .await?
        {
            RotateOutcome::Rotated(_) => {}
            RotateOutcome::Reused { family } => {
                tracing::warn!(client = %client.id, family = %family, "refresh token reused; family revoked");
                return Err(OAuthError::grant(
                    "the refresh token was used before; its family is revoked",
                ));
            }
            RotateOutcome::Invalid => {
                return Err(OAuthError::grant("the refresh token is not valid"));
            }
        }
        self.user_tokens(
            client,
            &user,
            scopes,
            // No new ID token on refresh: the sign-in it describes has not changed.
            "",
            None,
            record.token.created_at.as_millis() / 1000,
            Some(secret),
        )
        .await
    }

    async fn device_code(&self, client: &OAuthClient, f: TokenForm) -> Result<Value, OAuthError> {
        let code = f
            .device_code
            .ok_or_else(|| OAuthError::request("device_code is missing"))?;
        let hash = sha256_b64(&code);
        let now = self.now();
        let grant = self
            .credentials
            .get_grant(GrantKind::DeviceCode, &hash, now)
            .await?
            .ok_or_else(|| {
                OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "expired_token",
                    "the device code is unknown or expired",
                )
            })?;
        let p: GrantPayload = serde_json::from_value(grant.payload.clone())
            .map_err(|_| OAuthError::grant("the device code is not valid"))?;
        if p.client_id != client.id.as_str() {
            return Err(OAuthError::grant(
                "the device code was issued to another client",
            ));
        }
        match grant.state {
            GrantState::Pending => {
                let mut polls = lock(&self.polls);
                polls.retain(|_, t| now.duration_since(*t) < self.config.device_code_ttl);
                let last = polls.insert(hash, now);
                let too_fast =
                    last.is_some_and(|l| now.duration_since(l) < self.config.device_poll_interval);
                Err(if too_fast {
                    OAuthError::new(StatusCode::BAD_REQUEST, "slow_down", "poll less often")
                } else {
                    OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        "authorization_pending",
                        "the user has not answered yet",
                    )
                })
            }
            GrantState::Denied => Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "access_denied",
                "the user denied the request",
            )),
            GrantState::Approved => {
                let grant = self
                    .credentials
                    .consume_grant(GrantKind::DeviceCode, &hash, now)
                    .await?
                    .ok_or_else(|| OAuthError::grant("the device code was used"))?;
                lock(&self.polls).remove(&grant.key_hash);
                let p: GrantPayload = serde_json::from_value(grant.payload)
                    .map_err(|_| OAuthError::grant("the device code is not valid"))?;
                self.finish_user_grant(client, p, random_token(16)?).await
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The authorization endpoint: sign-in and consent.

#[derive(Debug, Default, Clone, Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    // The form's own fields.
    csrf: Option<String>,
    username: Option<String>,
    password: Option<String>,
    action: Option<String>,
}

const CSRF_COOKIE: &str = "hub_csrf";

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, Html(body)).into_response();
    let h = r.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The pages must not be framed (clickjacking of the consent button).
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    r
}

fn with_csrf_cookie(mut r: Response, csrf: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={csrf}; Path=/oauth; HttpOnly; SameSite=Strict"
    )) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

fn csrf_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == CSRF_COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn csrf_ok(headers: &HeaderMap, form: Option<&str>) -> bool {
    match (csrf_cookie(headers), form) {
        (Some(c), Some(f)) => !c.is_empty() && ct_eq(c.as_bytes(), f.as_bytes()),
        _ => false,
    }
}

fn redirect_with(uri: &str, params: &[(&str, &str)]) -> Response {
    let mut target = uri.to_owned();
    let mut sep = if uri.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        target.push(sep);
        target.push_str(k);
        target.push('=');
        target.push_str(&pct_encode(v));
        sep = '&';
    }
    no_store(Redirect::to(&target).into_response())
}

/// A checked authorization request.
struct Checked {
    client: OAuthClient,
    redirect_uri: String,
    scopes: ScopeRequest,
    granted: ScopeSet,
}

enum Rejection {
    /// Shown on our page: the redirect URI cannot be trusted.
    Page(String),
    /// Sent back to the client's redirect URI.
    Redirect(String, &'static str, String, Option<String>),
}

impl Rejection {
    fn respond(self, iss: &str) -> Response {
        match self {
            Rejection::Page(m) => html(StatusCode::BAD_REQUEST, pages::error_page(&m)),
            Rejection::Redirect(uri, error, desc, state) => {
                let mut p = vec![
                    ("error", error),
                    ("error_description", desc.as_str()),
                    ("iss", iss),
                ];
                if let Some(s) = state.as_deref() {
                    p.push(("state", s));
                }
                redirect_with(&uri, &p)
            }
        }
    }
}

impl AuthServer {
    async fn check_authorize(&self, q: &AuthorizeParams) -> Result<Checked, Rejection> {
        let client_id: hub_core::ClientId = q
            .client_id
            .as_deref()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| Rejection::Page("The request names no valid client.".into()))?;
        let client = self
            .registry
            .get_client(&client_id)
            .await
            .map_err(|_| Rejection::Page("The sign-in service is unavailable.".into()))?
            .ok_or_else(|| Rejection::Page("The client is not known.".into()))?;
        let redirect_uri = q
            .redirect_uri
            .clone()
            .filter(|r| core::redirect_uri_allowed(&client.redirect_uris, r))
            .ok_or_else(|| {
                Rejection::Page("The redirect URI is not registered for this client.".into())
            })?;
        let back = |e: &'static str, d: &str| {
            Rejection::Redirect(redirect_uri.clone(), e, d.to_owned(), q.state.clone())
        };
        if q.response_type.as_deref() != Some("code") {
            return Err(back(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        if !allows(&client, "authorization_code") {
            return Err(back(
                "unauthorized_client",
                "the client may not use the authorization code grant",
            ));
        }
        if q.code_challenge_method.as_deref() != Some("S256")
            || q.code_challenge.as_deref().is_none_or(|c| c.len() != 43)
        {
            return Err(back(
                "invalid_request",
                "PKCE with code_challenge_method=S256 is required",
            ));
        }
        let scopes =
            ScopeRequest::parse(q.scope.as_deref()).map_err(|e| back("invalid_scope", &e))?;
        let granted = scopes
            .grant(client.scopes)
            .map_err(|e| back("invalid_scope", &e))?;
        Ok(Checked {
            client,
            redirect_uri,
            scopes,
            granted,
        })
    }

    fn login_page(
        &self,
        q: &AuthorizeParams,
        c: &Checked,
        status: StatusCode,
        error: Option<&str>,
    ) -> Response {
        let csrf = random_token(24).unwrap_or_default();
        let fields = [
            ("response_type", q.response_type.as_deref().unwrap_or("")),
            ("client_id", q.client_id.as_deref().unwrap_or("")),
            ("redirect_uri", c.redirect_uri.as_str()),
            ("scope", q.scope.as_deref().unwrap_or("")),
            ("state", q.state.as_deref().unwrap_or("")),
            ("nonce", q.nonce.as_deref().unwrap_or("")),
            ("code_challenge", q.code_challenge.as_deref().unwrap_or("")),
            (
                "code_challenge_method",
                q.code_challenge_method.as_deref().unwrap_or(""),
            ),
        ];
        let scopes = format!("{} {}", c.scopes.oidc_string(), c.granted)
            .trim()
            .to_owned();
        let body = pages::login_page(&c.client.display_name, &scopes, &fields, &csrf, error);
        with_csrf_cookie(html(status, body), &csrf)
    }

    /// Checks a user's password under the throttle; `Err` is the message to show.
    async fn sign_in(
        &self,
        tenant: &hub_core::TenantId,
        username: &str,
        password: &str,
        addr: &str,
    ) -> Result<User, (StatusCode, String)> {
        let now = self.now();
        let user_key = format!("user:{tenant}/{username}");
        let addr_key = format!("addr:{addr}");
        {
            let th = lock(&self.throttle);
            if let Err(wait) = th.check(&user_key, now).and(th.check(&addr_key, now)) {
                return Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Too many failed attempts. Try again in {} seconds.",
                        wait.as_secs().max(1)
                    ),
                ));
            }
        }
        let user = match username.parse::<hub_core::UserId>() {
            Ok(id) => self.registry.get_user(tenant, &id).await.ok().flatten(),
            Err(_) => None,
        };
        let hash = match &user {
            Some(u) => self
                .credentials
                .get_password_hash(tenant, &u.id)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let ok = verify_password(hash.as_deref().unwrap_or(&self.dummy_hash), password)
            && hash.is_some();
        match user {
            Some(u) if ok && !u.disabled => {
                let mut th = lock(&self.throttle);
                th.success(&user_key);
                th.success(&addr_key);
                Ok(u)
            }
            _ => {
                let mut th = lock(&self.throttle);
                th.failure(&user_key, now);
                th.failure(&addr_key, now);
                Err((
                    StatusCode::UNAUTHORIZED,
                    "The user name or password is not correct.".into(),
                ))
            }
        }
    }
}

fn client_addr(ext: &http::Extensions) -> String {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn authorize_page(State(s): Shared, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let q = match axum::extract::Query::<AuthorizeParams>::from_request_parts(&mut parts, &()).await
    {
        Ok(q) => q.0,
        Err(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error_page("The request is not valid."),
            );
        }
    };
    match s.check_authorize(&q).await {
        Ok(c) => s.login_page(&q, &c, StatusCode::OK, None),
        Err(r) => r.respond(&s.config.issuer),
    }
}

async fn authorize_submit(State(s): Shared, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let addr = client_addr(&parts.extensions);
    let headers = parts.headers.clone();
    let q = match Form::<AuthorizeParams>::from_request(Request::from_parts(parts, body), &()).await
    {
        Ok(f) => f.0,
        Err(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error_page("The form is not valid."),
            );
        }
    };
    let c = match s.check_authorize(&q).await {
        Ok(c) => c,
        Err(r) => return r.respond(&s.config.issuer),
    };
    if !csrf_ok(&headers, q.csrf.as_deref()) {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error_page("The form has expired; go back to the application and start again."),
        );
    }
    let iss = s.config.issuer.clone();
    if q.action.as_deref() != Some("approve") {
        return Rejection::Redirect(
            c.redirect_uri.clone(),
            "access_denied",
            "the user denied the request".into(),
            q.state.clone(),
        )
        .respond(&iss);
    }
    let user = match s
        .sign_in(
            &c.client.tenant(),
            q.username.as_deref().unwrap_or(""),
            q.password.as_deref().unwrap_or(""),
            &addr,
        )
        .await
    {
        Ok(u) => u,
        Err((status, msg)) => return s.login_page(&q, &c, status, Some(&msg)),
    };
    let code = match random_token(32) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let now = s.now();
    let payload = GrantPayload {
        client_id: c.client.id.to_string(),
        redirect_uri: Some(c.redirect_uri.clone()),
        scope: c.granted,
        oidc: c.scopes.oidc_string(),
        nonce: q.nonce.clone().filter(|n| !n.is_empty()),
        code_challenge: q.code_challenge.clone(),
        user: Some(user.id.to_string()),
        auth_time: Some(now.as_millis() / 1000),
    };
    let grant = Grant {
        kind: GrantKind::AuthorizationCode,
        key_hash: sha256_b64(&code),
        user_code: None,
        payload: serde_json::to_value(&payload).unwrap_or_default(),
        expires_at: now.saturating_add(s.config.code_ttl),
        state: GrantState::Approved,
    };
    if let Err(e) = s.credentials.put_grant(grant, now).await {
        return e.into_response();
    }
    let mut p = vec![("code", code.as_str()), ("iss", iss.as_str())];
    if let Some(st) = q.state.as_deref() {
        p.push(("state", st));
    }
    redirect_with(&c.redirect_uri, &p)
}

// ---------------------------------------------------------------------------------------------
// Device authorization (RFC 8628).

#[derive(Debug, Deserialize)]
struct DeviceAuthForm {
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn device_authorization(
    State(s): Shared,
    headers: HeaderMap,
    OForm(f): OForm<DeviceAuthForm>,
) -> Response {
    match s.device_authorization(&headers, f).await {
        Ok(v) => no_store(axum::Json(v).into_response()),
        Err(e) => e.into_response(),
    }
}

impl AuthServer {
    async fn device_authorization(
        &self,
        headers: &HeaderMap,
        f: DeviceAuthForm,
    ) -> Result<Value, OAuthError> {
        let client = self
            .client(
                headers,
                &ClientForm {
                    client_id: f.client_id,
                    client_secret: f.client_secret,
                },
                false,
            )
            .await?;
        if !allows(&client, DEVICE_CODE_GRANT) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "the client may not use the device grant",
            ));
        }
        let req = ScopeRequest::parse(f.scope.as_deref())
            .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e))?;
        let granted = req
            .grant(client.scopes)
            .map_err(|e| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e))?;
        let now = self.now();
        let device_code = random_token(32)?;
        let payload = GrantPayload {
            client_id: client.id.to_string(),
            redirect_uri: None,
            scope: granted,
            oidc: req.oidc_string(),
            nonce: None,
            code_challenge: None,
            user: None,
            auth_time: None,
        };
        // A user code may collide with a live one; draw again a few times.
        for _ in 0..4 {
            let mut r = [0u8; 8];
            fill_random(&mut r)?;
            let user_code = core::user_code(&r);
            let grant = Grant {
                kind: GrantKind::DeviceCode,
                key_hash: sha256_b64(&device_code),
                user_code: Some(user_code.clone()),
                payload: serde_json::to_value(&payload).unwrap_or_default(),
                expires_at: now.saturating_add(self.config.device_code_ttl),
                state: GrantState::Pending,
            };
            match self.credentials.put_grant(grant, now).await {
                Ok(()) => {
                    let shown = core::display_user_code(&user_code);
                    let uri = format!("{}/oauth/device", self.config.issuer);
                    return Ok(json!({
                        "device_code": device_code,
                        "user_code": shown,
                        "verification_uri": uri,
                        "verification_uri_complete": format!("{uri}?user_code={user_code}"),
                        "expires_in": self.config.device_code_ttl.as_secs(),
                        "interval": self.config.device_poll_interval.as_secs(),
                    }));
                }
                Err(e) if e.kind() == hub_core::ErrorKind::Conflict => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OAuthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "try again",
        ))
    }
}

#[derive(Debug, Default, Deserialize)]
struct DeviceForm {
    user_code: Option<String>,
    csrf: Option<String>,
    username: Option<String>,
    password: Option<String>,
    action: Option<String>,
}

fn device_form_page(code: &str, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = random_token(24).unwrap_or_default();
    with_csrf_cookie(html(status, pages::device_page(code, &csrf, error)), &csrf)
}

async fn device_page(req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    let q = axum::extract::Query::<DeviceForm>::from_request_parts(&mut parts, &())
        .await
        .map(|q| q.0)
        .unwrap_or_default();
    let code = q
        .user_code
        .as_deref()
        .map(core::normalize_user_code)
        .unwrap_or_default();
    device_form_page(&core::display_user_code(&code), StatusCode::OK, None)
}

async fn device_submit(State(s): Shared, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let addr = client_addr(&parts.extensions);
    let headers = parts.headers.clone();
    let f = match Form::<DeviceForm>::from_request(Request::from_parts(parts, body), &()).await {
        Ok(f) => f.0,
        Err(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error_page("The form is not valid."),
            );
        }
    };
    let typed = f.user_code.as_deref().unwrap_or("");
    if !csrf_ok(&headers, f.csrf.as_deref()) {
        return device_form_page(
            typed,
            StatusCode::BAD_REQUEST,
            Some("The form has expired; please try again."),
        );
    }
    let now = s.now();
    let code = core::normalize_user_code(typed);
    let grant = match s.credentials.find_grant_by_user_code(&code, now).await {
        Ok(Some(g)) if g.state == GrantState::Pending => g,
        Ok(_) => {
            // Unknown codes count as failures too: guessing codes is brute force.
            lock(&s.throttle).failure(&format!("addr:{addr}"), now);
            return device_form_page(
                typed,
                StatusCode::BAD_REQUEST,
                Some("The code is unknown or has expired."),
            );
        }
        Err(e) => return e.into_response(),
    };
    let Ok(mut payload) = serde_json::from_value::<GrantPayload>(grant.payload.clone()) else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error_page("The code is not valid."),
        );
    };
    let client = match payload.client_id.parse::<hub_core::ClientId>() {
        Ok(id) => match s.registry.get_client(&id).await {
            Ok(Some(c)) => c,
            _ => {
                return html(
                    StatusCode::BAD_REQUEST,
                    pages::error_page("The client is not known."),
                );
            }
        },
        Err(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error_page("The client is not known."),
            );
        }
    };
    if f.action.as_deref() != Some("approve") {
        let _ = s
            .credentials
            .set_grant_state(
                GrantKind::DeviceCode,
                &grant.key_hash,
                GrantState::Denied,
                None,
                now,
            )
            .await;
        return html(
            StatusCode::OK,
            pages::message_page("Request denied", "The device will not be connected."),
        );
    }
    let user = match s
        .sign_in(
            &client.tenant(),
            f.username.as_deref().unwrap_or(""),
            f.password.as_deref().unwrap_or(""),
            &addr,
        )
        .await
    {
        Ok(u) => u,
        Err((status, msg)) => return device_form_page(typed, status, Some(&msg)),
    };
    payload.user = Some(user.id.to_string());
    payload.auth_time = Some(now.as_millis() / 1000);
    match s
        .credentials
        .set_grant_state(
            GrantKind::DeviceCode,
            &grant.key_hash,
            GrantState::Approved,
            serde_json::to_value(&payload).ok(),
            now,
        )
        .await
    {
        Ok(_) => html(
            StatusCode::OK,
            pages::message_page(
                "Device connected",
                &format!(
                    "{} may now act for you. You can return to your device.",
                    client.display_name
                ),
            ),
        ),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Revocation, introspection, userinfo.

#[derive(Debug, Deserialize)]
struct TokenOpForm {
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn revoke(State(s): Shared, headers: HeaderMap, OForm(f): OForm<TokenOpForm>) -> Response {
    let client = match s
        .client(
            &headers,
            &ClientForm {
                client_id: f.client_id.clone(),
                client_secret: f.client_secret.clone(),
            },
            false,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Some(token) = f.token else {
        return OAuthError::request("token is missing").into_response();
    };
    match s.credentials.get_refresh(&sha256_b64(&token)).await {
        Ok(Some(r)) if r.token.client == client.id => {
            if let Err(e) = s.credentials.revoke_family(&r.token.family).await {
                return OAuthError::from(e).into_response();
            }
        }
        Ok(_) => {
            if let Ok(v) = s.validator.validate(&token).await
                && v.client_id.as_deref() == Some(client.id.as_str())
                && let Some(jti) = &v.jti
            {
                s.validator.revocations().revoke(jti, v.expires_at, s.now());
            }
        }
        Err(e) => return OAuthError::from(e).into_response(),
    }
    // RFC 7009: an unknown or foreign token is answered like a revoked one.
    no_store(StatusCode::OK.into_response())
}

async fn introspect(
    State(s): Shared,
    headers: HeaderMap,
    OForm(f): OForm<TokenOpForm>,
) -> Response {
    let client = match s
        .client(
            &headers,
            &ClientForm {
                client_id: f.client_id.clone(),
                client_secret: f.client_secret.clone(),
            },
            true,
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let inactive = || no_store(axum::Json(json!({"active": false})).into_response());
    let Some(token) = f.token else {
        return OAuthError::request("token is missing").into_response();
    };
    if let Ok(v) = s.validator.validate(&token).await {
        // A client sees only tokens of its own tenant.
        let group = match &v.principal {
            Principal::User(u) => Some(&u.group),
            Principal::App(a) => Some(&a.user().group),
            Principal::Service(sv) => sv.root.as_ref(),
            Principal::Device(d) => Some(&d.group),
        };
        if group.is_none_or(|g| g.tenant() != client.tenant()) {
            return inactive();
        }
        return no_store(
            axum::Json(json!({
                "active": true,
                "scope": v.scopes.to_string(),
                "client_id": v.client_id,
                "sub": v.subject,
                "iss": v.issuer,
                "aud": s.config.audience,
                "exp": v.expires_at.as_millis() / 1000,
                "iat": v.issued_at.map(|t| t.as_millis() / 1000),
                "jti": v.jti,
                "token_type": "Bearer",
            }))
            .into_response(),
        );
    }
    match s.credentials.get_refresh(&sha256_b64(&token)).await {
        Ok(Some(r)) if r.token.client == client.id && r.is_usable(s.now()) => no_store(
            axum::Json(json!({
                "active": true,
                "scope": r.token.scopes.to_string(),
                "client_id": r.token.client,
                "sub": r.token.user,
                "exp": r.token.expires_at.as_millis() / 1000,
                "iat": r.token.created_at.as_millis() / 1000,
                "token_type": "refresh_token",
            }))
            .into_response(),
        ),
        _ => inactive(),
    }
}

async fn userinfo(State(s): Shared, headers: HeaderMap) -> Response {
    let challenge = |desc: &str| {
        let mut r = hub_core::Error::unauthenticated(desc.to_owned()).into_response();
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        r
    };
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = token else {
        return challenge("userinfo needs a bearer access token");
    };
    let v = match s.validator.validate(token).await {
        Ok(v) if v.issuer == s.config.issuer => v,
        _ => return challenge("the access token is not valid"),
    };
    let user = match &v.principal {
        Principal::App(a) => a.user().clone(),
        Principal::User(u) => u.clone(),
        _ => return challenge("the token does not stand for a user"),
    };
    match s.registry.get_user(&user.group.tenant(), &user.id).await {
        Ok(Some(u)) => no_store(
            axum::Json(json!({
                "sub": u.id,
                "name": u.display_name,
                "email": u.email,
                "hub_grp": u.group,
            }))
            .into_response(),
        ),
        Ok(None) => challenge("the user no longer exists"),
        Err(e) => e.into_response(),
    }
}
