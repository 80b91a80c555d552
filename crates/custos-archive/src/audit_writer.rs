//! The audit trail's writer task (one per node; `audit::start`): appends
//! what protocol code reports, in batches of at most [`BATCH`], and answers
//! each access once its record is durable — committed to the index, or,
//! while the index refuses batches (its disk full, its database away),
//! synced into the node's reserve (`audit_reserve`). Records in the reserve
//! reach the trail when the index takes them again, or at the next start
//! after a crash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use custos_core::audit::{AuditEvent, EventId, Outcome};
use custos_index::{AuditLog, IndexError};

use crate::audit::{AuditTrail, Msg, body_of, node_name, now_rfc3339};
use crate::audit_reserve::Reserve;

/// Events waiting to be written before reporters wait for room.
pub(crate) const QUEUE: usize = 65_536;
/// Records appended in one transaction at most.
const BATCH: usize = 512;
/// Under steady load, this node's checkpoint file is rewritten this often.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The longest pause between attempts to write a batch the index refused.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long an append may take before the accesses waiting for it are
/// recorded in the reserve instead.
const SLOW: Duration = Duration::from_secs(1);

/// A record waiting to be appended.
struct Entry {
    time: String,
    body: String,
    /// The access waiting for it, if any (answered once it is durable).
    access: Option<(oneshot::Sender<()>, AuditEvent)>,
    /// Also in the reserve (its access answered).
    in_reserve: bool,
}

struct Writer {
    index: Arc<dyn AuditLog>,
    /// Shared with the append in flight (not copied per batch).
    trail: Arc<AuditTrail>,
    node: String,
    pending: Vec<Entry>,
    /// Flushes waiting for what was reported before them.
    waiters: Vec<oneshot::Sender<()>>,
    reserve: Option<Reserve>,
    /// The reserve holds records the trail now has: to be emptied.
    reserve_stale: bool,
    /// The newest head not yet in the checkpoint file, and when the file was
    /// last written: under load it is rewritten every CHECKPOINT_EVERY, not
    /// after every batch (a create and a rename each time, ~3% of the
    /// server's CPU at 600 instances/s), and within CHECKPOINT_EVERY of the
    /// last batch when the load stops, or at once for a flush.
    checkpoint: Option<String>,
    written_at: Instant,
    /// When the failure to write was last logged (once a second at most).
    logged: Option<Instant>,
}

/// How long a closing writer keeps trying to append what the index refused.
const LAST_TRY: Duration = Duration::from_secs(5);

pub(crate) fn spawn(index: Arc<dyn AuditLog>, trail: AuditTrail, rx: mpsc::Receiver<Msg>) {
    let reserve = trail.open_reserve();
    let writer = Writer {
        index,
        trail: Arc::new(trail),
        node: node_name(),
        pending: Vec::new(),
        waiters: Vec::new(),
        reserve,
        reserve_stale: false,
        checkpoint: None,
        written_at: Instant::now(),
        logged: None,
    };
    tokio::spawn(writer.run(rx));
}

impl Writer {
    fn push(&mut self, e: AuditEvent, time: String, access: Option<oneshot::Sender<()>>) {
        // Its access already refused (it waited too long): it did not happen.
        if access.as_ref().is_some_and(|w| w.is_closed()) {
            return;
        }
        let body = body_of(&e, &time, &self.node);
        self.pending.push(Entry {
            time,
            body,
            access: access.map(|w| (w, e)),
            in_reserve: false,
        });
    }

