//! The in-memory backend: for tests, and the reference model the conformance kit compares other
//! backends with. Everything sits behind one mutex; nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use hub_core::{
    BoxFuture, DeviceId, Error, GroupPath, JobId, JobState, Result, TenantId, Timestamp,
};

use crate::credentials::{AccessKeyRecord, CredentialStore};
use crate::jobs::{ControlLease, CreateOutcome, JobFilter, JobRecord, JobStore, NewJob};
use crate::measurements::{
    AggregateQuery, AggregateScope, AppendOutcome, Bucket, HOUR_MS, MeasurementStore, Point,
    SeriesName, SeriesPoints, bucket_start,
};
use crate::registry::{Device, DevicePatch, Group, Lifecycle, NewDevice, RegistryStore};
use crate::rollup::{Acc, fold};
use crate::{Page, PageRequest, StoreLimits, Stores, bad_cursor, validate};

type DeviceKey = (TenantId, DeviceId);

#[derive(Debug, Default)]
struct State {
    groups: BTreeMap<GroupPath, Group>,
    devices: BTreeMap<DeviceKey, Device>,
    keys: BTreeMap<String, AccessKeyRecord>,
    jobs: BTreeMap<JobId, JobRecord>,
    job_seq: HashMap<DeviceKey, u64>,
    idempotency: HashMap<(TenantId, String), JobId>,
    control: HashMap<DeviceKey, ControlLease>,
    points: BTreeMap<(TenantId, DeviceId, SeriesName), BTreeMap<i64, f64>>,
}

