//! Credential checks for the authorization server: password hashes, single-use grants
//! (authorization and device codes) and refresh-token families with rotation and reuse
//! detection, sequential and concurrent.

use std::sync::Arc;

use hub_core::{ErrorKind, ScopeSet};
use serde_json::json;
use tokio::task::JoinSet;

use super::registry::tree;
use super::users::{cid, new_user, uid};
use super::{StoresFactory, T0, expect_kind, ok, tenant, ts};
use crate::credentials::{
    CredentialStore, Grant, GrantKind, GrantState, RefreshRecord, RefreshToken, RotateOutcome,
};

const RACERS: usize = 12;

async fn join_all<T: Send + 'static>(mut set: JoinSet<T>, what: &str) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(v) => out.push(v),
            Err(e) => panic!("{what}: a racing task failed: {e}"),
        }
    }
    out
}

fn code(key: &str, expires: i64) -> Grant {
    Grant {
        kind: GrantKind::AuthorizationCode,
        key_hash: key.to_owned(),
        user_code: None,
        payload: json!({ "client": "dashboard", "user": "erin", "pkce": "S256:abc" }),
        expires_at: ts(expires),
        state: GrantState::Approved,
    }
}

fn device_code(key: &str, user_code: &str, expires: i64) -> Grant {
    Grant {
        kind: GrantKind::DeviceCode,
        key_hash: key.to_owned(),
        user_code: Some(user_code.to_owned()),
        payload: json!({ "client": "cli", "scope": "devices:read" }),
        expires_at: ts(expires),
        state: GrantState::Pending,
    }
}

fn refresh(hash: &str, family: &str, created: i64) -> RefreshToken {
    RefreshToken {
        token_hash: hash.to_owned(),
        family: family.to_owned(),
        tenant: tenant("acme"),
        user: Some(uid("erin")),
        client: cid("dashboard"),
        scopes: "devices:read jobs:read".parse().expect("valid scopes"),
        expires_at: ts(created + 3_600_000),
        created_at: ts(created),
    }
}

async fn record(creds: &Arc<dyn CredentialStore>, hash: &str) -> RefreshRecord {
    ok(creds.get_refresh(hash).await, "get_refresh")
        .unwrap_or_else(|| panic!("refresh token {hash} should be stored"))
}

pub(super) async fn passwords(factory: StoresFactory) {
    let stores = factory().await;
    let (reg, creds) = (stores.registry, stores.credentials);
    tree(&reg, "acme", &[]).await;
    tree(&reg, "globex", &[]).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    ok(
        reg.create_user(new_user("erin", "acme"), ts(T0)).await,
        "create_user",
    );
    ok(
        reg.create_user(new_user("erin", "globex"), ts(T0)).await,
        "create_user",
    );
    assert_eq!(
        ok(
            creds.get_password_hash(&acme, &uid("erin")).await,
            "get_password_hash"
        ),
        None,
        "a new user has no password"
    );
    ok(
        creds
            .set_password_hash(&acme, &uid("erin"), "$argon2id$one".into())
            .await,
        "set_password_hash",
    );
    ok(
        creds
            .set_password_hash(&acme, &uid("erin"), "$argon2id$two".into())
            .await,
        "set_password_hash again (replaces)",
    );
    assert_eq!(
        ok(
            creds.get_password_hash(&acme, &uid("erin")).await,
            "get_password_hash"
        ),
        Some("$argon2id$two".to_owned())
    );
    assert_eq!(
        ok(
            creds.get_password_hash(&globex, &uid("erin")).await,
            "get_password_hash"
        ),
        None,
        "password hashes are per tenant"
    );
    expect_kind(
        creds
            .set_password_hash(&acme, &uid("nobody"), "$argon2id$x".into())
            .await,
        ErrorKind::NotFound,
        "set_password_hash for a user that does not exist",
    );
    expect_kind(
        creds
            .set_password_hash(&acme, &uid("erin"), String::new())
            .await,
        ErrorKind::InvalidInput,
        "set_password_hash with an empty hash",
    );
    ok(reg.delete_user(&acme, &uid("erin")).await, "delete_user");
    ok(
        reg.create_user(new_user("erin", "acme"), ts(T0)).await,
        "create_user",
    );
    assert_eq!(
        ok(
            creds.get_password_hash(&acme, &uid("erin")).await,
            "get_password_hash"
        ),
        None,
        "deleting a user deletes its password hash: a new user with the same id has none"
    );
}

