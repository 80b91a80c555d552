//! Every HTTP route and what it needs, in one table. The router is built from
//! it, each route behind a check of its right, and the security tests walk
//! the same table (`table()`), so a route cannot be added without a declared
//! right and without being tested for refusals.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::routing::{MethodRouter, delete, get, post, put};

use custos_core::{Action, Principal};

use crate::{
    AppState, admin, changes, deidentify, download, lifecycle, metrics, openapi, qido, session,
    status, stow, trail, wado, worklist,
};

/// What a request needs beyond being authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated user (the API description).
    Authenticated,
    /// The principal may do this.
    Right(Action),
    /// The principal may do this, and a browser session gave its password
    /// recently (`POST /api/session/confirm`): changes to who may do what.
    Confirmed(Action),
}

type Handler = MethodRouter<Arc<AppState>>;

/// (method, path, need, handler) for every authenticated route; the others
/// are `/healthz`, `POST /api/login` and the UI's static files (`ui`).
fn routes() -> Vec<(Method, &'static str, Need, Handler)> {
    use Action::*;
    use Need::*;
    vec![
        // QIDO-RS
        (
            Method::GET,
            "/dicom-web/studies",
            Right(Find),
            get(qido::studies),
        ),
        (
            Method::GET,
            "/dicom-web/series",
            Right(Find),
            get(qido::series),
        ),
        (
            Method::GET,
            "/dicom-web/instances",
            Right(Find),
            get(qido::instances),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series",
            Right(Find),
            get(qido::study_series),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/instances",
            Right(Find),
            get(qido::study_instances),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/instances",
            Right(Find),
            get(qido::series_instances),
        ),
        // STOW-RS
        (
            Method::POST,
            "/dicom-web/studies",
            Right(StoreDerived),
            post(stow::store),
        ),
        (
            Method::POST,
            "/dicom-web/studies/{study}",
            Right(StoreDerived),
            post(stow::store_in_study),
        ),
        // WADO-RS and WADO-URI
        (
            Method::GET,
            "/dicom-web/studies/{study}",
            Right(Get),
            get(wado::study),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/metadata",
            Right(Get),
            get(wado::study_metadata),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}",
            Right(Get),
            get(wado::series),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/metadata",
            Right(Get),
            get(wado::series_metadata),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            Right(Get),
            get(wado::instance),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
            Right(Get),
            get(wado::instance_metadata),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            Right(Get),
            get(wado::frames),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            Right(Get),
            get(wado::frame_rendered),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
            Right(Get),
            get(wado::bulkdata),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
            Right(Get),
            get(wado::rendered),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/thumbnail",
            Right(Get),
            get(wado::study_thumbnail),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/thumbnail",
            Right(Get),
            get(wado::series_thumbnail),
        ),
        (
            Method::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            Right(Get),
            get(wado::thumbnail),
        ),
        (
            Method::GET,
            "/dicom-web/wado",
            Right(Get),
            get(wado::wado_uri),
        ),
        (Method::GET, "/wado", Right(Get), get(wado::wado_uri)),
        // Administration
        (
            Method::GET,
            "/api/statistics",
            Right(Admin),
            get(admin::statistics),
        ),
        (
            Method::GET,
            "/api/status",
            Right(Admin),
            get(status::status),
        ),
        (
            Method::GET,
            "/api/status/checks",
            Right(Admin),
            get(status::checks),
        ),
        (Method::GET, "/api/peers", Right(Admin), get(admin::peers)),
        (
            Method::POST,
            "/api/peers",
            Confirmed(Admin),
            post(admin::put_peer),
        ),
        (
            Method::POST,
            "/api/peers/{ae}/echo",
            Right(Admin),
            post(admin::echo_peer),
        ),
        (
            Method::DELETE,
            "/api/peers/{ae}",
            Confirmed(Admin),
            delete(admin::remove_peer),
        ),
        (
            Method::GET,
            "/api/worklist",
            Right(Worklist),
            get(worklist::list),
        ),
        (
            Method::POST,
            "/api/worklist",
            Right(Worklist),
            post(worklist::add),
        ),
        (
            Method::GET,
            "/api/worklist/{id}",
            Right(Worklist),
            get(worklist::get_one),
        ),
        (
            Method::PUT,
            "/api/worklist/{id}",
            Right(Worklist),
            put(worklist::replace),
        ),
        (
            Method::DELETE,
            "/api/worklist/{id}",
            Right(Worklist),
            delete(worklist::remove),
        ),
        (
            Method::GET,
            "/api/mpps/{uid}",
            Right(Worklist),
            get(worklist::performed_step),
        ),
        (Method::GET, "/api/jobs", Right(Admin), get(admin::jobs)),
        (
            Method::GET,
            "/api/destinations",
            Right(Admin),
            get(admin::destinations),
        ),
        (
            Method::POST,
            "/api/jobs/{id}/retry",
            Right(Admin),
            post(admin::retry_job),
        ),
        (
            Method::POST,
            "/api/jobs/{id}/cancel",
            Right(Admin),
            post(admin::cancel_job),
        ),
        (
            Method::POST,
            "/api/studies/{study}/send",
            Right(Admin),
            post(admin::send_study),
        ),
        (Method::GET, "/api/users", Right(Admin), get(admin::users)),
        (
            Method::POST,
            "/api/users",
            Confirmed(Admin),
            post(admin::add_user),
        ),
        (
            Method::PUT,
            "/api/users/{name}",
            Confirmed(Admin),
            put(admin::update_user),
        ),
        (
            Method::DELETE,
            "/api/users/{name}",
            Confirmed(Admin),
            delete(admin::remove_user),
        ),
        (Method::GET, "/api/tokens", Right(Admin), get(admin::tokens)),
        (
            Method::POST,
            "/api/tokens",
            Confirmed(Admin),
            post(admin::create_token),
        ),
        (
            Method::DELETE,
            "/api/tokens/{id}",
            Right(Admin),
            delete(admin::revoke_token),
        ),
        (
            Method::GET,
            "/api/studies/{study}/download.zip",
            Right(Get),
            get(download::study_zip),
        ),
        (
            Method::GET,
            "/api/studies/{study}/series/{series}/download.zip",
            Right(Get),
            get(download::series_zip),
        ),
        (
            Method::GET,
            "/api/download.zip",
            Right(Get),
            get(download::selection_zip),
        ),
        (
            Method::GET,
            "/api/studies/{study}/deidentified.zip",
            Right(Deidentify),
            get(deidentify::zip),
        ),
        (
            Method::POST,
            "/api/studies/{study}/deidentify",
            Right(Deidentify),
            post(deidentify::copy),
        ),
        (
            Method::DELETE,
            "/api/studies/{study}",
            Right(Delete),
            delete(admin::delete_study),
        ),
        (
            Method::DELETE,
            "/api/studies/{study}/series/{series}",
            Right(Delete),
            delete(admin::delete_series),
        ),
        (Method::GET, "/api/audit", Right(Audit), get(trail::records)),
        (
            Method::GET,
            "/metrics",
            Right(Metrics),
            get(metrics::render),
        ),
        (Method::GET, "/api/changes", Right(Find), get(changes::feed)),
        (
            Method::GET,
            "/api/retention",
            Right(Delete),
            get(lifecycle::plan),
        ),
        (
            Method::POST,
            "/api/retention/run",
            Right(Delete),
            post(lifecycle::run),
        ),
        (
            Method::GET,
            "/api/studies/{study}/protected",
            Right(Delete),
            get(lifecycle::protection),
        ),
        (
            Method::PUT,
            "/api/studies/{study}/protected",
            Right(Delete),
            put(lifecycle::protect),
        ),
        (
            Method::POST,
            "/api/studies/{study}/correct",
            Right(Admin),
            post(lifecycle::correct),
        ),
        (
            Method::POST,
            "/api/patients/merge",
            Right(Admin),
            post(lifecycle::merge),
        ),
        (
            Method::GET,
            "/api/webhooks",
            Right(Admin),
            get(changes::list),
        ),
        (
            Method::POST,
            "/api/webhooks",
            Confirmed(Admin),
            post(changes::add),
        ),
        (
            Method::DELETE,
            "/api/webhooks/{id}",
            Right(Admin),
            delete(changes::remove),
        ),
        (
            Method::GET,
            "/api/audit/verify",
            Right(Audit),
            get(trail::verify),
        ),
        (
            Method::GET,
            "/api/openapi.json",
            Authenticated,
            get(openapi::document),
        ),
        // The browser's session (logging in is POST /api/login, public).
        (
            Method::GET,
            "/api/session",
            Authenticated,
            get(session::whoami),
        ),
        (
            Method::DELETE,
            "/api/session",
            Authenticated,
            delete(session::logout),
        ),
        (
            Method::PUT,
            "/api/session/password",
            Authenticated,
            put(session::change_password),
        ),
        (
            Method::POST,
            "/api/session/confirm",
            Authenticated,
            post(session::confirm),
        ),
    ]
}

