//! The job service against the in-memory store, with a manual clock and fake device seams.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use hub_core::{ErrorKind, JobNotice, JobState, TenantId};
use hub_jobs::{Command, CreateJob, DeliveryPolicy, JobOptions};
use hub_store::{JobFilter, PageRequest, StoreLimits};
use serde_json::json;

#[tokio::test]
async fn a_device_receives_its_jobs_in_creation_order_one_at_a_time() {
    scenarios::a_device_receives_its_jobs_in_creation_order_one_at_a_time(&hub().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_deliver_one_execution() {
    scenarios::concurrent_claims_deliver_one_execution(Arc::new(hub().await)).await;
}

#[tokio::test]
async fn create_with_an_idempotency_key_returns_the_same_job() {
    let h = hub().await;
    let r = CreateJob {
        idempotency_key: Some("k-1".into()),
        ..req(json!({"op": "reboot"}))
    };
    let first = h.svc.create(&alice(), r.clone()).await.unwrap();
    let second = h.svc.create(&alice(), r.clone()).await.unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.job.id, second.job.id);
    let page = h
        .svc
        .list(
            &alice(),
            &group("acme"),
            &JobFilter::default(),
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    // The same key for another job is a conflict.
    let other = CreateJob {
        document: json!({"op": "factory-reset"}),
        ..r
    };
    let e = h.svc.create(&alice(), other).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // One creation event only.
    assert_eq!(
        transitions(&h.events.take()),
        vec![(None, JobState::Queued)]
    );
}

#[tokio::test]
async fn failures_are_retried_after_a_backoff_then_fail_for_good() {
    let h = hub().await;
    let opts = JobOptions {
        max_attempts: 2,
        retry_backoff_base_ms: 1000,
        ..JobOptions::default()
    };
    let job = h.create(with_options(json!("flash"), opts)).await;
    let d1 = h.claim().await.unwrap();
    let q = h
        .report(
            &d1,
            Command::Fail {
                result: Some(json!("crc")),
            },
        )
        .await
        .unwrap();
    assert_eq!((q.state, q.attempts), (JobState::Queued, 1));
    // The repeated failure report is answered as success.
    let again = h
        .report(
            &d1,
            Command::Fail {
                result: Some(json!("crc")),
            },
        )
        .await
        .unwrap();
    assert_eq!(again.version, q.version);
    // Backing off: nothing to claim yet.
    assert_eq!(h.claim().await, None);
    h.notices.take();
    h.advance(1000);
    assert_eq!(h.svc.tick().await.unwrap(), 1);
    assert_eq!(
        h.notices.take(),
        vec![(dev("pump-7"), JobNotice::JobAvailable { job: job.id })]
    );
    let d2 = h.claim().await.unwrap();
    assert_eq!((d2.id, d2.execution), (job.id, 2));
    // A stale report of the first execution is refused.
    let e = h
        .svc
        .report(&pump(), &job.id, 1, Command::Start)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let f = h
        .report(
            &d2,
            Command::Fail {
                result: Some(json!("crc")),
            },
        )
        .await
        .unwrap();
    assert_eq!((f.state, f.attempts), (JobState::Failed, 2));
    let evs = transitions(&h.events.take());
    assert_eq!(
        evs,
        vec![
            (None, JobState::Queued),
            (Some(JobState::Queued), JobState::Delivered),
            (Some(JobState::Delivered), JobState::Failed),
            (Some(JobState::Failed), JobState::Queued),
            (Some(JobState::Queued), JobState::Delivered),
            (Some(JobState::Delivered), JobState::Failed),
        ]
    );
}

#[tokio::test]
async fn rejected_jobs_are_not_retried() {
    let h = hub().await;
    let opts = JobOptions {
        max_attempts: 5,
        ..JobOptions::default()
    };
    h.create(with_options(json!("x"), opts)).await;
    let d = h.claim().await.unwrap();
    let r = h
        .report(&d, Command::Reject { result: None })
        .await
        .unwrap();
    assert_eq!(r.state, JobState::Rejected);
    h.advance(3_600_000);
    h.svc.tick().await.unwrap();
    assert_eq!(h.claim().await, None);
}

#[tokio::test]
async fn undelivered_jobs_expire_after_their_ttl() {
    let h = hub().await;
    let opts = JobOptions {
        ttl_ms: Some(5000),
        ..JobOptions::default()
    };
    let a = h.create(with_options(json!("a"), opts)).await;
    let b = h.create(with_options(json!("b"), opts)).await;
    h.advance(4999);
    assert_eq!(h.svc.tick().await.unwrap(), 0);
    assert_eq!(h.state(&a.id).await, JobState::Queued);
    h.advance(1);
    assert_eq!(h.svc.tick().await.unwrap(), 2);
    assert_eq!(h.state(&a.id).await, JobState::Expired);
    assert_eq!(h.state(&b.id).await, JobState::Expired);

    // Without a tick, a claim still never hands out an expired job.
    let c = h.create(with_options(json!("c"), opts)).await;
    h.advance(5000);
    assert_eq!(h.claim().await, None);
    assert_eq!(h.state(&c.id).await, JobState::Expired);
}

#[tokio::test]
async fn an_execution_timeout_releases_the_queue() {
    scenarios::an_execution_timeout_releases_the_queue(&hub().await).await;
}

#[tokio::test]
async fn cooperative_cancel_asks_the_device() {
    let h = hub().await;
    let job = h.create(req(json!("x"))).await;
    let second = h.create(req(json!("y"))).await;
    let d = h.claim().await.unwrap();
    let ip = h.report(&d, Command::Start).await.unwrap();
    h.notices.take();
    let c = h
        .svc
        .cancel(&alice(), &acme(), &job.id, false, None)
        .await
        .unwrap();
    assert_eq!(c.state, JobState::Canceling);
    assert_eq!(
        h.notices.take(),
        vec![(dev("pump-7"), JobNotice::CancelRequested { job: job.id })]
    );
    // The device refuses and goes on.
    let r = h.report(&ip, Command::RefuseCancel).await.unwrap();
    assert_eq!(r.state, JobState::CancelRejected);
    assert_eq!(h.claim().await, None);
    // Asked again, it agrees; the queue moves on.
    h.svc
        .cancel(&alice(), &acme(), &job.id, false, None)
        .await
        .unwrap();
    let done = h.report(&ip, Command::AcceptCancel).await.unwrap();
    assert_eq!(done.state, JobState::Canceled);
    assert_eq!(h.claim().await.unwrap().id, second.id);
}

#[tokio::test]
async fn forced_cancel_is_immediate_and_late_results_are_refused() {
    let h = hub().await;
    let job = h.create(req(json!("x"))).await;
    let queued = h.create(req(json!("y"))).await;
    let d = h.claim().await.unwrap();
    let c = h
        .svc
        .cancel(&alice(), &acme(), &job.id, true, None)
        .await
        .unwrap();
    assert_eq!(c.state, JobState::Canceled);
    let e = h.report(&d, ok("too late")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // A queued job is canceled at once too, conditionally on its version.
    let e = h
        .svc
        .cancel(
            &alice(),
            &acme(),
            &queued.id,
            false,
            Some(queued.version + 1),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
    let c = h
        .svc
        .cancel(&alice(), &acme(), &queued.id, false, Some(queued.version))
        .await
        .unwrap();
    assert_eq!(c.state, JobState::Canceled);
    // Canceling again is idempotent; removing leaves a tombstone.
    h.svc
        .cancel(&alice(), &acme(), &queued.id, false, None)
        .await
        .unwrap();
    let r = h
        .svc
        .remove(&alice(), &acme(), &queued.id, None)
        .await
        .unwrap();
    assert_eq!(r.state, JobState::Removed);
}

#[tokio::test]
async fn duplicate_results_are_accepted_and_conflicting_ones_refused() {
    let h = hub().await;
    h.create(req(json!("x"))).await;
    let d = h.claim().await.unwrap();
    let s = h.report(&d, ok("v1")).await.unwrap();
    let again = h.report(&d, ok("v1")).await.unwrap();
    assert_eq!(
        (again.state, again.version),
        (JobState::Succeeded, s.version)
    );
    let e = h.report(&d, ok("v2")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.problem().status, 409);
}

#[tokio::test]
async fn exclusive_control_refuses_other_controllers() {
    let h = hub().await;
    let bob = user("bob", "acme/plant-1");
    h.svc
        .acquire_control(
            &alice(),
            &group("acme/plant-1"),
            &dev("pump-7"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let e = h.svc.create(&bob, req(json!("x"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let e = h
        .svc
        .acquire_control(
            &bob,
            &group("acme/plant-1"),
            &dev("pump-7"),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // The holder creates jobs as usual.
    h.create(req(json!("mine"))).await;
    // Once the lease lapses (or is released), others may create again.
    h.advance(60_000);
    h.svc.create(&bob, req(json!("y"))).await.unwrap();
    h.svc
        .release_control(&alice(), &group("acme/plant-1"), &dev("pump-7"))
        .await
        .unwrap();
}

#[tokio::test]
async fn other_tenants_and_devices_see_nothing() {
    let h = hub().await;
    let job = h.create(req(json!("x"))).await;
    let mallory = user("mallory", "globex");
    let globex: TenantId = "globex".parse().unwrap();
    for tenant in [acme(), globex.clone()] {
        let e = h.svc.get(&mallory, &tenant, &job.id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = h
            .svc
            .cancel(&mallory, &tenant, &job.id, true, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
    let e = h.svc.create(&mallory, req(json!("x"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // A user of a sibling subtree in the same tenant does not see it either.
    let carol = user("carol", "acme/plant-2");
    let e = h.svc.get(&carol, &acme(), &job.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // Another device cannot claim or report on it.
    let other = device("pump-8", "acme/plant-1");
    assert_eq!(h.svc.claim_next(&other, None).await.unwrap(), None);
    let d = h.claim().await.unwrap();
    let e = h
        .svc
        .report(&other, &job.id, d.execution, Command::Start)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let foreign = device("pump-7", "globex/plant-1");
    let e = h
        .svc
        .report(&foreign, &job.id, d.execution, Command::Start)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // Users cannot act as the device.
    let e = h.svc.claim_next(&alice(), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

#[tokio::test]
async fn delivery_policies_apply_to_offline_devices() {
    let h = hub().await;
    h.presence.offline.lock().unwrap().insert(dev("pump-7"));
    let fail = |delivery| JobOptions {
        delivery,
        ..JobOptions::default()
    };
    let e = h
        .svc
        .create(
            &alice(),
            with_options(json!("x"), fail(DeliveryPolicy::FailIfOffline)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let wait = fail(DeliveryPolicy::WaitOnline { max_wait_ms: 5000 });
    let e = h
        .svc
        .create(&alice(), with_options(json!("x"), wait))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let page = h
        .svc
        .list(
            &alice(),
            &group("acme"),
            &JobFilter::default(),
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert!(page.items.is_empty(), "refused creations store nothing");
    // The device connects during the wait.
    h.presence.comes_online.store(true, Ordering::SeqCst);
    h.svc
        .create(&alice(), with_options(json!("x"), wait))
        .await
        .unwrap();
    // Queueing never asks.
    h.svc
        .create(
            &alice(),
            with_options(json!("y"), fail(DeliveryPolicy::Queue)),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn declared_concurrency_lets_a_device_hold_several_jobs() {
    let h = hub().await;
    let two = JobOptions {
        concurrency: 2,
        ..JobOptions::default()
    };
    let a = h.create(with_options(json!("a"), two)).await;
    let b = h.create(with_options(json!("b"), two)).await;
    h.create(with_options(json!("c"), two)).await;
    let da = h.claim().await.unwrap();
    assert_eq!(da.id, a.id);
    h.report(&da, Command::Start).await.unwrap();
    let db = h.claim().await.unwrap();
    assert_eq!(db.id, b.id);
    h.report(&db, Command::Start).await.unwrap();
    assert_eq!(h.claim().await, None, "two at most");
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let h = hub().await;
    let bad = JobOptions {
        max_attempts: 0,
        ..JobOptions::default()
    };
    let e = h
        .svc
        .create(&alice(), with_options(json!("x"), bad))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn claims_keep_the_order_and_reports_are_size_limited() {
    let h = hub().await;
    h.create(req(json!("first"))).await;
    let second = h.create(req(json!("second"))).await;
    // A device cannot jump the queue by claiming a later job directly.
    let e = h
        .svc
        .report(&pump(), &second.id, 0, Command::Claim)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let d = h.claim().await.unwrap();
    assert_ne!(d.id, second.id);
    let huge = json!("x".repeat(StoreLimits::default().max_job_status_bytes + 1));
    let e = h
        .report(
            &d,
            Command::Progress {
                details: Some(huge),
                step_timeout_ms: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert_eq!(
        h.state(&d.id).await,
        JobState::Delivered,
        "nothing half-written"
    );
}

#[tokio::test]
async fn a_long_poll_returns_nothing_when_its_wait_runs_out() {
    let h = hub().await;
    let got = h
        .svc
        .wait_next(&pump(), None, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got, None);
}

#[tokio::test]
async fn a_long_poll_wakes_up_when_a_job_is_created() {
    let h = Arc::new(hub_with_sleep(Arc::new(Never)).await);
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move {
            h.svc
                .wait_next(&pump(), None, Duration::from_secs(30))
                .await
        })
    };
    // Let the waiter find the queue empty and park.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished(), "nothing to claim yet");
    let job = h.create(req(json!("wake"))).await;
    // The bound only turns a missed wake-up into a failure instead of a hang.
    let got = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiter was woken")
        .unwrap()
        .unwrap()
        .expect("woken with the job");
    assert_eq!(
        (got.id, got.state, got.execution),
        (job.id, JobState::Delivered, 1)
    );
}

#[tokio::test]
async fn naming_a_group_one_may_act_in_does_not_reach_a_device_elsewhere() {
    let h = hub().await;
    let bob = user("bob", "acme/plant-1");
    // pump-9 lives in acme/plant-2; bob names his own group for it.
    let sneaky = CreateJob {
        device: dev("pump-9"),
        group: group("acme/plant-1"),
        ..req(json!("reboot"))
    };
    let e = h.svc.create(&bob, sneaky.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = h
        .svc
        .acquire_control(
            &bob,
            &group("acme/plant-1"),
            &dev("pump-9"),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // A device that is not registered at all is not found either.
    let ghost = CreateJob {
        device: dev("ghost-1"),
        ..req(json!("reboot"))
    };
    assert_eq!(
        h.svc.create(&alice(), ghost).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Even a tenant administrator must name the device's real group.
    let e = h.svc.create(&alice(), sneaky).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let honest = CreateJob {
        device: dev("pump-9"),
        group: group("acme/plant-2"),
        ..req(json!("reboot"))
    };
    assert!(h.svc.create(&alice(), honest).await.unwrap().created);
    // Nothing reached pump-9's queue through the sneaky requests.
    let page = h
        .svc
        .list(
            &alice(),
            &group("acme"),
            &JobFilter {
                device: Some(dev("pump-9")),
                ..JobFilter::default()
            },
            PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
}
