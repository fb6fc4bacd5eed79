//! The compact record layer against rustls's own client (buffered, the reference
//! implementation), for every cipher suite and both protocol versions, and against OpenSSL's
//! `s_client` for key updates.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{CompactTls, accept};

struct Pki {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    Pki {
        cert: cert.der().clone(),
        key: key.serialize_der(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn server_config(pki: &Pki, tls12: bool) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.clone()],
            PrivateKeyDer::try_from(pki.key.clone()).unwrap(),
        )
        .unwrap();
    super::capture_config(&config)
}

/// [`server_config`] before `capture_config`, so a test can change it first.
fn plain_server_config(pki: &Pki) -> ServerConfig {
    let config = server_config(pki, false);
    let mut config = (*config).clone();
    config.key_log = Arc::new(rustls::NoKeyLog);
    config
}

fn client_config(pki: &Pki, suite: SupportedCipherSuite) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![suite];
    let version = match suite {
        SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
    };
    let mut roots = RootCertStore::empty();
    roots.add(pki.cert.clone()).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A listener on a free port whose first connection goes through [`accept`].
async fn accept_one(
    server: Arc<ServerConfig>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<CompactTls>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(tcp, server).await
    });
    (addr, accepting)
}

/// Drives a blocking rustls client through its handshake and sends its last flight (with
/// whatever it buffered meanwhile).
fn handshake_blocking(conn: &mut rustls::ClientConnection, tcp: &mut std::net::TcpStream) {
    while conn.is_handshaking() || conn.wants_write() {
        if conn.wants_write() {
            conn.write_tls(tcp).unwrap();
        } else {
            conn.read_tls(tcp).unwrap();
            conn.process_new_packets().unwrap();
        }
    }
}

