//! The archive: the only path to the index and the blob store.
//!
//! Ingest streams an instance into a staged blob, reads back only the attributes
//! the index needs, commits the blob durably, then commits the index row; the
//! caller acknowledges only after both. Retrieval hands out the stored bytes.
//! Protocol layers (DIMSE and DICOMweb) call this and nothing below it.
#![forbid(unsafe_code)]

mod attributes;
pub mod audit;
pub mod audit_reserve;
mod audit_writer;
pub mod changes;
pub mod commitment;
pub mod corrections;
pub mod deidentify;
pub mod dicomdir;
mod export;
mod fsck;
#[doc(hidden)]
pub mod fuzzing;
mod ingest;
pub mod lengths;
mod migrate;
pub mod mpps;
pub mod part10;
pub mod registry;
pub mod retention;
mod retrieve;
pub mod routing;
pub mod status;
pub mod text;
pub mod view;
pub mod worklist;

pub use export::{ExportError, StudyExport};
pub use fsck::{FsckError, FsckOptions, FsckReport};
pub use ingest::{Ingest, IngestError, Received, StoreOutcome};
pub use migrate::{MigrateReport, SettingsCopied};
pub use retrieve::{
    DatasetStream, RetrieveError, StoredFile, WHOLE_READ_MAX, can_transcode, can_transcode_instance,
};

use std::str::FromStr;
use std::sync::Arc;

use custos_core::query::{Query, Row};
use custos_core::record::StoredInstance;
use custos_index::{AuditLog, Index, IndexError, PeerDirectory, Registry, RowStream};
use custos_store::BlobStore;

/// What to do when a SOP Instance UID arrives again with different bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicatePolicy {
    /// Refuse the new copy with a failure status.
    Reject,
    /// Keep the stored copy; the sender gets a warning.
    #[default]
    Keep,
    /// Replace the stored copy with the new one.
    Replace,
}

impl FromStr for DuplicatePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(DuplicatePolicy::Reject),
            "keep" => Ok(DuplicatePolicy::Keep),
            "replace" => Ok(DuplicatePolicy::Replace),
            other => Err(format!(
                "unknown duplicate policy `{other}` (reject, keep or replace)"
            )),
        }
    }
}

pub struct Archive {
    index: Arc<dyn Index>,
    store: Arc<dyn BlobStore>,
    duplicates: DuplicatePolicy,
    audit: std::sync::OnceLock<audit::AuditSender>,
    trail: std::sync::OnceLock<audit::AuditTrail>,
    routes: std::sync::OnceLock<Vec<custos_core::routing::RouteRule>>,
    web_destinations: std::sync::OnceLock<Vec<custos_core::routing::WebDestination>>,
    route_keys: std::sync::OnceLock<Vec<custos_core::query::Key>>,
    webhook_hosts: std::sync::OnceLock<Vec<String>>,
    retention: std::sync::OnceLock<retention::RetentionConfig>,
    queued: tokio::sync::Notify,
    metrics: Arc<custos_core::metrics::Metrics>,
    deid: std::sync::OnceLock<(custos_core::deid::DeidKey, Vec<deidentify::SafePrivate>)>,
    secrets: std::sync::OnceLock<custos_tls::sealed::SecretBox>,
}

impl Archive {
    pub fn new(
        index: Arc<dyn Index>,
        store: Arc<dyn BlobStore>,
        duplicates: DuplicatePolicy,
    ) -> Archive {
        Archive {
            index,
            store,
            duplicates,
            audit: std::sync::OnceLock::new(),
            trail: std::sync::OnceLock::new(),
            routes: std::sync::OnceLock::new(),
            web_destinations: std::sync::OnceLock::new(),
            route_keys: std::sync::OnceLock::new(),
            webhook_hosts: std::sync::OnceLock::new(),
            retention: std::sync::OnceLock::new(),
            queued: tokio::sync::Notify::new(),
            metrics: Arc::new(custos_core::metrics::Metrics::new()),
            deid: std::sync::OnceLock::new(),
            secrets: std::sync::OnceLock::new(),
        }
    }

    /// This server's counters and latencies (`/metrics`).
    pub fn metrics(&self) -> &custos_core::metrics::Metrics {
        &self.metrics
    }

    /// Audit records waiting to be written.
    pub fn audit_queue_depth(&self) -> usize {
        self.audit.get().map_or(0, |a| a.queued())
    }

