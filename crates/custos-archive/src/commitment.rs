//! Storage commitment (PS3.4 J): does the archive really hold each instance a
//! modality asks about? Each one is looked up in the index and its blob read
//! back against the recorded size and SHA-256, so a modality deletes its own
//! copy only of what is here and intact. The report is held in the durable
//! queue before the modality is answered, so a restart cannot lose it. The
//! DIMSE exchange is `custos-dimse`'s.

use custos_index::IndexError;
use custos_store::StoreError;

use crate::Archive;

/// Failure Reason values (PS3.3 C.14.1.1) a commitment can report.
pub mod failure {
    /// The blob could not be read or does not match the index.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Not in the archive.
    pub const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
    /// Stored under another SOP class than the one named.
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
}

/// One instance a modality asks the archive to commit to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reference {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// A transaction's outcome as the queue keeps it until the report is
/// delivered: each reference with its Failure Reason, or none if committed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldReport {
    pub transaction: String,
    pub references: Vec<(Reference, Option<u16>)>,
}

impl HeldReport {
    pub fn from_payload(payload: &str) -> Result<HeldReport, String> {
        serde_json::from_str(payload)
            .map_err(|e| format!("a held commitment report does not parse: {e}"))
    }
}

/// How long a held report waits for the association that asked for it to
/// take it before it is due on a new association (a crash meanwhile: then).
const SAME_ASSOCIATION_GRACE: i64 = 30;

impl Archive {
    /// Keeps `report` in the durable queue for the peer `peer_ae` before the
    /// modality is answered: delivered later on a new association unless
    /// `report_settled` says the modality took it on its own.
    pub async fn hold_report(&self, peer_ae: &str, report: &HeldReport) -> Result<(), IndexError> {
        let payload = serde_json::to_string(report)
            .map_err(|e| IndexError::Corrupt(format!("commitment report: {e}")))?;
        let now = crate::routing::now();
        self.index
            .enqueue_report(
                &report.transaction,
                peer_ae,
                &payload,
                now,
                now + SAME_ASSOCIATION_GRACE,
            )
            .await
    }

    /// The modality took the held report on its association (`delivered`),
    /// or did not: then it goes on a new association now.
    pub async fn report_settled(&self, peer_ae: &str, transaction: &str, delivered: bool) {
        let now = crate::routing::now();
        match self
            .index
            .settle_report(transaction, peer_ae, delivered, now)
            .await
        {
            Ok(()) if !delivered => self.queued.notify_one(),
            Ok(()) => {}
            // The report stays held and goes out when its grace ends.
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a storage commitment report's delivery")
            }
        }
    }

    /// For each reference, in order: `None` if the archive holds it intact,
    /// or the Failure Reason. An unreadable index is an error (the request
    /// fails as a whole; the modality asks again); an unreadable blob fails
    /// only its instance. An instance once received with other content than
    /// the stored copy (a conflicting duplicate, kept or refused) fails: the
    /// archive cannot tell which copy the modality holds, and it must not
    /// delete its own on the archive's word.
    pub async fn commitment(&self, refs: &[Reference]) -> Result<Vec<Option<u16>>, IndexError> {
        let uids: Vec<String> = refs.iter().map(|r| r.sop_instance_uid.clone()).collect();
        let stored = self.stored_by_uid(&uids).await?;
        let mut conflicted = std::collections::HashSet::new();
        for page in uids.chunks(500) {
            conflicted.extend(self.index.conflicted(page.to_vec()).await?);
        }
        let mut out = Vec::with_capacity(refs.len());
        // Each blob is read once however often a request names it.
        let mut verified: std::collections::HashMap<&str, Option<u16>> =
            std::collections::HashMap::new();
        for r in refs {
            let Some(inst) = stored.get(&r.sop_instance_uid) else {
                out.push(Some(failure::NO_SUCH_OBJECT_INSTANCE));
                continue;
            };
            if inst.sop_class_uid != r.sop_class_uid {
                out.push(Some(failure::CLASS_INSTANCE_CONFLICT));
                continue;
            }
            if conflicted.contains(&r.sop_instance_uid) {
                out.push(Some(failure::PROCESSING_FAILURE));
                continue;
            }
            if let Some(known) = verified.get(inst.blob_key.as_str()) {
                out.push(*known);
                continue;
            }
            let result = match self.digest(&inst.blob_key).await {
                Ok((size, sha)) if size == inst.size && sha == inst.sha256 => None,
                Ok(_) => {
                    tracing::warn!(key = %inst.blob_key, "storage commitment: a blob differs from the index");
                    Some(failure::PROCESSING_FAILURE)
                }
                Err(StoreError::NotFound { .. }) => {
                    tracing::warn!(key = %inst.blob_key, "storage commitment: a blob is missing");
                    Some(failure::PROCESSING_FAILURE)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "storage commitment: cannot read a blob");
                    Some(failure::PROCESSING_FAILURE)
                }
            };
            verified.insert(inst.blob_key.as_str(), result);
            out.push(result);
        }
        Ok(out)
    }
}
