//! The traits through which the capability crates meet without depending on one another.
//!
//! - `hub-auth` implements [`Authenticator`]; `hub-transport` calls it on MQTT CONNECT and the
//!   HTTP layers call it for bearer tokens.
//! - `hub-transport` implements [`JobNotifier`] and [`PresenceQuery`]; `hub-jobs` calls them to
//!   push a job to a connected device and to apply a delivery policy.
//! - `hub-jobs` implements [`DeviceJobs`]; `hub-transport` calls it when a device asks for, claims
//!   or reports on a job over MQTT, so that every device protocol keeps the Job API's semantics.
//!
//! The application wires implementations together, usually as `Arc<dyn Trait>`, so every trait
//! here is object safe. Async methods return a [`BoxFuture`] to stay runtime-neutral.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::{DeviceId, JobId, NodeId, TenantId};
use crate::job::JobState;
use crate::principal::Principal;
use crate::time::Timestamp;

/// A boxed, `Send` future: the return type of the object-safe async methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A secret string (an access key, a password, a bearer token). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself; call only where it must be checked or shown once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a client presents to prove who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// A device access key. The key's public prefix identifies the device; `device`, when the
    /// client names one (the MQTT user name), must match it.
    AccessKey {
        /// The device the client claims to be.
        device: Option<DeviceId>,
        /// The key.
        key: Secret,
    },
    /// An OAuth 2.0 bearer token (apps and users).
    Bearer(Secret),
}

/// Turns credentials into a principal. Implemented by `hub-auth`.
///
/// Failures are [`ErrorKind::Unauthenticated`](crate::ErrorKind::Unauthenticated) and must not say
/// which part was wrong (unknown device or wrong key), so that they reveal nothing to a guesser.
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// Authenticates `credentials`.
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> BoxFuture<'a, Result<Principal, Error>>;
}

/// What a device is told about its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobNotice {
    /// A job may be ready for the device: it should claim its next job.
    JobAvailable {
        /// The job that became available.
        job: JobId,
    },
    /// A controller asks the device to cancel a job it is executing.
    CancelRequested {
        /// The job.
        job: JobId,
    },
}

/// Whether a notice reached a live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// Handed to a session of the device on this node. Delivery of the job itself is still
    /// confirmed only by the device's claim.
    Sent,
    /// The device has no session on this node; it learns of the job when it next connects or
    /// polls.
    NotConnected,
}

/// Pushes job notices to connected devices. Implemented by `hub-transport`.
///
/// Notices are hints, not deliveries: the job store stays the truth, and a device that misses a
/// notice still receives its jobs in order when it next claims.
pub trait JobNotifier: Send + Sync + fmt::Debug + 'static {
    /// Tells the device, if connected here, about `notice`. Must not block.
    fn notify(&self, tenant: &TenantId, device: &DeviceId, notice: JobNotice) -> NotifyOutcome;
}

/// How reachable a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// Connected and heard from within the stale grace period.
    Online,
    /// Connected, or seen recently, but silent for longer than the stale grace period.
    Stale,
    /// Not connected and not seen within the offline grace period.
    Offline,
}

/// A device's presence as the transport knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Online, stale or offline.
    pub state: PresenceState,
    /// When the device was last heard from.
    pub last_seen: Option<Timestamp>,
    /// The node holding its session, if any.
    pub node: Option<NodeId>,
}

/// The grace periods that turn "last seen" into a [`PresenceState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivenessPolicy {
    /// Silence after which a device is stale.
    pub stale_after: Duration,
    /// Silence after which a device without a session is offline.
    pub offline_after: Duration,
}

impl Default for LivenessPolicy {
    /// Stale after 90 s (one and a half default keep-alives), offline after 5 minutes.
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(90),
            offline_after: Duration::from_secs(300),
        }
    }
}

impl LivenessPolicy {
    /// Classifies a device from whether it holds a session and when it was last heard from.
    ///
    /// A connected device is online until it has been silent for `stale_after`, then stale (the
    /// keep-alive machinery will close the session). A device without a session that was heard
    /// from within `offline_after` is stale (a polling device between polls, or a session that
    /// just dropped), otherwise offline.
    pub fn classify(
        &self,
        connected: bool,
        last_seen: Option<Timestamp>,
        now: Timestamp,
    ) -> PresenceState {
        let silent_for = last_seen.map(|t| now.duration_since(t));
        match (connected, silent_for) {
            (true, Some(s)) if s < self.stale_after => PresenceState::Online,
            (true, None) => PresenceState::Online,
            (true, Some(_)) => PresenceState::Stale,
            (false, Some(s)) if s < self.offline_after => PresenceState::Stale,
            (false, _) => PresenceState::Offline,
        }
    }
}

