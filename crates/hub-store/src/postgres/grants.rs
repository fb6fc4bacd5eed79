//! Password hashes, single-use grants and refresh-token families in PostgreSQL.
//!
//! Race-free for several hub nodes: consuming a grant is one `DELETE ... RETURNING` (of
//! concurrent consumers exactly one gets the row), approving is one conditional `UPDATE`, and a
//! rotation locks the old token's row, so a concurrent rotation waits and then sees it used.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use hub_core::{Error, Result, TenantId, Timestamp, UserId};

use super::{PostgresStore, col, corrupt, db_error, execute, json_text, parse_json, query_opt, ts};
use crate::credentials::{
    Grant, GrantKind, GrantState, RefreshRecord, RefreshToken, RotateOutcome,
};
use crate::validate;

const GRANT_COLS: &str = "kind, key_hash, user_code, payload, expires_at, state";
const REFRESH_COLS: &str =
    "token_hash, family, tenant, user_id, client, scopes, expires_at, created_at, used, revoked";

fn grant_from_row(row: &Row) -> Result<Grant> {
    Ok(Grant {
        kind: GrantKind::from_name(col(row, "kind")?).ok_or_else(|| corrupt("grant kind"))?,
        key_hash: col(row, "key_hash")?,
        user_code: col(row, "user_code")?,
        payload: parse_json(col(row, "payload")?)?,
        expires_at: ts(col(row, "expires_at")?)?,
        state: GrantState::from_name(col(row, "state")?).ok_or_else(|| corrupt("grant state"))?,
    })
}

fn refresh_from_row(row: &Row) -> Result<RefreshRecord> {
    Ok(RefreshRecord {
        token: RefreshToken {
            token_hash: col(row, "token_hash")?,
            family: col(row, "family")?,
            tenant: col::<&str>(row, "tenant")?
                .parse()
                .map_err(|_| corrupt("tenant id"))?,
            user: col::<Option<&str>>(row, "user_id")?
                .map(|u| u.parse().map_err(|_| corrupt("user id")))
                .transpose()?,
            client: col::<&str>(row, "client")?
                .parse()
                .map_err(|_| corrupt("client id"))?,
            scopes: col::<&str>(row, "scopes")?
                .parse()
                .map_err(|_| corrupt("scopes"))?,
            expires_at: ts(col(row, "expires_at")?)?,
            created_at: ts(col(row, "created_at")?)?,
        },
        used: col(row, "used")?,
        revoked: col(row, "revoked")?,
    })
}

async fn insert_refresh<C: deadpool_postgres::GenericClient>(
    c: &C,
    t: &RefreshToken,
) -> Result<bool> {
    let scopes = t.scopes.to_string();
    let params: [&(dyn ToSql + Sync); 8] = [
        &t.token_hash,
        &t.family,
        &t.tenant.as_str(),
        &t.user.as_ref().map(UserId::as_str),
        &t.client.as_str(),
        &scopes,
        &t.expires_at.as_millis(),
        &t.created_at.as_millis(),
    ];
    let n = execute(
        c,
        &format!(
            "INSERT INTO refresh_tokens ({REFRESH_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, FALSE) ON CONFLICT DO NOTHING"
        ),
        &params,
    )
    .await?;
    Ok(n == 1)
}

async fn revoke<C: deadpool_postgres::GenericClient>(c: &C, family: &str) -> Result<u64> {
    execute(
        c,
        "UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1 AND NOT revoked",
        &[&family],
    )
    .await
}

impl PostgresStore {
    pub(super) async fn cred_set_password_hash(
        &self,
        tenant: &TenantId,
        user: &UserId,
        hash: String,
    ) -> Result<()> {
        validate::token(&hash, validate::MAX_HASH, "the password hash")?;
        let c = self.client().await?;
        let n = execute(
            &c,
            "UPDATE users SET password_hash = $3 WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &user.as_str(), &hash],
        )
        .await?;
        if n == 0 {
            return Err(Error::not_found(format!("user {user} does not exist")));
        }
        Ok(())
    }

