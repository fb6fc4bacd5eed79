//! Registry checks: tenants, nested groups, devices, listings, attribute limits.

use std::sync::Arc;

use hub_core::{ErrorKind, GroupPath};
use serde_json::json;

use super::{StoresFactory, T0, dev, expect_err, expect_kind, group, ok, tenant, ts, walk};
use crate::registry::{Device, DevicePatch, Group, Lifecycle, NewDevice, RegistryStore};
use crate::{PageRequest, StoreLimits};

pub(super) fn new_device(id: &str, group_path: &str) -> NewDevice {
    NewDevice {
        id: dev(id),
        group: group(group_path),
        display_name: format!("device {id}"),
        attributes: json!({ "model": "x1", "id": id }),
    }
}

/// Creates a tenant and the given groups (parents first).
pub(super) async fn tree(reg: &Arc<dyn RegistryStore>, tenant_id: &str, groups: &[&str]) {
    ok(
        reg.create_tenant(&tenant(tenant_id), tenant_id, ts(T0))
            .await,
        &format!("create_tenant({tenant_id})"),
    );
    for g in groups {
        ok(
            reg.create_group(&group(g), g, ts(T0)).await,
            &format!("create_group({g})"),
        );
    }
}

pub(super) async fn all_groups(
    reg: &Arc<dyn RegistryStore>,
    root: &GroupPath,
    limit: u32,
) -> Vec<Group> {
    let (r, root2) = (reg.clone(), root.clone());
    walk(
        &format!("list_groups({root}, limit {limit})"),
        limit,
        Box::new(move |p| {
            let (r, root) = (r.clone(), root2.clone());
            Box::pin(async move { r.list_groups(&root, p).await })
        }),
    )
    .await
}

pub(super) async fn all_devices(
    reg: &Arc<dyn RegistryStore>,
    root: &GroupPath,
    lifecycle: Option<Lifecycle>,
    limit: u32,
) -> Vec<Device> {
    let (r, root2) = (reg.clone(), root.clone());
    walk(
        &format!("list_devices({root}, {lifecycle:?}, limit {limit})"),
        limit,
        Box::new(move |p| {
            let (r, root) = (r.clone(), root2.clone());
            Box::pin(async move { r.list_devices(&root, lifecycle, p).await })
        }),
    )
    .await
}

fn paths(groups: &[Group]) -> Vec<&str> {
    groups.iter().map(|g| g.path.as_str()).collect()
}

fn ids(devices: &[Device]) -> Vec<&str> {
    devices.iter().map(|d| d.id.as_str()).collect()
}

