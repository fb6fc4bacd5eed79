//! The pure, deterministic job state machine.
//!
//! [`apply`] takes a stored [`JobRecord`], who acts ([`Actor`]), what they ask ([`Command`]), the
//! execution number the caller believes current and `now`, and returns either the next record
//! with the effects to carry out ([`Outcome::Changed`]), [`Outcome::Unchanged`] for an idempotent
//! repeat, or a typed [`TransitionError`]. It performs no I/O and reads no clock; the
//! [`JobService`](crate::service::JobService) stores the record with a compare-and-set on its
//! version and carries out the effects.
//!
//! ## Transitions
//!
//! Every state change the machine makes is one row of [`TRANSITIONS`]; `apply` refuses (as an
//! internal error) to make a change that is not in the table, and a unit test checks that the
//! table below is exactly [`transition_table_markdown`]. Anything not listed is an illegal
//! transition: [`TransitionError::Illegal`], HTTP 409.
//!
//! <!-- transition-table:start -->
//! | from | command | by | to | guard |
//! |---|---|---|---|---|
//! | queued | claim | device | delivered | not waiting out a retry backoff; time-to-live not passed; a new execution starts and its deadline is now + in_progress_timeout |
//! | queued | tick | timer | expired | never delivered and the time-to-live has passed |
//! | queued | tick | timer | queued | the retry backoff is over: the job may be claimed again |
//! | queued | cancel | controller | canceled | always |
//! | queued | force_cancel | controller | canceled | always |
//! | queued | remove | controller | removed | always |
//! | queued | tick | timer | failed | due, and the stored options are unreadable: the job fails with the reason in its status details |
//! | delivered | start | device | in_progress | current execution |
//! | delivered | progress | device | in_progress | current execution; a step timeout moves the deadline to now + min(step, step_timeout_max) |
//! | delivered | succeed | device | succeeded | current execution |
//! | delivered | fail | device | queued | current execution and attempts remain: the failure is recorded and the job waits out the backoff |
//! | delivered | fail | device | failed | current execution and no attempt remains |
//! | delivered | reject | device | rejected | current execution; never retried |
//! | delivered | cancel | controller | canceling | the device is asked to cancel |
//! | delivered | force_cancel | controller | canceled | always |
//! | delivered | tick | timer | queued | the deadline has passed and attempts remain |
//! | delivered | tick | timer | timed_out | the deadline has passed and no attempt remains |
//! | delivered | tick | timer | failed | due, and the stored options are unreadable: the job fails with the reason in its status details |
//! | in_progress | progress | device | in_progress | current execution; a step timeout moves the deadline to now + min(step, step_timeout_max) |
//! | in_progress | succeed | device | succeeded | current execution |
//! | in_progress | fail | device | queued | current execution and attempts remain: the failure is recorded and the job waits out the backoff |
//! | in_progress | fail | device | failed | current execution and no attempt remains |
//! | in_progress | reject | device | rejected | current execution; never retried |
//! | in_progress | cancel | controller | canceling | the device is asked to cancel |
//! | in_progress | force_cancel | controller | canceled | always |
//! | in_progress | tick | timer | queued | the deadline has passed and attempts remain |
//! | in_progress | tick | timer | timed_out | the deadline has passed and no attempt remains |
//! | in_progress | tick | timer | failed | due, and the stored options are unreadable: the job fails with the reason in its status details |
//! | canceling | progress | device | canceling | current execution (the device has not seen the request yet) |
//! | canceling | succeed | device | succeeded | current execution: the device finished first |
//! | canceling | fail | device | failed | current execution; no retry after a cancel request |
//! | canceling | reject | device | rejected | current execution |
//! | canceling | accept_cancel | device | canceled | current execution |
//! | canceling | refuse_cancel | device | cancel_rejected | current execution; the device goes on |
//! | canceling | force_cancel | controller | canceled | always |
//! | canceling | tick | timer | canceled | the deadline has passed without an answer |
//! | canceling | tick | timer | failed | due, and the stored options are unreadable: the job fails with the reason in its status details |
//! | cancel_rejected | progress | device | cancel_rejected | current execution; a step timeout moves the deadline |
//! | cancel_rejected | succeed | device | succeeded | current execution |
//! | cancel_rejected | fail | device | failed | current execution; no retry after a cancel request |
//! | cancel_rejected | reject | device | rejected | current execution |
//! | cancel_rejected | cancel | controller | canceling | the device is asked again |
//! | cancel_rejected | force_cancel | controller | canceled | always |
//! | cancel_rejected | tick | timer | timed_out | the deadline has passed; no retry after a cancel request |
//! | cancel_rejected | tick | timer | failed | due, and the stored options are unreadable: the job fails with the reason in its status details |
//! | succeeded | remove | controller | removed | always |
//! | failed | remove | controller | removed | always |
//! | rejected | remove | controller | removed | always |
//! | timed_out | remove | controller | removed | always |
//! | expired | remove | controller | removed | always |
//! | canceled | remove | controller | removed | always |
//! <!-- transition-table:end -->
//!
//! ## Rules around the table
//!
//! - **Who.** Each command belongs to one [`Actor`] ([`CommandKind::actor`]); any other actor
//!   gets [`TransitionError::WrongActor`] (403). Only the device moves a job to `delivered`, by
//!   claiming it.
//! - **Executions.** Every claim of a queued job starts a new execution (`execution + 1`).
//!   Device commands other than `claim` must name the current execution; an older or newer one is
//!   [`TransitionError::StaleExecution`] (409).
//! - **Idempotent repeats** return [`Outcome::Unchanged`] and write nothing: a claim of a job
//!   already delivered (redelivery of the same execution, for a device that lost the answer), a
//!   repeated `start`, a repeated result identical to the accepted one (same command, execution
//!   and result document, also while the job waits out a retry backoff), a repeated
//!   `accept_cancel` / `refuse_cancel`, `cancel` of a canceling or canceled job, `remove` of a
//!   removed job, and a `tick` when nothing is due. A different result for an execution that
//!   already ended is [`TransitionError::ConflictingResult`] (409). Once the job has been claimed
//!   again, results of the earlier execution are stale.
//! - **Terminal states** never change, with one exception: a controller may `remove` any
//!   terminal job (and a queued one), leaving a `removed` tombstone. Active jobs must be
//!   canceled first.
//! - **Retries.** `fail` and a timeout of an execution that was never asked to cancel are retried
//!   while `attempts < max_attempts`: the event stream sees the execution end (`failed` or
//!   `timed_out`) and the job go back to `queued` in one write, keeping its place in the queue,
//!   claimable after `min(retry_backoff_base * 2^(attempts-1), retry_backoff_max)`. `reject` is
//!   never retried.
//! - **Deadlines (no head-of-line blocking).** Every active state (`delivered`, `in_progress`,
//!   `canceling`, `cancel_rejected`) always has a `due_at`: the execution deadline set at the
//!   claim (`in_progress_timeout`, which is mandatory), moved only by the device's own step
//!   timeouts. A queued job has a `due_at` when it has a time-to-live or waits out a backoff.
//!   The one state without a timer is a queued job without time-to-live outside a backoff: it
//!   waits for the device itself and blocks nothing the device could claim, since claiming it
//!   is what the device would do next.
//! - **Timer ticks** past the due time apply the row for the state; a `tick` before the due time
//!   is a no-op, so clocks jumping back are harmless.
//! - **Unreadable options.** A record whose stored options cannot be read (a bug or a foreign
//!   writer) would refuse every command and, while due, be picked by every timer sweep first. The
//!   first `tick` once it is due ends it `failed` (from any non-terminal state), with
//!   `{"hub_error": "<reason>"}` as its status details and its options left as they were, so
//!   it neither blocks its device's lane nor starves the other due jobs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use hub_core::{Error, ErrorKind, Event, EventKind, JobNotice, JobState, Timestamp};
use hub_store::JobRecord;

