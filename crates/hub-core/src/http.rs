//! What every crate's HTTP surface shares (feature `http`): the conventions of the Web API in one
//! place, so that the Job API, the registry and the OAuth endpoints answer alike.
//!
//! - [`Error`] is an axum response: its status, an RFC 9457 `application/problem+json` body and,
//!   for 401, a `WWW-Authenticate: Bearer` challenge.
//! - [`Principal`] is an extractor: the authentication layer (`hub-auth`) puts the caller's
//!   principal into the request's extensions; a handler that takes a `Principal` answers 401 when
//!   there is none.
//! - [`Json`] reads and writes JSON bodies; a body that is not JSON, does not match the expected
//!   shape or exceeds the body limit is a problem (400, 415 as 400, 413), never a plain-text
//!   rejection.
//! - [`etag`] and [`IfMatch`]: resource versions as strong ETags (`"7"`) and conditional updates.
//! - [`rejections_as_problems`]: a response mapper (`axum::middleware::map_response`) that turns
//!   the plain-text rejections of the framework's own extractors and fallbacks (a bad path or
//!   query parameter, 404 for an unknown route, 405) into problem documents as well.
//!
//! ```
//! use axum_core::response::IntoResponse;
//! use hub_core::Error;
//!
//! let response = Error::not_found("device pump-7 does not exist").into_response();
//! assert_eq!(response.status(), 404);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! ```

use axum_core::body::Body;
use axum_core::extract::{FromRequest, FromRequestParts, Request};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, ETAG, IF_MATCH, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, PROBLEM_JSON};
use crate::principal::Principal;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A problem document always serializes: it is strings and a number.
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.kind() == ErrorKind::Unauthenticated {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            Error::unauthenticated("this request needs a bearer token or a device access key")
        })
    }
}

/// A JSON request or response body whose errors are problem documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Error::invalid_input(
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::too_large("the request body exceeds the size limit")
            } else {
                Error::invalid_input(format!("the request body could not be read: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON document into `T`, with an error that says where and why it does not fit.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid_input(format!("the request body is not valid: {e}")))
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => {
                let mut response = Response::new(Body::from(body));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Err(e) => Error::internal(e).into_response(),
        }
    }
}

/// The strong ETag of a resource version: `"7"`.
pub fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Adds the ETag of `version` to a response.
pub fn with_etag(version: u64, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.headers_mut().insert(ETAG, etag(version));
    response
}

/// The version an `If-Match` header names, if the request has one. `If-Match: *` is
/// unconditional (`None`). A value that is not one of our ETags can never match the resource:
/// the request is answered 412 Precondition Failed, as RFC 9110 asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfMatch(pub Option<u64>);

impl IfMatch {
    /// Parses an `If-Match` header value.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let value = value.trim();
        if value == "*" {
            return Ok(IfMatch(None));
        }
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| IfMatch(Some(v)))
            .ok_or_else(|| {
                Error::precondition_failed(format!(
                    "If-Match {value:?} does not name a version of this resource; send the ETag \
                     the resource was read with, e.g. \"7\""
                ))
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(IF_MATCH) {
            None => Ok(IfMatch(None)),
            Some(v) => {
                IfMatch::parse(v.to_str().map_err(|_| {
                    Error::precondition_failed("If-Match is not a valid header value")
                })?)
            }
        }
    }
}

/// Turns a plain-text or empty error response (the framework's own rejections: a path or query
/// parameter that does not parse, an unknown route, a wrong method) into an RFC 9457 problem with
/// the same status and the text as its detail. Problem documents and JSON error bodies (such as
/// OAuth's `{"error": ...}`) pass unchanged. Use it with `axum::middleware::map_response`.
pub async fn rejections_as_problems(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = match response.headers().get(CONTENT_TYPE) {
        None => true,
        Some(ct) => ct.to_str().is_ok_and(|ct| ct.starts_with("text/plain")),
    };
    if !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejection texts are short; a longer body is cut, not buffered without bound.
    let detail =
        match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 4096)).await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
    let problem = crate::error::Problem {
        type_uri: "about:blank".to_owned(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        instance: None,
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_our_etags_and_refuses_others() {
        assert_eq!(IfMatch::parse("\"7\"").unwrap(), IfMatch(Some(7)));
        assert_eq!(IfMatch::parse("*").unwrap(), IfMatch(None));
        for bad in ["7", "W/\"7\"", "\"x\"", "\"7\", \"8\"", ""] {
            let e = IfMatch::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{bad}");
        }
        assert_eq!(etag(7), "\"7\"");
    }

    #[test]
    fn unauthenticated_problems_carry_a_bearer_challenge() {
        let r = Error::unauthenticated("no token").into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
        let r = Error::forbidden("no").into_response();
        assert!(r.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
