//! QIDO-RS (PS3.18 10.6): search for studies, series and instances with the
//! matching rules of C-FIND — the same `Query` goes to the same index.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use custos_core::query::{Key, KeyKind, Level, Matcher, Query};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;
use custos_archive::view::row_object;

/// A query attribute named by keyword (`PatientName`) or tag (`00100010`).
fn key_named(name: &str) -> Option<Key> {
    if let Some(k) = Key::ALL.iter().find(|k| k.name() == name) {
        return Some(*k);
    }
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&name[..4], 16).ok()?;
        let e = u16::from_str_radix(&name[4..], 16).ok()?;
        return Key::from_tag(g, e);
    }
    None
}

/// The query a QIDO-RS request asks for (`fixed` are the UIDs of the path),
/// and what it asked for that is not done here ([`Notes`]): attributes not
/// indexed or below the level searched (PS3.18 10.6.1.3.1: ignored and named
/// in a `Warning: 299` header, not refused), fuzzy matching.
pub fn parse_query(
    level: Level,
    fixed: &[(Key, String)],
    raw: Option<&str>,
    cap: usize,
) -> Result<(Query, Notes), ApiError> {
    let mut ignored = Vec::new();
    let mut fuzzy = false;
    // The values given of keys whose repeats add to a list.
    let mut listed: std::collections::BTreeMap<Key, String> = Default::default();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| ApiError::bad_request("malformed query string"))?;
    let mut conditions: Vec<(Key, Matcher)> = fixed
        .iter()
        .map(|(k, v)| (*k, Matcher::Single(v.clone())))
        .collect();
    let mut limit = cap;
    let mut offset = 0usize;
    let mut order = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "limit" => {
                limit = count(&value)
                    .ok_or_else(|| ApiError::bad_request("limit must be a non-negative integer"))?
                    .min(cap)
            }
            "offset" => {
                offset = count(&value)
                    .ok_or_else(|| ApiError::bad_request("offset must be a non-negative integer"))?
            }
            // Names are matched case-insensitively, with wildcards, nothing
            // fuzzier: asked for, that is said (a Warning).
            "fuzzymatching" => {
                if value != "true" && value != "false" {
                    return Err(ApiError::bad_request("fuzzymatching is true or false"));
                }
                fuzzy = value == "true";
            }
            // Attributes not in the index cannot be returned, so includefield
            // changes nothing: every indexed attribute is always returned.
            "includefield" => {}
            // The Accept header's stand-in (taken by the router's layer).
            "accept" => {}
            // dcm4chee's extension: `orderby=-StudyDate`, repeated or
            // comma-separated, a leading `-` for descending.
            "orderby" => {
                for item in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                    let (name, descending) = match item.strip_prefix('-') {
                        Some(n) => (n, true),
                        None => (item, false),
                    };
                    let key = key_named(name)
                        .filter(|k| k.sortable_at(level))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "orderby names a stored attribute of this level or above",
                            )
                        })?;
                    if order.len() < 8 && !order.iter().any(|(k, _)| *k == key) {
                        order.push((key, descending));
                    }
                }
            }
            _ => {
                let Some(key) = key_named(&name).filter(|k| k.level() <= level) else {
                    // Only names that could be attributes are echoed back.
                    let shown: String = name
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .take(64)
                        .collect();
                    if !shown.is_empty() && ignored.len() < 16 && !ignored.contains(&shown) {
                        ignored.push(shown);
                    }
                    continue;
                };
                // Counts are returned, not matched: a value given for one is
                // said to be ignored rather than silently answered by all.
                if key.kind() == KeyKind::Computed
                    && key != Key::ModalitiesInStudy
                    && !value.trim().is_empty()
                {
                    let shown = key.name().to_string();
                    if !ignored.contains(&shown) {
                        ignored.push(shown);
                    }
                    continue;
                }
                // Lists are comma-separated in a URL (PS3.18 8.3.4.1; OHIF's
                // modality filter sends ModalitiesInStudy=CT%2CMR); neither
                // UIDs nor modality codes can contain a comma. Repeated
                // (ModalitiesInStudy=CT&ModalitiesInStudy=MR, a UID given
                // twice), any of them: gathered, and read once at the end.
                if key.kind() == KeyKind::Uid || key == Key::ModalitiesInStudy {
                    let list = listed.entry(key).or_default();
                    if !list.is_empty() {
                        list.push('\\');
                    }
                    list.push_str(&value.replace(',', "\\"));
                    continue;
                }
                add_condition(&mut conditions, fixed, key, &value)?;
            }
        }
    }
    for (key, value) in listed {
        add_condition(&mut conditions, fixed, key, &value)?;
    }
    Ok((
        Query {
            level,
            conditions,
            limit,
            offset,
            order,
        },
        Notes { ignored, fuzzy },
    ))
}

