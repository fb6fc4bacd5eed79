//! Scenarios that every job store must carry the same way: run by `service.rs` on the
//! in-memory store and by `backends.rs` on SQLite and PostgreSQL.

use std::sync::Arc;

use hub_core::{JobId, JobNotice, JobState};
use hub_jobs::{Command, JobOptions};
use serde_json::json;

use super::*;

/// Jobs arrive in creation order, one at a time; a lost answer is redelivered.
pub async fn a_device_receives_its_jobs_in_creation_order_one_at_a_time(h: &Hub) {
    let ids: Vec<JobId> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(h.create(req(json!({ "n": i }))).await.id);
        }
        v
    };
    // Only the head was announced.
    assert_eq!(
        h.notices.take(),
        vec![(dev("pump-7"), JobNotice::JobAvailable { job: ids[0] })]
    );
    for id in &ids {
        let job = h.claim().await.expect("a job");
        assert_eq!(job.id, *id);
        assert_eq!((job.state, job.execution), (JobState::Delivered, 1));
        // The answer was lost: claiming again redelivers the same execution.
        let again = h.claim().await.unwrap();
        assert_eq!(
            (again.id, again.execution, again.version),
            (job.id, 1, job.version)
        );
        let started = h.report(&job, Command::Start).await.unwrap();
        // While it runs, nothing else is handed out.
        assert_eq!(h.claim().await, None);
        h.report(&started, ok("done")).await.unwrap();
    }
    assert_eq!(h.claim().await, None);
    let evs = transitions(&h.events.take());
    assert_eq!(
        evs.iter()
            .filter(|(_, to)| *to == JobState::Succeeded)
            .count(),
        3
    );
}

/// Eight claimers race for one job: one execution, one event.
pub async fn concurrent_claims_deliver_one_execution(h: Arc<Hub>) {
    let job = h.create(req(json!("x"))).await;
    h.events.take();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.claim().await }));
    }
    for t in tasks {
        let got = t.await.unwrap().expect("every claimer gets the job");
        assert_eq!((got.id, got.execution), (job.id, 1));
    }
    let evs = transitions(&h.events.take());
    assert_eq!(evs, vec![(Some(JobState::Queued), JobState::Delivered)]);
    let stored = h.store.get_job(&acme(), &job.id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.execution), (2, 1));
}

/// A stuck job times out (a step timeout extends it first) and releases the queue.
pub async fn an_execution_timeout_releases_the_queue(h: &Hub) {
    let opts = JobOptions {
        in_progress_timeout_ms: 10_000,
        ..JobOptions::default()
    };
    let stuck = h.create(with_options(json!("stuck"), opts)).await;
    let next = h.create(req(json!("next"))).await;
    let d = h.claim().await.unwrap();
    h.report(&d, Command::Start).await.unwrap();
    // A progress report with a step timeout extends the deadline.
    h.advance(9000);
    h.report(
        &d,
        Command::Progress {
            details: Some(json!({"pct": 90})),
            step_timeout_ms: Some(5000),
        },
    )
    .await
    .unwrap();
    h.advance(2000);
    assert_eq!(h.svc.tick().await.unwrap(), 0);
    assert_eq!(h.claim().await, None, "the head job still runs");
    h.notices.take();
    h.advance(3000);
    assert_eq!(h.svc.tick().await.unwrap(), 1);
    assert_eq!(h.state(&stuck.id).await, JobState::TimedOut);
    assert_eq!(
        h.notices.take(),
        vec![(dev("pump-7"), JobNotice::JobAvailable { job: next.id })]
    );
    assert_eq!(h.claim().await.unwrap().id, next.id);
}
