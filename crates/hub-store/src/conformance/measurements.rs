//! Measurement checks: idempotent appends, ordered reads, aggregates and rollups, retention,
//! all-or-nothing validation.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use hub_core::{DeviceId, ErrorKind, TenantId};

use super::registry::{new_device, tree};
use super::{StoresFactory, T0, close, dev, expect_kind, group, ok, series, tenant, ts, walk};
use crate::measurements::{
    AggregateQuery, AggregateScope, AppendOutcome, Bucket, HOUR_MS, MeasurementStore, Point,
    SeriesName, SeriesPoints,
};

const MIN_MS: i64 = 60_000;

pub(super) fn batch(t: &str, d: &str, s: &str, pts: &[(i64, f64)]) -> SeriesPoints {
    SeriesPoints {
        tenant: tenant(t),
        device: dev(d),
        series: series(s),
        points: pts
            .iter()
            .map(|&(ms, value)| Point { ts: ts(ms), value })
            .collect(),
    }
}

/// The stored truth the checks keep alongside the store: first value wins.
#[derive(Default)]
struct Truth(BTreeMap<(TenantId, DeviceId, SeriesName), BTreeMap<i64, f64>>);

impl Truth {
    fn apply(&mut self, batch: &[SeriesPoints]) -> AppendOutcome {
        let mut out = AppendOutcome::default();
        for sp in batch {
            let s = self
                .0
                .entry((sp.tenant.clone(), sp.device.clone(), sp.series.clone()))
                .or_default();
            for p in &sp.points {
                match s.entry(p.ts.as_millis()) {
                    Entry::Occupied(_) => out.duplicates += 1,
                    Entry::Vacant(e) => {
                        e.insert(p.value);
                        out.inserted += 1;
                    }
                }
            }
        }
        out
    }

    fn points(
        &self,
        devices: &[(TenantId, DeviceId)],
        s: &SeriesName,
        from: i64,
        to: i64,
    ) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        for (t, d) in devices {
            if let Some(pts) = self.0.get(&(t.clone(), d.clone(), s.clone())) {
                out.extend(pts.range(from..to).map(|(&t, &v)| (t, v)));
            }
        }
        out
    }

    fn delete_before(&mut self, cut: i64) -> u64 {
        let mut n = 0;
        for pts in self.0.values_mut() {
            let keep = pts.split_off(&cut);
            n += pts.len() as u64;
            *pts = keep;
        }
        n
    }
}

async fn append_checked(
    m: &Arc<dyn MeasurementStore>,
    truth: &mut Truth,
    b: &[SeriesPoints],
    what: &str,
) {
    let want = truth.apply(b);
    let got = ok(m.append(b).await, what);
    assert_eq!(got, want, "{what}: inserted and duplicate counts");
}

/// The expected buckets, computed from scratch: group by epoch-aligned start, then take the
/// statistics of each group (ties at the first/last timestamp: smallest/largest value).
pub(super) fn expected_buckets(points: &[(i64, f64)], width: i64) -> Vec<Bucket> {
    let mut groups: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
    for &(t, v) in points {
        groups
            .entry(t.div_euclid(width) * width)
            .or_default()
            .push((t, v));
    }
    groups
        .into_iter()
        .map(|(start, pts)| {
            let count = pts.len() as u64;
            let sum: f64 = pts.iter().map(|p| p.1).sum();
            let tmin = pts.iter().map(|p| p.0).min().expect("non-empty");
            let tmax = pts.iter().map(|p| p.0).max().expect("non-empty");
            let at = |t: i64| pts.iter().filter(move |p| p.0 == t).map(|p| p.1);
            Bucket {
                start: ts(start),
                count,
                min: pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
                max: pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
                sum,
                mean: sum / count as f64,
                first: at(tmin).fold(f64::INFINITY, f64::min),
                last: at(tmax).fold(f64::NEG_INFINITY, f64::max),
            }
        })
        .collect()
}