/// The in-memory backend. Clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    pub(crate) artifacts: Arc<Mutex<crate::artifacts::memory::Blobs>>,
    pub(crate) limits: StoreLimits,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            state: Arc::default(),
            artifacts: Arc::default(),
            limits,
        }
    }

    /// The same store behind every trait.
    pub fn into_stores(self) -> Stores {
        let me = Arc::new(self);
        Stores {
            registry: me.clone(),
            credentials: me.clone(),
            jobs: me.clone(),
            measurements: me.clone(),
            artifacts: me,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change: every method
        // validates first and mutates last.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ready<'a, T: Send + 'a>(r: Result<T>) -> BoxFuture<'a, Result<T>> {
    Box::pin(std::future::ready(r))
}

fn device_key(tenant: &TenantId, id: &DeviceId) -> DeviceKey {
    (tenant.clone(), id.clone())
}

fn parse_cursor<T: std::str::FromStr>(after: &Option<String>) -> Result<Option<T>> {
    after
        .as_deref()
        .map(|c| c.parse().map_err(|_| bad_cursor()))
        .transpose()
}

impl RegistryStore for MemoryStore {
    fn create_tenant<'a>(
        &'a self,
        tenant: &'a TenantId,
        display_name: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        ready((|| {
            validate::display_name(display_name)?;
            let path = GroupPath::root(tenant);
            let mut s = self.lock();
            if s.groups.contains_key(&path) {
                return Err(Error::conflict(format!("tenant {tenant} already exists")));
            }
            let g = Group {
                path: path.clone(),
                display_name: display_name.to_owned(),
                created_at: now,
                updated_at: now,
            };
            s.groups.insert(path, g.clone());
            Ok(g)
        })())
    }

    fn create_group<'a>(
        &'a self,
        path: &'a GroupPath,
        display_name: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        ready((|| {
            validate::display_name(display_name)?;
            let Some(parent) = path.parent() else {
                return Err(Error::invalid_input(
                    "a tenant's root group is created with create_tenant",
                ));
            };
            let mut s = self.lock();
            if !s.groups.contains_key(&parent) {
                return Err(Error::not_found(format!(
                    "parent group {parent} does not exist"
                )));
            }
            if s.groups.contains_key(path) {
                return Err(Error::conflict(format!("group {path} already exists")));
            }
            let g = Group {
                path: path.clone(),
                display_name: display_name.to_owned(),
                created_at: now,
                updated_at: now,
            };
            s.groups.insert(path.clone(), g.clone());
            Ok(g)
        })())
    }

    fn get_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<Option<Group>>> {
        ready(Ok(self.lock().groups.get(path).cloned()))
    }

    fn list_groups<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Group>>> {
        ready((|| {
            let after: Option<GroupPath> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let s = self.lock();
            let items: Vec<Group> = s
                .groups
                .values()
                .filter(|g| root.contains(&g.path))
                .filter(|g| after.as_ref().is_none_or(|a| g.path.as_str() > a.as_str()))
                .take(limit as usize + 1)
                .cloned()
                .collect();
            Ok(Page::from_overfetch(items, limit, |g| g.path.to_string()))
        })())
    }

    fn delete_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<()>> {
        ready((|| {
            if path.is_root() {
                return Err(Error::invalid_input(
                    "a tenant's root group cannot be deleted",
                ));
            }
            let mut s = self.lock();
            if !s.groups.contains_key(path) {
                return Err(Error::not_found(format!("group {path} does not exist")));
            }
            if s.groups.keys().any(|g| g != path && path.contains(g)) {
                return Err(Error::conflict(format!("group {path} has child groups")));
            }
            if s.devices.values().any(|d| d.group == *path) {
                return Err(Error::conflict(format!("group {path} has devices")));
            }
            s.groups.remove(path);
            Ok(())
        })())
    }

    fn create_device<'a>(
        &'a self,
        device: NewDevice,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        ready((|| {
            validate::display_name(&device.display_name)?;
            validate::attributes(&device.attributes, &self.limits)?;
            let mut s = self.lock();
            if !s.groups.contains_key(&device.group) {
                return Err(Error::not_found(format!(
                    "group {} does not exist",
                    device.group
                )));
            }
            let key = device_key(&device.group.tenant(), &device.id);
            if s.devices.contains_key(&key) {
                return Err(Error::conflict(format!(
                    "device {} already exists",
                    device.id
                )));
            }
            let d = Device {
                id: device.id,
                group: device.group,
                display_name: device.display_name,
                attributes: device.attributes,
                lifecycle: Lifecycle::Provisioned,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            s.devices.insert(key, d.clone());
            Ok(d)
        })())
    }

    fn get_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Option<Device>>> {
        ready(Ok(self
            .lock()
            .devices
            .get(&device_key(tenant, id))
            .cloned()))
    }

    fn update_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
        patch: DevicePatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        ready((|| {
            if let Some(name) = &patch.display_name {
                validate::display_name(name)?;
            }
            if let Some(attrs) = &patch.attributes {
                validate::attributes(attrs, &self.limits)?;
            }
            let mut s = self.lock();
            let d = s
                .devices
                .get_mut(&device_key(tenant, id))
                .ok_or_else(|| Error::not_found(format!("device {id} does not exist")))?;
            if let Some(v) = expected_version
                && d.version != v
            {
                return Err(Error::precondition_failed(format!(
                    "device {id} is at version {}, not {v}",
                    d.version
                )));
            }
            if let Some(name) = patch.display_name {
                d.display_name = name;
            }
            if let Some(attrs) = patch.attributes {
                d.attributes = attrs;
            }
            if let Some(l) = patch.lifecycle {
                d.lifecycle = l;
            }
            d.version += 1;
            d.updated_at = now;
            Ok(d.clone())
        })())
    }

    fn move_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
        to: &'a GroupPath,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        ready((|| {
            if to.tenant() != *tenant {
                return Err(Error::invalid_input(
                    "a device cannot move to another tenant",
                ));
            }
            let mut s = self.lock();
            if !s.groups.contains_key(to) {
                return Err(Error::not_found(format!("group {to} does not exist")));
            }
            let d = s
                .devices
                .get_mut(&device_key(tenant, id))
                .ok_or_else(|| Error::not_found(format!("device {id} does not exist")))?;
            d.group = to.clone();
            d.version += 1;
            d.updated_at = now;
            Ok(d.clone())
        })())
    }

    fn delete_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<()>> {
        ready(match self.lock().devices.remove(&device_key(tenant, id)) {
            Some(_) => Ok(()),
            None => Err(Error::not_found(format!("device {id} does not exist"))),
        })
    }

    fn list_devices<'a>(
        &'a self,
        root: &'a GroupPath,
        lifecycle: Option<Lifecycle>,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Device>>> {
        ready((|| {
            let after: Option<DeviceId> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let tenant = root.tenant();
            let s = self.lock();
            let items: Vec<Device> = s
                .devices
                .range((tenant.clone(), after.clone().unwrap_or_else(min_device))..)
                .take_while(|((t, _), _)| *t == tenant)
                .map(|(_, d)| d)
                .filter(|d| after.as_ref() != Some(&d.id))
                .filter(|d| root.contains(&d.group))
                .filter(|d| lifecycle.is_none_or(|l| d.lifecycle == l))
                .take(limit as usize + 1)
                .cloned()
                .collect();
            Ok(Page::from_overfetch(items, limit, |d| d.id.to_string()))
        })())
    }
}

