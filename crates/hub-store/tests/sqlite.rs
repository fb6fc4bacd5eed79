//! SQLite-specific behaviour: durability across a SIGKILL, group commit, migrations, backup.
//! The generic contract is checked by the conformance kit (`tests/conformance_sqlite.rs`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use hub_core::{DeviceId, ErrorKind, JobId, JobState, Timestamp};
use hub_store::sqlite::{SqliteConfig, SqliteStore};
use hub_store::{
    Durability, JobStore, MeasurementStore, NewJob, Point, RegistryStore, SeriesName, SeriesPoints,
    StoreLimits,
};

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

fn new_job(device: &str, n: u32) -> NewJob {
    NewJob {
        id: JobId::new(t(1_700_000_000_000 + i64::from(n))),
        tenant: "acme".parse().unwrap(),
        device: device.parse().unwrap(),
        group: "acme".parse().unwrap(),
        lane: "default".into(),
        state: JobState::Queued,
        document: serde_json::json!({ "n": n }),
        options: serde_json::json!({}),
        idempotency_key: Some(format!("key-{device}-{n}")),
        created_by: "test".into(),
        bulk: None,
        created_at: t(1_700_000_000_000),
        due_at: None,
    }
}

fn batch(device: &str, round: i64) -> Vec<SeriesPoints> {
    vec![SeriesPoints {
        tenant: "acme".parse().unwrap(),
        device: device.parse().unwrap(),
        series: SeriesName::new("temp").unwrap(),
        points: (0..100)
            .map(|i| Point {
                ts: t(round * 1000 + i),
                value: i as f64,
            })
            .collect(),
    }]
}

const CHILD_ENV: &str = "HUB_STORE_CRASH_CHILD_DB";

/// Not a test of its own: the child process of `acknowledged_writes_survive_sigkill`. It writes
/// jobs and measurement batches concurrently, printing what was acknowledged, until killed.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = SqliteStore::open(SqliteConfig::new(path)).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for w in 0..8u32 {
            let store = store.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let device = format!("dev-{w}");
                    if n % 2 == 0 {
                        let out = store.create_job(new_job(&device, n)).await.unwrap();
                        tx.send(format!("job {} {}", out.job.id, out.job.seq))
                            .unwrap();
                    } else {
                        store.append(&batch(&device, i64::from(n))).await.unwrap();
                        tx.send(format!("points {device} {n}")).unwrap();
                    }
                }
            });
        }
        drop(tx);
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acked: Vec<String> = tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.starts_with("job ") || line.starts_with("points ") {
                acked.push(line);
            }
            if acked.len() >= 3000 {
                break;
            }
        }
        acked
    })
    .await
    .unwrap();
    // SIGKILL mid-write: the writers are still running flat out.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        acked.len() >= 3000,
        "the child stopped early: {}",
        acked.len()
    );

    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    let tenant = "acme".parse().unwrap();
    for line in &acked {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[0] {
            "job" => {
                let id: JobId = parts[1].parse().unwrap();
                let job = store.get_job(&tenant, &id).await.unwrap();
                let job = job.unwrap_or_else(|| panic!("acknowledged job {id} was lost"));
                assert_eq!(job.seq.to_string(), parts[2]);
            }
            _ => {
                let device: DeviceId = parts[1].parse().unwrap();
                let n: i64 = parts[2].parse().unwrap();
                let page = store
                    .read_range(
                        &tenant,
                        &device,
                        &SeriesName::new("temp").unwrap(),
                        t(n * 1000),
                        t(n * 1000 + 100),
                        hub_store::PageRequest::first(1000),
                    )
                    .await
                    .unwrap();
                assert_eq!(page.items.len(), 100, "batch {n} of {device} was lost");
            }
        }
    }
    // Nothing half-written: every stored batch is whole, and the rollups agree with the points.
    for w in 0..8 {
        let device: DeviceId = format!("dev-{w}").parse().unwrap();
        let all = read_all(&store, &device).await;
        let mut per_batch = std::collections::BTreeMap::<i64, usize>::new();
        for p in &all {
            *per_batch.entry(p.ts.as_millis() / 1000).or_default() += 1;
        }
        assert!(
            per_batch.values().all(|&c| c == 100),
            "a torn batch: {per_batch:?}"
        );
        let stats = store
            .aggregate(&hub_store::AggregateQuery {
                scope: hub_store::AggregateScope::Device {
                    tenant: tenant.clone(),
                    device: device.clone(),
                },
                series: SeriesName::new("temp").unwrap(),
                from: t(0),
                to: t(3_600_000 * 3),
                bucket: std::time::Duration::from_secs(3600 * 3),
            })
            .await
            .unwrap();
        let counted: u64 = stats.iter().map(|b| b.count).sum();
        assert_eq!(counted as usize, all.len(), "rollups disagree with points");
    }
}

