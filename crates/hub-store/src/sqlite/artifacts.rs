//! Artifacts on SQLite: the content in files next to the database, the metadata in a table.
//!
//! Layout: `<db-dir>/artifacts/<tenant>/<ab>/<sha256>`, where `<ab>` is the digest's first two
//! hex digits (so that no directory grows past a few thousand entries).
//!
//! A put streams the body into a temporary file `<db-dir>/artifacts/<tenant>/.put-<uuid>.tmp`
//! (same file system, so the rename below is atomic), hashing it on the way, and checks size and
//! digest. A refused or failed put, or one whose future is dropped, removes the temporary file.
//! Otherwise the file is fsynced, renamed to its final name, the directory fsynced, and only then
//! the metadata row is committed. Readers find artifacts through the row, so a half-written or
//! unverified blob is never visible.
//!
//! Crash behaviour: a crash after the rename but before the commit leaves an orphan file with
//! correct content and no row. It is harmless (nothing lists or opens it) and the next identical
//! put replaces it with the same bytes. A crash (or power loss) while a body streams in may leave
//! a `.put-*.tmp` file in the tenant's directory: it is never read, and may be deleted by hand
//! while the hub is stopped.
//!
//! A delete commits the row's removal first and removes the file afterwards; a crash between the
//! two leaves a harmless orphan as well.
//!
//! The last steps of a put (look-up, rename, row) and of a delete (row, file) hold one store-wide
//! async lock, so that a delete racing an identical put never removes a file whose row the put
//! just committed.
//!
//! Blob files and their directories are always fsynced before the row is written, whatever the
//! configured [`Durability`](crate::Durability): a row must never outlive its file.
//!
//! Integrity: [`open`](ArtifactStore::open) hashes the file again while it streams out and fails
//! at the end if the content no longer matches its name.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, Row, params};
use tokio::io::AsyncWriteExt;

use hub_core::{BoxFuture, Error, Result, TenantId, Timestamp};

use super::registry::ts;
use super::{SqliteStore, corrupt, db_err};
use crate::artifacts::{
    ArtifactBody, ArtifactMeta, ArtifactReader, ArtifactStore, Ingest, Verified, check_put,
    is_sha256,
};
use crate::{Page, PageRequest, bad_cursor};

const COLS: &str = "tenant, sha256, size, media_type, created_at";

type MetaRow = (String, String, i64, String, i64);

fn meta_row(r: &Row<'_>) -> rusqlite::Result<MetaRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_meta(row: MetaRow) -> Result<ArtifactMeta> {
    let (tenant, sha256, size, media_type, created) = row;
    Ok(ArtifactMeta {
        tenant: tenant.parse().map_err(|_| corrupt("tenant id"))?,
        sha256,
        size: u64::try_from(size).map_err(|_| corrupt("artifact size"))?,
        media_type,
        created_at: ts(created)?,
    })
}

fn find(conn: &rusqlite::Connection, tenant: &str, sha256: &str) -> Result<Option<ArtifactMeta>> {
    conn.prepare_cached(&format!(
        "SELECT {COLS} FROM artifacts WHERE tenant = ?1 AND sha256 = ?2"
    ))
    .and_then(|mut s| s.query_row([tenant, sha256], meta_row).optional())
    .map_err(db_err)?
    .map(to_meta)
    .transpose()
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    let msg = format!("{what} {}", path.display());
    if e.kind() == std::io::ErrorKind::StorageFull {
        Error::unavailable(format!("the disk is full: {msg}")).with_source(e)
    } else {
        Error::unavailable(msg).with_source(e)
    }
}

/// Removes a temporary file when dropped, unless disarmed: covers refused, failed and
/// cancelled puts alike.
struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl SqliteStore {
    /// `<db-dir>/artifacts`.
    fn artifact_root(&self) -> PathBuf {
        let dir = self
            .path()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        dir.join("artifacts")
    }

    fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        // Tenant ids are `a-z 0-9 -`, safe as a file name.
        self.artifact_root().join(tenant.as_str())
    }

    fn blob_path(&self, tenant: &TenantId, sha256: &str) -> PathBuf {
        self.tenant_dir(tenant).join(&sha256[..2]).join(sha256)
    }

    async fn lookup(&self, tenant: &TenantId, sha256: &str) -> Result<Option<ArtifactMeta>> {
        if !is_sha256(sha256) {
            return Ok(None);
        }
        let (tenant, sha256) = (tenant.as_str().to_owned(), sha256.to_owned());
        self.read(move |conn| find(conn, &tenant, &sha256)).await
    }
}

async fn sync_dir(dir: PathBuf) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("cannot sync", &dir, e))
    })
    .await
    .map_err(|e| Error::internal(std::io::Error::other(e.to_string())))?
}

