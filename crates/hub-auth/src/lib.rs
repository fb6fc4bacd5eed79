//! # hub-auth
//!
//! OAuth 2.0 / OpenID Connect pieces, bearer validation, device credentials and group-scoped
//! access control for the IoT hub SDK.
//!
//! - [`keys`]: ES256 and EdDSA signing keys, rotation, the JWKS document, persistence.
//! - [`tokens`]: the access and ID tokens the hub signs, and the [`tokens::TokenValidator`] that
//!   turns bearer tokens (the hub's own or an external identity provider's) into principals.
//! - [`authenticator`]: [`HubAuthenticator`], the `hub_core::Authenticator` that sends bearer
//!   tokens to the validator and device access keys to the application's key authenticator.
//! - `layer` (feature `http`): `AuthLayer`, the tower layer that turns `Authorization: Bearer`
//!   into a `Principal` in the request's extensions.
//! - `oauth` (feature `http`): the authorization server's routes (discovery, JWKS, token,
//!   authorize, device authorization, revocation, introspection, userinfo).
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

pub mod authenticator;
pub mod keys;
#[cfg(feature = "http")]
pub mod layer;
#[cfg(feature = "http")]
pub mod oauth;
pub mod password;
pub mod tokens;

pub use authenticator::HubAuthenticator;
pub use hub_core;
#[cfg(feature = "http")]
pub use layer::AuthLayer;

pub mod access_keys;
pub mod bootstrap;
pub mod client_secrets;
pub mod enrollment;
#[cfg(feature = "http")]
pub mod registry_api;
mod secrets;
