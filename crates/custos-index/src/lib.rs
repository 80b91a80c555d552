//! The index: what is stored where, searchable by the attributes of PS3.4 C.6,
//! and the registry of DICOM peers.
//!
//! [`Index`] is the seam for the two backends: SQLite (embedded default, this
//! crate's [`SqliteIndex`]) and PostgreSQL (scale-out). Nothing SQLite-specific
//! crosses it: callers see records, queries and outcomes. PostgreSQL is [`PgIndex`].
#![forbid(unsafe_code)]

mod changes;
mod pg_connect;
mod postgres;
mod queue;
mod retention;
mod schema;
mod sql_query;
mod sqlite;
mod statements;
mod worklist;

pub use postgres::PgIndex;
pub use sqlite::SqliteIndex;

use async_trait::async_trait;
use custos_core::audit::{AuditKey, AuditRecord, AuditSearch};
use custos_core::query::{Query, Row};
use custos_core::record::{InstanceRecord, MppsRow, StoredInstance, WorklistRow};
use custos_core::routing::{Job, JobScope, JobState};
use custos_core::{ApiToken, Peer, User};

/// A backend's own error (SQLite's, PostgreSQL's), kept as its source.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("could not open the index at {path}: {source}")]
    Open { path: String, source: BackendError },
    #[error("could not create the index file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("index query failed: {0}")]
    Backend(BackendError),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("{0}")]
    Config(String),
    #[error("the index writer has stopped")]
    WriterGone,
    /// The commit was sent but its answer never came (the connection broke):
    /// the change may be in the index or not.
    #[error("the index's answer to a commit was lost: {0}")]
    Uncertain(String),
    #[error("invalid query: {0}")]
    BadQuery(String),
    #[error("corrupt index row: {0}")]
    Corrupt(String),
    /// Audit records offered to [`AuditLog::copy_audit`] do not continue
    /// this trail.
    #[error("the audit trails differ: {0}")]
    AuditMismatch(String),
    /// A user change or removal that would leave no enabled administrator
    /// where there was one; nothing changed.
    #[error("that would leave no enabled administrator: enable or add another first")]
    LastAdmin,
}

/// What appending to the audit trail did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The new head: its sequence number and link.
    pub seq: i64,
    pub link: String,
    /// Whether the record the appending node named as the newest it wrote
    /// was still in the trail as written (false: the trail was cut or
    /// rewritten behind the node's back).
    pub mine_intact: bool,
}

/// How to tell whether a node's newest record `mine` is still in a trail
/// whose head is `head`: known from the head alone, or by reading the
/// record at that sequence number (another node wrote since).
pub(crate) enum MineCheck {
    Known(bool),
    LinkAt(i64, String),
}

pub(crate) fn check_mine(head: Option<&(i64, String)>, mine: Option<&(i64, String)>) -> MineCheck {
    match (mine, head) {
        (None, _) => MineCheck::Known(true),
        (Some((seq, link)), Some((head_seq, head_link))) if seq == head_seq => {
            MineCheck::Known(link == head_link)
        }
        (Some((seq, link)), Some((head_seq, _))) if seq < head_seq => {
            MineCheck::LinkAt(*seq, link.clone())
        }
        // No head, or one before the record: removed.
        _ => MineCheck::Known(false),
    }
}

/// Whether `records` continue a trail whose newest record is `head`
/// (consecutive sequence numbers, each linked to the one before).
pub(crate) fn continues(
    head: Option<(i64, String)>,
    records: &[AuditRecord],
) -> Result<(), IndexError> {
    let (mut seq, mut prev) = head.unwrap_or((0, custos_core::audit::GENESIS.to_string()));
    for r in records {
        if r.seq != seq + 1 || r.prev_hash != prev {
            return Err(IndexError::AuditMismatch(format!(
                "record {} does not follow record {seq} of this trail",
                r.seq
            )));
        }
        seq = r.seq;
        prev = r.hash.clone();
    }
    Ok(())
}

