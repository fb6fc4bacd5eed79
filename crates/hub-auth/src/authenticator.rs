//! [`HubAuthenticator`]: the one `hub_core::Authenticator` an application hands to its HTTP layer
//! and its MQTT listener.

use std::fmt;
use std::sync::Arc;

use hub_core::{Authenticator, BoxFuture, Credentials, Error, Principal};

use crate::tokens::TokenValidator;

/// Sends bearer tokens to a [`TokenValidator`] and device access keys to the application's
/// access-key authenticator.
#[derive(Clone)]
pub struct HubAuthenticator {
    tokens: Arc<TokenValidator>,
    access_keys: Option<Arc<dyn Authenticator>>,
}

impl fmt::Debug for HubAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubAuthenticator")
            .field("tokens", &self.tokens)
            .field("access_keys", &self.access_keys)
            .finish()
    }
}

impl HubAuthenticator {
    /// Bearer tokens only; access keys are refused until [`with_access_keys`](Self::with_access_keys).
    pub fn new(tokens: Arc<TokenValidator>) -> Self {
        Self {
            tokens,
            access_keys: None,
        }
    }

    /// Sends access keys to `access_keys`.
    pub fn with_access_keys(mut self, access_keys: Arc<dyn Authenticator>) -> Self {
        self.access_keys = Some(access_keys);
        self
    }

    /// The token validator.
    pub fn tokens(&self) -> &Arc<TokenValidator> {
        &self.tokens
    }
}

impl Authenticator for HubAuthenticator {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> BoxFuture<'a, Result<Principal, Error>> {
        Box::pin(async move {
            match credentials {
                Credentials::Bearer(token) => self
                    .tokens
                    .validate(token.expose())
                    .await
                    .map(|v| v.principal.clone()),
                Credentials::AccessKey { .. } => match &self.access_keys {
                    Some(a) => a.authenticate(credentials).await,
                    None => Err(Error::unauthenticated("access keys are not accepted here")),
                },
                _ => Err(Error::unauthenticated("these credentials are not accepted")),
            }
        })
    }
}
