//! Benchmarks of the IoT hub SDK. Run them all with `cargo bench`; the figures and the commands
//! that produced them are in `BENCHMARKS.md`.
//!
//! This library holds what the bench binaries share: opening each storage backend the same way,
//! and the density bench's device credentials ([`density`]).

// A benchmark reports on standard output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

#[path = "density/keys.rs"]
pub mod density;

use hub_store::postgres::{PostgresConfig, PostgresStore};
use hub_store::sqlite::{SqliteConfig, SqliteStore};
use hub_store::{Durability, Stores};

/// A backend under test, with what keeps it alive.
#[derive(Debug)]
pub struct Backend {
    /// A label for the report, e.g. `sqlite/process-crash`.
    pub label: String,
    /// The stores.
    pub stores: Stores,
    /// The temporary directory of a file-backed store, removed on drop.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL store, to drop its schema afterwards.
    postgres: Option<PostgresStore>,
}

/// The backends to measure: SQLite at both durability levels, and PostgreSQL when
/// `HUB_BENCH_POSTGRES_URL` names a server (it gets a fresh schema).
pub async fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for (label, durability) in [
        ("sqlite/process-crash", Durability::ProcessCrash),
        ("sqlite/power-loss", Durability::PowerLoss),
    ] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(SqliteConfig {
            durability,
            ..SqliteConfig::new(dir.path().join("bench.db"))
        })
        .await
        .expect("SQLite opens");
        out.push(Backend {
            label: label.into(),
            stores: store.into_stores(),
            _dir: Some(dir),
            postgres: None,
        });
    }
    if let Ok(url) = std::env::var("HUB_BENCH_POSTGRES_URL") {
        let schema = format!("hub_bench_{}", std::process::id());
        let store = PostgresStore::connect(PostgresConfig {
            schema: Some(schema),
            pool_size: 32,
            ..PostgresConfig::new(url)
        })
        .await
        .expect("PostgreSQL is reachable");
        out.push(Backend {
            label: "postgres".into(),
            stores: store.clone().into_stores(),
            _dir: None,
            postgres: Some(store),
        });
    }
    out
}

impl Backend {
    /// Removes what the run stored (PostgreSQL keeps its data in a schema of its own).
    pub async fn cleanup(self) {
        if let Some(store) = self.postgres {
            store
                .drop_schema()
                .await
                .expect("the bench schema is dropped");
        }
    }
}

/// Prints one result line: what, how many, how long, the rate.
pub fn report(backend: &str, what: &str, count: u64, elapsed: Duration) {
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "{backend:<24} {what:<40} {count:>10} in {:>8.3} s = {rate:>12.0}/s",
        elapsed.as_secs_f64()
    );
}

/// Times an async block.
pub async fn timed<F: std::future::Future<Output = u64>>(f: F) -> (u64, Duration) {
    let start = Instant::now();
    let n = f.await;
    (n, start.elapsed())
}
