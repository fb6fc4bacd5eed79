//! Bulk job checks: records with compare-and-set, targets recorded with the update (all or
//! nothing), subtree listings, the rollout timer's due list, and racing updates.

use std::sync::Arc;

use hub_core::{BulkJobId, ErrorKind};
use serde_json::json;
use tokio::task::JoinSet;

use super::{StoresFactory, T0, dev, expect_kind, group, job_id, ok, tenant, ts, walk};
use crate::bulk::{BulkJobRecord, BulkJobState, BulkJobStore, BulkTarget, NewBulkJob};
use crate::{PageRequest, StoreLimits};

fn bulk_id(n: u8) -> BulkJobId {
    BulkJobId::from_parts(ts(T0 + i64::from(n)), [n; 10])
}

fn new_bulk(n: u8, g: &str) -> NewBulkJob {
    let g = group(g);
    NewBulkJob {
        id: bulk_id(n),
        tenant: g.tenant(),
        group: g,
        state: BulkJobState::InProgress,
        definition: json!({"document": {"op": "update", "n": n}}),
        progress: json!({"started": 0}),
        created_by: "user:alice@acme".into(),
        created_at: ts(T0),
        due_at: Some(ts(T0)),
    }
}

fn target(d: &str, n: u64) -> BulkTarget {
    BulkTarget {
        device: dev(d),
        job: Some(job_id(T0, n)),
        error: None,
        at: ts(T0 + 5),
    }
}

async fn all_targets(store: &Arc<dyn BulkJobStore>, rec: &BulkJobRecord) -> Vec<BulkTarget> {
    let (store, t, id) = (store.clone(), rec.tenant.clone(), rec.id);
    walk(
        "list_bulk_targets",
        2,
        Box::new(move |page: PageRequest| {
            let (store, t) = (store.clone(), t.clone());
            Box::pin(async move { store.list_bulk_targets(&t, &id, page).await })
        }),
    )
    .await
}

