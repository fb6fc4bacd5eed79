//! The PostgreSQL backend: several hub nodes sharing one database.
//!
//! Every write is one atomic statement or one transaction, so nodes never need to coordinate
//! outside the database:
//!
//! - a job's per-device `seq` comes from a `job_queues` row bumped with `UPDATE ... RETURNING`
//!   inside the job's insert transaction (the row lock orders concurrent creators);
//! - idempotency keys are unique per tenant through a unique index, and a losing racer reads
//!   the winner's job;
//! - job and device updates are compare-and-set statements on the version;
//! - exclusive-control leases are taken with one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`;
//! - measurement points and their hourly rollups are written by one statement per append;
//! - audit ids come from an identity column; a configuration document's version is computed as
//!   `max(version) + 1` in the inserting statement, and the primary key on (tenant, device,
//!   kind, version) makes one of two racing writers fail: a compare-and-set loser answers
//!   `PreconditionFailed`, an unconditional writer retries.
//!
//! Timestamps are stored as `BIGINT` milliseconds, JSON documents as the exact `TEXT` that
//! `serde_json` produced (so they read back exactly as written), job ids as `UUID`, and text
//! keys with the `"C"` collation so listings sort by bytes, like the in-memory reference.
//!
//! Schema migrations are a versioned list compiled into the hub and applied when the store is
//! opened, under a transaction-scoped advisory lock so that nodes starting together do not race.
//! A database migrated by a newer hub is refused.
//!
//! Differences from the in-memory reference, both forced by PostgreSQL:
//!
//! - Aggregate sums (and so means) are added up in a different order (per hour in the rollups,
//!   in scan order for raw points), so they may differ from the reference in the last bits;
//!   counts, minima, maxima, first and last values are exact.
//! - PostgreSQL text cannot hold U+0000: a display name, idempotency key or other plain string
//!   containing it is refused as [`InvalidInput`](ErrorKind::InvalidInput) and nothing is
//!   stored. (JSON documents are unaffected: their text escapes it.)

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use hub_core::{Error, ErrorKind, GroupPath, Result};

use crate::{StoreLimits, Stores, bad_cursor};

mod artifacts;
mod audit;
mod bulk;
mod config;
mod grants;
mod jobs;
mod measurements;
mod registry;
mod schema;
mod users;

pub use schema::SCHEMA_VERSION;

/// How to reach the database.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// A libpq-style connection URL or key/value string
    /// (`postgres://hub@db.example/hub`); TLS is not used, so run the database on a trusted
    /// network or behind a TLS-terminating proxy.
    pub url: String,
    /// The schema to keep the tables in, created if missing; `None` uses the server's default
    /// search path (usually `public`). One database can host several hubs, or test runs, side by
    /// side this way. Must be 1 to 63 bytes of `a-z 0-9 _`, not starting with a digit or `pg_`
    /// (it is spliced into SQL and connection options, so the alphabet rules out injection).
    pub schema: Option<String>,
    /// The most connections this node keeps open (at least 1; 0 counts as 1). Concurrent store
    /// calls beyond it wait for a free connection.
    pub pool_size: usize,
    /// The limits the store enforces, as for every backend.
    pub limits: StoreLimits,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: show only that it is set.
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("limits", &self.limits)
            .finish()
    }
}

impl PostgresConfig {
    /// A configuration with the default schema, a pool of 16 connections and default limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            pool_size: 16,
            limits: StoreLimits::default(),
        }
    }
}

/// The PostgreSQL backend. Clones share the same connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    schema: Option<Arc<str>>,
    limits: StoreLimits,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// How long a caller waits for a free pooled connection, or for a new one to open, before the
/// call fails as [`Unavailable`](ErrorKind::Unavailable).
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

impl PostgresStore {
    /// Opens a pool, creates the schema if asked and missing, and brings the tables up to
    /// [`SCHEMA_VERSION`].
    ///
    /// Errors: [`InvalidInput`](ErrorKind::InvalidInput) for a malformed URL or schema name,
    /// [`Unavailable`](ErrorKind::Unavailable) when the database cannot be reached or was
    /// migrated by a newer hub.
    pub async fn connect(config: PostgresConfig) -> Result<PostgresStore> {
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| Error::invalid_input("the PostgreSQL URL is not valid").with_source(e))?;
        if let Some(schema) = &config.schema {
            check_schema_name(schema)?;
            pg.options(format!("-c search_path={schema}"));
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| Error::internal(e.to_string()))?;
        let store = PostgresStore {
            pool,
            schema: config.schema.as_deref().map(Arc::from),
            limits: config.limits,
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client, store.schema.as_deref()).await?;
        Ok(store)
    }

    /// The same store behind every trait.
    pub fn into_stores(self) -> Stores {
        let me = Arc::new(self);
        Stores {
            registry: me.clone(),
            credentials: me.clone(),
            jobs: me.clone(),
            measurements: me.clone(),
            audit: me.clone(),
            config: me.clone(),
            artifacts: me.clone(),
            bulk: me,
        }
    }

    /// The schema this store keeps its tables in, if one was configured.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Drops the configured schema with everything in it, and closes the pool. For tests and
    /// tear-down scripts that gave each run its own schema; refused without a configured schema,
    /// or with `public`, so that it can never drop the default schema.
    pub async fn drop_schema(self) -> Result<()> {
        let schema = droppable_schema(self.schema.as_deref())?.to_owned();
        let client = self.client().await?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .map_err(db_error)?;
        drop(client);
        self.pool.close();
        Ok(())
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| {
            Error::unavailable("the PostgreSQL database is not reachable").with_source(e)
        })
    }
}