fn min_device() -> DeviceId {
    // The smallest valid device id in byte order.
    DeviceId::new("0").expect("valid")
}

impl CredentialStore for MemoryStore {
    fn put_access_key<'a>(&'a self, key: AccessKeyRecord) -> BoxFuture<'a, Result<()>> {
        ready((|| {
            let mut s = self.lock();
            if s.keys.contains_key(&key.prefix) {
                return Err(Error::conflict("an access key with this prefix exists"));
            }
            s.keys.insert(key.prefix.clone(), key);
            Ok(())
        })())
    }

    fn find_access_key<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessKeyRecord>>> {
        ready(Ok(self.lock().keys.get(prefix).cloned()))
    }

    fn list_access_keys<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<AccessKeyRecord>>> {
        let mut keys: Vec<AccessKeyRecord> = self
            .lock()
            .keys
            .values()
            .filter(|k| k.tenant == *tenant && k.device == *device)
            .cloned()
            .collect();
        keys.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(a.prefix.cmp(&b.prefix))
        });
        ready(Ok(keys))
    }

    fn set_access_key_expiry<'a>(
        &'a self,
        prefix: &'a str,
        expires_at: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<()>> {
        ready(match self.lock().keys.get_mut(prefix) {
            Some(k) => {
                k.expires_at = expires_at;
                Ok(())
            }
            None => Err(Error::not_found("no such access key")),
        })
    }

    fn revoke_access_key<'a>(
        &'a self,
        prefix: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<()>> {
        ready(match self.lock().keys.get_mut(prefix) {
            Some(k) => {
                k.revoked_at.get_or_insert(now);
                Ok(())
            }
            None => Err(Error::not_found("no such access key")),
        })
    }
}

fn job_matches(job: &JobRecord, root: &GroupPath, filter: &JobFilter) -> bool {
    root.contains(&job.group)
        && filter.device.as_ref().is_none_or(|d| job.device == *d)
        && (filter.states.is_empty() || filter.states.contains(&job.state))
        && filter.bulk.is_none_or(|b| job.bulk == Some(b))
}

impl JobStore for MemoryStore {
    fn create_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<CreateOutcome>> {
        ready((|| {
            validate::new_job(&job, &self.limits)?;
            let mut s = self.lock();
            if let Some(key) = &job.idempotency_key
                && let Some(id) = s.idempotency.get(&(job.tenant.clone(), key.clone()))
            {
                let existing = s.jobs[id].clone();
                return Ok(CreateOutcome {
                    job: existing,
                    created: false,
                });
            }
            if s.jobs.contains_key(&job.id) {
                return Err(Error::conflict(format!("job {} already exists", job.id)));
            }
            let seq = s
                .job_seq
                .entry(device_key(&job.tenant, &job.device))
                .or_insert(0);
            *seq += 1;
            let record = JobRecord {
                id: job.id,
                tenant: job.tenant,
                device: job.device,
                group: job.group,
                lane: job.lane,
                seq: *seq,
                state: job.state,
                version: 1,
                execution: 0,
                attempts: 0,
                document: job.document,
                options: job.options,
                idempotency_key: job.idempotency_key,
                created_by: job.created_by,
                bulk: job.bulk,
                created_at: job.created_at,
                updated_at: job.created_at,
                due_at: job.due_at,
                status_details: None,
                result: None,
            };
            if let Some(key) = &record.idempotency_key {
                s.idempotency
                    .insert((record.tenant.clone(), key.clone()), record.id);
            }
            s.jobs.insert(record.id, record.clone());
            Ok(CreateOutcome {
                job: record,
                created: true,
            })
        })())
    }

