//! The browser UI: a login page, the study list, a study page with a quick
//! viewer, upload, administration, forwarding jobs, status, the modality worklist, the audit trail and one's own password — plain ES modules and CSS embedded in the
//! binary (no build step, no CDN, nothing fetched at run time). The page and
//! its files are the only unauthenticated content besides `/healthz` and the
//! login, and hold no patient data: everything else comes from the
//! authenticated API with the session cookie.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Custos's own pages: scripts, styles and images from this origin only; no
/// inline script or style; nothing may frame them.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
base-uri 'none'; frame-ancestors 'none'";

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "upload.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/upload.js"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/admin.js"),
    ),
    (
        "audit.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/audit.js"),
    ),
    (
        "jobs.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/jobs.js"),
    ),
    (
        "status.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/status.js"),
    ),
    (
        "worklist.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/worklist.js"),
    ),
    (
        "account.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/account.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/dom.js"),
    ),
    (
        "viewer.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/viewer.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../ui/app.css"),
    ),
];

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`: the application shell (it shows the login form until a session
/// exists).
pub async fn index() -> Response {
    page("text/html; charset=utf-8", include_str!("../ui/index.html"))
}

/// `GET /ui/{file}`: a script or style sheet of the UI.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => crate::error::ApiError::not_found().into_response(),
    }
}
