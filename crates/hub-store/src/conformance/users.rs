//! Identity registry checks: users, OAuth clients, subtree listings, moving a subtree.

use std::sync::Arc;

use hub_core::{ClientId, ErrorKind, GroupPath, Role, UserId};

use super::jobs::{create_ok, new_job};
use super::registry::{all_devices, all_groups, new_device, tree};
use super::{StoresFactory, T0, dev, expect_err, expect_kind, group, job_id, ok, tenant, ts, walk};
use crate::registry::{NewUser, OAuthClient, RegistryStore, User, UserPatch};

pub(super) fn uid(s: &str) -> UserId {
    s.parse().expect("a valid user id")
}

pub(super) fn cid(s: &str) -> ClientId {
    s.parse().expect("a valid client id")
}

pub(super) fn new_user(id: &str, group_path: &str) -> NewUser {
    NewUser {
        id: uid(id),
        group: group(group_path),
        display_name: format!("user {id}"),
        email: Some(format!("{}@example.com", id.replace('@', "-at-"))),
        role: Role::Operator,
    }
}

pub(super) fn client(id: &str, group_path: &str) -> OAuthClient {
    OAuthClient {
        id: cid(id),
        group: group(group_path),
        display_name: format!("client {id}"),
        redirect_uris: vec![
            "https://app.example.com/callback".to_owned(),
            "http://127.0.0.1:8123/cb".to_owned(),
        ],
        secret_hash: Some(format!("$argon2id$v=19$m=19456,t=2,p=1${id}$hash")),
        grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
        scopes: "devices:read jobs:read".parse().expect("valid scopes"),
        created_at: ts(T0),
    }
}

pub(super) async fn all_users(
    reg: &Arc<dyn RegistryStore>,
    root: &GroupPath,
    limit: u32,
) -> Vec<User> {
    let (r, root2) = (reg.clone(), root.clone());
    walk(
        &format!("list_users({root}, limit {limit})"),
        limit,
        Box::new(move |p| {
            let (r, root) = (r.clone(), root2.clone());
            Box::pin(async move { r.list_users(&root, p).await })
        }),
    )
    .await
}

async fn all_clients(reg: &Arc<dyn RegistryStore>, root: &GroupPath, limit: u32) -> Vec<ClientId> {
    let (r, root2) = (reg.clone(), root.clone());
    walk(
        &format!("list_clients({root}, limit {limit})"),
        limit,
        Box::new(move |p| {
            let (r, root) = (r.clone(), root2.clone());
            Box::pin(async move { r.list_clients(&root, p).await })
        }),
    )
    .await
    .into_iter()
    .map(|c| c.id)
    .collect()
}

fn user_ids(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.id.as_str()).collect()
}

