//! The versioned schema migrations, applied when a store is opened.
//!
//! Each migration runs once, in order, and the `schema_version` table records the last one
//! applied. All of it happens in one transaction holding a transaction-scoped advisory lock, so
//! several hub nodes starting at once apply each migration exactly once, and a failure leaves
//! the database as it was. Migrations are append-only: never edit a released one.

use hub_core::{Error, Result};

use super::db_error;

/// The schema version this build of the hub creates and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The migrations; entry `i` brings the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: registry, credentials, jobs.
    r#"
    CREATE TABLE groups (
        path         TEXT COLLATE "C" PRIMARY KEY,
        parent       TEXT COLLATE "C" REFERENCES groups (path),
        display_name TEXT NOT NULL,
        created_at   BIGINT NOT NULL,
        updated_at   BIGINT NOT NULL
    );
    CREATE INDEX groups_parent ON groups (parent);

    CREATE TABLE devices (
        tenant       TEXT COLLATE "C" NOT NULL,
        id           TEXT COLLATE "C" NOT NULL,
        group_path   TEXT COLLATE "C" NOT NULL REFERENCES groups (path),
        display_name TEXT NOT NULL,
        attributes   TEXT NOT NULL,
        lifecycle    TEXT NOT NULL,
        version      BIGINT NOT NULL,
        created_at   BIGINT NOT NULL,
        updated_at   BIGINT NOT NULL,
        PRIMARY KEY (tenant, id)
    );
    CREATE INDEX devices_group ON devices (group_path);

    CREATE TABLE access_keys (
        prefix     TEXT COLLATE "C" PRIMARY KEY,
        tenant     TEXT COLLATE "C" NOT NULL,
        device     TEXT COLLATE "C" NOT NULL,
        hash       TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT
    );
    CREATE INDEX access_keys_device ON access_keys (tenant, device);

    CREATE TABLE job_queues (
        tenant   TEXT COLLATE "C" NOT NULL,
        device   TEXT COLLATE "C" NOT NULL,
        last_seq BIGINT NOT NULL,
        PRIMARY KEY (tenant, device)
    );

    CREATE TABLE jobs (
        id              UUID PRIMARY KEY,
        tenant          TEXT COLLATE "C" NOT NULL,
        device          TEXT COLLATE "C" NOT NULL,
        group_path      TEXT COLLATE "C" NOT NULL,
        lane            TEXT COLLATE "C" NOT NULL,
        seq             BIGINT NOT NULL,
        state           TEXT NOT NULL,
        version         BIGINT NOT NULL,
        execution       BIGINT NOT NULL,
        attempts        BIGINT NOT NULL,
        document        TEXT NOT NULL,
        options         TEXT NOT NULL,
        idempotency_key TEXT COLLATE "C",
        created_by      TEXT NOT NULL,
        bulk            UUID,
        created_at      BIGINT NOT NULL,
        updated_at      BIGINT NOT NULL,
        due_at          BIGINT,
        status_details  TEXT,
        result          TEXT
    );
    CREATE UNIQUE INDEX jobs_device_seq ON jobs (tenant, device, seq);
    CREATE INDEX jobs_queue ON jobs (tenant, device, lane, seq);
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_due ON jobs (due_at, id) WHERE due_at IS NOT NULL;
    CREATE INDEX jobs_group ON jobs (group_path, id);
    CREATE INDEX jobs_bulk ON jobs (bulk) WHERE bulk IS NOT NULL;

    CREATE TABLE control_leases (
        tenant TEXT COLLATE "C" NOT NULL,
        device TEXT COLLATE "C" NOT NULL,
        holder TEXT NOT NULL,
        until  BIGINT NOT NULL,
        PRIMARY KEY (tenant, device)
    );
    "#,
    // 2: measurements and their hourly rollups. Points and rollups carry no foreign key to
    // `series` (series rows are never deleted), to keep bulk inserts cheap.
    r#"
    CREATE TABLE series (
        id     BIGSERIAL PRIMARY KEY,
        tenant TEXT COLLATE "C" NOT NULL,
        device TEXT COLLATE "C" NOT NULL,
        name   TEXT COLLATE "C" NOT NULL,
        UNIQUE (tenant, device, name)
    );

    CREATE TABLE points (
        series_id BIGINT NOT NULL,
        ts        BIGINT NOT NULL,
        value     DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (series_id, ts)
    );

    CREATE TABLE rollups (
        series_id   BIGINT NOT NULL,
        hour        BIGINT NOT NULL,
        count       BIGINT NOT NULL,
        min         DOUBLE PRECISION NOT NULL,
        max         DOUBLE PRECISION NOT NULL,
        sum         DOUBLE PRECISION NOT NULL,
        first_ts    BIGINT NOT NULL,
        first_value DOUBLE PRECISION NOT NULL,
        last_ts     BIGINT NOT NULL,
        last_value  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (series_id, hour)
    );
    CREATE INDEX rollups_hour ON rollups (hour);
    "#,
    // The audit log and device configuration documents. Audit ids come from an identity
    // column (a sequence: never reused, also after retention); configuration versions are
    // unique per device and kind through the primary key, which settles racing writers.
    r#"
    CREATE TABLE audit_log (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at         BIGINT NOT NULL,
        tenant     TEXT COLLATE "C" NOT NULL,
        actor      TEXT COLLATE "C" NOT NULL,
        action     TEXT COLLATE "C" NOT NULL,
        resource   TEXT COLLATE "C" NOT NULL,
        group_path TEXT COLLATE "C" NOT NULL,
        outcome    TEXT NOT NULL,
        details    TEXT NOT NULL
    );
    CREATE INDEX audit_log_group ON audit_log (group_path, id);
    CREATE INDEX audit_log_resource ON audit_log (tenant, resource, id);
    CREATE INDEX audit_log_time ON audit_log (tenant, at);

    CREATE TABLE config_documents (
        tenant     TEXT COLLATE "C" NOT NULL,
        device     TEXT COLLATE "C" NOT NULL,
        kind       TEXT NOT NULL,
        version    BIGINT NOT NULL,
        document   TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (tenant, device, kind, version)
    );
    "#,
    // Identity for the OAuth/OIDC server: users (with their password hash), OAuth clients,
    // single-use grants (authorization and device codes) and refresh-token families. Users and
    // clients reference their group, like devices, so a group holding them cannot vanish.
    r#"
    CREATE TABLE users (
        tenant        TEXT COLLATE "C" NOT NULL,
        id            TEXT COLLATE "C" NOT NULL,
        group_path    TEXT COLLATE "C" NOT NULL REFERENCES groups (path),
        display_name  TEXT NOT NULL,
        email         TEXT,
        role          TEXT NOT NULL,
        disabled      BOOLEAN NOT NULL,
        version       BIGINT NOT NULL,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        password_hash TEXT,
        PRIMARY KEY (tenant, id)
    );
    CREATE INDEX users_group ON users (group_path);

    CREATE TABLE oauth_clients (
        id            TEXT COLLATE "C" PRIMARY KEY,
        group_path    TEXT COLLATE "C" NOT NULL REFERENCES groups (path),
        display_name  TEXT NOT NULL,
        redirect_uris TEXT NOT NULL,
        secret_hash   TEXT,
        grant_types   TEXT NOT NULL,
        scopes        TEXT NOT NULL,
        created_at    BIGINT NOT NULL
    );
    CREATE INDEX oauth_clients_group ON oauth_clients (group_path);

    CREATE TABLE grants (
        kind       TEXT NOT NULL,
        key_hash   TEXT COLLATE "C" NOT NULL,
        user_code  TEXT COLLATE "C",
        payload    TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        state      TEXT NOT NULL,
        PRIMARY KEY (kind, key_hash)
    );
    CREATE UNIQUE INDEX grants_user_code ON grants (user_code) WHERE user_code IS NOT NULL;
    CREATE INDEX grants_expiry ON grants (expires_at);

    CREATE TABLE refresh_tokens (
        token_hash TEXT COLLATE "C" PRIMARY KEY,
        family     TEXT COLLATE "C" NOT NULL,
        tenant     TEXT COLLATE "C" NOT NULL,
        user_id    TEXT COLLATE "C",
        client     TEXT COLLATE "C" NOT NULL,
        scopes     TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        used       BOOLEAN NOT NULL,
        revoked    BOOLEAN NOT NULL
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
    CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
    "#,
    // artifacts: metadata, and the content in chunks.
    r#"
    CREATE TABLE artifacts (
        tenant     TEXT COLLATE "C" NOT NULL,
        sha256     TEXT COLLATE "C" NOT NULL,
        size       BIGINT NOT NULL,
        media_type TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (tenant, sha256)
    );

    CREATE TABLE artifact_chunks (
        tenant TEXT COLLATE "C" NOT NULL,
        sha256 TEXT COLLATE "C" NOT NULL,
        n      INTEGER NOT NULL,
        data   BYTEA NOT NULL,
        PRIMARY KEY (tenant, sha256, n)
    );
    "#,
    // Bulk jobs and the devices that got their child job.
    r#"
    CREATE TABLE bulk_jobs (
        id         UUID PRIMARY KEY,
        tenant     TEXT COLLATE "C" NOT NULL,
        group_path TEXT COLLATE "C" NOT NULL,
        state      TEXT NOT NULL,
        active     BOOLEAN NOT NULL,
        version    BIGINT NOT NULL,
        definition TEXT NOT NULL,
        progress   TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        due_at     BIGINT
    );
    CREATE INDEX bulk_jobs_group ON bulk_jobs (group_path, id);
    CREATE INDEX bulk_jobs_due ON bulk_jobs (due_at, id) WHERE active AND due_at IS NOT NULL;

    CREATE TABLE bulk_targets (
        bulk   UUID NOT NULL REFERENCES bulk_jobs (id) ON DELETE CASCADE,
        device TEXT COLLATE "C" NOT NULL,
        job    UUID,
        error  TEXT,
        at     BIGINT NOT NULL,
        PRIMARY KEY (bulk, device)
    );
    "#,
];

