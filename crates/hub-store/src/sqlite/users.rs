//! Users, OAuth clients and subtree moves on SQLite.
//!
//! Every write runs in one closure on the writer thread, inside its own savepoint, so a move
//! that fails half-way leaves nothing behind.

use rusqlite::{Connection, OptionalExtension, Row, params};

use hub_core::{ClientId, Error, GroupPath, Result, TenantId, Timestamp, UserId};

use super::registry::{in_subtree, ts};
use super::{SqliteStore, corrupt, db_err};
use crate::registry::{Group, NewUser, OAuthClient, User, UserPatch, role_from_name, role_name};
use crate::{Page, PageRequest, bad_cursor, validate};

const USER_COLS: &str =
    "tenant, id, group_path, display_name, email, role, disabled, version, created_at, updated_at";
const CLIENT_COLS: &str =
    "id, group_path, display_name, redirect_uris, secret_hash, grant_types, scopes, created_at";

type UserRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    bool,
    i64,
    i64,
    i64,
);

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    r.try_into()
}

fn to_user(row: UserRow) -> Result<User> {
    let (tenant, id, group, display_name, email, role, disabled, version, c, u) = row;
    Ok(User {
        tenant: tenant.parse().map_err(|_| corrupt("tenant id"))?,
        id: id.parse().map_err(|_| corrupt("user id"))?,
        group: group.parse().map_err(|_| corrupt("group path"))?,
        display_name,
        email,
        role: role_from_name(&role).ok_or_else(|| corrupt("role"))?,
        disabled,
        version: u64::try_from(version).map_err(|_| corrupt("version"))?,
        created_at: ts(c)?,
        updated_at: ts(u)?,
    })
}

type ClientRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
);

fn client_row(r: &Row<'_>) -> rusqlite::Result<ClientRow> {
    r.try_into()
}

fn to_client(row: ClientRow) -> Result<OAuthClient> {
    let (id, group, display_name, uris, secret_hash, grant_types, scopes, c) = row;
    Ok(OAuthClient {
        id: id.parse().map_err(|_| corrupt("client id"))?,
        group: group.parse().map_err(|_| corrupt("group path"))?,
        display_name,
        redirect_uris: serde_json::from_str(&uris).map_err(|_| corrupt("redirect URIs"))?,
        secret_hash,
        grant_types: serde_json::from_str(&grant_types).map_err(|_| corrupt("grant types"))?,
        scopes: scopes.parse().map_err(|_| corrupt("scopes"))?,
        created_at: ts(c)?,
    })
}

fn json_list(v: &[String]) -> Result<String> {
    serde_json::to_string(v).map_err(Error::internal)
}

fn group_exists(conn: &Connection, path: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM groups WHERE path = ?1")
        .and_then(|mut s| s.query_row([path], |_| Ok(())).optional())
        .map_err(db_err)
        .map(|r| r.is_some())
}

pub(super) fn get_user(conn: &Connection, tenant: &str, id: &str) -> Result<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM users WHERE tenant = ?1 AND id = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant, id], user_row).optional())
    .map_err(db_err)?
    .map(to_user)
    .transpose()
}

fn get_client(conn: &Connection, id: &str) -> Result<Option<OAuthClient>> {
    conn.prepare_cached(&format!(
        "SELECT {CLIENT_COLS} FROM oauth_clients WHERE id = ?1"
    ))
    .and_then(|mut s| s.query_row([id], client_row).optional())
    .map_err(db_err)?
    .map(to_client)
    .transpose()
}

/// Whether a group holds users or owns clients (for `delete_group`).
pub(super) fn group_has_identities(conn: &Connection, path: &str) -> Result<Option<&'static str>> {
    for (sql, what) in [
        ("SELECT 1 FROM users WHERE group_path = ?1 LIMIT 1", "users"),
        (
            "SELECT 1 FROM oauth_clients WHERE group_path = ?1 LIMIT 1",
            "OAuth clients",
        ),
    ] {
        let found = conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row([path], |_| Ok(())).optional())
            .map_err(db_err)?;
        if found.is_some() {
            return Ok(Some(what));
        }
    }
    Ok(None)
}