impl IndexError {
    /// Whether the change asked for may have been committed all the same:
    /// what it wrote (an instance's blob) must then be kept, not undone.
    pub fn may_have_committed(&self) -> bool {
        matches!(self, IndexError::Uncertain(_) | IndexError::WriterGone)
    }
}

/// What happened to an instance offered to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// New SOP Instance UID, now indexed.
    Inserted,
    /// Already indexed with the same bytes (same SHA-256); nothing changed.
    Identical { existing: StoredInstance },
    /// Already indexed with other bytes; the index kept the existing copy.
    Conflict { existing: StoredInstance },
    /// Already indexed with other bytes; the new copy replaced it.
    Replaced { previous: StoredInstance },
}

/// Counts for the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    pub patients: u64,
    pub studies: u64,
    pub series: u64,
    pub instances: u64,
    /// Sum of stored instance sizes.
    pub bytes: u64,
}

const STATISTICS_SQL: &str = "SELECT (SELECT COUNT(DISTINCT patient_id) FROM studies), (SELECT COUNT(*) FROM studies),
    (SELECT COUNT(*) FROM series), (SELECT COUNT(*) FROM instances), (SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM instances)";

const BY_MODALITY_SQL: &str =
    "SELECT se.modality, COUNT(*) FROM instances i JOIN series se ON i.series_pk = se.pk
    GROUP BY se.modality ORDER BY 2 DESC, 1";

impl From<rusqlite::Error> for IndexError {
    fn from(e: rusqlite::Error) -> IndexError {
        IndexError::Backend(Box::new(e))
    }
}

/// Stored instances of one SOP class and transfer syntax under a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceKind {
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub count: u64,
}

/// Query matches as a database cursor yields them.
pub type RowStream = tokio::sync::mpsc::Receiver<Result<Row, IndexError>>;

/// Rows a cursor reads ahead of its consumer.
const ROWS_AHEAD: usize = 64;

/// What is stored and where: instances, queries over them, deletion.
#[async_trait]
pub trait InstanceIndex: Send + Sync + 'static {
    /// Records a stored instance durably (the call returns after commit).
    /// With `replace`, a different instance under the same UID is replaced.
    async fn insert(
        &self,
        record: InstanceRecord,
        replace: bool,
    ) -> Result<InsertOutcome, IndexError>;

    /// Matches at the query's level (one row per patient, study, series or
    /// instance), handed over as the database's cursor reads them, a few
    /// rows ahead of the caller: a C-FIND sends its first match before the
    /// last is read, and never holds them all. Dropping the stream stops
    /// the read. A query that fails does so as an `Err` row.
    async fn find_stream(&self, query: Query) -> Result<RowStream, IndexError>;

    /// Every match at the query's level (bounded by its limit).
    async fn find(&self, query: Query) -> Result<Vec<Row>, IndexError> {
        let mut stream = self.find_stream(query).await?;
        let mut rows = Vec::new();
        while let Some(row) = stream.recv().await {
            rows.push(row?);
        }
        Ok(rows)
    }

    /// The stored instances under everything the query matches, in index
    /// order after position `after` (0: from the start), at most `limit`,
    /// each with its position: retrieve sets are read page by page.
    async fn instance_page(
        &self,
        query: &Query,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StoredInstance)>, IndexError>;

    /// Which of `uids` were received with other content than their stored
    /// copy (and not replaced since).
    async fn conflicted(&self, uids: Vec<String>) -> Result<Vec<String>, IndexError>;

    /// How many instances the query selects, by (SOP class, transfer syntax).
    async fn instance_kinds(&self, query: &Query) -> Result<Vec<InstanceKind>, IndexError>;

    /// The first `query.limit` stored instances under the query.
    async fn instances(&self, query: Query) -> Result<Vec<StoredInstance>, IndexError> {
        let page = self.instance_page(&query, 0, query.limit).await?;
        Ok(page.into_iter().map(|(_, i)| i).collect())
    }

    async fn instance_count(&self) -> Result<u64, IndexError>;

    /// Stored instances in index order after position `after` (0 for the
    /// start), at most `limit`, with their positions: paging for fsck.
    async fn stored_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, StoredInstance)>, IndexError>;

    async fn statistics(&self) -> Result<Statistics, IndexError>;

    /// Stored instances per modality (of their series), most first.
    async fn instances_by_modality(&self) -> Result<Vec<(String, u64)>, IndexError>;

    /// Instances received at or after `since` (RFC 3339 UTC), counted per
    /// minute (`YYYY-MM-DDTHH:MM`, UTC), oldest first.
    async fn received_per_minute(&self, since: &str) -> Result<Vec<(String, u64)>, IndexError>;

    /// Removes a study (or, with `series_uid`, one of its series) and
    /// everything under it from the index, and the study itself once it has no
    /// series left; returns the stored instances removed, whose blobs the caller
    /// deletes next.
    async fn remove(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
    ) -> Result<Vec<StoredInstance>, IndexError>;
}

