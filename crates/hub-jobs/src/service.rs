//! The job service: runs the [`machine`] over a [`JobStore`].
//!
//! Every write reads the job, asks [`machine::apply`] for the next record, and stores it with
//! [`JobStore::update_job`] conditioned on the version it read. When another writer got there
//! first ([`ErrorKind::PreconditionFailed`]), it re-reads and re-applies, at most
//! [`MAX_CAS_ATTEMPTS`] times. After a write it publishes the machine's events into the
//! [`EventSink`], pushes its notice through the [`JobNotifier`], and, when the job released the
//! device's queue, tells the device that its next job is claimable.
//!
//! What the service adds to the machine:
//!
//! - **Access.** Every call goes through [`hub_core::authorize`]: controllers need
//!   [`Action::CreateJob`], [`Action::ReadJobs`], [`Action::CancelJob`] or
//!   [`Action::ControlDevice`] on the device's group; devices [`Action::ReceiveJobs`] and
//!   [`Action::ReportJobProgress`] on themselves. A job outside the caller's reach, or in another
//!   tenant, is [`ErrorKind::NotFound`].
//! - **Ordering and concurrency.** A device receives the jobs of a lane in creation order. A job
//!   at position `p` of the lane's unfinished jobs (0 = head) may be held by the device when
//!   `p` is below the declared `concurrency` of every job from the head to it, so with the
//!   default of 1 the next job starts only when the previous one ended.
//! - **Exactly-once claim.** [`JobService::claim_next`] returns the earliest delivered job that
//!   the device has not started (a redelivery with the same execution, for a device that lost the
//!   answer) before it claims a new one; two racing claims of one device get the same job and
//!   execution.
//! - **Exclusive control.** While a controller holds the device's control lease
//!   ([`JobService::acquire_control`]), other controllers' creations are refused with
//!   [`ErrorKind::Conflict`]. The store checks the lease in the same atomic step as the insert
//!   ([`JobStore::create_job_unless_controlled`]), so once `acquire_control` returns, every job
//!   another controller managed to create is already in the device's queue for the holder to
//!   see, and no further one gets in.
//! - **Delivery policy** at creation (see [`DeliveryPolicy`]); only
//!   [`PresenceState::Offline`] counts as offline.
//! - **Timers.** The application calls [`JobService::tick`] periodically (for example every
//!   second); it applies the machine's timer to every job whose `due_at` has passed. A claim also
//!   fires the timers of overdue jobs at the head of the lane first, so a late tick never lets a
//!   device take an expired job.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hub_core::{
    Action, BoxFuture, BulkJobId, Clock, DeviceId, Error, ErrorKind, Event, EventKind, EventSink,
    GroupPath, JobId, JobNotice, JobNotifier, JobState, PresenceQuery, PresenceState, Principal,
    Resource, Result, TenantId, authorize,
};
use hub_store::{
    ControlLease, CreateOutcome, DEFAULT_LANE, JobFilter, JobRecord, JobStore, NewJob, Page,
    PageRequest, RegistryStore,
};

use crate::machine::{
    self, Actor, Command, DeliveryPolicy, JobOptions, MAX_CONCURRENCY, Outcome, StoredOptions,
};

/// How often one write is re-read and re-applied when other writers keep winning the race.
pub const MAX_CAS_ATTEMPTS: u32 = 16;

/// How many due jobs one [`JobService::tick`] processes at most.
pub const TICK_BATCH: u32 = 256;

/// Sleeps: how the runtime-neutral service waits (the delivery policy
/// [`DeliveryPolicy::WaitOnline`]). Implement it with your runtime's timer, e.g.
/// `Box::pin(tokio::time::sleep(d))`.
pub trait Sleep: Send + Sync + std::fmt::Debug + 'static {
    /// Resolves after `d`.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateJob {
    /// The device that executes it.
    pub device: DeviceId,
    /// The device's current group. The service checks it against the registry and answers
    /// [`ErrorKind::NotFound`] when the device is not in it.
    pub group: GroupPath,
    /// The lane; [`DEFAULT_LANE`] when `None`.
    pub lane: Option<String>,
    /// The opaque job document.
    pub document: serde_json::Value,
    /// Timeouts, retries, delivery policy, concurrency.
    pub options: JobOptions,
    /// The creator's idempotency key: a repeated creation with the same key returns the first
    /// job.
    pub idempotency_key: Option<String>,
}

