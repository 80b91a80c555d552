//! Corrections: a study sent under the wrong patient (or with a wrong
//! accession number, description, ...) is fixed by rewriting each of its
//! stored files with the new values — a new copy through the ingest path,
//! replacing the old one, whose blob goes once the index points at the new
//! one — so C-FIND, QIDO-RS and WADO-RS all show the corrected values; the
//! SOP Instance UIDs stay. Merging patients is correcting every study of
//! one patient to the other's identity. Audited as Patient Record (110110)
//! with the old and new patient IDs.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;

use custos_core::audit::{AuditEvent, EventId, Outcome};
use custos_core::query::{Key, Level, Matcher, Query};
use custos_index::IndexError;

use crate::{Archive, IngestError, RetrieveError};

/// The attributes a correction may set: patient and study level ones (the
/// index keeps them per study), by keyword.
pub const CORRECTABLE: &[(&str, Tag, VR)] = &[
    ("PatientID", tags::PATIENT_ID, VR::LO),
    ("PatientName", tags::PATIENT_NAME, VR::PN),
    ("PatientBirthDate", tags::PATIENT_BIRTH_DATE, VR::DA),
    ("PatientSex", tags::PATIENT_SEX, VR::CS),
    ("IssuerOfPatientID", tags::ISSUER_OF_PATIENT_ID, VR::LO),
    ("AccessionNumber", tags::ACCESSION_NUMBER, VR::SH),
    ("StudyID", tags::STUDY_ID, VR::SH),
    ("StudyDescription", tags::STUDY_DESCRIPTION, VR::LO),
    ("StudyDate", tags::STUDY_DATE, VR::DA),
    ("StudyTime", tags::STUDY_TIME, VR::TM),
    (
        "ReferringPhysicianName",
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
    ),
];

/// One attribute to set: tag, VR, value (from `parse_changes`).
pub type AttributeChange = (Tag, VR, String);

