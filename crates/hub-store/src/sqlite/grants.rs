//! Password hashes, single-use grants and refresh-token families on SQLite.
//!
//! All writes go through the one writer thread, so every check-then-change below is atomic: of
//! two concurrent consumers or rotations, the second runs after the first committed its change.

use rusqlite::{Connection, OptionalExtension, Row, params};

use hub_core::{Error, Result, TenantId, Timestamp, UserId};

use super::registry::ts;
use super::{SqliteStore, corrupt, db_err};
use crate::credentials::{
    Grant, GrantKind, GrantState, RefreshRecord, RefreshToken, RotateOutcome,
};
use crate::validate;

const GRANT_COLS: &str = "kind, key_hash, user_code, payload, expires_at, state";
const REFRESH_COLS: &str =
    "token_hash, family, tenant, user_id, client, scopes, expires_at, created_at, used, revoked";

type GrantRow = (String, String, Option<String>, String, i64, String);

fn grant_row(r: &Row<'_>) -> rusqlite::Result<GrantRow> {
    r.try_into()
}

fn to_grant(row: GrantRow) -> Result<Grant> {
    let (kind, key_hash, user_code, payload, expires, state) = row;
    Ok(Grant {
        kind: GrantKind::from_name(&kind).ok_or_else(|| corrupt("grant kind"))?,
        key_hash,
        user_code,
        payload: serde_json::from_str(&payload).map_err(|_| corrupt("grant payload"))?,
        expires_at: ts(expires)?,
        state: GrantState::from_name(&state).ok_or_else(|| corrupt("grant state"))?,
    })
}

type RefreshRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    i64,
    bool,
    bool,
);

fn refresh_row(r: &Row<'_>) -> rusqlite::Result<RefreshRow> {
    r.try_into()
}

fn to_refresh(row: RefreshRow) -> Result<RefreshRecord> {
    let (token_hash, family, tenant, user, client, scopes, expires, created, used, revoked) = row;
    Ok(RefreshRecord {
        token: RefreshToken {
            token_hash,
            family,
            tenant: tenant.parse().map_err(|_| corrupt("tenant id"))?,
            user: user
                .map(|u| u.parse().map_err(|_| corrupt("user id")))
                .transpose()?,
            client: client.parse().map_err(|_| corrupt("client id"))?,
            scopes: scopes.parse().map_err(|_| corrupt("scopes"))?,
            expires_at: ts(expires)?,
            created_at: ts(created)?,
        },
        used,
        revoked,
    })
}

fn get_grant(conn: &Connection, kind: GrantKind, key: &str) -> Result<Option<Grant>> {
    conn.prepare_cached(&format!(
        "SELECT {GRANT_COLS} FROM grants WHERE kind = ?1 AND key_hash = ?2"
    ))
    .and_then(|mut s| s.query_row([kind.as_str(), key], grant_row).optional())
    .map_err(db_err)?
    .map(to_grant)
    .transpose()
}

fn get_refresh(conn: &Connection, hash: &str) -> Result<Option<RefreshRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {REFRESH_COLS} FROM refresh_tokens WHERE token_hash = ?1"
    ))
    .and_then(|mut s| s.query_row([hash], refresh_row).optional())
    .map_err(db_err)?
    .map(to_refresh)
    .transpose()
}

fn insert_refresh(conn: &Connection, t: &RefreshToken) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO refresh_tokens ({REFRESH_COLS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            t.token_hash,
            t.family,
            t.tenant.as_str(),
            t.user.as_ref().map(UserId::as_str),
            t.client.as_str(),
            t.scopes.to_string(),
            t.expires_at.as_millis(),
            t.created_at.as_millis(),
        ])
    })
    .map_err(db_err)?;
    Ok(())
}

fn revoke(conn: &Connection, family: &str) -> Result<u64> {
    conn.prepare_cached("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1 AND revoked = 0")
        .and_then(|mut s| s.execute([family]))
        .map_err(db_err)
        .map(|n| n as u64)
}

fn json_text(v: &serde_json::Value) -> Result<String> {
    serde_json::to_string(v).map_err(Error::internal)
}

