//! A blob being written: in memory while it is small enough to be packed,
//! otherwise a file in the staging folder; hashed as it grows.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::StoreError;

/// Bytes on their way into the store. Dropping it without committing removes
/// the staging file, if there is one.
pub struct StagedBlob {
    /// The bytes while they fit `spill_at`; `None` once they went to a file.
    memory: Option<Vec<u8>>,
    spill_at: usize,
    staging: PathBuf,
    pub(crate) writer: Option<BufWriter<tokio::fs::File>>,
    pub(crate) path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl StagedBlob {
    /// A new, empty staging file in `dir`.
    pub(crate) async fn create(dir: &Path) -> Result<StagedBlob, StoreError> {
        let mut blob = StagedBlob::in_memory(dir, 0);
        blob.spill(&[]).await?;
        Ok(blob)
    }

    /// A blob held in memory up to `spill_at` bytes, then in a file in `dir`.
    pub(crate) fn in_memory(dir: &Path, spill_at: usize) -> StagedBlob {
        StagedBlob {
            memory: Some(Vec::new()),
            spill_at,
            staging: dir.to_path_buf(),
            writer: None,
            path: PathBuf::new(),
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Moves the bytes so far, then `more`, into a new staging file.
    async fn spill(&mut self, more: &[u8]) -> Result<(), StoreError> {
        let path = self.staging.join(crate::fs::new_key());
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        // Blobs hold patient data: owner only, whatever the umask.
        #[cfg(unix)]
        options.mode(0o600);
        let file = options
            .open(&path)
            .await
            .map_err(|source| StoreError::Stage {
                path: path.clone(),
                source,
            })?;
        // From here on, drop removes the file.
        self.path = path;
        let mut writer = BufWriter::with_capacity(256 * 1024, file);
        let held = self.memory.take().unwrap_or_default();
        writer.write_all(&held).await.map_err(StoreError::Write)?;
        writer.write_all(more).await.map_err(StoreError::Write)?;
        self.writer = Some(writer);
        Ok(())
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        if let Some(memory) = self.memory.as_mut() {
            if memory.len() + bytes.len() <= self.spill_at {
                memory.extend_from_slice(bytes);
                return Ok(());
            }
            return self.spill(bytes).await;
        }
        match self.writer.as_mut() {
            Some(w) => w.write_all(bytes).await.map_err(StoreError::Write),
            None => Err(StoreError::Write(std::io::Error::other(
                "blob already finished",
            ))),
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Lower-case hex SHA-256 of the bytes written so far.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    /// Flushes buffered bytes so the staged file can be read back (e.g. to parse it).
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if let Some(w) = self.writer.as_mut() {
            w.flush().await.map_err(StoreError::Write)?;
        }
        Ok(())
    }

    /// The bytes, while the blob is held in memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        self.memory.as_deref()
    }

    /// `f` over the bytes held in memory, on a blocking thread and without
    /// copying them (they are lent to the thread and put back); `None` when
    /// the blob is in a file.
    pub async fn with_bytes_off_thread<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&[u8]) -> T + Send + 'static,
    ) -> Option<Result<T, tokio::task::JoinError>> {
        let bytes = self.memory.take()?;
        let lent = tokio::task::spawn_blocking(move || {
            let out = f(&bytes);
            (out, bytes)
        })
        .await;
        Some(lent.map(|(out, bytes)| {
            self.memory = Some(bytes);
            out
        }))
    }

    /// The staging file, complete after [`flush`](Self::flush); `None` while
    /// the blob is held in memory.
    pub fn staged_path(&self) -> Option<&Path> {
        self.writer.as_ref().map(|_| self.path.as_path())
    }

    /// The bytes, when the blob never left memory.
    pub(crate) fn take_memory(&mut self) -> Option<Vec<u8>> {
        self.memory.take()
    }

    /// Flushes buffered bytes and hands back the file and its path; the caller
    /// makes it durable. The staged path is forgotten, so drop no longer deletes it.
    pub(crate) async fn into_parts(mut self) -> Result<(std::fs::File, PathBuf), std::io::Error> {
        let mut w = self
            .writer
            .take()
            .ok_or_else(|| std::io::Error::other("blob already finished"))?;
        w.flush().await?;
        let file = w.into_inner().into_std().await;
        Ok((file, std::mem::take(&mut self.path)))
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        // Not committed (an error, a duplicate, a dropped association): remove the
        // staging file. `into_parts` empties `path`, so committed blobs are left alone.
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