pub(super) async fn users_crud(factory: StoresFactory) {
    let reg = factory().await.registry;
    tree(&reg, "acme", &["acme/plant-1"]).await;
    tree(&reg, "globex", &[]).await;
    let acme = tenant("acme");

    let created = ok(
        reg.create_user(new_user("erin@acme.example", "acme/plant-1"), ts(T0))
            .await,
        "create_user",
    );
    let expected = User {
        tenant: acme.clone(),
        id: uid("erin@acme.example"),
        group: group("acme/plant-1"),
        display_name: "user erin@acme.example".into(),
        email: Some("erin-at-acme.example@example.com".into()),
        role: Role::Operator,
        disabled: false,
        version: 1,
        created_at: ts(T0),
        updated_at: ts(T0),
    };
    assert_eq!(
        created, expected,
        "create_user returns the new user at version 1"
    );
    assert_eq!(
        ok(
            reg.get_user(&acme, &uid("erin@acme.example")).await,
            "get_user"
        ),
        Some(expected.clone())
    );
    expect_kind(
        reg.create_user(new_user("erin@acme.example", "acme"), ts(T0 + 1))
            .await,
        ErrorKind::Conflict,
        "create_user with an id the tenant already has (in another group)",
    );
    // The same id in another tenant is another user.
    ok(
        reg.create_user(new_user("erin@acme.example", "globex"), ts(T0))
            .await,
        "create_user with the same id in another tenant",
    );
    expect_kind(
        reg.create_user(new_user("zoe", "acme/plant-9"), ts(T0))
            .await,
        ErrorKind::NotFound,
        "create_user in a group that does not exist",
    );
    let mut bad = new_user("zed", "acme");
    bad.email = Some("not an address".into());
    expect_kind(
        reg.create_user(bad, ts(T0)).await,
        ErrorKind::InvalidInput,
        "create_user with an e-mail that is not one",
    );
    let mut bad = new_user("zed", "acme");
    bad.display_name = "x".repeat(10_000);
    expect_kind(
        reg.create_user(bad, ts(T0)).await,
        ErrorKind::InvalidInput,
        "create_user with an oversized display name",
    );
    assert_eq!(
        ok(reg.get_user(&acme, &uid("zed")).await, "get_user"),
        None,
        "refused users are not stored"
    );

    // Update: patch, versions, compare-and-set.
    let patch = UserPatch {
        display_name: Some("Erin".into()),
        email: Some(None),
        role: Some(Role::Admin),
        disabled: Some(true),
        group: None,
    };
    let updated = ok(
        reg.update_user(
            &acme,
            &uid("erin@acme.example"),
            patch,
            Some(1),
            ts(T0 + 10),
        )
        .await,
        "update_user at the expected version",
    );
    assert_eq!(
        updated,
        User {
            display_name: "Erin".into(),
            email: None,
            role: Role::Admin,
            disabled: true,
            version: 2,
            updated_at: ts(T0 + 10),
            ..expected.clone()
        },
        "update_user applies the patch, bumps the version and updated_at"
    );
    expect_kind(
        reg.update_user(
            &acme,
            &uid("erin@acme.example"),
            UserPatch {
                disabled: Some(false),
                ..UserPatch::default()
            },
            Some(1),
            ts(T0 + 20),
        )
        .await,
        ErrorKind::PreconditionFailed,
        "update_user with a stale expected version",
    );
    let moved = ok(
        reg.update_user(
            &acme,
            &uid("erin@acme.example"),
            UserPatch {
                group: Some(group("acme")),
                ..UserPatch::default()
            },
            None,
            ts(T0 + 30),
        )
        .await,
        "update_user moving the user to another group",
    );
    assert_eq!(
        (moved.group.as_str(), moved.version, moved.disabled),
        ("acme", 3, true)
    );
    expect_kind(
        reg.update_user(
            &acme,
            &uid("erin@acme.example"),
            UserPatch {
                group: Some(group("acme/nowhere")),
                ..UserPatch::default()
            },
            None,
            ts(T0 + 40),
        )
        .await,
        ErrorKind::NotFound,
        "update_user moving the user to a group that does not exist",
    );
    expect_err(
        reg.update_user(
            &acme,
            &uid("erin@acme.example"),
            UserPatch {
                group: Some(group("globex")),
                ..UserPatch::default()
            },
            None,
            ts(T0 + 40),
        )
        .await,
        "update_user moving the user to another tenant",
    );
    expect_kind(
        reg.update_user(&acme, &uid("nobody"), UserPatch::default(), None, ts(T0))
            .await,
        ErrorKind::NotFound,
        "update_user of a missing user",
    );
    assert_eq!(
        ok(
            reg.get_user(&acme, &uid("erin@acme.example")).await,
            "get_user"
        )
        .map(|u| u.version),
        Some(3),
        "refused updates change nothing"
    );

    // Delete.
    ok(
        reg.delete_user(&acme, &uid("erin@acme.example")).await,
        "delete_user",
    );
    assert_eq!(
        ok(
            reg.get_user(&acme, &uid("erin@acme.example")).await,
            "get_user"
        ),
        None
    );
    expect_kind(
        reg.delete_user(&acme, &uid("erin@acme.example")).await,
        ErrorKind::NotFound,
        "delete_user twice",
    );
    assert!(
        ok(
            reg.get_user(&tenant("globex"), &uid("erin@acme.example"))
                .await,
            "get_user"
        )
        .is_some(),
        "deleting a user leaves the same id in another tenant alone"
    );
}

