//! Fault injection: 10,000 jobs across 100 devices while requests are dropped, answers lost,
//! requests duplicated, devices crash and come back, devices stall past their execution
//! deadlines, controllers cancel, and (on SQLite) the hub restarts from its file; on PostgreSQL
//! two job services share the database and every request goes to either of them.
//!
//! The run proceeds in rounds on a [`ManualClock`] (100 ms each): every device takes its turn
//! (all devices concurrently), then each hub node fires its timers. Every decision comes from a
//! seeded RNG, one stream per device, so a seed replays the same faults (the interleaving of the
//! devices within a round is up to the runtime; the invariants hold for every interleaving).
//! The seed is printed; `HUB_FAULTS_SEED=<n>` overrides it.
//!
//! What the devices saw (accepted claims and reports) is recorded and checked at the end against
//! the store and the event stream:
//!
//! - every job ends in exactly one final state (all 10,000 are terminal; the event stream shows
//!   each job entering a final state exactly once, the one stored);
//! - at most one result is accepted per job (and per execution), and the stored result is the
//!   one the device was told was accepted;
//! - per-device order: a device is handed its jobs in creation order (a retried job comes back
//!   in its place);
//! - no overlap: when a device is handed a new job, none of its other jobs is active, and the
//!   event stream never shows two active jobs on one device.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hub_core::{
    BoxFuture, DeviceId, DevicePrincipal, Event, EventKind, EventSink, GroupPath, JobId, JobNotice,
    JobNotifier, JobState, ManualClock, NotifyOutcome, Principal, RecordedEvents, Role, TenantId,
    Timestamp, UserPrincipal,
};
use hub_jobs::{Command, CreateJob, JobOptions, JobService};
use hub_store::memory::MemoryStore;
use hub_store::postgres::{PostgresConfig, PostgresStore};
use hub_store::sqlite::{SqliteConfig, SqliteStore};
use hub_store::{
    DEFAULT_LANE, JobFilter, JobRecord, JobStore, NewDevice, PageRequest, RegistryStore,
    StoreLimits, Stores,
};
use serde_json::json;

use common::FakePresence;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Scale {
    devices: usize,
    jobs_per_device: u32,
}

/// The figure: 10,000 jobs across 100 devices.
const FULL: Scale = Scale {
    devices: 100,
    jobs_per_device: 100,
};
const ROUND_MS: u64 = 100;
/// Faults stop at this round (or once every job is created, if later); then the run drains.
const FAULT_ROUNDS: u64 = 250;
/// A run that has not drained by then is stuck.
const MAX_ROUNDS: u64 = 3_000;

// Fault rates, per request or per device turn.
const P_DROP_REQUEST: f64 = 0.03;
const P_LOSE_ANSWER: f64 = 0.03;
const P_DUPLICATE: f64 = 0.03;
const P_CRASH: f64 = 0.008;
const P_CANCEL: f64 = 0.003;

// ---- deterministic randomness -------------------------------------------------------------

/// SplitMix64: tiny, seedable, good enough to pick faults.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let seed = match std::env::var("HUB_FAULTS_SEED") {
        Ok(s) => s.parse().expect("HUB_FAULTS_SEED is a u64"),
        Err(_) => 20_261_202,
    };
    eprintln!("faults: seed {seed} (replay with HUB_FAULTS_SEED={seed})");
    seed
}

// ---- the hub's surroundings -----------------------------------------------------------------

#[derive(Debug, Default)]
struct Quiet;

impl JobNotifier for Quiet {
    fn notify(&self, _: &TenantId, _: &DeviceId, _: JobNotice) -> NotifyOutcome {
        NotifyOutcome::NotConnected
    }
}

/// Both nodes publish into one sink, so the checks see one stream.
#[derive(Debug, Default)]
struct SharedEvents(RecordedEvents);

impl EventSink for SharedEvents {
    fn publish(&self, event: Event) {
        self.0.publish(event)
    }
}

fn tenant() -> TenantId {
    "acme".parse().unwrap()
}

fn device_id(i: usize) -> DeviceId {
    format!("dev-{i:03}").parse().unwrap()
}