/// The longest time-to-live of a queued job (30 days).
pub const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// The shortest in-progress timeout (1 second).
pub const MIN_IN_PROGRESS_TIMEOUT_MS: u64 = 1000;
/// The longest in-progress timeout and step timeout (7 days).
pub const MAX_IN_PROGRESS_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// The most executions of one job (the first one plus retries).
pub const MAX_ATTEMPTS: u32 = 10;
/// The longest retry backoff (1 day).
pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
/// The most jobs of one lane a device may hold at once.
pub const MAX_CONCURRENCY: u32 = 16;
/// The longest a creation may wait for an offline device to connect (60 seconds).
pub const MAX_WAIT_ONLINE_MS: u64 = 60_000;

/// What to do when the device is offline at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum DeliveryPolicy {
    /// Queue the job; the device gets it when it next connects or polls (bounded by `ttl_ms`).
    #[default]
    Queue,
    /// Refuse the creation with [`ErrorKind::Unavailable`] if the device is offline.
    FailIfOffline,
    /// Wait up to `max_wait_ms` for the device to connect, then refuse as
    /// [`DeliveryPolicy::FailIfOffline`] does.
    WaitOnline {
        /// How long to wait, at most [`MAX_WAIT_ONLINE_MS`].
        max_wait_ms: u64,
    },
}

/// A job's settings, given by its creator and stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobOptions {
    /// Time-to-live from creation: a job never delivered by then ends `expired`. `None`: no limit.
    pub ttl_ms: Option<u64>,
    /// The execution deadline, counted from the claim.
    pub in_progress_timeout_ms: u64,
    /// The longest step timeout a device may ask for with a progress report (longer requests are
    /// cut to this). `None`: the in-progress timeout.
    pub step_timeout_max_ms: Option<u64>,
    /// The most executions, the first included (1: no retry).
    pub max_attempts: u32,
    /// The backoff before the first retry; it doubles with every further attempt.
    pub retry_backoff_base_ms: u64,
    /// The longest backoff.
    pub retry_backoff_max_ms: u64,
    /// What to do when the device is offline at creation.
    pub delivery: DeliveryPolicy,
    /// How many jobs of the lane, counted from the head of the queue, the device may hold at
    /// once when this job is among them (1: one after another).
    pub concurrency: u32,
}

