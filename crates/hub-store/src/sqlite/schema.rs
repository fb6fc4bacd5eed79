//! The SQLite schema and its migrations, numbered by `PRAGMA user_version`.

use rusqlite::Connection;

use hub_core::{Error, Result};

use super::db_err;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE groups (
    path         TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE devices (
    tenant       TEXT NOT NULL,
    id           TEXT NOT NULL,
    group_path   TEXT NOT NULL,
    display_name TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    lifecycle    TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX devices_by_group ON devices (group_path);

CREATE TABLE access_keys (
    prefix     TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    device     TEXT NOT NULL,
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX access_keys_by_device ON access_keys (tenant, device);

CREATE TABLE job_queues (
    tenant   TEXT NOT NULL,
    device   TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, device)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id              BLOB PRIMARY KEY,
    tenant          TEXT NOT NULL,
    device          TEXT NOT NULL,
    group_path      TEXT NOT NULL,
    lane            TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    state           TEXT NOT NULL,
    active          INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    execution       INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    document        TEXT NOT NULL,
    options         TEXT NOT NULL,
    idempotency_key TEXT,
    created_by      TEXT NOT NULL,
    bulk            BLOB,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    due_at          INTEGER,
    status_details  TEXT,
    result          TEXT
);
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_queue ON jobs (tenant, device, lane, seq) WHERE active = 1;
CREATE INDEX jobs_due ON jobs (due_at) WHERE active = 1 AND due_at IS NOT NULL;
CREATE INDEX jobs_by_group ON jobs (group_path, id);
CREATE INDEX jobs_by_device ON jobs (tenant, device, id);
CREATE INDEX jobs_by_bulk ON jobs (bulk) WHERE bulk IS NOT NULL;

CREATE TABLE control_leases (
    tenant TEXT NOT NULL,
    device TEXT NOT NULL,
    holder TEXT NOT NULL,
    until  INTEGER NOT NULL,
    PRIMARY KEY (tenant, device)
) WITHOUT ROWID;

CREATE TABLE series (
    id     INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    device TEXT NOT NULL,
    name   TEXT NOT NULL,
    UNIQUE (tenant, device, name)
);

CREATE TABLE points (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;

CREATE TABLE rollups_hour (
    series_id   INTEGER NOT NULL,
    hour        INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    min         REAL NOT NULL,
    max         REAL NOT NULL,
    sum         REAL NOT NULL,
    first_ts    INTEGER NOT NULL,
    first_value REAL NOT NULL,
    last_ts     INTEGER NOT NULL,
    last_value  REAL NOT NULL,
    PRIMARY KEY (series_id, hour)
) WITHOUT ROWID;
"#,
    // The audit log and device configuration documents. AUTOINCREMENT so that an audit id is
    // never handed out again after retention removed the newest records.
    r#"
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    tenant     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    group_path TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    details    TEXT NOT NULL
);
CREATE INDEX audit_log_by_group ON audit_log (group_path, id);
CREATE INDEX audit_log_by_resource ON audit_log (tenant, resource, id);
CREATE INDEX audit_log_by_time ON audit_log (tenant, at);

CREATE TABLE config_documents (
    tenant     TEXT NOT NULL,
    device     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    document   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant, device, kind, version)
) WITHOUT ROWID;
"#,
    // Identity for the OAuth/OIDC server: users (with their password hash), OAuth clients,
    // single-use grants (authorization and device codes) and refresh-token families.
    r#"
CREATE TABLE users (
    tenant        TEXT NOT NULL,
    id            TEXT NOT NULL,
    group_path    TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    email         TEXT,
    role          TEXT NOT NULL,
    disabled      INTEGER NOT NULL,
    version       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    password_hash TEXT,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX users_by_group ON users (group_path);

CREATE TABLE oauth_clients (
    id            TEXT PRIMARY KEY,
    group_path    TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    secret_hash   TEXT,
    grant_types   TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX oauth_clients_by_group ON oauth_clients (group_path);

CREATE TABLE grants (
    kind       TEXT NOT NULL,
    key_hash   TEXT NOT NULL,
    user_code  TEXT,
    payload    TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    state      TEXT NOT NULL,
    PRIMARY KEY (kind, key_hash)
) WITHOUT ROWID;
CREATE UNIQUE INDEX grants_by_user_code ON grants (user_code) WHERE user_code IS NOT NULL;
CREATE INDEX grants_by_expiry ON grants (expires_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    user_id    TEXT,
    client     TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    used       INTEGER NOT NULL,
    revoked    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);
"#,
    r#"
CREATE TABLE artifacts (
    tenant     TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, sha256)
) WITHOUT ROWID;
"#,
    // Bulk jobs and the devices that got their child job.
    r#"
CREATE TABLE bulk_jobs (
    id         BLOB PRIMARY KEY,
    tenant     TEXT NOT NULL,
    group_path TEXT NOT NULL,
    state      TEXT NOT NULL,
    active     INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    definition TEXT NOT NULL,
    progress   TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    due_at     INTEGER
);
CREATE INDEX bulk_jobs_by_group ON bulk_jobs (group_path, id);
CREATE INDEX bulk_jobs_due ON bulk_jobs (due_at) WHERE active = 1 AND due_at IS NOT NULL;

CREATE TABLE bulk_targets (
    bulk   BLOB NOT NULL,
    device TEXT NOT NULL,
    job    BLOB,
    error  TEXT,
    at     INTEGER NOT NULL,
    PRIMARY KEY (bulk, device)
) WITHOUT ROWID;
"#,
];

/// The schema version this code writes.
pub(crate) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`CURRENT`], or refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
    if found < 0 {
        return Err(Error::unavailable(format!(
            "the database schema version {found} is not one this hub wrote"
        )));
    }
    if found > CURRENT {
        return Err(Error::unavailable(format!(
            "the database schema is at version {found}, newer than this hub supports \
             ({CURRENT}); upgrade the hub"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute_batch(sql).map_err(db_err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}
