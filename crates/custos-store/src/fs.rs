//! The filesystem store: blobs up to the pack limit are appended to pack files
//! (`ROOT/packs`, see `pack`); larger ones are files `ROOT/abc/<key>` (4096
//! fan-out folders, made once at open, so a commit never creates folders) with
//! `ROOT/.staging` for blobs in flight.
//!
//! A file's commit is: fsync the file, rename it into place, fsync the folder,
//! all in one blocking task. The rename is atomic, so a blob is either absent
//! or whole.

use async_trait::async_trait;
use std::path::{Path, PathBuf};

use crate::pack::{PackKey, Packs};
use crate::{BlobStore, Reader, StagedBlob, StoreError};

/// Blobs up to this size are packed unless the store is opened otherwise.
pub const DEFAULT_PACK_LIMIT: usize = 1 << 20;

pub struct FsStore {
    root: PathBuf,
    /// This store's own folder under `ROOT/.staging` (`crate::staging`).
    staging: crate::staging::Staging,
    packs: Packs,
    /// Largest blob appended to a pack file (held in memory until then); 0: none.
    pack_limit: usize,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`, packing blobs up to
    /// [`DEFAULT_PACK_LIMIT`].
    pub fn open(root: impl Into<PathBuf>) -> Result<FsStore, StoreError> {
        FsStore::open_with(root, DEFAULT_PACK_LIMIT)
    }

    /// Opens (creating if needed) a store rooted at `root` that packs blobs up
    /// to `pack_limit` bytes (0: every blob in its own file), and removes blobs
    /// a crashed process left in staging (never acknowledged; `crate::staging`).
    pub fn open_with(root: impl Into<PathBuf>, pack_limit: usize) -> Result<FsStore, StoreError> {
        let root = root.into();
        let staging = root.join(".staging");
        let stage_err = |source| StoreError::Stage {
            path: staging.clone(),
            source,
        };
        let staging = crate::staging::prepare(&staging).map_err(stage_err)?;
        let packs_dir = root.join("packs");
        let mut created = !packs_dir.is_dir();
        crate::create_private_dir(&packs_dir).map_err(stage_err)?;
        for i in 0..4096 {
            let dir = root.join(format!("{i:03x}"));
            if !dir.is_dir() {
                crate::create_private_dir(&dir).map_err(stage_err)?;
                created = true;
            }
        }
        if created {
            std::fs::File::open(&root)
                .and_then(|d| d.sync_all())
                .map_err(stage_err)?;
        }
        let packs = Packs::open(packs_dir).map_err(stage_err)?;
        Ok(FsStore {
            root,
            staging,
            packs,
            // Keys of larger blobs would not be read back (`pack::MAX_PACKED`).
            pack_limit: pack_limit.min(crate::pack::MAX_PACKED as usize),
        })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(&key[0..3]).join(key))
    }
}

/// Copies the blobs named by `keys` from the store at `from` into a new store
/// folder `to` under the same keys (a backup): loose files one by one, pack
/// segments whole (appends only ever grow them, so a segment copied after the
/// index snapshot holds every record the snapshot names). Returns the bytes
/// copied.
pub fn copy_blobs(from: &Path, to: &Path, keys: &[String]) -> Result<u64, StoreError> {
    let err = |source| StoreError::Commit {
        key: "(backup)".into(),
        source,
    };
    let mut segments = std::collections::BTreeSet::new();
    let mut bytes = 0;
    crate::create_private_dir(&to.join("packs")).map_err(err)?;
    for key in keys {
        if let Some(pk) = PackKey::parse(key) {
            segments.insert(pk.segment_file());
            continue;
        }
        check_key(key)?;
        let dir = to.join(&key[0..3]);
        crate::create_private_dir(&dir).map_err(err)?;
        bytes += std::fs::copy(from.join(&key[0..3]).join(key), dir.join(key)).map_err(err)?;
    }
    for segment in segments {
        bytes += std::fs::copy(
            from.join("packs").join(&segment),
            to.join("packs").join(&segment),
        )
        .map_err(err)?;
    }
    Ok(bytes)
}

/// Keys are 32 lower-case hex digits, made here; anything else is refused.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.len() != 32
        || !key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(StoreError::BadKey(key.to_string()));
    }
    Ok(())
}

pub(crate) fn new_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[async_trait]
impl BlobStore for FsStore {
    async fn stage(&self) -> Result<StagedBlob, StoreError> {
        if self.pack_limit == 0 {
            return StagedBlob::create(&self.staging.dir).await;
        }
        Ok(StagedBlob::in_memory(&self.staging.dir, self.pack_limit))
    }

    async fn commit(&self, mut staged: StagedBlob) -> Result<String, StoreError> {
        if let Some(bytes) = staged.take_memory() {
            return self
                .packs
                .append(bytes)
                .await
                .map_err(|source| StoreError::Commit {
                    key: "(pack)".into(),
                    source,
                });
        }
        let key = new_key();
        let target = self.path_of(&key)?;
        let err = |source| StoreError::Commit {
            key: key.clone(),
            source,
        };
        let (file, staged_path) = staged.into_parts().await.map_err(err)?;
        let durable = tokio::task::spawn_blocking(move || {
            let result = (|| {
                file.sync_all()?;
                drop(file);
                std::fs::rename(&staged_path, &target)?;
                let dir = target.parent().expect("blob paths have a parent");
                std::fs::File::open(dir)?.sync_all()
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&staged_path);
            }
            result
        })
        .await
        .map_err(|e| err(std::io::Error::other(e)))?;
        durable.map_err(err)?;
        Ok(key)
    }

    async fn open(&self, key: &str) -> Result<Reader, StoreError> {
        if let Some(pk) = PackKey::parse(key) {
            return self.packs.read(key, &pk).await;
        }
        let path = self.path_of(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { key: key.into() })
            }
            Err(source) => Err(StoreError::Read {
                key: key.into(),
                source,
            }),
        }
    }

    async fn read(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
        if let Some(pk) = PackKey::parse(key) {
            return self.packs.read_bytes(key, &pk, u64::MAX).await;
        }
        let path = self.path_of(key)?;
        // std::fs::read sizes its buffer from the file's length: one
        // allocation, read straight into it.
        read_file(key, move || std::fs::read(path)).await
    }

    async fn read_prefix(&self, key: &str, max: u64) -> Result<bytes::Bytes, StoreError> {
        if let Some(pk) = PackKey::parse(key) {
            return self.packs.read_bytes(key, &pk, max).await;
        }
        let path = self.path_of(key)?;
        read_file(key, move || {
            let mut prefix = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(std::fs::File::open(path)?, max),
                &mut prefix,
            )?;
            Ok(prefix)
        })
        .await
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path_of(key).ok()
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(pk) = PackKey::parse(key) {
            return self.packs.delete(key, pk).await;
        }
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Delete {
                key: key.into(),
                source,
            }),
        }
    }

    async fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, StoreError> {
        let root = self.root.clone();
        let packs = self.packs.dir().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut out = crate::pack::list(&packs).map_err(StoreError::List)?;
            for i in 0..4096 {
                let dir = root.join(format!("{i:03x}"));
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries {
                    let entry = entry.map_err(StoreError::List)?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    // Only names this store could have made, in their own folder.
                    if check_key(&name).is_ok() && name.starts_with(&format!("{i:03x}")) {
                        let modified = entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .map_err(StoreError::List)?;
                        out.push((name, modified));
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::List(std::io::Error::other(e)))?
    }
}

/// `read` run on the blocking pool, its errors named by `key`.
async fn read_file(
    key: &str,
    read: impl FnOnce() -> std::io::Result<Vec<u8>> + Send + 'static,
) -> Result<bytes::Bytes, StoreError> {
    match tokio::task::spawn_blocking(read)
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
    {
        Ok(bytes) => Ok(bytes.into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StoreError::NotFound { key: key.into() })
        }
        Err(source) => Err(StoreError::Read {
            key: key.into(),
            source,
        }),
    }
}
