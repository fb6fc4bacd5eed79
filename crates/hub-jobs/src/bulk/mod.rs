//! Bulk jobs: one job document for a list of devices or a whole group subtree, rolled out at a
//! controlled rate inside scheduling windows, stopped by abort criteria.
//!
//! - [`plan`]: the pure rollout planner (rates, windows, abort criteria, completion).
//! - [`BulkJobs`]: the service. [`BulkJobs::create`] checks [`Action::CreateJob`] on the group
//!   and stores the bulk job; [`BulkJobs::tick`] (call it periodically, like
//!   [`JobService::tick`]) advances every due rollout: it counts the children per state, asks
//!   the planner, creates the planned children through [`JobService::create_in_bulk`] and
//!   records them with a compare-and-set on the bulk job, so several hub nodes may tick at once.
//!   [`BulkJobs::cancel`] stops a rollout and cancels its queued children;
//!   [`BulkJobs::summary`] counts the children per state.
//!
//! **Targets.** [`Targets::Devices`] names devices, each registered in the group's subtree at
//! creation. [`Targets::Group`] takes the subtree's devices (decommissioned ones excepted): a
//! snapshot at creation, or, with `continuous: true`, every device found there at each tick, so
//! devices that join the group later get the job too. A continuous bulk job never completes; it
//! runs until canceled or aborted.
//!
//! **Exactly one child per device.** Each child is created with the idempotency key
//! `bulk:<bulk id>:<device>`, and the store records a device as a target at most once. If two
//! nodes race, the loser's compare-and-set fails; a child it created is found again by its key
//! at the next tick and recorded then (or canceled, when the bulk job ended meanwhile).
//!
//! **Children that cannot be created** (the device left the group, another controller holds
//! it, the delivery policy needs it online and it is not) are recorded as refused targets with
//! the reason, and count as failed for the abort criteria. The child's options may not use
//! [`DeliveryPolicy::WaitOnline`], which would hold the rollout up.
//!
//! The children are created with the rights of the bulk job's creator as they were at creation.
//!
//! The request body of `POST /v1/tenants/{tenant}/bulk-jobs` is a [`CreateBulkJob`]:
//!
//! ```
//! use hub_jobs::bulk::{Rate, Targets};
//! use hub_jobs::CreateBulkJob;
//!
//! let req: CreateBulkJob = serde_json::from_value(serde_json::json!({
//!     "group": "acme/plant-1",
//!     "targets": {"type": "group", "continuous": true},
//!     "document": {"firmware": "2.1.0"},
//!     "options": {"in_progress_timeout_ms": 600000},
//!     "rollout": {
//!         "rate": {"type": "fixed", "per_minute": 100},
//!         "abort": [{"failure": "any", "threshold_percent": 10.0, "min_executions": 50}],
//!         "windows": [{"type": "daily", "start_minute": 60, "duration_minutes": 240}]
//!     }
//! }))?;
//! assert_eq!(req.targets, Targets::Group { continuous: true });
//! assert_eq!(req.rollout.rate, Rate::Fixed { per_minute: 100 });
//! assert!(req.rollout.validate().is_ok());
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use hub_core::{
    Action, BulkJobId, Clock, DeviceId, Error, ErrorKind, GroupPath, JobState, Principal, Resource,
    Result, TenantId, Timestamp, authorize,
};
use hub_store::{
    BulkJobRecord, BulkJobState, BulkJobStore, BulkTarget, JobFilter, JobStore, Lifecycle,
    NewBulkJob, Page, PageRequest, RegistryStore,
};

use crate::machine::{DeliveryPolicy, JobOptions};
use crate::service::{CreateJob, JobService};

pub mod plan;

pub use plan::{
    AbortCriterion, FailureType, Plan, PlanInput, Rate, Rollout, RolloutState, Tally, Verdict,
    Window,
};

/// Which devices a bulk job targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Targets {
    /// These devices; each must be registered in the bulk job's group subtree.
    Devices {
        /// The devices (duplicates are ignored).
        devices: Vec<DeviceId>,
    },
    /// The devices of the group's subtree.
    Group {
        /// Whether devices that join the subtree later get the job too.
        #[serde(default)]
        continuous: bool,
    },
}

