//! The Job API end to end, through `JobService` over each storage backend:
//!
//! - **cycles**: a controller creates a job, the device is notified, claims it, reports its
//!   result, and the controller reads the result; many devices at once.
//! - **push latency**: jobs created at a steady 1,000 per second across 100 devices; the time from
//!   the controller's `create` call to the device's notification (`JobNotifier::notify`), as
//!   percentiles.
//!
//! `cargo bench --bench job_service` (set `HUB_BENCH_POSTGRES_URL` to include PostgreSQL).

// A benchmark reports on standard output.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hub_core::{
    BoxFuture, DeviceId, DevicePrincipal, DiscardEvents, GroupPath, JobId, JobNotice, JobNotifier,
    NotifyOutcome, Presence, PresenceQuery, PresenceState, Principal, Role, SystemClock, TenantId,
    UserPrincipal,
};
use hub_jobs::{Command, CreateJob, JobOptions, JobService};
use hub_store::{NewDevice, Stores};
use tokio::sync::Notify;

const DEVICES: usize = 100;
const CYCLES_PER_DEVICE: usize = 60;
const PUSH_RATE_PER_SECOND: u64 = 1_000;
const PUSH_JOBS: usize = 5_000;

/// Wakes the device task of each device, and records when each job's notice arrived.
#[derive(Debug, Default)]
struct Devices {
    wake: HashMap<DeviceId, Arc<Notify>>,
    notified: Mutex<HashMap<JobId, Instant>>,
}

impl JobNotifier for Devices {
    fn notify(&self, _tenant: &TenantId, device: &DeviceId, notice: JobNotice) -> NotifyOutcome {
        if let JobNotice::JobAvailable { job } = notice {
            self.notified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(job)
                .or_insert_with(Instant::now);
        }
        if let Some(n) = self.wake.get(device) {
            n.notify_one();
        }
        NotifyOutcome::Sent
    }
}

#[derive(Debug)]
struct AlwaysOnline;

impl PresenceQuery for AlwaysOnline {
    fn presence(&self, _tenant: &TenantId, _device: &DeviceId) -> Presence {
        Presence {
            state: PresenceState::Online,
            last_seen: None,
            node: None,
        }
    }
    fn wait_online<'a>(&'a self, _: &'a TenantId, _: &'a DeviceId) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

fn device_id(i: usize) -> DeviceId {
    format!("dev-{i}").parse().expect("a device id")
}

fn group() -> GroupPath {
    "acme/plant-1".parse().expect("a group")
}

async fn setup(stores: &Stores) -> (JobService, Arc<Devices>) {
    let now = hub_core::Clock::now(&SystemClock);
    let tenant: TenantId = "acme".parse().expect("a tenant");
    stores
        .registry
        .create_tenant(&tenant, "acme", now)
        .await
        .expect("tenant");
    stores
        .registry
        .create_group(&group(), "plant", now)
        .await
        .expect("group");
    let mut devices = Devices::default();
    for i in 0..DEVICES {
        stores
            .registry
            .create_device(
                NewDevice {
                    id: device_id(i),
                    group: group(),
                    display_name: String::new(),
                    attributes: serde_json::json!({}),
                },
                now,
            )
            .await
            .expect("device");
        devices.wake.insert(device_id(i), Arc::new(Notify::new()));
    }
    let devices = Arc::new(devices);
    let service = JobService::new(
        stores.jobs.clone(),
        stores.registry.clone(),
        devices.clone(),
        Arc::new(AlwaysOnline),
        Arc::new(DiscardEvents),
        Arc::new(SystemClock),
    );
    (service, devices)
}

fn controller() -> Principal {
    Principal::User(UserPrincipal {
        id: "bench".parse().expect("a user id"),
        group: "acme".parse().expect("a group"),
        scopes: Role::Operator.scopes(),
    })
}

fn device(i: usize) -> Principal {
    Principal::Device(DevicePrincipal {
        id: device_id(i),
        group: group(),
    })
}

fn request(i: usize, lane: Option<String>) -> CreateJob {
    CreateJob {
        device: device_id(i),
        group: group(),
        lane,
        document: serde_json::json!({ "op": "reboot" }),
        options: JobOptions::default(),
        idempotency_key: None,
    }
}

/// Create, notify, claim, succeed, read, `CYCLES_PER_DEVICE` times on each device at once.
async fn cycles(service: &JobService, devices: &Arc<Devices>) -> u64 {
    let mut tasks = Vec::new();
    for i in 0..DEVICES {
        let (service, wake) = (service.clone(), devices.wake[&device_id(i)].clone());
        tasks.push(tokio::spawn(async move {
            let (me, boss) = (device(i), controller());
            let tenant: TenantId = "acme".parse().expect("a tenant");
            for _ in 0..CYCLES_PER_DEVICE {
                let created = service
                    .create(&boss, request(i, None))
                    .await
                    .expect("create");
                wake.notified().await;
                let job = service
                    .claim_next(&me, None)
                    .await
                    .expect("claim")
                    .expect("the job just created");
                service
                    .report(
                        &me,
                        &job.id,
                        job.execution,
                        Command::Succeed {
                            result: Some(serde_json::json!({ "ok": true })),
                        },
                    )
                    .await
                    .expect("report");
                let read = service
                    .get(&boss, &tenant, &created.job.id)
                    .await
                    .expect("read");
                assert!(read.result.is_some());
            }
        }));
    }
    for t in tasks {
        t.await.expect("a device task");
    }
    (DEVICES * CYCLES_PER_DEVICE) as u64
}

/// Creates jobs at a steady rate and returns each job's create-to-notify latency. Each job has a
/// lane of its own, so that it is claimable (and announced) at once although nobody claims.
async fn push_latency(service: &JobService, devices: &Arc<Devices>) -> Vec<Duration> {
    let boss = controller();
    let period = Duration::from_nanos(1_000_000_000 / PUSH_RATE_PER_SECOND);
    let start = tokio::time::Instant::now();
    let mut creations = Vec::with_capacity(PUSH_JOBS);
    for n in 0..PUSH_JOBS {
        tokio::time::sleep_until(start + period * n as u32).await;
        let (service, boss) = (service.clone(), boss.clone());
        creations.push(tokio::spawn(async move {
            let sent = Instant::now();
            let job = service
                .create(&boss, request(n % DEVICES, Some(format!("push-{n}"))))
                .await
                .expect("create");
            (job.job.id, sent)
        }));
    }
    let mut latencies = Vec::with_capacity(PUSH_JOBS);
    for c in creations {
        let (id, sent) = c.await.expect("a creation");
        let notified = devices
            .notified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
            .expect("every created job is announced");
        latencies.push(notified.duration_since(sent));
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for backend in hub_benches::backends().await {
        let (service, devices) = setup(&backend.stores).await;
        let (n, elapsed) = hub_benches::timed(cycles(&service, &devices)).await;
        hub_benches::report(
            &backend.label,
            "job cycle (create..notify..claim..result..read)",
            n,
            elapsed,
        );
        let latencies = push_latency(&service, &devices).await;
        println!(
            "{:<24} push latency at {PUSH_RATE_PER_SECOND}/s, {} jobs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            backend.label,
            latencies.len(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
        backend.cleanup().await;
    }
}
