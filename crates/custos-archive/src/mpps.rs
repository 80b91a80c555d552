//! Modality Performed Procedure Step (PS3.4 F): a modality reports that it
//! started a procedure (N-CREATE, IN PROGRESS) and how it ended (N-SET,
//! COMPLETED or DISCONTINUED). Each step is kept with the study and the
//! worklist item it performs (by accession number); the state machine of
//! PS3.4 F.7.2 refuses what it does not allow, with its statuses.

use crate::text::attribute_text as text;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use custos_core::record::MppsRow;
use custos_index::IndexError;

use crate::Archive;

/// Statuses of a refused N-CREATE or N-SET (PS3.4 F.7.2.1.2, F.7.2.2.2).
pub mod refusal {
    /// A status not allowed here (N-CREATE other than IN PROGRESS, or an
    /// unknown value).
    pub const INVALID_ATTRIBUTE_VALUE: u16 = 0x0106;
    /// The step is COMPLETED or DISCONTINUED: it may no longer be updated.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    pub const NO_SUCH_SOP_INSTANCE: u16 = 0x0112;
}

pub const IN_PROGRESS: &str = "IN PROGRESS";
const FINAL: [&str; 2] = ["COMPLETED", "DISCONTINUED"];

/// Error ID (0000,0903) of a step that is COMPLETED or DISCONTINUED
/// (PS3.4 F.7.2.2.2, with status 0110).
pub const NO_LONGER_UPDATABLE: u16 = 0xA710;

#[derive(Debug, thiserror::Error)]
pub enum MppsError {
    /// Refused with this DIMSE status and reason.
    #[error("{1}")]
    Refused(u16, String),
    /// The step is COMPLETED or DISCONTINUED: 0110 with Error ID
    /// [`NO_LONGER_UPDATABLE`].
    #[error("the performed procedure step may no longer be updated")]
    Ended,
    #[error(transparent)]
    Index(#[from] IndexError),
}

fn refused(status: u16, why: &str) -> MppsError {
    MppsError::Refused(status, why.to_string())
}

fn to_json(obj: &InMemDicomObject) -> Result<String, MppsError> {
    dicom_json::to_string(obj).map_err(|e| {
        refused(
            refusal::PROCESSING_FAILURE,
            &format!("cannot keep the attributes: {e}"),
        )
    })
}

/// The patient a performed step names (its Patient ID), if any.
pub fn patient_of(row: &custos_core::record::MppsRow) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(&row.attributes_json)
        .ok()
        .and_then(|a| a["00100020"]["Value"][0].as_str().map(str::to_string))
        .filter(|p| !p.is_empty())
}

impl Archive {
    /// N-CREATE: a new step, IN PROGRESS, from its attributes.
    pub async fn create_mpps(
        &self,
        uid: &str,
        attrs: InMemDicomObject,
    ) -> Result<MppsRow, MppsError> {
        let status = text(&attrs, tags::PERFORMED_PROCEDURE_STEP_STATUS);
        if status != IN_PROGRESS {
            return Err(refused(
                refusal::INVALID_ATTRIBUTE_VALUE,
                "a performed procedure step is created IN PROGRESS",
            ));
        }
        let scheduled = attrs
            .get(tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|items| items.first());
        let study_uid = scheduled
            .map(|s| text(s, tags::STUDY_INSTANCE_UID))
            .unwrap_or_default();
        let accession = scheduled
            .map(|s| text(s, tags::ACCESSION_NUMBER))
            .unwrap_or_default();
        let worklist_id = if accession.is_empty() {
            None
        } else {
            self.index.worklist_id_by_accession(&accession).await?
        };
        let row = MppsRow {
            sop_instance_uid: uid.to_string(),
            status,
            study_uid,
            accession_number: accession,
            worklist_id,
            attributes_json: to_json(&attrs)?,
        };
        if !self.index.create_mpps(row.clone()).await? {
            return Err(refused(
                refusal::DUPLICATE_SOP_INSTANCE,
                "a performed procedure step with this UID exists",
            ));
        }
        self.follow_on_worklist(&row, "STARTED").await;
        Ok(row)
    }

    /// N-SET: the modifications applied to a step still IN PROGRESS.
    pub async fn set_mpps(
        &self,
        uid: &str,
        changes: InMemDicomObject,
    ) -> Result<MppsRow, MppsError> {
        let Some(mut row) = self.index.mpps(uid).await? else {
            return Err(refused(
                refusal::NO_SUCH_SOP_INSTANCE,
                "no such performed procedure step",
            ));
        };
        if row.status != IN_PROGRESS {
            return Err(MppsError::Ended);
        }
        let mut attrs: InMemDicomObject = dicom_json::from_str(&row.attributes_json)
            .map_err(|e| IndexError::Corrupt(format!("performed procedure step {uid}: {e}")))?;
        for e in changes.into_iter() {
            attrs.put(e);
        }
        let status = text(&attrs, tags::PERFORMED_PROCEDURE_STEP_STATUS);
        if status != IN_PROGRESS && !FINAL.contains(&status.as_str()) {
            return Err(refused(
                refusal::INVALID_ATTRIBUTE_VALUE,
                "the status is IN PROGRESS, COMPLETED or DISCONTINUED",
            ));
        }
        row.status = status;
        row.attributes_json = to_json(&attrs)?;
        // Another N-SET may have ended the step meanwhile.
        if !self.index.update_mpps_in_progress(row.clone()).await? {
            return Err(MppsError::Ended);
        }
        if FINAL.contains(&row.status.as_str()) {
            let status = row.status.clone();
            self.follow_on_worklist(&row, &status).await;
        }
        Ok(row)
    }

    /// The linked worklist item's step takes the performed step's progress
    /// (STARTED, COMPLETED, DISCONTINUED), as dcm4chee does: a finished
    /// exam leaves the modality's worklist. The step is recorded either way;
    /// a failure here is logged.
    async fn follow_on_worklist(&self, row: &MppsRow, status: &str) {
        let Some(id) = row.worklist_id else { return };
        if let Err(e) = self.set_worklist_status(id, status).await {
            tracing::warn!(error = %e, item = id, "cannot update the worklist item of a performed step");
        }
    }

    pub async fn mpps(&self, uid: &str) -> Result<Option<MppsRow>, IndexError> {
        self.index.mpps(uid).await
    }
}
