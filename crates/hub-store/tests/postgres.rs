//! The PostgreSQL backend against a real server, compared with the in-memory reference.
//!
//! Set `HUB_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`) to run these;
//! without it every test prints a notice and passes. Each test works in its own random schema
//! and drops it at the end, so the tests run in parallel against one database.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hub_core::{DeviceId, ErrorKind, GroupPath, JobId, JobState, TenantId, Timestamp};
use hub_store::memory::MemoryStore;
use hub_store::postgres::{PostgresConfig, PostgresStore, SCHEMA_VERSION};
use hub_store::{
    AccessKeyRecord, AggregateQuery, AggregateScope, AppendOutcome, Bucket, CredentialStore,
    DevicePatch, JobFilter, JobRecord, JobStore, Lifecycle, MeasurementStore, NewDevice, NewJob,
    PageRequest, Point, RegistryStore, Result, SeriesName, SeriesPoints, StoreLimits,
};

const HOUR: i64 = 3_600_000;
/// An hour-aligned base time (2023-11-14T22:00:00Z).
const BASE: i64 = 472_222 * HOUR;

fn url() -> Option<String> {
    match std::env::var("HUB_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipping: HUB_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

fn random_schema() -> String {
    format!("hub_test_{}", uuid::Uuid::new_v4().simple())
}

fn config(url: &str, schema: &str, limits: StoreLimits) -> PostgresConfig {
    PostgresConfig {
        url: url.to_owned(),
        schema: Some(schema.to_owned()),
        pool_size: 8,
        limits,
    }
}

/// Runs `body` against a fresh store in its own schema, drops the schema afterwards (also when
/// the body panics), then re-raises a panic.
async fn with_store<F, Fut>(limits: StoreLimits, body: F)
where
    F: FnOnce(PostgresStore, String, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = url() else { return };
    let schema = random_schema();
    let store = PostgresStore::connect(config(&url, &schema, limits))
        .await
        .expect("the test database is reachable");
    let outcome = tokio::spawn(body(store.clone(), url, schema)).await;
    store.drop_schema().await.expect("the schema is dropped");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A raw connection to the test database, using `schema`.
async fn raw_client(url: &str, schema: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .expect("set search_path");
    client
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).expect("valid timestamp")
}
fn g(s: &str) -> GroupPath {
    s.parse().expect("valid group")
}
fn d(s: &str) -> DeviceId {
    s.parse().expect("valid device")
}
fn tn(s: &str) -> TenantId {
    s.parse().expect("valid tenant")
}
fn sn(s: &str) -> SeriesName {
    s.parse().expect("valid series")
}

/// A result reduced to what must agree between backends: the value, or the error kind.
fn kind<T>(r: Result<T>) -> std::result::Result<T, ErrorKind> {
    r.map_err(|e| e.kind())
}

fn memory(limits: StoreLimits) -> MemoryStore {
    MemoryStore::new(limits)
}

/// Creates `acme` with groups `acme/a`, `acme/a/x`, `acme/b` and the given devices.
async fn registry_fixture<S: RegistryStore + ?Sized>(s: &S, devices: &[(&str, &str)]) {
    s.create_tenant(&tn("acme"), "Acme", t(1))
        .await
        .expect("tenant");
    for p in ["acme/a", "acme/a/x", "acme/b"] {
        s.create_group(&g(p), p, t(2)).await.expect("group");
    }
    for (id, group) in devices {
        s.create_device(
            NewDevice {
                id: d(id),
                group: g(group),
                display_name: id.to_string(),
                attributes: serde_json::json!({}),
            },
            t(3),
        )
        .await
        .expect("device");
    }
}

fn new_job(device: &str, created: i64, key: Option<&str>) -> NewJob {
    NewJob {
        id: JobId::new(t(created)),
        tenant: tn("acme"),
        device: d(device),
        group: g("acme/a"),
        lane: "default".to_owned(),
        state: JobState::Queued,
        document: serde_json::json!({"op": "reboot", "n": created}),
        options: serde_json::json!({}),
        idempotency_key: key.map(str::to_owned),
        created_by: "tester".to_owned(),
        bulk: None,
        created_at: t(created),
        due_at: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn migrations_are_idempotent_on_reopen_and_concurrent_open() {
    with_store(StoreLimits::default(), |store, url, schema| async move {
        store
            .create_tenant(&tn("acme"), "Acme", t(1))
            .await
            .expect("tenant");
        // Several nodes opening the same schema at once: each migration runs once.
        let mut opens = Vec::new();
        for _ in 0..4 {
            let cfg = config(&url, &schema, StoreLimits::default());
            opens.push(tokio::spawn(PostgresStore::connect(cfg)));
        }
        for o in opens {
            let reopened = o.await.expect("join").expect("reopen succeeds");
            let group = reopened.get_group(&g("acme")).await.expect("read");
            assert_eq!(group.map(|g| g.display_name), Some("Acme".to_owned()));
        }
        let raw = raw_client(&url, &schema).await;
        let rows = raw
            .query("SELECT version FROM schema_version", &[])
            .await
            .expect("version");
        let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(versions, vec![SCHEMA_VERSION]);
    })
    .await;
}

#[tokio::test]
async fn concurrent_first_open_of_a_fresh_schema_migrates_once() {
    let Some(url) = url() else { return };
    let schema = random_schema();
    let mut opens = Vec::new();
    for _ in 0..4 {
        let cfg = config(&url, &schema, StoreLimits::default());
        opens.push(tokio::spawn(PostgresStore::connect(cfg)));
    }
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.expect("join"));
    }
    let raw = raw_client(&url, &schema).await;
    let rows = raw
        .query("SELECT version FROM schema_version", &[])
        .await
        .expect("version");
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let failures: Vec<String> = stores
        .iter()
        .filter_map(|s| s.as_ref().err().map(|e| format!("{e:?}")))
        .collect();
    if let Some(Ok(s)) = stores.into_iter().find(|s| s.is_ok()) {
        s.drop_schema().await.expect("drop");
    }
    assert_eq!(failures, Vec::<String>::new());
    assert_eq!(versions, vec![SCHEMA_VERSION]);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    with_store(StoreLimits::default(), |_store, url, schema| async move {
        let raw = raw_client(&url, &schema).await;
        raw.execute(
            "UPDATE schema_version SET version = $1",
            &[&(SCHEMA_VERSION + 5)],
        )
        .await
        .expect("bump version");
        let err = PostgresStore::connect(config(&url, &schema, StoreLimits::default()))
            .await
            .expect_err("a newer schema must be refused");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let expected = format!(
            "database schema version {} is newer than this hub supports ({SCHEMA_VERSION}); \
             upgrade the hub",
            SCHEMA_VERSION + 5
        );
        assert_eq!(err.detail(), expected);
    })
    .await;
}

#[tokio::test]
async fn bad_schema_names_and_urls_are_invalid_input() {
    let Some(url) = url() else { return };
    for bad in ["Public", "a;drop table x", "x-y", "1abc", ""] {
        let err = PostgresStore::connect(config(&url, bad, StoreLimits::default()))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    let mut cfg = config("not a url at all ===", "x", StoreLimits::default());
    cfg.schema = None;
    let err = PostgresStore::connect(cfg).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    if url().is_none() {
        return;
    }
    // Port 1 on localhost: nothing listens there.
    let cfg = PostgresConfig {
        url: "postgres://postgres@127.0.0.1:1/test".to_owned(),
        schema: None,
        pool_size: 1,
        limits: StoreLimits::default(),
    };
    let err = PostgresStore::connect(cfg).await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

// ---------------------------------------------------------------------------------------------
// Registry and credentials, step by step against the reference
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn registry_and_credentials_match_memory() {
    let limits = StoreLimits {
        max_attributes_bytes: 64,
        ..StoreLimits::default()
    };
    with_store(limits, move |pg, _, _| async move {
        let mem = memory(limits);
        let stores: [&dyn RegistryStore; 2] = [&pg, &mem];
        let mut outcomes: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for (i, s) in stores.iter().enumerate() {
            let o = &mut outcomes[i];
            let mut log = |what: &str, v: String| o.push(format!("{what}: {v}"));
            log(
                "tenant",
                format!(
                    "{:?}",
                    kind(s.create_tenant(&tn("acme"), "Acme", t(1)).await)
                ),
            );
            log(
                "dup tenant",
                format!("{:?}", kind(s.create_tenant(&tn("acme"), "x", t(1)).await)),
            );
            log(
                "long name",
                format!(
                    "{:?}",
                    kind(s.create_tenant(&tn("zeta"), &"n".repeat(300), t(1)).await)
                ),
            );
            log(
                "root via group",
                format!("{:?}", kind(s.create_group(&g("beta"), "x", t(1)).await)),
            );
            log(
                "no parent",
                format!(
                    "{:?}",
                    kind(s.create_group(&g("acme/q/r"), "x", t(1)).await)
                ),
            );
            for p in ["acme/a", "acme/a/x", "acme/a-1", "acme/b", "acme/a/x/deep"] {
                log(
                    "group",
                    format!("{:?}", kind(s.create_group(&g(p), p, t(2)).await)),
                );
            }
            log(
                "dup group",
                format!("{:?}", kind(s.create_group(&g("acme/a"), "x", t(2)).await)),
            );
            log(
                "get group",
                format!("{:?}", kind(s.get_group(&g("acme/a/x")).await)),
            );
            log(
                "get missing",
                format!("{:?}", kind(s.get_group(&g("acme/zz")).await)),
            );
            log(
                "list a",
                format!(
                    "{:?}",
                    kind(s.list_groups(&g("acme/a"), PageRequest::first(0)).await)
                ),
            );
            log(
                "list acme 2",
                format!(
                    "{:?}",
                    kind(s.list_groups(&g("acme"), PageRequest::first(2)).await)
                ),
            );
            log(
                "list acme all",
                format!(
                    "{:?}",
                    kind(s.list_groups(&g("acme"), PageRequest::first(0)).await)
                ),
            );
            log(
                "list acme after a",
                format!(
                    "{:?}",
                    kind(
                        s.list_groups(
                            &g("acme"),
                            PageRequest {
                                limit: 2,
                                after: Some("acme/a".into())
                            }
                        )
                        .await
                    )
                ),
            );
            log(
                "list bad cursor",
                format!(
                    "{:?}",
                    kind(
                        s.list_groups(
                            &g("acme"),
                            PageRequest {
                                limit: 2,
                                after: Some("Not A Path".into())
                            }
                        )
                        .await
                    )
                ),
            );
            log(
                "delete root",
                format!("{:?}", kind(s.delete_group(&g("acme")).await)),
            );
            log(
                "delete parent",
                format!("{:?}", kind(s.delete_group(&g("acme/a/x")).await)),
            );
            log(
                "delete missing",
                format!("{:?}", kind(s.delete_group(&g("acme/nope")).await)),
            );
            let dev = |id: &str, group: &str, attrs: serde_json::Value| NewDevice {
                id: d(id),
                group: g(group),
                display_name: format!("device {id}"),
                attributes: attrs,
            };
            log(
                "dev1",
                format!(
                    "{:?}",
                    kind(
                        s.create_device(
                            dev(
                                "pump-1",
                                "acme/a",
                                serde_json::json!({"k": 1, "a": [1.5, "x"]})
                            ),
                            t(5)
                        )
                        .await
                    )
                ),
            );
            log(
                "dev2",
                format!(
                    "{:?}",
                    kind(
                        s.create_device(dev("Pump-2", "acme/a/x", serde_json::json!({})), t(5))
                            .await
                    )
                ),
            );
            log(
                "dev3",
                format!(
                    "{:?}",
                    kind(
                        s.create_device(dev("pump-3", "acme/a-1", serde_json::json!({})), t(5))
                            .await
                    )
                ),
            );
            log(
                "dev4",
                format!(
                    "{:?}",
                    kind(
                        s.create_device(dev("pump-4", "acme/b", serde_json::json!({})), t(5))
                            .await
                    )
                ),
            );
            log(
                "dup dev",
                format!(
                    "{:?}",
                    kind(
                        s.create_device(dev("pump-1", "acme/b", serde_json::json!({})), t(5))
                            .await
                    )
                ),
            );
            log(
                "dev no group",
                format!(
                    "{:?}",
                    kind(
                        s.create_device(dev("pump-9", "acme/zz", serde_json::json!({})), t(5))
                            .await
                    )
                ),
            );
            log(
                "dev attrs array",
                format!(
                    "{:?}",
                    kind(
                        s.create_device(dev("pump-8", "acme/a", serde_json::json!([1])), t(5))
                            .await
                    )
                ),
            );
            log(
                "dev attrs big",
                format!(
                    "{:?}",
                    kind(
                        s.create_device(
                            dev(
                                "pump-8",
                                "acme/a",
                                serde_json::json!({"k": "v".repeat(100)})
                            ),
                            t(5)
                        )
                        .await
                    )
                ),
            );
            log(
                "get dev8",
                format!("{:?}", kind(s.get_device(&tn("acme"), &d("pump-8")).await)),
            );
            log(
                "delete group with devices",
                format!("{:?}", kind(s.delete_group(&g("acme/b")).await)),
            );
            log(
                "update",
                format!(
                    "{:?}",
                    kind(
                        s.update_device(
                            &tn("acme"),
                            &d("pump-1"),
                            DevicePatch {
                                display_name: Some("P1".into()),
                                attributes: None,
                                lifecycle: Some(Lifecycle::Active)
                            },
                            Some(1),
                            t(6)
                        )
                        .await
                    )
                ),
            );
            log(
                "update stale",
                format!(
                    "{:?}",
                    kind(
                        s.update_device(
                            &tn("acme"),
                            &d("pump-1"),
                            DevicePatch::default(),
                            Some(1),
                            t(7)
                        )
                        .await
                    )
                ),
            );
            log(
                "update unconditional",
                format!(
                    "{:?}",
                    kind(
                        s.update_device(
                            &tn("acme"),
                            &d("pump-1"),
                            DevicePatch {
                                display_name: None,
                                attributes: Some(serde_json::json!({"z": null})),
                                lifecycle: None
                            },
                            None,
                            t(7)
                        )
                        .await
                    )
                ),
            );
            log(
                "update bad attrs",
                format!(
                    "{:?}",
                    kind(
                        s.update_device(
                            &tn("acme"),
                            &d("pump-1"),
                            DevicePatch {
                                attributes: Some(serde_json::json!("s")),
                                ..DevicePatch::default()
                            },
                            None,
                            t(7)
                        )
                        .await
                    )
                ),
            );
            log(
                "update missing",
                format!(
                    "{:?}",
                    kind(
                        s.update_device(
                            &tn("acme"),
                            &d("nope"),
                            DevicePatch::default(),
                            Some(1),
                            t(7)
                        )
                        .await
                    )
                ),
            );
            log(
                "update other tenant",
                format!(
                    "{:?}",
                    kind(
                        s.update_device(
                            &tn("other"),
                            &d("pump-1"),
                            DevicePatch::default(),
                            None,
                            t(7)
                        )
                        .await
                    )
                ),
            );
            log(
                "move",
                format!(
                    "{:?}",
                    kind(
                        s.move_device(&tn("acme"), &d("pump-4"), &g("acme/a/x"), t(8))
                            .await
                    )
                ),
            );
            log(
                "move other tenant",
                format!(
                    "{:?}",
                    kind(
                        s.move_device(&tn("acme"), &d("pump-4"), &g("beta/a"), t(8))
                            .await
                    )
                ),
            );
            log(
                "move no group",
                format!(
                    "{:?}",
                    kind(
                        s.move_device(&tn("acme"), &d("pump-4"), &g("acme/zz"), t(8))
                            .await
                    )
                ),
            );
            log(
                "move no device",
                format!(
                    "{:?}",
                    kind(
                        s.move_device(&tn("acme"), &d("nope"), &g("acme/b"), t(8))
                            .await
                    )
                ),
            );
            log(
                "delete empty group",
                format!("{:?}", kind(s.delete_group(&g("acme/b")).await)),
            );
            log(
                "list a devices",
                format!(
                    "{:?}",
                    kind(
                        s.list_devices(&g("acme/a"), None, PageRequest::first(0))
                            .await
                    )
                ),
            );
            log(
                "list active",
                format!(
                    "{:?}",
                    kind(
                        s.list_devices(&g("acme"), Some(Lifecycle::Active), PageRequest::first(0))
                            .await
                    )
                ),
            );
            log(
                "list page",
                format!(
                    "{:?}",
                    kind(
                        s.list_devices(
                            &g("acme"),
                            None,
                            PageRequest {
                                limit: 1,
                                after: Some("Pump-2".into())
                            }
                        )
                        .await
                    )
                ),
            );
            log(
                "list bad cursor",
                format!(
                    "{:?}",
                    kind(
                        s.list_devices(
                            &g("acme"),
                            None,
                            PageRequest {
                                limit: 1,
                                after: Some("a/b".into())
                            }
                        )
                        .await
                    )
                ),
            );
            log(
                "delete dev",
                format!(
                    "{:?}",
                    kind(s.delete_device(&tn("acme"), &d("pump-3")).await)
                ),
            );
            log(
                "delete dev again",
                format!(
                    "{:?}",
                    kind(s.delete_device(&tn("acme"), &d("pump-3")).await)
                ),
            );
            log(
                "get deleted",
                format!("{:?}", kind(s.get_device(&tn("acme"), &d("pump-3")).await)),
            );
        }
        assert_eq!(outcomes[0].len(), outcomes[1].len());
        for (p, m) in outcomes[0].iter().zip(&outcomes[1]) {
            assert_eq!(p, m);
        }

        let creds: [&dyn CredentialStore; 2] = [&pg, &mem];
        let mut outcomes: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for (i, s) in creds.iter().enumerate() {
            let o = &mut outcomes[i];
            let key = |prefix: &str, created: i64| AccessKeyRecord {
                prefix: prefix.to_owned(),
                tenant: tn("acme"),
                device: d("pump-1"),
                hash: format!("hash-{prefix}"),
                created_at: t(created),
                expires_at: None,
                revoked_at: None,
            };
            o.push(format!("{:?}", kind(s.put_access_key(key("k2", 10)).await)));
            o.push(format!("{:?}", kind(s.put_access_key(key("k1", 10)).await)));
            o.push(format!("{:?}", kind(s.put_access_key(key("k3", 20)).await)));
            o.push(format!("{:?}", kind(s.put_access_key(key("k3", 30)).await)));
            o.push(format!(
                "{:?}",
                kind(s.list_access_keys(&tn("acme"), &d("pump-1")).await)
            ));
            o.push(format!(
                "{:?}",
                kind(s.set_access_key_expiry("k1", Some(t(50))).await)
            ));
            o.push(format!(
                "{:?}",
                kind(s.set_access_key_expiry("nope", Some(t(50))).await)
            ));
            o.push(format!(
                "{:?}",
                kind(s.revoke_access_key("k2", t(60)).await)
            ));
            o.push(format!(
                "{:?}",
                kind(s.revoke_access_key("k2", t(70)).await)
            ));
            o.push(format!(
                "{:?}",
                kind(s.revoke_access_key("nope", t(70)).await)
            ));
            o.push(format!("{:?}", kind(s.find_access_key("k2").await)));
            o.push(format!("{:?}", kind(s.find_access_key("k1").await)));
            o.push(format!("{:?}", kind(s.find_access_key("nope").await)));
            o.push(format!(
                "{:?}",
                kind(s.list_access_keys(&tn("acme"), &d("pump-2")).await)
            ));
        }
        assert_eq!(outcomes[0], outcomes[1]);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn jobs_match_memory() {
    let limits = StoreLimits {
        max_job_status_bytes: 64,
        max_page_size: 5,
        ..StoreLimits::default()
    };
    with_store(limits, move |pg, _, _| async move {
        let mem = memory(limits);
        let stores: [&dyn JobStore; 2] = [&pg, &mem];
        let mut jobs = Vec::new();
        for i in 0..12i64 {
            let mut j = new_job(if i % 3 == 0 { "pump-2" } else { "pump-1" }, 1000 + i, None);
            if i % 4 == 0 {
                j.lane = "firmware".to_owned();
            }
            if i == 5 {
                j.group = g("acme/b");
            }
            j.due_at = Some(t(5000 - i * 10));
            jobs.push(j);
        }
        let mut outcomes: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for (i, s) in stores.iter().enumerate() {
            let o = &mut outcomes[i];
            for j in &jobs {
                o.push(format!("{:?}", kind(s.create_job(j.clone()).await)));
            }
            // The same id again, and bad input.
            o.push(format!("{:?}", kind(s.create_job(jobs[0].clone()).await)));
            let mut bad = new_job("pump-1", 2000, None);
            bad.lane = "bad lane".to_owned();
            o.push(format!("{:?}", kind(s.create_job(bad).await)));
            let mut bad = new_job("pump-1", 2000, None);
            bad.tenant = tn("other");
            o.push(format!("{:?}", kind(s.create_job(bad).await)));
            let first = s
                .get_job(&tn("acme"), &jobs[1].id)
                .await
                .expect("get")
                .expect("exists");
            let mut next = first.clone();
            next.state = JobState::Succeeded;
            next.execution = 1;
            next.result = Some(serde_json::json!({"ok": true}));
            next.updated_at = t(3000);
            next.due_at = None;
            o.push(format!("{:?}", kind(s.update_job(&next, 1).await)));
            o.push(format!("{:?}", kind(s.update_job(&next, 1).await)));
            let mut big = next.clone();
            big.status_details = Some(serde_json::json!({"x": "y".repeat(100)}));
            o.push(format!("{:?}", kind(s.update_job(&big, 2).await)));
            let mut foreign = next.clone();
            foreign.tenant = tn("other");
            o.push(format!("{:?}", kind(s.update_job(&foreign, 2).await)));
            o.push(format!(
                "{:?}",
                kind(s.get_job(&tn("other"), &jobs[1].id).await)
            ));
            o.push(format!(
                "{:?}",
                kind(s.queue_head(&tn("acme"), &d("pump-1"), "default", 10).await)
            ));
            o.push(format!(
                "{:?}",
                kind(s.queue_head(&tn("acme"), &d("pump-1"), "default", 2).await)
            ));
            o.push(format!(
                "{:?}",
                kind(
                    s.queue_head(&tn("acme"), &d("pump-2"), "firmware", 10)
                        .await
                )
            ));
            o.push(format!("{:?}", kind(s.due_jobs(t(4950), 3).await)));
            o.push(format!("{:?}", kind(s.due_jobs(t(4000), 100).await)));
            let filters = [
                JobFilter::default(),
                JobFilter {
                    device: Some(d("pump-2")),
                    ..JobFilter::default()
                },
                JobFilter {
                    states: vec![JobState::Succeeded, JobState::Failed],
                    ..JobFilter::default()
                },
                JobFilter {
                    bulk: Some(hub_core::BulkJobId::new(t(1))),
                    ..JobFilter::default()
                },
            ];
            for root in ["acme", "acme/a", "acme/b", "other"] {
                for f in &filters {
                    o.push(format!(
                        "{:?}",
                        kind(s.list_jobs(&g(root), f, PageRequest::first(3)).await)
                    ));
                    o.push(format!("{:?}", kind(s.count_jobs(&g(root), f).await)));
                }
            }
            o.push(format!(
                "{:?}",
                kind(
                    s.list_jobs(
                        &g("acme"),
                        &JobFilter::default(),
                        PageRequest {
                            limit: 2,
                            after: Some("zzz".into())
                        }
                    )
                    .await
                )
            ));
        }
        assert_eq!(outcomes[0].len(), outcomes[1].len());
        for (p, m) in outcomes[0].iter().zip(&outcomes[1]) {
            assert_eq!(p, m);
        }
    })
    .await;
}

#[tokio::test]
async fn concurrent_updates_with_the_same_expected_version_have_one_winner() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        let pg = Arc::new(pg);
        for round in 0..5i64 {
            let created = pg
                .create_job(new_job("pump-1", 1000 + round, None))
                .await
                .expect("create")
                .job;
            let mut tasks = Vec::new();
            for k in 0..8u32 {
                let pg = pg.clone();
                let mut update = created.clone();
                update.attempts = k;
                update.state = JobState::Delivered;
                tasks.push(tokio::spawn(async move { pg.update_job(&update, 1).await }));
            }
            let mut winners = Vec::new();
            for task in tasks {
                match task.await.expect("join") {
                    Ok(j) => winners.push(j),
                    Err(e) => assert_eq!(e.kind(), ErrorKind::PreconditionFailed),
                }
            }
            assert_eq!(winners.len(), 1, "exactly one writer wins");
            let stored = pg
                .get_job(&tn("acme"), &created.id)
                .await
                .expect("get")
                .expect("exists");
            assert_eq!(stored.version, 2);
            assert_eq!(stored.attempts, winners[0].attempts);
            assert_eq!(stored, winners[0]);
        }
        // A missing job is NotFound, not PreconditionFailed.
        let mut ghost: JobRecord = pg
            .create_job(new_job("pump-1", 9000, None))
            .await
            .expect("create")
            .job;
        ghost.id = JobId::new(t(9001));
        assert_eq!(
            pg.update_job(&ghost, 1).await.map_err(|e| e.kind()).err(),
            Some(ErrorKind::NotFound)
        );
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_return_the_same_job_even_under_races() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        let first = pg
            .create_job(new_job("pump-1", 1000, Some("order-1")))
            .await
            .expect("create");
        assert!(first.created);
        let again = pg
            .create_job(new_job("pump-2", 1001, Some("order-1")))
            .await
            .expect("create again");
        assert!(!again.created);
        assert_eq!(again.job, first.job);
        // Another tenant may use the same key.
        let mut other = new_job("pump-1", 1002, Some("order-1"));
        other.tenant = tn("beta");
        other.group = g("beta");
        let other = pg.create_job(other).await.expect("other tenant");
        assert!(other.created);
        assert_ne!(other.job.id, first.job.id);

        // Racing creators with one fresh key: one job, everyone sees it.
        let pg = Arc::new(pg);
        let mut tasks = Vec::new();
        for k in 0..16i64 {
            let pg = pg.clone();
            tasks.push(tokio::spawn(async move {
                pg.create_job(new_job("pump-3", 2000 + k, Some("order-2")))
                    .await
            }));
        }
        let mut ids = BTreeSet::new();
        let mut created = 0;
        for task in tasks {
            let out = task.await.expect("join").expect("create");
            created += usize::from(out.created);
            ids.insert(out.job.id);
        }
        assert_eq!(created, 1);
        assert_eq!(ids.len(), 1);
        // No seq was consumed by the losers.
        let next = pg
            .create_job(new_job("pump-3", 3000, None))
            .await
            .expect("create");
        assert_eq!(next.job.seq, 2);
    })
    .await;
}

#[tokio::test]
async fn per_device_seq_is_contiguous_under_concurrent_creates() {
    with_store(StoreLimits::default(), |pg, url, schema| async move {
        // Two "hub nodes": separate pools on the same schema.
        let other_node = PostgresStore::connect(config(&url, &schema, StoreLimits::default()))
            .await
            .expect("second node");
        let nodes = [Arc::new(pg), Arc::new(other_node)];
        let pg = nodes[0].clone();
        let mut tasks = Vec::new();
        for task in 0..50i64 {
            let pg = nodes[(task % 2) as usize].clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for k in 0..10i64 {
                    let out = pg
                        .create_job(new_job("pump-1", 1000 + task * 10 + k, None))
                        .await
                        .expect("create");
                    seqs.push(out.job.seq);
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            let seqs = task.await.expect("join");
            // One task's jobs are created one after another: strictly increasing.
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            all.extend(seqs);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=500).collect::<Vec<u64>>());
        // Another device's queue starts at 1.
        let other = pg
            .create_job(new_job("pump-2", 1, None))
            .await
            .expect("create");
        assert_eq!(other.job.seq, 1);
        let head = pg
            .queue_head(&tn("acme"), &d("pump-1"), "default", 1000)
            .await
            .expect("head");
        let seqs: Vec<u64> = head.iter().map(|j| j.seq).collect();
        assert_eq!(seqs, (1..=500).collect::<Vec<u64>>());
    })
    .await;
}

#[tokio::test]
async fn control_leases_conflict_and_expire() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        let (acme, pump) = (tn("acme"), d("pump-1"));
        let lease = pg
            .acquire_control(&acme, &pump, "alice", t(100), t(10))
            .await
            .expect("acquire");
        assert_eq!(lease.until, t(100));
        let err = pg
            .acquire_control(&acme, &pump, "bob", t(200), t(50))
            .await
            .expect_err("held");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        // Renewal by the holder.
        pg.acquire_control(&acme, &pump, "alice", t(150), t(60))
            .await
            .expect("renew");
        assert_eq!(
            pg.get_control(&acme, &pump, t(149)).await.expect("get"),
            Some(hub_store::ControlLease {
                tenant: acme.clone(),
                device: pump.clone(),
                holder: "alice".into(),
                until: t(150)
            })
        );
        assert_eq!(
            pg.get_control(&acme, &pump, t(150)).await.expect("get"),
            None
        );
        // Lapsed at 150: bob may take it at 150.
        pg.acquire_control(&acme, &pump, "bob", t(300), t(150))
            .await
            .expect("take over a lapsed lease");
        let err = pg
            .release_control(&acme, &pump, "alice")
            .await
            .expect_err("not alice's");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        pg.release_control(&acme, &pump, "bob")
            .await
            .expect("release");
        pg.release_control(&acme, &pump, "bob")
            .await
            .expect("releasing nothing is a no-op");
        assert_eq!(pg.get_control(&acme, &pump, t(0)).await.expect("get"), None);

        // Racing acquirers: exactly one holds it.
        let pg = Arc::new(pg);
        let mut tasks = Vec::new();
        for k in 0..10 {
            let pg = pg.clone();
            tasks.push(tokio::spawn(async move {
                pg.acquire_control(&tn("acme"), &d("pump-2"), &format!("c{k}"), t(1000), t(500))
                    .await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("join") {
                Ok(l) => winners.push(l.holder),
                Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict),
            }
        }
        assert_eq!(winners.len(), 1);
        let held = pg
            .get_control(&tn("acme"), &d("pump-2"), t(999))
            .await
            .expect("get")
            .expect("held");
        assert_eq!(held.holder, winners[0]);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

fn points(series: &str, device: &str, pts: &[(i64, f64)]) -> SeriesPoints {
    SeriesPoints {
        tenant: tn("acme"),
        device: d(device),
        series: sn(series),
        points: pts
            .iter()
            .map(|&(ts, value)| Point { ts: t(ts), value })
            .collect(),
    }
}

/// A small deterministic generator (no external randomness: failures reproduce).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn assert_buckets_close(pg: &[Bucket], mem: &[Bucket], what: &str) {
    assert_eq!(pg.len(), mem.len(), "{what}: bucket count");
    for (p, m) in pg.iter().zip(mem) {
        assert_eq!(
            (p.start, p.count, p.min, p.max, p.first, p.last),
            (m.start, m.count, m.min, m.max, m.first, m.last),
            "{what}"
        );
        let tol = 1e-9 * (1.0 + m.sum.abs());
        assert!(
            (p.sum - m.sum).abs() <= tol,
            "{what}: sum {} vs {}",
            p.sum,
            m.sum
        );
        assert!(
            (p.mean - m.mean).abs() <= 1e-9 * (1.0 + m.mean.abs()),
            "{what}: mean {} vs {}",
            p.mean,
            m.mean
        );
    }
}

#[tokio::test]
async fn appends_are_idempotent_and_count_duplicates() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        let mem = memory(StoreLimits::default());
        let batch: Vec<(i64, f64)> = (0..1000).map(|i| (BASE + i * 1000, i as f64)).collect();
        let stores: [&dyn MeasurementStore; 2] = [&pg, &mem];
        for s in stores {
            let out = s
                .append(&[points("temp", "pump-1", &batch)])
                .await
                .expect("append");
            assert_eq!(
                out,
                AppendOutcome {
                    inserted: 1000,
                    duplicates: 0
                }
            );
            let out = s
                .append(&[points("temp", "pump-1", &batch)])
                .await
                .expect("re-upload");
            assert_eq!(
                out,
                AppendOutcome {
                    inserted: 0,
                    duplicates: 1000
                }
            );
            // Overlap, a duplicate inside the batch (the first value wins), another series.
            let mixed = [
                points(
                    "temp",
                    "pump-1",
                    &[(BASE - 5, 1.0), (BASE, 99.0), (BASE - 5, 2.0)],
                ),
                points("humidity", "pump-1", &[(BASE, 40.0)]),
                points("temp", "pump-1", &[(BASE - 7, 3.0)]),
                points("empty", "pump-1", &[]),
            ];
            let out = s.append(&mixed).await.expect("mixed");
            assert_eq!(
                out,
                AppendOutcome {
                    inserted: 3,
                    duplicates: 2
                }
            );
            let first = s
                .read_range(
                    &tn("acme"),
                    &d("pump-1"),
                    &sn("temp"),
                    t(BASE - 10),
                    t(BASE + 1),
                    PageRequest::first(0),
                )
                .await
                .expect("read");
            assert_eq!(
                first.items,
                vec![
                    Point {
                        ts: t(BASE - 7),
                        value: 3.0
                    },
                    Point {
                        ts: t(BASE - 5),
                        value: 1.0
                    },
                    Point {
                        ts: t(BASE),
                        value: 0.0
                    },
                ]
            );
            let names = s
                .list_series(&tn("acme"), &d("pump-1"))
                .await
                .expect("series");
            assert_eq!(names, vec![sn("humidity"), sn("temp")]);
            assert_eq!(
                s.append(&[]).await.expect("empty"),
                AppendOutcome::default()
            );
        }
        // The rollups saw each stored point exactly once.
        let q = AggregateQuery {
            scope: AggregateScope::Device {
                tenant: tn("acme"),
                device: d("pump-1"),
            },
            series: sn("temp"),
            from: t(BASE - HOUR),
            to: t(BASE + HOUR),
            bucket: Duration::from_secs(3600),
        };
        let p = pg.aggregate(&q).await.expect("pg");
        let m = mem.aggregate(&q).await.expect("mem");
        assert_eq!(p.iter().map(|b| b.count).sum::<u64>(), 1002);
        assert_buckets_close(&p, &m, "after re-uploads");
    })
    .await;
}

#[tokio::test]
async fn aggregates_match_memory_on_both_paths() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        let mem = memory(StoreLimits::default());
        let devices = [
            ("pump-1", "acme/a"),
            ("pump-2", "acme/a/x"),
            ("pump-3", "acme/b"),
            ("pump-4", "acme/a"),
        ];
        registry_fixture(&pg, &devices).await;
        registry_fixture(&mem, &devices).await;
        let mut rng = Lcg(7);
        let mut batches = Vec::new();
        for (dev, _) in devices {
            let mut pts = Vec::new();
            for _ in 0..700 {
                // Six hours of data on a coarse 10 s grid, so devices share timestamps (ties).
                let ts = BASE + (rng.next() % (6 * 360)) as i64 * 10_000;
                let value = (rng.next() % 2001) as f64 / 8.0 - 125.0;
                pts.push((ts, value));
            }
            batches.push(points("temp", dev, &pts));
        }
        // Appended in several calls, so rollups are merged across calls.
        for chunk in batches.chunks(1) {
            let a = pg.append(chunk).await.expect("pg append");
            let b = mem.append(chunk).await.expect("mem append");
            assert_eq!(a, b);
        }
        // A point at the same time on two devices with different values: first/last tie-break.
        let tie = [
            points("temp", "pump-1", &[(BASE - 1, 5.0), (BASE + 6 * HOUR, 1.0)]),
            points("temp", "pump-4", &[(BASE - 1, 4.0), (BASE + 6 * HOUR, 2.0)]),
        ];
        assert_eq!(
            pg.append(&tie).await.expect("pg"),
            mem.append(&tie).await.expect("mem")
        );

        let scopes = [
            AggregateScope::Device {
                tenant: tn("acme"),
                device: d("pump-1"),
            },
            AggregateScope::Subtree { group: g("acme/a") },
            AggregateScope::Subtree { group: g("acme") },
            AggregateScope::Subtree { group: g("acme/b") },
            AggregateScope::Subtree {
                group: g("acme/zz"),
            },
        ];
        let ranges = [
            (BASE - HOUR, BASE + 7 * HOUR),         // hour-aligned
            (BASE - 1, BASE + 7 * HOUR),            // not aligned
            (BASE + 37_000, BASE + 5 * HOUR + 123), // not aligned
            (BASE + HOUR, BASE + 3 * HOUR),         // aligned, inside the data
        ];
        let widths = [
            Duration::from_secs(3600),
            Duration::from_secs(3 * 3600),
            Duration::from_secs(24 * 3600),
            Duration::from_secs(600),
            Duration::from_millis(7_777),
            // Wider than all time: one bucket at the epoch, on both paths.
            Duration::from_secs(3600 * 1_000_000_000),
            Duration::from_secs(u64::MAX),
        ];
        for scope in &scopes {
            for &(from, to) in &ranges {
                for &bucket in &widths {
                    let q = AggregateQuery {
                        scope: scope.clone(),
                        series: sn("temp"),
                        from: t(from),
                        to: t(to),
                        bucket,
                    };
                    let p = pg.aggregate(&q).await.expect("pg aggregate");
                    let m = mem.aggregate(&q).await.expect("mem aggregate");
                    assert_buckets_close(&p, &m, &format!("{scope:?} {from}..{to} {bucket:?}"));
                }
            }
        }
        // The tie rule itself.
        let q = AggregateQuery {
            scope: AggregateScope::Subtree { group: g("acme/a") },
            series: sn("temp"),
            from: t(BASE - HOUR),
            to: t(BASE + 7 * HOUR),
            bucket: Duration::from_secs(3600),
        };
        let p = pg.aggregate(&q).await.expect("pg");
        let before = p.first().expect("a bucket before BASE");
        assert_eq!(
            (before.start, before.first, before.last),
            (t(BASE - HOUR), 4.0, 5.0)
        );
        let after = p.last().expect("a bucket after the data");
        assert_eq!(
            (after.start, after.first, after.last),
            (t(BASE + 6 * HOUR), 1.0, 2.0)
        );

        // The rollup path (hour-aligned) and the raw path (a range that is not hour-aligned
        // but holds the same points) agree.
        let rollup = pg.aggregate(&q).await.expect("rollup path");
        let raw_q = AggregateQuery {
            from: t(BASE - HOUR + 1),
            ..q.clone()
        };
        // No point lies in the first millisecond of that hour.
        let raw = pg.aggregate(&raw_q).await.expect("raw path");
        assert_buckets_close(&rollup, &raw, "rollup vs raw");

        // A device moved out of the subtree leaves its aggregates.
        for s in [&pg as &dyn RegistryStore, &mem] {
            s.move_device(&tn("acme"), &d("pump-4"), &g("acme/b"), t(9))
                .await
                .expect("move");
        }
        let p = pg.aggregate(&q).await.expect("pg");
        let m = mem.aggregate(&q).await.expect("mem");
        assert_buckets_close(&p, &m, "after move");

        // Retention: whole hours before the cut-off, on points and rollups alike.
        for before in [
            BASE + 2 * HOUR + 1234,
            BASE + 2 * HOUR + 1234,
            BASE + 4 * HOUR,
        ] {
            let a = pg.delete_before(t(before)).await.expect("pg delete");
            let b = mem.delete_before(t(before)).await.expect("mem delete");
            assert_eq!(a, b);
            for scope in &scopes {
                for &(from, to) in &ranges {
                    let q = AggregateQuery {
                        scope: scope.clone(),
                        series: sn("temp"),
                        from: t(from),
                        to: t(to),
                        bucket: Duration::from_secs(3600),
                    };
                    let p = pg.aggregate(&q).await.expect("pg");
                    let m = mem.aggregate(&q).await.expect("mem");
                    assert_buckets_close(&p, &m, &format!("after delete_before {before}"));
                }
            }
        }
        assert!(pg.delete_before(t(BASE + 100 * HOUR)).await.expect("all") > 0);
        assert_eq!(
            pg.list_series(&tn("acme"), &d("pump-1"))
                .await
                .expect("series"),
            vec![]
        );
    })
    .await;
}

