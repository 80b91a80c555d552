//! Forwarding: routing rules match each newly stored instance and queue it
//! (or its study, to go once quiet) for their destinations in the index's
//! durable queue before the sender gets its success status (so a crash
//! loses no forward: either the queue has the job, or the sender was not
//! acknowledged and sends again). An administrator can also send a whole
//! study. The binary's `forward` loop works the queue, sending over DIMSE
//! (`custos-dimse::router`) or STOW-RS; the use cases it shares with the
//! CLI and the API are here: which destinations exist, what a job sends,
//! and how an attempt's outcome is recorded.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use custos_core::query::{Key, Level, Matcher, Query};
use custos_core::record::StoredInstance;
use custos_core::routing::{InstanceFacts, Job, JobScope, JobState, RouteRule, WebDestination};
use custos_index::IndexError;

use crate::Archive;

/// Why an attempt at a job did not deliver it.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Worth trying again later (peer down, refused, busy).
    Transient(String),
    /// Will not get better (the instance is gone).
    Permanent(String),
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First retry after this; doubled each attempt, at most an hour.
    pub base: Duration,
    /// Attempts before a job is failed for good (dead letter).
    pub max_attempts: i64,
}

impl RetryPolicy {
    /// Seconds until the next attempt after attempt `attempts` failed, or
    /// None if that was the last.
    pub fn delay(&self, attempts: i64) -> Option<i64> {
        (attempts < self.max_attempts).then(|| {
            let factor = 1u32 << (attempts.clamp(1, 12) - 1);
            self.base
                .saturating_mul(factor)
                .min(Duration::from_secs(3600))
                .as_secs() as i64
        })
    }
}

/// Where a destination name leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A registered DICOM peer with one address and a port (C-STORE).
    Peer,
    /// A `[[dicomweb_destination]]` (STOW-RS).
    Web(WebDestination),
}

/// Unix seconds now.
/// The audit record of a study queued by hand for `destination` (`n`
/// instances), for the caller to add who: the forwarding worker's own
/// record, when the instances leave, cannot name the user.
pub fn sent_by_hand(study: &str, destination: &str, n: usize) -> custos_core::audit::AuditEvent {
    use custos_core::audit::{AuditEvent, EventId, Outcome};
    let mut e = AuditEvent::new(EventId::InstancesTransferred, 'E', Outcome::Success);
    e.peer = destination.to_string();
    e.detail = format!("study queued for sending to {destination} ({n} instances)");
    e.study_uids = vec![study.to_string()];
    e
}