#[track_caller]
pub(super) fn assert_buckets(got: &[Bucket], want: &[Bucket], what: &str) {
    let starts = |b: &[Bucket]| b.iter().map(|b| b.start).collect::<Vec<_>>();
    assert_eq!(
        starts(got),
        starts(want),
        "{what}: bucket starts (only buckets with points, in time order)"
    );
    for (g, w) in got.iter().zip(want) {
        let exact = |b: &Bucket| (b.count, b.min, b.max, b.first, b.last);
        assert_eq!(
            exact(g),
            exact(w),
            "{what}: bucket at {}: (count, min, max, first, last)",
            w.start
        );
        assert!(
            close(g.sum, w.sum) && close(g.mean, w.mean),
            "{what}: bucket at {}: sum {} / mean {}, expected {} / {}",
            w.start,
            g.sum,
            g.mean,
            w.sum,
            w.mean
        );
    }
}

fn device_scope(t: &str, d: &str) -> AggregateScope {
    AggregateScope::Device {
        tenant: tenant(t),
        device: dev(d),
    }
}

fn query(scope: AggregateScope, s: &str, from: i64, to: i64, bucket_ms: u64) -> AggregateQuery {
    AggregateQuery {
        scope,
        series: series(s),
        from: ts(from),
        to: ts(to),
        bucket: Duration::from_millis(bucket_ms),
    }
}

async fn all_points(
    m: &Arc<dyn MeasurementStore>,
    t: &str,
    d: &str,
    s: &str,
    from: i64,
    to: i64,
    limit: u32,
) -> Vec<(i64, f64)> {
    let (m2, t2, d2, s2) = (m.clone(), tenant(t), dev(d), series(s));
    walk(
        &format!("read_range({t}/{d}/{s}, limit {limit})"),
        limit,
        Box::new(move |p| {
            let (m, t, d, s) = (m2.clone(), t2.clone(), d2.clone(), s2.clone());
            Box::pin(async move { m.read_range(&t, &d, &s, ts(from), ts(to), p).await })
        }),
    )
    .await
    .into_iter()
    .map(|p| (p.ts.as_millis(), p.value))
    .collect()
}

/// A deterministic pseudo-random sequence (no dependency on proptest here).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(super) async fn append(factory: StoresFactory) {
    let m = factory().await.measurements;
    let a = vec![
        batch(
            "acme",
            "pump-1",
            "temp",
            &[(T0, 1.0), (T0 + 1000, 2.0), (T0 + 2000, 3.0)],
        ),
        batch("acme", "pump-1", "hum", &[(T0, 50.0)]),
        batch("acme", "pump-2", "temp", &[(T0, 7.0)]),
    ];
    assert_eq!(
        ok(m.append(&a).await, "append"),
        AppendOutcome {
            inserted: 5,
            duplicates: 0
        }
    );
    assert_eq!(
        ok(m.append(&a).await, "append of the same batch again"),
        AppendOutcome {
            inserted: 0,
            duplicates: 5
        },
        "re-uploading a batch inserts nothing"
    );
    let b = vec![batch(
        "acme",
        "pump-1",
        "temp",
        &[(T0 + 1000, 99.0), (T0 + 3000, 4.0), (T0 + 3000, 5.0)],
    )];
    assert_eq!(
        ok(m.append(&b).await, "append with old and new points"),
        AppendOutcome {
            inserted: 1,
            duplicates: 2
        },
        "a stored timestamp and a repeated timestamp within the batch are duplicates"
    );
    assert_eq!(
        all_points(&m, "acme", "pump-1", "temp", T0, T0 + 10_000, 0).await,
        [
            (T0, 1.0),
            (T0 + 1000, 2.0),
            (T0 + 2000, 3.0),
            (T0 + 3000, 4.0)
        ],
        "the first value written wins"
    );
    let c = vec![
        batch("globex", "pump-1", "temp", &[(T0, 100.0)]),
        batch("acme", "pump-3", "temp", &[(T0, 1.0)]),
        batch("acme", "pump-3", "temp", &[(T0, 2.0), (T0 + 1, 3.0)]),
        batch("acme", "pump-3", "hum", &[]),
    ];
    assert_eq!(
        ok(m.append(&c).await, "append"),
        AppendOutcome {
            inserted: 3,
            duplicates: 1
        },
        "another tenant's point is no duplicate; one series twice in a batch is"
    );
    assert_eq!(
        all_points(&m, "acme", "pump-3", "temp", T0, T0 + 10, 0).await,
        [(T0, 1.0), (T0 + 1, 3.0)],
        "the first of two entries of one series in a batch wins"
    );
    assert_eq!(
        all_points(&m, "globex", "pump-1", "temp", T0, T0 + 10, 0).await,
        [(T0, 100.0)]
    );
    assert_eq!(
        ok(m.append(&[]).await, "append of an empty batch"),
        AppendOutcome::default()
    );
    assert_eq!(
        ok(
            m.list_series(&tenant("acme"), &dev("pump-1")).await,
            "list_series"
        ),
        [series("hum"), series("temp")],
        "list_series: the device's series by name"
    );
    assert_eq!(
        ok(
            m.list_series(&tenant("acme"), &dev("pump-3")).await,
            "list_series"
        ),
        [series("temp")],
        "a series with no points is not listed"
    );
    assert!(
        ok(
            m.list_series(&tenant("globex"), &dev("pump-2")).await,
            "list_series"
        )
        .is_empty()
    );
}