#[tokio::test]
async fn bad_measurement_input_stores_nothing() {
    let limits = StoreLimits {
        max_points_per_append: 10,
        max_buckets: 100,
        ..StoreLimits::default()
    };
    with_store(limits, move |pg, _, _| async move {
        let good = points("temp", "pump-1", &[(BASE, 1.0)]);
        for bad_value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let batch = [good.clone(), points("temp", "pump-2", &[(BASE, bad_value)])];
            let err = pg.append(&batch).await.expect_err("non-finite");
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
        let many: Vec<(i64, f64)> = (0..11).map(|i| (BASE + i, 0.0)).collect();
        let err = pg
            .append(&[points("temp", "pump-1", &many)])
            .await
            .expect_err("too many");
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        for dev in ["pump-1", "pump-2"] {
            assert_eq!(
                pg.list_series(&tn("acme"), &d(dev)).await.expect("series"),
                vec![]
            );
            let page = pg
                .read_range(
                    &tn("acme"),
                    &d(dev),
                    &sn("temp"),
                    t(0),
                    t(BASE + HOUR),
                    PageRequest::first(0),
                )
                .await
                .expect("read");
            assert!(page.items.is_empty());
        }
        let q = |from: i64, to: i64, bucket: Duration| AggregateQuery {
            scope: AggregateScope::Device {
                tenant: tn("acme"),
                device: d("pump-1"),
            },
            series: sn("temp"),
            from: t(from),
            to: t(to),
            bucket,
        };
        for query in [
            q(BASE, BASE, Duration::from_secs(1)),
            q(BASE + 1, BASE, Duration::from_secs(1)),
            q(BASE, BASE + 1, Duration::ZERO),
            q(BASE, BASE + HOUR, Duration::from_secs(1)),
        ] {
            let err = pg.aggregate(&query).await.expect_err("bad query");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{query:?}");
        }
        let err = pg
            .read_range(
                &tn("acme"),
                &d("pump-1"),
                &sn("temp"),
                t(5),
                t(5),
                PageRequest::first(0),
            )
            .await
            .expect_err("empty range");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let err = pg
            .read_range(
                &tn("acme"),
                &d("pump-1"),
                &sn("temp"),
                t(0),
                t(5),
                PageRequest {
                    limit: 1,
                    after: Some("x".into()),
                },
            )
            .await
            .expect_err("bad cursor");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    })
    .await;
}

