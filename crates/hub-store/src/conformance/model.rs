//! The model check: random operation sequences applied to the backend and to a fresh
//! [`MemoryStore`], comparing every answer.
//!
//! Cases are generated with proptest strategies from a fixed seed, so every run (and every
//! backend) sees the same 64 sequences; there is no shrinking, but a failure prints the case
//! number and the operations up to the failing one.

use std::collections::HashMap;
use std::fmt::Debug;

use hub_core::{
    BulkJobId, DeviceId, GroupPath, JobId, JobState, Result, Role, TenantId, Timestamp,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;

use super::measurements::{assert_buckets, batch};
use super::{StoresFactory, T0, job_id, ts};
use crate::credentials::AccessKeyRecord;
use crate::jobs::{JobFilter, JobRecord, NewJob};
use crate::measurements::{AggregateQuery, AggregateScope, Bucket, HOUR_MS, Point};
use crate::memory::MemoryStore;
use crate::registry::{DevicePatch, Lifecycle, NewDevice, NewUser};
use crate::{Page, PageRequest, StoreLimits, Stores};

/// How many generated sequences.
const CASES: u32 = 64;
/// Random operations per sequence (after a short fixed prelude).
const OPS: usize = 48;

const TENANTS: [&str; 2] = ["a", "b"];
/// Groups below a tenant's root ("" is the root).
const GROUPS: [&str; 5] = ["", "g1", "g1/x", "g10", "g1-y"];
const DEVICES: [&str; 3] = ["d1", "d2", "D3"];
const USERS: [&str; 3] = ["u1", "U2", "u1.x"];
const LANES: [&str; 2] = ["default", "l2"];
const SERIES: [&str; 2] = ["s1", "s2"];
const HOLDERS: [&str; 2] = ["alice", "bob"];
const STATES: [JobState; 6] = [
    JobState::Queued,
    JobState::Delivered,
    JobState::InProgress,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Canceled,
];
const LIFECYCLES: [Lifecycle; 4] = [
    Lifecycle::Provisioned,
    Lifecycle::Active,
    Lifecycle::Suspended,
    Lifecycle::Decommissioned,
];
/// Aggregate bucket widths, ms: hour multiples (rollups) and others.
const BUCKETS: [u64; 6] = [60_000, 900_000, 3_600_000, 7_200_000, 86_400_000, 7_000];

/// One series of an append: tenant, device, series, "poison the last point with NaN" when 7
/// (of 0..16),
/// and the points (time step, one millisecond later, value in halves).
type AppendEntry = (u8, u8, u8, u8, Vec<(u8, bool, i8)>);

/// One operation; fields index the small alphabets above.
#[derive(Debug, Clone)]
enum Op {
    CreateTenant(u8),
    CreateGroup(u8, u8),
    DeleteGroup(u8, u8),
    CreateDevice {
        t: u8,
        g: u8,
        d: u8,
        attrs: u8,
    },
    UpdateDevice {
        t: u8,
        d: u8,
        lifecycle: Option<u8>,
        attrs: Option<u8>,
        expected: Option<u64>,
    },
    MoveDevice {
        t: u8,
        d: u8,
        to_t: u8,
        to_g: u8,
    },
    DeleteDevice(u8, u8),
    GetDevice(u8, u8),
    ListDevices {
        t: u8,
        g: u8,
        lifecycle: Option<u8>,
        limit: u32,
    },
    MoveGroup {
        t: u8,
        from: u8,
        to: u8,
    },
    CreateUser {
        t: u8,
        g: u8,
        u: u8,
    },
    ListUsers {
        t: u8,
        g: u8,
        limit: u32,
    },
    ListGroups {
        t: u8,
        g: u8,
        limit: u32,
    },
    CreateJob {
        t: u8,
        gt: u8,
        g: u8,
        d: u8,
        lane: u8,
        key: Option<u8>,
        state: u8,
        due: Option<u8>,
        bulk: bool,
    },
    UpdateJob {
        job: u8,
        state: u8,
        due: Option<u8>,
        foreign: bool,
        stale: Option<u64>,
        result: bool,
    },
    GetJob {
        job: u8,
        t: u8,
    },
    QueueHead {
        t: u8,
        d: u8,
        lane: u8,
        n: u32,
    },
    DueJobs {
        at: u8,
        limit: u32,
    },
    ListJobs {
        t: u8,
        g: u8,
        d: Option<u8>,
        states: Vec<u8>,
        bulk: bool,
        limit: u32,
    },
    Acquire {
        t: u8,
        d: u8,
        holder: u8,
        until: u8,
    },
    Release {
        t: u8,
        d: u8,
        holder: u8,
    },
    GetControl {
        t: u8,
        d: u8,
    },
    PutKey {
        prefix: u8,
        t: u8,
        d: u8,
    },
    RevokeKey(u8),
    SetExpiry(u8, Option<u8>),
    ListKeys(u8, u8),
    FindKey(u8),
    Append(Vec<AppendEntry>),
    ReadRange {
        t: u8,
        d: u8,
        s: u8,
        from: u8,
        to: u8,
        limit: u32,
    },
    Aggregate {
        subtree: bool,
        t: u8,
        x: u8,
        s: u8,
        from: u8,
        to: u8,
        bucket: u8,
    },
    DeleteBefore(u8),
    ListSeries(u8, u8),
}

fn registry_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..2u8).prop_map(Op::CreateTenant),
        3 => (0..2u8, 1..5u8).prop_map(|(t, g)| Op::CreateGroup(t, g)),
        1 => (0..2u8, 0..5u8).prop_map(|(t, g)| Op::DeleteGroup(t, g)),
        3 => (0..2u8, 0..5u8, 0..3u8, 0..4u8).prop_map(|(t, g, d, attrs)| Op::CreateDevice { t, g, d, attrs }),
        2 => (0..2u8, 0..3u8, proptest::option::of(0..4u8), proptest::option::of(0..4u8), proptest::option::of(1..4u64))
            .prop_map(|(t, d, lifecycle, attrs, expected)| Op::UpdateDevice { t, d, lifecycle, attrs, expected }),
        1 => (0..2u8, 0..3u8, prop::bool::weighted(0.2), 0..5u8).prop_map(|(t, d, across, to_g)| Op::MoveDevice { t, d, to_t: if across { 1 - t } else { t }, to_g }),
        1 => (0..2u8, 0..3u8).prop_map(|(t, d)| Op::DeleteDevice(t, d)),
        1 => (0..2u8, 0..3u8).prop_map(|(t, d)| Op::GetDevice(t, d)),
        1 => (0..2u8, 0..5u8, proptest::option::of(0..4u8), 0..4u32).prop_map(|(t, g, lifecycle, limit)| Op::ListDevices { t, g, lifecycle, limit }),
        1 => (0..2u8, 0..5u8, 0..4u32).prop_map(|(t, g, limit)| Op::ListGroups { t, g, limit }),
        1 => (0..2u8, 1..5u8, 1..5u8).prop_map(|(t, from, to)| Op::MoveGroup { t, from, to }),
        1 => (0..2u8, 0..5u8, 0..3u8).prop_map(|(t, g, u)| Op::CreateUser { t, g, u }),
        1 => (0..2u8, 0..5u8, 0..4u32).prop_map(|(t, g, limit)| Op::ListUsers { t, g, limit }),
    ]
}

