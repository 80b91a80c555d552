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

/// [`presented`] for the fuzz targets: whether the header was readable.
pub(crate) fn presented_for_fuzzing(headers: &HeaderMap) -> bool {
    !matches!(presented(headers), Presented::Malformed)
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

/// Middleware: every request except `/healthz`, the login and the UI's
/// static files needs a valid principal (from `Authorization`, or a browser
/// session cookie), which handlers then receive as an extension.
pub async fn require_principal(
    State(state): State<std::sync::Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let ip: Option<IpAddr> = request.extensions().get::<ClientAddr>().map(|a| a.0.ip());
    // The UI's own requests get no WWW-Authenticate challenge (it would make
    // the browser pop up its Basic dialog over the login page).
    let ui = request.headers().contains_key(UI_HEADER);
    let creds = presented(request.headers());
    let claimed = match &creds {
        Presented::Basic { user, .. } if user.len() <= 64 => Some(user.clone()),
        _ => None,
    };
    if matches!(creds, Presented::Basic { .. })
        && crate::session::cross_site_write(
            &request,
            state.config.https,
            &state.config.cors_origins,
        )
    {
        tracing::warn!(source = ?ip, "cross-site state change with Basic credentials refused");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "a state change from another site's page is refused",
        )
        .into_response();
    }
    let outcome = match &creds {
        Presented::None => {
            if let Some(id) = crate::session::session_cookie(request.headers(), state.config.https)
            {
                return with_session(&state, ip, &id, request, next).await;
            }
            // No credentials at all: a plain 401 (the browser's first request),
            // neither counted nor recorded.
            if let Some(wait) = state.auth.locked(None, ip) {
                return locked(&state, ip, None, wait).await;
            }
            return unauthorized(ui);
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
            crate::audit::scoped(caller, next.run(request)).await
        }
        Err(refusal) => refused(&state, ip, claimed, refusal, ui).await,
    }
}

/// The header the UI's scripts send with every request.
pub const UI_HEADER: &str = "x-custos-ui";

fn unauthorized(ui: bool) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
    if ui {
        r.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    r
}

/// A request carrying a browser session cookie: the session's principal, and
/// for a state change the same origin and the session's CSRF token.
async fn with_session(
    state: &AppState,
    ip: Option<IpAddr>,
    id: &str,
    mut request: Request,
    next: Next,
) -> Response {
    match state.auth.session(id).await {
        Ok((principal, csrf, recent)) => {
            if !crate::session::csrf_ok(&request, &csrf, state.config.https) {
                tracing::warn!(source = ?ip, "cross-site or token-less request with a session cookie refused");
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a state change needs this site's page and its X-CSRF-Token",
                )
                .into_response();
            }
            let caller = crate::audit::caller_of(&principal, ip);
            request.extensions_mut().insert(principal);
            request
                .extensions_mut()
                .insert(crate::session::SessionCsrf(csrf));
            request
                .extensions_mut()
                .insert(crate::session::SessionRecent(recent));
            crate::audit::scoped(caller, next.run(request)).await
        }
        Err(Refusal::Unavailable(reason)) => unavailable(&reason),
        Err(_) => {
            // Expired, logged out, or the user changed: log in again (a
            // browser: no Basic challenge, which would pop up a dialog).
            let mut r = unauthorized(true);
            r.headers_mut()
                .insert(header::SET_COOKIE, crate::session::clear_cookie(state));
            r
        }
    }
}

fn unavailable(reason: &str) -> Response {
    tracing::error!(error = %reason, "cannot check credentials");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "credentials cannot be checked right now",
    )
    .into_response()
}

/// The answer to refused credentials: 429 during a lockout or when too many
/// checks are in flight, 401 (after the failure delay, recorded) when wrong,
/// 503 when the registry cannot be read.
pub(crate) async fn refused(
    state: &AppState,
    ip: Option<IpAddr>,
    claimed: Option<String>,
    refusal: Refusal,
    ui: bool,
) -> Response {
    match refusal {
        Refusal::Locked { retry_after } => locked(state, ip, claimed, retry_after).await,
        Refusal::Busy => {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many authentication attempts in progress from this address",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Refusal::Invalid {
            claimed: who,
            delay,
        } => {
            tracing::warn!(source = ?ip, "authentication failed");
            let mut e = AuditEvent::new(EventId::UserAuthentication, 'E', Outcome::MinorFailure);
            e.user = claimed.or(who).unwrap_or_default();
            e.source = ip.map(|i| i.to_string()).unwrap_or_default();
            e.detail = "HTTP authentication failed".into();
            state.archive.audit(e).await;
            tokio::time::sleep(delay).await;
            unauthorized(ui)
        }
        Refusal::Unavailable(reason) => unavailable(&reason),
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
