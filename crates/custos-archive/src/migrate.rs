//! Copying an archive to other backends (`custos migrate`): every instance is
//! read from the source and ingested into the target through the normal
//! ingest path (re-parsed, re-hashed, durable before it counts), and its
//! SHA-256 compared with the source's record. The source is only read, so it
//! keeps serving; instances already in the target with the same SHA-256 are
//! skipped, so an interrupted run resumes where it stopped.

use tokio::io::AsyncReadExt;

use custos_core::query::{Key, Level, Matcher, Query};
use custos_core::record::StoredInstance;

use crate::{Archive, FsckError, IngestError, StoreOutcome};

#[derive(Debug, Default, Clone)]
pub struct MigrateReport {
    pub copied: u64,
    pub already_there: u64,
    /// SOP Instance UIDs that could not be copied, with the reason.
    pub failed: Vec<(String, String)>,
}

/// What `copy_settings_to` copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettingsCopied {
    pub peers: usize,
    pub users: usize,
    pub tokens: usize,
    pub webhooks: usize,
    pub protected: usize,
}

impl Archive {
    /// Copies what the archive's policy rests on into `target`: peers,
    /// users and tokens (their hashes as they are), webhooks (one with the
    /// same URL and events is not added twice, nor counted) and the studies protected
    /// from retention (without them the new index would let retention
    /// delete a study under legal hold). Peers, users and tokens replace
    /// the target's of the same name, so a second run brings the last
    /// changes. The worklist, performed steps and forwarding jobs are not
    /// copied: they are the day's work, not the archive.
    pub async fn copy_settings_to(
        &self,
        target: &Archive,
    ) -> Result<SettingsCopied, custos_index::IndexError> {
        let (from, to) = (&self.index, &target.index);
        let mut copied = SettingsCopied::default();
        for peer in from.peers().await? {
            to.put_peer(peer).await?;
            copied.peers += 1;
        }
        // Enabled administrators first: the target always keeps one
        // (`IndexError::LastAdmin`), even while one it has is replaced by
        // the source's disabled copy.
        let mut users = from.users().await?;
        users.sort_by_key(|u| u.role != custos_core::Role::Admin || u.disabled);
        for user in users {
            to.put_user(user).await?;
            copied.users += 1;
        }
        for token in from.tokens().await? {
            to.put_token(token).await?;
            copied.tokens += 1;
        }
        let present = to.webhooks().await?;
        for hook in from.webhooks().await? {
            if !present
                .iter()
                .any(|h| h.url == hook.url && h.events == hook.events)
            {
                to.add_webhook(&hook.url, &hook.events, &hook.secret, hook.created)
                    .await?;
                copied.webhooks += 1;
            }
        }
        for (study, reason, at) in from.protected_studies().await? {
            to.set_protected(&study, true, &reason, at).await?;
            copied.protected += 1;
        }
        Ok(copied)
    }

    /// Copies this archive's audit trail into `target`'s, record for record
    /// (same sequence numbers, times, bodies and links: the chain and every
    /// node's checkpoint hold on the new index), after what `target` already
    /// has of it; returns how many were copied. A target whose trail is not
    /// a beginning of this one is refused, nothing copied.
    pub async fn copy_audit_to(&self, target: &Archive) -> Result<usize, custos_index::IndexError> {
        let (from, to) = (self.audit_log(), target.audit_log());
        let mut after = match to.audit_head().await? {
            None => 0,
            Some(head) => {
                let ours = from.audit_after(head.seq - 1, 1).await?.pop();
                if ours.is_none_or(|r| r.hash != head.hash) {
                    return Err(custos_index::IndexError::AuditMismatch(format!(
                        "the target's audit trail (up to record {}) is not this archive's",
                        head.seq
                    )));
                }
                head.seq
            }
        };
        let mut copied = 0;
        loop {
            let page = from.audit_after(after, 5_000).await?;
            let Some(last) = page.last() else {
                return Ok(copied);
            };
            after = last.seq;
            to.copy_audit(&page).await?;
            copied += page.len();
        }
    }

    /// Copies every instance of `self` into `target`; `progress(done, total)`.
    pub async fn migrate_to(
        &self,
        target: &Archive,
        progress: impl Fn(u64, u64),
    ) -> Result<MigrateReport, FsckError> {
        let total = self.index.instance_count().await?;
        let mut report = MigrateReport::default();
        let mut after = 0;
        let mut done = 0;
        loop {
            let page = self.index.stored_after(after, 200).await?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            for (_, inst) in page {
                match self.copy_one(target, &inst).await {
                    Ok(true) => report.copied += 1,
                    Ok(false) => report.already_there += 1,
                    Err(why) => report.failed.push((inst.sop_instance_uid.clone(), why)),
                }
                done += 1;
                progress(done, total);
            }
        }
        Ok(report)
    }

    /// Whether the instance was copied (false: the target already had it).
    async fn copy_one(&self, target: &Archive, inst: &StoredInstance) -> Result<bool, String> {
        let query = Query {
            level: Level::Image,
            conditions: vec![(
                Key::SOPInstanceUID,
                Matcher::Single(inst.sop_instance_uid.clone()),
            )],
            limit: 1,
            offset: 0,
            order: Vec::new(),
        };
        let existing = target
            .index
            .instances(query)
            .await
            .map_err(|e| e.to_string())?;
        if existing.iter().any(|e| e.sha256 == inst.sha256) {
            return Ok(false);
        }
        let mut reader = self
            .store
            .open(&inst.blob_key)
            .await
            .map_err(|e| e.to_string())?;
        let mut ingest = target
            .begin_file_ingest()
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            ingest.write(&buf[..n]).await.map_err(|e| e.to_string())?;
        }
        let copied_sha = ingest.sha256_hex();
        if copied_sha != inst.sha256 {
            return Err("bytes read from the source differ from its recorded SHA-256".into());
        }
        match ingest.finish().await {
            Ok((_, StoreOutcome::Stored | StoreOutcome::Replaced)) => Ok(true),
            Ok((_, StoreOutcome::AlreadyStored)) => Ok(false),
            Ok((_, other)) => Err(format!(
                "target holds another instance under this UID ({other:?})"
            )),
            Err(IngestError::Unreadable(e)) | Err(IngestError::Invalid(e)) => Err(e),
            Err(e) => Err(e.to_string()),
        }
    }
}