/// The advisory lock key for migrating `schema` (FNV-1a of a fixed label and the schema name),
/// so that hubs in different schemas of one database do not wait for one another.
fn lock_key(schema: Option<&str>) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "hub-store migrations:"
        .bytes()
        .chain(schema.unwrap_or("").bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Creates the schema if asked and brings it to [`SCHEMA_VERSION`], or refuses a database that
/// a newer hub migrated.
pub(super) async fn migrate(
    client: &mut deadpool_postgres::Client,
    schema: Option<&str>,
) -> Result<()> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(db_error)?;
    if let Some(schema) = schema {
        // Creating needs the CREATE privilege on the database: only ask for it when the schema
        // is really missing. The name was checked to be [a-z0-9_] by the caller.
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
            .await
            .map_err(db_error)?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
                .await
                .map_err(db_error)?;
        }
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .await
        .map_err(db_error)?;
    let row = tx
        .query_opt("SELECT max(version) FROM schema_version", &[])
        .await
        .map_err(db_error)?;
    let current: i32 = match row {
        Some(r) => r
            .try_get::<_, Option<i32>>(0)
            .map_err(Error::internal)?
            .unwrap_or(0),
        None => 0,
    };
    if current > SCHEMA_VERSION {
        return Err(Error::unavailable(format!(
            "database schema version {current} is newer than this hub supports \
             ({SCHEMA_VERSION}); upgrade the hub"
        )));
    }
    if current == SCHEMA_VERSION {
        return tx.commit().await.map_err(db_error);
    }
    let start = usize::try_from(current).unwrap_or(0);
    for sql in &MIGRATIONS[start..] {
        tx.batch_execute(sql).await.map_err(db_error)?;
    }
    tx.execute("DELETE FROM schema_version", &[])
        .await
        .map_err(db_error)?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)
}
