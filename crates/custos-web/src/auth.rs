//! Who is asking: HTTP Basic (user + password) or `Bearer` API tokens, turned
//! into a [`Principal`] that handlers check with `Principal::may`, the same
//! check the DIMSE side uses. Failures slow down and then lock out per user
//! and per source address; successes are cached briefly so that Basic auth
//! does not cost an argon2 verification on every request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use custos_core::credentials::{
    constant_time_eq, parse_token, token_secret_matches, verify_dummy, verify_password,
};
use custos_core::{Action, Principal};

use crate::error::ApiError;
use crate::{AppState, ClientAddr};

/// How long a verified Basic credential is trusted without argon2.
const CACHE_TTL: Duration = Duration::from_secs(300);

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Default)]
struct Failures {
    count: u32,
    last: Option<Instant>,
}

/// A recent successful password check: the PHC hash it was verified against,
/// SHA-256 of the process key and the password, and when.
type Verified = (String, [u8; 32], Instant);

pub struct Authenticator {
    lockout_after: u32,
    lockout: Duration,
    failures: Mutex<HashMap<String, Failures>>,
    cache: Mutex<HashMap<String, Verified>>,
    cache_key: [u8; 32],
    /// Token logins recorded in the last `CACHE_TTL`: a bearer token is a
    /// login on first use, not on each request.
    token_logins: Mutex<HashMap<String, Instant>>,
}

enum Outcome {
    Ok(Principal),
    /// Bad credentials for this user name (if one was given).
    Bad(Option<String>),
}

impl Authenticator {
    pub fn new(lockout_after: u32, lockout: Duration) -> Authenticator {
        let mut cache_key = [0u8; 32];
        cache_key.copy_from_slice(custos_core::credentials::random_text(32).as_bytes());
        Authenticator {
            lockout_after: lockout_after.max(1),
            lockout,
            failures: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            cache_key,
            token_logins: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds left of a lockout on any of `keys`, if locked.
    fn locked(&self, keys: &[String]) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        keys.iter()
            .filter_map(|k| map.get(k))
            .filter(|f| f.count >= self.lockout_after)
            .filter_map(|f| f.last)
            .map(|last| self.lockout.saturating_sub(last.elapsed()))
            .filter(|left| !left.is_zero())
            .map(|left| left.as_secs().max(1))
            .max()
    }

    /// Records a failure on every key; returns the delay to impose.
    fn fail(&self, keys: &[String]) -> Duration {
        let Ok(mut map) = self.failures.lock() else {
            return Duration::from_secs(1);
        };
        let mut worst = 0;
        for k in keys {
            let f = map.entry(k.clone()).or_default();
            if f.last.is_some_and(|l| l.elapsed() > self.lockout) {
                f.count = 0;
            }
            f.count += 1;
            f.last = Some(Instant::now());
            worst = worst.max(f.count);
        }
        // Growing delays once half the allowance is used: 250 ms, 500 ms, ... up to 4 s.
        let free = self.lockout_after / 2;
        if worst <= free {
            Duration::ZERO
        } else {
            Duration::from_millis(250u64 << (worst - free - 1).min(4))
        }
    }

    fn succeed(&self, keys: &[String]) {
        if let Ok(mut map) = self.failures.lock() {
            for k in keys {
                map.remove(k);
            }
        }
    }

    /// Records a token login for `user` unless `key` logged in within
    /// `CACHE_TTL` (one record per token and window, like password logins).
    fn record_token_login(&self, state: &AppState, key: String, user: &str, how: &str) {
        let fresh = match self.token_logins.lock() {
            Ok(mut seen) => {
                if seen.len() > 10_000 {
                    seen.retain(|_, at| at.elapsed() < CACHE_TTL);
                }
                let recent = seen.get(&key).is_some_and(|at| at.elapsed() < CACHE_TTL);
                if !recent {
                    seen.insert(key, Instant::now());
                }
                !recent
            }
            Err(_) => true,
        };
        if fresh {
            let mut e = custos_core::audit::AuditEvent::new(
                custos_core::audit::EventId::UserAuthentication,
                'E',
                custos_core::audit::Outcome::Success,
            );
            e.user = user.to_string();
            e.detail = format!("HTTP login ({how})");
            state.archive.audit(e);
        }
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    async fn check(&self, state: &AppState, headers: &HeaderMap) -> Result<Outcome, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Outcome::Bad(None));
        };
        let Ok(value) = value.to_str() else {
            return Ok(Outcome::Bad(None));
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let index = state.archive.index();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let Some((name, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                return Ok(Outcome::Bad(None));
            };
            let name = name.to_string();
            if name.len() > 64 || password.len() > 1024 {
                return Ok(Outcome::Bad(None));
            }
            let user = index.user(&name).await?;
            let Some(user) = user.filter(|u| !u.disabled) else {
                verify_dummy(password);
                return Ok(Outcome::Bad(Some(name)));
            };
            let digest = self.digest(password);
            let cached = self.cache.lock().ok().and_then(|c| {
                c.get(&name).map(|(hash, d, at)| {
                    *hash == user.password_hash
                        && at.elapsed() < CACHE_TTL
                        && constant_time_eq(d, &digest)
                })
            }) == Some(true);
            let ok = cached || {
                let hash = user.password_hash.clone();
                let pw = password.to_string();
                tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
                    .await
                    .unwrap_or(false)
            };
            if !ok {
                return Ok(Outcome::Bad(Some(name)));
            }
            if !cached {
                let mut e = custos_core::audit::AuditEvent::new(
                    custos_core::audit::EventId::UserAuthentication,
                    'E',
                    custos_core::audit::Outcome::Success,
                );
                e.user = name.clone();
                e.detail = "HTTP login (password verified)".into();
                state.archive.audit(e);
            }
            if !cached && let Ok(mut c) = self.cache.lock() {
                c.insert(
                    name.clone(),
                    (user.password_hash.clone(), digest, Instant::now()),
                );
            }
            return Ok(Outcome::Ok(Principal::User {
                name,
                role: user.role,
                read_only: false,
            }));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let Some((id, secret)) = parse_token(rest.trim()) else {
                if let Some(oidc) = &state.oidc
                    && crate::oidc::Oidc::looks_like_jwt(rest.trim())
                    && let Some(p) = oidc.principal(rest.trim()).await
                {
                    let key = format!(
                        "oidc:{}",
                        custos_core::credentials::sha256_hex(rest.trim().as_bytes())
                    );
                    self.record_token_login(state, key, p.name(), "OpenID Connect token");
                    return Ok(Outcome::Ok(p));
                }
                return Ok(Outcome::Bad(None));
            };
            let Some(token) = index.token(id).await? else {
                return Ok(Outcome::Bad(None));
            };
            let valid = token_secret_matches(&token, secret);
            if !valid || token.revoked || token.expires <= now_unix() {
                return Ok(Outcome::Bad(Some(token.user)));
            }
            let Some(user) = index.user(&token.user).await?.filter(|u| !u.disabled) else {
                return Ok(Outcome::Bad(Some(token.user)));
            };
            self.record_token_login(
                state,
                format!("token:{id}"),
                &user.name,
                &format!("API token {id}"),
            );
            return Ok(Outcome::Ok(Principal::User {
                name: user.name,
                role: user.role,
                read_only: token.read_only,
            }));
        }
        Ok(Outcome::Bad(None))
    }
}

