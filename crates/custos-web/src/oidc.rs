//! Bearer JWTs from an external OpenID Connect provider: signature checked
//! against the provider's JWKS (from a file, or fetched from a URL), then
//! issuer, audience, expiry; a claim names the Custos role. Only asymmetric
//! algorithms are accepted (never `none` or HMAC, whose "key" would be public).

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

use custos_core::{Principal, Role};

#[derive(Debug, Clone, Default)]
pub struct OidcConfig {
    /// Expected `iss`; empty turns OIDC off.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    pub jwks_file: String,
    pub jwks_url: String,
    /// Claim holding the role name (a string or a list of strings).
    pub role_claim: String,
    /// Claim naming the user (logs, audit).
    pub username_claim: String,
}

pub struct Oidc {
    config: OidcConfig,
    keys: RwLock<(JwkSet, Instant)>,
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

/// Fetched key sets are refreshed at most this often (unknown `kid`).
const REFRESH: Duration = Duration::from_secs(60);

impl Oidc {
    /// Loads the key set; `None` when OIDC is not configured.
    pub async fn load(config: OidcConfig) -> anyhow::Result<Option<Oidc>> {
        if config.issuer.is_empty() {
            return Ok(None);
        }
        if config.audience.is_empty() || config.role_claim.is_empty() {
            anyhow::bail!("[oidc] needs audience and role_claim with issuer");
        }
        let keys = fetch(&config).await?;
        Ok(Some(Oidc {
            config,
            keys: RwLock::new((keys, Instant::now())),
        }))
    }

    /// Whether `token` looks like a JWT (three base64url parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.len() < 16 * 1024
    }

    /// The principal a valid token names; `None` for anything invalid.
    pub async fn principal(&self, token: &str) -> Option<Principal> {
        let header = decode_header(token).ok()?;
        if !ALLOWED.contains(&header.alg) {
            return None;
        }
        let kid = header.kid.clone().unwrap_or_default();
        let stale = self.keys.read().ok()?.1.elapsed() > REFRESH;
        if self.key(&kid).is_none()
            && stale
            && let Ok(fresh) = fetch(&self.config).await
            && let Ok(mut k) = self.keys.write()
        {
            *k = (fresh, Instant::now());
        }
        let key = self.key(&kid)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        let data = decode::<Value>(token, &key, &validation).ok()?;
        let claims = data.claims;
        let role = match &claims[&self.config.role_claim] {
            Value::String(s) => s.parse::<Role>().ok(),
            Value::Array(v) => v.iter().filter_map(|r| r.as_str()?.parse().ok()).next(),
            _ => None,
        }?;
        let name = claims[&self.config.username_claim]
            .as_str()
            .or_else(|| claims["sub"].as_str())?
            .to_string();
        Some(Principal::User {
            name: format!("oidc:{name}"),
            role,
            read_only: false,
        })
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self.keys.read().ok()?;
        let jwk = if kid.is_empty() && keys.0.keys.len() == 1 {
            keys.0.keys.first()
        } else {
            keys.0.find(kid)
        }?;
        DecodingKey::from_jwk(jwk).ok()
    }
}

async fn fetch(config: &OidcConfig) -> anyhow::Result<JwkSet> {
    use anyhow::Context;
    let text = if !config.jwks_file.is_empty() {
        tokio::fs::read_to_string(&config.jwks_file)
            .await
            .with_context(|| format!("reading {}", config.jwks_file))?
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
        anyhow::bail!("[oidc] needs jwks_file or jwks_url");
    };
    serde_json::from_str(&text).context("parsing the JWKS")
}
