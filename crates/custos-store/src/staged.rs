//! A blob being written: in memory while it is small enough to be packed,
//! otherwise a file in the staging folder; hashed as it grows. In memory it
//! is kept as the pieces it arrived in ([`Held`]): a DICOM peer's P-DATA
//! values are taken over as they are, not copied into one growing buffer
//! (which copied every byte once more, plus its reallocations).

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::StoreError;

/// Bytes on their way into the store. Dropping it without committing removes
/// the staging file, if there is one.
pub struct StagedBlob {
    /// The bytes while they fit `spill_at`; `None` once they went to a file.
    memory: Option<Held>,
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
            memory: Some(Held::default()),
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
        for slice in held.slices() {
            writer.write_all(slice).await.map_err(StoreError::Write)?;
        }
        writer.write_all(more).await.map_err(StoreError::Write)?;
        self.writer = Some(writer);
        Ok(())
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        match self.take_in(bytes) {
            Some(memory) => {
                memory.push_slice(bytes);
                Ok(())
            }
            None => self.write_out(bytes).await,
        }
    }

    /// As [`write`](Self::write), taking the buffer over instead of copying
    /// it while the blob is held in memory.
    pub async fn write_owned(&mut self, bytes: impl Into<Bytes>) -> Result<(), StoreError> {
        let bytes = bytes.into();
        match self.take_in(&bytes) {
            Some(memory) => {
                memory.push(bytes);
                Ok(())
            }
            None => self.write_out(&bytes).await,
        }
    }

    /// Hashes and counts `bytes`; the memory to keep them in, if they fit.
    fn take_in(&mut self, bytes: &[u8]) -> Option<&mut Held> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        let spill_at = self.spill_at;
        self.memory
            .as_mut()
            .filter(|memory| memory.len + bytes.len() <= spill_at)
    }

    /// Bytes that do not fit in memory: to the staging file (made now, with
    /// what was held, if this is the first time).
    async fn write_out(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.memory.is_some() {
            return self.spill(bytes).await;
        }
        self.write_to_file(bytes).await
    }

    async fn write_to_file(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
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
    pub fn held(&self) -> Option<&Held> {
        self.memory.as_ref()
    }

    /// `f` over the bytes held in memory, on a blocking thread and without
    /// copying them (they are lent to the thread and put back); `None` when
    /// the blob is in a file.
    pub async fn with_held_off_thread<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Held) -> T + Send + 'static,
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
    pub(crate) fn take_memory(&mut self) -> Option<Held> {
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

/// A blob held in memory: its bytes in the pieces they were written in.
#[derive(Debug, Default)]
pub struct Held {
    pieces: Vec<Bytes>,
    /// Short slices gathered since the last piece (a file meta header, a
    /// STOW-RS part's small chunks): they follow `pieces`.
    tail: Vec<u8>,
    len: usize,
}

/// Slices shorter than this are gathered in the tail. Longer ones become
/// pieces of their own: taken over when given as owned buffers (P-DATA
/// values, STOW-RS chunks), copied at their own size when lent (no
/// reallocation, no large fresh buffer: pieces growing with the blob up to
/// 256 KiB measured slower on STOW-RS, page faults of fresh large buffers on
/// every instance).
const SMALL: usize = 4096;

impl Held {
    /// A blob of one piece.
    #[cfg(test)]
    pub(crate) fn from_vec(bytes: Vec<u8>) -> Held {
        let mut held = Held::default();
        held.push(bytes.into());
        held
    }

    fn push_slice(&mut self, bytes: &[u8]) {
        if bytes.len() < SMALL {
            self.len += bytes.len();
            self.tail.extend_from_slice(bytes);
        } else {
            self.push(Bytes::copy_from_slice(bytes));
        }
    }

    fn push(&mut self, bytes: Bytes) {
        if bytes.len() < SMALL {
            return self.push_slice(&bytes);
        }
        if !self.tail.is_empty() {
            let tail = std::mem::take(&mut self.tail);
            self.pieces.push(tail.into());
        }
        self.len += bytes.len();
        self.pieces.push(bytes);
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, in order, as the slices they are held in.
    pub(crate) fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.pieces
            .iter()
            .map(|p| &p[..])
            .chain(Some(&self.tail[..]).filter(|t| !t.is_empty()))
    }

    /// The bytes as one reader, piece after piece.
    pub fn reader(&self) -> HeldReader<'_> {
        HeldReader {
            pieces: &self.pieces,
            tail: &self.tail,
            at: 0,
        }
    }
}

/// Reads a [`Held`] blob from its start (a clone reads it again from where
/// the original was).
#[derive(Clone)]
pub struct HeldReader<'a> {
    pieces: &'a [Bytes],
    tail: &'a [u8],
    /// Position within the first piece (the tail once no piece is left).
    at: usize,
}

impl std::io::Read for HeldReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let (current, rest) = match self.pieces.split_first() {
                Some((first, rest)) => (&first[..], Some(rest)),
                None => (self.tail, None),
            };
            let left = current.get(self.at..).unwrap_or_default();
            match rest {
                Some(rest) if left.is_empty() => {
                    self.pieces = rest;
                    self.at = 0;
                }
                _ => {
                    let n = left.len().min(buf.len());
                    buf[..n].copy_from_slice(&left[..n]);
                    self.at += n;
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn held_pieces_read_back_in_order() {
        let mut held = Held::default();
        held.push_slice(b"ab");
        held.push_slice(b"cd"); // gathered with the first
        held.push(vec![7u8; SMALL].into()); // taken over as its own piece
        held.push(b"ef".to_vec().into()); // gathered again, after it
        assert_eq!(held.slices().count(), 3);
        assert_eq!(held.len(), 4 + SMALL + 2);
        // Many slices (a STOW-RS part's chunks) read back in order.
        let mut chunked = Held::default();
        for i in 0..512u32 {
            chunked.push_slice(&[i as u8; 5000]);
        }
        assert_eq!(chunked.len(), 512 * 5000);
        let mut back = Vec::new();
        chunked.reader().read_to_end(&mut back).unwrap();
        assert!(
            back.chunks(5000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|b| *b == i as u8))
        );
        let mut out = Vec::new();
        let mut r = held.reader();
        let mut small = [0u8; 3];
        loop {
            let n = r.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&small[..n]);
        }
        let mut want = b"abcd".to_vec();
        want.extend(vec![7u8; SMALL]);
        want.extend_from_slice(b"ef");
        assert_eq!(out, want);
    }
}
