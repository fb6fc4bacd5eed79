//! # hub-core: the shared vocabulary of the IoT hub SDK
//!
//! Every other crate of the SDK speaks in these terms; this crate performs no I/O and needs no
//! async runtime.
//!
//! - [`id`]: typed, validated identifiers: [`TenantId`], [`GroupPath`], [`DeviceId`], [`UserId`],
//!   [`ClientId`], [`NodeId`] and the time-ordered [`JobId`] and [`BulkJobId`].
//! - The group hierarchy's containment rule: [`GroupPath::contains`].
//! - [`principal`]: who acts ([`Principal`]), with which [`Scope`]s, through which [`Role`].
//! - [`policy`]: the one access decision, [`authorize`].
//! - [`error`]: [`Error`] and its [`ErrorKind`]s, each mapped to an HTTP status with an RFC 9457
//!   [`Problem`] body and to an MQTT 5 [`ReasonCode`].
//! - [`time`]: [`Timestamp`], the [`Clock`] trait, [`SystemClock`] and [`ManualClock`].
//! - [`event`]: the hub's [`Event`]s and the [`EventSink`] they go to.
//! - [`job`]: the job states ([`JobState`]) shared by the store, the job service and the transport.
//! - [`seam`]: the traits through which capability crates meet: [`Authenticator`],
//!   [`JobNotifier`], [`PresenceQuery`], [`DeviceJobs`].
//! - `http` (feature `http`): what every crate's axum surface shares: [`Error`] answers as
//!   problem+json, the caller's [`Principal`] as an extractor, a JSON body extractor whose
//!   rejections are problems, ETag and `If-Match` helpers.
//!
//! ```
//! use hub_core::{authorize, Action, AppPrincipal, Principal, Resource, Role, Scope, ScopeSet,
//!     UserPrincipal};
//!
//! let operator = UserPrincipal {
//!     id: "erin@acme.example".parse()?,
//!     group: "acme/plant-3".parse()?,
//!     scopes: Role::Viewer.scopes(),
//! };
//! // A dashboard app asks for more than the user has: it keeps only the overlap.
//! let asked: ScopeSet = "jobs:write measurements:read".parse()?;
//! let app = AppPrincipal::new("dashboard".parse()?, operator, asked);
//! assert_eq!(app.scopes(), ScopeSet::only(Scope::MeasurementsRead));
//!
//! let pump = Resource::device("acme/plant-3/line-2".parse()?, "pump-7".parse()?);
//! let app = Principal::App(app);
//! assert!(authorize(&app, Action::ReadMeasurements, &pump).is_ok());
//! assert!(authorize(&app, Action::CreateJob, &pump).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
pub mod event;
#[cfg(feature = "http")]
pub mod http;
pub mod id;
pub mod job;
pub mod policy;
pub mod principal;
pub mod seam;
pub mod time;

pub use error::{Error, ErrorKind, PROBLEM_JSON, Problem, ReasonCode};
pub use event::{DiscardEvents, DisconnectReason, Event, EventKind, EventSink, RecordedEvents};
pub use id::{
    BulkJobId, ClientId, DeviceId, GroupPath, IdError, IdErrorReason, JobId, MAX_GROUP_DEPTH,
    NodeId, TenantId, UserId,
};
pub use job::JobState;
pub use policy::{Action, Denied, Resource, authorize};
pub use principal::{
    AppPrincipal, DevicePrincipal, Principal, Role, Scope, ScopeSet, ServicePrincipal,
    UnknownScope, UserPrincipal,
};
pub use seam::{
    Authenticator, BoxFuture, Credentials, DeviceJob, DeviceJobs, DeviceReport, JobNotice,
    JobNotifier, LivenessPolicy, NotifyOutcome, Presence, PresenceQuery, PresenceState, Secret,
};
pub use time::{Clock, ManualClock, SystemClock, Timestamp, TimestampError};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
