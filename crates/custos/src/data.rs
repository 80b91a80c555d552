//! The data folder: first-run set-up and opening the archive it holds.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use custos_archive::{Archive, DuplicatePolicy};
use custos_index::SqliteIndex;
use custos_store::FsStore;

use crate::config::{Config, DEFAULT_FILE};

/// Creates the data folder (mode 0700), a commented `custos.toml`, the index and
/// the blob folder. Returns false if the folder was already initialised.
pub fn init(data: &Path) -> Result<bool> {
    let config_path = data.join("custos.toml");
    let fresh = !config_path.exists();
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", data.display()))?;
    }
    if fresh {
        std::fs::write(&config_path, DEFAULT_FILE)
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    let config = Config::load(data)?;
    SqliteIndex::open(config.resolve(data, &config.index.path))?;
    FsStore::open(config.resolve(data, &config.store.path))?;
    Ok(fresh)
}

/// Opens the index alone (peer commands).
pub fn open_index(data: &Path, config: &Config) -> Result<SqliteIndex> {
    let path = config.resolve(data, &config.index.path);
    if !path.exists() {
        anyhow::bail!(
            "{} is not initialised; run `custos init --data {}` first",
            data.display(),
            data.display()
        );
    }
    Ok(SqliteIndex::open(path)?)
}

pub fn open_archive(data: &Path, config: &Config) -> Result<Arc<Archive>> {
    let index = open_index(data, config)?;
    let store = FsStore::open(config.resolve(data, &config.store.path))?;
    let duplicates: DuplicatePolicy = config
        .dicom
        .duplicates
        .parse()
        .map_err(anyhow::Error::msg)?;
    Ok(Arc::new(Archive::new(
        Arc::new(index),
        Arc::new(store),
        duplicates,
    )))
}
