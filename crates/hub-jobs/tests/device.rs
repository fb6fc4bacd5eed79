//! The `hub_core::DeviceJobs` seam as a device protocol (MQTT) uses it: through
//! `Arc<dyn DeviceJobs>`, with the wire form `DeviceReport`.

mod common;

use std::sync::Arc;

use common::*;
use hub_core::{DeviceJobs, DeviceReport, ErrorKind, JobState};
use hub_jobs::Command;
use serde_json::json;

fn seam(h: &Hub) -> Arc<dyn DeviceJobs> {
    Arc::new(h.svc.clone())
}

#[tokio::test]
async fn next_job_delivers_once_and_repeats_the_same_execution_until_started() {
    let h = hub().await;
    let jobs = seam(&h);
    assert_eq!(jobs.next_job(&pump(), None).await.unwrap(), None);
    let created = h.create(req(json!({"op": "reboot"}))).await;
    let first = jobs.next_job(&pump(), None).await.unwrap().unwrap();
    assert_eq!(first.id, created.id);
    assert_eq!(first.execution, 1);
    assert_eq!(first.state, JobState::Delivered);
    assert_eq!(first.lane, "default");
    assert_eq!(first.document, json!({"op": "reboot"}));
    // The device lost the answer and asks again: same job, same execution, no new claim.
    let again = jobs.next_job(&pump(), None).await.unwrap().unwrap();
    assert_eq!(again, first);
    // Another lane is independent and empty.
    assert_eq!(
        jobs.next_job(&pump(), Some("firmware")).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn reports_drive_the_job_to_its_result_and_repeats_are_idempotent() {
    let h = hub().await;
    let jobs = seam(&h);
    let created = h.create(req(json!({"op": "reboot"}))).await;
    let dj = jobs.next_job(&pump(), None).await.unwrap().unwrap();

    let progress = DeviceReport::InProgress {
        details: Some(json!({"percent": 50})),
        step_timeout_ms: None,
    };
    let after = jobs.report(&pump(), &dj.id, 1, progress).await.unwrap();
    assert_eq!(after.state, JobState::InProgress);
    assert_eq!(
        h.svc
            .get(&alice(), &acme(), &created.id)
            .await
            .unwrap()
            .status_details,
        Some(json!({"percent": 50}))
    );

    let done = DeviceReport::Succeeded {
        result: Some(json!({"uptime": 0})),
    };
    let after = jobs.report(&pump(), &dj.id, 1, done.clone()).await.unwrap();
    assert_eq!(after.state, JobState::Succeeded);
    // The device did not hear the answer and repeats: same job, nothing changes.
    let repeat = jobs.report(&pump(), &dj.id, 1, done).await.unwrap();
    assert_eq!(repeat, after);
    // A different result for the same execution is a conflict.
    let other = DeviceReport::Failed { result: None };
    let e = jobs.report(&pump(), &dj.id, 1, other).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let stored = h.svc.get(&alice(), &acme(), &created.id).await.unwrap();
    assert_eq!(stored.result, Some(json!({"uptime": 0})));
}

#[tokio::test]
async fn a_stale_execution_is_refused() {
    let h = hub().await;
    let jobs = seam(&h);
    h.create(req(json!({}))).await;
    let dj = jobs.next_job(&pump(), None).await.unwrap().unwrap();
    let e = jobs
        .report(&pump(), &dj.id, 2, DeviceReport::Succeeded { result: None })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn cancel_answers_map_to_the_machine() {
    let h = hub().await;
    let jobs = seam(&h);
    // The device agrees to cancel.
    let a = h.create(req(json!({"n": 1}))).await;
    let dj = jobs.next_job(&pump(), None).await.unwrap().unwrap();
    h.svc
        .cancel(&alice(), &acme(), &a.id, false, None)
        .await
        .unwrap();
    let after = jobs
        .report(&pump(), &dj.id, dj.execution, DeviceReport::Canceled)
        .await
        .unwrap();
    assert_eq!(after.state, JobState::Canceled);

    // The next job: the device refuses to cancel and goes on to succeed.
    let b = h.create(req(json!({"n": 2}))).await;
    let dj = jobs.next_job(&pump(), None).await.unwrap().unwrap();
    assert_eq!(dj.id, b.id);
    h.svc
        .cancel(&alice(), &acme(), &b.id, false, None)
        .await
        .unwrap();
    let after = jobs
        .report(&pump(), &dj.id, dj.execution, DeviceReport::CancelRefused)
        .await
        .unwrap();
    assert_eq!(after.state, JobState::CancelRejected);
    let after = jobs
        .report(
            &pump(),
            &dj.id,
            dj.execution,
            DeviceReport::Succeeded { result: None },
        )
        .await
        .unwrap();
    assert_eq!(after.state, JobState::Succeeded);
}

#[tokio::test]
async fn only_the_jobs_device_may_use_the_seam() {
    let h = hub().await;
    let jobs = seam(&h);
    let job = h.create(req(json!({}))).await;
    jobs.next_job(&pump(), None).await.unwrap().unwrap();
    // Another device of the same tenant, and the same device id in another tenant.
    for other in [
        device("pump-8", "acme/plant-1"),
        device("pump-7", "globex/plant-1"),
    ] {
        let e = jobs
            .report(&other, &job.id, 1, DeviceReport::Succeeded { result: None })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{other:?}");
        assert_eq!(jobs.next_job(&other, None).await.unwrap(), None);
    }
    // A user's token cannot act as a device.
    let e = jobs.next_job(&alice(), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    let e = jobs
        .report(&alice(), &job.id, 1, DeviceReport::Canceled)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    assert_eq!(h.state(&job.id).await, JobState::Delivered);
}

#[test]
fn every_report_maps_to_its_command() {
    use hub_jobs::device::report_command;
    let r = Some(json!({"code": 3}));
    let cases = [
        (
            DeviceReport::InProgress {
                details: None,
                step_timeout_ms: Some(5000),
            },
            Command::Progress {
                details: None,
                step_timeout_ms: Some(5000),
            },
        ),
        (
            DeviceReport::Succeeded { result: r.clone() },
            Command::Succeed { result: r.clone() },
        ),
        (
            DeviceReport::Failed { result: r.clone() },
            Command::Fail { result: r.clone() },
        ),
        (
            DeviceReport::Rejected { result: r.clone() },
            Command::Reject { result: r.clone() },
        ),
        (DeviceReport::Canceled, Command::AcceptCancel),
        (DeviceReport::CancelRefused, Command::RefuseCancel),
    ];
    for (report, cmd) in cases {
        assert_eq!(report_command(report).unwrap(), cmd);
    }
}
