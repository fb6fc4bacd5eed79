//! Artifacts on PostgreSQL: metadata in `artifacts`, the content in `artifact_chunks` rows of
//! [`CHUNK_SIZE`] bytes each.
//!
//! A put runs in **one transaction**: each chunk is inserted as it streams in, under a
//! placeholder digest unique to this put (`pending-<uuid>`, since the real digest is known only
//! at the end). Once the body ended within the size limit and its digest checked out, the
//! metadata row is inserted with `ON CONFLICT DO NOTHING`; if it was new, the chunks are renamed
//! to the real digest and the transaction commits. A refused or failed put (or one whose future
//! is dropped) rolls back, so no chunk of it is ever visible or left behind.
//!
//! The transaction, and one pooled connection, stay open while the body streams in, so a slow
//! uploader holds them for as long as it takes.
//!
//! Two nodes putting the same content race on the metadata's primary key: the second insert
//! waits for the first transaction, then does nothing; that put rolls its own chunks back and
//! returns the winner's metadata.
//!
//! [`open`](ArtifactStore::open) reads the metadata and then the chunks one by one in a
//! read-only `REPEATABLE READ` transaction on a connection of its own, so a delete committed
//! meanwhile does not cut the stream short. The reader holds that pooled connection until it is
//! read to the end or dropped. The content is hashed again on the way out and a mismatch fails
//! the stream at its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::IsolationLevel;

use hub_core::{BoxFuture, Error, Result, TenantId, Timestamp};

use super::{PostgresStore, col, db_error, execute, query, query_opt, to_i64, to_u64, ts};
use crate::artifacts::{
    ArtifactBody, ArtifactMeta, ArtifactReader, ArtifactStore, Ingest, Verified, check_put,
    is_sha256,
};
use crate::{Page, PageRequest, bad_cursor};

const COLS: &str = "tenant, sha256, size, media_type, created_at";

fn to_meta(row: &tokio_postgres::Row) -> Result<ArtifactMeta> {
    let tenant: String = col(row, "tenant")?;
    Ok(ArtifactMeta {
        tenant: tenant.parse().map_err(|_| super::corrupt("tenant id"))?,
        sha256: col(row, "sha256")?,
        size: to_u64(col(row, "size")?)?,
        media_type: col(row, "media_type")?,
        created_at: ts(col(row, "created_at")?)?,
    })
}

async fn find<C: deadpool_postgres::GenericClient>(
    c: &C,
    tenant: &TenantId,
    sha256: &str,
) -> Result<Option<ArtifactMeta>> {
    query_opt(
        c,
        &format!("SELECT {COLS} FROM artifacts WHERE tenant = $1 AND sha256 = $2"),
        &[&tenant.as_str(), &sha256],
    )
    .await?
    .as_ref()
    .map(to_meta)
    .transpose()
}

