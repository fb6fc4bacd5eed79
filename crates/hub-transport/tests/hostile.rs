//! Hostile input over a raw TLS socket: truncated, oversized and malformed packets, a client that
//! never reads, a stalled TLS handshake. Each is dealt with without disturbing other clients.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use common::{Hub, PLANT1_VIEWER};
use hub_core::{DisconnectReason, EventKind};
use hub_transport::TransportConfig;
use hub_transport::codec::{
    Codec, Connect, Packet, Properties, Protocol, Publish, QoS, SubOptions, Subscribe, reason,
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// Guards against a hang; never part of what is asserted.
const GUARD: Duration = Duration::from_secs(30);

async fn tls(hub: &Hub, recv_buffer: Option<u32>) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(hub.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(n) = recv_buffer {
        socket.set_recv_buffer_size(n).unwrap();
    }
    let tcp = socket
        .connect(([127, 0, 0, 1], hub.port).into())
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

struct Client {
    io: TlsStream<TcpStream>,
    codec: Codec,
    buf: BytesMut,
}

impl Client {
    async fn connect(
        hub: &Hub,
        protocol: Protocol,
        user: &str,
        pass: &str,
        recv_buffer: Option<u32>,
    ) -> Client {
        let id = format!("{user}-{}", rand_id());
        Self::connect_as(hub, protocol, user, pass, recv_buffer, &id, 60).await
    }

    async fn connect_as(
        hub: &Hub,
        protocol: Protocol,
        user: &str,
        pass: &str,
        recv_buffer: Option<u32>,
        client_id: &str,
        keep_alive: u16,
    ) -> Client {
        let mut c = Client {
            io: tls(hub, recv_buffer).await,
            codec: Codec::new(protocol, 1 << 20),
            buf: BytesMut::new(),
        };
        c.send(Packet::Connect(Box::new(Connect {
            protocol,
            clean_start: true,
            keep_alive,
            client_id: client_id.to_owned(),
            will: None,
            username: Some(user.into()),
            password: Some(pass.as_bytes().to_vec().into()),
            properties: Properties::default(),
        })))
        .await;
        match c.recv().await {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        self.codec.encode(&p, &mut out).unwrap();
        self.io.write_all(&out).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next packet, or `None` once the server closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(GUARD, async {
            loop {
                if let Some(p) = self.codec.decode(&mut self.buf).unwrap() {
                    return Some(p);
                }
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server answers")
    }

    async fn subscribe(&mut self, filter: &str) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(filter.into(), SubOptions::qos(QoS::AtMostOnce))],
            properties: Properties::default(),
        }))
        .await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(a)) if a.codes == [0]));
    }
}

