//! Artifact checks: streamed round trips, refusals that store nothing, idempotent puts, tenant
//! isolation, paging, deletion, and (through [`size_limit`](super::artifact_size_limit)) the
//! size limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use hub_core::{ErrorKind, TenantId};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::{StoresFactory, T0, expect_err, expect_kind, ok, tenant, ts, walk};
use crate::artifacts::{ArtifactMeta, ArtifactStore, sha256_hex};
use crate::{PageRequest, Stores};

/// Deterministic content of `len` bytes, different for each `seed`.
pub(crate) fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A body that hands out at most `step` bytes per read (so backends see short reads), and
/// optionally fails after `fail_after` bytes.
pub(crate) struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
    fail_after: Option<usize>,
}

impl Trickle {
    pub(crate) fn new(data: Vec<u8>, step: usize) -> Self {
        Self {
            data,
            pos: 0,
            step: step.max(1),
            fail_after: None,
        }
    }
}

impl AsyncRead for Trickle {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if me.fail_after.is_some_and(|f| me.pos >= f) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the uploader went away",
            )));
        }
        let end = (me.pos + me.step)
            .min(me.data.len())
            .min(me.pos + buf.remaining());
        buf.put_slice(&me.data[me.pos..end]);
        me.pos = end;
        Poll::Ready(Ok(()))
    }
}

async fn put(
    store: &dyn ArtifactStore,
    t: &TenantId,
    data: &[u8],
    expected: Option<&str>,
    at: i64,
) -> hub_core::Result<ArtifactMeta> {
    store
        .put(
            t,
            "application/octet-stream",
            Box::new(Trickle::new(data.to_vec(), 50_000)),
            expected,
            ts(at),
        )
        .await
}

async fn read_back(store: &dyn ArtifactStore, t: &TenantId, sha: &str) -> Option<Vec<u8>> {
    let reader = ok(store.open(t, sha).await, "open")?;
    let mut reader = reader;
    let mut out = Vec::new();
    if let Err(e) = reader.read_to_end(&mut out).await {
        panic!("reading artifact {sha} back failed: {e}");
    }
    Some(out)
}

async fn all(store: &dyn ArtifactStore, t: &TenantId) -> Vec<ArtifactMeta> {
    ok(store.list(t, PageRequest::first(0)).await, "list").items
}

pub(super) async fn round_trip(factory: StoresFactory) {
    let store = factory().await.artifacts;
    let acme = tenant("acme");
    let small = b"firmware 1.2.3".to_vec();
    let big = content(3 * 1024 * 1024 + 12_345, 1);
    let empty: Vec<u8> = Vec::new();
    for (i, data) in [&small, &big, &empty].into_iter().enumerate() {
        let what = format!("body {i} of {} bytes", data.len());
        let meta = ok(
            store
                .put(
                    &acme,
                    "application/vnd.acme.firmware+bin",
                    Box::new(Trickle::new(data.clone(), 7919)),
                    None,
                    ts(T0 + i as i64),
                )
                .await,
            &format!("put {what}"),
        );
        let want = ArtifactMeta {
            tenant: acme.clone(),
            sha256: sha256_hex(data),
            size: data.len() as u64,
            media_type: "application/vnd.acme.firmware+bin".into(),
            created_at: ts(T0 + i as i64),
        };
        assert_eq!(meta, want, "put returns the metadata of {what}");
        assert_eq!(
            ok(store.meta(&acme, &want.sha256).await, "meta"),
            Some(want.clone()),
            "meta of {what}"
        );
        let back = read_back(&*store, &acme, &want.sha256).await;
        assert!(
            back.as_deref() == Some(&data[..]),
            "open streams back exactly the content of {what} (got {:?} bytes)",
            back.map(|b| b.len())
        );
    }
    // With the right expected digest.
    let doc = content(1000, 2);
    let sha = sha256_hex(&doc);
    let meta = ok(
        put(&*store, &acme, &doc, Some(&sha), T0).await,
        "put with the right expected digest",
    );
    assert_eq!(meta.sha256, sha);
    assert_eq!(all(&*store, &acme).await.len(), 4, "four artifacts listed");
    assert_eq!(
        ok(store.meta(&acme, &sha256_hex(b"never put")).await, "meta"),
        None
    );
    assert!(
        ok(store.open(&acme, &sha256_hex(b"never put")).await, "open").is_none(),
        "open of an unknown digest is None"
    );
    assert_eq!(
        ok(
            store.meta(&acme, "not-a-digest").await,
            "meta of a malformed digest"
        ),
        None
    );
}

