use std::time::Duration;

use proptest::prelude::*;

use super::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).expect("valid")
}

fn input(
    rollout: &Rollout,
    state: RolloutState,
    tally: Tally,
    pending: u64,
    now: i64,
) -> PlanInput<'_> {
    PlanInput {
        rollout,
        continuous: false,
        state,
        tally,
        pending,
        max_batch: 1000,
        recheck: Duration::from_secs(5),
        now: ts(now),
    }
}

#[test]
fn a_fixed_rate_starts_at_most_per_minute_and_waits_for_the_next_minute() {
    let r = Rollout {
        rate: Rate::Fixed { per_minute: 3 },
        ..Rollout::default()
    };
    let p = plan(&input(
        &r,
        RolloutState::default(),
        Tally::default(),
        10,
        T0,
    ));
    assert_eq!(p.start, 3);
    assert_eq!(
        p.next_check,
        Some(ts(T0 + 5_000)),
        "the new children run: recheck soon"
    );
    let slow = PlanInput {
        recheck: Duration::from_secs(600),
        ..input(&r, RolloutState::default(), Tally::default(), 10, T0)
    };
    assert_eq!(
        plan(&slow).next_check,
        Some(ts(T0 + MINUTE_MS)),
        "or the next minute"
    );
    let tally = Tally {
        unfinished: 3,
        ..Tally::default()
    };
    let q = plan(&input(&r, p.state, tally, 7, T0 + 30_000));
    assert_eq!(q.start, 0, "the minute's quota is spent");
    assert_eq!(
        q.next_check,
        Some(ts(T0 + 35_000)),
        "children run: recheck soon"
    );
    let s = plan(&input(&r, q.state, tally, 7, T0 + MINUTE_MS));
    assert_eq!(s.start, 3, "a new minute, a new quota");
}

#[test]
fn an_exponential_rate_grows_with_successes_up_to_its_maximum() {
    let r = Rollout {
        rate: Rate::Exponential {
            base_per_minute: 2,
            factor: 2.0,
            increase_after: 2,
            max_per_minute: 5,
        },
        ..Rollout::default()
    };
    let p = plan(&input(
        &r,
        RolloutState::default(),
        Tally::default(),
        100,
        T0,
    ));
    assert_eq!(p.start, 2);
    let ok2 = Tally {
        succeeded: 2,
        ..Tally::default()
    };
    let q = plan(&input(&r, p.state, ok2, 98, T0 + MINUTE_MS));
    assert_eq!(
        (q.start, q.state.rate),
        (4, 4),
        "two successes double the rate"
    );
    let ok6 = Tally {
        succeeded: 6,
        ..Tally::default()
    };
    let s = plan(&input(&r, q.state, ok6, 94, T0 + 2 * MINUTE_MS));
    assert_eq!((s.start, s.state.rate), (5, 5), "capped at the maximum");
}

#[test]
fn a_daily_window_opens_every_day_and_may_cross_midnight() {
    let r = Rollout {
        windows: vec![Window::Daily {
            start_minute: 23 * 60,
            duration_minutes: 120,
        }],
        ..Rollout::default()
    };
    assert!(!r.window_open(ts(T0 + 12 * 3_600_000)));
    assert_eq!(
        r.next_open(ts(T0 + 12 * 3_600_000)),
        Some(ts(T0 + 23 * 3_600_000))
    );
    assert!(r.window_open(ts(T0 + 23 * 3_600_000)));
    assert!(
        r.window_open(ts(T0 + 24 * 3_600_000 + 30 * 60_000)),
        "past midnight"
    );
    assert!(
        !r.window_open(ts(T0 + 25 * 3_600_000)),
        "closed after two hours"
    );
    let noon = T0 + 12 * 3_600_000;
    let p = plan(&input(
        &r,
        RolloutState::default(),
        Tally::default(),
        4,
        noon,
    ));
    assert_eq!(p.start, 0, "closed at noon");
    assert_eq!(
        p.next_check,
        Some(ts(T0 + 23 * 3_600_000)),
        "look again when it opens"
    );
    let q = plan(&input(&r, RolloutState::default(), Tally::default(), 4, T0));
    assert_eq!(
        q.start, 4,
        "open at midnight (it opened at 23:00 the day before)"
    );
}

#[test]
fn bad_settings_are_refused() {
    let bad = [
        Rate::Fixed { per_minute: 0 },
        Rate::Exponential {
            base_per_minute: 5,
            factor: 1.0,
            increase_after: 1,
            max_per_minute: 10,
        },
        Rate::Exponential {
            base_per_minute: 5,
            factor: f64::NAN,
            increase_after: 1,
            max_per_minute: 10,
        },
        Rate::Exponential {
            base_per_minute: 5,
            factor: 2.0,
            increase_after: 1,
            max_per_minute: 4,
        },
    ];
    for rate in bad {
        let r = Rollout {
            rate,
            ..Rollout::default()
        };
        assert!(r.validate().is_err(), "{rate:?}");
    }
    let r = Rollout {
        abort: vec![AbortCriterion {
            failure: FailureType::Any,
            threshold_percent: 0.0,
            min_executions: 1,
        }],
        ..Rollout::default()
    };
    assert!(r.validate().is_err());
    let r = Rollout {
        windows: vec![Window::Once {
            start: ts(T0),
            end: ts(T0),
        }],
        ..Rollout::default()
    };
    assert!(r.validate().is_err());
}

