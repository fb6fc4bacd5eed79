//! Content-addressed artifacts: firmware images, application packages, configuration backups,
//! log archives.
//!
//! An artifact is a blob named by the SHA-256 of its content, kept per tenant. Bodies are
//! streamed in and out: the SQLite and PostgreSQL backends never hold a whole artifact in memory
//! (they move it in chunks of [`CHUNK_SIZE`] bytes), and every backend computes the digest while
//! the body streams in.
//!
//! A put that fails (a body over [`StoreLimits::max_artifact_bytes`](crate::StoreLimits), a
//! digest that does not match the expected one, a broken body stream) stores **nothing**: no
//! metadata, no partial blob that a later `meta`, `open` or `list` could see. Putting the same
//! content twice is idempotent: the second put returns the first one's metadata (including its
//! `created_at`) and the content is kept once per tenant.
//!
//! Tenants are isolated: identical content put by two tenants is two artifacts, and one tenant
//! never sees, opens or deletes another's.
//!
//! Integrity on read: every backend of this crate hashes the content again while it streams out
//! of [`ArtifactStore::open`]; if the stored bytes no longer match the name (a damaged disk,
//! a file edited behind the hub's back), the reader fails with an
//! [`InvalidData`](std::io::ErrorKind::InvalidData) I/O error at the end of the stream instead
//! of ending cleanly, so a consumer that reads to the end never accepts damaged content
//! silently. A consumer that must not act on any byte before it is verified should buffer or
//! spool the content until the end of the stream.

use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use hub_core::{BoxFuture, Error, Result, TenantId, Timestamp};

use crate::{Page, PageRequest};

pub(crate) mod memory;

/// The size of the chunks in which backends stream bodies in and out, bytes.
pub const CHUNK_SIZE: usize = 128 * 1024;

/// The longest media type, bytes.
pub const MAX_MEDIA_TYPE: usize = 127;

/// A body to put: any async byte stream.
pub type ArtifactBody<'a> = Box<dyn AsyncRead + Send + Unpin + 'a>;

/// The content of a stored artifact, streamed back.
pub type ArtifactReader = Box<dyn AsyncRead + Send + Unpin>;

/// What the store knows about one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// The tenant that owns it.
    pub tenant: TenantId,
    /// The SHA-256 of the content: 64 lowercase hex digits. The artifact's name.
    pub sha256: String,
    /// The content's length, bytes.
    pub size: u64,
    /// The media type given at the first put (`type/subtype`, e.g.
    /// `application/octet-stream`).
    pub media_type: String,
    /// When it was first put.
    pub created_at: Timestamp,
}

/// Content-addressed blobs per tenant.
pub trait ArtifactStore: Send + Sync + std::fmt::Debug + 'static {
    /// Streams `body` in, computing its SHA-256, and stores it under that digest.
    ///
    /// Errors, with nothing stored: [`TooLarge`](hub_core::ErrorKind::TooLarge) when the body
    /// is longer than the store's `max_artifact_bytes`;
    /// [`InvalidInput`](hub_core::ErrorKind::InvalidInput) when the digest differs from
    /// `expected_sha256`, when `expected_sha256` is not 64 lowercase hex digits, or when the
    /// media type is not a valid `type/subtype` of at most [`MAX_MEDIA_TYPE`] bytes;
    /// [`Unavailable`](hub_core::ErrorKind::Unavailable) when reading the body fails.
    ///
    /// If the tenant already has this content, nothing is written again and the stored
    /// metadata (with its first media type and `created_at`) is returned.
    fn put<'a>(
        &'a self,
        tenant: &'a TenantId,
        media_type: &'a str,
        body: ArtifactBody<'a>,
        expected_sha256: Option<&'a str>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ArtifactMeta>>;

    /// The artifact's metadata, or `None` if the tenant has no such artifact (a malformed
    /// digest is `None` too: it cannot name anything).
    fn meta<'a>(
        &'a self,
        tenant: &'a TenantId,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<Option<ArtifactMeta>>>;

    /// The artifact's content as a stream, or `None` if the tenant has no such artifact.
    fn open<'a>(
        &'a self,
        tenant: &'a TenantId,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<Option<ArtifactReader>>>;

    /// The tenant's artifacts ordered by digest, one page at a time (the cursor is the last
    /// digest of the previous page).
    fn list<'a>(
        &'a self,
        tenant: &'a TenantId,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<ArtifactMeta>>>;

    /// Deletes the artifact; [`NotFound`](hub_core::ErrorKind::NotFound) if the tenant has no
    /// such artifact.
    fn delete<'a>(&'a self, tenant: &'a TenantId, sha256: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Whether `s` is a SHA-256 as artifacts are named: 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a media type: `type/subtype`, each 1 or more of the RFC 6838 restricted-name
