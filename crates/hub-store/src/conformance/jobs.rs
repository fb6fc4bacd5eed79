//! Job checks: creation order, idempotency, compare-and-set, queues, timers, listings, leases.

use std::collections::BTreeMap;
use std::sync::Arc;

use hub_core::{BulkJobId, ErrorKind, GroupPath, JobId, JobState, Timestamp};
use serde_json::json;

use super::{StoresFactory, T0, dev, expect_kind, group, job_id, ok, tenant, ts, walk};
use crate::jobs::{DEFAULT_LANE, JobFilter, JobRecord, JobStore, NewJob};

/// A queued job for `device` of `group_path`'s tenant, created at `created`.
pub(super) fn new_job(id: JobId, device: &str, group_path: &str, created: i64) -> NewJob {
    let g = group(group_path);
    NewJob {
        id,
        tenant: g.tenant(),
        device: dev(device),
        group: g,
        lane: DEFAULT_LANE.to_owned(),
        state: JobState::Queued,
        document: json!({ "operation": "reboot", "job": id.to_string() }),
        options: json!({ "ttl_ms": 60_000 }),
        idempotency_key: None,
        created_by: "user:erin@acme.example".to_owned(),
        bulk: None,
        created_at: ts(created),
        due_at: None,
    }
}

pub(super) async fn create_ok(jobs: &Arc<dyn JobStore>, job: NewJob) -> JobRecord {
    let id = job.id;
    let out = ok(jobs.create_job(job).await, &format!("create_job({id})"));
    assert!(
        out.created,
        "create_job({id}) without an idempotency key creates"
    );
    out.job
}

/// Writes `job` with a new state at `now`, expecting its current version.
pub(super) async fn set_state(
    jobs: &Arc<dyn JobStore>,
    job: &JobRecord,
    state: JobState,
    now: i64,
) -> JobRecord {
    let mut next = job.clone();
    next.state = state;
    next.updated_at = ts(now);
    ok(
        jobs.update_job(&next, job.version).await,
        &format!("update_job({}) to {state:?}", job.id),
    )
}

pub(super) async fn all_jobs(
    jobs: &Arc<dyn JobStore>,
    root: &GroupPath,
    filter: &JobFilter,
    limit: u32,
) -> Vec<JobRecord> {
    let (j, root2, filter2) = (jobs.clone(), root.clone(), filter.clone());
    walk(
        &format!("list_jobs({root}, {filter:?}, limit {limit})"),
        limit,
        Box::new(move |p| {
            let (j, root, filter) = (j.clone(), root2.clone(), filter2.clone());
            Box::pin(async move { j.list_jobs(&root, &filter, p).await })
        }),
    )
    .await
}

