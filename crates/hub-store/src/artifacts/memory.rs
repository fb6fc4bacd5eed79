//! Artifacts in memory: the bytes of each artifact in one shared buffer.

use std::collections::BTreeMap;
use std::sync::Arc;

use hub_core::{BoxFuture, Error, Result, TenantId, Timestamp};

use super::{
    ArtifactBody, ArtifactMeta, ArtifactReader, ArtifactStore, Ingest, Verified, check_put,
};
use crate::memory::MemoryStore;
use crate::{Page, PageRequest, bad_cursor};

/// Every tenant's artifacts, by (tenant, digest).
pub(crate) type Blobs = BTreeMap<(TenantId, String), (ArtifactMeta, Arc<[u8]>)>;

impl MemoryStore {
    fn blobs(&self) -> std::sync::MutexGuard<'_, Blobs> {
        // Every change is one insert or remove: a panic cannot leave half of one behind.
        self.artifacts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(tenant: &TenantId, sha256: &str) -> (TenantId, String) {
    (tenant.clone(), sha256.to_owned())
}

impl ArtifactStore for MemoryStore {
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
            let mut ingest = Ingest::new(self.limits.max_artifact_bytes);
            let mut content = Vec::new();
            let mut chunk = Vec::new();
            loop {
                ingest.next_chunk(&mut *body, &mut chunk).await?;
                if chunk.is_empty() {
                    break;
                }
                content.extend_from_slice(&chunk);
            }
            let (sha256, size) = ingest.finish(expected_sha256)?;
            let mut blobs = self.blobs();
            let entry = blobs.entry(key(tenant, &sha256)).or_insert_with(|| {
                let meta = ArtifactMeta {
                    tenant: tenant.clone(),
                    sha256,
                    size,
                    media_type: media_type.to_owned(),
                    created_at: now,
                };
                (meta, Arc::from(content))
            });
            Ok(entry.0.clone())
        })
    }

    fn meta<'a>(
        &'a self,
        tenant: &'a TenantId,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<Option<ArtifactMeta>>> {
        let found = self
            .blobs()
            .get(&key(tenant, sha256))
            .map(|(m, _)| m.clone());
        Box::pin(std::future::ready(Ok(found)))
    }

    fn open<'a>(
        &'a self,
        tenant: &'a TenantId,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<Option<ArtifactReader>>> {
        let found = self.blobs().get(&key(tenant, sha256)).map(|(m, b)| {
            let content = std::io::Cursor::new(b.clone());
            let reader: ArtifactReader = Box::new(Verified::new(content, m.sha256.clone(), m.size));
            reader
        });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn list<'a>(
        &'a self,
        tenant: &'a TenantId,
        page: PageRequest,
    ) -> BoxFuture<'a, Result<Page<ArtifactMeta>>> {
        let r = (|| {
            if let Some(a) = &page.after
                && !super::is_sha256(a)
            {
                return Err(bad_cursor());
            }
            let limit = page.effective_limit(&self.limits);
            let blobs = self.blobs();
            let items: Vec<ArtifactMeta> = blobs
                .range(key(tenant, page.after.as_deref().unwrap_or(""))..)
                .take_while(|((t, _), _)| t == tenant)
                .filter(|((_, s), _)| page.after.as_ref() != Some(s))
                .take(limit as usize + 1)
                .map(|(_, (m, _))| m.clone())
                .collect();
            Ok(Page::from_overfetch(items, limit, |m| m.sha256.clone()))
        })();
        Box::pin(std::future::ready(r))
    }

    fn delete<'a>(&'a self, tenant: &'a TenantId, sha256: &'a str) -> BoxFuture<'a, Result<()>> {
        let r = match self.blobs().remove(&key(tenant, sha256)) {
            Some(_) => Ok(()),
            None => Err(Error::not_found("no such artifact")),
        };
        Box::pin(std::future::ready(r))
    }
}
