//! The model check of the audit log and configuration documents: random operation sequences
//! applied to the backend and to a fresh [`MemoryStore`], comparing every answer.
//!
//! Kept apart from `model_random_operations` so that its generated sequences stay as they were.
//! Audit ids are the backend's own (only their order is specified), so the check maps each
//! backend id to the reference's id of the same append after checking that it increases.

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;

use super::model::{collect, device_of, group_of, same, tenant_of};
use super::{StoresFactory, T0, ts};
use crate::audit::{AuditOutcome, AuditQuery, AuditRecord, NewAuditRecord};
use crate::config::ConfigKind;
use crate::memory::MemoryStore;
use crate::{StoreLimits, Stores};

const CASES: u32 = 24;
const OPS: usize = 40;
const ACTORS: [&str; 2] = ["user:ann", "user:bob"];
const RESOURCES: [&str; 2] = ["device:a/d1", "device:a/d2"];
const KINDS: [ConfigKind; 2] = [ConfigKind::Desired, ConfigKind::Reported];

#[derive(Debug, Clone)]
enum Op {
    Append {
        t: u8,
        g: u8,
        actor: u8,
        resource: u8,
        at: u8,
        /// 0: fine, 1: details too large, 2: a malformed action.
        bad: u8,
    },
    Query {
        t: u8,
        g: u8,
        actor: Option<u8>,
        resource: Option<u8>,
        from: Option<u8>,
        to: Option<u8>,
        limit: u32,
    },
    DeleteBefore(Option<u8>, u8),
    Put {
        t: u8,
        d: u8,
        kind: u8,
        doc: u8,
        expected: Option<u64>,
    },
    Latest(u8, u8, u8),
    Get(u8, u8, u8, u64),
    List(u8, u8, u8, u32),
    Copy {
        t: u8,
        from: u8,
        to: u8,
        kind: u8,
    },
    Prune(u8, u8, u8, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2u8, 0..5u8, 0..2u8, 0..2u8, 0..8u8, prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)])
            .prop_map(|(t, g, actor, resource, at, bad)| Op::Append { t, g, actor, resource, at, bad }),
        // Mostly wide queries (a tenant's root, few filters), so that pages hold several records.
        3 => (0..2u8, prop_oneof![Just(0u8), 0..5u8], proptest::option::weighted(0.25, 0..2u8), proptest::option::weighted(0.25, 0..2u8), proptest::option::weighted(0.25, 0..8u8), proptest::option::weighted(0.25, 0..9u8), 0..4u32)
            .prop_map(|(t, g, actor, resource, from, to, limit)| Op::Query { t, g, actor, resource, from, to, limit }),
        1 => (proptest::option::of(0..2u8), 0..8u8).prop_map(|(t, b)| Op::DeleteBefore(t, b)),
        4 => (0..2u8, 0..3u8, 0..2u8, 0..4u8, proptest::option::of(0..4u64))
            .prop_map(|(t, d, kind, doc, expected)| Op::Put { t, d, kind, doc, expected }),
        1 => (0..2u8, 0..3u8, 0..2u8).prop_map(|(t, d, k)| Op::Latest(t, d, k)),
        1 => (0..2u8, 0..3u8, 0..2u8, 0..5u64).prop_map(|(t, d, k, v)| Op::Get(t, d, k, v)),
        2 => (0..2u8, 0..3u8, 0..2u8, 0..4u32).prop_map(|(t, d, k, l)| Op::List(t, d, k, l)),
        1 => (0..2u8, 0..3u8, 0..3u8, 0..2u8).prop_map(|(t, from, to, kind)| Op::Copy { t, from, to, kind }),
        1 => (0..2u8, 0..3u8, 0..2u8, 0..3u32).prop_map(|(t, d, k, keep)| Op::Prune(t, d, k, keep)),
    ]
}

fn cases() -> Vec<Vec<Op>> {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = proptest::collection::vec(op(), OPS);
    (0..CASES)
        .map(|_| match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(e) => panic!("the operation strategy fails: {e}"),
        })
        .collect()
}

fn at_of(a: u8) -> i64 {
    T0 + i64::from(a) * 1000
}

fn doc_of(d: u8) -> serde_json::Value {
    match d % 4 {
        0 => json!({}),
        1 => json!({ "rate": 5, "modes": ["eco", "boost"] }),
        2 => json!({ "nested": { "x": 0.1, "on": true, "none": null } }),
        _ => json!("just a string"),
    }
}

/// Backend audit ids mapped onto the reference's.
#[derive(Default)]
struct Ids {
    map: HashMap<u64, u64>,
    last: Option<u64>,
}

impl Ids {
    fn appended(&mut self, sut: u64, model: u64, what: &str) {
        if let Some(last) = self.last {
            assert!(
                sut > last,
                "{what}: audit id {sut} is not above the previous append's {last}"
            );
        }
        self.last = Some(sut);
        self.map.insert(sut, model);
    }

    fn translate(&self, mut records: Vec<AuditRecord>, what: &str) -> Vec<AuditRecord> {
        for r in &mut records {
            r.id = *self
                .map
                .get(&r.id)
                .unwrap_or_else(|| panic!("{what}: the backend returns unknown audit id {}", r.id));
        }
        records
    }
}

