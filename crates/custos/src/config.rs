//! The configuration file (`DATA/custos.toml`), its defaults, and environment
//! overrides: every key `[section] key` can be set by `CUSTOS_SECTION_KEY`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// A study is never deleted until this many seconds after its last
    /// instance arrived.
    pub quiet_seconds: u64,
    /// The server runs a pass this often (when a policy exists).
    pub interval_minutes: u64,
    /// Finished forwarding jobs are kept this many days (0: for ever).
    pub keep_jobs_days: u32,
    /// Change feed entries are kept this many days (0: for ever).
    pub keep_changes_days: u32,
    #[serde(rename = "policy")]
    pub policies: Vec<custos_core::retention::RetentionPolicy>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            quiet_seconds: 86_400,
            interval_minutes: 60,
            keep_jobs_days: 30,
            keep_changes_days: 90,
            policies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// "study.stable" fires once no instance of the study has arrived for
    /// this many seconds.
    pub stable_seconds: u64,
    /// The only hosts webhooks may be registered for (none by default: an
    /// API token alone cannot send events anywhere).
    pub hosts: Vec<String>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            stable_seconds: 60,
            hosts: Vec::new(),
        }
    }
}

/// `[deidentify]`: what de-identification may keep.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Deidentify {
    /// Private attributes known to carry no identity, kept in de-identified
    /// copies: `"gggg,xxee CREATOR"` (e.g. `"0043,xx39 GEMS_PARM_01"`);
    /// every other private attribute is removed.
    pub safe_private: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub dicom: Dicom,
    pub http: Http,
    pub oidc: OidcSection,
    pub index: IndexConfig,
    pub store: StoreConfig,
    pub audit: AuditSection,
    pub log: Log,
    pub routing: Routing,
    pub webhooks: Webhooks,
    pub retention: Retention,
    pub deidentify: Deidentify,
    /// `[[route]]` rules: which new instances are forwarded where.
    #[serde(rename = "route")]
    pub routes: Vec<custos_core::routing::RouteRule>,
    /// `[[dicomweb_destination]]`: DICOMweb servers rules may forward to.
    #[serde(rename = "dicomweb_destination")]
    pub dicomweb_destinations: Vec<custos_core::routing::WebDestination>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// First retry of a failed forward after this many seconds, doubled
    /// each attempt (at most an hour).
    pub retry_seconds: u64,
    /// Attempts before a forward is failed for good (`custos jobs retry`).
    pub max_attempts: u32,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            retry_seconds: 10,
            max_attempts: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// `tls://host:port` of a syslog collector (RFC 5425); empty: no forwarding.
    pub syslog_url: String,
    /// CA bundle that the collector's certificate must chain to; empty: the data folder's CA.
    pub syslog_ca: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dicom {
    pub listen: String,
    /// DICOM over TLS; empty: off.
    pub tls_listen: String,
    /// The plain (non-TLS) listener; false turns it off.
    pub plaintext: bool,
    /// PEM certificate and key for DICOM TLS; empty: the data folder's.
    pub tls_cert: String,
    pub tls_key: String,
    /// CA bundle that client certificates must chain to; empty: the data folder's CA.
    pub tls_client_ca: String,
    /// DIMSE actions a peer may use only with a verified user identity.
    pub require_user_identity: Vec<String>,
    pub ae_title: String,
    pub max_pdu_length: u32,
    pub max_associations: usize,
    pub max_associations_per_address: usize,
    pub artim_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_find_results: usize,
    pub duplicates: String,
    pub shutdown_grace_secs: u64,
}

