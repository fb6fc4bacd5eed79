//! Concurrency checks: many tokio tasks racing on one job, one queue, one key, one batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hub_core::{ErrorKind, JobState};
use tokio::task::JoinSet;

use super::jobs::{all_jobs, create_ok, new_job};
use super::{StoresFactory, T0, dev, group, job_id, ok, series, tenant, ts};
use crate::jobs::{DEFAULT_LANE, JobFilter, JobRecord};
use crate::measurements::{AggregateQuery, AggregateScope, Point, SeriesPoints};

const RACERS: usize = 12;

async fn join_all<T: Send + 'static>(mut set: JoinSet<T>, what: &str) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(v) => out.push(v),
            Err(e) => panic!("{what}: a racing task failed: {e}"),
        }
    }
    out
}

pub(super) async fn update_race(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let job = create_ok(&jobs, new_job(job_id(T0, 1), "pump-1", "acme/p", T0)).await;
    let mut current = job;
    for round in 0..5u64 {
        let mut set = JoinSet::new();
        for racer in 0..RACERS {
            let (jobs, mut mine) = (jobs.clone(), current.clone());
            mine.attempts = racer as u32;
            mine.state = if racer % 2 == 0 {
                JobState::InProgress
            } else {
                JobState::Delivered
            };
            mine.updated_at = ts(T0 + 1 + round as i64);
            let expected = current.version;
            set.spawn(async move { (racer, jobs.update_job(&mine, expected).await) });
        }
        let results = join_all(set, "update_race").await;
        let mut winners = Vec::new();
        for (racer, r) in results {
            match r {
                Ok(rec) => winners.push((racer, rec)),
                Err(e) => assert_eq!(
                    e.kind(),
                    ErrorKind::PreconditionFailed,
                    "round {round}: a losing update_job must fail with PreconditionFailed, got {e}"
                ),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {RACERS} update_job calls with the same expected version {}: exactly \
             one must succeed, {} did",
            current.version,
            winners.len()
        );
        let (racer, rec) = winners.pop().expect("one winner");
        assert_eq!(rec.version, current.version + 1, "the winner's version");
        assert_eq!(
            rec.attempts, racer as u32,
            "the stored record is the winner's"
        );
        let stored = ok(jobs.get_job(&tenant("acme"), &rec.id).await, "get_job").expect("job");
        assert_eq!(
            stored, rec,
            "round {round}: the store holds exactly the winner's write"
        );
        current = stored;
    }
}

pub(super) async fn claimers(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let acme = tenant("acme");
    let queues = [
        ("pump-1", DEFAULT_LANE),
        ("pump-1", "fw"),
        ("pump-2", DEFAULT_LANE),
    ];
    let mut all = BTreeSet::new();
    for n in 0..36u64 {
        let (d, lane) = queues[n as usize % queues.len()];
        let mut j = new_job(job_id(T0 + n as i64, n), d, "acme/p", T0 + n as i64);
        j.lane = lane.to_owned();
        all.insert(create_ok(&jobs, j).await.id);
    }
    let mut set = JoinSet::new();
    for claimer in 0..8u32 {
        let (jobs, acme) = (jobs.clone(), acme.clone());
        set.spawn(async move {
            let mut claimed = Vec::new();
            let mut idle_rounds = 0u32;
            loop {
                let mut all_empty = true;
                for (q, (d, lane)) in queues.iter().enumerate() {
                    // Spread the claimers over the queues.
                    let (d, lane) = if claimer % 2 == 0 { (*d, *lane) } else { queues[queues.len() - 1 - q] };
                    let head = jobs
                        .queue_head(&acme, &dev(d), lane, 1)
                        .await
                        .unwrap_or_else(|e| panic!("queue_head({d}, {lane}): {e}"));
                    let Some(job) = head.into_iter().next() else { continue };
                    all_empty = false;
                    if job.state != JobState::Queued {
                        // Claimed by someone else who has not finished it yet.
                        continue;
                    }
                    let mut claim = job.clone();
                    claim.state = JobState::Delivered;
                    claim.execution += 1;
                    match jobs.update_job(&claim, job.version).await {
                        Ok(delivered) => {
                            claimed.push(delivered.id);
                            // Finish it so the next one comes to the head; nobody else may
                            // touch a job we claimed.
                            let mut done = delivered.clone();
                            done.state = JobState::Succeeded;
                            jobs.update_job(&done, delivered.version).await.unwrap_or_else(|e| {
                                panic!(
                                    "claimer {claimer}: finishing job {} that it claimed failed: {e}",
                                    delivered.id
                                )
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::PreconditionFailed => {}
                        Err(e) => panic!("claimer {claimer}: update_job: {e}"),
                    }
                }
                if all_empty {
                    return claimed;
                }
                idle_rounds += 1;
                assert!(idle_rounds < 1_000_000, "claimer {claimer} makes no progress");
                tokio::task::yield_now().await;
            }
        });
    }
    let mut claims: BTreeMap<hub_core::JobId, u32> = BTreeMap::new();
    for claimed in join_all(set, "claimers").await {
        for id in claimed {
            *claims.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = claims.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs claimed more than once: {twice:?}");
    let claimed: BTreeSet<_> = claims.keys().copied().collect();
    assert_eq!(claimed, all, "every job is claimed exactly once");
    for id in &all {
        let j = ok(jobs.get_job(&acme, id).await, "get_job").expect("job");
        assert_eq!(
            (j.state, j.version, j.execution),
            (JobState::Succeeded, 3, 1),
            "job {id}: claimed once and finished once"
        );
    }
}

pub(super) async fn seq(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    let mut set = JoinSet::new();
    for task in 0..16u64 {
        let jobs = jobs.clone();
        set.spawn(async move {
            let mut mine: Vec<JobRecord> = Vec::new();
            for k in 0..3u64 {
                let n = task * 10 + k;
                let mut j = new_job(job_id(T0, n), "pump-1", "acme/p", T0);
                if task % 3 == 0 {
                    j.lane = "other".into();
                }
                let out = jobs
                    .create_job(j)
                    .await
                    .unwrap_or_else(|e| panic!("create_job: {e}"));
                assert!(out.created);
                mine.push(out.job);
            }
            mine
        });
    }
    let mut seqs = Vec::new();
    for mine in join_all(set, "seq").await {
        assert!(
            mine.windows(2).all(|w| w[0].seq < w[1].seq),
            "one task's jobs, created one after another, must get increasing seqs: {:?}",
            mine.iter().map(|j| j.seq).collect::<Vec<_>>()
        );
        seqs.extend(mine.iter().map(|j| j.seq));
    }
    let distinct: BTreeSet<_> = seqs.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        seqs.len(),
        "concurrent create_job for one device must give distinct seqs: {seqs:?}"
    );
    let acme = tenant("acme");
    let mut queued = ok(
        jobs.queue_head(&acme, &dev("pump-1"), DEFAULT_LANE, 1000)
            .await,
        "queue_head",
    );
    queued.extend(ok(
        jobs.queue_head(&acme, &dev("pump-1"), "other", 1000).await,
        "queue_head",
    ));
    assert_eq!(queued.len(), 48, "every created job is queued");
}

pub(super) async fn idempotency(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    for round in 0..3u64 {
        let key = format!("deploy-{round}");
        let mut set = JoinSet::new();
        for task in 0..RACERS as u64 {
            let (jobs, key) = (jobs.clone(), key.clone());
            set.spawn(async move {
                let mut j = new_job(job_id(T0, round * 100 + task), "pump-1", "acme/p", T0);
                j.idempotency_key = Some(key);
                jobs.create_job(j)
                    .await
                    .unwrap_or_else(|e| panic!("create_job: {e}"))
            });
        }
        let outs = join_all(set, "idempotency").await;
        let created = outs.iter().filter(|o| o.created).count();
        assert_eq!(
            created, 1,
            "{RACERS} concurrent create_job with key {key}: exactly one creates, {created} did"
        );
        let ids: BTreeSet<_> = outs.iter().map(|o| o.job.id).collect();
        assert_eq!(
            ids.len(),
            1,
            "every caller gets the same job for key {key}: {ids:?}"
        );
    }
    let listed = all_jobs(&jobs, &group("acme"), &JobFilter::default(), 0).await;
    assert_eq!(listed.len(), 3, "one job per key is stored: {listed:?}");
}

pub(super) async fn append(factory: StoresFactory) {
    let stores = factory().await;
    let m = stores.measurements;
    let batch: Arc<Vec<SeriesPoints>> = Arc::new(
        ["pump-1", "pump-2"]
            .iter()
            .map(|d| SeriesPoints {
                tenant: tenant("acme"),
                device: dev(d),
                series: series("temp"),
                points: (0..60)
                    .map(|i| Point {
                        ts: ts(T0 + i * 60_000),
                        value: i as f64,
                    })
                    .collect(),
            })
            .collect(),
    );
    let mut set = JoinSet::new();
    for _ in 0..8 {
        let (m, batch) = (m.clone(), batch.clone());
        set.spawn(async move {
            m.append(&batch)
                .await
                .unwrap_or_else(|e| panic!("append: {e}"))
        });
    }
    let outs = join_all(set, "append").await;
    let inserted: u64 = outs.iter().map(|o| o.inserted).sum();
    let duplicates: u64 = outs.iter().map(|o| o.duplicates).sum();
    assert_eq!(
        (inserted, duplicates),
        (120, 7 * 120),
        "8 concurrent appends of the same 120 points: each point inserted once in total"
    );
    let buckets = ok(
        m.aggregate(&AggregateQuery {
            scope: AggregateScope::Device {
                tenant: tenant("acme"),
                device: dev("pump-1"),
            },
            series: series("temp"),
            from: ts(T0),
            to: ts(T0 + 3_600_000),
            bucket: std::time::Duration::from_secs(3600),
        })
        .await,
        "aggregate",
    );
    assert_eq!(buckets.len(), 1, "one hour bucket: {buckets:?}");
    assert_eq!(
        buckets[0].count, 60,
        "the hourly rollup counts each point once"
    );
    assert_eq!(
        buckets[0].sum,
        (0..60).sum::<i64>() as f64,
        "the hourly rollup sums each point once"
    );
}

/// Counts the successes of racing calls; every failure must be of `kind`.
fn winners<T>(results: Vec<hub_core::Result<T>>, kind: ErrorKind, what: &str) -> Vec<T> {
    let mut won = Vec::new();
    for r in results {
        match r {
            Ok(v) => won.push(v),
            Err(e) => assert_eq!(
                e.kind(),
                kind,
                "{what}: a losing call must fail with {kind:?}, got {:?}: {e}",
                e.kind()
            ),
        }
    }
    won
}

pub(super) async fn registry(factory: StoresFactory) {
    let reg = factory().await.registry;
    let mut set = JoinSet::new();
    for _ in 0..RACERS {
        let reg = reg.clone();
        set.spawn(async move { reg.create_tenant(&tenant("acme"), "ACME", ts(T0)).await });
    }
    let won = winners(
        join_all(set, "create_tenant").await,
        ErrorKind::Conflict,
        "create_tenant race",
    );
    assert_eq!(
        won.len(),
        1,
        "{RACERS} concurrent create_tenant: exactly one succeeds"
    );

    let mut set = JoinSet::new();
    for _ in 0..RACERS {
        let reg = reg.clone();
        set.spawn(async move { reg.create_group(&group("acme/plant-1"), "P1", ts(T0)).await });
    }
    let won = winners(
        join_all(set, "create_group").await,
        ErrorKind::Conflict,
        "create_group race",
    );
    assert_eq!(
        won.len(),
        1,
        "{RACERS} concurrent create_group of one path: exactly one succeeds"
    );

    let mut set = JoinSet::new();
    for racer in 0..RACERS {
        let reg = reg.clone();
        set.spawn(async move {
            let mut d = super::registry::new_device("pump-1", "acme/plant-1");
            d.display_name = format!("racer {racer}");
            reg.create_device(d, ts(T0)).await
        });
    }
    let won = winners(
        join_all(set, "create_device").await,
        ErrorKind::Conflict,
        "create_device race",
    );
    assert_eq!(
        won.len(),
        1,
        "{RACERS} concurrent create_device of one id: exactly one succeeds"
    );
    let stored = ok(
        reg.get_device(&tenant("acme"), &dev("pump-1")).await,
        "get_device",
    );
    assert_eq!(
        stored.as_ref(),
        won.first(),
        "the stored device is the winner's"
    );

    let mut set = JoinSet::new();
    for racer in 0..RACERS {
        let reg = reg.clone();
        set.spawn(async move {
            let patch = crate::DevicePatch {
                display_name: Some(format!("renamed by {racer}")),
                ..crate::DevicePatch::default()
            };
            reg.update_device(&tenant("acme"), &dev("pump-1"), patch, Some(1), ts(T0 + 1))
                .await
        });
    }
    let won = winners(
        join_all(set, "update_device").await,
        ErrorKind::PreconditionFailed,
        "update_device race",
    );
    assert_eq!(
        won.len(),
        1,
        "{RACERS} concurrent update_device at version 1: exactly one succeeds"
    );
    let stored = ok(
        reg.get_device(&tenant("acme"), &dev("pump-1")).await,
        "get_device",
    );
    assert_eq!(
        stored.as_ref(),
        won.first(),
        "the stored device is the winner's, at version 2"
    );
}

pub(super) async fn control(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    for round in 0..3i64 {
        let now = T0 + round * 1000;
        let mut set = JoinSet::new();
        for racer in 0..RACERS {
            let jobs = jobs.clone();
            set.spawn(async move {
                jobs.acquire_control(
                    &tenant("acme"),
                    &dev("pump-1"),
                    &format!("controller-{racer}"),
                    ts(now + 500),
                    ts(now),
                )
                .await
            });
        }
        let won = winners(
            join_all(set, "acquire_control").await,
            ErrorKind::Conflict,
            "acquire_control race",
        );
        assert_eq!(
            won.len(),
            1,
            "round {round}: {RACERS} controllers racing for a free device: exactly one gets it"
        );
        assert_eq!(
            ok(
                jobs.get_control(&tenant("acme"), &dev("pump-1"), ts(now + 1))
                    .await,
                "get_control"
            )
            .as_ref(),
            won.first(),
            "the lease in force is the winner's"
        );
        // The lease lapses at now + 500; the next round starts at now + 1000.
    }
}

pub(super) async fn control_vs_create(factory: StoresFactory) {
    let jobs = factory().await.jobs;
    for round in 0..4u64 {
        let device = format!("pump-{round}");
        let now = T0 + 1000 * round as i64;
        let mut set = JoinSet::new();
        // Creators by bob, with a lease taken by alice in their midst.
        for racer in 0..RACERS as u64 {
            let (j, d) = (jobs.clone(), device.clone());
            set.spawn(async move {
                let (jobs, device) = (j, d);
                let mut job = new_job(job_id(now, round * 100 + racer), &device, "acme/p", now);
                job.created_by = "bob".to_owned();
                let id = job.id;
                (
                    Some(id),
                    jobs.create_job_unless_controlled(job, ts(now))
                        .await
                        .map(|o| vec![o.job.id]),
                )
            });
            if racer == RACERS as u64 / 2 {
                let (jobs, device) = (jobs.clone(), device.clone());
                set.spawn(async move {
                    let lease = jobs
                        .acquire_control(
                            &tenant("acme"),
                            &dev(&device),
                            "alice",
                            ts(now + 500),
                            ts(now),
                        )
                        .await;
                    assert!(lease.is_ok(), "alice takes the free device: {lease:?}");
                    // What the holder sees right after the grant.
                    let seen = jobs
                        .queue_head(&tenant("acme"), &dev(&device), DEFAULT_LANE, 1000)
                        .await
                        .map(|h| h.into_iter().map(|j| j.id).collect::<Vec<_>>());
                    (None, seen)
                });
            }
        }
        let results = join_all(set, "create_job_unless_controlled vs acquire_control").await;
        let mut seen_by_holder = None;
        let mut created = BTreeSet::new();
        for (id, r) in results {
            match (id, r) {
                (None, r) => seen_by_holder = Some(ok(r, "queue_head after the grant")),
                (Some(_), Ok(ids)) => created.extend(ids),
                (Some(id), Err(e)) => assert_eq!(
                    e.kind(),
                    ErrorKind::Conflict,
                    "round {round}: creation {id} may only be refused by the lease: {e}"
                ),
            }
        }
        let seen: BTreeSet<_> = seen_by_holder
            .expect("the acquirer ran")
            .into_iter()
            .collect();
        assert_eq!(
            created, seen,
            "round {round}: every creation that succeeded was stored before the lease was \
             granted (the holder saw it), and none was stored after"
        );
    }
}
