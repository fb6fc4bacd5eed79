//! Device access-key authentication: what every MQTT CONNECT and every device HTTP request pays.
//! A cache hit is a hash and a map look-up; a miss reads the key and the device from SQLite.
//!
//! `cargo bench --bench access_keys`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hub_auth::access_keys::{AccessKeyConfig, AccessKeys};
use hub_core::{SystemClock, TenantId};
use hub_store::NewDevice;
use hub_store::sqlite::{SqliteConfig, SqliteStore};

const DEVICES: usize = 1000;

fn bench_access_keys(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (stores, keys_text) = rt.block_on(async {
        let store = SqliteStore::open(SqliteConfig::new(dir.path().join("bench.db")))
            .await
            .expect("sqlite opens");
        let stores = store.into_stores();
        let tenant: TenantId = "acme".parse().unwrap();
        let now = hub_core::Clock::now(&SystemClock);
        stores
            .registry
            .create_tenant(&tenant, "Acme", now)
            .await
            .unwrap();
        let issuer = AccessKeys::new(&stores, Arc::new(SystemClock), AccessKeyConfig::default());
        let mut keys = Vec::with_capacity(DEVICES);
        for i in 0..DEVICES {
            let id: hub_core::DeviceId = format!("dev-{i}").parse().unwrap();
            stores
                .registry
                .create_device(
                    NewDevice {
                        id: id.clone(),
                        group: "acme".parse().unwrap(),
                        display_name: String::new(),
                        attributes: serde_json::json!({}),
                    },
                    now,
                )
                .await
                .unwrap();
            let k = issuer.issue(&tenant, &id).await.unwrap();
            keys.push(k.access_key.expose().to_owned());
        }
        (stores, keys)
    });

    let cached = AccessKeys::new(&stores, Arc::new(SystemClock), AccessKeyConfig::default());
    let uncached = AccessKeys::new(
        &stores,
        Arc::new(SystemClock),
        AccessKeyConfig {
            cache_ttl: Duration::ZERO,
            ..AccessKeyConfig::default()
        },
    );
    let mut g = c.benchmark_group("access_key_auth");
    g.throughput(Throughput::Elements(1));
    for (label, keys) in [("cache_hit", &cached), ("cache_miss_sqlite", &uncached)] {
        let mut i = 0usize;
        g.bench_function(label, |b| {
            b.iter(|| {
                i = (i + 1) % DEVICES;
                rt.block_on(keys.authenticate_key(None, &keys_text[i]))
                    .expect("authenticates")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_access_keys);
criterion_main!(benches);
