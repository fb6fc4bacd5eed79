//! # hub-transport
//!
//! Dense TLS device connections, MQTT over TLS and WebSocket, keep-alive, presence and rendezvous for the IoT hub SDK.
//!
//! This crate is being built (issue #6); see `ARCHITECTURE.md` for what it will own and the
//! traits of `hub-core` it will implement or use. Until then it only re-exports the vocabulary it
//! builds on.

pub use hub_core;
