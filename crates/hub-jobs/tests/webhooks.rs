//! Webhook deliveries against a local receiver on 127.0.0.1 that fails when told to.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hub_core::{
    Clock, ErrorKind, Event, EventKind, EventSink, GroupPath, JobId, JobState, ManualClock, Secret,
    Timestamp,
};
use hub_jobs::events::EventBus;
use hub_jobs::webhooks::{
    WebhookConfig, WebhookEndpoint, WebhookStats, Webhooks, sign, verify_signature,
};

const SECRET: &str = "whsec-test";

#[derive(Default)]
struct Receiver {
    /// Answer 500 to this many attempts first.
    fail_first: AtomicU32,
    /// Never answer.
    hang: bool,
    attempts: Mutex<Vec<(HeaderMap, Bytes)>>,
    accepted: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.attempts
        .lock()
        .unwrap()
        .push((headers.clone(), body.clone()));
    if r.hang {
        std::future::pending::<()>().await;
    }
    if r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.accepted.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

/// Starts a receiver on 127.0.0.1 and returns its URL.
async fn serve(r: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(receive)).with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn endpoint(url: String) -> WebhookEndpoint {
    WebhookEndpoint {
        name: "ops".into(),
        url,
        secret: Secret::new(SECRET),
        group: None,
        kinds: Vec::new(),
    }
}

fn fast() -> WebhookConfig {
    WebhookConfig {
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(4),
        ..WebhookConfig::default()
    }
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_millis(1_800_000_000_000).unwrap())
}

fn job_event(group: &str, n: u8) -> Event {
    Event {
        at: Timestamp::from_millis(i64::from(n)).unwrap(),
        group: group.parse().unwrap(),
        kind: EventKind::JobStateChanged {
            job: JobId::from_parts(Timestamp::EPOCH, [n; 10]),
            device: "pump-7".parse().unwrap(),
            from: None,
            to: JobState::Queued,
            version: 1,
        },
    }
}

/// Waits until `f` holds; a safety net against hanging, not a timing assertion.
async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the condition never held");
}

fn stats(w: &Webhooks) -> WebhookStats {
    w.stats()[0].1
}

#[tokio::test]
async fn events_are_signed_retried_and_delivered_in_order() {
    let receiver = Arc::new(Receiver::default());
    receiver.fail_first.store(2, Ordering::SeqCst);
    let url = serve(receiver.clone()).await;
    let bus = EventBus::new(64);
    let clock = clock();
    let hooks =
        Webhooks::start(&bus, vec![endpoint(url)], fast(), Arc::new(clock.clone())).unwrap();
    for n in 1..=3 {
        bus.publish(job_event("acme/plant-1", n));
    }
    eventually(|| receiver.accepted.lock().unwrap().len() == 3).await;

    let accepted = receiver.accepted.lock().unwrap().clone();
    for (i, (headers, body)) in accepted.iter().enumerate() {
        let event: Event = serde_json::from_slice(body).unwrap();
        assert_eq!(
            event,
            job_event("acme/plant-1", i as u8 + 1),
            "in publication order"
        );
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["hub-event"], "job_state_changed");
        assert_eq!(headers["hub-delivery"].len(), 32);
        let sig = headers["hub-signature"].to_str().unwrap();
        verify_signature(
            SECRET.as_bytes(),
            sig,
            body,
            clock.now(),
            Duration::from_secs(300),
        )
        .unwrap();
        // The signature covers the body: a tampered body fails.
        let mut tampered = body.to_vec();
        tampered.push(b' ');
        assert!(
            verify_signature(
                SECRET.as_bytes(),
                sig,
                &tampered,
                clock.now(),
                Duration::from_secs(300)
            )
            .is_err()
        );
    }
    // Every event has its own delivery id; the first event took three attempts, all with its id.
    let ids: std::collections::HashSet<_> = accepted
        .iter()
        .map(|(h, _)| h["hub-delivery"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
    let attempts = receiver.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 5);
    assert!(
        attempts[..3]
            .iter()
            .all(|(h, _)| h["hub-delivery"] == accepted[0].0["hub-delivery"])
    );
    eventually(|| stats(&hooks).delivered == 3).await;
    assert_eq!(
        stats(&hooks),
        WebhookStats {
            delivered: 3,
            retried: 2,
            ..WebhookStats::default()
        }
    );
}

#[tokio::test]
async fn an_event_is_given_up_after_the_last_attempt_and_the_next_one_follows() {
    let receiver = Arc::new(Receiver::default());
    receiver.fail_first.store(3, Ordering::SeqCst);
    let url = serve(receiver.clone()).await;
    let bus = EventBus::new(64);
    let config = WebhookConfig {
        max_attempts: 3,
        ..fast()
    };
    let hooks = Webhooks::start(&bus, vec![endpoint(url)], config, Arc::new(clock())).unwrap();
    bus.publish(job_event("acme", 1));
    bus.publish(job_event("acme", 2));
    eventually(|| stats(&hooks).delivered == 1).await;
    assert_eq!(stats(&hooks).failed, 1);
    assert_eq!(stats(&hooks).retried, 2);
    let accepted = receiver.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1);
    let event: Event = serde_json::from_slice(&accepted[0].1).unwrap();
    assert_eq!(event, job_event("acme", 2));
}

