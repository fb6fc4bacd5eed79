//! Device access keys on SQLite.

use rusqlite::{Connection, OptionalExtension, Row, params};

use hub_core::{BoxFuture, DeviceId, Error, GroupPath, Result, TenantId, Timestamp, UserId};

use super::registry::{in_subtree, ts};
use super::{SqliteStore, corrupt, db_err};
use crate::credentials::{
    AccessKeyRecord, CredentialStore, EnrollmentRecord, Grant, GrantKind, GrantState,
    RefreshRecord, RefreshToken, RotateOutcome,
};
use crate::validate;

const COLS: &str = "prefix, tenant, device, hash, created_at, expires_at, revoked_at";

type KeyRow = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRow> {
    r.try_into()
}

fn to_key(row: KeyRow) -> Result<AccessKeyRecord> {
    let (prefix, tenant, device, hash, created, expires, revoked) = row;
    Ok(AccessKeyRecord {
        prefix,
        tenant: tenant.parse().map_err(|_| corrupt("tenant id"))?,
        device: device.parse().map_err(|_| corrupt("device id"))?,
        hash,
        created_at: ts(created)?,
        expires_at: expires.map(ts).transpose()?,
        revoked_at: revoked.map(ts).transpose()?,
    })
}

const ENROLLMENT_COLS: &str = "id, group_path, hash, max_uses, uses, expires_at, created_at";

type EnrollmentRow = (String, String, String, i64, i64, i64, i64);

fn enrollment_row(r: &Row<'_>) -> rusqlite::Result<EnrollmentRow> {
    r.try_into()
}

fn to_enrollment(row: EnrollmentRow) -> Result<EnrollmentRecord> {
    let (id, group, hash, max_uses, uses, expires, created) = row;
    Ok(EnrollmentRecord {
        id,
        group: group.parse().map_err(|_| corrupt("group path"))?,
        hash,
        max_uses: u32::try_from(max_uses).map_err(|_| corrupt("enrollment max_uses"))?,
        uses: u32::try_from(uses).map_err(|_| corrupt("enrollment uses"))?,
        expires_at: ts(expires)?,
        created_at: ts(created)?,
    })
}

fn find_enrollment(conn: &Connection, id: &str) -> Result<Option<EnrollmentRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {ENROLLMENT_COLS} FROM enrollments WHERE id = ?1"
    ))
    .and_then(|mut s| s.query_row([id], enrollment_row).optional())
    .map_err(db_err)?
    .map(to_enrollment)
    .transpose()
}

fn find(conn: &Connection, prefix: &str) -> Result<Option<AccessKeyRecord>> {
    conn.prepare_cached(&format!("SELECT {COLS} FROM access_keys WHERE prefix = ?1"))
        .and_then(|mut s| s.query_row([prefix], key_row).optional())
        .map_err(db_err)?
        .map(to_key)
        .transpose()
}

