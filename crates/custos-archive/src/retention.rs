//! Retention as use cases: a pass over every study deciding, with the
//! clock it is given, which ones the configured policies delete — listed
//! (dry run) or deleted through the same path as an administrator's delete
//! (index first, then blobs), each audited as Study Deleted with its policy.
//! The server runs a pass periodically; the CLI and the API run one on
//! demand. Protection is a per-study flag.

use std::sync::Arc;
use std::time::Duration;

use custos_core::audit::{EventId, Outcome};
use custos_core::retention::{RetentionPolicy, StudyActivity, Verdict, verdict};
use custos_index::IndexError;

use crate::Archive;

/// Studies read per page of a pass.
const PAGE: usize = 500;
/// Studies a report lists at most (the counts cover all).
const MAX_LISTED: usize = 10_000;

/// The configured policies and the quiet period before a study may go.
#[derive(Debug, Clone, Default)]
pub struct RetentionConfig {
    pub policies: Vec<RetentionPolicy>,
    pub quiet_secs: i64,
}

/// What a pass found (and, unless a dry run, did).
#[derive(Debug, Clone, Default)]
pub struct RetentionReport {
    /// Studies a policy takes: deleted, or to be deleted in a dry run (at
    /// most `MAX_LISTED`), with the policy's name.
    pub deleted: Vec<(StudyActivity, String)>,
    /// How many in all (may exceed the list).
    pub deleted_count: usize,
    /// Studies a policy would take but that are protected, or still
    /// receiving.
    pub protected: usize,
    pub receiving: usize,
    pub studies: usize,
}

impl Archive {
    pub fn set_retention(&self, config: RetentionConfig) {
        let _ = self.retention.set(config);
    }

    pub fn retention_config(&self) -> RetentionConfig {
        self.retention.get().cloned().unwrap_or_default()
    }

    /// One pass at unix time `now`; with `apply`, the studies are deleted.
    /// `by` names who ran it in the audit records.
    pub async fn retention_pass(
        &self,
        now: i64,
        apply: bool,
        by: &str,
    ) -> Result<RetentionReport, IndexError> {
        self.retention_pass_until(now, apply, by, || false).await
    }