pub(super) async fn list_users(factory: StoresFactory) {
    let reg = factory().await.registry;
    tree(
        &reg,
        "acme",
        &["acme/plant-1", "acme/plant-1/line-2", "acme/plant-10"],
    )
    .await;
    tree(&reg, "acme2", &["acme2/plant-1"]).await;
    for (id, g) in [
        ("dave", "acme/plant-1/line-2"),
        ("Zed", "acme/plant-1"),
        ("alice", "acme/plant-1"),
        ("bob", "acme/plant-10"),
        ("carol", "acme"),
        ("eve", "acme2/plant-1"),
    ] {
        ok(
            reg.create_user(new_user(id, g), ts(T0)).await,
            &format!("create_user({id})"),
        );
    }
    for limit in [0, 1, 2, 100] {
        assert_eq!(
            user_ids(&all_users(&reg, &group("acme/plant-1"), limit).await),
            vec!["Zed", "alice", "dave"],
            "list_users(acme/plant-1): its subtree only (not acme/plant-10), by id in byte order"
        );
    }
    assert_eq!(
        user_ids(&all_users(&reg, &group("acme"), 2).await),
        vec!["Zed", "alice", "bob", "carol", "dave"],
        "list_users(acme): the whole tenant, not the tenant acme2"
    );
    assert_eq!(
        user_ids(&all_users(&reg, &group("acme2"), 0).await),
        vec!["eve"]
    );
    expect_kind(
        reg.list_users(
            &group("acme"),
            crate::PageRequest {
                limit: 2,
                after: Some("not a user id!".into()),
            },
        )
        .await,
        ErrorKind::InvalidInput,
        "list_users with a cursor it did not produce",
    );
    // A group holding a user cannot be deleted.
    expect_kind(
        reg.delete_group(&group("acme/plant-10")).await,
        ErrorKind::Conflict,
        "delete_group of a group that holds a user",
    );
    ok(
        reg.delete_user(&tenant("acme"), &uid("bob")).await,
        "delete_user",
    );
    ok(
        reg.delete_group(&group("acme/plant-10")).await,
        "delete_group once its user is gone",
    );
}

pub(super) async fn clients(factory: StoresFactory) {
    let reg = factory().await.registry;
    tree(&reg, "acme", &["acme/plant-1", "acme/plant-10"]).await;
    tree(&reg, "globex", &[]).await;
    let c = client("dashboard", "acme/plant-1");
    assert_eq!(ok(reg.create_client(c.clone()).await, "create_client"), c);
    assert_eq!(
        ok(reg.get_client(&cid("dashboard")).await, "get_client"),
        Some(c.clone()),
        "get_client returns the client as stored (looked up without a tenant)"
    );
    expect_kind(
        reg.create_client(client("dashboard", "globex")).await,
        ErrorKind::Conflict,
        "create_client with an id taken in another tenant: client ids are hub-wide",
    );
    expect_kind(
        reg.create_client(client("other", "acme/nowhere")).await,
        ErrorKind::NotFound,
        "create_client in a group that does not exist",
    );
    let mut public = client("cli", "acme/plant-10");
    public.secret_hash = None;
    public.redirect_uris = vec!["http://localhost/cb".into(), "http://[::1]:9000".into()];
    ok(
        reg.create_client(public.clone()).await,
        "create_client (public)",
    );
    ok(
        reg.create_client(client("a-report", "acme")).await,
        "create_client",
    );
    ok(
        reg.create_client(client("g-app", "globex")).await,
        "create_client",
    );
    for bad_uri in [
        "http://app.example.com/cb",
        "https://app.example.com/cb#frag",
        "/relative/cb",
        "app.example.com/cb",
        "https://",
        "https://user@app.example.com/cb",
        "javascript:alert(1)",
        "https://app.example.com/c b",
        "http://localhost.evil.com/cb",
        "http://127.0.0.1.evil.com/cb",
    ] {
        let mut bad = client("bad", "acme");
        bad.redirect_uris = vec!["https://ok.example.com/cb".into(), bad_uri.into()];
        expect_kind(
            reg.create_client(bad).await,
            ErrorKind::InvalidInput,
            &format!("create_client with the redirect URI {bad_uri:?}"),
        );
    }
    assert_eq!(
        ok(reg.get_client(&cid("bad")).await, "get_client"),
        None,
        "refused clients are not stored"
    );
    for limit in [0, 1, 100] {
        assert_eq!(
            all_clients(&reg, &group("acme/plant-1"), limit).await,
            vec![cid("dashboard")],
            "list_clients(acme/plant-1) does not include acme/plant-10"
        );
        assert_eq!(
            all_clients(&reg, &group("acme"), limit).await,
            vec![cid("a-report"), cid("cli"), cid("dashboard")],
            "list_clients(acme): the tenant's clients by id"
        );
    }
    expect_kind(
        reg.delete_group(&group("acme/plant-10")).await,
        ErrorKind::Conflict,
        "delete_group of a group that owns an OAuth client",
    );
    ok(reg.delete_client(&cid("cli")).await, "delete_client");
    assert_eq!(ok(reg.get_client(&cid("cli")).await, "get_client"), None);
    expect_kind(
        reg.delete_client(&cid("cli")).await,
        ErrorKind::NotFound,
        "delete_client twice",
    );
    ok(
        reg.delete_group(&group("acme/plant-10")).await,
        "delete_group once its client is gone",
    );
    assert_eq!(
        all_clients(&reg, &group("globex"), 0).await,
        vec![cid("g-app")]
    );
}

