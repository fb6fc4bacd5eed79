//! The error family shared by every crate.
//!
//! An [`Error`] has a [`ErrorKind`] that decides how it reaches a client: an HTTP status with an
//! RFC 9457 problem+json body ([`Problem`]) for the Web API, a [`ReasonCode`] for MQTT 5. The
//! `detail` is written for the client; internal causes travel in `source` and are never shown.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, as far as a client needs to know. Each kind has one HTTP status and one MQTT 5
/// reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or a value is out of its allowed range.
    InvalidInput,
    /// No valid credentials were presented.
    Unauthenticated,
    /// The principal is known but may not do this.
    Forbidden,
    /// The resource does not exist, or the principal may not know that it does.
    NotFound,
    /// The request conflicts with the resource's state (an illegal transition, a duplicate).
    Conflict,
    /// A conditional request's precondition (`If-Match`, expected version) does not hold.
    PreconditionFailed,
    /// A document or payload is larger than the configured limit.
    TooLarge,
    /// The client sends faster than its configured rate.
    RateLimited,
    /// A configured count limit (devices, queued jobs, sessions) is reached.
    QuotaExceeded,
    /// The target is offline or a dependency is down; retrying later may succeed.
    Unavailable,
    /// The operation did not finish in its allotted time.
    Timeout,
    /// A bug or an unexpected failure inside the hub.
    Internal,
}

/// An MQTT 5 reason code (MQTT 5.0, section 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// 0x80 Unspecified error.
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    /// 0x83 Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: ReasonCode = ReasonCode(0x83);
    /// 0x86 Bad User Name or Password.
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    /// 0x87 Not authorized.
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    /// 0x88 Server unavailable.
    pub const SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x88);
    /// 0x95 Packet too large.
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    /// 0x96 Message rate too high.
    pub const MESSAGE_RATE_TOO_HIGH: ReasonCode = ReasonCode(0x96);
    /// 0x97 Quota exceeded.
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    /// 0x99 Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: ReasonCode = ReasonCode(0x99);
}

impl ErrorKind {
    /// Every kind, for exhaustive tests and documentation tables.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidInput,
        ErrorKind::Unauthenticated,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::PreconditionFailed,
        ErrorKind::TooLarge,
        ErrorKind::RateLimited,
        ErrorKind::QuotaExceeded,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::Internal,
    ];

    /// The HTTP status code.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidInput => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::PreconditionFailed => 412,
            ErrorKind::TooLarge => 413,
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The MQTT 5 reason code used in CONNACK, PUBACK, SUBACK or DISCONNECT. Kinds MQTT has no
    /// code for use "implementation specific error" with the detail as the reason string.
    pub const fn mqtt_reason(self) -> ReasonCode {
        match self {
            ErrorKind::InvalidInput => ReasonCode::PAYLOAD_FORMAT_INVALID,
            ErrorKind::Unauthenticated => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ErrorKind::Forbidden => ReasonCode::NOT_AUTHORIZED,
            ErrorKind::TooLarge => ReasonCode::PACKET_TOO_LARGE,
            ErrorKind::RateLimited => ReasonCode::MESSAGE_RATE_TOO_HIGH,
            ErrorKind::QuotaExceeded => ReasonCode::QUOTA_EXCEEDED,
            ErrorKind::Unavailable => ReasonCode::SERVER_UNAVAILABLE,
            ErrorKind::NotFound
            | ErrorKind::Conflict
            | ErrorKind::PreconditionFailed
            | ErrorKind::Timeout => ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
            ErrorKind::Internal => ReasonCode::UNSPECIFIED_ERROR,
        }
    }

    /// A stable snake_case name, used in problem type URIs and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }

    /// A short human title (the problem's `title`).
    pub const fn title(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "Invalid input",
            ErrorKind::Unauthenticated => "Authentication required",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::NotFound => "Not found",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::PreconditionFailed => "Precondition failed",
            ErrorKind::TooLarge => "Too large",
            ErrorKind::RateLimited => "Rate limited",
            ErrorKind::QuotaExceeded => "Quota exceeded",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::Timeout => "Timed out",
            ErrorKind::Internal => "Internal error",
        }
    }

    /// Whether the same request may succeed if retried later unchanged.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited | ErrorKind::Unavailable | ErrorKind::Timeout
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the hub: a kind, a client-facing detail, and an optional internal cause.
///
/// ```
/// use hub_core::{Error, ErrorKind};
/// let e = Error::conflict("job 42 is already succeeded");
/// assert_eq!(e.kind(), ErrorKind::Conflict);
/// assert_eq!(e.problem().status, 409);
/// ```
pub struct Error {
    kind: ErrorKind,
    detail: Cow<'static, str>,
    source: Option<Source>,
}

