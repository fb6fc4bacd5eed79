//! The thin tokio driver around a [`Session`]: reads and decodes, writes what the session asks
//! for, calls the seams, and hands deliveries from the broker to the session.
//!
//! An idle connection is what a hub holds hundreds of thousands of, so the driver keeps nothing
//! it does not need between packets: input is read into a per-thread scratch buffer and only a
//! partial packet is kept; output buffers are dropped once written; the broker reaches the
//! connection through one small [`ConnHandle`] (mailbox, kick, keep-alive deadline); and no
//! timer exists per connection (one shared sweep compares deadlines with the clock).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hub_core::{
    Action as PolicyAction, DeviceJob, DeviceReport, DisconnectReason, Error, Event, EventKind,
    JobId, Principal, Resource, TenantId, Timestamp, authorize,
};
use hub_store::MeasurementUpload;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::Inner;
use crate::broker::{ConnEvent, ConnHandle, SessionKey, topic_device};
use crate::codec::{Codec, Protocol, QoS, reason};
use crate::session::{Action, Message, Session, principal_tenant};

/// Kick reason meaning "the shared sweep found the deadline passed".
const SWEEP_EXPIRED: u8 = 0xFF;

/// How long a closing connection may take to write its last bytes (close_notify).
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes read from a connection at a time.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Plaintext read from connections, before it is decoded.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The one shared keep-alive sweep: each connection publishes its next deadline in its
/// [`ConnHandle`]; a single task compares them with the clock and kicks expired connections. No
/// per-connection timer exists.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    state: Mutex<SweepState>,
}

#[derive(Debug, Default)]
struct SweepState {
    conns: HashMap<u64, Arc<ConnHandle>>,
    /// Set by [`Sweep::kick_all`]: connections arriving later are kicked with it at once.
    draining: Option<u8>,
}

impl Sweep {
    fn add(&self, handle: Arc<ConnHandle>) {
        let mut state = self.lock();
        if let Some(code) = state.draining {
            // Its handshake ended after the drain began: it gets the same kick.
            handle.kick(code);
        }
        state.conns.insert(handle.id, handle);
    }

    fn remove(&self, id: u64) {
        let conns = &mut self.lock().conns;
        conns.remove(&id);
        if conns.capacity() > 64 && conns.len() < conns.capacity() / 4 {
            // After a mass disconnect, give the table's memory back.
            conns.shrink_to_fit();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SweepState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kicks every connection whose deadline is at or before `now`.
    pub(crate) fn run(&self, now: Timestamp) {
        let now = now.as_millis();
        for handle in self.lock().conns.values() {
            if handle.deadline.load(Ordering::Relaxed) <= now && handle.kicked().is_none() {
                handle.kick(SWEEP_EXPIRED);
            }
        }
    }

    /// Kicks every connection with `code`, and every connection that arrives from now on: the
    /// server is shutting down.
    pub(crate) fn kick_all(&self, code: u8) {
        let mut state = self.lock();
        state.draining = Some(code);
        for handle in state.conns.values() {
            handle.kick(code);
        }
    }
}

struct Conn {
    inner: Arc<Inner>,
    session: Session,
    codec: Codec,
    out: BytesMut,
    handle: Arc<ConnHandle>,
    principal: Option<Arc<Principal>>,
    /// The session's key (its tenant included), once authenticated.
    key: Option<Arc<SessionKey>>,
    protocol_label: &'static str,
    last_seen_ms: i64,
    close: Option<DisconnectReason>,
}

/// What woke an idle connection.
// Moved out at once; boxing would cost an allocation per delivery.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Kicked(u8),
    Deliver(Message),
    /// Bytes read (0: end of stream), or a read error.
    Read(std::io::Result<usize>),
}

/// Reads what `stream` has into `buf`, through the per-thread scratch buffer: a connection that
/// waits for input holds no read buffer.
fn poll_read_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    READ_SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < READ_CHUNK {
            scratch.resize(READ_CHUNK, 0);
        }
        let mut read = ReadBuf::new(scratch);
        ready!(Pin::new(stream).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
}

/// Writes and flushes `out`; `false` if the stream failed or the connection was kicked while
/// the write could not proceed (a client that never reads).
async fn write_unless_kicked<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &[u8],
    handle: &ConnHandle,
) -> bool {
    let mut written = 0;
    poll_fn(|cx| {
        // A write that can complete does, even after a kick (the DISCONNECT).
        let progress = loop {
            if written == out.len() {
                break Pin::new(&mut *stream).poll_flush(cx).map_ok(|()| true);
            }
            match Pin::new(&mut *stream).poll_write(cx, &out[written..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Ok(false)),
                Poll::Ready(Ok(n)) => written += n,
                other => break other.map_ok(|_| false),
            }
        };
        match progress {
            Poll::Ready(r) => Poll::Ready(r.unwrap_or(false)),
            Poll::Pending => handle.poll_kicked(cx).map(|_| false),
        }
    })
    .await
}

