//! The conformance kit on the in-memory reference backend.

use hub_store::conformance::{self, StoresFactory};
use hub_store::{StoreLimits, memory::MemoryStore};

fn memory() -> StoresFactory {
    conformance::factory(|| async { MemoryStore::new(StoreLimits::default()).into_stores() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_conformance_kit() {
    conformance::run_all(memory()).await;
}

#[test]
fn check_names_are_unique_and_stable() {
    let checks = conformance::checks();
    let mut names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert!(names.len() >= 20, "the kit has its checks: {names:?}");
    assert!(
        names
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
        "names are snake_case: {names:?}"
    );
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), checks.len(), "check names are unique");
}

// ---- The kit must fail on broken backends. ----
//
// `Broken` is the memory backend with one injected bug. Each bug must be caught by the
// model-based check (which compares with a fresh `MemoryStore`), and `run_all` must report it.

mod broken {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use hub_core::{
        BoxFuture, ClientId, DeviceId, GroupPath, JobId, JobState, Result, TenantId, Timestamp,
        UserId,
    };
    use hub_store::memory::MemoryStore;
    use hub_store::{
        AccessKeyRecord, AggregateQuery, AppendOutcome, Bucket, ControlLease, CreateOutcome,
        CredentialStore, Device, DevicePatch, Group, JobFilter, JobRecord, JobStore, Lifecycle,
        MeasurementStore, NewDevice, NewJob, Page, PageRequest, Point, RegistryStore, SeriesName,
        SeriesPoints, StoreLimits, Stores,
    };
    use hub_store::{AuditQuery, AuditRecord, AuditStore, NewAuditRecord};
    use hub_store::{ConfigDocument, ConfigKind, ConfigStore};
    use hub_store::{
        Grant, GrantKind, GrantState, NewUser, OAuthClient, RefreshRecord, RefreshToken,
        RotateOutcome, User, UserPatch,
    };

    /// The bug to inject.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Bug {
        /// `update_device` ignores the expected version.
        DeviceVersionIgnored,
        /// `list_devices` ignores the life-cycle filter.
        LifecycleFilterIgnored,
        /// `queue_head` returns one job too many.
        QueueHeadOffByOne,
        /// `get_control` ignores `now`, so lapsed leases stay in force.
        LapsedLeaseShown,
        /// `create_job` forgets the idempotency key.
        IdempotencyKeyDropped,
        /// `read_range` includes `to`.
        ReadRangeInclusive,
        /// `aggregate` returns sums that are slightly off.
        SumDrift,
        /// `list_groups` drops the subtree root.
        GroupRootMissing,
        /// Job seqs count down: later jobs get smaller numbers.
        SeqDecreasing,
        /// Not a bug: job seqs are sparse and start high (as from a global sequence).
        SeqSparse,
        /// Audit `query` returns each page newest first.
        AuditPageReversed,
        /// Audit `query` includes records at `to`.
        AuditToInclusive,
        /// Audit `delete_before` ignores the tenant.
        AuditRetentionAllTenants,
        /// Config `put` ignores the expected latest version.
        ConfigCasIgnored,
        /// Config `prune` keeps one version too few.
        ConfigPruneOffByOne,
        /// Config `copy_latest` copies the source's first version instead of its latest.
        ConfigCopyOldest,
        /// `consume_grant` returns the grant without deleting it.
        GrantReusable,
        /// `rotate_refresh` treats a replayed token as merely invalid and revokes nothing.
        ReplayNotDetected,
    }

    #[derive(Debug)]
    pub(crate) struct Broken {
        inner: MemoryStore,
        bug: Bug,
    }

    pub(crate) fn stores(bug: Bug) -> Stores {
        let inner = MemoryStore::new(StoreLimits::default());
        let artifacts = std::sync::Arc::new(inner.clone());
        let bulk = artifacts.clone();
        let me = std::sync::Arc::new(Broken { inner, bug });
        Stores {
            registry: me.clone(),
            credentials: me.clone(),
            jobs: me.clone(),
            measurements: me.clone(),
            audit: me.clone(),
            config: me,
            artifacts,
            bulk,
        }
    }

    impl RegistryStore for Broken {
        fn create_tenant<'a>(
            &'a self,
            tenant: &'a TenantId,
            display_name: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Group>> {
            self.inner.create_tenant(tenant, display_name, now)
        }
        fn create_group<'a>(
            &'a self,
            path: &'a GroupPath,
            display_name: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Group>> {
            self.inner.create_group(path, display_name, now)
        }
        fn get_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<Option<Group>>> {
            self.inner.get_group(path)
        }
        fn list_groups<'a>(
            &'a self,
            root: &'a GroupPath,
            page: PageRequest,
        ) -> BoxFuture<'a, Result<Page<Group>>> {
            Box::pin(async move {
                let mut p = self.inner.list_groups(root, page).await?;
                if self.bug == Bug::GroupRootMissing {
                    p.items.retain(|g| g.path != *root);
                }
                Ok(p)
            })
        }
        fn delete_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<()>> {
            self.inner.delete_group(path)
        }
        fn create_device<'a>(
            &'a self,
            device: NewDevice,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Device>> {
            self.inner.create_device(device, now)
        }
        fn get_device<'a>(
            &'a self,
            tenant: &'a TenantId,
            id: &'a DeviceId,
        ) -> BoxFuture<'a, Result<Option<Device>>> {
            self.inner.get_device(tenant, id)
        }
        fn update_device<'a>(
            &'a self,
            tenant: &'a TenantId,
            id: &'a DeviceId,
            patch: DevicePatch,
            expected_version: Option<u64>,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Device>> {
            let expected = match self.bug {
                Bug::DeviceVersionIgnored => None,
                _ => expected_version,
            };
            self.inner.update_device(tenant, id, patch, expected, now)
        }
        fn move_device<'a>(
            &'a self,
            tenant: &'a TenantId,
            id: &'a DeviceId,
            to: &'a GroupPath,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Device>> {
            self.inner.move_device(tenant, id, to, now)
        }
        fn delete_device<'a>(
            &'a self,
            tenant: &'a TenantId,
            id: &'a DeviceId,
        ) -> BoxFuture<'a, Result<()>> {
            self.inner.delete_device(tenant, id)
        }
        fn list_devices<'a>(
            &'a self,
            root: &'a GroupPath,
            lifecycle: Option<Lifecycle>,
            page: PageRequest,
        ) -> BoxFuture<'a, Result<Page<Device>>> {
            let lifecycle = match self.bug {
                Bug::LifecycleFilterIgnored => None,
                _ => lifecycle,
            };
            self.inner.list_devices(root, lifecycle, page)
        }

        fn move_group<'a>(
            &'a self,
            from: &'a GroupPath,
            to: &'a GroupPath,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Group>> {
            self.inner.move_group(from, to, now)
        }
        fn create_user<'a>(&'a self, user: NewUser, now: Timestamp) -> BoxFuture<'a, Result<User>> {
            self.inner.create_user(user, now)
        }
        fn get_user<'a>(
            &'a self,
            tenant: &'a TenantId,
            id: &'a UserId,
        ) -> BoxFuture<'a, Result<Option<User>>> {
            self.inner.get_user(tenant, id)
        }
        fn update_user<'a>(
            &'a self,
            tenant: &'a TenantId,
            id: &'a UserId,
            patch: UserPatch,
            expected_version: Option<u64>,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<User>> {
            self.inner
                .update_user(tenant, id, patch, expected_version, now)
        }
        fn delete_user<'a>(
            &'a self,
            tenant: &'a TenantId,
            id: &'a UserId,
        ) -> BoxFuture<'a, Result<()>> {
            self.inner.delete_user(tenant, id)
        }
        fn list_users<'a>(
            &'a self,
            root: &'a GroupPath,
            page: PageRequest,
        ) -> BoxFuture<'a, Result<Page<User>>> {
            self.inner.list_users(root, page)
        }
        fn create_client<'a>(&'a self, client: OAuthClient) -> BoxFuture<'a, Result<OAuthClient>> {
            self.inner.create_client(client)
        }
        fn get_client<'a>(
            &'a self,
            id: &'a ClientId,
        ) -> BoxFuture<'a, Result<Option<OAuthClient>>> {
            self.inner.get_client(id)
        }
        fn delete_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<()>> {
            self.inner.delete_client(id)
        }
        fn list_clients<'a>(
            &'a self,
            root: &'a GroupPath,
            page: PageRequest,
        ) -> BoxFuture<'a, Result<Page<OAuthClient>>> {
            self.inner.list_clients(root, page)
        }
    }

    impl CredentialStore for Broken {
        fn put_access_key<'a>(&'a self, key: AccessKeyRecord) -> BoxFuture<'a, Result<()>> {
            self.inner.put_access_key(key)
        }
        fn find_access_key<'a>(
            &'a self,
            prefix: &'a str,
        ) -> BoxFuture<'a, Result<Option<AccessKeyRecord>>> {
            self.inner.find_access_key(prefix)
        }
        fn list_access_keys<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
        ) -> BoxFuture<'a, Result<Vec<AccessKeyRecord>>> {
            self.inner.list_access_keys(tenant, device)
        }
        fn set_access_key_expiry<'a>(
            &'a self,
            prefix: &'a str,
            expires_at: Option<Timestamp>,
        ) -> BoxFuture<'a, Result<()>> {
            self.inner.set_access_key_expiry(prefix, expires_at)
        }
        fn revoke_access_key<'a>(
            &'a self,
            prefix: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<()>> {
            self.inner.revoke_access_key(prefix, now)
        }
        fn set_password_hash<'a>(
            &'a self,
            tenant: &'a TenantId,
            user: &'a UserId,
            hash: String,
        ) -> BoxFuture<'a, Result<()>> {
            self.inner.set_password_hash(tenant, user, hash)
        }
        fn get_password_hash<'a>(
            &'a self,
            tenant: &'a TenantId,
            user: &'a UserId,
        ) -> BoxFuture<'a, Result<Option<String>>> {
            self.inner.get_password_hash(tenant, user)
        }
        fn put_grant<'a>(&'a self, grant: Grant, now: Timestamp) -> BoxFuture<'a, Result<()>> {
            self.inner.put_grant(grant, now)
        }
        fn get_grant<'a>(
            &'a self,
            kind: GrantKind,
            key_hash: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Option<Grant>>> {
            self.inner.get_grant(kind, key_hash, now)
        }
        fn find_grant_by_user_code<'a>(
            &'a self,
            user_code: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Option<Grant>>> {
            self.inner.find_grant_by_user_code(user_code, now)
        }
        fn set_grant_state<'a>(
            &'a self,
            kind: GrantKind,
            key_hash: &'a str,
            state: GrantState,
            payload: Option<serde_json::Value>,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Grant>> {
            self.inner
                .set_grant_state(kind, key_hash, state, payload, now)
        }
        fn consume_grant<'a>(
            &'a self,
            kind: GrantKind,
            key_hash: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Option<Grant>>> {
            if self.bug == Bug::GrantReusable {
                return Box::pin(async move {
                    Ok(self
                        .inner
                        .get_grant(kind, key_hash, now)
                        .await?
                        .filter(|g| {
                            kind == GrantKind::AuthorizationCode || g.state == GrantState::Approved
                        }))
                });
            }
            self.inner.consume_grant(kind, key_hash, now)
        }
        fn purge_expired<'a>(&'a self, now: Timestamp) -> BoxFuture<'a, Result<u64>> {
            self.inner.purge_expired(now)
        }
        fn create_refresh<'a>(&'a self, token: RefreshToken) -> BoxFuture<'a, Result<()>> {
            self.inner.create_refresh(token)
        }
        fn rotate_refresh<'a>(
            &'a self,
            old_hash: &'a str,
            new: RefreshToken,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<RotateOutcome>> {
            Box::pin(async move {
                if self.bug == Bug::ReplayNotDetected
                    && let Some(r) = self.inner.get_refresh(old_hash).await?
                    && r.used
                {
                    return Ok(RotateOutcome::Invalid);
                }
                self.inner.rotate_refresh(old_hash, new, now).await
            })
        }
        fn revoke_family<'a>(&'a self, family: &'a str) -> BoxFuture<'a, Result<u64>> {
            self.inner.revoke_family(family)
        }
        fn get_refresh<'a>(
            &'a self,
            token_hash: &'a str,
        ) -> BoxFuture<'a, Result<Option<RefreshRecord>>> {
            self.inner.get_refresh(token_hash)
        }
    }

    impl Broken {
        fn seq(&self, mut job: JobRecord) -> JobRecord {
            job.seq = match self.bug {
                Bug::SeqDecreasing => 1_000_000 - job.seq,
                Bug::SeqSparse => 1_000_000 + job.seq * 37,
                _ => job.seq,
            };
            job
        }

        fn seqs(&self, jobs: Vec<JobRecord>) -> Vec<JobRecord> {
            jobs.into_iter().map(|j| self.seq(j)).collect()
        }
    }

    impl JobStore for Broken {
        fn create_job<'a>(&'a self, mut job: NewJob) -> BoxFuture<'a, Result<CreateOutcome>> {
            if self.bug == Bug::IdempotencyKeyDropped {
                job.idempotency_key = None;
            }
            Box::pin(async move {
                let mut out = self.inner.create_job(job).await?;
                out.job = self.seq(out.job);
                Ok(out)
            })
        }
        fn create_job_unless_controlled<'a>(
            &'a self,
            mut job: NewJob,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<CreateOutcome>> {
            if self.bug == Bug::IdempotencyKeyDropped {
                job.idempotency_key = None;
            }
            Box::pin(async move {
                let mut out = self.inner.create_job_unless_controlled(job, now).await?;
                out.job = self.seq(out.job);
                Ok(out)
            })
        }
        fn get_job<'a>(
            &'a self,
            tenant: &'a TenantId,
            id: &'a JobId,
        ) -> BoxFuture<'a, Result<Option<JobRecord>>> {
            Box::pin(async move { Ok(self.inner.get_job(tenant, id).await?.map(|j| self.seq(j))) })
        }
        fn update_job<'a>(
            &'a self,
            job: &'a JobRecord,
            expected_version: u64,
        ) -> BoxFuture<'a, Result<JobRecord>> {
            Box::pin(
                async move { Ok(self.seq(self.inner.update_job(job, expected_version).await?)) },
            )
        }
        fn queue_head<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            lane: &'a str,
            n: u32,
        ) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
            let n = match self.bug {
                Bug::QueueHeadOffByOne => n + 1,
                _ => n,
            };
            Box::pin(
                async move { Ok(self.seqs(self.inner.queue_head(tenant, device, lane, n).await?)) },
            )
        }
        fn due_jobs<'a>(
            &'a self,
            at: Timestamp,
            limit: u32,
        ) -> BoxFuture<'a, Result<Vec<JobRecord>>> {
            Box::pin(async move { Ok(self.seqs(self.inner.due_jobs(at, limit).await?)) })
        }
        fn list_jobs<'a>(
            &'a self,
            root: &'a GroupPath,
            filter: &'a JobFilter,
            page: PageRequest,
        ) -> BoxFuture<'a, Result<Page<JobRecord>>> {
            Box::pin(async move {
                let page = self.inner.list_jobs(root, filter, page).await?;
                Ok(Page {
                    items: self.seqs(page.items),
                    next: page.next,
                })
            })
        }
        fn count_jobs<'a>(
            &'a self,
            root: &'a GroupPath,
            filter: &'a JobFilter,
        ) -> BoxFuture<'a, Result<BTreeMap<JobState, u64>>> {
            self.inner.count_jobs(root, filter)
        }
        fn acquire_control<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            holder: &'a str,
            until: Timestamp,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<ControlLease>> {
            self.inner
                .acquire_control(tenant, device, holder, until, now)
        }
        fn release_control<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            holder: &'a str,
        ) -> BoxFuture<'a, Result<()>> {
            self.inner.release_control(tenant, device, holder)
        }
        fn get_control<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<Option<ControlLease>>> {
            let now = match self.bug {
                Bug::LapsedLeaseShown => Timestamp::EPOCH,
                _ => now,
            };
            self.inner.get_control(tenant, device, now)
        }
    }

    impl MeasurementStore for Broken {
        fn append<'a>(&'a self, batch: &'a [SeriesPoints]) -> BoxFuture<'a, Result<AppendOutcome>> {
            MeasurementStore::append(&self.inner, batch)
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
            let to = match self.bug {
                Bug::ReadRangeInclusive => to.saturating_add(Duration::from_millis(1)),
                _ => to,
            };
            self.inner
                .read_range(tenant, device, series, from, to, page)
        }
        fn aggregate<'a>(
            &'a self,
            query: &'a AggregateQuery,
        ) -> BoxFuture<'a, Result<Vec<Bucket>>> {
            Box::pin(async move {
                let mut buckets = self.inner.aggregate(query).await?;
                if self.bug == Bug::SumDrift {
                    for b in &mut buckets {
                        b.sum = b.sum * 1.001 + 0.01;
                    }
                }
                Ok(buckets)
            })
        }
        fn list_series<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
        ) -> BoxFuture<'a, Result<Vec<SeriesName>>> {
            self.inner.list_series(tenant, device)
        }
        fn delete_before<'a>(&'a self, before: Timestamp) -> BoxFuture<'a, Result<u64>> {
            MeasurementStore::delete_before(&self.inner, before)
        }
    }
    impl AuditStore for Broken {
        fn record<'a>(&'a self, record: NewAuditRecord) -> BoxFuture<'a, Result<AuditRecord>> {
            AuditStore::record(&self.inner, record)
        }
        fn query<'a>(
            &'a self,
            query: &'a AuditQuery,
            page: PageRequest,
        ) -> BoxFuture<'a, Result<Page<AuditRecord>>> {
            Box::pin(async move {
                let mut q = query.clone();
                if self.bug == Bug::AuditToInclusive {
                    q.to = q.to.map(|t| t.saturating_add(Duration::from_millis(1)));
                }
                let mut p = self.inner.query(&q, page).await?;
                if self.bug == Bug::AuditPageReversed {
                    p.items.reverse();
                }
                Ok(p)
            })
        }
        fn prune_before<'a>(
            &'a self,
            tenant: Option<&'a TenantId>,
            before: Timestamp,
        ) -> BoxFuture<'a, Result<u64>> {
            let tenant = match self.bug {
                Bug::AuditRetentionAllTenants => None,
                _ => tenant,
            };
            AuditStore::prune_before(&self.inner, tenant, before)
        }
    }

    impl ConfigStore for Broken {
        fn put<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            kind: ConfigKind,
            document: serde_json::Value,
            created_by: &'a str,
            expected_latest_version: Option<u64>,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<ConfigDocument>> {
            let expected = match self.bug {
                Bug::ConfigCasIgnored => None,
                _ => expected_latest_version,
            };
            self.inner
                .put(tenant, device, kind, document, created_by, expected, now)
        }
        fn latest<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            kind: ConfigKind,
        ) -> BoxFuture<'a, Result<Option<ConfigDocument>>> {
            self.inner.latest(tenant, device, kind)
        }
        fn get<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            kind: ConfigKind,
            version: u64,
        ) -> BoxFuture<'a, Result<Option<ConfigDocument>>> {
            self.inner.get(tenant, device, kind, version)
        }
        fn list<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            kind: ConfigKind,
            page: PageRequest,
        ) -> BoxFuture<'a, Result<Page<ConfigDocument>>> {
            self.inner.list(tenant, device, kind, page)
        }
        fn copy_latest<'a>(
            &'a self,
            tenant: &'a TenantId,
            from: &'a DeviceId,
            to: &'a DeviceId,
            kind: ConfigKind,
            created_by: &'a str,
            now: Timestamp,
        ) -> BoxFuture<'a, Result<ConfigDocument>> {
            if self.bug != Bug::ConfigCopyOldest {
                return self
                    .inner
                    .copy_latest(tenant, from, to, kind, created_by, now);
            }
            Box::pin(async move {
                let oldest = self
                    .inner
                    .list(tenant, from, kind, PageRequest::default())
                    .await?
                    .items
                    .pop()
                    .ok_or_else(|| hub_core::Error::not_found("no configuration"))?;
                self.inner
                    .put(tenant, to, kind, oldest.document, created_by, None, now)
                    .await
            })
        }
        fn prune<'a>(
            &'a self,
            tenant: &'a TenantId,
            device: &'a DeviceId,
            kind: ConfigKind,
            keep: u32,
        ) -> BoxFuture<'a, Result<u64>> {
            let keep = match self.bug {
                Bug::ConfigPruneOffByOne if keep > 1 => keep - 1,
                _ => keep,
            };
            self.inner.prune(tenant, device, kind, keep)
        }
    }
}

