//! The audit trail's writer. Protocol code reports events with
//! `Archive::audit`, which never fails the operation it describes: events go
//! through a bounded queue to one task that appends them to the index in
//! batches (the hash chain is computed there, inside the index's
//! transaction). A full queue holds the reporting request back (back-pressure)
//! rather than losing a record; if the trail cannot be written the task
//! retries and says so loudly at error level.
//!
//! Records of access to patient data (queries, retrievals, downloads) are
//! different: the data must not leave before its record is in the index, or
//! a crash (or a kill) right after serving it would leave an access no one
//! can see. Those requests use [`AuditSender::record_access`], which waits
//! for the batch holding the record to commit (concurrent requests share
//! one commit) and refuses the access if the trail cannot be written within
//! [`ACCESS_WAIT`]: when unsure, deny. When the index refuses a batch (its
//! disk full, its database away), waiting accesses are recorded in the
//! reserve, a file allocated in the data folder at start
//! (`audit_reserve`), and served; the index gets them when it can.
//!
//! Failures anyone can cause at will (refused logins, rejected associations,
//! lockout alerts) are coalesced so that a flood of them cannot bury or delay
//! the records of real access: the first of a kind (same event, outcome, user,
//! peer, source and detail) is written at once, the repeats within
//! [`COALESCE_WINDOW`] become one record with their count when the window
//! ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use custos_core::audit::{AuditEvent, AuditKey, AuditRecord, ChainWalk, EventId, Outcome};
use custos_index::{AuditLog, IndexError};

use crate::audit_writer::QUEUE;

/// How long an access waits for its record to be written before it is
/// refused.
pub const ACCESS_WAIT: Duration = Duration::from_secs(10);

/// Repeats of a failure within this window are written as one record.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(60);
/// Kinds of failure tracked at once; past this, failures are grouped by
/// source address alone (attacker-chosen names cannot grow the map).
const MAX_KINDS: usize = 4096;

pub(crate) enum Msg {
    /// An event and when it happened (stamped by the sender: while the trail
    /// cannot be written, events wait in the queue and keep their own time),
    /// and who waits for it to be written, if anyone.
    Event(AuditEvent, String, Option<oneshot::Sender<()>>),
    Flush(oneshot::Sender<()>),
}

/// The trail could not take an access's record in time: the access is refused.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the audit trail cannot be written; access refused until it can")]
pub struct TrailUnavailable;

#[derive(Clone)]
pub struct AuditSender {
    tx: mpsc::Sender<Msg>,
    coalescer: Arc<Coalescer>,
}

impl AuditSender {
    pub(crate) async fn send(&self, event: AuditEvent) {
        if !self.coalescer.admit(&event) {
            return;
        }
        if self
            .tx
            .send(Msg::Event(event, now_rfc3339(), None))
            .await
            .is_err()
        {
            tracing::error!("AUDIT TRAIL: an audit record was lost (the writer stopped)");
        }
    }

    /// Queues `event` without waiting: when the queue is full (the trail is
    /// down), it is counted into its kind's summary, written when the window
    /// ends, instead of waiting in memory — a waiting send per refused access
    /// grew for as long as an outage lasted.
    pub(crate) fn send_or_count(&self, event: AuditEvent) {
        let Some(kind) = self.coalescer.admit_kind(&event) else {
            return;
        };
        match self.tx.try_send(Msg::Event(event, now_rfc3339(), None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) if self.coalescer.unsent(&kind) => {}
            Err(_) => {
                tracing::error!(
                    "AUDIT TRAIL: an audit record was lost (the queue is full or the writer stopped)"
                );
            }
        }
    }

    /// Records an access and returns once the record is in the index; an
    /// error when it is not there within `wait`, room in the queue included.
    /// The writer leaves out the record of an access refused so; one its
    /// batch was already committing is followed by a record saying so.
    pub(crate) async fn record_access(
        &self,
        event: AuditEvent,
        wait: Duration,
    ) -> Result<(), TrailUnavailable> {
        let (done, written) = oneshot::channel();
        let msg = Msg::Event(event, now_rfc3339(), Some(done));
        let recorded = async {
            self.tx.send(msg).await.map_err(|_| TrailUnavailable)?;
            written.await.map_err(|_| TrailUnavailable)
        };
        tokio::time::timeout(wait, recorded)
            .await
            .unwrap_or(Err(TrailUnavailable))
    }

