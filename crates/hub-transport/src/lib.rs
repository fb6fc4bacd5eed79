//! # hub-transport: devices' MQTT connections over TLS
//!
//! Devices keep one TLS connection to the hub and speak MQTT 3.1.1 or 5.0 over it. This crate is
//! the device side of the hub:
//!
//! - [`codec`]: the MQTT packet codec (incremental decode, size limit before buffering, typed
//!   errors).
//! - [`session`]: the sans-IO per-connection state machine (CONNECT, keep-alive, QoS 0/1/2 both
//!   ways, flow control, will, slow-consumer policy).
//! - the broker (internal): subscriptions with `+` and `#`, retained messages, persistent
//!   sessions (in memory), topic access control per tenant, and the hub's own topics mapped onto
//!   [`DeviceJobs`] and [`MeasurementStore`].
//! - presence: connect, disconnect and last-seen [`Event`](hub_core::Event)s; [`Transport`]
//!   implements [`PresenceQuery`] and
//!   [`JobNotifier`].
//! - the listener: rustls (aws-lc-rs, TLS 1.3, 1.2 by configuration) on tokio with a socket
//!   tuning profile, a TLS handshake timeout, accept-rate limiting, a connection cap, one shared
//!   keep-alive sweep, and a graceful drain on shutdown.
//! - `ws` (feature `http`): MQTT over WebSocket/TLS, `GET /mqtt` with subprotocol `mqtt`.
//! - `https` (feature `http`): the TLS listener the Web API is served on.
//!
//! It does not check credentials (it calls [`Authenticator`]), decide
//! job semantics (it calls [`DeviceJobs`]), nor store anything itself.
//!
//! ## Topics
//!
//! Everything lives under `devices/{device_id}/` in the connecting principal's tenant. A device
//! publishes and subscribes only under its own prefix; an app or user subscribes to devices it may
//! see (`devices/+/…` is filtered per message by [`hub_core::authorize`] with
//! [`Action::ReadDevice`](hub_core::Action::ReadDevice)). The hub consumes
//! `devices/{id}/jobs/start-next`, `devices/{id}/jobs/{job}/update` and `devices/{id}/measurements`,
//! answers on `…/accepted` and `…/rejected` (and `measurements/rejected`), and pushes
//! `devices/{id}/jobs/notify`. Those are reserved: nobody else may publish to them.
//!
//! ## Starting a server
//!
//! ```no_run
//! # async fn run(
//! #     auth: std::sync::Arc<dyn hub_core::Authenticator>,
//! #     jobs: std::sync::Arc<dyn hub_core::DeviceJobs>,
//! #     stores: hub_store::Stores,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use hub_transport::{Transport, TransportConfig, tls};
//! use tokio_util::sync::CancellationToken;
//!
//! let transport = Transport::builder(auth, jobs, stores.measurements, stores.registry)
//!     .config(TransportConfig::default())
//!     .build();
//! let tls = tls::server_config_from_pem_files(
//!     "cert.pem".as_ref(), "key.pem".as_ref(), tls::TlsVersions::Tls13)?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8883").await?;
//! let shutdown = CancellationToken::new();
//! // Cancel `shutdown` to drain: sessions get DISCONNECT 0x8B (MQTT 5), then the call returns.
//! transport.serve(listener, tls, shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! ## Memory per connection
//!
//! An idle device is what a hub holds hundreds of thousands of, so an idle connection keeps no
//! buffer at all: input is read through a per-thread scratch buffer and only a partial packet is
//! kept; output is freed once written; a session's in-flight queues exist only while messages
//! are in flight; the broker reaches the connection through one small handle (mailbox, kick,
//! keep-alive deadline) and no timer exists per connection (one shared sweep compares deadlines
//! with the clock). The handshake runs in a task of its own and the connection gets a new task
//! holding exactly its future; the test `connection_future_size` reports that future's size.
//!
//! TLS is where the rest goes. By default the connection keeps a `tokio-rustls` stream (rustls's
//! buffered `ServerConnection`, several KiB for the life of the connection). With the feature
//! **`compact-tls`**, rustls runs the handshake through its unbuffered API and then hands the
//! traffic keys over (the interface rustls offers for kernel TLS); `tls::compact` runs the record
//! layer (aws-lc-rs AEADs, TLS 1.3 with key updates both ways, TLS 1.2) keeping only keys,
//! secrets and sequence numbers. With it, an idle authenticated MQTT-over-TLS connection costs
//! about 2.6 KiB of the server's memory (`BENCHMARKS.md`, against Mosquitto's 14.6 KiB). The
//! feature is off by default because it puts a record layer of this crate's own on the wire;
//! it is tested against rustls's client for every suite, OpenSSL's `s_client` key updates,
//! `mosquitto_pub`/`mosquitto_sub` and Paho, and the `hub` example turns it on.
//!
//! ## Persistence
//!
//! Persistent sessions (MQTT 3.1.1 clean session 0, MQTT 5 session expiry) keep their
//! subscriptions and a bounded queue of QoS 1/2 messages **in memory** on this node: they do not
//! survive a restart. The job store stays the truth for jobs: a device that missed a notice still
//! gets its jobs with `start-next`.