pub(super) async fn single_use(factory: StoresFactory) {
    let creds = factory().await.credentials;
    let now = ts(T0);
    let g = code("code-1", T0 + 60_000);
    ok(creds.put_grant(g.clone(), now).await, "put_grant");
    expect_kind(
        creds.put_grant(code("code-1", T0 + 99_000), now).await,
        ErrorKind::Conflict,
        "put_grant with a key hash that exists",
    );
    // The same key hash as another kind is another grant.
    ok(
        creds
            .put_grant(device_code("code-1", "WDJB-MJHT", T0 + 60_000), now)
            .await,
        "put_grant of a device code with an authorization code's key hash",
    );
    assert_eq!(
        ok(
            creds
                .get_grant(GrantKind::AuthorizationCode, "code-1", now)
                .await,
            "get_grant"
        ),
        Some(g.clone()),
        "get_grant returns the grant as stored"
    );
    assert_eq!(
        ok(
            creds
                .consume_grant(GrantKind::AuthorizationCode, "code-1", ts(T0 + 1))
                .await,
            "consume_grant"
        ),
        Some(g.clone()),
        "the first consume_grant returns the grant"
    );
    assert_eq!(
        ok(
            creds
                .consume_grant(GrantKind::AuthorizationCode, "code-1", ts(T0 + 2))
                .await,
            "consume_grant"
        ),
        None,
        "a second consume_grant returns nothing: codes are single-use"
    );
    assert_eq!(
        ok(
            creds
                .get_grant(GrantKind::AuthorizationCode, "code-1", now)
                .await,
            "get_grant"
        ),
        None
    );
    assert!(
        ok(
            creds.get_grant(GrantKind::DeviceCode, "code-1", now).await,
            "get_grant"
        )
        .is_some(),
        "consuming one kind leaves the other kind's grant"
    );

    // Expiry: live while now < expires_at.
    ok(
        creds.put_grant(code("code-2", T0 + 1000), now).await,
        "put_grant",
    );
    assert_eq!(
        ok(
            creds
                .consume_grant(GrantKind::AuthorizationCode, "code-2", ts(T0 + 1000))
                .await,
            "consume_grant"
        ),
        None,
        "an expired code cannot be consumed"
    );
    assert_eq!(
        ok(
            creds
                .get_grant(GrantKind::AuthorizationCode, "code-2", ts(T0 + 1000))
                .await,
            "get_grant"
        ),
        None,
        "an expired grant is never returned"
    );
    assert!(
        ok(
            creds
                .get_grant(GrantKind::AuthorizationCode, "code-2", ts(T0 + 999))
                .await,
            "get_grant"
        )
        .is_some()
    );

    // Limits and shapes.
    let mut big = code("code-3", T0 + 60_000);
    big.payload = json!({ "blob": "x".repeat(9000) });
    expect_kind(
        creds.put_grant(big, now).await,
        ErrorKind::TooLarge,
        "put_grant with a payload over max_grant_payload_bytes",
    );
    let mut with_user_code = code("code-4", T0 + 60_000);
    with_user_code.user_code = Some("ABCD-EFGH".into());
    expect_kind(
        creds.put_grant(with_user_code, now).await,
        ErrorKind::InvalidInput,
        "put_grant of an authorization code with a user code",
    );
    expect_kind(
        creds.put_grant(code("", T0 + 60_000), now).await,
        ErrorKind::InvalidInput,
        "put_grant with an empty key hash",
    );
    for key in ["code-3", "code-4"] {
        assert_eq!(
            ok(
                creds
                    .get_grant(GrantKind::AuthorizationCode, key, now)
                    .await,
                "get_grant"
            ),
            None,
            "refused grants are not stored"
        );
    }

    // purge_expired removes only expired grants.
    ok(
        creds.put_grant(code("code-5", T0 + 500), now).await,
        "put_grant",
    );
    assert_eq!(
        ok(creds.purge_expired(ts(T0 + 1000)).await, "purge_expired"),
        2,
        "purge_expired removes code-2 and code-5"
    );
    assert_eq!(
        ok(creds.purge_expired(ts(T0 + 1000)).await, "purge_expired"),
        0
    );
    assert!(
        ok(
            creds
                .get_grant(GrantKind::DeviceCode, "code-1", ts(T0 + 1000))
                .await,
            "get_grant"
        )
        .is_some(),
        "purge_expired keeps live grants"
    );
}

