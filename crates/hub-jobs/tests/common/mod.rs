//! What the job service tests share: fake device seams, a manual clock, and a hub over any
//! job store.

// Each test crate uses its own subset.
#![allow(dead_code, unreachable_pub)]

pub mod scenarios;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hub_core::{
    BoxFuture, DeviceId, DevicePrincipal, Event, EventKind, GroupPath, JobId, JobNotice,
    JobNotifier, JobState, ManualClock, NotifyOutcome, Presence, PresenceQuery, PresenceState,
    Principal, RecordedEvents, Role, TenantId, Timestamp, UserPrincipal,
};
use hub_jobs::{Command, CreateJob, JobOptions, JobService, Sleep};
use hub_store::memory::MemoryStore;
use hub_store::{JobRecord, JobStore, NewDevice, RegistryStore, StoreLimits, Stores};
use serde_json::json;

#[derive(Debug, Default)]
pub struct Notices(Mutex<Vec<(DeviceId, JobNotice)>>);

impl Notices {
    pub fn take(&self) -> Vec<(DeviceId, JobNotice)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl JobNotifier for Notices {
    fn notify(&self, _tenant: &TenantId, device: &DeviceId, notice: JobNotice) -> NotifyOutcome {
        self.0.lock().unwrap().push((device.clone(), notice));
        NotifyOutcome::Sent
    }
}

/// Every device is online unless listed; `wait_online` resolves at once when `comes_online`,
/// never otherwise.
#[derive(Debug, Default)]
pub struct FakePresence {
    pub offline: Mutex<HashSet<DeviceId>>,
    pub comes_online: AtomicBool,
}

impl PresenceQuery for FakePresence {
    fn presence(&self, _tenant: &TenantId, device: &DeviceId) -> Presence {
        let state = if self.offline.lock().unwrap().contains(device) {
            PresenceState::Offline
        } else {
            PresenceState::Online
        };
        Presence {
            state,
            last_seen: None,
            node: None,
        }
    }

    fn wait_online<'a>(
        &'a self,
        _tenant: &'a TenantId,
        _device: &'a DeviceId,
    ) -> BoxFuture<'a, ()> {
        if self.comes_online.load(Ordering::SeqCst) {
            Box::pin(std::future::ready(()))
        } else {
            Box::pin(std::future::pending())
        }
    }
}

/// A timer that has always already run out: the wait is decided without real time passing.
#[derive(Debug)]
pub struct Elapsed;

impl Sleep for Elapsed {
    fn sleep(&self, _d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

pub struct Hub {
    pub svc: JobService,
    pub store: Arc<dyn JobStore>,
    pub clock: ManualClock,
    pub events: Arc<RecordedEvents>,
    pub notices: Arc<Notices>,
    pub presence: Arc<FakePresence>,
}

/// A hub over the in-memory store whose waits have always already run out.
pub async fn hub() -> Hub {
    hub_with_sleep(Arc::new(Elapsed)).await
}

/// A timer that never runs out.
#[derive(Debug)]
pub struct Never;

impl Sleep for Never {
    fn sleep(&self, _d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// A hub over the in-memory store.
pub async fn hub_with_sleep(sleep: Arc<dyn Sleep>) -> Hub {
    hub_on(
        MemoryStore::new(StoreLimits::default()).into_stores(),
        sleep,
    )
    .await
}

/// The devices the scenarios use, each in its group: `(tenant root, group, device)`.
pub const DEVICES: &[(&str, &str, &str)] = &[
    ("acme", "acme/plant-1", "pump-7"),
    ("acme", "acme/plant-1", "pump-8"),
    ("acme", "acme/plant-2", "pump-9"),
    ("globex", "globex/plant-1", "pump-7"),
];

/// Registers the tenants, groups and devices of [`DEVICES`].
pub async fn register_devices(registry: &dyn RegistryStore) {
    let t0 = Timestamp::EPOCH;
    for (tenant, g, d) in DEVICES {
        let tenant: TenantId = tenant.parse().unwrap();
        if registry
            .get_group(&GroupPath::root(&tenant))
            .await
            .unwrap()
            .is_none()
        {
            registry.create_tenant(&tenant, "tenant", t0).await.unwrap();
        }
        if registry.get_group(&group(g)).await.unwrap().is_none() {
            registry.create_group(&group(g), "group", t0).await.unwrap();
        }
        registry
            .create_device(
                NewDevice {
                    id: dev(d),
                    group: group(g),
                    display_name: String::new(),
                    attributes: serde_json::json!({}),
                },
                t0,
            )
            .await
            .unwrap();
    }
}

/// A hub over any job store.
pub async fn hub_on(stores: Stores, sleep: Arc<dyn Sleep>) -> Hub {
    register_devices(stores.registry.as_ref()).await;
    let store = stores.jobs.clone();
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000).unwrap());
    let events = Arc::new(RecordedEvents::new());
    let notices = Arc::new(Notices::default());
    let presence = Arc::new(FakePresence::default());
    let svc = JobService::new(
        store.clone(),
        stores.registry.clone(),
        notices.clone(),
        presence.clone(),
        events.clone(),
        Arc::new(clock.clone()),
    )
    .with_sleep(sleep);
    Hub {
        svc,
        store,
        clock,
        events,
        notices,
        presence,
    }
}

pub fn group(s: &str) -> GroupPath {
    s.parse().unwrap()
}

pub fn dev(s: &str) -> DeviceId {
    s.parse().unwrap()
}

pub fn user(name: &str, g: &str) -> Principal {
    Principal::User(UserPrincipal {
        id: name.parse().unwrap(),
        group: group(g),
        scopes: Role::Operator.scopes(),
    })
}

pub fn alice() -> Principal {
    user("alice", "acme")
}

pub fn device(id: &str, g: &str) -> Principal {
    Principal::Device(DevicePrincipal {
        id: dev(id),
        group: group(g),
    })
}

pub fn pump() -> Principal {
    device("pump-7", "acme/plant-1")
}

pub fn acme() -> TenantId {
    "acme".parse().unwrap()
}

pub fn req(doc: serde_json::Value) -> CreateJob {
    CreateJob {
        device: dev("pump-7"),
        group: group("acme/plant-1"),
        lane: None,
        document: doc,
        options: JobOptions::default(),
        idempotency_key: None,
    }
}

pub fn with_options(doc: serde_json::Value, options: JobOptions) -> CreateJob {
    CreateJob {
        options,
        ..req(doc)
    }
}

impl Hub {
    pub async fn create(&self, r: CreateJob) -> JobRecord {
        self.svc.create(&alice(), r).await.unwrap().job
    }

    pub async fn claim(&self) -> Option<JobRecord> {
        self.svc.claim_next(&pump(), None).await.unwrap()
    }

    pub async fn report(&self, job: &JobRecord, cmd: Command) -> hub_core::Result<JobRecord> {
        self.svc.report(&pump(), &job.id, job.execution, cmd).await
    }

    pub async fn state(&self, id: &JobId) -> JobState {
        self.svc.get(&alice(), &acme(), id).await.unwrap().state
    }

    pub fn advance(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
    }
}

pub fn transitions(events: &[Event]) -> Vec<(Option<JobState>, JobState)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::JobStateChanged { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

pub fn ok(result: &str) -> Command {
    Command::Succeed {
        result: Some(json!(result)),
    }
}