fn job_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => ((0..2u8, 0..2u8, 0..5u8, 0..3u8, 0..2u8), (proptest::option::of(0..4u8), 0..6u8, proptest::option::of(0..8u8), any::<bool>()))
            .prop_map(|((t, gt, g, d, lane), (key, state, due, bulk))| {
                // Mostly a group of the job's own tenant.
                let gt = if gt == 1 && g == 4 { 1 - t } else { t };
                Op::CreateJob { t, gt, g, d, lane, key, state, due, bulk }
            }),
        4 => (any::<u8>(), 0..6u8, proptest::option::of(0..8u8), prop::bool::weighted(0.1), proptest::option::of(1..4u64), any::<bool>())
            .prop_map(|(job, state, due, foreign, stale, result)| Op::UpdateJob { job, state, due, foreign, stale: stale.filter(|_| job % 4 == 0), result }),
        1 => (any::<u8>(), 0..2u8).prop_map(|(job, t)| Op::GetJob { job, t }),
        2 => (0..2u8, 0..3u8, 0..2u8, 1..3u32).prop_map(|(t, d, lane, n)| Op::QueueHead { t, d, lane, n }),
        1 => (0..8u8, 1..5u32).prop_map(|(at, limit)| Op::DueJobs { at, limit }),
        2 => (0..2u8, 0..5u8, proptest::option::of(0..3u8), proptest::collection::vec(0..6u8, 0..3), any::<bool>(), 0..4u32)
            .prop_map(|(t, g, d, states, bulk, limit)| Op::ListJobs { t, g, d, states, bulk, limit }),
        2 => (0..2u8, 0..2u8, 0..2u8, 0..8u8).prop_map(|(t, d, holder, until)| Op::Acquire { t, d, holder, until }),
        1 => (0..2u8, 0..2u8, 0..2u8).prop_map(|(t, d, holder)| Op::Release { t, d, holder }),
        1 => (0..2u8, 0..2u8).prop_map(|(t, d)| Op::GetControl { t, d }),
    ]
}

