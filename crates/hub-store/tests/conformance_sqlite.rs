//! The conformance kit against the SQLite backend: every check gets a fresh database file.

use std::sync::Arc;

use hub_store::conformance::{StoresFactory, run_all};
use hub_store::sqlite::{SqliteConfig, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backend_conforms() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let factory: StoresFactory = Arc::new(move || {
        let dir = dir.clone();
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            SqliteStore::open(SqliteConfig::new(dir.path().join(format!("check-{n}.db"))))
                .await
                .expect("SQLite opens")
                .into_stores()
        })
    });
    run_all(factory).await;
}
