//! Signed webhooks with retries (feature `webhooks`): the hub POSTs events to HTTP endpoints the
//! application configures.
//!
//! ## What a receiver gets
//!
//! One `POST` per event, body = the `hub_core::Event` JSON (the same document the SSE stream
//! sends), with the headers
//!
//! - `Content-Type: application/json`
//! - `Hub-Event: <kind>`: the event kind in snake_case (`job_state_changed`, ...)
//! - `Hub-Delivery: <id>`: 32 hex digits identifying the event (a digest of the body): the same
//!   on every retry and after a hub restart, so a receiver can drop a duplicate (an attempt
//!   whose answer was lost is sent again)
//! - `Hub-Signature: t=<unix seconds>,v1=<hex>`: `v1` is the lowercase hex HMAC-SHA256, keyed
//!   with the endpoint's secret, of the bytes `<t>.<body>` (the decimal timestamp, a dot, the
//!   raw body). Each attempt is signed afresh. Check it with [`verify_signature`], which also
//!   refuses timestamps outside a tolerance (replays), and accepts several `v1=` entries (secret
//!   rotation).
//!
//! Any 2xx answer is a delivery. Anything else (another status, a refused connection, no answer
//! within [`WebhookConfig::request_timeout`]) is retried after an exponential backoff
//! (`backoff_base * 2^(attempt-1)`, at most `backoff_max`) until [`WebhookConfig::max_attempts`];
//! then the event is given up and counted as `failed`.
//!
//! ## Order, bounds and what is counted
//!
//! Every endpoint has its own worker and its own bounded queue: events reach one endpoint in the
//! order they were published, one at a time (an event is retried before the next is sent); a slow
//! endpoint never delays another. When an endpoint's queue is full, new events for it are dropped
//! and counted (`dropped`); events the dispatcher missed because it fell behind the
//! [`EventBus`] are counted as `missed` for every endpoint. [`Webhooks::stats`] reports these
//! counters per endpoint, so an operator knows when a receiver has gaps.
//!
//! ## Transport
//!
//! Plain `http://` URLs only, over hyper's pooled client. `https://` would need a TLS connector
//! for hyper's client, which the workspace does not carry yet; put a TLS-terminating relay (or a
//! receiver on the hub's network) in front until then.
//!
//! ```
//! use hub_jobs::webhooks::{sign, verify_signature};
//! use hub_core::Timestamp;
//! use std::time::Duration;
//!
//! let body = br#"{"type":"device_seen"}"#;
//! let header = sign(b"s3cret", 1_800_000_000, body);
//! assert!(header.starts_with("t=1800000000,v1="));
//! let now = Timestamp::from_millis(1_800_000_010_000)?;
//! assert!(verify_signature(b"s3cret", &header, body, now, Duration::from_secs(300)).is_ok());
//! assert!(verify_signature(b"other", &header, body, now, Duration::from_secs(300)).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hub_core::{Clock, Error, Event, GroupPath, Result, Secret, Timestamp};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::events::{EventBus, Received};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Hub-Signature";
/// The header carrying the event kind.
pub const EVENT_HEADER: &str = "Hub-Event";
/// The header carrying the event's delivery id.
pub const DELIVERY_HEADER: &str = "Hub-Delivery";

type HmacSha256 = Hmac<Sha256>;

/// One receiver of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// A name for the statistics and logs.
    pub name: String,
    /// Where to POST: an `http://` URL.
    pub url: String,
    /// The HMAC key the receiver verifies signatures with.
    pub secret: Secret,
    /// Only events of this group's subtree (e.g. a tenant's root); `None`: every event.
    pub group: Option<GroupPath>,
    /// Only these event kinds (snake_case, e.g. `job_state_changed`); empty: every kind.
    pub kinds: Vec<String>,
}