/// The registered peers, read-only: all the association gate gets.
#[async_trait]
pub trait PeerDirectory: Send + Sync + 'static {
    async fn peer(&self, ae_title: &str) -> Result<Option<Peer>, IndexError>;
    async fn peers(&self) -> Result<Vec<Peer>, IndexError>;
}

/// Who may do what: peers, users and API tokens (changed through
/// `custos_archive::registry`).
#[async_trait]
pub trait Registry: PeerDirectory {
    /// Adds or replaces a peer.
    async fn put_peer(&self, peer: Peer) -> Result<(), IndexError>;
    /// Returns whether a peer was removed.
    async fn remove_peer(&self, ae_title: &str) -> Result<bool, IndexError>;

    async fn user(&self, name: &str) -> Result<Option<User>, IndexError>;
    async fn users(&self) -> Result<Vec<User>, IndexError>;
    /// Adds or replaces a user; [`IndexError::LastAdmin`] if that leaves
    /// no enabled administrator where there was one.
    async fn put_user(&self, user: User) -> Result<(), IndexError>;
    /// Adds a user unless one has that name; returns whether it was added.
    async fn insert_user(&self, user: User) -> Result<bool, IndexError>;
    /// Removes a user and its tokens; returns whether it existed;
    /// [`IndexError::LastAdmin`] as `put_user`.
    async fn remove_user(&self, name: &str) -> Result<bool, IndexError>;

    async fn token(&self, id: &str) -> Result<Option<ApiToken>, IndexError>;
    async fn tokens(&self) -> Result<Vec<ApiToken>, IndexError>;
    async fn put_token(&self, token: ApiToken) -> Result<(), IndexError>;
    /// Marks a token revoked; returns whether it existed.
    async fn revoke_token(&self, id: &str) -> Result<bool, IndexError>;
}

/// The audit trail: appended, read, never changed.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends (time, canonical body) entries to the audit trail, each linked
    /// to the last record under `key`; returns the new head after commit,
    /// and whether `mine` (the newest record the caller wrote, if any) was
    /// still in the trail as written, checked in the same transaction.
    async fn append_audit(
        &self,
        key: &AuditKey,
        entries: Vec<(String, String)>,
        mine: Option<(i64, String)>,
    ) -> Result<Appended, IndexError>;

    /// Which index this is (its file, or its database's hosts, ports and
    /// name; never credentials): a node's checkpoint is about one index.
    fn audit_identity(&self) -> String;
    /// Copies records of another index's trail as they are (`custos
    /// migrate`): only onto this trail's head (`records[0]` follows it, by
    /// sequence number and link, or starts an empty trail), in one
    /// transaction; else [`IndexError::AuditMismatch`].
    async fn copy_audit(&self, records: &[AuditRecord]) -> Result<(), IndexError>;
    /// The newest audit record, if any.
    async fn audit_head(&self) -> Result<Option<AuditRecord>, IndexError>;

    /// Audit records after position `after` (0: from the start), in order.
    async fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, IndexError>;

    /// Audit records matching `search`, in its order (a scan of the bodies
    /// within the sequence and time bounds).
    async fn audit_search(&self, search: &AuditSearch) -> Result<Vec<AuditRecord>, IndexError>;
}

