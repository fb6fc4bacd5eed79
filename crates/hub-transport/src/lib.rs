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
//!   [`DeviceJobs`](hub_core::DeviceJobs) and [`MeasurementStore`](hub_store::MeasurementStore).
//! - presence: connect, disconnect and last-seen [`Event`](hub_core::Event)s; [`Transport`]
//!   implements [`PresenceQuery`](hub_core::PresenceQuery) and
//!   [`JobNotifier`](hub_core::JobNotifier).
//! - the listener: rustls (aws-lc-rs, TLS 1.3, 1.2 by configuration) on tokio with a socket
//!   tuning profile, a TLS handshake timeout, accept-rate limiting, a connection cap, one shared
//!   keep-alive sweep, and a graceful drain on shutdown.
//!
//! It does not check credentials (it calls [`Authenticator`](hub_core::Authenticator)), decide
//! job semantics (it calls [`DeviceJobs`](hub_core::DeviceJobs)), nor store anything itself.
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
//! Each connection is one tokio task. Its state machine and buffers are small and buffers grow
//! only while bytes are in flight (the read buffer is released after a burst), but TLS uses
//! `tokio-rustls`, which keeps rustls's own buffers for the life of the connection; rustls's
//! unbuffered API would remove those and is left for later. The test `connection_future_size`
//! reports the size of the connection future.
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
