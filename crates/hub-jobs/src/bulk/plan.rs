//! The rollout planner: pure and deterministic.
//!
//! Given a bulk job's [`Rollout`], its stored [`RolloutState`], the [`Tally`] of its children so
//! far, how many targeted devices still wait for their child, and `now`, [`plan`] says how many
//! children to start now, whether the bulk job aborts or completes, and when to look again. It
//! reads no clock and touches no store; [`BulkJobs::tick`](super::BulkJobs::tick) does the I/O.
//!
//! Rules, in order:
//!
//! 1. **Abort criteria.** A criterion trips when at least `min_executions` children (and at least
//!    one) have finished, and the share of them that failed in its way reaches
//!    `threshold_percent`. Children whose creation was refused count as executed and failed.
//! 2. **Completion.** A bulk job that is not continuous completes when no targeted device waits
//!    for its child (or its scheduling windows are all over) and every child has finished.
//!    A continuous bulk job never completes; it ends only by cancellation or an abort.
//! 3. **Scheduling windows.** Outside every window nothing starts; with no window, always open.
//! 4. **Rate.** [`Rate::Fixed`]: at most `per_minute` children start in each minute, the minute
//!    counted from the first start in it. [`Rate::Exponential`]: the same with a per-minute rate
//!    that starts at `base_per_minute` and is multiplied by `factor` (rounded up, capped at
//!    `max_per_minute`) each time `increase_after` more children have succeeded.
//!    [`Rate::Unlimited`]: everything at once. In every case at most `max_batch` per call.
//!
//! ```
//! use std::time::Duration;
//! use hub_jobs::bulk::plan::{plan, PlanInput, Rate, Rollout, RolloutState, Tally, Verdict};
//! use hub_jobs::hub_core::Timestamp;
//!
//! let rollout = Rollout { rate: Rate::Fixed { per_minute: 3 }, ..Rollout::default() };
//! let now = Timestamp::from_millis(1_800_000_000_000)?;
//! let p = plan(&PlanInput {
//!     rollout: &rollout,
//!     continuous: false,
//!     state: RolloutState::default(),
//!     tally: Tally::default(),
//!     pending: 10,
//!     max_batch: 500,
//!     recheck: Duration::from_secs(5),
//!     now,
//! });
//! assert_eq!((p.start, p.verdict), (3, Verdict::Continue));
//! // The same minute: the quota is spent.
//! let q = plan(&PlanInput {
//!     rollout: &rollout,
//!     continuous: false,
//!     state: p.state,
//!     tally: Tally { unfinished: 3, ..Tally::default() },
//!     pending: 7,
//!     max_batch: 500,
//!     recheck: Duration::from_secs(5),
//!     now: now.saturating_add(Duration::from_secs(30)),
//! });
//! assert_eq!(q.start, 0);
//! # Ok::<(), hub_jobs::hub_core::TimestampError>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use hub_core::{Error, Result, Timestamp};

/// One minute, the unit of every rollout rate.
pub const MINUTE_MS: i64 = 60_000;
/// One day, the period of a [`Window::Daily`].
pub const DAY_MS: i64 = 86_400_000;
/// The highest rollout rate, children per minute.
pub const MAX_RATE_PER_MINUTE: u32 = 1_000_000;
/// The largest exponential growth factor.
pub const MAX_FACTOR: f64 = 10.0;
/// The most abort criteria of one rollout.
pub const MAX_CRITERIA: usize = 8;
/// The most scheduling windows of one rollout.
pub const MAX_WINDOWS: usize = 32;

/// How fast children are started.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rate {
    /// Every targeted device at once (still at most the service's batch per tick).
    #[default]
    Unlimited,
    /// At most `per_minute` children start in any one minute.
    Fixed {
        /// Children per minute, 1 to [`MAX_RATE_PER_MINUTE`].
        per_minute: u32,
    },
    /// A per-minute rate that grows while children succeed.
    Exponential {
        /// The first rate, children per minute.
        base_per_minute: u32,
        /// The growth factor, above 1 and at most [`MAX_FACTOR`].
        factor: f64,
        /// How many more children must succeed for each increase (at least 1).
        increase_after: u32,
        /// The highest rate, children per minute.
        max_per_minute: u32,
    },
}

