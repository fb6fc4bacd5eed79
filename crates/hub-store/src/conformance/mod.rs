//! # The conformance kit: proof that a backend keeps the storage contract
//!
//! Every backend of the storage traits ([`RegistryStore`](crate::RegistryStore),
//! [`CredentialStore`](crate::CredentialStore), [`JobStore`](crate::JobStore),
//! [`MeasurementStore`](crate::MeasurementStore), [`AuditStore`](crate::AuditStore),
//! [`ConfigStore`](crate::ConfigStore), [`ArtifactStore`](crate::ArtifactStore),
//! [`BulkJobStore`](crate::BulkJobStore)) must pass
//! this kit: the in-memory reference, SQLite, PostgreSQL, and any backend an integrator brings.
//! The trait documentation is the specification; each [`Check`] turns part of it into assertions that fail with a message
//! naming what was expected and what the backend did.
//!
//! The kit has three parts:
//!
//! - **Contract checks** (`registry_*`, `credentials_*`, `jobs_*`, `measurements_*`,
//!   `audit_*`, `config_*`, `artifacts_*`, `bulk_*`): fixed scenarios with hand-computed answers,
//!   including the traps backends fall into (string prefixes instead of whole group segments, hourly rollups that double count a duplicate or
//!   align buckets to the query instead of the epoch, half-stored batches, leases that never
//!   lapse, queues ordered by id instead of creation order).
//! - **Concurrency checks** (`concurrency_*`): many tokio tasks racing on one job, one queue, one
//!   idempotency key, one batch of points. They need a multi-thread runtime to race for real.
//! - **Identity checks** (`identity_*`): users and OAuth clients, subtree listings that keep
//!   `acme/plant-1` and `acme/plant-10` apart, `move_group` rewriting every descendant (and
//!   racing with creations inside the moving subtree), password hashes, single-use grants
//!   consumed by exactly one of many racing callers, the device-code approval flow, expiry,
//!   refresh-token rotation, replay detection that revokes the family, and tenant isolation.
//! - **The model check** (`model_random_operations`): 64 deterministic random sequences of
//!   operations over small id alphabets (so that collisions happen) are applied both to the
//!   backend and to a fresh [`MemoryStore`](crate::memory::MemoryStore), and every answer is
//!   compared: `Ok` values field by field (sums and means with a float tolerance), errors by
//!   [`ErrorKind`]. Where the specification leaves an order open (jobs due at the same
//!   time) the comparison does too.
//!   `model_audit_and_config` does the same for the audit log and configuration documents in
//!   sequences of its own (24 cases), mapping the backend's audit ids onto the reference's after
//!   checking that they increase.
//!
//! ## Running it on your backend
//!
//! The kit needs a [`StoresFactory`]: a function that makes a **fresh, empty** set of
//! [`Stores`] for one check (a new database file, a new PostgreSQL schema, ...). Each check
//! calls it at least once; the model check calls it once per generated case. The stores must be
//! built with [`StoreLimits::default()`](crate::StoreLimits) ([`expected_limits`]), because the
//! checks probe the limits (attribute size, points per append, bucket count). The artifact size
//! limit (1 GiB by default) is too large to probe in every run: check it with
//! [`artifact_size_limit`] on a store of your backend opened with a small `max_artifact_bytes`. The factory is
//! called about a hundred times in a run, so keep it cheap for a networked backend (a schema
//! cloned from a migrated template, or truncating the tables, rather than running every
//! migration again).
//!
//! [`run_all`] runs every check in its own tokio task (so a panicking check is reported and the
//! others still run), prints one line per check to stderr and panics at the end, naming every
//! failed check:
//!
//! ```text
//! conformance: registry_groups_create ... ok
//! conformance: jobs_update_cas ... FAILED
//! ```
//!
//! A test in the backend's crate:
//!
//! ```no_run
//! use hub_store::conformance::{self, StoresFactory};
//! use hub_store::{StoreLimits, memory::MemoryStore};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
//! async fn my_backend_conforms() {
//!     // Replace MemoryStore with your backend; open a fresh, empty one each time.
//!     let factory: StoresFactory = conformance::factory(|| async {
//!         MemoryStore::new(StoreLimits::default()).into_stores()
//!     });
//!     conformance::run_all(factory).await;
//! }
//! ```
//!
//! To run one check alone (for example while debugging), pick it from [`checks`]:
//!
//! ```
//! # use hub_store::conformance;
//! # use hub_store::{StoreLimits, memory::MemoryStore};
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let factory = conformance::factory(|| async {
//!     MemoryStore::new(StoreLimits::default()).into_stores()
//! });
//! let check = conformance::checks()
//!     .into_iter()
//!     .find(|c| c.name == "jobs_update_cas")
//!     .expect("the check exists");
//! (check.run)(factory).await;
//! # });
//! ```
//!
//! ## What the kit expects that the trait documentation only implies
//!
//! - Listings are ordered by the Rust `Ord` of their key: group paths and device ids in **byte
//!   order** (`"Valve-3" < "a.meter"`, `"acme/plant-1-b" < "acme/plant-1/x"`). In PostgreSQL
//!   that means `COLLATE "C"` on those columns.
//! - A page that carries a `next` cursor is not empty, and a page with fewer items than asked
//!   for has no `next` cursor; a full last page may still carry one (the kit accepts a final
//!   empty page).
//! - A new device is at version 1, like a new job.
//! - Unknown access-key prefixes in `set_access_key_expiry` and `revoke_access_key` are
//!   [`NotFound`](ErrorKind::NotFound), as in the reference model. Where the kind of a refusal is
//!   not specified (deleting a tenant's root group, moving a device to another tenant) the
//!   contract checks accept any error; the model check compares kinds with the reference.
//! - Values read back are bit-exact `f64`s (`0.1`, `1/3`, `-1e300`, `1e-300`, `f64::MAX`).
//! - Job `seq` values are the backend's own: the kit checks only that they increase per device
//!   in creation order and never change (sparse numbers from a global sequence are fine).
//! - Audit ids are the backend's own too: they must strictly increase in append order and never
//!   come back after retention, but may be sparse. Configuration versions are not: they are
//!   1, 2, 3, ... per (tenant, device, kind), with no gaps, and continue after pruning.
//! - Audit `from` is inclusive and `to` exclusive, like every range of the crate; an empty
//!   range is [`InvalidInput`](ErrorKind::InvalidInput). `actor` and `resource` filters are
//!   exact matches.
//! - `ConfigStore::put` with `Some(0)` means "only if there is no version yet"; racing puts
//!   with the same expected version: one wins, every other one is
//!   [`PreconditionFailed`](ErrorKind::PreconditionFailed).
//!
//! - `move_group` also rewrites the group of the subtree's OAuth clients and jobs; moved devices
//!   and users get a new version and `updated_at`.
//! - A grant or refresh token is live while `now < expires_at`.
//! - Of concurrent rotations of one refresh token exactly one is `Rotated`; every other one is
//!   `Reused` (never `Invalid`), and the family, the winner's new token included, ends revoked.
//!
//! The kit never measures time. It takes under a second on the memory backend (debug build)
//! and makes about six thousand store calls in all, most of them small, so a networked
//! backend on a nearby database finishes well under a minute.

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use hub_core::{BoxFuture, DeviceId, ErrorKind, GroupPath, JobId, Result, TenantId, Timestamp};

pub use artifacts::artifact_size_limit;

use crate::measurements::SeriesName;
use crate::{Page, PageRequest, StoreLimits, Stores};

mod artifacts;
mod audit;
mod bulk;
mod concurrency;
mod config;
mod credentials;
mod grants;
mod jobs;
mod measurements;
mod model;
mod model_records;
mod registry;
mod users;

/// Makes a fresh, empty set of stores for one check.
pub type StoresFactory = Arc<dyn Fn() -> BoxFuture<'static, Stores> + Send + Sync>;

/// One conformance check.
#[derive(Clone, Copy)]
pub struct Check {
    /// A stable, unique name (`area_what`), printed by [`run_all`].
    pub name: &'static str,
    /// Runs the check on stores from the factory; panics with a message on a violation.
    pub run: fn(StoresFactory) -> BoxFuture<'static, ()>,
}

impl Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

/// Wraps an async closure as a [`StoresFactory`].
///
/// ```
/// use hub_store::{conformance, StoreLimits, memory::MemoryStore};
/// let factory = conformance::factory(|| async {
///     MemoryStore::new(StoreLimits::default()).into_stores()
/// });
/// # let _ = factory;
/// ```
pub fn factory<F, Fut>(make: F) -> StoresFactory
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Stores> + Send + 'static,
{
    Arc::new(move || Box::pin(make()) as BoxFuture<'static, Stores>)
}

/// The limits the factory's stores must be built with: [`StoreLimits::default()`].
pub fn expected_limits() -> StoreLimits {
    StoreLimits::default()
}

macro_rules! check {
    ($name:literal, $f:path) => {
        Check {
            name: $name,
            run: |factory| Box::pin($f(factory)),
        }
    };
}

/// Every check of the kit, in the order [`run_all`] runs them.
pub fn checks() -> Vec<Check> {
    vec![
        check!("registry_groups_create", registry::groups_create),
        check!("registry_list_groups", registry::list_groups),
        check!("registry_delete_group", registry::delete_group),
        check!("registry_devices", registry::devices),
        check!("registry_list_devices", registry::list_devices),
        check!("registry_attributes", registry::attributes),
        check!("credentials_access_keys", credentials::access_keys),
        check!("jobs_create", jobs::create),
        check!("jobs_invalid_input", jobs::invalid_input),
        check!("jobs_idempotency", jobs::idempotency),
        check!("jobs_update_cas", jobs::update_cas),
        check!("jobs_queue_head", jobs::queue_head),
        check!("jobs_due", jobs::due),
        check!("jobs_list_and_count", jobs::list_and_count),
        check!("jobs_control_leases", jobs::control_leases),
        check!("jobs_conditional_create", jobs::conditional_create),
        check!("concurrency_update_race", concurrency::update_race),
        check!("concurrency_claimers", concurrency::claimers),
        check!("concurrency_seq", concurrency::seq),
        check!("concurrency_idempotency", concurrency::idempotency),
        check!("concurrency_append", concurrency::append),
        check!("concurrency_registry", concurrency::registry),
        check!("concurrency_control", concurrency::control),
        check!(
            "concurrency_control_vs_create",
            concurrency::control_vs_create
        ),
        check!("measurements_append", measurements::append),
        check!("measurements_read_range", measurements::read_range),
        check!("measurements_aggregate", measurements::aggregate),
        check!("measurements_rollups", measurements::rollups),
        check!("measurements_subtree", measurements::subtree),
        check!("measurements_delete_before", measurements::delete_before),
        check!("measurements_invalid_input", measurements::invalid_input),
        check!("model_random_operations", model::random_operations),
        check!("audit_append_and_page", audit::append_and_page),
        check!("audit_subtree_and_filters", audit::subtree_and_filters),
        check!("audit_invalid_input", audit::invalid_input),
        check!("audit_retention", audit::retention),
        check!("config_versions", config::versions_per_device),
        check!("config_compare_and_set", config::compare_and_set),
        check!("config_concurrent_puts", config::concurrent_puts),
        check!("config_copy_latest", config::copy_latest),
        check!("config_prune", config::prune),
        check!("config_limits", config::limits),
        check!("model_audit_and_config", model_records::random_operations),
        check!("identity_users", users::users_crud),
        check!("identity_list_users", users::list_users),
        check!("identity_clients", users::clients),
        check!("identity_move_group", users::move_group),
        check!("identity_concurrent_move", users::concurrent_move),
        check!("identity_passwords", grants::passwords),
        check!("identity_single_use_grants", grants::single_use),
        check!("identity_concurrent_consume", grants::concurrent_consume),
        check!("identity_device_flow", grants::device_flow),
        check!("identity_refresh_rotation", grants::refresh_rotation),
        check!("identity_concurrent_rotation", grants::concurrent_rotation),
        check!("identity_tenant_isolation", grants::tenant_isolation),
        check!("artifacts_round_trip", artifacts::round_trip),
        check!("artifacts_refusals", artifacts::refusals),
        check!("artifacts_idempotent", artifacts::idempotent),
        check!("artifacts_tenant_isolation", artifacts::tenant_isolation),
        check!("artifacts_paging", artifacts::paging),
        check!("artifacts_delete", artifacts::delete),
        check!(
            "credentials_device_deletion",
            credentials::device_deletion_removes_keys
        ),
        check!("bulk_create_get_list", bulk::create_get_list),
        check!("bulk_update_and_targets", bulk::update_and_targets),
        check!("bulk_due", bulk::due),
        check!("concurrency_bulk_update", bulk::concurrent_updates),
        check!("bulk_move_group", bulk::move_group),
    ]
}

/// Runs every check, each in its own tokio task, printing `conformance: <name> ... ok` or
/// `... FAILED` to stderr; panics at the end listing every failed check with its message.
///
/// Call it from a tokio runtime; a multi-thread runtime makes the concurrency checks race for
/// real.
pub async fn run_all(factory: StoresFactory) {
    let all = checks();
    let mut failed: Vec<String> = Vec::new();
    for check in &all {
        let outcome = tokio::spawn((check.run)(factory.clone())).await;
        match outcome {
            Ok(()) => eprintln!("conformance: {} ... ok", check.name),
            Err(e) => {
                eprintln!("conformance: {} ... FAILED", check.name);
                let why = if e.is_panic() {
                    panic_message(e.into_panic())
                } else {
                    e.to_string()
                };
                failed.push(format!("{}: {why}", check.name));
            }
        }
    }
    if !failed.is_empty() {
        panic!(
            "conformance: {} of {} checks failed:\n  {}",
            failed.len(),
            all.len(),
            failed.join("\n  ")
        );
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panicked with a non-string payload".to_owned()
    }
}

// ---- helpers shared by the checks ----

/// A timestamp from milliseconds (the checks only use valid ones).
pub(crate) fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).expect("a valid timestamp")
}

/// 2026-01-01T00:00:00Z, hour aligned: the checks' "now".
pub(crate) const T0: i64 = 1_767_225_600_000;

pub(crate) fn tenant(s: &str) -> TenantId {
    s.parse().expect("a valid tenant id")
}

pub(crate) fn group(s: &str) -> GroupPath {
    s.parse().expect("a valid group path")
}

pub(crate) fn dev(s: &str) -> DeviceId {
    s.parse().expect("a valid device id")
}

pub(crate) fn series(s: &str) -> SeriesName {
    s.parse().expect("a valid series name")
}

/// A deterministic job id created at `ms`, made distinct by `n`.
pub(crate) fn job_id(ms: i64, n: u64) -> JobId {
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    JobId::from_parts(ts(ms), random)
}

/// Unwraps `r`, panicking with `what` and the error.
#[track_caller]
pub(crate) fn ok<T>(r: Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: expected success, got {:?} error: {e}", e.kind()),
    }
}

