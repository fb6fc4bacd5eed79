//! Credential checks: access keys by prefix, newest first, expiry, revocation.

use hub_core::ErrorKind;

use super::{StoresFactory, T0, dev, expect_kind, group, ok, tenant, ts};
use crate::credentials::{AccessKeyRecord, EnrollmentRecord};

fn key(prefix: &str, tenant_id: &str, device: &str, created: i64) -> AccessKeyRecord {
    AccessKeyRecord {
        prefix: prefix.to_owned(),
        tenant: tenant(tenant_id),
        device: dev(device),
        hash: format!("$argon2id$v=19$m=19456,t=2,p=1${prefix}$hash"),
        created_at: ts(created),
        expires_at: None,
        revoked_at: None,
    }
}

pub(super) async fn access_keys(factory: StoresFactory) {
    let creds = factory().await.credentials;
    let k1 = key("hk_0001", "acme", "pump-1", T0);
    let k2 = key("hk_0002", "acme", "pump-1", T0 + 1000);
    let k3 = key("hk_0003", "acme", "pump-1", T0 + 500);
    let other_device = key("hk_0004", "acme", "pump-2", T0 + 2000);
    let other_tenant = key("hk_0005", "globex", "pump-1", T0 + 3000);
    for k in [&k1, &k2, &k3, &other_device, &other_tenant] {
        ok(
            creds.put_access_key(k.clone()).await,
            &format!("put_access_key({})", k.prefix),
        );
    }
    let mut dup = key("hk_0001", "globex", "pump-9", T0 + 9000);
    dup.hash = "other".into();
    expect_kind(
        creds.put_access_key(dup).await,
        ErrorKind::Conflict,
        "put_access_key with a prefix that exists (even for another device and tenant)",
    );
    assert_eq!(
        ok(creds.find_access_key("hk_0001").await, "find_access_key"),
        Some(k1.clone()),
        "find_access_key returns the key as stored; a refused duplicate changes nothing"
    );
    assert_eq!(
        ok(creds.find_access_key("hk_9999").await, "find_access_key"),
        None
    );
    assert_eq!(
        ok(creds.find_access_key("hk_000").await, "find_access_key"),
        None,
        "find_access_key matches the whole prefix, not a prefix of it"
    );
    assert_eq!(
        ok(
            creds
                .list_access_keys(&tenant("acme"), &dev("pump-1"))
                .await,
            "list_access_keys"
        ),
        vec![k2.clone(), k3.clone(), k1.clone()],
        "list_access_keys: the device's keys, newest first"
    );
    assert_eq!(
        ok(
            creds
                .list_access_keys(&tenant("globex"), &dev("pump-1"))
                .await,
            "list_access_keys"
        ),
        vec![other_tenant.clone()],
        "list_access_keys is per tenant"
    );
    assert!(
        ok(
            creds
                .list_access_keys(&tenant("acme"), &dev("pump-9"))
                .await,
            "list_access_keys"
        )
        .is_empty()
    );

    // Expiry (rotation overlap).
    ok(
        creds
            .set_access_key_expiry("hk_0001", Some(ts(T0 + 60_000)))
            .await,
        "set_access_key_expiry",
    );
    let k1e = ok(creds.find_access_key("hk_0001").await, "find_access_key").expect("k1");
    assert_eq!(
        k1e.expires_at,
        Some(ts(T0 + 60_000)),
        "the expiry is stored"
    );
    assert!(k1e.is_usable(ts(T0 + 59_999)), "usable before its expiry");
    assert!(!k1e.is_usable(ts(T0 + 60_000)), "not usable at its expiry");
    ok(
        creds.set_access_key_expiry("hk_0001", None).await,
        "clear the expiry",
    );
    let k1c = ok(creds.find_access_key("hk_0001").await, "find_access_key").expect("k1");
    assert_eq!(k1c, k1, "clearing the expiry restores the key");
    assert!(k1c.is_usable(ts(T0 + 10_000_000)));
    expect_kind(
        creds.set_access_key_expiry("hk_9999", Some(ts(T0))).await,
        ErrorKind::NotFound,
        "set_access_key_expiry of an unknown key",
    );

    // Revocation: the first time stays.
    ok(
        creds.revoke_access_key("hk_0002", ts(T0 + 5000)).await,
        "revoke_access_key",
    );
    ok(
        creds.revoke_access_key("hk_0002", ts(T0 + 7000)).await,
        "revoke_access_key of a revoked key",
    );
    let k2r = ok(creds.find_access_key("hk_0002").await, "find_access_key").expect("k2");
    assert_eq!(
        k2r.revoked_at,
        Some(ts(T0 + 5000)),
        "revoking twice keeps the first revocation time"
    );
    assert!(!k2r.is_usable(ts(T0 + 1)), "a revoked key is not usable");
    assert_eq!(
        (k2r.hash.as_str(), k2r.created_at, k2r.expires_at),
        (k2.hash.as_str(), k2.created_at, None),
        "revocation changes nothing else"
    );
    expect_kind(
        creds.revoke_access_key("hk_9999", ts(T0)).await,
        ErrorKind::NotFound,
        "revoke_access_key of an unknown key",
    );
    let listed = ok(
        creds
            .list_access_keys(&tenant("acme"), &dev("pump-1"))
            .await,
        "list_access_keys",
    );
    assert_eq!(
        listed.iter().map(|k| k.prefix.as_str()).collect::<Vec<_>>(),
        ["hk_0002", "hk_0003", "hk_0001"],
        "revoked keys are still listed, newest first"
    );
    assert_eq!(listed[0].revoked_at, Some(ts(T0 + 5000)));
    assert_eq!(
        ok(creds.find_access_key("hk_0003").await, "find_access_key"),
        Some(k3),
        "other keys are untouched"
    );
}

