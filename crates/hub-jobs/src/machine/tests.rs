use std::collections::HashSet;

use hub_core::{ErrorKind, JobId};
use proptest::prelude::*;
use serde_json::json;

use super::*;

const T0: i64 = 1_000_000;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms).unwrap()
}

fn job_with(options: JobOptions) -> JobRecord {
    let (opts, due) = initial_fields(&options, at(0)).unwrap();
    JobRecord {
        id: JobId::from_parts(at(0), [1; 10]),
        tenant: "acme".parse().unwrap(),
        device: "pump-7".parse().unwrap(),
        group: "acme/plant-1".parse().unwrap(),
        lane: hub_store::DEFAULT_LANE.to_owned(),
        seq: 1,
        state: JobState::Queued,
        version: 1,
        execution: 0,
        attempts: 0,
        document: json!({"op": "reboot"}),
        options: opts,
        idempotency_key: None,
        created_by: "user:alice@acme".to_owned(),
        bulk: None,
        created_at: at(0),
        updated_at: at(0),
        due_at: due,
        status_details: None,
        result: None,
    }
}

fn job() -> JobRecord {
    job_with(JobOptions::default())
}

fn changed(outcome: Outcome) -> Changed {
    match outcome {
        Outcome::Changed(c) => *c,
        Outcome::Unchanged => panic!("expected a change"),
    }
}

/// Applies and returns the new record (panics on refusal or no change).
fn step(j: &JobRecord, actor: Actor, cmd: Command, exec: Option<u32>, now: i64) -> JobRecord {
    changed(apply(j, actor, &cmd, exec, at(now)).unwrap()).record
}

fn claimed(j: &JobRecord, now: i64) -> JobRecord {
    step(j, Actor::Device, Command::Claim, None, now)
}

fn succeed(result: serde_json::Value) -> Command {
    Command::Succeed {
        result: Some(result),
    }
}

fn fail(result: serde_json::Value) -> Command {
    Command::Fail {
        result: Some(result),
    }
}

#[test]
fn doc_table_is_the_const_table() {
    let src = include_str!("../machine.rs");
    let start = src.find("<!-- transition-table:start -->").unwrap();
    let end = src.find("<!-- transition-table:end -->").unwrap();
    let doc: String = src[start..end]
        .lines()
        .skip(1)
        .map(|l| l.trim_start().trim_start_matches("//!").trim_start())
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(doc, transition_table_markdown());
}

#[test]
fn table_rows_are_unique_and_respect_terminality() {
    let mut seen = HashSet::new();
    for t in TRANSITIONS {
        assert!(
            seen.insert((t.from, t.command, t.to)),
            "duplicate row {t:?}"
        );
        if t.from.is_terminal() {
            assert_eq!(
                (t.command, t.to),
                (CommandKind::Remove, JobState::Removed),
                "terminal states only get removed: {t:?}"
            );
        }
        if t.to == JobState::Delivered {
            assert_eq!(t.command.actor(), Actor::Device);
        }
        assert!(
            !(t.from == JobState::Rejected && t.to == JobState::Queued),
            "rejected is never retried"
        );
    }
}