pub(super) async fn read_range(factory: StoresFactory) {
    let m = factory().await.measurements;
    let mut truth = Truth::default();
    let mut rng = Lcg(7);
    let mut order: Vec<i64> = (0..50).map(|i| T0 + i * 1000).collect();
    // Shuffle deterministically, then append in three out-of-order batches.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let special = [
        0.1,
        -1e100,
        1e-300,
        1e100,
        f64::MIN_POSITIVE,
        -2.5,
        1.0 / 3.0,
    ];
    for (k, chunk) in order.chunks(17).enumerate() {
        let pts: Vec<(i64, f64)> = chunk
            .iter()
            .map(|&t| {
                (
                    t,
                    special[((t - T0) / 1000) as usize % special.len()]
                        * if k % 2 == 0 { 1.0 } else { -1.0 },
                )
            })
            .collect();
        append_checked(
            &m,
            &mut truth,
            &[batch("acme", "pump-1", "temp", &pts)],
            "append",
        )
        .await;
    }
    append_checked(
        &m,
        &mut truth,
        &[batch("acme", "pump-1", "other", &[(T0 + 5000, 1.0)])],
        "append",
    )
    .await;
    append_checked(
        &m,
        &mut truth,
        &[batch("acme", "pump-2", "temp", &[(T0 + 5000, 2.0)])],
        "append",
    )
    .await;
    append_checked(
        &m,
        &mut truth,
        &[batch("globex", "pump-1", "temp", &[(T0 + 5000, 3.0)])],
        "append",
    )
    .await;

    let who = [(tenant("acme"), dev("pump-1"))];
    for (from, to) in [
        (T0, T0 + 50_000),
        (T0 + 10_000, T0 + 20_000),
        (T0 + 10_001, T0 + 19_999),
        (T0 - 5000, T0 + 1),
        (T0 + 49_000, T0 + 100_000),
    ] {
        let want = truth.points(&who, &series("temp"), from, to);
        for limit in [1, 3, 7, 0] {
            let got = all_points(&m, "acme", "pump-1", "temp", from, to, limit).await;
            assert_eq!(
                got, want,
                "read_range([{from}, {to}), limit {limit}): the points in [from, to) in time \
                 order, exact values, each once"
            );
        }
    }
    assert_eq!(
        all_points(&m, "acme", "pump-1", "other", T0, T0 + 50_000, 2).await,
        [(T0 + 5000, 1.0)]
    );
    assert_eq!(
        all_points(&m, "acme", "pump-2", "temp", T0, T0 + 50_000, 2).await,
        [(T0 + 5000, 2.0)]
    );
    assert_eq!(
        all_points(&m, "globex", "pump-1", "temp", T0, T0 + 50_000, 2).await,
        [(T0 + 5000, 3.0)]
    );
    assert!(
        all_points(&m, "acme", "pump-9", "temp", T0, T0 + 50_000, 2)
            .await
            .is_empty()
    );
    let first = ok(
        m.read_range(
            &tenant("acme"),
            &dev("pump-1"),
            &series("temp"),
            ts(T0),
            ts(T0 + 50_000),
            crate::PageRequest::first(60),
        )
        .await,
        "read_range",
    );
    assert_eq!(
        (first.items.len(), first.next),
        (50, None),
        "a page with room to spare holds every point and has no next cursor"
    );
    for (from, to) in [(T0, T0), (T0 + 10, T0)] {
        expect_kind(
            m.read_range(
                &tenant("acme"),
                &dev("pump-1"),
                &series("temp"),
                ts(from),
                ts(to),
                crate::PageRequest::first(10),
            )
            .await,
            ErrorKind::InvalidInput,
            "read_range with an empty or reversed range",
        );
    }
}