/// Answers where and how reachable a device is. Implemented by `hub-transport`.
pub trait PresenceQuery: Send + Sync + fmt::Debug + 'static {
    /// The device's current presence.
    fn presence(&self, tenant: &TenantId, device: &DeviceId) -> Presence;

    /// Resolves when the device next has a session (at once if it has one now). Callers bound the
    /// wait with their runtime's timeout; dropping the future cancels the wait.
    fn wait_online<'a>(&'a self, tenant: &'a TenantId, device: &'a DeviceId) -> BoxFuture<'a, ()>;
}

/// A job as its device sees it: what the device needs to execute and report on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceJob {
    /// The job.
    pub id: JobId,
    /// The execution the device holds; every report names it.
    pub execution: u32,
    /// The job's version after the last change.
    pub version: u64,
    /// The lane the job runs in.
    pub lane: String,
    /// The job's state.
    pub state: JobState,
    /// The opaque job document.
    pub document: serde_json::Value,
}

/// What a device reports on a job it holds (the device's side of the job state machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeviceReport {
    /// The device begins executing.
    InProgress {
        /// Opaque progress details.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<serde_json::Value>,
        /// Asks for a new step deadline, `now + step_timeout_ms`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_timeout_ms: Option<u64>,
    },
    /// Finished successfully.
    Succeeded {
        /// Opaque result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
    },
    /// Finished unsuccessfully (retried by the job's policy).
    Failed {
        /// Opaque result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
    },
    /// Refused: the job is invalid or incompatible; never retried.
    Rejected {
        /// Opaque result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
    },
    /// Agrees to a controller's cancel request.
    Canceled,
    /// Refuses a controller's cancel request and goes on.
    CancelRefused,
}

/// The device side of the Job API: claim the next job, report on it. Implemented by `hub-jobs`;
/// called by device protocols (MQTT in `hub-transport`) so that they keep the Job API's
/// exactly-once and ordering guarantees without depending on `hub-jobs`.
pub trait DeviceJobs: Send + Sync + fmt::Debug + 'static {
    /// The device's next job in `lane` (the default lane when `None`), or `None` when nothing is
    /// claimable. Asking again before starting returns the same job and execution.
    fn next_job<'a>(
        &'a self,
        device: &'a Principal,
        lane: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<DeviceJob>, Error>>;

    /// Reports on `job`, whose execution `execution` the device holds. Repeating an accepted
    /// report is answered with the job as it is; a conflicting one is
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict).
    fn report<'a>(
        &'a self,
        device: &'a Principal,
        job: &'a JobId,
        execution: u32,
        report: DeviceReport,
    ) -> BoxFuture<'a, Result<DeviceJob, Error>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::EPOCH.saturating_add(Duration::from_secs(s))
    }

    #[test]
    fn liveness_thresholds() {
        let p = LivenessPolicy::default();
        let now = t(1000);
        assert_eq!(p.classify(true, Some(t(990)), now), PresenceState::Online);
        assert_eq!(p.classify(true, Some(t(900)), now), PresenceState::Stale);
        assert_eq!(p.classify(false, Some(t(900)), now), PresenceState::Stale);
        assert_eq!(p.classify(false, Some(t(600)), now), PresenceState::Offline);
        assert_eq!(p.classify(false, None, now), PresenceState::Offline);
        assert_eq!(p.classify(true, None, now), PresenceState::Online);
    }

    #[test]
    fn device_reports_have_a_stable_wire_form() {
        let r: DeviceReport =
            serde_json::from_str(r#"{"status":"succeeded","result":{"ok":true}}"#).unwrap();
        assert_eq!(
            r,
            DeviceReport::Succeeded {
                result: Some(serde_json::json!({"ok": true}))
            }
        );
        let r: DeviceReport = serde_json::from_str(r#"{"status":"in_progress"}"#).unwrap();
        assert_eq!(
            r,
            DeviceReport::InProgress {
                details: None,
                step_timeout_ms: None
            }
        );
        assert!(serde_json::from_str::<DeviceReport>(r#"{"status":"exploded"}"#).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = Credentials::AccessKey {
            device: None,
            key: Secret::new("hk_abc_supersecret"),
        };
        assert!(!format!("{c:?}").contains("supersecret"));
    }
}