pub(super) async fn refusals(factory: StoresFactory) {
    let store = factory().await.artifacts;
    let acme = tenant("acme");
    let kept = content(100, 3);
    ok(put(&*store, &acme, &kept, None, T0).await, "put");
    let before = all(&*store, &acme).await;

    let big = content(2 * 1024 * 1024 + 1, 4);
    let wrong = sha256_hex(b"something else");
    expect_kind(
        put(&*store, &acme, &big, Some(&wrong), T0).await,
        ErrorKind::InvalidInput,
        "put of a multi-chunk body whose digest differs from the expected one",
    );
    expect_kind(
        put(&*store, &acme, &big, Some("ABC"), T0).await,
        ErrorKind::InvalidInput,
        "put with an expected digest that is not 64 lowercase hex digits",
    );
    expect_kind(
        put(
            &*store,
            &acme,
            &big,
            Some(&sha256_hex(&big).to_uppercase()),
            T0,
        )
        .await,
        ErrorKind::InvalidInput,
        "put with an upper-case expected digest",
    );
    for bad in ["", "octet-stream", "application/", "/x", "a/b c", "a/b;q=1"] {
        expect_kind(
            store
                .put(
                    &acme,
                    bad,
                    Box::new(Trickle::new(big.clone(), 4096)),
                    None,
                    ts(T0),
                )
                .await,
            ErrorKind::InvalidInput,
            &format!("put with the media type {bad:?}"),
        );
    }
    let long = format!("application/{}", "x".repeat(116));
    assert_eq!(long.len(), 128);
    expect_kind(
        store
            .put(
                &acme,
                &long,
                Box::new(Trickle::new(big.clone(), 4096)),
                None,
                ts(T0),
            )
            .await,
        ErrorKind::InvalidInput,
        "put with a media type of 128 bytes",
    );
    let mut broken = Trickle::new(big.clone(), 65_536);
    broken.fail_after = Some(1024 * 1024);
    expect_err(
        store
            .put(
                &acme,
                "application/octet-stream",
                Box::new(broken),
                None,
                ts(T0),
            )
            .await,
        "put of a body whose stream breaks half way",
    );
    assert_eq!(
        ok(store.meta(&acme, &sha256_hex(&big)).await, "meta"),
        None,
        "a refused or broken put stores nothing"
    );
    assert!(ok(store.open(&acme, &sha256_hex(&big)).await, "open").is_none());
    assert_eq!(
        all(&*store, &acme).await,
        before,
        "refused puts leave the listing unchanged"
    );
    // The refusals left nothing behind that would block the real put.
    let meta = ok(
        put(&*store, &acme, &big, Some(&sha256_hex(&big)), T0 + 5).await,
        "put after the refusals",
    );
    assert_eq!(meta.created_at, ts(T0 + 5));
    assert_eq!(read_back(&*store, &acme, &meta.sha256).await, Some(big));
    let okay = format!("application/{}", "x".repeat(115));
    ok(
        store
            .put(&acme, &okay, Box::new(Trickle::new(kept, 10)), None, ts(T0))
            .await,
        "put with a media type of 127 bytes (the content exists already)",
    );
}

pub(super) async fn idempotent(factory: StoresFactory) {
    let store = factory().await.artifacts;
    let acme = tenant("acme");
    let data = content(300_000, 5);
    let first = ok(put(&*store, &acme, &data, None, T0).await, "first put");
    let again = ok(
        store
            .put(
                &acme,
                "text/plain",
                Box::new(Trickle::new(data.clone(), 999)),
                Some(&first.sha256),
                ts(T0 + 60_000),
            )
            .await,
        "second put of the same content",
    );
    assert_eq!(
        again, first,
        "a second put of the same content returns the stored metadata (first media type and time)"
    );
    assert_eq!(
        all(&*store, &acme).await,
        vec![first.clone()],
        "stored once"
    );
    assert_eq!(read_back(&*store, &acme, &first.sha256).await, Some(data));
}

pub(super) async fn tenant_isolation(factory: StoresFactory) {
    let store = factory().await.artifacts;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let shared = content(200_000, 6);
    let only_acme = content(500, 7);
    let a = ok(put(&*store, &acme, &shared, None, T0).await, "acme put");
    let g = ok(
        put(&*store, &globex, &shared, None, T0 + 1).await,
        "globex put of the same content",
    );
    assert_eq!(g.tenant, globex, "the artifact belongs to its own tenant");
    assert_eq!(
        g.created_at,
        ts(T0 + 1),
        "globex's artifact is its own, not acme's"
    );
    let secret = ok(put(&*store, &acme, &only_acme, None, T0).await, "acme put");
    assert_eq!(
        ok(store.meta(&globex, &secret.sha256).await, "meta"),
        None,
        "one tenant never sees another's artifact"
    );
    assert!(ok(store.open(&globex, &secret.sha256).await, "open").is_none());
    assert_eq!(all(&*store, &globex).await, vec![g.clone()]);
    expect_kind(
        store.delete(&globex, &secret.sha256).await,
        ErrorKind::NotFound,
        "deleting another tenant's artifact",
    );
    ok(
        store.delete(&globex, &g.sha256).await,
        "globex deletes its copy",
    );
    assert_eq!(
        ok(store.meta(&acme, &a.sha256).await, "meta"),
        Some(a.clone()),
        "acme's copy survives globex's delete"
    );
    assert_eq!(read_back(&*store, &acme, &a.sha256).await, Some(shared));
    assert_eq!(all(&*store, &acme).await.len(), 2);
}