/// The job service. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct JobService {
    store: Arc<dyn JobStore>,
    registry: Arc<dyn RegistryStore>,
    notifier: Arc<dyn JobNotifier>,
    presence: Arc<dyn PresenceQuery>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    sleep: Option<Arc<dyn Sleep>>,
    signals: Arc<Signals>,
}

type DeviceKey = (TenantId, DeviceId);

/// In-process wake-ups for [`JobService::wait_next`]: a generation counter per device, bumped
/// whenever this service announces a claimable job to the device. Entries are kept (a counter
/// per device that was ever announced a job) so that a waiter never sees a counter go back; a
/// waiter's waker is removed when its wait ends, so abandoned long polls leave nothing behind.
#[derive(Debug, Default)]
struct Signals {
    devices: Mutex<HashMap<DeviceKey, DeviceSignal>>,
    next_waiter: AtomicU64,
}

#[derive(Debug, Default)]
struct DeviceSignal {
    generation: u64,
    waiters: HashMap<u64, Waker>,
}

impl Signals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceKey, DeviceSignal>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn generation(&self, key: &DeviceKey) -> u64 {
        self.lock().get(key).map_or(0, |d| d.generation)
    }

    fn bump(&self, key: &DeviceKey) {
        let waiters = {
            let mut map = self.lock();
            let entry = map.entry(key.clone()).or_default();
            entry.generation = entry.generation.wrapping_add(1);
            std::mem::take(&mut entry.waiters)
        };
        for w in waiters.into_values() {
            w.wake();
        }
    }

    /// Resolves once the device's generation differs from `seen`.
    fn changed(&self, key: DeviceKey, seen: u64) -> Changed<'_> {
        Changed {
            signals: self,
            key,
            seen,
            id: self.next_waiter.fetch_add(1, AtomicOrdering::Relaxed),
        }
    }
}

struct Changed<'a> {
    signals: &'a Signals,
    key: DeviceKey,
    seen: u64,
    id: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut map = self.signals.lock();
        let entry = map.entry(self.key.clone()).or_default();
        if entry.generation != self.seen {
            return Poll::Ready(());
        }
        entry.waiters.insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.signals.lock().get_mut(&self.key) {
            entry.waiters.remove(&self.id);
        }
    }
}

fn denied(e: hub_core::Denied) -> Error {
    Error::from(e)
}

fn device_principal(principal: &Principal) -> Result<&hub_core::DevicePrincipal> {
    match principal {
        Principal::Device(d) => Ok(d),
        _ => Err(Error::forbidden("only devices may do this")),
    }
}

/// Polls `a` and `b` together; `true` when `a` finishes first.
async fn first_wins(mut a: BoxFuture<'_, ()>, b: &mut BoxFuture<'static, ()>) -> bool {
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        if b.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
    })
    .await
}

/// The jobs of a lane's head that the device may hold: position below the smallest declared
/// concurrency from the head to it.
fn window(head: Vec<JobRecord>) -> Vec<JobRecord> {
    let mut limit = MAX_CONCURRENCY;
    let mut out = Vec::new();
    for (pos, job) in head.into_iter().enumerate() {
        let c = StoredOptions::from_record(&job)
            .map(|s| s.options.concurrency)
            .unwrap_or(1);
        limit = limit.min(c);
        if pos as u32 >= limit {
            break;
        }
        out.push(job);
    }
    out
}

