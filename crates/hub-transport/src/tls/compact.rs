//! TLS whose idle connections keep no buffers (feature `compact-tls`).
//!
//! rustls drives the handshake through its unbuffered API, with buffers that live only while the
//! handshake runs. Once it completes, the traffic keys are taken out of rustls
//! ([`UnbufferedServerConnection::dangerous_into_kernel_connection`], the interface rustls offers
//! for kernel TLS) and this module runs the record layer itself, as kTLS would: AES-GCM or
//! ChaCha20-Poly1305 from aws-lc-rs, TLS 1.3 and TLS 1.2. For TLS 1.3 key updates (RFC 8446
//! §4.6.3) it also keeps the two application traffic secrets, which rustls hands to the
//! configuration's [`KeyLog`] during the handshake: [`capture_config`] installs one that catches
//! them for the handshake running on the current thread (and still passes everything to the
//! key log configured before). The keys derived from them are checked against the ones rustls
//! extracts, so a capture that went wrong refuses the connection instead of corrupting it.
//!
//! An idle connection then keeps two keys, two IVs, two secrets and two sequence numbers, and
//! no buffer at all: ciphertext is read into a per-thread scratch buffer and decrypted in place,
//! plaintext is encrypted into another, and only what the socket or the reader could not take
//! yet is kept on the heap, until it is taken.
//! The AEAD key schedule is rebuilt for each record rather than kept: a device sends a few
//! records a minute, and the schedule costs more memory than a rebuild costs time.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};
use rustls::{ConnectionTrafficSecrets, KeyLog, ProtocolVersion, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The largest plaintext a record carries.
const MAX_PLAINTEXT: usize = 16 * 1024;
/// The largest record body accepted: TLS 1.2 allows 2,048 bytes of expansion (RFC 5246 §6.2.3),
/// TLS 1.3 256 (RFC 8446 §5.2).
const MAX_RECORD_BODY: usize = MAX_PLAINTEXT + 2048;
const MAX_RECORD_BODY_TLS13: usize = MAX_PLAINTEXT + 256;
/// The largest handshake flight rustls joins (its own limit for a fragmented message), plus a
/// record.
const MAX_HANDSHAKE_BUFFER: usize = 64 * 1024 + HEADER + MAX_RECORD_BODY;
/// Records in a row that carry no application data (key updates) before the peer is cut off,
/// as rustls and BoringSSL do.
const MAX_QUIET_RECORDS: u8 = 32;

const HEADER: usize = 5;
const TAG: usize = 16;
const EXPLICIT_NONCE: usize = 8;
/// Records sent under one TLS 1.3 key before it is replaced: AES-GCM's confidentiality limit is
/// 2^24.5 records (RFC 8446 §5.5); this stays well below it, for ChaCha20 too.
const KEY_UPDATE_AFTER: u64 = 1 << 23;
/// Plaintext encrypted by one `poll_write`: four full records, one system call.
const WRITE_CHUNK: usize = 4 * MAX_PLAINTEXT;
const SCRATCH: usize = WRITE_CHUNK + 4 * (HEADER + EXPLICIT_NONCE + 1 + TAG);

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_KEY_UPDATE: u8 = 24;

thread_local! {
    /// Ciphertext read from sockets, decrypted in place.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Ciphertext on its way to sockets.
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A record the peer sent that ends the connection, and the alert that tells it why.
#[derive(Debug)]
struct PeerError {
    alert: u8,
    why: &'static str,
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}", self.why)
    }
}

impl std::error::Error for PeerError {}

// Alert descriptions (RFC 8446 §6.2).
const ALERT_UNEXPECTED_MESSAGE: u8 = 10;
const ALERT_BAD_RECORD_MAC: u8 = 20;
const ALERT_RECORD_OVERFLOW: u8 = 22;
const ALERT_PROTOCOL_VERSION: u8 = 70;

fn peer_error(alert: u8, why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, PeerError { alert, why })
}

