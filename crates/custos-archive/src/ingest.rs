//! Receiving one instance: stage -> parse index attributes -> commit blob ->
//! commit index row. Only then does the caller report success.

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_object::file::ReadPreamble;
use tracing::{debug, warn};

use bytes::Bytes;
use custos_core::record::StoredInstance;
use custos_index::{IndexError, InsertOutcome};
use custos_store::{Held, StagedBlob, StoreError};

use crate::attributes::record_of;
use crate::part10::{MetaInfo, header};
use crate::{Archive, DuplicatePolicy};

/// How a received instance ended, when nothing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// New instance, durable.
    Stored,
    /// Same UID, same bytes as already stored: nothing changed.
    AlreadyStored,
    /// Same UID, other bytes; the stored copy was kept (policy `keep`).
    ConflictKept,
    /// Same UID, other bytes; refused (policy `reject`).
    ConflictRejected,
    /// Same UID, other bytes; the new copy replaced the old (policy `replace`).
    Replaced,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The bytes are not a DICOM data set we can read.
    #[error("not a readable DICOM instance: {0}")]
    Unreadable(String),
    /// Readable, but unfit to archive (missing UIDs, mismatch with the command).
    #[error("instance refused: {0}")]
    Invalid(String),
    /// Readable, but the sender may not store this kind of instance.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("index failed: {0}")]
    Index(#[from] IndexError),
}

/// The identity of a received instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub patient_id: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub study_uid: String,
    pub series_uid: String,
}

/// An instance being received. Dropping it before `finish` discards everything.
pub struct Ingest<'a> {
    archive: &'a Archive,
    blob: StagedBlob,
    expected: Option<MetaInfo>,
    expected_study: Option<String>,
    derived_only: bool,
    /// Replace a stored instance of the same UID whatever the duplicate rule.
    replace: bool,
}