fn credential_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3u8, 0..2u8, 0..3u8).prop_map(|(prefix, t, d)| Op::PutKey { prefix, t, d }),
        1 => (0..2u8).prop_map(Op::RevokeKey),
        1 => (0..2u8, proptest::option::of(0..8u8)).prop_map(|(p, e)| Op::SetExpiry(p, e)),
        1 => (0..2u8, 0..3u8).prop_map(|(t, d)| Op::ListKeys(t, d)),
        1 => (0..3u8).prop_map(Op::FindKey),
    ]
}

fn measurement_op() -> impl Strategy<Value = Op> {
    let series_points = (
        0..2u8,
        0..2u8,
        0..2u8,
        0..16u8,
        proptest::collection::vec((0..48u8, any::<bool>(), -8..8i8), 0..12),
    );
    prop_oneof![
        4 => proptest::collection::vec(series_points, 1..4).prop_map(Op::Append),
        2 => (0..2u8, 0..3u8, 0..2u8, 0..14u8, 0..14u8, 0..4u32).prop_map(|(t, d, s, from, len, limit)| Op::ReadRange { t, d, s, from, to: from + len, limit }),
        4 => (any::<bool>(), 0..2u8, 0..5u8, 0..2u8, 0..14u8, 0..14u8, 0..6u8)
            .prop_map(|(subtree, t, x, s, from, len, bucket)| Op::Aggregate { subtree, t, x, s, from, to: from + len, bucket }),
        1 => (0..14u8).prop_map(Op::DeleteBefore),
        1 => (0..2u8, 0..3u8).prop_map(|(t, d)| Op::ListSeries(t, d)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => registry_op(),
        4 => job_op(),
        1 => credential_op(),
        3 => measurement_op(),
    ]
}

pub(super) fn tenant_of(t: u8) -> TenantId {
    super::tenant(TENANTS[t as usize % 2])
}

pub(super) fn group_of(t: u8, g: u8) -> GroupPath {
    let rel = GROUPS[g as usize % GROUPS.len()];
    let t = TENANTS[t as usize % 2];
    if rel.is_empty() {
        super::group(t)
    } else {
        super::group(&format!("{t}/{rel}"))
    }
}

pub(super) fn device_of(d: u8) -> DeviceId {
    super::dev(DEVICES[d as usize % DEVICES.len()])
}

fn attrs_of(a: u8) -> serde_json::Value {
    match a % 4 {
        0 => json!({}),
        1 => json!({ "fw": "1.0", "tags": ["a", "b"] }),
        2 => json!({ "nested": { "n": 1.5, "ok": true } }),
        _ => json!(["not", "an", "object"]),
    }
}

/// A point in the measurement window: 48 steps of 7.5 minutes (six hours), optionally one
/// millisecond later.
fn point_ts(step: u8, jitter: bool) -> i64 {
    T0 + i64::from(step) * 450_000 + i64::from(jitter)
}

/// A range bound: half hours from an hour before the window (`from + len` may reach 26).
fn bound(b: u8) -> i64 {
    T0 - HOUR_MS + i64::from(b) * 1_800_000
}

fn due_of(d: u8) -> Timestamp {
    ts(T0 + i64::from(d) * 7_000)
}

/// Compares two results: equal `Ok` values, or errors of the same kind.
#[track_caller]
pub(super) fn same<T: PartialEq + Debug>(got: Result<T>, want: Result<T>, what: &str) -> Option<T> {
    match (got, want) {
        (Ok(g), Ok(w)) => {
            assert_eq!(
                g, w,
                "{what}: the backend and the reference model answer differently"
            );
            Some(g)
        }
        (Err(g), Err(w)) => {
            assert_eq!(
                g.kind(),
                w.kind(),
                "{what}: the backend fails with {:?} ({g}), the reference model with {:?} ({w})",
                g.kind(),
                w.kind()
            );
            None
        }
        (Ok(g), Err(w)) => panic!(
            "{what}: the backend succeeds with {g:?}, the reference model fails with {:?} ({w})",
            w.kind()
        ),
        (Err(g), Ok(w)) => panic!(
            "{what}: the backend fails with {:?} ({g}), the reference model succeeds with {w:?}",
            g.kind()
        ),
    }
}

/// Walks every page of a listing; an error on any page is the result.
pub(super) async fn collect<T, F, Fut>(limit: u32, mut fetch: F) -> Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = fetch(PageRequest {
            limit,
            after: after.take(),
        })
        .await?;
        assert!(
            limit == 0 || page.items.len() <= limit as usize,
            "a page has more items than its limit {limit}"
        );
        let last = page.next.is_none();
        if !last {
            assert!(
                !page.items.is_empty(),
                "a page announcing a next page is empty"
            );
        }
        items.extend(page.items);
        if last {
            return Ok(items);
        }
        after = page.next;
    }
    panic!("a listing does not end");
}

