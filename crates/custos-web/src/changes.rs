//! `GET /api/changes` (the change feed: the `find` right, audited as a
//! query) and `/api/webhooks` (admin): what other systems use to react to
//! new, changed and deleted studies.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use custos_archive::changes::WebhookError;
use custos_core::audit::{EventId, Outcome};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Deserialize)]
pub struct FeedQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/changes?after=SEQ&limit=N`: changes after SEQ in order, and
/// the last sequence number returned (where to continue).
pub async fn feed(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    q: std::result::Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Find)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = q.after.unwrap_or(0).max(0);
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit is 1 to 1000"));
    }
    let changes = s.archive.changes(after, limit).await?;
    let last = changes.last().map_or(after, |c| c.seq);
    let mut e = crate::audit::event(EventId::Query, 'E', Outcome::Success);
    e.detail = format!("change feed after {after}: {} changes", changes.len());
    s.archive.record_access(e).await?;
    Ok(Json(json!({ "changes": changes, "last": last })))
}

/// `GET /api/webhooks`: the receivers, never their secrets.
pub async fn list(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let hooks: Vec<_> = s
        .archive
        .webhooks()
        .await?
        .into_iter()
        .map(|w| json!({ "id": w.id, "url": w.url, "events": w.events, "created": w.created }))
        .collect();
    Ok(Json(json!({ "webhooks": hooks })))
}

#[derive(Deserialize)]
pub struct NewWebhook {
    url: String,
    events: Vec<String>,
    secret: String,
}

/// `POST /api/webhooks` `{"url", "events": [...], "secret"}`: 201 with its id.
pub async fn add(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    body: std::result::Result<Json<NewWebhook>, JsonRejection>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    let Json(body) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let id = s
        .archive
        .add_webhook(&body.url, &body.events.join(","), &body.secret)
        .await
        .map_err(|e| match e {
            WebhookError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            WebhookError::Index(e) => e.into(),
        })?;
    let mut e = crate::audit::event(EventId::SecurityAlert, 'E', Outcome::Success);
    e.detail = format!(
        "webhook {id} added: {} for {}",
        body.url,
        body.events.join(",")
    );
    s.archive.audit(e).await;
    let mut r = (StatusCode::CREATED, Json(json!({ "id": id }))).into_response();
    if let Ok(v) = format!("/api/webhooks/{id}").parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// `DELETE /api/webhooks/{id}`: 204, or 404.
pub async fn remove(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("a webhook id is a number"))?;
    if !s.archive.remove_webhook(id).await? {
        return Err(ApiError::not_found());
    }
    let mut e = crate::audit::event(EventId::SecurityAlert, 'E', Outcome::Success);
    e.detail = format!("webhook {id} removed");
    s.archive.audit(e).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