/// Every point of a device's `temp` series, page by page.
async fn read_all(store: &SqliteStore, device: &DeviceId) -> Vec<Point> {
    let mut all = Vec::new();
    let mut page = hub_store::PageRequest::first(0);
    loop {
        let got = store
            .read_range(
                &"acme".parse().unwrap(),
                device,
                &SeriesName::new("temp").unwrap(),
                t(0),
                t(100_000_000),
                page.clone(),
            )
            .await
            .unwrap();
        all.extend(got.items);
        match got.next {
            Some(next) => page.after = Some(next),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_share_commits_and_all_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("hub.db")))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..16u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..50 {
                let out = store
                    .create_job(new_job("shared", w * 1000 + n))
                    .await
                    .unwrap();
                seqs.push(out.job.seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=800).collect::<Vec<u64>>(),
        "seqs are distinct and contiguous"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_request_does_not_spoil_its_commit_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(SqliteConfig::new(dir.path().join("hub.db")))
            .await
            .unwrap(),
    );
    store
        .create_tenant(&"acme".parse().unwrap(), "Acme", t(0))
        .await
        .unwrap();
    // Half of these fail (duplicate group), racing the other half into the same commits.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("acme/g-{}", i / 2).parse().unwrap();
            store.create_group(&path, "g", t(0)).await.map(|_| ())
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict),
        }
    }
    assert_eq!(ok, 32);
    let page = store
        .list_groups(&"acme".parse().unwrap(), hub_store::PageRequest::first(0))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 33);
}

#[tokio::test]
async fn data_survives_reopen_and_newer_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/hub.db");
    {
        let store = SqliteStore::open(SqliteConfig {
            durability: Durability::PowerLoss,
            ..SqliteConfig::new(&path)
        })
        .await
        .unwrap();
        store
            .create_tenant(&"acme".parse().unwrap(), "Acme", t(5))
            .await
            .unwrap();
    }
    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    let g = store.get_group(&"acme".parse().unwrap()).await.unwrap();
    assert_eq!(g.unwrap().created_at, t(5));
    drop(store);

    rusqlite_user_version(&path, 999);
    let err = SqliteStore::open(SqliteConfig::new(&path))
        .await
        .unwrap_err();
    assert!(
        err.detail().contains("newer than this hub supports"),
        "{err}"
    );
}

fn rusqlite_user_version(path: &std::path::Path, v: i64) {
    // Simulate a database written by a newer hub.
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "user_version", v).unwrap();
}

#[tokio::test]
async fn online_backup_restores_to_a_working_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("hub.db")))
        .await
        .unwrap();
    store.append(&batch("pump", 1)).await.unwrap();
    let backup = dir.path().join("backup.db");
    store.backup_to(&backup).await.unwrap();
    assert_eq!(
        store.backup_to(&backup).await.unwrap_err().kind(),
        ErrorKind::Conflict,
        "an existing file is never overwritten"
    );
    store.append(&batch("pump", 2)).await.unwrap();

    let restored = SqliteStore::open(SqliteConfig {
        limits: StoreLimits::default(),
        ..SqliteConfig::new(&backup)
    })
    .await
    .unwrap();
    let all = restored
        .read_range(
            &"acme".parse().unwrap(),
            &"pump".parse().unwrap(),
            &SeriesName::new("temp").unwrap(),
            t(0),
            t(1_000_000),
            hub_store::PageRequest::first(0),
        )
        .await
        .unwrap();
    assert_eq!(
        all.items.len(),
        100,
        "the backup holds what was written before it"
    );
    let out = restored.append(&batch("pump", 2)).await.unwrap();
    assert_eq!(out.inserted, 100, "the restored store takes writes");
}