pub(super) async fn concurrent_consume(factory: StoresFactory) {
    let creds = factory().await.credentials;
    for round in 0..4 {
        let key = format!("race-{round}");
        ok(
            creds.put_grant(code(&key, T0 + 60_000), ts(T0)).await,
            "put_grant",
        );
        let mut set = JoinSet::new();
        for _ in 0..RACERS {
            let (c, key) = (creds.clone(), key.clone());
            set.spawn(async move {
                c.consume_grant(GrantKind::AuthorizationCode, &key, ts(T0 + 1))
                    .await
            });
        }
        let outcomes = join_all(set, "concurrent consume_grant").await;
        let mut winners = 0;
        for o in outcomes {
            if ok(o, "concurrent consume_grant").is_some() {
                winners += 1;
            }
        }
        assert_eq!(
            winners, 1,
            "{RACERS} concurrent consume_grant calls of one code: exactly one gets it"
        );
    }
}

pub(super) async fn device_flow(factory: StoresFactory) {
    let creds = factory().await.credentials;
    let now = ts(T0);
    let dc = device_code("dev-1", "WDJB-MJHT", T0 + 600_000);
    ok(
        creds.put_grant(dc.clone(), now).await,
        "put_grant(device code)",
    );
    expect_kind(
        creds
            .put_grant(device_code("dev-2", "WDJB-MJHT", T0 + 600_000), now)
            .await,
        ErrorKind::Conflict,
        "put_grant with the user code of a live device code",
    );
    assert_eq!(
        ok(
            creds.find_grant_by_user_code("WDJB-MJHT", now).await,
            "find_grant_by_user_code"
        ),
        Some(dc.clone())
    );
    assert_eq!(
        ok(
            creds.find_grant_by_user_code("WDJB-XXXX", now).await,
            "find_grant_by_user_code"
        ),
        None
    );
    // Pending: polling does not consume.
    assert_eq!(
        ok(
            creds
                .consume_grant(GrantKind::DeviceCode, "dev-1", ts(T0 + 5000))
                .await,
            "consume_grant"
        ),
        None,
        "a pending device code cannot be consumed"
    );
    expect_kind(
        creds
            .set_grant_state(
                GrantKind::DeviceCode,
                "dev-1",
                GrantState::Pending,
                None,
                now,
            )
            .await,
        ErrorKind::InvalidInput,
        "set_grant_state to Pending",
    );
    let mut big = json!({ "blob": "x".repeat(9000) });
    expect_kind(
        creds
            .set_grant_state(
                GrantKind::DeviceCode,
                "dev-1",
                GrantState::Approved,
                Some(big.take()),
                now,
            )
            .await,
        ErrorKind::TooLarge,
        "set_grant_state with an oversized payload",
    );
    let approved = ok(
        creds
            .set_grant_state(
                GrantKind::DeviceCode,
                "dev-1",
                GrantState::Approved,
                Some(json!({ "client": "cli", "user": "erin", "tenant": "acme" })),
                ts(T0 + 10_000),
            )
            .await,
        "set_grant_state(Approved)",
    );
    let expected = Grant {
        state: GrantState::Approved,
        payload: json!({ "client": "cli", "user": "erin", "tenant": "acme" }),
        ..dc.clone()
    };
    assert_eq!(
        approved, expected,
        "set_grant_state returns the updated grant"
    );
    expect_kind(
        creds
            .set_grant_state(
                GrantKind::DeviceCode,
                "dev-1",
                GrantState::Denied,
                None,
                now,
            )
            .await,
        ErrorKind::Conflict,
        "set_grant_state of a grant that is no longer pending",
    );
    expect_kind(
        creds
            .set_grant_state(
                GrantKind::DeviceCode,
                "dev-9",
                GrantState::Approved,
                None,
                now,
            )
            .await,
        ErrorKind::NotFound,
        "set_grant_state of an unknown grant",
    );
    assert_eq!(
        ok(
            creds
                .consume_grant(GrantKind::DeviceCode, "dev-1", ts(T0 + 11_000))
                .await,
            "consume_grant"
        ),
        Some(expected),
        "an approved device code is consumed once, with the approval's payload"
    );
    assert_eq!(
        ok(
            creds
                .consume_grant(GrantKind::DeviceCode, "dev-1", ts(T0 + 12_000))
                .await,
            "consume_grant"
        ),
        None
    );
    // Denied codes are never consumed; get_grant tells the poller.
    ok(
        creds
            .put_grant(device_code("dev-3", "KKKK-LLLL", T0 + 600_000), now)
            .await,
        "put_grant",
    );
    ok(
        creds
            .set_grant_state(
                GrantKind::DeviceCode,
                "dev-3",
                GrantState::Denied,
                None,
                now,
            )
            .await,
        "set_grant_state(Denied)",
    );
    assert_eq!(
        ok(
            creds
                .consume_grant(GrantKind::DeviceCode, "dev-3", now)
                .await,
            "consume_grant"
        ),
        None,
        "a denied device code cannot be consumed"
    );
    assert_eq!(
        ok(
            creds.get_grant(GrantKind::DeviceCode, "dev-3", now).await,
            "get_grant"
        )
        .map(|g| g.state),
        Some(GrantState::Denied)
    );
    // Expired device codes: not found by user code, not approvable, and their user code is
    // free again.
    ok(
        creds
            .put_grant(device_code("dev-4", "PPPP-QQQQ", T0 + 1000), now)
            .await,
        "put_grant",
    );
    let later = ts(T0 + 1000);
    assert_eq!(
        ok(
            creds.find_grant_by_user_code("PPPP-QQQQ", later).await,
            "find_grant_by_user_code"
        ),
        None,
        "find_grant_by_user_code skips expired device codes"
    );
    expect_kind(
        creds
            .set_grant_state(
                GrantKind::DeviceCode,
                "dev-4",
                GrantState::Approved,
                None,
                later,
            )
            .await,
        ErrorKind::NotFound,
        "set_grant_state of an expired grant",
    );
    let reuse = device_code("dev-5", "PPPP-QQQQ", T0 + 600_000);
    ok(
        creds.put_grant(reuse.clone(), later).await,
        "put_grant reusing the user code of an expired device code",
    );
    assert_eq!(
        ok(
            creds.find_grant_by_user_code("PPPP-QQQQ", later).await,
            "find_grant_by_user_code"
        ),
        Some(reuse)
    );
}