pub(super) async fn aggregate(factory: StoresFactory) {
    let m = factory().await.measurements;
    let mut truth = Truth::default();
    let mut rng = Lcg(42);
    // 300 points over two hours, at odd times, with negative values, in three batches.
    for k in 0..3 {
        let pts: Vec<(i64, f64)> = (0..100)
            .map(|_| {
                let t = T0 + rng.below(2 * HOUR_MS as u64) as i64;
                (t, rng.below(2001) as f64 / 8.0 - 125.0)
            })
            .collect();
        append_checked(
            &m,
            &mut truth,
            &[batch("acme", "pump-1", "temp", &pts)],
            &format!("append batch {k}"),
        )
        .await;
    }
    append_checked(
        &m,
        &mut truth,
        &[batch("acme", "pump-2", "temp", &[(T0 + 10, 1e6)])],
        "append",
    )
    .await;
    append_checked(
        &m,
        &mut truth,
        &[batch("acme", "pump-1", "hum", &[(T0 + 10, 1e6)])],
        "append",
    )
    .await;
    let who = [(tenant("acme"), dev("pump-1"))];
    for (from, to, width) in [
        (T0, T0 + 2 * HOUR_MS, MIN_MS),
        (T0, T0 + 2 * HOUR_MS, 15 * MIN_MS),
        (T0 + 30_000, T0 + HOUR_MS + 45 * MIN_MS + 123, 7_000),
        (T0 + 30_000, T0 + 90 * MIN_MS, 10 * MIN_MS),
        (T0 + 1, T0 + 2 * HOUR_MS - 1, 1_000),
        (T0 - HOUR_MS, T0 + 3 * HOUR_MS, 77 * MIN_MS),
    ] {
        let got = ok(
            m.aggregate(&query(
                device_scope("acme", "pump-1"),
                "temp",
                from,
                to,
                width as u64,
            ))
            .await,
            "aggregate",
        );
        let want = expected_buckets(&truth.points(&who, &series("temp"), from, to), width);
        assert_buckets(
            &got,
            &want,
            &format!(
                "aggregate(pump-1 temp, [{from}, {to}), bucket {width} ms): epoch-aligned buckets"
            ),
        );
    }
    let none = ok(
        m.aggregate(&query(
            device_scope("acme", "pump-9"),
            "temp",
            T0,
            T0 + HOUR_MS,
            60_000,
        ))
        .await,
        "aggregate",
    );
    assert!(
        none.is_empty(),
        "a device without points has no buckets: {none:?}"
    );
}