/// The audit record of forwarding job `id` queued again (`retry`) or
/// cancelled by hand, for the caller to add who.
pub fn job_changed(id: i64, retry: bool) -> custos_core::audit::AuditEvent {
    use custos_core::audit::{AuditEvent, EventId, Outcome};
    let mut e = AuditEvent::new(EventId::InstancesTransferred, 'E', Outcome::Success);
    e.detail = format!(
        "forwarding job {id} {}",
        if retry { "queued again" } else { "cancelled" }
    );
    e
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// UIDs looked up in the index per query.
const PAGE: usize = 500;

impl Archive {
    /// The routing rules new instances are matched against (set once, by
    /// the server, after checking their destinations).
    pub fn set_routes(&self, rules: Vec<RouteRule>) {
        let mut keys: Vec<custos_core::query::Key> = rules
            .iter()
            .flat_map(|r| r.attribute_keys().unwrap_or_default())
            .collect();
        keys.sort();
        keys.dedup();
        let _ = self.route_keys.set(keys);
        let _ = self.routes.set(rules);
    }

    /// The attributes routing rules name besides their fixed conditions:
    /// what ingest hands them in `InstanceFacts::attributes`.
    pub fn route_keys(&self) -> &[custos_core::query::Key] {
        self.route_keys.get().map(Vec::as_slice).unwrap_or_default()
    }

    pub fn routes(&self) -> &[RouteRule] {
        self.routes.get().map(Vec::as_slice).unwrap_or_default()
    }

    /// The DICOMweb servers forwards may go to (set once, at start).
    pub fn set_web_destinations(&self, destinations: Vec<WebDestination>) {
        let _ = self.web_destinations.set(destinations);
    }

    /// Every destination by name: the registered peers Custos can call, then
    /// the DICOMweb destinations.
    pub async fn destinations(&self) -> Result<Vec<(String, Destination)>, IndexError> {
        let mut all: Vec<(String, Destination)> = self
            .peer_directory()
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.host.connect_host().is_some())
            .map(|p| (p.ae_title, Destination::Peer))
            .collect();
        for w in self.web_destinations.get().into_iter().flatten() {
            all.push((w.name.clone(), Destination::Web(w.clone())));
        }
        Ok(all)
    }

    /// What `name` is as a destination, or why it is none: a DICOMweb
    /// destination, or a registered peer Custos can call.
    pub async fn destination(&self, name: &str) -> Result<Destination, DestinationError> {
        let name = name.trim();
        if let Some(w) = self
            .web_destinations
            .get()
            .and_then(|all| all.iter().find(|w| w.name == name))
        {
            return Ok(Destination::Web(w.clone()));
        }
        match self.peer_directory().peer(name).await? {
            Some(p) if p.host.connect_host().is_some() => Ok(Destination::Peer),
            _ => Err(DestinationError::Unknown(name.to_string())),
        }
    }

    /// Woken when jobs are queued.
    pub fn queue_notified(&self) -> &tokio::sync::Notify {
        &self.queued
    }

    /// Queues a newly stored instance for every rule it matches.
    /// `again` (its content was replaced) queues it even if sent before.
    pub(crate) async fn route_new(
        &self,
        uid: &str,
        facts: &InstanceFacts,
        again: bool,
    ) -> Result<(), IndexError> {
        for rule in self.routes().iter().filter(|r| r.matches(facts)) {
            let destination = rule.destination.trim().to_string();
            let now = now();
            let (scope, uid, due) = match rule.stable_seconds {
                0 => (JobScope::Instance, uid, now),
                quiet => (
                    JobScope::Study,
                    facts.study_instance_uid.as_str(),
                    now.saturating_add(quiet.min(i64::MAX as u64) as i64),
                ),
            };
            self.index
                .enqueue(
                    scope,
                    vec![(uid.to_string(), destination)],
                    &rule.name,
                    now,
                    due,
                    again,
                )
                .await?;
            self.queued.notify_one();
        }
        Ok(())
    }

    /// Queues every instance of a study for `destination` (again, if sent
    /// before); returns how many.
    pub async fn send_study(
        &self,
        study_uid: &str,
        destination: &str,
    ) -> Result<usize, IndexError> {
        let query = whole_study(study_uid);
        let mut after = 0;
        let mut count = 0;
        loop {
            let page = self.index.instance_page(&query, after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            count += page.len();
            let jobs = page
                .into_iter()
                .map(|(_, i)| (i.sop_instance_uid, destination.to_string()))
                .collect();
            self.index
                .enqueue(JobScope::Instance, jobs, "manual", now(), now(), true)
                .await?;
        }
        self.queued.notify_one();
        Ok(count)
    }

    /// The stored instances among `uids`, by UID.
    pub async fn stored_by_uid(
        &self,
        uids: &[String],
    ) -> Result<HashMap<String, StoredInstance>, IndexError> {
        let mut stored = HashMap::new();
        for page in uids.chunks(PAGE) {
            let query = instances_named(page);
            for inst in self.index.instances(query).await? {
                stored.insert(inst.sop_instance_uid.clone(), inst);
            }
        }
        Ok(stored)
    }

    /// What each job sends, in order: its instance (none if no longer
    /// stored), or every stored instance of its study.
    pub async fn job_instances(
        &self,
        jobs: &[Job],
    ) -> Result<Vec<Vec<StoredInstance>>, IndexError> {
        let uids: Vec<String> = jobs
            .iter()
            .filter(|j| j.scope == JobScope::Instance)
            .map(|j| j.uid.clone())
            .collect();
        let mut single = self.stored_by_uid(&uids).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(match job.scope {
                JobScope::Instance => single.remove(&job.uid).into_iter().collect(),
                JobScope::Study => self.study_instances(&job.uid).await?,
                // Not instances: the forward loop delivers these itself.
                JobScope::Commitment | JobScope::Webhook => Vec::new(),
            });
        }
        Ok(out)
    }

    async fn study_instances(&self, study_uid: &str) -> Result<Vec<StoredInstance>, IndexError> {
        self.retrieve_set(whole_study(study_uid)).await?.all().await
    }

    /// The studies (and so, through `name_patients`, the patients) of the
    /// instances sent, for the forward's audit record.
    pub async fn studies_of(&self, sop_uids: &[String]) -> Result<Vec<String>, IndexError> {
        let mut studies: std::collections::BTreeSet<String> = Default::default();
        for page in sop_uids.chunks(PAGE) {
            let query = instances_named(page);
            for row in self.index.find(query).await? {
                if let Some(s) = row.get(&Key::StudyInstanceUID) {
                    studies.insert(s.clone());
                }
            }
        }
        Ok(studies.into_iter().collect())
    }

    /// Records how an attempt at `job` went: done, due again after the
    /// policy's back-off, or failed for good.
    pub async fn record_attempt(
        &self,
        job: &Job,
        outcome: Result<(), Failure>,
        policy: RetryPolicy,
    ) -> Result<(), IndexError> {
        match outcome {
            Ok(()) => self.index.job_done(job.id, job.attempts).await,
            Err(Failure::Permanent(why)) => {
                self.index
                    .job_failed(job.id, job.attempts, &why, None)
                    .await
            }
            Err(Failure::Transient(why)) => {
                let retry = policy.delay(job.attempts);
                if retry.is_none() {
                    tracing::warn!(destination = %job.destination, job = job.id, error = %why, "forwarding failed for good");
                }
                self.index
                    .job_failed(job.id, job.attempts, &why, retry.map(|s| now() + s))
                    .await
            }
        }
    }

    /// Takes up to `limit` due jobs, none for the destinations in `skip`
    /// (still being sent to), leased for `lease_secs`.
    pub async fn take_jobs(
        &self,
        lease_secs: i64,
        limit: usize,
        skip: &[String],
    ) -> Result<Vec<Job>, IndexError> {
        let now = now();
        self.index
            .take_jobs(now, now + lease_secs, limit, skip)
            .await
    }

    /// Keeps `jobs` (taken, still being worked) leased for `lease_secs` more.
    pub async fn extend_leases(
        &self,
        jobs: &[(i64, i64)],
        lease_secs: i64,
    ) -> Result<(), IndexError> {
        self.index.extend_leases(jobs, now() + lease_secs).await
    }

    /// Jobs newest first (older than job `before`, for the next page).
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Job>, IndexError> {
        self.index.jobs(state, limit, before).await
    }

    /// Jobs pending and failed for good (`/metrics`).
    pub async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, IndexError> {
        self.index.job_counts().await
    }

    pub async fn retry_job(&self, id: i64) -> Result<bool, IndexError> {
        let ok = self.index.retry_job(id, now()).await?;
        self.queued.notify_one();
        Ok(ok)
    }

    pub async fn cancel_job(&self, id: i64) -> Result<bool, IndexError> {
        self.index.cancel_job(id).await
    }
}

