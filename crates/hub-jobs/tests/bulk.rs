//! Bulk jobs over every backend (memory, SQLite, and PostgreSQL with `HUB_TEST_POSTGRES_URL`),
//! driven by a manual clock: rates, growth, abort criteria, continuous jobs, windows, summaries,
//! cancellation, tenant isolation and racing ticks.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hub_core::{BulkJobId, ErrorKind, JobState, ManualClock, Principal, RecordedEvents, Timestamp};
use hub_jobs::bulk::{AbortCriterion, FailureType, Rate, Rollout, Window};
use hub_jobs::{
    BulkJob, BulkJobs, Command, CreateBulkJob, DeliveryPolicy, JobOptions, JobService, Targets,
};
use hub_store::memory::MemoryStore;
use hub_store::postgres::{PostgresConfig, PostgresStore};
use hub_store::sqlite::{SqliteConfig, SqliteStore};
use hub_store::{BulkJobState, JobFilter, JobRecord, NewDevice, PageRequest, StoreLimits, Stores};
use serde_json::json;

use common::{Elapsed, FakePresence, Notices, acme, alice, dev, device, group, user};

const T0: i64 = 1_800_000_000_000;

struct Bulk {
    stores: Stores,
    svc: JobService,
    bulk: BulkJobs,
    clock: ManualClock,
    presence: Arc<FakePresence>,
}

async fn bulk_on(stores: Stores) -> Bulk {
    let reg = stores.registry.clone();
    let t = Timestamp::EPOCH;
    for tenant in ["acme", "globex"] {
        reg.create_tenant(&tenant.parse().unwrap(), "t", t)
            .await
            .unwrap();
    }
    for g in ["acme/fleet", "acme/fleet/sub", "acme/other", "globex/fleet"] {
        reg.create_group(&group(g), "g", t).await.unwrap();
    }
    let clock = ManualClock::new(Timestamp::from_millis(T0).unwrap());
    let presence = Arc::new(FakePresence::default());
    let svc = JobService::new(
        stores.jobs.clone(),
        stores.registry.clone(),
        Arc::new(Notices::default()),
        presence.clone(),
        Arc::new(RecordedEvents::new()),
        Arc::new(clock.clone()),
    )
    .with_sleep(Arc::new(Elapsed));
    let bulk = BulkJobs::new(
        stores.bulk.clone(),
        stores.jobs.clone(),
        stores.registry.clone(),
        svc.clone(),
        Arc::new(clock.clone()),
    );
    Bulk {
        stores,
        svc,
        bulk,
        clock,
        presence,
    }
}

