//! The in-memory backend: for tests, and the reference model the conformance kit compares other
//! backends with. Everything sits behind one mutex; nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use hub_core::{
    BoxFuture, ClientId, DeviceId, Error, GroupPath, JobId, JobState, Result, TenantId, Timestamp,
    UserId,
};

use crate::audit::{AuditQuery, AuditRecord, AuditStore, NewAuditRecord};
use crate::config::{ConfigDocument, ConfigKind, ConfigStore};
use crate::credentials::{
    AccessKeyRecord, CredentialStore, Grant, GrantKind, GrantState, RefreshRecord, RefreshToken,
    RotateOutcome,
};
use crate::jobs::{
    ControlLease, CreateOutcome, JobFilter, JobRecord, JobStore, NewJob, controlled,
};
use crate::measurements::{
    AggregateQuery, AggregateScope, AppendOutcome, Bucket, HOUR_MS, MeasurementStore, Point,
    SeriesName, SeriesPoints, bucket_start,
};
use crate::registry::{
    Device, DevicePatch, Group, Lifecycle, NewDevice, NewUser, OAuthClient, RegistryStore, User,
    UserPatch,
};
use crate::rollup::{Acc, fold};
use crate::{Page, PageRequest, StoreLimits, Stores, bad_cursor, validate};

type DeviceKey = (TenantId, DeviceId);
type UserKey = (TenantId, UserId);

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
    audit: BTreeMap<u64, AuditRecord>,
    /// The last audit id handed out; kept apart from `audit` so retention never lets an id
    /// come back.
    audit_seq: u64,
    configs: HashMap<(TenantId, DeviceId, ConfigKind), BTreeMap<u64, ConfigDocument>>,
    users: BTreeMap<UserKey, User>,
    passwords: HashMap<UserKey, String>,
    clients: BTreeMap<ClientId, OAuthClient>,
    grants: BTreeMap<(GrantKind, String), Grant>,
    refresh: BTreeMap<String, RefreshRecord>,
}