/// Which finished children count against an [`AbortCriterion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureType {
    /// Failed children, and devices whose child could not be created.
    Failed,
    /// Children the device rejected.
    Rejected,
    /// Children that timed out or expired before delivery.
    TimedOut,
    /// Any of the above.
    Any,
}

impl FailureType {
    fn as_str(self) -> &'static str {
        match self {
            FailureType::Failed => "failed",
            FailureType::Rejected => "rejected",
            FailureType::TimedOut => "timed out",
            FailureType::Any => "failed, rejected or timed out",
        }
    }
}

/// Stop the rollout when too many children fail.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortCriterion {
    /// What counts as a failure.
    pub failure: FailureType,
    /// The share of finished children, in percent (above 0, at most 100), that trips it.
    pub threshold_percent: f64,
    /// How many children must have finished before it is looked at.
    pub min_executions: u32,
}

/// When children may be started. Times are UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// Once, from `start` (inclusive) to `end` (exclusive).
    Once {
        /// Opens.
        start: Timestamp,
        /// Closes.
        end: Timestamp,
    },
    /// Every day from `start_minute` (minutes after midnight UTC, below 1440) for
    /// `duration_minutes` (1 to 1440); a window may run past midnight.
    Daily {
        /// Opens, minutes after midnight UTC.
        start_minute: u32,
        /// How long it stays open, minutes.
        duration_minutes: u32,
    },
}

impl Window {
    fn is_open(&self, now: Timestamp) -> bool {
        match *self {
            Window::Once { start, end } => start <= now && now < end,
            Window::Daily {
                start_minute,
                duration_minutes,
            } => {
                let since =
                    (now.as_millis() - i64::from(start_minute) * MINUTE_MS).rem_euclid(DAY_MS);
                since < i64::from(duration_minutes) * MINUTE_MS
            }
        }
    }

    /// When it next opens at or after `now` (`now` itself when open); `None` when never again.
    fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        if self.is_open(now) {
            return Some(now);
        }
        match *self {
            Window::Once { start, .. } => (now < start).then_some(start),
            Window::Daily { start_minute, .. } => {
                let wait =
                    (i64::from(start_minute) * MINUTE_MS - now.as_millis()).rem_euclid(DAY_MS);
                Some(add_ms(now, wait))
            }
        }
    }
}

/// How a bulk job rolls out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rollout {
    /// How fast children start.
    pub rate: Rate,
    /// When to stop early.
    pub abort: Vec<AbortCriterion>,
    /// When children may start; empty: at any time.
    pub windows: Vec<Window>,
}

