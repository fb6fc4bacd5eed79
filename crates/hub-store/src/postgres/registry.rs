//! Tenants, groups, devices and device credentials in PostgreSQL.

use tokio_postgres::Row;

use hub_core::{
    BoxFuture, ClientId, DeviceId, Error, GroupPath, Result, TenantId, Timestamp, UserId,
};

use super::{
    PostgresStore, below_pattern, col, corrupt, db_error, execute, is_foreign_key_violation,
    json_text, parse_cursor, parse_json, query, query_opt, to_i64, to_u64, ts,
};
use crate::credentials::{
    AccessKeyRecord, CredentialStore, EnrollmentRecord, Grant, GrantKind, GrantState,
    RefreshRecord, RefreshToken, RotateOutcome,
};
use crate::registry::{
    Device, DevicePatch, Group, Lifecycle, NewDevice, NewUser, OAuthClient, RegistryStore, User,
    UserPatch,
};
use crate::{Page, PageRequest, validate};

const GROUP_COLS: &str = "path, display_name, created_at, updated_at";
const DEVICE_COLS: &str =
    "id, group_path, display_name, attributes, lifecycle, version, created_at, updated_at";
const KEY_COLS: &str = "prefix, tenant, device, hash, created_at, expires_at, revoked_at";

fn group_from_row(row: &Row) -> Result<Group> {
    Ok(Group {
        path: col::<&str>(row, "path")?
            .parse()
            .map_err(|_| corrupt("group path"))?,
        display_name: col(row, "display_name")?,
        created_at: ts(col(row, "created_at")?)?,
        updated_at: ts(col(row, "updated_at")?)?,
    })
}

fn device_from_row(row: &Row) -> Result<Device> {
    Ok(Device {
        id: col::<&str>(row, "id")?
            .parse()
            .map_err(|_| corrupt("device id"))?,
        group: col::<&str>(row, "group_path")?
            .parse()
            .map_err(|_| corrupt("group path"))?,
        display_name: col(row, "display_name")?,
        attributes: parse_json(col(row, "attributes")?)?,
        lifecycle: Lifecycle::from_name(col(row, "lifecycle")?)
            .ok_or_else(|| corrupt("life-cycle state"))?,
        version: to_u64(col(row, "version")?)?,
        created_at: ts(col(row, "created_at")?)?,
        updated_at: ts(col(row, "updated_at")?)?,
    })
}

fn key_from_row(row: &Row) -> Result<AccessKeyRecord> {
    Ok(AccessKeyRecord {
        prefix: col(row, "prefix")?,
        tenant: col::<&str>(row, "tenant")?
            .parse()
            .map_err(|_| corrupt("tenant id"))?,
        device: col::<&str>(row, "device")?
            .parse()
            .map_err(|_| corrupt("device id"))?,
        hash: col(row, "hash")?,
        created_at: ts(col(row, "created_at")?)?,
        expires_at: col::<Option<i64>>(row, "expires_at")?.map(ts).transpose()?,
        revoked_at: col::<Option<i64>>(row, "revoked_at")?.map(ts).transpose()?,
    })
}

impl PostgresStore {
    async fn group_exists<C: deadpool_postgres::GenericClient>(
        c: &C,
        path: &GroupPath,
    ) -> Result<bool> {
        Ok(
            query_opt(c, "SELECT 1 FROM groups WHERE path = $1", &[&path.as_str()])
                .await?
                .is_some(),
        )
    }
}

