//! First start: a tenant, an OAuth client to administer it, and an admin user.
//!
//! A hub that has just been installed has nobody who may call its API. [`ensure_bootstrap`]
//! creates, once:
//!
//! - the tenant (its root group), unless it exists;
//! - the user [`BOOTSTRAP_USER`] with the admin role at the tenant's root and a generated
//!   password, for the login page;
//! - the confidential OAuth client [`BOOTSTRAP_CLIENT`] at the tenant's root with the
//!   `client_credentials` grant and every scope, with a generated secret.
//!
//! It returns both secrets exactly once; the application prints them (and nothing else ever
//! shows them again). When the client exists already, bootstrap has run: it returns `None`.
//! Run it on one node: two nodes bootstrapping the same empty database at once both create the
//! user, and only the one whose client creation wins returns the working password.

use hub_core::{ClientId, Clock, GroupPath, Result, Role, ScopeSet, Secret, TenantId, UserId};
use hub_store::{NewUser, OAuthClient, Stores};

use crate::client_secrets::generate_client_secret;
use crate::password::hash_password;
use crate::secrets::random_secret;

/// The id of the bootstrap OAuth client.
pub const BOOTSTRAP_CLIENT: &str = "bootstrap-admin";
/// The id of the bootstrap admin user.
pub const BOOTSTRAP_USER: &str = "admin";

/// What bootstrap created, with the only copy of its secrets. `Debug` hides them.
#[derive(Debug, Clone)]
pub struct BootstrapCredentials {
    /// The tenant.
    pub tenant: TenantId,
    /// The OAuth client (`client_credentials`, every scope, at the tenant's root).
    pub client_id: ClientId,
    /// Its secret.
    pub client_secret: Secret,
    /// The admin user.
    pub admin_user: UserId,
    /// Its password.
    pub admin_password: Secret,
}

/// Creates the tenant, the admin user and the bootstrap client unless the client exists; see the
/// [module documentation](self).
///
/// ```
/// # tokio_test_block_on(async {
/// use hub_auth::bootstrap::ensure_bootstrap;
/// use hub_core::SystemClock;
/// let stores = hub_store::memory::MemoryStore::new(Default::default()).into_stores();
/// let tenant = "acme".parse()?;
/// let first = ensure_bootstrap(&stores, &tenant, &SystemClock).await?;
/// assert!(first.is_some());
/// assert!(ensure_bootstrap(&stores, &tenant, &SystemClock).await?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn ensure_bootstrap(
    stores: &Stores,
    tenant: &TenantId,
    clock: &dyn Clock,
) -> Result<Option<BootstrapCredentials>> {
    let client_id = ClientId::new(BOOTSTRAP_CLIENT)?;
    if stores.registry.get_client(&client_id).await?.is_some() {
        return Ok(None);
    }
    let now = clock.now();
    let root = GroupPath::root(tenant);
    if stores.registry.get_group(&root).await?.is_none() {
        match stores
            .registry
            .create_tenant(tenant, tenant.as_str(), now)
            .await
        {
            Err(e) if e.kind() != hub_core::ErrorKind::Conflict => return Err(e),
            _ => {}
        }
    }

    // The user first: the client is the mark that bootstrap finished, so a crash in between
    // runs bootstrap again and gives the (existing) user a new password.
    let admin_user = UserId::new(BOOTSTRAP_USER)?;
    let password = random_secret()?;
    let hash = hash_password(&password)?;
    if stores
        .registry
        .get_user(tenant, &admin_user)
        .await?
        .is_none()
    {
        let new = NewUser {
            id: admin_user.clone(),
            group: root.clone(),
            display_name: "Administrator".to_owned(),
            email: None,
            role: Role::Admin,
        };
        match stores.registry.create_user(new, now).await {
            Err(e) if e.kind() != hub_core::ErrorKind::Conflict => return Err(e),
            _ => {}
        }
    }
    stores
        .credentials
        .set_password_hash(tenant, &admin_user, hash)
        .await?;

    let (client_secret, secret_hash) = generate_client_secret()?;
    let client = OAuthClient {
        id: client_id.clone(),
        group: root,
        display_name: "Bootstrap administrator".to_owned(),
        redirect_uris: Vec::new(),
        secret_hash: Some(secret_hash),
        grant_types: vec!["client_credentials".to_owned()],
        scopes: ScopeSet::all(),
        created_at: now,
    };
    match stores.registry.create_client(client).await {
        Ok(_) => Ok(Some(BootstrapCredentials {
            tenant: tenant.clone(),
            client_id,
            client_secret,
            admin_user,
            admin_password: Secret::new(password),
        })),
        // Another node bootstrapped at the same moment: it holds the secrets.
        Err(e) if e.kind() == hub_core::ErrorKind::Conflict => Ok(None),
        Err(e) => Err(e),
    }
}
