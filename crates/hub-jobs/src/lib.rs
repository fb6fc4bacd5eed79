//! # hub-jobs
//!
//! The job state machine and job service of the IoT hub SDK: exactly-once, ordered, timed-out
//! delivery of opaque jobs to devices.
//!
//! - [`machine`]: the pure, deterministic job state machine. Its module docs hold **the
//!   transition table** (every transition, who may cause it and its guard), which is also the
//!   const [`TRANSITIONS`] the code checks itself against. [`JobOptions`] carry a job's
//!   time-to-live, execution and step timeouts, retry policy, delivery policy and concurrency,
//!   with validated limits. Illegal transitions, stale executions and conflicting results are
//!   [`TransitionError`]s that become `hub_core::Error`s of kind `Conflict` (HTTP 409).
//! - [`service`]: [`JobService`], which runs the machine over any `hub_store::JobStore` with
//!   compare-and-set writes on the job's version, authorizes every call with
//!   `hub_core::authorize`, keeps per-device FIFO order per lane, hands a device its jobs exactly
//!   once (a claim is a new execution; a lost answer is redelivered with the same execution),
//!   enforces exclusive control leases, applies delivery policies, fires timers
//!   ([`JobService::tick`]), publishes every state change as an `Event::JobStateChanged` and
//!   pushes `JobNotice`s to devices through `hub_core::JobNotifier`. [`JobService::wait_next`]
//!   is the device's long poll (claim, or wait a bounded time for a job), without HTTP.
//!
//! - [`bulk`]: bulk jobs ([`BulkJobs`]): one job document for a device list or a group subtree
//!   (continuous jobs reach devices that join later), rolled out at a fixed or exponentially
//!   growing rate inside scheduling windows, aborted by failure criteria, with a summary of the
//!   children per state. The rollout planner ([`bulk::plan`]) is pure and property-tested.
//!
//! The REST Job API (and its HTTP long-poll and event stream routes) is not built yet.
//!
//! ```
//! use hub_core::JobState;
//! use hub_jobs::machine::{CommandKind, find_transition};
//! use hub_jobs::{DeliveryPolicy, JobOptions};
//!
//! // Retry twice more with a backoff, give up on devices that stay offline for 10 minutes.
//! let options = JobOptions {
//!     ttl_ms: Some(600_000),
//!     max_attempts: 3,
//!     delivery: DeliveryPolicy::Queue,
//!     ..JobOptions::default()
//! };
//! assert!(options.validate().is_ok());
//!
//! // Only a device's claim delivers a job; nothing leaves `rejected` except removal.
//! let row = find_transition(JobState::Queued, CommandKind::Claim, JobState::Delivered).unwrap();
//! assert_eq!(row.command.actor(), hub_jobs::Actor::Device);
//! assert!(find_transition(JobState::Rejected, CommandKind::Tick, JobState::Queued).is_none());
//! ```

pub mod bulk;
pub mod machine;
pub mod service;

pub use bulk::{BulkConfig, BulkJob, BulkJobs, BulkSummary, CreateBulkJob, Targets};
pub use hub_core;
pub use machine::{
    Actor, Command, CommandKind, DeliveryPolicy, JobOptions, Outcome, TRANSITIONS, Transition,
    TransitionError, apply,
};
pub use service::{CreateJob, JobService, Sleep};