/// Adds the condition `key` = `value` (replacing one given before). A UID in
/// the path (studies/{study}/series) is the search's scope: the query string
/// may repeat it, not widen or move it.
fn add_condition(
    conditions: &mut Vec<(Key, Matcher)>,
    fixed: &[(Key, String)],
    key: Key,
    value: &str,
) -> Result<(), ApiError> {
    let matcher = Matcher::parse(key.kind(), value)
        .map_err(|_| ApiError::bad_request(format!("invalid value for {}", key.name())))?;
    if let Some((_, path)) = fixed.iter().find(|(k, _)| *k == key) {
        let same = match &matcher {
            Matcher::Universal => true,
            Matcher::Single(v) => v == path,
            Matcher::List(l) => l.contains(path),
            _ => false,
        };
        if !same {
            return Err(ApiError::bad_request(format!(
                "{} in the query string disagrees with the path",
                key.name()
            )));
        }
        return Ok(());
    }
    conditions.retain(|(k, _)| *k != key);
    conditions.push((key, matcher));
    Ok(())
}

/// What a search asked for that is not done, said in `Warning` headers.
pub struct Notes {
    /// Attributes not matched here (not indexed, or below the level).
    pub ignored: Vec<String>,
    /// `fuzzymatching=true`: names are matched literally (with wildcards).
    pub fuzzy: bool,
}

/// The `/dicom-web` URL clients reach us at, for RetrieveURL values.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.len() < 256
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    let scheme = if state.config.https { "https" } else { "http" };
    format!("{scheme}://{host}/dicom-web")
}

pub fn check_uid(uid: &str) -> Result<(), ApiError> {
    if uid.is_empty() || uid.len() > 64 || !uid.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(ApiError::bad_request("not a valid UID"));
    }
    Ok(())
}

async fn search(
    state: Arc<AppState>,
    principal: Principal,
    level: Level,
    fixed: Vec<(Key, String)>,
    raw: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require(&principal, Action::Find)?;
    crate::multipart::json_accepted(&headers)?;
    for (_, uid) in &fixed {
        check_uid(uid)?;
    }
    let cap = state.config.max_find_results;
    let (mut query, notes) = parse_query(level, &fixed, raw.as_deref(), cap)?;
    let mut e = crate::audit::event(
        custos_core::audit::EventId::Query,
        'E',
        custos_core::audit::Outcome::Success,
    );
    e.detail = format!("QIDO-RS {}", e.name_query(&query));
    state.archive.record_access(e).await?;
    let wanted = query.limit;
    query.limit = wanted.saturating_add(1);
    let mut rows = state.archive.find(query).await?;
    let truncated = rows.len() > wanted;
    rows.truncate(wanted);
    tracing::info!(
        user = principal.name(),
        level = level.name(),
        results = rows.len(),
        "QIDO-RS search"
    );
    let base = base_url(&state, &headers);
    let body: Vec<_> = rows
        .iter()
        .map(|r| row_object(r, None, level, &base))
        .collect();
    let mut response = (
        [(header::CONTENT_TYPE, "application/dicom+json")],
        serde_json::to_vec(&body).map_err(|e| ApiError::internal("encoding results", e))?,
    )
        .into_response();
    if truncated && wanted == cap {
        response.headers_mut().append(
            header::WARNING,
            HeaderValue::from_static(
                "299 custos \"The number of results exceeded the maximum supported by the server. Additional results can be requested.\"",
            ),
        );
    }
    if !notes.ignored.is_empty()
        && let Ok(v) = HeaderValue::from_str(&format!(
            "299 custos \"The following attributes are not supported and were ignored: {}\"",
            notes.ignored.join(", ")
        ))
    {
        response.headers_mut().append(header::WARNING, v);
    }
    if notes.fuzzy {
        response.headers_mut().append(
            header::WARNING,
            HeaderValue::from_static(
                "299 custos \"The fuzzymatching parameter is not supported. Only literal matching has been performed.\"",
            ),
        );
    }
    Ok(response)
}

pub async fn studies(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(state, p, Level::Study, vec![], raw, headers).await
}

pub async fn series(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(state, p, Level::Series, vec![], raw, headers).await
}

pub async fn study_series(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let fixed = vec![(Key::StudyInstanceUID, study)];
    search(state, p, Level::Series, fixed, raw, headers).await
}

pub async fn instances(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search(state, p, Level::Image, vec![], raw, headers).await
}

pub async fn study_instances(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let fixed = vec![(Key::StudyInstanceUID, study)];
    search(state, p, Level::Image, fixed, raw, headers).await
}

pub async fn series_instances(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let fixed = vec![
        (Key::StudyInstanceUID, study),
        (Key::SeriesInstanceUID, series),
    ];
    search(state, p, Level::Image, fixed, raw, headers).await
}

/// A non-negative integer; one too large for this machine means "as many as
/// there are" (the result cap still applies).
fn count(value: &str) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(usize::MAX))
}
