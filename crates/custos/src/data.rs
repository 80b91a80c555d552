//! The data folder: first-run set-up and opening the archive it holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use custos_archive::{Archive, DuplicatePolicy};
use custos_index::{Index, PgIndex, SqliteIndex};
use custos_store::{BlobStore, FsStore, S3Store};

use crate::config::{Config, DEFAULT_FILE, redact_url};

/// Creates the data folder (mode 0700), a commented `custos.toml`, the index and
/// the blob folder. Returns false if the folder was already initialised.
pub fn init(data: &Path) -> Result<bool> {
    let config_path = data.join(crate::config::CONFIG_FILE);
    let fresh = !config_path.exists();
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", data.display()))?;
    }
    if fresh {
        // 0600: it may come to hold the S3 secret or the database password.
        custos_tls::write_private(&config_path, DEFAULT_FILE)
            .with_context(|| format!("writing {}", config_path.display()))?;
    }
    let config = Config::load(data)?;
    if config.index.url.is_empty() {
        SqliteIndex::open(config.resolve(data, &config.index.path))?;
    }
    if config.store.url.is_empty() {
        FsStore::open_with(
            config.resolve(data, &config.store.path),
            config.store.pack_limit_kib as usize * 1024,
        )?;
    }
    if config.http.cert.is_empty() {
        custos_tls::ensure_local_ca(data).context("creating the local CA")?;
    }
    Ok(fresh)
}

/// Where the first admin's password is left for the operator.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// Hands over the first admin's password: written once to a 0600 file in the
/// data folder, and shown on stdout only when stdout is a terminal (under
/// systemd stdout is the journal, which keeps it for anyone who reads logs).
pub fn announce_admin(data: &Path, password: &str) -> Result<()> {
    use std::io::{IsTerminal, Write};
    let path = data.join(INITIAL_PASSWORD_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{password}\n").as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    if std::io::stdout().is_terminal() {
        println!(
            "Created user admin with password {password}\n  (also in {}; stored only as an argon2id hash; change it with `custos user passwd admin`, then delete the file)",
            path.display()
        );
    } else {
        println!(
            "Created user admin; its password is in {} (readable by this account only): read it, change it with `custos user passwd admin`, then delete the file",
            path.display()
        );
    }
    Ok(())
}

/// The file `custos backup` and `custos restore` put in the folder they fill
/// first and remove last: a folder holding it is not a whole archive.
pub const INCOMPLETE: &str = ".custos-incomplete";

/// Refuses a data folder an interrupted backup or restore left.
pub fn refuse_incomplete(data: &Path) -> Result<()> {
    if data.join(INCOMPLETE).exists() {
        anyhow::bail!(
            "{} was left by an interrupted backup or restore ({INCOMPLETE} is in it): it is not a whole archive; remove the folder and run that again",
            data.display()
        );
    }
    Ok(())
}

/// Opens the configured index: PostgreSQL when `[index] url` is set (migrating
/// it), else the data folder's SQLite file.
pub async fn open_index(data: &Path, config: &Config) -> Result<Arc<dyn Index>> {
    refuse_incomplete(data)?;
    open_index_as_is(data, config).await
}

async fn open_index_as_is(data: &Path, config: &Config) -> Result<Arc<dyn Index>> {
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

/// The blob store the configuration names. An S3 store stages uploads in
/// `s3_staging` (emptied on opening: never the serving node's folder for a
/// command that runs beside it).
pub fn open_store(data: &Path, config: &Config, s3_staging: PathBuf) -> Result<Arc<dyn BlobStore>> {
    Ok(if config.store.url.is_empty() {
        Arc::new(FsStore::open_with(
            config.resolve(data, &config.store.path),
            config.store.pack_limit_kib as usize * 1024,
        )?)
    } else {
        let s = &config.store;
        let credentials = (!s.access_key_id.is_empty())
            .then(|| (s.access_key_id.clone(), s.secret_access_key.clone()));
        Arc::new(S3Store::open(&s.url, credentials, s3_staging).context("opening the S3 store")?)
    })
}

/// The archive with its audit trail writing, for commands whose use cases
/// record events themselves (flush before exiting: `Archive::flush_audit`).
pub async fn open_audited_archive(data: &Path, config: &Config) -> Result<Arc<Archive>> {
    let archive = open_archive(data, config).await?;
    let trail = custos_archive::audit::AuditTrail::open(data, archive.audit_log().as_ref())
        .await
        .context("opening the audit trail")?;
    archive.start_audit(trail);
    Ok(archive)
}

pub async fn open_archive(data: &Path, config: &Config) -> Result<Arc<Archive>> {
    refuse_incomplete(data)?;
    open_archive_as_is(data, config).await
}

/// [`open_archive`] of a folder still being filled (the check of a backup
/// or restore before it is called whole).
pub async fn open_archive_as_is(data: &Path, config: &Config) -> Result<Arc<Archive>> {
    let index = open_index_as_is(data, config).await?;
    let store = open_store(data, config, data.join("s3-staging"))?;
    let duplicates: DuplicatePolicy = config
        .dicom
        .duplicates
        .parse()
        .map_err(anyhow::Error::msg)?;
    let archive = Arc::new(Archive::new(index, store, duplicates));
    archive.set_web_destinations(config.dicomweb_destinations.clone());
    archive.set_webhook_hosts(config.webhooks.hosts.clone());
    for p in &config.retention.policies {
        p.check().map_err(anyhow::Error::msg)?;
    }
    archive.set_retention(custos_archive::retention::RetentionConfig {
        policies: config.retention.policies.clone(),
        quiet_secs: config.retention.quiet_seconds.min(i64::MAX as u64) as i64,
    });
    let safe_private = config
        .deidentify
        .safe_private
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)?;
    let key = custos_archive::deidentify::load_key(data)
        .with_context(|| format!("the de-identification key in {}", data.display()))?;
    archive.set_deidentification(key, safe_private);
    archive.set_secret_box(
        custos_tls::sealed::SecretBox::open_or_create(data).context("the secrets key")?,
    );
    Ok(archive)
}
