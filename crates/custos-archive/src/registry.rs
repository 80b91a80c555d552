//! Who may do what: registering peers, adding and changing users, creating
//! and revoking tokens. Each use case is written once here and called by both
//! the command line and the admin API, so both validate the same way and
//! refuse the same things. Each returns what it did as one line for the audit
//! trail; the caller records it with its own principal.

use custos_core::credentials::{NewToken, check_password_policy, hash_password, new_token};
use custos_core::peer::{normalize_subject, parse_fingerprint, validate_ae_title};
use custos_core::{Action, HostPattern, Peer, Permissions, Role, User};
use custos_index::{IndexError, Registry};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request is malformed or breaks a rule (HTTP 422, CLI error).
    #[error("{0}")]
    Invalid(String),
    /// It would replace something that exists (HTTP 409).
    #[error("{0}")]
    Exists(String),
    /// What it names does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

type Result<T> = std::result::Result<T, RegistryError>;

fn invalid(e: impl Into<String>) -> RegistryError {
    RegistryError::Invalid(e.into())
}

/// A peer as an administrator describes it.
#[derive(Debug, Clone, Default)]
pub struct PeerSpec {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
    /// Comma-separated DICOM rights (echo, store, find, get, move).
    pub allow: String,
    pub tls_required: bool,
    /// Certificate pins: `None` keeps what a peer of that AE title already
    /// has, `Some("")` removes it.
    pub cert_fingerprint: Option<String>,
    pub cert_subject: Option<String>,
    /// PEM CA bundle the peer's client certificates chain to.
    pub ca_pem: Option<String>,
}

/// Registers (or re-registers) a peer. Returns it and the audit line.
pub async fn register_peer(index: &dyn Registry, spec: PeerSpec) -> Result<(Peer, String)> {
    let ae_title = validate_ae_title(&spec.ae_title).map_err(invalid)?;
    let host: HostPattern = spec.host.parse().map_err(invalid)?;
    let permissions: Permissions = spec.allow.parse().map_err(invalid)?;
    if let Some(a) = permissions.actions().find(|a| !Action::DIMSE.contains(a)) {
        return Err(invalid(format!(
            "`{a}` is a user right, not a DICOM one; a peer may echo, store, find, get, move"
        )));
    }
    if spec.port == 0 {
        return Err(invalid("the port must be 1-65535"));
    }
    // A pin not given is kept (editing a peer's port must not drop its
    // certificate pinning); given empty, it is removed.
    let old = index.peer(&ae_title).await?;
    let cert_sha256 = match spec.cert_fingerprint.as_deref().map(str::trim) {
        Some("") => String::new(),
        Some(f) => parse_fingerprint(f).map_err(invalid)?,
        None => old
            .as_ref()
            .map(|p| p.cert_sha256.clone())
            .unwrap_or_default(),
    };
    let cert_subject = match spec.cert_subject.as_deref().map(str::trim) {
        Some("") => String::new(),
        Some(d) => normalize_subject(d).map_err(invalid)?,
        None => old
            .as_ref()
            .map(|p| p.cert_subject.clone())
            .unwrap_or_default(),
    };
    let ca_pem = match spec.ca_pem {
        Some(pem) if pem.trim().is_empty() => String::new(),
        Some(pem) => {
            custos_tls::client_trust::parse_bundle(&pem)
                .map_err(|e| invalid(format!("the CA bundle: {e:#}")))?;
            pem
        }
        None => old.map(|p| p.ca_pem).unwrap_or_default(),
    };
    let peer = Peer {
        ae_title,
        host,
        port: spec.port,
        permissions,
        tls_required: spec.tls_required,
        cert_sha256,
        cert_subject,
        ca_pem,
    }
    .with_pins_requiring_tls();
    index.put_peer(peer.clone()).await?;
    let line = format!(
        "peer {} registered: {} port {}, rights {}{}",
        peer.ae_title,
        peer.host,
        peer.port,
        peer.permissions,
        if peer.tls_required { ", TLS" } else { "" }
    );
    Ok((peer, line))
}

