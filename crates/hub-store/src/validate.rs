//! Input checks shared by every backend, run before anything is written, so that bad input gets
//! the same typed error whatever the backend and nothing is ever half-written.

use hub_core::{Error, Result};

use crate::StoreLimits;
use crate::jobs::NewJob;
use crate::measurements::{AggregateQuery, SeriesPoints};

/// The largest magnitude of a measurement value. No physical quantity comes near it, and it keeps
/// every sum a backend computes (billions of points) far from overflowing to infinity, which
/// PostgreSQL would refuse and SQLite would store as NULL.
pub(crate) const MAX_ABS_VALUE: f64 = 1e100;

/// The largest idempotency key, bytes.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The largest lane name, bytes.
pub(crate) const MAX_LANE: usize = 64;
/// The largest display name, bytes.
pub(crate) const MAX_DISPLAY_NAME: usize = 256;

pub(crate) fn json_size(value: &serde_json::Value, max: usize, what: &str) -> Result<()> {
    let len = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if len > max {
        return Err(Error::too_large(format!(
            "{what} is {len} bytes of JSON, at most {max} are allowed"
        )));
    }
    Ok(())
}

pub(crate) fn display_name(name: &str) -> Result<()> {
    if name.len() > MAX_DISPLAY_NAME {
        return Err(Error::invalid_input(format!(
            "display name is {} bytes, at most {MAX_DISPLAY_NAME} are allowed",
            name.len()
        )));
    }
    Ok(())
}

pub(crate) fn attributes(value: &serde_json::Value, limits: &StoreLimits) -> Result<()> {
    if !value.is_object() {
        return Err(Error::invalid_input(
            "device attributes must be a JSON object",
        ));
    }
    json_size(value, limits.max_attributes_bytes, "device attributes")
}

pub(crate) fn new_job(job: &NewJob, limits: &StoreLimits) -> Result<()> {
    if job.tenant != job.group.tenant() {
        return Err(Error::invalid_input(
            "the job's group is not in the job's tenant",
        ));
    }
    json_size(
        &job.document,
        limits.max_job_document_bytes,
        "the job document",
    )?;
    json_size(
        &job.options,
        limits.max_job_document_bytes,
        "the job options",
    )?;
    let lane_ok = !job.lane.is_empty()
        && job.lane.len() <= MAX_LANE
        && job
            .lane
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !lane_ok {
        return Err(Error::invalid_input(format!(
            "lane must be 1 to {MAX_LANE} bytes of A-Z a-z 0-9 - _ ."
        )));
    }
    if let Some(key) = &job.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(Error::invalid_input(format!(
            "idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
        )));
    }
    Ok(())
}

pub(crate) fn job_status(
    status: Option<&serde_json::Value>,
    result: Option<&serde_json::Value>,
    limits: &StoreLimits,
) -> Result<()> {
    if let Some(s) = status {
        json_size(s, limits.max_job_status_bytes, "the job status details")?;
    }
    if let Some(r) = result {
        json_size(r, limits.max_job_status_bytes, "the job result")?;
    }
    Ok(())
}

pub(crate) fn points(batch: &[SeriesPoints], limits: &StoreLimits) -> Result<()> {
    let total: usize = batch.iter().map(|s| s.points.len()).sum();
    if total > limits.max_points_per_append {
        return Err(Error::too_large(format!(
            "{total} points in one append, at most {} are allowed",
            limits.max_points_per_append
        )));
    }
    for s in batch {
        if let Some(p) = s
            .points
            .iter()
            .find(|p| !p.value.is_finite() || p.value.abs() > MAX_ABS_VALUE)
        {
            return Err(Error::invalid_input(format!(
                "series {} of device {} has the value {} at {}: values must be finite and \
                 within ±1e100",
                s.series, s.device, p.value, p.ts
            )));
        }
    }
    Ok(())
}