/// The in-memory backend. Clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    pub(crate) artifacts: Arc<Mutex<crate::artifacts::memory::Blobs>>,
    pub(crate) bulk: Arc<Mutex<crate::bulk::memory::BulkState>>,
    pub(crate) limits: StoreLimits,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            state: Arc::default(),
            artifacts: Arc::default(),
            bulk: Arc::default(),
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
            audit: me.clone(),
            config: me.clone(),
            artifacts: me.clone(),
            bulk: me,
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
            if s.users.values().any(|u| u.group == *path) {
                return Err(Error::conflict(format!("group {path} has users")));
            }
            if s.clients.values().any(|c| c.group == *path) {
                return Err(Error::conflict(format!("group {path} owns OAuth clients")));
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
            patch.apply_to(&mut *d, expected_version, now)?;
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
        let mut s = self.lock();
        ready(match s.devices.remove(&device_key(tenant, id)) {
            Some(_) => {
                s.keys
                    .retain(|_, k| !(k.tenant == *tenant && k.device == *id));
                Ok(())
            }
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
    fn move_group<'a>(
        &'a self,
        from: &'a GroupPath,
        to: &'a GroupPath,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        ready((|| {
            validate::move_group(from, to)?;
            let mut s = self.lock();
            if !s.groups.contains_key(from) {
                return Err(Error::not_found(format!("group {from} does not exist")));
            }
            if let Some(parent) = to.parent()
                && !s.groups.contains_key(&parent)
            {
                return Err(Error::not_found(format!(
                    "parent group {parent} does not exist"
                )));
            }
            if s.groups.contains_key(to) {
                return Err(Error::conflict(format!("group {to} already exists")));
            }
            // Compute every new path before changing anything.
            let mut moved = Vec::new();
            for path in s.groups.keys().filter(|g| from.contains(g)) {
                moved.push((path.clone(), validate::rebased(path, from, to)?));
            }
            // Bulk jobs live behind their own lock, taken after the main one (as everywhere).
            let mut bulk = self.bulk_lock();
            let bulk_moves = bulk.rebase_plan(from, to)?;
            for (old, new) in moved {
                if let Some(mut g) = s.groups.remove(&old) {
                    g.path = new.clone();
                    g.updated_at = now;
                    s.groups.insert(new, g);
                }
            }
            for d in s.devices.values_mut().filter(|d| from.contains(&d.group)) {
                d.group = validate::rebased(&d.group, from, to)?;
                d.version += 1;
                d.updated_at = now;
            }
            for u in s.users.values_mut().filter(|u| from.contains(&u.group)) {
                u.group = validate::rebased(&u.group, from, to)?;
                u.version += 1;
                u.updated_at = now;
            }
            for c in s.clients.values_mut().filter(|c| from.contains(&c.group)) {
                c.group = validate::rebased(&c.group, from, to)?;
            }
            for j in s.jobs.values_mut().filter(|j| from.contains(&j.group)) {
                j.group = validate::rebased(&j.group, from, to)?;
            }
            bulk.apply_rebase(bulk_moves);
            s.groups
                .get(to)
                .cloned()
                .ok_or_else(|| Error::internal(std::io::Error::other("moved group vanished")))
        })())
    }

    fn create_user<'a>(&'a self, user: NewUser, now: Timestamp) -> BoxFuture<'a, Result<User>> {
        ready((|| {
            validate::new_user(&user)?;
            let mut s = self.lock();
            if !s.groups.contains_key(&user.group) {
                return Err(Error::not_found(format!(
                    "group {} does not exist",
                    user.group
                )));
            }
            let tenant = user.group.tenant();
            let key = (tenant.clone(), user.id.clone());
            if s.users.contains_key(&key) {
                return Err(Error::conflict(format!("user {} already exists", user.id)));
            }
            let u = User {
                tenant,
                id: user.id,
                group: user.group,
                display_name: user.display_name,
                email: user.email,
                role: user.role,
                disabled: false,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            s.users.insert(key, u.clone());
            Ok(u)
        })())
    }

    fn get_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<User>>> {
        ready(Ok(self
            .lock()
            .users
            .get(&(tenant.clone(), id.clone()))
            .cloned()))
    }

    fn update_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
        patch: UserPatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<User>> {
        ready((|| {
            validate::user_patch(&patch)?;
            if let Some(g) = &patch.group
                && g.tenant() != *tenant
            {
                return Err(Error::invalid_input("a user cannot move to another tenant"));
            }
            let mut s = self.lock();
            if let Some(g) = &patch.group
                && !s.groups.contains_key(g)
            {
                return Err(Error::not_found(format!("group {g} does not exist")));
            }
            let u = s
                .users
                .get_mut(&(tenant.clone(), id.clone()))
                .ok_or_else(|| Error::not_found(format!("user {id} does not exist")))?;
            patch.apply_to(&mut *u, expected_version, now)?;
            Ok(u.clone())
        })())
    }

    fn delete_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<()>> {
        let mut s = self.lock();
        let key = (tenant.clone(), id.clone());
        ready(match s.users.remove(&key) {
            Some(_) => {
                s.passwords.remove(&key);
                Ok(())
            }
            None => Err(Error::not_found(format!("user {id} does not exist"))),
        })
    }

    fn list_users<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<User>>> {
        ready((|| {
            let after: Option<UserId> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let tenant = root.tenant();
            let s = self.lock();
            let items: Vec<User> = s
                .users
                .values()
                .filter(|u| u.tenant == tenant && root.contains(&u.group))
                .filter(|u| after.as_ref().is_none_or(|a| u.id.as_str() > a.as_str()))
                .take(limit as usize + 1)
                .cloned()
                .collect();
            Ok(Page::from_overfetch(items, limit, |u| u.id.to_string()))
        })())
    }

    fn create_client<'a>(&'a self, client: OAuthClient) -> BoxFuture<'a, Result<OAuthClient>> {
        ready((|| {
            validate::client(&client)?;
            let mut s = self.lock();
            if !s.groups.contains_key(&client.group) {
                return Err(Error::not_found(format!(
                    "group {} does not exist",
                    client.group
                )));
            }
            if s.clients.contains_key(&client.id) {
                return Err(Error::conflict(format!(
                    "client {} already exists",
                    client.id
                )));
            }
            s.clients.insert(client.id.clone(), client.clone());
            Ok(client)
        })())
    }

    fn get_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<Option<OAuthClient>>> {
        ready(Ok(self.lock().clients.get(id).cloned()))
    }

    fn delete_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<()>> {
        ready(match self.lock().clients.remove(id) {
            Some(_) => Ok(()),
            None => Err(Error::not_found(format!("client {id} does not exist"))),
        })
    }

    fn list_clients<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<OAuthClient>>> {
        ready((|| {
            let after: Option<ClientId> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let s = self.lock();
            let items: Vec<OAuthClient> = s
                .clients
                .values()
                .filter(|c| root.contains(&c.group))
                .filter(|c| after.as_ref().is_none_or(|a| c.id.as_str() > a.as_str()))
                .take(limit as usize + 1)
                .cloned()
                .collect();
            Ok(Page::from_overfetch(items, limit, |c| c.id.to_string()))
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
    fn set_password_hash<'a>(
        &'a self,
        tenant: &'a TenantId,
        user: &'a UserId,
        hash: String,
    ) -> BoxFuture<'a, Result<()>> {
        ready((|| {
            validate::token(&hash, validate::MAX_HASH, "the password hash")?;
            let mut s = self.lock();
            let key = (tenant.clone(), user.clone());
            if !s.users.contains_key(&key) {
                return Err(Error::not_found(format!("user {user} does not exist")));
            }
            s.passwords.insert(key, hash);
            Ok(())
        })())
    }

    fn get_password_hash<'a>(
        &'a self,
        tenant: &'a TenantId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        ready(Ok(self
            .lock()
            .passwords
            .get(&(tenant.clone(), user.clone()))
            .cloned()))
    }

    fn put_grant<'a>(&'a self, grant: Grant, now: Timestamp) -> BoxFuture<'a, Result<()>> {
        ready((|| {
            validate::grant(&grant, &self.limits)?;
            let mut s = self.lock();
            let key = (grant.kind, grant.key_hash.clone());
            if s.grants.contains_key(&key) {
                return Err(Error::conflict("a grant with this key exists"));
            }
            if let Some(code) = &grant.user_code {
                s.grants
                    .retain(|_, g| g.user_code.as_ref() != Some(code) || now < g.expires_at);
                if s.grants
                    .values()
                    .any(|g| g.user_code.as_ref() == Some(code))
                {
                    return Err(Error::conflict("a live device code has this user code"));
                }
            }
            s.grants.insert(key, grant);
            Ok(())
        })())
    }

    fn get_grant<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        ready(Ok(self
            .lock()
            .grants
            .get(&(kind, key_hash.to_owned()))
            .filter(|g| now < g.expires_at)
            .cloned()))
    }

    fn find_grant_by_user_code<'a>(
        &'a self,
        user_code: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        ready(Ok(self
            .lock()
            .grants
            .values()
            .find(|g| {
                g.kind == GrantKind::DeviceCode
                    && g.user_code.as_deref() == Some(user_code)
                    && now < g.expires_at
            })
            .cloned()))
    }

    fn set_grant_state<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        state: GrantState,
        payload: Option<serde_json::Value>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Grant>> {
        ready((|| {
            if state == GrantState::Pending {
                return Err(Error::invalid_input(
                    "a grant can only be approved or denied",
                ));
            }
            if let Some(p) = &payload {
                validate::grant_payload(p, &self.limits)?;
            }
            let mut s = self.lock();
            let g = s
                .grants
                .get_mut(&(kind, key_hash.to_owned()))
                .filter(|g| now < g.expires_at)
                .ok_or_else(|| Error::not_found("no such live grant"))?;
            if g.state != GrantState::Pending {
                return Err(Error::conflict(format!(
                    "the grant is {}, not pending",
                    g.state.as_str()
                )));
            }
            g.state = state;
            if let Some(p) = payload {
                g.payload = p;
            }
            Ok(g.clone())
        })())
    }

    fn consume_grant<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        let mut s = self.lock();
        let key = (kind, key_hash.to_owned());
        let redeemable = s.grants.get(&key).is_some_and(|g| {
            now < g.expires_at
                && (kind == GrantKind::AuthorizationCode || g.state == GrantState::Approved)
        });
        ready(Ok(if redeemable {
            s.grants.remove(&key)
        } else {
            None
        }))
    }

    fn purge_expired<'a>(&'a self, now: Timestamp) -> BoxFuture<'a, Result<u64>> {
        let mut s = self.lock();
        let before = s.grants.len() + s.refresh.len();
        s.grants.retain(|_, g| now < g.expires_at);
        s.refresh.retain(|_, r| now < r.token.expires_at);
        let after = s.grants.len() + s.refresh.len();
        ready(Ok((before - after) as u64))
    }

    fn create_refresh<'a>(&'a self, token: RefreshToken) -> BoxFuture<'a, Result<()>> {
        ready((|| {
            validate::refresh(&token)?;
            let mut s = self.lock();
            if s.refresh.contains_key(&token.token_hash) {
                return Err(Error::conflict("a refresh token with this hash exists"));
            }
            if s.refresh.values().any(|r| r.token.family == token.family) {
                return Err(Error::conflict("this refresh token family exists"));
            }
            s.refresh.insert(
                token.token_hash.clone(),
                RefreshRecord {
                    token,
                    used: false,
                    revoked: false,
                },
            );
            Ok(())
        })())
    }

    fn rotate_refresh<'a>(
        &'a self,
        old_hash: &'a str,
        new: RefreshToken,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<RotateOutcome>> {
        ready((|| {
            validate::refresh(&new)?;
            let mut s = self.lock();
            let Some(old) = s.refresh.get(old_hash).cloned() else {
                return Ok(RotateOutcome::Invalid);
            };
            let family = old.token.family.clone();
            if old.used {
                for r in s.refresh.values_mut().filter(|r| r.token.family == family) {
                    r.revoked = true;
                }
                return Ok(RotateOutcome::Reused { family });
            }
            if old.revoked || now >= old.token.expires_at {
                return Ok(RotateOutcome::Invalid);
            }
            if s.refresh.contains_key(&new.token_hash) {
                return Err(Error::conflict("a refresh token with this hash exists"));
            }
            let new = RefreshToken {
                family,
                tenant: old.token.tenant.clone(),
                user: old.token.user.clone(),
                client: old.token.client.clone(),
                ..new
            };
            if let Some(r) = s.refresh.get_mut(old_hash) {
                r.used = true;
            }
            s.refresh.insert(
                new.token_hash.clone(),
                RefreshRecord {
                    token: new,
                    used: false,
                    revoked: false,
                },
            );
            Ok(RotateOutcome::Rotated(old.token))
        })())
    }

    fn revoke_family<'a>(&'a self, family: &'a str) -> BoxFuture<'a, Result<u64>> {
        let mut n = 0;
        for r in self
            .lock()
            .refresh
            .values_mut()
            .filter(|r| r.token.family == family && !r.revoked)
        {
            r.revoked = true;
            n += 1;
        }
        ready(Ok(n))
    }

    fn get_refresh<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<Option<RefreshRecord>>> {
        ready(Ok(self.lock().refresh.get(token_hash).cloned()))
    }
}

