//! Retention over HTTP (the `delete` right): `GET /api/retention` lists what
//! a pass would delete now (a dry run, audited), `POST /api/retention/run`
//! runs one, `PUT /api/studies/{study}/protected` sets a study's protection.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

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
    Ok(Json(report_json(&r)))
}

#[derive(Deserialize)]
pub struct Protection {
    protected: bool,
    #[serde(default)]
    reason: String,
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