pub(super) async fn refresh_rotation(factory: StoresFactory) {
    let creds = factory().await.credentials;
    let t1 = refresh("rt-1", "fam-a", T0);
    ok(creds.create_refresh(t1.clone()).await, "create_refresh");
    expect_kind(
        creds.create_refresh(refresh("rt-1", "fam-z", T0)).await,
        ErrorKind::Conflict,
        "create_refresh with a token hash that exists",
    );
    expect_kind(
        creds.create_refresh(refresh("rt-9", "fam-a", T0)).await,
        ErrorKind::Conflict,
        "create_refresh into a family that exists",
    );
    ok(
        creds.create_refresh(refresh("other-1", "fam-b", T0)).await,
        "create_refresh(another family)",
    );
    assert_eq!(
        record(&creds, "rt-1").await,
        RefreshRecord {
            token: t1.clone(),
            used: false,
            revoked: false
        }
    );

    // Happy path: rt-1 -> rt-2 -> rt-3. The new token inherits family, tenant, user, client.
    let mut next = refresh("rt-2", "ignored", T0 + 1000);
    next.user = None;
    next.scopes = ScopeSet::EMPTY;
    let out = ok(
        creds.rotate_refresh("rt-1", next, ts(T0 + 1000)).await,
        "rotate_refresh(rt-1)",
    );
    assert_eq!(
        out,
        RotateOutcome::Rotated(t1.clone()),
        "rotation returns the old token"
    );
    let r2 = record(&creds, "rt-2").await;
    assert_eq!(
        r2.token,
        RefreshToken {
            token_hash: "rt-2".into(),
            family: "fam-a".into(),
            tenant: tenant("acme"),
            user: Some(uid("erin")),
            client: cid("dashboard"),
            scopes: ScopeSet::EMPTY,
            expires_at: ts(T0 + 1000 + 3_600_000),
            created_at: ts(T0 + 1000),
        },
        "the new token is in the old one's family, for the same tenant, user and client"
    );
    assert!(r2.is_usable(ts(T0 + 1000)));
    assert!(
        record(&creds, "rt-1").await.used,
        "the rotated token is marked used"
    );
    assert!(matches!(
        ok(
            creds
                .rotate_refresh("rt-2", refresh("rt-3", "x", T0 + 2000), ts(T0 + 2000))
                .await,
            "rotate_refresh(rt-2)"
        ),
        RotateOutcome::Rotated(_)
    ));
    expect_kind(
        creds
            .rotate_refresh("rt-3", refresh("other-1", "x", T0 + 3000), ts(T0 + 3000))
            .await,
        ErrorKind::Conflict,
        "rotate_refresh to a token hash that exists",
    );
    assert!(
        record(&creds, "rt-3").await.is_usable(ts(T0 + 3000)),
        "a rotation refused for a duplicate new hash changes nothing"
    );

    // Replay of rt-1 (used twice over): the whole family goes, rt-3 included.
    assert_eq!(
        ok(
            creds
                .rotate_refresh("rt-1", refresh("rt-x", "x", T0 + 4000), ts(T0 + 4000))
                .await,
            "rotate_refresh(rt-1) replayed"
        ),
        RotateOutcome::Reused {
            family: "fam-a".into()
        },
        "presenting a used refresh token is a replay"
    );
    assert_eq!(
        ok(creds.get_refresh("rt-x").await, "get_refresh"),
        None,
        "a replay stores no new token"
    );
    for h in ["rt-1", "rt-2", "rt-3"] {
        assert!(
            record(&creds, h).await.revoked,
            "after a replay every token of the family is revoked ({h})"
        );
    }
    assert_eq!(
        ok(
            creds
                .rotate_refresh("rt-3", refresh("rt-4", "x", T0 + 5000), ts(T0 + 5000))
                .await,
            "rotate_refresh(rt-3) after the family was revoked"
        ),
        RotateOutcome::Invalid,
        "the newest token of a revoked family no longer rotates"
    );
    assert!(
        record(&creds, "other-1").await.is_usable(ts(T0 + 5000)),
        "other families are untouched"
    );

    // Unknown and expired.
    assert_eq!(
        ok(
            creds
                .rotate_refresh("nope", refresh("rt-5", "x", T0), ts(T0))
                .await,
            "rotate_refresh(unknown)"
        ),
        RotateOutcome::Invalid
    );
    assert_eq!(
        ok(
            creds
                .rotate_refresh("other-1", refresh("rt-6", "x", T0), ts(T0 + 3_600_000))
                .await,
            "rotate_refresh(expired)"
        ),
        RotateOutcome::Invalid,
        "an expired refresh token does not rotate (usable while now < expires_at)"
    );
    assert!(!record(&creds, "other-1").await.used);

    // Explicit revocation.
    ok(
        creds.create_refresh(refresh("c-1", "fam-c", T0)).await,
        "create_refresh",
    );
    assert!(matches!(
        ok(
            creds
                .rotate_refresh("c-1", refresh("c-2", "x", T0 + 1), ts(T0 + 1))
                .await,
            "rotate_refresh(c-1)"
        ),
        RotateOutcome::Rotated(_)
    ));
    assert_eq!(ok(creds.revoke_family("fam-c").await, "revoke_family"), 2);
    assert_eq!(ok(creds.revoke_family("fam-c").await, "revoke_family"), 0);
    assert_eq!(
        ok(creds.revoke_family("fam-none").await, "revoke_family"),
        0
    );
    assert_eq!(
        ok(
            creds
                .rotate_refresh("c-2", refresh("c-3", "x", T0 + 2), ts(T0 + 2))
                .await,
            "rotate_refresh after revoke_family"
        ),
        RotateOutcome::Invalid
    );

    // purge_expired also drops expired refresh tokens.
    let before_purge = ok(creds.get_refresh("other-1").await, "get_refresh");
    assert!(before_purge.is_some());
    let purged = ok(
        creds.purge_expired(ts(T0 + 10 * 3_600_000)).await,
        "purge_expired",
    );
    assert_eq!(
        purged, 6,
        "every refresh token stored here has expired by then"
    );
    assert_eq!(ok(creds.get_refresh("other-1").await, "get_refresh"), None);
}