/// The schema [`PostgresStore::drop_schema`] may drop: a configured one other than `public`.
fn droppable_schema(schema: Option<&str>) -> Result<&str> {
    match schema {
        Some(s) if s != "public" => Ok(s),
        _ => Err(Error::invalid_input(
            "drop_schema needs a store opened with its own schema (not `public`)",
        )),
    }
}

/// Checks a schema name so that it can be spliced into SQL and connection options safely.
fn check_schema_name(schema: &str) -> Result<()> {
    let b = schema.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && !b[0].is_ascii_digit()
        && !schema.starts_with("pg_")
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(
            "the PostgreSQL schema name must be 1 to 63 bytes of a-z 0-9 _, not starting with a \
             digit or `pg_`",
        ))
    }
}

/// Maps a database error onto the hub's error kinds: unique violations are conflicts, lost
/// connections and serialization failures are retryable, text the database cannot store is
/// bad input, the rest is internal.
pub(crate) fn db_error(e: tokio_postgres::Error) -> Error {
    let kind = match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => ErrorKind::Conflict,
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS
                || c.code().starts_with("08") =>
        {
            ErrorKind::Unavailable
        }
        Some(c)
            if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                || *c == SqlState::UNTRANSLATABLE_CHARACTER =>
        {
            ErrorKind::InvalidInput
        }
        Some(_) => ErrorKind::Internal,
        // No SQLSTATE: the connection broke (closed, I/O) or the client refused the call.
        None if e.is_closed() || io_source(&e) => ErrorKind::Unavailable,
        None => ErrorKind::Internal,
    };
    match kind {
        ErrorKind::Conflict => Error::conflict("the record already exists").with_source(e),
        ErrorKind::Unavailable => {
            Error::unavailable("the PostgreSQL database is not available").with_source(e)
        }
        ErrorKind::InvalidInput => {
            Error::invalid_input("a text value contains a character that cannot be stored")
                .with_source(e)
        }
        _ => Error::internal(e),
    }
}

/// Whether an I/O error lies behind `e` (a lost or refused connection).
fn io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether `e` is a foreign-key violation (a referenced group vanished under a racing write).
pub(crate) fn is_foreign_key_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

/// The error for a stored value this backend cannot read back.
pub(crate) fn corrupt(what: &str) -> Error {
    Error::internal(format!("the database holds an invalid {what}"))
}

/// Runs a statement through the connection's prepared-statement cache.
pub(crate) async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query(&stmt, params).await.map_err(db_error)
}

/// Like [`query`], for at most one row.
pub(crate) async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query_opt(&stmt, params).await.map_err(db_error)
}

/// Like [`query`], returning the number of rows affected.
pub(crate) async fn execute<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(db_error)?;
    c.execute(&stmt, params).await.map_err(db_error)
}

/// Reads a column, turning a type mismatch into an internal error instead of a panic.
pub(crate) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: &str) -> Result<T> {
    row.try_get(idx).map_err(Error::internal)
}

/// The `LIKE` pattern matching every path strictly below `root`, wildcards escaped.
pub(crate) fn below_pattern(root: &GroupPath) -> String {
    let mut p = String::with_capacity(root.as_str().len() + 2);
    for c in root.as_str().chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str("/%");
    p
}

/// Parses a page cursor this backend produced.
pub(crate) fn parse_cursor<T: std::str::FromStr>(after: &Option<String>) -> Result<Option<T>> {
    after
        .as_deref()
        .map(|c| c.parse().map_err(|_| bad_cursor()))
        .transpose()
}

/// A `u64` counter as stored (`BIGINT`); counters never come near `i64::MAX`.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored `BIGINT` counter back as `u64`.
pub(crate) fn to_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt("counter"))
}

/// A stored JSON text back as a value.
pub(crate) fn parse_json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|_| corrupt("JSON document"))
}

/// A value as the JSON text to store.
pub(crate) fn json_text(value: &serde_json::Value) -> Result<String> {
    serde_json::to_string(value).map_err(Error::internal)
}

/// A stored millisecond count back as a timestamp.
pub(crate) fn ts(v: i64) -> Result<hub_core::Timestamp> {
    hub_core::Timestamp::from_millis(v).map_err(|_| corrupt("timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(check_schema_name("hub_test_01").is_ok());
        for bad in [
            "",
            "1abc",
            "a-b",
            "A",
            "a;drop",
            "a\"b",
            "pg_x",
            &"a".repeat(64),
        ] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_own_schemas_may_be_dropped() {
        assert_eq!(
            droppable_schema(Some("hub_test_1")).ok(),
            Some("hub_test_1")
        );
        assert!(droppable_schema(Some("public")).is_err());
        assert!(droppable_schema(None).is_err());
    }

    #[test]
    fn like_patterns_escape_wildcards() -> Result<()> {
        let g: GroupPath = "acme/plant-1".parse()?;
        assert_eq!(below_pattern(&g), "acme/plant-1/%");
        Ok(())
    }
}
