//! A study as a file-set for download: its instances named by Part 10 file
//! IDs (`DICOM/SE000001/IM000001`, series in series-number order, instances
//! in instance-number order) and the DICOMDIR that lists them. The caller
//! packs them (the web side streams a ZIP).

use std::collections::HashMap;

use custos_core::query::{Key, Level, Matcher, Query, Row};
use custos_core::record::StoredInstance;
use custos_index::IndexError;

use crate::Archive;
use crate::dicomdir::{self, DirInstance, DirSeries, DirStudy};

/// What a study download holds.
pub struct StudyExport {
    /// The DICOMDIR file's bytes.
    pub dicomdir: Vec<u8>,
    /// Each instance with its path in the file-set (`/`-separated).
    pub files: Vec<(String, StoredInstance)>,
    /// The study's patient ID (for the audit record).
    pub patient_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the DICOMDIR could not be written: {0}")]
    Dicomdir(String),
    #[error(
        "more than 999,999 series, or instances in a series, than a DICOMDIR's file IDs can name"
    )]
    TooMany,
}

/// Most series, and instances per series, a file ID of 8 characters names.
const MOST_NAMED: usize = 999_999;

/// `DICOM/SEnnnnnn/IMnnnnnn` (Part 10 file ID components: 8 characters at most).
fn file_id(series: usize, instance: usize) -> Option<Vec<String>> {
    (series <= MOST_NAMED && instance <= MOST_NAMED).then(|| {
        vec![
            "DICOM".to_string(),
            format!("SE{series:06}"),
            format!("IM{instance:06}"),
        ]
    })
}

fn number(row: &Row, key: Key) -> i64 {
    row.get(&key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(i64::MAX)
}

fn field(row: &Row, key: Key) -> String {
    row.get(&key).cloned().unwrap_or_default()
}

impl Archive {
    /// The study's file-set; `None` when the study has no instances.
    pub async fn study_export(&self, study_uid: &str) -> Result<Option<StudyExport>, ExportError> {
        let by_study = vec![(
            Key::StudyInstanceUID,
            Matcher::Single(study_uid.to_string()),
        )];
        let mut rows = self
            .find(Query {
                level: Level::Image,
                conditions: by_study.clone(),
                limit: usize::MAX,
                offset: 0,
                order: Vec::new(),
            })
            .await?;
        let stored: HashMap<String, StoredInstance> = self
            .retrieve_set(Query {
                level: Level::Study,
                conditions: by_study,
                limit: usize::MAX,
                offset: 0,
                order: Vec::new(),
            })
            .await?
            .all()
            .await?
            .into_iter()
            .map(|i| (i.sop_instance_uid.clone(), i))
            .collect();
        let Some(first) = rows.first().cloned() else {
            return Ok(None);
        };
        rows.sort_by(|a, b| {
            (
                number(a, Key::SeriesNumber),
                field(a, Key::SeriesInstanceUID),
            )
                .cmp(&(
                    number(b, Key::SeriesNumber),
                    field(b, Key::SeriesInstanceUID),
                ))
                .then(number(a, Key::InstanceNumber).cmp(&number(b, Key::InstanceNumber)))
                .then(field(a, Key::SOPInstanceUID).cmp(&field(b, Key::SOPInstanceUID)))
        });
        let study = DirStudy {
            patient_name: field(&first, Key::PatientName),
            patient_id: field(&first, Key::PatientID),
            study_uid: study_uid.to_string(),
            study_date: field(&first, Key::StudyDate),
            study_time: field(&first, Key::StudyTime),
            study_description: field(&first, Key::StudyDescription),
            study_id: field(&first, Key::StudyID),
            accession_number: field(&first, Key::AccessionNumber),
        };
        let mut series: Vec<DirSeries> = Vec::new();
        let mut files = Vec::new();
        for row in rows {
            // An instance deleted between the two reads is left out.
            let Some(inst) = stored.get(&field(&row, Key::SOPInstanceUID)) else {
                continue;
            };
            let series_uid = field(&row, Key::SeriesInstanceUID);
            if series.last().is_none_or(|s| s.series_uid != series_uid) {
                series.push(DirSeries {
                    series_uid,
                    modality: field(&row, Key::Modality),
                    series_number: row.get(&Key::SeriesNumber).cloned().unwrap_or_default(),
                    instances: Vec::new(),
                });
            }
            let folder = series.len();
            let Some(s) = series.last_mut() else { continue };
            let file_id = file_id(folder, s.instances.len() + 1).ok_or(ExportError::TooMany)?;
            files.push((file_id.join("/"), inst.clone()));
            s.instances.push(DirInstance {
                file_id,
                sop_class_uid: inst.sop_class_uid.clone(),
                sop_instance_uid: inst.sop_instance_uid.clone(),
                transfer_syntax_uid: inst.transfer_syntax_uid.clone(),
                instance_number: row.get(&Key::InstanceNumber).cloned().unwrap_or_default(),
            });
        }
        if files.is_empty() {
            return Ok(None);
        }
        let dicomdir = dicomdir::build(&study, &series).map_err(ExportError::Dicomdir)?;
        Ok(Some(StudyExport {
            dicomdir,
            files,
            patient_id: study.patient_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_stay_within_eight_characters() {
        assert_eq!(
            file_id(1, 999_999).unwrap(),
            ["DICOM", "SE000001", "IM999999"]
        );
        assert!(file_id(1_000_000, 1).is_none());
        assert!(file_id(1, 1_000_000).is_none());
    }
}