fn device_group(i: usize) -> GroupPath {
    format!("acme/line-{}", i % 10).parse().unwrap()
}

fn operator() -> Principal {
    Principal::User(UserPrincipal {
        id: "ops".parse().unwrap(),
        group: "acme".parse().unwrap(),
        scopes: Role::Operator.scopes(),
    })
}

async fn register(registry: &dyn RegistryStore, scale: Scale) {
    let t0 = Timestamp::EPOCH;
    registry.create_tenant(&tenant(), "acme", t0).await.unwrap();
    for g in 0..10 {
        registry
            .create_group(&device_group(g), "line", t0)
            .await
            .unwrap();
    }
    for i in 0..scale.devices {
        registry
            .create_device(
                NewDevice {
                    id: device_id(i),
                    group: device_group(i),
                    display_name: String::new(),
                    attributes: json!({}),
                },
                t0,
            )
            .await
            .unwrap();
    }
}

/// The hub nodes in service now.
struct Hub {
    nodes: Vec<JobService>,
    /// The store the checks read (any node's view of the shared data).
    store: Arc<dyn JobStore>,
}

/// Builds the nodes over freshly opened stores (a restart when called again).
type Open = Box<dyn FnMut() -> BoxFuture<'static, Vec<Stores>> + Send>;

struct World {
    clock: ManualClock,
    events: Arc<SharedEvents>,
    presence: Arc<FakePresence>,
}

impl World {
    fn hub(&self, stores: Vec<Stores>) -> Hub {
        let store = stores[0].jobs.clone();
        let nodes = stores
            .into_iter()
            .map(|s| {
                JobService::new(
                    s.jobs,
                    s.registry,
                    Arc::new(Quiet),
                    self.presence.clone(),
                    self.events.clone(),
                    Arc::new(self.clock.clone()),
                )
            })
            .collect();
        Hub { nodes, store }
    }
}

// ---- what the devices saw -------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Start,
    Progress,
    Succeed(serde_json::Value),
    Fail(serde_json::Value),
    Reject(serde_json::Value),
    AcceptCancel,
    RefuseCancel,
}

impl Sent {
    fn command(&self) -> Command {
        match self {
            Sent::Start => Command::Start,
            Sent::Progress => Command::Progress {
                details: Some(json!({"percent": 50})),
                step_timeout_ms: None,
            },
            Sent::Succeed(r) => Command::Succeed {
                result: Some(r.clone()),
            },
            Sent::Fail(r) => Command::Fail {
                result: Some(r.clone()),
            },
            Sent::Reject(r) => Command::Reject {
                result: Some(r.clone()),
            },
            Sent::AcceptCancel => Command::AcceptCancel,
            Sent::RefuseCancel => Command::RefuseCancel,
        }
    }

    /// Ends the execution (the device lets go of the job once accepted).
    fn ends(&self) -> bool {
        matches!(
            self,
            Sent::Succeed(_) | Sent::Fail(_) | Sent::Reject(_) | Sent::AcceptCancel
        )
    }

