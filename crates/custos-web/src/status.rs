//! The status page's figures (admin): what is stored, by modality, what
//! arrived in the last hour minute by minute, the latest DICOM associations
//! accepted and rejected (from the audit trail), and on request the
//! `doctor` checks.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{Value, json};

use custos_core::audit::{AuditSearch, EventId, Outcome};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;

/// Associations listed.
const RECENT_ASSOCIATIONS: usize = 20;

pub async fn status(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Action::Admin)?;
    let now = time::OffsetDateTime::now_utc();
    let since = (now - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::internal("formatting a time", e))?;
    let stats = s.archive.statistics().await?;
    let modalities = s.archive.instances_by_modality().await?;
    let minutes = s.archive.received_per_minute(&since).await?;
    let associations = s
        .archive
        .audit_log()
        .audit_search(&AuditSearch {
            newest_first: true,
            limit: RECENT_ASSOCIATIONS,
            event_code: Some(EventId::UserAuthentication.code()),
            dicom_peers_only: true,
            ..Default::default()
        })
        .await?;
    let mut e = crate::audit::event(EventId::AuditLogUsed, 'R', Outcome::Success);
    e.detail = format!("status page: {} recent associations", associations.len());
    s.archive.audit(e).await;
    Ok(Json(json!({
        "archive": {
            "patients": stats.patients,
            "studies": stats.studies,
            "series": stats.series,
            "instances": stats.instances,
            "stored_bytes": stats.bytes,
        },
        "by_modality": modalities
            .iter()
            .map(|(m, n)| json!({ "modality": m, "instances": n }))
            .collect::<Vec<_>>(),
        "ingest": {
            "since": since,
            "last_hour": minutes.iter().map(|(_, n)| n).sum::<u64>(),
            "per_minute": minutes
                .iter()
                .map(|(m, n)| json!({ "minute": m, "instances": n }))
                .collect::<Vec<_>>(),
        },
        "associations": associations
            .iter()
            .map(|r| {
                let b: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                json!({
                    "time": r.time,
                    "peer": b["peer"],
                    "source": b["source"],
                    "user": b["user"],
                    "accepted": b["outcome"].as_u64() == Some(0),
                    "detail": b["detail"],
                })
            })
            .collect::<Vec<_>>(),
    })))
}

/// `custos doctor`'s findings, run now.
pub async fn checks(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Action::Admin)?;
    let Some(checkup) = &s.checkup else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this server has no checks wired",
        ));
    };
    let report = checkup
        .run()
        .await
        .map_err(|e| ApiError::internal("running the checks", e))?;
    Ok(Json(report))
}