fn job_ids(jobs: &[JobRecord]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

pub(super) async fn create(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let acme = tenant("acme");
    let mut nj = new_job(job_id(T0, 1), "pump-1", "acme/plant-1", T0);
    nj.idempotency_key = Some("key-1".into());
    nj.bulk = Some(BulkJobId::from_parts(ts(T0), [7; 10]));
    nj.due_at = Some(ts(T0 + 60_000));
    nj.state = JobState::Queued;
    let out = ok(jobs.create_job(nj.clone()).await, "create_job");
    assert!(out.created, "a new idempotency key creates the job");
    let first = out.job;
    assert_eq!(
        first,
        JobRecord {
            id: nj.id,
            tenant: acme.clone(),
            device: dev("pump-1"),
            group: group("acme/plant-1"),
            lane: DEFAULT_LANE.into(),
            seq: first.seq,
            state: JobState::Queued,
            version: 1,
            execution: 0,
            attempts: 0,
            document: nj.document.clone(),
            options: nj.options.clone(),
            idempotency_key: Some("key-1".into()),
            created_by: nj.created_by.clone(),
            bulk: nj.bulk,
            created_at: ts(T0),
            updated_at: ts(T0),
            due_at: Some(ts(T0 + 60_000)),
            status_details: None,
            result: None,
        },
        "create_job stores the new job as given, at version 1 with no executions"
    );
    assert_eq!(
        ok(jobs.get_job(&acme, &first.id).await, "get_job"),
        Some(first.clone()),
        "get_job returns the created job"
    );
    assert_eq!(
        ok(jobs.get_job(&tenant("globex"), &first.id).await, "get_job"),
        None,
        "get_job with another tenant does not see the job"
    );
    assert_eq!(
        ok(jobs.get_job(&acme, &job_id(T0, 999)).await, "get_job"),
        None,
        "get_job of an unknown job"
    );

    // Seq: strictly increasing per device in creation order, whatever the lane, the id order or
    // the creation time say. Interleave another device and another tenant.
    let mut seqs = vec![first.seq];
    for n in 0..6u64 {
        // Ids and creation times go backwards, so only creation order can explain the seqs.
        let created = T0 - 1000 * n as i64;
        let mut j = new_job(job_id(created, 100 + n), "pump-1", "acme/plant-1", created);
        if n % 2 == 1 {
            j.lane = "firmware".into();
        }
        if n == 3 {
            j.state = JobState::InProgress;
        }
        seqs.push(create_ok(&jobs, j).await.seq);
        create_ok(
            &jobs,
            new_job(job_id(T0, 200 + n), "pump-2", "acme/plant-1", T0),
        )
        .await;
        create_ok(
            &jobs,
            new_job(job_id(T0, 300 + n), "pump-1", "globex/site", T0),
        )
        .await;
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq must increase strictly per device in creation order, got {seqs:?}"
    );
    let stored = ok(
        jobs.get_job(&acme, &job_id(T0 - 3000, 103)).await,
        "get_job",
    )
    .expect("the job exists");
    assert_eq!(
        stored.state,
        JobState::InProgress,
        "the initial state is stored as given"
    );
    assert_eq!(stored.lane, "firmware");
}

pub(super) async fn invalid_input(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let limits = super::expected_limits();
    let mut mismatch = new_job(job_id(T0, 1), "pump-1", "acme/plant-1", T0);
    mismatch.tenant = tenant("globex");
    expect_kind(
        jobs.create_job(mismatch).await,
        ErrorKind::InvalidInput,
        "create_job whose group is in another tenant",
    );
    for lane in ["", "has space", "slash/lane", &"l".repeat(65)] {
        let mut j = new_job(job_id(T0, 2), "pump-1", "acme/plant-1", T0);
        j.lane = lane.to_owned();
        expect_kind(
            jobs.create_job(j).await,
            ErrorKind::InvalidInput,
            &format!("create_job with lane {lane:?}"),
        );
    }
    let mut big = new_job(job_id(T0, 3), "pump-1", "acme/plant-1", T0);
    big.document = json!({ "blob": "x".repeat(limits.max_job_document_bytes) });
    expect_kind(
        jobs.create_job(big).await,
        ErrorKind::TooLarge,
        "create_job with a document over max_job_document_bytes",
    );
    let mut key = new_job(job_id(T0, 4), "pump-1", "acme/plant-1", T0);
    key.idempotency_key = Some(String::new());
    expect_kind(
        jobs.create_job(key).await,
        ErrorKind::InvalidInput,
        "create_job with an empty idempotency key",
    );
    let left = all_jobs(&jobs, &group("acme"), &JobFilter::default(), 0).await;
    assert!(
        left.is_empty(),
        "refused create_job calls store nothing: {left:?}"
    );
    assert!(
        ok(
            jobs.queue_head(&tenant("acme"), &dev("pump-1"), DEFAULT_LANE, 10)
                .await,
            "queue_head"
        )
        .is_empty()
    );

    // A status over the limit is refused and changes nothing.
    let job = create_ok(&jobs, new_job(job_id(T0, 5), "pump-1", "acme/plant-1", T0)).await;
    let mut next = job.clone();
    next.state = JobState::InProgress;
    next.status_details = Some(json!({ "log": "x".repeat(limits.max_job_status_bytes) }));
    expect_kind(
        jobs.update_job(&next, 1).await,
        ErrorKind::TooLarge,
        "update_job with status details over max_job_status_bytes",
    );
    assert_eq!(
        ok(jobs.get_job(&tenant("acme"), &job.id).await, "get_job"),
        Some(job),
        "a refused update_job changes nothing"
    );
}

pub(super) async fn idempotency(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let mut a = new_job(job_id(T0, 1), "pump-1", "acme/plant-1", T0);
    a.idempotency_key = Some("deploy-42".into());
    let first = ok(jobs.create_job(a).await, "create_job");
    assert!(first.created);

    let mut b = new_job(job_id(T0 + 10, 2), "pump-2", "acme/plant-2", T0 + 10);
    b.idempotency_key = Some("deploy-42".into());
    b.document = json!({ "operation": "something else" });
    let again = ok(
        jobs.create_job(b).await,
        "create_job with a used idempotency key",
    );
    assert!(
        !again.created,
        "a used idempotency key returns created = false"
    );
    assert_eq!(
        again.job, first.job,
        "a used idempotency key returns the earlier job as stored"
    );
    assert_eq!(
        ok(
            jobs.get_job(&tenant("acme"), &job_id(T0 + 10, 2)).await,
            "get_job"
        ),
        None,
        "the second create_job stores nothing"
    );

    // Updated since: the earlier job is returned as it is now.
    let updated = set_state(&jobs, &first.job, JobState::Delivered, T0 + 20).await;
    let mut c = new_job(job_id(T0 + 30, 3), "pump-1", "acme/plant-1", T0 + 30);
    c.idempotency_key = Some("deploy-42".into());
    let third = ok(
        jobs.create_job(c).await,
        "create_job with a used idempotency key",
    );
    assert!(!third.created);
    assert_eq!(
        third.job, updated,
        "the earlier job is returned in its current state"
    );

    let mut other = new_job(job_id(T0 + 40, 4), "pump-1", "globex/site", T0 + 40);
    other.idempotency_key = Some("deploy-42".into());
    let out = ok(jobs.create_job(other).await, "create_job in another tenant");
    assert!(
        out.created,
        "idempotency keys are per tenant: another tenant's key creates a job"
    );
    assert_eq!(out.job.id, job_id(T0 + 40, 4));

    let mut fresh = new_job(job_id(T0 + 50, 5), "pump-1", "acme/plant-1", T0 + 50);
    fresh.idempotency_key = Some("deploy-43".into());
    assert!(
        ok(jobs.create_job(fresh).await, "create_job").created,
        "a new key creates"
    );

    let all = all_jobs(&jobs, &group("acme"), &JobFilter::default(), 0).await;
    assert_eq!(
        job_ids(&all),
        [job_id(T0, 1), job_id(T0 + 50, 5)],
        "acme has exactly the two created jobs"
    );
}

pub(super) async fn update_cas(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let acme = tenant("acme");
    let mut nj = new_job(job_id(T0, 1), "pump-1", "acme/plant-1", T0);
    nj.idempotency_key = Some("k".into());
    nj.bulk = Some(BulkJobId::from_parts(ts(T0), [1; 10]));
    let v1 = create_ok(&jobs, nj).await;

    let mut w = v1.clone();
    w.state = JobState::InProgress;
    w.execution = 1;
    w.attempts = 2;
    w.options = json!({ "retries": 3 });
    w.due_at = Some(ts(T0 + 5000));
    w.status_details = Some(json!({ "step": 1 }));
    w.result = Some(json!({ "partial": true }));
    w.updated_at = ts(T0 + 100);
    w.version = 77; // the expected version argument is what counts
    let v2 = ok(jobs.update_job(&w, 1).await, "update_job at version 1");
    let mut want = w.clone();
    want.version = 2;
    assert_eq!(
        v2, want,
        "update_job writes every mutable field and sets version 2"
    );
    assert_eq!(
        ok(jobs.get_job(&acme, &v1.id).await, "get_job"),
        Some(v2.clone())
    );

    let mut stale = v2.clone();
    stale.state = JobState::Failed;
    expect_kind(
        jobs.update_job(&stale, 1).await,
        ErrorKind::PreconditionFailed,
        "update_job with a stale expected version",
    );
    expect_kind(
        jobs.update_job(&stale, 3).await,
        ErrorKind::PreconditionFailed,
        "update_job with a future expected version",
    );
    assert_eq!(
        ok(jobs.get_job(&acme, &v1.id).await, "get_job"),
        Some(v2.clone()),
        "refused updates change nothing"
    );

    // Identity fields never change, even when the passed record differs.
    let mut forged = v2.clone();
    forged.device = dev("pump-9");
    forged.group = group("acme/plant-9");
    forged.lane = "other".into();
    forged.seq = v2.seq + 100;
    forged.document = json!({ "operation": "format-disk" });
    forged.idempotency_key = Some("forged".into());
    forged.created_by = "mallory".into();
    forged.bulk = None;
    forged.created_at = ts(T0 + 999);
    forged.state = JobState::Succeeded;
    forged.due_at = None;
    forged.status_details = None;
    forged.result = Some(json!({ "ok": true }));
    forged.updated_at = ts(T0 + 200);
    let v3 = ok(jobs.update_job(&forged, 2).await, "update_job at version 2");
    let mut want = v2.clone();
    want.state = JobState::Succeeded;
    want.due_at = None;
    want.status_details = None;
    want.result = Some(json!({ "ok": true }));
    want.updated_at = ts(T0 + 200);
    want.version = 3;
    assert_eq!(v3, want, "update_job changes only the mutable fields");
    assert_eq!(
        ok(jobs.get_job(&acme, &v1.id).await, "get_job"),
        Some(v3.clone())
    );
    // The idempotency key still points at the job.
    let mut retry = new_job(job_id(T0 + 1, 2), "pump-1", "acme/plant-1", T0 + 1);
    retry.idempotency_key = Some("k".into());
    let out = ok(
        jobs.create_job(retry).await,
        "create_job with the original key",
    );
    assert!(
        !out.created && out.job.id == v1.id,
        "the original key still finds the job"
    );
    let mut forged_key = new_job(job_id(T0 + 2, 3), "pump-1", "acme/plant-1", T0 + 2);
    forged_key.idempotency_key = Some("forged".into());
    assert!(
        ok(jobs.create_job(forged_key).await, "create_job").created,
        "update_job must not register the passed idempotency key"
    );

    // Unknown job, other tenant's job.
    let mut unknown = v3.clone();
    unknown.id = job_id(T0, 999);
    expect_kind(
        jobs.update_job(&unknown, 3).await,
        ErrorKind::NotFound,
        "update_job of an unknown job",
    );
    let mut foreign = v3.clone();
    foreign.tenant = tenant("globex");
    foreign.group = group("globex/site");
    foreign.state = JobState::Canceled;
    expect_kind(
        jobs.update_job(&foreign, 3).await,
        ErrorKind::NotFound,
        "update_job of another tenant's job",
    );
    assert_eq!(
        ok(jobs.get_job(&acme, &v1.id).await, "get_job"),
        Some(v3),
        "refused updates change nothing"
    );
}

pub(super) async fn queue_head(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let (acme, pump) = (tenant("acme"), dev("pump-1"));
    let mut default_lane = Vec::new();
    for n in 0..6u64 {
        // Later jobs get earlier ids: queue order is seq (creation order), not id order.
        let created = T0 + 10_000 - 1000 * n as i64;
        default_lane.push(
            create_ok(
                &jobs,
                new_job(job_id(created, n), "pump-1", "acme/p", created),
            )
            .await,
        );
        if n < 3 {
            let mut b = new_job(job_id(created, 50 + n), "pump-1", "acme/p", created);
            b.lane = "b".into();
            create_ok(&jobs, b).await;
        }
    }
    create_ok(&jobs, new_job(job_id(T0, 90), "pump-2", "acme/p", T0)).await;
    create_ok(&jobs, new_job(job_id(T0, 91), "pump-1", "globex/p", T0)).await;

    let head = ok(
        jobs.queue_head(&acme, &pump, DEFAULT_LANE, 10).await,
        "queue_head",
    );
    assert_eq!(
        job_ids(&head),
        job_ids(&default_lane),
        "queue_head: every job of the lane in seq order"
    );
    set_state(&jobs, &default_lane[0], JobState::Succeeded, T0 + 20_000).await;
    set_state(&jobs, &default_lane[1], JobState::Delivered, T0 + 20_000).await;
    set_state(&jobs, &default_lane[2], JobState::Canceled, T0 + 20_000).await;
    set_state(&jobs, &default_lane[3], JobState::Canceling, T0 + 20_000).await;
    set_state(&jobs, &default_lane[4], JobState::Removed, T0 + 20_000).await;
    let head = ok(
        jobs.queue_head(&acme, &pump, DEFAULT_LANE, 10).await,
        "queue_head",
    );
    assert_eq!(
        job_ids(&head),
        [default_lane[1].id, default_lane[3].id, default_lane[5].id],
        "queue_head skips terminal jobs (succeeded, canceled, removed)"
    );
    assert_eq!(
        head[0].state,
        JobState::Delivered,
        "queue_head returns current records"
    );
    assert_eq!(head[0].version, 2);
    let two = ok(
        jobs.queue_head(&acme, &pump, DEFAULT_LANE, 2).await,
        "queue_head(n = 2)",
    );
    assert_eq!(
        job_ids(&two),
        [default_lane[1].id, default_lane[3].id],
        "queue_head(n = 2)"
    );
    let one = ok(
        jobs.queue_head(&acme, &pump, DEFAULT_LANE, 1).await,
        "queue_head(n = 1)",
    );
    assert_eq!(job_ids(&one), [default_lane[1].id], "queue_head(n = 1)");
    let b = ok(
        jobs.queue_head(&acme, &pump, "b", 10).await,
        "queue_head(lane b)",
    );
    assert_eq!(b.len(), 3, "lane b is its own queue");
    assert!(
        b.windows(2).all(|w| w[0].seq < w[1].seq),
        "lane b in seq order"
    );
    assert!(b.iter().all(|j| j.lane == "b"));
    let other = ok(
        jobs.queue_head(&tenant("globex"), &pump, DEFAULT_LANE, 10)
            .await,
        "queue_head",
    );
    assert_eq!(
        job_ids(&other),
        [job_id(T0, 91)],
        "queue_head is per tenant"
    );
    let other = ok(
        jobs.queue_head(&acme, &dev("pump-2"), DEFAULT_LANE, 10)
            .await,
        "queue_head",
    );
    assert_eq!(
        job_ids(&other),
        [job_id(T0, 90)],
        "queue_head is per device"
    );
    assert!(
        ok(
            jobs.queue_head(&acme, &pump, "none", 10).await,
            "queue_head"
        )
        .is_empty()
    );
    for j in [&default_lane[1], &default_lane[3], &default_lane[5]] {
        let cur = ok(jobs.get_job(&acme, &j.id).await, "get_job").expect("job");
        set_state(&jobs, &cur, JobState::Failed, T0 + 30_000).await;
    }
    assert!(
        ok(
            jobs.queue_head(&acme, &pump, DEFAULT_LANE, 10).await,
            "queue_head"
        )
        .is_empty(),
        "a lane whose jobs are all terminal is empty"
    );
}

pub(super) async fn due(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let mut made = BTreeMap::new();
    for (n, (due, g)) in [
        (Some(10), "acme/p"),
        (Some(5), "globex/p"),
        (Some(20), "acme/p"),
        (None, "acme/p"),
        (Some(7), "acme/p"),
        (Some(10_000), "acme/p"),
        (Some(8), "acme/p"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut j = new_job(job_id(T0, n as u64), "pump-1", g, T0);
        j.due_at = due.map(|d| ts(T0 + d));
        made.insert(n, create_ok(&jobs, j).await);
    }
    // Job 4 (due at +7) ends: terminal jobs are never due.
    set_state(&jobs, &made[&4], JobState::Expired, T0 + 1).await;
    let at = |d: i64| Timestamp::from_millis(T0 + d).expect("valid");
    let due_ids = |v: Vec<JobRecord>| v.iter().map(|j| j.due_at).collect::<Vec<_>>();
    let got = ok(jobs.due_jobs(at(10), 100).await, "due_jobs");
    assert_eq!(
        due_ids(got),
        [Some(at(5)), Some(at(8)), Some(at(10))],
        "due_jobs(+10): every tenant's non-terminal jobs due at or before, earliest first"
    );
    let got = ok(jobs.due_jobs(at(10), 2).await, "due_jobs(limit 2)");
    assert_eq!(
        job_ids(&got),
        [made[&1].id, made[&6].id],
        "due_jobs respects the limit"
    );
    let got = ok(jobs.due_jobs(at(4), 100).await, "due_jobs");
    assert!(got.is_empty(), "nothing is due before +5: {got:?}");
    // Moving a timer moves the job in the timer order.
    let mut later = made[&1].clone();
    later.due_at = Some(at(15));
    ok(jobs.update_job(&later, 1).await, "update_job(due_at)");
    let mut cleared = made[&6].clone();
    cleared.due_at = None;
    ok(
        jobs.update_job(&cleared, 1).await,
        "update_job(due_at = None)",
    );
    let got = ok(jobs.due_jobs(at(100), 100).await, "due_jobs");
    assert_eq!(
        job_ids(&got),
        [made[&0].id, made[&1].id, made[&2].id],
        "due_jobs after moving and clearing timers"
    );
}

pub(super) async fn list_and_count(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let bulk_a = BulkJobId::from_parts(ts(T0), [0xa; 10]);
    let bulk_b = BulkJobId::from_parts(ts(T0), [0xb; 10]);
    // (device, group, bulk, final state)
    let spec: [(&str, &str, Option<BulkJobId>, JobState); 10] = [
        ("pump-1", "acme/plant-1", Some(bulk_a), JobState::Queued),
        (
            "pump-2",
            "acme/plant-1/line-1",
            Some(bulk_a),
            JobState::Succeeded,
        ),
        ("pump-1", "acme/plant-1", None, JobState::Failed),
        ("pump-3", "acme/plant-10", Some(bulk_a), JobState::Queued),
        ("pump-4", "acme/plant-1-b", None, JobState::Queued),
        (
            "pump-2",
            "acme/plant-1/line-1",
            Some(bulk_b),
            JobState::Queued,
        ),
        ("pump-1", "acme/plant-1", Some(bulk_b), JobState::InProgress),
        ("pump-1", "globex/plant-1", Some(bulk_a), JobState::Queued),
        ("gw", "acme", None, JobState::Succeeded),
        ("pump-1", "acme/plant-1", None, JobState::Succeeded),
    ];
    let mut made = Vec::new();
    for (n, (d, g, bulk, state)) in spec.iter().enumerate() {
        let created = T0 + 1000 * n as i64;
        let mut j = new_job(job_id(created, n as u64), d, g, created);
        j.bulk = *bulk;
        let rec = create_ok(&jobs, j).await;
        let rec = if *state != JobState::Queued {
            set_state(&jobs, &rec, *state, created + 1).await
        } else {
            rec
        };
        made.push(rec);
    }
    let ids_of = |idx: &[usize]| idx.iter().map(|&i| made[i].id).collect::<Vec<_>>();
    let cases: Vec<(&str, JobFilter, Vec<usize>)> = vec![
        ("acme/plant-1", JobFilter::default(), vec![0, 1, 2, 5, 6, 9]),
        (
            "acme",
            JobFilter::default(),
            vec![0, 1, 2, 3, 4, 5, 6, 8, 9],
        ),
        ("globex", JobFilter::default(), vec![7]),
        (
            "acme/plant-1",
            JobFilter {
                device: Some(dev("pump-1")),
                ..JobFilter::default()
            },
            vec![0, 2, 6, 9],
        ),
        (
            "acme",
            JobFilter {
                states: vec![JobState::Queued, JobState::Failed],
                ..JobFilter::default()
            },
            vec![0, 2, 3, 4, 5],
        ),
        (
            "acme",
            JobFilter {
                bulk: Some(bulk_a),
                ..JobFilter::default()
            },
            vec![0, 1, 3],
        ),
        (
            "acme/plant-1",
            JobFilter {
                device: Some(dev("pump-1")),
                states: vec![JobState::Succeeded, JobState::InProgress],
                bulk: None,
            },
            vec![6, 9],
        ),
        (
            "acme/plant-1",
            JobFilter {
                device: Some(dev("pump-2")),
                states: vec![JobState::Queued],
                bulk: Some(bulk_b),
            },
            vec![5],
        ),
        (
            "acme/plant-1/line-1",
            JobFilter {
                states: vec![JobState::Canceled],
                ..JobFilter::default()
            },
            vec![],
        ),
        ("acme/plant-9", JobFilter::default(), vec![]),
    ];
    for (root, filter, want) in &cases {
        for limit in [1, 2, 4, 0] {
            let got = all_jobs(&jobs, &group(root), filter, limit).await;
            assert_eq!(
                job_ids(&got),
                ids_of(want),
                "list_jobs({root}, {filter:?}) with limit {limit}: the subtree's matching jobs \
                 ordered by id, each once"
            );
        }
        let mut counts: BTreeMap<JobState, u64> = BTreeMap::new();
        for &i in want {
            *counts.entry(made[i].state).or_default() += 1;
        }
        assert_eq!(
            ok(jobs.count_jobs(&group(root), filter).await, "count_jobs"),
            counts,
            "count_jobs({root}, {filter:?}): per state, states without jobs absent"
        );
    }
    let listed = all_jobs(&jobs, &group("acme/plant-1"), &JobFilter::default(), 3).await;
    assert_eq!(listed[4], made[6], "list_jobs returns the current records");
}

pub(super) async fn control_leases(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let (acme, pump) = (tenant("acme"), dev("pump-1"));
    let t = |d: i64| ts(T0 + d);
    assert_eq!(
        ok(jobs.get_control(&acme, &pump, t(0)).await, "get_control"),
        None
    );
    ok(
        jobs.release_control(&acme, &pump, "alice").await,
        "release_control when nobody holds it",
    );

    let lease = ok(
        jobs.acquire_control(&acme, &pump, "alice", t(100), t(0))
            .await,
        "acquire_control",
    );
    assert_eq!(
        (
            lease.tenant.clone(),
            lease.device.clone(),
            lease.holder.as_str(),
            lease.until
        ),
        (acme.clone(), pump.clone(), "alice", t(100)),
        "acquire_control returns the lease"
    );
    expect_kind(
        jobs.acquire_control(&acme, &pump, "bob", t(200), t(50))
            .await,
        ErrorKind::Conflict,
        "acquire_control while another holder's lease runs",
    );
    expect_kind(
        jobs.release_control(&acme, &pump, "bob").await,
        ErrorKind::Conflict,
        "release_control of a lease held by someone else",
    );
    assert_eq!(
        ok(jobs.get_control(&acme, &pump, t(60)).await, "get_control"),
        Some(lease.clone()),
        "refused acquire and release change nothing"
    );
    // Other devices and tenants are independent.
    ok(
        jobs.acquire_control(&acme, &dev("pump-2"), "bob", t(100), t(50))
            .await,
        "acquire_control of another device",
    );
    ok(
        jobs.acquire_control(&tenant("globex"), &pump, "bob", t(100), t(50))
            .await,
        "acquire_control in another tenant",
    );

    let renewed = ok(
        jobs.acquire_control(&acme, &pump, "alice", t(300), t(90))
            .await,
        "renew by the holder",
    );
    assert_eq!(renewed.until, t(300), "renewal extends the lease");
    assert_eq!(
        ok(jobs.get_control(&acme, &pump, t(250)).await, "get_control"),
        Some(renewed.clone())
    );
    expect_kind(
        jobs.acquire_control(&acme, &pump, "bob", t(400), t(250))
            .await,
        ErrorKind::Conflict,
        "acquire_control before the renewed lease lapses",
    );
    assert_eq!(
        ok(jobs.get_control(&acme, &pump, t(301)).await, "get_control"),
        None,
        "get_control ignores a lapsed lease"
    );
    let taken = ok(
        jobs.acquire_control(&acme, &pump, "bob", t(500), t(301))
            .await,
        "take over a lapsed lease",
    );
    assert_eq!(taken.holder, "bob");
    expect_kind(
        jobs.release_control(&acme, &pump, "alice").await,
        ErrorKind::Conflict,
        "the former holder releasing a lease taken over",
    );
    assert_eq!(
        ok(jobs.get_control(&acme, &pump, t(400)).await, "get_control"),
        Some(taken)
    );
    ok(
        jobs.release_control(&acme, &pump, "bob").await,
        "release by the holder",
    );
    assert_eq!(
        ok(jobs.get_control(&acme, &pump, t(400)).await, "get_control"),
        None,
        "a released lease is gone"
    );
    let again = ok(
        jobs.acquire_control(&acme, &pump, "alice", t(600), t(401))
            .await,
        "acquire after release",
    );
    assert_eq!(again.holder, "alice");
    assert_eq!(
        ok(
            jobs.get_control(&acme, &dev("pump-2"), t(60)).await,
            "get_control"
        )
        .map(|l| l.holder),
        Some("bob".to_owned()),
        "pump-2's lease is untouched"
    );
}

pub(super) async fn conditional_create(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let (acme, pump) = (tenant("acme"), dev("pump-1"));
    let t = |d: i64| ts(T0 + d);
    let by = |n: u64, who: &str| {
        let mut j = new_job(job_id(T0, n), "pump-1", "acme/plant-1", T0);
        j.created_by = who.to_owned();
        j
    };
    let head = |jobs: Arc<dyn JobStore>| async move {
        job_ids(&ok(
            jobs.queue_head(&tenant("acme"), &dev("pump-1"), DEFAULT_LANE, 100)
                .await,
            "queue_head",
        ))
    };

    let free = ok(
        jobs.create_job_unless_controlled(by(1, "bob"), t(0)).await,
        "create_job_unless_controlled without a lease",
    );
    assert!(free.created, "nobody holds the device: the job is created");

    ok(
        jobs.acquire_control(&acme, &pump, "alice", t(100), t(0))
            .await,
        "acquire_control",
    );
    expect_kind(
        jobs.create_job_unless_controlled(by(2, "bob"), t(50)).await,
        ErrorKind::Conflict,
        "create_job_unless_controlled while another holder's lease runs",
    );
    assert_eq!(
        head(jobs.clone()).await,
        vec![job_id(T0, 1)],
        "a refused creation stores nothing"
    );
    let own = ok(
        jobs.create_job_unless_controlled(by(3, "alice"), t(50))
            .await,
        "create_job_unless_controlled by the lease holder",
    );
    assert!(own.created, "the holder's own jobs are created");
    assert!(
        own.job.seq > free.job.seq,
        "a refused creation leaves the queue order intact"
    );
    let other = ok(
        jobs.create_job_unless_controlled(
            NewJob {
                device: dev("pump-2"),
                ..by(4, "bob")
            },
            t(50),
        )
        .await,
        "create_job_unless_controlled for another device",
    );
    assert!(other.created, "a lease covers only its own device");

    // An idempotent repeat answers with the earlier job whoever holds the lease now.
    let mut keyed = by(5, "bob");
    keyed.idempotency_key = Some("bob-1".into());
    jobs.release_control(&acme, &pump, "alice")
        .await
        .expect("release_control");
    let first = ok(
        jobs.create_job_unless_controlled(keyed.clone(), t(60))
            .await,
        "create_job_unless_controlled with a key",
    );
    assert!(first.created);
    ok(
        jobs.acquire_control(&acme, &pump, "alice", t(200), t(60))
            .await,
        "acquire_control again",
    );
    let again = ok(
        jobs.create_job_unless_controlled(
            NewJob {
                id: job_id(T0, 6),
                ..keyed
            },
            t(70),
        )
        .await,
        "create_job_unless_controlled repeating a used key under another's lease",
    );
    assert_eq!(
        (again.created, again.job),
        (false, first.job),
        "a used key returns the earlier job"
    );

    // A lapsed lease refuses nothing.
    let late = ok(
        jobs.create_job_unless_controlled(by(7, "bob"), t(200))
            .await,
        "create_job_unless_controlled once the lease lapsed",
    );
    assert!(late.created, "a lease is in force only before its `until`");
    // The plain creation ignores leases, as before.
    ok(
        jobs.acquire_control(&acme, &pump, "alice", t(400), t(300))
            .await,
        "acquire_control",
    );
    assert!(
        ok(jobs.create_job(by(8, "bob")).await, "create_job").created,
        "create_job does not look at leases"
    );
}