    fn receive(&mut self, msg: Msg) {
        match msg {
            Msg::Event(e, t, access) => self.push(e, t, access),
            Msg::Flush(w) => self.waiters.push(w),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        self.take_leftovers().await;
        if !self.pending.is_empty() {
            // A crash's leftovers go in now, not with the next record.
            self.write_pending(&mut rx).await;
            self.write_checkpoint().await;
        }
        loop {
            let received = match self.checkpoint.is_some() {
                true => tokio::time::timeout(CHECKPOINT_EVERY, rx.recv()).await,
                false => Ok(rx.recv().await),
            };
            match received {
                Ok(Some(msg)) => self.receive(msg),
                Ok(None) => break,
                Err(_quiet) => {
                    self.write_checkpoint().await;
                    continue;
                }
            }
            while self.pending.len() < BATCH {
                let Ok(msg) = rx.try_recv() else { break };
                self.receive(msg);
            }
            self.write_pending(&mut rx).await;
            if !self.waiters.is_empty() || self.written_at.elapsed() >= CHECKPOINT_EVERY {
                self.write_checkpoint().await;
            }
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
        // What the index refused until the end gets one last, bounded try
        // (access records among it are in the reserve already).
        if !self.pending.is_empty() {
            let _ = tokio::time::timeout(LAST_TRY, self.write_pending(&mut rx)).await;
        }
        self.write_checkpoint().await;
    }

    /// Records a crash left in the reserve that the trail lacks go first.
    async fn take_leftovers(&mut self) {
        let Some(reserve) = self.reserve.as_ref() else {
            return;
        };
        match self
            .trail
            .left_in_reserve(self.index.as_ref(), reserve)
            .await
        {
            Ok(left) if left.is_empty() => self.clear_reserve(),
            Ok(left) => self
                .pending
                .extend(left.into_iter().map(|(time, body)| Entry {
                    time,
                    body,
                    access: None,
                    in_reserve: true,
                })),
            Err(e) => {
                // Left as it is for the next start; none used meanwhile.
                tracing::error!(error = %e, "AUDIT RESERVE CANNOT BE READ: accesses are refused whenever the index cannot take their records");
                self.reserve = None;
            }
        }
    }

    async fn write_checkpoint(&mut self) {
        if let Some(text) = self.checkpoint.take() {
            self.trail.write_checkpoint(text).await;
            self.written_at = Instant::now();
        }
    }

    /// Appends everything pending, a batch at a time, retrying while the
    /// index refuses it; meanwhile waiting accesses go to the reserve.
    async fn write_pending(&mut self, rx: &mut mpsc::Receiver<Msg>) {
        // Retried often enough that an access arriving once the trail is
        // back waits at most RETRY_MAX for the next attempt.
        let mut delay = Duration::from_millis(200);
        let began = Instant::now();
        while !self.pending.is_empty() {
            match self.append_batch(rx).await {
                Ok(()) => delay = Duration::from_millis(200),
                Err(e) => {
                    if self
                        .logged
                        .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
                    {
                        tracing::error!(error = %e, pending = self.pending.len(), "AUDIT TRAIL CANNOT BE WRITTEN; retrying");
                        self.logged = Some(Instant::now());
                    }
                    self.journal();
                    if began.elapsed() >= Duration::from_secs(10) {
                        // A flush waits for what can be written, not for ever.
                        for w in self.waiters.drain(..) {
                            let _ = w.send(());
                        }
                    }
                    self.wait_for_retry(rx, delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Appends the oldest [`BATCH`] pending records and answers their
    /// accesses. One whose access stopped waiting while its batch was
    /// committing is followed by a record saying that access did not happen.
    async fn append_batch(&mut self, rx: &mut mpsc::Receiver<Msg>) -> Result<(), IndexError> {
        self.pending
            .retain(|e| e.access.as_ref().is_none_or(|(w, _)| !w.is_closed()));
        let n = self.pending.len().min(BATCH);
        if n == 0 {
            return Ok(());
        }
        let entries: Vec<(String, String)> = self.pending[..n]
            .iter()
            .map(|e| (e.time.clone(), e.body.clone()))
            .collect();
        let (trail, index) = (Arc::clone(&self.trail), Arc::clone(&self.index));
        let append = async move { trail.append_records(index.as_ref(), entries).await };
        tokio::pin!(append);
        // An append that hangs (a lock held elsewhere, a database that does
        // not answer) does not hold accesses past SLOW: they go to the
        // reserve meanwhile, and are answered, those arriving meanwhile too.
        let mut slow = std::pin::pin!(tokio::time::sleep(SLOW));
        let (mut hanging, mut open) = (false, true);
        let (head_seq, head) = loop {
            tokio::select! {
                done = &mut append => break done?,
                _ = &mut slow, if self.reserve.is_some() && !hanging => {
                    hanging = true;
                    self.journal();
                }
                msg = rx.recv(), if open && self.reserve.is_some() && self.pending.len() < QUEUE => {
                    let Some(msg) = msg else {
                        open = false;
                        continue;
                    };
                    let access = matches!(msg, Msg::Event(_, _, Some(_)));
                    self.receive(msg);
                    if access && hanging {
                        self.journal();
                    }
                }
            }
        };
        // The batch's records got consecutive numbers, the last `head_seq`.
        let first_seq = head_seq + 1 - n as i64;
        let mut late = Vec::new();
        let appended: Vec<Entry> = self.pending.drain(..n).collect();
        for (i, entry) in appended.into_iter().enumerate() {
            self.reserve_stale |= entry.in_reserve;
            if let Some((w, e)) = entry.access
                && w.send(()).is_err()
            {
                late.push(refused_after_all(
                    e,
                    &format!("record {}", first_seq + i as i64),
                ));
            }
        }
        for e in late {
            self.push(e, now_rfc3339(), None);
        }
        if self.reserve_stale && !self.pending.iter().any(|e| e.in_reserve) {
            self.clear_reserve();
        }
        self.checkpoint = Some(head);
        Ok(())
    }

    /// Empties the reserve (the trail has its records); retried after the
    /// next append if it fails.
    fn clear_reserve(&mut self) {
        let Some(r) = self.reserve.as_mut() else {
            return;
        };
        match r.clear() {
            Ok(()) => self.reserve_stale = false,
            Err(e) => {
                self.reserve_stale = true;
                tracing::error!(error = %e, "AUDIT RESERVE CANNOT BE EMPTIED (tried again after the next append)");
            }
        }
    }

    /// The records of waiting accesses go into the reserve (synced) and the
    /// accesses are answered. The reserve notes the newest record this node
    /// had written before them: at the next start they are looked for in
    /// the trail after it only.
    fn journal(&mut self) {
        let Some(reserve) = self.reserve.as_mut() else {
            return;
        };
        let waiting: Vec<usize> = (0..self.pending.len())
            .filter(|&i| self.pending[i].access.is_some() && !self.pending[i].in_reserve)
            .collect();
        if waiting.is_empty() {
            return;
        }
        let records: Vec<(String, String)> = waiting
            .iter()
            .map(|&i| (self.pending[i].time.clone(), self.pending[i].body.clone()))
            .collect();
        if let Err(e) = reserve.write(&records, self.trail.newest_written()) {
            tracing::error!(error = %e, "AUDIT RESERVE CANNOT BE WRITTEN: accesses are refused until the trail can be");
            return;
        }
        tracing::warn!(
            records = records.len(),
            "AUDIT RESERVE: access records kept in audit.reserve until the index takes them"
        );
        let mut late = Vec::new();
        for &i in &waiting {
            let entry = &mut self.pending[i];
            entry.in_reserve = true;
            if let Some((w, e)) = entry.access.take()
                && w.send(()).is_err()
            {
                late.push(refused_after_all(
                    e,
                    &format!("the record of {}", entry.time),
                ));
            }
        }
        for e in late {
            self.push(e, now_rfc3339(), None);
        }
    }

    /// Until the next attempt: what arrives joins the pending records, and
    /// an access goes to the reserve at once (the index has just refused),
    /// or, without a reserve, brings the attempt forward. Past QUEUE
    /// pending records the queue holds reporters back.
    async fn wait_for_retry(&mut self, rx: &mut mpsc::Receiver<Msg>, delay: Duration) {
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return,
                msg = rx.recv(), if self.pending.len() < QUEUE => match msg {
                    Some(msg) => {
                        let access = matches!(msg, Msg::Event(_, _, Some(_)));
                        self.receive(msg);
                        if access {
                            if self.reserve.is_none() {
                                return;
                            }
                            self.journal();
                        }
                    }
                    None => {
                        (&mut wait).await;
                        return;
                    }
                },
            }
        }
    }
}

/// The record that corrects `which` record: the access it names was
/// refused (its request stopped waiting) while it was being written.
pub(crate) fn refused_after_all(mut e: AuditEvent, which: &str) -> AuditEvent {
    e.event = EventId::SecurityAlert;
    e.action = 'E';
    e.outcome = Outcome::MinorFailure;
    e.detail = format!(
        "{which} names an access that did not happen: it was refused (the audit trail answered too late) — {}",
        e.detail
    );
    e
}