/// The department's schedule: worklist items (scheduled procedure steps,
/// kept whole as DICOM JSON with the keys modalities match on beside them)
/// and the performed procedure steps modalities report.
#[async_trait]
pub trait Worklist: Send + Sync + 'static {
    /// Adds `row` (its `id` is ignored); returns the new id.
    async fn add_worklist_item(&self, row: WorklistRow) -> Result<i64, IndexError>;
    /// Replaces item `row.id`; returns whether it existed.
    async fn replace_worklist_item(&self, row: WorklistRow) -> Result<bool, IndexError>;
    async fn worklist_item(&self, id: i64) -> Result<Option<WorklistRow>, IndexError>;
    /// Returns whether it existed.
    async fn remove_worklist_item(&self, id: i64) -> Result<bool, IndexError>;
    /// Items whose start date is within `from..=to` (YYYYMMDD, either end
    /// open), by start date and time, at most `limit`.
    async fn worklist_items(
        &self,
        from: Option<String>,
        to: Option<String>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorklistRow>, IndexError>;

    /// The first worklist item with this accession number.
    async fn worklist_id_by_accession(&self, accession: &str) -> Result<Option<i64>, IndexError>;
    /// Adds a performed procedure step; `false` if one has its UID.
    async fn create_mpps(&self, row: MppsRow) -> Result<bool, IndexError>;
    async fn mpps(&self, sop_instance_uid: &str) -> Result<Option<MppsRow>, IndexError>;
    /// Replaces the step `row.sop_instance_uid` if it is still IN PROGRESS;
    /// returns whether it was (the state machine's compare-and-set).
    async fn update_mpps_in_progress(&self, row: MppsRow) -> Result<bool, IndexError>;
}

/// The forwarding queue: jobs survive restarts, and several nodes on one
/// PostgreSQL index take different jobs (`FOR UPDATE SKIP LOCKED`). A job
/// taken is leased: if its node dies, it is due again when the lease ends.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Queues (UID, destination) jobs of `scope` made at `now`, due at `due`.
    /// An existing instance job for the same pair is left alone, or with
    /// `again` put back to pending. An existing study job (the study is
    /// still arriving) is due at `due` instead, and with `again` pending
    /// anew even if it was sent (the study changed): whole studies are sent
    /// once they have been quiet for a while.
    async fn enqueue(
        &self,
        scope: JobScope,
        jobs: Vec<(String, String)>,
        reason: &str,
        now: i64,
        due: i64,
        again: bool,
    ) -> Result<(), IndexError>;
    /// Holds a storage commitment report (`payload`) of transaction `uid` for
    /// the peer `destination`, due at `due`; a report of the same transaction
    /// replaces an earlier one (the modality asked again).
    async fn enqueue_report(
        &self,
        uid: &str,
        destination: &str,
        payload: &str,
        now: i64,
        due: i64,
    ) -> Result<(), IndexError>;
    /// A held report was delivered on the association that asked for it
    /// (`delivered`: done), or was not (due at `now`).
    async fn settle_report(
        &self,
        uid: &str,
        destination: &str,
        delivered: bool,
        now: i64,
    ) -> Result<(), IndexError>;
    /// Takes up to `limit` due pending jobs for destinations not in `skip`:
    /// each gets one more attempt and is not due again before `lease_until`.
    async fn take_jobs(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
        skip: &[String],
    ) -> Result<Vec<Job>, IndexError>;
    /// Records the end of attempt `attempt` (the job's `attempts` when
    /// taken): done, due again at `retry_at`, or (None) failed for good.
    /// Ignored if the job was cancelled or taken again since (its lease ran
    /// out): a stale attempt never overwrites a newer outcome.
    async fn job_done(&self, id: i64, attempt: i64) -> Result<(), IndexError>;
    /// Keeps the jobs of attempts `(id, attempt)` still under way leased until
    /// `lease_until` (a send longer than the lease must not be taken again by
    /// another node meanwhile). Jobs finished, cancelled or taken again since
    /// are left alone.
    async fn extend_leases(&self, taken: &[(i64, i64)], lease_until: i64)
    -> Result<(), IndexError>;
    async fn job_failed(
        &self,
        id: i64,
        attempt: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), IndexError>;
    /// How many jobs are pending and how many failed for good.
    async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, IndexError>;
    /// Jobs in `state` (all if None), newest first, older than job `before`
    /// if given (the next page), without their payloads.
    async fn jobs(
        &self,
        state: Option<JobState>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Job>, IndexError>;
    /// Puts a failed or cancelled job back (attempts reset); whether it was.
    async fn retry_job(&self, id: i64, now: i64) -> Result<bool, IndexError>;
    /// Cancels a pending or failed job; whether it was.
    async fn cancel_job(&self, id: i64) -> Result<bool, IndexError>;
    /// Removes done and cancelled jobs last touched before `before` (unix
    /// seconds); how many. Pending and failed ones stay.
    async fn prune_jobs(&self, before: i64) -> Result<u64, IndexError>;
}