impl Bulk {
    async fn add(&self, g: &str, ids: &[&str]) {
        for id in ids {
            self.stores
                .registry
                .create_device(
                    NewDevice {
                        id: dev(id),
                        group: group(g),
                        display_name: String::new(),
                        attributes: json!({}),
                    },
                    Timestamp::EPOCH,
                )
                .await
                .unwrap();
        }
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    async fn tick(&self) {
        self.bulk.tick().await.unwrap();
    }

    async fn children(&self, id: BulkJobId) -> Vec<JobRecord> {
        let filter = JobFilter {
            bulk: Some(id),
            ..JobFilter::default()
        };
        self.stores
            .jobs
            .list_jobs(&group("acme"), &filter, PageRequest::first(0))
            .await
            .unwrap()
            .items
    }

    async fn counts(&self, id: BulkJobId) -> BTreeMap<JobState, u64> {
        self.bulk
            .summary(&alice(), &acme(), &id)
            .await
            .unwrap()
            .children
    }

    /// The device of `job` claims and finishes it with `cmd`.
    async fn finish(&self, job: &JobRecord, cmd: Command) {
        let me = device(job.device.as_str(), job.group.as_str());
        let got = self
            .svc
            .claim_next(&me, None)
            .await
            .unwrap()
            .expect("the child is claimable");
        assert_eq!(got.id, job.id);
        let started = self
            .svc
            .report(&me, &got.id, got.execution, Command::Start)
            .await
            .unwrap();
        self.svc
            .report(&me, &started.id, started.execution, cmd)
            .await
            .unwrap();
    }
}

fn succeed() -> Command {
    Command::Succeed { result: None }
}

fn fail() -> Command {
    Command::Fail { result: None }
}

fn group_job(g: &str, continuous: bool, rollout: Rollout) -> CreateBulkJob {
    CreateBulkJob {
        group: group(g),
        targets: Targets::Group { continuous },
        lane: None,
        document: json!({"firmware": "2.0"}),
        options: JobOptions::default(),
        rollout,
    }
}

fn fixed(per_minute: u32) -> Rollout {
    Rollout {
        rate: Rate::Fixed { per_minute },
        ..Rollout::default()
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("dev-{i:02}")).collect()
}

async fn add_n(h: &Bulk, g: &str, n: usize) {
    let ids = names(n);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    h.add(g, &refs).await;
}

async fn create(h: &Bulk, req: CreateBulkJob) -> BulkJob {
    h.bulk.create(&alice(), req).await.unwrap()
}

// ---- scenarios ----

async fn a_fixed_rate_starts_so_many_per_minute(h: Bulk) {
    add_n(&h, "acme/fleet", 7).await;
    let b = create(&h, group_job("acme/fleet", false, fixed(3))).await;
    assert_eq!(b.total, Some(7));
    assert_eq!(h.children(b.id).await.len(), 3, "the first minute's three");
    h.advance(30);
    h.tick().await;
    assert_eq!(h.children(b.id).await.len(), 3, "still the same minute");
    h.advance(30);
    h.tick().await;
    assert_eq!(h.children(b.id).await.len(), 6, "a new minute, three more");
    h.advance(60);
    h.tick().await;
    let children = h.children(b.id).await;
    assert_eq!(children.len(), 7, "the last one");
    let mut devices: Vec<_> = children.iter().map(|j| j.device.to_string()).collect();
    devices.sort();
    assert_eq!(devices, names(7), "one child per device");
    assert!(
        children
            .iter()
            .all(|j| j.document == json!({"firmware": "2.0"}) && j.bulk == Some(b.id))
    );
    // Every child finishes: the bulk job completes.
    for j in &children {
        h.finish(j, succeed()).await;
    }
    h.advance(5);
    h.tick().await;
    let done = h.bulk.get(&alice(), &acme(), &b.id).await.unwrap();
    assert_eq!(done.state, BulkJobState::Completed);
    assert_eq!(done.next_check, None);
}

async fn an_exponential_rate_grows_with_successes(h: Bulk) {
    add_n(&h, "acme/fleet", 12).await;
    let rollout = Rollout {
        rate: Rate::Exponential {
            base_per_minute: 2,
            factor: 2.0,
            increase_after: 2,
            max_per_minute: 8,
        },
        ..Rollout::default()
    };
    let b = create(&h, group_job("acme/fleet", false, rollout)).await;
    let first = h.children(b.id).await;
    assert_eq!(first.len(), 2);
    for j in &first {
        h.finish(j, succeed()).await;
    }
    h.advance(60);
    h.tick().await;
    let second = h.children(b.id).await;
    assert_eq!(second.len(), 6, "two successes doubled the rate to four");
    for j in second.iter().filter(|j| j.state == JobState::Queued) {
        h.finish(j, succeed()).await;
    }
    h.advance(60);
    h.tick().await;
    assert_eq!(
        h.children(b.id).await.len(),
        12,
        "six successes: the rate reached its cap of eight, enough for the last six"
    );
}

async fn too_many_failures_abort_after_the_minimum(h: Bulk) {
    add_n(&h, "acme/fleet", 10).await;
    let rollout = Rollout {
        rate: Rate::Fixed { per_minute: 2 },
        abort: vec![AbortCriterion {
            failure: FailureType::Failed,
            threshold_percent: 50.0,
            min_executions: 3,
        }],
        ..Rollout::default()
    };
    let b = create(&h, group_job("acme/fleet", false, rollout)).await;
    for j in &h.children(b.id).await {
        h.finish(j, fail()).await;
    }
    h.advance(60);
    h.tick().await;
    let b1 = h.bulk.get(&alice(), &acme(), &b.id).await.unwrap();
    assert_eq!(
        b1.state,
        BulkJobState::InProgress,
        "two failures of two, but fewer than the minimum of three executions"
    );
    let children = h.children(b.id).await;
    assert_eq!(children.len(), 4);
    let queued: Vec<_> = children
        .iter()
        .filter(|j| j.state == JobState::Queued)
        .collect();
    h.finish(queued[0], fail()).await;
    h.advance(5);
    h.tick().await;
    let aborted = h.bulk.get(&alice(), &acme(), &b.id).await.unwrap();
    assert_eq!(aborted.state, BulkJobState::Aborted);
    assert!(
        aborted.reason.as_deref().unwrap_or("").contains("3 of 3"),
        "{:?}",
        aborted.reason
    );
    assert_eq!(
        h.counts(b.id).await,
        BTreeMap::from([(JobState::Failed, 3), (JobState::Canceled, 1)]),
        "the queued child was canceled"
    );
    h.advance(600);
    h.tick().await;
    assert_eq!(h.children(b.id).await.len(), 4, "no child after the abort");
}

async fn a_continuous_job_reaches_devices_that_join_later(h: Bulk) {
    h.add("acme/fleet", &["a-1", "a-2"]).await;
    h.add("acme/other", &["o-1"]).await;
    let b = create(&h, group_job("acme/fleet", true, Rollout::default())).await;
    assert_eq!(b.total, None);
    let first = h.children(b.id).await;
    assert_eq!(first.len(), 2);
    for j in &first {
        h.finish(j, succeed()).await;
    }
    h.advance(5);
    h.tick().await;
    assert_eq!(
        h.bulk.get(&alice(), &acme(), &b.id).await.unwrap().state,
        BulkJobState::InProgress,
        "a continuous job does not complete when its children do"
    );
    h.add("acme/fleet/sub", &["a-3"]).await;
    h.add("acme/other", &["o-2"]).await;
    h.advance(5);
    h.tick().await;
    let mut devices: Vec<_> = h
        .children(b.id)
        .await
        .iter()
        .map(|j| j.device.to_string())
        .collect();
    devices.sort();
    assert_eq!(
        devices,
        ["a-1", "a-2", "a-3"],
        "the newcomer in the subtree got it, the device elsewhere did not"
    );
    // A snapshot job, by contrast, ignores newcomers.
    let snap = create(&h, group_job("acme/fleet", false, Rollout::default())).await;
    h.add("acme/fleet", &["a-4"]).await;
    h.advance(5);
    h.tick().await;
    assert_eq!(h.children(snap.id).await.len(), 3);
}

async fn a_closed_window_pauses_the_rollout(h: Bulk) {
    add_n(&h, "acme/fleet", 6).await;
    let rollout = Rollout {
        rate: Rate::Fixed { per_minute: 2 },
        windows: vec![
            Window::Once {
                start: Timestamp::from_millis(T0).unwrap(),
                end: Timestamp::from_millis(T0 + 90_000).unwrap(),
            },
            Window::Once {
                start: Timestamp::from_millis(T0 + 300_000).unwrap(),
                end: Timestamp::from_millis(T0 + 400_000).unwrap(),
            },
        ],
        ..Rollout::default()
    };
    let b = create(&h, group_job("acme/fleet", false, rollout)).await;
    assert_eq!(h.children(b.id).await.len(), 2);
    h.advance(60);
    h.tick().await;
    assert_eq!(h.children(b.id).await.len(), 4);
    for secs in [60, 60, 60] {
        h.advance(secs);
        h.tick().await;
        assert_eq!(h.children(b.id).await.len(), 4, "the window is closed");
    }
    h.advance(60); // T0 + 300 s: the second window opens
    h.tick().await;
    assert_eq!(h.children(b.id).await.len(), 6, "the rollout resumes");
}

async fn the_summary_counts_children_per_state(h: Bulk) {
    h.add("acme/fleet", &["s-1", "s-2", "s-3", "s-4"]).await;
    h.presence.offline.lock().unwrap().insert(dev("s-4"));
    let req = CreateBulkJob {
        targets: Targets::Devices {
            devices: vec![dev("s-1"), dev("s-2"), dev("s-3"), dev("s-4"), dev("s-1")],
        },
        options: JobOptions {
            delivery: DeliveryPolicy::FailIfOffline,
            ..JobOptions::default()
        },
        ..group_job("acme/fleet", false, Rollout::default())
    };
    let b = create(&h, req).await;
    let children = h.children(b.id).await;
    assert_eq!(children.len(), 3, "the offline device got no child");
    let by_dev = |d: &str| children.iter().find(|j| j.device.as_str() == d).unwrap();
    h.finish(by_dev("s-1"), succeed()).await;
    h.finish(by_dev("s-2"), Command::Reject { result: None })
        .await;
    let s = h.bulk.summary(&alice(), &acme(), &b.id).await.unwrap();
    assert_eq!(
        (s.total, s.targeted, s.pending, s.refused),
        (Some(4), 4, Some(0), 1)
    );
    assert_eq!(
        s.children,
        BTreeMap::from([
            (JobState::Queued, 1),
            (JobState::Succeeded, 1),
            (JobState::Rejected, 1)
        ])
    );
    assert_eq!(s.state, BulkJobState::InProgress);
    let targets = h
        .bulk
        .targets(&alice(), &acme(), &b.id, PageRequest::first(0))
        .await
        .unwrap()
        .items;
    let refused: Vec<_> = targets.iter().filter(|t| t.job.is_none()).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].device, dev("s-4"));
    assert!(
        refused[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("offline"),
        "{:?}",
        refused[0].error
    );
    let globex = user("bob", "globex");
    assert_eq!(
        h.bulk
            .targets(&globex, &acme(), &b.id, PageRequest::first(0))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

async fn cancel_stops_the_rollout_and_its_queued_children(h: Bulk) {
    add_n(&h, "acme/fleet", 5).await;
    let b = create(&h, group_job("acme/fleet", false, fixed(2))).await;
    let children = h.children(b.id).await;
    h.finish(&children[0], succeed()).await;
    let stale = h
        .bulk
        .cancel(&alice(), &acme(), &b.id, Some(b.version + 7))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::PreconditionFailed);
    let current = h.bulk.get(&alice(), &acme(), &b.id).await.unwrap();
    let c = h
        .bulk
        .cancel(&alice(), &acme(), &b.id, Some(current.version))
        .await
        .unwrap();
    assert_eq!(c.state, BulkJobState::Canceled);
    assert_eq!(
        h.counts(b.id).await,
        BTreeMap::from([(JobState::Succeeded, 1), (JobState::Canceled, 1)])
    );
    h.advance(120);
    h.tick().await;
    assert_eq!(
        h.children(b.id).await.len(),
        2,
        "no child after cancellation"
    );
    let again = h.bulk.cancel(&alice(), &acme(), &b.id, None).await.unwrap();
    assert_eq!(
        (again.state, again.version),
        (BulkJobState::Canceled, c.version),
        "canceling again changes nothing"
    );
    // A completed bulk job cannot be canceled.
    h.add("acme/other", &["z-1"]).await;
    let done = create(&h, group_job("acme/other", false, Rollout::default())).await;
    h.finish(&h.children(done.id).await[0], succeed()).await;
    h.advance(5);
    h.tick().await;
    let refused = h.bulk.cancel(&alice(), &acme(), &done.id, None).await;
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::Conflict);
}