#[test]
fn claim_starts_an_execution_with_a_deadline_and_redelivery_is_unchanged() {
    let j = job();
    let c = changed(apply(&j, Actor::Device, &Command::Claim, None, at(10)).unwrap());
    assert_eq!(c.record.state, JobState::Delivered);
    assert_eq!(c.record.execution, 1);
    assert_eq!(c.record.version, 2);
    assert_eq!(c.record.due_at, Some(at(10 + 3_600_000)));
    assert_eq!(c.events.len(), 1);
    // The device lost the answer and claims again: same execution, nothing written.
    assert_eq!(
        apply(&c.record, Actor::Device, &Command::Claim, None, at(20)).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn only_the_right_actor_may_issue_a_command() {
    let j = job();
    let e = apply(&j, Actor::Controller, &Command::Claim, None, at(0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    let e = apply(
        &j,
        Actor::Device,
        &Command::Cancel { force: true },
        Some(0),
        at(0),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    let e = apply(&j, Actor::Device, &Command::Tick, Some(0), at(0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

#[test]
fn illegal_transitions_and_stale_executions_are_conflicts() {
    let j = job();
    // A queued job cannot be started before it is claimed.
    let e = apply(&j, Actor::Device, &Command::Start, Some(0), at(0)).unwrap_err();
    assert!(matches!(e, TransitionError::Illegal { .. }), "{e:?}");
    assert_eq!(hub_core::Error::from(e).problem().status, 409);
    let d = claimed(&j, 0);
    let e = apply(&d, Actor::Device, &Command::Start, Some(7), at(1)).unwrap_err();
    assert_eq!(
        e,
        TransitionError::StaleExecution {
            given: 7,
            current: 1
        }
    );
    let e = apply(&d, Actor::Device, &Command::Start, None, at(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // A finished job cannot be canceled.
    let s = step(&d, Actor::Device, succeed(json!(1)), Some(1), 2);
    let e = apply(
        &s,
        Actor::Controller,
        &Command::Cancel { force: true },
        None,
        at(3),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[test]
fn a_repeated_result_is_unchanged_and_a_different_one_is_refused() {
    let d = claimed(&job(), 0);
    let s = step(&d, Actor::Device, succeed(json!({"ok": true})), Some(1), 5);
    assert_eq!(s.state, JobState::Succeeded);
    assert_eq!(
        apply(
            &s,
            Actor::Device,
            &succeed(json!({"ok": true})),
            Some(1),
            at(6)
        )
        .unwrap(),
        Outcome::Unchanged
    );
    let e = apply(
        &s,
        Actor::Device,
        &succeed(json!({"ok": false})),
        Some(1),
        at(6),
    )
    .unwrap_err();
    assert!(
        matches!(e, TransitionError::ConflictingResult { .. }),
        "{e:?}"
    );
    let e = apply(
        &s,
        Actor::Device,
        &fail(json!({"ok": true})),
        Some(1),
        at(6),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[test]
fn failures_are_retried_with_growing_backoff_then_final() {
    let opts = JobOptions {
        max_attempts: 3,
        retry_backoff_base_ms: 1000,
        retry_backoff_max_ms: 1500,
        ..JobOptions::default()
    };
    let j = job_with(opts);
    let d = claimed(&j, 0);
    let c = changed(apply(&d, Actor::Device, &fail(json!("e1")), Some(1), at(10)).unwrap());
    let q = c.record;
    assert_eq!((q.state, q.attempts, q.execution), (JobState::Queued, 1, 1));
    assert_eq!(q.due_at, Some(at(1010)));
    let tos: Vec<_> = c
        .events
        .iter()
        .map(|e| match &e.kind {
            EventKind::JobStateChanged { from, to, .. } => (*from, *to),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        tos,
        vec![
            (Some(JobState::Delivered), JobState::Failed),
            (Some(JobState::Failed), JobState::Queued)
        ]
    );
    // The repeated failure report is answered as success while the job waits.
    assert_eq!(
        apply(&q, Actor::Device, &fail(json!("e1")), Some(1), at(11)).unwrap(),
        Outcome::Unchanged
    );
    // Not claimable during the backoff.
    assert!(!is_claimable(&q, at(1009)));
    let e = apply(&q, Actor::Device, &Command::Claim, None, at(1009)).unwrap_err();
    assert!(matches!(e, TransitionError::NotClaimable(_)));
    // The timer ends the backoff.
    let q = step(&q, Actor::Timer, Command::Tick, None, 1010);
    assert!(is_claimable(&q, at(1010)));
    assert_eq!(q.due_at, None);
    // Second execution times out: second backoff is capped at 1500 ms.
    let d2 = claimed(&q, 2000);
    assert_eq!(d2.execution, 2);
    let q2 = step(&d2, Actor::Timer, Command::Tick, None, 2000 + 3_600_000);
    assert_eq!((q2.state, q2.attempts), (JobState::Queued, 2));
    assert_eq!(q2.due_at, Some(at(2000 + 3_600_000 + 1500)));
    // A late success of the timed-out execution is refused.
    let e = apply(
        &q2,
        Actor::Device,
        &succeed(json!(1)),
        Some(2),
        at(3_602_001),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // Third and last execution fails for good.
    let q2 = step(&q2, Actor::Timer, Command::Tick, None, 3_603_500);
    let d3 = claimed(&q2, 3_603_500);
    let f = step(&d3, Actor::Device, fail(json!("e3")), Some(3), 3_603_600);
    assert_eq!((f.state, f.attempts, f.due_at), (JobState::Failed, 3, None));
}

#[test]
fn canceling_a_job_waiting_to_retry_keeps_the_failure_recognisable() {
    let j = job_with(JobOptions {
        max_attempts: 2,
        ..JobOptions::default()
    });
    let d = claimed(&j, 0);
    let q = step(&d, Actor::Device, fail(json!("e")), Some(1), 1);
    assert_eq!(q.state, JobState::Queued);
    let c = step(
        &q,
        Actor::Controller,
        Command::Cancel { force: false },
        None,
        2,
    );
    assert_eq!(c.state, JobState::Canceled);
    assert_eq!(
        apply(&c, Actor::Device, &fail(json!("e")), Some(1), at(3)).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn rejection_is_never_retried() {
    let j = job_with(JobOptions {
        max_attempts: 5,
        ..JobOptions::default()
    });
    let d = claimed(&j, 0);
    let r = step(
        &d,
        Actor::Device,
        Command::Reject { result: None },
        Some(1),
        1,
    );
    assert_eq!(
        (r.state, r.attempts, r.due_at),
        (JobState::Rejected, 0, None)
    );
}

#[test]
fn ttl_expires_only_undelivered_jobs() {
    let j = job_with(JobOptions {
        ttl_ms: Some(5000),
        ..JobOptions::default()
    });
    assert_eq!(j.due_at, Some(at(5000)));
    assert_eq!(
        apply(&j, Actor::Timer, &Command::Tick, None, at(4999)).unwrap(),
        Outcome::Unchanged
    );
    let e = step(&j, Actor::Timer, Command::Tick, None, 5000);
    assert_eq!(e.state, JobState::Expired);
    assert!(apply(&j, Actor::Device, &Command::Claim, None, at(5000)).is_err());
    // Claimed in time: the time-to-live no longer applies.
    let d = claimed(&j, 4000);
    assert_eq!(d.due_at, Some(at(4000 + 3_600_000)));
}

#[test]
fn cooperative_cancel_asks_the_device_and_it_may_refuse() {
    let d = claimed(&job(), 0);
    let ip = step(&d, Actor::Device, Command::Start, Some(1), 1);
    let c = changed(
        apply(
            &ip,
            Actor::Controller,
            &Command::Cancel { force: false },
            None,
            at(2),
        )
        .unwrap(),
    );
    assert_eq!(c.record.state, JobState::Canceling);
    assert_eq!(c.notice, Some(JobNotice::CancelRequested { job: ip.id }));
    let refused = step(&c.record, Actor::Device, Command::RefuseCancel, Some(1), 3);
    assert_eq!(refused.state, JobState::CancelRejected);
    let p = step(
        &refused,
        Actor::Device,
        Command::Progress {
            details: Some(json!({"pct": 50})),
            step_timeout_ms: Some(10_000),
        },
        Some(1),
        4,
    );
    assert_eq!(p.state, JobState::CancelRejected);
    assert_eq!(p.due_at, Some(at(10_004)));
    assert_eq!(p.status_details, Some(json!({"pct": 50})));
    let done = step(&p, Actor::Device, succeed(json!("ok")), Some(1), 5);
    assert_eq!(done.state, JobState::Succeeded);

    let accepted = step(&c.record, Actor::Device, Command::AcceptCancel, Some(1), 3);
    assert_eq!(accepted.state, JobState::Canceled);
    assert_eq!(
        apply(
            &accepted,
            Actor::Device,
            &Command::AcceptCancel,
            Some(1),
            at(4)
        )
        .unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn forced_cancel_is_immediate_and_releases_the_queue() {
    let d = claimed(&job(), 0);
    let c = changed(
        apply(
            &d,
            Actor::Controller,
            &Command::Cancel { force: true },
            None,
            at(1),
        )
        .unwrap(),
    );
    assert_eq!(c.record.state, JobState::Canceled);
    assert!(c.queue_released);
    assert_eq!(c.record.due_at, None);
}

#[test]
fn step_timeouts_are_capped() {
    let j = job_with(JobOptions {
        in_progress_timeout_ms: 60_000,
        step_timeout_max_ms: Some(30_000),
        ..JobOptions::default()
    });
    let d = claimed(&j, 0);
    let p = step(
        &d,
        Actor::Device,
        Command::Progress {
            details: None,
            step_timeout_ms: Some(999_999_999),
        },
        Some(1),
        100,
    );
    assert_eq!(
        (p.state, p.due_at),
        (JobState::InProgress, Some(at(30_100)))
    );
}

#[test]
fn options_are_validated() {
    let bad = [
        JobOptions {
            max_attempts: 0,
            ..JobOptions::default()
        },
        JobOptions {
            max_attempts: MAX_ATTEMPTS + 1,
            ..JobOptions::default()
        },
        JobOptions {
            in_progress_timeout_ms: 0,
            ..JobOptions::default()
        },
        JobOptions {
            ttl_ms: Some(0),
            ..JobOptions::default()
        },
        JobOptions {
            concurrency: 0,
            ..JobOptions::default()
        },
        JobOptions {
            retry_backoff_base_ms: 10,
            retry_backoff_max_ms: 5,
            ..JobOptions::default()
        },
        JobOptions {
            delivery: DeliveryPolicy::WaitOnline {
                max_wait_ms: MAX_WAIT_ONLINE_MS + 1,
            },
            ..JobOptions::default()
        },
    ];
    for o in bad {
        let e = o.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{o:?}");
    }
    assert!(JobOptions::default().validate().is_ok());
    let o: JobOptions = serde_json::from_value(json!({"ttl_ms": 100})).unwrap();
    assert_eq!(o.ttl_ms, Some(100));
    assert!(serde_json::from_value::<JobOptions>(json!({"tll_ms": 100})).is_err());
}

#[test]
fn removal_of_active_jobs_is_refused_and_removal_is_idempotent() {
    let d = claimed(&job(), 0);
    assert!(apply(&d, Actor::Controller, &Command::Remove, None, at(1)).is_err());
    let r = step(&job(), Actor::Controller, Command::Remove, None, 1);
    assert_eq!(r.state, JobState::Removed);
    assert_eq!(
        apply(&r, Actor::Controller, &Command::Remove, None, at(2)).unwrap(),
        Outcome::Unchanged
    );
}

// ---- unreadable options ----------------------------------------------------------------------

/// A record in `state`, due at `at(0)`, whose options no longer parse.
fn unreadable(state: JobState) -> JobRecord {
    let mut j = job();
    j.state = state;
    j.execution = u32::from(state != JobState::Queued);
    j.options = json!({"options": "garbage"});
    j.due_at = Some(at(0));
    j
}

#[test]
fn a_due_job_with_unreadable_options_fails_with_the_reason_and_leaves_the_timer() {
    for state in JobState::ALL.into_iter().filter(|s| !s.is_terminal()) {
        let j = unreadable(state);
        // Not due yet: nothing to do.
        assert_eq!(
            apply(&j, Actor::Timer, &Command::Tick, None, at(-1)).unwrap(),
            Outcome::Unchanged
        );
        // Device and controller commands are still refused: only the timer ends it.
        let claim = apply(&j, Actor::Device, &Command::Claim, None, at(1)).unwrap_err();
        assert_eq!(claim.kind(), ErrorKind::Internal, "{state}");

        let c = changed(apply(&j, Actor::Timer, &Command::Tick, None, at(1)).unwrap());
        assert_eq!(c.record.state, JobState::Failed, "{state}");
        assert_eq!(c.record.due_at, None, "a failed job leaves the timer's set");
        assert_eq!(c.record.version, j.version + 1);
        assert_eq!(c.record.options, j.options, "the evidence is kept");
        let reason = c.record.status_details.as_ref().unwrap()["hub_error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains("unreadable"), "{reason}");
        assert!(c.queue_released, "the device's lane moves on");
        assert_eq!(c.events.len(), 1);
        // Once failed, further ticks change nothing.
        assert_eq!(
            apply(&c.record, Actor::Timer, &Command::Tick, None, at(2)).unwrap(),
            Outcome::Unchanged
        );
    }
}

// ---- every row of the table is reachable ------------------------------------------------------

fn all_commands() -> Vec<Command> {
    vec![
        Command::Cancel { force: false },
        Command::Cancel { force: true },
        Command::Remove,
        Command::Claim,
        Command::Start,
        Command::Progress {
            details: Some(json!({"p": 1})),
            step_timeout_ms: Some(5000),
        },
        succeed(json!("s")),
        fail(json!("f")),
        Command::Reject {
            result: Some(json!("r")),
        },
        Command::AcceptCancel,
        Command::RefuseCancel,
        Command::Tick,
    ]
}

fn arb_command() -> impl Strategy<Value = Command> {
    let details = prop_oneof![Just(None), (0u8..3).prop_map(|n| Some(json!(n)))];
    prop_oneof![
        any::<bool>().prop_map(|force| Command::Cancel { force }),
        Just(Command::Remove),
        Just(Command::Claim),
        Just(Command::Start),
        (details.clone(), proptest::option::of(0u64..20_000)).prop_map(|(details, step)| {
            Command::Progress {
                details,
                step_timeout_ms: step,
            }
        }),
        details
            .clone()
            .prop_map(|result| Command::Succeed { result }),
        details.clone().prop_map(|result| Command::Fail { result }),
        details.prop_map(|result| Command::Reject { result }),
        Just(Command::AcceptCancel),
        Just(Command::RefuseCancel),
        Just(Command::Tick),
    ]
}

fn arb_options() -> impl Strategy<Value = JobOptions> {
    (
        proptest::option::of(1u64..20_000),
        1000u64..20_000,
        1u32..=4,
        0u64..3000,
        any::<bool>(),
    )
        .prop_map(|(ttl, timeout, attempts, base, device_steps)| JobOptions {
            ttl_ms: ttl,
            in_progress_timeout_ms: timeout,
            step_timeout_max_ms: device_steps.then_some(timeout),
            max_attempts: attempts,
            retry_backoff_base_ms: base,
            retry_backoff_max_ms: base * 4,
            ..JobOptions::default()
        })
}

/// One input: who, what, which execution (0 = the current one, 1 = one off, 2 = none), how much
/// time passes first.
type Input = (Command, u8, u64);

fn arb_inputs() -> impl Strategy<Value = Vec<Input>> {
    proptest::collection::vec((arb_command(), 0u8..3, 0u64..8000), 0..40)
}

fn exec_for(j: &JobRecord, pick: u8) -> Option<u32> {
    match pick {
        0 => Some(j.execution),
        1 => Some(j.execution.wrapping_add(1)),
        _ => None,
    }
}

#[test]
fn every_row_of_the_table_is_reachable() {
    // Explore a bounded tree of command sequences from a queued job under two option sets.
    let mut hit: HashSet<(JobState, CommandKind, JobState)> = HashSet::new();
    for opts in [
        JobOptions {
            ttl_ms: Some(1000),
            max_attempts: 2,
            ..JobOptions::default()
        },
        JobOptions::default(),
    ] {
        let mut frontier = vec![(job_with(opts), 0i64)];
        for _ in 0..5 {
            let mut next = Vec::new();
            for (j, now) in &frontier {
                for cmd in all_commands() {
                    let actor = cmd.kind().actor();
                    for dt in [0i64, 2_000, 4_000_000] {
                        let t = now + dt;
                        if let Ok(Outcome::Changed(c)) =
                            apply(j, actor, &cmd, Some(j.execution), at(t))
                        {
                            hit.insert((j.state, cmd.kind(), c.record.state));
                            next.push((c.record, t));
                        }
                    }
                }
            }
            next.dedup_by(|a, b| a.0.state == b.0.state && a.0.attempts == b.0.attempts);
            next.truncate(400);
            frontier = next;
        }
    }
    // Records with unreadable options, due, in every non-terminal state.
    for state in JobState::ALL.into_iter().filter(|s| !s.is_terminal()) {
        let j = unreadable(state);
        if let Ok(Outcome::Changed(c)) = apply(&j, Actor::Timer, &Command::Tick, None, at(1)) {
            hit.insert((j.state, CommandKind::Tick, c.record.state));
        }
    }
    for t in TRANSITIONS {
        assert!(
            hit.contains(&(t.from, t.command, t.to)),
            "row never reached: {t:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_sequences_keep_the_invariants(opts in arb_options(), inputs in arb_inputs()) {
        let mut j = job_with(opts);
        let mut now = 0i64;
        for (cmd, pick, dt) in inputs {
            now += dt as i64;
            let actor = cmd.kind().actor();
            let exec = exec_for(&j, pick);
            let before = j.clone();
            let outcome = apply(&j, actor, &cmd, exec, at(now));
            match outcome {
                Err(e) => {
                    prop_assert!(e.kind() != ErrorKind::Internal, "internal error {e:?}");
                }
                Ok(Outcome::Unchanged) => {}
                Ok(Outcome::Changed(c)) => {
                    let n = c.record;
                    prop_assert_eq!(n.version, before.version + 1);
                    prop_assert!(n.execution >= before.execution);
                    prop_assert!(n.attempts >= before.attempts);
                    prop_assert!(n.attempts <= opts.max_attempts);
                    if before.state.is_terminal() {
                        prop_assert_eq!((cmd.kind(), n.state), (CommandKind::Remove, JobState::Removed));
                    }
                    if n.state == JobState::Delivered && before.state != JobState::Delivered {
                        prop_assert_eq!(actor, Actor::Device);
                        prop_assert_eq!(n.execution, before.execution + 1);
                    }
                    if n.execution != before.execution {
                        prop_assert_eq!(cmd.kind(), CommandKind::Claim);
                    }
                    if before.state == JobState::Rejected || cmd.kind() == CommandKind::Reject {
                        prop_assert!(n.state == JobState::Rejected || n.state == JobState::Removed);
                    }
                    // No head-of-line blocking: every active job has a deadline.
                    if n.state.is_active() {
                        prop_assert!(n.due_at.is_some(), "{:?} without a deadline", n.state);
                    }
                    if n.state.is_terminal() {
                        prop_assert_eq!(n.due_at, None);
                    }
                    prop_assert!(find_transition(before.state, cmd.kind(), n.state).is_some());
                    j = n;
                }
            }
        }
        // Whatever happened, once the device goes silent the timer alone ends every active job
        // or returns it to the queue, and retries run out.
        for _ in 0..(2 * opts.max_attempts + 2) {
            if let Some(due) = j.due_at {
                let t = due.as_millis() - T0;
                if let Ok(Outcome::Changed(c)) = apply(&j, Actor::Timer, &Command::Tick, None, at(t)) {
                    j = c.record;
                }
            }
        }
        prop_assert!(!j.state.is_active(), "still {:?}", j.state);
        if j.state == JobState::Queued {
            prop_assert_eq!(j.due_at, None, "a queued job left with a pending timer");
        }
    }

    #[test]
    fn an_untouched_job_with_a_ttl_expires(ttl in 1u64..100_000, ticks in proptest::collection::vec(0u64..200_000, 0..10), late in 0u64..1000) {
        let j = job_with(JobOptions { ttl_ms: Some(ttl), ..JobOptions::default() });
        let mut j = j;
        for t in ticks {
            let t = t as i64;
            if let Ok(Outcome::Changed(c)) = apply(&j, Actor::Timer, &Command::Tick, None, at(t)) {
                prop_assert!(t >= ttl as i64);
                j = c.record;
            }
        }
        let end = (ttl + late) as i64;
        if let Ok(Outcome::Changed(c)) = apply(&j, Actor::Timer, &Command::Tick, None, at(end)) {
            j = c.record;
        }
        prop_assert_eq!(j.state, JobState::Expired);
    }

    #[test]
    fn results_are_idempotent_and_conflicts_refused(
        first in prop_oneof![Just(0u8), Just(1), Just(2)],
        second in prop_oneof![Just(0u8), Just(1), Just(2)],
        r1 in 0u8..3, r2 in 0u8..3, attempts in 1u32..3,
    ) {
        let mk = |k: u8, r: u8| match k {
            0 => succeed(json!(r)),
            1 => fail(json!(r)),
            _ => Command::Reject { result: Some(json!(r)) },
        };
        let j = job_with(JobOptions { max_attempts: attempts, ..JobOptions::default() });
        let d = claimed(&j, 0);
        let ended = step(&d, Actor::Device, mk(first, r1), Some(1), 1);
        let again = apply(&ended, Actor::Device, &mk(second, r2), Some(1), at(2));
        if first == second && r1 == r2 {
            prop_assert_eq!(again.unwrap(), Outcome::Unchanged);
        } else {
            prop_assert_eq!(again.unwrap_err().kind(), ErrorKind::Conflict);
        }
    }
}