    /// Counts a failed request by what failed, if it was the index or the
    /// store (`custos_index_errors_total`, `custos_store_errors_total`).
    pub fn count_ingest_error(&self, e: &IngestError) {
        match e {
            IngestError::Index(_) => self.count_index_error(),
            IngestError::Store(_) => self.count_store_error(),
            _ => {}
        }
    }

    pub fn count_index_error(&self) {
        self.metrics.inc("custos_index_errors_total", &[]);
    }

    pub fn count_store_error(&self) {
        self.metrics.inc("custos_store_errors_total", &[]);
    }

    /// Starts writing audit records (a server does; one-shot tools use
    /// `audit::append_now`). Without it, `audit` drops events.
    pub fn start_audit(&self, trail: audit::AuditTrail) {
        let _ = self.trail.set(trail.clone());
        let _ = self.audit.set(audit::start(self.audit_log(), trail));
    }

    /// Recomputes the trail's chain (what `custos audit verify` does);
    /// `None` when this archive writes no trail.
    pub async fn verify_audit(&self) -> Option<Result<audit::ChainCheck, IndexError>> {
        let trail = self.trail.get()?;
        Some(trail.verify(self.index.as_ref()).await)
    }

    /// Records an event in the audit trail; never fails the caller, and
    /// waits only when the trail's queue is full (back-pressure: a record is
    /// never dropped). Repeated failures are coalesced (`audit` module).
    pub async fn audit(&self, mut event: custos_core::audit::AuditEvent) {
        if event.source.is_empty()
            && let Some(source) = audit::request_source()
        {
            event.source = source;
        }
        if let Some(a) = self.audit.get() {
            a.send(event).await;
        }
    }

    /// Records an access to patient data before it happens: returns once
    /// the record is in the index (concurrent accesses share a commit). An
    /// error means the trail could not be written within
    /// [`audit::ACCESS_WAIT`]: the caller refuses the access, which is then
    /// recorded as a security alert when the trail works again.
    pub async fn record_access(
        &self,
        mut event: custos_core::audit::AuditEvent,
    ) -> Result<(), audit::TrailUnavailable> {
        if event.source.is_empty()
            && let Some(source) = audit::request_source()
        {
            event.source = source;
        }
        let Some(a) = self.audit.get() else {
            return Ok(());
        };
        let mut alert = event.clone();
        a.record_access(event, audit::ACCESS_WAIT)
            .await
            .inspect_err(|_| {
                tracing::error!(
                    "AUDIT TRAIL CANNOT BE WRITTEN: an access to patient data was refused"
                );
                alert.event = custos_core::audit::EventId::SecurityAlert;
                alert.action = 'E';
                alert.outcome = custos_core::audit::Outcome::SeriousFailure;
                alert.detail = format!(
                    "refused, the audit trail could not be written: {}",
                    alert.detail
                );
                // Not awaited: the queue may be full while the trail is down.
                a.send_or_count(alert);
            })
    }

    /// Waits until the events reported so far are written.
    pub async fn flush_audit(&self) {
        if let Some(a) = self.audit.get() {
            a.flush().await;
        }
    }

    /// The registered peers, read-only (the association gate, C-MOVE destinations).
    pub fn peer_directory(&self) -> Arc<dyn PeerDirectory> {
        self.index.clone()
    }

    /// Peers, users and tokens, for authentication and the `registry` use cases.
    pub fn registry(&self) -> Arc<dyn Registry> {
        self.index.clone()
    }

    /// The audit trail, for its writer, its readers and its forwarder.
    pub fn audit_log(&self) -> Arc<dyn AuditLog> {
        self.index.clone()
    }

    pub async fn statistics(&self) -> Result<custos_index::Statistics, IndexError> {
        self.index.statistics().await
    }

    /// Adds to an audit event the patients of the studies it names, so a
    /// retrieve is found by patient even when the request named only UIDs.
    /// A lookup failure leaves the event as it was (the access is still
    /// recorded, by study).
    pub async fn name_patients(&self, e: &mut custos_core::audit::AuditEvent) {
        if e.study_uids.is_empty() {
            return;
        }
        let q = Query {
            level: custos_core::query::Level::Study,
            conditions: vec![(
                custos_core::query::Key::StudyInstanceUID,
                custos_core::query::Matcher::List(e.study_uids.clone()),
            )],
            limit: e.study_uids.len(),
            offset: 0,
            order: Vec::new(),
        };
        let Ok(rows) = self.index.find(q).await else {
            return;
        };
        for row in rows {
            if let Some(id) = row.get(&custos_core::query::Key::PatientID)
                && !e.patient_ids.contains(id)
            {
                e.patient_ids.push(id.clone());
            }
        }
    }

