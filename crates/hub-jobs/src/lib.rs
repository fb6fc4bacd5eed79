//! # hub-jobs
//!
//! The job state machine and Job API of the IoT hub SDK: exactly-once, ordered, timed-out delivery of opaque jobs.
//!
//! This crate is being built (issue #4); see `ARCHITECTURE.md` for what it will own and the
//! traits of `hub-core` it will implement or use. Until then it only re-exports the vocabulary it
//! builds on.

pub use hub_core;