pub(super) async fn move_group(factory: StoresFactory) {
    let stores = factory().await;
    let reg = stores.registry;
    tree(
        &reg,
        "acme",
        &[
            "acme/plant-1",
            "acme/plant-1/line-2",
            "acme/plant-1/line-2/cell-3",
            "acme/plant-10",
            "acme/plant-1-b",
            "acme/site",
        ],
    )
    .await;
    tree(&reg, "globex", &["globex/plant-1"]).await;
    for (d, g) in [
        ("pump-1", "acme/plant-1"),
        ("pump-2", "acme/plant-1/line-2/cell-3"),
        ("pump-10", "acme/plant-10"),
        ("pump-b", "acme/plant-1-b"),
        ("pump-g", "globex/plant-1"),
    ] {
        ok(
            reg.create_device(new_device(d, g), ts(T0)).await,
            &format!("create_device({d})"),
        );
    }
    for (u, g) in [
        ("alice", "acme/plant-1/line-2"),
        ("bob", "acme/plant-10"),
        ("gina", "globex/plant-1"),
    ] {
        ok(
            reg.create_user(new_user(u, g), ts(T0)).await,
            &format!("create_user({u})"),
        );
    }
    ok(
        reg.create_client(client("line-app", "acme/plant-1/line-2"))
            .await,
        "create_client",
    );
    let job = create_ok(
        &stores.jobs,
        new_job(job_id(T0, 1), "pump-2", "acme/plant-1/line-2/cell-3", T0),
    )
    .await;

    // Refusals first: nothing may change.
    let now = ts(T0 + 1000);
    let refusals: [(&str, &str, Option<ErrorKind>, &str); 8] = [
        ("acme", "acme/x", None, "moving a root group"),
        ("acme/plant-1", "acme", None, "moving onto a root path"),
        ("acme/plant-1", "globex/p", None, "moving to another tenant"),
        (
            "acme/plant-1",
            "acme/plant-1/line-2/inside",
            Some(ErrorKind::InvalidInput),
            "moving a group into its own subtree",
        ),
        (
            "acme/plant-1",
            "acme/plant-1",
            Some(ErrorKind::InvalidInput),
            "moving a group onto itself",
        ),
        (
            "acme/plant-9",
            "acme/site/plant-9",
            Some(ErrorKind::NotFound),
            "moving a group that does not exist",
        ),
        (
            "acme/plant-1",
            "acme/nowhere/plant-1",
            Some(ErrorKind::NotFound),
            "moving under a parent that does not exist",
        ),
        (
            "acme/plant-1",
            "acme/plant-10",
            Some(ErrorKind::Conflict),
            "moving onto an existing group",
        ),
    ];
    for (from, to, kind, what) in refusals {
        let r = reg.move_group(&group(from), &group(to), now).await;
        match kind {
            Some(k) => expect_kind(r, k, what),
            None => expect_err(r, what),
        }
    }
    let deep = "acme/site/a/b/c/d/e";
    for g in [
        "acme/site/a",
        "acme/site/a/b",
        "acme/site/a/b/c",
        "acme/site/a/b/c/d",
        deep,
    ] {
        ok(reg.create_group(&group(g), g, ts(T0)).await, "create_group");
    }
    expect_kind(
        reg.move_group(&group("acme/plant-1"), &group(&format!("{deep}/p")), now)
            .await,
        ErrorKind::InvalidInput,
        "moving a subtree so deep that its descendants would pass the depth limit",
    );
    let before: Vec<String> = all_groups(&reg, &group("acme"), 0)
        .await
        .iter()
        .map(|g| g.path.to_string())
        .collect();
    assert!(
        before.contains(&"acme/plant-1/line-2/cell-3".to_owned()),
        "refused moves change nothing"
    );

    // The move: acme/plant-1 becomes acme/site/plant-one.
    let moved = ok(
        reg.move_group(&group("acme/plant-1"), &group("acme/site/plant-one"), now)
            .await,
        "move_group(acme/plant-1 -> acme/site/plant-one)",
    );
    assert_eq!(moved.path, group("acme/site/plant-one"));
    assert_eq!(
        moved.display_name, "acme/plant-1",
        "a moved group keeps its name"
    );
    assert_eq!((moved.created_at, moved.updated_at), (ts(T0), now));

    let paths: Vec<String> = all_groups(&reg, &group("acme"), 0)
        .await
        .iter()
        .map(|g| g.path.to_string())
        .collect();
    assert_eq!(
        paths,
        vec![
            "acme",
            "acme/plant-1-b",
            "acme/plant-10",
            "acme/site",
            "acme/site/a",
            "acme/site/a/b",
            "acme/site/a/b/c",
            "acme/site/a/b/c/d",
            "acme/site/a/b/c/d/e",
            "acme/site/plant-one",
            "acme/site/plant-one/line-2",
            "acme/site/plant-one/line-2/cell-3",
        ],
        "move_group rewrites every descendant group and leaves sibling-prefix groups \
         (acme/plant-10, acme/plant-1-b) alone"
    );
    assert_eq!(
        ok(
            reg.get_group(&group("acme/plant-1/line-2")).await,
            "get_group"
        ),
        None,
        "the old paths are gone"
    );
    let acme = tenant("acme");
    let device_groups: Vec<(String, String, u64)> = all_devices(&reg, &group("acme"), None, 0)
        .await
        .into_iter()
        .map(|d| (d.id.to_string(), d.group.to_string(), d.version))
        .collect();
    assert_eq!(
        device_groups,
        vec![
            ("pump-1".into(), "acme/site/plant-one".into(), 2),
            ("pump-10".into(), "acme/plant-10".into(), 1),
            (
                "pump-2".into(),
                "acme/site/plant-one/line-2/cell-3".into(),
                2
            ),
            ("pump-b".into(), "acme/plant-1-b".into(), 1),
        ],
        "move_group rewrites the devices of the subtree (with a new version) and no others"
    );
    let alice = ok(reg.get_user(&acme, &uid("alice")).await, "get_user");
    assert_eq!(
        alice.map(|u| (u.group.to_string(), u.version, u.updated_at)),
        Some(("acme/site/plant-one/line-2".to_owned(), 2, now)),
        "move_group rewrites the users of the subtree"
    );
    let bob = ok(reg.get_user(&acme, &uid("bob")).await, "get_user");
    assert_eq!(
        bob.map(|u| (u.group.to_string(), u.version)),
        Some(("acme/plant-10".to_owned(), 1)),
        "users of a sibling-prefix group stay"
    );
    assert_eq!(
        user_ids(&all_users(&reg, &group("acme/site"), 0).await),
        vec!["alice"]
    );
    assert_eq!(
        ok(reg.get_client(&cid("line-app")).await, "get_client").map(|c| c.group),
        Some(group("acme/site/plant-one/line-2")),
        "move_group rewrites the owner group of OAuth clients"
    );
    let job_after = ok(
        stores.jobs.get_job(&acme, &job.id).await,
        "get_job after the move",
    );
    assert_eq!(
        job_after.map(|j| j.group),
        Some(group("acme/site/plant-one/line-2/cell-3")),
        "move_group rewrites the group of the subtree's jobs"
    );
    // Other tenants are untouched.
    assert_eq!(
        all_devices(&reg, &group("globex"), None, 0)
            .await
            .into_iter()
            .map(|d| (d.group.to_string(), d.version))
            .collect::<Vec<_>>(),
        vec![("globex/plant-1".to_owned(), 1)]
    );
    // The moved tree is fully usable at its new place, and can move back.
    ok(
        reg.create_group(&group("acme/site/plant-one/line-9"), "l9", now)
            .await,
        "create_group under a moved group",
    );
    ok(
        reg.move_group(&group("acme/site/plant-one"), &group("acme/plant-1"), now)
            .await,
        "move_group back",
    );
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-2")).await, "get_device").map(|d| d.group),
        Some(group("acme/plant-1/line-2/cell-3"))
    );
    assert!(
        ok(
            reg.get_group(&group("acme/plant-1/line-9")).await,
            "get_group"
        )
        .is_some(),
        "a group created after the first move moves with the second"
    );
}