/// Deleting a device takes its access keys with it; other devices' keys stay.
pub(super) async fn device_deletion_removes_keys(factory: StoresFactory) {
    let stores = factory().await;
    ok(
        stores
            .registry
            .create_tenant(&tenant("acme"), "Acme", ts(T0))
            .await,
        "create_tenant",
    );
    for d in ["pump-1", "pump-2"] {
        ok(
            stores
                .registry
                .create_device(
                    crate::NewDevice {
                        id: dev(d),
                        group: group("acme"),
                        display_name: String::new(),
                        attributes: serde_json::json!({}),
                    },
                    ts(T0),
                )
                .await,
            "create_device",
        );
    }
    for (prefix, d) in [
        ("hk_del1", "pump-1"),
        ("hk_del2", "pump-1"),
        ("hk_keep", "pump-2"),
    ] {
        ok(
            stores
                .credentials
                .put_access_key(key(prefix, "acme", d, T0))
                .await,
            "put_access_key",
        );
    }
    ok(
        stores
            .registry
            .delete_device(&tenant("acme"), &dev("pump-1"))
            .await,
        "delete_device",
    );
    for prefix in ["hk_del1", "hk_del2"] {
        assert_eq!(
            ok(stores.credentials.find_access_key(prefix).await, "find"),
            None,
            "the key {prefix} of a deleted device must be gone"
        );
    }
    assert!(
        ok(stores.credentials.find_access_key("hk_keep").await, "find").is_some(),
        "another device's key stays"
    );
}

fn enrollment(id: &str, group_path: &str, max_uses: u32, expires: i64) -> EnrollmentRecord {
    EnrollmentRecord {
        id: id.to_owned(),
        group: group(group_path),
        hash: format!("$sha256${id}"),
        max_uses,
        uses: 0,
        expires_at: ts(expires),
        created_at: ts(T0),
    }
}

