//! Changing what is stored, over HTTP. Retention (the `delete` right): `GET
//! /api/retention` lists what a pass would delete now (a dry run, audited),
//! `POST /api/retention/run` runs one, `PUT /api/studies/{study}/protected`
//! sets a study's protection. Corrections (admin): `POST
//! /api/studies/{study}/correct`, `POST /api/patients/merge`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use axum::http::StatusCode;
use custos_archive::corrections::{CorrectionError, parse_changes};
use custos_archive::retention::RetentionReport;
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;
use crate::qido::check_uid;

type Result<T> = std::result::Result<T, ApiError>;

fn report_json(r: &RetentionReport) -> serde_json::Value {
    let studies: Vec<_> = r
        .deleted
        .iter()
        .map(|(s, policy)| {
            json!({
                "study": s.study_uid, "patient_id": s.patient_id,
                "study_date": s.study_date, "policy": policy,
            })
        })
        .collect();
    json!({
        "studies": studies, "count": r.deleted_count, "protected": r.protected,
        "receiving": r.receiving, "examined": r.studies,
    })
}

/// `GET /api/retention`: what a pass would delete now.
pub async fn plan(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>> {
    pass(&s, &p, false).await
}

/// `POST /api/retention/run`: a pass now; what it deleted.
pub async fn run(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<serde_json::Value>> {
    pass(&s, &p, true).await
}

async fn pass(s: &AppState, p: &Principal, apply: bool) -> Result<Json<serde_json::Value>> {
    require(p, Action::Delete)?;
    let r = s
        .archive
        .retention_pass(custos_archive::routing::now(), apply, p.name())
        .await?;
    if !apply && let Some(e) = custos_archive::Archive::retention_listing(&r, p.name()) {
        s.archive.record_access(crate::audit::by_caller(e)).await?;
    }
    Ok(Json(report_json(&r)))
}

#[derive(Deserialize)]
pub struct Protection {
    protected: bool,
    #[serde(default)]
    reason: String,
}

/// `GET /api/studies/{study}/protected`: whether retention may take it.
pub async fn protection(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Delete)?;
    check_uid(&study)?;
    Ok(Json(
        json!({ "protected": s.archive.is_protected(&study).await? }),
    ))
}

/// `PUT /api/studies/{study}/protected` `{"protected": bool, "reason"}`.
pub async fn protect(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    body: std::result::Result<Json<Protection>, JsonRejection>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Delete)?;
    check_uid(&study)?;
    let Json(body) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let changed = s
        .archive
        .protect_study(&study, body.protected, &body.reason, p.name())
        .await?;
    Ok(Json(
        json!({ "protected": body.protected, "changed": changed }),
    ))
}

#[derive(Deserialize)]
pub struct CorrectionBody {
    attributes: std::collections::BTreeMap<String, String>,
}

fn correction_error(e: CorrectionError) -> ApiError {
    match e {
        CorrectionError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
        CorrectionError::NotFound => ApiError::not_found(),
        CorrectionError::Index(e) => e.into(),
        CorrectionError::Read(e) => e.into(),
        CorrectionError::Trail(e) => e.into(),
        e => ApiError::internal("correcting a study", e),
    }
}

fn parsed(
    attributes: std::collections::BTreeMap<String, String>,
) -> Result<Vec<custos_archive::corrections::AttributeChange>> {
    let pairs: Vec<(String, String)> = attributes.into_iter().collect();
    parse_changes(&pairs).map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m))
}

/// `POST /api/studies/{study}/correct` `{"attributes": {"PatientID": ...}}`:
/// every instance rewritten with the values (admin role; audited as
/// Patient Record).
pub async fn correct(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    body: std::result::Result<Json<CorrectionBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    check_uid(&study)?;
    let Json(body) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let changes = parsed(body.attributes)?;
    let done = s
        .archive
        .correct_study(&study, &changes, p.name())
        .await
        .map_err(correction_error)?;
    Ok(Json(json!({ "instances": done.instances })))
}

#[derive(Deserialize)]
pub struct MergeBody {
    from: String,
    into: std::collections::BTreeMap<String, String>,
}

/// `POST /api/patients/merge` `{"from": ID, "into": {"PatientID": ..}}`:
/// every study of `from` moved to the patient `into` names (admin role).
pub async fn merge(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    body: std::result::Result<Json<MergeBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>> {
    require(&p, Action::Admin)?;
    let Json(body) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let into = parsed(body.into)?;
    let done = s
        .archive
        .merge_patients(&body.from, &into, p.name())
        .await
        .map_err(correction_error)?;
    Ok(Json(
        json!({ "studies": done.studies, "instances": done.instances }),
    ))
}