const BUGS: [broken::Bug; 9] = [
    broken::Bug::SeqDecreasing,
    broken::Bug::DeviceVersionIgnored,
    broken::Bug::LifecycleFilterIgnored,
    broken::Bug::QueueHeadOffByOne,
    broken::Bug::LapsedLeaseShown,
    broken::Bug::IdempotencyKeyDropped,
    broken::Bug::ReadRangeInclusive,
    broken::Bug::SumDrift,
    broken::Bug::GroupRootMissing,
];

/// Runs one check on a broken backend; true when it panicked.
async fn fails(name: &str, bug: broken::Bug) -> bool {
    let check = conformance::checks()
        .into_iter()
        .find(|c| c.name == name)
        .expect("the check exists");
    let factory = conformance::factory(move || async move { broken::stores(bug) });
    tokio::spawn((check.run)(factory)).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_model_check_catches_every_injected_bug() {
    for bug in BUGS {
        assert!(
            fails("model_random_operations", bug).await,
            "the model check did not notice {bug:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contract_checks_catch_injected_bugs() {
    use broken::Bug::*;
    for (bug, check) in [
        (DeviceVersionIgnored, "registry_devices"),
        (LifecycleFilterIgnored, "registry_list_devices"),
        (QueueHeadOffByOne, "jobs_queue_head"),
        (LapsedLeaseShown, "jobs_control_leases"),
        (IdempotencyKeyDropped, "jobs_idempotency"),
        (IdempotencyKeyDropped, "concurrency_idempotency"),
        (ReadRangeInclusive, "measurements_read_range"),
        (SumDrift, "measurements_aggregate"),
        (SumDrift, "measurements_rollups"),
        (GroupRootMissing, "registry_list_groups"),
        (SeqDecreasing, "jobs_create"),
        (SeqDecreasing, "jobs_queue_head"),
        (SeqDecreasing, "concurrency_seq"),
        (AuditPageReversed, "audit_append_and_page"),
        (AuditToInclusive, "audit_subtree_and_filters"),
        (AuditRetentionAllTenants, "audit_retention"),
        (ConfigCasIgnored, "config_compare_and_set"),
        (ConfigCasIgnored, "config_concurrent_puts"),
        (ConfigPruneOffByOne, "config_prune"),
        (ConfigCopyOldest, "config_copy_latest"),
        (GrantReusable, "identity_single_use_grants"),
        (GrantReusable, "identity_concurrent_consume"),
        (GrantReusable, "identity_device_flow"),
        (ReplayNotDetected, "identity_refresh_rotation"),
        (ReplayNotDetected, "identity_concurrent_rotation"),
    ] {
        assert!(fails(check, bug).await, "{check} did not notice {bug:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_reports_failed_checks() {
    let factory = conformance::factory(|| async { broken::stores(broken::Bug::QueueHeadOffByOne) });
    let outcome = tokio::spawn(conformance::run_all(factory)).await;
    let panic = outcome.expect_err("run_all must panic on a broken backend");
    let message = panic
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(
        message.contains("jobs_queue_head") && message.contains("checks failed"),
        "run_all names the failed checks: {message}"
    );
    assert!(
        !message.contains("registry_devices"),
        "run_all lists only the failed checks: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kit_is_no_stricter_than_the_contract() {
    // Sparse seqs that start high are allowed: only their order is specified.
    let factory = conformance::factory(|| async { broken::stores(broken::Bug::SeqSparse) });
    conformance::run_all(factory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_and_config_model_check_catches_injected_bugs() {
    use broken::Bug::*;
    for bug in [
        AuditPageReversed,
        AuditToInclusive,
        AuditRetentionAllTenants,
        ConfigCasIgnored,
        ConfigPruneOffByOne,
        ConfigCopyOldest,
    ] {
        assert!(
            fails("model_audit_and_config", bug).await,
            "the audit and config model check did not notice {bug:?}"
        );
    }
}

#[test]
fn measurement_uploads_parse_in_both_shapes_and_explain_bad_ones() {
    use hub_store::MeasurementUpload;
    let tenant: hub_core::TenantId = "acme".parse().unwrap();
    let device: hub_core::DeviceId = "pump-7".parse().unwrap();
    let now: hub_core::Timestamp = "2026-12-02T07:00:00Z".parse().unwrap();
    let sample = MeasurementUpload::parse(br#"{"values": {"temperature": 21.5, "rpm": 900}}"#)
        .unwrap()
        .into_batch(&tenant, &device, now);
    assert_eq!(sample.len(), 2);
    assert!(
        sample
            .iter()
            .all(|s| s.points.len() == 1 && s.points[0].ts == now)
    );
    let batch = MeasurementUpload::parse(
        br#"{"series": {"temperature": [{"ts": "2026-12-02T06:00:00Z", "value": 20.0},
                                         {"ts": "2026-12-02T06:01:00Z", "value": 20.5}]}}"#,
    )
    .unwrap()
    .into_batch(&tenant, &device, now);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].points.len(), 2);
    for bad in [
        &br#"{"values": {"bad name!": 1}}"#[..],
        br#"{"values": {"t": "hot"}}"#,
        br#"[1, 2]"#,
        br#"not json"#,
    ] {
        let e = MeasurementUpload::parse(bad).unwrap_err();
        assert_eq!(e.kind(), hub_core::ErrorKind::InvalidInput);
        assert!(e.detail().contains("values"), "{}", e.detail());
    }
}