impl SqliteStore {
    pub(super) async fn cred_set_password_hash(
        &self,
        tenant: TenantId,
        user: UserId,
        hash: String,
    ) -> Result<()> {
        validate::token(&hash, validate::MAX_HASH, "the password hash")?;
        self.write(move |conn| {
            let n = conn
                .prepare_cached("UPDATE users SET password_hash = ?3 WHERE tenant = ?1 AND id = ?2")
                .and_then(|mut s| s.execute(params![tenant.as_str(), user.as_str(), hash]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::not_found(format!("user {user} does not exist")));
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn cred_get_password_hash(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> Result<Option<String>> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT password_hash FROM users WHERE tenant = ?1 AND id = ?2")
                .and_then(|mut s| {
                    s.query_row([tenant.as_str(), user.as_str()], |r| {
                        r.get::<_, Option<String>>(0)
                    })
                    .optional()
                })
                .map_err(db_err)
                .map(Option::flatten)
        })
        .await
    }

    pub(super) async fn cred_put_grant(&self, grant: Grant, now: Timestamp) -> Result<()> {
        validate::grant(&grant, self.limits())?;
        let payload = json_text(&grant.payload)?;
        self.write(move |conn| {
            if get_grant(conn, grant.kind, &grant.key_hash)?.is_some() {
                return Err(Error::conflict("a grant with this key exists"));
            }
            if let Some(code) = &grant.user_code {
                conn.prepare_cached("DELETE FROM grants WHERE user_code = ?1 AND expires_at <= ?2")
                    .and_then(|mut s| s.execute(params![code, now.as_millis()]))
                    .map_err(db_err)?;
                let taken = conn
                    .prepare_cached("SELECT 1 FROM grants WHERE user_code = ?1")
                    .and_then(|mut s| s.query_row([code], |_| Ok(())).optional())
                    .map_err(db_err)?;
                if taken.is_some() {
                    return Err(Error::conflict("a live device code has this user code"));
                }
            }
            conn.prepare_cached(&format!(
                "INSERT INTO grants ({GRANT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    grant.kind.as_str(),
                    grant.key_hash,
                    grant.user_code,
                    payload,
                    grant.expires_at.as_millis(),
                    grant.state.as_str(),
                ])
            })
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    pub(super) async fn cred_get_grant(
        &self,
        kind: GrantKind,
        key: String,
        now: Timestamp,
    ) -> Result<Option<Grant>> {
        self.read(move |conn| Ok(get_grant(conn, kind, &key)?.filter(|g| now < g.expires_at)))
            .await
    }

    pub(super) async fn cred_find_grant_by_user_code(
        &self,
        code: String,
        now: Timestamp,
    ) -> Result<Option<Grant>> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {GRANT_COLS} FROM grants WHERE user_code = ?1 AND kind = ?2 \
                 AND expires_at > ?3"
            ))
            .and_then(|mut s| {
                s.query_row(
                    params![code, GrantKind::DeviceCode.as_str(), now.as_millis()],
                    grant_row,
                )
                .optional()
            })
            .map_err(db_err)?
            .map(to_grant)
            .transpose()
        })
        .await
    }

    pub(super) async fn cred_set_grant_state(
        &self,
        kind: GrantKind,
        key: String,
        state: GrantState,
        payload: Option<serde_json::Value>,
        now: Timestamp,
    ) -> Result<Grant> {
        if state == GrantState::Pending {
            return Err(Error::invalid_input(
                "a grant can only be approved or denied",
            ));
        }
        if let Some(p) = &payload {
            validate::grant_payload(p, self.limits())?;
        }
        self.write(move |conn| {
            let mut g = get_grant(conn, kind, &key)?
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
            let text = json_text(&g.payload)?;
            conn.prepare_cached(
                "UPDATE grants SET state = ?3, payload = ?4 WHERE kind = ?1 AND key_hash = ?2",
            )
            .and_then(|mut s| s.execute(params![kind.as_str(), key, state.as_str(), text]))
            .map_err(db_err)?;
            Ok(g)
        })
        .await
    }

    pub(super) async fn cred_consume_grant(
        &self,
        kind: GrantKind,
        key: String,
        now: Timestamp,
    ) -> Result<Option<Grant>> {
        self.write(move |conn| {
            let Some(g) = get_grant(conn, kind, &key)? else {
                return Ok(None);
            };
            let redeemable = now < g.expires_at
                && (kind == GrantKind::AuthorizationCode || g.state == GrantState::Approved);
            if !redeemable {
                return Ok(None);
            }
            conn.prepare_cached("DELETE FROM grants WHERE kind = ?1 AND key_hash = ?2")
                .and_then(|mut s| s.execute([kind.as_str(), key.as_str()]))
                .map_err(db_err)?;
            Ok(Some(g))
        })
        .await
    }

    pub(super) async fn cred_purge_expired(&self, now: Timestamp) -> Result<u64> {
        self.write(move |conn| {
            let mut n = 0u64;
            for sql in [
                "DELETE FROM grants WHERE expires_at <= ?1",
                "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
            ] {
                n += conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute([now.as_millis()]))
                    .map_err(db_err)? as u64;
            }
            Ok(n)
        })
        .await
    }

    pub(super) async fn cred_create_refresh(&self, token: RefreshToken) -> Result<()> {
        validate::refresh(&token)?;
        self.write(move |conn| {
            if get_refresh(conn, &token.token_hash)?.is_some() {
                return Err(Error::conflict("a refresh token with this hash exists"));
            }
            let family = conn
                .prepare_cached("SELECT 1 FROM refresh_tokens WHERE family = ?1 LIMIT 1")
                .and_then(|mut s| s.query_row([&token.family], |_| Ok(())).optional())
                .map_err(db_err)?;
            if family.is_some() {
                return Err(Error::conflict("this refresh token family exists"));
            }
            insert_refresh(conn, &token)
        })
        .await
    }

    pub(super) async fn cred_rotate_refresh(
        &self,
        old_hash: String,
        new: RefreshToken,
        now: Timestamp,
    ) -> Result<RotateOutcome> {
        validate::refresh(&new)?;
        self.write(move |conn| {
            let Some(old) = get_refresh(conn, &old_hash)? else {
                return Ok(RotateOutcome::Invalid);
            };
            let family = old.token.family.clone();
            if old.used {
                revoke(conn, &family)?;
                return Ok(RotateOutcome::Reused { family });
            }
            if old.revoked || now >= old.token.expires_at {
                return Ok(RotateOutcome::Invalid);
            }
            if get_refresh(conn, &new.token_hash)?.is_some() {
                return Err(Error::conflict("a refresh token with this hash exists"));
            }
            let new = RefreshToken {
                family,
                tenant: old.token.tenant.clone(),
                user: old.token.user.clone(),
                client: old.token.client.clone(),
                ..new
            };
            conn.prepare_cached("UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?1")
                .and_then(|mut s| s.execute([&old_hash]))
                .map_err(db_err)?;
            insert_refresh(conn, &new)?;
            Ok(RotateOutcome::Rotated(old.token))
        })
        .await
    }

    pub(super) async fn cred_revoke_family(&self, family: String) -> Result<u64> {
        self.write(move |conn| revoke(conn, &family)).await
    }

    pub(super) async fn cred_get_refresh(&self, hash: String) -> Result<Option<RefreshRecord>> {
        self.read(move |conn| get_refresh(conn, &hash)).await
    }
}
