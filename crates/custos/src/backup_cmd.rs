//! `custos backup DEST` and `custos restore SRC`: a consistent, verified copy
//! of an embedded archive (SQLite index + blob folder) taken while it serves.
//!
//! Order matters. The data folder's small files go first, the audit
//! checkpoint among them: it never runs ahead of the trail, so the snapshot
//! taken next holds every record it names. The index is copied with SQLite's
//! `VACUUM INTO` (one read snapshot; writers go on). Then the blobs the
//! snapshot names, under the same keys (pack segments whole: they only
//! grow). Finally the copy is opened as an archive and every instance's size
//! and SHA-256 are checked against its index, so a backup that exists is one
//! that restores. A backup is itself a data folder: restore copies it back
//! into an empty one and checks it the same way.
//!
//! PostgreSQL + S3 deployments are backed up with `pg_dump` and the bucket's
//! versioning or replication instead (ARCHITECTURE.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use custos_archive::FsckOptions;
use custos_core::audit::EventId;
use custos_index::{InstanceIndex, SqliteIndex};

use crate::audit_cmd::record;
use crate::config::Config;
use crate::data::{INCOMPLETE, open_archive_as_is};

pub async fn backup(data: &Path, dest: &Path) -> Result<()> {
    let config = Config::load(data)?;
    embedded_only(&config)?;
    let fresh = begin(dest)?;
    let result = copy_archive(data, dest, &config)
        .await
        .and_then(|done| {
            durable(dest, &config)?;
            Ok(done)
        })
        .and_then(|done| {
            finish(dest)?;
            Ok(done)
        });
    let (instances, bytes) = match result {
        Ok(done) => done,
        Err(e) => {
            // Nothing half-made is left to be mistaken for a backup.
            clear(dest, fresh);
            return Err(e);
        }
    };
    let live = SqliteIndex::open(config.resolve(data, &config.index.path))?;
    record(
        data,
        &live,
        EventId::Export,
        'R',
        format!("backup of {instances} instances to {}", dest.display()),
    )
    .await;
    println!(
        "backup of {instances} instances ({:.1} MB of blobs) in {}, every instance verified",
        bytes as f64 / 1e6,
        dest.display()
    );
    Ok(())
}

pub async fn restore(src: &Path, data: &Path) -> Result<()> {
    if !src.join("custos.toml").is_file() {
        bail!("{} is not a Custos backup (no custos.toml)", src.display());
    }
    crate::data::refuse_incomplete(src)?;
    embedded_only(&Config::load(src)?)?;
    let fresh = begin(data)?;
    let result = async {
        copy_tree(src, data, &[PathBuf::from(INCOMPLETE)])
            .with_context(|| format!("copying {}; nothing was restored", src.display()))?;
        let instances = verify(data)
            .await
            .map_err(|e| e.context("the backup does not verify; nothing was restored"))?;
        let config = Config::load(data)?;
        durable(data, &config).map_err(|e| {
            e.context("the restored copy could not be made durable; nothing was restored")
        })?;
        finish(data)?;
        Ok::<_, anyhow::Error>((instances, config))
    }
    .await;
    let (instances, config) = match result {
        Ok(done) => done,
        Err(e) => {
            // Nothing half-made is left to be served or to block a retry.
            clear(data, fresh);
            return Err(e);
        }
    };
    let index = SqliteIndex::open(config.resolve(data, &config.index.path))?;
    record(
        data,
        &index,
        EventId::Import,
        'C',
        format!("restored {instances} instances from {}", src.display()),
    )
    .await;
    println!(
        "restored {instances} instances into {}, every instance verified",
        data.display()
    );
    Ok(())
}

/// Readies `dir` (new, or an existing empty folder: a mount point, say) to
/// be filled, marked [`INCOMPLETE`] durably before anything else is put in
/// it: an interrupted run leaves a folder that restore and serve refuse.
/// Whether `dir` was made here.
fn begin(dir: &Path) -> Result<bool> {
    let fresh = if dir.exists() {
        if std::fs::read_dir(dir)?.next().is_some() {
            bail!("{} is not empty", dir.display());
        }
        false
    } else {
        custos_store::create_private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        true
    };
    let marked = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(INCOMPLETE))
        .and_then(|f| f.sync_all())
        .and_then(|()| sync_folder(dir));
    if let Err(e) = marked {
        clear(dir, fresh);
        return Err(anyhow::Error::new(e).context(format!("marking {}", dir.display())));
    }
    Ok(fresh)
}

/// Makes `dir` whole: its [`INCOMPLETE`] mark removed, durably.
fn finish(dir: &Path) -> Result<()> {
    std::fs::remove_file(dir.join(INCOMPLETE))
        .and_then(|()| sync_folder(dir))
        .with_context(|| format!("unmarking {}", dir.display()))
}