fn job_matches(job: &JobRecord, root: &GroupPath, filter: &JobFilter) -> bool {
    root.contains(&job.group)
        && filter.device.as_ref().is_none_or(|d| job.device == *d)
        && (filter.states.is_empty() || filter.states.contains(&job.state))
        && filter.bulk.is_none_or(|b| job.bulk == Some(b))
}

impl MemoryStore {
    /// Creates a job; with `unless_controlled_at`, refuses it while another holder's control
    /// lease is in force then (under the same lock as the insert).
    fn insert_job(
        &self,
        job: NewJob,
        unless_controlled_at: Option<Timestamp>,
    ) -> Result<CreateOutcome> {
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
        if let Some(now) = unless_controlled_at
            && let Some(lease) = s.control.get(&device_key(&job.tenant, &job.device))
            && lease.holder != job.created_by
            && lease.until > now
        {
            return Err(controlled(&job.device, lease.until));
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
    }
}

impl JobStore for MemoryStore {
    fn create_job<'a>(&'a self, job: NewJob) -> BoxFuture<'a, Result<CreateOutcome>> {
        ready(self.insert_job(job, None))
    }

    fn create_job_unless_controlled<'a>(
        &'a self,
        job: NewJob,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<CreateOutcome>> {
        ready(self.insert_job(job, Some(now)))
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
            let start = after.map_or(from.as_millis(), |a| {
                a.saturating_add(1).max(from.as_millis())
            });
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

fn audit_matches(r: &AuditRecord, q: &AuditQuery) -> bool {
    q.root.contains(&r.group)
        && q.resource.as_ref().is_none_or(|x| r.resource == *x)
        && q.actor.as_ref().is_none_or(|x| r.actor == *x)
        && q.from.is_none_or(|f| r.at >= f)
        && q.to.is_none_or(|t| r.at < t)
}

impl AuditStore for MemoryStore {
    fn record<'a>(&'a self, record: NewAuditRecord) -> BoxFuture<'a, Result<AuditRecord>> {
        ready((|| {
            validate::audit_record(&record, &self.limits)?;
            let mut s = self.lock();
            s.audit_seq += 1;
            let stored = AuditRecord {
                id: s.audit_seq,
                at: record.at,
                tenant: record.tenant,
                actor: record.actor,
                action: record.action,
                resource: record.resource,
                group: record.group,
                outcome: record.outcome,
                details: record.details,
            };
            s.audit.insert(stored.id, stored.clone());
            Ok(stored)
        })())
    }

    fn query<'a>(
        &'a self,
        query: &'a AuditQuery,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<AuditRecord>>> {
        ready((|| {
            validate::audit_query(query)?;
            let after: Option<u64> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let start = after.map_or(0, |a| a.saturating_add(1));
            let s = self.lock();
            let items: Vec<AuditRecord> = s
                .audit
                .range(start..)
                .map(|(_, r)| r)
                .filter(|r| audit_matches(r, query))
                .take(limit as usize + 1)
                .cloned()
                .collect();
            Ok(Page::from_overfetch(items, limit, |r| r.id.to_string()))
        })())
    }

    fn prune_before<'a>(
        &'a self,
        tenant: Option<&'a TenantId>,
        before: Timestamp,
    ) -> BoxFuture<'a, Result<u64>> {
        let mut s = self.lock();
        let n = s.audit.len();
        s.audit
            .retain(|_, r| !(r.at < before && tenant.is_none_or(|t| r.tenant == *t)));
        ready(Ok((n - s.audit.len()) as u64))
    }
}

