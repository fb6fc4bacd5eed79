//! Configuration document checks: versions 1..n per device and kind, compare-and-set, racing
//! puts, restoring onto a replacement unit, pruning, limits and tenant isolation.

use std::sync::Arc;

use hub_core::ErrorKind;
use serde_json::json;
use tokio::task::JoinSet;

use super::{StoresFactory, T0, dev, expect_kind, ok, tenant, ts, walk};
use crate::PageRequest;
use crate::config::{ConfigDocument, ConfigKind, ConfigStore};

use ConfigKind::{Desired, Reported};

async fn put_ok(
    config: &Arc<dyn ConfigStore>,
    t: &str,
    d: &str,
    kind: ConfigKind,
    document: serde_json::Value,
    expected: Option<u64>,
    at: i64,
) -> ConfigDocument {
    ok(
        config
            .put(
                &tenant(t),
                &dev(d),
                kind,
                document,
                "user:ann",
                expected,
                ts(at),
            )
            .await,
        &format!("put({t}/{d} {kind:?}, expected {expected:?})"),
    )
}

async fn versions(
    config: &Arc<dyn ConfigStore>,
    t: &str,
    d: &str,
    kind: ConfigKind,
    limit: u32,
) -> Vec<u64> {
    all(config, t, d, kind, limit)
        .await
        .iter()
        .map(|c| c.version)
        .collect()
}

async fn all(
    config: &Arc<dyn ConfigStore>,
    t: &str,
    d: &str,
    kind: ConfigKind,
    limit: u32,
) -> Vec<ConfigDocument> {
    let (c, t, d) = (config.clone(), tenant(t), dev(d));
    walk(
        &format!("list({t}/{d} {kind:?}, limit {limit})"),
        limit,
        Box::new(move |p| {
            let (c, t, d) = (c.clone(), t.clone(), d.clone());
            Box::pin(async move { c.list(&t, &d, kind, p).await })
        }),
    )
    .await
}

async fn latest(
    config: &Arc<dyn ConfigStore>,
    t: &str,
    d: &str,
    kind: ConfigKind,
) -> Option<ConfigDocument> {
    ok(config.latest(&tenant(t), &dev(d), kind).await, "latest")
}

pub(super) async fn versions_per_device(factory: StoresFactory) {
    let config = factory().await.config;
    assert_eq!(
        latest(&config, "acme", "pump-1", Desired).await,
        None,
        "nothing stored yet"
    );
    let mut desired = Vec::new();
    for i in 0..5i64 {
        let doc = json!({"rate": i, "ratio": 0.1, "tags": ["a", null, {"deep": [1.5e300]}], "s": "é\u{0}x"});
        let c = put_ok(
            &config,
            "acme",
            "pump-1",
            Desired,
            doc.clone(),
            None,
            T0 + i,
        )
        .await;
        assert_eq!(
            (
                &c.tenant,
                &c.device,
                c.kind,
                c.version,
                &c.document,
                c.created_at,
                c.created_by.as_str()
            ),
            (
                &tenant("acme"),
                &dev("pump-1"),
                Desired,
                i as u64 + 1,
                &doc,
                ts(T0 + i),
                "user:ann"
            ),
            "put returns the stored document with the next version"
        );
        desired.push(c);
    }
    let r1 = put_ok(
        &config,
        "acme",
        "pump-1",
        Reported,
        json!({"fw": "1.0"}),
        None,
        T0,
    )
    .await;
    let r2 = put_ok(
        &config,
        "acme",
        "pump-1",
        Reported,
        json!({"fw": "1.1"}),
        None,
        T0 + 1,
    )
    .await;
    assert_eq!(
        (r1.version, r2.version),
        (1, 2),
        "each kind counts its own versions"
    );
    let other = put_ok(&config, "acme", "pump-2", Desired, json!({}), None, T0).await;
    assert_eq!(other.version, 1, "each device counts its own versions");
    let foreign = put_ok(
        &config,
        "globex",
        "pump-1",
        Desired,
        json!({"g": true}),
        None,
        T0,
    )
    .await;
    assert_eq!(
        foreign.version, 1,
        "each tenant counts its own versions, same device id or not"
    );

    assert_eq!(
        latest(&config, "acme", "pump-1", Desired).await.as_ref(),
        desired.last()
    );
    assert_eq!(
        latest(&config, "acme", "pump-1", Reported).await,
        Some(r2.clone())
    );
    assert_eq!(
        latest(&config, "globex", "pump-1", Desired).await,
        Some(foreign.clone())
    );
    assert_eq!(
        latest(&config, "globex", "pump-1", Reported).await,
        None,
        "tenant isolation"
    );
    assert_eq!(latest(&config, "acme", "pump-3", Desired).await, None);
    for d in &desired {
        assert_eq!(
            ok(
                config
                    .get(&tenant("acme"), &dev("pump-1"), Desired, d.version)
                    .await,
                "get"
            )
            .as_ref(),
            Some(d),
            "get returns each version exactly as stored"
        );
    }
    for (t, kind, v) in [
        ("acme", Desired, 6),
        ("acme", Desired, 0),
        ("acme", Reported, 3),
        ("globex", Desired, 2),
    ] {
        assert_eq!(
            ok(config.get(&tenant(t), &dev("pump-1"), kind, v).await, "get"),
            None,
            "get({t} {kind:?} v{v}) of a version that does not exist"
        );
    }
    for limit in [1, 2, 5, 0] {
        let listed = all(&config, "acme", "pump-1", Desired, limit).await;
        let mut expected = desired.clone();
        expected.reverse();
        assert_eq!(
            listed, expected,
            "list with pages of {limit}: newest first, as stored"
        );
    }
    assert_eq!(
        versions(&config, "acme", "pump-1", Reported, 1).await,
        vec![2, 1]
    );
    assert_eq!(
        versions(&config, "globex", "pump-1", Desired, 0).await,
        vec![1]
    );
    assert!(
        versions(&config, "acme", "nobody", Desired, 0)
            .await
            .is_empty()
    );
    expect_kind(
        config
            .list(
                &tenant("acme"),
                &dev("pump-1"),
                Desired,
                PageRequest {
                    limit: 2,
                    after: Some("v3".into()),
                },
            )
            .await,
        ErrorKind::InvalidInput,
        "a cursor the store did not produce",
    );
}