/// Checks an aggregate query and returns the bucket width in milliseconds.
pub(crate) fn aggregate(q: &AggregateQuery, limits: &StoreLimits) -> Result<i64> {
    let width = i64::try_from(q.bucket.as_millis()).unwrap_or(i64::MAX);
    if width <= 0 {
        return Err(Error::invalid_input(
            "the bucket width must be at least 1 ms",
        ));
    }
    if q.from >= q.to {
        return Err(Error::invalid_input(
            "the range is empty: `from` must be before `to`",
        ));
    }
    let span = q.to.as_millis() - q.from.as_millis();
    let buckets = span / width + 2;
    if buckets > i64::from(limits.max_buckets) {
        return Err(Error::invalid_input(format!(
            "the query spans about {buckets} buckets, at most {} are allowed",
            limits.max_buckets
        )));
    }
    Ok(width)
}

pub(crate) fn range(from: hub_core::Timestamp, to: hub_core::Timestamp) -> Result<()> {
    if from >= to {
        return Err(Error::invalid_input(
            "the range is empty: `from` must be before `to`",
        ));
    }
    Ok(())
}

/// The largest audit action name, bytes.
pub(crate) const MAX_ACTION: usize = 64;
/// The largest audit resource name, bytes.
pub(crate) const MAX_RESOURCE: usize = 256;
/// The largest actor or `created_by` description, bytes.
pub(crate) const MAX_ACTOR: usize = 256;

/// A required plain string of 1 to `max` bytes without U+0000 (which PostgreSQL text cannot
/// hold, so every backend refuses it alike).
fn plain(value: &str, max: usize, what: &str) -> Result<()> {
    if value.is_empty() || value.len() > max || value.contains('\0') {
        return Err(Error::invalid_input(format!(
            "{what} must be 1 to {max} bytes without U+0000"
        )));
    }
    Ok(())
}

pub(crate) fn actor(value: &str) -> Result<()> {
    plain(value, MAX_ACTOR, "the actor")
}

pub(crate) fn resource(value: &str) -> Result<()> {
    plain(value, MAX_RESOURCE, "the resource")
}

pub(crate) fn created_by(value: &str) -> Result<()> {
    plain(value, MAX_ACTOR, "created_by")
}

pub(crate) fn audit_record(r: &crate::audit::NewAuditRecord, limits: &StoreLimits) -> Result<()> {
    if r.group.tenant() != r.tenant {
        return Err(Error::invalid_input(
            "the audit record's group is not in its tenant",
        ));
    }
    let action_ok = !r.action.is_empty()
        && r.action.len() <= MAX_ACTION
        && r.action.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if !action_ok {
        return Err(Error::invalid_input(format!(
            "the action must be 1 to {MAX_ACTION} bytes of a-z 0-9 . _ -"
        )));
    }
    actor(&r.actor)?;
    resource(&r.resource)?;
    json_size(
        &r.details,
        limits.max_audit_details_bytes,
        "the audit details",
    )
}

pub(crate) fn audit_query(q: &crate::audit::AuditQuery) -> Result<()> {
    if let Some(r) = &q.resource {
        resource(r)?;
    }
    if let Some(a) = &q.actor {
        actor(a)?;
    }
    if let (Some(from), Some(to)) = (q.from, q.to) {
        range(from, to)?;
    }
    Ok(())
}

pub(crate) fn config_document(document: &serde_json::Value, limits: &StoreLimits) -> Result<()> {
    json_size(
        document,
        limits.max_config_bytes,
        "the configuration document",
    )
}

pub(crate) fn prune_keep(keep: u32) -> Result<()> {
    if keep == 0 {
        return Err(Error::invalid_input(
            "prune must keep at least the latest version",
        ));
    }
    Ok(())
}

/// The largest stored hash (password, client secret, code, token), bytes.
pub(crate) const MAX_HASH: usize = 1024;
/// The largest user code, bytes.
pub(crate) const MAX_USER_CODE: usize = 64;
/// The largest refresh-token family id, bytes.
pub(crate) const MAX_FAMILY: usize = 128;
/// The largest e-mail address, bytes (RFC 5321 path limit).
pub(crate) const MAX_EMAIL: usize = 254;
/// The most redirect URIs or grant types of one client.
pub(crate) const MAX_CLIENT_LIST: usize = 16;
/// The largest redirect URI, bytes.
pub(crate) const MAX_REDIRECT_URI: usize = 2048;
/// The largest grant type name, bytes.
pub(crate) const MAX_GRANT_TYPE: usize = 128;