pub(super) async fn groups_create(factory: StoresFactory) {
    let reg = factory().await.registry;
    let acme = tenant("acme");
    let root = ok(
        reg.create_tenant(&acme, "ACME Corp", ts(T0)).await,
        "create_tenant(acme)",
    );
    assert_eq!(
        root.path,
        group("acme"),
        "create_tenant returns the root group"
    );
    assert_eq!(root.display_name, "ACME Corp");
    assert_eq!(
        (root.created_at, root.updated_at),
        (ts(T0), ts(T0)),
        "root group times"
    );
    expect_kind(
        reg.create_tenant(&acme, "again", ts(T0 + 1)).await,
        ErrorKind::Conflict,
        "create_tenant of an existing tenant",
    );
    let plant = ok(
        reg.create_group(&group("acme/plant-1"), "Plant 1", ts(T0 + 5))
            .await,
        "create_group(acme/plant-1)",
    );
    assert_eq!(
        plant,
        Group {
            path: group("acme/plant-1"),
            display_name: "Plant 1".into(),
            created_at: ts(T0 + 5),
            updated_at: ts(T0 + 5),
        },
        "create_group returns the stored group"
    );
    ok(
        reg.create_group(&group("acme/plant-1/line-2"), "Line 2", ts(T0 + 6))
            .await,
        "create_group(acme/plant-1/line-2)",
    );
    expect_kind(
        reg.create_group(&group("acme/plant-2/line-1"), "orphan", ts(T0))
            .await,
        ErrorKind::NotFound,
        "create_group whose parent acme/plant-2 does not exist",
    );
    expect_kind(
        reg.create_group(&group("nobody/plant-1"), "orphan", ts(T0))
            .await,
        ErrorKind::NotFound,
        "create_group in a tenant that does not exist",
    );
    expect_kind(
        reg.create_group(&group("acme/plant-1"), "dup", ts(T0 + 7))
            .await,
        ErrorKind::Conflict,
        "create_group of an existing group",
    );
    assert_eq!(
        ok(
            reg.get_group(&group("acme/plant-1")).await,
            "get_group(acme/plant-1)"
        ),
        Some(plant),
        "get_group returns the group as created (a refused duplicate changes nothing)"
    );
    assert_eq!(
        ok(
            reg.get_group(&group("acme/plant-2/line-1")).await,
            "get_group"
        ),
        None,
        "a refused create_group stores nothing"
    );
    assert_eq!(
        ok(reg.get_group(&group("acme/plant-2")).await, "get_group"),
        None,
        "get_group of an unknown group"
    );
    assert_eq!(
        ok(reg.get_group(&group("acme")).await, "get_group(acme)"),
        Some(root),
        "get_group of a tenant's root"
    );
    // A second tenant whose name starts with the first one's.
    ok(
        reg.create_tenant(&tenant("acme-2"), "", ts(T0)).await,
        "create_tenant(acme-2)",
    );
    ok(
        reg.create_group(&group("acme-2/plant-1"), "", ts(T0)).await,
        "create_group(acme-2/plant-1): the same group name in another tenant",
    );
}

pub(super) async fn list_groups(factory: StoresFactory) {
    let reg = factory().await.registry;
    let mut made = vec![
        "acme/plant-1",
        "acme/plant-1/line-1",
        "acme/plant-1/line-1/cell-a",
        "acme/plant-1/line-2",
        "acme/plant-1/line-3",
        "acme/plant-10",
        "acme/plant-10/line-1",
        "acme/plant-1-annex",
        "acme/plant-2",
    ];
    tree(&reg, "acme", &made).await;
    tree(&reg, "acme-x", &["acme-x/plant-1"]).await;
    made.push("acme");
    made.sort_unstable();

    for limit in [1, 2, 3, 0] {
        let got = all_groups(&reg, &group("acme/plant-1"), limit).await;
        assert_eq!(
            paths(&got),
            [
                "acme/plant-1",
                "acme/plant-1/line-1",
                "acme/plant-1/line-1/cell-a",
                "acme/plant-1/line-2",
                "acme/plant-1/line-3",
            ],
            "list_groups(acme/plant-1) with limit {limit}: the subtree by whole segments \
             (never acme/plant-10 or acme/plant-1-annex), ordered by path, each once"
        );
        let all = all_groups(&reg, &group("acme"), limit).await;
        assert_eq!(
            paths(&all),
            made,
            "list_groups(acme) with limit {limit}: the whole tenant in byte order of the path, \
             never tenant acme-x"
        );
    }
    let leaf = all_groups(&reg, &group("acme/plant-1/line-1/cell-a"), 2).await;
    assert_eq!(
        paths(&leaf),
        ["acme/plant-1/line-1/cell-a"],
        "a leaf lists itself"
    );
    let none = all_groups(&reg, &group("acme/plant-9"), 2).await;
    assert!(
        none.is_empty(),
        "list_groups of an unknown group is empty: {none:?}"
    );

    // The first page of an exact fit.
    let page = ok(
        reg.list_groups(&group("acme/plant-10"), PageRequest::first(5))
            .await,
        "list_groups(acme/plant-10)",
    );
    assert_eq!(
        paths(&page.items),
        ["acme/plant-10", "acme/plant-10/line-1"]
    );
    assert_eq!(
        page.next, None,
        "a page holding the rest of the listing has no next cursor"
    );
    let page = ok(
        reg.list_groups(&group("acme/plant-1"), PageRequest::first(2))
            .await,
        "list_groups(acme/plant-1, limit 2)",
    );
    assert_eq!(
        page.items.len(),
        2,
        "the first page of 5 groups with limit 2 is full"
    );
    assert!(
        page.next.is_some(),
        "a first page of 2 of 5 groups has a next cursor"
    );
}

