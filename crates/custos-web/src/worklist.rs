//! The modality worklist's admin API (`/api/worklist`): a RIS (or an
//! administrator) schedules procedure steps as DICOM JSON (PS3.18 F.2, the
//! attributes of PS3.4 K.6); modalities read them by C-FIND. The `worklist`
//! right; every change is audited as an Order Record (110109).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use custos_archive::worklist::WorklistError;
use custos_core::audit::{EventId, Outcome};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Items listed at most (and the default `limit`).
const LIST_LIMIT: usize = 1000;

fn refused(e: WorklistError) -> ApiError {
    match e {
        WorklistError::Invalid(why) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why),
        WorklistError::Index(e) => e.into(),
    }
}

/// A body that is not JSON at all is a bad request; JSON that is not a
/// worklist item is unprocessable (the archive says why).
fn check_json(body: &[u8]) -> Result<()> {
    serde_json::from_slice::<serde_json::Value>(body)
        .map(|_| ())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("not JSON: {e}")))
}

async fn record(s: &AppState, action: char, detail: String, patient: Option<String>) {
    let e = naming_patients(EventId::OrderRecord, action, detail, patient);
    s.archive.audit(e).await;
}

/// An audit event naming the patients (each once).
fn naming_patients(
    event: EventId,
    action: char,
    detail: String,
    patients: impl IntoIterator<Item = String>,
) -> custos_core::audit::AuditEvent {
    let mut e = crate::audit::event(event, action, Outcome::Success);
    e.detail = detail;
    for p in patients {
        if !e.patient_ids.contains(&p) {
            e.patient_ids.push(p);
        }
    }
    e
}

fn patient_of(item: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(item).ok()?;
    v["00100020"]["Value"][0].as_str().map(str::to_string)
}

/// `POST /api/worklist`: 201 with the new item's id (and its Location).
pub async fn add(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> Result<Response> {
    require(&p, Action::Worklist)?;
    check_json(&body)?;
    let id = s.archive.add_worklist_item(&body).await.map_err(refused)?;
    record(
        &s,
        'C',
        format!("worklist item {id} added"),
        patient_of(&body),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/worklist/{id}"))],
        Json(json!({ "id": id })),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// First scheduled date (YYYYMMDD), inclusive.
    from: Option<String>,
    /// Last scheduled date (YYYYMMDD), inclusive.
    to: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/worklist?from=&to=&limit=`: items by scheduled date and time.
pub async fn list(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    q: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Worklist)?;
    let Query(q) = q.map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, r.body_text()))?;
    for d in [&q.from, &q.to].into_iter().flatten() {
        if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "dates are YYYYMMDD"));
        }
    }
    let limit = q.limit.unwrap_or(LIST_LIMIT);
    if limit > LIST_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit is at most {LIST_LIMIT}"),
        ));
    }
    let items = s.archive.worklist_items(q.from, q.to, limit).await?;
    // Patient data leaves: recorded as a query naming each patient listed.
    let patients: Vec<String> = items
        .iter()
        .filter_map(|(_, item)| item["00100020"]["Value"][0].as_str().map(str::to_string))
        .collect();
    let e = naming_patients(
        EventId::Query,
        'E',
        format!("worklist items listed ({})", items.len()),
        patients,
    );
    s.archive.record_access(e).await?;
    let items: Vec<_> = items
        .into_iter()
        .map(|(id, item)| json!({ "id": id, "item": item }))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// An item id from the path: digits that fit an i64 (else 400).
fn id_of(raw: &str) -> Result<i64> {
    raw.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "a worklist item id is a number"))
}

fn not_found(id: i64) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no worklist item {id}"))
}

/// `GET /api/worklist/{id}`: the item as DICOM JSON.
pub async fn get_one(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Worklist)?;
    let id = id_of(&id)?;
    let item = s
        .archive
        .worklist_item(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let patient = item["00100020"]["Value"][0].as_str().map(str::to_string);
    let e = naming_patients(
        EventId::OrderRecord,
        'R',
        format!("worklist item {id} read"),
        patient,
    );
    s.archive.record_access(e).await?;
    Ok(Json(item))
}

/// `PUT /api/worklist/{id}`: replaces the item; 204, or 404.
pub async fn replace(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response> {
    require(&p, Action::Worklist)?;
    let id = id_of(&id)?;
    check_json(&body)?;
    if !s
        .archive
        .replace_worklist_item(id, &body)
        .await
        .map_err(refused)?
    {
        return Err(not_found(id));
    }
    record(
        &s,
        'U',
        format!("worklist item {id} changed"),
        patient_of(&body),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/worklist/{id}`: 204, or 404.
pub async fn remove(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response> {
    require(&p, Action::Worklist)?;
    let id = id_of(&id)?;
    // Whose item it was, read before it goes.
    let patient = s
        .archive
        .worklist_item(id)
        .await?
        .and_then(|v| v["00100020"]["Value"][0].as_str().map(str::to_string));
    if !s.archive.remove_worklist_item(id).await? {
        return Err(not_found(id));
    }
    record(&s, 'D', format!("worklist item {id} removed"), patient).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/mpps/{uid}`: a performed procedure step a modality reported —
/// its status, study, the worklist item it performs, its attributes.
pub async fn performed_step(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Worklist)?;
    let row = s.archive.mpps(&uid).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no such performed procedure step".to_string(),
        )
    })?;
    let attributes: serde_json::Value = serde_json::from_str(&row.attributes_json)
        .map_err(|e| custos_index::IndexError::Corrupt(format!("performed procedure step: {e}")))?;
    let patient = attributes["00100020"]["Value"][0]
        .as_str()
        .map(str::to_string);
    let e = naming_patients(
        EventId::OrderRecord,
        'R',
        format!("performed procedure step {uid} read"),
        patient,
    );
    s.archive.record_access(e).await?;
    Ok(Json(json!({
        "uid": row.sop_instance_uid,
        "status": row.status,
        "study_uid": row.study_uid,
        "accession_number": row.accession_number,
        "worklist_id": row.worklist_id,
        "attributes": attributes,
    })))
}