/// Runs one connection until it closes.
pub(crate) async fn run_connection<S>(
    inner: Arc<Inner>,
    mut stream: S,
    protocol_label: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let now = inner.clock.now();
    let handle = ConnHandle::new(
        inner.broker.next_conn_id(),
        inner.config.max_queued_messages,
    );
    inner.sweep.add(handle.clone());
    let mut conn = Conn {
        session: Session::new(inner.session_limits.clone(), now),
        codec: Codec::new(Protocol::V311, inner.config.max_packet_size),
        out: BytesMut::new(),
        handle: handle.clone(),
        principal: None,
        key: None,
        protocol_label,
        last_seen_ms: 0,
        close: None,
        inner,
    };
    // Input not decoded yet: a partial packet at most, between reads.
    let mut buf = BytesMut::new();
    // Alternates which source is polled first, so that neither a client publishing without
    // pause nor a stream of deliveries starves the other.
    let mut reads_first = false;
    loop {
        if conn.session.has_actions() {
            // Boxed: the actions' state (a packet, the seams' futures) is large and needed only
            // while a packet is handled; inline, every idle connection would carry it.
            Box::pin(conn.process_actions()).await;
        }
        if !conn.out.is_empty() {
            // Taken, so the buffer is freed once written: an idle connection keeps none.
            let out = std::mem::take(&mut conn.out);
            if !write_unless_kicked(&mut stream, &out, &handle).await {
                drop(out);
                if conn.close.is_none() {
                    match handle.kicked() {
                        Some(code) => conn.kicked(code),
                        None => conn.session.connection_lost(None),
                    }
                    Box::pin(conn.process_actions()).await;
                }
                break;
            }
        }
        if conn.close.is_some() {
            // Bounded: close_notify is a write, and a peer that stopped reading would hold the
            // task forever. Boxed: the timer exists only while closing.
            let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, stream.shutdown())).await;
            break;
        }
        handle.deadline.store(
            conn.session.deadline().map_or(i64::MAX, |d| d.as_millis()),
            Ordering::Relaxed,
        );
        conn.session.release_idle_memory();
        if buf.is_empty() {
            buf = BytesMut::new();
        }
        reads_first = !reads_first;
        let wake = poll_fn(|cx| {
            if reads_first && let Poll::Ready(r) = poll_read_into(&mut stream, &mut buf, cx) {
                return Poll::Ready(Wake::Read(r));
            }
            match handle.poll_event(cx) {
                Poll::Ready(ConnEvent::Kicked(code)) => return Poll::Ready(Wake::Kicked(code)),
                Poll::Ready(ConnEvent::Deliver(m)) => return Poll::Ready(Wake::Deliver(m)),
                Poll::Pending => {}
            }
            if !reads_first {
                return poll_read_into(&mut stream, &mut buf, cx).map(Wake::Read);
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Kicked(code) => conn.kicked(code),
            Wake::Deliver(m) => {
                let _ = conn.session.deliver(m);
            }
            Wake::Read(Ok(0) | Err(_)) => conn.session.connection_lost(None),
            Wake::Read(Ok(_)) => conn.decode(&mut buf),
        }
    }
    // Boxed: inline, the finishing state (a moved copy of `conn`) would double the size of
    // every connection's future for its whole life.
    Box::pin(conn.finish()).await;
}

