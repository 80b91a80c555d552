//! OHIF v3 served same-origin under `/viewer/`, once `custos viewer install`
//! has put its `dist/` into the data folder. Same origin means the session
//! cookie authenticates every DICOMweb request OHIF makes, without CORS or a
//! token in its configuration. Custos writes `app-config.js` (OHIF's data
//! source pointed at `/dicom-web`); the page itself needs a browser session
//! (without one it sends the browser to the login page); its scripts, styles
//! and codecs hold no patient data and are served to anyone.
//!
//! The headers are OHIF's needs and no more: cross-origin isolation
//! (COOP/COEP, for SharedArrayBuffer), WebAssembly compilation and workers
//! from its own origin; its inline scripts are allowed by hash. Its image
//! codecs (emscripten's embind) build functions from strings, so the viewer's
//! policy allows `'unsafe-eval'` — under `/viewer/` only, never on Custos's
//! own pages.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;

use crate::AppState;
use crate::error::ApiError;

/// The viewer's folder inside the data folder.
pub const FOLDER: &str = "viewer";
/// Hashes of the rewritten index.html's inline scripts, one per line.
const SCRIPT_HASHES: &str = ".custos-script-hashes";

/// Rewrites OHIF's `index.html` in `dir` for the `/viewer/` base and records
/// the hashes of its inline scripts.
pub fn prepare(dir: &FsPath) -> Result<(), String> {
    let path = dir.join("index.html");
    let html = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let html = html
        .replace("window.PUBLIC_URL=\"/\"", "window.PUBLIC_URL=\"/viewer/\"")
        .replace("src=\"/", "src=\"/viewer/")
        .replace("href=\"/", "href=\"/viewer/");
    let hashes: Vec<String> = inline_scripts(&html)
        .into_iter()
        .map(|s| {
            let digest = <sha2::Sha256 as sha2::Digest>::digest(s.as_bytes());
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    std::fs::write(&path, html).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(SCRIPT_HASHES), hashes.join("\n")).map_err(|e| e.to_string())?;
    // webpack's runtime loads chunks from the public path it was built with,
    // and the style sheets name fonts from the root.
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let (from, to) = match path.extension().and_then(|e| e.to_str()) {
            Some("js") => (WEBPACK_ROOT, WEBPACK_VIEWER),
            // Fonts and images its style sheets name from the root.
            Some("css") => ("url(/", "url(/viewer/"),
            _ => continue,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        if text.contains(from) {
            std::fs::write(&path, text.replace(from, to)).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

const WEBPACK_ROOT: &str = "__webpack_require__.p = \"/\";";
const WEBPACK_VIEWER: &str = "__webpack_require__.p = \"/viewer/\";";

/// The bodies of `<script>` elements without a `src`.
fn inline_scripts(html: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let Some(open_end) = rest[start..].find('>') else {
            break;
        };
        let tag = &rest[start..start + open_end];
        let body_start = start + open_end + 1;
        let Some(close) = rest[body_start..].find("</script>") else {
            break;
        };
        if !tag.contains("src=") {
            out.push(&rest[body_start..body_start + close]);
        }
        rest = &rest[body_start + close..];
    }
    out
}

fn installed(state: &AppState) -> Option<PathBuf> {
    let dir = state.config.viewer_dir.as_ref()?;
    dir.join("index.html").is_file().then(|| dir.clone())
}

/// Whether OHIF is installed (the UI offers "Open in OHIF" then).
pub fn is_installed(state: &AppState) -> bool {
    installed(state).is_some()
}

fn not_installed() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "the OHIF viewer is not installed: `npm pack @ohif/app@3.13.2`, then `custos viewer install ohif-app-3.13.2.tgz`",
    )
    .into_response()
}

fn content_type(path: &FsPath) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether `path` is of a kind `custos viewer install` keeps gzipped too
/// (`NAME.gz` beside it), sent so to browsers that accept gzip.
pub fn gzipped(path: &FsPath) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("js" | "mjs" | "css" | "wasm" | "json" | "svg" | "txt")
    )
}