impl Default for JobOptions {
    /// No time-to-live, one hour to finish, no retry, queued delivery, one job at a time.
    fn default() -> Self {
        Self {
            ttl_ms: None,
            in_progress_timeout_ms: 3600 * 1000,
            step_timeout_max_ms: None,
            max_attempts: 1,
            retry_backoff_base_ms: 1000,
            retry_backoff_max_ms: 60_000,
            delivery: DeliveryPolicy::Queue,
            concurrency: 1,
        }
    }
}

impl JobOptions {
    /// Checks every value against its limit.
    pub fn validate(&self) -> Result<(), TransitionError> {
        let bad = |m: String| Err(TransitionError::InvalidOptions(m));
        if self.ttl_ms.is_some_and(|ttl| ttl == 0 || ttl > MAX_TTL_MS) {
            return bad(format!("ttl_ms must be 1 to {MAX_TTL_MS}"));
        }
        let timeout_range = MIN_IN_PROGRESS_TIMEOUT_MS..=MAX_IN_PROGRESS_TIMEOUT_MS;
        if !timeout_range.contains(&self.in_progress_timeout_ms) {
            return bad(format!(
                "in_progress_timeout_ms must be {MIN_IN_PROGRESS_TIMEOUT_MS} to {MAX_IN_PROGRESS_TIMEOUT_MS}"
            ));
        }
        if self
            .step_timeout_max_ms
            .is_some_and(|step| !timeout_range.contains(&step))
        {
            return bad(format!(
                "step_timeout_max_ms must be {MIN_IN_PROGRESS_TIMEOUT_MS} to {MAX_IN_PROGRESS_TIMEOUT_MS}"
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return bad(format!("max_attempts must be 1 to {MAX_ATTEMPTS}"));
        }
        if self.retry_backoff_max_ms > MAX_BACKOFF_MS
            || self.retry_backoff_base_ms > self.retry_backoff_max_ms
        {
            return bad(format!(
                "retry backoff must satisfy base <= max <= {MAX_BACKOFF_MS} ms"
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return bad(format!("concurrency must be 1 to {MAX_CONCURRENCY}"));
        }
        if let DeliveryPolicy::WaitOnline { max_wait_ms } = self.delivery
            && max_wait_ms > MAX_WAIT_ONLINE_MS
        {
            return bad(format!("max_wait_ms must be at most {MAX_WAIT_ONLINE_MS}"));
        }
        Ok(())
    }

    /// The backoff before the retry that follows `attempts` failed executions (`attempts >= 1`).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(40);
        let ms = self
            .retry_backoff_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.retry_backoff_max_ms);
        Duration::from_millis(ms)
    }

    fn step_cap_ms(&self) -> u64 {
        self.step_timeout_max_ms
            .unwrap_or(self.in_progress_timeout_ms)
    }
}

/// How an execution ended, remembered to recognise repeated results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedExecution {
    /// The execution.
    pub execution: u32,
    /// The state it ended in (`succeeded`, `failed`, `rejected`, `timed_out`, `canceled`, ...).
    pub state: JobState,
}

/// The machine's own bookkeeping, stored next to the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MachineData {
    /// While set, the queued job waits out a retry backoff and may not be claimed before it.
    pub retry_at: Option<Timestamp>,
    /// How the latest execution ended.
    pub last_end: Option<EndedExecution>,
}

/// What the job service keeps in [`JobRecord::options`]: `{"options": ..., "machine": ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StoredOptions {
    /// The creator's settings.
    pub options: JobOptions,
    /// The machine's bookkeeping.
    #[serde(default)]
    pub machine: MachineData,
}

impl StoredOptions {
    /// Reads the stored form from a record.
    pub fn from_record(job: &JobRecord) -> Result<Self, TransitionError> {
        serde_json::from_value(job.options.clone())
            .map_err(|e| TransitionError::CorruptOptions(e.to_string()))
    }