impl RegistryStore for PostgresStore {
    fn create_tenant<'a>(
        &'a self,
        tenant: &'a TenantId,
        display_name: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        Box::pin(async move {
            validate::display_name(display_name)?;
            let c = self.client().await?;
            let sql = format!(
                "INSERT INTO groups (path, parent, display_name, created_at, updated_at) \
                 VALUES ($1, NULL, $2, $3, $3) ON CONFLICT DO NOTHING RETURNING {GROUP_COLS}"
            );
            match query_opt(
                &c,
                &sql,
                &[&tenant.as_str(), &display_name, &now.as_millis()],
            )
            .await?
            {
                Some(row) => group_from_row(&row),
                None => Err(Error::conflict(format!("tenant {tenant} already exists"))),
            }
        })
    }

    fn create_group<'a>(
        &'a self,
        path: &'a GroupPath,
        display_name: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        Box::pin(async move {
            validate::display_name(display_name)?;
            let Some(parent) = path.parent() else {
                return Err(Error::invalid_input(
                    "a tenant's root group is created with create_tenant",
                ));
            };
            let c = self.client().await?;
            let parent_missing =
                || Error::not_found(format!("parent group {parent} does not exist"));
            if !Self::group_exists(&c, &parent).await? {
                return Err(parent_missing());
            }
            // The foreign key on `parent` catches a parent deleted in between.
            let sql = format!(
                "INSERT INTO groups (path, parent, display_name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING RETURNING {GROUP_COLS}"
            );
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
                &path.as_str(),
                &parent.as_str(),
                &display_name,
                &now.as_millis(),
            ];
            match c.query_opt(&stmt, &params).await {
                Ok(Some(row)) => group_from_row(&row),
                Ok(None) => Err(Error::conflict(format!("group {path} already exists"))),
                Err(e) if is_foreign_key_violation(&e) => Err(parent_missing()),
                Err(e) => Err(db_error(e)),
            }
        })
    }

    fn get_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<Option<Group>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql = format!("SELECT {GROUP_COLS} FROM groups WHERE path = $1");
            query_opt(&c, &sql, &[&path.as_str()])
                .await?
                .as_ref()
                .map(group_from_row)
                .transpose()
        })
    }

    fn list_groups<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Group>>> {
        Box::pin(async move {
            let after: Option<GroupPath> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let c = self.client().await?;
            let sql = format!(
                "SELECT {GROUP_COLS} FROM groups \
                 WHERE (path = $1 OR path LIKE $2) AND ($3::TEXT IS NULL OR path > $3) \
                 ORDER BY path LIMIT $4"
            );
            let rows = query(
                &c,
                &sql,
                &[
                    &root.as_str(),
                    &below_pattern(root),
                    &after.as_ref().map(GroupPath::as_str),
                    &(i64::from(limit) + 1),
                ],
            )
            .await?;
            let items = rows
                .iter()
                .map(group_from_row)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |g| g.path.to_string()))
        })
    }

    fn delete_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if path.is_root() {
                return Err(Error::invalid_input(
                    "a tenant's root group cannot be deleted",
                ));
            }
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db_error)?;
            // Locking the row makes concurrent child inserts (their foreign-key check) wait.
            let found = query_opt(
                &tx,
                "SELECT 1 FROM groups WHERE path = $1 FOR UPDATE",
                &[&path.as_str()],
            )
            .await?;
            if found.is_none() {
                return Err(Error::not_found(format!("group {path} does not exist")));
            }
            let children = query_opt(
                &tx,
                "SELECT 1 FROM groups WHERE path LIKE $1 LIMIT 1",
                &[&below_pattern(path)],
            )
            .await?;
            if children.is_some() {
                return Err(Error::conflict(format!("group {path} has child groups")));
            }
            let devices = query_opt(
                &tx,
                "SELECT 1 FROM devices WHERE group_path = $1 LIMIT 1",
                &[&path.as_str()],
            )
            .await?;
            if devices.is_some() {
                return Err(Error::conflict(format!("group {path} has devices")));
            }
            if let Some(what) = super::users::group_has_identities(&tx, path).await? {
                return Err(Error::conflict(format!("group {path} has {what}")));
            }
            let stmt = tx
                .prepare_cached("DELETE FROM groups WHERE path = $1")
                .await
                .map_err(db_error)?;
            match tx.execute(&stmt, &[&path.as_str()]).await {
                Ok(_) => {}
                Err(e) if is_foreign_key_violation(&e) => {
                    return Err(Error::conflict(format!(
                        "group {path} has child groups, devices, users or clients"
                    )));
                }
                Err(e) => return Err(db_error(e)),
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn create_device<'a>(
        &'a self,
        device: NewDevice,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        Box::pin(async move {
            validate::display_name(&device.display_name)?;
            validate::attributes(&device.attributes, &self.limits)?;
            let attributes = json_text(&device.attributes)?;
            let c = self.client().await?;
            let group_missing =
                || Error::not_found(format!("group {} does not exist", device.group));
            if !Self::group_exists(&c, &device.group).await? {
                return Err(group_missing());
            }
            let sql = format!(
                "INSERT INTO devices (tenant, id, group_path, display_name, attributes, lifecycle, \
                 version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7) \
                 ON CONFLICT DO NOTHING RETURNING {DEVICE_COLS}"
            );
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            let tenant = device.group.tenant();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                &tenant.as_str(),
                &device.id.as_str(),
                &device.group.as_str(),
                &device.display_name,
                &attributes,
                &Lifecycle::Provisioned.as_str(),
                &now.as_millis(),
            ];
            match c.query_opt(&stmt, &params).await {
                Ok(Some(row)) => device_from_row(&row),
                Ok(None) => Err(Error::conflict(format!(
                    "device {} already exists",
                    device.id
                ))),
                Err(e) if is_foreign_key_violation(&e) => Err(group_missing()),
                Err(e) => Err(db_error(e)),
            }
        })
    }

    fn get_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Option<Device>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE tenant = $1 AND id = $2");
            query_opt(&c, &sql, &[&tenant.as_str(), &id.as_str()])
                .await?
                .as_ref()
                .map(device_from_row)
                .transpose()
        })
    }

    fn update_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
        patch: DevicePatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        Box::pin(async move {
            if let Some(name) = &patch.display_name {
                validate::display_name(name)?;
            }
            if let Some(attrs) = &patch.attributes {
                validate::attributes(attrs, &self.limits)?;
            }
            let attributes = patch.attributes.as_ref().map(json_text).transpose()?;
            let expected = expected_version.map(to_i64);
            let c = self.client().await?;
            let sql = format!(
                "UPDATE devices SET display_name = COALESCE($3, display_name), \
                 attributes = COALESCE($4, attributes), lifecycle = COALESCE($5, lifecycle), \
                 version = version + 1, updated_at = $6 \
                 WHERE tenant = $1 AND id = $2 AND ($7::BIGINT IS NULL OR version = $7) \
                 RETURNING {DEVICE_COLS}"
            );
            let row = query_opt(
                &c,
                &sql,
                &[
                    &tenant.as_str(),
                    &id.as_str(),
                    &patch.display_name,
                    &attributes,
                    &patch.lifecycle.map(Lifecycle::as_str),
                    &now.as_millis(),
                    &expected,
                ],
            )
            .await?;
            if let Some(row) = row {
                return device_from_row(&row);
            }
            let current = query_opt(
                &c,
                "SELECT version FROM devices WHERE tenant = $1 AND id = $2",
                &[&tenant.as_str(), &id.as_str()],
            )
            .await?;
            match (current, expected_version) {
                (Some(row), Some(v)) => Err(Error::precondition_failed(format!(
                    "device {id} is at version {}, not {v}",
                    col::<i64>(&row, "version")?
                ))),
                _ => Err(Error::not_found(format!("device {id} does not exist"))),
            }
        })
    }

    fn move_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
        to: &'a GroupPath,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        Box::pin(async move {
            if to.tenant() != *tenant {
                return Err(Error::invalid_input(
                    "a device cannot move to another tenant",
                ));
            }
            let c = self.client().await?;
            let group_missing = || Error::not_found(format!("group {to} does not exist"));
            if !Self::group_exists(&c, to).await? {
                return Err(group_missing());
            }
            let sql = format!(
                "UPDATE devices SET group_path = $3, version = version + 1, updated_at = $4 \
                 WHERE tenant = $1 AND id = $2 RETURNING {DEVICE_COLS}"
            );
            let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
                &tenant.as_str(),
                &id.as_str(),
                &to.as_str(),
                &now.as_millis(),
            ];
            match c.query_opt(&stmt, &params).await {
                Ok(Some(row)) => device_from_row(&row),
                Ok(None) => Err(Error::not_found(format!("device {id} does not exist"))),
                Err(e) if is_foreign_key_violation(&e) => Err(group_missing()),
                Err(e) => Err(db_error(e)),
            }
        })
    }

    fn delete_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = self.client().await?;
            // One statement: the device and its access keys go together.
            let rows = query(
                &c,
                "WITH gone AS (DELETE FROM devices WHERE tenant = $1 AND id = $2 RETURNING 1), \
                 keys AS (DELETE FROM access_keys WHERE tenant = $1 AND device = $2 \
                 AND EXISTS (SELECT 1 FROM gone)) \
                 SELECT count(*) FROM gone",
                &[&tenant.as_str(), &id.as_str()],
            )
            .await?;
            let n: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
            if n == 0 {
                return Err(Error::not_found(format!("device {id} does not exist")));
            }
            Ok(())
        })
    }

    fn list_devices<'a>(
        &'a self,
        root: &'a GroupPath,
        lifecycle: Option<Lifecycle>,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Device>>> {
        Box::pin(async move {
            let after: Option<DeviceId> = parse_cursor(&page.after)?;
            let limit = page.effective_limit(&self.limits);
            let c = self.client().await?;
            let sql = format!(
                "SELECT {DEVICE_COLS} FROM devices \
                 WHERE tenant = $1 AND (group_path = $2 OR group_path LIKE $3) \
                 AND ($4::TEXT IS NULL OR lifecycle = $4) AND ($5::TEXT IS NULL OR id > $5) \
                 ORDER BY id LIMIT $6"
            );
            let rows = query(
                &c,
                &sql,
                &[
                    &root.tenant().as_str(),
                    &root.as_str(),
                    &below_pattern(root),
                    &lifecycle.map(Lifecycle::as_str),
                    &after.as_ref().map(DeviceId::as_str),
                    &(i64::from(limit) + 1),
                ],
            )
            .await?;
            let items = rows
                .iter()
                .map(device_from_row)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |d| d.id.to_string()))
        })
    }
    fn move_group<'a>(
        &'a self,
        from: &'a GroupPath,
        to: &'a GroupPath,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        Box::pin(self.identity_move_group(from, to, now))
    }

    fn create_user<'a>(&'a self, user: NewUser, now: Timestamp) -> BoxFuture<'a, Result<User>> {
        Box::pin(self.identity_create_user(user, now))
    }

    fn get_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<User>>> {
        Box::pin(self.identity_get_user(tenant, id))
    }

    fn update_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
        patch: UserPatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<User>> {
        Box::pin(self.identity_update_user(tenant, id, patch, expected_version, now))
    }

    fn delete_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.identity_delete_user(tenant, id))
    }

    fn list_users<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<User>>> {
        Box::pin(self.identity_list_users(root, page))
    }

    fn create_client<'a>(&'a self, client: OAuthClient) -> BoxFuture<'a, Result<OAuthClient>> {
        Box::pin(self.identity_create_client(client))
    }

    fn get_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<Option<OAuthClient>>> {
        Box::pin(self.identity_get_client(id))
    }

    fn delete_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.identity_delete_client(id))
    }

    fn list_clients<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<OAuthClient>>> {
        Box::pin(self.identity_list_clients(root, page))
    }
}