/// The jobs created so far, and the backend's seqs.
///
/// A backend may number jobs as it likes as long as the numbers increase per device in creation
/// order and never change, so records are compared with `seq` set aside after checking that.
#[derive(Default)]
struct Jobs {
    /// Created jobs (for updates and reads).
    created: Vec<(TenantId, JobId)>,
    /// The backend's seq of each created job.
    seq: HashMap<JobId, u64>,
    /// The backend's latest seq per device.
    last: HashMap<(TenantId, DeviceId), u64>,
}

impl Jobs {
    /// Notes a job the backend just created, checking its seq.
    fn record(&mut self, job: &JobRecord, what: &str) {
        let key = (job.tenant.clone(), job.device.clone());
        if let Some(&last) = self.last.get(&key) {
            assert!(
                job.seq > last,
                "{what}: seq {} of a new job of device {} is not above the previous job's {last}",
                job.seq,
                job.device
            );
        }
        self.last.insert(key, job.seq);
        self.seq.insert(job.id, job.seq);
    }

    /// A backend record with its seq checked and set aside.
    fn sut(&self, mut job: JobRecord, what: &str) -> JobRecord {
        if let Some(&seq) = self.seq.get(&job.id) {
            assert_eq!(job.seq, seq, "{what}: the seq of job {} changed", job.id);
        }
        job.seq = 0;
        job
    }

    /// A reference record with its seq set aside.
    fn model(mut job: JobRecord) -> JobRecord {
        job.seq = 0;
        job
    }

    fn suts(&self, jobs: Vec<JobRecord>, what: &str) -> Vec<JobRecord> {
        jobs.into_iter().map(|j| self.sut(j, what)).collect()
    }

    fn models(jobs: Vec<JobRecord>) -> Vec<JobRecord> {
        jobs.into_iter().map(Self::model).collect()
    }
}

