//! Users, OAuth clients and subtree moves in PostgreSQL.
//!
//! Race-free for several hub nodes: single statements where possible, and row locks where a
//! check must hold until the change commits (a moving subtree is locked `FOR UPDATE`, so
//! concurrent inserts into it wait on their foreign-key check and then find it gone).

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use hub_core::{ClientId, Error, GroupPath, Result, TenantId, Timestamp, UserId};

use super::{
    PostgresStore, below_pattern, col, corrupt, db_error, execute, is_foreign_key_violation,
    parse_cursor, query, query_opt, to_i64, to_u64, ts,
};
use crate::registry::{Group, NewUser, OAuthClient, User, UserPatch, role_from_name, role_name};
use crate::{Page, PageRequest, validate};

const USER_COLS: &str =
    "tenant, id, group_path, display_name, email, role, disabled, version, created_at, updated_at";
const CLIENT_COLS: &str =
    "id, group_path, display_name, redirect_uris, secret_hash, grant_types, scopes, created_at";

fn user_from_row(row: &Row) -> Result<User> {
    Ok(User {
        tenant: col::<&str>(row, "tenant")?
            .parse()
            .map_err(|_| corrupt("tenant id"))?,
        id: col::<&str>(row, "id")?
            .parse()
            .map_err(|_| corrupt("user id"))?,
        group: col::<&str>(row, "group_path")?
            .parse()
            .map_err(|_| corrupt("group path"))?,
        display_name: col(row, "display_name")?,
        email: col(row, "email")?,
        role: role_from_name(col(row, "role")?).ok_or_else(|| corrupt("role"))?,
        disabled: col(row, "disabled")?,
        version: to_u64(col(row, "version")?)?,
        created_at: ts(col(row, "created_at")?)?,
        updated_at: ts(col(row, "updated_at")?)?,
    })
}

fn client_from_row(row: &Row) -> Result<OAuthClient> {
    Ok(OAuthClient {
        id: col::<&str>(row, "id")?
            .parse()
            .map_err(|_| corrupt("client id"))?,
        group: col::<&str>(row, "group_path")?
            .parse()
            .map_err(|_| corrupt("group path"))?,
        display_name: col(row, "display_name")?,
        redirect_uris: serde_json::from_str(col(row, "redirect_uris")?)
            .map_err(|_| corrupt("redirect URIs"))?,
        secret_hash: col(row, "secret_hash")?,
        grant_types: serde_json::from_str(col(row, "grant_types")?)
            .map_err(|_| corrupt("grant types"))?,
        scopes: col::<&str>(row, "scopes")?
            .parse()
            .map_err(|_| corrupt("scopes"))?,
        created_at: ts(col(row, "created_at")?)?,
    })
}

fn json_list(v: &[String]) -> Result<String> {
    serde_json::to_string(v).map_err(Error::internal)
}

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

/// What a group holds that blocks its deletion, besides child groups and devices.
pub(super) async fn group_has_identities<C: deadpool_postgres::GenericClient>(
    c: &C,
    path: &GroupPath,
) -> Result<Option<&'static str>> {
    for (sql, what) in [
        ("SELECT 1 FROM users WHERE group_path = $1 LIMIT 1", "users"),
        (
            "SELECT 1 FROM oauth_clients WHERE group_path = $1 LIMIT 1",
            "OAuth clients",
        ),
    ] {
        if query_opt(c, sql, &[&path.as_str()]).await?.is_some() {
            return Ok(Some(what));
        }
    }
    Ok(None)
}