/// Where the gzipped copy of `path` is (`NAME.gz` beside it).
pub fn gzipped_copy(path: &FsPath) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

/// Whether the request's Accept-Encoding takes gzip (RFC 9110 12.5.3: gzip
/// listed without `q=0`, or else `*` so listed).
fn takes_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    for coding in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let taken = !parts.any(|p| {
            p.get(..2).is_some_and(|k| k.eq_ignore_ascii_case("q="))
                && p[2..].parse::<f32>().is_ok_and(|q| q == 0.0)
        });
        if name.eq_ignore_ascii_case("gzip") {
            gzip = Some(taken);
        } else if name == "*" {
            any = Some(taken);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// The headers of every viewer response.
fn isolate(r: &mut Response, script_hashes: &str) {
    let h = r.headers_mut();
    let csp = format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval' {script_hashes}; \
         worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; \
         font-src 'self' data:; connect-src 'self' data: blob:; media-src 'self' blob:; \
         object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert("content-security-policy", v);
    }
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-embedder-policy",
        HeaderValue::from_static("require-corp"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
}

fn hashes(dir: &FsPath) -> String {
    std::fs::read_to_string(dir.join(SCRIPT_HASHES))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("'sha256-") && l.ends_with('\''))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `GET /viewer`: the viewer's base has a slash.
pub async fn base() -> Redirect {
    Redirect::permanent("/viewer/")
}

/// `GET /viewer/`: OHIF's page.
pub async fn index(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    file(state, headers, String::new(), query).await
}

/// `GET /viewer/{*path}`: a file of OHIF's, `app-config.js` as Custos makes
/// it, or the page for OHIF's own routes (`/viewer/viewer?StudyInstanceUIDs=`).
pub async fn path(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    file(state, headers, path, query).await
}

async fn file(
    state: Arc<AppState>,
    headers: HeaderMap,
    path: String,
    query: Option<String>,
) -> Response {
    let Some(dir) = installed(&state) else {
        return not_installed();
    };
    let script_hashes = hashes(&dir);
    if path == "app-config.js" {
        let mut r = (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            app_config(&crate::qido::base_url(&state, &headers)),
        )
            .into_response();
        isolate(&mut r, &script_hashes);
        return r;
    }
    let relative = FsPath::new(&path);
    let safe = path.len() < 512
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    let wanted = dir.join(relative);
    let page = dir.join("index.html");
    let target = if safe && !path.is_empty() && wanted.is_file() {
        wanted
    } else {
        page.clone()
    };
    // OHIF's routes and its page itself need a logged-in browser.
    // A link from elsewhere (a RIS, an e-mail) comes back here after the
    // login: the UI opens `to` (only ever a /viewer/ address) once logged in.
    if target == page && !has_session(&state, &headers).await {
        let mut back = format!("/viewer/{path}");
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            back = format!("{back}?{q}");
        }
        let to = serde_urlencoded::to_string([("to", back)]).unwrap_or_default();
        return Redirect::to(&format!("/#/open?{to}")).into_response();
    }
    // Its gzipped copy when the browser takes it (made at install).
    let gz = (gzipped(&target) && takes_gzip(&headers)).then(|| gzipped_copy(&target));
    let gz_file = match gz {
        Some(gz) => tokio::fs::File::open(gz).await.ok(),
        None => None,
    };
    let encoding = gz_file.is_some().then_some("gzip");
    // Streamed: OHIF's codecs and source maps run to megabytes each.
    let opened = async {
        let file = match gz_file {
            Some(f) => f,
            None => tokio::fs::File::open(&target).await?,
        };
        let meta = file.metadata().await?;
        Ok::<_, std::io::Error>((file, meta))
    }
    .await;
    match opened {
        Ok((file, meta)) => {
            let tag = entity_tag(&meta, encoding.is_some());
            let unchanged = tag
                .as_deref()
                .is_some_and(|t| if_none_match_hits(&headers, t));
            let mut r = if unchanged {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                (
                    [
                        (header::CONTENT_TYPE, content_type(&target).to_string()),
                        (header::CONTENT_LENGTH, meta.len().to_string()),
                    ],
                    axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
                )
                    .into_response()
            };
            let h = r.headers_mut();
            if let Some(tag) = tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
                h.insert(header::ETAG, tag);
            }
            if gzipped(&target) {
                h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            }
            if let (Some(coding), false) = (encoding, unchanged) {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
            }
            let cache = if target.ends_with("index.html") {
                "no-cache"
            } else {
                "private, max-age=3600"
            };
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            isolate(&mut r, &script_hashes);
            r
        }
        Err(e) => ApiError::internal("reading the viewer", e).into_response(),
    }
}