fn config_key(
    tenant: &TenantId,
    device: &DeviceId,
    kind: ConfigKind,
) -> (TenantId, DeviceId, ConfigKind) {
    (tenant.clone(), device.clone(), kind)
}

impl MemoryStore {
    /// Appends `document` as the next version; the caller holds the lock and has validated.
    #[allow(clippy::too_many_arguments)]
    fn put_locked(
        s: &mut State,
        tenant: &TenantId,
        device: &DeviceId,
        kind: ConfigKind,
        document: serde_json::Value,
        created_by: &str,
        expected: Option<u64>,
        now: Timestamp,
    ) -> Result<ConfigDocument> {
        let versions = s
            .configs
            .entry(config_key(tenant, device, kind))
            .or_default();
        let latest = versions.keys().next_back().copied().unwrap_or(0);
        if let Some(v) = expected
            && v != latest
        {
            return Err(Error::precondition_failed(format!(
                "the {} configuration of device {device} is at version {latest}, not {v}",
                kind.as_str()
            )));
        }
        let doc = ConfigDocument {
            tenant: tenant.clone(),
            device: device.clone(),
            version: latest + 1,
            document,
            kind,
            created_at: now,
            created_by: created_by.to_owned(),
        };
        versions.insert(doc.version, doc.clone());
        Ok(doc)
    }
}

