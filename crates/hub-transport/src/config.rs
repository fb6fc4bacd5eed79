//! Every limit of the transport, in one serde-friendly struct.

use std::time::Duration;

use hub_core::LivenessPolicy;
use serde::{Deserialize, Serialize};

/// The transport's configuration. Every field has a documented default; a hub usually reads this
/// from its configuration file (`serde`, durations in milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// The largest MQTT packet accepted, fixed header included (default 64 KiB). Larger packets
    /// close the connection (MQTT 5: DISCONNECT 0x95) before their body is buffered.
    pub max_packet_size: usize,
    /// How many QoS 1/2 messages the hub sends to a client before acknowledgements (capped by the
    /// client's receive maximum) (default 32).
    pub max_inflight: u16,
    /// The receive maximum the hub announces: QoS 1/2 publications a client may have
    /// unacknowledged towards the hub (default 32).
    pub receive_maximum: u16,
    /// Messages queued for a connected client beyond the in-flight window (default 256). A client
    /// whose queue is full is a slow consumer and is disconnected; other clients are unaffected.
    pub max_queued_messages: usize,
    /// QoS 1/2 messages kept for a disconnected persistent session, in memory (default 256).
    /// When full, the oldest message is dropped. QoS 0 messages are not kept.
    pub max_offline_messages: usize,
    /// The longest session expiry granted to MQTT 5 clients, seconds (default 1 day). MQTT 3.1.1
    /// persistent sessions (clean session 0) get this expiry.
    pub max_session_expiry_secs: u32,
    /// Subscriptions per session (default 64).
    pub max_subscriptions: usize,
    /// Retained messages per tenant (default 10 000); further retained publications are delivered
    /// but not retained.
    pub max_retained_per_tenant: usize,
    /// The keep-alive the hub imposes when the client asks for none or for more (MQTT 5 sends it as
    /// server keep-alive; 3.1.1 clients are held to their own value) (default 60 s).
    pub default_keep_alive_secs: u16,
    /// The longest keep-alive a client may ask for; longer requests are lowered to it over MQTT 5
    /// (default 1200 s). Raise it to let battery devices sleep longer.
    pub max_keep_alive_secs: u16,
    /// How long a new connection may take to send CONNECT after the TLS handshake (default 10 s).
    pub connect_timeout_ms: u64,
    /// How long a TLS handshake may take (default 10 s).
    pub tls_handshake_timeout_ms: u64,
    /// The most simultaneous connections; further ones are closed at once (default 100 000).
    pub max_connections: usize,
    /// New connections accepted per second, sustained (default 1 000); bursts up to
    /// `accept_burst`. Excess connections wait in the kernel's backlog.
    pub accept_rate_per_sec: u32,
    /// The accept burst (default 500).
    pub accept_burst: u32,
    /// How often the shared keep-alive sweep runs (default 1 s).
    pub sweep_interval_ms: u64,
    /// How long a graceful drain waits for sessions to close after DISCONNECT (default 5 s).
    pub drain_timeout_ms: u64,
    /// Socket options for accepted connections.
    pub socket: SocketProfile,
    /// When a device counts as stale or offline.
    pub liveness: LivenessPolicy,
    /// How long a device's group is cached for topic access control (default 30 s).
    pub group_cache_ttl_ms: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 64 * 1024,
            max_inflight: 32,
            receive_maximum: 32,
            max_queued_messages: 256,
            max_offline_messages: 256,
            max_session_expiry_secs: 86_400,
            max_subscriptions: 64,
            max_retained_per_tenant: 10_000,
            default_keep_alive_secs: 60,
            max_keep_alive_secs: 1200,
            connect_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            max_connections: 100_000,
            accept_rate_per_sec: 1_000,
            accept_burst: 500,
            sweep_interval_ms: 1_000,
            drain_timeout_ms: 5_000,
            socket: SocketProfile::default(),
            liveness: LivenessPolicy::default(),
            group_cache_ttl_ms: 30_000,
        }
    }
}

impl TransportConfig {
    pub(crate) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

/// Socket options applied to each accepted TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketProfile {
    /// SO_SNDBUF cap in bytes (`None`: the kernel's autotuning). Small caps save kernel memory
    /// per idle device (default 32 KiB).
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF cap in bytes (default 16 KiB).
    pub recv_buffer: Option<usize>,
    /// TCP_NODELAY (default on: MQTT packets are small and latency matters).
    pub nodelay: bool,
    /// TCP keepalive idle time, seconds (`None`: off) (default 120 s).
    pub tcp_keepalive_secs: Option<u64>,
    /// TCP_USER_TIMEOUT in milliseconds, Linux only (`None`: the kernel's default) (default 30 s):
    /// how long unacknowledged data may stay in flight before the connection is dropped.
    pub user_timeout_ms: Option<u64>,
}

impl Default for SocketProfile {
    fn default() -> Self {
        Self {
            send_buffer: Some(32 * 1024),
            recv_buffer: Some(16 * 1024),
            nodelay: true,
            tcp_keepalive_secs: Some(120),
            user_timeout_ms: Some(30_000),
        }
    }
}