/// The change feed and webhooks. Each change is written to an outbox in
/// the transaction that makes it; `sequence_changes` moves outbox rows into
/// the feed with consecutive numbers, one sequencer at a time across nodes
/// (a PostgreSQL advisory lock), queuing the webhook deliveries they cause
/// in the same transaction — so the feed has no gaps and no change is
/// delivered twice or lost.
#[async_trait]
pub trait Changes: Send + Sync + 'static {
    /// Sequences up to `limit` waiting changes; returns how many. Study
    /// "stable" deliveries are due `stable_secs` after the study's last
    /// instance.
    async fn sequence_changes(
        &self,
        limit: usize,
        now: i64,
        stable_secs: i64,
    ) -> Result<usize, IndexError>;
    /// The feed after `after`, in order.
    async fn changes(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<custos_core::changes::Change>, IndexError>;
    async fn add_webhook(
        &self,
        url: &str,
        events: &[String],
        secret: &str,
        now: i64,
    ) -> Result<i64, IndexError>;
    async fn webhooks(&self) -> Result<Vec<custos_core::changes::Webhook>, IndexError>;
    async fn remove_webhook(&self, id: i64) -> Result<bool, IndexError>;
    /// Removes feed entries older than `before` (unix seconds); how many.
    async fn prune_changes(&self, before: i64) -> Result<u64, IndexError>;
}

/// What retention reads and the flag that keeps a study from it.
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Studies after `after` (a study key from the previous page) with their
    /// dates, modalities, last arrival and protection, at most `limit`.
    async fn study_activity(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, custos_core::retention::StudyActivity)>, IndexError>;
    /// Removes a study that retention decided on from `study_activity`,
    /// unless it has been protected or sent an instance since: checked and
    /// removed in one transaction, so neither can slip in between. What
    /// was removed, `None` when the study was spared (or is gone).
    async fn remove_expired(
        &self,
        study_uid: &str,
        seen_last_received: i64,
    ) -> Result<Option<Vec<custos_core::record::StoredInstance>>, IndexError>;
    /// Every protection: (Study Instance UID, reason, unix time set).
    async fn protected_studies(&self) -> Result<Vec<(String, String, i64)>, IndexError>;
    /// Whether a study is protected from retention.
    async fn is_protected(&self, study_uid: &str) -> Result<bool, IndexError>;
    /// Protects a study from retention (`on`), or lifts it; whether the
    /// flag changed.
    async fn set_protected(
        &self,
        study_uid: &str,
        on: bool,
        reason: &str,
        now: i64,
    ) -> Result<bool, IndexError>;
}

/// A whole index backend (SQLite or PostgreSQL): what is opened and handed
/// out in parts — the archive keeps the instances, the registry service and
/// authentication get the registry, the gate only the peer directory, the
/// audit writer only the log.
pub trait Index:
    InstanceIndex + Registry + AuditLog + Worklist + Queue + Changes + Retention
{
}

impl<T: InstanceIndex + Registry + AuditLog + Worklist + Queue + Changes + Retention> Index for T {}
