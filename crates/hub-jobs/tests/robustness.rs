//! Two weaknesses that are gone: a control lease taken while another controller creates a job
//! (the check and the insert were two store calls), and jobs that stay due without changing
//! (unreadable options) starving every other timer.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Elapsed, Hub, acme, alice, dev, group, hub, hub_on, pump, req, user, with_options};
use hub_core::{
    BoxFuture, DeviceId, ErrorKind, GroupPath, JobId, JobState, Result, TenantId, Timestamp,
};
use hub_jobs::JobOptions;
use hub_jobs::service::TICK_BATCH;
use hub_store::memory::MemoryStore;
use hub_store::sqlite::{SqliteConfig, SqliteStore};
use hub_store::{
    ControlLease, CreateOutcome, DEFAULT_LANE, JobFilter, JobRecord, JobStore, NewJob, Page,
    PageRequest, StoreLimits, Stores,
};
use serde_json::json;

/// Bob keeps creating jobs for pump-7 while Alice takes control of it. Whatever the
/// interleaving: every creation of Bob's that succeeded is in the queue Alice reads right
/// after her lease is granted, and every later one is refused with a conflict.
async fn control_taken_during_creations(h: Arc<Hub>) {
    const CREATORS: usize = 24;
    for round in 0..3 {
        let mut tasks = Vec::new();
        for i in 0..CREATORS {
            let hc = h.clone();
            tasks.push(tokio::spawn(async move {
                let created = hc
                    .svc
                    .create(&user("bob", "acme"), req(json!({"round": round, "n": i})))
                    .await
                    .map(|o| o.job.id);
                Ok(created)
            }));
            if i == CREATORS / 2 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    h.svc
                        .acquire_control(
                            &alice(),
                            &group("acme/plant-1"),
                            &dev("pump-7"),
                            Duration::from_secs(60),
                        )
                        .await
                        .expect("alice takes the device");
                    let seen = h
                        .store
                        .queue_head(&acme(), &dev("pump-7"), DEFAULT_LANE, 1000)
                        .await
                        .unwrap();
                    Err(seen.into_iter().map(|j| j.id).collect::<Vec<_>>())
                }));
            }
        }
        let mut created = BTreeSet::new();
        let mut refused = 0;
        let mut seen = None;
        for t in tasks {
            match t.await.unwrap() {
                Ok(Ok(id)) => {
                    created.insert(id);
                }
                Ok(Err(e)) => {
                    assert_eq!(e.kind(), ErrorKind::Conflict, "only the lease refuses: {e}");
                    refused += 1;
                }
                Err(ids) => seen = Some(ids),
            }
        }
        let seen: BTreeSet<_> = seen.unwrap().into_iter().collect();
        assert!(
            created.is_subset(&seen),
            "round {round}: a job of bob's got in after alice's lease was granted: {:?}",
            created.difference(&seen).collect::<Vec<_>>()
        );
        assert_eq!(created.len() + refused, CREATORS);
        // Clean up for the next round: Alice releases; Bob's jobs are canceled.
        h.svc
            .release_control(&alice(), &group("acme/plant-1"), &dev("pump-7"))
            .await
            .unwrap();
        for id in seen {
            h.svc
                .cancel(&alice(), &acme(), &id, true, None)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_never_misses_a_concurrent_creation_memory() {
    control_taken_during_creations(Arc::new(hub().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_never_misses_a_concurrent_creation_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("jobs.db")))
        .await
        .unwrap();
    let h = hub_on(store.into_stores(), Arc::new(Elapsed)).await;
    control_taken_during_creations(Arc::new(h)).await;
}

#[tokio::test]
async fn the_holders_own_creations_and_idempotent_repeats_pass_the_lease() {
    let h = hub().await;
    let mut keyed = req(json!({"op": "a"}));
    keyed.idempotency_key = Some("k-1".into());
    let bob = user("bob", "acme");
    let first = h.svc.create(&bob, keyed.clone()).await.unwrap();
    h.svc
        .acquire_control(
            &alice(),
            &group("acme/plant-1"),
            &dev("pump-7"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let refused = h
        .svc
        .create(&bob, req(json!({"op": "b"})))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert!(
        h.svc
            .create(&alice(), req(json!({"op": "c"})))
            .await
            .unwrap()
            .created
    );
    // Once the lease lapses, Bob gets in again.
    h.advance(60_001);
    assert!(
        h.svc
            .create(&bob, req(json!({"op": "d"})))
            .await
            .unwrap()
            .created
    );
    assert_eq!(
        h.svc.create(&bob, keyed).await.unwrap().job.id,
        first.job.id,
        "a repeat returns the first job"
    );
}

/// A job store that lets Alice's lease in right after the service has looked for one, once armed:
/// the interleaving that two separate store calls (check, then insert) could not survive.
#[derive(Debug)]
struct LeaseSneaksIn {
    inner: Arc<dyn JobStore>,
    armed: AtomicBool,
}

impl JobStore for LeaseSneaksIn {
    fn create_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<CreateOutcome>> {
        self.inner.create_job(job)
    }
    fn create_job_unless_controlled<'a>(
        &'a self,
        job: NewJob,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<CreateOutcome>> {
        self.inner.create_job_unless_controlled(job, now)
    }
    fn get_job<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<JobRecord>>> {
        self.inner.get_job(tenant, id)
    }
    fn update_job<'a>(
        &'a self,
        job: &'a JobRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<JobRecord>> {
        self.inner.update_job(job, expected_version)
    }
    fn queue_head<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        lane: &'a str,
        n: u32,
    ) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
        self.inner.queue_head(tenant, device, lane, n)
    }
    fn due_jobs<'a>(&'a self, at: Timestamp, limit: u32) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
        self.inner.due_jobs(at, limit)
    }
    fn list_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<JobRecord>>> {
        self.inner.list_jobs(root, filter, page)
    }
    fn count_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
    ) -> BoxFuture<'a, Result<BTreeMap<JobState, u64>>> {
        self.inner.count_jobs(root, filter)
    }
    fn acquire_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ControlLease>> {
        self.inner
            .acquire_control(tenant, device, holder, until, now)
    }
    fn release_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner.release_control(tenant, device, holder)
    }
    fn get_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ControlLease>>> {
        Box::pin(async move {
            let seen = self.inner.get_control(tenant, device, now).await?;
            if self.armed.swap(false, Ordering::SeqCst) {
                let until = now.saturating_add(Duration::from_secs(60));
                self.inner
                    .acquire_control(tenant, device, &alice().describe(), until, now)
                    .await?;
            }
            Ok(seen)
        })
    }
}