fn bad_record(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {why}"))
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Cipher {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// One direction's key material: what rustls's record layer keeps, minus the expanded key
/// schedule.
struct Direction {
    key: [u8; 32],
    key_len: u8,
    iv: [u8; 12],
    seq: u64,
    /// The TLS 1.3 application traffic secret the key and IV come from (unused in TLS 1.2).
    secret: Secret,
}

/// A TLS 1.3 traffic secret: 32 or 48 bytes, as the suite's hash.
#[derive(Clone)]
struct Secret {
    bytes: [u8; 48],
    len: u8,
}

impl Default for Secret {
    fn default() -> Self {
        Secret {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl Secret {
    fn new(bytes: &[u8]) -> Option<Self> {
        let mut s = Secret::default();
        s.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        s.len = bytes.len() as u8;
        Some(s)
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(cipher: Cipher, secret: &[u8], label: &[u8], out: &mut [u8]) -> io::Result<()> {
    // TLS_AES_256_GCM_SHA384 is the one TLS 1.3 suite of the three whose hash is SHA-384.
    let hash = match cipher {
        Cipher::Aes256Gcm => hkdf::HKDF_SHA384,
        Cipher::Aes128Gcm | Cipher::Chacha20Poly1305 => hkdf::HKDF_SHA256,
    };
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    hkdf::Prk::new_less_safe(hash, secret)
        .expand(&info, OutputLen(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| bad_record("key derivation failed"))
}

impl Direction {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<(Cipher, Self), io::Error> {
        let (cipher, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Cipher::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Cipher::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Cipher::Chacha20Poly1305, key, iv)
            }
            _ => return Err(bad_record("the negotiated cipher suite is not supported")),
        };
        let mut d = Direction {
            key: [0; 32],
            key_len: 0,
            iv: [0; 12],
            seq,
            secret: Secret::default(),
        };
        let key = key.as_ref();
        if key.len() > 32 || iv.as_ref().len() != 12 {
            return Err(bad_record("unexpected key or IV length"));
        }
        d.key[..key.len()].copy_from_slice(key);
        d.key_len = key.len() as u8;
        d.iv.copy_from_slice(iv.as_ref());
        Ok((cipher, d))
    }

    /// The TLS 1.3 direction keyed by `secret`, from sequence number 0.
    fn from_secret(cipher: Cipher, secret: Secret) -> io::Result<Self> {
        let key_len = match cipher {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::Chacha20Poly1305 => 32,
        };
        let mut d = Direction {
            key: [0; 32],
            key_len: key_len as u8,
            iv: [0; 12],
            seq: 0,
            secret,
        };
        expand_label(cipher, d.secret.as_bytes(), b"key", &mut d.key[..key_len])?;
        expand_label(cipher, d.secret.as_bytes(), b"iv", &mut d.iv)?;
        Ok(d)
    }

    /// The next generation of keys (RFC 8446 §7.2).
    fn updated(&self, cipher: Cipher) -> io::Result<Self> {
        let mut next = self.secret.clone();
        expand_label(
            cipher,
            self.secret.as_bytes(),
            b"traffic upd",
            &mut next.bytes[..usize::from(next.len)],
        )?;
        Direction::from_secret(cipher, next)
    }

    fn key(&self, cipher: Cipher) -> io::Result<LessSafeKey> {
        UnboundKey::new(cipher.algorithm(), &self.key[..usize::from(self.key_len)])
            .map(LessSafeKey::new)
            .map_err(|_| bad_record("the traffic key was refused"))
    }

    /// The IV with the sequence number folded into its last eight bytes (RFC 8446 §5.3, and
    /// TLS 1.2's ChaCha20 and AES-GCM nonces as rustls builds them).
    fn nonce(&self) -> [u8; 12] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        // Keys do not linger in freed memory.
        zeroize::Zeroize::zeroize(&mut self.key);
        zeroize::Zeroize::zeroize(&mut self.iv);
    }
}

/// What one received record held.
enum Opened {
    /// Application data at this range of the record buffer.
    Data(std::ops::Range<usize>),
    /// close_notify.
    Closed,
    /// A TLS 1.3 KeyUpdate, and whether the peer asked for ours.
    KeyUpdate { requested: bool },
}

/// The record layer of an established connection.
struct Records {
    tls13: bool,
    cipher: Cipher,
    tx: Direction,
    rx: Direction,
    /// Records one key may protect (the suite's confidentiality limit).
    limit: u64,
}

impl Records {
    /// TLS 1.2 AES-GCM records carry 8 bytes of their nonce (RFC 5288); ChaCha20 records none.
    fn explicit_nonce_len(&self) -> usize {
        match self.cipher {
            Cipher::Chacha20Poly1305 => 0,
            Cipher::Aes128Gcm | Cipher::Aes256Gcm => EXPLICIT_NONCE,
        }
    }

    /// Encrypts `plain` as one record of `content` type, appending it to `out`.
    fn seal(&mut self, content: u8, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        debug_assert!(plain.len() <= MAX_PLAINTEXT);
        if !self.tls13 && self.tx.seq >= self.limit {
            // TLS 1.2 cannot replace its key: the connection ends (the device reconnects).
            return Err(bad_record(
                "the key reached its confidentiality limit (TLS 1.2 cannot replace it)",
            ));
        }
        let key = self.tx.key(self.cipher)?;
        let nonce = self.tx.nonce();
        let start = out.len();
        if self.tls13 {
            let body = plain.len() + 1 + TAG;
            out.extend_from_slice(&[CONTENT_APPLICATION_DATA, 3, 3]);
            out.extend_from_slice(&(body as u16).to_be_bytes());
            out.extend_from_slice(plain);
            out.push(content);
            let header: [u8; HEADER] = out[start..start + HEADER].try_into().expect("5 bytes");
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut out[start + HEADER..],
                )
                .map_err(|_| bad_record("encryption failed"))?;
            out.extend_from_slice(tag.as_ref());
        } else {
            let explicit = self.explicit_nonce_len();
            let body = explicit + plain.len() + TAG;
            out.extend_from_slice(&[content, 3, 3]);
            out.extend_from_slice(&(body as u16).to_be_bytes());
            out.extend_from_slice(&nonce[12 - explicit..]);
            out.extend_from_slice(plain);
            let aad = tls12_aad(self.tx.seq, content, plain.len());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut out[start + HEADER + explicit..],
                )
                .map_err(|_| bad_record("encryption failed"))?;
            out.extend_from_slice(tag.as_ref());
        }
        self.tx.seq += 1;
        Ok(())
    }

    /// Decrypts the whole record `record` (header included) in place.
    fn open(&mut self, record: &mut [u8]) -> io::Result<Opened> {
        let outer = record[0];
        let key = self.rx.key(self.cipher)?;
        let (inner, range) = if self.tls13 {
            if outer != CONTENT_APPLICATION_DATA {
                return Err(peer_error(
                    ALERT_UNEXPECTED_MESSAGE,
                    "an unprotected record after the handshake",
                ));
            }
            let header: [u8; HEADER] = record[..HEADER].try_into().expect("5 bytes");
            let nonce = self.rx.nonce();
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut record[HEADER..],
                )
                .map_err(|_| peer_error(ALERT_BAD_RECORD_MAC, "a record failed authentication"))?;
            // Strip the padding; the last non-zero byte is the real content type.
            let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                return Err(peer_error(
                    ALERT_UNEXPECTED_MESSAGE,
                    "a record without a content type",
                ));
            };
            if end > MAX_PLAINTEXT {
                return Err(peer_error(
                    ALERT_RECORD_OVERFLOW,
                    "a record longer than the protocol allows",
                ));
            }
            (plain[end], HEADER..HEADER + end)
        } else {
            let explicit = self.explicit_nonce_len();
            let body = record.len() - HEADER;
            if body < explicit + TAG {
                return Err(peer_error(
                    ALERT_BAD_RECORD_MAC,
                    "a record too short to be protected",
                ));
            }
            let mut nonce = self.rx.nonce();
            if explicit > 0 {
                nonce[4..].copy_from_slice(&record[HEADER..HEADER + EXPLICIT_NONCE]);
            }
            let aad = tls12_aad(self.rx.seq, outer, body - explicit - TAG);
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut record[HEADER + explicit..],
                )
                .map_err(|_| peer_error(ALERT_BAD_RECORD_MAC, "a record failed authentication"))?;
            let len = plain.len();
            if len > MAX_PLAINTEXT {
                return Err(peer_error(
                    ALERT_RECORD_OVERFLOW,
                    "a record longer than the protocol allows",
                ));
            }
            (outer, HEADER + explicit..HEADER + explicit + len)
        };
        self.rx.seq += 1;
        match inner {
            CONTENT_APPLICATION_DATA => Ok(Opened::Data(range)),
            CONTENT_ALERT => match &record[range] {
                [_, 0] => Ok(Opened::Closed),
                _ => Err(bad_record("the peer sent an alert")),
            },
            CONTENT_HANDSHAKE if self.tls13 => match &record[range] {
                [HANDSHAKE_KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => Ok(Opened::KeyUpdate {
                    requested: *request == 1,
                }),
                _ => Err(peer_error(
                    ALERT_UNEXPECTED_MESSAGE,
                    "an unexpected post-handshake message",
                )),
            },
            _ => Err(peer_error(
                ALERT_UNEXPECTED_MESSAGE,
                "an unexpected record type after the handshake",
            )),
        }
    }
}

#[cfg(not(test))]
fn key_update_after() -> u64 {
    KEY_UPDATE_AFTER
}

#[cfg(test)]
thread_local! {
    /// Lets a test reach the key's limit in a few records.
    static KEY_UPDATE_AFTER_IN_TEST: std::cell::Cell<u64> = const { std::cell::Cell::new(KEY_UPDATE_AFTER) };
}

#[cfg(test)]
fn key_update_after() -> u64 {
    KEY_UPDATE_AFTER_IN_TEST.get()
}

fn tls12_aad(seq: u64, content: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content;
    aad[9] = 3;
    aad[10] = 3;
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// The length of the first record in `buf` if it is complete.
fn complete_record(buf: &[u8], tls13: bool) -> io::Result<Option<usize>> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    // TLS 1.3 ignores the record's version (RFC 8446 §5.1; it is authenticated all the same);
    // TLS 1.2 records carry the negotiated one.
    if !tls13 && buf[1..3] != [3, 3] {
        return Err(peer_error(
            ALERT_PROTOCOL_VERSION,
            "a record of another protocol version",
        ));
    }
    let body = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    let max_body = if tls13 {
        MAX_RECORD_BODY_TLS13
    } else {
        MAX_RECORD_BODY
    };
    if body > max_body {
        return Err(peer_error(
            ALERT_RECORD_OVERFLOW,
            "a record longer than the protocol allows",
        ));
    }
    Ok((buf.len() >= HEADER + body).then_some(HEADER + body))
}

/// Bytes kept between calls, allocated only while there are some: 8 bytes when empty.
#[derive(Default)]
struct Spill(Option<Box<SpillBuf>>);

struct SpillBuf {
    bytes: Vec<u8>,
    /// Where the bytes not consumed yet start.
    start: usize,
}

impl From<Vec<u8>> for Spill {
    fn from(bytes: Vec<u8>) -> Self {
        Spill((!bytes.is_empty()).then(|| Box::new(SpillBuf { bytes, start: 0 })))
    }
}

impl Spill {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |b| &b.bytes[b.start..])
    }

    fn extend(&mut self, data: &[u8]) {
        match &mut self.0 {
            _ if data.is_empty() => {}
            Some(b) => b.bytes.extend_from_slice(data),
            None => *self = Spill::from(data.to_vec()),
        }
    }

    /// Drops the first `n` bytes; the buffer goes once all are consumed.
    fn consume(&mut self, n: usize) {
        if let Some(b) = &mut self.0 {
            b.start += n;
            if b.start >= b.bytes.len() {
                self.0 = None;
            }
        }
    }

    /// The bytes not consumed yet, leaving this empty.
    fn take(&mut self) -> Vec<u8> {
        match self.0.take() {
            Some(b) => {
                let SpillBuf { mut bytes, start } = *b;
                bytes.drain(..start);
                bytes
            }
            None => Vec::new(),
        }
    }
}