/// Retries and bounds, shared by all endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Attempts per event, the first included. Default 8.
    pub max_attempts: u32,
    /// The backoff after the first failed attempt; it doubles with each further one. Default 1 s.
    pub backoff_base: Duration,
    /// The longest backoff. Default 5 minutes.
    pub backoff_max: Duration,
    /// Events waiting per endpoint before new ones are dropped. Default 1024.
    pub queue_capacity: usize,
    /// How long one attempt may take. Default 10 s.
    pub request_timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            queue_capacity: 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl WebhookConfig {
    /// The wait after `attempt` failed attempts (`attempt >= 1`).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What happened to one endpoint's events so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebhookStats {
    /// Events the receiver accepted (2xx).
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Events given up after the last attempt.
    pub failed: u64,
    /// Events dropped because the endpoint's queue was full.
    pub dropped: u64,
    /// Events the dispatcher missed because it fell behind the event bus.
    pub missed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    missed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WebhookStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WebhookStats {
            delivered: r(&self.delivered),
            retried: r(&self.retried),
            failed: r(&self.failed),
            dropped: r(&self.dropped),
            missed: r(&self.missed),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The `Hub-Signature` value for `body` sent at `unix_seconds`.
pub fn sign(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    format!(
        "t={unix_seconds},v1={}",
        hex(&mac(secret, unix_seconds, body))
    )
}

fn mac(secret: &[u8], unix_seconds: i64, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(unix_seconds.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks a `Hub-Signature` header for `body`, as a receiver does: the timestamp must lie within
/// `tolerance` of `now` (either side) and one of the `v1=` signatures must be the HMAC-SHA256 of
/// `<t>.<body>` under `secret` (compared in constant time). Failures are
/// [`ErrorKind::Unauthenticated`](hub_core::ErrorKind::Unauthenticated).
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: Timestamp,
    tolerance: Duration,
) -> Result<()> {
    let bad = |why: &'static str| Error::unauthenticated(why);
    let mut t: Option<i64> = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse().map_err(|_| bad("bad signature timestamp"))?),
            Some(("v1", v)) => sigs.push(v),
            // Other schemes, for forward compatibility.
            _ => {}
        }
    }
    let t = t.ok_or_else(|| bad("the signature has no timestamp"))?;
    let now_s = now.as_millis().div_euclid(1000);
    if now_s.abs_diff(t) > tolerance.as_secs() {
        return Err(bad("the signature timestamp is outside the tolerance"));
    }
    for sig in sigs {
        let Some(sig) = unhex(sig) else { continue };
        let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
        m.update(t.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        if m.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(bad("no valid signature"))
}

struct Endpoint {
    config: WebhookEndpoint,
    uri: Uri,
    counters: Counters,
    queue: mpsc::Sender<Arc<Event>>,
}

impl Endpoint {
    fn wants(&self, event: &Event, kind: &str) -> bool {
        self.config
            .group
            .as_ref()
            .is_none_or(|g| g.contains(&event.group))
            && (self.config.kinds.is_empty() || self.config.kinds.iter().any(|k| k == kind))
    }
}

/// The running webhook deliveries: a dispatcher reading the [`EventBus`] and one worker per
/// endpoint. Dropping it stops them (events still queued are not sent).
pub struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| &e.config.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn kind_name(event: &Event) -> String {
    serde_json::to_value(&event.kind)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Webhooks {
    /// Subscribes to `bus` and starts delivering to `endpoints` on the current tokio runtime
    /// ([`ErrorKind::Internal`](hub_core::ErrorKind::Internal) outside one).
    /// `clock` dates the signatures. An endpoint URL that is not `http://host[:port]/...` is
    /// [`ErrorKind::InvalidInput`](hub_core::ErrorKind::InvalidInput).
    pub fn start(
        bus: &EventBus,
        endpoints: Vec<WebhookEndpoint>,
        config: WebhookConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::internal(
                "webhooks start on a tokio runtime: call Webhooks::start from within one",
            ));
        }
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut tasks = Vec::new();
        let mut eps = Vec::new();
        for ep in endpoints {
            let uri: Uri = ep.url.parse().map_err(|_| {
                Error::invalid_input(format!("webhook URL {:?} is not valid", ep.url))
            })?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(Error::invalid_input(format!(
                    "webhook URL {:?}: only http://host/... is supported",
                    ep.url
                )));
            }
            let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
            let endpoint = Arc::new(Endpoint {
                config: ep,
                uri,
                counters: Counters::default(),
                queue: tx,
            });
            tasks.push(tokio::spawn(worker(
                endpoint.clone(),
                rx,
                client.clone(),
                config,
                clock.clone(),
            )));
            eps.push(endpoint);
        }
        tasks.push(tokio::spawn(dispatch(bus.subscribe(), eps.clone())));
        Ok(Self {
            endpoints: eps,
            tasks: Mutex::new(tasks),
        })
    }

    /// The counters of every endpoint, by name, in configuration order.
    pub fn stats(&self) -> Vec<(String, WebhookStats)> {
        self.endpoints
            .iter()
            .map(|e| (e.config.name.clone(), e.counters.snapshot()))
            .collect()
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

async fn dispatch(mut sub: crate::events::Subscriber, endpoints: Vec<Arc<Endpoint>>) {
    loop {
        match sub.recv().await {
            Received::Event(event) => {
                let kind = kind_name(&event);
                for ep in endpoints.iter().filter(|ep| ep.wants(&event, &kind)) {
                    if ep.queue.try_send(event.clone()).is_err() {
                        bump(&ep.counters.dropped, 1);
                    }
                }
            }
            Received::Lagged(n) => {
                for ep in &endpoints {
                    bump(&ep.counters.missed, n);
                }
            }
            Received::Closed => return,
        }
    }
}

async fn worker(
    ep: Arc<Endpoint>,
    mut rx: mpsc::Receiver<Arc<Event>>,
    client: Client<HttpConnector, Full<Bytes>>,
    config: WebhookConfig,
    clock: Arc<dyn Clock>,
) {
    while let Some(event) = rx.recv().await {
        // An event always serializes: ids, strings, numbers and JSON values.
        let Ok(body) = serde_json::to_vec(&*event) else {
            bump(&ep.counters.failed, 1);
            continue;
        };
        let delivery = hex(&Sha256::digest(&body)[..16]);
        let body = Bytes::from(body);
        let kind = kind_name(&event);
        let attempts = config.max_attempts.max(1);
        for attempt in 1..=attempts {
            let t = clock.now().as_millis().div_euclid(1000);
            let request = hyper::Request::post(ep.uri.clone())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(EVENT_HEADER, kind.as_str())
                .header(DELIVERY_HEADER, delivery.as_str())
                .header(
                    SIGNATURE_HEADER,
                    sign(ep.config.secret.expose().as_bytes(), t, &body),
                )
                .body(Full::new(body.clone()));
            let ok = match request {
                Ok(req) => matches!(
                    tokio::time::timeout(config.request_timeout, client.request(req)).await,
                    Ok(Ok(res)) if res.status().is_success()
                ),
                Err(_) => false,
            };
            if ok {
                bump(&ep.counters.delivered, 1);
                break;
            }
            if attempt == attempts {
                bump(&ep.counters.failed, 1);
            } else {
                bump(&ep.counters.retried, 1);
                tokio::time::sleep(config.backoff(attempt)).await;
            }
        }
    }
}