pub mod codec;
pub mod config;
pub mod session;
pub mod tls;

#[cfg(feature = "http")]
pub mod https;
#[cfg(feature = "http")]
pub mod ws;

mod broker;
mod driver;
mod listener;
mod presence;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hub_core::{
    Authenticator, BoxFuture, Clock, DeviceId, DeviceJobs, DiscardEvents, EventSink, JobNotice,
    JobNotifier, NodeId, NotifyOutcome, Presence, PresenceQuery, SystemClock, TenantId,
};
use hub_store::{MeasurementStore, RegistryStore};

pub use broker::topic_matches;
pub use config::{SocketProfile, TransportConfig};
pub use hub_core;

use crate::codec::QoS;
use crate::session::Message;

/// The MQTT transport: build it once with [`Transport::builder`], then [`serve`](Transport::serve)
/// one or more listeners. Cloning is cheap (it is an `Arc`).
#[derive(Debug, Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: TransportConfig,
    pub(crate) broker: broker::Broker,
    pub(crate) presence: presence::PresenceTable,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) jobs: Arc<dyn DeviceJobs>,
    pub(crate) measurements: Arc<dyn MeasurementStore>,
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) connections: AtomicUsize,
    pub(crate) sweep: driver::Sweep,
    /// Shared by every session rather than copied into each.
    pub(crate) session_limits: Arc<session::SessionLimits>,
}

/// Builds a [`Transport`].
#[derive(Debug)]
pub struct TransportBuilder {
    auth: Arc<dyn Authenticator>,
    jobs: Arc<dyn DeviceJobs>,
    measurements: Arc<dyn MeasurementStore>,
    registry: Arc<dyn RegistryStore>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    config: TransportConfig,
    node: NodeId,
}

impl TransportBuilder {
    /// The configuration (default: [`TransportConfig::default`]).
    pub fn config(mut self, config: TransportConfig) -> Self {
        self.config = config;
        self
    }

    /// Where presence events go (default: discarded).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// This hub node's id, reported in presence (default `node-1`).
    pub fn node(mut self, node: NodeId) -> Self {
        self.node = node;
        self
    }

    /// The transport.
    pub fn build(self) -> Transport {
        let broker = broker::Broker::new(self.registry, &self.config);
        let presence =
            presence::PresenceTable::new(self.config.liveness, self.node, self.events.clone());
        Transport {
            inner: Arc::new(Inner {
                broker,
                presence,
                auth: self.auth,
                jobs: self.jobs,
                measurements: self.measurements,
                events: self.events,
                clock: self.clock,
                connections: AtomicUsize::new(0),
                sweep: driver::Sweep::default(),
                session_limits: Arc::new(session::SessionLimits::from(&self.config)),
                config: self.config,
            }),
        }
    }
}

