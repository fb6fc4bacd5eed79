//! Audit log checks: ids in append order, cursor paging, whole-segment subtrees, filters,
//! limits and bad input, retention that never brings an id back.

use std::sync::Arc;

use hub_core::ErrorKind;
use serde_json::json;

use super::{StoresFactory, T0, expect_kind, group, ok, tenant, ts, walk};
use crate::PageRequest;
use crate::audit::{AuditOutcome, AuditQuery, AuditRecord, AuditStore, NewAuditRecord};

pub(super) fn record(group_path: &str, actor: &str, resource: &str, at: i64) -> NewAuditRecord {
    let g = group(group_path);
    NewAuditRecord {
        at: ts(at),
        tenant: g.tenant(),
        actor: actor.to_owned(),
        action: "job.create".to_owned(),
        resource: resource.to_owned(),
        group: g,
        outcome: AuditOutcome::Allowed,
        details: json!({"job": "0190-abc", "n": 1.5, "nested": {"list": [1, "two", null]}}),
    }
}

async fn append_ok(audit: &Arc<dyn AuditStore>, r: NewAuditRecord) -> AuditRecord {
    let what = format!("append({} {} {})", r.group, r.actor, r.resource);
    ok(audit.record(r).await, &what)
}

/// Every record `query` matches, walked with pages of `limit`.
pub(super) async fn all(
    audit: &Arc<dyn AuditStore>,
    q: AuditQuery,
    limit: u32,
) -> Vec<AuditRecord> {
    let a = audit.clone();
    let q = Arc::new(q);
    walk(
        &format!("audit query {q:?} (limit {limit})"),
        limit,
        Box::new(move |p| {
            let (a, q) = (a.clone(), q.clone());
            Box::pin(async move { a.query(&q, p).await })
        }),
    )
    .await
}

fn ids(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.id).collect()
}

pub(super) async fn append_and_page(factory: StoresFactory) {
    let audit = factory().await.audit;
    let mut appended = Vec::new();
    for i in 0..23i64 {
        let g = ["acme", "acme/plant-1", "acme/plant-1/line-2"][i as usize % 3];
        let mut r = record(
            g,
            &format!("user:u{}", i % 4),
            &format!("device:acme/d{i}"),
            T0 + i,
        );
        r.outcome = [
            AuditOutcome::Allowed,
            AuditOutcome::Denied,
            AuditOutcome::Failed,
        ][i as usize % 3];
        let stored = append_ok(&audit, r.clone()).await;
        assert_eq!(
            (
                stored.at,
                &stored.tenant,
                &stored.actor,
                &stored.action,
                &stored.resource,
                &stored.group,
                stored.outcome,
                &stored.details
            ),
            (
                r.at,
                &r.tenant,
                &r.actor,
                &r.action,
                &r.resource,
                &r.group,
                r.outcome,
                &r.details
            ),
            "append returns the record as given"
        );
        appended.push(stored);
    }
    assert!(
        appended.windows(2).all(|w| w[0].id < w[1].id),
        "audit ids must strictly increase in append order: {:?}",
        ids(&appended)
    );
    for limit in [1, 5, 7, 23, 0] {
        let got = all(&audit, AuditQuery::subtree(group("acme")), limit).await;
        assert_eq!(
            got, appended,
            "query(acme) with pages of {limit} returns every record, oldest first, as stored"
        );
    }
    // A record appended later never shows up before the cursor of an earlier page.
    let first = ok(
        audit
            .query(&AuditQuery::subtree(group("acme")), PageRequest::first(10))
            .await,
        "first page",
    );
    let next = first.next.clone().expect("a next page after 10 of 23");
    let late = append_ok(&audit, record("acme", "user:late", "device:acme/late", T0)).await;
    let rest = ok(
        audit
            .query(
                &AuditQuery::subtree(group("acme")),
                PageRequest {
                    limit: 100,
                    after: Some(next),
                },
            )
            .await,
        "the rest",
    );
    assert_eq!(
        ids(&rest.items),
        ids(&appended[10..])
            .into_iter()
            .chain([late.id])
            .collect::<Vec<_>>(),
        "paging on from a cursor returns the later records, including one appended meanwhile"
    );
    expect_kind(
        audit
            .query(
                &AuditQuery::subtree(group("acme")),
                PageRequest {
                    limit: 5,
                    after: Some("not-an-id".into()),
                },
            )
            .await,
        ErrorKind::InvalidInput,
        "a cursor the store did not produce",
    );
}