async fn pair(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (CompactTls, tokio_rustls::client::TlsStream<TcpStream>) {
    let (addr, accepting) = accept_one(server).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    (accepting.await.unwrap().unwrap(), client)
}

/// Bytes that are not all the same, so a misplaced record shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Small and large messages both ways, then close_notify both ways.
async fn round_trips(
    server: &mut CompactTls,
    client: &mut tokio_rustls::client::TlsStream<TcpStream>,
) {
    for len in [1usize, 100, 16 * 1024, 16 * 1024 + 1, 200_000] {
        let sent = pattern(len, len as u8);
        let (w, r) = tokio::join!(client.write_all(&sent), async {
            let mut got = vec![0u8; len];
            server.read_exact(&mut got).await.map(|_| got)
        });
        w.unwrap();
        client.flush().await.unwrap();
        assert_eq!(r.unwrap(), sent, "client to server, {len} bytes");

        let sent = pattern(len, !(len as u8));
        let (w, r) = tokio::join!(
            async {
                server.write_all(&sent).await?;
                server.flush().await
            },
            async {
                let mut got = vec![0u8; len];
                client.read_exact(&mut got).await.map(|_| got)
            }
        );
        w.unwrap();
        assert_eq!(r.unwrap(), sent, "server to client, {len} bytes");
    }
}

async fn closes(mut server: CompactTls, mut client: tokio_rustls::client::TlsStream<TcpStream>) {
    // The server's close_notify reaches the client as a clean end of stream ...
    server.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    // ... and the client's reaches the server as one.
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn every_cipher_suite_of_both_versions_carries_data_and_closes() {
    let pki = pki();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut seen13 = 0;
    let mut seen12 = 0;
    for suite in provider.cipher_suites {
        let tls13 = matches!(suite, SupportedCipherSuite::Tls13(_));
        if !tls13
            && !matches!(
                suite.suite(),
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                    | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            )
        {
            // RSA suites need an RSA certificate; the ECDSA ones cover the same record layer.
            continue;
        }
        let (mut server, mut client) =
            pair(server_config(&pki, true), client_config(&pki, suite)).await;
        assert_eq!(server.is_tls13(), tls13, "{suite:?}");
        round_trips(&mut server, &mut client).await;
        closes(server, client).await;
        if tls13 {
            seen13 += 1;
        } else {
            seen12 += 1;
        }
    }
    assert_eq!((seen13, seen12), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sent_with_the_clients_finished_is_not_lost() {
    let pki = pki();
    let server = server_config(&pki, false);
    let (addr, accepting) = accept_one(server).await;
    // A client that writes before the handshake is over: rustls sends it right behind its
    // Finished, so the server's handshake loop is the one to receive it.
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let mut conn = rustls::ClientConnection::new(
        client_config(&pki, suite),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    conn.writer()
        .write_all_compat(b"CONNECT early")
        .expect("buffered until the handshake completes");
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let tcp_for_client = tcp.try_clone().unwrap();
    let client = std::thread::spawn(move || {
        let mut tcp = tcp_for_client;
        handshake_blocking(&mut conn, &mut tcp);
        conn
    });
    let mut server = accepting.await.unwrap().unwrap();
    let mut got = [0u8; 13];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"CONNECT early");
    drop(client.join().unwrap());
    let _ = tcp.shutdown(std::net::Shutdown::Both);
}

trait WriteAllCompat {
    fn write_all_compat(&mut self, data: &[u8]) -> std::io::Result<()>;
}

impl WriteAllCompat for rustls::Writer<'_> {
    fn write_all_compat(&mut self, data: &[u8]) -> std::io::Result<()> {
        std::io::Write::write_all(self, data)
    }
}

#[tokio::test]
async fn key_updates_from_the_client_are_followed() {
    let pki = pki();
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384;
    let (mut server, mut client) =
        pair(server_config(&pki, false), client_config(&pki, suite)).await;
    for round in 0..3u8 {
        // rustls sends KeyUpdate(update_requested): the server must switch its receive key and
        // answer with its own, or the next records fail on either side.
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let sent = pattern(5000, round);
        client.write_all(&sent).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0u8; sent.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
        server.write_all(&sent).await.unwrap();
        server.flush().await.unwrap();
        let mut back = vec![0u8; sent.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, sent);
    }
    round_trips(&mut server, &mut client).await;
}

#[tokio::test]
async fn the_server_replaces_its_key_before_the_limit() {
    let pki = pki();
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256;
    let (mut server, mut client) =
        pair(server_config(&pki, false), client_config(&pki, suite)).await;
    // A key protects three records here, not millions; the server runs on this thread.
    super::KEY_UPDATE_AFTER_IN_TEST.set(3);
    for i in 0..10u8 {
        let sent = pattern(300, i);
        server.write_all(&sent).await.unwrap();
        server.flush().await.unwrap();
        let mut got = vec![0u8; sent.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent, "record {i}");
    }
    assert!(server.records.tx.seq <= 3, "the key was replaced");
    super::KEY_UPDATE_AFTER_IN_TEST.set(super::KEY_UPDATE_AFTER);
}

#[tokio::test]
async fn tampered_and_oversized_records_are_refused() {
    let pki = pki();
    let server = server_config(&pki, false);
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let client = client_config(&pki, suite);

    // A record claiming more than the protocol allows.
    let (mut s, c) = pair(server.clone(), client.clone()).await;
    let mut tcp = c.into_inner().0;
    tcp.write_all(&[23, 3, 3, 0xFF, 0xFF]).await.unwrap();
    let err = s.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

    // A well-framed record whose authentication fails.
    let (mut s, c) = pair(server, client).await;
    let mut tcp = c.into_inner().0;
    let mut record = vec![23, 3, 3, 0, 40];
    record.extend_from_slice(&[0xA5; 40]);
    tcp.write_all(&record).await.unwrap();
    let err = s.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_split_across_reads_are_joined() {
    let pki = pki();
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let server = server_config(&pki, false);
    let client = client_config(&pki, suite);
    let (addr, accepting) = accept_one(server).await;
    let mut conn =
        rustls::ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    handshake_blocking(&mut conn, &mut tcp);
    let mut server = accepting.await.unwrap().unwrap();
    let sent = pattern(40_000, 7);
    std::io::Write::write_all(&mut conn.writer(), &sent).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    // Dribble the ciphertext a few bytes at a time, across record boundaries.
    let writer = std::thread::spawn(move || {
        for chunk in wire.chunks(997) {
            std::io::Write::write_all(&mut tcp, chunk).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        tcp
    });
    let mut got = vec![0u8; sent.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, sent);
    drop(writer.join().unwrap());
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffers() {
    let pki = pki();
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let (mut server, mut client) =
        pair(server_config(&pki, false), client_config(&pki, suite)).await;
    round_trips(&mut server, &mut client).await;
    assert!(server.partial.is_empty());
    assert!(server.plain.is_empty());
    assert!(server.unsent.is_empty());
    eprintln!(
        "compact TLS: {} bytes, all of it inline",
        std::mem::size_of::<CompactTls>()
    );
    assert!(std::mem::size_of::<CompactTls>() <= 304);
}

/// OpenSSL's `s_client` (a TLS stack no one here wrote) asks for key updates when it reads `K`
/// on its standard input; the server must follow them and answer with its own.
#[tokio::test]
async fn openssl_s_client_key_updates_are_followed() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        // CI installs it (.ci/run); elsewhere the test says what it needs.
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is required under CI (apt-get install openssl)"
        );
        eprintln!("SKIPPED: openssl is not installed (apt-get install openssl)");
        return;
    }
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.cert_pem).unwrap();
    let _ = &pki.key_pem;
    let server = server_config(&pki, false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-tls1_3", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(dir.path().join("ca.pem"))
        .args(["-servername", "localhost", "-verify_return_error"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let mut server = accept(tcp, server).await.unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for round in 0..3 {
        // "K" alone on a line makes s_client send KeyUpdate(update_requested); it reads its
        // input in chunks, so the data line follows a moment later.
        stdin.write_all(b"K\n").await.unwrap();
        stdin.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let line = format!("hello {round}\n");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        let mut got = vec![0u8; line.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            server.read_exact(&mut got),
        )
        .await
        .expect("data after the key update")
        .unwrap();
        assert_eq!(got, line.as_bytes());
        // And the server's answer, under its new key, reaches s_client.
        let reply = format!("reply {round}\n");
        server.write_all(reply.as_bytes()).await.unwrap();
        server.flush().await.unwrap();
        // s_client prints session details too; the reply is a line of its own.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(printed) = stdout.next_line().await.unwrap() {
                if printed == reply.trim_end() {
                    return;
                }
            }
            panic!("s_client ended before printing {reply:?}");
        })
        .await
        .expect("s_client printed the reply");
    }
}

/// A key log configured by the application (an `SSLKEYLOGFILE` for Wireshark, say) still sees
/// every secret, although the compact layer puts its own key log in front of it.
#[tokio::test]
async fn the_configured_key_log_still_receives_the_secrets() {
    #[derive(Debug, Default)]
    struct Labels(std::sync::Mutex<Vec<String>>);
    impl rustls::KeyLog for Labels {
        fn log(&self, label: &str, _client_random: &[u8], _secret: &[u8]) {
            self.0.lock().unwrap().push(label.to_owned());
        }
    }
    let pki = pki();
    let labels = Arc::new(Labels::default());
    let mut config = plain_server_config(&pki);
    config.key_log = labels.clone();
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let (mut server, mut client) =
        pair(super::capture_config(&config), client_config(&pki, suite)).await;
    round_trips(&mut server, &mut client).await;
    let seen = labels.0.lock().unwrap().clone();
    for label in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    ] {
        assert!(
            seen.iter().any(|l| l == label),
            "{label} missing from {seen:?}"
        );
    }
}

/// A client's traffic secrets, caught by a key log of its own.
#[derive(Debug, Default)]
struct ClientSecrets(std::sync::Mutex<Vec<(String, Vec<u8>)>>);

impl rustls::KeyLog for ClientSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .push((label.to_owned(), secret.to_vec()));
    }
}