pub(super) async fn rollups(factory: StoresFactory) {
    let stores = factory().await;
    let (reg, m) = (stores.registry, stores.measurements);
    tree(&reg, "acme", &["acme/plant-1"]).await;
    for d in ["pump-1", "pump-2", "pump-3"] {
        ok(
            reg.create_device(new_device(d, "acme/plant-1"), ts(T0))
                .await,
            "create_device",
        );
    }
    let h = |n: i64| T0 + n * HOUR_MS;
    let mut truth = Truth::default();
    let mut rng = Lcg(99);
    let devices = ["pump-1", "pump-2", "pump-3"];
    // Late hours first, then early ones: rollups are built out of order.
    for round in 0..4 {
        let mut b = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            for s in ["temp", "hum"] {
                let mut pts = Vec::new();
                for _ in 0..40 {
                    let hour = if round < 2 {
                        3 + rng.below(3) as i64
                    } else {
                        rng.below(4) as i64
                    };
                    // Coarse times (whole minutes) so devices tie and points repeat.
                    let t = h(hour) + rng.below(60) as i64 * MIN_MS;
                    let v = if hour == 1 {
                        -1000.0 - rng.below(100) as f64 // an all-negative hour
                    } else {
                        (rng.below(400) as f64 - 200.0) / 4.0 + i as f64
                    };
                    pts.push((t, v));
                }
                // Hour boundaries and the last millisecond of an hour.
                pts.push((h(2), 10.0 * (i + 1) as f64));
                pts.push((h(3) - 1, -(round as f64)));
                b.push(batch("acme", d, s, &pts));
            }
        }
        append_checked(&m, &mut truth, &b, &format!("append round {round}")).await;
    }
    // Ties across devices at one timestamp with different values.
    let tie = vec![
        batch(
            "acme",
            "pump-1",
            "temp",
            &[(h(6), 5.0), (h(6) + 30 * MIN_MS, 1.0)],
        ),
        batch(
            "acme",
            "pump-2",
            "temp",
            &[(h(6), -5.0), (h(6) + 30 * MIN_MS, 9.0)],
        ),
        batch(
            "acme",
            "pump-3",
            "temp",
            &[(h(6), 0.0), (h(6) + 30 * MIN_MS, 3.0)],
        ),
    ];
    append_checked(&m, &mut truth, &tie, "append ties").await;

    let all: Vec<(TenantId, DeviceId)> = devices.iter().map(|d| (tenant("acme"), dev(d))).collect();
    let check_all = |truth: &Truth, label: &str| {
        let mut cases = Vec::new();
        for s in ["temp", "hum"] {
            for (from, to, width) in [
                (h(0), h(8), HOUR_MS),
                (h(0), h(8), 2 * HOUR_MS),
                (h(0), h(6), 3 * HOUR_MS),
                (h(0), h(24), 24 * HOUR_MS),
                (h(-5), h(10), 5 * HOUR_MS),
                (h(1), h(4), HOUR_MS),
                (h(0) + 30 * MIN_MS, h(5) + 15 * MIN_MS, HOUR_MS),
                (h(1), h(3) - 1, HOUR_MS),
                (h(0), h(7), 30 * MIN_MS),
            ] {
                for (scope, who) in [
                    (device_scope("acme", "pump-2"), all[1..2].to_vec()),
                    (
                        AggregateScope::Subtree {
                            group: group("acme/plant-1"),
                        },
                        all.clone(),
                    ),
                ] {
                    let want = expected_buckets(&truth.points(&who, &series(s), from, to), width);
                    cases.push((
                        query(scope, s, from, to, width as u64),
                        want,
                        format!("{label}: {s} [{from}, {to}) bucket {width} ms"),
                    ));
                }
            }
        }
        cases
    };
    for (q, want, what) in check_all(&truth, "after out-of-order appends") {
        let got = ok(m.aggregate(&q).await, &what);
        assert_buckets(&got, &want, &format!("{what} (scope {:?})", q.scope));
    }
    // More points into hours that already have rollups, with duplicates carrying other values.
    let mut more = Vec::new();
    for d in devices {
        let stored: Vec<(i64, f64)> =
            truth.points(&[(tenant("acme"), dev(d))], &series("temp"), h(0), h(8));
        let mut pts: Vec<(i64, f64)> = stored
            .iter()
            .step_by(3)
            .map(|&(t, v)| (t, v + 1000.0))
            .collect();
        pts.push((h(2) + 1, 123.0));
        pts.push((h(0), -7.0));
        more.push(batch("acme", d, "temp", &pts));
    }
    append_checked(
        &m,
        &mut truth,
        &more,
        "append duplicates and new points into rolled-up hours",
    )
    .await;
    for (q, want, what) in check_all(&truth, "after appending duplicates") {
        let got = ok(m.aggregate(&q).await, &what);
        assert_buckets(&got, &want, &format!("{what} (scope {:?})", q.scope));
    }
}

