//! A blob being written: a file in the staging folder, hashed as it grows.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::StoreError;

/// Bytes on their way into the store. Dropping it without committing removes the file.
pub struct StagedBlob {
    pub(crate) writer: Option<BufWriter<tokio::fs::File>>,
    pub(crate) path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl StagedBlob {
    /// A new, empty staging file in `dir`.
    pub(crate) async fn create(dir: &Path) -> Result<StagedBlob, StoreError> {
        let path = dir.join(crate::fs::new_key());
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
        Ok(StagedBlob::new(file, path))
    }

    pub(crate) fn new(file: tokio::fs::File, path: PathBuf) -> Self {
        StagedBlob {
            writer: Some(BufWriter::with_capacity(256 * 1024, file)),
            path,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
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

    /// The staging file, complete after [`flush`](Self::flush).
    pub fn staged_path(&self) -> &Path {
        &self.path
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
        // staging file. `finish` empties `path`, so committed blobs are left alone.
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