impl ArtifactStore for SqliteStore {
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
            let dir = self.tenant_dir(tenant);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| io_err("cannot create", &dir, e))?;
            let tmp_path = dir.join(format!(".put-{}.tmp", uuid::Uuid::new_v4().simple()));
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)
                .await
                .map_err(|e| io_err("cannot create", &tmp_path, e))?;
            let mut tmp = TempFile {
                path: Some(tmp_path.clone()),
            };

            let mut ingest = Ingest::new(self.limits().max_artifact_bytes);
            let mut chunk = Vec::new();
            loop {
                ingest.next_chunk(&mut *body, &mut chunk).await?;
                if chunk.is_empty() {
                    break;
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_err("cannot write", &tmp_path, e))?;
            }
            let (sha256, size) = ingest.finish(expected_sha256)?;
            file.flush()
                .await
                .map_err(|e| io_err("cannot write", &tmp_path, e))?;
            file.sync_all()
                .await
                .map_err(|e| io_err("cannot sync", &tmp_path, e))?;
            drop(file);

            let _order = self.inner.artifact_lock.lock().await;
            if let Some(existing) = self.lookup(tenant, &sha256).await? {
                return Ok(existing);
            }
            let final_path = self.blob_path(tenant, &sha256);
            let shard = dir.join(&sha256[..2]);
            tokio::fs::create_dir_all(&shard)
                .await
                .map_err(|e| io_err("cannot create", &shard, e))?;
            tokio::fs::rename(&tmp_path, &final_path)
                .await
                .map_err(|e| io_err("cannot rename into", &final_path, e))?;
            tmp.path = None;
            sync_dir(shard).await?;

            let meta = ArtifactMeta {
                tenant: tenant.clone(),
                sha256,
                size,
                media_type: media_type.to_owned(),
                created_at: now,
            };
            let row = meta.clone();
            self.write(move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT OR IGNORE INTO artifacts ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        row.tenant.as_str(),
                        row.sha256,
                        i64::try_from(row.size).unwrap_or(i64::MAX),
                        row.media_type,
                        row.created_at.as_millis(),
                    ])
                })
                .map_err(db_err)?;
                find(conn, row.tenant.as_str(), &row.sha256)?.ok_or_else(|| corrupt("artifact row"))
            })
            .await
        })
    }

    fn meta<'a>(
        &'a self,
        tenant: &'a TenantId,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<Option<ArtifactMeta>>> {
        Box::pin(self.lookup(tenant, sha256))
    }

    fn open<'a>(
        &'a self,
        tenant: &'a TenantId,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<Option<ArtifactReader>>> {
        Box::pin(async move {
            let Some(meta) = self.lookup(tenant, sha256).await? else {
                return Ok(None);
            };
            let path = self.blob_path(tenant, &meta.sha256);
            let file = tokio::fs::File::open(&path).await.map_err(|e| {
                Error::internal(std::io::Error::other(format!(
                    "the content of artifact {} is missing at {}: {e}",
                    meta.sha256,
                    path.display()
                )))
            })?;
            let reader: ArtifactReader = Box::new(Verified::new(file, meta.sha256, meta.size));
            Ok(Some(reader))
        })
    }

    fn list<'a>(
        &'a self,
        tenant: &'a TenantId,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<ArtifactMeta>>> {
        let tenant = tenant.as_str().to_owned();
        let limit = page.effective_limit(self.limits());
        Box::pin(async move {
            if let Some(a) = &page.after
                && !is_sha256(a)
            {
                return Err(bad_cursor());
            }
            let after = page.after.unwrap_or_default();
            let rows = self
                .read(move |conn| {
                    conn.prepare_cached(&format!(
                        "SELECT {COLS} FROM artifacts WHERE tenant = ?1 AND sha256 > ?2 \
                         ORDER BY sha256 LIMIT ?3"
                    ))
                    .and_then(|mut s| {
                        s.query_map(params![tenant, after, i64::from(limit) + 1], meta_row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db_err)
                })
                .await?;
            let items = rows.into_iter().map(to_meta).collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, limit, |m| m.sha256.clone()))
        })
    }

    fn delete<'a>(&'a self, tenant: &'a TenantId, sha256: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if !is_sha256(sha256) {
                return Err(Error::not_found("no such artifact"));
            }
            let _order = self.inner.artifact_lock.lock().await;
            let (t, s) = (tenant.as_str().to_owned(), sha256.to_owned());
            let n = self
                .write(move |conn| {
                    conn.prepare_cached("DELETE FROM artifacts WHERE tenant = ?1 AND sha256 = ?2")
                        .and_then(|mut st| st.execute([t, s]))
                        .map_err(db_err)
                })
                .await?;
            if n == 0 {
                return Err(Error::not_found("no such artifact"));
            }
            // The row is gone: the artifact is deleted. A file that cannot be removed now is a
            // harmless orphan, replaced by the next identical put.
            let _ = tokio::fs::remove_file(self.blob_path(tenant, sha256)).await;
            Ok(())
        })
    }
}