    /// [`Self::retention_pass`] that ends early, between two studies, once
    /// `stop()` says so (the server shutting down: a deletion is never cut
    /// between the index and its record).
    async fn retention_pass_until(
        &self,
        now: i64,
        apply: bool,
        by: &str,
        stop: impl Fn() -> bool,
    ) -> Result<RetentionReport, IndexError> {
        let config = self.retention_config();
        let mut report = RetentionReport::default();
        if config.policies.is_empty() {
            return Ok(report);
        }
        // A pass planning for another date (`now`) may say what would go
        // then; one that deletes also waits for the quiet period by the
        // real clock, whatever date it was given: a study still receiving
        // today is not deleted.
        let clock = crate::routing::now();
        let decide = |study: &StudyActivity| {
            let v = verdict(&config.policies, study, now, config.quiet_secs);
            if apply
                && matches!(v, Verdict::Delete(_))
                && study.last_received > clock - config.quiet_secs
            {
                return Verdict::Receiving;
            }
            v
        };
        let mut after = 0;
        loop {
            let page = self.index.study_activity(after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (pk, study) in page {
                if stop() {
                    return Ok(report);
                }
                report.studies += 1;
                let policy = match decide(&study) {
                    Verdict::Delete(p) => p,
                    Verdict::Keep => continue,
                    spared => {
                        // Counted only if a policy would otherwise take it.
                        let mut bare = study.clone();
                        bare.protected = false;
                        if matches!(verdict(&config.policies, &bare, now, 0), Verdict::Delete(_)) {
                            if spared == Verdict::Protected {
                                report.protected += 1;
                            } else {
                                report.receiving += 1;
                            }
                        }
                        continue;
                    }
                };
                if apply {
                    // The page was read before the deletions ahead of this
                    // one (minutes, on a large pass): a study protected, or
                    // sent more instances, since then is looked at again.
                    let now_seen = self.index.study_activity(pk - 1, 1).await?;
                    let fresh = match now_seen.first() {
                        Some((p, fresh)) if *p == pk => fresh,
                        _ => continue,
                    };
                    if decide(fresh) != Verdict::Delete(policy.clone()) {
                        continue;
                    }
                    if !self.retention_delete(fresh, &policy, by).await? {
                        continue;
                    }
                }
                report.deleted_count += 1;
                if report.deleted.len() < MAX_LISTED {
                    report.deleted.push((study, policy));
                }
            }
        }
        Ok(report)
    }

    /// The record of a dry run's answer, which lists patients and studies
    /// (`None` when it lists none): the caller records it before showing
    /// the list (`record_access`).
    pub fn retention_listing(
        report: &RetentionReport,
        by: &str,
    ) -> Option<custos_core::audit::AuditEvent> {
        if report.deleted_count == 0 {
            return None;
        }
        let mut e = custos_core::audit::AuditEvent::new(EventId::Query, 'E', Outcome::Success);
        e.user = by.to_string();
        e.detail = format!(
            "retention dry run: {} studies would be deleted",
            report.deleted_count
        );
        for (s, _) in &report.deleted {
            if !e.patient_ids.contains(&s.patient_id) {
                e.patient_ids.push(s.patient_id.clone());
            }
            e.study_uids.push(s.study_uid.clone());
        }
        Some(e)
    }

    /// Deletes `study` as last read, unless it was protected or sent an
    /// instance since (the index checks in the deleting transaction);
    /// whether it was deleted.
    async fn retention_delete(
        &self,
        study: &StudyActivity,
        policy: &str,
        by: &str,
    ) -> Result<bool, IndexError> {
        let Some(removed) = self
            .index
            .remove_expired(&study.study_uid, study.last_received)
            .await?
        else {
            return Ok(false);
        };
        let left = self.erase_blobs(&removed).await;
        let removed = removed.len();
        let mut e =
            custos_core::audit::AuditEvent::new(EventId::StudyDeleted, 'D', Outcome::Success);
        e.user = by.to_string();
        e.patient_ids.push(study.patient_id.clone());
        e.study_uids.push(study.study_uid.clone());
        e.detail = format!(
            "deleted {} by retention policy {policy}: {removed} instances",
            study.study_uid
        );
        if left > 0 {
            e.outcome = Outcome::MinorFailure;
            e.detail.push_str(&format!(
                "; {left} stored files could not be removed (fsck --repair removes them)"
            ));
        }
        self.audit(e).await;
        Ok(true)
    }

    /// Runs a pass every `every` with the server's clock until `shutdown`
    /// (a pass under way stops after the study it is deleting: await this
    /// before the last audit records are flushed).
    pub async fn run_retention(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.retention_config().policies.is_empty() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let stopping = || *shutdown.borrow();
            match self
                .retention_pass_until(crate::routing::now(), true, "retention", stopping)
                .await
            {
                Ok(r) if r.deleted_count > 0 => {
                    tracing::info!(deleted = r.deleted_count, "retention pass")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
        }
    }

    pub async fn is_protected(&self, study_uid: &str) -> Result<bool, IndexError> {
        self.index.is_protected(study_uid).await
    }

    /// Removes, every hour until `shutdown`, finished forwarding jobs older
    /// than `jobs_days` and change-feed entries older than `changes_days`
    /// (0: kept for ever), so neither table grows without end.
    pub async fn run_housekeeping(
        self: Arc<Self>,
        jobs_days: u32,
        changes_days: u32,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let now = crate::routing::now();
            let day = 86_400;
            if jobs_days > 0 {
                match self
                    .index
                    .prune_jobs(now - i64::from(jobs_days) * day)
                    .await
                {
                    Ok(n) if n > 0 => {
                        tracing::info!(removed = n, "finished forwarding jobs pruned")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune finished jobs"),
                }
            }
            if changes_days > 0 {
                match self
                    .index
                    .prune_changes(now - i64::from(changes_days) * day)
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "change feed pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune the change feed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Protects a study from retention, or lifts it; audited. Whether the
    /// flag changed.
    pub async fn protect_study(
        &self,
        study_uid: &str,
        on: bool,
        reason: &str,
        by: &str,
    ) -> Result<bool, IndexError> {
        let changed = self
            .index
            .set_protected(study_uid, on, reason, crate::routing::now())
            .await?;
        if changed {
            let mut e =
                custos_core::audit::AuditEvent::new(EventId::SecurityAlert, 'E', Outcome::Success);
            e.user = by.to_string();
            e.study_uids.push(study_uid.to_string());
            e.detail = if on {
                format!("study {study_uid} protected from retention: {reason}")
            } else {
                format!("study {study_uid} no longer protected from retention")
            };
            self.name_patients(&mut e).await;
            self.audit(e).await;
        }
        Ok(changed)
    }
}
