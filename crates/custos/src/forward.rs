//! The forwarding queue's worker: takes due jobs from the index (leased, so
//! a node that dies mid-send leaves them due again, and several nodes on
//! PostgreSQL take different ones), works each destination in a task of its
//! own (a slow one holds up no other), sends a destination's instances on
//! one association (`custos-dimse::router`) or in STOW-RS requests
//! (`stow_out`), delivers held storage commitment reports
//! (`custos-dimse::commitment`) and webhook events (`webhooks`), and records
//! each job done, due again after a back-off, or failed for good. Each forward is audited (110104) with its
//! destination, studies and patients.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use custos_archive::Archive;
use custos_archive::routing::{Failure, RetryPolicy};
use custos_core::audit::{AuditEvent, EventId, Outcome};
use custos_core::record::StoredInstance;
use custos_core::routing::{Job, JobScope, WebDestination};
use custos_dimse::DimseConfig;

use crate::stow_out::StowClient;

/// A job taken is not taken again (by any node) for this long: a node that
/// dies mid-send delays its jobs by at most this. While a batch is being
/// worked its leases are renewed every third of it (a study that takes
/// minutes to send is not taken again by another node, its outcome then
/// ignored, for ever); `Queue::job_done` still checks the attempt.
const LEASE_SECS: i64 = 120;
/// Jobs taken at once.
const BATCH: usize = 32;

/// How jobs reach their destinations: DIMSE to registered peers, STOW-RS to
/// the configured DICOMweb servers (by name).
pub struct Senders {
    dimse: DimseConfig,
    web: HashMap<String, StowClient>,
    hooks: reqwest::Client,
}

impl Senders {
    pub fn new(dimse: DimseConfig, web: &[WebDestination]) -> Result<Senders> {
        let web = web
            .iter()
            .map(|w| Ok((w.name.clone(), StowClient::new(w)?)))
            .collect::<Result<_>>()?;
        Ok(Senders {
            dimse,
            web,
            hooks: crate::webhooks::client()?,
        })
    }
}

/// Destinations worked at once: new jobs are taken only while fewer are busy.
const PARALLEL: usize = 16;

/// Works the queue until `shutdown` turns true.
///
/// Each destination's jobs are worked in a task of their own, and the
/// queue is read again at once, leaving out the destinations still being
/// sent to: one that is down or slow (an association can wait minutes for
/// a silent peer) holds up no other destination, webhook or commitment
/// report, and its own jobs stay queued, in order, until it is free.
pub async fn run(
    archive: Arc<Archive>,
    senders: Senders,
    policy: RetryPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let senders = Arc::new(senders);
    let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut work: JoinSet<()> = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            // Sends under way go on while the server drains.
            work.detach_all();
            return;
        }
        while let Some(done) = work.try_join_next_with_id() {
            finished(&mut busy, done);
        }
        let jobs = if busy.len() >= PARALLEL {
            Vec::new()
        } else {
            let skip: Vec<String> = busy.values().cloned().collect();
            match archive.take_jobs(LEASE_SECS, BATCH, &skip).await {
                Ok(j) => j,
                Err(e) => {
                    warn!(error = %e, "forwarding queue unavailable");
                    Vec::new()
                }
            }
        };
        if jobs.is_empty() {
            // New jobs and a destination set free wake us; retries and
            // quiet studies come due on the second.
            let full = busy.len() >= PARALLEL;
            tokio::select! {
                Some(done) = work.join_next_with_id() => finished(&mut busy, done),
                _ = archive.queue_notified().notified(), if !full => {}
                _ = tokio::time::sleep(Duration::from_secs(1)), if !full => {}
                _ = shutdown.changed() => {}
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
            let (archive, senders) = (archive.clone(), senders.clone());
            let task = work.spawn({
                let destination = destination.clone();
                async move { work_destination(&archive, &senders, policy, destination, jobs).await }
            });
            busy.insert(task.id(), destination);
        }
    }
}

/// A destination's task ended: it may be taken again.
fn finished(
    busy: &mut HashMap<tokio::task::Id, String>,
    done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    let id = match done {
        Ok((id, ())) => id,
        Err(e) => {
            // Its jobs' leases run out and they are tried again.
            warn!(error = %e, "a forwarding task ended abnormally");
            e.id()
        }
    };
    busy.remove(&id);
}

