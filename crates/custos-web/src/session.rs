//! Browser logins: `POST /api/login` checks a password exactly as Basic
//! auth does (same lockout, throttling, audit) and sets a session cookie
//! (`HttpOnly; SameSite=Strict`, `Secure` and the `__Host-` prefix over
//! HTTPS); `GET /api/session` tells the page who is logged in, with the CSRF
//! token it must echo; `DELETE /api/session` logs out;
//! `PUT /api/session/password` changes one's own password;
//! `POST /api/session/confirm` gives it again before changes to users, tokens
//! and peers (`SessionPolicy::confirmed_for`). Requests carrying the
//! cookie are authenticated in `auth::require_principal`, which also refuses
//! cross-site state changes (`Origin` and `X-CSRF-Token` checks).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use custos_auth::Secret;
use custos_core::audit::{AuditEvent, EventId, Outcome};
use custos_core::{Action, Principal};

use crate::error::ApiError;
use crate::{AppState, ClientAddr};

/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session of a cookie-authenticated request (absent for Basic/Bearer).
#[derive(Clone)]
pub struct SessionCsrf(pub String);

/// The cookie's name: `__Host-` binds it to this origin over HTTPS (the
/// browser refuses it without `Secure` and `Path=/`).
pub fn cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-custos-session"
    } else {
        "custos-session"
    }
}

/// The session id in a request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap, https: bool) -> Option<String> {
    let name = cookie_name(https);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn set_cookie(state: &AppState, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict",
        cookie_name(state.config.https)
    );
    if state.config.https {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A header that removes the session cookie.
pub fn clear_cookie(state: &AppState) -> HeaderValue {
    set_cookie(state, "", Some(0))
}

/// Whether a request's `Origin` (when the browser sent one) is this server:
/// a page elsewhere cannot log in or change anything with our cookie.
pub fn same_origin(headers: &HeaderMap, https: bool) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin = origin.to_str().unwrap_or_default();
    if https {
        return origin == format!("https://{host}");
    }
    // Plain HTTP is served behind a TLS-terminating proxy (or on loopback):
    // the browser's page is https:// there, and the Host is the proxy's.
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// Whether a state-changing request comes from another site's page: its
/// `Origin` is neither this server's nor a configured CORS origin, or,
/// without an `Origin`, the browser says so (`Sec-Fetch-Site`). Browsers
/// attach HTTP Basic credentials they have cached to such requests (a form
/// posted from any page) as they attach cookies; tools send neither header.
pub fn cross_site_write(request: &Request, https: bool, allowed: &[String]) -> bool {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return false;
    }
    let headers = request.headers();
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            !same_origin(headers, https)
                && !origin
                    .to_str()
                    .is_ok_and(|o| allowed.iter().any(|a| a == o))
        }
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site"),
    }
}

/// Whether a cookie-authenticated request may go on: safe methods always;
/// others only from this origin and with the session's CSRF token — or, for
/// STOW-RS, from this origin by the browser's own word (`Sec-Fetch-Site:
/// same-origin`, which no page can set): OHIF, served from this origin, saves
/// reports and segmentations by STOW-RS and cannot send our token.
pub fn csrf_ok(request: &Request, csrf: &str, https: bool) -> bool {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return true;
    }
    if !same_origin(request.headers(), https) {
        return false;
    }
    let echoed = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if custos_auth::session::csrf_matches(csrf, echoed) {
        return true;
    }
    let stow = *request.method() == Method::POST
        && request.uri().path().starts_with("/dicom-web/studies")
        && request.headers().contains_key(header::ORIGIN);
    let fetched_here = request
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin");
    stow && fetched_here
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    user: String,
    password: String,
}

fn role_of(p: &Principal) -> &'static str {
    match p {
        Principal::User { role, .. } => role.name(),
        Principal::Peer { .. } => "peer",
    }
}