pub(super) async fn subtree_and_filters(factory: StoresFactory) {
    let audit = factory().await.audit;
    let p1 = append_ok(
        &audit,
        record("acme/plant-1", "user:ann", "device:acme/pump-1", T0),
    )
    .await;
    let p10 = append_ok(
        &audit,
        record("acme/plant-10", "user:ann", "device:acme/pump-1", T0 + 1),
    )
    .await;
    let line = append_ok(
        &audit,
        record(
            "acme/plant-1/line-2",
            "user:bob",
            "device:acme/pump-7",
            T0 + 2,
        ),
    )
    .await;
    let p1b = append_ok(
        &audit,
        record("acme/plant-1-b", "user:bob", "device:acme/pump-7", T0 + 3),
    )
    .await;
    let root = append_ok(
        &audit,
        record("acme", "service:sched", "group:acme", T0 + 4),
    )
    .await;
    let other = append_ok(
        &audit,
        record("globex/plant-1", "user:ann", "device:acme/pump-1", T0 + 5),
    )
    .await;
    let late = append_ok(
        &audit,
        record("acme/plant-1", "user:bob", "device:acme/pump-1", T0 + 10),
    )
    .await;

    let q = |root: &str| AuditQuery::subtree(group(root));
    assert_eq!(
        ids(&all(&audit, q("acme/plant-1"), 2).await),
        ids(&[p1.clone(), line.clone(), late.clone()]),
        "acme/plant-1 sees itself and acme/plant-1/line-2, not acme/plant-10 or acme/plant-1-b"
    );
    assert_eq!(
        ids(&all(&audit, q("acme/plant-10"), 2).await),
        vec![p10.id],
        "acme/plant-10 sees only itself"
    );
    assert_eq!(
        ids(&all(&audit, q("acme"), 0).await),
        ids(&[
            p1.clone(),
            p10.clone(),
            line.clone(),
            p1b.clone(),
            root.clone(),
            late.clone()
        ]),
        "the tenant's root sees its whole tree and no other tenant"
    );
    assert_eq!(
        ids(&all(&audit, q("globex"), 0).await),
        vec![other.id],
        "another tenant sees only its own records, even with the same resource and actor"
    );
    assert!(
        all(&audit, q("initech"), 0).await.is_empty(),
        "an unknown tenant sees nothing"
    );

    let mut by_resource = q("acme");
    by_resource.resource = Some("device:acme/pump-1".into());
    assert_eq!(
        ids(&all(&audit, by_resource, 1).await),
        ids(&[p1.clone(), p10.clone(), late.clone()]),
        "resource filter: exact match within the subtree"
    );
    let mut by_actor = q("acme/plant-1");
    by_actor.actor = Some("user:bob".into());
    assert_eq!(
        ids(&all(&audit, by_actor, 1).await),
        ids(&[line.clone(), late.clone()]),
        "actor filter combined with the subtree"
    );
    let mut prefix_actor = q("acme");
    prefix_actor.actor = Some("user:b".into());
    assert!(
        all(&audit, prefix_actor, 0).await.is_empty(),
        "the actor filter is an exact match, not a prefix"
    );
    let mut window = q("acme");
    window.from = Some(ts(T0 + 1));
    window.to = Some(ts(T0 + 4));
    assert_eq!(
        ids(&all(&audit, window, 2).await),
        ids(&[p10.clone(), line.clone(), p1b.clone()]),
        "`from` is inclusive, `to` exclusive"
    );
    let mut since = q("acme");
    since.from = Some(ts(T0 + 4));
    assert_eq!(
        ids(&all(&audit, since, 0).await),
        ids(&[root.clone(), late.clone()]),
        "`from` alone"
    );
    let mut until = q("acme/plant-1");
    until.to = Some(ts(T0 + 10));
    until.resource = Some("device:acme/pump-1".into());
    until.actor = Some("user:ann".into());
    assert_eq!(
        ids(&all(&audit, until, 0).await),
        vec![p1.id],
        "every filter at once"
    );
    let mut empty = q("acme");
    empty.from = Some(ts(T0 + 5));
    empty.to = Some(ts(T0 + 5));
    expect_kind(
        audit.query(&empty, PageRequest::first(10)).await,
        ErrorKind::InvalidInput,
        "an empty time range",
    );
}

