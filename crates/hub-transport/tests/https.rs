//! The HTTPS listener: real TLS on 127.0.0.1, a stalled handshake holds up nobody.

#![cfg(feature = "http")]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hub_transport::https::{HttpsConfig, TlsListener};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Pki {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn pki() -> Pki {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

async fn get_over_tls(addr: std::net::SocketAddr, client: Arc<rustls::ClientConfig>) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_router_over_tls_while_a_handshake_stalls() {
    let pki = pki();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener::new(
        tcp,
        pki.server.clone(),
        HttpsConfig {
            handshake_timeout: Duration::from_millis(300),
            max_concurrent_handshakes: 8,
        },
    );
    let app = Router::new().route("/hello", get(|| async { "hello over tls" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    // A client that connects and never starts its handshake.
    let mut stalled = TcpStream::connect(addr).await.unwrap();

    let response = get_over_tls(addr, pki.client.clone()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello over tls"), "{response}");

    // The stalled client is dropped once its handshake times out: the server closes the socket.
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("the server must close a stalled handshake");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    // A plain-text client gets no HTTP answer: TLS only.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("hello over tls"));

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