/// A bulk job to create (the body of `POST /v1/tenants/{tenant}/bulk-jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBulkJob {
    /// The group whose subtree is targeted (and where the caller needs `CreateJob`).
    pub group: GroupPath,
    /// Which devices.
    pub targets: Targets,
    /// The lane of every child; the default lane when `None`.
    #[serde(default)]
    pub lane: Option<String>,
    /// The opaque job document every child carries.
    pub document: serde_json::Value,
    /// The options of every child.
    #[serde(default)]
    pub options: JobOptions,
    /// Rate, abort criteria, scheduling windows.
    #[serde(default)]
    pub rollout: Rollout,
}

/// A bulk job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkJob {
    /// The bulk job.
    pub id: BulkJobId,
    /// The targeted group.
    pub group: GroupPath,
    /// Its state.
    pub state: BulkJobState,
    /// Its version (the ETag).
    pub version: u64,
    /// What was asked for.
    pub request: CreateBulkJob,
    /// How many devices it targets; `None` for a continuous job (the group decides).
    pub total: Option<u64>,
    /// How many devices were handed their child so far (refused ones included).
    pub targeted: u64,
    /// How many children could not be created.
    pub refused: u64,
    /// Why it was aborted or canceled.
    pub reason: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When the rollout is looked at next.
    pub next_check: Option<Timestamp>,
}

/// The children of a bulk job by state (`GET .../bulk-jobs/{bulk}/summary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkSummary {
    /// The bulk job.
    pub id: BulkJobId,
    /// Its state.
    pub state: BulkJobState,
    /// Its version.
    pub version: u64,
    /// How many devices it targets; `None` for a continuous job.
    pub total: Option<u64>,
    /// Devices handed their child so far (refused ones included).
    pub targeted: u64,
    /// Targeted devices that still wait for their child; `None` for a continuous job.
    pub pending: Option<u64>,
    /// Children that could not be created.
    pub refused: u64,
    /// Children per state (states with no child are absent).
    pub children: BTreeMap<JobState, u64>,
}

/// Limits and pacing of the bulk job service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkConfig {
    /// The most devices a bulk job that is not continuous may target.
    pub max_devices: usize,
    /// The most children one bulk job starts per tick.
    pub max_batch: u32,
    /// How soon a running rollout is looked at again (abort criteria, completion, devices
    /// joining a continuous job's group).
    pub recheck: Duration,
    /// How many due bulk jobs one [`BulkJobs::tick`] advances at most.
    pub tick_batch: u32,
}

impl Default for BulkConfig {
    /// 10 000 devices, 500 children per tick, a recheck every 5 seconds, 64 bulk jobs per tick.
    fn default() -> Self {
        Self {
            max_devices: 10_000,
            max_batch: 500,
            recheck: Duration::from_secs(5),
            tick_batch: 64,
        }
    }
}

/// What the store keeps as the bulk job's definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Definition {
    principal: Principal,
    request: CreateBulkJob,
    /// The resolved device list, sorted; `None` for a continuous job.
    devices: Option<Vec<DeviceId>>,
}

/// What the store keeps as the bulk job's progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Progress {
    planner: RolloutState,
    targeted: u64,
    refused: u64,
    reason: Option<String>,
}

fn corrupt(what: &str) -> Error {
    Error::internal(std::io::Error::other(format!("unreadable bulk job {what}")))
}

fn definition(r: &BulkJobRecord) -> Result<Definition> {
    serde_json::from_value(r.definition.clone()).map_err(|_| corrupt("definition"))
}

fn progress(r: &BulkJobRecord) -> Result<Progress> {
    serde_json::from_value(r.progress.clone()).map_err(|_| corrupt("progress"))
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(Error::internal)
}

fn view(r: &BulkJobRecord) -> Result<BulkJob> {
    let (d, p) = (definition(r)?, progress(r)?);
    Ok(BulkJob {
        id: r.id,
        group: r.group.clone(),
        state: r.state,
        version: r.version,
        total: d.devices.as_ref().map(|v| v.len() as u64),
        request: d.request,
        targeted: p.targeted,
        refused: p.refused,
        reason: p.reason,
        created_by: r.created_by.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        next_check: r.due_at,
    })
}