/// The routes and what each needs (for tests and documentation).
pub fn table() -> Vec<(Method, &'static str, Need)> {
    routes().into_iter().map(|(m, p, n, _)| (m, p, n)).collect()
}

/// The authenticated routes, each behind the check of what it needs. Every
/// refusal (403) is in the audit trail as a security alert, with the path
/// asked for and the study and patient it names: the route's check records
/// its own with the right that was missing; a handler's (a right it needs
/// besides, a wrong current password) is recorded as it leaves.
pub(crate) fn protected(state: Arc<AppState>) -> axum::Router<Arc<AppState>> {
    let mut router = axum::Router::new();
    for (_, path, need, handler) in routes() {
        let handler = match need {
            Need::Authenticated => handler,
            Need::Right(action) | Need::Confirmed(action) => {
                handler.route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    move |State(s): State<Arc<AppState>>,
                          Extension(p): Extension<Principal>,
                          request: Request,
                          next: Next| async move {
                        if let Err(refusal) = crate::auth::require(&p, action) {
                            let why = format!("needs the {action} right");
                            record_refusal(&s, request.method(), request.uri(), &why).await;
                            let mut r = axum::response::IntoResponse::into_response(refusal);
                            r.extensions_mut().insert(Recorded);
                            return r;
                        }
                        let stale = request
                            .extensions()
                            .get::<crate::session::SessionRecent>()
                            .is_some_and(|recent| !recent.0);
                        if matches!(need, Need::Confirmed(_)) && stale {
                            return crate::session::confirm_first();
                        }
                        next.run(request).await
                    },
                ))
            }
        };
        let handler = handler.route_layer(middleware::from_fn_with_state(
            state.clone(),
            |State(s): State<Arc<AppState>>, request: Request, next: Next| async move {
                let (method, uri) = (request.method().clone(), request.uri().clone());
                let r = next.run(request).await;
                if r.status() == axum::http::StatusCode::FORBIDDEN
                    && r.extensions().get::<Recorded>().is_none()
                {
                    record_refusal(&s, &method, &uri, "by the handler").await;
                }
                r
            },
        ));
        router = router.route(path, handler);
    }
    router
}