/// A subtree moves while devices, users and child groups are being created inside it: whatever
/// interleaving the backend picks, nothing may end up pointing at a group that no longer exists.
pub(super) async fn concurrent_move(factory: StoresFactory) {
    const CREATORS: usize = 8;
    for round in 0..3 {
        let reg = factory().await.registry;
        tree(&reg, "acme", &["acme/old", "acme/old/a", "acme/dst"]).await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..CREATORS {
            let r = reg.clone();
            set.spawn(async move {
                let d = r
                    .create_device(new_device(&format!("d-{i}"), "acme/old/a"), ts(T0))
                    .await
                    .map(|_| ());
                let u = r
                    .create_user(new_user(&format!("u-{i}"), "acme/old/a"), ts(T0))
                    .await
                    .map(|_| ());
                let g = r
                    .create_group(&group(&format!("acme/old/a/g-{i}")), "g", ts(T0))
                    .await
                    .map(|_| ());
                (i, d, u, g)
            });
            if i == CREATORS / 2 {
                let r = reg.clone();
                set.spawn(async move {
                    let m = r
                        .move_group(&group("acme/old"), &group("acme/dst/new"), ts(T0 + 1))
                        .await
                        .map(|_| ());
                    (usize::MAX, m, Ok(()), Ok(()))
                });
            }
        }
        while let Some(joined) = set.join_next().await {
            let (i, a, b, c) = joined.expect("a racing task panicked");
            if i == usize::MAX {
                ok(
                    a,
                    &format!("round {round}: move_group racing with creations"),
                );
                continue;
            }
            for (what, r) in [
                ("create_device", a),
                ("create_user", b),
                ("create_group", c),
            ] {
                if let Err(e) = r {
                    assert_eq!(
                        e.kind(),
                        ErrorKind::NotFound,
                        "round {round}: {what} #{i} racing with a move may only fail because \
                         its group moved away, got {e}"
                    );
                }
            }
        }
        let groups = all_groups(&reg, &group("acme"), 0).await;
        let paths: Vec<&GroupPath> = groups.iter().map(|g| &g.path).collect();
        assert!(
            !paths.contains(&&group("acme/old")),
            "round {round}: the moved group is gone from its old place"
        );
        for g in &groups {
            if let Some(parent) = g.path.parent() {
                assert!(
                    paths.contains(&&parent),
                    "round {round}: group {} lost its parent {parent} in the move",
                    g.path
                );
            }
        }
        for d in all_devices(&reg, &group("acme"), None, 0).await {
            assert!(
                paths.contains(&&d.group),
                "round {round}: device {} points at the missing group {}",
                d.id,
                d.group
            );
        }
        for u in all_users(&reg, &group("acme"), 0).await {
            assert!(
                paths.contains(&&u.group),
                "round {round}: user {} points at the missing group {}",
                u.id,
                u.group
            );
        }
    }
}