/// A server-side TLS connection over TCP that holds no buffers while idle.
pub(crate) struct CompactTls {
    io: TcpStream,
    records: Records,
    /// Received ciphertext that does not make a whole record yet.
    partial: Spill,
    /// Decrypted plaintext the reader has not taken yet.
    plain: Spill,
    /// Ciphertext the socket has not taken yet.
    unsent: Spill,
    read_closed: bool,
    write_closed: bool,
    /// A KeyUpdate answering the peer's request is waiting in `unsent`: later requests are
    /// answered by it (RFC 8446 §4.6.3).
    key_update_owed: bool,
    /// Records in a row without application data.
    quiet_records: u8,
    /// An error ended the connection; every later call fails.
    failed: bool,
}

impl std::fmt::Debug for CompactTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactTls")
            .field("tls13", &self.records.tls13)
            .field("cipher", &self.records.cipher)
            .finish_non_exhaustive()
    }
}

/// Traffic secrets caught by [`SecretCapture`] during one handshake.
#[derive(Default)]
struct Captured {
    client: Option<Secret>,
    server: Option<Secret>,
}

thread_local! {
    /// The secrets of the handshake this thread is running, while rustls processes its records.
    static CAPTURED: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// A [`KeyLog`] that catches the TLS 1.3 application traffic secrets of the handshake running on
/// the current thread, and passes everything on to the key log configured before.
#[derive(Debug)]
struct SecretCapture {
    configured: Arc<dyn KeyLog>,
}

const CLIENT_SECRET_LABEL: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_SECRET_LABEL: &str = "SERVER_TRAFFIC_SECRET_0";

impl KeyLog for SecretCapture {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        CAPTURED.with_borrow_mut(|captured| {
            if let Some(captured) = captured {
                match label {
                    CLIENT_SECRET_LABEL => captured.client = Secret::new(secret),
                    SERVER_SECRET_LABEL => captured.server = Secret::new(secret),
                    _ => {}
                }
            }
        });
        if self.configured.will_log(label) {
            self.configured.log(label, client_random, secret);
        }
    }

    fn will_log(&self, label: &str) -> bool {
        matches!(label, CLIENT_SECRET_LABEL | SERVER_SECRET_LABEL)
            || self.configured.will_log(label)
    }
}