/// A file's entity tag: its size and modification time, and which copy
/// (gzipped or not: two representations, two tags). After an hour (or at
/// once for the page) a browser asks again with it and gets 304 for an
/// unchanged file instead of ~30 MB again.
fn entity_tag(meta: &std::fs::Metadata, gz: bool) -> Option<String> {
    let modified = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let coding = if gz { "-gz" } else { "" };
    Some(format!(
        "\"{:x}-{:x}{coding}\"",
        meta.len(),
        modified.as_nanos()
    ))
}

/// Whether If-None-Match names `tag` (weak comparison, RFC 9110 13.1.2), or is `*`.
fn if_none_match_hits(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

async fn has_session(state: &AppState, headers: &HeaderMap) -> bool {
    match crate::session::session_cookie(headers, state.config.https) {
        Some(id) => state.auth.session(&id).await.is_ok(),
        None => false,
    }
}

/// OHIF's configuration: one DICOMweb data source, this server.
fn app_config(dicom_web: &str) -> String {
    let root = serde_json::to_string(dicom_web).unwrap_or_else(|_| "\"/dicom-web\"".into());
    let wado_uri = serde_json::to_string(&dicom_web.replace("/dicom-web", "/wado"))
        .unwrap_or_else(|_| "\"/wado\"".into());
    format!(
        r#"/* Written by Custos: OHIF reads this archive over DICOMweb, same origin,
   authenticated by the browser session. */
window.config = {{
  routerBasename: '/viewer',
  extensions: [],
  modes: [],
  customizationService: {{}},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: {{ option: 'never' }},
  defaultDataSourceName: 'custos',
  dataSources: [
    {{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'custos',
      configuration: {{
        friendlyName: 'Custos',
        name: 'custos',
        wadoUriRoot: {wado_uri},
        qidoRoot: {root},
        wadoRoot: {root},
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: false,
        bulkDataURI: {{ enabled: true }},
        omitQuotationForMultipartRequest: true,
      }},
    }},
  ],
}};
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_when_listed_without_q_zero_or_under_a_star() {
        let takes = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            takes_gzip(&h)
        };
        assert!(takes("gzip, deflate, br"));
        assert!(takes("br;q=1.0, GZIP;q=0.5"));
        assert!(takes("*"));
        assert!(!takes("identity"));
        assert!(!takes("gzip;q=0, br"));
        assert!(!takes("gzip; q=0.0, *"));
        assert!(!takes("*;q=0"));
        assert!(!takes("gzip;Q=0"));
        assert!(!takes(""));
        assert!(!takes_gzip(&HeaderMap::new()));
    }

    #[test]
    fn if_none_match_names_the_tag_weakly_or_by_star() {
        let names = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            if_none_match_hits(&h, "\"a-1\"")
        };
        assert!(names("\"a-1\""));
        assert!(names("\"b-2\", W/\"a-1\""));
        assert!(names("*"));
        assert!(!names("\"a-1-gz\""));
        assert!(!names("\"a-2\""));
        assert!(!if_none_match_hits(&HeaderMap::new(), "\"a-1\""));
    }

    #[test]
    fn inline_scripts_are_found_and_src_scripts_are_not() {
        let html = r#"<head><script>window.PUBLIC_URL="/"</script><script src="/a.js"></script><script defer>go()</script>"#;
        assert_eq!(
            inline_scripts(html),
            vec!["window.PUBLIC_URL=\"/\"", "go()"]
        );
    }
}
