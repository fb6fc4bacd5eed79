//! First start: the bootstrap client and admin user, created once.

use hub_auth::bootstrap::{BOOTSTRAP_CLIENT, BOOTSTRAP_USER, ensure_bootstrap};
use hub_auth::client_secrets::verify_client_secret;
use hub_auth::password::verify_password;
use hub_core::{ManualClock, Role, ScopeSet, TenantId, Timestamp};
use hub_store::memory::MemoryStore;

#[tokio::test]
async fn bootstrap_creates_a_working_admin_client_and_user_once() {
    let stores = MemoryStore::new(Default::default()).into_stores();
    let clock = ManualClock::new(Timestamp::from_millis(1_000).unwrap());
    let tenant: TenantId = "acme".parse().unwrap();

    let creds = ensure_bootstrap(&stores, &tenant, &clock)
        .await
        .unwrap()
        .expect("first start");
    assert_eq!(creds.client_id.as_str(), BOOTSTRAP_CLIENT);
    assert_eq!(creds.admin_user.as_str(), BOOTSTRAP_USER);
    let debug = format!("{creds:?}");
    assert!(!debug.contains(creds.client_secret.expose()));
    assert!(!debug.contains(creds.admin_password.expose()));

    // The tenant exists; the client sits at its root with client_credentials and every scope.
    assert!(
        stores
            .registry
            .get_group(&"acme".parse().unwrap())
            .await
            .unwrap()
            .is_some()
    );
    let client = stores
        .registry
        .get_client(&creds.client_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.group.as_str(), "acme");
    assert_eq!(client.grant_types, ["client_credentials"]);
    assert_eq!(client.scopes, ScopeSet::all());
    let hash = client.secret_hash.unwrap();
    assert!(verify_client_secret(&hash, creds.client_secret.expose()));
    assert!(verify_password(&hash, creds.client_secret.expose()));
    assert!(!verify_client_secret(&hash, creds.admin_password.expose()));

    // The admin user signs in with the generated password.
    let admin = stores
        .registry
        .get_user(&tenant, &creds.admin_user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.role, Role::Admin);
    let phc = stores
        .credentials
        .get_password_hash(&tenant, &creds.admin_user)
        .await
        .unwrap()
        .unwrap();
    assert!(phc.starts_with("$argon2id$"));
    assert!(verify_password(&phc, creds.admin_password.expose()));

    // Second start: nothing new, nothing shown, the secrets still work.
    assert!(
        ensure_bootstrap(&stores, &tenant, &clock)
            .await
            .unwrap()
            .is_none()
    );
    let phc_after = stores
        .credentials
        .get_password_hash(&tenant, &creds.admin_user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(phc, phc_after);
}

#[tokio::test]
async fn bootstrap_completes_a_start_that_crashed_half_way() {
    let stores = MemoryStore::new(Default::default()).into_stores();
    let clock = ManualClock::new(Timestamp::from_millis(1_000).unwrap());
    let tenant: TenantId = "acme".parse().unwrap();
    // The tenant and the user exist, the client does not: a crash between the two.
    stores
        .registry
        .create_tenant(&tenant, "Acme", Timestamp::from_millis(1).unwrap())
        .await
        .unwrap();
    stores
        .registry
        .create_user(
            hub_store::NewUser {
                id: BOOTSTRAP_USER.parse().unwrap(),
                group: "acme".parse().unwrap(),
                display_name: String::new(),
                email: None,
                role: Role::Admin,
            },
            Timestamp::from_millis(1).unwrap(),
        )
        .await
        .unwrap();
    let creds = ensure_bootstrap(&stores, &tenant, &clock)
        .await
        .unwrap()
        .expect("finishes");
    let phc = stores
        .credentials
        .get_password_hash(&tenant, &creds.admin_user)
        .await
        .unwrap()
        .unwrap();
    assert!(verify_password(&phc, creds.admin_password.expose()));
}