    /// Records waiting in the queue for the writer.
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Waits until everything reported so far is written (or given up on),
    /// counts of coalesced failures included.
    pub(crate) async fn flush(&self) {
        for summary in self.coalescer.due(true) {
            let _ = self.tx.send(Msg::Event(summary, now_rfc3339(), None)).await;
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
    }
}

/// A failure kind seen in the current window: when it started, how many
/// more came, and the first event (the summary's model).
struct Seen {
    since: Instant,
    repeats: u64,
    first: AuditEvent,
    /// The first could not be queued: the summary counts it too.
    first_unsent: bool,
}

pub(crate) struct Coalescer {
    window: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

/// Events a stranger can cause at will.
fn coalesced(e: &AuditEvent) -> bool {
    e.outcome != Outcome::Success
        && matches!(
            e.event,
            EventId::UserAuthentication | EventId::SecurityAlert
        )
}

/// The kind `e` is counted under: its event, outcome, user, peer, source
/// and detail — or, once [`MAX_KINDS`] are being counted, its event, outcome
/// and source only.
fn kind(seen: &HashMap<String, Seen>, e: &AuditEvent) -> String {
    let fine = format!(
        "{}|{}|{}|{}|{}|{}",
        e.event.code(),
        e.outcome as u8,
        e.user,
        e.peer,
        e.source,
        e.detail
    );
    if seen.len() < MAX_KINDS || seen.contains_key(&fine) {
        fine
    } else {
        format!("{}|{}|source:{}", e.event.code(), e.outcome as u8, e.source)
    }
}

impl Coalescer {
    pub(crate) fn new(window: Duration) -> Coalescer {
        Coalescer {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `e` is to be written now (false: counted into a summary).
    pub(crate) fn admit(&self, e: &AuditEvent) -> bool {
        self.admit_kind(e).is_some()
    }

    /// The kind `e` is counted under when it is to be written now ("" for
    /// kinds never coalesced); `None`: counted into a summary.
    fn admit_kind(&self, e: &AuditEvent) -> Option<String> {
        if !coalesced(e) {
            return Some(String::new());
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = kind(&seen, e);
        match seen.get_mut(&key) {
            // In the window, or past it with counts whose summary is not
            // written yet (late while the queue is full): one more.
            Some(s) if s.since.elapsed() < self.window || s.repeats > 0 || s.first_unsent => {
                s.repeats += 1;
                None
            }
            _ => {
                seen.insert(
                    key.clone(),
                    Seen {
                        since: Instant::now(),
                        repeats: 0,
                        first: e.clone(),
                        first_unsent: false,
                    },
                );
                Some(key)
            }
        }
    }

    /// The first of kind `key`, just admitted, could not be queued: its
    /// window's summary counts it. Whether the kind was still there.
    fn unsent(&self, key: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get_mut(key).map(|s| s.first_unsent = true).is_some()
    }

    /// Summaries of the windows that ended (all of them with `all`), and
    /// forgets those windows.
    pub(crate) fn due(&self, all: bool) -> Vec<AuditEvent> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        seen.retain(|_, s| {
            if !all && s.since.elapsed() < self.window {
                return true;
            }
            let within = s.since.elapsed().as_secs().max(1);
            if s.first_unsent {
                let mut e = s.first.clone();
                let n = s.repeats + 1;
                let times = if n == 1 { "time" } else { "times" };
                e.detail = format!("{} ({n} {times} within {within} s)", e.detail);
                out.push(e);
            } else if s.repeats > 0 {
                let mut e = s.first.clone();
                e.detail = format!(
                    "{} (repeated {} more times within {within} s)",
                    e.detail, s.repeats
                );
                out.push(e);
            }
            false
        });
        out
    }
}

/// The current time as the trail records it: RFC 3339 UTC with exactly three
/// fractional digits, so that times sort as strings (`…:49.5Z` would sort
/// after `…:49.524Z`).
pub fn now_rfc3339() -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
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

tokio::task_local! {
    /// The address of the web request being served, if any.
    static REQUEST_SOURCE: String;
}

/// Runs `f` with `source` as the address events recorded by the archive
/// itself (corrections, de-identification, retention) name when their
/// caller did not (`Archive::audit`).
pub async fn with_request_source<F: std::future::Future>(source: String, f: F) -> F::Output {
    REQUEST_SOURCE.scope(source, f).await
}

/// The address of the request being served, if any.
pub(crate) fn request_source() -> Option<String> {
    REQUEST_SOURCE
        .try_with(Clone::clone)
        .ok()
        .filter(|s| !s.is_empty())
}

/// The chain's key and this node's checkpoint, both in the data folder,
/// outside the index (the index could be rewritten; these say how).
#[derive(Debug, Clone)]
pub struct AuditTrail {
    key: AuditKey,
    checkpoint: PathBuf,
    /// The first link of the trail this node writes to: named by its
    /// checkpoint, else learnt from the index at the first append.
    first: std::sync::OnceLock<String>,
    /// The index's trail does not begin with that link (emptied and begun
    /// again, or replaced): the checkpoint is then left as it is, so that
    /// verification keeps finding the break instead of the next write
    /// covering it up.
    replaced: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the index's first record was compared with `first` yet.
    compared: Arc<std::sync::atomic::AtomicBool>,
    /// The newest record this node wrote (sequence number, link), from its
    /// checkpoint at first: checked to be still in the trail before each
    /// append, so that records removed from the end are not covered up by
    /// the next ones.
    last: Arc<std::sync::Mutex<Option<(i64, String)>>>,
    /// The index the trail is in (`AuditLog::audit_identity`): a checkpoint
    /// written for another index (a data folder pointed at a new one) is
    /// not held against this one's trail.
    identity: String,
}

/// Why a trail cannot be written or checked.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{key} is missing or does not match the audit trail in the index (its newest record, {seq}, was linked with another key); \
         restore {key} from a backup, or copy it from a node that shares this index"
    )]
    WrongKey { key: PathBuf, seq: i64 },
}

/// The key's file in the data folder.
pub const KEY_FILE: &str = "audit.key";
/// This node's newest checkpoint (sequence number and link it last wrote).
pub const CHECKPOINT_FILE: &str = "audit.head";

impl AuditTrail {
    /// Opens the trail of the data folder `dir`: reads the key, or creates
    /// one (0600) when the trail has no keyed records yet. Refuses a key that
    /// does not link the newest record.
    pub async fn open(dir: &Path, index: &dyn AuditLog) -> Result<AuditTrail, TrailError> {
        let path = dir.join(KEY_FILE);
        let head = index.audit_head().await?;
        let file_err = |source| TrailError::File {
            path: path.clone(),
            source,
        };
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => AuditKey::from_hex(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(file_err(e)),
        };
        let links = |key: &AuditKey, r: &AuditRecord| {
            r.hash == key.link(r.seq, &r.time, &r.prev_hash, &r.body)
        };
        let legacy =
            |r: &AuditRecord| r.hash == custos_core::audit::legacy_hash(&r.prev_hash, &r.body);
        let key = match (key, head) {
            (Some(key), None) => key,
            (Some(key), Some(r)) if links(&key, &r) || legacy(&r) => key,
            (None, head) if head.as_ref().is_none_or(legacy) => {
                let key = AuditKey::generate();
                write_key(&path, &key.to_hex()).map_err(file_err)?;
                key
            }
            (_, Some(r)) => {
                return Err(TrailError::WrongKey {
                    key: path,
                    seq: r.seq,
                });
            }
            (None, None) => unreachable!("matched above"),
        };
        let checkpoint = dir.join(CHECKPOINT_FILE);
        let first = std::sync::OnceLock::new();
        let identity = index.audit_identity();
        let mut named = std::fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        // A checkpoint is held against this trail if it names this index, or,
        // written before checkpoints named one, this trail's first record.
        if let Some(c) = &named {
            let ours = match c["index"].as_str() {
                Some(i) => i == identity,
                None => {
                    let first = index.audit_after(0, 1).await?.pop().map(|r| r.hash);
                    first.is_some() && c["first"].as_str() == first.as_deref()
                }
            };
            if !ours {
                named = None;
            }
        }
        if let Some(f) = named
            .as_ref()
            .and_then(|c| c["first"].as_str())
            .filter(|f| !f.is_empty())
        {
            let _ = first.set(f.to_string());
        }
        let last = named
            .as_ref()
            .and_then(|c| Some((c["seq"].as_i64()?, c["link"].as_str()?.to_string())));
        Ok(AuditTrail {
            key,
            checkpoint,
            first,
            replaced: Arc::default(),
            compared: Arc::default(),
            last: Arc::new(std::sync::Mutex::new(last)),
            identity,
        })
    }