impl Transport {
    /// A builder taking the seams the transport needs: who is connecting (`auth`), the device
    /// side of the Job API (`jobs`), where measurements go, and the registry (device groups for
    /// topic access control).
    pub fn builder(
        auth: Arc<dyn Authenticator>,
        jobs: Arc<dyn DeviceJobs>,
        measurements: Arc<dyn MeasurementStore>,
        registry: Arc<dyn RegistryStore>,
    ) -> TransportBuilder {
        TransportBuilder {
            auth,
            jobs,
            measurements,
            registry,
            events: Arc::new(DiscardEvents),
            clock: Arc::new(SystemClock),
            config: TransportConfig::default(),
            node: NodeId::new("node-1").expect("a valid node id"),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Open connections (TLS handshakes included).
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Accepts MQTT-over-TLS connections on `listener` until `shutdown` is cancelled, then drains:
    /// stops accepting, sends MQTT 5 sessions DISCONNECT 0x8B (server shutting down), and waits up
    /// to `drain_timeout_ms` for connections to close. Errors only if the listener fails for good.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        listener::serve(self.inner.clone(), listener, tls, shutdown).await
    }

    /// MQTT over WebSocket (feature `http`): a router with `GET /mqtt` (subprotocol `mqtt`) for
    /// the application to merge into its HTTPS server. Its sessions share this transport's
    /// broker, limits, presence and drain.
    #[cfg(feature = "http")]
    pub fn router(&self) -> axum::Router {
        ws::router(self.inner.clone())
    }

    /// The OpenAPI description of exactly the routes [`Transport::router`] mounts.
    #[cfg(feature = "http")]
    pub fn openapi() -> utoipa::openapi::OpenApi {
        ws::openapi()
    }

    /// Serves [`Transport::router`] over TLS on its own listener (feature `http`), with the same
    /// accept-rate limit, connection cap, socket profile, handshake timeout and drain as
    /// [`Transport::serve`]. Use it when WebSocket devices get their own port; otherwise merge
    /// the router into the application's server.
    #[cfg(feature = "http")]
    pub async fn serve_websocket(
        &self,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        let router = self.router();
        listener::serve_with(
            self.inner.clone(),
            listener,
            tls,
            shutdown,
            move |inner, tls| {
                let router = router.clone();
                async move {
                    let _ = inner;
                    ws_serve_connection(router, tls).await;
                }
            },
        )
        .await
    }

    /// Runs the shared keep-alive sweep and the expiry of stored sessions until `shutdown` is
    /// cancelled. [`serve`](Transport::serve) and `serve_websocket` run it themselves; call it
    /// when the only entry point is the WebSocket [`router`](Transport::router) merged into the
    /// application's own server.
    pub async fn maintain(&self, shutdown: tokio_util::sync::CancellationToken) {
        let every = config::TransportConfig::ms(self.inner.config.sweep_interval_ms.max(10));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let now = self.inner.clock.now();
                    self.inner.sweep.run(now);
                    self.inner.broker.expire(now);
                }
            }
        }
    }

    /// Tells every open session the server is shutting down (MQTT 5: DISCONNECT 0x8B) and closes
    /// it. `serve` does this itself when its shutdown token is cancelled; call it to drain
    /// sessions that came through the merged WebSocket router.
    pub fn disconnect_all(&self) {
        self.inner
            .sweep
            .kick_all(codec::reason::SERVER_SHUTTING_DOWN);
    }

    /// This transport as the job service's notifier.
    pub fn notifier(&self) -> Arc<dyn JobNotifier> {
        Arc::new(self.clone())
    }

    /// This transport as the job service's presence query.
    pub fn presence_query(&self) -> Arc<dyn PresenceQuery> {
        Arc::new(self.clone())
    }
}