pub(super) async fn delete_group(factory: StoresFactory) {
    let reg = factory().await.registry;
    tree(
        &reg,
        "acme",
        &[
            "acme/plant-1",
            "acme/plant-10",
            "acme/plant-10/line-1",
            "acme/plant-2",
        ],
    )
    .await;
    ok(
        reg.create_device(new_device("pump-1", "acme/plant-2"), ts(T0))
            .await,
        "create_device",
    );

    expect_kind(
        reg.delete_group(&group("acme/plant-10")).await,
        ErrorKind::Conflict,
        "delete_group of a group with a child group",
    );
    expect_kind(
        reg.delete_group(&group("acme/plant-2")).await,
        ErrorKind::Conflict,
        "delete_group of a group with a device",
    );
    expect_err(
        reg.delete_group(&group("acme")).await,
        "delete_group of a tenant's root group",
    );
    assert!(
        ok(reg.get_group(&group("acme")).await, "get_group(acme)").is_some(),
        "a refused root delete keeps the root"
    );
    expect_kind(
        reg.delete_group(&group("acme/plant-3")).await,
        ErrorKind::NotFound,
        "delete_group of an unknown group",
    );
    // acme/plant-10 has children and acme/plant-2 a device; neither is inside acme/plant-1.
    ok(
        reg.delete_group(&group("acme/plant-1")).await,
        "delete_group(acme/plant-1): empty (acme/plant-10 is a sibling, not a child)",
    );
    assert_eq!(
        ok(reg.get_group(&group("acme/plant-1")).await, "get_group"),
        None,
        "a deleted group is gone"
    );
    assert!(
        ok(reg.get_group(&group("acme/plant-10")).await, "get_group").is_some(),
        "deleting acme/plant-1 keeps acme/plant-10"
    );
    for g in ["acme/plant-10", "acme/plant-2"] {
        assert!(
            ok(reg.get_group(&group(g)).await, "get_group").is_some(),
            "a refused delete keeps {g}"
        );
    }
    ok(
        reg.delete_group(&group("acme/plant-10/line-1")).await,
        "delete_group of a leaf",
    );
    ok(
        reg.delete_group(&group("acme/plant-10")).await,
        "delete_group once its child is gone",
    );
    ok(
        reg.delete_device(&tenant("acme"), &dev("pump-1")).await,
        "delete_device",
    );
    ok(
        reg.delete_group(&group("acme/plant-2")).await,
        "delete_group once its device is gone",
    );
    ok(
        reg.create_group(&group("acme/plant-1"), "again", ts(T0 + 9))
            .await,
        "create_group of a deleted group's path",
    );
    assert_eq!(
        paths(&all_groups(&reg, &group("acme"), 0).await),
        ["acme", "acme/plant-1"],
        "groups left"
    );
}