#[tokio::test]
async fn bad_device_attributes_store_nothing() {
    let limits = StoreLimits {
        max_attributes_bytes: 32,
        ..StoreLimits::default()
    };
    with_store(limits, move |pg, _, _| async move {
        registry_fixture(&pg, &[("pump-1", "acme/a")]).await;
        for (attrs, expected) in [
            (serde_json::json!([1, 2]), ErrorKind::InvalidInput),
            (serde_json::json!("text"), ErrorKind::InvalidInput),
            (serde_json::json!(null), ErrorKind::InvalidInput),
            (
                serde_json::json!({"k": "v".repeat(64)}),
                ErrorKind::TooLarge,
            ),
        ] {
            let err = pg
                .create_device(
                    NewDevice {
                        id: d("pump-9"),
                        group: g("acme/a"),
                        display_name: String::new(),
                        attributes: attrs.clone(),
                    },
                    t(5),
                )
                .await
                .expect_err("refused");
            assert_eq!(err.kind(), expected);
            assert_eq!(
                pg.get_device(&tn("acme"), &d("pump-9")).await.expect("get"),
                None
            );
            let err = pg
                .update_device(
                    &tn("acme"),
                    &d("pump-1"),
                    DevicePatch {
                        attributes: Some(attrs),
                        ..DevicePatch::default()
                    },
                    None,
                    t(6),
                )
                .await
                .expect_err("refused");
            assert_eq!(err.kind(), expected);
            let stored = pg
                .get_device(&tn("acme"), &d("pump-1"))
                .await
                .expect("get")
                .expect("exists");
            assert_eq!(
                (stored.version, stored.attributes),
                (1, serde_json::json!({}))
            );
        }
        // JSON reads back exactly as written, including characters jsonb would refuse.
        let attrs = serde_json::json!({"z": 1, "a": "\u{0}", "m": 1.5});
        let created = pg
            .update_device(
                &tn("acme"),
                &d("pump-1"),
                DevicePatch {
                    attributes: Some(attrs.clone()),
                    ..DevicePatch::default()
                },
                Some(1),
                t(7),
            )
            .await
            .expect("update");
        assert_eq!(created.attributes, attrs);
        let read = pg
            .get_device(&tn("acme"), &d("pump-1"))
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(read.attributes, attrs);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pagination_walks_every_item_exactly_once() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        // Points: 1000 over an hour, pages of 7.
        let pts: Vec<(i64, f64)> = (0..1000).map(|i| (BASE + i * 3, i as f64)).collect();
        pg.append(&[points("temp", "pump-1", &pts)])
            .await
            .expect("append");
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = pg
                .read_range(
                    &tn("acme"),
                    &d("pump-1"),
                    &sn("temp"),
                    t(BASE + 3),
                    t(BASE + 2998),
                    PageRequest {
                        limit: 7,
                        after: after.clone(),
                    },
                )
                .await
                .expect("page");
            assert!(page.items.len() <= 7);
            seen.extend(page.items.iter().map(|p| (p.ts.as_millis(), p.value)));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let expected: Vec<(i64, f64)> = pts
            .iter()
            .copied()
            .filter(|&(ts, _)| (BASE + 3..BASE + 2998).contains(&ts))
            .collect();
        assert_eq!(seen, expected);

        // Devices: 25 in a subtree (case matters in the order), 5 outside, pages of 4.
        let mut devices: Vec<(String, &str)> = Vec::new();
        for i in 0..25 {
            let id = if i % 2 == 0 {
                format!("dev-{i:02}")
            } else {
                format!("Dev-{i:02}")
            };
            devices.push((id, if i % 3 == 0 { "acme/a/x" } else { "acme/a" }));
        }
        for i in 0..5 {
            devices.push((format!("b-{i}"), "acme/b"));
        }
        let refs: Vec<(&str, &str)> = devices.iter().map(|(i, g)| (i.as_str(), *g)).collect();
        registry_fixture(&pg, &refs).await;
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = pg
                .list_devices(
                    &g("acme/a"),
                    None,
                    PageRequest {
                        limit: 4,
                        after: after.clone(),
                    },
                )
                .await
                .expect("page");
            seen.extend(page.items.iter().map(|d| d.id.to_string()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        let mut expected: Vec<String> = devices
            .iter()
            .filter(|(_, g)| g.starts_with("acme/a"))
            .map(|(i, _)| i.clone())
            .collect();
        expected.sort(); // byte order: upper case first
        assert_eq!(seen, expected);

        // Jobs: 30 over the subtree, pages of 7, ordered by id.
        let mut ids = Vec::new();
        for i in 0..30i64 {
            let mut j = new_job("dev-00", 5000 + i / 3, None);
            if i % 5 == 0 {
                j.group = g("acme/b");
            }
            let out = pg.create_job(j).await.expect("job");
            if i % 5 != 0 {
                ids.push(out.job.id);
            }
        }
        ids.sort();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = pg
                .list_jobs(
                    &g("acme/a"),
                    &JobFilter::default(),
                    PageRequest {
                        limit: 7,
                        after: after.clone(),
                    },
                )
                .await
                .expect("page");
            seen.extend(page.items.iter().map(|j| j.id));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, ids);
        let counts = pg
            .count_jobs(&g("acme/a"), &JobFilter::default())
            .await
            .expect("count");
        assert_eq!(counts, BTreeMap::from([(JobState::Queued, 24)]));
    })
    .await;
}

#[tokio::test]
async fn large_batches_insert_in_one_call() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        // 20 batches of 1,000 points over 10 series; every point is new, then all are
        // duplicates.
        let mut total = 0;
        for round in 0..2 {
            for b in 0..20i64 {
                let batch: Vec<SeriesPoints> = (0..10)
                    .map(|s| {
                        let pts: Vec<(i64, f64)> = (0..100)
                            .map(|i| (BASE + b * 100_000 + i * 10, (s * i) as f64))
                            .collect();
                        points(&format!("s{s}"), "pump-1", &pts)
                    })
                    .collect();
                let out = pg.append(&batch).await.expect("append");
                if round == 0 {
                    assert_eq!(
                        out,
                        AppendOutcome {
                            inserted: 1000,
                            duplicates: 0
                        }
                    );
                    total += out.inserted;
                } else {
                    assert_eq!(
                        out,
                        AppendOutcome {
                            inserted: 0,
                            duplicates: 1000
                        }
                    );
                }
            }
        }
        assert_eq!(total, 20_000);
        let q = AggregateQuery {
            scope: AggregateScope::Device {
                tenant: tn("acme"),
                device: d("pump-1"),
            },
            series: sn("s3"),
            from: t(BASE),
            to: t(BASE + HOUR),
            bucket: Duration::from_secs(3600),
        };
        let buckets = pg.aggregate(&q).await.expect("aggregate");
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].count, 2000);
        assert_eq!(buckets[0].sum, 20.0 * 3.0 * (0..100).sum::<i64>() as f64);
    })
    .await;
}