    /// The JSON stored in [`JobRecord::options`].
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// The `options` JSON and first `due_at` of a new job created at `now`.
pub fn initial_fields(
    options: &JobOptions,
    now: Timestamp,
) -> Result<(serde_json::Value, Option<Timestamp>), TransitionError> {
    options.validate()?;
    let stored = StoredOptions {
        options: *options,
        machine: MachineData::default(),
    };
    let due = options
        .ttl_ms
        .map(|ttl| now.saturating_add(Duration::from_millis(ttl)));
    Ok((stored.to_value(), due))
}

/// Whether a device may claim `job` at `now` as far as the job itself is concerned (the service
/// also checks the lane's concurrency window).
pub fn is_claimable(job: &JobRecord, now: Timestamp) -> bool {
    let Ok(stored) = StoredOptions::from_record(job) else {
        return false;
    };
    job.state == JobState::Queued
        && stored.machine.retry_at.is_none_or(|t| t <= now)
        && !ttl_passed(job, &stored.options, now)
}

fn ttl_passed(job: &JobRecord, options: &JobOptions, now: Timestamp) -> bool {
    job.execution == 0
        && options
            .ttl_ms
            .is_some_and(|ttl| now >= job.created_at.saturating_add(Duration::from_millis(ttl)))
}

/// Who causes a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A user, app or service acting through the Job API.
    Controller,
    /// The device executing the job.
    Device,
    /// The job service's timer.
    Timer,
}

impl Actor {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Actor::Controller => "controller",
            Actor::Device => "device",
            Actor::Timer => "timer",
        }
    }
}

/// A request to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Controller: cancel; `force` cancels an active job at once instead of asking the device.
    Cancel {
        /// Cancel at once, without the device's agreement.
        force: bool,
    },
    /// Controller: remove a queued or finished job.
    Remove,
    /// Device: take the job (delivery); starts a new execution.
    Claim,
    /// Device: begin executing.
    Start,
    /// Device: report progress, optionally asking for a new step deadline.
    Progress {
        /// Opaque status details (replace the stored ones when given).
        details: Option<serde_json::Value>,
        /// A new deadline `now + step`, cut to the job's `step_timeout_max_ms`.
        step_timeout_ms: Option<u64>,
    },
    /// Device: finished successfully.
    Succeed {
        /// Opaque result.
        result: Option<serde_json::Value>,
    },
    /// Device: finished unsuccessfully (retried by policy).
    Fail {
        /// Opaque result.
        result: Option<serde_json::Value>,
    },
    /// Device: refuses the job (invalid or incompatible); never retried.
    Reject {
        /// Opaque result.
        result: Option<serde_json::Value>,
    },
    /// Device: agrees to a cancel request.
    AcceptCancel,
    /// Device: refuses a cancel request and goes on.
    RefuseCancel,
    /// Timer: deadlines (time-to-live, execution deadline, retry backoff).
    Tick,
}

/// The kind of a [`Command`], as named in the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// [`Command::Claim`].
    Claim,
    /// [`Command::Start`].
    Start,
    /// [`Command::Progress`].
    Progress,
    /// [`Command::Succeed`].
    Succeed,
    /// [`Command::Fail`].
    Fail,
    /// [`Command::Reject`].
    Reject,
    /// [`Command::AcceptCancel`].
    AcceptCancel,
    /// [`Command::RefuseCancel`].
    RefuseCancel,
    /// [`Command::Cancel`] without force.
    Cancel,
    /// [`Command::Cancel`] with force.
    ForceCancel,
    /// [`Command::Remove`].
    Remove,
    /// [`Command::Tick`].
    Tick,
}

impl CommandKind {
    /// The only actor that may issue the command.
    pub const fn actor(self) -> Actor {
        match self {
            CommandKind::Cancel | CommandKind::ForceCancel | CommandKind::Remove => {
                Actor::Controller
            }
            CommandKind::Tick => Actor::Timer,
            _ => Actor::Device,
        }
    }

    /// The snake_case name used in the table.
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandKind::Claim => "claim",
            CommandKind::Start => "start",
            CommandKind::Progress => "progress",
            CommandKind::Succeed => "succeed",
            CommandKind::Fail => "fail",
            CommandKind::Reject => "reject",
            CommandKind::AcceptCancel => "accept_cancel",
            CommandKind::RefuseCancel => "refuse_cancel",
            CommandKind::Cancel => "cancel",
            CommandKind::ForceCancel => "force_cancel",
            CommandKind::Remove => "remove",
            CommandKind::Tick => "tick",
        }
    }
}

impl Command {
    /// The command's kind.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Cancel { force: false } => CommandKind::Cancel,
            Command::Cancel { force: true } => CommandKind::ForceCancel,
            Command::Remove => CommandKind::Remove,
            Command::Claim => CommandKind::Claim,
            Command::Start => CommandKind::Start,
            Command::Progress { .. } => CommandKind::Progress,
            Command::Succeed { .. } => CommandKind::Succeed,
            Command::Fail { .. } => CommandKind::Fail,
            Command::Reject { .. } => CommandKind::Reject,
            Command::AcceptCancel => CommandKind::AcceptCancel,
            Command::RefuseCancel => CommandKind::RefuseCancel,
            Command::Tick => CommandKind::Tick,
        }
    }
}

/// One row of the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: JobState,
    /// The command.
    pub command: CommandKind,
    /// The state after.
    pub to: JobState,
    /// When the row applies, in words.
    pub guard: &'static str,
}