pub(super) async fn compare_and_set(factory: StoresFactory) {
    let config = factory().await.config;
    let (t, d) = (tenant("acme"), dev("pump-1"));
    let put = |expected: Option<u64>, n: i64| {
        let config = config.clone();
        let (t, d) = (t.clone(), d.clone());
        async move {
            config
                .put(
                    &t,
                    &d,
                    Desired,
                    json!({"n": n}),
                    "user:ann",
                    expected,
                    ts(T0 + n),
                )
                .await
        }
    };
    for expected in [1, 5] {
        expect_kind(
            put(Some(expected), 0).await,
            ErrorKind::PreconditionFailed,
            "CAS on an empty history",
        );
    }
    let v1 = ok(
        put(Some(0), 1).await,
        "Some(0): create only if there is none",
    );
    assert_eq!(v1.version, 1);
    expect_kind(
        put(Some(0), 2).await,
        ErrorKind::PreconditionFailed,
        "Some(0) once a version exists",
    );
    let v2 = ok(put(Some(1), 3).await, "CAS on the latest version");
    assert_eq!(v2.version, 2);
    for stale in [0, 1, 3, 99] {
        expect_kind(
            put(Some(stale), 4).await,
            ErrorKind::PreconditionFailed,
            &format!("CAS expecting {stale} at 2"),
        );
    }
    assert_eq!(
        ok(config.latest(&t, &d, Desired).await, "latest"),
        Some(v2.clone()),
        "refused puts write nothing"
    );
    let v3 = ok(put(None, 5).await, "an unconditional put");
    assert_eq!(v3.version, 3);
    let r1 = ok(
        config
            .put(
                &t,
                &d,
                Reported,
                json!({}),
                "device:pump-1",
                Some(0),
                ts(T0),
            )
            .await,
        "CAS on the other kind",
    );
    assert_eq!(
        r1.version, 1,
        "compare-and-set looks at the latest version of the same kind only"
    );
    expect_kind(
        config
            .put(
                &tenant("globex"),
                &d,
                Desired,
                json!({}),
                "user:g",
                Some(3),
                ts(T0),
            )
            .await,
        ErrorKind::PreconditionFailed,
        "another tenant's device of the same id has its own history",
    );
}

const RACERS: u64 = 12;

