//! The audit trail over HTTP, for auditors: records filtered by user,
//! patient ID, event and date (`GET /api/audit`), and the chain's
//! verification (`GET /api/audit/verify`, what `custos audit verify` says).
//! Every read is itself recorded (Audit Log Used).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use custos_core::audit::{AuditSearch, EventId, Outcome};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;

type Result<T> = std::result::Result<T, ApiError>;

/// Most records one request returns.
const MAX_RECORDS: usize = 10_000;

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    limit: Option<usize>,
    /// The newest `last` matches instead (before `before`, if given).
    #[serde(default)]
    last: Option<usize>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    patient: Option<String>,
    /// An event ID code, e.g. 110103.
    #[serde(default)]
    event: Option<u32>,
    /// Days (UTC), `YYYY-MM-DD`, both included.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

fn day(text: &str) -> Result<time::Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map_err(|_| ApiError::bad_request("from and to are days: YYYY-MM-DD"))
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl AuditQuery {
    fn search(self) -> Result<AuditSearch> {
        let limit = self.last.or(self.limit).unwrap_or(1000);
        let too_many = |n: Option<usize>| n.is_some_and(|n| n > MAX_RECORDS);
        if too_many(self.last)
            || too_many(self.limit)
            || self.after < 0
            || self.before.is_some_and(|b| b < 1)
        {
            return Err(ApiError::bad_request(
                "after is a record number (0 or more), before 1 or more, limit and last at most 10000",
            ));
        }
        let from = self.from.map(|d| day(&d)).transpose()?;
        let to = self
            .to
            .map(|d| day(&d).map(|d| d.next_day().unwrap_or(d)))
            .transpose()?;
        Ok(AuditSearch {
            after: self.after,
            before: self.before,
            newest_first: self.last.is_some(),
            limit,
            user: non_empty(self.user),
            patient_id: non_empty(self.patient),
            event_code: self.event,
            dicom_peers_only: false,
            from: from.map(|d| d.to_string()),
            to: to.map(|d| d.to_string()),
        })
    }
}

fn use_of_trail(detail: String) -> custos_core::audit::AuditEvent {
    let mut e = crate::audit::event(EventId::AuditLogUsed, 'R', Outcome::Success);
    e.detail = detail;
    e
}

/// The audit trail for auditors: matching records in trail order (the
/// newest `last`, or those after `after`), with their links.
pub async fn records(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    query: std::result::Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    require(&p, Action::Audit)?;
    let Query(q) = query
        .map_err(|_| ApiError::bad_request("after, limit, last, before and event are integers"))?;
    let search = q.search()?;
    let mut records = s.archive.audit_log().audit_search(&search).await?;
    if search.newest_first {
        records.reverse();
    }
    // Records name patients: read like patient data.
    let e = use_of_trail(format!("read {} records through the API", records.len()));
    s.archive.record_access(e).await?;
    Ok(Json(json!(
        records
            .iter()
            .map(|r| json!({
                "seq": r.seq,
                "time": r.time,
                "record": serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null),
                "prev_hash": r.prev_hash,
                "hash": r.hash,
            }))
            .collect::<Vec<_>>()
    )))
}

/// Recomputes the chain: `verified` and how many records, or where it breaks.
pub async fn verify(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>> {
    require(&p, Action::Audit)?;
    let check = s.archive.verify_audit().await.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "this server writes no audit trail",
        )
    })??;
    match &check.broken {
        None => {
            let e = use_of_trail("verified the chain through the API".into());
            s.archive.audit(e).await;
        }
        Some(why) => {
            let mut e = crate::audit::event(
                custos_core::audit::EventId::SecurityAlert,
                'E',
                custos_core::audit::Outcome::SeriousFailure,
            );
            let why: String = why.chars().take(400).collect();
            e.detail = format!("audit trail verification found a break: {why}");
            s.archive.audit(e).await;
        }
    }
    Ok(Json(json!({
        "verified": check.broken.is_none(),
        "records": check.walk.good,
        "head": check.walk.head_seq,
        "broken": check.broken,
    })))
}
