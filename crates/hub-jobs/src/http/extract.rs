//! Extractors whose rejections are problems, like everything else the Job API answers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use hub_core::Error;
use hub_core::http::parse_json;
use serde::de::DeserializeOwned;

/// Path segments. A segment that cannot be read names nothing that exists: 404.
#[derive(Debug)]
pub(super) struct Segments<T>(pub(super) T);

impl<T, S> FromRequestParts<S> for Segments<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Segments(t))
            .map_err(|e| Error::not_found(format!("no such resource: {e}")))
    }
}

/// The query string: 400 when it does not fit.
#[derive(Debug)]
pub(super) struct Params<T>(pub(super) T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Params(t))
            .map_err(|e| Error::invalid_input(format!("the query string is not valid: {e}")))
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`.
#[derive(Debug)]
pub(super) struct OptionalJson<T>(pub(super) T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|e| {
                e == "application/json" || (e.starts_with("application/") && e.ends_with("+json"))
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::too_large("the request body exceeds the size limit")
            } else {
                Error::invalid_input(format!("the request body could not be read: {rejection}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !json {
            return Err(Error::invalid_input(
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}