pub(super) async fn devices(factory: StoresFactory) {
    let reg = factory().await.registry;
    tree(&reg, "acme", &["acme/plant-1", "acme/plant-2"]).await;
    tree(&reg, "globex", &["globex/site"]).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));

    expect_kind(
        reg.create_device(new_device("pump-1", "acme/plant-9"), ts(T0))
            .await,
        ErrorKind::NotFound,
        "create_device in a group that does not exist",
    );
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device"),
        None,
        "a refused create_device stores nothing"
    );
    let created = ok(
        reg.create_device(new_device("pump-1", "acme/plant-1"), ts(T0 + 10))
            .await,
        "create_device(pump-1)",
    );
    assert_eq!(
        created,
        Device {
            id: dev("pump-1"),
            group: group("acme/plant-1"),
            display_name: "device pump-1".into(),
            attributes: json!({ "model": "x1", "id": "pump-1" }),
            lifecycle: Lifecycle::Provisioned,
            version: 1,
            created_at: ts(T0 + 10),
            updated_at: ts(T0 + 10),
        },
        "a new device: provisioned, version 1"
    );
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device"),
        Some(created.clone())
    );
    expect_kind(
        reg.create_device(new_device("pump-1", "acme/plant-2"), ts(T0 + 11))
            .await,
        ErrorKind::Conflict,
        "create_device of an id that exists in the tenant (in another group)",
    );
    let other = ok(
        reg.create_device(new_device("pump-1", "globex/site"), ts(T0 + 12))
            .await,
        "create_device of the same id in another tenant",
    );
    assert_eq!(other.group, group("globex/site"));
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device"),
        Some(created.clone()),
        "the other tenant's device is separate"
    );
    assert_eq!(
        ok(reg.get_device(&globex, &dev("pump-1")).await, "get_device"),
        Some(other.clone())
    );
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-2")).await, "get_device"),
        None,
        "unknown device"
    );

    // Updates.
    let patch = DevicePatch {
        display_name: Some("Main pump".into()),
        attributes: None,
        lifecycle: Some(Lifecycle::Active),
    };
    expect_kind(
        reg.update_device(&acme, &dev("pump-1"), patch.clone(), Some(7), ts(T0 + 20))
            .await,
        ErrorKind::PreconditionFailed,
        "update_device with a stale expected version",
    );
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device"),
        Some(created.clone()),
        "a refused update changes nothing"
    );
    let v2 = ok(
        reg.update_device(&acme, &dev("pump-1"), patch, Some(1), ts(T0 + 20))
            .await,
        "update_device at the current version",
    );
    let mut want = created.clone();
    want.display_name = "Main pump".into();
    want.lifecycle = Lifecycle::Active;
    want.version = 2;
    want.updated_at = ts(T0 + 20);
    assert_eq!(
        v2, want,
        "update_device applies the patch, keeps the rest, bumps the version"
    );
    let v3 = ok(
        reg.update_device(
            &acme,
            &dev("pump-1"),
            DevicePatch {
                attributes: Some(json!({ "fw": "2.1" })),
                ..DevicePatch::default()
            },
            None,
            ts(T0 + 30),
        )
        .await,
        "update_device without an expected version",
    );
    want.attributes = json!({ "fw": "2.1" });
    want.version = 3;
    want.updated_at = ts(T0 + 30);
    assert_eq!(v3, want, "attributes are replaced whole");
    expect_kind(
        reg.update_device(
            &acme,
            &dev("pump-1"),
            DevicePatch::default(),
            Some(2),
            ts(T0 + 31),
        )
        .await,
        ErrorKind::PreconditionFailed,
        "update_device with the previous version",
    );
    expect_kind(
        reg.update_device(&acme, &dev("nope"), DevicePatch::default(), None, ts(T0))
            .await,
        ErrorKind::NotFound,
        "update_device of an unknown device",
    );
    assert_eq!(
        ok(reg.get_device(&globex, &dev("pump-1")).await, "get_device"),
        Some(other),
        "updating acme's pump-1 leaves globex's alone"
    );

    // Moves.
    let moved = ok(
        reg.move_device(&acme, &dev("pump-1"), &group("acme/plant-2"), ts(T0 + 40))
            .await,
        "move_device",
    );
    want.group = group("acme/plant-2");
    want.version = 4;
    want.updated_at = ts(T0 + 40);
    assert_eq!(
        moved, want,
        "move_device changes the group and bumps the version"
    );
    expect_kind(
        reg.move_device(&acme, &dev("pump-1"), &group("acme/plant-9"), ts(T0 + 41))
            .await,
        ErrorKind::NotFound,
        "move_device to a group that does not exist",
    );
    expect_kind(
        reg.move_device(&acme, &dev("nope"), &group("acme/plant-1"), ts(T0 + 41))
            .await,
        ErrorKind::NotFound,
        "move_device of an unknown device",
    );
    expect_err(
        reg.move_device(&acme, &dev("pump-1"), &group("globex/site"), ts(T0 + 41))
            .await,
        "move_device to another tenant's group",
    );
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device"),
        Some(want.clone()),
        "refused moves change nothing"
    );

    // Deletes.
    ok(
        reg.delete_device(&acme, &dev("pump-1")).await,
        "delete_device",
    );
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device"),
        None
    );
    expect_kind(
        reg.delete_device(&acme, &dev("pump-1")).await,
        ErrorKind::NotFound,
        "delete_device of a deleted device",
    );
    assert!(
        ok(reg.get_device(&globex, &dev("pump-1")).await, "get_device").is_some(),
        "deleting acme's pump-1 keeps globex's"
    );
    let again = ok(
        reg.create_device(new_device("pump-1", "acme/plant-1"), ts(T0 + 50))
            .await,
        "create_device of a deleted device's id",
    );
    assert_eq!(again.version, 1, "a re-created device starts at version 1");
}