/// `config` made ready for [`accept`]: secret extraction enabled and the secret-catching key log
/// installed in front of the configured one.
pub(crate) fn capture_config(config: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = config.clone();
    config.enable_secret_extraction = true;
    // 0-RTT data would reach the unbuffered connection in a state this layer does not take.
    config.max_early_data_size = 0;
    config.key_log = Arc::new(SecretCapture {
        configured: config.key_log.clone(),
    });
    Arc::new(config)
}

/// Runs the server side of a TLS handshake on `io` with rustls, then hands the connection to the
/// compact record layer. `config` comes from [`capture_config`].
pub(crate) async fn accept(mut io: TcpStream, config: Arc<ServerConfig>) -> io::Result<CompactTls> {
    let mut conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut incoming = vec![0u8; 4096];
    let mut filled = 0;
    let mut outgoing = vec![0u8; 4096];
    let mut pending = 0;
    // Application data that arrived with the client's last handshake flight.
    let mut early = Vec::new();
    let mut captured = Captured::default();
    loop {
        // rustls logs the traffic secrets from inside this call, on this thread.
        CAPTURED.set(Some(std::mem::take(&mut captured)));
        let UnbufferedStatus { discard, state } = conn.process_tls_records(&mut incoming[..filled]);
        captured = CAPTURED.take().unwrap_or_default();
        let mut read_more = false;
        let mut established = false;
        let mut extra_discard = 0;
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                // rustls queued the alert that tells the client why (no common version or
                // suite, a bad message); send it rather than just closing.
                send_queued_alert(&mut conn, &mut io).await;
                return Err(tls_error(e));
            }
        };
        match state {
            ConnectionState::EncodeTlsData(mut data) => loop {
                match data.encode(&mut outgoing[pending..]) {
                    Ok(n) => {
                        pending += n;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        outgoing.resize(pending + required_size, 0);
                    }
                    Err(e) => return Err(io::Error::other(e.to_string())),
                }
            },
            ConnectionState::TransmitTlsData(data) => {
                io.write_all(&outgoing[..pending]).await?;
                pending = 0;
                data.done();
            }
            ConnectionState::BlockedHandshake => read_more = true,
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    early.extend_from_slice(record.payload);
                    extra_discard += record.discard;
                }
            }
            ConnectionState::WriteTraffic(_) => established = true,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            other => return Err(io::Error::other(format!("unexpected TLS state {other:?}"))),
        }
        let discard = discard + extra_discard;
        incoming.copy_within(discard..filled, 0);
        filled -= discard;
        if established {
            if pending > 0 {
                io.write_all(&outgoing[..pending]).await?;
                pending = 0;
            }
            // A TLS 1.3 server may send before the client's Finished arrives; the handshake is
            // over only when both directions are open.
            if !conn.is_handshaking() {
                break;
            }
            read_more = true;
        }
        if read_more {
            if filled == incoming.len() {
                if incoming.len() >= MAX_HANDSHAKE_BUFFER {
                    return Err(bad_record("a handshake message longer than allowed"));
                }
                incoming.resize((incoming.len() * 2).min(MAX_HANDSHAKE_BUFFER), 0);
            }
            let n = io.read(&mut incoming[filled..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            filled += n;
        }
    }
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
    let tls13 = match kernel.protocol_version() {
        ProtocolVersion::TLSv1_3 => true,
        ProtocolVersion::TLSv1_2 => false,
        _ => return Err(bad_record("an unsupported protocol version")),
    };
    let limit = match kernel.negotiated_cipher_suite() {
        rustls::SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit,
        rustls::SupportedCipherSuite::Tls12(suite) => suite.common.confidentiality_limit,
    };
    // Not kept: it costs more memory than everything else an idle connection holds.
    drop(kernel);
    let (cipher, mut tx) = Direction::new(secrets.tx.0, secrets.tx.1)?;
    let (_, mut rx) = Direction::new(secrets.rx.0, secrets.rx.1)?;
    if tls13 {
        let (Some(client), Some(server)) = (captured.client, captured.server) else {
            return Err(bad_record(
                "the traffic secrets were not captured (is the key log replaced?)",
            ));
        };
        tx = rekeyed_from(cipher, server, tx)?;
        rx = rekeyed_from(cipher, client, rx)?;
    }
    Ok(CompactTls {
        io,
        records: Records {
            tls13,
            cipher,
            tx,
            rx,
            limit,
        },
        // What rustls had not processed yet: the start of the first record of traffic.
        partial: Spill::from(incoming[..filled].to_vec()),
        plain: Spill::from(early),
        unsent: Spill::default(),
        read_closed: false,
        write_closed: false,
        key_update_owed: false,
        quiet_records: 0,
        failed: false,
    })
}