impl<'a> Ingest<'a> {
    pub(crate) async fn network(
        archive: &'a Archive,
        meta: MetaInfo,
    ) -> Result<Ingest<'a>, IngestError> {
        let head = header(&meta).map_err(IngestError::Invalid)?;
        let mut blob = archive.store.stage().await?;
        blob.write(&head).await?;
        Ok(Ingest {
            archive,
            blob,
            expected: Some(meta),
            expected_study: None,
            derived_only: false,
            replace: false,
        })
    }

    pub(crate) async fn file(archive: &'a Archive) -> Result<Ingest<'a>, IngestError> {
        let blob = archive.store.stage().await?;
        Ok(Ingest {
            archive,
            blob,
            expected: None,
            expected_study: None,
            derived_only: false,
            replace: false,
        })
    }

    /// Refuses the instance unless it is a derived object (the sender has
    /// only the `store-derived` right).
    pub fn derived_only(&mut self) {
        self.derived_only = true;
    }

    /// Replaces the stored instance of the same SOP Instance UID (a
    /// correction's rewritten copy), whatever the duplicate rule says.
    pub fn replace_existing(&mut self) {
        self.replace = true;
    }

    /// Refuses the instance unless it belongs to this study (STOW-RS to
    /// `/studies/{uid}`).
    pub fn expect_study(&mut self, study_uid: &str) {
        self.expected_study = Some(study_uid.to_string());
    }

    /// Appends received bytes. A Part 10 file that starts at `DICM`, without
    /// its preamble, gets an empty one: stored files always have it, and the
    /// parse insists on it, so that the length check (`lengths`) and
    /// dicom-parser read the same bytes the same way (found by fuzzing: such
    /// a file passed unchecked, and dicom-object's preamble detection then
    /// parsed it).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        self.preamble_before(bytes).await?;
        Ok(self.blob.write(bytes).await?)
    }

    /// As [`write`](Self::write), taking the buffer over (a P-DATA value, a
    /// STOW-RS chunk) instead of copying it while the instance is held in
    /// memory.
    pub async fn write_owned(&mut self, bytes: impl Into<Bytes>) -> Result<(), IngestError> {
        let bytes = bytes.into();
        self.preamble_before(&bytes).await?;
        Ok(self.blob.write_owned(bytes).await?)
    }

    /// The empty preamble, if `bytes` start a file at `DICM` (see `write`).
    async fn preamble_before(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        if self.blob.size() == 0 && bytes.starts_with(b"DICM") {
            self.blob.write(&[0u8; 128]).await?;
        }
        Ok(())
    }

    /// SHA-256 of the bytes received so far (the whole file once all are in).
    pub fn sha256_hex(&self) -> String {
        self.blob.sha256_hex()
    }

    pub fn bytes_received(&self) -> u64 {
        self.blob.size()
    }

    /// Parses, commits and indexes the instance. Returns its identity and outcome.
    pub async fn finish(self) -> Result<(Received, StoreOutcome), IngestError> {
        self.finish_into(&mut None).await
    }

    /// [`Self::finish`], with the SOP Class and Instance UIDs of the data
    /// set when it was read that far (a STOW-RS failure item names them).
    pub async fn finish_naming(
        self,
    ) -> (
        Option<(String, String)>,
        Result<(Received, StoreOutcome), IngestError>,
    ) {
        let mut named = None;
        let result = self.finish_into(&mut named).await;
        (named, result)
    }

    async fn finish_into(
        mut self,
        named: &mut Option<(String, String)>,
    ) -> Result<(Received, StoreOutcome), IngestError> {
        self.blob.flush().await?;
        // Parse only up to Pixel Data: the index needs none of the bulk data.
        // Declared lengths are checked first: dicom-parser allocates them
        // before reading (see `lengths`).
        let held = self.blob.held().map(Held::len);
        let staged = self.blob.staged_path().map(std::path::Path::to_path_buf);
        let parsed = match (held, staged) {
            // Held in memory (to be packed): a small one is parsed right here
            // (tens of microseconds), a larger one off the async workers.
            (Some(len), _) if len <= INLINE_PARSE => self
                .blob
                .held()
                .map_or_else(|| Err(GONE.to_string()), |h| parse_reader(h.reader())),
            (Some(_), _) => self
                .blob
                .with_held_off_thread(|h| parse_reader(h.reader()))
                .await
                .unwrap_or_else(|| Ok(Err(GONE.to_string())))
                .map_err(|e| IngestError::Unreadable(e.to_string()))?,
            (None, Some(path)) => tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                crate::lengths::check_part10(file).map_err(|e| e.to_string())?;
                OpenFileOptions::new()
                    .read_preamble(ReadPreamble::Always)
                    .read_until(tags::PIXEL_DATA)
                    .open_file(&path)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| IngestError::Unreadable(e.to_string()))?,
            (None, None) => Err(GONE.to_string()),
        }
        .map_err(IngestError::Unreadable)?;
        let meta = parsed.meta();
        let ts = meta.transfer_syntax().trim_end_matches('\0').to_string();
        let meta_sop = meta
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0')
            .to_string();
        let mut rec = record_of(&parsed).map_err(IngestError::Invalid)?;
        drop(parsed);
        *named = Some((rec.sop_class_uid.clone(), rec.sop_instance_uid.clone()));
        if let Some(expected) = &self.expected {
            if expected.sop_instance_uid != rec.sop_instance_uid {
                return Err(IngestError::Invalid(
                    "the data set's SOP Instance UID differs from the request's".into(),
                ));
            }
            if expected.sop_class_uid != rec.sop_class_uid {
                return Err(IngestError::Invalid(
                    "the data set's SOP Class UID differs from the request's".into(),
                ));
            }
        } else if meta_sop != rec.sop_instance_uid {
            return Err(IngestError::Invalid(
                "the file meta SOP Instance UID differs from the data set's".into(),
            ));
        }
        if self.derived_only && !custos_core::derived::is_derived(&rec.sop_class_uid) {
            return Err(IngestError::NotPermitted(
                "only derived objects (SR, SEG, presentation states, key objects) may be stored with this role".into(),
            ));
        }
        if let Some(study) = &self.expected_study
            && *study != rec.study_uid
        {
            return Err(IngestError::Invalid(
                "the instance belongs to another study than the request's".into(),
            ));
        }
        rec.transfer_syntax_uid = ts;
        rec.size = self.blob.size();
        let stored_bytes = rec.size;
        rec.sha256 = self.blob.sha256_hex();
        let facts = custos_core::routing::InstanceFacts {
            study_instance_uid: rec.study_uid.clone(),
            calling_ae: self
                .expected
                .as_ref()
                .map(|m| m.source_ae_title.clone())
                .unwrap_or_default(),
            modality: rec.modality.clone(),
            sop_class: rec.sop_class_uid.clone(),
            study_description: rec.study_description.clone(),
            attributes: self
                .archive
                .route_keys()
                .iter()
                .filter_map(|k| rec.value(*k).map(|v| (*k, v)))
                .collect(),
        };
        let received = Received {
            patient_id: rec.patient_id.clone(),
            sop_instance_uid: rec.sop_instance_uid.clone(),
            sop_class_uid: rec.sop_class_uid.clone(),
            study_uid: rec.study_uid.clone(),
            series_uid: rec.series_uid.clone(),
        };

        let store = &self.archive.store;
        let key = store.commit(self.blob).await?;
        rec.blob_key = key.clone();
        // What may store only derived objects replaces nothing: under
        // `replace`, an SR reusing an image's SOP Instance UID took the
        // image's place.
        let replace = !self.derived_only
            && (self.replace || self.archive.duplicates == DuplicatePolicy::Replace);
        let outcome = match self.archive.index.insert(rec, replace).await {
            Ok(o) => o,
            Err(e) => {
                // Blob first, index second: an unindexed blob is removed now
                // (or, after a crash, found by fsck as an orphan). Unless the
                // row may have been committed after all: removing the blob
                // would leave an indexed instance without bytes, which a
                // resend would then find "already stored". Kept, it is either
                // the row's blob or an orphan fsck removes.
                if e.may_have_committed() {
                    warn!(error = %e, "index outcome unknown; the received blob is kept");
                } else {
                    let _ = store.delete(&key).await;
                }
                return Err(e.into());
            }
        };
        let discard = |why: &'static str| async move {
            debug!(why, "discarding received copy");
            if let Err(e) = store.delete(&key).await {
                warn!(error = %e, "could not remove a discarded blob");
            }
        };
        let result = match outcome {
            InsertOutcome::Inserted => StoreOutcome::Stored,
            InsertOutcome::Identical { .. } => {
                discard("identical duplicate").await;
                StoreOutcome::AlreadyStored
            }
            InsertOutcome::Conflict { .. } => {
                discard("conflicting duplicate").await;
                // A derived object that may not replace is refused, not
                // "kept": the viewer that saved it must not think it did.
                match self.archive.duplicates {
                    DuplicatePolicy::Reject => StoreOutcome::ConflictRejected,
                    DuplicatePolicy::Replace if self.derived_only => StoreOutcome::ConflictRejected,
                    _ => StoreOutcome::ConflictKept,
                }
            }
            InsertOutcome::Replaced { previous } => {
                remove_replaced(store.as_ref(), &previous).await;
                StoreOutcome::Replaced
            }
        };
        if matches!(result, StoreOutcome::Stored | StoreOutcome::Replaced) {
            self.archive
                .metrics()
                .add("custos_ingest_bytes_total", &[], stored_bytes);
        }
        if matches!(
            result,
            StoreOutcome::Stored | StoreOutcome::AlreadyStored | StoreOutcome::Replaced
        ) && !self.archive.routes().is_empty()
        {
            // Queued before the sender is acknowledged; if this fails, the
            // sender gets a failure and sends again (AlreadyStored: queued then).
            // New or replaced content is sent even if its job was done: a
            // study forwarded whole goes again when more of it arrives.
            let again = matches!(result, StoreOutcome::Stored | StoreOutcome::Replaced);
            self.archive
                .route_new(&received.sop_instance_uid, &facts, again)
                .await?;
        }
        Ok((received, result))
    }
}

/// Why a staged instance could not be parsed when its bytes are missing.
const GONE: &str = "the staged instance is gone";

/// Instances held in memory up to this size are parsed on the async worker.
const INLINE_PARSE: usize = 64 * 1024;

/// Parses a Part 10 file in memory up to Pixel Data, lengths checked first;
/// only with its preamble, as `check_part10` reads it.
pub(crate) fn parse_bytes(bytes: &[u8]) -> Result<dicom_object::DefaultDicomObject, String> {
    parse_reader(bytes)
}

/// [`parse_bytes`] over anything that reads the file from its start twice
/// (the length check, then the parse).
fn parse_reader<R: std::io::Read + Clone>(
    bytes: R,
) -> Result<dicom_object::DefaultDicomObject, String> {
    crate::lengths::check_part10(bytes.clone()).map_err(|e| e.to_string())?;
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .from_reader(bytes)
        .map_err(|e| e.to_string())
}

async fn remove_replaced(store: &dyn custos_store::BlobStore, previous: &StoredInstance) {
    if let Err(e) = store.delete(&previous.blob_key).await {
        warn!(error = %e, "could not remove a replaced blob");
    }
}
