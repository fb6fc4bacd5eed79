//! Measurement ingest and aggregation of the storage backends.
//!
//! - ingest: 4 writers append batches of 1,000 points (one series per device, 1 s apart);
//! - aggregate: one series of 1,000,000 points into hourly buckets (answered from the hourly
//!   rollups) and, for comparison, into 59-minute buckets (answered from the points).
//!
//! `cargo bench --bench ingest` (set `HUB_BENCH_POSTGRES_URL` to include PostgreSQL).

// A benchmark reports on standard output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use hub_core::Timestamp;
use hub_store::{
    AggregateQuery, AggregateScope, MeasurementStore, Point, SeriesName, SeriesPoints,
};

const WRITERS: u32 = 4;
const BATCH: i64 = 1000;
const POINTS_PER_WRITER: i64 = 250_000;
const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

async fn ingest(m: Arc<dyn MeasurementStore>) -> u64 {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let device: hub_core::DeviceId = format!("dev-{w}").parse().unwrap();
            for b in 0..POINTS_PER_WRITER / BATCH {
                let points = (0..BATCH)
                    .map(|i| Point {
                        ts: Timestamp::from_millis(START_MS + (b * BATCH + i) * 1000).unwrap(),
                        value: ((b * BATCH + i) % 97) as f64 * 0.5,
                    })
                    .collect();
                let out = m
                    .append(&[SeriesPoints {
                        tenant: "acme".parse().unwrap(),
                        device: device.clone(),
                        series: SeriesName::new("temperature").unwrap(),
                        points,
                    }])
                    .await
                    .unwrap();
                assert_eq!(out.inserted, BATCH as u64);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (i64::from(WRITERS) * POINTS_PER_WRITER) as u64
}

async fn aggregate(m: &dyn MeasurementStore, bucket: Duration) -> u64 {
    let q = AggregateQuery {
        scope: AggregateScope::Device {
            tenant: "acme".parse().unwrap(),
            device: "agg".parse().unwrap(),
        },
        series: SeriesName::new("temperature").unwrap(),
        from: Timestamp::from_millis(START_MS).unwrap(),
        to: Timestamp::from_millis(START_MS + 1_000_000 * 1000).unwrap(),
        bucket,
    };
    let buckets = m.aggregate(&q).await.unwrap();
    let counted: u64 = buckets.iter().map(|b| b.count).sum();
    assert_eq!(counted, 1_000_000);
    counted
}

#[tokio::main]
async fn main() {
    for backend in hub_benches::backends().await {
        let m = backend.stores.measurements.clone();
        let (n, elapsed) = hub_benches::timed(ingest(m.clone())).await;
        hub_benches::report(
            &backend.label,
            "points ingested (batches of 1,000)",
            n,
            elapsed,
        );

        // One series of 1,000,000 one-second points for the aggregation figures.
        for b in 0..1000i64 {
            let points = (0..1000)
                .map(|i| Point {
                    ts: Timestamp::from_millis(START_MS + (b * 1000 + i) * 1000).unwrap(),
                    value: (i % 89) as f64,
                })
                .collect();
            m.append(&[SeriesPoints {
                tenant: "acme".parse().unwrap(),
                device: "agg".parse().unwrap(),
                series: SeriesName::new("temperature").unwrap(),
                points,
            }])
            .await
            .unwrap();
        }
        for (label, bucket) in [
            (
                "aggregate 1M points, hourly (rollups)",
                Duration::from_secs(3600),
            ),
            (
                "aggregate 1M points, 59-min (raw)",
                Duration::from_secs(59 * 60),
            ),
        ] {
            let (_, elapsed) = hub_benches::timed(aggregate(m.as_ref(), bucket)).await;
            println!(
                "{:<24} {label:<40} {:>10.1} ms",
                backend.label,
                elapsed.as_secs_f64() * 1000.0
            );
        }
        backend.cleanup().await;
    }
}