fn sync_folder(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes what a failed run put in `dir` (and `dir` itself if it made it).
fn clear(dir: &Path, fresh: bool) {
    if fresh {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Puts a copied archive on disk for good before it is called a backup or
/// served: the files were copied one by one (and SQLite's `VACUUM INTO`
/// does not sync its output), so the folder's filesystem is synced, and the
/// blob folder's if it is another one.
fn durable(folder: &Path, config: &Config) -> Result<()> {
    for path in [
        folder.to_path_buf(),
        config.resolve(folder, &config.store.path),
    ] {
        custos_store::sync_filesystem_of(&path)
            .with_context(|| format!("syncing {} to disk", path.display()))?;
    }
    Ok(())
}

fn embedded_only(config: &Config) -> Result<()> {
    if !config.index.url.is_empty() || !config.store.url.is_empty() {
        bail!(
            "custos backup copies an embedded archive (SQLite index, blob folder); back up PostgreSQL with pg_dump and S3 with the bucket's versioning or replication"
        );
    }
    for path in [&config.index.path, &config.store.path] {
        let p = Path::new(path);
        if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
            bail!(
                "custos backup needs the index and blob folder inside the data folder (relative paths in custos.toml); `{path}` is not"
            );
        }
    }
    Ok(())
}

async fn copy_archive(data: &Path, dest: &Path, config: &Config) -> Result<(u64, u64)> {
    let index_path = config.resolve(data, &config.index.path);
    // The blob folder and the live index (wherever in the data folder they
    // are) are not copied as files: the snapshot and the blobs it names are.
    let index = PathBuf::from(&config.index.path);
    let skip: Vec<PathBuf> = ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|end| {
            let mut name = index.clone().into_os_string();
            name.push(end);
            PathBuf::from(name)
        })
        .chain([PathBuf::from(&config.store.path), PathBuf::from(INCOMPLETE)])
        .map(|p| {
            p.components()
                .filter(|c| *c != std::path::Component::CurDir)
                .collect()
        })
        .collect();
    copy_tree(data, dest, &skip).context("copying the data folder's files")?;

    let live = SqliteIndex::open(&index_path)?;
    let snapshot = config.resolve(dest, &config.index.path);
    if let Some(parent) = snapshot.parent() {
        custos_store::create_private_dir(parent)?;
    }
    live.snapshot_into(&snapshot)
        .await
        .context("snapshot of the index")?;
    drop(live);

    let copy = SqliteIndex::open(&snapshot)?;
    let (mut keys, mut after) = (Vec::new(), 0);
    loop {
        let page = copy.stored_after(after, 1000).await?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        keys.extend(page.into_iter().map(|(_, i)| i.blob_key));
    }
    drop(copy);
    let (from, to) = (
        config.resolve(data, &config.store.path),
        config.resolve(dest, &config.store.path),
    );
    let bytes =
        tokio::task::spawn_blocking(move || custos_store::copy_blobs(&from, &to, &keys)).await??;
    let instances = verify(dest).await.map_err(|e| {
        e.context("the copy does not verify, so nothing was kept: an instance deleted or replaced while the backup ran (run it again), or a damaged source (`custos fsck`)")
    })?;
    Ok((instances, bytes))
}

/// Opens `data` as an archive and checks every instance's blob (size and
/// SHA-256); returns how many there are.
async fn verify(data: &Path) -> Result<u64> {
    let config = Config::load(data)?;
    let archive = open_archive_as_is(data, &config).await?;
    let options = FsckOptions {
        repair: false,
        // Unindexed records copied along in a pack segment are not the copy's concern.
        grace: Duration::from_secs(u64::MAX / 4),
    };
    let report = archive.fsck(&options, |_, _| {}).await?;
    if !report.missing.is_empty() || !report.altered.is_empty() {
        bail!(
            "{} instances missing and {} altered in {}",
            report.missing.len(),
            report.altered.len(),
            data.display()
        );
    }
    Ok(report.checked)
}

/// Copies the folder `from` into `to` (files keep their modes, folders are
/// owner-only), leaving out the paths in `skip` (relative to `from`).
fn copy_tree(from: &Path, to: &Path, skip: &[PathBuf]) -> std::io::Result<()> {
    copy_below(from, to, Path::new(""), skip)
}

fn copy_below(from: &Path, to: &Path, at: &Path, skip: &[PathBuf]) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from.join(at))? {
        let entry = entry?;
        let relative = at.join(entry.file_name());
        if skip.contains(&relative) {
            continue;
        }
        let target = to.join(&relative);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            custos_store::create_private_dir(&target)?;
            copy_below(from, to, &relative, skip)?;
        } else if kind.is_file() || (kind.is_symlink() && entry.path().is_file()) {
            // A symlinked file (custos.toml kept in /etc, say) is copied as
            // the file it names: leaving it out made a backup that verified
            // on the defaults and that restore then refused.
            std::fs::copy(entry.path(), &target)?;
        } else if kind.is_symlink() {
            return Err(std::io::Error::other(format!(
                "{} is a symbolic link to a folder, which is not copied",
                entry.path().display()
            )));
        }
    }
    Ok(())
}
