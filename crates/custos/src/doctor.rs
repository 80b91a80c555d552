//! `custos doctor`: this server's configuration and state checked for what
//! `custos probe` would find from outside, and more: listeners beyond loopback
//! without TLS, peers open to any address or with rights they never use, old
//! passwords, an audit trail that does not verify, certificates near expiry,
//! a data folder others can read, a disk nearly full.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

use custos_core::{Action, HostPattern};
use custos_probe::{Finding, Severity};

use crate::config::Config;
use crate::data::open_index;

fn finding(
    id: &'static str,
    severity: Severity,
    title: String,
    evidence: String,
    fix: &'static str,
) -> Finding {
    Finding {
        id,
        severity,
        title,
        evidence,
        fix,
    }
}

fn beyond_loopback(listen: &str) -> bool {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) => !a.ip().is_loopback(),
        Err(_) => true,
    }
}

pub async fn run(data: &Path, as_json: bool) -> Result<bool> {
    let config = Config::load(data)?;
    let f = findings(data, &config).await?;
    Ok(crate::probe_cmd::report(
        &format!("custos doctor {}", data.display()),
        json!({ "data": data.display().to_string() }),
        &f,
        as_json,
    ))
}

/// Every check, on the index the configuration names (opened here, as the
/// CLI does beside a running server).
pub async fn findings(data: &Path, config: &Config) -> Result<Vec<Finding>> {
    let index = open_index(data, config).await?;
    let files = custos_tls::TlsFiles::in_data(data);
    let mut f = Vec::new();
    listeners(&mut f, config);
    peers(&mut f, index.as_ref()).await?;
    users(&mut f, index.as_ref()).await?;
    audit_trail(&mut f, data, index.as_ref()).await;
    certificates(&mut f, &files, data, config);
    permissions(&mut f, data, config, &files);
    disk(&mut f, data);
    store_answers(&mut f, data, config).await;
    Ok(f)
}