/// A printable, non-empty token of at most `max` bytes without spaces: hashes, codes, families.
pub(crate) fn token(value: &str, max: usize, what: &str) -> Result<()> {
    let ok = !value.is_empty() && value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(Error::invalid_input(format!(
            "{what} must be 1 to {max} bytes of printable ASCII without spaces"
        )));
    }
    Ok(())
}

pub(crate) fn email(value: Option<&str>) -> Result<()> {
    let Some(e) = value else { return Ok(()) };
    let ok = e.len() <= MAX_EMAIL
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if !ok {
        return Err(Error::invalid_input(format!(
            "the e-mail address must be at most {MAX_EMAIL} bytes, local@domain, without spaces"
        )));
    }
    Ok(())
}

pub(crate) fn new_user(user: &crate::registry::NewUser) -> Result<()> {
    display_name(&user.display_name)?;
    email(user.email.as_deref())
}

pub(crate) fn user_patch(patch: &crate::registry::UserPatch) -> Result<()> {
    if let Some(name) = &patch.display_name {
        display_name(name)?;
    }
    if let Some(e) = &patch.email {
        email(e.as_deref())?;
    }
    Ok(())
}

/// Whether `uri` may be registered as a redirect URI (RFC 9700 section 2.1 and 4.1.3): absolute
/// `https://` with a host, or `http://` on a loopback host (native apps), without a fragment,
/// user information, spaces or control characters.
pub(crate) fn redirect_uri(uri: &str) -> Result<()> {
    let refuse = |why: &str| {
        Err(Error::invalid_input(format!(
            "redirect URI {uri:?} is not allowed: {why}"
        )))
    };
    if uri.is_empty() || uri.len() > MAX_REDIRECT_URI {
        return refuse(&format!("it must be 1 to {MAX_REDIRECT_URI} bytes"));
    }
    if uri.bytes().any(|b| !b.is_ascii_graphic()) {
        return refuse("it must be printable ASCII without spaces");
    }
    if uri.contains('#') {
        return refuse("it must not have a fragment");
    }
    let (https, rest) = if let Some(r) = uri.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = uri.strip_prefix("http://") {
        (false, r)
    } else {
        return refuse("it must be an absolute https:// URI (or http:// on a loopback host)");
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return refuse("it must not carry user information");
    }
    let split = if authority.starts_with('[') {
        authority.find(']').map(|i| i + 1)
    } else {
        Some(authority.find(':').unwrap_or(authority.len()))
    };
    let Some(split) = split else {
        return refuse("the host is not valid");
    };
    let (host, port) = authority.split_at(split);
    if host.is_empty() || host == "[]" {
        return refuse("it has no host");
    }
    if !port.is_empty() {
        let digits = &port[1..];
        if !port.starts_with(':')
            || digits.is_empty()
            || digits.len() > 5
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return refuse("the port is not valid");
        }
    }
    if !https && !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return refuse("plain http:// is only allowed on localhost, 127.0.0.1 or [::1]");
    }
    Ok(())
}

pub(crate) fn client(c: &crate::registry::OAuthClient) -> Result<()> {
    display_name(&c.display_name)?;
    if c.redirect_uris.len() > MAX_CLIENT_LIST || c.grant_types.len() > MAX_CLIENT_LIST {
        return Err(Error::invalid_input(format!(
            "a client has at most {MAX_CLIENT_LIST} redirect URIs and grant types"
        )));
    }
    for uri in &c.redirect_uris {
        redirect_uri(uri)?;
    }
    for g in &c.grant_types {
        token(g, MAX_GRANT_TYPE, "a grant type")?;
    }
    if let Some(h) = &c.secret_hash {
        token(h, MAX_HASH, "the client secret hash")?;
    }
    Ok(())
}