const fn row(
    from: JobState,
    command: CommandKind,
    to: JobState,
    guard: &'static str,
) -> Transition {
    Transition {
        from,
        command,
        to,
        guard,
    }
}

use CommandKind as K;
use JobState as S;

const CURRENT: &str = "current execution";
const STEP: &str =
    "current execution; a step timeout moves the deadline to now + min(step, step_timeout_max)";
const FAIL_RETRY: &str = "current execution and attempts remain: the failure is recorded and the job waits out the backoff";
const FAIL_FINAL: &str = "current execution and no attempt remains";
const TIMEOUT_RETRY: &str = "the deadline has passed and attempts remain";
const TIMEOUT_FINAL: &str = "the deadline has passed and no attempt remains";
const ASK: &str = "the device is asked to cancel";
const ALWAYS: &str = "always";
const UNREADABLE: &str = "due, and the stored options are unreadable: the job fails with the reason in its status details";

/// Every transition the machine makes. The module docs show this table.
pub const TRANSITIONS: &[Transition] = &[
    row(
        S::Queued,
        K::Claim,
        S::Delivered,
        "not waiting out a retry backoff; time-to-live not passed; a new execution starts and its deadline is now + in_progress_timeout",
    ),
    row(
        S::Queued,
        K::Tick,
        S::Expired,
        "never delivered and the time-to-live has passed",
    ),
    row(
        S::Queued,
        K::Tick,
        S::Queued,
        "the retry backoff is over: the job may be claimed again",
    ),
    row(S::Queued, K::Cancel, S::Canceled, ALWAYS),
    row(S::Queued, K::ForceCancel, S::Canceled, ALWAYS),
    row(S::Queued, K::Remove, S::Removed, ALWAYS),
    row(S::Queued, K::Tick, S::Failed, UNREADABLE),
    row(S::Delivered, K::Start, S::InProgress, CURRENT),
    row(S::Delivered, K::Progress, S::InProgress, STEP),
    row(S::Delivered, K::Succeed, S::Succeeded, CURRENT),
    row(S::Delivered, K::Fail, S::Queued, FAIL_RETRY),
    row(S::Delivered, K::Fail, S::Failed, FAIL_FINAL),
    row(
        S::Delivered,
        K::Reject,
        S::Rejected,
        "current execution; never retried",
    ),
    row(S::Delivered, K::Cancel, S::Canceling, ASK),
    row(S::Delivered, K::ForceCancel, S::Canceled, ALWAYS),
    row(S::Delivered, K::Tick, S::Queued, TIMEOUT_RETRY),
    row(S::Delivered, K::Tick, S::TimedOut, TIMEOUT_FINAL),
    row(S::Delivered, K::Tick, S::Failed, UNREADABLE),
    row(S::InProgress, K::Progress, S::InProgress, STEP),
    row(S::InProgress, K::Succeed, S::Succeeded, CURRENT),
    row(S::InProgress, K::Fail, S::Queued, FAIL_RETRY),
    row(S::InProgress, K::Fail, S::Failed, FAIL_FINAL),
    row(
        S::InProgress,
        K::Reject,
        S::Rejected,
        "current execution; never retried",
    ),
    row(S::InProgress, K::Cancel, S::Canceling, ASK),
    row(S::InProgress, K::ForceCancel, S::Canceled, ALWAYS),
    row(S::InProgress, K::Tick, S::Queued, TIMEOUT_RETRY),
    row(S::InProgress, K::Tick, S::TimedOut, TIMEOUT_FINAL),
    row(S::InProgress, K::Tick, S::Failed, UNREADABLE),
    row(
        S::Canceling,
        K::Progress,
        S::Canceling,
        "current execution (the device has not seen the request yet)",
    ),
    row(
        S::Canceling,
        K::Succeed,
        S::Succeeded,
        "current execution: the device finished first",
    ),
    row(
        S::Canceling,
        K::Fail,
        S::Failed,
        "current execution; no retry after a cancel request",
    ),
    row(S::Canceling, K::Reject, S::Rejected, CURRENT),
    row(S::Canceling, K::AcceptCancel, S::Canceled, CURRENT),
    row(
        S::Canceling,
        K::RefuseCancel,
        S::CancelRejected,
        "current execution; the device goes on",
    ),
    row(S::Canceling, K::ForceCancel, S::Canceled, ALWAYS),
    row(
        S::Canceling,
        K::Tick,
        S::Canceled,
        "the deadline has passed without an answer",
    ),
    row(S::Canceling, K::Tick, S::Failed, UNREADABLE),
    row(
        S::CancelRejected,
        K::Progress,
        S::CancelRejected,
        "current execution; a step timeout moves the deadline",
    ),
    row(S::CancelRejected, K::Succeed, S::Succeeded, CURRENT),
    row(
        S::CancelRejected,
        K::Fail,
        S::Failed,
        "current execution; no retry after a cancel request",
    ),
    row(S::CancelRejected, K::Reject, S::Rejected, CURRENT),
    row(
        S::CancelRejected,
        K::Cancel,
        S::Canceling,
        "the device is asked again",
    ),
    row(S::CancelRejected, K::ForceCancel, S::Canceled, ALWAYS),
    row(
        S::CancelRejected,
        K::Tick,
        S::TimedOut,
        "the deadline has passed; no retry after a cancel request",
    ),
    row(S::CancelRejected, K::Tick, S::Failed, UNREADABLE),
    row(S::Succeeded, K::Remove, S::Removed, ALWAYS),
    row(S::Failed, K::Remove, S::Removed, ALWAYS),
    row(S::Rejected, K::Remove, S::Removed, ALWAYS),
    row(S::TimedOut, K::Remove, S::Removed, ALWAYS),
    row(S::Expired, K::Remove, S::Removed, ALWAYS),
    row(S::Canceled, K::Remove, S::Removed, ALWAYS),
];

