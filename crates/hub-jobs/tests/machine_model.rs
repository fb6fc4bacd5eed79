//! The job state machine against a reference model written from its specification (the module
//! documentation of `hub_jobs::machine`), not from its code: random command sequences from every
//! actor, with current, stale and missing executions and time passing, are applied to both, and
//! after every step the outcome (changed, unchanged, or the error's kind) and the state,
//! version, execution, attempts, due time, result and status details must agree.

use hub_core::{ErrorKind, JobId, JobState, Timestamp};
use hub_jobs::machine::{self, Actor, Command, JobOptions, Outcome};
use hub_store::JobRecord;
use proptest::prelude::*;
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000_000;

/// The reference: plain fields, one `match` per command, times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    state: JobState,
    version: u64,
    execution: u32,
    attempts: u32,
    due: Option<i64>,
    retry_at: Option<i64>,
    /// How the latest execution ended: (execution, state, result then).
    ended: Option<(u32, JobState, Option<Value>)>,
    result: Option<Value>,
    details: Option<Value>,
    created: i64,
    ttl: Option<u64>,
    timeout: u64,
    step_cap: u64,
    max_attempts: u32,
    backoff_base: u64,
    backoff_max: u64,
}

#[derive(Debug, PartialEq)]
enum Step {
    Changed,
    Unchanged,
    Refused(ErrorKind),
}

use JobState as S;

fn active(s: JobState) -> bool {
    matches!(
        s,
        S::Delivered | S::InProgress | S::Canceling | S::CancelRejected
    )
}

fn terminal(s: JobState) -> bool {
    matches!(
        s,
        S::Succeeded
            | S::Failed
            | S::Rejected
            | S::TimedOut
            | S::Expired
            | S::Canceled
            | S::Removed
    )
}

fn owner(cmd: &Command) -> Actor {
    match cmd {
        Command::Cancel { .. } | Command::Remove => Actor::Controller,
        Command::Tick => Actor::Timer,
        _ => Actor::Device,
    }
}

impl Model {
    fn new(o: &JobOptions) -> Self {
        Model {
            state: S::Queued,
            version: 1,
            execution: 0,
            attempts: 0,
            due: o.ttl_ms.map(|t| T0 + t as i64),
            retry_at: None,
            ended: None,
            result: None,
            details: None,
            created: T0,
            ttl: o.ttl_ms,
            timeout: o.in_progress_timeout_ms,
            step_cap: o.step_timeout_max_ms.unwrap_or(o.in_progress_timeout_ms),
            max_attempts: o.max_attempts,
            backoff_base: o.retry_backoff_base_ms,
            backoff_max: o.retry_backoff_max_ms,
        }
    }

    fn ttl_passed(&self, now: i64) -> bool {
        self.execution == 0 && self.ttl.is_some_and(|t| now >= self.created + t as i64)
    }

    /// The state an execution ends in after a failure or timeout: back to the queue while
    /// attempts remain.
    fn fail_or_retry(&mut self, end: JobState, now: i64) -> JobState {
        self.attempts += 1;
        if self.attempts < self.max_attempts {
            let mut backoff = self.backoff_base;
            for _ in 1..self.attempts {
                backoff = backoff.saturating_mul(2);
            }
            let at = now + backoff.min(self.backoff_max) as i64;
            self.retry_at = Some(at);
            self.due = Some(at);
            self.ended = Some((self.execution, end, self.result.clone()));
            S::Queued
        } else {
            end
        }
    }