impl Rollout {
    /// Checks every value against its limit; [`ErrorKind::InvalidInput`](hub_core::ErrorKind)
    /// otherwise.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::invalid_input(m.to_owned()));
        let rate_ok = |r: u32| (1..=MAX_RATE_PER_MINUTE).contains(&r);
        match self.rate {
            Rate::Unlimited => {}
            Rate::Fixed { per_minute } if !rate_ok(per_minute) => {
                return bad("rollout rate per_minute must be 1 to 1000000");
            }
            Rate::Fixed { .. } => {}
            Rate::Exponential {
                base_per_minute,
                factor,
                increase_after,
                max_per_minute,
            } => {
                if !rate_ok(base_per_minute) || !rate_ok(max_per_minute) {
                    return bad("rollout rates must be 1 to 1000000 per minute");
                }
                if max_per_minute < base_per_minute {
                    return bad("rollout max_per_minute must be at least base_per_minute");
                }
                if !(factor.is_finite() && factor > 1.0 && factor <= MAX_FACTOR) {
                    return bad("rollout factor must be above 1 and at most 10");
                }
                if increase_after == 0 {
                    return bad("rollout increase_after must be at least 1");
                }
            }
        }
        if self.abort.len() > MAX_CRITERIA {
            return bad("a rollout has at most 8 abort criteria");
        }
        for c in &self.abort {
            let t = c.threshold_percent;
            if !(t.is_finite() && t > 0.0 && t <= 100.0) {
                return bad("abort threshold_percent must be above 0 and at most 100");
            }
        }
        if self.windows.len() > MAX_WINDOWS {
            return bad("a rollout has at most 32 scheduling windows");
        }
        for w in &self.windows {
            match *w {
                Window::Once { start, end } if start >= end => {
                    return bad("a scheduling window must start before it ends");
                }
                Window::Daily {
                    start_minute,
                    duration_minutes,
                } if start_minute >= 1440 || !(1..=1440).contains(&duration_minutes) => {
                    return bad(
                        "a daily window starts below minute 1440 and lasts 1 to 1440 minutes",
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether children may start at `now`.
    pub fn window_open(&self, now: Timestamp) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.is_open(now))
    }

    /// When a window next opens at or after `now`; `None` when none ever will.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        if self.windows.is_empty() {
            return Some(now);
        }
        self.windows.iter().filter_map(|w| w.next_open(now)).min()
    }

    /// The per-minute rate a rollout starts with (0 for [`Rate::Unlimited`]).
    pub fn initial_rate(&self) -> u32 {
        match self.rate {
            Rate::Unlimited => 0,
            Rate::Fixed { per_minute } => per_minute,
            Rate::Exponential {
                base_per_minute, ..
            } => base_per_minute,
        }
    }
}

/// What the planner remembers between calls (stored with the bulk job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutState {
    /// When the current rate minute began (at its first start).
    pub minute_start: Option<Timestamp>,
    /// How many children started in the current minute.
    pub started_this_minute: u32,
    /// The current per-minute rate (exponential rates grow).
    pub rate: u32,
    /// The succeeded count at the last rate increase.
    pub succeeded_at_increase: u64,
}

/// The children of a bulk job so far, by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tally {
    /// Not finished yet (queued, delivered, in progress, canceling).
    pub unfinished: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Rejected by the device.
    pub rejected: u64,
    /// Timed out, or expired before delivery.
    pub timed_out: u64,
    /// Canceled or removed.
    pub canceled: u64,
    /// Devices whose child could not be created.
    pub refused: u64,
}

impl Tally {
    /// Children that finished, refused creations included.
    pub fn executed(&self) -> u64 {
        self.succeeded + self.failed + self.rejected + self.timed_out + self.canceled + self.refused
    }

    /// The finished children that count as `kind` failures.
    pub fn failures(&self, kind: FailureType) -> u64 {
        match kind {
            FailureType::Failed => self.failed + self.refused,
            FailureType::Rejected => self.rejected,
            FailureType::TimedOut => self.timed_out,
            FailureType::Any => self.failed + self.refused + self.rejected + self.timed_out,
        }
    }
}

/// What [`plan`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The rollout's settings.
    pub rollout: &'a Rollout,
    /// Whether devices joining the group later get the job too (then it never completes).
    pub continuous: bool,
    /// The stored planner state.
    pub state: RolloutState,
    /// The children so far.
    pub tally: Tally,
    /// Targeted devices that have no child yet.
    pub pending: u64,
    /// The most children to start in one call.
    pub max_batch: u32,
    /// How soon to look again while children run (or, for a continuous job, for new devices).
    pub recheck: Duration,
    /// The time.
    pub now: Timestamp,
}

/// Where the bulk job goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep rolling out.
    Continue,
    /// Every child finished: complete.
    Complete,
    /// An abort criterion tripped.
    Abort {
        /// Which one, in words.
        reason: String,
    },
}