#[tokio::test]
async fn concurrent_overlapping_appends_store_each_point_once() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        let pg = Arc::new(pg);
        let mut tasks = Vec::new();
        for task in 0..8i64 {
            let pg = pg.clone();
            tasks.push(tokio::spawn(async move {
                // Every task sends the same shared points (in a task-specific order, over two
                // series) plus points of its own.
                let mut shared: Vec<(i64, f64)> =
                    (0..300).map(|i| (BASE + i * 20_000, i as f64)).collect();
                if task % 2 == 1 {
                    shared.reverse();
                }
                let own: Vec<(i64, f64)> = (0..50)
                    .map(|i| (BASE + i * 20_000 + 1 + task, -(task as f64)))
                    .collect();
                let batch = [
                    points("temp", "pump-1", &shared),
                    points("rpm", "pump-1", &shared),
                    points("temp", "pump-1", &own),
                ];
                pg.append(&batch).await
            }));
        }
        let mut inserted = 0;
        let mut duplicates = 0;
        for task in tasks {
            let out = task.await.expect("join").expect("append");
            assert_eq!(out.inserted + out.duplicates, 650);
            inserted += out.inserted;
            duplicates += out.duplicates;
        }
        assert_eq!(inserted, 600 + 8 * 50);
        assert_eq!(duplicates, 8 * 650 - inserted);
        // The rollups count every stored point once, and agree with the raw points.
        let q = AggregateQuery {
            scope: AggregateScope::Device {
                tenant: tn("acme"),
                device: d("pump-1"),
            },
            series: sn("temp"),
            from: t(BASE - HOUR),
            to: t(BASE + 3 * HOUR),
            bucket: Duration::from_secs(3600),
        };
        let rollup = pg.aggregate(&q).await.expect("rollup path");
        assert_eq!(rollup.iter().map(|b| b.count).sum::<u64>(), 300 + 8 * 50);
        let raw = pg
            .aggregate(&AggregateQuery {
                from: t(BASE - 1),
                ..q
            })
            .await
            .expect("raw path");
        assert_buckets_close(&rollup, &raw, "after concurrent appends");
    })
    .await;
}