async fn step(op: &Op, sut: &Stores, model: &Stores, now: i64, ids: &mut Ids, what: &str) {
    match op {
        Op::Append {
            t,
            g,
            actor,
            resource,
            at,
            bad,
        } => {
            let group = group_of(*t, *g);
            let record = NewAuditRecord {
                at: ts(at_of(*at)),
                tenant: group.tenant(),
                actor: ACTORS[*actor as usize % 2].to_owned(),
                action: if *bad == 2 {
                    "Bad Action"
                } else {
                    "config.put"
                }
                .to_owned(),
                resource: RESOURCES[*resource as usize % 2].to_owned(),
                group,
                outcome: [AuditOutcome::Allowed, AuditOutcome::Denied][*actor as usize % 2],
                details: if *bad == 1 {
                    json!("x".repeat(StoreLimits::default().max_audit_details_bytes))
                } else {
                    json!({ "n": at })
                },
            };
            let got = sut.audit.record(record.clone()).await;
            let want = model.audit.record(record).await;
            match (got, want) {
                (Ok(mut g), Ok(w)) => {
                    ids.appended(g.id, w.id, what);
                    g.id = w.id;
                    assert_eq!(g, w, "{what}: the appended records differ");
                }
                (g, w) => {
                    same(g.map(|_| ()), w.map(|_| ()), what);
                }
            }
        }
        Op::Query {
            t,
            g,
            actor,
            resource,
            from,
            to,
            limit,
        } => {
            let q = AuditQuery {
                root: group_of(*t, *g),
                resource: resource.map(|r| RESOURCES[r as usize % 2].to_owned()),
                actor: actor.map(|a| ACTORS[a as usize % 2].to_owned()),
                from: from.map(|f| ts(at_of(f))),
                to: to.map(|t| ts(at_of(t))),
            };
            let got = collect(*limit, |p| sut.audit.query(&q, p)).await;
            let want = collect(*limit, |p| model.audit.query(&q, p)).await;
            same(got.map(|r| ids.translate(r, what)), want, what);
        }
        Op::DeleteBefore(t, before) => {
            let tenant = t.map(tenant_of);
            let before = ts(at_of(*before));
            same(
                sut.audit.prune_before(tenant.as_ref(), before).await,
                model.audit.prune_before(tenant.as_ref(), before).await,
                what,
            );
        }
        Op::Put {
            t,
            d,
            kind,
            doc,
            expected,
        } => {
            let (t, d, k) = (tenant_of(*t), device_of(*d), KINDS[*kind as usize % 2]);
            same(
                sut.config
                    .put(&t, &d, k, doc_of(*doc), "user:ann", *expected, ts(now))
                    .await,
                model
                    .config
                    .put(&t, &d, k, doc_of(*doc), "user:ann", *expected, ts(now))
                    .await,
                what,
            );
        }
        Op::Latest(t, d, k) => {
            let (t, d, k) = (tenant_of(*t), device_of(*d), KINDS[*k as usize % 2]);
            same(
                sut.config.latest(&t, &d, k).await,
                model.config.latest(&t, &d, k).await,
                what,
            );
        }
        Op::Get(t, d, k, v) => {
            let (t, d, k) = (tenant_of(*t), device_of(*d), KINDS[*k as usize % 2]);
            same(
                sut.config.get(&t, &d, k, *v).await,
                model.config.get(&t, &d, k, *v).await,
                what,
            );
        }
        Op::List(t, d, k, limit) => {
            let (t, d, k) = (tenant_of(*t), device_of(*d), KINDS[*k as usize % 2]);
            same(
                collect(*limit, |p| sut.config.list(&t, &d, k, p)).await,
                collect(*limit, |p| model.config.list(&t, &d, k, p)).await,
                what,
            );
        }
        Op::Copy { t, from, to, kind } => {
            let (t, k) = (tenant_of(*t), KINDS[*kind as usize % 2]);
            let (from, to) = (device_of(*from), device_of(*to));
            same(
                sut.config
                    .copy_latest(&t, &from, &to, k, "user:tech", ts(now))
                    .await,
                model
                    .config
                    .copy_latest(&t, &from, &to, k, "user:tech", ts(now))
                    .await,
                what,
            );
        }
        Op::Prune(t, d, k, keep) => {
            let (t, d, k) = (tenant_of(*t), device_of(*d), KINDS[*k as usize % 2]);
            same(
                sut.config.prune(&t, &d, k, *keep).await,
                model.config.prune(&t, &d, k, *keep).await,
                what,
            );
        }
    }
}

pub(super) async fn random_operations(factory: StoresFactory) {
    for (case, ops) in cases().into_iter().enumerate() {
        let sut = factory().await;
        let model = MemoryStore::new(StoreLimits::default()).into_stores();
        let mut ids = Ids::default();
        for (i, op) in ops.iter().enumerate() {
            let now = T0 + 1000 * (i as i64 + 1);
            let what = format!("audit/config model case {case}, operation {i}: {op:?}");
            step(op, &sut, &model, now, &mut ids, &what).await;
        }
    }
}