    pub(super) async fn cred_get_password_hash(
        &self,
        tenant: &TenantId,
        user: &UserId,
    ) -> Result<Option<String>> {
        let c = self.client().await?;
        match query_opt(
            &c,
            "SELECT password_hash FROM users WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &user.as_str()],
        )
        .await?
        {
            Some(row) => col(&row, "password_hash"),
            None => Ok(None),
        }
    }

    pub(super) async fn cred_put_grant(&self, grant: Grant, now: Timestamp) -> Result<()> {
        validate::grant(&grant, &self.limits)?;
        let payload = json_text(&grant.payload)?;
        let c = self.client().await?;
        if let Some(code) = &grant.user_code {
            // An expired holder of the user code gives it up; a live one keeps it (the unique
            // index on user_code refuses the insert below).
            execute(
                &c,
                "DELETE FROM grants WHERE user_code = $1 AND expires_at <= $2",
                &[code, &now.as_millis()],
            )
            .await?;
        }
        let params: [&(dyn ToSql + Sync); 6] = [
            &grant.kind.as_str(),
            &grant.key_hash,
            &grant.user_code,
            &payload,
            &grant.expires_at.as_millis(),
            &grant.state.as_str(),
        ];
        let n = execute(
            &c,
            &format!(
                "INSERT INTO grants ({GRANT_COLS}) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT DO NOTHING"
            ),
            &params,
        )
        .await?;
        if n == 0 {
            return Err(Error::conflict(
                "a grant with this key, or a live device code with this user code, exists",
            ));
        }
        Ok(())
    }

    pub(super) async fn cred_get_grant(
        &self,
        kind: GrantKind,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<Grant>> {
        let c = self.client().await?;
        query_opt(
            &c,
            &format!(
                "SELECT {GRANT_COLS} FROM grants \
                 WHERE kind = $1 AND key_hash = $2 AND expires_at > $3"
            ),
            &[&kind.as_str(), &key, &now.as_millis()],
        )
        .await?
        .as_ref()
        .map(grant_from_row)
        .transpose()
    }

    pub(super) async fn cred_find_grant_by_user_code(
        &self,
        code: &str,
        now: Timestamp,
    ) -> Result<Option<Grant>> {
        let c = self.client().await?;
        query_opt(
            &c,
            &format!(
                "SELECT {GRANT_COLS} FROM grants \
                 WHERE user_code = $1 AND kind = $2 AND expires_at > $3"
            ),
            &[&code, &GrantKind::DeviceCode.as_str(), &now.as_millis()],
        )
        .await?
        .as_ref()
        .map(grant_from_row)
        .transpose()
    }

    pub(super) async fn cred_set_grant_state(
        &self,
        kind: GrantKind,
        key: &str,
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
            validate::grant_payload(p, &self.limits)?;
        }
        let payload = payload.as_ref().map(json_text).transpose()?;
        let c = self.client().await?;
        let params: [&(dyn ToSql + Sync); 6] = [
            &kind.as_str(),
            &key,
            &now.as_millis(),
            &state.as_str(),
            &payload,
            &GrantState::Pending.as_str(),
        ];
        let row = query_opt(
            &c,
            &format!(
                "UPDATE grants SET state = $4, payload = COALESCE($5, payload) \
                 WHERE kind = $1 AND key_hash = $2 AND expires_at > $3 AND state = $6 \
                 RETURNING {GRANT_COLS}"
            ),
            &params,
        )
        .await?;
        if let Some(row) = row {
            return grant_from_row(&row);
        }
        match self.cred_get_grant(kind, key, now).await? {
            Some(g) => Err(Error::conflict(format!(
                "the grant is {}, not pending",
                g.state.as_str()
            ))),
            None => Err(Error::not_found("no such live grant")),
        }
    }