/// Enrollments: stored by id, listed by subtree, used a bounded number of times until they
/// expire, deleted.
pub(super) async fn enrollments(factory: StoresFactory) {
    let creds = factory().await.credentials;
    let e1 = enrollment("en1", "acme/plant-1", 2, T0 + 60_000);
    let e2 = enrollment("en2", "acme", 5, T0 + 60_000);
    let e3 = enrollment("en3", "acme/plant-10", 5, T0 + 60_000);
    let e4 = enrollment("en4", "globex", 5, T0 + 60_000);
    for e in [&e1, &e2, &e3, &e4] {
        ok(creds.put_enrollment(e.clone()).await, "put_enrollment");
    }
    expect_kind(
        creds
            .put_enrollment(enrollment("en1", "globex", 9, T0))
            .await,
        ErrorKind::Conflict,
        "put_enrollment with an id that exists",
    );
    expect_kind(
        creds.put_enrollment(enrollment("", "acme", 1, T0)).await,
        ErrorKind::InvalidInput,
        "put_enrollment with an empty id",
    );
    assert_eq!(
        ok(creds.get_enrollment("en1").await, "get_enrollment"),
        Some(e1.clone()),
        "get_enrollment returns it as stored; a refused duplicate changes nothing"
    );
    assert_eq!(ok(creds.get_enrollment("en").await, "get_enrollment"), None);
    let ids = |v: Vec<EnrollmentRecord>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok(
            creds.list_enrollments(&group("acme")).await,
            "list_enrollments"
        )),
        ["en1", "en2", "en3"],
        "the tenant's enrollments, by id"
    );
    assert_eq!(
        ids(ok(
            creds.list_enrollments(&group("acme/plant-1")).await,
            "list_enrollments"
        )),
        ["en1"],
        "a subtree holds its own and those below, not a sibling's with a longer name"
    );

    // Uses are counted up to the maximum.
    let used = ok(creds.use_enrollment("en1", ts(T0)).await, "use_enrollment");
    assert_eq!(used.map(|e| e.uses), Some(1));
    let used = ok(creds.use_enrollment("en1", ts(T0)).await, "use_enrollment");
    assert_eq!(used.map(|e| e.uses), Some(2));
    assert_eq!(
        ok(creds.use_enrollment("en1", ts(T0)).await, "use_enrollment"),
        None,
        "no use beyond max_uses"
    );
    assert_eq!(
        ok(creds.get_enrollment("en1").await, "get_enrollment").map(|e| e.uses),
        Some(2),
        "a refused use counts nothing"
    );
    // Expiry.
    assert_eq!(
        ok(
            creds.use_enrollment("en2", ts(T0 + 60_000)).await,
            "use_enrollment"
        ),
        None,
        "not usable at its expiry"
    );
    assert!(
        ok(
            creds.use_enrollment("en2", ts(T0 + 59_999)).await,
            "use_enrollment"
        )
        .is_some()
    );
    assert_eq!(
        ok(creds.use_enrollment("nope", ts(T0)).await, "use_enrollment"),
        None
    );

    ok(creds.delete_enrollment("en2").await, "delete_enrollment");
    assert_eq!(
        ok(creds.get_enrollment("en2").await, "get_enrollment"),
        None
    );
    expect_kind(
        creds.delete_enrollment("en2").await,
        ErrorKind::NotFound,
        "delete_enrollment of an unknown enrollment",
    );
    assert_eq!(
        ok(creds.use_enrollment("en2", ts(T0)).await, "use_enrollment"),
        None
    );
}

/// Of concurrent uses of an enrollment with `n` uses left exactly `n` succeed.
pub(super) async fn enrollment_uses_race(factory: StoresFactory) {
    let creds = factory().await.credentials;
    ok(
        creds
            .put_enrollment(enrollment("race", "acme", 3, T0 + 60_000))
            .await,
        "put_enrollment",
    );
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let creds = creds.clone();
        tasks.push(tokio::spawn(async move {
            creds.use_enrollment("race", ts(T0)).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        if ok(t.await.expect("the task runs"), "use_enrollment").is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 3, "exactly max_uses concurrent uses succeed");
    assert_eq!(
        ok(creds.get_enrollment("race").await, "get_enrollment").map(|e| e.uses),
        Some(3)
    );
}