fn audit_record(at: i64) -> hub_store::NewAuditRecord {
    hub_store::NewAuditRecord {
        at: t(at),
        tenant: "acme".parse().unwrap(),
        actor: "user:ann".into(),
        action: "device.update".into(),
        resource: "device:acme/pump-7".into(),
        group: "acme/plant-1".parse().unwrap(),
        outcome: hub_store::AuditOutcome::Allowed,
        details: serde_json::json!({ "at": at }),
    }
}

#[tokio::test]
async fn a_database_from_before_the_audit_log_is_migrated_and_keeps_its_data() {
    use hub_store::{AuditQuery, AuditStore, ConfigKind, ConfigStore, PageRequest};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    {
        let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
        store
            .create_tenant(&"acme".parse().unwrap(), "Acme", t(5))
            .await
            .unwrap();
    }
    {
        // Turn the file back into what the previous release wrote: schema version 1, without
        // the tables the audit/config migration (2) and the identity migration after it add
        // (keep this so if migrations are renumbered).
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE audit_log; DROP TABLE config_documents; DROP TABLE users; \
             DROP TABLE oauth_clients; DROP TABLE grants; DROP TABLE refresh_tokens; \
             DROP TABLE artifacts; DROP TABLE bulk_jobs; DROP TABLE bulk_targets;",
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    let g = store.get_group(&"acme".parse().unwrap()).await.unwrap();
    assert_eq!(g.map(|g| g.created_at), Some(t(5)), "old data survives");
    let rec = AuditStore::record(&store, audit_record(10)).await.unwrap();
    let page = store
        .query(
            &AuditQuery::subtree("acme".parse().unwrap()),
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(page.items, vec![rec]);
    let doc = store
        .put(
            &"acme".parse().unwrap(),
            &"pump-7".parse().unwrap(),
            ConfigKind::Desired,
            serde_json::json!({ "rate": 5 }),
            "user:ann",
            Some(0),
            t(11),
        )
        .await
        .unwrap();
    assert_eq!(doc.version, 1);
}

#[tokio::test]
async fn audit_ids_are_not_reused_after_retention_and_reopen() {
    use hub_store::AuditStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let mut last = 0;
    {
        let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
        for i in 0..3 {
            last = AuditStore::record(&store, audit_record(100 + i))
                .await
                .unwrap()
                .id;
        }
        let removed = AuditStore::prune_before(&store, None, t(1_000))
            .await
            .unwrap();
        assert_eq!(removed, 3);
    }
    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    let next = AuditStore::record(&store, audit_record(2_000))
        .await
        .unwrap();
    assert!(
        next.id > last,
        "an emptied and reopened log must not hand out id {} again (last was {last})",
        next.id
    );
}

#[tokio::test]
async fn a_database_from_before_the_identity_tables_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    {
        let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
        store
            .create_tenant(&"acme".parse().unwrap(), "Acme", t(5))
            .await
            .unwrap();
    }
    // Turn it back into the database of the release before: the identity migration is
    // followed by the artifacts and bulk job migrations, so drop the tables of all three and
    // step user_version back by three.
    let current: i64 = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        conn.execute_batch(
            "DROP TABLE users; DROP TABLE oauth_clients; DROP TABLE grants; \
             DROP TABLE refresh_tokens; DROP TABLE artifacts; DROP TABLE bulk_jobs; \
             DROP TABLE bulk_targets;",
        )
        .unwrap();
        conn.pragma_update(None, "user_version", v - 3).unwrap();
        v
    };
    let store = SqliteStore::open(SqliteConfig::new(&path)).await.unwrap();
    assert_eq!(
        store
            .get_group(&"acme".parse().unwrap())
            .await
            .unwrap()
            .map(|g| g.created_at),
        Some(t(5)),
        "the upgrade keeps existing data"
    );
    let user = store
        .create_user(
            hub_store::NewUser {
                id: "erin".parse().unwrap(),
                group: "acme".parse().unwrap(),
                display_name: "Erin".into(),
                email: None,
                role: hub_core::Role::Admin,
            },
            t(6),
        )
        .await
        .unwrap();
    assert_eq!(
        user.version, 1,
        "the identity tables exist after the upgrade"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, current, "user_version is back at the current version");
}
