//! [`AuthLayer`]: the tower layer that turns `Authorization: Bearer <x>` into a [`Principal`](hub_core::Principal) in
//! the request's extensions.
//!
//! - `x` starting with `hk_` is a device access key (`Credentials::AccessKey { device: None }`),
//!   anything else a bearer token (`Credentials::Bearer`).
//! - No `Authorization` header: the request passes through without a principal; handlers that
//!   need one answer 401 through hub-core's `Principal` extractor.
//! - A credential that does not authenticate (or a header that is not `Bearer`): 401 at once,
//!   a problem+json body with `WWW-Authenticate: Bearer error="invalid_token"`.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use hub_auth::AuthLayer;
//! use hub_core::{Authenticator, Principal};
//!
//! fn app(authenticator: Arc<dyn Authenticator>) -> Router {
//!     Router::new()
//!         .route("/v1/whoami", get(|p: Principal| async move { p.describe() }))
//!         .layer(AuthLayer::new(authenticator))
//! }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Request};
use hub_core::{Authenticator, BoxFuture, Credentials, Error, Secret};

/// The prefix that tells a device access key from a token.
pub const ACCESS_KEY_PREFIX: &str = "hk_";

/// A tower layer that authenticates requests; see the [module documentation](self).
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<dyn Authenticator>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("authenticator", &self.authenticator)
            .finish()
    }
}

impl AuthLayer {
    /// Authenticates with `authenticator` (usually a [`HubAuthenticator`](crate::HubAuthenticator)).
    pub fn new(authenticator: Arc<dyn Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a handler.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<dyn Authenticator>,
}

impl<S> fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

/// The credentials an `Authorization` header value carries.
pub fn credentials_from_header(value: &HeaderValue) -> Result<Credentials, Error> {
    let value = value
        .to_str()
        .map_err(|_| Error::unauthenticated("the Authorization header is not valid"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::unauthenticated(
            "the Authorization header must use the Bearer scheme",
        ));
    }
    let x = rest.trim();
    if x.is_empty() {
        return Err(Error::unauthenticated("the bearer credential is empty"));
    }
    Ok(if x.starts_with(ACCESS_KEY_PREFIX) {
        Credentials::AccessKey {
            device: None,
            key: Secret::new(x),
        }
    } else {
        Credentials::Bearer(Secret::new(x))
    })
}

fn reject(e: Error) -> Response {
    let mut r = e.into_response();
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    r
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone is ready only if polled; keep the one that was polled ready (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            let Some(value) = req.headers().get(AUTHORIZATION) else {
                return inner.call(req).await;
            };
            let credentials = match credentials_from_header(value) {
                Ok(c) => c,
                Err(e) => return Ok(reject(e)),
            };
            match authenticator.authenticate(&credentials).await {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Err(e) if e.kind() == hub_core::ErrorKind::Unauthenticated => Ok(reject(e)),
                // An outage of the credential store is not the client's fault.
                Err(e) => Ok(e.into_response()),
            }
        })
    }
}