impl CredentialStore for PostgresStore {
    fn put_access_key<'a>(&'a self, key: AccessKeyRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "INSERT INTO access_keys (prefix, tenant, device, hash, created_at, expires_at, \
                 revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &key.prefix,
                    &key.tenant.as_str(),
                    &key.device.as_str(),
                    &key.hash,
                    &key.created_at.as_millis(),
                    &key.expires_at.map(Timestamp::as_millis),
                    &key.revoked_at.map(Timestamp::as_millis),
                ],
            )
            .await?;
            if n == 0 {
                return Err(Error::conflict("an access key with this prefix exists"));
            }
            Ok(())
        })
    }

    fn find_access_key<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessKeyRecord>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql = format!("SELECT {KEY_COLS} FROM access_keys WHERE prefix = $1");
            query_opt(&c, &sql, &[&prefix])
                .await?
                .as_ref()
                .map(key_from_row)
                .transpose()
        })
    }

    fn list_access_keys<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<AccessKeyRecord>>> {
        Box::pin(async move {
            let c = self.client().await?;
            let sql = format!(
                "SELECT {KEY_COLS} FROM access_keys WHERE tenant = $1 AND device = $2 \
                 ORDER BY created_at DESC, prefix"
            );
            let rows = query(&c, &sql, &[&tenant.as_str(), &device.as_str()]).await?;
            rows.iter().map(key_from_row).collect()
        })
    }

    fn set_access_key_expiry<'a>(
        &'a self,
        prefix: &'a str,
        expires_at: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "UPDATE access_keys SET expires_at = $2 WHERE prefix = $1",
                &[&prefix, &expires_at.map(Timestamp::as_millis)],
            )
            .await?;
            if n == 0 {
                return Err(Error::not_found("no such access key"));
            }
            Ok(())
        })
    }

    fn revoke_access_key<'a>(
        &'a self,
        prefix: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "UPDATE access_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE prefix = $1",
                &[&prefix, &now.as_millis()],
            )
            .await?;
            if n == 0 {
                return Err(Error::not_found("no such access key"));
            }
            Ok(())
        })
    }

    fn set_password_hash<'a>(
        &'a self,
        tenant: &'a TenantId,
        user: &'a UserId,
        hash: String,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.cred_set_password_hash(tenant, user, hash))
    }

    fn get_password_hash<'a>(
        &'a self,
        tenant: &'a TenantId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(self.cred_get_password_hash(tenant, user))
    }

    fn put_grant<'a>(&'a self, grant: Grant, now: Timestamp) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.cred_put_grant(grant, now))
    }

    fn get_grant<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(self.cred_get_grant(kind, key_hash, now))
    }

    fn find_grant_by_user_code<'a>(
        &'a self,
        user_code: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(self.cred_find_grant_by_user_code(user_code, now))
    }

    fn set_grant_state<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        state: GrantState,
        payload: Option<serde_json::Value>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Grant>> {
        Box::pin(self.cred_set_grant_state(kind, key_hash, state, payload, now))
    }

    fn consume_grant<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(self.cred_consume_grant(kind, key_hash, now))
    }

    fn purge_expired<'a>(&'a self, now: Timestamp) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.cred_purge_expired(now))
    }

    fn create_refresh<'a>(&'a self, token: RefreshToken) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.cred_create_refresh(token))
    }

    fn rotate_refresh<'a>(
        &'a self,
        old_hash: &'a str,
        new: RefreshToken,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<RotateOutcome>> {
        Box::pin(self.cred_rotate_refresh(old_hash, new, now))
    }

    fn revoke_family<'a>(&'a self, family: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.cred_revoke_family(family))
    }

    fn get_refresh<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<Option<RefreshRecord>>> {
        Box::pin(self.cred_get_refresh(token_hash))
    }

    fn put_enrollment<'a>(&'a self, enrollment: EnrollmentRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.cred_put_enrollment(enrollment))
    }

    fn get_enrollment<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<EnrollmentRecord>>> {
        Box::pin(self.cred_get_enrollment(id))
    }

    fn list_enrollments<'a>(
        &'a self,
        root: &'a GroupPath,
    ) -> BoxFuture<'a, Result<Vec<EnrollmentRecord>>> {
        Box::pin(self.cred_list_enrollments(root))
    }

    fn delete_enrollment<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.cred_delete_enrollment(id))
    }

    fn use_enrollment<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<EnrollmentRecord>>> {
        Box::pin(self.cred_use_enrollment(id, now))
    }
}
