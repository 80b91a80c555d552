//! Blob storage for stored instances.
//!
//! Keys are generated here (random, never derived from DICOM UIDs or any client
//! input), so a hostile UID cannot steer a path. A blob is first *staged* (written
//! where no reader looks), then *committed* durably under its key in one step;
//! readers never see a partial blob.
#![forbid(unsafe_code)]

mod fs;
mod pack;
mod s3;
mod staged;
mod staging;

pub use fs::{DEFAULT_PACK_LIMIT, FsStore, copy_blobs};
pub use s3::{S3Store, S3Url};
pub use staged::{Held, HeldReader, StagedBlob};

use async_trait::async_trait;
use std::path::PathBuf;
use tokio::io::AsyncRead;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not stage a new blob in {path}: {source}")]
    Stage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not write blob data: {0}")]
    Write(#[source] std::io::Error),
    #[error("could not make blob {key} durable: {source}")]
    Commit { key: String, source: std::io::Error },
    #[error("blob {key} is missing")]
    NotFound { key: String },
    #[error("could not read blob {key}: {source}")]
    Read { key: String, source: std::io::Error },
    #[error("could not delete blob {key}: {source}")]
    Delete { key: String, source: std::io::Error },
    #[error("could not list blobs: {0}")]
    List(#[source] std::io::Error),
    #[error("`{0}` is not a valid blob key")]
    BadKey(String),
}

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// Where blobs live. The filesystem store is the embedded default; an S3 store
/// will implement the same trait.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a new blob. Its bytes are hashed (SHA-256) and counted as written.
    async fn stage(&self) -> Result<StagedBlob, StoreError>;

    /// Makes a staged blob durable and visible under a fresh key, which is returned.
    /// When this returns, the bytes survive a crash.
    async fn commit(&self, staged: StagedBlob) -> Result<String, StoreError>;

    /// Opens a committed blob for reading.
    async fn open(&self, key: &str) -> Result<Reader, StoreError>;

    /// A committed blob's bytes, whole, in one read: for blobs the caller
    /// knows to be small enough to hold (retrieval reads instances up to a
    /// few MiB this way: one read into the buffer that goes to the socket,
    /// instead of chunks copied through `open`'s reader).
    async fn read(&self, key: &str) -> Result<bytes::Bytes, StoreError>;

    /// The first `max` bytes of a committed blob (all of it when shorter),
    /// without reading the rest: a header without the pixel data behind it.
    /// For `max` > 0 and a blob that is not empty (S3 answers a range of an
    /// empty object, or an empty range, with an error).
    async fn read_prefix(&self, key: &str, max: u64) -> Result<bytes::Bytes, StoreError>;

    /// A local file holding the blob, when the store has one (seekable access).
    fn local_path(&self, key: &str) -> Option<PathBuf>;

    /// Removes a blob; removing a missing blob is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Every committed blob with its last modification time (for fsck).
    async fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, StoreError>;
}

/// Creates `dir` and its missing parents, owner-only (0700 on Unix): blobs
/// are patient data even when the store lies outside the data folder.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes everything written to the filesystem holding `path` durable
/// (syncfs): for a whole folder copied file by file (a backup, a restore),
/// one call instead of an fsync per file and folder. Write-back errors since
/// the files were written are reported (Linux 5.8 and later).
pub fn sync_filesystem_of(path: &std::path::Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(path)?;
    rustix::fs::syncfs(&dir)?;
    Ok(())
}