#[tokio::test]
async fn hour_aligned_queries_read_the_rollups() {
    with_store(StoreLimits::default(), |pg, url, schema| async move {
        let pts: Vec<(i64, f64)> = (0..120).map(|i| (BASE + i * 60_000, i as f64)).collect();
        pg.append(&[points("temp", "pump-1", &pts)])
            .await
            .expect("append");
        let q = AggregateQuery {
            scope: AggregateScope::Device {
                tenant: tn("acme"),
                device: d("pump-1"),
            },
            series: sn("temp"),
            from: t(BASE),
            to: t(BASE + 2 * HOUR),
            bucket: Duration::from_secs(2 * 3600),
        };
        let before = pg.aggregate(&q).await.expect("aggregate");
        assert_eq!(before.len(), 1);
        assert_eq!(
            (
                before[0].count,
                before[0].min,
                before[0].max,
                before[0].first,
                before[0].last
            ),
            (120, 0.0, 119.0, 0.0, 119.0)
        );
        assert_eq!(before[0].sum, (0..120).sum::<i64>() as f64);
        // Remove the raw points behind the store's back: whole hours still answer from the
        // rollups; the partial hour at the end of an unaligned range and sub-hour buckets read
        // the (now missing) points.
        let raw = raw_client(&url, &schema).await;
        raw.execute("DELETE FROM points", &[])
            .await
            .expect("delete points");
        assert_eq!(pg.aggregate(&q).await.expect("rollup path"), before);
        let unaligned = AggregateQuery {
            to: t(BASE + 2 * HOUR - 1),
            ..q.clone()
        };
        let mixed = pg.aggregate(&unaligned).await.expect("mixed path");
        assert_eq!(mixed.len(), 1);
        assert_eq!(
            (mixed[0].count, mixed[0].min, mixed[0].max, mixed[0].last),
            (60, 0.0, 59.0, 59.0),
            "only the first, whole hour comes from the rollups"
        );
        let minutes = AggregateQuery {
            bucket: Duration::from_secs(60),
            ..q
        };
        assert_eq!(pg.aggregate(&minutes).await.expect("raw path"), vec![]);
    })
    .await;
}