impl CredentialStore for SqliteStore {
    fn put_access_key<'a>(&'a self, key: AccessKeyRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.write(move |conn| {
            if find(conn, &key.prefix)?.is_some() {
                return Err(Error::conflict("an access key with this prefix exists"));
            }
            conn.prepare_cached(&format!(
                "INSERT INTO access_keys ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    key.prefix,
                    key.tenant.as_str(),
                    key.device.as_str(),
                    key.hash,
                    key.created_at.as_millis(),
                    key.expires_at.map(Timestamp::as_millis),
                    key.revoked_at.map(Timestamp::as_millis),
                ])
            })
            .map_err(db_err)?;
            Ok(())
        }))
    }

    fn find_access_key<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessKeyRecord>>> {
        let prefix = prefix.to_owned();
        Box::pin(self.read(move |conn| find(conn, &prefix)))
    }

    fn list_access_keys<'a>(
        &'a self,
        tenant: &'a TenantId,
        device: &'a DeviceId,
    ) -> BoxFuture<'a, Result<Vec<AccessKeyRecord>>> {
        let (tenant, device) = (tenant.clone(), device.clone());
        Box::pin(self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLS} FROM access_keys WHERE tenant = ?1 AND device = ?2 \
                     ORDER BY created_at DESC, prefix"
                ))
                .and_then(|mut s| {
                    s.query_map([tenant.as_str(), device.as_str()], key_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            rows.into_iter().map(to_key).collect()
        }))
    }

    fn set_access_key_expiry<'a>(
        &'a self,
        prefix: &'a str,
        expires_at: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<()>> {
        let prefix = prefix.to_owned();
        Box::pin(self.write(move |conn| {
            let n = conn
                .prepare_cached("UPDATE access_keys SET expires_at = ?2 WHERE prefix = ?1")
                .and_then(|mut s| s.execute(params![prefix, expires_at.map(Timestamp::as_millis)]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::not_found("no such access key"));
            }
            Ok(())
        }))
    }

    fn revoke_access_key<'a>(
        &'a self,
        prefix: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<()>> {
        let prefix = prefix.to_owned();
        Box::pin(self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE access_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE prefix = ?1",
                )
                .and_then(|mut s| s.execute(params![prefix, now.as_millis()]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::not_found("no such access key"));
            }
            Ok(())
        }))
    }

    fn set_password_hash<'a>(
        &'a self,
        tenant: &'a TenantId,
        user: &'a UserId,
        hash: String,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.cred_set_password_hash(tenant.clone(), user.clone(), hash))
    }

    fn get_password_hash<'a>(
        &'a self,
        tenant: &'a TenantId,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(self.cred_get_password_hash(tenant.clone(), user.clone()))
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
        Box::pin(self.cred_get_grant(kind, key_hash.to_owned(), now))
    }

    fn find_grant_by_user_code<'a>(
        &'a self,
        user_code: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(self.cred_find_grant_by_user_code(user_code.to_owned(), now))
    }

    fn set_grant_state<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        state: GrantState,
        payload: Option<serde_json::Value>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Grant>> {
        Box::pin(self.cred_set_grant_state(kind, key_hash.to_owned(), state, payload, now))
    }

    fn consume_grant<'a>(
        &'a self,
        kind: GrantKind,
        key_hash: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(self.cred_consume_grant(kind, key_hash.to_owned(), now))
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
        Box::pin(self.cred_rotate_refresh(old_hash.to_owned(), new, now))
    }

    fn revoke_family<'a>(&'a self, family: &'a str) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.cred_revoke_family(family.to_owned()))
    }

    fn get_refresh<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> BoxFuture<'a, Result<Option<RefreshRecord>>> {
        Box::pin(self.cred_get_refresh(token_hash.to_owned()))
    }

    fn put_enrollment<'a>(&'a self, enrollment: EnrollmentRecord) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            validate::token(&enrollment.id, validate::MAX_HASH, "the enrollment id")?;
            validate::token(&enrollment.hash, validate::MAX_HASH, "the enrollment hash")?;
            self.write(move |conn| {
                if find_enrollment(conn, &enrollment.id)?.is_some() {
                    return Err(Error::conflict("an enrollment with this id exists"));
                }
                conn.prepare_cached(&format!(
                    "INSERT INTO enrollments ({ENROLLMENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        enrollment.id,
                        enrollment.group.as_str(),
                        enrollment.hash,
                        i64::from(enrollment.max_uses),
                        i64::from(enrollment.uses),
                        enrollment.expires_at.as_millis(),
                        enrollment.created_at.as_millis(),
                    ])
                })
                .map_err(db_err)?;
                Ok(())
            })
            .await
        })
    }

    fn get_enrollment<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<EnrollmentRecord>>> {
        let id = id.to_owned();
        Box::pin(self.read(move |conn| find_enrollment(conn, &id)))
    }

    fn list_enrollments<'a>(
        &'a self,
        root: &'a GroupPath,
    ) -> BoxFuture<'a, Result<Vec<EnrollmentRecord>>> {
        let root = root.clone();
        Box::pin(self.read(move |conn| {
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {ENROLLMENT_COLS} FROM enrollments WHERE {} ORDER BY id",
                    in_subtree("group_path", 1)
                ))
                .and_then(|mut s| {
                    s.query_map([root.as_str()], enrollment_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_err)?;
            rows.into_iter().map(to_enrollment).collect()
        }))
    }

    fn delete_enrollment<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
        let id = id.to_owned();
        Box::pin(self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM enrollments WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::not_found("no such enrollment"));
            }
            Ok(())
        }))
    }

    fn use_enrollment<'a>(
        &'a self,
        id: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<Option<EnrollmentRecord>>> {
        let id = id.to_owned();
        // One writer: the check and the increment cannot interleave with another use.
        Box::pin(self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE enrollments SET uses = uses + 1 \
                     WHERE id = ?1 AND uses < max_uses AND expires_at > ?2",
                )
                .and_then(|mut s| s.execute(params![id, now.as_millis()]))
                .map_err(db_err)?;
            if n == 0 {
                return Ok(None);
            }
            find_enrollment(conn, &id)
        }))
    }
}