/// Writes what rustls queued after a handshake error (its fatal alert), best effort.
async fn send_queued_alert(conn: &mut UnbufferedServerConnection, io: &mut TcpStream) {
    let mut out = Vec::new();
    for _ in 0..4 {
        let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut []);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                let at = out.len();
                out.resize(at + 64, 0);
                loop {
                    match data.encode(&mut out[at..]) {
                        Ok(n) => {
                            out.truncate(at + n);
                            break;
                        }
                        Err(EncodeError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => out.resize(at + required_size, 0),
                        Err(_) => return,
                    }
                }
            }
            Ok(ConnectionState::TransmitTlsData(data)) => {
                let _ = io.write_all(&out).await;
                data.done();
                return;
            }
            _ => break,
        }
    }
    if !out.is_empty() {
        let _ = io.write_all(&out).await;
    }
}

/// The direction `extracted` (what rustls extracted) with the traffic secret it came from, once
/// the keys derived from `secret` are checked to be the same.
fn rekeyed_from(cipher: Cipher, secret: Secret, extracted: Direction) -> io::Result<Direction> {
    let mut derived = Direction::from_secret(cipher, secret)?;
    if derived.key != extracted.key || derived.iv != extracted.iv {
        return Err(bad_record(
            "the captured traffic secrets do not match the keys",
        ));
    }
    derived.seq = extracted.seq;
    Ok(derived)
}

