//! The forwarding queue's worker: takes due jobs from the index (leased, so
//! a node that dies mid-send leaves them due again, and several nodes on
//! PostgreSQL take different ones), opens one association per destination
//! (TLS if the peer requires it), sends each instance as stored (or
//! decompressed if the peer takes only uncompressed), and records each job
//! done, due again after a back-off, or failed for good.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::{AsyncAssociation, ClientAssociationOptions};
use tokio::sync::watch;
use tracing::{info, warn};

use custos_archive::Archive;
use custos_core::audit::{AuditEvent, EventId, Outcome};
use custos_core::record::StoredInstance;
use custos_core::routing::Job;

use crate::command::field;
use crate::link::{Stream, receive_command};
use crate::outbound::with_peer_association;
use crate::retrieve::send_store;
use crate::server::DimseConfig;
use crate::syntaxes::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// How the worker retries.
#[derive(Debug, Clone, Copy)]
pub struct RouterSettings {
    /// First retry after this; doubled each attempt, at most an hour.
    pub retry_base: Duration,
    /// Attempts before a job is failed for good (dead letter).
    pub max_attempts: i64,
}

/// A job taken is not taken again (by any node) for this long: a node that
/// dies mid-send delays its jobs by at most this. An attempt that outlives
/// its lease may be repeated by another node, but its outcome is then
/// ignored (`Queue::job_done` checks the attempt).
const LEASE_SECS: i64 = 120;
/// Jobs taken at once.
const BATCH: usize = 32;

/// Works the queue until `shutdown` turns true.
pub async fn run(
    archive: Arc<Archive>,
    config: Arc<DimseConfig>,
    settings: RouterSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let jobs = match archive.take_jobs(LEASE_SECS, BATCH).await {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "forwarding queue unavailable");
                Vec::new()
            }
        };
        if jobs.is_empty() {
            // New jobs wake us; retries come due on the second.
            tokio::select! {
                _ = archive.queue_notified().notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let mut by_destination: BTreeMap<String, Vec<Job>> = BTreeMap::new();
        for j in jobs {
            by_destination
                .entry(j.destination.clone())
                .or_default()
                .push(j);
        }
        for (destination, jobs) in by_destination {
            forward(&archive, &config, settings, &destination, jobs).await;
        }
    }
}

