//! The admin API (JSON under `/api`): peers, users, tokens, statistics and
//! deletion. Admin role only (deletion: the `delete` right); secrets are
//! accepted here but never returned, except a new token's text, once.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use custos_archive::registry;
use custos_archive::routing::{Destination, DestinationError};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;
use crate::qido::check_uid;

type Result<T> = std::result::Result<T, ApiError>;

/// Records a change of peers, users or tokens (Security Alert, as PS3.15
/// A.5.3.11 lists for security configuration changes).
pub(crate) async fn change(s: &AppState, detail: String) {
    let mut e = crate::audit::event(
        custos_core::audit::EventId::SecurityAlert,
        'E',
        custos_core::audit::Outcome::Success,
    );
    e.detail = detail;
    s.archive.audit(e).await;
}

/// A body that is not the JSON we take, answered in our JSON error shape.
fn json_rejection(r: JsonRejection) -> ApiError {
    ApiError::new(r.status(), r.body_text())
}

/// Well-formed but unacceptable values (a weak password, an unknown right).
fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

pub async fn statistics(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let stats = s.archive.statistics().await?;
    Ok(Json(json!({
        "patients": stats.patients,
        "studies": stats.studies,
        "series": stats.series,
        "instances": stats.instances,
        "stored_bytes": stats.bytes,
    })))
}