impl PresenceQuery for Transport {
    fn presence(&self, tenant: &TenantId, device: &DeviceId) -> Presence {
        self.inner
            .presence
            .presence(tenant, device, self.inner.clock.now())
    }

    fn wait_online<'a>(&'a self, tenant: &'a TenantId, device: &'a DeviceId) -> BoxFuture<'a, ()> {
        Box::pin(self.inner.presence.wait_online(tenant, device))
    }
}

impl JobNotifier for Transport {
    /// Publishes the notice on `devices/{id}/jobs/notify` (QoS 1) to the device's sessions here
    /// that subscribed to it.
    fn notify(&self, tenant: &TenantId, device: &DeviceId, notice: JobNotice) -> NotifyOutcome {
        let payload = serde_json::to_vec(&notice).unwrap_or_default();
        let message = Message::new(
            format!("devices/{device}/jobs/notify"),
            payload,
            QoS::AtLeastOnce,
        );
        let reached = self.inner.broker.route_to_device(tenant, message);
        if reached > 0 {
            NotifyOutcome::Sent
        } else {
            NotifyOutcome::NotConnected
        }
    }
}

#[cfg(feature = "http")]
async fn ws_serve_connection(router: axum::Router, tls: listener::DeviceTls) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .with_upgrades()
        .await;
}

/// A [`DeviceJobs`] bound after the transport is built, for the one cycle in the wiring: the job
/// service needs the transport's [`notifier`](Transport::notifier) and
/// [`presence_query`](Transport::presence_query) to be built, and the transport needs the job
/// service's [`DeviceJobs`]. Until [`set`](DeviceJobsSlot::set) is called, devices asking for jobs
/// are answered "unavailable".
///
/// ```no_run
/// # fn wire(
/// #     auth: std::sync::Arc<dyn hub_core::Authenticator>,
/// #     stores: hub_store::Stores,
/// #     make_job_service: impl FnOnce(
/// #         std::sync::Arc<dyn hub_core::JobNotifier>,
/// #         std::sync::Arc<dyn hub_core::PresenceQuery>,
/// #     ) -> std::sync::Arc<dyn hub_core::DeviceJobs>,
/// # ) {
/// use std::sync::Arc;
/// use hub_transport::{DeviceJobsSlot, Transport};
///
/// let slot = Arc::new(DeviceJobsSlot::new());
/// let transport =
///     Transport::builder(auth, slot.clone(), stores.measurements, stores.registry).build();
/// let jobs = make_job_service(transport.notifier(), transport.presence_query());
/// slot.set(jobs);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct DeviceJobsSlot(std::sync::OnceLock<Arc<dyn DeviceJobs>>);

impl DeviceJobsSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds the job service; later calls are ignored (the first binding stays).
    pub fn set(&self, jobs: Arc<dyn DeviceJobs>) {
        let _ = self.0.set(jobs);
    }

    fn get(&self) -> Result<&Arc<dyn DeviceJobs>, hub_core::Error> {
        self.0
            .get()
            .ok_or_else(|| hub_core::Error::unavailable("the job service is not ready yet"))
    }
}

impl DeviceJobs for DeviceJobsSlot {
    fn next_job<'a>(
        &'a self,
        device: &'a hub_core::Principal,
        lane: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<hub_core::DeviceJob>, hub_core::Error>> {
        match self.get() {
            Ok(jobs) => jobs.next_job(device, lane),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn report<'a>(
        &'a self,
        device: &'a hub_core::Principal,
        job: &'a hub_core::JobId,
        execution: u32,
        report: hub_core::DeviceReport,
    ) -> BoxFuture<'a, Result<hub_core::DeviceJob, hub_core::Error>> {
        match self.get() {
            Ok(jobs) => jobs.report(device, job, execution, report),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}
