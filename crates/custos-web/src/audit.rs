//! Audit events from the HTTPS side. The authentication middleware runs each
//! request inside a task-local scope that knows who asks and from where, so a
//! handler records an event with one call.

use custos_core::Principal;
use custos_core::audit::{AuditEvent, EventId, Outcome};

#[derive(Clone)]
pub struct Caller {
    pub user: String,
    pub source: String,
}

tokio::task_local! {
    pub static CALLER: Caller;
}

/// An event by the current request's user and address.
pub fn event(id: EventId, action: char, outcome: Outcome) -> AuditEvent {
    let mut e = AuditEvent::new(id, action, outcome);
    let _ = CALLER.try_with(|c| {
        e.user = c.user.clone();
        e.source = c.source.clone();
    });
    e
}

/// `e` with the current request's user and address.
pub fn by_caller(mut e: AuditEvent) -> AuditEvent {
    let _ = CALLER.try_with(|c| {
        e.user = c.user.clone();
        e.source = c.source.clone();
    });
    e
}

/// Runs `f` (a request) with `caller` known to the web's events and the
/// archive's (corrections, de-identification, retention record the address
/// the request came from too).
pub async fn scoped<F: std::future::Future>(caller: Caller, f: F) -> F::Output {
    let source = caller.source.clone();
    CALLER
        .scope(
            caller,
            custos_archive::audit::with_request_source(source, f),
        )
        .await
}

pub fn caller_of(p: &Principal, source: Option<std::net::IpAddr>) -> Caller {
    Caller {
        user: p.name().to_string(),
        source: source.map(|s| s.to_string()).unwrap_or_default(),
    }
}
