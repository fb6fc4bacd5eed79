//! The job service over the real backends: the same scenarios as on the in-memory store, on
//! SQLite and on PostgreSQL (the latter with `HUB_TEST_POSTGRES_URL`, skipped without it).

mod common;

use std::sync::Arc;

use common::{Elapsed, Hub, hub_on, scenarios};
use hub_store::postgres::{PostgresConfig, PostgresStore};
use hub_store::sqlite::{SqliteConfig, SqliteStore};

/// A hub over a fresh SQLite file; the directory lives as long as the returned guard.
async fn sqlite_hub() -> (Hub, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("jobs.db")))
        .await
        .unwrap();
    (hub_on(store.into_stores(), Arc::new(Elapsed)).await, dir)
}

/// A hub over a fresh PostgreSQL schema, or `None` (with a notice) without a test server.
async fn postgres_hub() -> Option<(Hub, PostgresStore)> {
    let Ok(url) = std::env::var("HUB_TEST_POSTGRES_URL") else {
        eprintln!("skipping: HUB_TEST_POSTGRES_URL is not set");
        return None;
    };
    let store = PostgresStore::connect(PostgresConfig {
        schema: Some(format!("hub_jobs_{}", uuid::Uuid::new_v4().simple())),
        pool_size: 8,
        ..PostgresConfig::new(url)
    })
    .await
    .expect("the test database is reachable");
    Some((
        hub_on(store.clone().into_stores(), Arc::new(Elapsed)).await,
        store,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_delivers_in_order_exactly_once_and_times_out() {
    let (h, _dir) = sqlite_hub().await;
    scenarios::a_device_receives_its_jobs_in_creation_order_one_at_a_time(&h).await;
    let (h, _dir) = sqlite_hub().await;
    scenarios::an_execution_timeout_releases_the_queue(&h).await;
    let (h, _dir) = sqlite_hub().await;
    scenarios::concurrent_claims_deliver_one_execution(Arc::new(h)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delivers_in_order_exactly_once_and_times_out() {
    let Some((h, a)) = postgres_hub().await else {
        return;
    };
    let outcome = tokio::spawn(async move {
        scenarios::a_device_receives_its_jobs_in_creation_order_one_at_a_time(&h).await;
    })
    .await;
    a.drop_schema().await.unwrap();
    outcome.unwrap();

    let (h, b) = postgres_hub().await.expect("still configured");
    let outcome = tokio::spawn(async move {
        scenarios::an_execution_timeout_releases_the_queue(&h).await;
    })
    .await;
    b.drop_schema().await.unwrap();
    outcome.unwrap();

    let (h, c) = postgres_hub().await.expect("still configured");
    let outcome = tokio::spawn(scenarios::concurrent_claims_deliver_one_execution(
        Arc::new(h),
    ))
    .await;
    c.drop_schema().await.unwrap();
    outcome.unwrap();
}
