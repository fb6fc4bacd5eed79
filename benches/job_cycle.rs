//! Job queue throughput of the storage backends: one cycle is create (enqueue) + claim (read the
//! queue head, compare-and-set to delivered) + complete (compare-and-set to succeeded), with many
//! devices working at once so that the SQLite writer can group-commit.
//!
//! `cargo bench --bench job_cycle` (set `HUB_BENCH_POSTGRES_URL` to include PostgreSQL).

// A benchmark reports on standard output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use hub_core::{Clock, JobId, JobState, SystemClock};
use hub_store::{JobStore, NewJob};

const DEVICES: u32 = 64;
const CYCLES_PER_DEVICE: u32 = 300;

async fn cycles(jobs: Arc<dyn JobStore>) -> u64 {
    let mut tasks = Vec::new();
    for d in 0..DEVICES {
        let jobs = jobs.clone();
        tasks.push(tokio::spawn(async move {
            let tenant: hub_core::TenantId = "acme".parse().unwrap();
            let device: hub_core::DeviceId = format!("dev-{d}").parse().unwrap();
            for _ in 0..CYCLES_PER_DEVICE {
                let now = SystemClock.now();
                jobs.create_job(NewJob {
                    id: JobId::new(now),
                    tenant: tenant.clone(),
                    device: device.clone(),
                    group: "acme/plant-1".parse().unwrap(),
                    lane: "default".into(),
                    state: JobState::Queued,
                    document: serde_json::json!({ "op": "reboot" }),
                    options: serde_json::json!({}),
                    idempotency_key: None,
                    created_by: "bench".into(),
                    bulk: None,
                    created_at: now,
                    due_at: None,
                })
                .await
                .unwrap();
                let mut head = jobs
                    .queue_head(&tenant, &device, "default", 1)
                    .await
                    .unwrap();
                let mut job = head.pop().expect("the job just created");
                let v = job.version;
                job.state = JobState::Delivered;
                job.execution += 1;
                let mut job = jobs.update_job(&job, v).await.unwrap();
                let v = job.version;
                job.state = JobState::Succeeded;
                job.result = Some(serde_json::json!({ "ok": true }));
                jobs.update_job(&job, v).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    u64::from(DEVICES * CYCLES_PER_DEVICE)
}

#[tokio::main]
async fn main() {
    for backend in hub_benches::backends().await {
        let (n, elapsed) = hub_benches::timed(cycles(backend.stores.jobs.clone())).await;
        hub_benches::report(
            &backend.label,
            "job cycles (create+claim+complete)",
            n,
            elapsed,
        );
        backend.cleanup().await;
    }
}
