//! `/metrics` for Prometheus (the `metrics` right: the monitor role, or an
//! admin), and the middleware that times every HTTP request by its route
//! pattern — `/dicom-web/studies/{study}`, never the UIDs in the path — and
//! counts index and store failures from the responses' markers.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use custos_core::metrics::Scraped;
use custos_core::routing::JobState;
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::{ApiError, Failed};

/// Times a request and counts its response.
pub async fn metered(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // Only the methods the routes use: any other (clients may send made-up
    // ones) is "other", so the label's values stay few.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let response = next.run(request).await;
    let m = s.archive.metrics();
    let code = response.status().as_u16().to_string();
    m.observe(
        "custos_http_request_seconds",
        &[("method", &method), ("route", &route)],
        started.elapsed(),
    );
    m.inc(
        "custos_http_responses_total",
        &[("method", &method), ("route", &route), ("code", &code)],
    );
    match response.extensions().get::<Failed>() {
        Some(Failed::Index) => s.archive.count_index_error(),
        Some(Failed::Store) => s.archive.count_store_error(),
        None => {}
    }
    response
}

/// `GET /metrics`: the text exposition format.
pub async fn render(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
) -> Result<Response, ApiError> {
    require(&p, Action::Metrics)?;
    let mut scraped = vec![
        Scraped {
            name: "custos_audit_queue_depth",
            help: "Audit records waiting to be written.",
            counter: false,
            labels: Vec::new(),
            value: s.archive.audit_queue_depth() as f64,
        },
        Scraped {
            name: "custos_lockouts_total",
            help: "Lockouts begun (a user or address reaching the failed-login limit).",
            counter: true,
            labels: Vec::new(),
            value: s.auth.lockouts() as f64,
        },
    ];
    // An index that cannot be read shows as no figure, not as an error:
    // the counters are still worth scraping during an outage.
    if let Ok(counts) = s.archive.job_counts().await {
        for state in [JobState::Pending, JobState::Failed] {
            let n = counts
                .iter()
                .find(|(st, _)| *st == state)
                .map_or(0, |(_, n)| *n);
            scraped.push(Scraped {
                name: "custos_forward_queue_depth",
                help: "Forwarding jobs (and held commitment reports) waiting or failed for good.",
                counter: false,
                labels: vec![("state", state.name().to_string())],
                value: n as f64,
            });
        }
    }
    let mut r = s.archive.metrics().render(&scraped).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}