/// A peer that asks for key updates without end (and never reads the answers) is cut off after
/// a bounded number, with one answer queued at most, instead of growing the server's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_update_flood_is_cut_off() {
    use super::{Cipher, Direction, Records, Secret};
    let pki = pki();
    let server = server_config(&pki, false);
    let (addr, accepting) = accept_one(server).await;
    let secrets = Arc::new(ClientSecrets::default());
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let mut config = (*client_config(&pki, suite)).clone();
    config.key_log = secrets.clone();
    config.enable_secret_extraction = true;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    handshake_blocking(&mut conn, &mut tcp);
    let mut server = accepting.await.unwrap().unwrap();
    #[allow(deprecated)]
    let extracted = conn.dangerous_extract_secrets().unwrap();
    let secret = |label: &str| {
        let logged = secrets.0.lock().unwrap();
        let (_, s) = logged.iter().find(|(l, _)| l == label).unwrap();
        Secret::new(s).unwrap()
    };
    // The client's record layer, from its own secrets: it sends under the client secret.
    let mut tx =
        Direction::from_secret(Cipher::Aes128Gcm, secret("CLIENT_TRAFFIC_SECRET_0")).unwrap();
    tx.seq = extracted.tx.0;
    let rx = Direction::from_secret(Cipher::Aes128Gcm, secret("SERVER_TRAFFIC_SECRET_0")).unwrap();
    let mut client = Records {
        tls13: true,
        cipher: Cipher::Aes128Gcm,
        tx,
        rx,
        limit: u64::MAX,
    };
    let mut wire = Vec::new();
    for _ in 0..40 {
        client
            .seal(
                super::CONTENT_HANDSHAKE,
                &[super::HANDSHAKE_KEY_UPDATE, 0, 0, 1, 1],
                &mut wire,
            )
            .unwrap();
        client.tx = client.tx.updated(Cipher::Aes128Gcm).unwrap();
    }
    std::io::Write::write_all(&mut tcp, &wire).unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        server.read(&mut [0u8; 16]),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("key updates"), "{err}");
    // At most one answer was ever queued.
    assert!(server.unsent.bytes().len() <= super::HEADER + 6 + super::TAG);
    // And the connection stays failed.
    assert!(server.write_all(b"x").await.is_err());
}