pub(crate) fn grant(g: &crate::credentials::Grant, limits: &StoreLimits) -> Result<()> {
    use crate::credentials::GrantKind;
    token(&g.key_hash, MAX_HASH, "the grant key hash")?;
    match (&g.user_code, g.kind) {
        (Some(_), GrantKind::AuthorizationCode) => {
            return Err(Error::invalid_input("only device codes carry a user code"));
        }
        (Some(code), GrantKind::DeviceCode) => token(code, MAX_USER_CODE, "the user code")?,
        (None, _) => {}
    }
    grant_payload(&g.payload, limits)
}

pub(crate) fn grant_payload(payload: &serde_json::Value, limits: &StoreLimits) -> Result<()> {
    json_size(payload, limits.max_grant_payload_bytes, "the grant payload")
}

pub(crate) fn refresh(t: &crate::credentials::RefreshToken) -> Result<()> {
    token(&t.token_hash, MAX_HASH, "the refresh token hash")?;
    token(&t.family, MAX_FAMILY, "the refresh token family")
}

/// Checks the shape of a subtree move and returns nothing; existence is the backend's part.
pub(crate) fn move_group(from: &hub_core::GroupPath, to: &hub_core::GroupPath) -> Result<()> {
    if from.is_root() || to.is_root() {
        return Err(Error::invalid_input(
            "a tenant's root group cannot move, nor can a group become a root",
        ));
    }
    if from.tenant() != to.tenant() {
        return Err(Error::invalid_input(
            "a group cannot move to another tenant",
        ));
    }
    if from.contains(to) {
        return Err(Error::invalid_input(format!(
            "group {from} cannot move into its own subtree ({to})"
        )));
    }
    Ok(())
}

/// The new path of `path` when `from` moves to `to`, or `InvalidInput` if it would be too deep.
pub(crate) fn rebased(
    path: &hub_core::GroupPath,
    from: &hub_core::GroupPath,
    to: &hub_core::GroupPath,
) -> Result<hub_core::GroupPath> {
    path.rebase(from, to).ok_or_else(|| {
        Error::invalid_input(format!(
            "moving {from} to {to} would put {path} deeper than {} levels",
            hub_core::MAX_GROUP_DEPTH
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_follow_rfc_9700() {
        for ok in [
            "https://app.example.com/callback",
            "https://app.example.com:8443/cb?x=1",
            "https://app.example.com",
            "http://localhost/cb",
            "http://localhost:8080/cb",
            "http://127.0.0.1:51004/oauth",
            "http://[::1]:9000/cb",
            "http://127.0.0.1?code=1",
        ] {
            assert!(redirect_uri(ok).is_ok(), "{ok} should be allowed");
        }
        for bad in [
            "",
            "http://app.example.com/cb",
            "http://localhost.evil.com/cb",
            "http://127.0.0.1.nip.io/cb",
            "http://[::2]/cb",
            "https://app.example.com/cb#fragment",
            "https://app.example.com/cb#",
            "https://user:pw@app.example.com/cb",
            "https:///cb",
            "https://:443/cb",
            "https://app.example.com:/cb",
            "https://app.example.com:99999x/cb",
            "https://[::1/cb",
            "/cb",
            "app://callback",
            "javascript:alert(1)",
            "HTTPS://app.example.com/cb",
            "https://app.example.com/c b",
            "https://app.example.com/\u{e9}",
        ] {
            let e = redirect_uri(bad).expect_err(bad);
            assert_eq!(e.kind(), hub_core::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(redirect_uri(&format!("https://a.example/{}", "x".repeat(3000))).is_err());
    }

    #[test]
    fn emails_and_tokens() {
        assert!(email(None).is_ok());
        assert!(email(Some("erin@acme.example")).is_ok());
        for bad in ["", "erin", "@acme", "erin@", "er in@acme.example"] {
            assert!(email(Some(bad)).is_err(), "{bad}");
        }
        assert!(token("abc", 3, "x").is_ok());
        assert!(token("abcd", 3, "x").is_err());
        assert!(token("", 3, "x").is_err());
        assert!(token("a b", 3, "x").is_err());
    }
}