#[tokio::test]
async fn endpoints_receive_only_their_groups_and_kinds() {
    let receiver = Arc::new(Receiver::default());
    let url = serve(receiver.clone()).await;
    let bus = EventBus::new(64);
    let ep = WebhookEndpoint {
        group: Some("acme/plant-1".parse::<GroupPath>().unwrap()),
        kinds: vec!["job_state_changed".into()],
        ..endpoint(url)
    };
    let hooks = Webhooks::start(&bus, vec![ep], fast(), Arc::new(clock())).unwrap();
    bus.publish(Event {
        at: Timestamp::EPOCH,
        group: "acme/plant-1".parse().unwrap(),
        kind: EventKind::DeviceSeen {
            device: "pump-7".parse().unwrap(),
        },
    });
    bus.publish(job_event("acme/plant-2", 1));
    bus.publish(job_event("globex/plant-1", 2));
    bus.publish(job_event("acme/plant-1/line-4", 3));
    eventually(|| stats(&hooks).delivered == 1).await;
    let accepted = receiver.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1);
    let event: Event = serde_json::from_slice(&accepted[0].1).unwrap();
    assert_eq!(event, job_event("acme/plant-1/line-4", 3));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_events() {
    let receiver = Arc::new(Receiver {
        hang: true,
        ..Receiver::default()
    });
    let url = serve(receiver.clone()).await;
    let bus = EventBus::new(64);
    let config = WebhookConfig {
        queue_capacity: 1,
        request_timeout: Duration::from_secs(3600),
        ..fast()
    };
    let hooks = Webhooks::start(&bus, vec![endpoint(url)], config, Arc::new(clock())).unwrap();
    bus.publish(job_event("acme", 1));
    // The worker is stuck sending the first event; one more fits the queue, two are dropped.
    eventually(|| receiver.attempts.lock().unwrap().len() == 1).await;
    for n in 2..=4 {
        bus.publish(job_event("acme", n));
    }
    eventually(|| stats(&hooks).dropped == 2).await;
    assert_eq!(stats(&hooks).delivered, 0);
}

#[tokio::test]
async fn only_plain_http_urls_are_accepted() {
    let bus = EventBus::new(4);
    for url in ["https://example.invalid/hook", "not a url", "ftp://x/y"] {
        let e = Webhooks::start(&bus, vec![endpoint(url.into())], fast(), Arc::new(clock()))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url}");
    }
}

#[test]
fn signatures_are_checked_for_key_time_and_form() {
    let body = br#"{"type":"device_seen"}"#;
    let t = 1_800_000_000;
    let now = Timestamp::from_millis(t * 1000).unwrap();
    let tolerance = Duration::from_secs(300);
    let good = sign(b"k1", t, body);
    assert!(verify_signature(b"k1", &good, body, now, tolerance).is_ok());
    // Wrong key, replayed too late, malformed headers.
    assert!(verify_signature(b"k2", &good, body, now, tolerance).is_err());
    let late = Timestamp::from_millis((t + 301) * 1000).unwrap();
    let e = verify_signature(b"k1", &good, body, late, tolerance).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    for bad in [
        "",
        "v1=00",
        "t=x,v1=00",
        &format!("t={t},v1=zz"),
        &format!("t={t}"),
    ] {
        assert!(
            verify_signature(b"k1", bad, body, now, tolerance).is_err(),
            "{bad}"
        );
    }
    // During a secret rotation the hub may send one signature per secret.
    let old = sign(b"old", t, body);
    let old_v1 = old.split_once(",v1=").unwrap().1;
    let both = format!("{good},v1={old_v1}");
    assert!(verify_signature(b"old", &both, body, now, tolerance).is_ok());
    assert!(verify_signature(b"k1", &both, body, now, tolerance).is_ok());
}

proptest::proptest! {
    /// Whatever the body and timestamp, a signature verifies with its own secret and body only,
    /// and no header, however malformed, makes verification panic.
    #[test]
    fn signatures_round_trip_and_never_panic(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        t in 0i64..4_000_000_000,
        secret in "[a-z0-9]{1,32}",
        garbage in ".{0,80}",
    ) {
        let now = Timestamp::from_millis(t * 1000).unwrap();
        let tol = Duration::from_secs(60);
        let header = sign(secret.as_bytes(), t, &body);
        proptest::prop_assert!(verify_signature(secret.as_bytes(), &header, &body, now, tol).is_ok());
        let mut other = body.clone();
        other.push(0);
        proptest::prop_assert!(verify_signature(secret.as_bytes(), &header, &other, now, tol).is_err());
        let wrong = format!("{secret}x");
        proptest::prop_assert!(verify_signature(wrong.as_bytes(), &header, &body, now, tol).is_err());
        let _ = verify_signature(secret.as_bytes(), &garbage, &body, now, tol);
    }
}

#[test]
fn starting_outside_a_runtime_is_an_error_not_a_panic() {
    let bus = EventBus::new(4);
    let e = Webhooks::start(
        &bus,
        vec![endpoint("http://127.0.0.1:9/hook".into())],
        fast(),
        Arc::new(clock()),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
}