async fn other_tenants_and_other_subtrees_are_refused(h: Bulk) {
    h.add("acme/fleet", &["x-1"]).await;
    h.add("acme/other", &["x-2"]).await;
    h.add("globex/fleet", &["x-1"]).await;
    let globex = user("bob", "globex");
    let err = h
        .bulk
        .create(&globex, group_job("acme/fleet", false, Rollout::default()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "another tenant's group");
    let b = create(&h, group_job("acme/fleet", false, Rollout::default())).await;
    for r in [
        h.bulk.get(&globex, &acme(), &b.id).await.map(|_| ()),
        h.bulk.summary(&globex, &acme(), &b.id).await.map(|_| ()),
        h.bulk
            .cancel(&globex, &acme(), &b.id, None)
            .await
            .map(|_| ()),
        h.bulk
            .get(&globex, &"globex".parse().unwrap(), &b.id)
            .await
            .map(|_| ()),
    ] {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
    }
    let listed = h
        .bulk
        .list(&globex, &group("globex"), PageRequest::first(0))
        .await
        .unwrap();
    assert!(
        listed.items.is_empty(),
        "globex lists none of acme's bulk jobs"
    );
    // A user of another subtree of the same tenant neither sees it nor may target devices
    // outside the group it names.
    let other = user("carol", "acme/other");
    assert_eq!(
        h.bulk.get(&other, &acme(), &b.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let sneaky = CreateBulkJob {
        targets: Targets::Devices {
            devices: vec![dev("x-1")],
        },
        ..group_job("acme/other", false, Rollout::default())
    };
    assert_eq!(
        h.bulk.create(&other, sneaky).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "a device outside the named group"
    );
    let viewer = Principal::User(hub_core::UserPrincipal {
        id: "dave".parse().unwrap(),
        group: group("acme"),
        scopes: hub_core::Role::Viewer.scopes(),
    });
    assert_eq!(
        h.bulk
            .create(&viewer, group_job("acme/fleet", false, Rollout::default()))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Forbidden,
        "a viewer may not create jobs"
    );
}

async fn racing_ticks_create_one_child_per_device(h: Bulk) {
    add_n(&h, "acme/fleet", 20).await;
    let rollout = Rollout {
        windows: vec![Window::Once {
            start: Timestamp::from_millis(T0 + 60_000).unwrap(),
            end: Timestamp::from_millis(T0 + 600_000).unwrap(),
        }],
        ..fixed(7)
    };
    let b = create(&h, group_job("acme/fleet", false, rollout)).await;
    assert!(
        h.children(b.id).await.is_empty(),
        "the window is not open yet"
    );
    h.advance(60);
    let h = Arc::new(h);
    for round in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let h = h.clone();
            tasks.push(tokio::spawn(async move { h.bulk.tick().await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // Orphans of lost races are picked up by a later tick.
        h.tick().await;
        let children = h.children(b.id).await;
        let mut devices: Vec<_> = children.iter().map(|j| j.device.clone()).collect();
        devices.sort();
        devices.dedup();
        assert_eq!(
            devices.len(),
            children.len(),
            "round {round}: one child per device"
        );
        h.advance(60);
    }
    h.tick().await;
    let s = h.bulk.summary(&alice(), &acme(), &b.id).await.unwrap();
    assert_eq!(s.children.values().sum::<u64>(), 20);
    assert_eq!(s.targeted, 20, "every child is recorded as a target");
}

async fn bad_requests_are_typed_errors(h: Bulk) {
    h.add("acme/fleet", &["y-1"]).await;
    let bad_rate = group_job("acme/fleet", false, fixed(0));
    let wait = CreateBulkJob {
        options: JobOptions {
            delivery: DeliveryPolicy::WaitOnline { max_wait_ms: 1000 },
            ..JobOptions::default()
        },
        ..group_job("acme/fleet", false, Rollout::default())
    };
    let empty = CreateBulkJob {
        targets: Targets::Devices { devices: vec![] },
        ..group_job("acme/fleet", false, Rollout::default())
    };
    let nowhere = group_job("acme/nowhere", false, Rollout::default());
    assert_eq!(
        h.bulk.create(&alice(), nowhere).await.unwrap_err().kind(),
        ErrorKind::NotFound,
        "a group that does not exist"
    );
    for req in [bad_rate, wait, empty] {
        assert_eq!(
            h.bulk.create(&alice(), req).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
    let small = BulkJobs::new(
        h.stores.bulk.clone(),
        h.stores.jobs.clone(),
        h.stores.registry.clone(),
        h.svc.clone(),
        Arc::new(h.clock.clone()),
    )
    .with_config(hub_jobs::BulkConfig {
        max_devices: 1,
        ..hub_jobs::BulkConfig::default()
    });
    h.add("acme/fleet", &["y-2"]).await;
    assert_eq!(
        small
            .create(&alice(), group_job("acme/fleet", false, Rollout::default()))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::TooLarge
    );
    // The request body as an HTTP client sends it.
    let body: CreateBulkJob = serde_json::from_value(json!({
        "group": "acme/fleet",
        "targets": {"type": "group", "continuous": true},
        "document": {"op": "reboot"},
        "rollout": {
            "rate": {"type": "exponential", "base_per_minute": 10, "factor": 2.0,
                     "increase_after": 5, "max_per_minute": 100},
            "abort": [{"failure": "any", "threshold_percent": 20.0, "min_executions": 10}],
            "windows": [{"type": "daily", "start_minute": 120, "duration_minutes": 180}]
        }
    }))
    .expect("the documented body parses");
    assert!(h.bulk.create(&alice(), body).await.is_ok());
}

macro_rules! scenarios {
    ($make:expr) => {{
        a_fixed_rate_starts_so_many_per_minute($make).await;
        an_exponential_rate_grows_with_successes($make).await;
        too_many_failures_abort_after_the_minimum($make).await;
        a_continuous_job_reaches_devices_that_join_later($make).await;
        a_closed_window_pauses_the_rollout($make).await;
        the_summary_counts_children_per_state($make).await;
        cancel_stops_the_rollout_and_its_queued_children($make).await;
        other_tenants_and_other_subtrees_are_refused($make).await;
        racing_ticks_create_one_child_per_device($make).await;
        bad_requests_are_typed_errors($make).await;
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_jobs_on_memory() {
    scenarios!(bulk_on(MemoryStore::new(StoreLimits::default()).into_stores()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_jobs_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let make = || async {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let s = SqliteStore::open(SqliteConfig::new(dir.path().join(format!("b{i}.db"))))
            .await
            .unwrap();
        bulk_on(s.into_stores()).await
    };
    scenarios!(make().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_jobs_on_postgres() {
    let Ok(url) = std::env::var("HUB_TEST_POSTGRES_URL") else {
        eprintln!("skipping: HUB_TEST_POSTGRES_URL is not set");
        return;
    };
    let schemas: Arc<std::sync::Mutex<Vec<PostgresStore>>> = Arc::default();
    let opened = schemas.clone();
    let outcome = tokio::spawn(async move {
        let make = || async {
            let store = PostgresStore::connect(PostgresConfig {
                schema: Some(format!("hub_bulk_{}", uuid::Uuid::new_v4().simple())),
                pool_size: 4,
                ..PostgresConfig::new(url.clone())
            })
            .await
            .expect("the test database is reachable");
            opened.lock().unwrap().push(store.clone());
            bulk_on(store.into_stores()).await
        };
        scenarios!(make().await);
    })
    .await;
    // Drop the schemas whether or not the scenarios passed.
    let opened: Vec<PostgresStore> = std::mem::take(&mut *schemas.lock().unwrap());
    for s in opened {
        s.drop_schema().await.unwrap();
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