/// Applies `op` to both, comparing the answers.
async fn step(
    op: &Op,
    sut: &Stores,
    model: &Stores,
    now: i64,
    n: u64,
    jobs: &mut Jobs,
    what: &str,
) {
    macro_rules! both {
        (|$s:ident| $call:expr) => {{
            let got = {
                let $s = sut;
                $call.await
            };
            let want = {
                let $s = model;
                $call.await
            };
            (got, want)
        }};
    }
    let now_ts = ts(now);
    match op {
        Op::CreateTenant(t) => {
            let (g, w) = both!(|s| s.registry.create_tenant(&tenant_of(*t), "tenant", now_ts));
            same(g, w, what);
        }
        Op::CreateGroup(t, g) => {
            let path = group_of(*t, *g);
            let (g, w) = both!(|s| s.registry.create_group(&path, "group", now_ts));
            same(g, w, what);
        }
        Op::DeleteGroup(t, g) => {
            let path = group_of(*t, *g);
            let (g, w) = both!(|s| s.registry.delete_group(&path));
            same(g, w, what);
            let (g, w) = both!(|s| s.registry.get_group(&path));
            same(g, w, &format!("{what}, then get_group"));
        }
        Op::CreateDevice { t, g, d, attrs } => {
            let nd = NewDevice {
                id: device_of(*d),
                group: group_of(*t, *g),
                display_name: format!("dev {d}"),
                attributes: attrs_of(*attrs),
            };
            let (g, w) = both!(|s| s.registry.create_device(nd.clone(), now_ts));
            same(g, w, what);
        }
        Op::UpdateDevice {
            t,
            d,
            lifecycle,
            attrs,
            expected,
        } => {
            let patch = DevicePatch {
                display_name: lifecycle.map(|l| format!("name {l}")),
                attributes: attrs.map(attrs_of),
                lifecycle: lifecycle.map(|l| LIFECYCLES[l as usize % 4]),
            };
            let (g, w) = both!(|s| s.registry.update_device(
                &tenant_of(*t),
                &device_of(*d),
                patch.clone(),
                *expected,
                now_ts
            ));
            same(g, w, what);
        }
        Op::MoveDevice { t, d, to_t, to_g } => {
            let to = group_of(*to_t, *to_g);
            let (g, w) =
                both!(|s| s
                    .registry
                    .move_device(&tenant_of(*t), &device_of(*d), &to, now_ts));
            same(g, w, what);
        }
        Op::DeleteDevice(t, d) => {
            let (g, w) = both!(|s| s.registry.delete_device(&tenant_of(*t), &device_of(*d)));
            same(g, w, what);
        }
        Op::GetDevice(t, d) => {
            let (g, w) = both!(|s| s.registry.get_device(&tenant_of(*t), &device_of(*d)));
            same(g, w, what);
        }
        Op::ListDevices {
            t,
            g,
            lifecycle,
            limit,
        } => {
            let root = group_of(*t, *g);
            let lc = lifecycle.map(|l| LIFECYCLES[l as usize % 4]);
            let (g, w) = both!(|s| collect(*limit, |p| s.registry.list_devices(&root, lc, p)));
            same(g, w, what);
        }
        Op::MoveGroup { t, from, to } => {
            let (from, to) = (group_of(*t, *from), group_of(*t, *to));
            let (g, w) = both!(|s| s.registry.move_group(&from, &to, now_ts));
            same(g, w, what);
            let root = group_of(*t, 0);
            let (g, w) = both!(|s| collect(0, |p| s.registry.list_groups(&root, p)));
            same(g, w, &format!("{what}, then list_groups"));
            let (g, w) = both!(|s| collect(0, |p| s.registry.list_users(&root, p)));
            same(g, w, &format!("{what}, then list_users"));
        }
        Op::CreateUser { t, g, u } => {
            let nu = NewUser {
                id: USERS[*u as usize % USERS.len()]
                    .parse()
                    .expect("a valid user id"),
                group: group_of(*t, *g),
                display_name: format!("user {u}"),
                email: None,
                role: Role::Viewer,
            };
            let (g, w) = both!(|s| s.registry.create_user(nu.clone(), now_ts));
            same(g, w, what);
        }
        Op::ListUsers { t, g, limit } => {
            let root = group_of(*t, *g);
            let (g, w) = both!(|s| collect(*limit, |p| s.registry.list_users(&root, p)));
            same(g, w, what);
        }
        Op::ListGroups { t, g, limit } => {
            let root = group_of(*t, *g);
            let (g, w) = both!(|s| collect(*limit, |p| s.registry.list_groups(&root, p)));
            same(g, w, what);
        }
        Op::CreateJob {
            t,
            gt,
            g,
            d,
            lane,
            key,
            state,
            due,
            bulk,
        } => {
            let nj = NewJob {
                id: job_id(now, n),
                tenant: tenant_of(*t),
                device: device_of(*d),
                group: group_of(*gt, *g),
                lane: LANES[*lane as usize % 2].to_owned(),
                state: STATES[*state as usize % STATES.len()],
                document: json!({ "op": n }),
                options: json!({ "retries": *state }),
                idempotency_key: key.map(|k| format!("key-{k}")),
                created_by: "model".to_owned(),
                bulk: bulk.then(|| BulkJobId::from_parts(ts(T0), [*d; 10])),
                created_at: now_ts,
                due_at: due.map(due_of),
            };
            let (g, w) = both!(|s| s.jobs.create_job(nj.clone()));
            if let Ok(out) = &g
                && out.created
            {
                jobs.record(&out.job, what);
            }
            let g = g.map(|mut o| {
                o.job = jobs.sut(o.job, what);
                o
            });
            let w = w.map(|mut o| {
                o.job = Jobs::model(o.job);
                o
            });
            if let Some(out) = same(g, w, what)
                && out.created
            {
                jobs.created.push((out.job.tenant.clone(), out.job.id));
            }
        }
        Op::UpdateJob {
            job,
            state,
            due,
            foreign,
            stale,
            result,
        } => {
            if jobs.created.is_empty() {
                return;
            }
            let (tenant, id) = jobs.created[*job as usize % jobs.created.len()].clone();
            let current = model
                .jobs
                .get_job(&tenant, &id)
                .await
                .expect("the model answers")
                .expect("the model has the job");
            let mut next: JobRecord = current.clone();
            next.state = STATES[*state as usize % STATES.len()];
            next.due_at = due.map(due_of);
            next.execution += 1;
            next.attempts += u32::from(*result);
            next.result = result.then(|| json!({ "n": n }));
            next.status_details = Some(json!({ "at": now }));
            next.updated_at = now_ts;
            next.lane = "forged".into(); // identity: never written
            if *foreign {
                next.tenant = tenant_of(if tenant.as_str() == "a" { 1 } else { 0 });
            }
            let expected = stale.unwrap_or(current.version);
            let (g, w) = both!(|s| s.jobs.update_job(&next, expected));
            same(g.map(|j| jobs.sut(j, what)), w.map(Jobs::model), what);
        }
        Op::GetJob { job, t } => {
            let id = if jobs.created.is_empty() {
                job_id(T0, 0)
            } else {
                jobs.created[*job as usize % jobs.created.len()].1
            };
            let (g, w) = both!(|s| s.jobs.get_job(&tenant_of(*t), &id));
            same(
                g.map(|o| o.map(|j| jobs.sut(j, what))),
                w.map(|o| o.map(Jobs::model)),
                what,
            );
        }
        Op::QueueHead { t, d, lane, n } => {
            let (g, w) = both!(|s| s.jobs.queue_head(
                &tenant_of(*t),
                &device_of(*d),
                LANES[*lane as usize % 2],
                *n
            ));
            same(g.map(|v| jobs.suts(v, what)), w.map(Jobs::models), what);
        }
        Op::DueJobs { at, limit } => {
            let (g, w) = both!(|s| s.jobs.due_jobs(due_of(*at), 1000));
            // Ties in due time may come in any order; compare as sets ordered by (due, id),
            // after checking the order by due time; then check the limit separately.
            let sort = |mut v: Vec<JobRecord>| {
                assert!(
                    v.windows(2).all(|w| w[0].due_at <= w[1].due_at),
                    "{what}: due_jobs must be earliest first"
                );
                v.sort_by_key(|j| (j.due_at, j.id));
                v
            };
            same(
                g.map(sort).map(|v| jobs.suts(v, what)),
                w.map(sort).map(Jobs::models),
                what,
            );
            let (g, w) = both!(|s| s.jobs.due_jobs(due_of(*at), *limit));
            let dues = |v: Vec<JobRecord>| v.into_iter().map(|j| j.due_at).collect::<Vec<_>>();
            same(
                g.map(dues),
                w.map(dues),
                &format!("{what} (due times within the limit)"),
            );
        }
        Op::ListJobs {
            t,
            g,
            d,
            states,
            bulk,
            limit,
        } => {
            let root = group_of(*t, *g);
            let filter = JobFilter {
                device: d.map(device_of),
                states: states
                    .iter()
                    .map(|s| STATES[*s as usize % STATES.len()])
                    .collect(),
                bulk: bulk.then(|| BulkJobId::from_parts(ts(T0), [d.unwrap_or(0); 10])),
            };
            let (g, w) = both!(|s| collect(*limit, |p| s.jobs.list_jobs(&root, &filter, p)));
            same(g.map(|v| jobs.suts(v, what)), w.map(Jobs::models), what);
            let (g, w) = both!(|s| s.jobs.count_jobs(&root, &filter));
            same(g, w, &format!("{what}, count_jobs"));
        }
        Op::Acquire {
            t,
            d,
            holder,
            until,
        } => {
            let until = ts(now + (i64::from(*until) - 2) * 3_000);
            let (g, w) = both!(|s| s.jobs.acquire_control(
                &tenant_of(*t),
                &device_of(*d),
                HOLDERS[*holder as usize % 2],
                until,
                now_ts
            ));
            same(g, w, what);
        }
        Op::Release { t, d, holder } => {
            let (g, w) = both!(|s| s.jobs.release_control(
                &tenant_of(*t),
                &device_of(*d),
                HOLDERS[*holder as usize % 2]
            ));
            same(g, w, what);
        }
        Op::GetControl { t, d } => {
            let (g, w) = both!(|s| s.jobs.get_control(&tenant_of(*t), &device_of(*d), now_ts));
            same(g, w, what);
        }
        Op::PutKey { prefix, t, d } => {
            let key = AccessKeyRecord {
                prefix: format!("pk{prefix}"),
                tenant: tenant_of(*t),
                device: device_of(*d),
                hash: format!("hash-{n}"),
                created_at: now_ts,
                expires_at: None,
                revoked_at: None,
            };
            let (g, w) = both!(|s| s.credentials.put_access_key(key.clone()));
            same(g, w, what);
        }
        Op::RevokeKey(p) => {
            let prefix = format!("pk{p}");
            let (g, w) = both!(|s| s.credentials.revoke_access_key(&prefix, now_ts));
            same(g, w, what);
        }
        Op::SetExpiry(p, e) => {
            let prefix = format!("pk{p}");
            let (g, w) = both!(|s| s.credentials.set_access_key_expiry(&prefix, e.map(due_of)));
            same(g, w, what);
        }
        Op::ListKeys(t, d) => {
            let (g, w) = both!(|s| s
                .credentials
                .list_access_keys(&tenant_of(*t), &device_of(*d)));
            same(g, w, what);
        }
        Op::FindKey(p) => {
            let prefix = format!("pk{p}");
            let (g, w) = both!(|s| s.credentials.find_access_key(&prefix));
            same(g, w, what);
        }
        Op::Append(entries) => {
            let b: Vec<_> = entries
                .iter()
                .map(|(t, d, s, nan_at, pts)| {
                    let mut sp = batch(
                        TENANTS[*t as usize % 2],
                        DEVICES[*d as usize % 3],
                        SERIES[*s as usize % 2],
                        &pts.iter()
                            .map(|&(step, j, v)| (point_ts(step, j), f64::from(v) / 2.0))
                            .collect::<Vec<_>>(),
                    );
                    // Now and then a non-finite value: the whole batch must be refused.
                    if *nan_at == 7 && !sp.points.is_empty() {
                        let last = sp.points.len() - 1;
                        sp.points[last] = Point {
                            ts: sp.points[last].ts,
                            value: f64::NAN,
                        };
                    }
                    sp
                })
                .collect();
            let (g, w) = both!(|s| s.measurements.append(&b));
            same(g, w, what);
        }
        Op::ReadRange {
            t,
            d,
            s,
            from,
            to,
            limit,
        } => {
            let series = super::series(SERIES[*s as usize % 2]);
            let (from, to) = (ts(bound(*from)), ts(bound(*to)));
            let (tenant, device) = (tenant_of(*t), device_of(*d));
            let (g, w) = both!(|st| collect(*limit, |p| st
                .measurements
                .read_range(&tenant, &device, &series, from, to, p)));
            same(g, w, what);
        }
        Op::Aggregate {
            subtree,
            t,
            x,
            s,
            from,
            to,
            bucket,
        } => {
            let scope = if *subtree {
                AggregateScope::Subtree {
                    group: group_of(*t, *x),
                }
            } else {
                AggregateScope::Device {
                    tenant: tenant_of(*t),
                    device: device_of(*x),
                }
            };
            let q = AggregateQuery {
                scope,
                series: super::series(SERIES[*s as usize % 2]),
                from: ts(bound(*from)),
                to: ts(bound(*to)),
                bucket: std::time::Duration::from_millis(BUCKETS[*bucket as usize % BUCKETS.len()]),
            };
            let (g, w) = both!(|st| st.measurements.aggregate(&q));
            match (g, w) {
                (Ok(g), Ok(w)) => assert_buckets(&g, &w, &format!("{what}: {q:?}")),
                (g, w) => {
                    let kinds = |r: Result<Vec<Bucket>>| r.map(|_| ());
                    same(kinds(g), kinds(w), what);
                }
            }
        }
        Op::DeleteBefore(b) => {
            let (g, w) = both!(|s| s.measurements.delete_before(ts(bound(*b) + 1_800_000 / 2)));
            same(g, w, what);
        }
        Op::ListSeries(t, d) => {
            let (g, w) = both!(|s| s.measurements.list_series(&tenant_of(*t), &device_of(*d)));
            same(g, w, what);
        }
    }
}