/// The transition table as the markdown shown in the module docs.
pub fn transition_table_markdown() -> String {
    let mut out = String::from("| from | command | by | to | guard |\n|---|---|---|---|---|\n");
    for t in TRANSITIONS {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            t.from,
            t.command.as_str(),
            t.command.actor().as_str(),
            t.to,
            t.guard
        ));
    }
    out
}

/// The row for `(from, command, to)`, if the table has one.
pub fn find_transition(
    from: JobState,
    command: CommandKind,
    to: JobState,
) -> Option<&'static Transition> {
    TRANSITIONS
        .iter()
        .find(|t| t.from == from && t.command == command && t.to == to)
}

/// Why the machine refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The command belongs to another actor.
    #[error("a {actor} may not {command}")]
    WrongActor {
        /// Who asked.
        actor: &'static str,
        /// What.
        command: &'static str,
    },
    /// The table has no row for the command in this state.
    #[error("a job that is {from} cannot {command}")]
    Illegal {
        /// The current state.
        from: JobState,
        /// The command.
        command: &'static str,
    },
    /// The device named another execution than the current one.
    #[error("execution {given} is not the job's current execution {current}")]
    StaleExecution {
        /// The execution the device named.
        given: u32,
        /// The current execution.
        current: u32,
    },
    /// A device command named no execution.
    #[error("the report must name the execution it belongs to")]
    MissingExecution,
    /// A result differs from the one already accepted for this execution.
    #[error("execution {execution} already ended as {state} with another result")]
    ConflictingResult {
        /// The execution.
        execution: u32,
        /// How it ended.
        state: JobState,
    },
    /// The queued job may not be claimed yet or any more.
    #[error("the job cannot be claimed: {0}")]
    NotClaimable(&'static str),
    /// The job options are out of their limits.
    #[error("invalid job options: {0}")]
    InvalidOptions(String),
    /// The stored options could not be read (a bug or a foreign writer).
    #[error("stored job options are unreadable: {0}")]
    CorruptOptions(String),
    /// The code computed a transition that is not in the table (a bug).
    #[error("transition {from} -{command}-> {to} is not in the table")]
    NotInTable {
        /// From.
        from: JobState,
        /// Command.
        command: &'static str,
        /// To.
        to: JobState,
    },
}