pub(super) async fn subtree(factory: StoresFactory) {
    let stores = factory().await;
    let (reg, m) = (stores.registry, stores.measurements);
    tree(
        &reg,
        "acme",
        &["acme/plant-1", "acme/plant-1/line-1", "acme/plant-10"],
    )
    .await;
    tree(&reg, "globex", &["globex/site"]).await;
    for (d, g) in [
        ("pump-1", "acme/plant-1"),
        ("pump-2", "acme/plant-1/line-1"),
        ("pump-3", "acme/plant-10"),
        ("pump-1", "globex/site"),
    ] {
        ok(
            reg.create_device(new_device(d, g), ts(T0)).await,
            "create_device",
        );
    }
    let mut truth = Truth::default();
    let mut b = Vec::new();
    for (k, (t, d)) in [
        ("acme", "pump-1"),
        ("acme", "pump-2"),
        ("acme", "pump-3"),
        ("globex", "pump-1"),
        ("acme", "ghost"),
    ]
    .iter()
    .enumerate()
    {
        let pts: Vec<(i64, f64)> = (0..30)
            .map(|i| {
                (
                    T0 + i * 5 * MIN_MS + k as i64,
                    (k * 100 + i as usize) as f64,
                )
            })
            .collect();
        b.push(batch(t, d, "temp", &pts));
    }
    append_checked(&m, &mut truth, &b, "append").await;
    let acme = |d: &str| (tenant("acme"), dev(d));
    let check = async |m: &Arc<dyn MeasurementStore>,
                       truth: &Truth,
                       root: &str,
                       who: Vec<(TenantId, DeviceId)>,
                       label: &str| {
        for width in [HOUR_MS, 10 * MIN_MS] {
            let q = query(
                AggregateScope::Subtree { group: group(root) },
                "temp",
                T0,
                T0 + 3 * HOUR_MS,
                width as u64,
            );
            let got = ok(m.aggregate(&q).await, "aggregate(subtree)");
            let want = expected_buckets(
                &truth.points(&who, &series("temp"), T0, T0 + 3 * HOUR_MS),
                width,
            );
            assert_buckets(
                &got,
                &want,
                &format!("{label}: aggregate over subtree {root}, bucket {width} ms"),
            );
        }
    };
    check(
        &m,
        &truth,
        "acme/plant-1",
        vec![acme("pump-1"), acme("pump-2")],
        "devices in acme/plant-1 (never acme/plant-10, globex or unregistered devices)",
    )
    .await;
    check(
        &m,
        &truth,
        "acme",
        vec![acme("pump-1"), acme("pump-2"), acme("pump-3")],
        "devices of tenant acme",
    )
    .await;
    check(
        &m,
        &truth,
        "globex",
        vec![(tenant("globex"), dev("pump-1"))],
        "devices of tenant globex",
    )
    .await;
    ok(
        reg.move_device(
            &tenant("acme"),
            &dev("pump-2"),
            &group("acme/plant-10"),
            ts(T0 + 1),
        )
        .await,
        "move_device",
    );
    check(
        &m,
        &truth,
        "acme/plant-1",
        vec![acme("pump-1")],
        "after pump-2 moved out",
    )
    .await;
    check(
        &m,
        &truth,
        "acme/plant-10",
        vec![acme("pump-2"), acme("pump-3")],
        "after pump-2 moved in",
    )
    .await;
    ok(
        reg.delete_device(&tenant("acme"), &dev("pump-1")).await,
        "delete_device",
    );
    check(
        &m,
        &truth,
        "acme/plant-1",
        vec![],
        "after pump-1 was deleted",
    )
    .await;
    check(
        &m,
        &truth,
        "acme",
        vec![acme("pump-2"), acme("pump-3")],
        "after pump-1 was deleted",
    )
    .await;
}

