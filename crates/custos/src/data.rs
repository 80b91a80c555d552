//! The data folder: first-run set-up and opening the archive it holds.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use custos_archive::{Archive, DuplicatePolicy};
use custos_index::{Index, PgIndex, SqliteIndex};
use custos_store::{BlobStore, FsStore, S3Store};

use crate::config::{Config, DEFAULT_FILE, redact_url};

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
    if config.index.url.is_empty() {
        SqliteIndex::open(config.resolve(data, &config.index.path))?;
    }
    if config.store.url.is_empty() {
        FsStore::open(config.resolve(data, &config.store.path))?;
    }
    if config.http.cert.is_empty() {
        custos_tls::ensure_local_ca(data).context("creating the local CA")?;
    }
    Ok(fresh)
}

/// Prints the first admin's password, the only time it is ever shown.
pub fn announce_admin(password: &str) {
    println!(
        "Created user admin with password {password}\n  (shown once, stored only as an argon2id hash; change it with `custos user passwd admin`)"
    );
}

/// Opens the configured index: PostgreSQL when `[index] url` is set (migrating
/// it), else the data folder's SQLite file.
pub async fn open_index(data: &Path, config: &Config) -> Result<Arc<dyn Index>> {
    if !config.index.url.is_empty() {
        let index = PgIndex::connect(&config.index.url)
            .await
            .with_context(|| format!("opening the index at {}", redact_url(&config.index.url)))?;
        return Ok(Arc::new(index));
    }
    let path = config.resolve(data, &config.index.path);
    if !path.exists() {
        anyhow::bail!(
            "{} is not initialised; run `custos init --data {}` first",
            data.display(),
            data.display()
        );
    }
    Ok(Arc::new(SqliteIndex::open(path)?))
}

pub async fn open_archive(data: &Path, config: &Config) -> Result<Arc<Archive>> {
    let index = open_index(data, config).await?;
    let store: Arc<dyn BlobStore> = if config.store.url.is_empty() {
        Arc::new(FsStore::open(config.resolve(data, &config.store.path))?)
    } else {
        let s = &config.store;
        let credentials = (!s.access_key_id.is_empty())
            .then(|| (s.access_key_id.clone(), s.secret_access_key.clone()));
        Arc::new(
            S3Store::open(&s.url, credentials, data.join("s3-staging"))
                .context("opening the S3 store")?,
        )
    };
    let duplicates: DuplicatePolicy = config
        .dicom
        .duplicates
        .parse()
        .map_err(anyhow::Error::msg)?;
    Ok(Arc::new(Archive::new(index, store, duplicates)))
}