    fn result(&self) -> Option<&serde_json::Value> {
        match self {
            Sent::Succeed(r) | Sent::Fail(r) | Sent::Reject(r) => Some(r),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Claim {
    device: usize,
    job: JobId,
    execution: u32,
    seq: u64,
}

#[derive(Debug, Clone)]
struct Accepted {
    job: JobId,
    execution: u32,
    sent: Sent,
    /// The job's state in the answer.
    state: JobState,
}

#[derive(Debug, Default)]
struct Log {
    /// Every claim answer a device received, in the order each device received them.
    claims: Vec<Claim>,
    /// Every report the hub accepted and the device heard about.
    accepted: Vec<Accepted>,
    /// Reports refused because the execution was over (the device then let go).
    refused: u64,
    created: u64,
    crashes: u64,
    restarts: u64,
}

// ---- a device and its controller ----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    Succeed,
    Fail,
    Reject,
}

#[derive(Debug)]
struct Held {
    job: JobId,
    execution: u32,
    plan: Plan,
    started: bool,
    cancel_asked: bool,
    /// Rounds the device stays silent (a slow device whose deadline passes meanwhile).
    stall: u64,
    /// A report sent whose answer was lost: sent again, unchanged.
    pending: Option<Sent>,
}

#[derive(Debug)]
struct Device {
    index: usize,
    principal: Principal,
    rng: Rng,
    created: Vec<JobId>,
    holding: Option<Held>,
    down_until: u64,
    last_seq: u64,
}

struct Turn {
    nodes: Vec<JobService>,
    store: Arc<dyn JobStore>,
    log: Arc<Mutex<Log>>,
    round: u64,
    faults: bool,
    jobs_per_device: u32,
}

impl Turn {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }
}

fn options(rng: &mut Rng) -> JobOptions {
    JobOptions {
        ttl_ms: rng.chance(0.05).then(|| 2_000 + rng.below(30_000)),
        in_progress_timeout_ms: 1_000 + rng.below(2_000),
        max_attempts: 1 + rng.below(4) as u32,
        retry_backoff_base_ms: 100,
        retry_backoff_max_ms: 800,
        ..JobOptions::default()
    }
}

fn transient(e: &hub_core::Error) -> bool {
    e.kind() == hub_core::ErrorKind::Unavailable
}

impl Device {
    fn new(index: usize, seed: u64) -> Self {
        Device {
            index,
            principal: Principal::Device(DevicePrincipal {
                id: device_id(index),
                group: device_group(index),
            }),
            rng: Rng(seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F)),
            created: Vec::new(),
            holding: None,
            down_until: 0,
            last_seq: 0,
        }
    }