#[tokio::test]
async fn a_lease_granted_between_the_check_and_the_insert_refuses_the_creation() {
    let stores = MemoryStore::new(StoreLimits::default()).into_stores();
    let sneaky = Arc::new(LeaseSneaksIn {
        inner: stores.jobs.clone(),
        armed: AtomicBool::new(false),
    });
    let h = hub_on(
        Stores {
            jobs: sneaky.clone(),
            ..stores
        },
        Arc::new(Elapsed),
    )
    .await;
    let bob = user("bob", "acme");
    assert!(
        h.svc
            .create(&bob, req(json!({"n": 1})))
            .await
            .unwrap()
            .created
    );
    sneaky.armed.store(true, Ordering::SeqCst);
    let e = h.svc.create(&bob, req(json!({"n": 2}))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(
        !sneaky.armed.load(Ordering::SeqCst),
        "the lease did sneak in"
    );
    let queue = h
        .store
        .queue_head(&acme(), &dev("pump-7"), DEFAULT_LANE, 10)
        .await
        .unwrap();
    assert_eq!(
        queue.len(),
        1,
        "nothing of bob's got in under alice's lease"
    );
}

/// Replaces a job's stored options with something no version of the machine can read.
async fn corrupt(h: &Hub, id: &hub_core::JobId) {
    let mut j = h.store.get_job(&acme(), id).await.unwrap().unwrap();
    let version = j.version;
    j.options = json!({"options": {"ttl_ms": "soon"}});
    h.store.update_job(&j, version).await.unwrap();
}

#[tokio::test]
async fn jobs_with_unreadable_options_do_not_starve_the_timer() {
    let h = hub().await;
    let ttl = |ms| JobOptions {
        ttl_ms: Some(ms),
        ..JobOptions::default()
    };
    // A full tick batch of broken jobs, all due before the one healthy job.
    let mut broken = Vec::new();
    for i in 0..TICK_BATCH {
        let j = h
            .create(with_options(json!({"broken": i}), ttl(1_000)))
            .await;
        corrupt(&h, &j.id).await;
        broken.push(j.id);
    }
    let healthy = h
        .create(with_options(json!({"healthy": true}), ttl(2_000)))
        .await;
    h.advance(5_000);
    h.events.take();

    let first = h.svc.tick().await.unwrap();
    assert_eq!(first, TICK_BATCH as usize, "the due broken jobs end first");
    for id in &broken {
        let j = h.svc.get(&alice(), &acme(), id).await.unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.due_at, None, "it leaves the timer's set");
        let reason = j.status_details.unwrap()["hub_error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains("unreadable"), "{reason}");
    }
    assert_eq!(
        common::transitions(&h.events.take()).len(),
        TICK_BATCH as usize,
        "each failure is published"
    );
    // Before the fix every further tick picked the same broken jobs again.
    assert_eq!(h.svc.tick().await.unwrap(), 1);
    assert_eq!(h.state(&healthy.id).await, JobState::Expired);
    assert_eq!(h.svc.tick().await.unwrap(), 0, "nothing is due any more");
}

#[tokio::test]
async fn a_broken_job_at_the_head_of_the_lane_does_not_block_the_device() {
    let h = hub().await;
    let broken = h
        .create(with_options(
            json!({"broken": true}),
            JobOptions {
                in_progress_timeout_ms: 10_000,
                ..JobOptions::default()
            },
        ))
        .await;
    let next = h.create(req(json!({"next": true}))).await;
    let claimed = h.claim().await.unwrap();
    assert_eq!(claimed.id, broken.id);
    corrupt(&h, &broken.id).await;
    // The device's own reports are refused while the options are unreadable...
    let e = h
        .svc
        .report(&pump(), &broken.id, 1, hub_jobs::Command::Start)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    // ...and when its deadline passes, the claim itself ends it and moves on.
    h.advance(10_001);
    let claimed = h.claim().await.unwrap();
    assert_eq!(claimed.id, next.id, "the lane moves past the broken job");
    assert_eq!(h.state(&broken.id).await, JobState::Failed);
}