#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error("{0}")]
    Invalid(String),
    #[error("no such study")]
    NotFound,
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("reading a stored instance: {0}")]
    Read(#[from] RetrieveError),
    #[error("storing the corrected copy: {0}")]
    Store(#[from] IngestError),
    /// The correction's record could not be written: nothing changed.
    #[error(transparent)]
    Trail(#[from] crate::audit::TrailUnavailable),
}

/// What a correction did.
#[derive(Debug, Clone, Default)]
pub struct Corrected {
    pub studies: usize,
    pub instances: usize,
    pub old_patient_ids: Vec<String>,
}

/// The changes as (tag, VR, value), checked: known keywords, values within
/// their VR's length, no backslash or control characters.
pub fn parse_changes(changes: &[(String, String)]) -> Result<Vec<AttributeChange>, String> {
    if changes.is_empty() {
        return Err("name at least one attribute to correct".into());
    }
    changes
        .iter()
        .map(|(keyword, value)| {
            let (_, tag, vr) = CORRECTABLE
                .iter()
                .find(|(k, _, _)| k == keyword)
                .ok_or_else(|| {
                    format!(
                        "`{keyword}` cannot be corrected (one of {})",
                        CORRECTABLE.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
                    )
                })?;
            let max = match vr {
                VR::DA => 8,
                VR::TM => 16,
                VR::CS | VR::SH => 16,
                VR::LO => 64,
                _ => 324,
            };
            if value.chars().count() > max || value.chars().any(|c| c.is_control() || c == '\\') {
                return Err(format!("`{keyword}`: a value of at most {max} characters, without backslash or control characters"));
            }
            if *vr == VR::DA && !(value.is_empty() || (value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()))) {
                return Err(format!("`{keyword}` is a date: YYYYMMDD"));
            }
            Ok((*tag, *vr, value.clone()))
        })
        .collect()
}

impl Archive {
    /// Rewrites every instance of `study_uid` with `changes`; audited as by
    /// `by`. Idempotent: run again after a failure, it finishes the study.
    pub async fn correct_study(
        &self,
        study_uid: &str,
        changes: &[AttributeChange],
        by: &str,
    ) -> Result<Corrected, CorrectionError> {
        let query = crate::routing::whole_study(study_uid);
        let old_patient = self
            .find(Query {
                limit: 1,
                ..query.clone()
            })
            .await?
            .first()
            .and_then(|r| r.get(&Key::PatientID).cloned())
            .ok_or(CorrectionError::NotFound)?;
        let instances = self.retrieve_set(query).await?.all().await?;
        let unicode = changes.iter().any(|(_, _, v)| !v.is_ascii());
        let new_patient = changes
            .iter()
            .find(|(t, _, _)| *t == tags::PATIENT_ID)
            .map_or(old_patient.clone(), |c| c.2.clone());
        let fields = changes
            .iter()
            .map(|(t, _, _)| CORRECTABLE.iter().find(|c| c.1 == *t).map_or("?", |c| c.0))
            .collect::<Vec<_>>()
            .join(", ");
        let mut e = AuditEvent::new(EventId::PatientRecord, 'U', Outcome::Success);
        e.user = by.to_string();
        e.patient_ids.push(old_patient.clone());
        if new_patient != old_patient {
            e.patient_ids.push(new_patient.clone());
        }
        e.study_uids.push(study_uid.to_string());
        e.detail = format!(
            "study {study_uid} corrected ({} instances): {fields}; patient {old_patient} -> {new_patient}",
            instances.len()
        );
        // The record is durable before the first instance changes: a
        // correction the trail cannot take does not happen, and one a
        // crash cuts short is in it. A failure part-way is recorded after
        // it, with how far it got.
        self.record_access(e.clone()).await?;
        let mut done = 0;
        let rewritten: Result<(), CorrectionError> = async {
            for inst in &instances {
                let mut obj = self.read_object(inst, false).await?;
                if unicode {
                    // Text is held decoded; written back as UTF-8 with the new values.
                    obj.put(DataElement::new(
                        tags::SPECIFIC_CHARACTER_SET,
                        VR::CS,
                        PrimitiveValue::from("ISO_IR 192"),
                    ));
                }
                for (tag, vr, value) in changes {
                    obj.put(DataElement::new(
                        *tag,
                        *vr,
                        PrimitiveValue::from(value.as_str()),
                    ));
                }
                let mut bytes = Vec::new();
                obj.write_all(&mut bytes).map_err(|e| {
                    CorrectionError::Invalid(format!("cannot write the corrected copy: {e}"))
                })?;
                self.store_replacing(&bytes).await?;
                done += 1;
            }
            Ok(())
        }
        .await;
        if rewritten.is_err() {
            e.outcome = Outcome::SeriousFailure;
            e.detail = format!(
                "study {study_uid} correction failed after {done} of {} instances: {fields}; patient {old_patient} -> {new_patient}",
                instances.len()
            );
            self.audit(e).await;
        }
        rewritten?;
        Ok(Corrected {
            studies: 1,
            instances: instances.len(),
            old_patient_ids: vec![old_patient],
        })
    }

    /// Moves every study of patient `from` to the patient `into` (its
    /// PatientID and the other patient attributes given).
    pub async fn merge_patients(
        &self,
        from: &str,
        into: &[AttributeChange],
        by: &str,
    ) -> Result<Corrected, CorrectionError> {
        if !into.iter().any(|(t, _, _)| *t == tags::PATIENT_ID) {
            return Err(CorrectionError::Invalid(
                "the target needs a PatientID".into(),
            ));
        }
        if into.iter().any(|(t, _, _)| {
            !matches!(
                *t,
                tags::PATIENT_ID
                    | tags::PATIENT_NAME
                    | tags::PATIENT_BIRTH_DATE
                    | tags::PATIENT_SEX
                    | tags::ISSUER_OF_PATIENT_ID
            )
        }) {
            return Err(CorrectionError::Invalid(
                "a merge sets patient attributes only".into(),
            ));
        }
        let studies = self
            .find(Query {
                level: Level::Study,
                conditions: vec![(Key::PatientID, Matcher::Single(from.to_string()))],
                limit: 100_000,
                offset: 0,
                order: Vec::new(),
            })
            .await?;
        if studies.is_empty() {
            return Err(CorrectionError::NotFound);
        }
        let mut done = Corrected {
            old_patient_ids: vec![from.to_string()],
            ..Default::default()
        };
        for row in studies {
            let Some(uid) = row.get(&Key::StudyInstanceUID) else {
                continue;
            };
            let c = self.correct_study(uid, into, by).await?;
            done.studies += 1;
            done.instances += c.instances;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_patient_and_study_attributes_with_sane_values() {
        let ok = parse_changes(&[
            ("PatientID".into(), "P-2".into()),
            ("StudyDate".into(), "20260101".into()),
        ]);
        assert_eq!(ok.unwrap().len(), 2);
        assert!(parse_changes(&[("SOPInstanceUID".into(), "1.2".into())]).is_err());
        assert!(parse_changes(&[("StudyDate".into(), "yesterday".into())]).is_err());
        assert!(parse_changes(&[("PatientID".into(), "a\\b".into())]).is_err());
        assert!(parse_changes(&[]).is_err());
    }
}