impl Error {
    /// An error of `kind` with a detail for the client.
    pub fn new(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// Attaches an internal cause. It is kept for logs and `source()` chains, never sent to a
    /// client.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The client-facing detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The RFC 9457 problem document for this error.
    pub fn problem(&self) -> Problem {
        Problem::from_kind(self.kind, self.detail.to_string())
    }

    /// [`ErrorKind::InvalidInput`].
    pub fn invalid_input(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidInput, detail)
    }
    /// [`ErrorKind::Unauthenticated`].
    pub fn unauthenticated(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthenticated, detail)
    }
    /// [`ErrorKind::Forbidden`].
    pub fn forbidden(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, detail)
    }
    /// [`ErrorKind::NotFound`].
    pub fn not_found(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, detail)
    }
    /// [`ErrorKind::Conflict`].
    pub fn conflict(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Conflict, detail)
    }
    /// [`ErrorKind::PreconditionFailed`].
    pub fn precondition_failed(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::PreconditionFailed, detail)
    }
    /// [`ErrorKind::TooLarge`].
    pub fn too_large(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::TooLarge, detail)
    }
    /// [`ErrorKind::Unavailable`].
    pub fn unavailable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, detail)
    }
    /// [`ErrorKind::Internal`]; the detail shown to clients is generic, the cause is kept.
    pub fn internal(source: impl Into<Source>) -> Self {
        Self::new(ErrorKind::Internal, "internal error").with_source(source)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("detail", &self.detail);
        if let Some(s) = &self.source {
            d.field("source", &format_args!("{s}"));
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The media type of [`Problem`] documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI reference naming the problem type: `urn:iot-hub:problem:<kind>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// An explanation specific to this occurrence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// A URI reference identifying this occurrence (usually the request path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Problem {
    /// The problem document for a kind and a detail.
    pub fn from_kind(kind: ErrorKind, detail: String) -> Self {
        Problem {
            type_uri: format!("urn:iot-hub:problem:{kind}"),
            title: kind.title().to_owned(),
            status: kind.http_status(),
            detail,
            instance: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_kind_maps_to_an_error_status_and_an_error_reason_code() {
        for kind in ErrorKind::ALL {
            let status = kind.http_status();
            assert!((400..600).contains(&status), "{kind}: {status}");
            assert!(
                kind.mqtt_reason().0 >= 0x80,
                "{kind} must be an MQTT failure"
            );
        }
        let names: HashSet<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len(), "names are unique");
    }

    #[test]
    fn only_transient_kinds_are_retryable() {
        assert!(ErrorKind::Unavailable.is_retryable());
        assert!(!ErrorKind::Conflict.is_retryable());
        assert!(!ErrorKind::InvalidInput.is_retryable());
    }

    #[test]
    fn problem_json_has_rfc9457_members_and_hides_the_source() {
        let e = Error::internal(std::io::Error::other("disk /dev/sda1 exploded"));
        let json = serde_json::to_value(e.problem()).unwrap();
        assert_eq!(json["type"], "urn:iot-hub:problem:internal");
        assert_eq!(json["status"], 500);
        assert_eq!(json["title"], "Internal error");
        assert!(!json.to_string().contains("sda1"), "{json}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn auth_failures_have_distinct_statuses() {
        assert_eq!(ErrorKind::Unauthenticated.http_status(), 401);
        assert_eq!(ErrorKind::Forbidden.http_status(), 403);
        assert_eq!(
            ErrorKind::Unauthenticated.mqtt_reason(),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        assert_eq!(
            ErrorKind::Forbidden.mqtt_reason(),
            ReasonCode::NOT_AUTHORIZED
        );
    }
}