/// An [`AsyncRead`] over chunks arriving on a channel.
struct ChunkReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        while me.pos >= me.buf.len() {
            match me.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(chunk))) => {
                    me.buf = chunk;
                    me.pos = 0;
                }
            }
        }
        let n = out.remaining().min(me.buf.len() - me.pos);
        out.put_slice(&me.buf[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Streams one artifact: answers `found` with its metadata (or `None`), then sends its chunks.
async fn stream_out(
    store: PostgresStore,
    tenant: TenantId,
    sha256: String,
    found: oneshot::Sender<Result<Option<ArtifactMeta>>>,
    chunks: mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    let mut client = match store.client().await {
        Ok(c) => c,
        Err(e) => {
            let _ = found.send(Err(e));
            return;
        }
    };
    let tx = match client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
    {
        Ok(tx) => tx,
        Err(e) => {
            let _ = found.send(Err(db_error(e)));
            return;
        }
    };
    match find(&tx, &tenant, &sha256).await {
        Ok(Some(meta)) => {
            if found.send(Ok(Some(meta))).is_err() {
                return;
            }
        }
        other => {
            let _ = found.send(other);
            return;
        }
    }
    for n in 0i32.. {
        let row = query_opt(
            &tx,
            "SELECT data FROM artifact_chunks WHERE tenant = $1 AND sha256 = $2 AND n = $3",
            &[&tenant.as_str(), &sha256, &n],
        )
        .await;
        let item = match row {
            Ok(None) => break,
            Ok(Some(r)) => col::<Vec<u8>>(&r, "data").map_err(std::io::Error::other),
            Err(e) => Err(std::io::Error::other(e)),
        };
        let failed = item.is_err();
        if chunks.send(item).await.is_err() || failed {
            break;
        }
    }
    let _ = tx.rollback().await;
}

impl ArtifactStore for PostgresStore {
    fn put<'a>(
        &'a self,
        tenant: &'a TenantId,
        media_type: &'a str,
        mut body: ArtifactBody<'a>,
        expected_sha256: Option<&'a str>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<ArtifactMeta>> {
        Box::pin(async move {
            check_put(media_type, expected_sha256)?;
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db_error)?;
            let pending = format!("pending-{}", uuid::Uuid::new_v4().simple());
            let streamed: Result<(String, u64)> = async {
                let mut ingest = Ingest::new(self.limits.max_artifact_bytes);
                let mut chunk = Vec::new();
                for n in 0i32.. {
                    ingest.next_chunk(&mut *body, &mut chunk).await?;
                    if chunk.is_empty() {
                        break;
                    }
                    execute(
                        &tx,
                        "INSERT INTO artifact_chunks (tenant, sha256, n, data) \
                         VALUES ($1, $2, $3, $4)",
                        &[&tenant.as_str(), &pending, &n, &&chunk[..]],
                    )
                    .await?;
                }
                ingest.finish(expected_sha256)
            }
            .await;
            let (sha256, size) = match streamed {
                Ok(v) => v,
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            };
            let inserted = query_opt(
                &tx,
                &format!(
                    "INSERT INTO artifacts ({COLS}) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT DO NOTHING RETURNING {COLS}"
                ),
                &[
                    &tenant.as_str(),
                    &sha256,
                    &to_i64(size),
                    &media_type,
                    &now.as_millis(),
                ],
            )
            .await?;
            let Some(row) = inserted else {
                // The tenant has this content already: keep the stored one.
                tx.rollback().await.map_err(db_error)?;
                return find(&self.client().await?, tenant, &sha256)
                    .await?
                    .ok_or_else(|| {
                        Error::unavailable(
                            "the artifact was deleted while an identical one was put; retry",
                        )
                    });
            };
            execute(
                &tx,
                "UPDATE artifact_chunks SET sha256 = $3 WHERE tenant = $1 AND sha256 = $2",
                &[&tenant.as_str(), &pending, &sha256],
            )
            .await?;
            let meta = to_meta(&row)?;
            tx.commit().await.map_err(db_error)?;
            Ok(meta)
        })
    }

    fn meta<'a>(
        &'a self,
        tenant: &'a TenantId,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<Option<ArtifactMeta>>> {
        Box::pin(async move {
            if !is_sha256(sha256) {
                return Ok(None);
            }
            find(&self.client().await?, tenant, sha256).await
        })
    }

    fn open<'a>(
        &'a self,
        tenant: &'a TenantId,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<Option<ArtifactReader>>> {
        Box::pin(async move {
            if !is_sha256(sha256) {
                return Ok(None);
            }
            let (found_tx, found_rx) = oneshot::channel();
            let (chunk_tx, chunk_rx) = mpsc::channel(2);
            tokio::spawn(stream_out(
                self.clone(),
                tenant.clone(),
                sha256.to_owned(),
                found_tx,
                chunk_tx,
            ));
            let meta = found_rx.await.map_err(|_| {
                Error::internal(std::io::Error::other("the artifact reader stopped"))
            })??;
            Ok(meta.map(|m| {
                let reader = ChunkReader {
                    rx: chunk_rx,
                    buf: Vec::new(),
                    pos: 0,
                };
                Box::new(Verified::new(reader, m.sha256, m.size)) as ArtifactReader
            }))
        })
    }

    fn list<'a>(
        &'a self,
        tenant: &'a TenantId,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<ArtifactMeta>>> {
        Box::pin(async move {
            if let Some(a) = &page.after
                && !is_sha256(a)
            {
                return Err(bad_cursor());
            }
            let limit = page.effective_limit(&self.limits);
            let after = page.after.clone().unwrap_or_default();
            let rows = query(
                &self.client().await?,
                &format!(
                    "SELECT {COLS} FROM artifacts WHERE tenant = $1 AND sha256 > $2 \
                     ORDER BY sha256 LIMIT $3"
                ),
                &[&tenant.as_str(), &after, &(i64::from(limit) + 1)],
            )
            .await?;
            let items = rows.iter().map(to_meta).collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |m| m.sha256.clone()))
        })
    }

    fn delete<'a>(&'a self, tenant: &'a TenantId, sha256: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !is_sha256(sha256) {
                return Err(Error::not_found("no such artifact"));
            }
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db_error)?;
            let n = execute(
                &tx,
                "DELETE FROM artifacts WHERE tenant = $1 AND sha256 = $2",
                &[&tenant.as_str(), &sha256],
            )
            .await?;
            if n == 0 {
                tx.rollback().await.map_err(db_error)?;
                return Err(Error::not_found("no such artifact"));
            }
            execute(
                &tx,
                "DELETE FROM artifact_chunks WHERE tenant = $1 AND sha256 = $2",
                &[&tenant.as_str(), &sha256],
            )
            .await?;
            tx.commit().await.map_err(db_error)
        })
    }
}