impl CompactTls {
    /// Whether TLS 1.3 was negotiated (else TLS 1.2).
    #[cfg(test)]
    pub(crate) fn is_tls13(&self) -> bool {
        self.records.tls13
    }

    /// Writes what is left of `unsent`.
    fn poll_send_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unsent.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.unsent.bytes()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unsent.consume(n);
        }
        self.key_update_owed = false;
        Poll::Ready(Ok(()))
    }

    /// Encrypts `records` (content type, plaintext of at most one record each) and writes them,
    /// keeping what the socket did not take in `unsent`. Call only with `unsent` empty.
    fn send(
        &mut self,
        cx: &mut Context<'_>,
        records: &mut dyn Iterator<Item = (u8, &[u8])>,
    ) -> io::Result<()> {
        debug_assert!(self.unsent.is_empty());
        WRITE_SCRATCH.with_borrow_mut(|out| {
            out.clear();
            if out.capacity() < SCRATCH {
                out.reserve_exact(SCRATCH);
            }
            for (content, plain) in records {
                self.seal_rekeying(content, plain, out)?;
            }
            let mut written = 0;
            while written < out.len() {
                match Pin::new(&mut self.io).poll_write(cx, &out[written..]) {
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
            if written < out.len() {
                self.unsent.extend(&out[written..]);
            }
            if out.capacity() > SCRATCH {
                *out = Vec::new();
            }
            Ok(())
        })
    }

    /// Seals one record, first replacing a TLS 1.3 key that has protected enough records.
    fn seal_rekeying(&mut self, content: u8, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.records.tls13 && self.records.tx.seq >= key_update_after().min(self.records.limit) {
            self.update_tx_key(out)?;
        }
        self.records.seal(content, plain, out)
    }

    /// Sends a KeyUpdate (not asking for the peer's) under the old key, then switches.
    fn update_tx_key(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.records
            .seal(CONTENT_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0], out)?;
        self.records.tx = self.records.tx.updated(self.records.cipher)?;
        Ok(())
    }

    /// Handles one whole record at `record`: application data is appended to `plain`.
    fn receive(&mut self, record: &mut [u8]) -> io::Result<()> {
        match self.records.open(record)? {
            Opened::Data(range) => {
                self.quiet_records = 0;
                self.plain.extend(&record[range]);
            }
            Opened::Closed => self.read_closed = true,
            Opened::KeyUpdate { requested } => {
                self.quiet_records += 1;
                if self.quiet_records > MAX_QUIET_RECORDS {
                    return Err(peer_error(
                        ALERT_UNEXPECTED_MESSAGE,
                        "too many key updates without data",
                    ));
                }
                self.records.rx = self.records.rx.updated(self.records.cipher)?;
                // One answer covers every request received before it is sent.
                if requested && !self.write_closed && !self.key_update_owed {
                    let mut out = self.unsent.take();
                    out.reserve_exact(HEADER + 5 + 1 + TAG);
                    self.update_tx_key(&mut out)?;
                    self.unsent = Spill::from(out);
                    self.key_update_owed = true;
                    // Best effort now, without taking the writer's waker; the next write or
                    // flush finishes it.
                    while !self.unsent.is_empty() {
                        match self.io.try_write(self.unsent.bytes()) {
                            Ok(n) if n > 0 => self.unsent.consume(n),
                            _ => break,
                        }
                    }
                    if self.unsent.is_empty() {
                        self.key_update_owed = false;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads from the socket and decrypts what arrived; `Ready(Ok(()))` once something changed
    /// (plaintext arrived, or the stream ended).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Whole records kept from an earlier read come first.
            if !self.partial.is_empty() {
                let mut partial = self.partial.take();
                let mut at = 0;
                while !self.read_closed
                    && let Some(len) = complete_record(&partial[at..], self.records.tls13)?
                {
                    self.receive(&mut partial[at..at + len])?;
                    at += len;
                }
                if at < partial.len() && !self.read_closed {
                    // A copy, so a large buffer does not stay behind for a few bytes.
                    self.partial = Spill::from(partial[at..].to_vec());
                }
                if !self.plain.is_empty() || self.read_closed {
                    return Poll::Ready(Ok(()));
                }
            }
            let read = READ_SCRATCH.with_borrow_mut(|scratch| -> Poll<io::Result<bool>> {
                if scratch.len() < SCRATCH {
                    scratch.resize(SCRATCH, 0);
                }
                let mut buf = ReadBuf::new(scratch);
                ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
                let n = buf.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(false));
                }
                if !self.partial.is_empty() {
                    self.partial.extend(&scratch[..n]);
                    return Poll::Ready(Ok(true));
                }
                let mut at = 0;
                while let Some(len) = complete_record(&scratch[at..n], self.records.tls13)? {
                    self.receive(&mut scratch[at..at + len])?;
                    at += len;
                    if self.read_closed {
                        return Poll::Ready(Ok(true));
                    }
                }
                if at < n {
                    self.partial.extend(&scratch[at..n]);
                }
                Poll::Ready(Ok(true))
            });
            match ready!(read)? {
                false => {
                    self.read_closed = true;
                    if !self.partial.is_empty() {
                        // Cut off inside a record: truncated, not closed.
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    // EOF without close_notify: the peer is gone all the same.
                    return Poll::Ready(Ok(()));
                }
                true if !self.plain.is_empty() || self.read_closed => {
                    return Poll::Ready(Ok(()));
                }
                true => {}
            }
        }
    }
}

impl CompactTls {
    /// Tells the peer why the connection ends (best effort: only if nothing else waits to be
    /// sent, and without waiting for the socket).
    fn send_fatal_alert(&mut self, description: u8) {
        if self.write_closed || !self.unsent.is_empty() {
            return;
        }
        self.write_closed = true;
        let mut out = Vec::with_capacity(HEADER + EXPLICIT_NONCE + 3 + TAG);
        if self
            .records
            .seal(CONTENT_ALERT, &[2, description], &mut out)
            .is_ok()
        {
            let _ = self.io.try_write(&out);
        }
    }

    /// Fails every call once one failed: a record layer that lost its place must not go on.
    fn guard<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.failed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS: the connection failed earlier",
            )));
        }
        let result = op(self);
        if let Poll::Ready(Err(e)) = &result {
            self.failed = true;
            if let Some(peer) = e.get_ref().and_then(|e| e.downcast_ref::<PeerError>()) {
                self.send_fatal_alert(peer.alert);
            }
        }
        result
    }
}