/// Works one destination's jobs: forwards on one association (or in
/// STOW-RS requests), held commitment reports and webhook deliveries each
/// once; their leases are renewed while this lasts.
async fn work_destination(
    archive: &Arc<Archive>,
    senders: &Senders,
    policy: RetryPolicy,
    destination: String,
    jobs: Vec<Job>,
) {
    let leased: Vec<(i64, i64)> = jobs.iter().map(|j| (j.id, j.attempts)).collect();
    let (single, forwards): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| matches!(j.scope, JobScope::Commitment | JobScope::Webhook));
    let singles = single
        .iter()
        .map(|j| deliver_one(archive, senders, policy, j));
    let work = futures_util::future::join(futures_util::future::join_all(singles), async {
        if !forwards.is_empty() {
            forward(archive, senders, policy, destination, forwards).await;
        }
    });
    tokio::pin!(work);
    let renew = Duration::from_secs(LEASE_SECS as u64 / 3);
    loop {
        tokio::select! {
            _ = &mut work => return,
            _ = tokio::time::sleep(renew) => {
                if let Err(e) = archive.extend_leases(&leased, LEASE_SECS).await {
                    warn!(error = %e, "cannot renew the forwarding leases");
                }
            }
        }
    }
}

/// A held commitment report or a webhook delivery: one attempt, recorded.
async fn deliver_one(archive: &Arc<Archive>, senders: &Senders, policy: RetryPolicy, j: &Job) {
    let outcome = if j.scope == JobScope::Webhook {
        crate::webhooks::deliver(archive, &senders.hooks, j).await
    } else {
        custos_dimse::commitment::deliver_held(archive, &senders.dimse, &j.destination, &j.payload)
            .await
    };
    if let Err(e) = archive.record_attempt(j, outcome, policy).await {
        warn!(error = %e, job = j.id, "cannot record a delivery");
    }
}

/// Sends `jobs` to `destination` and records how each went.
async fn forward(
    archive: &Arc<Archive>,
    senders: &Senders,
    policy: RetryPolicy,
    destination: String,
    jobs: Vec<Job>,
) {
    let destination = destination.as_str();
    let outcomes = match archive.job_instances(&jobs).await {
        // Nothing of them is stored any more: failed for good, nothing sent.
        Ok(sets) if sets.iter().all(Vec::is_empty) => per_job(&sets, Vec::new()),
        Ok(sets) => {
            let flat: Vec<StoredInstance> = sets.iter().flatten().cloned().collect();
            // Recorded before anything leaves, as a C-MOVE is. A trail that
            // cannot take the record holds the forwards back: no attempt is
            // counted (an outage must not use up a job's attempts), the
            // leases run out and the jobs are taken again.
            if archive
                .record_access(forwarding_record(archive, destination, &jobs, &sets).await)
                .await
                .is_err()
            {
                warn!(
                    destination,
                    jobs = jobs.len(),
                    "forwarding held back: the audit trail cannot record it"
                );
                return;
            }
            let sent = match senders.web.get(destination) {
                Some(stow) => stow.send(archive, &flat).await,
                None => {
                    custos_dimse::router::send(archive, &senders.dimse, destination, &flat).await
                }
            };
            per_job(&sets, sent)
        }
        Err(e) => jobs
            .iter()
            .map(|_| {
                let why = Failure::Transient(format!("index unavailable: {e}"));
                (Err(why), Vec::new(), 0)
            })
            .collect(),
    };
    // What did not go is recorded too (what went, before it went).
    // Instances that arrived count even when others of their job failed
    // (the job is tried again, whole).
    let mut sent = 0;
    let (mut failed, mut failed_studies, mut why) = (0, Vec::new(), None);
    for (job, (outcome, delivered, undelivered)) in jobs.iter().zip(outcomes) {
        sent += delivered.len();
        failed += undelivered;
        if let Err(f) = &outcome {
            if job.scope == JobScope::Study {
                failed_studies.push(job.uid.clone());
            }
            why.get_or_insert_with(|| match f {
                Failure::Transient(w) | Failure::Permanent(w) => w.clone(),
            });
        }
        if let Err(e) = archive.record_attempt(job, outcome, policy).await {
            // The lease runs out and the job is tried again.
            warn!(error = %e, job = job.id, "cannot record a forwarding attempt");
        }
    }
    if sent > 0 {
        info!(destination, sent, jobs = jobs.len(), "forwarded");
    }
    if let Some(why) = why {
        let mut e = AuditEvent::new(EventId::InstancesTransferred, 'R', Outcome::MinorFailure);
        e.peer = destination.to_string();
        let why: String = why.chars().take(200).collect();
        e.detail = format!("forwarding {failed} instances to {destination} failed: {why}");
        e.study_uids = failed_studies;
        archive.name_patients(&mut e).await;
        archive.audit(e).await;
    }
}