pub(super) async fn list_devices(factory: StoresFactory) {
    let reg = factory().await.registry;
    tree(
        &reg,
        "acme",
        &[
            "acme/plant-1",
            "acme/plant-1/line-1",
            "acme/plant-10",
            "acme/plant-1-b",
        ],
    )
    .await;
    tree(&reg, "acme-x", &["acme-x/plant-1"]).await;
    let placed = [
        ("Valve-3", "acme/plant-1"),
        ("pump-1", "acme/plant-1"),
        ("pump-2", "acme/plant-1/line-1"),
        ("pump-3", "acme/plant-1/line-1"),
        ("a.meter", "acme/plant-1/line-1"),
        ("pump-10", "acme/plant-10"),
        ("pump-4", "acme/plant-1-b"),
        ("gateway", "acme"),
    ];
    for (id, g) in placed {
        ok(
            reg.create_device(new_device(id, g), ts(T0)).await,
            "create_device",
        );
    }
    for id in ["pump-1", "pump-2", "zz"] {
        ok(
            reg.create_device(new_device(id, "acme-x/plant-1"), ts(T0))
                .await,
            "create_device in acme-x",
        );
    }
    for id in ["pump-2", "Valve-3"] {
        ok(
            reg.update_device(
                &tenant("acme"),
                &dev(id),
                DevicePatch {
                    lifecycle: Some(Lifecycle::Active),
                    ..DevicePatch::default()
                },
                None,
                ts(T0 + 1),
            )
            .await,
            "update_device(lifecycle)",
        );
    }

    for limit in [1, 2, 4, 0] {
        let got = all_devices(&reg, &group("acme/plant-1"), None, limit).await;
        assert_eq!(
            ids(&got),
            ["Valve-3", "a.meter", "pump-1", "pump-2", "pump-3"],
            "list_devices(acme/plant-1) with limit {limit}: the subtree by whole segments, \
             ordered by id (byte order), each once"
        );
        assert!(
            got.iter().all(|d| d.tenant() == tenant("acme")),
            "only acme's devices"
        );
        let active =
            all_devices(&reg, &group("acme/plant-1"), Some(Lifecycle::Active), limit).await;
        assert_eq!(
            ids(&active),
            ["Valve-3", "pump-2"],
            "list_devices(acme/plant-1, active) with limit {limit}"
        );
        let all = all_devices(&reg, &group("acme"), None, limit).await;
        assert_eq!(
            ids(&all),
            [
                "Valve-3", "a.meter", "gateway", "pump-1", "pump-10", "pump-2", "pump-3", "pump-4"
            ],
            "list_devices(acme) with limit {limit}: never tenant acme-x"
        );
        let provisioned =
            all_devices(&reg, &group("acme"), Some(Lifecycle::Provisioned), limit).await;
        assert_eq!(
            ids(&provisioned),
            [
                "a.meter", "gateway", "pump-1", "pump-10", "pump-3", "pump-4"
            ],
            "list_devices(acme, provisioned) with limit {limit}"
        );
    }
    let x = all_devices(&reg, &group("acme-x"), None, 2).await;
    assert_eq!(ids(&x), ["pump-1", "pump-2", "zz"], "list_devices(acme-x)");
    let line = all_devices(&reg, &group("acme/plant-1/line-1"), None, 10).await;
    assert_eq!(
        line.iter().map(|d| d.group.as_str()).collect::<Vec<_>>(),
        ["acme/plant-1/line-1"; 3],
        "listed devices carry their group"
    );
    assert!(
        all_devices(&reg, &group("acme/plant-1"), Some(Lifecycle::Suspended), 3)
            .await
            .is_empty(),
        "no suspended devices"
    );
    // After a move the listing follows the device.
    ok(
        reg.move_device(
            &tenant("acme"),
            &dev("pump-10"),
            &group("acme/plant-1/line-1"),
            ts(T0 + 2),
        )
        .await,
        "move_device",
    );
    assert_eq!(
        ids(&all_devices(&reg, &group("acme/plant-1"), None, 3).await),
        [
            "Valve-3", "a.meter", "pump-1", "pump-10", "pump-2", "pump-3"
        ],
        "list_devices after moving pump-10 into acme/plant-1/line-1"
    );
    assert!(
        all_devices(&reg, &group("acme/plant-10"), None, 3)
            .await
            .is_empty(),
        "list_devices(acme/plant-10) after pump-10 moved away"
    );
}