#[tokio::test]
async fn a_stream_cut_inside_a_record_is_truncated_not_closed() {
    let pki = pki();
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let (mut server, client) = pair(server_config(&pki, false), client_config(&pki, suite)).await;
    let mut tcp = client.into_inner().0;
    tcp.write_all(&[23, 3, 3, 0, 40, 1, 2, 3]).await.unwrap();
    tcp.shutdown().await.unwrap();
    let err = server.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn tls12_stops_at_the_confidentiality_limit() {
    let pki = pki();
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    let (mut server, mut client) =
        pair(server_config(&pki, true), client_config(&pki, suite)).await;
    assert!(!server.is_tls13());
    assert_eq!(server.records.limit, 1 << 24, "the suite's limit was taken");
    server.records.limit = server.records.tx.seq + 2;
    for i in 0..2u8 {
        server.write_all(&[i; 10]).await.unwrap();
        server.flush().await.unwrap();
        let mut got = [0u8; 10];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [i; 10]);
    }
    // TLS 1.2 cannot replace its key: the next record is refused, and the connection is done.
    assert!(server.write_all(b"more").await.is_err());
    assert!(server.flush().await.is_err());
}

mod properties {
    use proptest::prelude::*;

    use super::super::{Cipher, Direction, Opened, Records, Secret, complete_record};

    fn direction(cipher: Cipher, seed: u8, seq: u64) -> Direction {
        let len = if cipher == Cipher::Aes256Gcm { 48 } else { 32 };
        let secret: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
        let mut d = Direction::from_secret(cipher, Secret::new(&secret).unwrap()).unwrap();
        d.seq = seq;
        d
    }

    /// Two ends of one connection: what `sender` seals, `receiver` opens.
    fn ends(cipher: Cipher, tls13: bool, seq: u64) -> (Records, Records) {
        let records = |tx, rx| Records {
            tls13,
            cipher,
            tx: direction(cipher, tx, seq),
            rx: direction(cipher, rx, seq),
            limit: u64::MAX,
        };
        (records(1, 2), records(2, 1))
    }