impl Conn {
    /// The connection was kicked: by the sweep (deadline passed), a takeover, the slow-consumer
    /// policy or the shutdown drain.
    fn kicked(&mut self, code: u8) {
        let now = self.inner.clock.now();
        match code {
            SWEEP_EXPIRED => {
                self.session.handle_timeout(now);
                if !self.session.is_closed() {
                    // Raced with traffic: the deadline moved. Close anyway, since a kick cannot
                    // be taken back; the client reconnects.
                    self.session.server_close(
                        reason::KEEP_ALIVE_TIMEOUT,
                        DisconnectReason::KeepAliveTimeout,
                        true,
                    );
                }
            }
            reason::SESSION_TAKEN_OVER => {
                self.session
                    .server_close(code, DisconnectReason::SessionTakenOver, false)
            }
            _ => self
                .session
                .server_close(code, DisconnectReason::ServerClosed, true),
        }
    }

    fn decode(&mut self, buf: &mut BytesMut) {
        loop {
            if self.session.is_closed() {
                return;
            }
            match self.codec.decode(buf) {
                Ok(Some(p)) => {
                    let now = self.inner.clock.now();
                    self.session.handle(now, p);
                    self.seen(now);
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "malformed MQTT input");
                    self.session.connection_lost(Some(e.reason_code()));
                    return;
                }
            }
        }
    }

    fn seen(&mut self, now: Timestamp) {
        // Throttle presence updates to one a second per connection.
        if now.as_millis() - self.last_seen_ms < 1000 {
            return;
        }
        self.last_seen_ms = now.as_millis();
        if let Some(Principal::Device(d)) = self.principal.as_deref() {
            self.inner.presence.seen(&d.group, &d.id, now);
        }
    }

    async fn process_actions(&mut self) {
        loop {
            let actions = self.session.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.act(action).await;
            }
        }
    }

    async fn act(&mut self, action: Action) {
        let now = self.inner.clock.now();
        match action {
            Action::Send(p) => {
                if let Err(e) = self.codec.encode(&p, &mut self.out) {
                    tracing::warn!(error = %e, "could not encode a packet");
                }
            }
            Action::Authenticate(credentials) => {
                let result = self.inner.auth.authenticate(&credentials).await;
                self.on_authenticated(result, now);
            }
            Action::Publish { message, ack } => {
                let code = self.on_publish(message, now).await;
                if let Some((id, qos)) = ack {
                    self.session.published(id, qos, code);
                }
            }
            Action::Subscribe { packet_id, filters } => {
                let (Some(key), Some(principal)) = (self.key.clone(), self.principal.clone())
                else {
                    return;
                };
                let (codes, retained) = self
                    .inner
                    .broker
                    .subscribe(&key, &principal, &filters, now)
                    .await;
                self.session.subscribed(packet_id, codes);
                for m in retained {
                    let _ = self.session.deliver(m);
                }
            }
            Action::Unsubscribe(filters) => {
                if let Some(key) = &self.key {
                    self.inner.broker.unsubscribe(key, &filters);
                }
            }
            Action::Close(why) => self.close = Some(why),
        }
    }

    fn on_authenticated(&mut self, result: Result<Principal, Error>, now: Timestamp) {
        let principal = match result {
            Ok(p) => p,
            Err(e) => {
                let code = e.kind().mqtt_reason().0;
                self.session.authenticated(Err(code), false, None);
                return;
            }
        };
        let Some(tenant) = principal_tenant(&principal) else {
            self.session
                .authenticated(Err(reason::NOT_AUTHORIZED), false, None);
            return;
        };
        let Some(connect) = self.session.connect_packet() else {
            return;
        };
        let clean_start = connect.clean_start;
        let (client_id, assigned) = if connect.client_id.is_empty() {
            let id = format!("auto-{}", self.handle.id);
            (id.clone(), Some(id))
        } else {
            (connect.client_id.clone(), None)
        };
        let assigned = assigned.filter(|_| self.session.protocol() == Protocol::V5);
        let principal = Arc::new(principal);
        let key = SessionKey {
            tenant,
            principal: principal.describe(),
            client_id,
        };
        let expiry = self.session.session_expiry();
        let reg = self.inner.broker.register(
            key,
            principal.clone(),
            self.handle.clone(),
            clean_start,
            expiry,
        );
        self.session
            .authenticated(Ok(()), reg.session_present, assigned);
        for m in reg.backlog {
            let _ = self.session.deliver(m);
        }
        if let Principal::Device(d) = &*principal {
            self.inner
                .presence
                .connected(&d.group, &d.id, self.protocol_label, now);
            self.last_seen_ms = now.as_millis();
        }
        self.key = Some(reg.key);
        self.principal = Some(principal);
    }

    async fn on_publish(&mut self, message: Message, now: Timestamp) -> u8 {
        let (Some(principal), Some(key)) = (self.principal.clone(), self.key.clone()) else {
            return reason::NOT_AUTHORIZED;
        };
        let tenant = &key.tenant;
        match self
            .inner
            .broker
            .check_publish(&principal, tenant, &message.topic, now)
            .await
        {
            Err(code) => code,
            Ok(true) => self.hub_request(&principal, tenant, message, now).await,
            Ok(false) => {
                let reached = self
                    .inner
                    .broker
                    .publish(tenant, message, self.key.as_ref(), false, now)
                    .await;
                if reached == 0 {
                    reason::NO_MATCHING_SUBSCRIBERS
                } else {
                    reason::SUCCESS
                }
            }
        }
    }

    /// A device's request on one of the hub's topics. The answer goes to the device's own
    /// sessions; the return value is the PUBACK reason code.
    async fn hub_request(
        &mut self,
        principal: &Principal,
        tenant: &TenantId,
        message: Message,
        now: Timestamp,
    ) -> u8 {
        let Principal::Device(device) = principal else {
            return reason::NOT_AUTHORIZED;
        };
        let Some(id) = topic_device(&message.topic) else {
            return reason::NOT_AUTHORIZED;
        };
        let prefix = format!("devices/{id}/");
        let rest = &message.topic[prefix.len()..];
        let (answer_base, outcome): (String, Result<Option<Bytes>, Error>) =
            if rest == "measurements" {
                let result = async {
                    authorize(
                        principal,
                        PolicyAction::WriteMeasurements,
                        &Resource::device(device.group.clone(), device.id.clone()),
                    )?;
                    let upload = MeasurementUpload::parse(&message.payload)?;
                    let batch = upload.into_batch(tenant, &device.id, now);
                    let outcome = self.inner.measurements.append(&batch).await?;
                    self.inner.events.publish(Event {
                        at: now,
                        group: device.group.clone(),
                        kind: EventKind::MeasurementsReceived {
                            device: device.id.clone(),
                            points: u32::try_from(outcome.inserted).unwrap_or(u32::MAX),
                        },
                    });
                    Ok::<_, Error>(None)
                }
                .await;
                (format!("{prefix}measurements"), result)
            } else if rest == "jobs/start-next" {
                let result = async {
                    let lane = parse_lane(&message.payload)?;
                    let job = self.inner.jobs.next_job(principal, lane.as_deref()).await?;
                    #[derive(serde::Serialize)]
                    struct Answer {
                        job: Option<DeviceJob>,
                    }
                    Ok(Some(Bytes::from(
                        serde_json::to_vec(&Answer { job }).map_err(Error::internal)?,
                    )))
                }
                .await;
                (format!("{prefix}jobs/start-next"), result)
            } else {
                // jobs/{job}/update
                let job = rest
                    .strip_prefix("jobs/")
                    .and_then(|r| r.strip_suffix("/update"))
                    .unwrap_or_default()
                    .to_owned();
                let result = async {
                    let job: JobId = job
                        .parse()
                        .map_err(|_| Error::invalid_input("the topic names no valid job id"))?;
                    let (execution, report) = parse_update(&message.payload)?;
                    let answer = self
                        .inner
                        .jobs
                        .report(principal, &job, execution, report)
                        .await?;
                    Ok(Some(Bytes::from(
                        serde_json::to_vec(&answer).map_err(Error::internal)?,
                    )))
                }
                .await;
                (format!("{prefix}{rest}"), result)
            };
        let (topic, payload, code) = match outcome {
            Ok(None) => return reason::SUCCESS,
            Ok(Some(body)) => (format!("{answer_base}/accepted"), body, reason::SUCCESS),
            Err(e) => {
                let code = e.kind().mqtt_reason().0;
                let body = serde_json::to_vec(&e.problem()).unwrap_or_default();
                (format!("{answer_base}/rejected"), Bytes::from(body), code)
            }
        };
        self.inner
            .broker
            .route_to_device(tenant, Message::new(topic, payload, QoS::AtLeastOnce));
        // MQTT 5 clients also see the outcome in the PUBACK / PUBREC reason code.
        code
    }

    async fn finish(mut self) {
        let now = self.inner.clock.now();
        // Wills and final actions were processed in the loop; what is left is bookkeeping.
        let why = self.close.unwrap_or(DisconnectReason::ConnectionLost);
        if let Some(key) = &self.key {
            let undelivered = self.session.take_undelivered();
            self.inner
                .broker
                .unregister(key, undelivered, &self.handle, now);
        }
        if let Some(Principal::Device(d)) = self.principal.as_deref() {
            self.inner.presence.disconnected(&d.group, &d.id, why, now);
        }
        self.inner.sweep.remove(self.handle.id);
        // Whoever still holds the handle must not keep this task alive through its waker.
        self.handle.unregister_waker();
    }
}