/// The rights a page may offer its user.
fn rights(p: &Principal) -> Vec<String> {
    Action::ALL
        .iter()
        .filter(|a| p.may(**a))
        .map(|a| a.to_string())
        .collect()
}

/// `POST /api/login`: a password login for the browser.
pub async fn login(
    State(state): State<Arc<AppState>>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<Json<Login>, JsonRejection>,
) -> Response {
    if !same_origin(&headers, state.config.https) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross-site login refused").into_response();
    }
    let Json(login) = match body {
        Ok(b) => b,
        Err(r) => return ApiError::new(r.status(), r.body_text()).into_response(),
    };
    let ip: Option<IpAddr> = Some(addr.ip());
    let secret = Secret::Password {
        user: &login.user,
        password: &login.password,
    };
    let claimed = (login.user.len() <= 64).then(|| login.user.clone());
    let verified = match state.auth.authenticate(secret, ip).await {
        Ok(v) => v,
        Err(refusal) => {
            return crate::auth::refused(&state, ip, claimed, refusal, true).await;
        }
    };
    let session = match state.auth.open_session(verified.principal.name()).await {
        Ok(s) => s,
        Err(refusal) => return crate::auth::refused(&state, ip, claimed, refusal, true).await,
    };
    let mut e = AuditEvent::new(EventId::UserAuthentication, 'E', Outcome::Success);
    e.user = verified.principal.name().to_string();
    e.source = addr.ip().to_string();
    e.detail = "HTTP login (browser session)".into();
    state.archive.audit(e).await;
    let body = json!({
        "user": verified.principal.name(),
        "role": role_of(&verified.principal),
        "rights": rights(&verified.principal),
        "csrf": session.csrf,
        "viewer": crate::viewer::is_installed(&state),
    });
    let mut r = (StatusCode::OK, Json(body)).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, &session.id, None));
    r
}

/// `GET /api/session`: who is asking, what they may do, and (for a browser
/// session) the CSRF token to echo.
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    csrf: Option<Extension<SessionCsrf>>,
) -> Response {
    Json(json!({
        "user": p.name(),
        "role": role_of(&p),
        "rights": rights(&p),
        "csrf": csrf.map(|Extension(SessionCsrf(c))| c),
        "viewer": crate::viewer::is_installed(&state),
    }))
    .into_response()
}

/// `DELETE /api/session`: ends the browser session (a no-op for Basic or
/// Bearer callers) and clears the cookie.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = session_cookie(&headers, state.config.https)
        && state.auth.close_session(&id).is_some()
    {
        let mut e = AuditEvent::new(EventId::UserAuthentication, 'E', Outcome::Success);
        e.user = p.name().to_string();
        e.source = addr.ip().to_string();
        e.detail = "HTTP logout (browser session)".into();
        state.archive.audit(e).await;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(&state));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    current: String,
    new: String,
}

/// `PUT /api/session/password`: a user changes their own password, proving
/// the current one as a login does (the same lockout, throttling and audit
/// of failures; a wrong one is 403, not 401, so the page keeps its session).
/// Every browser session of the user ends with the old password.
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    body: Result<Json<NewPassword>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(r) => return ApiError::new(r.status(), r.body_text()).into_response(),
    };
    let name = match prove_password(&state, &p, addr.ip(), &body.current).await {
        Ok(name) => name,
        Err(r) => return r,
    };
    let registry = state.archive.registry();
    let change = custos_archive::registry::UserChange {
        password: Some(body.new),
        ..Default::default()
    };
    match custos_archive::registry::update_user(registry.as_ref(), &name, change).await {
        Ok((_, line)) => {
            tracing::info!(user = %name, "password changed by its user");
            crate::admin::change(&state, format!("{line} (by the user)")).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `p`'s own password, checked as a login checks it (the same lockout,
/// throttling and audit of failures; a wrong one is 403, not 401, so the
/// page keeps its session); the user's name when it is right.
async fn prove_password(
    state: &AppState,
    p: &Principal,
    addr: IpAddr,
    password: &str,
) -> Result<String, Response> {
    let name = match p {
        Principal::User {
            name,
            read_only: false,
            ..
        } => name.clone(),
        _ => return Err(ApiError::forbidden().into_response()),
    };
    // A user signed in by an identity provider has no password here (and
    // must not be counted as failing to give one).
    match state.archive.registry().user(&name).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "your password is not kept here: your identity provider signs you in",
            )
            .into_response());
        }
        Err(e) => return Err(ApiError::from(e).into_response()),
    }
    let ip = Some(addr);
    let secret = Secret::Password {
        user: &name,
        password,
    };
    if let Err(refusal) = state.auth.authenticate(secret, ip).await {
        let r = crate::auth::refused(state, ip, Some(name), refusal, true).await;
        if r.status() != StatusCode::UNAUTHORIZED {
            return Err(r);
        }
        return Err(
            ApiError::new(StatusCode::FORBIDDEN, "the current password is not right")
                .into_response(),
        );
    }
    Ok(name)
}