fn arb_rollout() -> impl Strategy<Value = Rollout> {
    let rate = prop_oneof![
        Just(Rate::Unlimited),
        (1u32..20).prop_map(|per_minute| Rate::Fixed { per_minute }),
        (1u32..10, 11u32..20, 1u32..5, 0u32..3).prop_map(|(base, max, after, f)| {
            Rate::Exponential {
                base_per_minute: base,
                factor: [1.5, 2.0, 3.0][f as usize],
                increase_after: after,
                max_per_minute: max,
            }
        }),
    ];
    let criterion = (0u32..4, 1u32..=100, 0u32..10).prop_map(|(f, t, min)| AbortCriterion {
        failure: [
            FailureType::Failed,
            FailureType::Rejected,
            FailureType::TimedOut,
            FailureType::Any,
        ][f as usize],
        threshold_percent: f64::from(t),
        min_executions: min,
    });
    let window = prop_oneof![
        (0i64..600_000, 1i64..600_000).prop_map(|(s, d)| Window::Once {
            start: ts(T0 + s),
            end: ts(T0 + s + d),
        }),
        (0u32..1440, 1u32..=1440).prop_map(|(s, d)| Window::Daily {
            start_minute: s,
            duration_minutes: d,
        }),
    ];
    (
        rate,
        proptest::collection::vec(criterion, 0..3),
        proptest::collection::vec(window, 0..3),
    )
        .prop_map(|(rate, abort, windows)| Rollout {
            rate,
            abort,
            windows,
        })
}

fn arb_tally() -> impl Strategy<Value = Tally> {
    (
        0u64..20,
        0u64..20,
        0u64..5,
        0u64..5,
        0u64..5,
        0u64..5,
        0u64..5,
    )
        .prop_map(
            |(unfinished, succeeded, failed, rejected, timed_out, canceled, refused)| Tally {
                unfinished,
                succeeded,
                failed,
                rejected,
                timed_out,
                canceled,
                refused,
            },
        )
}

proptest! {
    /// One call: never more than is pending or the batch; nothing outside the windows; an abort
    /// exactly when a criterion trips; no busy loop.
    #[test]
    fn one_plan_keeps_its_promises(
        rollout in arb_rollout(),
        tally in arb_tally(),
        pending in 0u64..50,
        max_batch in 1u32..30,
        continuous in any::<bool>(),
        at in 0i64..(3 * DAY_MS),
    ) {
        prop_assert!(rollout.validate().is_ok());
        let now = ts(T0 + at);
        let inp = PlanInput {
            rollout: &rollout,
            continuous,
            state: RolloutState::default(),
            tally,
            pending,
            max_batch,
            recheck: Duration::from_secs(5),
            now,
        };
        let p = plan(&inp);
        prop_assert_eq!(&p, &plan(&inp), "deterministic");
        prop_assert!(p.start <= pending && p.start <= u64::from(max_batch));
        if !rollout.window_open(now) {
            prop_assert_eq!(p.start, 0);
        }
        let executed = tally.executed();
        let trips = rollout.abort.iter().any(|c| {
            executed >= u64::from(c.min_executions.max(1))
                && tally.failures(c.failure) as f64 * 100.0 >= c.threshold_percent * executed as f64
        });
        prop_assert_eq!(matches!(p.verdict, Verdict::Abort { .. }), trips);
        if p.verdict != Verdict::Continue {
            prop_assert_eq!(p.start, 0);
        }
        if matches!(p.verdict, Verdict::Complete) {
            prop_assert!(!continuous && tally.unfinished == 0);
        }
        if p.verdict == Verdict::Continue && p.start == 0 {
            prop_assert!(p.next_check.is_none_or(|n| n > now), "no busy loop: {:?}", p.next_check);
        }
        if p.verdict == Verdict::Continue && (continuous || tally.unfinished > 0) {
            prop_assert!(p.next_check.is_some(), "a running rollout is looked at again");
        }
    }

    /// A sequence of calls with a fixed or exponential rate: within each rate minute no more
    /// start than the rate allowed, and an exponential rate never shrinks nor passes its cap.
    #[test]
    fn a_rollout_never_outruns_its_rate(
        rollout in arb_rollout().prop_filter("rated", |r| r.rate != Rate::Unlimited),
        steps in proptest::collection::vec((0i64..90_000, 0u64..4), 1..40),
    ) {
        let rollout = Rollout { windows: vec![], abort: vec![], ..rollout };
        let mut state = RolloutState::default();
        let mut now = T0;
        let mut pending = 200u64;
        let mut succeeded = 0u64;
        let mut minute: Option<(Timestamp, u64)> = None;
        let mut last_rate = 0;
        for (dt, ok) in steps {
            now += dt;
            succeeded += ok;
            let tally = Tally { succeeded, unfinished: 1, ..Tally::default() };
            let p = plan(&PlanInput {
                rollout: &rollout,
                continuous: false,
                state,
                tally,
                pending,
                max_batch: 1000,
                recheck: Duration::from_secs(5),
                now: ts(now),
            });
            prop_assert!(p.state.rate >= last_rate, "the rate never shrinks");
            if let Rate::Exponential { max_per_minute, .. } = rollout.rate {
                prop_assert!(p.state.rate <= max_per_minute);
            }
            last_rate = p.state.rate;
            if p.start > 0 {
                let m = p.state.minute_start.expect("a start opens a minute");
                prop_assert!(m.as_millis() <= now && now < m.as_millis() + MINUTE_MS);
                let total = match minute {
                    Some((prev, n)) if prev == m => n + p.start,
                    _ => p.start,
                };
                prop_assert!(total <= u64::from(p.state.rate), "{total} started in one minute at rate {}", p.state.rate);
                minute = Some((m, total));
            }
            pending -= p.start;
            state = p.state;
        }
    }
}