/// Middleware: every request except `/healthz` and CORS preflights needs a
/// valid principal, which handlers then receive as an extension.
pub async fn require_principal(
    State(state): State<std::sync::Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let ip: Option<IpAddr> = request.extensions().get::<ClientAddr>().map(|a| a.0.ip());
    let auth = &state.auth;
    let claimed = claimed_user(request.headers());
    let mut keys = Vec::new();
    if let Some(ip) = ip {
        keys.push(format!("ip:{ip}"));
    }
    if let Some(u) = &claimed {
        keys.push(format!("user:{u}"));
    }
    if let Some(wait) = auth.locked(&keys) {
        tracing::warn!(source = ?ip, user = ?claimed, "authentication locked out after repeated failures");
        let mut e = custos_core::audit::AuditEvent::new(
            custos_core::audit::EventId::SecurityAlert,
            'E',
            custos_core::audit::Outcome::SeriousFailure,
        );
        e.user = claimed.clone().unwrap_or_default();
        e.source = ip.map(|i| i.to_string()).unwrap_or_default();
        e.detail = "request refused during a lockout after repeated failures".into();
        state.archive.audit(e);
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed attempts; try again later",
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    match auth.check(&state, request.headers()).await {
        Ok(Outcome::Ok(principal)) => {
            auth.succeed(&keys);
            let caller = crate::audit::caller_of(&principal, ip);
            request.extensions_mut().insert(principal);
            crate::audit::CALLER.scope(caller, next.run(request)).await
        }
        Ok(Outcome::Bad(user)) => {
            let had_credentials = request.headers().contains_key(header::AUTHORIZATION);
            if had_credentials {
                let mut keys = keys;
                if let Some(u) = user.filter(|u| claimed.as_ref() != Some(u)) {
                    keys.push(format!("user:{u}"));
                }
                tracing::warn!(source = ?ip, user = ?claimed, "authentication failed");
                let mut e = custos_core::audit::AuditEvent::new(
                    custos_core::audit::EventId::UserAuthentication,
                    'E',
                    custos_core::audit::Outcome::MinorFailure,
                );
                e.user = claimed.clone().unwrap_or_default();
                e.source = ip.map(|i| i.to_string()).unwrap_or_default();
                e.detail = "HTTP authentication failed".into();
                state.archive.audit(e);
                let delay = auth.fail(&keys);
                tokio::time::sleep(delay).await;
            }
            ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The user name a Basic header claims, for throttling (not trusted otherwise).
fn claimed_user(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let d = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let d = String::from_utf8(d).ok()?;
    let name = d.split_once(':')?.0;
    (name.len() <= 64).then(|| name.to_string())
}

/// Refuses with 403 unless the principal may perform `action`.
pub fn require(principal: &Principal, action: Action) -> Result<(), ApiError> {
    if principal.may(action) {
        Ok(())
    } else {
        tracing::info!(user = principal.name(), %action, "request refused: not permitted");
        Err(ApiError::forbidden())
    }
}
