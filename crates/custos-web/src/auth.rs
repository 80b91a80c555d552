//! The HTTP front door of [`custos_auth::Authenticator`]: `Authorization:
//! Basic` or `Bearer` becomes a [`Principal`] that handlers check with
//! `Principal::may`, the same check the DIMSE side uses. Lockout, throttling
//! and the password cache live in the authenticator, shared with DICOM user
//! identities; this module maps its answers to 401, 429 and 503, and records
//! logins and failures in the audit trail.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use custos_auth::{Refusal, Secret};
use custos_core::audit::{AuditEvent, EventId, Outcome};
use custos_core::{Action, Principal};

pub use custos_auth::now_unix;

use crate::error::ApiError;
use crate::{AppState, ClientAddr};

/// What the `Authorization` header holds.
enum Presented {
    None,
    /// A header we cannot read as Basic or Bearer.
    Malformed,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
}

fn presented(headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Presented::None;
    };
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((user, password)) => Presented::Basic {
                user: user.to_string(),
                password: password.to_string(),
            },
            None => Presented::Malformed,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Presented::Bearer(rest.trim().to_string())
    } else {
        Presented::Malformed
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
    let creds = presented(request.headers());
    let claimed = match &creds {
        Presented::Basic { user, .. } if user.len() <= 64 => Some(user.clone()),
        _ => None,
    };
    let outcome = match &creds {
        Presented::None => {
            // No credentials at all: a plain 401 (the browser's first request),
            // neither counted nor recorded.
            if let Some(wait) = state.auth.locked(None, ip) {
                return locked(&state, ip, None, wait).await;
            }
            return ApiError::new(StatusCode::UNAUTHORIZED, "authentication required")
                .into_response();
        }
        Presented::Malformed => state.auth.authenticate(Secret::Bearer(""), ip).await,
        Presented::Basic { user, password } => {
            state
                .auth
                .authenticate(Secret::Password { user, password }, ip)
                .await
        }
        Presented::Bearer(text) => state.auth.authenticate(Secret::Bearer(text), ip).await,
    };
    match outcome {
        Ok(verified) => {
            if verified.first_use {
                let mut e = AuditEvent::new(EventId::UserAuthentication, 'E', Outcome::Success);
                e.user = verified.principal.name().to_string();
                e.source = ip.map(|i| i.to_string()).unwrap_or_default();
                e.detail = format!("HTTP login ({})", verified.method);
                state.archive.audit(e).await;
            }
            let caller = crate::audit::caller_of(&verified.principal, ip);
            request.extensions_mut().insert(verified.principal);
            crate::audit::CALLER.scope(caller, next.run(request)).await
        }
        Err(Refusal::Locked { retry_after }) => locked(&state, ip, claimed, retry_after).await,
        Err(Refusal::Busy) => {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many authentication attempts in progress from this address",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Err(Refusal::Invalid {
            claimed: who,
            delay,
        }) => {
            tracing::warn!(source = ?ip, "authentication failed");
            let mut e = AuditEvent::new(EventId::UserAuthentication, 'E', Outcome::MinorFailure);
            e.user = claimed.or(who).unwrap_or_default();
            e.source = ip.map(|i| i.to_string()).unwrap_or_default();
            e.detail = "HTTP authentication failed".into();
            state.archive.audit(e).await;
            tokio::time::sleep(delay).await;
            ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response()
        }
        Err(Refusal::Unavailable(reason)) => {
            tracing::error!(error = %reason, "cannot check credentials");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "credentials cannot be checked right now",
            )
            .into_response()
        }
    }
}

/// 429 with Retry-After during a lockout, and a security alert in the trail.
async fn locked(
    state: &AppState,
    ip: Option<IpAddr>,
    claimed: Option<String>,
    wait: std::time::Duration,
) -> Response {
    tracing::warn!(source = ?ip, "authentication locked out after repeated failures");
    let mut e = AuditEvent::new(EventId::SecurityAlert, 'E', Outcome::SeriousFailure);
    e.user = claimed.unwrap_or_default();
    e.source = ip.map(|i| i.to_string()).unwrap_or_default();
    e.detail = "request refused during a lockout after repeated failures".into();
    state.archive.audit(e).await;
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed attempts; try again later",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
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