pub(super) async fn concurrent_puts(factory: StoresFactory) {
    let config = factory().await.config;
    put_ok(
        &config,
        "acme",
        "pump-1",
        Desired,
        json!({"start": true}),
        None,
        T0,
    )
    .await;
    for round in 0..4u64 {
        let expected = round + 1;
        let mut set = JoinSet::new();
        for racer in 0..RACERS {
            let config = config.clone();
            set.spawn(async move {
                let doc = json!({"round": round, "racer": racer});
                let r = config
                    .put(
                        &tenant("acme"),
                        &dev("pump-1"),
                        Desired,
                        doc,
                        "user:ann",
                        Some(expected),
                        ts(T0),
                    )
                    .await;
                (racer, r)
            });
        }
        let mut winners = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (racer, r) = joined.expect("a racing task finished");
            match r {
                Ok(c) => winners.push((racer, c)),
                Err(e) => assert_eq!(
                    e.kind(),
                    ErrorKind::PreconditionFailed,
                    "round {round}: a losing put must fail with PreconditionFailed, got {e}"
                ),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {RACERS} puts expecting version {expected}: exactly one must win"
        );
        let (racer, won) = &winners[0];
        assert_eq!(won.version, expected + 1);
        let stored = latest(&config, "acme", "pump-1", Desired).await;
        assert_eq!(
            stored.map(|c| c.document),
            Some(json!({"round": round, "racer": racer})),
            "round {round}: the latest document is the winner's"
        );
    }
    // Unconditional puts racing: every one lands, each on its own version.
    let mut set = JoinSet::new();
    for racer in 0..RACERS {
        let config = config.clone();
        set.spawn(async move {
            config
                .put(
                    &tenant("acme"),
                    &dev("pump-2"),
                    Reported,
                    json!({"racer": racer}),
                    "device:pump-2",
                    None,
                    ts(T0),
                )
                .await
        });
    }
    let mut got = Vec::new();
    while let Some(joined) = set.join_next().await {
        got.push(
            ok(
                joined.expect("a racing task finished"),
                "an unconditional racing put",
            )
            .version,
        );
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=RACERS).collect::<Vec<_>>(),
        "racing unconditional puts get versions 1..n"
    );
    assert_eq!(
        versions(&config, "acme", "pump-2", Reported, 0).await,
        (1..=RACERS).rev().collect::<Vec<_>>()
    );
}

pub(super) async fn copy_latest(factory: StoresFactory) {
    let config = factory().await.config;
    let acme = tenant("acme");
    put_ok(
        &config,
        "acme",
        "old-unit",
        Reported,
        json!({"fw": "1.0", "rate": 5}),
        None,
        T0,
    )
    .await;
    let backup = put_ok(
        &config,
        "acme",
        "old-unit",
        Reported,
        json!({"fw": "1.2", "rate": 7}),
        None,
        T0 + 1,
    )
    .await;
    let existing = put_ok(
        &config,
        "acme",
        "new-unit",
        Reported,
        json!({"factory": true}),
        None,
        T0 + 2,
    )
    .await;
    let restored = ok(
        config
            .copy_latest(
                &acme,
                &dev("old-unit"),
                &dev("new-unit"),
                Reported,
                "user:tech",
                ts(T0 + 100),
            )
            .await,
        "copy_latest(old-unit -> new-unit)",
    );
    assert_eq!(
        (
            &restored.tenant,
            &restored.device,
            restored.kind,
            restored.version,
            &restored.document,
            restored.created_at,
            restored.created_by.as_str()
        ),
        (
            &acme,
            &dev("new-unit"),
            Reported,
            existing.version + 1,
            &backup.document,
            ts(T0 + 100),
            "user:tech"
        ),
        "the backup's latest document becomes the replacement's next version, stamped by the caller"
    );
    assert_eq!(
        latest(&config, "acme", "new-unit", Reported).await,
        Some(restored.clone())
    );
    assert_eq!(
        latest(&config, "acme", "old-unit", Reported).await,
        Some(backup.clone()),
        "the source is left as it was"
    );
    assert_eq!(
        versions(&config, "acme", "old-unit", Reported, 0).await,
        vec![2, 1]
    );
    let fresh = ok(
        config
            .copy_latest(
                &acme,
                &dev("old-unit"),
                &dev("spare"),
                Reported,
                "user:tech",
                ts(T0 + 200),
            )
            .await,
        "copy_latest onto a unit without history",
    );
    assert_eq!((fresh.version, &fresh.document), (1, &backup.document));
    let desired = ok(
        config
            .copy_latest(
                &acme,
                &dev("old-unit"),
                &dev("spare"),
                Reported,
                "user:tech",
                ts(T0 + 300),
            )
            .await,
        "copy again",
    );
    assert_eq!(desired.version, 2, "copying again adds another version");
    for (t, from, kind, what) in [
        ("acme", "nobody", Reported, "a source without documents"),
        (
            "acme",
            "old-unit",
            Desired,
            "a source without documents of that kind",
        ),
        ("globex", "old-unit", Reported, "a source in another tenant"),
    ] {
        expect_kind(
            config
                .copy_latest(
                    &tenant(t),
                    &dev(from),
                    &dev("spare"),
                    kind,
                    "user:tech",
                    ts(T0),
                )
                .await,
            ErrorKind::NotFound,
            what,
        );
    }
    assert_eq!(
        versions(&config, "acme", "spare", Reported, 0).await,
        vec![2, 1],
        "refused copies write nothing"
    );
    assert!(
        versions(&config, "globex", "spare", Reported, 0)
            .await
            .is_empty()
    );
    assert!(
        versions(&config, "acme", "spare", Desired, 0)
            .await
            .is_empty()
    );
}