impl JobService {
    /// A service over `store` (jobs) and `registry` (where each device is) that reaches devices through `notifier` and `presence`, publishes
    /// into `events` and tells the time by `clock`. Without [`JobService::with_sleep`],
    /// [`DeliveryPolicy::WaitOnline`] does not wait and behaves as
    /// [`DeliveryPolicy::FailIfOffline`].
    pub fn new(
        store: Arc<dyn JobStore>,
        registry: Arc<dyn RegistryStore>,
        notifier: Arc<dyn JobNotifier>,
        presence: Arc<dyn PresenceQuery>,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            registry,
            notifier,
            presence,
            events,
            clock,
            sleep: None,
            signals: Arc::default(),
        }
    }

    /// Sets the timer used to bound [`DeliveryPolicy::WaitOnline`].
    pub fn with_sleep(mut self, sleep: Arc<dyn Sleep>) -> Self {
        self.sleep = Some(sleep);
        self
    }

    /// Creates a job for a device, or returns the job created earlier with the same idempotency
    /// key (`created: false`). Refused with [`ErrorKind::Conflict`] while another controller
    /// holds the device's exclusive control or when the key was used for a different job, and
    /// with [`ErrorKind::Unavailable`] when the delivery policy needs the device online and it is
    /// not.
    ///
    /// The control and presence checks run before the store is asked, so a retry of a creation
    /// that succeeded earlier is refused, not answered with the first job, if the device went
    /// offline or another controller took control in between (the store offers no lookup by
    /// idempotency key).
    pub async fn create(&self, principal: &Principal, req: CreateJob) -> Result<CreateOutcome> {
        self.create_with(principal, req, None).await
    }

    /// [`JobService::create`] for a child of the bulk job `bulk` (its record names the bulk job,
    /// so the bulk job's summary counts it).
    pub async fn create_in_bulk(
        &self,
        principal: &Principal,
        req: CreateJob,
        bulk: BulkJobId,
    ) -> Result<CreateOutcome> {
        self.create_with(principal, req, Some(bulk)).await
    }

    async fn create_with(
        &self,
        principal: &Principal,
        req: CreateJob,
        bulk: Option<BulkJobId>,
    ) -> Result<CreateOutcome> {
        authorize(
            principal,
            Action::CreateJob,
            &Resource::device(req.group.clone(), req.device.clone()),
        )
        .map_err(denied)?;
        self.check_registered_group(&req.group, &req.device).await?;
        req.options.validate()?;
        let tenant = req.group.tenant();
        let holder = principal.describe();
        let now = self.clock.now();
        // A fast refusal before any wait for the device; the store checks again, atomically
        // with the insert, so a lease granted from here on is never missed.
        if let Some(lease) = self.store.get_control(&tenant, &req.device, now).await?
            && lease.holder != holder
        {
            return Err(Error::conflict(format!(
                "device {} is under another controller's exclusive control until {}",
                req.device, lease.until
            )));
        }
        self.check_delivery(&tenant, &req.device, req.options.delivery)
            .await?;

        let now = self.clock.now();
        let (options, due_at) = machine::initial_fields(&req.options, now)?;
        let lane = req.lane.unwrap_or_else(|| DEFAULT_LANE.to_owned());
        let outcome = self
            .store
            .create_job_unless_controlled(
                NewJob {
                    id: JobId::new(now),
                    tenant: tenant.clone(),
                    device: req.device.clone(),
                    group: req.group.clone(),
                    lane: lane.clone(),
                    state: JobState::Queued,
                    document: req.document.clone(),
                    options,
                    idempotency_key: req.idempotency_key,
                    created_by: holder,
                    bulk,
                    created_at: now,
                    due_at,
                },
                now,
            )
            .await?;
        let job = &outcome.job;
        if !outcome.created {
            // Whether the earlier job may be seen comes first: a key used elsewhere in the
            // tenant must not reveal anything about that job.
            authorize(
                principal,
                Action::ReadJobs,
                &Resource::device(job.group.clone(), job.device.clone()),
            )
            .map_err(denied)?;
            if job.device != req.device
                || job.lane != lane
                || job.document != req.document
                || job.bulk != bulk
            {
                return Err(Error::conflict(
                    "the idempotency key was already used for a different job",
                ));
            }
            return Ok(outcome);
        }
        self.events.publish(Event {
            at: now,
            group: job.group.clone(),
            kind: EventKind::JobStateChanged {
                job: job.id,
                device: job.device.clone(),
                from: None,
                to: JobState::Queued,
                version: job.version,
            },
        });
        // Tell the device only when the new job is the one it may claim now. The job is
        // committed: a failure to look at the queue only delays the notice, it must not make
        // the caller retry (and create the job twice without an idempotency key).
        let _ = self
            .notify_claimable(&tenant, &job.device, &job.lane, Some(job.id))
            .await;
        Ok(outcome)
    }

    /// Checks that `device` is registered in `group`, the group the caller named and was
    /// authorized for. Without this a caller could reach a device outside its subtree by naming
    /// a group it may act in. A mismatch answers 404, like a device outside reach.
    async fn check_registered_group(&self, group: &GroupPath, device: &DeviceId) -> Result<()> {
        match self.registry.get_device(&group.tenant(), device).await? {
            Some(d) if d.group == *group => Ok(()),
            _ => Err(Error::not_found("no such device")),
        }
    }

    async fn check_delivery(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        policy: DeliveryPolicy,
    ) -> Result<()> {
        let offline = || self.presence.presence(tenant, device).state == PresenceState::Offline;
        let refuse = || Error::unavailable(format!("device {device} is offline"));
        match policy {
            DeliveryPolicy::Queue => Ok(()),
            DeliveryPolicy::FailIfOffline if offline() => Err(refuse()),
            DeliveryPolicy::FailIfOffline => Ok(()),
            DeliveryPolicy::WaitOnline { max_wait_ms } => {
                if !offline() {
                    return Ok(());
                }
                let Some(sleep) = &self.sleep else {
                    return Err(refuse());
                };
                let online = self.presence.wait_online(tenant, device);
                let mut timeout = sleep.sleep(Duration::from_millis(max_wait_ms));
                if first_wins(online, &mut timeout).await {
                    Ok(())
                } else {
                    Err(refuse())
                }
            }
        }
    }

    /// One job, for a controller with [`Action::ReadJobs`] on its device.
    pub async fn get(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &JobId,
    ) -> Result<JobRecord> {
        let job = self.load(tenant, id).await?;
        authorize(
            principal,
            Action::ReadJobs,
            &Resource::device(job.group.clone(), job.device.clone()),
        )
        .map_err(denied)?;
        Ok(job)
    }

    /// The jobs of `root`'s subtree matching `filter`, ordered by creation.
    pub async fn list(
        &self,
        principal: &Principal,
        root: &GroupPath,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<Page<JobRecord>> {
        authorize(principal, Action::ReadJobs, &Resource::group(root.clone())).map_err(denied)?;
        self.store.list_jobs(root, filter, page).await
    }

    /// Cancels a job: a queued one at once, an active one by asking the device (`force: false`,
    /// the job becomes `canceling`) or at once (`force: true`). `if_match` makes the call
    /// conditional on the job's version (its ETag): [`ErrorKind::PreconditionFailed`] otherwise.
    pub async fn cancel(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &JobId,
        force: bool,
        if_match: Option<u64>,
    ) -> Result<JobRecord> {
        self.control_command(principal, tenant, id, Command::Cancel { force }, if_match)
            .await
    }

    /// Removes a queued or finished job, leaving a `removed` tombstone. Needs
    /// [`Action::CancelJob`]. `if_match` as for [`JobService::cancel`].
    pub async fn remove(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &JobId,
        if_match: Option<u64>,
    ) -> Result<JobRecord> {
        self.control_command(principal, tenant, id, Command::Remove, if_match)
            .await
    }

    async fn control_command(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &JobId,
        cmd: Command,
        if_match: Option<u64>,
    ) -> Result<JobRecord> {
        let job = self.load(tenant, id).await?;
        authorize(
            principal,
            Action::CancelJob,
            &Resource::device(job.group.clone(), job.device.clone()),
        )
        .map_err(denied)?;
        match if_match {
            Some(v) if v != job.version => Err(Error::precondition_failed(format!(
                "job {id} is at version {}, not {v}",
                job.version
            ))),
            // Conditional: exactly the version the controller saw, or 412. No re-read and retry,
            // which would apply the command to a state the controller never saw.
            Some(_) => Ok(self
                .write_once(&job, Actor::Controller, &cmd, None)
                .await?
                .unwrap_or(job)),
            None => self.drive(job, Actor::Controller, &cmd, None).await,
        }
    }

    /// Device: the next job of `lane` ([`DEFAULT_LANE`] when `None`), or `None` when nothing is
    /// claimable. A job delivered earlier and not started yet is returned again with the same
    /// execution; otherwise the first claimable job is delivered with a new execution.
    pub async fn claim_next(
        &self,
        principal: &Principal,
        lane: Option<&str>,
    ) -> Result<Option<JobRecord>> {
        let dp = device_principal(principal)?;
        authorize(
            principal,
            Action::ReceiveJobs,
            &Resource::device(dp.group.clone(), dp.id.clone()),
        )
        .map_err(denied)?;
        let tenant = dp.tenant();
        let lane = lane.unwrap_or(DEFAULT_LANE);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let now = self.clock.now();
            let head = self
                .store
                .queue_head(&tenant, &dp.id, lane, MAX_CONCURRENCY)
                .await?;
            // Fire overdue timers first: a device never takes an expired job.
            let mut fired = false;
            for overdue in head.iter().filter(|j| j.due_at.is_some_and(|d| d <= now)) {
                let after = self
                    .drive(overdue.clone(), Actor::Timer, &Command::Tick, None)
                    .await?;
                fired |= after.version != overdue.version;
            }
            if fired {
                continue;
            }
            let window = window(head);
            if let Some(job) = window.iter().find(|j| j.state == JobState::Delivered) {
                return Ok(Some(job.clone()));
            }
            let Some(job) = window.into_iter().find(|j| machine::is_claimable(j, now)) else {
                return Ok(None);
            };
            match self
                .write_once(&job, Actor::Device, &Command::Claim, None)
                .await
            {
                Ok(Some(record)) => return Ok(Some(record)),
                // Someone else changed the job, or a deadline passed between our read and our
                // write (the machine then refuses the claim): look again.
                Ok(None) => continue,
                Err(e)
                    if e.kind() == ErrorKind::PreconditionFailed
                        || e.kind() == ErrorKind::Conflict =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(contention())
    }

    /// Device: [`JobService::claim_next`], waiting up to `max_wait` for a job when none is
    /// claimable now (a long poll). The wait ends early when this service announces a claimable
    /// job to the device (a creation, a job ending, a backoff running out); jobs that become
    /// claimable through another service instance (another hub node) are found by the last claim
    /// attempt when the wait runs out. Without [`JobService::with_sleep`] it does not wait.
    pub async fn wait_next(
        &self,
        principal: &Principal,
        lane: Option<&str>,
        max_wait: Duration,
    ) -> Result<Option<JobRecord>> {
        let dp = device_principal(principal)?;
        let key = (dp.tenant(), dp.id.clone());
        let Some(sleep) = &self.sleep else {
            return self.claim_next(principal, lane).await;
        };
        let mut deadline = sleep.sleep(max_wait);
        loop {
            let seen = self.signals.generation(&key);
            if let Some(job) = self.claim_next(principal, lane).await? {
                return Ok(Some(job));
            }
            let woken = first_wins(
                Box::pin(self.signals.changed(key.clone(), seen)),
                &mut deadline,
            );
            if !woken.await {
                return self.claim_next(principal, lane).await;
            }
        }
    }

    /// Device: reports on a job it holds; `execution` is the execution it was delivered.
    /// Repeating an accepted report is answered with the job as it is. [`Command::Claim`] is
    /// refused here ([`ErrorKind::InvalidInput`]): use [`JobService::claim_next`], which keeps the
    /// queue's order. Status details and results larger than the store's limit are
    /// [`ErrorKind::TooLarge`].
    pub async fn report(
        &self,
        principal: &Principal,
        id: &JobId,
        execution: u32,
        cmd: Command,
    ) -> Result<JobRecord> {
        let dp = device_principal(principal)?;
        if cmd == Command::Claim {
            // Claims go through `claim_next`, which keeps the queue's order.
            return Err(Error::invalid_input("claim jobs with claim_next"));
        }
        authorize(
            principal,
            Action::ReportJobProgress,
            &Resource::device(dp.group.clone(), dp.id.clone()),
        )
        .map_err(denied)?;
        let job = self.load(&dp.tenant(), id).await?;
        if job.device != dp.id {
            return Err(Error::not_found(format!("job {id} does not exist")));
        }
        self.drive(job, Actor::Device, &cmd, Some(execution)).await
    }

    /// Fires the timers of the jobs due now (time-to-live, execution deadlines, retry backoffs),
    /// at most [`TICK_BATCH`] of them. Returns how many jobs changed.
    pub async fn tick(&self) -> Result<usize> {
        let now = self.clock.now();
        let due = self.store.due_jobs(now, TICK_BATCH).await?;
        let mut changed = 0;
        for job in due {
            let before = job.version;
            // One job failing (contention, a corrupt record) must not stop the others.
            if let Ok(after) = self.drive(job, Actor::Timer, &Command::Tick, None).await
                && after.version != before
            {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Takes or renews exclusive control of a device for `duration` (needs
    /// [`Action::ControlDevice`]); [`ErrorKind::Conflict`] while another controller holds it.
    pub async fn acquire_control(
        &self,
        principal: &Principal,
        group: &GroupPath,
        device: &DeviceId,
        duration: Duration,
    ) -> Result<ControlLease> {
        authorize(
            principal,
            Action::ControlDevice,
            &Resource::device(group.clone(), device.clone()),
        )
        .map_err(denied)?;
        self.check_registered_group(group, device).await?;
        let now = self.clock.now();
        self.store
            .acquire_control(
                &group.tenant(),
                device,
                &principal.describe(),
                now.saturating_add(duration),
                now,
            )
            .await
    }

    /// Gives up exclusive control of a device.
    pub async fn release_control(
        &self,
        principal: &Principal,
        group: &GroupPath,
        device: &DeviceId,
    ) -> Result<()> {
        authorize(
            principal,
            Action::ControlDevice,
            &Resource::device(group.clone(), device.clone()),
        )
        .map_err(denied)?;
        self.check_registered_group(group, device).await?;
        self.store
            .release_control(&group.tenant(), device, &principal.describe())
            .await
    }

    async fn load(&self, tenant: &TenantId, id: &JobId) -> Result<JobRecord> {
        self.store
            .get_job(tenant, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("job {id} does not exist")))
    }

    /// Applies `cmd` to `job` and stores it; on a lost race re-reads and re-applies.
    async fn drive(
        &self,
        mut job: JobRecord,
        actor: Actor,
        cmd: &Command,
        execution: Option<u32>,
    ) -> Result<JobRecord> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            match self.write_once(&job, actor, cmd, execution).await {
                Ok(Some(stored)) => return Ok(stored),
                Ok(None) => return Ok(job),
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                    job = self.load(&job.tenant, &job.id).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(contention())
    }

    /// One attempt: `Ok(None)` when nothing changed, the stored record otherwise.
    async fn write_once(
        &self,
        job: &JobRecord,
        actor: Actor,
        cmd: &Command,
        execution: Option<u32>,
    ) -> Result<Option<JobRecord>> {
        let now = self.clock.now();
        let Outcome::Changed(change) = machine::apply(job, actor, cmd, execution, now)? else {
            return Ok(None);
        };
        let stored = self.store.update_job(&change.record, job.version).await?;
        for event in change.events {
            self.events.publish(event);
        }
        if let Some(notice) = change.notice {
            self.notifier.notify(&stored.tenant, &stored.device, notice);
        }
        if change.queue_released {
            // The write is done; a failure to find the next job only delays its notice.
            let _ = self
                .notify_claimable(&stored.tenant, &stored.device, &stored.lane, None)
                .await;
        }
        Ok(Some(stored))
    }

    /// Tells the device about the first job of the lane it may claim now, if any (and if it is
    /// `only`, when given).
    async fn notify_claimable(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        lane: &str,
        only: Option<JobId>,
    ) -> Result<()> {
        let now = self.clock.now();
        let head = self
            .store
            .queue_head(tenant, device, lane, MAX_CONCURRENCY)
            .await?;
        if let Some(job) = window(head)
            .into_iter()
            .find(|j| machine::is_claimable(j, now))
            .filter(|j| only.is_none_or(|id| id == j.id))
        {
            self.notifier
                .notify(tenant, device, JobNotice::JobAvailable { job: job.id });
            self.signals.bump(&(tenant.clone(), device.clone()));
        }
        Ok(())
    }
}

fn contention() -> Error {
    Error::unavailable("the job is changing too fast; retry")
}