pub(super) async fn invalid_input(factory: StoresFactory) {
    let audit = factory().await.audit;
    let limit = super::expected_limits().max_audit_details_bytes;
    let mut bad: Vec<(&str, NewAuditRecord, ErrorKind)> = Vec::new();
    let base = || record("acme/plant-1", "user:ann", "device:acme/pump-1", T0);
    for action in [
        "",
        "Job.Create",
        "job create",
        "job/create",
        &"a".repeat(65),
    ] {
        let mut r = base();
        r.action = action.to_owned();
        bad.push(("a malformed action", r, ErrorKind::InvalidInput));
    }
    for actor in ["", "user:\0ann", &"u".repeat(257)] {
        let mut r = base();
        r.actor = actor.to_owned();
        bad.push(("a malformed actor", r, ErrorKind::InvalidInput));
    }
    for resource in ["", "device:\0", &"r".repeat(257)] {
        let mut r = base();
        r.resource = resource.to_owned();
        bad.push(("a malformed resource", r, ErrorKind::InvalidInput));
    }
    let mut foreign = base();
    foreign.tenant = tenant("globex");
    bad.push((
        "a group outside the tenant",
        foreign,
        ErrorKind::InvalidInput,
    ));
    let mut big = base();
    // A JSON string of n characters serializes to n + 2 bytes.
    big.details = json!("x".repeat(limit - 1));
    bad.push(("details one byte over the limit", big, ErrorKind::TooLarge));
    for (what, r, kind) in bad {
        expect_kind(audit.record(r).await, kind, what);
    }
    assert!(
        all(&audit, AuditQuery::subtree(group("acme")), 0)
            .await
            .is_empty()
            && all(&audit, AuditQuery::subtree(group("globex")), 0)
                .await
                .is_empty(),
        "refused appends write nothing"
    );

    let mut edge = base();
    edge.action = format!("{}.v1", "a".repeat(61));
    edge.actor = "u".repeat(256);
    edge.resource = "r".repeat(256);
    edge.details = json!("x".repeat(limit - 2));
    let stored = append_ok(&audit, edge.clone()).await;
    assert_eq!(
        (
            stored.action.len(),
            &stored.actor,
            &stored.resource,
            &stored.details
        ),
        (64, &edge.actor, &edge.resource, &edge.details),
        "values exactly at the limits are accepted and read back whole"
    );
    let got = all(&audit, AuditQuery::subtree(group("acme")), 0).await;
    assert_eq!(
        got,
        vec![stored],
        "the accepted record reads back as returned"
    );
    let mut null_filter = AuditQuery::subtree(group("acme"));
    null_filter.actor = Some("a\0b".into());
    expect_kind(
        audit.query(&null_filter, PageRequest::first(1)).await,
        ErrorKind::InvalidInput,
        "a filter value no record can hold",
    );
}

pub(super) async fn retention(factory: StoresFactory) {
    let audit = factory().await.audit;
    let mut acme = Vec::new();
    let mut globex = Vec::new();
    for i in 0..6i64 {
        acme.push(
            append_ok(
                &audit,
                record("acme/p", "user:a", "device:acme/x", T0 + i * 1000),
            )
            .await,
        );
        globex.push(
            append_ok(
                &audit,
                record("globex/p", "user:g", "device:globex/x", T0 + i * 1000),
            )
            .await,
        );
    }
    let removed = ok(
        audit
            .prune_before(Some(&tenant("acme")), ts(T0 + 2000))
            .await,
        "prune_before(acme, T0+2s)",
    );
    assert_eq!(
        removed, 2,
        "acme's records at T0 and T0+1s are removed, the one at T0+2s stays"
    );
    assert_eq!(
        all(&audit, AuditQuery::subtree(group("acme")), 0).await,
        acme[2..].to_vec(),
        "acme keeps its records from the cut-off on, unchanged"
    );
    assert_eq!(
        all(&audit, AuditQuery::subtree(group("globex")), 0).await,
        globex,
        "retention of one tenant leaves the others alone"
    );
    assert_eq!(
        ok(
            audit
                .prune_before(Some(&tenant("acme")), ts(T0 + 2000))
                .await,
            "again"
        ),
        0,
        "retention is idempotent"
    );
    let removed = ok(
        audit.prune_before(None, ts(T0 + 10_000)).await,
        "prune_before(all)",
    );
    assert_eq!(
        removed,
        4 + 6,
        "retention without a tenant covers every tenant"
    );
    assert!(
        all(&audit, AuditQuery::subtree(group("acme")), 0)
            .await
            .is_empty()
    );
    assert!(
        all(&audit, AuditQuery::subtree(group("globex")), 0)
            .await
            .is_empty()
    );
    let after = append_ok(&audit, record("acme/p", "user:a", "device:acme/x", T0)).await;
    let max_before = globex.iter().chain(&acme).map(|r| r.id).max().unwrap_or(0);
    assert!(
        after.id > max_before,
        "an id is never handed out again after retention: got {} after {max_before}",
        after.id
    );
}