    fn apply(&mut self, actor: Actor, cmd: &Command, exec: Option<u32>, now: i64) -> Step {
        use Step::*;
        let conflict = Refused(ErrorKind::Conflict);
        if owner(cmd) != actor {
            return Refused(ErrorKind::Forbidden);
        }
        let from = self.state;
        if actor == Actor::Device && *cmd != Command::Claim {
            let Some(given) = exec else {
                return Refused(ErrorKind::InvalidInput);
            };
            let outcome = match cmd {
                Command::Succeed { result } => Some((S::Succeeded, result.clone())),
                Command::Fail { result } => Some((S::Failed, result.clone())),
                Command::Reject { result } => Some((S::Rejected, result.clone())),
                Command::AcceptCancel => Some((S::Canceled, None)),
                _ => None,
            };
            if let Some((end, result)) = outcome
                && let Some((e, s, r)) = &self.ended
                && *e == given
            {
                return if *s == end && *r == result {
                    Unchanged
                } else {
                    conflict
                };
            }
            if given != self.execution {
                return conflict;
            }
        }
        let to = match cmd {
            Command::Tick => {
                if terminal(from) || self.due.is_none_or(|d| d > now) {
                    return Unchanged;
                }
                match from {
                    S::Queued if self.retry_at.is_some() => {
                        self.retry_at = None;
                        self.due = None;
                        S::Queued
                    }
                    S::Queued if self.ttl_passed(now) => S::Expired,
                    S::Queued => return Unchanged,
                    S::Delivered | S::InProgress => self.fail_or_retry(S::TimedOut, now),
                    S::Canceling => S::Canceled,
                    _ => {
                        self.attempts += 1;
                        S::TimedOut
                    }
                }
            }
            Command::Cancel { force } => match from {
                S::Canceled => return Unchanged,
                S::Canceling if !force => return Unchanged,
                S::Queued => S::Canceled,
                s if active(s) && *force => S::Canceled,
                S::Delivered | S::InProgress | S::CancelRejected => S::Canceling,
                _ => return conflict,
            },
            Command::Remove => match from {
                S::Removed => return Unchanged,
                s if s == S::Queued || terminal(s) => S::Removed,
                _ => return conflict,
            },
            Command::Claim => match from {
                S::Delivered => return Unchanged,
                S::Queued => {
                    if self.retry_at.is_some_and(|t| t > now) || self.ttl_passed(now) {
                        return conflict;
                    }
                    self.retry_at = None;
                    self.ended = None;
                    self.execution += 1;
                    self.result = None;
                    self.details = None;
                    self.due = Some(now + self.timeout as i64);
                    S::Delivered
                }
                _ => return conflict,
            },
            Command::Start => match from {
                S::InProgress => return Unchanged,
                S::Delivered => S::InProgress,
                _ => return conflict,
            },
            Command::Progress {
                details,
                step_timeout_ms,
            } => {
                if !active(from) {
                    return conflict;
                }
                if details.is_some() {
                    self.details = details.clone();
                }
                if let Some(step) = step_timeout_ms {
                    self.due = Some(now + (*step).min(self.step_cap) as i64);
                }
                if from == S::Delivered {
                    S::InProgress
                } else {
                    from
                }
            }
            Command::Succeed { result } | Command::Reject { result } => {
                if !active(from) {
                    return conflict;
                }
                self.result = result.clone();
                if matches!(cmd, Command::Succeed { .. }) {
                    S::Succeeded
                } else {
                    S::Rejected
                }
            }
            Command::Fail { result } => {
                if !active(from) {
                    return conflict;
                }
                self.result = result.clone();
                if matches!(from, S::Delivered | S::InProgress) {
                    self.fail_or_retry(S::Failed, now)
                } else {
                    // No retry once a cancel was asked for.
                    self.attempts += 1;
                    S::Failed
                }
            }
            Command::AcceptCancel => match from {
                S::Canceling => S::Canceled,
                _ => return conflict,
            },
            Command::RefuseCancel => match from {
                S::Canceling => S::CancelRejected,
                S::CancelRejected => return Unchanged,
                _ => return conflict,
            },
        };
        if terminal(to) {
            self.due = None;
            if active(from) {
                self.ended = Some((self.execution, to, self.result.clone()));
            }
        }
        self.state = to;
        self.version += 1;
        Changed
    }
}

fn record(o: &JobOptions) -> JobRecord {
    let at = Timestamp::from_millis(T0).unwrap();
    let (options, due_at) = machine::initial_fields(o, at).unwrap();
    JobRecord {
        id: JobId::from_parts(at, [7; 10]),
        tenant: "acme".parse().unwrap(),
        device: "pump-7".parse().unwrap(),
        group: "acme/plant-1".parse().unwrap(),
        lane: hub_store::DEFAULT_LANE.to_owned(),
        seq: 1,
        state: S::Queued,
        version: 1,
        execution: 0,
        attempts: 0,
        document: json!({}),
        options,
        idempotency_key: None,
        created_by: "user:alice@acme".to_owned(),
        bulk: None,
        created_at: at,
        updated_at: at,
        due_at,
        status_details: None,
        result: None,
    }
}

