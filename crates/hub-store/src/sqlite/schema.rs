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
];

/// The schema version this code writes.
pub(crate) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`CURRENT`], or refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db_err)?;
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
