//! `fsck`: the index checked against the store. Every indexed instance must
//! have its blob with the recorded size and SHA-256; every blob must be named
//! by the index. Blobs nobody names are orphans (a crash between blob commit
//! and index commit, or a failed clean-up); only those older than a grace
//! period are reported or removed, so stores in flight are left alone.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use custos_index::IndexError;
use custos_store::StoreError;

use crate::Archive;

#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// Remove orphan blobs older than `grace`.
    pub repair: bool,
    pub grace: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct FsckReport {
    pub checked: u64,
    /// SOP Instance UIDs whose blob is gone.
    pub missing: Vec<String>,
    /// SOP Instance UIDs whose blob differs in size or SHA-256 from the index.
    pub altered: Vec<String>,
    /// Blob keys no index row names, older than the grace period.
    pub orphans: Vec<String>,
    pub orphans_removed: u64,
    /// Unindexed blobs younger than the grace period (probably stores in flight).
    pub recent_unindexed: u64,
}

impl FsckReport {
    /// Whether anything needs attention (removed orphans do not).
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.altered.is_empty()
            && self.orphans.len() as u64 == self.orphans_removed
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const PAGE: usize = 500;

impl Archive {
    /// Checks every indexed instance, then looks for orphans. `progress` is
    /// called with (instances checked, instances indexed).
    pub async fn fsck(
        &self,
        options: &FsckOptions,
        progress: impl Fn(u64, u64),
    ) -> Result<FsckReport, FsckError> {
        // Ages are measured from the scan's start: a blob written after it
        // may be an instance whose row the scan has passed (PostgreSQL
        // commits its keys out of order), however long the scan takes.
        let started = SystemTime::now();
        let total = self.index.instance_count().await?;
        let mut report = FsckReport::default();
        let mut indexed: HashSet<String> = HashSet::new();
        let mut after = 0;
        loop {
            let page = self.index.stored_after(after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, inst) in page {
                indexed.insert(inst.blob_key.clone());
                match self.digest(&inst.blob_key).await {
                    Ok((size, sha)) if size == inst.size && sha == inst.sha256 => {}
                    Ok(_) => report.altered.push(inst.sop_instance_uid.clone()),
                    Err(StoreError::NotFound { .. }) => {
                        report.missing.push(inst.sop_instance_uid.clone())
                    }
                    Err(e) => return Err(e.into()),
                }
                report.checked += 1;
                progress(report.checked, total);
            }
        }
        let mut orphans = Vec::new();
        for (key, modified) in self.store.list().await? {
            if indexed.contains(&key) {
                continue;
            }
            let age = started.duration_since(modified).unwrap_or_default();
            if age < options.grace {
                report.recent_unindexed += 1;
                continue;
            }
            orphans.push(key);
        }
        if options.repair && !orphans.is_empty() {
            // Looked up again just before anything is removed: a row that
            // committed behind the first pass's cursor names its blob now.
            let now_indexed = self.indexed_keys().await?;
            orphans.retain(|k| !now_indexed.contains(k));
            for key in &orphans {
                self.store.delete(key).await?;
                report.orphans_removed += 1;
            }
        }
        report.orphans = orphans;
        Ok(report)
    }

    /// The blob key of every indexed instance.
    async fn indexed_keys(&self) -> Result<HashSet<String>, IndexError> {
        let mut keys = HashSet::new();
        let mut after = 0;
        loop {
            let page = self.index.stored_after(after, PAGE).await?;
            let Some((last, _)) = page.last() else {
                return Ok(keys);
            };
            after = *last;
            keys.extend(page.into_iter().map(|(_, inst)| inst.blob_key));
        }
    }

    /// Size and SHA-256 of a blob as it is now.
    pub(crate) async fn digest(&self, key: &str) -> Result<(u64, String), StoreError> {
        let mut reader = self.store.open(key).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|source| StoreError::Read {
                    key: key.to_string(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((size, hex::encode(hasher.finalize())))
    }
}