fn agree(m: &Model, r: &JobRecord) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(r.state, m.state);
    prop_assert_eq!(r.version, m.version);
    prop_assert_eq!(r.execution, m.execution);
    prop_assert_eq!(r.attempts, m.attempts);
    prop_assert_eq!(r.due_at.map(Timestamp::as_millis), m.due);
    prop_assert_eq!(&r.result, &m.result);
    prop_assert_eq!(&r.status_details, &m.details);
    Ok(())
}

fn arb_doc() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![Just(None), (0u8..2).prop_map(|n| Some(json!(n)))]
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => any::<bool>().prop_map(|force| Command::Cancel { force }),
        1 => Just(Command::Remove),
        3 => Just(Command::Claim),
        2 => Just(Command::Start),
        1 => (arb_doc(), proptest::option::of(0u64..10_000)).prop_map(|(details, step_timeout_ms)| {
            Command::Progress {
                details,
                step_timeout_ms,
            }
        }),
        2 => arb_doc().prop_map(|result| Command::Succeed { result }),
        2 => arb_doc().prop_map(|result| Command::Fail { result }),
        1 => arb_doc().prop_map(|result| Command::Reject { result }),
        1 => Just(Command::AcceptCancel),
        1 => Just(Command::RefuseCancel),
        3 => Just(Command::Tick),
    ]
}

fn arb_options() -> impl Strategy<Value = JobOptions> {
    (
        proptest::option::of(1u64..15_000),
        1_000u64..10_000,
        proptest::option::of(1_000u64..5_000),
        1u32..=4,
        0u64..2_000,
        0u64..4,
    )
        .prop_map(|(ttl, timeout, step, attempts, base, factor)| JobOptions {
            ttl_ms: ttl,
            in_progress_timeout_ms: timeout,
            step_timeout_max_ms: step,
            max_attempts: attempts,
            retry_backoff_base_ms: base,
            retry_backoff_max_ms: base * (1 + factor),
            ..JobOptions::default()
        })
}

/// (command, which actor sends it: 0 = its owner, 1 = someone else; which execution:
/// 0 = current, 1 = previous, 2 = next, 3 = none; milliseconds that pass first).
fn arb_steps() -> impl Strategy<Value = Vec<(Command, u8, u8, u64)>> {
    proptest::collection::vec(
        (
            arb_command(),
            prop_oneof![9 => Just(0u8), 1 => Just(1u8)],
            prop_oneof![12 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
            prop_oneof![Just(0u64), 0u64..3_000, 0u64..20_000],
        ),
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_machine_agrees_with_the_reference_model(opts in arb_options(), steps in arb_steps()) {
        let mut job = record(&opts);
        let mut model = Model::new(&opts);
        agree(&model, &job)?;
        let mut now = T0;
        for (i, (cmd, who, pick, dt)) in steps.into_iter().enumerate() {
            now += dt as i64;
            let actor = match (owner(&cmd), who) {
                (a, 0) => a,
                (Actor::Device, _) => Actor::Controller,
                (_, _) => Actor::Device,
            };
            let exec = match pick {
                0 => Some(job.execution),
                1 => Some(job.execution.saturating_sub(1)),
                2 => Some(job.execution + 1),
                _ => None,
            };
            let expected = model.apply(actor, &cmd, exec, now);
            let at = Timestamp::from_millis(now).unwrap();
            let got = match machine::apply(&job, actor, &cmd, exec, at) {
                Ok(Outcome::Changed(c)) => {
                    prop_assert_eq!(c.record.updated_at, at);
                    job = c.record;
                    Step::Changed
                }
                Ok(Outcome::Unchanged) => Step::Unchanged,
                Err(e) => Step::Refused(e.kind()),
            };
            prop_assert_eq!(
                &got, &expected,
                "step {}: {:?} by {:?} (execution {:?}) at +{} ms", i, cmd, actor, exec, now - T0
            );
            agree(&model, &job)?;
        }
    }
}
