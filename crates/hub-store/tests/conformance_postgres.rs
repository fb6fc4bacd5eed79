//! The conformance kit against PostgreSQL: every check gets its own schema, dropped at the end.
//! Needs `HUB_TEST_POSTGRES_URL`; skipped with a notice without it.

use std::sync::{Arc, Mutex};

use hub_store::conformance::{StoresFactory, run_all};
use hub_store::postgres::{PostgresConfig, PostgresStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backend_conforms() {
    let Ok(url) = std::env::var("HUB_TEST_POSTGRES_URL") else {
        eprintln!("skipping: HUB_TEST_POSTGRES_URL is not set");
        return;
    };
    // Schemas, not stores, are kept: a store's connections close when its check drops it, so
    // the model check's many fresh stores never exhaust the server's connection slots.
    let opened: Arc<Mutex<Vec<String>>> = Arc::default();
    let factory: StoresFactory = Arc::new({
        let (opened, url) = (opened.clone(), url.clone());
        move || {
            let (url, opened) = (url.clone(), opened.clone());
            Box::pin(async move {
                let schema = format!("hub_conf_{}", uuid::Uuid::new_v4().simple());
                opened.lock().unwrap().push(schema.clone());
                let store = PostgresStore::connect(PostgresConfig {
                    schema: Some(schema),
                    pool_size: 4,
                    ..PostgresConfig::new(url)
                })
                .await
                .expect("the test database is reachable");
                store.into_stores()
            })
        }
    });
    let outcome = tokio::spawn(run_all(factory)).await;
    let schemas: Vec<String> = std::mem::take(&mut *opened.lock().unwrap());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("the test database is reachable");
    tokio::spawn(connection);
    for schema in schemas {
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .expect("the schema is dropped");
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