/// On a refusal whose record is written (or that needs none: a session
/// asked to give its password again).
#[derive(Clone, Copy)]
pub(crate) struct Recorded;

/// A refused request as a security alert (repeated ones are coalesced into
/// one record with a count), naming the study it asked for and its patient.
async fn record_refusal(s: &AppState, method: &Method, uri: &axum::http::Uri, why: &str) {
    let mut e = crate::audit::event(
        custos_core::audit::EventId::SecurityAlert,
        'E',
        custos_core::audit::Outcome::MinorFailure,
    );
    let path: String = uri.path().chars().take(200).collect();
    e.detail = format!("HTTP request refused: {method} {path} {why}");
    if let Some(study) = study_in(uri) {
        e.study_uids.push(study.to_string());
        s.archive.name_patients(&mut e).await;
    }
    s.archive.audit(e).await;
}

/// The Study Instance UID a request names: in its path
/// (`.../studies/{uid}...`), or WADO-URI's `studyUID` parameter.
fn study_in(uri: &axum::http::Uri) -> Option<&str> {
    let mut parts = uri.path().split('/');
    let in_path = parts.find(|p| *p == "studies").and_then(|_| parts.next());
    let in_query = || {
        uri.query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("studyUID="))
    };
    in_path
        .or_else(in_query)
        .filter(|uid| custos_archive::text::is_uid(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_study_a_request_names() {
        let uid = "1.2.840.113619.2.1";
        let study = |u: &str| study_in(&u.parse().unwrap()).map(str::to_string);
        assert_eq!(
            study(&format!("/dicom-web/studies/{uid}/series")).as_deref(),
            Some(uid)
        );
        assert_eq!(
            study(&format!("/api/studies/{uid}/deidentify")).as_deref(),
            Some(uid)
        );
        assert_eq!(
            study(&format!(
                "/wado?requestType=WADO&studyUID={uid}&seriesUID=1.2"
            ))
            .as_deref(),
            Some(uid)
        );
        assert_eq!(study("/dicom-web/studies"), None);
        assert_eq!(study("/dicom-web/studies/not-a-uid"), None);
        assert_eq!(study("/api/audit"), None);
    }
}
