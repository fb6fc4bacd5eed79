//! # hub-transport
//!
//! Dense TLS device connections, MQTT over TLS and WebSocket, keep-alive, presence and rendezvous for the IoT hub SDK.
//!
//! - [`https`] (feature `http`): the TLS listener the Web API is served on.
//!
//! The MQTT device listener is being built (issue #6); see `ARCHITECTURE.md` for what this crate
//! owns and the traits of `hub-core` it implements or uses.

#[cfg(feature = "http")]
pub mod https;

pub use hub_core;