impl TransitionError {
    /// The error kind a client sees.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransitionError::WrongActor { .. } => ErrorKind::Forbidden,
            TransitionError::Illegal { .. }
            | TransitionError::StaleExecution { .. }
            | TransitionError::ConflictingResult { .. }
            | TransitionError::NotClaimable(_) => ErrorKind::Conflict,
            TransitionError::MissingExecution | TransitionError::InvalidOptions(_) => {
                ErrorKind::InvalidInput
            }
            TransitionError::CorruptOptions(_) | TransitionError::NotInTable { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

impl From<TransitionError> for Error {
    fn from(e: TransitionError) -> Self {
        match e.kind() {
            ErrorKind::Internal => Error::internal(e),
            kind => Error::new(kind, e.to_string()),
        }
    }
}

/// What the caller must do after a successful transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    /// The record to store, conditioned on the version that was read; its `version` is already
    /// the one the store will assign (read version + 1).
    pub record: JobRecord,
    /// The table row applied.
    pub transition: &'static Transition,
    /// The events to publish, in order (two when an execution ends and the job is re-queued).
    pub events: Vec<Event>,
    /// A notice to push to the device.
    pub notice: Option<JobNotice>,
    /// The job stopped holding its place at the head of the device's queue, or became claimable
    /// again (it ended, went back to the queue, or its backoff is over): the service should tell
    /// the device that a job may be claimable.
    pub queue_released: bool,
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The job changes.
    Changed(Box<Changed>),
    /// An idempotent repeat, or a tick with nothing due: nothing to write, answer success.
    Unchanged,
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

fn result_state(kind: CommandKind) -> Option<JobState> {
    match kind {
        K::Succeed => Some(S::Succeeded),
        K::Fail => Some(S::Failed),
        K::Reject => Some(S::Rejected),
        K::AcceptCancel => Some(S::Canceled),
        _ => None,
    }
}

fn command_result(cmd: &Command) -> Option<&serde_json::Value> {
    match cmd {
        Command::Succeed { result } | Command::Fail { result } | Command::Reject { result } => {
            result.as_ref()
        }
        _ => None,
    }
}

/// Applies `cmd` from `actor` to `job` at `now`. `expected_execution` is required for device
/// commands other than [`Command::Claim`] and ignored otherwise. See the module docs.
pub fn apply(
    job: &JobRecord,
    actor: Actor,
    cmd: &Command,
    expected_execution: Option<u32>,
    now: Timestamp,
) -> Result<Outcome, TransitionError> {
    let kind = cmd.kind();
    if kind.actor() != actor {
        return Err(TransitionError::WrongActor {
            actor: actor.as_str(),
            command: kind.as_str(),
        });
    }
    let stored = match StoredOptions::from_record(job) {
        Ok(stored) => stored,
        // The timer needs no options to end a job that can no longer run; a tick with nothing
        // due is a no-op as always.
        Err(e) if kind == K::Tick => {
            return if !job.state.is_terminal() && job.due_at.is_some_and(|d| d <= now) {
                fail_unreadable(job, &e, now)
            } else {
                Ok(Outcome::Unchanged)
            };
        }
        Err(e) => return Err(e),
    };
    let opts = stored.options;
    let mut machine = stored.machine;
    let from = job.state;
    let illegal = || TransitionError::Illegal {
        from,
        command: kind.as_str(),
    };

    // Device reports name their execution; repeats of an accepted result are answered as success.
    if actor == Actor::Device && kind != K::Claim {
        let given = expected_execution.ok_or(TransitionError::MissingExecution)?;
        if let Some(end_state) = result_state(kind)
            && let Some(end) = machine.last_end.filter(|e| e.execution == given)
        {
            if end.state == end_state && job.result.as_ref() == command_result(cmd) {
                return Ok(Outcome::Unchanged);
            }
            return Err(TransitionError::ConflictingResult {
                execution: given,
                state: end.state,
            });
        }
        if given != job.execution {
            return Err(TransitionError::StaleExecution {
                given,
                current: job.execution,
            });
        }
    }

    let mut next = job.clone();
    let mut notice = None;
    // (state the execution ended in, when it differs from the stored state) for the events.
    let mut ended_as: Option<JobState> = None;
    let to: JobState = match (from, cmd) {
        // Timer.
        (_, Command::Tick) => {
            let due = job.due_at.is_some_and(|d| d <= now);
            if !due || from.is_terminal() {
                return Ok(Outcome::Unchanged);
            }
            match from {
                S::Queued if machine.retry_at.is_some() => {
                    machine.retry_at = None;
                    next.due_at = None;
                    S::Queued
                }
                S::Queued if ttl_passed(job, &opts, now) => {
                    next.due_at = None;
                    S::Expired
                }
                // No timer of a queued job is due (not reached by records this machine wrote).
                S::Queued => return Ok(Outcome::Unchanged),
                S::Delivered | S::InProgress => end_or_retry(
                    &mut next,
                    &mut machine,
                    &opts,
                    S::TimedOut,
                    now,
                    &mut ended_as,
                ),
                S::Canceling => S::Canceled,
                _ => {
                    // CancelRejected: the execution timed out; no retry after a cancel request.
                    next.attempts = job.attempts.saturating_add(1);
                    S::TimedOut
                }
            }
        }
        // Controller.
        (S::Canceling | S::Canceled, Command::Cancel { force: false }) => {
            return Ok(Outcome::Unchanged);
        }
        (S::Canceled, Command::Cancel { force: true }) => return Ok(Outcome::Unchanged),
        (S::Queued, Command::Cancel { .. }) => S::Canceled,
        (s, Command::Cancel { force: true }) if s.is_active() => S::Canceled,
        (S::Delivered | S::InProgress | S::CancelRejected, Command::Cancel { force: false }) => {
            notice = Some(JobNotice::CancelRequested { job: job.id });
            S::Canceling
        }
        (S::Removed, Command::Remove) => return Ok(Outcome::Unchanged),
        (s, Command::Remove) if s == S::Queued || s.is_terminal() => S::Removed,
        // Device.
        (S::Queued, Command::Claim) => {
            if machine.retry_at.is_some_and(|t| t > now) {
                return Err(TransitionError::NotClaimable(
                    "it waits out a retry backoff",
                ));
            }
            if ttl_passed(job, &opts, now) {
                return Err(TransitionError::NotClaimable("its time-to-live has passed"));
            }
            machine.retry_at = None;
            machine.last_end = None;
            next.execution = job.execution.saturating_add(1);
            next.status_details = None;
            next.result = None;
            next.due_at = Some(now.saturating_add(ms(opts.in_progress_timeout_ms)));
            S::Delivered
        }
        (S::Delivered, Command::Claim) => return Ok(Outcome::Unchanged),
        (S::InProgress, Command::Start) => return Ok(Outcome::Unchanged),
        (S::Delivered, Command::Start) => S::InProgress,
        (
            S::Delivered | S::InProgress | S::Canceling | S::CancelRejected,
            Command::Progress {
                details,
                step_timeout_ms,
            },
        ) => {
            if let Some(d) = details {
                next.status_details = Some(d.clone());
            }
            if let Some(step) = step_timeout_ms {
                let step = (*step).min(opts.step_cap_ms());
                next.due_at = Some(now.saturating_add(ms(step)));
            }
            if from == S::Delivered {
                S::InProgress
            } else {
                from
            }
        }
        (s, Command::Succeed { result } | Command::Reject { result }) if s.is_active() => {
            next.result = result.clone();
            next.due_at = None;
            if kind == K::Succeed {
                S::Succeeded
            } else {
                S::Rejected
            }
        }
        (s, Command::Fail { result }) if s.is_active() => {
            next.result = result.clone();
            if matches!(s, S::Delivered | S::InProgress) {
                end_or_retry(
                    &mut next,
                    &mut machine,
                    &opts,
                    S::Failed,
                    now,
                    &mut ended_as,
                )
            } else {
                next.attempts = job.attempts.saturating_add(1);
                next.due_at = None;
                S::Failed
            }
        }
        (S::Canceling, Command::AcceptCancel) => S::Canceled,
        (S::Canceling, Command::RefuseCancel) => S::CancelRejected,
        (S::CancelRejected, Command::RefuseCancel) => return Ok(Outcome::Unchanged),
        _ => return Err(illegal()),
    };

    let transition = find_transition(from, kind, to).ok_or(TransitionError::NotInTable {
        from,
        command: kind.as_str(),
        to,
    })?;

    if to.is_terminal() {
        next.due_at = None;
        if from.is_active() {
            machine.last_end = Some(EndedExecution {
                execution: job.execution,
                state: to,
            });
        }
    }
    next.state = to;
    next.version = job.version.saturating_add(1);
    next.updated_at = now;
    next.options = StoredOptions {
        options: opts,
        machine,
    }
    .to_value();

    let event = |from: JobState, to: JobState| Event {
        at: now,
        group: job.group.clone(),
        kind: EventKind::JobStateChanged {
            job: job.id,
            device: job.device.clone(),
            from: Some(from),
            to,
            version: next.version,
        },
    };
    let events = match ended_as {
        Some(end) => vec![event(from, end), event(end, to)],
        None if to != from => vec![event(from, to)],
        None => Vec::new(),
    };
    let queue_released = (to.is_terminal() && !from.is_terminal()) || to == S::Queued;
    Ok(Outcome::Changed(Box::new(Changed {
        record: next,
        transition,
        events,
        notice,
        queue_released,
    })))
}

/// Ends a due job whose options cannot be read: `failed`, the reason in its status details.
fn fail_unreadable(
    job: &JobRecord,
    reason: &TransitionError,
    now: Timestamp,
) -> Result<Outcome, TransitionError> {
    let from = job.state;
    let to = S::Failed;
    let transition = find_transition(from, K::Tick, to).ok_or(TransitionError::NotInTable {
        from,
        command: K::Tick.as_str(),
        to,
    })?;
    let mut next = job.clone();
    next.state = to;
    next.due_at = None;
    next.status_details = Some(serde_json::json!({ "hub_error": reason.to_string() }));
    next.version = job.version.saturating_add(1);
    next.updated_at = now;
    let event = Event {
        at: now,
        group: job.group.clone(),
        kind: EventKind::JobStateChanged {
            job: job.id,
            device: job.device.clone(),
            from: Some(from),
            to,
            version: next.version,
        },
    };
    Ok(Outcome::Changed(Box::new(Changed {
        record: next,
        transition,
        events: vec![event],
        notice: None,
        queue_released: true,
    })))
}

/// Ends the current execution as `end` (failed or timed out), re-queueing it with a backoff when
/// attempts remain. Returns the record's next state.
fn end_or_retry(
    next: &mut JobRecord,
    machine: &mut MachineData,
    opts: &JobOptions,
    end: JobState,
    now: Timestamp,
    ended_as: &mut Option<JobState>,
) -> JobState {
    next.attempts = next.attempts.saturating_add(1);
    if next.attempts < opts.max_attempts {
        let at = now.saturating_add(opts.backoff(next.attempts));
        machine.retry_at = Some(at);
        machine.last_end = Some(EndedExecution {
            execution: next.execution,
            state: end,
        });
        next.due_at = Some(at);
        *ended_as = Some(end);
        S::Queued
    } else {
        next.due_at = None;
        end
    }
}

#[cfg(test)]
mod tests;