    /// Appends (time, body) entries and moves this node's checkpoint to the
    /// new head. The checkpoint is not synced: after a crash it may lag
    /// behind the trail, never run ahead of it.
    pub async fn append(
        &self,
        index: &dyn AuditLog,
        entries: Vec<(String, String)>,
    ) -> Result<(), IndexError> {
        let (_, checkpoint) = self.append_records(index, entries).await?;
        self.write_checkpoint(checkpoint).await;
        Ok(())
    }

    /// Appends (time, body) entries; returns the new head's sequence number
    /// and the checkpoint naming it, for [`write_checkpoint`](Self::write_checkpoint) now or later.
    pub(crate) async fn append_records(
        &self,
        index: &dyn AuditLog,
        entries: Vec<(String, String)>,
    ) -> Result<(i64, String), IndexError> {
        use std::sync::atomic::Ordering;
        // The newest record this node wrote is checked to be still there in
        // the append's own transaction (from the head it reads anyway).
        let mine = self
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|_| !self.replaced.load(Ordering::Relaxed));
        let checked = mine.as_ref().map(|(seq, _)| *seq);
        let appended = index.append_audit(&self.key, entries, mine).await?;
        if let Some(seq) = checked
            && !appended.mine_intact
        {
            self.replaced.store(true, Ordering::Relaxed);
            tracing::error!(
                seq,
                checkpoint = %self.checkpoint.display(),
                "AUDIT TRAIL CUT: a record this node wrote is missing or rewritten; the checkpoint is kept, `custos audit verify` reports the break"
            );
        }
        let (seq, link) = (appended.seq, appended.link);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((seq, link.clone()));
        // The checkpoint names its trail by the first record's link; once per
        // process the index's trail is checked to begin with it.
        // (Not `?`: the records are in; an error here must not make the
        // writer append them again. Compared at the next append instead.)
        if !self.compared.load(Ordering::Relaxed)
            && let Ok(mut page) = index.audit_after(0, 1).await
        {
            let actual = page.pop().map(|r| r.hash).unwrap_or_default();
            let named = self.first.get_or_init(|| actual.clone());
            if *named != actual {
                self.replaced.store(true, Ordering::Relaxed);
                tracing::error!(
                    checkpoint = %self.checkpoint.display(),
                    "AUDIT TRAIL REPLACED: the index's trail does not begin with the record this node's checkpoint names (emptied and begun again, or another index); the checkpoint is kept, `custos audit verify` reports the break"
                );
            }
            self.compared.store(true, Ordering::Relaxed);
        }
        let first = self.first.get().cloned().unwrap_or_default();
        let checkpoint =
            json!({ "first": first, "seq": seq, "link": link, "index": self.identity }).to_string();
        Ok((seq, checkpoint))
    }

