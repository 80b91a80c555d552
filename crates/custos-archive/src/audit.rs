//! The audit trail's writer. Protocol code reports events with
//! `Archive::audit`, which never blocks and never fails the operation it
//! describes: events go through a bounded queue to one task that appends them
//! to the index in batches (the hash chain is computed there, inside the
//! index's transaction). If the trail cannot be written the task retries and
//! says so loudly at error level; if the queue overflows, that is an error too.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, oneshot};

use custos_core::audit::AuditEvent;
use custos_index::{Index, IndexError};

/// Events waiting to be written before new ones are refused (loudly).
const QUEUE: usize = 65_536;
const BATCH: usize = 512;

pub(crate) enum Msg {
    Event(AuditEvent),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditSender {
    tx: mpsc::Sender<Msg>,
}

impl AuditSender {
    pub(crate) fn send(&self, event: AuditEvent) {
        if let Err(e) = self.tx.try_send(Msg::Event(event)) {
            tracing::error!(error = %e, "AUDIT TRAIL: an audit record was lost (queue full or writer stopped)");
        }
    }

    /// Waits until everything reported so far is written (or given up on).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
    }
}

/// The current time as the trail records it.
pub fn now_rfc3339() -> String {
    let t = OffsetDateTime::now_utc();
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// The canonical body of an event (what the hash covers), at `time`.
pub fn body_of(event: &AuditEvent, time: &str, node: &str) -> String {
    json!({
        "time": time,
        "event": { "code": event.event.code(), "display": event.event.display() },
        "action": event.action.to_string(),
        "outcome": event.outcome as u8,
        "user": event.user,
        "peer": event.peer,
        "source": event.source,
        "patients": event.patient_ids,
        "studies": event.study_uids,
        "detail": event.detail,
        "node": node,
    })
    .to_string()
}

/// This node's name in records (host name), so a shared trail says which node saw what.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Appends events now (CLI commands, which have no writer task).
pub async fn append_now(index: &dyn Index, events: Vec<AuditEvent>) -> Result<(), IndexError> {
    let node = node_name();
    let entries = events
        .iter()
        .map(|e| {
            let t = now_rfc3339();
            let body = body_of(e, &t, &node);
            (t, body)
        })
        .collect();
    index.append_audit(entries).await
}

/// How a whole trail checked out.
pub struct ChainCheck {
    /// Records that verified (all of them when `broken_at` is `None`).
    pub good: u64,
    /// The first record where the chain breaks.
    pub broken_at: Option<i64>,
    /// The last good hash.
    pub head: String,
}

/// Recomputes the hash chain of the whole trail, page by page.
pub async fn verify_chain(index: &dyn Index) -> Result<ChainCheck, IndexError> {
    let (mut after, mut head, mut good) = (0i64, custos_core::audit::GENESIS.to_string(), 0u64);
    loop {
        let page = index.audit_after(after, 10_000).await?;
        let Some(last) = page.last().cloned() else {
            return Ok(ChainCheck {
                good,
                broken_at: None,
                head,
            });
        };
        if let Some(seq) = custos_core::audit::first_break(&page, head.clone(), after) {
            return Ok(ChainCheck {
                good,
                broken_at: Some(seq),
                head,
            });
        }
        good += page.len() as u64;
        after = last.seq;
        head = last.hash;
    }
}

pub(crate) fn start(index: Arc<dyn Index>) -> AuditSender {
    let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
    tokio::spawn(async move {
        let node = node_name();
        let mut pending: Vec<(String, String)> = Vec::new();
        let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let Some(first) = rx.recv().await else { break };
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Event(e) => {
                        let t = now_rfc3339();
                        let body = body_of(&e, &t, &node);
                        pending.push((t, body));
                    }
                    Msg::Flush(w) => waiters.push(w),
                }
                if pending.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let mut delay = Duration::from_millis(200);
            while !pending.is_empty() {
                match index.append_audit(pending.clone()).await {
                    Ok(()) => pending.clear(),
                    Err(e) => {
                        tracing::error!(error = %e, pending = pending.len(), "AUDIT TRAIL CANNOT BE WRITTEN; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                        if !waiters.is_empty() && delay >= Duration::from_secs(10) {
                            break;
                        }
                    }
                }
            }
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
        }
    });
    AuditSender { tx }
}