    /// For a retrieve: the studies and patients of what `query` selects when
    /// it names no study (a C-GET or C-MOVE of series or instances by UID
    /// alone), so that the transfer is found by patient and study; else as
    /// [`name_patients`](Self::name_patients).
    pub async fn name_retrieved(&self, e: &mut custos_core::audit::AuditEvent, query: &Query) {
        use custos_core::query::Key;
        // Every page: at image level a row is an instance, and a list of
        // thousands of instance UIDs may span several patients. Bounded by
        // what an identifier (1 MiB) can list.
        const PAGE: usize = 1000;
        let mut offset = 0;
        let look = e.study_uids.is_empty() && !query.conditions.is_empty();
        while look && offset < 100 * PAGE {
            let q = Query {
                level: query.level,
                conditions: query.conditions.clone(),
                limit: PAGE,
                offset,
                order: Vec::new(),
            };
            let Ok(rows) = self.index.find(q).await else {
                break;
            };
            let more = rows.len() == PAGE;
            for row in rows {
                for (key, names) in [
                    (Key::StudyInstanceUID, &mut e.study_uids),
                    (Key::PatientID, &mut e.patient_ids),
                ] {
                    if let Some(v) = row.get(&key)
                        && !names.contains(v)
                    {
                        names.push(v.clone());
                    }
                }
            }
            if !more {
                break;
            }
            offset += PAGE;
        }
        self.name_patients(e).await;
    }

    /// Stored instances per modality, most first.
    pub async fn instances_by_modality(&self) -> Result<Vec<(String, u64)>, IndexError> {
        self.index.instances_by_modality().await
    }

    /// Instances received since `since` (RFC 3339 UTC), per minute.
    pub async fn received_per_minute(&self, since: &str) -> Result<Vec<(String, u64)>, IndexError> {
        self.index.received_per_minute(since).await
    }

    /// Starts receiving an instance whose file meta comes from the network
    /// (command set and presentation context); the caller writes the data set.
    pub async fn begin_network_ingest(
        &self,
        meta: part10::MetaInfo,
    ) -> Result<Ingest<'_>, IngestError> {
        Ingest::network(self, meta).await
    }

    /// Starts receiving a complete Part 10 file (import, STOW).
    pub async fn begin_file_ingest(&self) -> Result<Ingest<'_>, IngestError> {
        Ingest::file(self).await
    }

    /// Stores a rewritten copy of an instance (a correction, a
    /// de-identified copy) through the ingest path, replacing one with the
    /// same SOP Instance UID.
    pub(crate) async fn store_replacing(&self, bytes: &[u8]) -> Result<(), IngestError> {
        let mut ingest = self.begin_file_ingest().await?;
        ingest.replace_existing();
        ingest.write(bytes).await?;
        ingest.finish().await?;
        Ok(())
    }

    pub async fn find(&self, query: Query) -> Result<Vec<Row>, IndexError> {
        self.index.find(query).await
    }

    /// Matches as the index's cursor reads them (see `InstanceIndex::find_stream`).
    pub async fn find_stream(&self, query: Query) -> Result<RowStream, IndexError> {
        self.index.find_stream(query).await
    }

    /// The stored instances a retrieve request selects, read page by page;
    /// the request must name them by its level's unique key
    /// (`Query::check_retrieve`).
    pub async fn retrieve_set(&self, query: Query) -> Result<RetrieveSet, IndexError> {
        query
            .check_retrieve()
            .map_err(|e| IndexError::BadQuery(e.into()))?;
        let kinds = self.index.instance_kinds(&query).await?;
        let total = kinds.iter().map(|k| k.count).sum();
        Ok(RetrieveSet {
            index: self.index.clone(),
            query,
            after: 0,
            kinds,
            total,
            left: total,
        })
    }

    /// Removes a study or one of its series: index rows first (so no reader
    /// is sent to a missing blob), then the blobs; a blob left behind by a
    /// crash is an orphan that `fsck --repair` removes. Returns how many
    /// instances went, and how many of their blobs could not be removed.
    pub async fn delete(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
    ) -> Result<(usize, usize), IndexError> {
        let removed = self.index.remove(study_uid, series_uid).await?;
        let left = self.erase_blobs(&removed).await;
        Ok((removed.len(), left))
    }

    /// Removes the blobs of instances the index no longer has; one that
    /// cannot be removed stays as an orphan for `fsck`. How many stayed.
    async fn erase_blobs(&self, removed: &[StoredInstance]) -> usize {
        let mut left = 0;
        for inst in removed {
            if let Err(e) = self.store.delete(&inst.blob_key).await {
                tracing::warn!(error = %e, "could not remove the blob of a deleted instance");
                left += 1;
            }
        }
        left
    }
}