fn parse_lane(payload: &[u8]) -> Result<Option<String>, Error> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        lane: Option<String>,
    }
    let body: Body = serde_json::from_slice(payload).map_err(|_| {
        Error::invalid_input("start-next takes an empty payload or {\"lane\": \"<lane>\"}")
    })?;
    Ok(body.lane)
}

fn parse_update(payload: &[u8]) -> Result<(u32, DeviceReport), Error> {
    let bad = || {
        Error::invalid_input(
            "an update is a device report: {\"execution\": N, \"status\": \"in_progress\" | \
             \"succeeded\" | \"failed\" | \"rejected\" | \"canceled\" | \"cancel_refused\", ...}",
        )
    };
    let mut value: serde_json::Value = serde_json::from_slice(payload).map_err(|_| bad())?;
    let obj = value.as_object_mut().ok_or_else(bad)?;
    let execution = obj
        .remove("execution")
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(bad)?;
    let report: DeviceReport = serde_json::from_value(value).map_err(|_| bad())?;
    Ok((execution, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_arriving_during_the_drain_are_kicked_too() {
        let sweep = Sweep::default();
        let before = ConnHandle::new(1, 1);
        sweep.add(before.clone());
        sweep.kick_all(reason::SERVER_SHUTTING_DOWN);
        assert_eq!(before.kicked(), Some(reason::SERVER_SHUTTING_DOWN));
        // Its handshake finished after the drain began.
        let late = ConnHandle::new(2, 1);
        sweep.add(late.clone());
        assert_eq!(late.kicked(), Some(reason::SERVER_SHUTTING_DOWN));
    }

    #[test]
    fn updates_carry_an_execution_and_a_report() {
        let (e, r) = parse_update(br#"{"execution": 2, "status": "succeeded"}"#).unwrap();
        assert_eq!(e, 2);
        assert_eq!(r, DeviceReport::Succeeded { result: None });
        assert!(parse_update(br#"{"status": "succeeded"}"#).is_err());
        assert!(parse_update(br#"{"execution": 1, "status": "exploded"}"#).is_err());
        assert_eq!(parse_lane(b"").unwrap(), None);
        assert_eq!(
            parse_lane(br#"{"lane":"fw"}"#).unwrap().as_deref(),
            Some("fw")
        );
        assert!(parse_lane(b"nonsense").is_err());
    }
}

#[cfg(test)]
pub(crate) mod size {
    use std::sync::Arc;

    use hub_core::{
        Authenticator, BoxFuture, Credentials, DeviceJob, DeviceJobs, DeviceReport, Error, JobId,
        Principal,
    };
    use hub_store::StoreLimits;
    use hub_store::memory::MemoryStore;

    #[derive(Debug)]
    pub(crate) struct Nobody;

    impl Authenticator for Nobody {
        fn authenticate<'a>(
            &'a self,
            _: &'a Credentials,
        ) -> BoxFuture<'a, Result<Principal, Error>> {
            Box::pin(async { Err(Error::unauthenticated("nobody")) })
        }
    }

    impl DeviceJobs for Nobody {
        fn next_job<'a>(
            &'a self,
            _: &'a Principal,
            _: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Option<DeviceJob>, Error>> {
            Box::pin(async { Ok(None) })
        }
        fn report<'a>(
            &'a self,
            _: &'a Principal,
            _: &'a JobId,
            _: u32,
            _: DeviceReport,
        ) -> BoxFuture<'a, Result<DeviceJob, Error>> {
            Box::pin(async { Err(Error::not_found("none")) })
        }
    }

    /// The per-connection future (state machine, codec, driver state, the stream) stays small:
    /// it is most of what an idle device costs in user space (the tokio task holding it, an I/O
    /// registration and a few small allocations are the rest). The figure is printed so that
    /// `cargo test connection_future_size -- --nocapture` shows it.
    #[test]
    fn connection_future_size() {
        let stores = MemoryStore::new(StoreLimits::default()).into_stores();
        let transport = crate::Transport::builder(
            Arc::new(Nobody),
            Arc::new(Nobody),
            stores.measurements,
            stores.registry,
        )
        .build();
        let (stream, _peer) = tokio::io::duplex(64);
        let stream_size = std::mem::size_of_val(&stream);
        let fut = super::run_connection(transport.inner.clone(), stream, "test");
        let future_size = std::mem::size_of_val(&fut);
        let tls_stream = std::mem::size_of::<crate::listener::DeviceTls>();
        let total = future_size - stream_size + tls_stream;
        eprintln!(
            "connection future: {future_size} bytes over a {stream_size}-byte test stream; \
             over TLS/TCP: about {total} bytes inline (the TLS stream itself: {tls_stream} \
             bytes); session {} bytes, codec {} bytes, conn {} bytes, action {} bytes, \
             message {} bytes, packet {} bytes",
            std::mem::size_of::<crate::session::Session>(),
            std::mem::size_of::<crate::codec::Codec>(),
            std::mem::size_of::<super::Conn>(),
            std::mem::size_of::<crate::session::Action>(),
            std::mem::size_of::<crate::session::Message>(),
            std::mem::size_of::<crate::codec::Packet>(),
        );
        // 416 bytes besides the stream when this was written; every idle device pays for it.
        assert!(
            future_size - stream_size <= 512,
            "the connection future grew to {future_size} bytes"
        );
    }
}

#[cfg(test)]
mod slot {
    use std::sync::Arc;

    use hub_core::{DeviceJobs, DevicePrincipal, ErrorKind, Principal};

    use crate::DeviceJobsSlot;

    #[tokio::test]
    async fn an_unbound_slot_answers_unavailable_then_delegates() {
        let slot = DeviceJobsSlot::new();
        let device = Principal::Device(DevicePrincipal {
            id: "pump-7".parse().unwrap(),
            group: "acme/plant-1".parse().unwrap(),
        });
        let e = slot.next_job(&device, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        slot.set(Arc::new(super::size::Nobody));
        assert_eq!(slot.next_job(&device, None).await.unwrap(), None);
    }
}
