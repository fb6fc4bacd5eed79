//! # hub-jobs
//!
//! The job state machine and Job API of the IoT hub SDK: exactly-once, ordered, timed-out delivery of opaque jobs.
//!
//! - [`machine`]: the pure, deterministic job state machine: states, the transition table (who
//!   may cause each transition and its guard), per-job [`JobOptions`] with validated limits.
//! - [`service`]: the [`JobService`] that runs the machine over a [`hub_store::JobStore`] with
//!   compare-and-set writes, and talks to devices through the `hub-core` seams.

pub mod machine;
pub mod service;

pub use hub_core;
pub use machine::{
    Actor, Command, CommandKind, DeliveryPolicy, JobOptions, Outcome, TRANSITIONS, Transition,
    TransitionError, apply,
};
pub use service::{CreateJob, JobService, Sleep};