/// characters (`A-Z a-z 0-9 ! # $ & - ^ _ . +`), starting with a letter or digit, at most
/// [`MAX_MEDIA_TYPE`] bytes in all. Parameters (`; charset=...`) are not accepted.
pub(crate) fn check_media_type(media_type: &str) -> Result<()> {
    let part_ok = |p: &str| {
        p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && p.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                    )
            })
    };
    let ok = media_type.len() <= MAX_MEDIA_TYPE
        && media_type
            .split_once('/')
            .is_some_and(|(t, s)| part_ok(t) && part_ok(s));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "the media type must be `type/subtype` of RFC 6838 characters, at most \
             {MAX_MEDIA_TYPE} bytes"
        )))
    }
}

/// Checks the arguments of a put before any byte is read.
pub(crate) fn check_put(media_type: &str, expected_sha256: Option<&str>) -> Result<()> {
    check_media_type(media_type)?;
    if let Some(e) = expected_sha256
        && !is_sha256(e)
    {
        return Err(Error::invalid_input(
            "the expected SHA-256 must be 64 lowercase hex digits",
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The SHA-256 of `data` as artifacts are named.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Hashes and counts a body as it streams in, enforcing the size limit.
#[derive(Debug)]
pub(crate) struct Ingest {
    hasher: Sha256,
    size: u64,
    max: u64,
}

impl Ingest {
    pub(crate) fn new(max: u64) -> Self {
        Self {
            hasher: Sha256::new(),
            size: 0,
            max,
        }
    }

    /// Reads the next chunk of at most [`CHUNK_SIZE`] bytes into `buf` (cleared first), hashing
    /// it; an empty `buf` means the body ended. Refuses the body as soon as it passes the limit.
    pub(crate) async fn next_chunk(
        &mut self,
        body: &mut (dyn AsyncRead + Send + Unpin + '_),
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        buf.clear();
        while buf.len() < CHUNK_SIZE {
            let want = (CHUNK_SIZE - buf.len()) as u64;
            let n = body.take(want).read_to_end(buf).await.map_err(|e| {
                Error::unavailable("reading the artifact body failed").with_source(e)
            })?;
            if n == 0 {
                break;
            }
        }
        self.size = self.size.saturating_add(buf.len() as u64);
        if self.size > self.max {
            return Err(Error::too_large(format!(
                "the artifact is larger than {} bytes",
                self.max
            )));
        }
        self.hasher.update(&buf[..]);
        Ok(())
    }

    /// The digest and size, after checking the digest against `expected`.
    pub(crate) fn finish(self, expected: Option<&str>) -> Result<(String, u64)> {
        let digest = hex(&self.hasher.finalize());
        if let Some(e) = expected
            && e != digest
        {
            return Err(Error::invalid_input(format!(
                "the body's SHA-256 is {digest}, not the expected {e}"
            )));
        }
        Ok((digest, self.size))
    }
}

/// Wraps a reader of stored content and checks, at its end, that the bytes hash to the
/// artifact's name and have its size; otherwise the end of the stream becomes an
/// [`InvalidData`](std::io::ErrorKind::InvalidData) error.
pub(crate) struct Verified<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    expected_sha256: String,
    expected_size: u64,
    done: bool,
}

impl<R> std::fmt::Debug for Verified<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("sha256", &self.expected_sha256)
            .field("size", &self.expected_size)
            .finish_non_exhaustive()
    }
}

impl<R> Verified<R> {
    pub(crate) fn new(inner: R, expected_sha256: String, expected_size: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
            expected_sha256,
            expected_size,
            done: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Verified<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if me.done || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    me.size = me.size.saturating_add(new.len() as u64);
                    me.hasher.update(new);
                    return Poll::Ready(Ok(()));
                }
                me.done = true;
                let digest = hex(&std::mem::take(&mut me.hasher).finalize());
                if digest == me.expected_sha256 && me.size == me.expected_size {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "stored artifact {} is damaged: its content now hashes to {digest} \
                             ({} bytes)",
                            me.expected_sha256, me.size
                        ),
                    )))
                }
            }
        }
    }
}
