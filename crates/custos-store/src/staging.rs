//! The staging folder, shared by every process that opens the store: the
//! serving node, each CLI command, and other nodes on a shared blob folder.
//!
//! Each opened store stages its blobs in a folder of its own, `<id>/`, and
//! holds an exclusive lock on `<id>/.lock` (written with its process id once
//! locked) for as long as it is open. Opening a store removes the folders
//! whose lock nobody holds any more: a crashed process's blobs in flight,
//! never acknowledged. A folder whose lock is held is someone's stores in
//! flight and is left alone, however old (before, every command emptied the
//! whole folder, and the serving node's stores then failed).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A lock file still empty this long after its folder was made belongs to a
/// process that died between making and locking it.
const UNCLAIMED: Duration = Duration::from_secs(3600);

/// This store's own staging folder, locked while the store is open.
pub(crate) struct Staging {
    pub dir: PathBuf,
    _lock: File,
}

impl Drop for Staging {
    /// A store closed cleanly takes its folder with it (a crash leaves it to
    /// the next store opened).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes `parent` if needed, removes what dead processes left in it, and
/// makes and locks a folder for this store.
pub(crate) fn prepare(parent: &Path) -> std::io::Result<Staging> {
    crate::create_private_dir(parent)?;
    for entry in std::fs::read_dir(parent)?.flatten() {
        let path = entry.path();
        let left = match entry.file_type() {
            Ok(t) if t.is_dir() => abandoned(&path),
            // Files of versions that staged in `parent` itself.
            Ok(_) => old(&path),
            Err(_) => false,
        };
        if left {
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
    let dir = parent.join(crate::fs::new_key());
    crate::create_private_dir(&dir)?;
    let mut lock = File::create(dir.join(".lock"))?;
    lock.lock()?;
    // Written once locked: an empty lock file may be a folder being made.
    writeln!(lock, "{}", std::process::id())?;
    Ok(Staging { dir, _lock: lock })
}

/// Whether a staging folder's owner is gone: its lock file is not locked and
/// was written by its owner (or was never claimed, long ago).
fn abandoned(dir: &Path) -> bool {
    let lock = dir.join(".lock");
    let Ok(file) = File::open(&lock) else {
        return old(dir);
    };
    if file.try_lock().is_err() {
        return false;
    }
    let claimed = file.metadata().map(|m| m.len() > 0).unwrap_or(false);
    claimed || old(&lock)
}

fn old(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .is_some_and(|age| age >= UNCLAIMED)
}
