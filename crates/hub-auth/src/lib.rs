//! # hub-auth
//!
//! OAuth 2.0 / OpenID Connect pieces, bearer validation, device credentials and group-scoped access control for the IoT hub SDK.
//!
//! Device credentials and the registry:
//!
//! - [`access_keys`]: device access keys `hk_<key id>_<secret>` (issue, rotate with overlap,
//!   revoke, list) and [`AccessKeys`](access_keys::AccessKeys), the
//!   [`Authenticator`](hub_core::Authenticator) for them, with a bounded cache.
//! - [`password`]: argon2id password hashes ([`hash_password`](password::hash_password),
//!   [`verify_password`](password::verify_password)).
//! - [`client_secrets`]: OAuth client secrets, generated and stored hashed.
//! - [`bootstrap`]: the first tenant, admin client and admin user of a new hub.
//! - [`enrollment`]: zero-touch enrollment of devices with a group's shared secret.
//! - `registry_api` (feature `http`): the registry REST API.

pub use hub_core;

pub mod access_keys;
pub mod bootstrap;
pub mod client_secrets;
pub mod enrollment;
pub mod password;
#[cfg(feature = "http")]
pub mod registry_api;
mod secrets;
