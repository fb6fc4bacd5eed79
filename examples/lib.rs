//! Shared helpers of the example applications. The examples themselves are under
//! `examples/<name>/` and run with `cargo run --release --example <name>`.
//!
//! - [`dev_pki`]: a development CA and server certificate, made on first start, so the hub speaks
//!   TLS out of the box without anything to install.

pub mod dev_pki;
