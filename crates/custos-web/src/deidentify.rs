//! De-identification over HTTP (the `deidentify` right): `GET
//! /api/studies/{study}/deidentified.zip` streams a de-identified copy as a
//! ZIP without storing it; `POST /api/studies/{study}/deidentify` (with the
//! `store` right too) keeps one in the archive. Both take the options,
//! project and new description the CLI takes; the archive audits them as
//! Export with both identities.

use std::io::Write;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use zip::write::SimpleFileOptions;

use custos_archive::deidentify::{DeidError, Files, Request};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::download::{Pending, Tx, send, zip_body};
use crate::error::ApiError;
use crate::qido::check_uid;

/// What to make of the study (query string of the download, body of the
/// POST).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Comma-separated: retain-dates, retain-patient-characteristics,
    /// clean-descriptors.
    #[serde(default)]
    options: String,
    #[serde(default)]
    project: String,
    study_description: Option<String>,
    patient_id: Option<String>,
    patient_name: Option<String>,
    #[serde(default)]
    force: bool,
}

impl Params {
    fn request(self) -> Result<Request, ApiError> {
        let options = custos_core::deid::Options::parse(&self.options)
            .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m))?;
        let request = Request {
            options,
            project: self.project,
            study_description: self.study_description,
            patient_id: self.patient_id,
            patient_name: self.patient_name,
            force: self.force,
        };
        request.check().map_err(error)?;
        Ok(request)
    }
}

fn error(e: DeidError) -> ApiError {
    match e {
        DeidError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m),
        DeidError::NotFound => ApiError::not_found(),
        e @ DeidError::BurnedIn(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        DeidError::Index(e) => e.into(),
        DeidError::Read(e) => e.into(),
        DeidError::Trail(e) => e.into(),
        e => ApiError::internal("de-identifying a study", e),
    }
}

pub async fn zip(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    params: std::result::Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&p, Action::Deidentify)?;
    check_uid(&study)?;
    let Query(params) = params.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let request = params.request()?;
    let files = s
        .archive
        .deidentified(&study, &request, p.name())
        .await
        .map_err(error)?;
    let name = format!(
        "attachment; filename=\"deidentified-{}.zip\"",
        files.study_uid
    );
    let archive = s.archive.clone();
    let body = zip_body("a de-identified download", move |tx| async move {
        write_zip(&archive, files, &tx).await
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response())
}

/// One de-identified instance in memory at a time; an error aborts the
/// response so a truncated archive is never taken for a whole one.
async fn write_zip(
    archive: &custos_archive::Archive,
    mut files: Files,
    tx: &Tx,
) -> Result<(), String> {
    let pending = Pending::default();
    let mut zip = zip::ZipWriter::new_stream(pending.clone());
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    while let Some((name, bytes)) = files.next(archive).await.map_err(|e| e.to_string())? {
        let options = stored.large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        zip.start_file(name, options).map_err(|e| e.to_string())?;
        zip.write_all(&bytes).map_err(|e| e.to_string())?;
        if !send(&pending, tx).await {
            return Ok(());
        }
    }
    zip.finish().map_err(|e| e.to_string())?;
    send(&pending, tx).await;
    Ok(())
}

/// `POST /api/studies/{study}/deidentify` `{"options": "retain-dates", ...}`:
/// a de-identified copy kept in the archive; 201 with its study UID.
pub async fn copy(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    body: std::result::Result<Json<Params>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    require(&p, Action::Deidentify)?;
    require(&p, Action::Store)?;
    check_uid(&study)?;
    let Json(params) = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let request = params.request()?;
    let done = s
        .archive
        .deidentify_study(&study, &request, p.name())
        .await
        .map_err(error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "study": done.study_uid, "patient_id": done.patient_id, "instances": done.instances,
        })),
    ))
}