#[tokio::test]
async fn text_postgres_cannot_store_is_invalid_input_and_stores_nothing() {
    with_store(StoreLimits::default(), |pg, _, _| async move {
        // PostgreSQL text cannot hold U+0000; the in-memory store would keep it. The backend
        // refuses it as bad input instead of failing internally.
        let err = pg
            .create_tenant(&tn("acme"), "Ac\u{0}me", t(1))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(pg.get_group(&g("acme")).await.expect("get"), None);
        let mut job = new_job("pump-1", 10, Some("key\u{0}"));
        let err = pg.create_job(job.clone()).await.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        job.idempotency_key = None;
        let created = pg.create_job(job).await.expect("create");
        assert_eq!(created.job.seq, 1, "the refused job consumed no seq");
    })
    .await;
}

#[tokio::test]
async fn config_versions_are_race_free_across_nodes() {
    use hub_store::{ConfigKind, ConfigStore};
    with_store(StoreLimits::default(), |node_a, url, schema| async move {
        // A second hub node on the same database.
        let node_b = PostgresStore::connect(config(&url, &schema, StoreLimits::default()))
            .await
            .expect("second node");
        let nodes: Vec<Arc<dyn ConfigStore>> = vec![Arc::new(node_a), Arc::new(node_b)];
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let node = nodes[i as usize % 2].clone();
            tasks.push(tokio::spawn(async move {
                node.put(
                    &tn("acme"),
                    &d("pump-1"),
                    ConfigKind::Reported,
                    serde_json::json!({ "i": i }),
                    "device:pump-1",
                    None,
                    t(BASE),
                )
                .await
            }));
        }
        let mut versions = BTreeSet::new();
        for task in tasks {
            versions.insert(
                task.await
                    .expect("join")
                    .expect("unconditional put")
                    .version,
            );
        }
        assert_eq!(versions, (1..=16).collect::<BTreeSet<u64>>());

        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let node = nodes[i as usize % 2].clone();
            tasks.push(tokio::spawn(async move {
                node.put(
                    &tn("acme"),
                    &d("pump-1"),
                    ConfigKind::Reported,
                    serde_json::json!({ "cas": i }),
                    "device:pump-1",
                    Some(16),
                    t(BASE),
                )
                .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.expect("join") {
                Ok(doc) => {
                    assert_eq!(doc.version, 17);
                    won += 1;
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{e}"),
            }
        }
        assert_eq!(won, 1, "exactly one compare-and-set wins across the nodes");
    })
    .await;
}

#[tokio::test]
async fn a_schema_from_before_the_audit_log_is_migrated() {
    use hub_store::{AuditQuery, AuditStore, PageRequest};
    with_store(StoreLimits::default(), |store, url, schema| async move {
        store
            .create_tenant(&tn("acme"), "Acme", t(1))
            .await
            .expect("tenant");
        let raw = raw_client(&url, &schema).await;
        // 2 is the version just before the audit/config migration (3), which the identity
        // migration (4) follows; keep this so if migrations are renumbered.
        raw.batch_execute(
            "DROP TABLE audit_log; DROP TABLE config_documents; DROP TABLE refresh_tokens; \
             DROP TABLE grants; DROP TABLE oauth_clients; DROP TABLE users; \
             DROP TABLE artifact_chunks; DROP TABLE artifacts; \
             DROP TABLE bulk_targets; DROP TABLE bulk_jobs; \
             UPDATE schema_version SET version = 2",
        )
        .await
        .expect("downgrade to version 2");
        let upgraded = PostgresStore::connect(config(&url, &schema, StoreLimits::default()))
            .await
            .expect("reopen migrates");
        let versions: Vec<i32> = raw
            .query("SELECT version FROM schema_version", &[])
            .await
            .expect("version")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, vec![SCHEMA_VERSION]);
        let group = upgraded.get_group(&g("acme")).await.expect("read");
        assert!(group.is_some(), "old data survives");
        let rec = AuditStore::record(
            &upgraded,
            hub_store::NewAuditRecord {
                at: t(BASE),
                tenant: tn("acme"),
                actor: "user:ann".into(),
                action: "group.create".into(),
                resource: "group:acme".into(),
                group: g("acme"),
                outcome: hub_store::AuditOutcome::Allowed,
                details: serde_json::json!(null),
            },
        )
        .await
        .expect("append after migrating");
        let page = upgraded
            .query(&AuditQuery::subtree(g("acme")), PageRequest::first(5))
            .await
            .expect("query");
        assert_eq!(page.items, vec![rec]);
    })
    .await;
}

#[tokio::test]
async fn a_schema_from_before_the_identity_tables_is_upgraded_in_place() {
    with_store(StoreLimits::default(), |store, url, schema| async move {
        store
            .create_tenant(&tn("acme"), "Acme", t(5))
            .await
            .expect("tenant");
        // Turn it back into the schema of the release before: the identity migration is
        // followed by the artifacts and bulk job migrations, so drop the tables of all three
        // and step the version back by three.
        let raw = raw_client(&url, &schema).await;
        raw.batch_execute(
            "DROP TABLE users, oauth_clients, grants, refresh_tokens, artifact_chunks, artifacts, \
             bulk_targets, bulk_jobs; \
             UPDATE schema_version SET version = version - 3;",
        )
        .await
        .expect("downgrade");
        let upgraded = PostgresStore::connect(config(&url, &schema, StoreLimits::default()))
            .await
            .expect("the upgrade succeeds");
        assert_eq!(
            upgraded
                .get_group(&g("acme"))
                .await
                .expect("get_group")
                .map(|x| x.created_at),
            Some(t(5)),
            "the upgrade keeps existing data"
        );
        let user = upgraded
            .create_user(
                hub_store::NewUser {
                    id: "erin".parse().expect("user id"),
                    group: g("acme"),
                    display_name: "Erin".into(),
                    email: None,
                    role: hub_core::Role::Admin,
                },
                t(6),
            )
            .await
            .expect("the identity tables exist after the upgrade");
        assert_eq!(user.version, 1);
        let rows = raw
            .query("SELECT version FROM schema_version", &[])
            .await
            .expect("version");
        let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(versions, vec![SCHEMA_VERSION]);
    })
    .await;
}