    /// The writer's reserve in the data folder, allocated now while there is
    /// room; `None` (said loudly) if it cannot be.
    pub(crate) fn open_reserve(&self) -> Option<crate::audit_reserve::Reserve> {
        let dir = self.checkpoint.parent()?;
        let path = dir.join(crate::audit_reserve::RESERVE_FILE);
        crate::audit_reserve::Reserve::open(&path, crate::audit_reserve::SIZE)
            .inspect_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    // A CLI command beside the server: the server's.
                    tracing::debug!(path = %path.display(), "the audit reserve is the server's");
                } else {
                    tracing::error!(error = %e, path = %path.display(), "AUDIT RESERVE CANNOT BE ALLOCATED: accesses are refused whenever the index cannot take their records");
                }
            })
            .ok()
    }

    /// The sequence number of the newest record this node wrote (0: none).
    pub(crate) fn newest_written(&self) -> i64 {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().map_or(0, |(seq, _)| *seq)
    }

    /// The records a crash left in the reserve that the trail does not hold
    /// (an append may have committed before the reserve was emptied): looked
    /// for in the trail after the record the reserve names, counted (two
    /// identical accesses in one millisecond are two records). An error
    /// (the reserve or the trail unreadable) leaves the reserve as it is.
    pub(crate) async fn left_in_reserve(
        &self,
        index: &dyn AuditLog,
        reserve: &crate::audit_reserve::Reserve,
    ) -> std::io::Result<Vec<(String, String)>> {
        let left = reserve.entries()?;
        if left.is_empty() {
            return Ok(left);
        }
        let mut missing: HashMap<(String, String), usize> = HashMap::new();
        for e in &left {
            *missing.entry(e.clone()).or_default() += 1;
        }
        let mut after = reserve.since().max(0);
        while !missing.is_empty() {
            let page = index
                .audit_after(after, 10_000)
                .await
                .map_err(std::io::Error::other)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page {
                let key = (r.time, r.body);
                if let Some(n) = missing.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        missing.remove(&key);
                    }
                }
            }
        }
        // The last ones of each kind are the ones not in the trail.
        let mut out: Vec<(String, String)> = Vec::new();
        for e in left.into_iter().rev() {
            if let Some(n) = missing.get_mut(&e) {
                *n -= 1;
                if *n == 0 {
                    missing.remove(&e);
                }
                out.push(e);
            }
        }
        out.reverse();
        tracing::warn!(
            records = out.len(),
            "AUDIT RESERVE: records a crash left there are appended to the trail"
        );
        Ok(out)
    }

    /// Replaces this node's checkpoint file with `text` (atomically, by rename).
    pub(crate) async fn write_checkpoint(&self, text: String) {
        if self.replaced.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // File I/O off the async workers.
        let path = self.checkpoint.clone();
        let written = tokio::task::spawn_blocking(move || write_private(&path, &text)).await;
        if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
            tracing::error!(error = %e, path = %self.checkpoint.display(), "AUDIT CHECKPOINT CANNOT BE WRITTEN");
        }
    }

    /// Appends events now (CLI commands, which have no writer task).
    pub async fn append_now(
        &self,
        index: &dyn AuditLog,
        events: Vec<AuditEvent>,
    ) -> Result<(), IndexError> {
        let node = node_name();
        let entries = events
            .iter()
            .map(|e| {
                let t = now_rfc3339();
                let body = body_of(e, &t, &node);
                (t, body)
            })
            .collect();
        self.append(index, entries).await
    }

    /// Recomputes every link of the trail, page by page, then checks that
    /// this node's checkpoint is still in it: a trail cut after the
    /// checkpoint, or emptied, does not verify.
    pub async fn verify(&self, index: &dyn AuditLog) -> Result<ChainCheck, IndexError> {
        // Read before the walk: a checkpoint is never ahead of the trail, so
        // one written while the walk runs cannot name a record it missed.
        let checkpoint = std::fs::read_to_string(&self.checkpoint)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let mut walk = ChainWalk::default();
        loop {
            let page = index.audit_after(walk.head_seq, 10_000).await?;
            if page.is_empty() {
                break;
            }
            if let Some(seq) = walk.step(&self.key, &page) {
                return Ok(ChainCheck::broken(
                    walk,
                    format!("the chain breaks at record {seq}"),
                ));
            }
        }
        if walk.good == 0 {
            return Ok(ChainCheck::broken(
                walk,
                "the trail is empty, but every data folder records its own creation: records were removed".into(),
            ));
        }
        let Some(checkpoint) = checkpoint else {
            return Ok(ChainCheck { walk, broken: None });
        };
        let cut = |seq: i64| {
            format!(
                "record {seq}, which this node wrote (checkpoint in {}), is missing or rewritten: the trail was cut or replaced",
                self.checkpoint.display()
            )
        };
        // Only a holder of the key writes keyed records: a trail this node
        // wrote to that has none was replaced by someone without it.
        if walk.legacy == walk.good {
            return Ok(ChainCheck::broken(
                walk,
                cut(checkpoint["seq"].as_i64().unwrap_or(0)),
            ));
        }
        // The trail this node wrote to starts with the record its checkpoint
        // names: a trail emptied and begun again (by the next record anyone
        // writes, keyed with the same key) is not that trail. Checkpoints
        // written before they named the first record are checked by their
        // link alone.
        let first = index.audit_after(0, 1).await?.pop().map(|r| r.hash);
        let seq = checkpoint["seq"].as_i64().unwrap_or(i64::MAX);
        let same_index = checkpoint["index"].as_str().map(|i| i == self.identity);
        if same_index == Some(false) {
            // Written for another index: nothing to hold this trail to.
            return Ok(ChainCheck { walk, broken: None });
        }
        // (Empty: written before the trail's first record could be read.)
        let named = checkpoint["first"].as_str().filter(|f| !f.is_empty());
        if same_index.is_none() && named.is_some() && first.as_deref() != named {
            // A checkpoint from before they named their index, of another
            // trail (the folder pointed elsewhere since).
            return Ok(ChainCheck { walk, broken: None });
        }
        if let Some(named) = named
            && first.as_deref() != Some(named)
        {
            return Ok(ChainCheck::broken(
                walk,
                format!(
                    "the trail does not begin with the record this node's checkpoint ({}) names: it was emptied and begun again, or replaced — {}",
                    self.checkpoint.display(),
                    cut(seq)
                ),
            ));
        }
        let at = if (1..=walk.head_seq).contains(&seq) {
            index.audit_after(seq - 1, 1).await?.pop()
        } else {
            None
        };
        if at.is_none_or(|r| Some(r.hash.as_str()) != checkpoint["link"].as_str()) {
            return Ok(ChainCheck::broken(walk, cut(seq)));
        }
        Ok(ChainCheck { walk, broken: None })
    }
}