/// Asserts that `r` failed with `kind`.
#[track_caller]
pub(crate) fn expect_kind<T: Debug>(r: Result<T>, kind: ErrorKind, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected a {kind:?} error, got Ok({v:?})"),
        Err(e) => assert_eq!(
            e.kind(),
            kind,
            "{what}: expected a {kind:?} error, got {:?}: {e}",
            e.kind()
        ),
    }
}

/// Asserts that `r` failed (with any kind).
#[track_caller]
pub(crate) fn expect_err<T: Debug>(r: Result<T>, what: &str) {
    if let Ok(v) = r {
        panic!("{what}: expected an error, got Ok({v:?})");
    }
}

/// Fetches one page of a listing.
pub(crate) type Fetch<T> =
    Box<dyn FnMut(PageRequest) -> BoxFuture<'static, Result<Page<T>>> + Send>;

/// Walks a listing page by page with `limit` items per page and returns every item in order.
/// Checks that pages respect the limit, that a page announcing a next one is not empty, and that
/// the walk ends.
pub(crate) async fn walk<T: Debug>(what: &str, limit: u32, mut fetch: Fetch<T>) -> Vec<T> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    for round in 0..100_000u32 {
        let page = ok(
            fetch(PageRequest {
                limit,
                after: after.clone(),
            })
            .await,
            &format!("{what}: page {round} (limit {limit})"),
        );
        assert!(
            limit == 0 || page.items.len() <= limit as usize,
            "{what}: page {round} has {} items, more than the requested limit {limit}",
            page.items.len()
        );
        match page.next {
            None => {
                items.extend(page.items);
                return items;
            }
            Some(next) => {
                assert!(
                    !page.items.is_empty(),
                    "{what}: page {round} is empty but announces a next page {next:?}"
                );
                assert_ne!(
                    Some(&next),
                    after.as_ref(),
                    "{what}: page {round} returns the cursor it was given"
                );
                items.extend(page.items);
                after = Some(next);
            }
        }
    }
    panic!("{what}: the listing does not end");
}

/// Relative float comparison for sums and means.
pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