impl SqliteStore {
    pub(super) async fn identity_move_group(
        &self,
        from: GroupPath,
        to: GroupPath,
        now: Timestamp,
    ) -> Result<Group> {
        validate::move_group(&from, &to)?;
        self.write(move |conn| {
            if !group_exists(conn, from.as_str())? {
                return Err(Error::not_found(format!("group {from} does not exist")));
            }
            if let Some(parent) = to.parent()
                && !group_exists(conn, parent.as_str())?
            {
                return Err(Error::not_found(format!(
                    "parent group {parent} does not exist"
                )));
            }
            if group_exists(conn, to.as_str())? {
                return Err(Error::conflict(format!("group {to} already exists")));
            }
            let paths: Vec<String> = conn
                .prepare_cached(&format!(
                    "SELECT path FROM groups WHERE {}",
                    in_subtree("path", 1)
                ))
                .and_then(|mut s| {
                    s.query_map([from.as_str()], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(db_err)?;
            for p in &paths {
                let p: GroupPath = p.parse().map_err(|_| corrupt("group path"))?;
                validate::rebased(&p, &from, &to)?;
            }
            // ?1 = from, ?2 = to, ?3 = now, ?4 = tenant; each statement binds the first n.
            let rebase = "?2 || substr({col}, length(?1) + 1)";
            let tenant = from.tenant();
            let statements = [
                (3, format!(
                    "UPDATE groups SET path = {}, updated_at = ?3 WHERE {}",
                    rebase.replace("{col}", "path"),
                    in_subtree("path", 1)
                )),
                (4, format!(
                    "UPDATE devices SET group_path = {}, version = version + 1, updated_at = ?3 \
                     WHERE tenant = ?4 AND {}",
                    rebase.replace("{col}", "group_path"),
                    in_subtree("group_path", 1)
                )),
                (4, format!(
                    "UPDATE users SET group_path = {}, version = version + 1, updated_at = ?3 \
                     WHERE tenant = ?4 AND {}",
                    rebase.replace("{col}", "group_path"),
                    in_subtree("group_path", 1)
                )),
                (2, format!(
                    "UPDATE oauth_clients SET group_path = {} WHERE {}",
                    rebase.replace("{col}", "group_path"),
                    in_subtree("group_path", 1)
                )),
                (4, format!(
                    "UPDATE jobs SET group_path = {} WHERE tenant = ?4 AND {}",
                    rebase.replace("{col}", "group_path"),
                    in_subtree("group_path", 1)
                )),
                (4, format!(
                    "UPDATE bulk_jobs SET group_path = {} WHERE tenant = ?4 AND {}",
                    rebase.replace("{col}", "group_path"),
                    in_subtree("group_path", 1)
                )),
            ];
            let all = params![from.as_str(), to.as_str(), now.as_millis(), tenant.as_str()];
            for (n, sql) in &statements {
                conn.prepare_cached(sql)
                    .and_then(|mut s| s.execute(&all[..*n]))
                    .map_err(db_err)?;
            }
            conn.prepare_cached(
                "SELECT path, display_name, created_at, updated_at FROM groups WHERE path = ?1",
            )
            .and_then(|mut s| {
                s.query_row([to.as_str()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
            })
            .map_err(db_err)
            .and_then(|(path, display_name, c, u)| {
                Ok(Group {
                    path: path.parse().map_err(|_| corrupt("group path"))?,
                    display_name,
                    created_at: ts(c)?,
                    updated_at: ts(u)?,
                })
            })
        })
        .await
    }

    pub(super) async fn identity_create_user(&self, user: NewUser, now: Timestamp) -> Result<User> {
        validate::new_user(&user)?;
        self.write(move |conn| {
            if !group_exists(conn, user.group.as_str())? {
                return Err(Error::not_found(format!(
                    "group {} does not exist",
                    user.group
                )));
            }
            let tenant = user.group.tenant();
            if get_user(conn, tenant.as_str(), user.id.as_str())?.is_some() {
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
            conn.prepare_cached(&format!(
                "INSERT INTO users ({USER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 1, ?7, ?7)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    u.tenant.as_str(),
                    u.id.as_str(),
                    u.group.as_str(),
                    u.display_name,
                    u.email,
                    role_name(u.role),
                    now.as_millis(),
                ])
            })
            .map_err(db_err)?;
            Ok(u)
        })
        .await
    }

    pub(super) async fn identity_get_user(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Option<User>> {
        self.read(move |conn| get_user(conn, tenant.as_str(), id.as_str()))
            .await
    }

    pub(super) async fn identity_update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> Result<User> {
        validate::user_patch(&patch)?;
        if let Some(g) = &patch.group
            && g.tenant() != tenant
        {
            return Err(Error::invalid_input("a user cannot move to another tenant"));
        }
        self.write(move |conn| {
            if let Some(g) = &patch.group
                && !group_exists(conn, g.as_str())?
            {
                return Err(Error::not_found(format!("group {g} does not exist")));
            }
            let mut u = get_user(conn, tenant.as_str(), id.as_str())?
                .ok_or_else(|| Error::not_found(format!("user {id} does not exist")))?;
            patch.apply_to(&mut u, expected_version, now)?;
            conn.prepare_cached(
                "UPDATE users SET group_path = ?3, display_name = ?4, email = ?5, role = ?6, \
                 disabled = ?7, version = ?8, updated_at = ?9 WHERE tenant = ?1 AND id = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    tenant.as_str(),
                    id.as_str(),
                    u.group.as_str(),
                    u.display_name,
                    u.email,
                    role_name(u.role),
                    u.disabled,
                    i64::try_from(u.version).unwrap_or(i64::MAX),
                    now.as_millis(),
                ])
            })
            .map_err(db_err)?;
            Ok(u)
        })
        .await
    }

    pub(super) async fn identity_delete_user(&self, tenant: TenantId, id: UserId) -> Result<()> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM users WHERE tenant = ?1 AND id = ?2")
                .and_then(|mut s| s.execute([tenant.as_str(), id.as_str()]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::not_found(format!("user {id} does not exist")));
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn identity_list_users(
        &self,
        root: GroupPath,
        page: PageRequest,
    ) -> Result<Page<User>> {
        let limit = page.effective_limit(self.limits());
        let after: String = match page.after {
            Some(a) => a.parse::<UserId>().map_err(|_| bad_cursor())?.to_string(),
            None => String::new(),
        };
        self.read(move |conn| {
            let sql = format!(
                "SELECT {USER_COLS} FROM users WHERE tenant = ?2 AND {} AND id > ?3 \
                 ORDER BY id LIMIT ?4",
                in_subtree("group_path", 1)
            );
            let rows = conn
                .prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_map(
                        params![
                            root.as_str(),
                            root.tenant().as_str(),
                            after,
                            i64::from(limit) + 1
                        ],
                        user_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            let items = rows.into_iter().map(to_user).collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |u| u.id.to_string()))
        })
        .await
    }

    pub(super) async fn identity_create_client(&self, client: OAuthClient) -> Result<OAuthClient> {
        validate::client(&client)?;
        let uris = json_list(&client.redirect_uris)?;
        let grant_types = json_list(&client.grant_types)?;
        self.write(move |conn| {
            if !group_exists(conn, client.group.as_str())? {
                return Err(Error::not_found(format!(
                    "group {} does not exist",
                    client.group
                )));
            }
            if get_client(conn, client.id.as_str())?.is_some() {
                return Err(Error::conflict(format!(
                    "client {} already exists",
                    client.id
                )));
            }
            conn.prepare_cached(&format!(
                "INSERT INTO oauth_clients ({CLIENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    client.id.as_str(),
                    client.group.as_str(),
                    client.display_name,
                    uris,
                    client.secret_hash,
                    grant_types,
                    client.scopes.to_string(),
                    client.created_at.as_millis(),
                ])
            })
            .map_err(db_err)?;
            Ok(client)
        })
        .await
    }

    pub(super) async fn identity_get_client(&self, id: ClientId) -> Result<Option<OAuthClient>> {
        self.read(move |conn| get_client(conn, id.as_str())).await
    }

    pub(super) async fn identity_delete_client(&self, id: ClientId) -> Result<()> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM oauth_clients WHERE id = ?1")
                .and_then(|mut s| s.execute([id.as_str()]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::not_found(format!("client {id} does not exist")));
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn identity_list_clients(
        &self,
        root: GroupPath,
        page: PageRequest,
    ) -> Result<Page<OAuthClient>> {
        let limit = page.effective_limit(self.limits());
        let after: String = match page.after {
            Some(a) => a.parse::<ClientId>().map_err(|_| bad_cursor())?.to_string(),
            None => String::new(),
        };
        self.read(move |conn| {
            let sql = format!(
                "SELECT {CLIENT_COLS} FROM oauth_clients WHERE {} AND id > ?2 \
                 ORDER BY id LIMIT ?3",
                in_subtree("group_path", 1)
            );
            let rows = conn
                .prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_map(
                        params![root.as_str(), after, i64::from(limit) + 1],
                        client_row,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            let items = rows
                .into_iter()
                .map(to_client)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |c| c.id.to_string()))
        })
        .await
    }
}