pub(super) async fn paging(factory: StoresFactory) {
    let store = factory().await.artifacts;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let mut want = Vec::new();
    for i in 0..7u64 {
        want.push(ok(
            put(&*store, &acme, &content(10 + i as usize, 100 + i), None, T0).await,
            "put",
        ));
    }
    ok(
        put(&*store, &globex, &content(5, 999), None, T0).await,
        "put",
    );
    want.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    for limit in [1u32, 3, 7, 0] {
        let s = store.clone();
        let t = acme.clone();
        let got = walk(
            "list artifacts",
            limit,
            Box::new(move |p| {
                let (s, t) = (s.clone(), t.clone());
                Box::pin(async move { s.list(&t, p).await })
            }),
        )
        .await;
        assert_eq!(got, want, "the listing by digest with pages of {limit}");
    }
    expect_kind(
        store
            .list(
                &acme,
                PageRequest {
                    limit: 2,
                    after: Some("garbage".into()),
                },
            )
            .await,
        ErrorKind::InvalidInput,
        "list with a cursor the store did not produce",
    );
    assert!(all(&*store, &tenant("initech")).await.is_empty());
}

pub(super) async fn delete(factory: StoresFactory) {
    let store = factory().await.artifacts;
    let acme = tenant("acme");
    let data = content(400_000, 8);
    let keep = ok(put(&*store, &acme, b"keep me", None, T0).await, "put");
    let meta = ok(put(&*store, &acme, &data, None, T0).await, "put");
    ok(store.delete(&acme, &meta.sha256).await, "delete");
    assert_eq!(ok(store.meta(&acme, &meta.sha256).await, "meta"), None);
    assert!(ok(store.open(&acme, &meta.sha256).await, "open").is_none());
    assert_eq!(all(&*store, &acme).await, vec![keep.clone()]);
    expect_kind(
        store.delete(&acme, &meta.sha256).await,
        ErrorKind::NotFound,
        "deleting a deleted artifact",
    );
    expect_kind(
        store.delete(&acme, "nope").await,
        ErrorKind::NotFound,
        "deleting a malformed digest",
    );
    let again = ok(
        put(&*store, &acme, &data, None, T0 + 9).await,
        "put after delete",
    );
    assert_eq!(
        again.created_at,
        ts(T0 + 9),
        "a re-put after delete is a new artifact"
    );
    assert_eq!(read_back(&*store, &acme, &again.sha256).await, Some(data));
}

/// Checks the size limit on stores built with `max_artifact_bytes` (which must be small, a few
/// MiB at most: the check writes bodies of that size). Not part of [`checks`](super::checks),
/// whose factory builds stores with the default limit of 1 GiB; call it from the backend's own
/// tests with a store opened with a small limit.
pub async fn artifact_size_limit(stores: Stores, max_artifact_bytes: u64) {
    let store = stores.artifacts;
    let acme = tenant("acme");
    let max = usize::try_from(max_artifact_bytes).expect("a small limit");
    let over = content(max + 1, 42);
    let sha = sha256_hex(&over);
    expect_kind(
        put(&*store, &acme, &over, Some(&sha), T0).await,
        ErrorKind::TooLarge,
        "put of a body one byte over the limit (with its true digest)",
    );
    expect_kind(
        put(&*store, &acme, &content(max * 2 + 10, 43), None, T0).await,
        ErrorKind::TooLarge,
        "put of a body twice the limit",
    );
    assert_eq!(
        ok(store.meta(&acme, &sha).await, "meta"),
        None,
        "nothing stored"
    );
    assert!(all(&*store, &acme).await.is_empty(), "nothing listed");
    let exact = content(max, 44);
    let meta = ok(
        put(&*store, &acme, &exact, None, T0).await,
        "put of a body exactly at the limit",
    );
    assert_eq!(meta.size, max_artifact_bytes);
    assert_eq!(read_back(&*store, &acme, &meta.sha256).await, Some(exact));
}