impl PostgresStore {
    pub(super) async fn identity_move_group(
        &self,
        from: &GroupPath,
        to: &GroupPath,
        now: Timestamp,
    ) -> Result<Group> {
        validate::move_group(from, to)?;
        let Some(to_parent) = to.parent() else {
            return Err(Error::invalid_input("a group cannot become a root"));
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_error)?;
        let below = below_pattern(from);
        // Lock the whole subtree, in path order (the same order for every mover).
        let rows = query(
            &tx,
            "SELECT path FROM groups WHERE path = $1 OR path LIKE $2 ORDER BY path FOR UPDATE",
            &[&from.as_str(), &below],
        )
        .await?;
        let mut found = false;
        for row in &rows {
            let p: GroupPath = col::<&str>(row, "path")?
                .parse()
                .map_err(|_| corrupt("group path"))?;
            found |= p == *from;
            validate::rebased(&p, from, to)?;
        }
        if !found {
            return Err(Error::not_found(format!("group {from} does not exist")));
        }
        let parent = query_opt(
            &tx,
            "SELECT 1 FROM groups WHERE path = $1 FOR SHARE",
            &[&to_parent.as_str()],
        )
        .await?;
        if parent.is_none() {
            return Err(Error::not_found(format!(
                "parent group {to_parent} does not exist"
            )));
        }
        if group_exists(&tx, to).await? {
            return Err(Error::conflict(format!("group {to} already exists")));
        }
        let tenant = from.tenant();
        let millis = now.as_millis();
        // New groups first (one statement: foreign keys are checked at its end), then every
        // row pointing into the subtree, then the old groups.
        let insert = "INSERT INTO groups (path, parent, display_name, created_at, updated_at) \
             SELECT $2::TEXT || substr(path, length($1::TEXT) + 1), \
                    CASE WHEN path = $1 THEN $3::TEXT \
                         ELSE $2::TEXT || substr(parent, length($1::TEXT) + 1) END, \
                    display_name, created_at, $4 \
             FROM groups WHERE path = $1 OR path LIKE $5";
        let params: [&(dyn ToSql + Sync); 5] = [
            &from.as_str(),
            &to.as_str(),
            &to_parent.as_str(),
            &millis,
            &below,
        ];
        execute(&tx, insert, &params).await?;
        let rebase = "$2::TEXT || substr(group_path, length($1::TEXT) + 1)";
        let subtree = "(group_path = $1 OR group_path LIKE $5)";
        let with_version = [
            format!(
                "UPDATE devices SET group_path = {rebase}, version = version + 1, \
                 updated_at = $3 WHERE tenant = $4 AND {subtree}"
            ),
            format!(
                "UPDATE users SET group_path = {rebase}, version = version + 1, \
                 updated_at = $3 WHERE tenant = $4 AND {subtree}"
            ),
        ];
        let params: [&(dyn ToSql + Sync); 5] = [
            &from.as_str(),
            &to.as_str(),
            &millis,
            &tenant.as_str(),
            &below,
        ];
        for sql in &with_version {
            execute(&tx, sql, &params).await?;
        }
        execute(
            &tx,
            "UPDATE oauth_clients \
             SET group_path = $2::TEXT || substr(group_path, length($1::TEXT) + 1) \
             WHERE group_path = $1 OR group_path LIKE $3",
            &[&from.as_str(), &to.as_str(), &below],
        )
        .await?;
        execute(
            &tx,
            "UPDATE jobs SET group_path = $2::TEXT || substr(group_path, length($1::TEXT) + 1) \
             WHERE tenant = $4 AND (group_path = $1 OR group_path LIKE $3)",
            &[&from.as_str(), &to.as_str(), &below, &tenant.as_str()],
        )
        .await?;
        execute(
            &tx,
            "UPDATE bulk_jobs \
             SET group_path = $2::TEXT || substr(group_path, length($1::TEXT) + 1) \
             WHERE tenant = $4 AND (group_path = $1 OR group_path LIKE $3)",
            &[&from.as_str(), &to.as_str(), &below, &tenant.as_str()],
        )
        .await?;
        // A row that slipped into the subtree after the rewrites (under a group created while
        // the move began) makes the delete fail its foreign key: nothing is changed then.
        let stmt = tx
            .prepare_cached("DELETE FROM groups WHERE path = $1 OR path LIKE $2")
            .await
            .map_err(db_error)?;
        match tx.execute(&stmt, &[&from.as_str(), &below]).await {
            Ok(_) => {}
            Err(e) if is_foreign_key_violation(&e) => {
                return Err(Error::conflict(format!(
                    "group {from} changed while it was moving; try again"
                )));
            }
            Err(e) => return Err(db_error(e)),
        }
        let row = query_opt(
            &tx,
            "SELECT path, display_name, created_at, updated_at FROM groups WHERE path = $1",
            &[&to.as_str()],
        )
        .await?
        .ok_or_else(|| Error::internal("the moved group vanished"))?;
        let group = Group {
            path: col::<&str>(&row, "path")?
                .parse()
                .map_err(|_| corrupt("group path"))?,
            display_name: col(&row, "display_name")?,
            created_at: ts(col(&row, "created_at")?)?,
            updated_at: ts(col(&row, "updated_at")?)?,
        };
        tx.commit().await.map_err(db_error)?;
        Ok(group)
    }