/// The access record of a forward: the destination, how many instances,
/// their studies (named by study jobs, looked up for single instances) and
/// patients.
async fn forwarding_record(
    archive: &Archive,
    destination: &str,
    jobs: &[Job],
    sets: &[Vec<StoredInstance>],
) -> AuditEvent {
    let mut e = AuditEvent::new(EventId::InstancesTransferred, 'R', Outcome::Success);
    e.peer = destination.to_string();
    let count: usize = sets.iter().map(Vec::len).sum();
    e.detail = format!("forwarding {count} instances to {destination}");
    let mut single = Vec::new();
    for (job, set) in jobs.iter().zip(sets) {
        match job.scope {
            JobScope::Study => e.study_uids.push(job.uid.clone()),
            _ => single.extend(set.iter().map(|i| i.sop_instance_uid.clone())),
        }
    }
    for study in archive.studies_of(&single).await.unwrap_or_default() {
        if !e.study_uids.contains(&study) {
            e.study_uids.push(study);
        }
    }
    archive.name_patients(&mut e).await;
    e
}

/// One outcome per job from one per instance, with the instances that
/// arrived and how many did not: a job succeeds when all its instances did;
/// a job with no instance left is failed for good.
fn per_job(sets: &[Vec<StoredInstance>], sent: Vec<Result<(), Failure>>) -> Vec<JobOutcome> {
    let mut sent = sent.into_iter();
    sets.iter()
        .map(|set| {
            if set.is_empty() {
                let gone = Failure::Permanent("nothing of it is stored any more".into());
                return (Err(gone), Vec::new(), 0);
            }
            // Every instance's outcome is taken, the first failure kept.
            let mut outcome = Ok(());
            let (mut delivered, mut undelivered) = (Vec::new(), 0);
            for instance in set {
                let one = sent
                    .next()
                    .unwrap_or_else(|| Err(Failure::Transient("no outcome".into())));
                if one.is_ok() {
                    delivered.push(instance.sop_instance_uid.clone());
                } else {
                    undelivered += 1;
                }
                outcome = outcome.and(one);
            }
            (outcome, delivered, undelivered)
        })
        .collect()
}

/// A job's outcome, the UIDs of its instances that arrived, and how many did not.
type JobOutcome = (Result<(), Failure>, Vec<String>, usize);

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(uid: &str) -> StoredInstance {
        StoredInstance {
            sop_instance_uid: uid.into(),
            sop_class_uid: String::new(),
            transfer_syntax_uid: String::new(),
            blob_key: String::new(),
            size: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn instances_that_arrived_count_even_when_their_job_failed() {
        let sets = vec![
            vec![instance("a"), instance("b")],
            vec![instance("c")],
            vec![],
        ];
        let sent = vec![Ok(()), Err(Failure::Transient("refused".into())), Ok(())];
        let out = per_job(&sets, sent);
        assert!(matches!(&out[0].0, Err(Failure::Transient(w)) if w == "refused"));
        assert_eq!(
            (out[0].1.as_slice(), out[0].2),
            (["a".to_string()].as_slice(), 1)
        );
        assert!(out[1].0.is_ok());
        assert_eq!(
            (out[1].1.as_slice(), out[1].2),
            (["c".to_string()].as_slice(), 0)
        );
        // Nothing of it stored any more: failed for good, nothing sent.
        assert!(matches!(out[2].0, Err(Failure::Permanent(_))));
        assert!(out[2].1.is_empty());
    }
}