/// Sends `jobs` to `destination` and records how each went.
async fn forward(
    archive: &Archive,
    config: &DimseConfig,
    settings: RouterSettings,
    destination: &str,
    jobs: Vec<Job>,
) {
    let outcomes = attempt(archive, config, destination, &jobs).await;
    let mut sent = 0;
    for (job, outcome) in jobs.iter().zip(outcomes) {
        let recorded = match outcome {
            Ok(()) => {
                sent += 1;
                archive.job_done(job).await
            }
            Err(Failure::Permanent(why)) => archive.job_failed(job, &why, None).await,
            Err(Failure::Transient(why)) => {
                let retry = (job.attempts < settings.max_attempts).then(|| {
                    let factor = 1u32 << (job.attempts.clamp(1, 12) - 1);
                    (settings.retry_base.saturating_mul(factor))
                        .min(Duration::from_secs(3600))
                        .as_secs() as i64
                });
                if retry.is_none() {
                    warn!(destination, job = job.id, error = %why, "forwarding failed for good");
                }
                archive.job_failed(job, &why, retry).await
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the job is tried again.
            warn!(error = %e, job = job.id, "cannot record a forwarding attempt");
        }
    }
    if sent > 0 {
        info!(destination, sent, of = jobs.len(), "forwarded");
        let mut e = AuditEvent::new(EventId::InstancesTransferred, 'R', Outcome::Success);
        e.peer = destination.to_string();
        e.detail = format!("forwarded {sent} instances to {destination}");
        archive.audit(e).await;
    }
}

enum Failure {
    /// Worth trying again later (peer down, refused, busy).
    Transient(String),
    /// Will not get better (the instance is gone).
    Permanent(String),
}

/// One attempt at every job: an outcome per job, in order.
async fn attempt(
    archive: &Archive,
    config: &DimseConfig,
    destination: &str,
    jobs: &[Job],
) -> Vec<Result<(), Failure>> {
    let all = |why: String| {
        jobs.iter()
            .map(|_| Err(Failure::Transient(why.clone())))
            .collect()
    };
    let peer = match archive.peer_directory().peer(destination).await {
        Ok(Some(p)) => p,
        Ok(None) => return all(format!("{destination} is not a registered peer")),
        Err(e) => return all(format!("peer lookup failed: {e}")),
    };
    let uids: Vec<String> = jobs.iter().map(|j| j.sop_instance_uid.clone()).collect();
    let stored = match archive.stored_by_uid(&uids).await {
        Ok(s) => s,
        Err(e) => return all(format!("index unavailable: {e}")),
    };
    let present: Vec<&StoredInstance> = jobs
        .iter()
        .filter_map(|j| stored.get(&j.sop_instance_uid))
        .collect();
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(config.ae_title.clone())
        .called_ae_title(peer.ae_title.clone())
        .max_pdu_length(config.max_pdu_length)
        .read_timeout(config.idle_timeout)
        .write_timeout(config.idle_timeout)
        .connection_timeout(Duration::from_secs(10));
    let mut proposed: Vec<(String, String)> = Vec::new();
    for inst in &present {
        for ts in [inst.transfer_syntax_uid.as_str(), EXPLICIT_VR_LE] {
            let pair = (inst.sop_class_uid.clone(), ts.to_string());
            if proposed.len() < 126 && !proposed.contains(&pair) {
                let mut syntaxes = vec![pair.1.clone()];
                if ts == EXPLICIT_VR_LE {
                    syntaxes.push(IMPLICIT_VR_LE.to_string());
                }
                options = options.with_presentation_context(pair.0.clone(), syntaxes);
                proposed.push(pair);
            }
        }
    }
    if present.is_empty() {
        return jobs
            .iter()
            .map(|_| {
                Err(Failure::Permanent(
                    "the instance is no longer stored".into(),
                ))
            })
            .collect();
    }
    let idle = config.idle_timeout;
    let sent = with_peer_association!(options, &peer, config.tls_client.clone(), |a| {
        send_all(&mut a, archive, jobs, &stored, idle).await
    });
    match sent {
        Ok(outcomes) => outcomes,
        Err(why) => all(why),
    }
}

async fn send_all<S: Stream, A>(
    a: &mut A,
    archive: &Archive,
    jobs: &[Job],
    stored: &std::collections::HashMap<String, StoredInstance>,
    idle: Duration,
) -> Vec<Result<(), Failure>>
where
    A: AsyncAssociation<S> + Send,
{
    let mut out = Vec::with_capacity(jobs.len());
    let mut broken: Option<String> = None;
    for (n, job) in jobs.iter().enumerate() {
        if let Some(why) = &broken {
            out.push(Err(Failure::Transient(why.clone())));
            continue;
        }
        let Some(inst) = stored.get(&job.sop_instance_uid) else {
            out.push(Err(Failure::Permanent(
                "the instance is no longer stored".into(),
            )));
            continue;
        };
        let message_id = (n % 0xFFFF) as u16 + 1;
        match send_store(a, archive, inst, message_id, None, idle).await {
            Ok(true) => {}
            Ok(false) => {
                out.push(Err(Failure::Transient(
                    "the destination accepted no context for it, or it could not be read".into(),
                )));
                continue;
            }
            Err(e) => {
                broken = Some(format!("sending: {e}"));
                out.push(Err(Failure::Transient(format!("sending: {e}"))));
                continue;
            }
        }
        match receive_command(a, idle).await {
            Ok((_, rsp)) if rsp.field == field::C_STORE_RSP => match rsp.status {
                // Success and warnings (B000-BFFF): the destination has it.
                Some(0) | Some(0xB000..=0xBFFF) => out.push(Ok(())),
                st => out.push(Err(Failure::Transient(format!(
                    "the destination answered status {:04X}",
                    st.unwrap_or(0xFFFF)
                )))),
            },
            Ok((_, rsp)) => {
                broken = Some(format!("unexpected answer {:#06x}", rsp.field));
                out.push(Err(Failure::Transient(broken.clone().unwrap_or_default())));
            }
            Err(e) => {
                broken = Some(format!("no response: {e}"));
                out.push(Err(Failure::Transient(broken.clone().unwrap_or_default())));
            }
        }
    }
    let _ = a.release().await;
    out
}