impl Default for Dicom {
    fn default() -> Self {
        Dicom {
            listen: "127.0.0.1:11112".into(),
            tls_listen: "127.0.0.1:2762".into(),
            plaintext: true,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
            require_user_identity: Vec::new(),
            ae_title: "CUSTOS".into(),
            max_pdu_length: 262144,
            max_associations: 64,
            max_associations_per_address: 16,
            artim_timeout_secs: 30,
            idle_timeout_secs: 120,
            max_find_results: 10_000,
            duplicates: "keep".into(),
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub listen: String,
    /// Serve plain HTTP instead of HTTPS. Off unless set explicitly.
    pub plaintext: bool,
    /// PEM certificate chain and key; empty = the data folder's generated ones.
    pub cert: String,
    pub key: String,
    pub max_body_mb: u64,
    pub max_header_kb: usize,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// Seconds a connection may carry no bytes before it is closed.
    pub idle_timeout_secs: u64,
    pub max_query_results: usize,
    pub max_stow_parts: usize,
    pub cors_origins: Vec<String>,
    pub lockout_after: u32,
    pub lockout_secs: u64,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:8443".into(),
            plaintext: false,
            cert: String::new(),
            key: String::new(),
            max_body_mb: 4096,
            max_header_kb: 64,
            max_connections: 256,
            max_connections_per_address: 64,
            idle_timeout_secs: 120,
            max_query_results: 10_000,
            max_stow_parts: 10_000,
            cors_origins: Vec::new(),
            lockout_after: 10,
            lockout_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcSection {
    pub issuer: String,
    pub audience: String,
    pub jwks_file: String,
    pub jwks_url: String,
    pub role_claim: String,
    pub username_claim: String,
    /// How often the key set is read again (a removed key stops being trusted).
    pub jwks_refresh_secs: u64,
}

impl Default for OidcSection {
    fn default() -> Self {
        OidcSection {
            issuer: String::new(),
            audience: String::new(),
            jwks_file: String::new(),
            jwks_url: String::new(),
            role_claim: "custos_role".into(),
            username_claim: "preferred_username".into(),
            jwks_refresh_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    pub path: String,
    /// `postgres://user[:password]@host[:port]/db` puts the index on PostgreSQL;
    /// empty means the embedded SQLite file at `path`.
    pub url: String,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            path: "index.sqlite".into(),
            url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub path: String,
    /// `s3://bucket/prefix?endpoint=...&region=...` puts blobs on S3; empty
    /// means the folder at `path`.
    pub url: String,
    /// S3 credentials; when empty, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Instances up to this many KiB are appended to pack files (held in
    /// memory until then); larger ones get a file each. 0: every one a file.
    pub pack_limit_kib: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: "blobs".into(),
            url: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            pack_limit_kib: (custos_store::DEFAULT_PACK_LIMIT / 1024) as u32,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

/// The file written on first run: every default, each explained.
pub const DEFAULT_FILE: &str = r#"# Custos configuration. Every key can also be set by an environment variable
# named after it: [dicom] listen -> CUSTOS_DICOM_LISTEN. Relative paths are
# relative to the data folder. `custos config show` prints what is in effect.

[dicom]
# Where the DICOM (DIMSE) listener binds. Loopback only by default; use
# "0.0.0.0:11112" to accept modalities from the network.
listen = "127.0.0.1:11112"
# DICOM over TLS (PS3.15; 2762 is the registered port): TLS 1.2/1.3 only.
# Peers registered with `--tls required` may only associate here, with a
# client certificate from tls_client_ca (see `custos cert issue`). Empty: off.
tls_listen = "127.0.0.1:2762"
# The plain listener above; false leaves only TLS.
plaintext = true
# PEM certificate and key for DICOM TLS; empty: the data folder's (tls/).
tls_cert = ""
tls_key = ""
# CA bundle client certificates must chain to; empty: tls/ca.pem.
tls_client_ca = ""
# Actions (echo, store, find, get, move, commit, worklist, mpps) that need a user identity on the
# association (PS3.7 user identity negotiation: username + passcode, or a JWT /
# Custos API token). The peer's rights are then narrowed to the user's role.
# E.g. ["find", "get", "move"]: a workstation's radiologist must log in, a
# modality that only stores need not. A refused identity rejects the association.
require_user_identity = []
# Called AE title this server answers to; requests to any other are rejected.
ae_title = "CUSTOS"
# Largest PDU we accept, in bytes (a receive buffer of this size per
# association). 256 KiB lets a sender move a 0.5 MB image in two PDUs: 1.3x
# the single-association ingest rate of 64 KiB here.
max_pdu_length = 262144
# Concurrent associations; more are refused (transient rejection).
max_associations = 64
# Connections one source address may hold at once (so that one host cannot
# take every slot); more are refused (transient rejection).
max_associations_per_address = 16
# Seconds from a new connection to its established association (TLS handshake,
# association request, negotiation).
artim_timeout_secs = 30
# Seconds an association may stay silent before it is aborted.
idle_timeout_secs = 120
# C-FIND answers at most this many matches (then status A700).
max_find_results = 10000
# Same SOP Instance UID with different bytes: "keep" the stored copy (warning
# B006 to the sender), "reject" the new one (failure 0111), or "replace" it.
duplicates = "keep"
# On shutdown, seconds open associations get to finish before being aborted.
shutdown_grace_secs = 10

[http]
# Where DICOMweb (/dicom-web), WADO-URI (/wado) and the admin API (/api) are
# served, over HTTPS. Every request needs a user's password or API token.
listen = "127.0.0.1:8443"
# Plain HTTP instead of HTTPS (only behind a TLS-terminating proxy). Custos
# warns when it serves plain HTTP beyond loopback.
plaintext = false
# PEM certificate chain and private key. Empty: tls/server.pem and
# tls/server.key.pem, made on first run by the data folder's own CA
# (tls/ca.pem, which clients can be told to trust).
cert = ""
key = ""
# Largest request body (a STOW-RS upload) in MiB; uploads are streamed to disk.
max_body_mb = 4096
# Largest request head (request line and headers) in KiB.
max_header_kb = 64
# Concurrent HTTP connections; more are closed.
max_connections = 256
# Connections one source address may hold at once; more are closed.
max_connections_per_address = 64
# Seconds a connection (HTTP/1.1 keep-alive or HTTP/2) may carry no bytes
# before it is closed.
idle_timeout_secs = 120
# QIDO-RS answers at most this many matches per request (use offset for more).
max_query_results = 10000
# A STOW-RS request holds at most this many parts (more: 413).
max_stow_parts = 10000
# Origins allowed to call the API from a browser (CORS), e.g.
# ["https://viewer.example.org"]. Empty: CORS off.
cors_origins = []
# Failed logins (per user name and per source address, over HTTP and DICOM
# user identities alike) before further attempts are refused (HTTP 429, DICOM
# A-ASSOCIATE-RJ) for lockout_secs; after half of them, answers are delayed
# more and more (250 ms doubling to 4 s).
lockout_after = 10
lockout_secs = 300

[oidc]
# Accept `Authorization: Bearer <JWT>` from an OpenID Connect provider. Empty
# issuer: off. The token's signature is checked against the provider's keys
# (jwks_file, or jwks_url — https unless on loopback — read at start, every
# jwks_refresh_secs, and when an unknown key id shows up; a key the provider
# removed stops being trusted), then iss, aud, exp and nbf; role_claim names a
# role (admin, radiologist, uploader, auditor, monitor), as a string or a list.
issuer = ""
audience = ""
jwks_file = ""
jwks_url = ""
role_claim = "custos_role"
username_claim = "preferred_username"
jwks_refresh_secs = 300

[index]
# SQLite database file (the embedded default).
path = "index.sqlite"
# Set to "postgres://user@host:port/db" to keep the index on PostgreSQL instead
# (several Custos nodes can share it). A password here is never printed. Beyond
# loopback add "?sslmode=verify-full&sslrootcert=/path/ca.pem" (the default
# mode there; plain needs sslmode=disable&allow_plaintext=true).
url = ""

[store]
# Folder of stored instances (files named by random keys, not by UIDs).
path = "blobs"
# Set to "s3://bucket/prefix?endpoint=https://s3.example.org&region=eu-west-1"
# to keep instances on S3-compatible storage (plain-http endpoints only on
# loopback or with allow_http=true). Credentials below, or from
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; never printed.
url = ""
access_key_id = ""
secret_access_key = ""
# Folder store: instances up to this size are appended to shared pack files
# (one fsync per batch of concurrent arrivals) instead of a file each. Each
# one is held in memory while it arrives. 0 turns packing off; at most 16384.
pack_limit_kib = 1024

[audit]
# Every access is recorded in the index's tamper-evident trail (`custos audit
# verify|export`). Also forward this node's records to a syslog collector over
# TLS (RFC 5424/5425, DICOM audit messages as IHE ATNA expects), e.g.
# "tls://audit.example.org:6514". Custos presents its DICOM TLS certificate.
syslog_url = ""
# CA bundle the collector's certificate must chain to; empty: tls/ca.pem.
syslog_ca = ""

[log]
# error, warn, info, debug or trace (RUST_LOG overrides). Patient data is never
# logged at info or above.
level = "info"

[routing]
# A forward that fails (destination down, refusing) is tried again after
# retry_seconds, doubling each time up to an hour, max_attempts times in all;
# then it is failed (`custos jobs list --state failed`, `custos jobs retry ID`).
retry_seconds = 10
max_attempts = 10

[webhooks]
# `custos webhook add URL --events ... --secret-stdin` registers a receiver
# (https, or http to loopback only); deliveries are signed (X-Custos-Signature:
# sha256=HMAC-SHA256 of the body with the secret), queued with the change they
# report and retried like forwards. "study.stable" fires once a study has had
# no new instance for stable_seconds. Webhooks may point only at the hosts
# listed here (none by default).
stable_seconds = 60
hosts = []

[retention]
# Studies the policies below name are deleted (index first, then blobs;
# audited as Study Deleted with the policy) by a pass every interval_minutes,
# never before quiet_seconds after their last instance, never if protected
# (`custos study protect UID`). `custos retention run --dry-run` lists them.
# No policy: nothing is ever deleted.
quiet_seconds = 86400
interval_minutes = 60
# The archive's own records: finished forwarding jobs and change-feed entries
# are removed after this many days (0: never). A feed reader that falls
# further behind misses what was removed.
keep_jobs_days = 30
keep_changes_days = 90
# [[retention.policy]]
# name = "ct-after-10-years"
# modality = "CT"            # a pattern; empty: any
# study_age_days = 3650      # by Study Date
# received_age_days = 0      # by last arrival (0: not used)

# Forwarding rules: each new instance matching all of a rule's conditions
# (empty: any; `*` and `?` wildcards, case-insensitive) is queued for the
# rule's destination: a registered peer with a port, sent by C-STORE (TLS if
# the peer requires it), or a [[dicomweb_destination]], sent by STOW-RS. The
# queue is in the index and survives restarts. Conditions: calling_ae,
# modality, sop_class, study_description, and any indexed attribute by keyword
# under [route.attributes] (dates also as ranges). With stable_seconds, the
# whole study goes once no instance of it has arrived for that long.
# [[route]]
# name = "ct-to-ai"
# destination = "AI01"
# modality = "CT"
# study_description = "*HEAD*"
# stable_seconds = 60
# [route.attributes]
# PatientID = "RES-*"
# StudyDate = "20260101-20261231"
#
# A DICOMweb server forwards may go to (https, or http to loopback only);
# credentials are read from files: username + password_file (Basic) or
# token_file (Bearer); ca_file adds trusted PEM roots.
# [[dicomweb_destination]]
# name = "RESEARCH"
# url = "https://research.example.org/dicom-web"
# token_file = "/etc/custos/research.token"

[deidentify]
# Private attributes known to carry no identity, kept in de-identified copies
# ("gggg,xxee CREATOR", e.g. "0043,xx39 GEMS_PARM_01"); every other private
# attribute is removed.
safe_private = []
"#;

/// The configuration file's name in the data folder.
pub const CONFIG_FILE: &str = "custos.toml";

/// Largest `[http] max_header_kb`: 1 MiB of request headers.
const MAX_HEADER_KB: usize = 1024;

impl Config {
    /// Reads `DATA/custos.toml` (defaults where absent) and applies environment overrides.
    pub fn load(data: &Path) -> Result<Config> {
        Self::load_with(data, |k| std::env::var(k).ok())
    }

    /// [`Config::load`] with the `CUSTOS_*` overrides looked up by `get`
    /// instead of in the environment (in-process servers in tests).
    pub fn load_with(data: &Path, get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let path = data.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file: Config =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        let mut value = toml::Value::try_from(&file)?;
        apply_env(&mut value, get)?;
        let config: Config = value.try_into().context("in environment overrides")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        custos_core::peer::validate_ae_title(&self.dicom.ae_title).map_err(anyhow::Error::msg)?;
        self.dicom
            .duplicates
            .parse::<custos_archive::DuplicatePolicy>()
            .map_err(anyhow::Error::msg)?;
        if self.dicom.max_pdu_length < 4096 {
            bail!("[dicom] max_pdu_length must be at least 4096");
        }
        if self.http.max_body_mb == 0 || self.http.max_header_kb == 0 {
            bail!("[http] max_body_mb and max_header_kb must be at least 1");
        }
        // HTTP/2 takes the header limit as a 32-bit number: 4 GiB and more
        // wrapped (to 0 at exactly 4 GiB: every HTTP/2 request refused).
        if self.http.max_header_kb > MAX_HEADER_KB {
            bail!("[http] max_header_kb is at most {MAX_HEADER_KB}");
        }
        for a in &self.dicom.require_user_identity {
            let action: custos_core::Action = a.parse().map_err(anyhow::Error::msg)?;
            if !custos_core::Action::DIMSE.contains(&action) {
                bail!(
                    "[dicom] require_user_identity takes echo, store, find, get, move, commit, worklist, mpps"
                );
            }
        }
        if !self.dicom.plaintext && self.dicom.tls_listen.is_empty() {
            bail!("[dicom] plaintext = false needs a tls_listen address");
        }
        if self.dicom.tls_cert.is_empty() != self.dicom.tls_key.is_empty() {
            bail!("[dicom] tls_cert and tls_key go together: set both or neither");
        }
        if self.http.cert.is_empty() != self.http.key.is_empty() {
            bail!("[http] cert and key go together: set both or neither");
        }
        if self.store.pack_limit_kib > 16384 {
            bail!("[store] pack_limit_kib is at most 16384 (each instance is held in memory)");
        }
        if self.dicom.max_associations == 0 {
            bail!("[dicom] max_associations must be at least 1");
        }
        Ok(())
    }

    pub fn resolve(&self, data: &Path, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            data.join(p)
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn show(&self) -> Result<String> {
        let mut value = toml::Value::try_from(self)?;
        redact(&mut value);
        Ok(toml::to_string_pretty(&value)?)
    }
}

/// Overrides every known key from `CUSTOS_<SECTION>_<KEY>`, parsed as the key's type.
fn apply_env(value: &mut toml::Value, get: impl Fn(&str) -> Option<String>) -> Result<()> {
    let Some(sections) = value.as_table_mut() else {
        return Ok(());
    };
    for (section, table) in sections.iter_mut() {
        let Some(table) = table.as_table_mut() else {
            continue;
        };
        for (key, v) in table.iter_mut() {
            let name = format!("CUSTOS_{}_{}", section.to_uppercase(), key.to_uppercase());
            let Some(raw) = get(&name) else { continue };
            *v = match v {
                toml::Value::String(_) => toml::Value::String(raw),
                toml::Value::Integer(_) => toml::Value::Integer(
                    raw.trim()
                        .parse()
                        .with_context(|| format!("{name} must be an integer"))?,
                ),
                toml::Value::Boolean(_) => toml::Value::Boolean(
                    raw.trim()
                        .parse()
                        .with_context(|| format!("{name} must be true or false"))?,
                ),
                toml::Value::Array(_) => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.into()))
                        .collect(),
                ),
                other => bail!(
                    "{name}: cannot override a {} from the environment",
                    other.type_str()
                ),
            };
        }
    }
    Ok(())
}

fn redact(value: &mut toml::Value) {
    if let Some(t) = value.as_table_mut() {
        for (k, v) in t.iter_mut() {
            let secret = ["password", "secret", "token", "private_key"]
                .iter()
                .any(|s| k.contains(s));
            if secret && v.is_str() {
                *v = toml::Value::String("<redacted>".into());
            } else if let (true, Some(u)) = (k == "url", v.as_str()) {
                *v = toml::Value::String(redact_url(u));
            } else {
                redact(v);
            }
        }
    } else if let Some(items) = value.as_array_mut() {
        // [[dicomweb_destination]], [[route]], ...
        items.iter_mut().for_each(redact);
    }
}

/// `scheme://user:secret@host/...?password=secret&...` ->
/// `scheme://user:<redacted>@host/...?password=<redacted>&...`: the
/// password in the userinfo and in a `password` query parameter (which
/// PostgreSQL's URLs take too).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:<redacted>@{host}")),
            None => out.push_str(rest),
        },
        None => out.push_str(rest),
    }
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_never_shown() {
        for (url, shown) in [
            ("postgres://u:hunter2@db/x", "postgres://u:<redacted>@db/x"),
            (
                "postgres://u@127.0.0.1/x?sslmode=verify-full&password=hunter2",
                "postgres://u@127.0.0.1/x?sslmode=verify-full&password=<redacted>",
            ),
            ("https://a:p@q@h/x?a=1", "https://a:<redacted>@h/x?a=1"),
            ("s3://bucket/prefix", "s3://bucket/prefix"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        let mut c: toml::Value = toml::from_str(
            "[index]\nurl = 'postgres://u@h/x?password=hunter2'\n[[dicomweb_destination]]\nname = 'A'\nurl = 'https://u:hunter2@h/dicom-web'\n",
        )
        .unwrap();
        redact(&mut c);
        assert!(!c.to_string().contains("hunter2"), "{c}");
    }

    #[test]
    fn header_limits_beyond_what_http2_can_take_are_refused() {
        let mut c = Config::default();
        c.http.max_header_kb = MAX_HEADER_KB;
        c.validate().unwrap();
        for kb in [MAX_HEADER_KB + 1, 4 << 20] {
            c.http.max_header_kb = kb;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("max_header_kb is at most"), "{e}");
        }
    }

    #[test]
    fn default_file_matches_defaults() {
        let from_file: Config = toml::from_str(DEFAULT_FILE).unwrap();
        assert_eq!(
            toml::Value::try_from(&from_file).unwrap(),
            toml::Value::try_from(Config::default()).unwrap()
        );
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://custos:s3cret@db:5432/pacs"),
            "postgres://custos:<redacted>@db:5432/pacs"
        );
        assert_eq!(
            redact_url("postgres://custos@db/pacs"),
            "postgres://custos@db/pacs"
        );
        let mut c = Config::default();
        c.index.url = "postgres://u:hunter2@127.0.0.1/x".into();
        assert!(!c.show().unwrap().contains("hunter2"));
    }

    #[test]
    fn env_overrides_and_unknown_keys() {
        let mut v = toml::Value::try_from(Config::default()).unwrap();
        apply_env(&mut v, |k| match k {
            "CUSTOS_DICOM_LISTEN" => Some("0.0.0.0:104".into()),
            "CUSTOS_DICOM_MAX_ASSOCIATIONS" => Some("8".into()),
            _ => None,
        })
        .unwrap();
        let c: Config = v.try_into().unwrap();
        assert_eq!(c.dicom.listen, "0.0.0.0:104");
        assert_eq!(c.dicom.max_associations, 8);
        let mut v = toml::Value::try_from(Config::default()).unwrap();
        assert!(
            apply_env(&mut v, |k| (k == "CUSTOS_DICOM_MAX_PDU_LENGTH")
                .then(|| "big".into()))
            .is_err()
        );
        assert!(toml::from_str::<Config>("[dicom]\nlisten_typo = \"x\"").is_err());
    }
}