pub(super) async fn delete_before(factory: StoresFactory) {
    let m = factory().await.measurements;
    let h = |n: i64| T0 + n * HOUR_MS;
    let mut truth = Truth::default();
    let mut b = Vec::new();
    for (t, d, s) in [
        ("acme", "pump-1", "temp"),
        ("acme", "pump-1", "hum"),
        ("globex", "pump-7", "temp"),
    ] {
        let pts: Vec<(i64, f64)> = (0..5 * 6)
            .map(|i| (h(0) + i * 10 * MIN_MS, i as f64))
            .collect();
        b.push(batch(t, d, s, &pts));
    }
    b.push(batch(
        "acme",
        "pump-2",
        "temp",
        &[(h(0) + 5, 1.0), (h(1) + 5, 2.0)],
    ));
    append_checked(&m, &mut truth, &b, "append").await;

    assert_eq!(
        ok(m.delete_before(ts(h(0))).await, "delete_before"),
        0,
        "nothing before the first hour"
    );
    let want = truth.delete_before(h(2));
    assert_eq!(want, 3 * 12 + 2);
    assert_eq!(
        ok(
            m.delete_before(ts(h(2) + 30 * MIN_MS)).await,
            "delete_before(+2h30)"
        ),
        want,
        "delete_before rounds down to the hour and counts every tenant's deleted points"
    );
    assert_eq!(
        ok(
            m.delete_before(ts(h(2) + 59 * MIN_MS)).await,
            "delete_before again"
        ),
        0,
        "nothing more before the same hour"
    );
    assert_eq!(
        all_points(&m, "acme", "pump-1", "temp", h(0), h(9), 0).await,
        truth.points(
            &[(tenant("acme"), dev("pump-1"))],
            &series("temp"),
            h(0),
            h(9)
        ),
        "the points from the cut-off hour on remain"
    );
    assert_eq!(
        all_points(&m, "acme", "pump-1", "temp", h(2), h(2) + 1, 0).await,
        [(h(2), 12.0)],
        "a point exactly at the cut-off stays"
    );
    assert!(
        ok(
            m.list_series(&tenant("acme"), &dev("pump-2")).await,
            "list_series"
        )
        .is_empty(),
        "a series whose points are all deleted is no longer listed"
    );
    for (t, d, s) in [("acme", "pump-1", "temp"), ("globex", "pump-7", "temp")] {
        for width in [HOUR_MS, 20 * MIN_MS, 24 * HOUR_MS] {
            let got = ok(
                m.aggregate(&query(device_scope(t, d), s, h(0), h(24), width as u64))
                    .await,
                "aggregate",
            );
            let want = expected_buckets(
                &truth.points(&[(tenant(t), dev(d))], &series(s), h(0), h(24)),
                width,
            );
            assert_buckets(
                &got,
                &want,
                &format!(
                    "aggregate {t}/{d}/{s} bucket {width} ms after delete_before (rollups follow)"
                ),
            );
        }
    }
    // Re-appending a deleted point stores it again.
    let again = vec![batch("acme", "pump-1", "temp", &[(h(0), 42.0)])];
    append_checked(&m, &mut truth, &again, "append of a deleted point").await;
    let got = ok(
        m.aggregate(&query(
            device_scope("acme", "pump-1"),
            "temp",
            h(0),
            h(1),
            HOUR_MS as u64,
        ))
        .await,
        "aggregate",
    );
    assert_buckets(
        &got,
        &expected_buckets(&[(h(0), 42.0)], HOUR_MS),
        "the hour of a re-appended point",
    );
    let want = truth.delete_before(h(5));
    assert_eq!(
        ok(m.delete_before(ts(h(5))).await, "delete_before(+5h)"),
        want,
        "delete_before at an exact hour"
    );
    for d in ["pump-1", "pump-2"] {
        assert!(
            ok(m.list_series(&tenant("acme"), &dev(d)).await, "list_series").is_empty(),
            "everything of {d} is deleted"
        );
    }
}