    fn node<'a>(&mut self, t: &'a Turn) -> &'a JobService {
        &t.nodes[self.rng.below(t.nodes.len() as u64) as usize]
    }

    async fn turn(mut self, t: Arc<Turn>) -> Self {
        self.control(&t).await;
        if t.faults {
            if self.down_until > t.round {
                return self;
            }
            if self.rng.chance(P_CRASH) {
                // The device forgets what it held; the hub finds out by the deadline.
                self.holding = None;
                self.down_until = t.round + 1 + self.rng.below(20);
                t.log().crashes += 1;
                return self;
            }
        } else if let Some(h) = &mut self.holding {
            h.stall = 0;
        }
        for _ in 0..1 + self.rng.below(2) {
            if self.holding.is_some() {
                self.report(&t).await;
            } else {
                self.claim(&t).await;
            }
        }
        self.slow_down(&t);
        self
    }

    /// The controller's part: create this device's jobs over the first rounds, sometimes
    /// cancel one.
    async fn control(&mut self, t: &Turn) {
        let n = self.rng.below(3) as u32;
        for _ in 0..n.min(t.jobs_per_device - self.created.len() as u32) {
            let number = self.created.len();
            let req = CreateJob {
                device: device_id(self.index),
                group: device_group(self.index),
                lane: None,
                document: json!({"device": self.index, "number": number}),
                options: options(&mut self.rng),
                idempotency_key: Some(format!("{}-{number}", self.index)),
            };
            // A lost answer: the controller retries with the same key and gets the same job.
            let first = self.node(t).create(&operator(), req.clone()).await.unwrap();
            assert!(first.created);
            if t.faults && self.rng.chance(P_LOSE_ANSWER) {
                let again = self.node(t).create(&operator(), req).await.unwrap();
                assert!(!again.created, "a repeated key creates nothing");
                assert_eq!(again.job.id, first.job.id);
            }
            self.created.push(first.job.id);
            t.log().created += 1;
        }
        if !self.created.is_empty() && self.rng.chance(P_CANCEL) {
            let id = self.created[self.rng.below(self.created.len() as u64) as usize];
            let force = self.rng.chance(0.5);
            match self
                .node(t)
                .cancel(&operator(), &tenant(), &id, force, None)
                .await
            {
                Ok(_) => {}
                Err(e) if e.kind() == hub_core::ErrorKind::Conflict || transient(&e) => {}
                Err(e) => panic!("cancel {id}: {e}"),
            }
        }
    }

    /// A device that just took a job sometimes sits on it past its deadline.
    fn slow_down(&mut self, t: &Turn) {
        if let Some(h) = &mut self.holding
            && t.faults
            && h.stall == 0
            && !h.started
            && self.rng.chance(0.02)
        {
            h.stall = 10 + self.rng.below(30);
        }
    }

    async fn claim(&mut self, t: &Turn) {
        if t.faults && self.rng.chance(P_DROP_REQUEST) {
            return;
        }
        let answer = if t.faults && self.rng.chance(P_DUPLICATE) {
            let (a, b) = (self.node(t), self.node(t));
            let (x, y) = tokio::join!(
                a.claim_next(&self.principal, None),
                b.claim_next(&self.principal, None)
            );
            match (x, y) {
                (Ok(x), Ok(y)) => {
                    let key = |j: &Option<JobRecord>| j.as_ref().map(|j| (j.id, j.execution));
                    assert_eq!(
                        key(&x),
                        key(&y),
                        "device {}: two racing claims got different answers",
                        self.index
                    );
                    Ok(x)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        } else {
            self.node(t).claim_next(&self.principal, None).await
        };
        if t.faults && self.rng.chance(P_LOSE_ANSWER) {
            return;
        }
        let job = match answer {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) if transient(&e) => return,
            Err(e) => panic!("device {}: claim: {e}", self.index),
        };
        assert_eq!(job.device, device_id(self.index));
        assert_eq!(job.state, JobState::Delivered);
        // No overlap: nothing else of the device is active while it holds this job.
        let head = t
            .store
            .queue_head(&tenant(), &job.device, DEFAULT_LANE, 16)
            .await
            .unwrap();
        for other in head.iter().filter(|o| o.id != job.id) {
            assert!(
                !other.state.is_active(),
                "device {}: handed {} while {} is {}",
                self.index,
                job.id,
                other.id,
                other.state
            );
        }
        assert!(
            job.seq >= self.last_seq,
            "device {}: handed seq {} after seq {}",
            self.index,
            job.seq,
            self.last_seq
        );
        self.last_seq = job.seq;
        t.log().claims.push(Claim {
            device: self.index,
            job: job.id,
            execution: job.execution,
            seq: job.seq,
        });
        let roll = self.rng.below(100);
        let plan = match roll {
            0..=84 => Plan::Succeed,
            85..=94 => Plan::Fail,
            _ => Plan::Reject,
        };
        self.holding = Some(Held {
            job: job.id,
            execution: job.execution,
            plan,
            started: false,
            cancel_asked: false,
            stall: 0,
            pending: None,
        });
    }

    async fn report(&mut self, t: &Turn) {
        let index = self.index;
        let Some(h) = &mut self.holding else {
            return;
        };
        if h.stall > 0 {
            h.stall -= 1;
            return;
        }
        let result = json!({"device": index, "execution": h.execution});
        let sent = match h.pending.clone() {
            Some(s) => s,
            None if h.cancel_asked => {
                if self.rng.chance(0.7) {
                    Sent::AcceptCancel
                } else {
                    Sent::RefuseCancel
                }
            }
            None if !h.started => {
                if self.rng.chance(0.5) {
                    Sent::Start
                } else {
                    Sent::Progress
                }
            }
            None => match h.plan {
                Plan::Succeed => Sent::Succeed(result),
                Plan::Fail => Sent::Fail(result),
                Plan::Reject => Sent::Reject(result),
            },
        };
        let (job, execution) = (h.job, h.execution);
        if t.faults && self.rng.chance(P_DROP_REQUEST) {
            self.holding.as_mut().unwrap().pending = Some(sent);
            return;
        }
        let answer = if t.faults && self.rng.chance(P_DUPLICATE) {
            let (a, b) = (self.node(t), self.node(t));
            let (x, y) = tokio::join!(
                a.report(&self.principal, &job, execution, sent.command()),
                b.report(&self.principal, &job, execution, sent.command())
            );
            match (&x, &y) {
                (Ok(x), Ok(y)) => assert_eq!(
                    (x.state, x.execution),
                    (y.state, y.execution),
                    "device {index}: a duplicated {sent:?} was answered differently"
                ),
                (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
                _ if x.as_ref().err().is_some_and(transient)
                    || y.as_ref().err().is_some_and(transient) => {}
                _ => panic!("device {index}: a duplicated {sent:?} got {x:?} and {y:?}"),
            }
            x
        } else {
            self.node(t)
                .report(&self.principal, &job, execution, sent.command())
                .await
        };
        let h = self.holding.as_mut().unwrap();
        if t.faults && self.rng.chance(P_LOSE_ANSWER) {
            // The device did not hear back: it sends the same report again.
            h.pending = Some(sent);
            return;
        }
        match answer {
            Ok(record) => {
                t.log().accepted.push(Accepted {
                    job,
                    execution,
                    sent: sent.clone(),
                    state: record.state,
                });
                h.pending = None;
                h.started = true;
                if sent.ends() {
                    self.holding = None;
                } else {
                    h.cancel_asked = record.state == JobState::Canceling;
                }
            }
            Err(e) if e.kind() == hub_core::ErrorKind::Conflict => {
                // The execution is over (deadline passed, canceled): let go.
                t.log().refused += 1;
                self.holding = None;
            }
            Err(e) if transient(&e) => h.pending = Some(sent),
            Err(e) => panic!("device {index}: {sent:?} on {job}: {e}"),
        }
    }
}

// ---- the run --------------------------------------------------------------------------------

async fn all_jobs(store: &dyn JobStore) -> Vec<JobRecord> {
    let mut out = Vec::new();
    let mut page = PageRequest::first(1000);
    loop {
        let p = store
            .list_jobs(
                &GroupPath::root(&tenant()),
                &JobFilter::default(),
                page.clone(),
            )
            .await
            .unwrap();
        out.extend(p.items);
        match p.next {
            Some(next) => page.after = Some(next),
            None => return out,
        }
    }
}

async fn unfinished(store: &dyn JobStore) -> u64 {
    let filter = JobFilter {
        states: JobState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect(),
        ..JobFilter::default()
    };
    store
        .count_jobs(&GroupPath::root(&tenant()), &filter)
        .await
        .unwrap()
        .values()
        .sum()
}

/// Runs the whole scenario. `open` builds the nodes' stores; it is called again for every
/// restart in `restarts` (round numbers).
async fn run(name: &str, scale: Scale, mut open: Open, restarts: &[u64]) {
    let seed = seed();
    let world = World {
        clock: ManualClock::new(Timestamp::from_millis(1_800_000_000_000).unwrap()),
        events: Arc::new(SharedEvents::default()),
        presence: Arc::new(FakePresence::default()),
    };
    let stores = open().await;
    register(stores[0].registry.as_ref(), scale).await;
    let mut hub = world.hub(stores);
    let log = Arc::new(Mutex::new(Log::default()));
    let mut devices: Vec<Device> = (0..scale.devices).map(|i| Device::new(i, seed)).collect();

    let mut round = 0u64;
    let total = scale.devices as u64 * u64::from(scale.jobs_per_device);
    loop {
        let created = log.lock().unwrap().created;
        let faults = round < FAULT_ROUNDS || created < total;
        if restarts.contains(&round) {
            // Nothing is in flight between rounds: drop every node and its store, reopen.
            drop(hub);
            hub = world.hub(open().await);
            log.lock().unwrap().restarts += 1;
        }
        let turn = Arc::new(Turn {
            nodes: hub.nodes.clone(),
            store: hub.store.clone(),
            log: log.clone(),
            round,
            faults,
            jobs_per_device: scale.jobs_per_device,
        });
        let mut set = tokio::task::JoinSet::new();
        for d in devices.drain(..) {
            set.spawn(d.turn(turn.clone()));
        }
        while let Some(d) = set.join_next().await {
            devices.push(d.expect("a device turn panicked"));
        }
        devices.sort_by_key(|d| d.index);
        world.clock.advance(Duration::from_millis(ROUND_MS));
        // Every node runs its timer; on several nodes they race for the same due jobs.
        let mut ticks = tokio::task::JoinSet::new();
        for node in &hub.nodes {
            let node = node.clone();
            ticks.spawn(async move { while node.tick().await.expect("tick") > 0 {} });
        }
        while let Some(r) = ticks.join_next().await {
            r.expect("a tick panicked");
        }
        round += 1;
        if round % 50 == 0 {
            let l = log.lock().unwrap();
            eprintln!(
                "faults[{name}]: round {round}: {} created, {} claims, {} reports accepted",
                l.created,
                l.claims.len(),
                l.accepted.len()
            );
        }
        if !faults && round % 10 == 0 && unfinished(hub.store.as_ref()).await == 0 {
            break;
        }
        assert!(
            round < MAX_ROUNDS,
            "{name}: jobs still unfinished after {round} rounds"
        );
    }

    let jobs = all_jobs(hub.store.as_ref()).await;
    let log = std::mem::take(&mut *log.lock().unwrap());
    let events = world.events.0.take();
    let mut states = BTreeMap::new();
    for j in &jobs {
        *states.entry(j.state.as_str()).or_insert(0u64) += 1;
    }
    eprintln!(
        "faults[{name}]: {} jobs in {round} rounds; {} claims, {} accepted reports, {} refused, \
         {} crashes, {} restarts, {} events; final states {states:?}",
        jobs.len(),
        log.claims.len(),
        log.accepted.len(),
        log.refused,
        log.crashes,
        log.restarts,
        events.len(),
    );
    check(&jobs, &log, &events, total);
}

fn check(jobs: &[JobRecord], log: &Log, events: &[Event], total: u64) {
    assert_eq!(jobs.len() as u64, total, "every job was created once");
    let by_id: HashMap<JobId, &JobRecord> = jobs.iter().map(|j| (j.id, j)).collect();

    // Every job ends in exactly one final state: it is terminal in the store, and the event
    // stream shows it entering a final state once (an execution that fails or times out and
    // is retried shows `x -> failed`, `failed -> queued` at one version: not final).
    for j in jobs {
        assert!(j.state.is_terminal(), "job {} ended {}", j.id, j.state);
        assert_eq!(j.due_at, None, "job {} keeps a timer", j.id);
    }
    let mut per_job: HashMap<JobId, Vec<(Option<JobState>, JobState, u64)>> = HashMap::new();
    for e in events {
        if let EventKind::JobStateChanged {
            job,
            from,
            to,
            version,
            ..
        } = &e.kind
        {
            per_job
                .entry(*job)
                .or_default()
                .push((*from, *to, *version));
        }
    }
    for j in jobs {
        let seen = per_job.get(&j.id).map(Vec::as_slice).unwrap_or_default();
        let finals: Vec<_> = seen
            .iter()
            .filter(|(_, to, v)| {
                to.is_terminal() && !seen.iter().any(|(f, _, v2)| v2 == v && *f == Some(*to))
            })
            .collect();
        assert_eq!(
            finals.len(),
            1,
            "job {} entered a final state {} times: {seen:?}",
            j.id,
            finals.len()
        );
        assert_eq!(
            (finals[0].1, finals[0].2),
            (j.state, j.version),
            "job {}: the final event is the stored state",
            j.id
        );
        let created = seen.iter().filter(|(f, _, _)| f.is_none()).count();
        assert_eq!(created, 1, "job {} created once", j.id);
    }

    // At most one result per execution, at most one final result per job, and the stored
    // result is the one the device was told was accepted.
    let mut results: HashMap<(JobId, u32), &Accepted> = HashMap::new();
    let mut finals: HashMap<JobId, &Accepted> = HashMap::new();
    for a in &log.accepted {
        let j = by_id[&a.job];
        if a.sent.result().is_some() {
            if let Some(prev) = results.insert((a.job, a.execution), a) {
                assert_eq!(
                    prev.sent, a.sent,
                    "job {} execution {}: two different results accepted",
                    a.job, a.execution
                );
            }
        }
        if a.state.is_terminal() {
            if let Some(prev) = finals.insert(a.job, a) {
                assert_eq!(
                    (prev.execution, &prev.sent, prev.state),
                    (a.execution, &a.sent, a.state),
                    "job {}: two final answers",
                    a.job
                );
            }
            assert_eq!(
                (j.state, j.execution),
                (a.state, a.execution),
                "job {}: the store disagrees with the final answer the device got",
                a.job
            );
            if let Some(r) = a.sent.result() {
                assert_eq!(j.result.as_ref(), Some(r), "job {}: stored result", a.job);
            }
        }
    }
    for j in jobs {
        // A result stored is a result some device sent for the execution stored.
        if let Some(r) = &j.result {
            assert_eq!(
                r["execution"].as_u64(),
                Some(u64::from(j.execution)),
                "job {}: the stored result belongs to its last execution",
                j.id
            );
        }
        if j.state == JobState::Expired {
            assert_eq!(j.execution, 0, "job {} expired after delivery", j.id);
        }
    }

    // Per-device order and exactly-once delivery: the executions of a job increase and each
    // belongs to one device; a device gets its jobs in creation order.
    let mut executions: HashMap<JobId, BTreeSet<u32>> = HashMap::new();
    let mut last: HashMap<usize, (u64, JobId, u32)> = HashMap::new();
    for c in &log.claims {
        let j = by_id[&c.job];
        assert_eq!(j.device, device_id(c.device));
        assert_eq!(j.seq, c.seq);
        if let Some((seq, job, exec)) = last.get(&c.device)
            && (*job, *exec) != (c.job, c.execution)
        {
            assert!(
                c.seq > *seq || (c.job == *job && c.execution > *exec),
                "device {}: job seq {} handed after seq {seq}",
                c.device,
                c.seq
            );
        }
        executions.entry(c.job).or_default().insert(c.execution);
        last.insert(c.device, (c.seq, c.job, c.execution));
    }
    for (id, execs) in &executions {
        assert!(
            execs.iter().all(|e| *e >= 1 && *e <= by_id[id].execution),
            "job {id}: executions {execs:?} beyond the stored one"
        );
    }

    // No overlap, over the whole event stream: at most one active job per device at a time.
    let device_of: HashMap<JobId, &DeviceId> = jobs.iter().map(|j| (j.id, &j.device)).collect();
    let mut active: HashMap<&DeviceId, BTreeSet<JobId>> = HashMap::new();
    for e in events {
        if let EventKind::JobStateChanged { job, to, .. } = &e.kind {
            let set = active.entry(device_of[job]).or_default();
            if to.is_active() {
                set.insert(*job);
            } else {
                set.remove(job);
            }
            assert!(
                set.len() <= 1,
                "device {}: {} jobs active at once: {set:?}",
                device_of[job],
                set.len()
            );
        }
    }
}

// ---- the backends ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_with_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let open: Open = Box::new(move || {
        let path = path.clone();
        Box::pin(async move {
            let store = SqliteStore::open(SqliteConfig::new(path)).await.unwrap();
            vec![store.into_stores()]
        })
    });
    run("sqlite", FULL, open, &[60, 140, 230]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes() {
    let Ok(url) = std::env::var("HUB_TEST_POSTGRES_URL") else {
        eprintln!("skipping: HUB_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("hub_faults_{}", uuid::Uuid::new_v4().simple());
    let connect = {
        let (url, schema) = (url.clone(), schema.clone());
        move || {
            let (url, schema) = (url.clone(), schema.clone());
            async move {
                PostgresStore::connect(PostgresConfig {
                    schema: Some(schema),
                    pool_size: 8,
                    ..PostgresConfig::new(url)
                })
                .await
                .expect("the test database is reachable")
            }
        }
    };
    let keep = connect().await;
    let open: Open = Box::new(move || {
        let connect = connect.clone();
        Box::pin(async move { vec![connect().await.into_stores(), connect().await.into_stores()] })
    });
    let outcome = tokio::spawn(run("postgres", FULL, open, &[])).await;
    keep.drop_schema().await.unwrap();
    outcome.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_two_nodes_small() {
    // The in-memory reference store scans every job per query: a smaller run checks the same
    // invariants against the reference semantics.
    let shared = MemoryStore::new(StoreLimits::default()).into_stores();
    let open: Open = Box::new(move || {
        let s = shared.clone();
        Box::pin(async move { vec![s.clone(), s] })
    });
    let scale = Scale {
        devices: 20,
        jobs_per_device: 40,
    };
    run("memory", scale, open, &[]).await;
}