    fn get_job<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a JobId,
    ) -> BoxFuture<'a, Result<Option<JobRecord>>> {
        ready(Ok(self
            .lock()
            .jobs
            .get(id)
            .filter(|j| j.tenant == *tenant)
            .cloned()))
    }

    fn update_job<'a>(
        &'a self,
        job: &'a JobRecord,
        expected_version: u64,
    ) -> BoxFuture<'a, Result<JobRecord>> {
        ready((|| {
            validate::job_status(
                job.status_details.as_ref(),
                job.result.as_ref(),
                &self.limits,
            )?;
            validate::json_size(
                &job.options,
                self.limits.max_job_document_bytes,
                "the job options",
            )?;
            let mut s = self.lock();
            let stored = s
                .jobs
                .get_mut(&job.id)
                .filter(|j| j.tenant == job.tenant)
                .ok_or_else(|| Error::not_found(format!("job {} does not exist", job.id)))?;
            if stored.version != expected_version {
                return Err(Error::precondition_failed(format!(
                    "job {} is at version {}, not {expected_version}",
                    job.id, stored.version
                )));
            }
            stored.state = job.state;
            stored.execution = job.execution;
            stored.attempts = job.attempts;
            stored.options = job.options.clone();
            stored.due_at = job.due_at;
            stored.status_details = job.status_details.clone();
            stored.result = job.result.clone();
            stored.updated_at = job.updated_at;
            stored.version = expected_version + 1;
            Ok(stored.clone())
        })())
    }

    fn queue_head<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        lane: &'a str,
        n: u32,
    ) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
        let s = self.lock();
        let mut head: Vec<JobRecord> = s
            .jobs
            .values()
            .filter(|j| {
                j.tenant == *tenant
                    && j.device == *device
                    && j.lane == lane
                    && !j.state.is_terminal()
            })
            .cloned()
            .collect();
        head.sort_by_key(|j| j.seq);
        head.truncate(n as usize);
        ready(Ok(head))
    }

    fn due_jobs<'a>(&'a self, at: Timestamp, limit: u32) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
        let s = self.lock();
        let mut due: Vec<JobRecord> = s
            .jobs
            .values()
            .filter(|j| !j.state.is_terminal() && j.due_at.is_some_and(|d| d <= at))
            .cloned()
            .collect();
        due.sort_by_key(|j| (j.due_at, j.id));
        due.truncate(limit as usize);
        ready(Ok(due))
    }

    fn list_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<JobRecord>>> {
        ready((|| {
            let after: Option<JobId> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let s = self.lock();
            let items: Vec<JobRecord> = s
                .jobs
                .values()
                .filter(|j| after.is_none_or(|a| j.id > a))
                .filter(|j| job_matches(j, root, filter))
                .take(limit as usize + 1)
                .cloned()
                .collect();
            Ok(Page::from_overfetch(items, limit, |j| j.id.to_string()))
        })())
    }

    fn count_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        filter: &'a JobFilter,
    ) -> BoxFuture<'a, Result<BTreeMap<JobState, u64>>> {
        let mut counts = BTreeMap::new();
        for j in self
            .lock()
            .jobs
            .values()
            .filter(|j| job_matches(j, root, filter))
        {
            *counts.entry(j.state).or_insert(0) += 1;
        }
        ready(Ok(counts))
    }

    fn acquire_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
        until: Timestamp,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ControlLease>> {
        ready((|| {
            let mut s = self.lock();
            let key = device_key(tenant, device);
            if let Some(current) = s.control.get(&key)
                && current.holder != holder
                && current.until > now
            {
                return Err(Error::conflict(format!(
                    "device {device} is under exclusive control until {}",
                    current.until
                )));
            }
            let lease = ControlLease {
                tenant: tenant.clone(),
                device: device.clone(),
                holder: holder.to_owned(),
                until,
            };
            s.control.insert(key, lease.clone());
            Ok(lease)
        })())
    }

    fn release_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        ready({
            let mut s = self.lock();
            let key = device_key(tenant, device);
            match s.control.get(&key) {
                None => Ok(()),
                Some(l) if l.holder == holder => {
                    s.control.remove(&key);
                    Ok(())
                }
                Some(_) => Err(Error::conflict(format!(
                    "exclusive control of device {device} is held by someone else"
                ))),
            }
        })
    }

    fn get_control<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<ControlLease>>> {
        ready(Ok(self
            .lock()
            .control
            .get(&device_key(tenant, device))
            .filter(|l| l.until > now)
            .cloned()))
    }
}