pub(super) async fn invalid_input(factory: StoresFactory) {
    let m = factory().await.measurements;
    let limits = super::expected_limits();
    for bad in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1.000_001e100,
        -f64::MAX,
    ] {
        let b = vec![
            batch("acme", "pump-1", "temp", &[(T0, 1.0), (T0 + 1, 2.0)]),
            batch(
                "acme",
                "pump-2",
                "temp",
                &[(T0, 1.0), (T0 + 1, bad), (T0 + 2, 3.0)],
            ),
        ];
        expect_kind(
            m.append(&b).await,
            ErrorKind::InvalidInput,
            &format!("append with a {bad} value"),
        );
    }
    let n = limits.max_points_per_append as i64;
    let big = vec![
        batch("acme", "pump-1", "temp", &[(T0, 1.0)]),
        SeriesPoints {
            tenant: tenant("acme"),
            device: dev("pump-2"),
            series: series("temp"),
            points: (0..n)
                .map(|i| Point {
                    ts: ts(T0 + i),
                    value: 1.0,
                })
                .collect(),
        },
    ];
    expect_kind(
        m.append(&big).await,
        ErrorKind::TooLarge,
        "append of max_points_per_append + 1 points",
    );
    for d in ["pump-1", "pump-2"] {
        assert!(
            ok(m.list_series(&tenant("acme"), &dev(d)).await, "list_series").is_empty(),
            "a refused append stores nothing (all or nothing), yet {d} has series"
        );
        assert!(
            all_points(&m, "acme", d, "temp", T0, T0 + n + 10, 0)
                .await
                .is_empty(),
            "a refused append stores nothing"
        );
    }
    let q = |from: i64, to: i64, bucket: u64| {
        query(device_scope("acme", "pump-1"), "temp", from, to, bucket)
    };
    for (what, bad) in [
        ("an empty range", q(T0, T0, 1000)),
        ("a reversed range", q(T0 + 1000, T0, 1000)),
        ("a zero bucket", q(T0, T0 + 1000, 0)),
        (
            "too many buckets",
            q(T0, T0 + 2 * i64::from(limits.max_buckets), 1),
        ),
    ] {
        expect_kind(
            m.aggregate(&bad).await,
            ErrorKind::InvalidInput,
            &format!("aggregate with {what}"),
        );
    }
    let mut sub_ms = q(T0, T0 + 1000, 0);
    sub_ms.bucket = Duration::from_micros(500);
    expect_kind(
        m.aggregate(&sub_ms).await,
        ErrorKind::InvalidInput,
        "aggregate with a bucket under 1 ms",
    );
    // The store still works and is empty.
    let good = vec![batch("acme", "pump-1", "temp", &[(T0, 1.0)])];
    assert_eq!(
        ok(m.append(&good).await, "append"),
        AppendOutcome {
            inserted: 1,
            duplicates: 0
        },
        "after refused appends the first valid one inserts"
    );
}