pub async fn peers(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let peers = s.archive.registry().peers().await?;
    Ok(Json(json!(
        peers
            .iter()
            .map(|p| json!({
                "ae_title": p.ae_title,
                "host": p.host.to_string(),
                "port": p.port,
                "allow": p.permissions.actions().map(|a| a.name()).collect::<Vec<_>>(),
            "tls_required": p.tls_required,
            "cert_fingerprint": (!p.cert_sha256.is_empty()).then(|| format!("SHA256:{}", p.cert_sha256)),
            "cert_subject": (!p.cert_subject.is_empty()).then(|| p.cert_subject.clone()),
            "ca_bundle": !p.ca_pem.is_empty(),
            }))
            .collect::<Vec<_>>()
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerBody {
    ae_title: String,
    host: String,
    port: u16,
    allow: Vec<String>,
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    cert_fingerprint: Option<String>,
    #[serde(default)]
    cert_subject: Option<String>,
    /// PEM CA bundle the peer's client certificates chain to.
    #[serde(default)]
    ca_pem: Option<String>,
}

pub async fn put_peer(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    body: std::result::Result<Json<PeerBody>, JsonRejection>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    let Json(body) = body.map_err(json_rejection)?;
    let spec = registry::PeerSpec {
        ae_title: body.ae_title,
        host: body.host,
        port: body.port,
        allow: body.allow.join(","),
        tls_required: body.tls_required,
        cert_fingerprint: body.cert_fingerprint,
        cert_subject: body.cert_subject,
        ca_pem: body.ca_pem,
    };
    let (peer, line) = registry::register_peer(s.archive.registry().as_ref(), spec).await?;
    tracing::info!(by = p.name(), peer = %peer.ae_title, "peer registered through the API");
    change(&s, line).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn remove_peer(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(ae): Path<String>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    let line = registry::remove_peer(s.archive.registry().as_ref(), &ae).await?;
    tracing::info!(by = p.name(), peer = %ae, "peer removed through the API");
    change(&s, line).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/peers/{ae}/echo`: a C-ECHO from Custos to the peer, to test its
/// address, AE title and TLS set-up. 200 with `ok` and the status or the
/// reason; 404 for an unknown peer.
pub async fn echo_peer(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(ae): Path<String>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let peer = s
        .archive
        .peer_directory()
        .peer(&ae)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no peer named {ae}")))?;
    let Some(echo) = &s.peer_echo else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outbound DICOM is not available here",
        ));
    };
    let answer = match echo.echo(&peer).await {
        Ok(r) => json!({
            "ok": r.status == 0,
            "status": r.status,
            "tls": r.tls,
            "ms": r.elapsed.as_millis() as u64,
        }),
        Err(why) => json!({ "ok": false, "error": why }),
    };
    tracing::info!(by = p.name(), peer = %ae, ok = %answer["ok"], "peer tested with C-ECHO");
    Ok(Json(answer))
}

pub async fn users(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let users = s.archive.registry().users().await?;
    Ok(Json(json!(
        users
            .iter()
            .map(|u| json!({
                "name": u.name,
                "role": u.role.name(),
                "disabled": u.disabled,
                "password_changed": u.password_changed,
            }))
            .collect::<Vec<_>>()
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    name: String,
    role: String,
    password: String,
}

/// Adds a user: 201, or 409 when the name exists (change it with PUT).
pub async fn add_user(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    body: std::result::Result<Json<UserBody>, JsonRejection>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    let Json(body) = body.map_err(json_rejection)?;
    let (user, line) = registry::add_user(
        s.archive.registry().as_ref(),
        &body.name,
        &body.role,
        body.password,
    )
    .await?;
    tracing::info!(by = p.name(), user = %user.name, role = %user.role, "user added through the API");
    change(&s, line).await;
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChangeBody {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
}

/// Changes an existing user's role, password or state; 404 if there is none.
pub async fn update_user(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: std::result::Result<Json<UserChangeBody>, JsonRejection>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    let Json(body) = body.map_err(json_rejection)?;
    if name == p.name() && (body.disabled == Some(true) || body.role.is_some()) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "you cannot disable yourself or change your own role",
        ));
    }
    // Without the current password, a stolen session (or a token) could
    // lock the owner out of their own account.
    if name == p.name() && body.password.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "change your own password with PUT /api/session/password, which asks for the current one",
        ));
    }
    let change_of = registry::UserChange {
        role: body.role,
        password: body.password,
        disabled: body.disabled,
    };
    let (_, line) = registry::update_user(s.archive.registry().as_ref(), &name, change_of).await?;
    tracing::info!(by = p.name(), user = %name, "user changed through the API");
    change(&s, line).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn remove_user(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    if name == p.name() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "you cannot remove yourself",
        ));
    }
    let line = registry::remove_user(s.archive.registry().as_ref(), &name).await?;
    tracing::info!(by = p.name(), user = %name, "user removed through the API");
    change(&s, line).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn tokens(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let tokens = s.archive.registry().tokens().await?;
    Ok(Json(json!(
        tokens
            .iter()
            .map(|t| json!({
                "id": t.id,
                "user": t.user,
                "read_only": t.read_only,
                "created": t.created,
                "expires": t.expires,
                "revoked": t.revoked,
            }))
            .collect::<Vec<_>>()
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    user: String,
    expires_days: u32,
    #[serde(default)]
    read_only: bool,
}

pub async fn create_token(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    body: std::result::Result<Json<TokenBody>, JsonRejection>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    let Json(body) = body.map_err(json_rejection)?;
    if body.expires_days == 0 || body.expires_days > 3650 {
        return Err(unprocessable("expires_days is 1 to 3650"));
    }
    let (t, line) = registry::create_token(
        s.archive.registry().as_ref(),
        &body.user,
        body.read_only,
        i64::from(body.expires_days) * 86_400,
    )
    .await?;
    tracing::info!(by = p.name(), user = %body.user, token = %t.token.id, "token created through the API");
    change(&s, line).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": t.token.id, "token": t.text, "expires": t.token.expires })),
    )
        .into_response())
}

pub async fn revoke_token(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    let line = registry::revoke_token(s.archive.registry().as_ref(), &id).await?;
    tracing::info!(by = p.name(), token = %id, "token revoked through the API");
    change(&s, line).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_study(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
) -> Result<Response> {
    delete(s, p, study, None).await
}

pub async fn delete_series(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series)): Path<(String, String)>,
) -> Result<Response> {
    delete(s, p, study, Some(series)).await
}

async fn delete(
    s: Arc<AppState>,
    p: Principal,
    study: String,
    series: Option<String>,
) -> Result<Response> {
    require(&p, Action::Delete)?;
    check_uid(&study)?;
    if let Some(se) = &series {
        check_uid(se)?;
    }
    // The patient is looked up while the study's rows still exist: an
    // auditor searching by patient finds the deletion.
    let mut e = crate::audit::event(
        custos_core::audit::EventId::StudyDeleted,
        'D',
        custos_core::audit::Outcome::Success,
    );
    e.study_uids.push(study.clone());
    s.archive.name_patients(&mut e).await;
    let what = format!(
        "{study}{}",
        series
            .as_deref()
            .map(|x| format!(" series {x}"))
            .unwrap_or_default()
    );
    let target = match &series {
        Some(se) => crate::wado::Target::series(study.clone(), se.clone()),
        None => crate::wado::Target::study(study.clone()),
    };
    let counted = s.archive.retrieve_set(target.query()).await?.total;
    if counted == 0 {
        return Err(ApiError::not_found());
    }
    // The deletion's record is durable before anything goes: one the trail
    // cannot take does not happen (503), and one a crash cuts short is in
    // it. What then goes wrong is recorded after it.
    e.detail = format!("deleted {what}: {counted} instances");
    s.archive.record_access(e.clone()).await?;
    let (removed, left) = match s.archive.delete(&study, series.as_deref()).await {
        Ok(done) => done,
        Err(err) => {
            e.outcome = custos_core::audit::Outcome::SeriousFailure;
            e.detail = format!("deleting {what} failed (nothing or part of it deleted)");
            s.archive.audit(e).await;
            return Err(ApiError::internal("deleting", err));
        }
    };
    if removed as u64 != counted {
        // Another deletion took them first, or instances arrived between
        // the count and the deletion: the record says what went.
        e.outcome = custos_core::audit::Outcome::MinorFailure;
        e.detail = format!("deleted {what}: {removed} instances, not the {counted} counted before");
        s.archive.audit(e.clone()).await;
        if removed == 0 {
            return Err(ApiError::not_found());
        }
    }
    if left > 0 {
        // The index no longer has them (nobody is served them); their
        // files stay until `fsck --repair`.
        e.outcome = custos_core::audit::Outcome::MinorFailure;
        e.detail = format!(
            "deleted {what}: {left} of its {removed} stored files could not be removed (fsck --repair removes them)"
        );
        s.archive.audit(e).await;
    }
    tracing::info!(
        by = p.name(),
        instances = removed,
        files_left = left,
        level = if series.is_some() { "series" } else { "study" },
        "deleted through the API"
    );
    let mut answer = json!({ "deleted_instances": removed });
    if left > 0 {
        answer["files_left"] = json!(left);
    }
    Ok(Json(answer).into_response())
}

#[derive(Deserialize)]
pub struct JobsQuery {
    state: Option<String>,
    limit: Option<usize>,
    /// Only jobs older than this one (the next page).
    before: Option<i64>,
}

/// `GET /api/destinations`: where studies can be sent (registered peers
/// with an address and port, DICOMweb destinations), for the UI's "Send".
pub async fn destinations(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let list: Vec<_> = s
        .archive
        .destinations()
        .await?
        .into_iter()
        .map(|(name, d)| {
            let kind = match d {
                Destination::Peer => "dicom",
                Destination::Web(_) => "dicomweb",
            };
            json!({ "name": name, "kind": kind })
        })
        .collect();
    Ok(Json(json!({ "destinations": list })))
}

/// `GET /api/jobs?state=&limit=`: the forwarding queue, newest first.
pub async fn jobs(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    q: std::result::Result<
        axum::extract::Query<JobsQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let axum::extract::Query(q) =
        q.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(custos_core::routing::JobState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "state is pending, done, failed or cancelled",
            )
        })?),
    };
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "before is a job id (1 or more)",
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if limit > 1000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit is at most 1000",
        ));
    }
    let jobs: Vec<_> = s
        .archive
        .jobs(state, limit, q.before)
        .await?
        .into_iter()
        .map(|j| {
            json!({
                "id": j.id, "state": j.state.name(), "attempts": j.attempts,
                "destination": j.destination, "scope": j.scope.name(), "uid": j.uid,
                "reason": j.reason, "last_error": j.last_error, "next_at": j.next_at, "created": j.created,
            })
        })
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

fn job_id(raw: &str) -> Result<i64> {
    raw.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "a job id is a number"))
}

/// `POST /api/jobs/{id}/retry`: a failed or cancelled job queued again.
pub async fn retry_job(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response> {
    change_job(&s, &p, &id, true).await
}

/// `POST /api/jobs/{id}/cancel`: a pending or failed job cancelled.
pub async fn cancel_job(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response> {
    change_job(&s, &p, &id, false).await
}

/// Retries (or cancels) job `id`: 204, or 404 if it is in no state for that.
async fn change_job(s: &AppState, p: &Principal, id: &str, retry: bool) -> Result<Response> {
    require(p, Action::Admin)?;
    let id = job_id(id)?;
    let changed = if retry {
        s.archive.retry_job(id).await?
    } else {
        s.archive.cancel_job(id).await?
    };
    if !changed {
        let which = if retry {
            "failed or cancelled"
        } else {
            "pending or failed"
        };
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no {which} job {id}"),
        ));
    }
    tracing::info!(
        by = p.name(),
        job = id,
        retry,
        "job changed through the API"
    );
    let e = crate::audit::by_caller(custos_archive::routing::job_changed(id, retry));
    s.archive.audit(e).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct SendBody {
    destination: String,
}

/// `POST /api/studies/{study}/send` `{"destination": NAME}`: every instance
/// of the study queued for a registered peer or a DICOMweb destination; 202
/// with how many.
pub async fn send_study(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    body: std::result::Result<Json<SendBody>, JsonRejection>,
) -> Result<Response> {
    require(&p, Action::Admin)?;
    check_uid(&study)?;
    let Json(body) = body.map_err(json_rejection)?;
    match s.archive.destination(&body.destination).await {
        Ok(_) => {}
        Err(DestinationError::Index(e)) => return Err(e.into()),
        Err(e) => return Err(unprocessable(e.to_string())),
    }
    let n = s.archive.send_study(&study, &body.destination).await?;
    if n == 0 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such study"));
    }
    tracing::info!(by = p.name(), destination = %body.destination, instances = n, "study queued for sending");
    let mut e = crate::audit::by_caller(custos_archive::routing::sent_by_hand(
        &study,
        &body.destination,
        n,
    ));
    s.archive.name_patients(&mut e).await;
    s.archive.audit(e).await;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": n }))).into_response())
}
