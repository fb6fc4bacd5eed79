//! Tenants, groups and devices on SQLite.

use rusqlite::{Connection, OptionalExtension, Row, params};

use hub_core::{
    BoxFuture, ClientId, DeviceId, Error, GroupPath, Result, TenantId, Timestamp, UserId,
};

use super::{SqliteStore, corrupt, db_err};
use crate::registry::{
    Device, DevicePatch, Group, Lifecycle, NewDevice, NewUser, OAuthClient, RegistryStore, User,
    UserPatch,
};
use crate::{Page, PageRequest, bad_cursor, validate};

/// SQL for "`col` is `?n` or lies below it": every path below `p` sorts in `[p/, p0)` because
/// `0` follows `/` in ASCII, so the index on the path column answers it as a range.
pub(crate) fn in_subtree(col: &str, n: usize) -> String {
    format!("({col} = ?{n} OR ({col} > ?{n} || '/' AND {col} < ?{n} || '0'))")
}

pub(crate) fn ts(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millis(ms).map_err(|_| corrupt("timestamp"))
}

fn group_from_row(r: &Row<'_>) -> rusqlite::Result<(String, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_group((path, display_name, c, u): (String, String, i64, i64)) -> Result<Group> {
    Ok(Group {
        path: path.parse().map_err(|_| corrupt("group path"))?,
        display_name,
        created_at: ts(c)?,
        updated_at: ts(u)?,
    })
}

const GROUP_COLS: &str = "path, display_name, created_at, updated_at";
pub(crate) const DEVICE_COLS: &str =
    "id, group_path, display_name, attributes, lifecycle, version, created_at, updated_at";

type DeviceRow = (String, String, String, String, String, i64, i64, i64);

fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRow> {
    r.try_into()
}

fn to_device(row: DeviceRow) -> Result<Device> {
    let (id, group, display_name, attributes, lifecycle, version, c, u) = row;
    Ok(Device {
        id: id.parse().map_err(|_| corrupt("device id"))?,
        group: group.parse().map_err(|_| corrupt("group path"))?,
        display_name,
        attributes: serde_json::from_str(&attributes).map_err(|_| corrupt("attributes"))?,
        lifecycle: Lifecycle::from_name(&lifecycle).ok_or_else(|| corrupt("lifecycle"))?,
        version: u64::try_from(version).map_err(|_| corrupt("version"))?,
        created_at: ts(c)?,
        updated_at: ts(u)?,
    })
}

fn get_group(conn: &Connection, path: &str) -> Result<Option<Group>> {
    conn.prepare_cached(&format!("SELECT {GROUP_COLS} FROM groups WHERE path = ?1"))
        .and_then(|mut s| s.query_row([path], group_from_row).optional())
        .map_err(db_err)?
        .map(to_group)
        .transpose()
}

fn group_exists(conn: &Connection, path: &str) -> Result<bool> {
    Ok(get_group(conn, path)?.is_some())
}