/// What [`plan`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// How many pending devices to start now.
    pub start: u64,
    /// The planner state to store, counting the starts.
    pub state: RolloutState,
    /// Where the bulk job goes.
    pub verdict: Verdict,
    /// When to call again; `None` when nothing will change by itself.
    pub next_check: Option<Timestamp>,
}

fn add_ms(t: Timestamp, ms: i64) -> Timestamp {
    t.saturating_add(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// Decides the next step of a rollout. Pure: same input, same plan.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let PlanInput {
        rollout,
        continuous,
        mut state,
        tally,
        pending,
        max_batch,
        recheck,
        now,
    } = *input;
    let stop = |verdict| Plan {
        start: 0,
        state,
        verdict,
        next_check: None,
    };

    let executed = tally.executed();
    for c in &rollout.abort {
        let failures = tally.failures(c.failure);
        if executed >= u64::from(c.min_executions.max(1))
            && failures as f64 * 100.0 >= c.threshold_percent * executed as f64
        {
            return stop(Verdict::Abort {
                reason: format!(
                    "{failures} of {executed} finished children {} ({:.1}%), at or above the \
                     abort threshold of {}%",
                    c.failure.as_str(),
                    failures as f64 * 100.0 / executed as f64,
                    c.threshold_percent
                ),
            });
        }
    }

    let next_open = rollout.next_open(now);
    if !continuous && tally.unfinished == 0 && (pending == 0 || next_open.is_none()) {
        return stop(Verdict::Complete);
    }

    // Grow an exponential rate for every `increase_after` successes since the last increase.
    if state.rate == 0 {
        state.rate = rollout.initial_rate();
    }
    if let Rate::Exponential {
        factor,
        increase_after,
        max_per_minute,
        ..
    } = rollout.rate
    {
        let step = u64::from(increase_after.max(1));
        while tally.succeeded.saturating_sub(state.succeeded_at_increase) >= step {
            state.succeeded_at_increase += step;
            let grown = (f64::from(state.rate) * factor).ceil();
            state.rate = if grown >= f64::from(max_per_minute) {
                max_per_minute
            } else {
                (grown as u32).max(state.rate)
            };
        }
    }

    // Look again soon while children run (to apply the abort criteria and complete), and
    // always for a continuous job (devices may join).
    let mut next_check = (continuous || tally.unfinished > 0).then(|| now.saturating_add(recheck));
    let earliest = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };

    let mut start = 0;
    if pending > 0 {
        if !rollout.window_open(now) {
            next_check = earliest(next_check, next_open);
        } else {
            let quota = match rollout.rate {
                Rate::Unlimited => u64::from(max_batch),
                Rate::Fixed { .. } | Rate::Exponential { .. } => {
                    let minute_over = state
                        .minute_start
                        .is_none_or(|m| now.as_millis() >= m.as_millis() + MINUTE_MS);
                    if minute_over {
                        state.minute_start = None;
                        state.started_this_minute = 0;
                    }
                    u64::from(state.rate.saturating_sub(state.started_this_minute))
                }
            };
            start = pending.min(quota).min(u64::from(max_batch));
            if start > 0 && !matches!(rollout.rate, Rate::Unlimited) {
                state.minute_start.get_or_insert(now);
                state.started_this_minute += start as u32;
            }
            if pending > start {
                let again = match state.minute_start {
                    // The quota of this minute is spent: when the next one begins.
                    Some(m) if u64::from(state.started_this_minute) >= u64::from(state.rate) => {
                        add_ms(m, MINUTE_MS)
                    }
                    // Cut by the batch size: at once.
                    _ => now,
                };
                next_check = earliest(next_check, Some(again));
            }
        }
    }
    if start > 0 {
        // The children started now run: look at them soon.
        next_check = earliest(next_check, Some(now.saturating_add(recheck)));
    }
    Plan {
        start,
        state,
        verdict: Verdict::Continue,
        next_check,
    }
}

#[cfg(test)]
mod tests;