/// Whether a cookie-authenticated request's session gave its password
/// within `SessionPolicy::confirmed_for` (absent for Basic/Bearer, which
/// carry their credential each time).
#[derive(Clone, Copy)]
pub struct SessionRecent(pub bool);

/// The refusal of a change to who may do what made with a session whose
/// password was not given recently: the page asks for it
/// (`POST /api/session/confirm`) and tries again.
pub fn confirm_first() -> Response {
    let mut r = (
        StatusCode::FORBIDDEN,
        Json(json!({
            "error": "give your password again to change users, tokens, peers or webhooks",
            "confirm": true,
        })),
    )
        .into_response();
    r.extensions_mut().insert(crate::routes::Recorded);
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    password: String,
}

/// `POST /api/session/confirm`: the browser session's user gives their
/// password again, which lets the session change users, tokens, peers and webhooks
/// for `SessionPolicy::confirmed_for`. Checked as a login (failures count).
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    by_session: Option<Extension<SessionCsrf>>,
    headers: HeaderMap,
    body: Result<Json<Confirmation>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(r) => return ApiError::new(r.status(), r.body_text()).into_response(),
    };
    // The caller must be the session itself: Basic credentials beside
    // someone else's cookie are the Basic user, whose password must not
    // confirm that session.
    let id = session_cookie(&headers, state.config.https).filter(|_| by_session.is_some());
    let Some(id) = id else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "only a browser session confirms its password (Basic credentials carry it each time)",
        )
        .into_response();
    };
    if let Err(r) = prove_password(&state, &p, addr.ip(), &body.password).await {
        return r;
    }
    if !state.auth.confirm_session(&id, p.name()) {
        return ApiError::new(StatusCode::UNAUTHORIZED, "the session has ended").into_response();
    }
    let mut e = AuditEvent::new(EventId::UserAuthentication, 'E', Outcome::Success);
    e.user = p.name().to_string();
    e.source = addr.ip().to_string();
    e.detail = "HTTP password confirmed (browser session)".into();
    state.archive.audit(e).await;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_a_tls_proxy_the_pages_https_origin_is_this_server() {
        let headers = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, "pacs.example.org".parse().unwrap());
            h.insert(header::ORIGIN, origin.parse().unwrap());
            h
        };
        // Served over HTTPS by Custos itself: that scheme only.
        assert!(same_origin(&headers("https://pacs.example.org"), true));
        assert!(!same_origin(&headers("http://pacs.example.org"), true));
        // Plain HTTP behind a proxy that terminates TLS: the browser's page
        // is https:// (its writes were refused as cross-site).
        assert!(same_origin(&headers("https://pacs.example.org"), false));
        assert!(same_origin(&headers("http://pacs.example.org"), false));
        for other in [
            "https://evil.example.com",
            "null",
            "https://pacs.example.org.evil.com",
        ] {
            assert!(!same_origin(&headers(other), false), "{other}");
            assert!(!same_origin(&headers(other), true), "{other}");
        }
    }
}
