//! Artifact behaviour beyond the conformance kit: the size limit (which the kit, built on the
//! default 1 GiB limit, cannot reach cheaply), and the SQLite and PostgreSQL storage details
//! (no leftovers after a refused put, damage detected on read, crash orphans reused, concurrent
//! identical puts).

use std::path::{Path, PathBuf};

use hub_core::{ErrorKind, TenantId, Timestamp};
use hub_store::artifacts::{ArtifactStore, sha256_hex};
use hub_store::conformance::artifact_size_limit;
use hub_store::memory::MemoryStore;
use hub_store::sqlite::{SqliteConfig, SqliteStore};
use hub_store::{PageRequest, StoreLimits};
use tokio::io::AsyncReadExt;

const LIMIT: u64 = 3 * 128 * 1024 + 17;

fn small_limits() -> StoreLimits {
    StoreLimits {
        max_artifact_bytes: LIMIT,
        ..StoreLimits::default()
    }
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

fn acme() -> TenantId {
    "acme".parse().unwrap()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn read_all(store: &dyn ArtifactStore, sha: &str) -> std::io::Result<Vec<u8>> {
    let mut r = store
        .open(&acme(), sha)
        .await
        .expect("open")
        .expect("the artifact exists");
    let mut out = Vec::new();
    r.read_to_end(&mut out).await?;
    Ok(out)
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn memory_enforces_the_size_limit() {
    artifact_size_limit(MemoryStore::new(small_limits()).into_stores(), LIMIT).await;
}

async fn sqlite(dir: &Path, limits: StoreLimits) -> SqliteStore {
    let mut config = SqliteConfig::new(dir.join("hub.db"));
    config.limits = limits;
    SqliteStore::open(config).await.expect("SQLite opens")
}

#[tokio::test]
async fn sqlite_enforces_the_size_limit_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path(), small_limits()).await;
    artifact_size_limit(store.clone().into_stores(), LIMIT).await;
    let blobs = files(&dir.path().join("artifacts"));
    assert_eq!(
        blobs.len(),
        1,
        "only the accepted artifact has a file: {blobs:?}"
    );
    // A digest mismatch leaves nothing either.
    let body = data(200_000, 1);
    let err = store
        .put(
            &acme(),
            "application/octet-stream",
            Box::new(&body[..]),
            Some(&sha256_hex(b"other")),
            t(0),
        )
        .await
        .expect_err("mismatch");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        files(&dir.path().join("artifacts")),
        blobs,
        "no temp file left"
    );
}

