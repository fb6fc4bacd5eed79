//! # hub-auth
//!
//! OAuth 2.0 / OpenID Connect pieces, bearer validation, device credentials and group-scoped access control for the IoT hub SDK.
//!
//! This crate is being built (issue #5); see `ARCHITECTURE.md` for what it will own and the
//! traits of `hub-core` it will implement or use. Until then it only re-exports the vocabulary it
//! builds on.

pub use hub_core;