impl AsyncRead for CompactTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().guard(|this| {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.plain.is_empty() && !this.read_closed {
                ready!(this.poll_fill(cx))?;
            }
            let available = this.plain.bytes();
            let n = available.len().min(buf.remaining());
            buf.put_slice(&available[..n]);
            this.plain.consume(n);
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncWrite for CompactTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().guard(|this| {
            ready!(this.poll_send_unsent(cx))?;
            if this.write_closed {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let data = &data[..data.len().min(WRITE_CHUNK)];
            this.send(
                cx,
                &mut data
                    .chunks(MAX_PLAINTEXT)
                    .map(|chunk| (CONTENT_APPLICATION_DATA, chunk)),
            )?;
            Poll::Ready(Ok(data.len()))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guard(|this| {
            ready!(this.poll_send_unsent(cx))?;
            Pin::new(&mut this.io).poll_flush(cx)
        })
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guard(|this| {
            ready!(this.poll_send_unsent(cx))?;
            if !this.write_closed {
                this.write_closed = true;
                // close_notify: a warning-level alert, description 0.
                this.send(cx, &mut std::iter::once((CONTENT_ALERT, &[1u8, 0][..])))?;
                ready!(this.poll_send_unsent(cx))?;
            }
            Pin::new(&mut this.io).poll_shutdown(cx)
        })
    }
}

#[cfg(test)]
mod tests;
