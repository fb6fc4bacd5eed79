//! Bulk jobs in memory, behind their own mutex (nothing else locks two stores at once).

use std::collections::BTreeMap;

use hub_core::{BoxFuture, BulkJobId, DeviceId, GroupPath, Result, TenantId, Timestamp};

use super::{
    BulkJobRecord, BulkJobStore, BulkTarget, NewBulkJob, already_targeted, missing, record_of,
    stale, validate_new, validate_update,
};
use crate::memory::MemoryStore;
use crate::{Page, PageRequest, bad_cursor};

/// The in-memory bulk job tables.
#[derive(Debug, Default)]
pub(crate) struct BulkState {
    jobs: BTreeMap<BulkJobId, BulkJobRecord>,
    targets: BTreeMap<BulkJobId, BTreeMap<DeviceId, BulkTarget>>,
}

impl BulkState {
    /// The new group of every bulk job under `from` when `from` moves to `to`; nothing changes.
    pub(crate) fn rebase_plan(
        &self,
        from: &GroupPath,
        to: &GroupPath,
    ) -> Result<Vec<(BulkJobId, GroupPath)>> {
        self.jobs
            .values()
            .filter(|j| from.contains(&j.group))
            .map(|j| Ok((j.id, crate::validate::rebased(&j.group, from, to)?)))
            .collect()
    }

    /// Applies what [`BulkState::rebase_plan`] computed.
    pub(crate) fn apply_rebase(&mut self, moves: Vec<(BulkJobId, GroupPath)>) {
        for (id, group) in moves {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.group = group;
            }
        }
    }
}

fn ready<'a, T: Send + 'a>(r: Result<T>) -> BoxFuture<'a, Result<T>> {
    Box::pin(std::future::ready(r))
}

impl MemoryStore {
    pub(crate) fn bulk_lock(&self) -> std::sync::MutexGuard<'_, BulkState> {
        // Every method validates first and mutates last, so a poisoned lock holds no half change.
        self.bulk.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BulkJobStore for MemoryStore {
    fn create_bulk_job<'a>(&'a self, job: NewBulkJob) -> BoxFuture<'a, Result<BulkJobRecord>> {
        ready((|| {
            validate_new(&job, &self.limits)?;
            let mut s = self.bulk_lock();
            if s.jobs.contains_key(&job.id) {
                return Err(hub_core::Error::conflict(format!(
                    "bulk job {} already exists",
                    job.id
                )));
            }
            let record = record_of(job);
            s.jobs.insert(record.id, record.clone());
            Ok(record)
        })())
    }

    fn get_bulk_job<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a BulkJobId,
    ) -> BoxFuture<'a, Result<Option<BulkJobRecord>>> {
        let s = self.bulk_lock();
        ready(Ok(s.jobs.get(id).filter(|j| &j.tenant == tenant).cloned()))
    }

    fn list_bulk_jobs<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<BulkJobRecord>>> {
        ready((|| {
            let limit = page.effective_limit(&self.limits);
            let after: Option<BulkJobId> = page
                .after
                .as_deref()
                .map(|c| c.parse().map_err(|_| bad_cursor()))
                .transpose()?;
            let s = self.bulk_lock();
            let items: Vec<BulkJobRecord> = s
                .jobs
                .values()
                .filter(|j| after.is_none_or(|a| j.id > a) && root.contains(&j.group))
                .take(limit as usize + 1)
                .cloned()
                .collect();
            Ok(Page::from_overfetch(items, limit, |j| j.id.to_string()))
        })())
    }

    fn update_bulk_job<'a>(
        &'a self,
        job: &'a BulkJobRecord,
        expected_version: u64,
        new_targets: &'a [BulkTarget],
    ) -> BoxFuture<'a, Result<BulkJobRecord>> {
        ready((|| {
            validate_update(job, new_targets, &self.limits)?;
            let mut s = self.bulk_lock();
            let stored = s
                .jobs
                .get(&job.id)
                .filter(|j| j.tenant == job.tenant)
                .ok_or_else(|| missing(&job.id))?;
            if stored.version != expected_version {
                return Err(stale(&job.id, stored.version, expected_version));
            }
            let known = s.targets.get(&job.id);
            if let Some(t) = new_targets
                .iter()
                .find(|t| known.is_some_and(|k| k.contains_key(&t.device)))
            {
                return Err(already_targeted(&t.device));
            }
            let mut updated = stored.clone();
            updated.state = job.state;
            updated.progress = job.progress.clone();
            updated.due_at = job.due_at;
            updated.updated_at = job.updated_at;
            updated.version = expected_version + 1;
            let known = s.targets.entry(job.id).or_default();
            for t in new_targets {
                known.insert(t.device.clone(), t.clone());
            }
            s.jobs.insert(job.id, updated.clone());
            Ok(updated)
        })())
    }

    fn list_bulk_targets<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a BulkJobId,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<BulkTarget>>> {
        ready((|| {
            let limit = page.effective_limit(&self.limits);
            let after: Option<DeviceId> = page
                .after
                .as_deref()
                .map(|c| c.parse().map_err(|_| bad_cursor()))
                .transpose()?;
            let s = self.bulk_lock();
            if s.jobs.get(id).is_none_or(|j| &j.tenant != tenant) {
                return Ok(Page {
                    items: Vec::new(),
                    next: None,
                });
            }
            let items: Vec<BulkTarget> = s
                .targets
                .get(id)
                .into_iter()
                .flat_map(|k| k.values())
                .filter(|t| after.as_ref().is_none_or(|a| &t.device > a))
                .take(limit as usize + 1)
                .cloned()
                .collect();
            Ok(Page::from_overfetch(items, limit, |t| t.device.to_string()))
        })())
    }

    fn due_bulk_jobs<'a>(
        &'a self,
        at: Timestamp,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<BulkJobRecord>>> {
        let s = self.bulk_lock();
        let mut due: Vec<BulkJobRecord> = s
            .jobs
            .values()
            .filter(|j| !j.state.is_terminal() && j.due_at.is_some_and(|d| d <= at))
            .cloned()
            .collect();
        due.sort_by_key(|j| (j.due_at, j.id));
        due.truncate(limit as usize);
        ready(Ok(due))
    }
}