pub(super) async fn concurrent_rotation(factory: StoresFactory) {
    let creds = factory().await.credentials;
    for round in 0..4 {
        let family = format!("fam-{round}");
        let first = format!("r{round}-0");
        ok(
            creds.create_refresh(refresh(&first, &family, T0)).await,
            "create_refresh",
        );
        let mut set = JoinSet::new();
        for i in 0..RACERS {
            let (c, first) = (creds.clone(), first.clone());
            let new = refresh(&format!("r{round}-new-{i}"), "x", T0 + 1);
            set.spawn(async move { c.rotate_refresh(&first, new, ts(T0 + 1)).await });
        }
        let outcomes = join_all(set, "concurrent rotate_refresh").await;
        let mut rotated = 0;
        for o in outcomes {
            match ok(o, "concurrent rotate_refresh") {
                RotateOutcome::Rotated(_) => rotated += 1,
                RotateOutcome::Reused { family: f } => assert_eq!(f, family),
                RotateOutcome::Invalid => {
                    panic!("a concurrent rotation of a live token was reported Invalid")
                }
            }
        }
        assert_eq!(
            rotated, 1,
            "{RACERS} concurrent rotations of one token: exactly one is Rotated"
        );
        let mut stored = 0;
        for i in 0..RACERS {
            if let Some(r) = ok(
                creds.get_refresh(&format!("r{round}-new-{i}")).await,
                "get_refresh",
            ) {
                stored += 1;
                assert!(
                    r.revoked,
                    "the winner's new token is revoked once the others replayed the old one"
                );
            }
        }
        assert_eq!(stored, 1, "only the winner's new token is stored");
    }
}