/// Every case, generated up front (the runner is not needed across awaits).
fn cases() -> Vec<Vec<Op>> {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = proptest::collection::vec(op(), OPS);
    let prelude = [
        Op::CreateTenant(0),
        Op::CreateTenant(1),
        Op::CreateGroup(0, 1),
        Op::CreateGroup(0, 3),
        Op::CreateGroup(1, 1),
        Op::CreateDevice {
            t: 0,
            g: 1,
            d: 0,
            attrs: 1,
        },
        Op::CreateDevice {
            t: 0,
            g: 3,
            d: 1,
            attrs: 0,
        },
        Op::CreateDevice {
            t: 1,
            g: 1,
            d: 0,
            attrs: 2,
        },
    ];
    // A few queued jobs, so that queues are longer than what queue_head asks for.
    let jobs = (0..4u8).map(|k| Op::CreateJob {
        t: 0,
        gt: 0,
        g: 1,
        d: k / 3,
        lane: 0,
        key: None,
        state: 0,
        due: Some(2 * k),
        bulk: k % 2 == 0,
    });
    // Points in both tenants, so that aggregates have data to get wrong.
    let points = Op::Append(
        [(0, 0, 0), (0, 1, 0), (1, 0, 0), (0, 0, 1)]
            .into_iter()
            .map(|(t, d, s)| {
                let pts = (0..12u8)
                    .map(|k| (k * 4 + t + d, k % 3 == 0, (k as i8 % 7) - 3))
                    .collect();
                (t, d, s, 0, pts)
            })
            .collect(),
    );
    (0..CASES)
        .map(|_| {
            let ops = strategy
                .new_tree(&mut runner)
                .expect("the strategy generates")
                .current();
            prelude
                .iter()
                .cloned()
                .chain(jobs.clone())
                .chain([points.clone()])
                .chain(ops)
                .collect()
        })
        .collect()
}

pub(super) async fn random_operations(factory: StoresFactory) {
    for (case, ops) in cases().into_iter().enumerate() {
        let sut = factory().await;
        let model = MemoryStore::new(StoreLimits::default()).into_stores();
        let mut jobs = Jobs::default();
        for (i, op) in ops.iter().enumerate() {
            let now = T0 + 1000 * (i as i64 + 1);
            let what = format!("model case {case}, operation {i}: {op:?}");
            let history = History(&ops[..i], case);
            step(op, &sut, &model, now, i as u64, &mut jobs, &what).await;
            drop(history);
        }
    }
}

/// Prints the operations that led to a failure (when dropped during a panic).
struct History<'a>(&'a [Op], usize);

impl Drop for History<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "model case {}: the operations before the failing one:",
                self.1
            );
            for (i, op) in self.0.iter().enumerate() {
                eprintln!("  {i}: {op:?}");
            }
        }
    }
}