pub(super) async fn create_get_list(factory: StoresFactory) {
    let store = factory().await.bulk;
    let a = ok(
        store.create_bulk_job(new_bulk(1, "acme/plant-1")).await,
        "create_bulk_job",
    );
    assert_eq!(a.version, 1, "a new bulk job is at version 1");
    assert_eq!(
        a.updated_at, a.created_at,
        "a new bulk job was updated when created"
    );
    assert_eq!(
        ok(store.get_bulk_job(&tenant("acme"), &a.id).await, "get"),
        Some(a.clone()),
        "get_bulk_job returns the record as created"
    );
    assert_eq!(
        ok(store.get_bulk_job(&tenant("globex"), &a.id).await, "get"),
        None,
        "another tenant does not see the bulk job"
    );
    expect_kind(
        store.create_bulk_job(new_bulk(1, "acme/plant-1")).await,
        ErrorKind::Conflict,
        "creating a bulk job with an existing id",
    );
    let mut foreign = new_bulk(9, "acme/plant-1");
    foreign.tenant = tenant("globex");
    expect_kind(
        store.create_bulk_job(foreign).await,
        ErrorKind::InvalidInput,
        "a bulk job whose group is not in its tenant",
    );
    let mut big = new_bulk(8, "acme/plant-1");
    big.definition = json!({
        "blob": "x".repeat(StoreLimits::default().max_bulk_definition_bytes)
    });
    expect_kind(
        store.create_bulk_job(big).await,
        ErrorKind::TooLarge,
        "an oversized bulk job definition",
    );
    assert_eq!(
        ok(
            store.get_bulk_job(&tenant("acme"), &bulk_id(8)).await,
            "get"
        ),
        None,
        "a refused bulk job is not stored"
    );

    for (n, g) in [
        (2, "acme/plant-10"),
        (3, "acme/plant-1/line-2"),
        (4, "acme"),
        (5, "globex/plant-1"),
    ] {
        ok(store.create_bulk_job(new_bulk(n, g)).await, "create");
    }
    let list = |root: &'static str| {
        let store = store.clone();
        async move {
            walk(
                "list_bulk_jobs",
                1,
                Box::new(move |page: PageRequest| {
                    let store = store.clone();
                    Box::pin(async move { store.list_bulk_jobs(&group(root), page).await })
                }),
            )
            .await
            .into_iter()
            .map(|j| j.id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list("acme/plant-1").await,
        vec![bulk_id(1), bulk_id(3)],
        "the subtree of acme/plant-1 holds its own bulk jobs (not acme/plant-10's), by id"
    );
    assert_eq!(
        list("acme").await,
        vec![bulk_id(1), bulk_id(2), bulk_id(3), bulk_id(4)],
        "the tenant's root lists every bulk job of the tenant and no other tenant's"
    );
}

pub(super) async fn update_and_targets(factory: StoresFactory) {
    let store = factory().await.bulk;
    let a = ok(
        store.create_bulk_job(new_bulk(1, "acme/plant-1")).await,
        "create",
    );
    let mut next = a.clone();
    next.progress = json!({"started": 2});
    next.due_at = Some(ts(T0 + 60_000));
    next.updated_at = ts(T0 + 5);
    // Fields the update may not change.
    next.definition = json!({"changed": true});
    next.created_by = "someone else".into();
    let targets = [target("pump-2", 2), target("pump-1", 1)];
    let b = ok(
        store.update_bulk_job(&next, 1, &targets).await,
        "update_bulk_job",
    );
    assert_eq!(b.version, 2, "an update bumps the version by one");
    assert_eq!(b.progress, json!({"started": 2}));
    assert_eq!(b.due_at, Some(ts(T0 + 60_000)));
    assert_eq!(b.updated_at, ts(T0 + 5));
    assert_eq!(b.definition, a.definition, "the definition never changes");
    assert_eq!(b.created_by, a.created_by, "the creator never changes");
    assert_eq!(
        ok(store.get_bulk_job(&a.tenant, &a.id).await, "get"),
        Some(b.clone()),
        "get_bulk_job returns what update_bulk_job answered"
    );
    assert_eq!(
        all_targets(&store, &b).await,
        vec![target("pump-1", 1), target("pump-2", 2)],
        "targets are listed by device id"
    );

    expect_kind(
        store.update_bulk_job(&next, 1, &[]).await,
        ErrorKind::PreconditionFailed,
        "an update with a stale version",
    );
    // A device that is already a target: nothing is written, the version stays.
    let mut again = b.clone();
    again.progress = json!({"started": 3});
    expect_kind(
        store
            .update_bulk_job(&again, 2, &[target("pump-3", 3), target("pump-1", 9)])
            .await,
        ErrorKind::Conflict,
        "recording a device that is already a target",
    );
    expect_kind(
        store
            .update_bulk_job(&again, 2, &[target("pump-4", 4), target("pump-4", 5)])
            .await,
        ErrorKind::Conflict,
        "naming a device twice among the new targets",
    );
    assert_eq!(
        ok(store.get_bulk_job(&a.tenant, &a.id).await, "get"),
        Some(b.clone()),
        "a refused update leaves the record as it was"
    );
    assert_eq!(
        all_targets(&store, &b).await.len(),
        2,
        "a refused update records none of its targets"
    );
    let refused = BulkTarget {
        device: dev("pump-3"),
        job: None,
        error: Some("device pump-3 is offline".into()),
        at: ts(T0 + 7),
    };
    again.state = BulkJobState::Canceled;
    again.due_at = None;
    let c = ok(
        store
            .update_bulk_job(&again, 2, std::slice::from_ref(&refused))
            .await,
        "update",
    );
    assert_eq!(c.state, BulkJobState::Canceled);
    assert_eq!(c.version, 3);
    assert_eq!(
        all_targets(&store, &c).await.last(),
        Some(&refused),
        "a target without a job keeps its error"
    );

    let mut other_tenant = c.clone();
    other_tenant.tenant = tenant("globex");
    expect_kind(
        store.update_bulk_job(&other_tenant, 3, &[]).await,
        ErrorKind::NotFound,
        "updating a bulk job through another tenant",
    );
    let mut ghost = c.clone();
    ghost.id = bulk_id(77);
    expect_kind(
        store.update_bulk_job(&ghost, 1, &[]).await,
        ErrorKind::NotFound,
        "updating a bulk job that does not exist",
    );
    let page = ok(
        store
            .list_bulk_targets(&tenant("globex"), &a.id, PageRequest::first(10))
            .await,
        "list targets",
    );
    assert!(
        page.items.is_empty(),
        "another tenant sees no targets of the bulk job"
    );
}

pub(super) async fn due(factory: StoresFactory) {
    let store = factory().await.bulk;
    for (n, due) in [
        (1u8, Some(30)),
        (2, Some(10)),
        (3, None),
        (4, Some(20)),
        (5, Some(99)),
    ] {
        let mut b = new_bulk(n, "acme/plant-1");
        b.due_at = due.map(|d| ts(T0 + d));
        ok(store.create_bulk_job(b).await, "create");
    }
    // A finished bulk job is never due.
    let four = ok(
        store.get_bulk_job(&tenant("acme"), &bulk_id(4)).await,
        "get",
    )
    .expect("bulk job 4 exists");
    let mut done = four.clone();
    done.state = BulkJobState::Completed;
    ok(store.update_bulk_job(&done, 1, &[]).await, "complete");
    let ids = |v: Vec<BulkJobRecord>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok(store.due_bulk_jobs(ts(T0 + 30), 10).await, "due")),
        vec![bulk_id(2), bulk_id(1)],
        "due_bulk_jobs: unfinished jobs due at or before the time, earliest first"
    );
    assert_eq!(
        ids(ok(store.due_bulk_jobs(ts(T0 + 100), 1).await, "due")),
        vec![bulk_id(2)],
        "due_bulk_jobs respects its limit"
    );
}