pub(super) async fn tenant_isolation(factory: StoresFactory) {
    let stores = factory().await;
    let reg = stores.registry;
    tree(&reg, "acme", &["acme/plant-1"]).await;
    tree(&reg, "globex", &["globex/plant-1"]).await;
    ok(
        reg.create_user(new_user("sam", "acme/plant-1"), ts(T0))
            .await,
        "create_user",
    );
    ok(
        reg.create_user(new_user("sam", "globex/plant-1"), ts(T0))
            .await,
        "create_user",
    );
    ok(
        reg.update_user(
            &tenant("globex"),
            &uid("sam"),
            crate::registry::UserPatch {
                disabled: Some(true),
                ..Default::default()
            },
            Some(1),
            ts(T0 + 1),
        )
        .await,
        "update_user(globex/sam)",
    );
    let acme_sam = ok(reg.get_user(&tenant("acme"), &uid("sam")).await, "get_user");
    assert_eq!(
        acme_sam.map(|u| (u.disabled, u.version)),
        Some((false, 1)),
        "changing a user of one tenant leaves the same id in another alone"
    );
    ok(
        reg.move_group(
            &group_path("globex/plant-1"),
            &group_path("globex/plant-2"),
            ts(T0 + 2),
        )
        .await,
        "move_group in globex",
    );
    assert_eq!(
        ok(reg.get_user(&tenant("acme"), &uid("sam")).await, "get_user").map(|u| u.group),
        Some(group_path("acme/plant-1")),
        "moving a group of one tenant leaves other tenants' same-named groups alone"
    );
    assert!(
        ok(
            reg.get_group(&group_path("acme/plant-1")).await,
            "get_group"
        )
        .is_some()
    );
}

fn group_path(s: &str) -> hub_core::GroupPath {
    super::group(s)
}