pub async fn remove_peer(index: &dyn Registry, ae_title: &str) -> Result<String> {
    let ae = ae_title.trim();
    if !index.remove_peer(ae).await? {
        return Err(RegistryError::NotFound(format!("no peer named {ae}")));
    }
    Ok(format!("peer {ae} removed"))
}

/// Hashes a password on a blocking thread after the policy check.
async fn hashed(name: &str, password: String) -> Result<String> {
    check_password_policy(name, &password).map_err(invalid)?;
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| invalid(e.to_string()))?
        .map_err(invalid)
}

/// Adds a user; refuses a name that exists (change it with [`update_user`]).
pub async fn add_user(
    index: &dyn Registry,
    name: &str,
    role: &str,
    password: String,
) -> Result<(User, String)> {
    let name = custos_core::auth::validate_user_name(name).map_err(invalid)?;
    let role: Role = role.parse().map_err(invalid)?;
    let user = User {
        password_hash: hashed(&name, password).await?,
        name: name.clone(),
        role,
        disabled: false,
        password_changed: now_unix(),
    };
    if !index.insert_user(user.clone()).await? {
        return Err(RegistryError::Exists(format!(
            "a user named {name} exists; change it explicitly (custos user passwd, PUT /api/users/{name})"
        )));
    }
    Ok((user, format!("user {name} added with role {role}")))
}

/// What an administrator changes about an existing user.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub role: Option<String>,
    pub password: Option<String>,
    pub disabled: Option<bool>,
}

pub async fn update_user(
    index: &dyn Registry,
    name: &str,
    change: UserChange,
) -> Result<(User, String)> {
    // Hashed first (argon2 takes a while): the row is read and written back
    // right after, so a change made meanwhile (an admin disabling the user)
    // is not overwritten by a stale copy.
    let hash = match change.password {
        Some(password) => Some(hashed(name, password).await?),
        None => None,
    };
    let mut user = index
        .user(name)
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("no user named {name}")))?;
    let mut what = Vec::new();
    if let Some(role) = change.role {
        user.role = role.parse().map_err(invalid)?;
        what.push(format!("role {}", user.role));
    }
    if let Some(hash) = hash {
        user.password_hash = hash;
        user.password_changed = now_unix();
        what.push("password changed".to_string());
    }
    if let Some(disabled) = change.disabled {
        user.disabled = disabled;
        what.push(if disabled { "disabled" } else { "enabled" }.to_string());
    }
    if what.is_empty() {
        return Err(invalid(
            "nothing to change: give a role, a password or disabled",
        ));
    }
    index.put_user(user.clone()).await?;
    Ok((user, format!("user {name}: {}", what.join(", "))))
}

pub async fn remove_user(index: &dyn Registry, name: &str) -> Result<String> {
    if !index.remove_user(name).await? {
        return Err(RegistryError::NotFound(format!("no user named {name}")));
    }
    Ok(format!("user {name} removed (with its tokens)"))
}

/// Longest token lifetime: ten years.
pub const MAX_TOKEN_SECONDS: i64 = 3650 * 86_400;

/// Creates a token for an existing user; its text is in the result, once.
pub async fn create_token(
    index: &dyn Registry,
    user: &str,
    read_only: bool,
    lifetime_seconds: i64,
) -> Result<(NewToken, String)> {
    if !(1..=MAX_TOKEN_SECONDS).contains(&lifetime_seconds) {
        return Err(invalid("a token lives from one second to ten years"));
    }
    if index.user(user).await?.is_none() {
        return Err(RegistryError::NotFound(format!("no user named {user}")));
    }
    let now = now_unix();
    let t = new_token(user, read_only, now, now + lifetime_seconds);
    index.put_token(t.token.clone()).await?;
    let line = format!(
        "token {} created for {user}{}",
        t.token.id,
        if read_only { " (read-only)" } else { "" }
    );
    Ok((t, line))
}

pub async fn revoke_token(index: &dyn Registry, id: &str) -> Result<String> {
    if !index.revoke_token(id).await? {
        return Err(RegistryError::NotFound(format!("no token with id {id}")));
    }
    Ok(format!("token {id} revoked"))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
