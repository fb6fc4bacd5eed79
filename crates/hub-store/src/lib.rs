//! # hub-store
//!
//! Storage traits, backends (in-memory, SQLite, PostgreSQL) and the conformance kit of the IoT hub SDK.
//!
//! This crate is being built (issue #3); see `ARCHITECTURE.md` for what it will own and the
//! traits of `hub-core` it will implement or use. Until then it only re-exports the vocabulary it
//! builds on.

pub use hub_core;
