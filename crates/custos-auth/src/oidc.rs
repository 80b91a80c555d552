//! Bearer JWTs from an external OpenID Connect provider: signature checked
//! against the provider's JWKS (from a file, or fetched from a URL), then
//! issuer, audience, expiry and not-before; a claim names the Custos role. Only
//! asymmetric algorithms are accepted (never `none` or HMAC, whose "key" would
//! be public). The key set is re-read every `refresh` so that a key the
//! provider removed stops being trusted; a set that cannot be re-read for
//! [`MAX_KEY_AGE`] is dropped (fail closed).

use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use custos_core::{Principal, Role};

#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Expected `iss`; empty turns OIDC off.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    pub jwks_file: String,
    /// Must be https unless its host is a loopback address.
    pub jwks_url: String,
    /// Claim holding the role name (a string or a list of strings).
    pub role_claim: String,
    /// Claim naming the user (logs, audit).
    pub username_claim: String,
    /// How often the key set is read again.
    pub refresh: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_file: String::new(),
            jwks_url: String::new(),
            role_claim: "custos_role".into(),
            username_claim: "preferred_username".into(),
            refresh: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("[oidc] {0}")]
    Config(String),
    #[error("reading the JWKS file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("fetching the JWKS: {0}")]
    Fetch(#[from] reqwest::Error),
    #[error("parsing the JWKS: {0}")]
    Parse(#[from] serde_json::Error),
}

pub struct Oidc {
    config: OidcConfig,
    /// The key set and when it was last read successfully.
    keys: RwLock<(JwkSet, Instant)>,
    /// When a re-read was last tried (successful or not).
    tried: RwLock<Instant>,
    refreshing: tokio::sync::Mutex<()>,
}

const ALLOWED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// An unknown `kid` makes a re-read at most this often.
const UNKNOWN_KID_REFRESH: Duration = Duration::from_secs(60);

/// A key set not re-read successfully for this long is no longer trusted.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);

impl Oidc {
    /// Loads the key set; `None` when OIDC is not configured.
    pub async fn load(config: OidcConfig) -> Result<Option<Oidc>, OidcError> {
        if config.issuer.is_empty() {
            return Ok(None);
        }
        if config.audience.is_empty() || config.role_claim.is_empty() {
            return Err(OidcError::Config(
                "needs audience and role_claim with issuer".into(),
            ));
        }
        check_jwks_url(&config.jwks_url)?;
        let keys = fetch(&config).await?;
        Ok(Some(Oidc {
            config,
            keys: RwLock::new((keys, Instant::now())),
            tried: RwLock::new(Instant::now()),
            refreshing: tokio::sync::Mutex::new(()),
        }))
    }

    /// Whether `token` looks like a JWT (three base64url parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.len() < 16 * 1024
    }

    /// The principal a valid token names; `None` for anything invalid.
    pub async fn principal(&self, token: &str) -> Option<Principal> {
        let header = allowed_header(token)?;
        let kid = header.kid.clone().unwrap_or_default();
        let since_try = self.tried.read().ok()?.elapsed();
        if since_try >= self.config.refresh
            || (self.key(&kid).is_none() && since_try >= UNKNOWN_KID_REFRESH)
        {
            self.refresh().await;
        }
        let key = self.key(&kid)?;
        verified(token, header.alg, &self.config, &key)
    }

    /// Reads the key set again (one reader at a time; others use what is there).
    async fn refresh(&self) {
        let Ok(_one) = self.refreshing.try_lock() else {
            return;
        };
        if let Ok(mut t) = self.tried.write() {
            *t = Instant::now();
        }
        match fetch(&self.config).await {
            Ok(fresh) => {
                if let Ok(mut k) = self.keys.write() {
                    *k = (fresh, Instant::now());
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot re-read the OpenID Connect key set"),
        }
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().ok()?;
        if keys.1.elapsed() > MAX_KEY_AGE.max(self.config.refresh * 2) {
            return None;
        }
        let jwk = if kid.is_empty() && keys.0.keys.len() == 1 {
            keys.0.keys.first()
        } else {
            keys.0.find(kid)
        }?;
        DecodingKey::from_jwk(jwk).ok()
    }
}

/// The token's header, if it parses and names an allowed algorithm.
fn allowed_header(token: &str) -> Option<jsonwebtoken::Header> {
    let header = decode_header(token).ok()?;
    ALLOWED.contains(&header.alg).then_some(header)
}

/// The principal `token` (whose header says `alg`, checked by
/// [`allowed_header`]) names if it is signed by `key` and its claims are this
/// configuration's (issuer, audience, expiry, role); `None` otherwise.
fn verified(
    token: &str,
    alg: Algorithm,
    config: &OidcConfig,
    key: &DecodingKey,
) -> Option<Principal> {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = 30;
    let data = decode::<Value>(token, key, &validation).ok()?;
    let claims = data.claims;
    let role = match &claims[&config.role_claim] {
        Value::String(s) => s.parse::<Role>().ok(),
        Value::Array(v) => v.iter().filter_map(|r| r.as_str()?.parse().ok()).next(),
        _ => None,
    }?;
    let name = claims[&config.username_claim]
        .as_str()
        .or_else(|| claims["sub"].as_str())?
        .to_string();
    Some(Principal::User {
        name: format!("oidc:{name}"),
        role,
        read_only: false,
    })
}

/// For the fuzz target: a bearer token through the same checks, against a
/// fixed Ed25519 key (RFC 8037's example) instead of a fetched key set.
#[doc(hidden)]
pub fn fuzzing_token(bytes: &[u8]) {
    let Ok(token) = std::str::from_utf8(bytes) else {
        return;
    };
    if !Oidc::looks_like_jwt(token) {
        return;
    }
    let Some(header) = allowed_header(token) else {
        return;
    };
    let Ok(key) = DecodingKey::from_ed_components("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    else {
        return;
    };
    let config = OidcConfig {
        issuer: "https://issuer.invalid".into(),
        audience: "custos".into(),
        ..OidcConfig::default()
    };
    let _ = verified(token, header.alg, &config, &key);
}

/// A JWKS URL must be https, unless it names a loopback address.
fn check_jwks_url(url: &str) -> Result<(), OidcError> {
    if url.is_empty() {
        return Ok(());
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| OidcError::Config(format!("jwks_url `{url}`: {e}")))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(OidcError::Config(format!(
            "jwks_url must be https beyond loopback (got `{url}`)"
        ))),
    }
}

async fn fetch(config: &OidcConfig) -> Result<JwkSet, OidcError> {
    let text = if !config.jwks_file.is_empty() {
        tokio::fs::read_to_string(&config.jwks_file)
            .await
            .map_err(|source| OidcError::File {
                path: config.jwks_file.clone(),
                source,
            })?
    } else if !config.jwks_url.is_empty() {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        client
            .get(&config.jwks_url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?
    } else {
        return Err(OidcError::Config("needs jwks_file or jwks_url".into()));
    };
    Ok(serde_json::from_str(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_url_must_be_https_beyond_loopback() {
        assert!(check_jwks_url("https://idp.example.org/jwks").is_ok());
        assert!(check_jwks_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_jwks_url("http://[::1]:8080/jwks").is_ok());
        assert!(check_jwks_url("http://localhost/jwks").is_ok());
        assert!(check_jwks_url("http://idp.example.org/jwks").is_err());
        assert!(check_jwks_url("http://10.0.0.1/jwks").is_err());
        assert!(check_jwks_url("ftp://127.0.0.1/jwks").is_err());
        assert!(check_jwks_url("").is_ok());
    }
}