pub(super) async fn concurrent_updates(factory: StoresFactory) {
    let store = factory().await.bulk;
    let rec = ok(
        store.create_bulk_job(new_bulk(1, "acme/plant-1")).await,
        "create",
    );
    let mut set = JoinSet::new();
    for racer in 0..12u64 {
        let (store, mut mine) = (store.clone(), rec.clone());
        mine.progress = json!({"racer": racer});
        set.spawn(async move {
            let t = target(&format!("pump-{racer}"), racer);
            store.update_bulk_job(&mine, 1, &[t]).await
        });
    }
    let mut winners = 0;
    while let Some(r) = set.join_next().await {
        match r.expect("a racing task") {
            Ok(_) => winners += 1,
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::PreconditionFailed,
                "a losing update_bulk_job must fail with PreconditionFailed, got {e}"
            ),
        }
    }
    assert_eq!(winners, 1, "exactly one of 12 racing updates wins");
    let stored = ok(store.get_bulk_job(&rec.tenant, &rec.id).await, "get").expect("exists");
    assert_eq!(stored.version, 2);
    let targets = all_targets(&store, &stored).await;
    assert_eq!(targets.len(), 1, "only the winner's target is recorded");
    let racer: u64 = targets[0].device.as_str()["pump-".len()..]
        .parse()
        .expect("a racer's device");
    assert_eq!(
        stored.progress,
        json!({ "racer": racer }),
        "the recorded target and the stored progress come from the same (winning) update"
    );
}

pub(super) async fn move_group(factory: StoresFactory) {
    let stores = factory().await;
    let reg = &stores.registry;
    ok(
        reg.create_tenant(&tenant("acme"), "Acme", ts(T0)).await,
        "tenant",
    );
    for g in ["acme/plant-1", "acme/plant-1/line-2", "acme/plant-10"] {
        ok(reg.create_group(&group(g), "g", ts(T0)).await, "group");
    }
    ok(
        stores
            .bulk
            .create_bulk_job(new_bulk(1, "acme/plant-1/line-2"))
            .await,
        "create",
    );
    ok(
        stores
            .bulk
            .create_bulk_job(new_bulk(2, "acme/plant-10"))
            .await,
        "create",
    );
    ok(
        reg.move_group(&group("acme/plant-1"), &group("acme/site-9"), ts(T0 + 1))
            .await,
        "move_group",
    );
    let moved = ok(
        stores.bulk.get_bulk_job(&tenant("acme"), &bulk_id(1)).await,
        "get",
    )
    .expect("the bulk job still exists");
    assert_eq!(
        moved.group,
        group("acme/site-9/line-2"),
        "move_group rewrites the group of the subtree's bulk jobs"
    );
    let kept = ok(
        stores.bulk.get_bulk_job(&tenant("acme"), &bulk_id(2)).await,
        "get",
    )
    .expect("the bulk job still exists");
    assert_eq!(
        kept.group,
        group("acme/plant-10"),
        "a bulk job outside the moved subtree keeps its group"
    );
    let page = ok(
        stores
            .bulk
            .list_bulk_jobs(&group("acme/site-9"), PageRequest::first(10))
            .await,
        "list",
    );
    assert_eq!(
        page.items,
        vec![moved],
        "the moved bulk job is listed at its new place"
    );
}
