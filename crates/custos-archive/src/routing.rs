//! Forwarding: routing rules match each newly stored instance and queue it
//! for their destinations in the index's durable queue before the sender
//! gets its success status (so a crash loses no forward: either the queue
//! has the job, or the sender was not acknowledged and sends again). An
//! administrator can also send a whole study. `custos-dimse::router` works
//! the queue.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use custos_core::query::{Key, Level, Matcher, Query};
use custos_core::record::StoredInstance;
use custos_core::routing::{InstanceFacts, Job, JobState, RouteRule};
use custos_index::IndexError;

use crate::Archive;

/// Unix seconds now.
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
        let _ = self.routes.set(rules);
    }

    pub fn routes(&self) -> &[RouteRule] {
        self.routes.get().map(Vec::as_slice).unwrap_or_default()
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
            self.index
                .enqueue(
                    vec![(uid.to_string(), destination)],
                    &rule.name,
                    now(),
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
        let query = Query {
            level: Level::Study,
            conditions: vec![(
                Key::StudyInstanceUID,
                Matcher::Single(study_uid.to_string()),
            )],
            limit: usize::MAX >> 1,
            offset: 0,
            order: Vec::new(),
        };
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
            self.index.enqueue(jobs, "manual", now(), true).await?;
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
            let query = Query {
                level: Level::Image,
                conditions: vec![(Key::SOPInstanceUID, Matcher::List(page.to_vec()))],
                limit: page.len(),
                offset: 0,
                order: Vec::new(),
            };
            for inst in self.index.instances(query).await? {
                stored.insert(inst.sop_instance_uid.clone(), inst);
            }
        }
        Ok(stored)
    }

    pub async fn take_jobs(&self, lease_secs: i64, limit: usize) -> Result<Vec<Job>, IndexError> {
        let now = now();
        self.index.take_jobs(now, now + lease_secs, limit).await
    }

    pub async fn job_done(&self, job: &Job) -> Result<(), IndexError> {
        self.index.job_done(job.id, job.attempts).await
    }

    /// An attempt failed: due again after `retry_secs`, or failed for good.
    pub async fn job_failed(
        &self,
        job: &Job,
        error: &str,
        retry_secs: Option<i64>,
    ) -> Result<(), IndexError> {
        self.index
            .job_failed(job.id, job.attempts, error, retry_secs.map(|s| now() + s))
            .await
    }

    pub async fn jobs(
        &self,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>, IndexError> {
        self.index.jobs(state, limit).await
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