/// Writes a key file (the trail's, de-identification's) as
/// [`write_private`] does, and its folder's entry durably: records keyed by
/// it are fsynced as soon as they are written, so a power cut must not leave
/// them with a missing key.
pub(crate) fn write_key(path: &Path, text: &str) -> std::io::Result<()> {
    write_private(path, text)?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(folder.unwrap_or(Path::new(".")))?.sync_all()
}

/// Writes a small file readable by this account only, atomically: its bytes
/// are on disk before the rename makes them its content (never an empty file
/// after a power cut).
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    // Made new, so the mode is this one: a stale file (or a link) left
    // under that name would keep its own.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// How a whole trail checked out.
pub struct ChainCheck {
    pub walk: ChainWalk,
    /// What does not hold, if anything.
    pub broken: Option<String>,
}

impl ChainCheck {
    fn broken(walk: ChainWalk, why: String) -> ChainCheck {
        ChainCheck {
            walk,
            broken: Some(why),
        }
    }
}

pub(crate) fn start(index: Arc<dyn AuditLog>, trail: AuditTrail) -> AuditSender {
    let (tx, rx) = mpsc::channel::<Msg>(QUEUE);
    let coalescer = Arc::new(Coalescer::new(COALESCE_WINDOW));
    // Summaries go out as their windows end.
    let (summaries, ticker) = (tx.downgrade(), coalescer.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(COALESCE_WINDOW / 4);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(tx) = summaries.upgrade() else { break };
            for e in ticker.due(false) {
                if tx.send(Msg::Event(e, now_rfc3339(), None)).await.is_err() {
                    return;
                }
            }
        }
    });
    crate::audit_writer::spawn(index, trail, rx);
    AuditSender { tx, coalescer }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trail_times_have_a_fixed_width_and_parse() {
        for _ in 0..50 {
            let t = now_rfc3339();
            assert_eq!(t.len(), "2026-12-04T00:18:49.500Z".len(), "{t}");
            let rfc = time::format_description::well_known::Rfc3339;
            assert!(OffsetDateTime::parse(&t, &rfc).is_ok(), "{t}");
            std::thread::sleep(Duration::from_micros(300));
        }
    }

    fn failure(user: &str) -> AuditEvent {
        let mut e = AuditEvent::new(EventId::UserAuthentication, 'E', Outcome::MinorFailure);
        e.user = user.into();
        e.source = "127.0.0.2".into();
        e.detail = "HTTP authentication failed".into();
        e
    }

    #[test]
    fn repeated_failures_become_one_record_with_a_count() {
        let c = Coalescer::new(Duration::from_secs(60));
        assert!(c.admit(&failure("rad")));
        for _ in 0..499 {
            assert!(!c.admit(&failure("rad")));
        }
        // Another user is another kind; successes are never held back.
        assert!(c.admit(&failure("boss")));
        let ok = AuditEvent::new(EventId::InstancesTransferred, 'R', Outcome::Success);
        for _ in 0..3 {
            assert!(c.admit(&ok));
        }
        assert!(c.due(false).is_empty(), "the window is still open");
        let summaries = c.due(true);
        assert_eq!(summaries.len(), 1);
        assert!(
            summaries[0].detail.contains("repeated 499 more times"),
            "{}",
            summaries[0].detail
        );
        assert!(c.admit(&failure("rad")), "a new window starts");
    }

    /// A refused access's alert meeting a full queue (the trail down) is
    /// not left waiting: it is counted, and written as a summary when its
    /// window ends.
    #[tokio::test]
    async fn an_alert_meeting_a_full_queue_is_counted_not_left_waiting() {
        let (tx, mut rx) = mpsc::channel::<Msg>(1);
        let sender = AuditSender {
            tx,
            coalescer: Arc::new(Coalescer::new(Duration::from_secs(60))),
        };
        let ok = AuditEvent::new(EventId::InstancesTransferred, 'R', Outcome::Success);
        sender.send_or_count(ok);
        let mut alert = AuditEvent::new(EventId::SecurityAlert, 'E', Outcome::SeriousFailure);
        alert.detail = "refused, the audit trail could not be written: C-GET".into();
        for _ in 0..3 {
            sender.send_or_count(alert.clone());
        }
        assert_eq!(sender.queued(), 1, "the queue still holds the first only");
        let summaries = sender.coalescer.due(true);
        assert_eq!(summaries.len(), 1);
        assert!(
            summaries[0].detail.ends_with("C-GET (3 times within 1 s)"),
            "{}",
            summaries[0].detail
        );
        assert!(
            matches!(rx.recv().await, Some(Msg::Event(e, _, None)) if e.event == EventId::InstancesTransferred)
        );
    }

    /// An alert that could not be queued is counted even when nothing
    /// repeats it: its window's summary names it once.
    #[test]
    fn an_unsent_first_is_summarized_after_its_window() {
        let c = Coalescer::new(Duration::from_millis(20));
        let key = c.admit_kind(&failure("rad")).unwrap();
        assert!(c.unsent(&key));
        std::thread::sleep(Duration::from_millis(40));
        let summaries = c.due(false);
        assert_eq!(summaries.len(), 1);
        assert!(
            summaries[0].detail.ends_with("(1 time within 1 s)"),
            "{}",
            summaries[0].detail
        );
        assert!(c.due(true).is_empty(), "summarized once");
    }

    /// A kind whose window ended with counts not yet summarized (the ticker
    /// late, waiting on a full queue) keeps counting into that summary: no
    /// count is dropped by a new window replacing the old.
    #[test]
    fn counts_outlive_their_window_until_summarized() {
        let c = Coalescer::new(Duration::from_millis(20));
        assert!(c.admit(&failure("rad")));
        assert!(!c.admit(&failure("rad")));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!c.admit(&failure("rad")), "counted, not a new window");
        let summaries = c.due(false);
        assert_eq!(summaries.len(), 1);
        assert!(
            summaries[0].detail.contains("repeated 2 more times"),
            "{}",
            summaries[0].detail
        );
        assert!(c.admit(&failure("rad")), "summarized: a new window");
    }

    /// The real SQLite index with faults: appends made slow (a stalled
    /// fsync, a lock wait), or refused while `down` is set (its disk full).
    struct Faulty {
        index: custos_index::SqliteIndex,
        delay: Duration,
        down: std::sync::atomic::AtomicBool,
    }

    impl Faulty {
        fn open(dir: &Path, delay: Duration) -> Arc<Faulty> {
            Arc::new(Faulty {
                index: custos_index::SqliteIndex::open(dir.join("index.db")).unwrap(),
                delay,
                down: false.into(),
            })
        }
    }

    #[async_trait::async_trait]
    impl AuditLog for Faulty {
        async fn append_audit(
            &self,
            key: &AuditKey,
            entries: Vec<(String, String)>,
            mine: Option<(i64, String)>,
        ) -> Result<custos_index::Appended, IndexError> {
            tokio::time::sleep(self.delay).await;
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(IndexError::Postgres("the disk is full".into()));
            }
            self.index.append_audit(key, entries, mine).await
        }
        fn audit_identity(&self) -> String {
            self.index.audit_identity()
        }
        async fn copy_audit(&self, records: &[AuditRecord]) -> Result<(), IndexError> {
            self.index.copy_audit(records).await
        }
        async fn audit_head(&self) -> Result<Option<AuditRecord>, IndexError> {
            self.index.audit_head().await
        }
        async fn audit_after(
            &self,
            after: i64,
            limit: usize,
        ) -> Result<Vec<AuditRecord>, IndexError> {
            self.index.audit_after(after, limit).await
        }
        async fn audit_search(
            &self,
            search: &custos_core::audit::AuditSearch,
        ) -> Result<Vec<AuditRecord>, IndexError> {
            self.index.audit_search(search).await
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn accesses_are_served_from_the_reserve_while_the_index_refuses_them() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = std::env::temp_dir().join(format!("custos-audit-down-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let index = Faulty::open(&dir, Duration::ZERO);
        let trail = AuditTrail::open(&dir, index.as_ref()).await.unwrap();
        let sender = start(index.clone(), trail);
        let patient = Duration::from_secs(5);
        assert!(
            sender
                .record_access(access("before"), patient)
                .await
                .is_ok()
        );
        index.down.store(true, SeqCst);
        // Two identical accesses while the index refuses: both served, both
        // recorded (in the reserve).
        for _ in 0..2 {
            let t = Instant::now();
            assert!(
                sender
                    .record_access(access("while down"), patient)
                    .await
                    .is_ok()
            );
            assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        }
        let path = dir.join(crate::audit_reserve::RESERVE_FILE);
        assert!(index.audit_after(0, 100).await.unwrap().len() == 1);
        // The index takes records again: they reach the trail once each.
        index.down.store(false, SeqCst);
        assert!(sender.record_access(access("after"), patient).await.is_ok());
        sender.flush().await;
        let details = details_in_trail(index.as_ref()).await;
        assert_eq!(details, ["before", "while down", "while down", "after"]);
        drop(sender);
        let reserve = reserve_once_let_go(&path).await;
        assert!(
            reserve.entries().unwrap().is_empty(),
            "emptied once in the trail"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The details of the trail's records, in order.
    async fn details_in_trail(index: &dyn AuditLog) -> Vec<String> {
        let records = index.audit_after(0, 100).await.unwrap();
        records
            .iter()
            .map(|r| {
                serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["detail"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// The reserve at `path`, once the writer has let go of it.
    async fn reserve_once_let_go(path: &Path) -> crate::audit_reserve::Reserve {
        loop {
            match crate::audit_reserve::Reserve::open(path, crate::audit_reserve::SIZE) {
                Ok(r) => return r,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn access(detail: &str) -> AuditEvent {
        let mut e = AuditEvent::new(EventId::Query, 'E', Outcome::Success);
        e.user = "rad".into();
        e.detail = detail.into();
        e
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_access_refused_for_a_late_trail_is_never_left_as_served() {
        let dir = std::env::temp_dir().join(format!("custos-audit-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let index = Faulty::open(&dir, Duration::from_millis(600));
        let trail = AuditTrail::open(&dir, index.as_ref()).await.unwrap();
        let sender = start(index.clone(), trail);
        let wait = Duration::from_millis(150);
        // In time: served, and its record is in.
        let patient = Duration::from_secs(5);
        assert!(
            sender
                .record_access(access("in time"), patient)
                .await
                .is_ok()
        );
        // Its batch commits after the access gave up: written, then
        // corrected by the record after it.
        assert!(
            sender
                .record_access(access("committing"), wait)
                .await
                .is_err()
        );
        // Queued behind that batch, given up before its own began: never
        // written.
        assert!(sender.record_access(access("queued"), wait).await.is_err());
        sender.flush().await;
        let records = index.audit_after(0, 100).await.unwrap();
        let detail = |r: &AuditRecord| {
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["detail"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let seq_of = |d: &str| records.iter().find(|r| detail(r) == d).map(|r| r.seq);
        assert!(seq_of("in time").is_some());
        assert!(seq_of("queued").is_none(), "a refused access recorded");
        let late = seq_of("committing").expect("the committing batch's record");
        let corrected = records.iter().any(|r| {
            detail(r).starts_with(&format!(
                "record {late} names an access that did not happen"
            ))
        });
        assert!(
            corrected,
            "{:?}",
            records.iter().map(detail).collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn records_a_crash_left_in_the_reserve_reach_the_trail_once() {
        let dir = std::env::temp_dir().join(format!("custos-audit-left-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let index = Arc::new(custos_index::SqliteIndex::open(dir.join("index.db")).unwrap());
        let trail = AuditTrail::open(&dir, index.as_ref()).await.unwrap();
        let node = node_name();
        let entry = |detail: &str| {
            let t = now_rfc3339();
            let body = body_of(&access(detail), &t, &node);
            (t, body)
        };
        // Before the outage: an access. In the reserve: one identical to it
        // (same millisecond), one the index took before the crash, one it
        // did not.
        let same = entry("twice in one millisecond");
        trail
            .append(index.as_ref(), vec![same.clone()])
            .await
            .unwrap();
        let since = trail.newest_written();
        let (done, lost) = (
            entry("appended before the crash"),
            entry("only in the reserve"),
        );
        let path = dir.join(crate::audit_reserve::RESERVE_FILE);
        let mut reserve =
            crate::audit_reserve::Reserve::open(&path, crate::audit_reserve::SIZE).unwrap();
        reserve.write(&[same, done.clone(), lost], since).unwrap();
        trail.append(index.as_ref(), vec![done]).await.unwrap();
        drop(reserve);
        // The next start appends what is missing, once, and empties it.
        let sender = start(index.clone(), trail);
        sender.send(access("after the start")).await;
        sender.flush().await;
        let details = details_in_trail(index.as_ref()).await;
        assert_eq!(
            details,
            [
                "twice in one millisecond",
                "appended before the crash",
                "twice in one millisecond",
                "only in the reserve",
                "after the start"
            ]
        );
        // Emptied (read once the writer has let go of it).
        drop(sender);
        let reserve = reserve_once_let_go(&path).await;
        assert!(reserve.entries().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn attacker_chosen_names_cannot_grow_the_map() {
        let c = Coalescer::new(Duration::from_secs(60));
        let admitted = (0..20_000)
            .filter(|i| c.admit(&failure(&format!("name{i}"))))
            .count();
        // One record per name until the map is full, then one for the source.
        assert_eq!(admitted, MAX_KINDS + 1);
        assert!(c.seen.lock().unwrap().len() <= MAX_KINDS + 1);
    }
}