/// Instances read from the index per page of a retrieve set.
const RETRIEVE_PAGE: usize = 256;

/// A retrieve request's instances: how many and of which kinds up front (the
/// sub-operation counts and the contexts a C-MOVE proposes), then the
/// instances themselves a page at a time, so a request naming much of the
/// archive never holds it in memory. It ends after `total` instances even if
/// more arrive meanwhile.
pub struct RetrieveSet {
    index: Arc<dyn Index>,
    query: Query,
    after: i64,
    pub kinds: Vec<custos_index::InstanceKind>,
    pub total: u64,
    left: u64,
}

impl RetrieveSet {
    /// The next instances; empty when the set is exhausted.
    pub async fn next_page(&mut self) -> Result<Vec<StoredInstance>, IndexError> {
        if self.left == 0 {
            return Ok(Vec::new());
        }
        let limit = RETRIEVE_PAGE.min(self.left as usize);
        let page = self
            .index
            .instance_page(&self.query, self.after, limit)
            .await?;
        if let Some((pk, _)) = page.last() {
            self.after = *pk;
        }
        self.left = if page.len() < limit {
            0
        } else {
            self.left - page.len() as u64
        };
        Ok(page.into_iter().map(|(_, i)| i).collect())
    }

    /// Every instance at once, for sets known to be small (one study).
    pub async fn all(mut self) -> Result<Vec<StoredInstance>, IndexError> {
        let mut out = Vec::new();
        loop {
            let page = self.next_page().await?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custos_core::audit::{AuditEvent, EventId, Outcome};
    use custos_core::query::{Key, Level, Matcher};
    use custos_core::record::InstanceRecord;
    use custos_index::InstanceIndex;

    /// A retrieve of instances by UID alone names every patient they belong
    /// to in its record, past the first thousand rows (an image-level list of
    /// a thousand UIDs of one patient and one of another's named only the
    /// first).
    #[tokio::test]
    async fn a_retrieve_of_many_instances_names_every_patient() {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("custos-name-retrieved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let index = Arc::new(custos_index::SqliteIndex::open(dir.join("index.db")).unwrap());
        let store = Arc::new(custos_store::FsStore::open(dir.join("blobs")).unwrap());
        let archive = Archive::new(index.clone(), store, DuplicatePolicy::Keep);
        let mut uids = Vec::new();
        for i in 0..1001 {
            let (patient, study) = if i < 1000 {
                ("P-A", "1.2.3.1")
            } else {
                ("P-B", "1.2.3.2")
            };
            let sop = format!("1.2.3.9.{i}");
            let record = InstanceRecord {
                patient_id: patient.into(),
                study_uid: study.into(),
                series_uid: format!("{study}.1"),
                sop_instance_uid: sop.clone(),
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                blob_key: format!("key-{i}"),
                ..Default::default()
            };
            index.insert(record, false).await.unwrap();
            uids.push(sop);
        }
        let query = Query {
            level: Level::Image,
            conditions: vec![(Key::SOPInstanceUID, Matcher::List(uids))],
            limit: 0,
            offset: 0,
            order: Vec::new(),
        };
        let mut e = AuditEvent::new(EventId::InstancesTransferred, 'R', Outcome::Success);
        archive.name_retrieved(&mut e, &query).await;
        assert_eq!(e.patient_ids, ["P-A", "P-B"]);
        assert_eq!(e.study_uids, ["1.2.3.1", "1.2.3.2"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