/// Waits (bounded by the guard) until an event matching `pred` has been published.
async fn wait_for_event(hub: &Hub, pred: impl Fn(&EventKind) -> bool) {
    tokio::time::timeout(GUARD, async {
        loop {
            if hub.events.take().iter().any(|e| pred(&e.kind)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the event was published");
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn small_packets() -> TransportConfig {
    TransportConfig {
        max_packet_size: 1024,
        ..TransportConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_packet_is_refused_before_its_body_arrives() {
    let hub = Hub::start(small_packets()).await;
    let mut c = Client::connect(&hub, Protocol::V5, "pump-7", "hk_pump7_secret", None).await;
    // Announce a 1 MB PUBLISH and send only its header.
    c.io.write_all(&[0x30, 0x80, 0x80, 0x40]).await.unwrap();
    c.io.flush().await.unwrap();
    assert!(
        matches!(c.recv().await, Some(Packet::Disconnect(d)) if d.reason == reason::PACKET_TOO_LARGE)
    );
    assert_eq!(c.recv().await, None);
    // Others are unaffected.
    Client::connect(&hub, Protocol::V5, "pump-8", "hk_pump8_secret", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_utf8_topic_is_a_malformed_packet() {
    let hub = Hub::start(TransportConfig::default()).await;
    let mut c = Client::connect(&hub, Protocol::V5, "pump-7", "hk_pump7_secret", None).await;
    let topic = b"devices/pump-7/\xff\xfe";
    let mut raw = BytesMut::new();
    raw.put_u8(0x30);
    raw.put_u8((2 + topic.len() + 1 + 1) as u8);
    raw.put_u16(topic.len() as u16);
    raw.put_slice(topic);
    raw.put_u8(0); // no properties
    raw.put_u8(b'x');
    c.io.write_all(&raw).await.unwrap();
    c.io.flush().await.unwrap();
    assert!(
        matches!(c.recv().await, Some(Packet::Disconnect(d)) if d.reason == reason::MALFORMED_PACKET)
    );
    assert_eq!(c.recv().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_packet_then_eof_ends_only_that_session() {
    let hub = Hub::start(TransportConfig::default()).await;
    let mut c = Client::connect(&hub, Protocol::V311, "pump-7", "hk_pump7_secret", None).await;
    // Half a PUBLISH, then the client goes away.
    c.io.write_all(&[0x30, 0x20, 0x00, 0x10, b'd', b'e'])
        .await
        .unwrap();
    c.io.shutdown().await.unwrap();
    assert_eq!(c.recv().await, None);
    let mut other = Client::connect(&hub, Protocol::V311, "pump-8", "hk_pump8_secret", None).await;
    other.send(Packet::PingReq).await;
    assert_eq!(other.recv().await, Some(Packet::PingResp));
    wait_for_event(&hub, |k| matches!(k, EventKind::DeviceDisconnected { device, reason: DisconnectReason::ConnectionLost } if device.as_str() == "pump-7")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_disconnected_and_others_are_unaffected() {
    let mut config = TransportConfig {
        max_queued_messages: 8,
        ..TransportConfig::default()
    };
    config.socket.send_buffer = Some(4096);
    let hub = Hub::start(config).await;
    // pump-7 subscribes to everything of its own and then never reads again.
    let mut stuck = Client::connect(
        &hub,
        Protocol::V311,
        "pump-7",
        "hk_pump7_secret",
        Some(4096),
    )
    .await;
    stuck.subscribe("devices/pump-7/#").await;
    let mut healthy =
        Client::connect(&hub, Protocol::V311, "pump-8", "hk_pump8_secret", None).await;
    healthy.subscribe("devices/pump-8/#").await;
    let mut app = Client::connect(&hub, Protocol::V311, "oauth2", PLANT1_VIEWER, None).await;
    let big = vec![b'x'; 16 * 1024];
    let mut kicked = false;
    for _ in 0..2000 {
        app.send(Packet::Publish(Publish::new(
            "devices/pump-7/firehose",
            QoS::AtMostOnce,
            big.clone(),
        )))
        .await;
        if hub.events.take().iter().any(|e| matches!(&e.kind, EventKind::DeviceDisconnected { device, reason: DisconnectReason::ServerClosed } if device.as_str() == "pump-7")) {
            kicked = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(kicked, "the slow consumer was disconnected");
    // The publisher and the other subscriber carry on.
    app.send(Packet::Publish(Publish::new(
        "devices/pump-8/cmd",
        QoS::AtMostOnce,
        &b"still here"[..],
    )))
    .await;
    assert!(
        matches!(healthy.recv().await, Some(Packet::Publish(p)) if &p.payload[..] == b"still here")
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_times_out() {
    let config = TransportConfig {
        tls_handshake_timeout_ms: 200,
        ..TransportConfig::default()
    };
    let hub = Hub::start(config).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", hub.port)).await.unwrap();
    // Say nothing: the server gives up on the handshake and closes.
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(GUARD, tcp.read(&mut b))
        .await
        .expect("closed by the server");
    assert!(matches!(n, Ok(0) | Err(_)));
    // The listener still serves others.
    Client::connect(&hub, Protocol::V5, "pump-8", "hk_pump8_secret", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_connect_is_closed() {
    let config = TransportConfig {
        connect_timeout_ms: 200,
        sweep_interval_ms: 50,
        ..TransportConfig::default()
    };
    let hub = Hub::start(config).await;
    let mut io = tls(&hub, None).await;
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(GUARD, io.read(&mut b))
        .await
        .expect("closed by the server");
    assert!(matches!(n, Ok(0) | Err(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_with_server_shutting_down() {
    let hub = Hub::start(TransportConfig::default()).await;
    let mut c = Client::connect(&hub, Protocol::V5, "pump-7", "hk_pump7_secret", None).await;
    hub.shutdown.cancel();
    assert!(
        matches!(c.recv().await, Some(Packet::Disconnect(d)) if d.reason == reason::SERVER_SHUTTING_DOWN)
    );
    assert_eq!(c.recv().await, None);
    tokio::time::timeout(GUARD, hub.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", hub.port)).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_extra_connections() {
    let config = TransportConfig {
        max_connections: 1,
        ..TransportConfig::default()
    };
    let hub = Hub::start(config).await;
    let mut first = Client::connect(&hub, Protocol::V5, "pump-7", "hk_pump7_secret", None).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", hub.port)).await.unwrap();
    let mut b = [0u8; 16];
    let n = tokio::time::timeout(GUARD, tcp.read(&mut b))
        .await
        .expect("closed by the server");
    assert!(matches!(n, Ok(0) | Err(_)));
    first.send(Packet::PingReq).await;
    assert_eq!(first.recv().await, Some(Packet::PingResp));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_is_refused_unless_configured() {
    for (versions, ok) in [
        (hub_transport::tls::TlsVersions::Tls13, false),
        (hub_transport::tls::TlsVersions::Tls13And12, true),
    ] {
        let hub = Hub::start_with(TransportConfig::default(), versions).await;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(hub.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", hub.port)).await.unwrap();
        let r = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await;
        assert_eq!(r.is_ok(), ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_disconnected_by_the_shared_sweep() {
    let config = TransportConfig {
        sweep_interval_ms: 50,
        ..TransportConfig::default()
    };
    let hub = Hub::start(config).await;
    // Keep-alive 1 s: silent for 1.5 s, the sweep closes it with "keep alive timeout".
    let mut c = Client::connect_as(
        &hub,
        Protocol::V5,
        "pump-7",
        "hk_pump7_secret",
        None,
        "ka",
        1,
    )
    .await;
    assert!(
        matches!(c.recv().await, Some(Packet::Disconnect(d)) if d.reason == reason::KEEP_ALIVE_TIMEOUT)
    );
    assert_eq!(c.recv().await, None);
    wait_for_event(&hub, |k| {
        matches!(
            k,
            EventKind::DeviceDisconnected {
                reason: DisconnectReason::KeepAliveTimeout,
                ..
            }
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_the_session_over() {
    let hub = Hub::start(TransportConfig::default()).await;
    let mut first = Client::connect_as(
        &hub,
        Protocol::V5,
        "pump-7",
        "hk_pump7_secret",
        None,
        "same",
        60,
    )
    .await;
    let mut second = Client::connect_as(
        &hub,
        Protocol::V5,
        "pump-7",
        "hk_pump7_secret",
        None,
        "same",
        60,
    )
    .await;
    assert!(
        matches!(first.recv().await, Some(Packet::Disconnect(d)) if d.reason == reason::SESSION_TAKEN_OVER)
    );
    assert_eq!(first.recv().await, None);
    second.send(Packet::PingReq).await;
    assert_eq!(second.recv().await, Some(Packet::PingResp));
    // Another device choosing the same client id gets its own session: no takeover across
    // principals.
    let mut other = Client::connect_as(
        &hub,
        Protocol::V5,
        "pump-8",
        "hk_pump8_secret",
        None,
        "same",
        60,
    )
    .await;
    second.send(Packet::PingReq).await;
    assert_eq!(second.recv().await, Some(Packet::PingResp));
    other.send(Packet::PingReq).await;
    assert_eq!(other.recv().await, Some(Packet::PingResp));
}