/// An S3 store answers: asked for an object that does not exist, it says
/// "not found" (a service that is down, or refuses the credentials, does not;
/// every store fails with A700/503 until it does). A filesystem store is the
/// data disk's (checked above). Opened with its own staging folder, so that
/// a read-only check writes nothing into the serving node's.
async fn store_answers(f: &mut Vec<Finding>, data: &Path, config: &Config) {
    if config.store.url.is_empty() {
        return;
    }
    let staging = std::env::temp_dir().join(format!("custos-doctor-{}", std::process::id()));
    let answer = match crate::data::open_store(data, config, staging.clone()) {
        Ok(store) => match store.open(&"0".repeat(32)).await {
            Ok(_) | Err(custos_store::StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(format!("{e:#}")),
    };
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(why) = answer {
        f.push(finding(
            "store-unreachable",
            Severity::High,
            "the blob store does not answer".into(),
            why,
            "check the store's service, address and credentials; stores are refused until it answers",
        ));
    }
}

/// The status page's checks: `doctor`'s findings and the data disk's free share.
pub struct Checkup {
    pub data: std::path::PathBuf,
    pub config: Config,
}

impl custos_web::Checkup for Checkup {
    fn run(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send + '_>,
    > {
        Box::pin(async move {
            let found = findings(&self.data, &self.config)
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(json!({
                "findings": crate::probe_cmd::findings_json(&found),
                "disk_free_percent": free_percent(&self.data),
            }))
        })
    }
}

/// Plain listeners reachable beyond loopback.
fn listeners(f: &mut Vec<Finding>, config: &Config) {
    if config.dicom.plaintext && beyond_loopback(&config.dicom.listen) {
        f.push(finding("dicom-plain-beyond-loopback", Severity::High,
            "the plain DICOM listener is reachable beyond loopback".into(),
            format!("[dicom] listen = {}", config.dicom.listen),
            "use the TLS listener for peers outside this host ([dicom] plaintext = false), or bind the plain one to the imaging network only"));
    }
    if config.http.plaintext && beyond_loopback(&config.http.listen) {
        f.push(finding("http-plain-beyond-loopback", Severity::High,
            "plain HTTP is served beyond loopback".into(),
            format!("[http] listen = {}, plaintext = true", config.http.listen),
            "serve HTTPS ([http] plaintext = false) or bind plain HTTP to loopback behind a TLS proxy"));
    }
}

/// Peers open to wide networks, with every right and no TLS, with rights
/// the audit trail shows unused, with CA bundles near expiry.
async fn peers(f: &mut Vec<Finding>, index: &dyn custos_index::Index) -> Result<()> {
    let used = rights_used(index).await;
    for p in index.peers().await? {
        let open = match &p.host {
            HostPattern::Cidr(_, len) => *len == 0,
            _ => false,
        };
        if open {
            f.push(finding(
                "peer-any-address",
                Severity::High,
                format!("peer {} may connect from any address", p.ae_title),
                format!("--host {}", p.host),
                "restrict the peer to its address or subnet",
            ));
        } else if matches!(&p.host, HostPattern::Cidr(_, len) if *len < 16) {
            f.push(finding(
                "peer-wide-network",
                Severity::Medium,
                format!("peer {} may connect from a large network", p.ae_title),
                format!("--host {}", p.host),
                "restrict the peer to its address or subnet",
            ));
        }
        let all = [Action::Store, Action::Find, Action::Get, Action::Move]
            .iter()
            .all(|a| p.permissions.allows(*a));
        if all && !p.tls_required {
            f.push(finding(
                "peer-all-rights-plain",
                Severity::Medium,
                format!(
                    "peer {} may store, query and retrieve without TLS",
                    p.ae_title
                ),
                format!("--allow {}", p.permissions),
                "grant only what the device does; require TLS for workstations",
            ));
        }
        if !p.ca_pem.is_empty() {
            f.extend(peer_bundle_findings(&p));
        }
        if let Some(used) = &used {
            let unused: Vec<&str> = p
                .permissions
                .actions()
                .filter(|a| *a != Action::Echo && !used.contains(&(p.ae_title.clone(), *a)))
                .map(|a| a.name())
                .collect();
            if !unused.is_empty() {
                f.push(finding(
                    "peer-unused-rights",
                    Severity::Low,
                    format!("peer {} has rights it has not used", p.ae_title),
                    format!(
                        "never used according to the audit trail: {}",
                        unused.join(", ")
                    ),
                    "remove rights the device does not need (custos peer add ... --allow)",
                ));
            }
        }
    }
    Ok(())
}

/// Admins who never administer, passwords older than a year.
async fn users(f: &mut Vec<Finding>, index: &dyn custos_index::Index) -> Result<()> {
    let now = custos_web::auth::now_unix();
    let admin_acts = admin_actions_by_user(index).await;
    for u in index.users().await? {
        if let Some(acted) = &admin_acts
            && u.role == custos_core::Role::Admin
            && !u.disabled
            && !acted.contains(&u.name)
        {
            f.push(finding(
                "admin-unused",
                Severity::Low,
                format!("user {} has admin rights it has not used", u.name),
                "no change, deletion or audit read by this user in the audit trail".into(),
                "give the user a narrower role, or disable the account",
            ));
        }
        if !u.disabled && now - u.password_changed > 365 * 86_400 {
            f.push(finding(
                "user-old-password",
                Severity::Low,
                format!(
                    "user {} has not changed the password in over a year",
                    u.name
                ),
                format!(
                    "last change {} days ago",
                    (now - u.password_changed) / 86_400
                ),
                "custos user passwd NAME, or disable unused accounts",
            ));
        }
    }
    Ok(())
}

/// An audit trail that does not verify (or cannot be read).
async fn audit_trail(f: &mut Vec<Finding>, data: &Path, index: &dyn custos_index::Index) {
    let checked = match custos_archive::audit::AuditTrail::open(data, index).await {
        Ok(trail) => trail.verify(index).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match checked.map(|c| c.broken) {
        Ok(None) => {}
        Ok(Some(why)) => f.push(finding(
            "audit-broken",
            Severity::Critical,
            "the audit trail does not verify".into(),
            why,
            "investigate: someone altered or removed audit records (custos audit verify)",
        )),
        Err(e) => f.push(finding(
            "audit-unreadable",
            Severity::High,
            "the audit trail cannot be read".into(),
            e,
            "check the index",
        )),
    }
    reserve(f, data).await;
}

/// Access records the index could not take wait in the node's audit reserve
/// (served meanwhile): the server appends them when the index takes records
/// again, or at its next start. While any wait, the trail is not complete;
/// a full reserve refuses reads.
async fn reserve(f: &mut Vec<Finding>, data: &Path) {
    use custos_archive::audit_reserve::{RESERVE_FILE, waiting};
    // Up to 8 MiB read and checked: off the async threads.
    let path = data.join(RESERVE_FILE);
    let read = tokio::task::spawn_blocking(move || waiting(&path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match read {
        Ok(Some(w)) if w.records > 0 => {
            let full = w.used * 100 / w.size.max(1);
            f.push(finding(
                "audit-reserve-waiting",
                if full >= 50 {
                    Severity::Critical
                } else {
                    Severity::High
                },
                "access records wait in the audit reserve: the index has not taken them".into(),
                format!(
                    "{} record(s), {full}% of the reserve ({} of {} bytes); reads are refused when it is full",
                    w.records, w.used, w.size
                ),
                "make the index writable again (disk space, the database reachable, a lock held elsewhere); the server appends them then, or at its next start",
            ))
        }
        Ok(_) => {}
        Err(e) => f.push(finding(
            "audit-reserve-unreadable",
            Severity::High,
            "the audit reserve cannot be read".into(),
            e.to_string(),
            "check the data folder's disk and permissions",
        )),
    }
}

/// The certificates in use near or past expiry: the data folder's server
/// certificate and CA, and those configured instead (`[http] cert`,
/// `[dicom] tls_cert`).
fn certificates(f: &mut Vec<Finding>, files: &custos_tls::TlsFiles, data: &Path, config: &Config) {
    let configured = [
        ("HTTPS certificate", &config.http.cert),
        ("DICOM TLS certificate", &config.dicom.tls_cert),
    ]
    .into_iter()
    .filter(|(_, p)| !p.is_empty())
    .map(|(what, p)| (what, config.resolve(data, p)));
    for (what, path) in [
        ("server certificate", files.server_cert.clone()),
        ("local CA", files.ca_cert.clone()),
    ]
    .into_iter()
    .chain(configured)
    {
        if let Ok(days) = custos_tls::days_until_expiry(&path) {
            if days < 0 {
                f.push(finding(
                    "cert-expired",
                    Severity::High,
                    format!("the {what} has expired"),
                    path.display().to_string(),
                    "renew it (remove tls/ and restart to make new ones)",
                ));
            } else if days < 30 {
                f.push(finding(
                    "cert-expiring",
                    Severity::Medium,
                    format!("the {what} expires in {days} days"),
                    path.display().to_string(),
                    "renew it before it expires",
                ));
            }
        }
    }
}

/// Patient data, keys and the first password readable by others.
fn permissions(f: &mut Vec<Finding>, data: &Path, config: &Config, files: &custos_tls::TlsFiles) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(data) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                f.push(finding(
                    "data-folder-open",
                    Severity::High,
                    "the data folder can be read by other users".into(),
                    format!("{} has mode {mode:o}", data.display()),
                    "chmod 700 the data folder",
                ));
            }
        }
        // The index and the blobs hold patient data wherever they are kept.
        let mut private = Vec::new();
        if config.index.url.is_empty() {
            private.push((config.resolve(data, &config.index.path), "the SQLite index"));
        }
        if config.store.url.is_empty() {
            private.push((config.resolve(data, &config.store.path), "the blob folder"));
        }
        for (path, what) in private {
            if let Ok(m) = std::fs::metadata(&path)
                && m.permissions().mode() & 0o077 != 0
            {
                f.push(finding(
                    "patient-data-open",
                    Severity::High,
                    format!("{what} can be read by other users"),
                    format!(
                        "{} has mode {:o}",
                        path.display(),
                        m.permissions().mode() & 0o777
                    ),
                    if m.is_dir() {
                        "chmod -R go-rwx the folder"
                    } else {
                        "chmod 600 the file"
                    },
                ));
            }
        }
        let initial = data.join(crate::data::INITIAL_PASSWORD_FILE);
        if initial.exists() {
            f.push(finding(
                "initial-password-left",
                Severity::Medium,
                "the first admin password is still on disk".into(),
                initial.display().to_string(),
                "change it with `custos user passwd admin` (which removes the file)",
            ));
        }
        // The audit chain's key too: whoever reads it can rewrite the trail.
        let audit_key = data.join(custos_archive::audit::KEY_FILE);
        let deid_key = data.join(custos_archive::deidentify::KEY_FILE);
        let secrets_key = data.join(custos_tls::sealed::KEY_FILE);
        let configured: Vec<PathBuf> = [&config.http.key, &config.dicom.tls_key]
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| config.resolve(data, p))
            .collect();
        for key in [
            &files.ca_key,
            &files.server_key,
            &audit_key,
            &deid_key,
            &secrets_key,
        ]
        .into_iter()
        .chain(&configured)
        {
            if let Ok(m) = std::fs::metadata(key)
                && m.permissions().mode() & 0o077 != 0
            {
                f.push(finding(
                    "key-file-open",
                    Severity::High,
                    "a private key can be read by other users".into(),
                    key.display().to_string(),
                    "chmod 600 the key",
                ));
            }
        }
        // The configuration may hold the S3 secret or the database's
        // password (made 0600 since 2026-12; older data folders have 0644).
        let config_file = data.join(crate::config::CONFIG_FILE);
        if let Ok(m) = std::fs::metadata(&config_file)
            && m.permissions().mode() & 0o077 != 0
        {
            f.push(finding(
                "config-file-open",
                Severity::Medium,
                "the configuration, which may hold secrets, can be read by other users".into(),
                config_file.display().to_string(),
                "chmod 600 custos.toml",
            ));
        }
    }
}

/// The data disk filling up.
fn disk(f: &mut Vec<Finding>, data: &Path) {
    if let Some(pct) = free_percent(data) {
        if pct < 10 {
            f.push(finding(
                "disk-nearly-full",
                Severity::High,
                "the data disk is nearly full".into(),
                format!("{pct}% free"),
                "add space before stores start failing",
            ));
        } else if pct < 20 {
            f.push(finding(
                "disk-filling",
                Severity::Medium,
                "the data disk is filling up".into(),
                format!("{pct}% free"),
                "plan more space",
            ));
        }
    }
}

/// Visits every audit record body; `None` (nothing visited) while the trail
/// is under a week old, too young to say what is unused.
async fn scan_trail(
    index: &dyn custos_index::Index,
    mut visit: impl FnMut(&serde_json::Value),
) -> Option<()> {
    let first = index.audit_after(0, 1).await.ok()?.into_iter().next()?;
    let started =
        time::OffsetDateTime::parse(&first.time, &time::format_description::well_known::Rfc3339)
            .ok()?;
    if (time::OffsetDateTime::now_utc() - started).whole_days() < 7 {
        return None;
    }
    let mut after = 0;
    loop {
        let page = index.audit_after(after, 10_000).await.ok()?;
        let Some(last) = page.last() else {
            return Some(());
        };
        for r in &page {
            visit(&serde_json::from_str(&r.body).unwrap_or_default());
        }
        after = last.seq;
        if page.len() < 10_000 {
            return Some(());
        }
    }
}

/// (peer, action) pairs the audit trail shows in use.
async fn rights_used(index: &dyn custos_index::Index) -> Option<HashSet<(String, Action)>> {
    let mut used = HashSet::new();
    scan_trail(index, |b| {
        let peer = b["peer"].as_str().unwrap_or_default().to_string();
        let detail = b["detail"].as_str().unwrap_or_default();
        for (prefix, a) in [
            ("C-STORE", Action::Store),
            ("C-FIND", Action::Find),
            ("C-GET", Action::Get),
            ("C-MOVE", Action::Move),
        ] {
            if detail.starts_with(prefix) {
                used.insert((peer.clone(), a));
            }
        }
    })
    .await?;
    Some(used)
}

/// Users who changed configuration, deleted or read the trail (admin work).
async fn admin_actions_by_user(index: &dyn custos_index::Index) -> Option<HashSet<String>> {
    let mut users = HashSet::new();
    scan_trail(index, |b| {
        if matches!(b["event"]["code"].as_u64(), Some(110113 | 110105 | 110101)) {
            users.insert(b["user"].as_str().unwrap_or_default().to_string());
        }
    })
    .await?;
    Some(users)
}

fn free_percent(data: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-P")
        .arg(data)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let used = line
        .split_whitespace()
        .nth(4)?
        .trim_end_matches('%')
        .parse::<u64>()
        .ok()?;
    Some(100 - used.min(100))
}

/// A peer's own CA bundle: unreadable, expired or expiring certificates (its
/// client certificates stop verifying when their CA expires).
fn peer_bundle_findings(p: &custos_core::Peer) -> Vec<Finding> {
    let certs = match custos_tls::client_trust::parse_bundle(&p.ca_pem) {
        Ok(c) => c,
        Err(e) => {
            return vec![finding(
                "peer-ca-unreadable",
                Severity::High,
                format!("the CA bundle of peer {} cannot be read", p.ae_title),
                e.to_string(),
                "register the peer again with a valid --ca-file",
            )];
        }
    };
    let soonest = certs
        .iter()
        .filter_map(|c| custos_tls::cert_facts(c.as_ref()))
        .map(|(days, _)| days)
        .min();
    match soonest {
        Some(days) if days < 0 => vec![finding(
            "peer-ca-expired",
            Severity::High,
            format!("a CA certificate of peer {} has expired", p.ae_title),
            format!("expired {} days ago", -days),
            "register the peer's renewed CA (custos peer add ... --ca-file)",
        )],
        Some(days) if days < 30 => vec![finding(
            "peer-ca-expiring",
            Severity::Medium,
            format!(
                "a CA certificate of peer {} expires in {days} days",
                p.ae_title
            ),
            format!("{days} days left"),
            "register the peer's renewed CA before it expires",
        )],
        _ => Vec::new(),
    }
}