    pub(super) async fn identity_create_user(&self, user: NewUser, now: Timestamp) -> Result<User> {
        validate::new_user(&user)?;
        let c = self.client().await?;
        let group_missing = || Error::not_found(format!("group {} does not exist", user.group));
        if !group_exists(&c, &user.group).await? {
            return Err(group_missing());
        }
        let sql = format!(
            "INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, FALSE, 1, $7, $7) \
             ON CONFLICT DO NOTHING RETURNING {USER_COLS}"
        );
        let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
        let tenant = user.group.tenant();
        let role = role_name(user.role);
        let params: [&(dyn ToSql + Sync); 7] = [
            &tenant.as_str(),
            &user.id.as_str(),
            &user.group.as_str(),
            &user.display_name,
            &user.email,
            &role,
            &now.as_millis(),
        ];
        match c.query_opt(&stmt, &params).await {
            Ok(Some(row)) => user_from_row(&row),
            Ok(None) => Err(Error::conflict(format!("user {} already exists", user.id))),
            Err(e) if is_foreign_key_violation(&e) => Err(group_missing()),
            Err(e) => Err(db_error(e)),
        }
    }

    pub(super) async fn identity_get_user(
        &self,
        tenant: &TenantId,
        id: &UserId,
    ) -> Result<Option<User>> {
        let c = self.client().await?;
        let sql = format!("SELECT {USER_COLS} FROM users WHERE tenant = $1 AND id = $2");
        query_opt(&c, &sql, &[&tenant.as_str(), &id.as_str()])
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    pub(super) async fn identity_update_user(
        &self,
        tenant: &TenantId,
        id: &UserId,
        patch: UserPatch,
        expected_version: Option<u64>,
        now: Timestamp,
    ) -> Result<User> {
        validate::user_patch(&patch)?;
        if let Some(g) = &patch.group
            && g.tenant() != *tenant
        {
            return Err(Error::invalid_input("a user cannot move to another tenant"));
        }
        let mut c = self.client().await?;
        if let Some(g) = &patch.group
            && !group_exists(&c, g).await?
        {
            return Err(Error::not_found(format!("group {g} does not exist")));
        }
        let tx = c.transaction().await.map_err(db_error)?;
        let sql = format!("SELECT {USER_COLS} FROM users WHERE tenant = $1 AND id = $2 FOR UPDATE");
        let mut u = match query_opt(&tx, &sql, &[&tenant.as_str(), &id.as_str()]).await? {
            Some(row) => user_from_row(&row)?,
            None => return Err(Error::not_found(format!("user {id} does not exist"))),
        };
        let moved_to = patch.group.clone();
        patch.apply_to(&mut u, expected_version, now)?;
        let stmt = tx
            .prepare_cached(
                "UPDATE users SET group_path = $3, display_name = $4, email = $5, role = $6, \
                 disabled = $7, version = $8, updated_at = $9 WHERE tenant = $1 AND id = $2",
            )
            .await
            .map_err(db_error)?;
        let role = role_name(u.role);
        let version = to_i64(u.version);
        let params: [&(dyn ToSql + Sync); 9] = [
            &tenant.as_str(),
            &id.as_str(),
            &u.group.as_str(),
            &u.display_name,
            &u.email,
            &role,
            &u.disabled,
            &version,
            &now.as_millis(),
        ];
        match tx.execute(&stmt, &params).await {
            Ok(_) => {}
            Err(e) if is_foreign_key_violation(&e) => {
                let g = moved_to.map(|g| g.to_string()).unwrap_or_default();
                return Err(Error::not_found(format!("group {g} does not exist")));
            }
            Err(e) => return Err(db_error(e)),
        }
        tx.commit().await.map_err(db_error)?;
        Ok(u)
    }

    pub(super) async fn identity_delete_user(&self, tenant: &TenantId, id: &UserId) -> Result<()> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "DELETE FROM users WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &id.as_str()],
        )
        .await?;
        if n == 0 {
            return Err(Error::not_found(format!("user {id} does not exist")));
        }
        Ok(())
    }

    pub(super) async fn identity_list_users(
        &self,
        root: &GroupPath,
        page: PageRequest,
    ) -> Result<Page<User>> {
        let after: Option<UserId> = parse_cursor(&page.after)?;
        let limit = page.effective_limit(&self.limits);
        let c = self.client().await?;
        let sql = format!(
            "SELECT {USER_COLS} FROM users \
             WHERE tenant = $1 AND (group_path = $2 OR group_path LIKE $3) \
             AND ($4::TEXT IS NULL OR id > $4) ORDER BY id LIMIT $5"
        );
        let rows = query(
            &c,
            &sql,
            &[
                &root.tenant().as_str(),
                &root.as_str(),
                &below_pattern(root),
                &after.as_ref().map(UserId::as_str),
                &(i64::from(limit) + 1),
            ],
        )
        .await?;
        let items = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |u| u.id.to_string()))
    }

    pub(super) async fn identity_create_client(&self, client: OAuthClient) -> Result<OAuthClient> {
        validate::client(&client)?;
        let uris = json_list(&client.redirect_uris)?;
        let grant_types = json_list(&client.grant_types)?;
        let scopes = client.scopes.to_string();
        let c = self.client().await?;
        let group_missing = || Error::not_found(format!("group {} does not exist", client.group));
        if !group_exists(&c, &client.group).await? {
            return Err(group_missing());
        }
        let sql = format!(
            "INSERT INTO oauth_clients ({CLIENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT DO NOTHING RETURNING id"
        );
        let stmt = c.prepare_cached(&sql).await.map_err(db_error)?;
        let params: [&(dyn ToSql + Sync); 8] = [
            &client.id.as_str(),
            &client.group.as_str(),
            &client.display_name,
            &uris,
            &client.secret_hash,
            &grant_types,
            &scopes,
            &client.created_at.as_millis(),
        ];
        match c.query_opt(&stmt, &params).await {
            Ok(Some(_)) => Ok(client),
            Ok(None) => Err(Error::conflict(format!(
                "client {} already exists",
                client.id
            ))),
            Err(e) if is_foreign_key_violation(&e) => Err(group_missing()),
            Err(e) => Err(db_error(e)),
        }
    }

    pub(super) async fn identity_get_client(&self, id: &ClientId) -> Result<Option<OAuthClient>> {
        let c = self.client().await?;
        let sql = format!("SELECT {CLIENT_COLS} FROM oauth_clients WHERE id = $1");
        query_opt(&c, &sql, &[&id.as_str()])
            .await?
            .as_ref()
            .map(client_from_row)
            .transpose()
    }

    pub(super) async fn identity_delete_client(&self, id: &ClientId) -> Result<()> {
        let c = self.client().await?;
        let n = execute(
            &c,
            "DELETE FROM oauth_clients WHERE id = $1",
            &[&id.as_str()],
        )
        .await?;
        if n == 0 {
            return Err(Error::not_found(format!("client {id} does not exist")));
        }
        Ok(())
    }

    pub(super) async fn identity_list_clients(
        &self,
        root: &GroupPath,
        page: PageRequest,
    ) -> Result<Page<OAuthClient>> {
        let after: Option<ClientId> = parse_cursor(&page.after)?;
        let limit = page.effective_limit(&self.limits);
        let c = self.client().await?;
        let sql = format!(
            "SELECT {CLIENT_COLS} FROM oauth_clients \
             WHERE (group_path = $1 OR group_path LIKE $2) \
             AND ($3::TEXT IS NULL OR id > $3) ORDER BY id LIMIT $4"
        );
        let rows = query(
            &c,
            &sql,
            &[
                &root.as_str(),
                &below_pattern(root),
                &after.as_ref().map(ClientId::as_str),
                &(i64::from(limit) + 1),
            ],
        )
        .await?;
        let items = rows
            .iter()
            .map(client_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |c| c.id.to_string()))
    }
}