impl MeasurementStore for MemoryStore {
    fn append<'a>(&'a self, batch: &'a [SeriesPoints]) -> BoxFuture<'a, Result<AppendOutcome>> {
        ready((|| {
            validate::points(batch, &self.limits)?;
            let mut s = self.lock();
            let mut out = AppendOutcome::default();
            for sp in batch {
                let series = s
                    .points
                    .entry((sp.tenant.clone(), sp.device.clone(), sp.series.clone()))
                    .or_default();
                for p in &sp.points {
                    if let std::collections::btree_map::Entry::Vacant(e) =
                        series.entry(p.ts.as_millis())
                    {
                        e.insert(p.value);
                        out.inserted += 1;
                    } else {
                        out.duplicates += 1;
                    }
                }
            }
            Ok(out)
        })())
    }

    fn read_range<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        series: &'a SeriesName,
        from: Timestamp,
        to: Timestamp,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Point>>> {
        ready((|| {
            validate::range(from, to)?;
            let after: Option<i64> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let start = after.map_or(from.as_millis(), |a| (a + 1).max(from.as_millis()));
            let s = self.lock();
            let items: Vec<Point> = s
                .points
                .get(&(tenant.clone(), device.clone(), series.clone()))
                .map(|pts| {
                    pts.range(start..to.as_millis().max(start))
                        .take(limit as usize + 1)
                        .filter_map(|(&ts, &value)| {
                            Timestamp::from_millis(ts)
                                .ok()
                                .map(|ts| Point { ts, value })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Page::from_overfetch(items, limit, |p| {
                p.ts.as_millis().to_string()
            }))
        })())
    }

    fn aggregate<'a>(&'a self, query: &'a AggregateQuery) -> BoxFuture<'a, Result<Vec<Bucket>>> {
        ready((|| {
            let width = validate::aggregate(query, &self.limits)?;
            let (from, to) = (query.from.as_millis(), query.to.as_millis());
            let s = self.lock();
            let devices: Vec<(TenantId, DeviceId)> = match &query.scope {
                AggregateScope::Device { tenant, device } => {
                    vec![(tenant.clone(), device.clone())]
                }
                AggregateScope::Subtree { group } => s
                    .devices
                    .values()
                    .filter(|d| group.contains(&d.group))
                    .map(|d| (d.tenant(), d.id.clone()))
                    .collect(),
            };
            let mut points = Vec::new();
            for (tenant, device) in devices {
                if let Some(pts) = s.points.get(&(tenant, device, query.series.clone())) {
                    points.extend(pts.range(from..to).map(|(&t, &v)| (t, v)));
                }
            }
            Ok(fold(
                points.into_iter().map(|(t, v)| (t, Acc::point(t, v))),
                width,
            ))
        })())
    }

    fn list_series<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<SeriesName>>> {
        let s = self.lock();
        let names = s
            .points
            .iter()
            .filter(|((t, d, _), pts)| t == tenant && d == device && !pts.is_empty())
            .map(|((_, _, n), _)| n.clone())
            .collect();
        ready(Ok(names))
    }

    fn delete_before<'a>(&'a self, before: Timestamp) -> BoxFuture<'a, Result<u64>> {
        let cut = bucket_start(before.as_millis(), HOUR_MS);
        let mut s = self.lock();
        let mut deleted = 0u64;
        for pts in s.points.values_mut() {
            let keep = pts.split_off(&cut);
            deleted += pts.len() as u64;
            *pts = keep;
        }
        ready(Ok(deleted))
    }
}