    fn cipher() -> impl Strategy<Value = Cipher> {
        prop_oneof![
            Just(Cipher::Aes128Gcm),
            Just(Cipher::Aes256Gcm),
            Just(Cipher::Chacha20Poly1305)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every record sealed opens to the same bytes, in order, whatever the suite, version,
        /// size and starting sequence number; one flipped bit anywhere makes it fail, never
        /// panic.
        #[test]
        fn sealed_records_open_and_tampered_ones_fail(
            cipher in cipher(),
            tls13 in any::<bool>(),
            seq in any::<u32>(),
            lens in prop::collection::vec(0usize..=16 * 1024, 1..4),
            flip in any::<prop::sample::Index>(),
        ) {
            let (mut sender, mut receiver) = ends(cipher, tls13, u64::from(seq));
            let mut wire = Vec::new();
            let plains: Vec<Vec<u8>> = lens
                .iter()
                .map(|&n| (0..n).map(|i| (i * 7) as u8).collect())
                .collect();
            for p in &plains {
                sender.seal(super::super::CONTENT_APPLICATION_DATA, p, &mut wire).unwrap();
            }
            let mut tampered = wire.clone();
            let mut at = 0;
            for p in &plains {
                let len = complete_record(&wire[at..], tls13).unwrap().expect("whole record");
                match receiver.open(&mut wire[at..at + len]).unwrap() {
                    Opened::Data(range) => prop_assert_eq!(&wire[at + range.start..at + range.end], &p[..]),
                    _ => prop_assert!(false, "not application data"),
                }
                at += len;
            }
            prop_assert_eq!(at, wire.len());
            // Flip a bit past the first header (a bad length would just not frame).
            let i = 5 + flip.index(tampered.len() - 5);
            tampered[i] ^= 0x01;
            let (_, mut receiver) = ends(cipher, tls13, u64::from(seq));
            let mut at = 0;
            let mut failed = false;
            while let Ok(Some(len)) = complete_record(&tampered[at..], tls13) {
                if receiver.open(&mut tampered[at..at + len]).is_err() {
                    failed = true;
                    break;
                }
                at += len;
            }
            prop_assert!(failed || at < tampered.len(), "a tampered stream was accepted whole");
        }

        /// Arbitrary bytes are framed and opened without a panic.
        #[test]
        fn garbage_never_panics(
            cipher in cipher(),
            tls13 in any::<bool>(),
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            let (_, mut receiver) = ends(cipher, tls13, 0);
            let mut bytes = bytes;
            if let Ok(Some(len)) = complete_record(&bytes, tls13) {
                let _ = receiver.open(&mut bytes[..len]);
            }
        }
    }
}

/// A client the server cannot serve (here: TLS 1.2 only, against a TLS 1.3 server) is told why
/// with rustls's alert, not left with a bare close.
#[tokio::test]
async fn a_refused_handshake_sends_the_alert() {
    let pki = pki();
    let (addr, accepting) = accept_one(server_config(&pki, false)).await;
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = tokio_rustls::TlsConnector::from(client_config(&pki, suite))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap_err();
    let err = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .cloned();
    assert!(
        matches!(err, Some(rustls::Error::AlertReceived(_))),
        "the client heard no alert: {err:?}"
    );
    assert!(accepting.await.unwrap().is_err());
}

/// A peer whose record fails authentication hears bad_record_mac before the close, as from
/// any TLS stack, so a device's logs say what went wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_is_answered_with_its_alert() {
    let pki = pki();
    let (addr, accepting) = accept_one(server_config(&pki, false)).await;
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let mut conn = rustls::ClientConnection::new(
        client_config(&pki, suite),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    handshake_blocking(&mut conn, &mut tcp);
    let mut server = accepting.await.unwrap().unwrap();
    let mut forged = vec![23, 3, 3, 0, 40];
    forged.extend_from_slice(&[0xA5; 40]);
    std::io::Write::write_all(&mut tcp, &forged).unwrap();
    let err = server.read(&mut [0u8; 16]).await.unwrap_err();
    assert!(err.to_string().contains("authentication"), "{err}");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let heard = tokio::task::spawn_blocking(move || {
        loop {
            match conn.read_tls(&mut tcp) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        return Some(e);
                    }
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        heard,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::BadRecordMac
        ))
    );
}