impl ConfigStore for MemoryStore {
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
        ready((|| {
            validate::config_document(&document, &self.limits)?;
            validate::created_by(created_by)?;
            let mut s = self.lock();
            Self::put_locked(
                &mut s,
                tenant,
                device,
                kind,
                document,
                created_by,
                expected_latest_version,
                now,
            )
        })())
    }

    fn latest<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
    ) -> BoxFuture<'a, Result<Option<ConfigDocument>>> {
        ready(Ok(self
            .lock()
            .configs
            .get(&config_key(tenant, device, kind))
            .and_then(|v| v.values().next_back())
            .cloned()))
    }

    fn get<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<ConfigDocument>>> {
        ready(Ok(self
            .lock()
            .configs
            .get(&config_key(tenant, device, kind))
            .and_then(|v| v.get(&version))
            .cloned()))
    }

    fn list<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<ConfigDocument>>> {
        ready((|| {
            let before: Option<u64> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let s = self.lock();
            let items: Vec<ConfigDocument> = s
                .configs
                .get(&config_key(tenant, device, kind))
                .map(|v| {
                    v.range(..before.unwrap_or(u64::MAX))
                        .rev()
                        .take(limit as usize + 1)
                        .map(|(_, d)| d.clone())
                        .collect()
                })
                .unwrap_or_default();
            Ok(Page::from_overfetch(items, limit, |d| {
                d.version.to_string()
            }))
        })())
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
        ready((|| {
            validate::created_by(created_by)?;
            let mut s = self.lock();
            let document = s
                .configs
                .get(&config_key(tenant, from, kind))
                .and_then(|v| v.values().next_back())
                .map(|d| d.document.clone())
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "device {from} has no {} configuration",
                        kind.as_str()
                    ))
                })?;
            Self::put_locked(&mut s, tenant, to, kind, document, created_by, None, now)
        })())
    }

    fn prune<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
        kind: ConfigKind,
        keep: u32,
    ) -> BoxFuture<'a, Result<u64>> {
        ready((|| {
            validate::prune_keep(keep)?;
            let mut s = self.lock();
            let Some(versions) = s.configs.get_mut(&config_key(tenant, device, kind)) else {
                return Ok(0);
            };
            let Some(&cut) = versions.keys().rev().nth(keep as usize - 1) else {
                return Ok(0);
            };
            let kept = versions.split_off(&cut);
            let removed = versions.len() as u64;
            *versions = kept;
            Ok(removed)
        })())
    }
}