    pub(super) async fn cred_consume_grant(
        &self,
        kind: GrantKind,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<Grant>> {
        let c = self.client().await?;
        let params: [&(dyn ToSql + Sync); 5] = [
            &kind.as_str(),
            &key,
            &now.as_millis(),
            &GrantKind::AuthorizationCode.as_str(),
            &GrantState::Approved.as_str(),
        ];
        query_opt(
            &c,
            &format!(
                "DELETE FROM grants WHERE kind = $1 AND key_hash = $2 AND expires_at > $3 \
                 AND (kind = $4 OR state = $5) RETURNING {GRANT_COLS}"
            ),
            &params,
        )
        .await?
        .as_ref()
        .map(grant_from_row)
        .transpose()
    }

    pub(super) async fn cred_purge_expired(&self, now: Timestamp) -> Result<u64> {
        let c = self.client().await?;
        let grants = execute(
            &c,
            "DELETE FROM grants WHERE expires_at <= $1",
            &[&now.as_millis()],
        )
        .await?;
        let tokens = execute(
            &c,
            "DELETE FROM refresh_tokens WHERE expires_at <= $1",
            &[&now.as_millis()],
        )
        .await?;
        Ok(grants + tokens)
    }

    pub(super) async fn cred_create_refresh(&self, token: RefreshToken) -> Result<()> {
        validate::refresh(&token)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_error)?;
        // Serializes creators of one family, so "the family is new" holds until the insert.
        execute(
            &tx,
            "SELECT pg_advisory_xact_lock(hashtext('hub-store refresh family:' || $1))",
            &[&token.family],
        )
        .await?;
        let exists = query_opt(
            &tx,
            "SELECT 1 FROM refresh_tokens WHERE family = $1 LIMIT 1",
            &[&token.family],
        )
        .await?;
        if exists.is_some() {
            return Err(Error::conflict("this refresh token family exists"));
        }
        if !insert_refresh(&tx, &token).await? {
            return Err(Error::conflict("a refresh token with this hash exists"));
        }
        tx.commit().await.map_err(db_error)
    }

    pub(super) async fn cred_rotate_refresh(
        &self,
        old_hash: &str,
        new: RefreshToken,
        now: Timestamp,
    ) -> Result<RotateOutcome> {
        validate::refresh(&new)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_error)?;
        let row = query_opt(
            &tx,
            &format!("SELECT {REFRESH_COLS} FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE"),
            &[&old_hash],
        )
        .await?;
        let Some(row) = row else {
            return Ok(RotateOutcome::Invalid);
        };
        let old = refresh_from_row(&row)?;
        let family = old.token.family.clone();
        if old.used {
            revoke(&tx, &family).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(RotateOutcome::Reused { family });
        }
        if old.revoked || now >= old.token.expires_at {
            return Ok(RotateOutcome::Invalid);
        }
        let new = RefreshToken {
            family,
            tenant: old.token.tenant.clone(),
            user: old.token.user.clone(),
            client: old.token.client.clone(),
            ..new
        };
        execute(
            &tx,
            "UPDATE refresh_tokens SET used = TRUE WHERE token_hash = $1",
            &[&old_hash],
        )
        .await?;
        if !insert_refresh(&tx, &new).await? {
            // Dropping the transaction rolls the `used` mark back.
            return Err(Error::conflict("a refresh token with this hash exists"));
        }
        tx.commit().await.map_err(db_error)?;
        Ok(RotateOutcome::Rotated(old.token))
    }

    pub(super) async fn cred_revoke_family(&self, family: &str) -> Result<u64> {
        let c = self.client().await?;
        revoke(&c, family).await
    }

    pub(super) async fn cred_get_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>> {
        let c = self.client().await?;
        query_opt(
            &c,
            &format!("SELECT {REFRESH_COLS} FROM refresh_tokens WHERE token_hash = $1"),
            &[&hash],
        )
        .await?
        .as_ref()
        .map(refresh_from_row)
        .transpose()
    }
}