pub(super) async fn attributes(factory: StoresFactory) {
    let reg = factory().await.registry;
    let limits: StoreLimits = super::expected_limits();
    tree(&reg, "acme", &["acme/plant-1"]).await;
    let acme = tenant("acme");
    for bad in [json!([1, 2]), json!("text"), json!(null), json!(3)] {
        let mut d = new_device("pump-1", "acme/plant-1");
        d.attributes = bad.clone();
        expect_kind(
            reg.create_device(d, ts(T0)).await,
            ErrorKind::InvalidInput,
            &format!("create_device with attributes {bad} (not an object)"),
        );
    }
    let huge = json!({ "blob": "x".repeat(limits.max_attributes_bytes) });
    let mut d = new_device("pump-1", "acme/plant-1");
    d.attributes = huge.clone();
    expect_kind(
        reg.create_device(d, ts(T0)).await,
        ErrorKind::TooLarge,
        "create_device with attributes over max_attributes_bytes",
    );
    assert_eq!(
        ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device"),
        None,
        "refused create_device calls store nothing"
    );
    // Large but allowed: stored and read back exactly.
    let big = json!({
        "blob": "y".repeat(limits.max_attributes_bytes - 100),
        "nested": { "list": [1, 2.5, "three", null, true], "unicode": "Grüße ✓" },
    });
    let mut d = new_device("pump-1", "acme/plant-1");
    d.attributes = big.clone();
    let created = ok(
        reg.create_device(d, ts(T0)).await,
        "create_device with large attributes",
    );
    assert_eq!(created.attributes, big);
    let stored = ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device").expect("stored");
    assert_eq!(stored.attributes, big, "attributes read back exactly");

    for (bad, kind) in [
        (json!(["not", "an", "object"]), ErrorKind::InvalidInput),
        (huge, ErrorKind::TooLarge),
    ] {
        expect_kind(
            reg.update_device(
                &acme,
                &dev("pump-1"),
                DevicePatch {
                    display_name: Some("renamed".into()),
                    attributes: Some(bad),
                    lifecycle: Some(Lifecycle::Suspended),
                },
                Some(1),
                ts(T0 + 5),
            )
            .await,
            kind,
            "update_device with bad attributes",
        );
        assert_eq!(
            ok(reg.get_device(&acme, &dev("pump-1")).await, "get_device"),
            Some(created.clone()),
            "a refused update_device changes nothing (not even the other patched fields)"
        );
    }
    let empty = ok(
        reg.update_device(
            &acme,
            &dev("pump-1"),
            DevicePatch {
                attributes: Some(json!({})),
                ..DevicePatch::default()
            },
            Some(1),
            ts(T0 + 6),
        )
        .await,
        "update_device to empty attributes",
    );
    assert_eq!(empty.attributes, json!({}));
    assert_eq!(empty.version, 2);
}