pub(crate) fn get_device(conn: &Connection, tenant: &str, id: &str) -> Result<Option<Device>> {
    conn.prepare_cached(&format!(
        "SELECT {DEVICE_COLS} FROM devices WHERE tenant = ?1 AND id = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant, id], device_row).optional())
    .map_err(db_err)?
    .map(to_device)
    .transpose()
}

fn insert_group(conn: &Connection, path: &GroupPath, name: &str, now: Timestamp) -> Result<Group> {
    conn.prepare_cached(
        "INSERT INTO groups (path, display_name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
    )
    .and_then(|mut s| s.execute(params![path.as_str(), name, now.as_millis()]))
    .map_err(db_err)?;
    Ok(Group {
        path: path.clone(),
        display_name: name.to_owned(),
        created_at: now,
        updated_at: now,
    })
}

impl RegistryStore for SqliteStore {
    fn create_tenant<'a>(
        &'a self,
        tenant: &'a TenantId,
        display_name: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        let path = GroupPath::root(tenant);
        let name = display_name.to_owned();
        Box::pin(async move {
            validate::display_name(&name)?;
            self.write(move |conn| {
                if group_exists(conn, path.as_str())? {
                    return Err(Error::conflict(format!("tenant {path} already exists")));
                }
                insert_group(conn, &path, &name, now)
            })
            .await
        })
    }

    fn create_group<'a>(
        &'a self,
        path: &'a GroupPath,
        display_name: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        let path = path.clone();
        let name = display_name.to_owned();
        Box::pin(async move {
            validate::display_name(&name)?;
            let Some(parent) = path.parent() else {
                return Err(Error::invalid_input(
                    "a tenant's root group is created with create_tenant",
                ));
            };
            self.write(move |conn| {
                if !group_exists(conn, parent.as_str())? {
                    return Err(Error::not_found(format!(
                        "parent group {parent} does not exist"
                    )));
                }
                if group_exists(conn, path.as_str())? {
                    return Err(Error::conflict(format!("group {path} already exists")));
                }
                insert_group(conn, &path, &name, now)
            })
            .await
        })
    }

    fn get_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<Option<Group>>> {
        let path = path.clone();
        Box::pin(self.read(move |conn| get_group(conn, path.as_str())))
    }

    fn list_groups<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Group>>> {
        let root = root.clone();
        let limit = page.effective_limit(self.limits());
        Box::pin(async move {
            let after: String = match page.after {
                Some(a) => a
                    .parse::<GroupPath>()
                    .map_err(|_| bad_cursor())?
                    .to_string(),
                None => String::new(),
            };
            self.read(move |conn| {
                let sql = format!(
                    "SELECT {GROUP_COLS} FROM groups WHERE {} AND path > ?2 ORDER BY path LIMIT ?3",
                    in_subtree("path", 1)
                );
                let rows = conn
                    .prepare_cached(&sql)
                    .and_then(|mut s| {
                        s.query_map(
                            params![root.as_str(), after, i64::from(limit) + 1],
                            group_from_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                let items = rows.into_iter().map(to_group).collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, limit, |g| g.path.to_string()))
            })
            .await
        })
    }

    fn delete_group<'a>(&'a self, path: &'a GroupPath) -> BoxFuture<'a, Result<()>> {
        let path = path.clone();
        Box::pin(async move {
            if path.is_root() {
                return Err(Error::invalid_input(
                    "a tenant's root group cannot be deleted",
                ));
            }
            self.write(move |conn| {
                if !group_exists(conn, path.as_str())? {
                    return Err(Error::not_found(format!("group {path} does not exist")));
                }
                let below = format!("{}/", path.as_str());
                let children: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM groups WHERE path > ?1 AND path < ?2 || '0'",
                    )
                    .and_then(|mut s| s.query_row(params![below, path.as_str()], |r| r.get(0)))
                    .map_err(db_err)?;
                if children > 0 {
                    return Err(Error::conflict(format!("group {path} has child groups")));
                }
                let devices: i64 = conn
                    .prepare_cached("SELECT count(*) FROM devices WHERE group_path = ?1")
                    .and_then(|mut s| s.query_row([path.as_str()], |r| r.get(0)))
                    .map_err(db_err)?;
                if devices > 0 {
                    return Err(Error::conflict(format!("group {path} has devices")));
                }
                if let Some(what) = super::users::group_has_identities(conn, path.as_str())? {
                    return Err(Error::conflict(format!("group {path} has {what}")));
                }
                conn.prepare_cached("DELETE FROM groups WHERE path = ?1")
                    .and_then(|mut s| s.execute([path.as_str()]))
                    .map_err(db_err)?;
                Ok(())
            })
            .await
        })
    }

    fn create_device<'a>(
        &'a self,
        device: NewDevice,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        Box::pin(async move {
            validate::display_name(&device.display_name)?;
            validate::attributes(&device.attributes, self.limits())?;
            self.write(move |conn| {
                if !group_exists(conn, device.group.as_str())? {
                    return Err(Error::not_found(format!(
                        "group {} does not exist",
                        device.group
                    )));
                }
                let tenant = device.group.tenant();
                if get_device(conn, tenant.as_str(), device.id.as_str())?.is_some() {
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
                conn.prepare_cached(&format!(
                    "INSERT INTO devices (tenant, {DEVICE_COLS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        tenant.as_str(),
                        d.id.as_str(),
                        d.group.as_str(),
                        d.display_name,
                        d.attributes.to_string(),
                        d.lifecycle.as_str(),
                        1i64,
                        now.as_millis(),
                        now.as_millis(),
                    ])
                })
                .map_err(db_err)?;
                Ok(d)
            })
            .await
        })
    }

    fn get_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Option<Device>>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        Box::pin(self.read(move |conn| get_device(conn, tenant.as_str(), id.as_str())))
    }

    fn update_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
        patch: DevicePatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        Box::pin(async move {
            if let Some(name) = &patch.display_name {
                validate::display_name(name)?;
            }
            if let Some(attrs) = &patch.attributes {
                validate::attributes(attrs, self.limits())?;
            }
            self.write(move |conn| {
                let mut d = get_device(conn, tenant.as_str(), id.as_str())?
                    .ok_or_else(|| Error::not_found(format!("device {id} does not exist")))?;
                patch.apply_to(&mut d, expected_version, now)?;
                conn.prepare_cached(
                    "UPDATE devices SET display_name = ?3, attributes = ?4, lifecycle = ?5, \
                     version = ?6, updated_at = ?7 WHERE tenant = ?1 AND id = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        tenant.as_str(),
                        id.as_str(),
                        d.display_name,
                        d.attributes.to_string(),
                        d.lifecycle.as_str(),
                        d.version as i64,
                        now.as_millis(),
                    ])
                })
                .map_err(db_err)?;
                Ok(d)
            })
            .await
        })
    }

    fn move_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
        to: &'a GroupPath,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Device>> {
        let (tenant, id, to) = (tenant.clone(), id.clone(), to.clone());
        Box::pin(async move {
            if to.tenant() != tenant {
                return Err(Error::invalid_input(
                    "a device cannot move to another tenant",
                ));
            }
            self.write(move |conn| {
                if !group_exists(conn, to.as_str())? {
                    return Err(Error::not_found(format!("group {to} does not exist")));
                }
                let mut d = get_device(conn, tenant.as_str(), id.as_str())?
                    .ok_or_else(|| Error::not_found(format!("device {id} does not exist")))?;
                d.group = to;
                d.version += 1;
                d.updated_at = now;
                conn.prepare_cached(
                    "UPDATE devices SET group_path = ?3, version = ?4, updated_at = ?5 \
                     WHERE tenant = ?1 AND id = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        tenant.as_str(),
                        id.as_str(),
                        d.group.as_str(),
                        d.version as i64,
                        now.as_millis()
                    ])
                })
                .map_err(db_err)?;
                Ok(d)
            })
            .await
        })
    }

    fn delete_device<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a DeviceId,
    ) -> BoxFuture<'a, Result<()>> {
        let (tenant, id) = (tenant.clone(), id.clone());
        Box::pin(self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM devices WHERE tenant = ?1 AND id = ?2")
                .and_then(|mut s| s.execute([tenant.as_str(), id.as_str()]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::not_found(format!("device {id} does not exist")));
            }
            conn.prepare_cached("DELETE FROM access_keys WHERE tenant = ?1 AND device = ?2")
                .and_then(|mut s| s.execute([tenant.as_str(), id.as_str()]))
                .map_err(db_err)?;
            Ok(())
        }))
    }

    fn list_devices<'a>(
        &'a self,
        root: &'a GroupPath,
        lifecycle: Option<Lifecycle>,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<Device>>> {
        let root = root.clone();
        let limit = page.effective_limit(self.limits());
        Box::pin(async move {
            let after: String = match page.after {
                Some(a) => a.parse::<DeviceId>().map_err(|_| bad_cursor())?.to_string(),
                None => String::new(),
            };
            let tenant = root.tenant();
            self.read(move |conn| {
                let sql = format!(
                    "SELECT {DEVICE_COLS} FROM devices WHERE tenant = ?2 AND id > ?3 AND {} \
                     AND (?4 IS NULL OR lifecycle = ?4) ORDER BY id LIMIT ?5",
                    in_subtree("group_path", 1)
                );
                let rows = conn
                    .prepare_cached(&sql)
                    .and_then(|mut s| {
                        s.query_map(
                            params![
                                root.as_str(),
                                tenant.as_str(),
                                after,
                                lifecycle.map(|l| l.as_str()),
                                i64::from(limit) + 1
                            ],
                            device_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)?;
                let items = rows
                    .into_iter()
                    .map(to_device)
                    .collect::<Result<Vec<_>>>()?;
                Ok(Page::from_overfetch(items, limit, |d| d.id.to_string()))
            })
            .await
        })
    }

    fn move_group<'a>(
        &'a self,
        from: &'a GroupPath,
        to: &'a GroupPath,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Group>> {
        Box::pin(self.identity_move_group(from.clone(), to.clone(), now))
    }

    fn create_user<'a>(&'a self, user: NewUser, now: Timestamp) -> BoxFuture<'a, Result<User>> {
        Box::pin(self.identity_create_user(user, now))
    }

    fn get_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<User>>> {
        Box::pin(self.identity_get_user(tenant.clone(), id.clone()))
    }

    fn update_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
        patch: UserPatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<User>> {
        Box::pin(self.identity_update_user(
            tenant.clone(),
            id.clone(),
            patch,
            expected_version,
            now,
        ))
    }

    fn delete_user<'a>(
        &'a self,
        tenant: &'a TenantId,
        id: &'a UserId,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.identity_delete_user(tenant.clone(), id.clone()))
    }

    fn list_users<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<User>>> {
        Box::pin(self.identity_list_users(root.clone(), page))
    }

    fn create_client<'a>(&'a self, client: OAuthClient) -> BoxFuture<'a, Result<OAuthClient>> {
        Box::pin(self.identity_create_client(client))
    }

    fn get_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<Option<OAuthClient>>> {
        Box::pin(self.identity_get_client(id.clone()))
    }

    fn delete_client<'a>(&'a self, id: &'a ClientId) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.identity_delete_client(id.clone()))
    }

    fn list_clients<'a>(
        &'a self,
        root: &'a GroupPath,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<OAuthClient>>> {
        Box::pin(self.identity_list_clients(root.clone(), page))
    }
}