/// The tally the planner needs, from the children's counts per state.
fn tally(counts: &BTreeMap<JobState, u64>, refused: u64) -> Tally {
    let mut t = Tally {
        refused,
        ..Tally::default()
    };
    for (state, n) in counts {
        let slot = match state {
            JobState::Succeeded => &mut t.succeeded,
            JobState::Failed => &mut t.failed,
            JobState::Rejected => &mut t.rejected,
            JobState::TimedOut | JobState::Expired => &mut t.timed_out,
            JobState::Canceled | JobState::Removed => &mut t.canceled,
            _ => &mut t.unfinished,
        };
        *slot += n;
    }
    t
}

/// Cuts an error text to what the store keeps, on a character boundary.
fn short(e: &Error) -> String {
    let mut s = e.to_string().replace('\0', "");
    if s.len() > hub_store::bulk::MAX_TARGET_ERROR {
        let mut end = hub_store::bulk::MAX_TARGET_ERROR;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn idempotency_key(id: &BulkJobId, device: &DeviceId) -> String {
    format!("bulk:{id}:{device}")
}

/// The bulk job service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BulkJobs {
    bulk: Arc<dyn BulkJobStore>,
    jobs: Arc<dyn JobStore>,
    registry: Arc<dyn RegistryStore>,
    service: JobService,
    clock: Arc<dyn Clock>,
    config: BulkConfig,
}

impl BulkJobs {
    /// A service keeping bulk jobs in `bulk`, creating children through `service` (whose job
    /// store `jobs` it reads for the counts) and finding devices in `registry`.
    pub fn new(
        bulk: Arc<dyn BulkJobStore>,
        jobs: Arc<dyn JobStore>,
        registry: Arc<dyn RegistryStore>,
        service: JobService,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            bulk,
            jobs,
            registry,
            service,
            clock,
            config: BulkConfig::default(),
        }
    }

    /// Replaces the default limits and pacing.
    pub fn with_config(mut self, config: BulkConfig) -> Self {
        self.config = config;
        self
    }

    /// Creates a bulk job and starts its rollout (the first children are created before this
    /// returns, as far as the rate and windows allow). Needs [`Action::CreateJob`] on the
    /// group. Errors: [`ErrorKind::InvalidInput`] for bad options, rollout settings or an
    /// empty device list, [`ErrorKind::NotFound`] for a device outside the group (or a group
    /// outside the caller's reach), [`ErrorKind::TooLarge`] for more than
    /// [`BulkConfig::max_devices`] devices.
    pub async fn create(&self, principal: &Principal, req: CreateBulkJob) -> Result<BulkJob> {
        authorize(
            principal,
            Action::CreateJob,
            &Resource::group(req.group.clone()),
        )
        .map_err(Error::from)?;
        req.options.validate()?;
        req.rollout.validate()?;
        if matches!(req.options.delivery, DeliveryPolicy::WaitOnline { .. }) {
            return Err(Error::invalid_input(
                "bulk jobs cannot wait for devices to come online; use queue or fail_if_offline",
            ));
        }
        if let Some(lane) = &req.lane
            && (lane.is_empty() || lane.len() > 64)
        {
            return Err(Error::invalid_input("a lane name is 1 to 64 bytes"));
        }
        if self.registry.get_group(&req.group).await?.is_none() {
            return Err(Error::not_found(format!(
                "group {} does not exist",
                req.group
            )));
        }
        let devices = match &req.targets {
            Targets::Devices { devices } => {
                let set: BTreeSet<DeviceId> = devices.iter().cloned().collect();
                if set.is_empty() {
                    return Err(Error::invalid_input("a bulk job needs at least one device"));
                }
                self.check_size(set.len())?;
                let tenant = req.group.tenant();
                for d in &set {
                    match self.registry.get_device(&tenant, d).await? {
                        Some(dev) if req.group.contains(&dev.group) => {}
                        _ => {
                            return Err(Error::not_found(format!(
                                "device {d} is not in group {}",
                                req.group
                            )));
                        }
                    }
                }
                Some(set.into_iter().collect())
            }
            Targets::Group { continuous: false } => Some(self.group_devices(&req.group).await?),
            Targets::Group { continuous: true } => None,
        };
        let now = self.clock.now();
        let record = self
            .bulk
            .create_bulk_job(NewBulkJob {
                id: BulkJobId::new(now),
                tenant: req.group.tenant(),
                group: req.group.clone(),
                state: BulkJobState::InProgress,
                definition: to_json(&Definition {
                    principal: principal.clone(),
                    request: req,
                    devices,
                })?,
                progress: to_json(&Progress::default())?,
                created_by: principal.describe(),
                created_at: now,
                due_at: Some(now),
            })
            .await?;
        // The bulk job is stored; starting it here only saves the caller a tick. A failure is
        // retried by the next tick.
        let record = match self.advance(record.clone()).await {
            Ok(r) => r,
            Err(_) => record,
        };
        view(&record)
    }

    fn check_size(&self, n: usize) -> Result<()> {
        if n > self.config.max_devices {
            return Err(Error::too_large(format!(
                "a bulk job targets at most {} devices, not {n}; use a continuous group job",
                self.config.max_devices
            )));
        }
        Ok(())
    }

    /// The devices of `group`'s subtree that are not decommissioned, sorted by id.
    async fn group_devices(&self, group: &GroupPath) -> Result<Vec<DeviceId>> {
        let mut out = Vec::new();
        let mut page = PageRequest::first(0);
        loop {
            let p = self
                .registry
                .list_devices(group, None, page.clone())
                .await?;
            out.extend(
                p.items
                    .into_iter()
                    .filter(|d| d.lifecycle != Lifecycle::Decommissioned)
                    .map(|d| d.id),
            );
            self.check_size(out.len())?;
            match p.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn load(&self, tenant: &TenantId, id: &BulkJobId) -> Result<BulkJobRecord> {
        self.bulk
            .get_bulk_job(tenant, id)
            .await?
            .ok_or_else(|| Error::not_found(format!("bulk job {id} does not exist")))
    }

    async fn load_authorized(
        &self,
        principal: &Principal,
        action: Action,
        tenant: &TenantId,
        id: &BulkJobId,
    ) -> Result<BulkJobRecord> {
        let record = self.load(tenant, id).await?;
        authorize(principal, action, &Resource::group(record.group.clone()))
            .map_err(Error::from)?;
        Ok(record)
    }

    /// One bulk job, for a caller with [`Action::ReadJobs`] on its group.
    pub async fn get(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &BulkJobId,
    ) -> Result<BulkJob> {
        view(
            &self
                .load_authorized(principal, Action::ReadJobs, tenant, id)
                .await?,
        )
    }

    /// The bulk jobs of `root`'s subtree, oldest first. Needs [`Action::ReadJobs`] on `root`.
    pub async fn list(
        &self,
        principal: &Principal,
        root: &GroupPath,
        page: PageRequest,
    ) -> Result<Page<BulkJob>> {
        authorize(principal, Action::ReadJobs, &Resource::group(root.clone()))
            .map_err(Error::from)?;
        let p = self.bulk.list_bulk_jobs(root, page).await?;
        Ok(Page {
            items: p.items.iter().map(view).collect::<Result<_>>()?,
            next: p.next,
        })
    }

    /// The children of a bulk job by state. Needs [`Action::ReadJobs`] on its group.
    pub async fn summary(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &BulkJobId,
    ) -> Result<BulkSummary> {
        let record = self
            .load_authorized(principal, Action::ReadJobs, tenant, id)
            .await?;
        let (d, p) = (definition(&record)?, progress(&record)?);
        let children = self.child_counts(&record).await?;
        let total = d.devices.as_ref().map(|v| v.len() as u64);
        Ok(BulkSummary {
            id: record.id,
            state: record.state,
            version: record.version,
            total,
            targeted: p.targeted,
            pending: total.map(|t| t.saturating_sub(p.targeted)),
            refused: p.refused,
            children,
        })
    }

    /// The devices a bulk job has reached so far, by device id, each with its child (or why it
    /// could not be created). Needs [`Action::ReadJobs`] on its group.
    pub async fn targets(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &BulkJobId,
        page: PageRequest,
    ) -> Result<Page<BulkTarget>> {
        self.load_authorized(principal, Action::ReadJobs, tenant, id)
            .await?;
        self.bulk.list_bulk_targets(tenant, id, page).await
    }

    async fn child_counts(&self, record: &BulkJobRecord) -> Result<BTreeMap<JobState, u64>> {
        // Children are counted tenant-wide: a device may have moved out of the subtree since.
        let filter = JobFilter {
            bulk: Some(record.id),
            ..JobFilter::default()
        };
        self.jobs
            .count_jobs(&GroupPath::root(&record.tenant), &filter)
            .await
    }

    /// Cancels a bulk job: no more children start, and its queued children are canceled
    /// (children a device already holds run on; cancel them one by one if needed). Needs
    /// [`Action::CancelJob`] on its group. `if_match` makes it conditional on the version
    /// ([`ErrorKind::PreconditionFailed`]). Canceling a canceled bulk job again cancels the
    /// queued children that are left (so a retry after a failure finishes the work); canceling
    /// a completed or aborted one is [`ErrorKind::Conflict`].
    pub async fn cancel(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        id: &BulkJobId,
        if_match: Option<u64>,
    ) -> Result<BulkJob> {
        let mut record = self
            .load_authorized(principal, Action::CancelJob, tenant, id)
            .await?;
        for _ in 0..crate::service::MAX_CAS_ATTEMPTS {
            if let Some(v) = if_match
                && v != record.version
            {
                return Err(Error::precondition_failed(format!(
                    "bulk job {id} is at version {}, not {v}",
                    record.version
                )));
            }
            if record.state == BulkJobState::Canceled {
                self.cancel_queued(principal, &record).await?;
                return view(&record);
            }
            if record.state.is_terminal() {
                return Err(Error::conflict(format!(
                    "bulk job {id} is already {}",
                    record.state.as_str()
                )));
            }
            let mut next = record.clone();
            let mut p = progress(&record)?;
            p.reason = Some(format!("canceled by {}", principal.describe()));
            next.progress = to_json(&p)?;
            next.state = BulkJobState::Canceled;
            next.due_at = None;
            next.updated_at = self.clock.now();
            match self.bulk.update_bulk_job(&next, record.version, &[]).await {
                Ok(stored) => {
                    self.cancel_queued(principal, &stored).await?;
                    return view(&stored);
                }
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                    record = self.load(tenant, id).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::unavailable(
            "the bulk job is changing too fast; retry",
        ))
    }

    /// Cancels the queued children of `record` as `principal`; returns how many.
    async fn cancel_queued(&self, principal: &Principal, record: &BulkJobRecord) -> Result<u64> {
        let filter = JobFilter {
            bulk: Some(record.id),
            states: vec![JobState::Queued],
            ..JobFilter::default()
        };
        let root = GroupPath::root(&record.tenant);
        let mut canceled = 0;
        let mut page = PageRequest::first(0);
        loop {
            let p = self.jobs.list_jobs(&root, &filter, page.clone()).await?;
            for job in &p.items {
                // A child outside the caller's reach (its device moved) or already started is
                // left alone.
                if self
                    .service
                    .cancel(principal, &record.tenant, &job.id, false, None)
                    .await
                    .is_ok()
                {
                    canceled += 1;
                }
            }
            match p.next {
                Some(next) => page.after = Some(next),
                None => return Ok(canceled),
            }
        }
    }

    /// Advances every rollout that is due now (at most [`BulkConfig::tick_batch`]): starts the
    /// children the planner allows, applies abort criteria, completes finished bulk jobs.
    /// Returns how many bulk jobs changed. Safe to run on several nodes at once.
    pub async fn tick(&self) -> Result<usize> {
        let now = self.clock.now();
        let due = self.bulk.due_bulk_jobs(now, self.config.tick_batch).await?;
        let mut changed = 0;
        for record in due {
            // One bulk job failing (contention, a corrupt record) must not stop the others.
            if let Ok(after) = self.advance(record.clone()).await
                && (after.version != record.version)
            {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The targeted devices of `record` that have no child yet, sorted by id.
    async fn pending(
        &self,
        record: &BulkJobRecord,
        d: &Definition,
        p: &Progress,
    ) -> Result<Vec<DeviceId>> {
        // Every target row is counted in `targeted` by the same compare-and-set that stored
        // it: once it covers the list, nothing is pending and the targets need not be read.
        if d.devices
            .as_ref()
            .is_some_and(|list| p.targeted >= list.len() as u64)
        {
            return Ok(Vec::new());
        }
        let mut done = BTreeSet::new();
        let mut page = PageRequest::first(0);
        loop {
            let p = self
                .bulk
                .list_bulk_targets(&record.tenant, &record.id, page.clone())
                .await?;
            done.extend(p.items.into_iter().map(|t| t.device));
            match p.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        let all = match &d.devices {
            Some(list) => list.clone(),
            None => {
                let mut all = Vec::new();
                let mut page = PageRequest::first(0);
                loop {
                    let p = self
                        .registry
                        .list_devices(&record.group, None, page.clone())
                        .await?;
                    all.extend(
                        p.items
                            .into_iter()
                            .filter(|d| d.lifecycle != Lifecycle::Decommissioned)
                            .map(|d| d.id),
                    );
                    match p.next {
                        Some(next) => page.after = Some(next),
                        None => break,
                    }
                }
                all.sort();
                all
            }
        };
        Ok(all.into_iter().filter(|d| !done.contains(d)).collect())
    }

    /// One step of one rollout; returns the record as stored afterwards.
    async fn advance(&self, record: BulkJobRecord) -> Result<BulkJobRecord> {
        if record.state.is_terminal() {
            return Ok(record);
        }
        let d = definition(&record)?;
        let mut p = progress(&record)?;
        let pending = self.pending(&record, &d, &p).await?;
        let counts = self.child_counts(&record).await?;
        let now = self.clock.now();
        let planned = plan::plan(&PlanInput {
            rollout: &d.request.rollout,
            continuous: d.devices.is_none(),
            state: p.planner,
            tally: tally(&counts, p.refused),
            pending: pending.len() as u64,
            max_batch: self.config.max_batch,
            recheck: self.config.recheck,
            now,
        });
        let mut next = record.clone();
        next.updated_at = now;
        next.due_at = planned.next_check;
        p.planner = planned.state;
        let mut targets = Vec::new();
        match &planned.verdict {
            Verdict::Abort { reason } => {
                next.state = BulkJobState::Aborted;
                next.due_at = None;
                p.reason = Some(reason.clone());
            }
            Verdict::Complete => {
                next.state = BulkJobState::Completed;
                next.due_at = None;
            }
            Verdict::Continue => {
                for device in pending.iter().take(planned.start as usize) {
                    targets.push(self.start_child(&record, &d, device, now).await?);
                }
                p.targeted += targets.len() as u64;
                p.refused += targets.iter().filter(|t| t.job.is_none()).count() as u64;
            }
        }
        next.progress = to_json(&p)?;
        match self
            .bulk
            .update_bulk_job(&next, record.version, &targets)
            .await
        {
            Ok(stored) => {
                if stored.state == BulkJobState::Aborted {
                    self.cancel_queued(&d.principal, &stored).await?;
                }
                Ok(stored)
            }
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                // Another node advanced or ended the rollout first. Children created here are
                // found again by their idempotency key at the next tick, unless it has ended.
                let now_stored = self.load(&record.tenant, &record.id).await?;
                if now_stored.state.is_terminal() && !targets.is_empty() {
                    self.cancel_queued(&d.principal, &now_stored).await?;
                }
                Ok(now_stored)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the child for `device`, or says why it could not be created.
    async fn start_child(
        &self,
        record: &BulkJobRecord,
        d: &Definition,
        device: &DeviceId,
        now: Timestamp,
    ) -> Result<BulkTarget> {
        let refused = |e: &Error| BulkTarget {
            device: device.clone(),
            job: None,
            error: Some(short(e)),
            at: now,
        };
        let Some(dev) = self.registry.get_device(&record.tenant, device).await? else {
            return Ok(refused(&Error::not_found(format!(
                "device {device} no longer exists"
            ))));
        };
        if !record.group.contains(&dev.group) {
            return Ok(refused(&Error::not_found(format!(
                "device {device} left group {}",
                record.group
            ))));
        }
        let req = CreateJob {
            device: device.clone(),
            group: dev.group,
            lane: d.request.lane.clone(),
            document: d.request.document.clone(),
            options: d.request.options,
            idempotency_key: Some(idempotency_key(&record.id, device)),
        };
        match self
            .service
            .create_in_bulk(&d.principal, req, record.id)
            .await
        {
            Ok(outcome) => Ok(BulkTarget {
                device: device.clone(),
                job: Some(outcome.job.id),
                error: None,
                at: now,
            }),
            // The store failing is not the device's fault: try again at the next tick. With
            // queued delivery, unavailable can only mean the store (or contention) too.
            Err(e)
                if e.kind() == ErrorKind::Internal
                    || (e.kind() == ErrorKind::Unavailable
                        && d.request.options.delivery == DeliveryPolicy::Queue) =>
            {
                Err(e)
            }
            Err(e) => Ok(refused(&e)),
        }
    }
}