/// The instances of these SOP Instance UIDs.
fn instances_named(uids: &[String]) -> Query {
    Query {
        level: Level::Image,
        conditions: vec![(Key::SOPInstanceUID, Matcher::List(uids.to_vec()))],
        limit: uids.len(),
        offset: 0,
        order: Vec::new(),
    }
}

/// Every instance of one study.
pub(crate) fn whole_study(study_uid: &str) -> Query {
    Query {
        level: Level::Study,
        conditions: vec![(
            Key::StudyInstanceUID,
            Matcher::Single(study_uid.to_string()),
        )],
        limit: usize::MAX >> 1,
        offset: 0,
        order: Vec::new(),
    }
}

/// A destination that is neither a DICOMweb destination nor a callable peer.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error(
        "`{0}` is neither a registered peer with one address and a port nor a [[dicomweb_destination]]"
    )]
    Unknown(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_then_stop() {
        let p = RetryPolicy {
            base: Duration::from_secs(10),
            max_attempts: 4,
        };
        assert_eq!(
            (1..=4).map(|a| p.delay(a)).collect::<Vec<_>>(),
            vec![Some(10), Some(20), Some(40), None]
        );
        let long = RetryPolicy {
            base: Duration::from_secs(600),
            max_attempts: 100,
        };
        assert_eq!(long.delay(30), Some(3600), "at most an hour");
    }
}