pub(super) async fn prune(factory: StoresFactory) {
    let config = factory().await.config;
    let (t, d) = (tenant("acme"), dev("pump-1"));
    for i in 0..5i64 {
        put_ok(
            &config,
            "acme",
            "pump-1",
            Desired,
            json!({"v": i}),
            None,
            T0 + i,
        )
        .await;
    }
    put_ok(&config, "acme", "pump-1", Reported, json!({}), None, T0).await;
    put_ok(&config, "acme", "pump-1", Reported, json!({}), None, T0).await;
    put_ok(&config, "globex", "pump-1", Desired, json!({}), None, T0).await;
    put_ok(&config, "globex", "pump-1", Desired, json!({}), None, T0).await;
    expect_kind(
        config.prune(&t, &d, Desired, 0).await,
        ErrorKind::InvalidInput,
        "keep 0 would drop the latest",
    );
    assert_eq!(
        versions(&config, "acme", "pump-1", Desired, 0).await,
        vec![5, 4, 3, 2, 1],
        "a refused prune removes nothing"
    );
    assert_eq!(
        ok(config.prune(&t, &d, Desired, 2).await, "prune keep 2"),
        3
    );
    assert_eq!(
        versions(&config, "acme", "pump-1", Desired, 1).await,
        vec![5, 4],
        "the newest two are kept"
    );
    for v in 1..=3 {
        assert_eq!(
            ok(config.get(&t, &d, Desired, v).await, "get"),
            None,
            "pruned version {v} is gone"
        );
    }
    assert_eq!(
        ok(config.get(&t, &d, Desired, 5).await, "get").map(|c| c.document),
        Some(json!({"v": 4})),
        "the kept versions are unchanged"
    );
    assert_eq!(
        ok(config.prune(&t, &d, Desired, 2).await, "again"),
        0,
        "pruning is idempotent"
    );
    assert_eq!(
        ok(
            config.prune(&t, &d, Desired, 100).await,
            "keep more than exist"
        ),
        0
    );
    assert_eq!(
        ok(
            config.prune(&t, &dev("nobody"), Desired, 1).await,
            "no history"
        ),
        0
    );
    assert_eq!(
        versions(&config, "acme", "pump-1", Reported, 0).await,
        vec![2, 1],
        "the other kind is untouched"
    );
    assert_eq!(
        versions(&config, "globex", "pump-1", Desired, 0).await,
        vec![2, 1],
        "the other tenant is untouched"
    );
    let next = put_ok(
        &config,
        "acme",
        "pump-1",
        Desired,
        json!({}),
        Some(5),
        T0 + 10,
    )
    .await;
    assert_eq!(
        next.version, 6,
        "versions go on after pruning, never reused"
    );
    assert_eq!(ok(config.prune(&t, &d, Desired, 1).await, "keep 1"), 2);
    assert_eq!(
        versions(&config, "acme", "pump-1", Desired, 0).await,
        vec![6]
    );
}

pub(super) async fn limits(factory: StoresFactory) {
    let config = factory().await.config;
    let (t, d) = (tenant("acme"), dev("pump-1"));
    let max = super::expected_limits().max_config_bytes;
    // A JSON string of n characters serializes to n + 2 bytes.
    expect_kind(
        config
            .put(
                &t,
                &d,
                Desired,
                json!("x".repeat(max - 1)),
                "user:ann",
                None,
                ts(T0),
            )
            .await,
        ErrorKind::TooLarge,
        "a document one byte over the limit",
    );
    for by in ["", "user:\0ann", &"u".repeat(257)] {
        expect_kind(
            config
                .put(&t, &d, Desired, json!({}), by, None, ts(T0))
                .await,
            ErrorKind::InvalidInput,
            "a malformed created_by",
        );
    }
    assert_eq!(
        latest(&config, "acme", "pump-1", Desired).await,
        None,
        "refused puts write nothing"
    );
    let big = put_ok(
        &config,
        "acme",
        "pump-1",
        Desired,
        json!("x".repeat(max - 2)),
        None,
        T0,
    )
    .await;
    assert_eq!(
        big.document,
        json!("x".repeat(max - 2)),
        "a document exactly at the limit is kept whole"
    );
    expect_kind(
        config
            .copy_latest(&t, &d, &dev("pump-2"), Desired, "", ts(T0))
            .await,
        ErrorKind::InvalidInput,
        "copy_latest with an empty created_by",
    );
    assert_eq!(
        latest(&config, "acme", "pump-2", Desired).await,
        None,
        "a refused copy writes nothing"
    );
}
