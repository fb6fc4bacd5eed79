//! The audit log: an append-only record of who did what to which resource.
//!
//! The trait offers no way to change or remove a single record: a record, once appended, reads
//! back the same until retention ([`AuditStore::prune_before`]) removes it with everything
//! else older than a cut-off. That is the only deletion, and it exists because an unbounded log
//! eventually fills the disk; run it from a scheduled retention task, never to hide an entry.

use serde::{Deserialize, Serialize};

use hub_core::{BoxFuture, GroupPath, Result, TenantId, Timestamp};

use crate::{Page, PageRequest};

/// How the audited request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The policy allowed it and it was carried out.
    Allowed,
    /// The policy refused it.
    Denied,
    /// The policy allowed it but carrying it out failed.
    Failed,
}

impl AuditOutcome {
    /// The stable snake_case name used in storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }

    /// The outcome named by [`AuditOutcome::as_str`].
    pub fn from_name(s: &str) -> Option<Self> {
        [
            AuditOutcome::Allowed,
            AuditOutcome::Denied,
            AuditOutcome::Failed,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// A record to append; the store assigns its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditRecord {
    /// When it happened.
    pub at: Timestamp,
    /// The tenant the resource belongs to; must be `group`'s tenant.
    pub tenant: TenantId,
    /// Who did it: a principal description (`hub_core::Principal::describe`), 1 to
    /// 256 bytes.
    pub actor: String,
    /// What was done, e.g. `job.create`: 1 to 64 bytes of `a-z 0-9 . _ -`.
    pub action: String,
    /// What it was done to, e.g. `device:acme/pump-7`: 1 to 256 bytes.
    pub resource: String,
    /// The group the resource lives in, so that subtree queries find it.
    pub group: GroupPath,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// Free-form details, at most
    /// [`StoreLimits::max_audit_details_bytes`](crate::StoreLimits::max_audit_details_bytes) of
    /// serialized JSON.
    pub details: serde_json::Value,
}

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Assigned by the store: strictly increasing in append order (an append that returned
    /// before another began has the smaller id), never reused, not necessarily dense.
    pub id: u64,
    /// When it happened.
    pub at: Timestamp,
    /// The tenant the resource belongs to.
    pub tenant: TenantId,
    /// Who did it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub resource: String,
    /// The group the resource lives in.
    pub group: GroupPath,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// Free-form details.
    pub details: serde_json::Value,
}

/// Which records [`AuditStore::query`] returns; the filters combine with AND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Records whose group is this group or lies below it (whole segments: `acme/plant-1` does
    /// not contain `acme/plant-10`). Its first segment is the tenant.
    pub root: GroupPath,
    /// Only records about exactly this resource.
    pub resource: Option<String>,
    /// Only records by exactly this actor.
    pub actor: Option<String>,
    /// Only records at or after this time.
    pub from: Option<Timestamp>,
    /// Only records before this time (exclusive).
    pub to: Option<Timestamp>,
}

impl AuditQuery {
    /// Every record in `root`'s subtree.
    pub fn subtree(root: GroupPath) -> Self {
        Self {
            root,
            resource: None,
            actor: None,
            from: None,
            to: None,
        }
    }
}

/// The audit log. Append-only: there is no update, and no deletion except retention.
pub trait AuditStore: Send + Sync + std::fmt::Debug + 'static {
    /// Appends a record and returns it with its id.
    ///
    /// Errors: [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for a malformed action,
    /// actor or resource or a group outside the tenant,
    /// [`TooLarge`](hub_core::ErrorKind::TooLarge) for oversized details; nothing is written.
    fn record<'a>(&'a self, record: NewAuditRecord) -> BoxFuture<'a, Result<AuditRecord>>;

    /// The records matching `query`, oldest first (by id); the page cursor is the id.
    ///
    /// On a backend shared by several nodes (PostgreSQL) ids are drawn when an append starts
    /// and become visible when it commits, so a record appended while a reader pages through
    /// the log can appear below a cursor the reader has already passed. A reader that follows
    /// the log continuously (an export) should stay a few seconds behind the newest records.
    ///
    /// Errors: [`InvalidInput`](hub_core::ErrorKind::InvalidInput) for a bad cursor, an empty
    /// time range (`from >= to`) or a malformed filter value.
    fn query<'a>(
        &'a self,
        query: &'a AuditQuery,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<AuditRecord>>>;

    /// Retention: removes every record (of `tenant`, or of every tenant with `None`) whose time
    /// is before `before`, and returns how many were removed. The only way records leave the
    /// log; ids of removed records are never handed out again.
    fn prune_before<'a>(
        &'a self,
        tenant: Option<&'a TenantId>,
        before: Timestamp,
    ) -> BoxFuture<'a, Result<u64>>;
}