#[tokio::test]
async fn sqlite_keeps_blobs_as_files_and_detects_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path(), StoreLimits::default()).await;
    let body = data(300_000, 2);
    let meta = store
        .put(&acme(), "application/zip", Box::new(&body[..]), None, t(5))
        .await
        .expect("put");
    let path = dir
        .path()
        .join("artifacts/acme")
        .join(&meta.sha256[..2])
        .join(&meta.sha256);
    assert_eq!(std::fs::read(&path).expect("the blob file"), body);
    assert_eq!(files(&dir.path().join("artifacts")), vec![path.clone()]);

    // Survives a reopen.
    drop(store);
    let store = sqlite(dir.path(), StoreLimits::default()).await;
    assert_eq!(
        store.meta(&acme(), &meta.sha256).await.expect("meta"),
        Some(meta.clone())
    );
    assert_eq!(read_all(&store, &meta.sha256).await.expect("read"), body);

    // Damage behind the store's back is reported at the end of the stream.
    let mut damaged = body.clone();
    damaged[1000] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    let err = read_all(&store, &meta.sha256)
        .await
        .expect_err("damaged content is not accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    std::fs::write(&path, &body[..1000]).unwrap();
    let err = read_all(&store, &meta.sha256)
        .await
        .expect_err("truncated content is not accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

    // Delete removes the file.
    store.delete(&acme(), &meta.sha256).await.expect("delete");
    assert!(!path.exists(), "the file is removed with the artifact");
}

#[tokio::test]
async fn sqlite_reuses_a_crash_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path(), StoreLimits::default()).await;
    let body = data(100_000, 3);
    let sha = sha256_hex(&body);
    // What a crash between the rename and the commit leaves: the file, no row (here with
    // wrong content, which the next put must not trust).
    let shard = dir.path().join("artifacts/acme").join(&sha[..2]);
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join(&sha), b"half").unwrap();
    assert_eq!(store.meta(&acme(), &sha).await.expect("meta"), None);
    assert!(
        store
            .list(&acme(), PageRequest::first(0))
            .await
            .expect("list")
            .items
            .is_empty(),
        "an orphan is not listed"
    );
    let meta = store
        .put(
            &acme(),
            "application/octet-stream",
            Box::new(&body[..]),
            None,
            t(1),
        )
        .await
        .expect("put over an orphan");
    assert_eq!(meta.sha256, sha);
    assert_eq!(read_all(&store, &sha).await.expect("read"), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_identical_puts_and_deletes_stay_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path(), StoreLimits::default()).await;
    let body = data(150_000, 4);
    let sha = sha256_hex(&body);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, body) = (store.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            if i % 4 == 3 {
                let _ = store.delete(&acme(), &sha256_hex(&body)).await;
            } else {
                store
                    .put(
                        &acme(),
                        "application/octet-stream",
                        Box::new(&body[..]),
                        None,
                        t(i),
                    )
                    .await
                    .expect("put");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Whatever the interleaving, a listed artifact can be read in full.
    if store.meta(&acme(), &sha).await.expect("meta").is_some() {
        assert_eq!(read_all(&store, &sha).await.expect("read"), body);
    }
    store
        .put(
            &acme(),
            "application/octet-stream",
            Box::new(&body[..]),
            None,
            t(99),
        )
        .await
        .expect("put");
    assert_eq!(read_all(&store, &sha).await.expect("read"), body);
}

// ---- PostgreSQL (skipped without HUB_TEST_POSTGRES_URL, like the other PostgreSQL tests) ----

mod pg {
    use super::*;
    use hub_store::artifacts::CHUNK_SIZE;
    use hub_store::postgres::{PostgresConfig, PostgresStore};

    fn url() -> Option<String> {
        std::env::var("HUB_TEST_POSTGRES_URL").ok()
    }

    /// A fresh store in its own schema, and a raw client on that schema.
    async fn open(url: &str, limits: StoreLimits) -> (PostgresStore, tokio_postgres::Client) {
        let schema = format!("hub_art_{}", uuid::Uuid::new_v4().simple());
        let mut config = PostgresConfig::new(url);
        config.schema = Some(schema.clone());
        config.limits = limits;
        let store = PostgresStore::connect(config).await.expect("PostgreSQL");
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("raw connection");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("SET search_path TO {schema}"))
            .await
            .expect("search_path");
        (store, client)
    }

    async fn chunk_rows(raw: &tokio_postgres::Client) -> Vec<(String, i64)> {
        raw.query(
            "SELECT sha256, count(*) FROM artifact_chunks GROUP BY sha256 ORDER BY sha256",
            &[],
        )
        .await
        .expect("count chunks")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    #[tokio::test]
    async fn postgres_enforces_the_size_limit_and_leaves_no_chunks() {
        let Some(url) = url() else { return };
        let (store, raw) = open(&url, small_limits()).await;
        artifact_size_limit(store.clone().into_stores(), LIMIT).await;
        let body = data(CHUNK_SIZE * 2 + 5, 9);
        let err = store
            .put(
                &acme(),
                "application/octet-stream",
                Box::new(&body[..]),
                Some(&sha256_hex(b"other")),
                t(0),
            )
            .await
            .expect_err("mismatch");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let listed = store
            .list(&acme(), PageRequest::first(0))
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(
            chunk_rows(&raw).await,
            vec![(listed.items[0].sha256.clone(), 4)],
            "only the accepted artifact's chunks are stored (LIMIT bytes = 4 chunks)"
        );
        store.drop_schema().await.expect("drop schema");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_concurrent_identical_puts_store_once() {
        let Some(url) = url() else { return };
        let (store, raw) = open(&url, StoreLimits::default()).await;
        let body = data(CHUNK_SIZE * 3 + 1, 10);
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (store, body) = (store.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .put(
                        &acme(),
                        "application/octet-stream",
                        Box::new(&body[..]),
                        None,
                        t(i),
                    )
                    .await
                    .expect("put")
            }));
        }
        let mut metas = Vec::new();
        for task in tasks {
            metas.push(task.await.unwrap());
        }
        assert!(
            metas.windows(2).all(|w| w[0] == w[1]),
            "every racer gets the winner's metadata: {metas:?}"
        );
        assert_eq!(
            chunk_rows(&raw).await,
            vec![(sha256_hex(&body), 4)],
            "the content is stored once, no pending chunks left"
        );

        // A reader that started before a delete streams the whole content.
        let mut reader = store
            .open(&acme(), &metas[0].sha256)
            .await
            .expect("open")
            .expect("exists");
        store
            .delete(&acme(), &metas[0].sha256)
            .await
            .expect("delete");
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.expect("read");
        assert_eq!(out, body);
        assert!(
            chunk_rows(&raw).await.is_empty(),
            "delete removes the chunks"
        );
        assert!(
            store
                .open(&acme(), &metas[0].sha256)
                .await
                .expect("open")
                .is_none()
        );

        // Damaged chunks are reported at the end of the stream.
        let meta = store
            .put(
                &acme(),
                "application/octet-stream",
                Box::new(&body[..]),
                None,
                t(1),
            )
            .await
            .expect("put");
        raw.execute(
            "UPDATE artifact_chunks SET data = overlay(data placing '\\x00ff'::bytea from 10) \
             WHERE n = 1",
            &[],
        )
        .await
        .expect("damage");
        let err = read_all(&store, &meta.sha256)
            .await
            .expect_err("damaged content is not accepted");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        store.drop_schema().await.expect("drop schema");
    }
}
