//! Studies (or one series) as a file-set for download: the instances named by
//! Part 10 file IDs (`DICOM/SE000001/IM000001` for one study,
//! `DICOM/ST000001/SE000001/IM000001` for several; series in series-number
//! order, instances in instance-number order) and the DICOMDIR that lists
//! them. The caller packs them (the web side streams a ZIP).

use std::collections::HashMap;

use custos_core::query::{Key, Level, Matcher, Query, Row};
use custos_core::record::StoredInstance;
use custos_index::IndexError;

use crate::Archive;
use crate::dicomdir::{self, DirInstance, DirSeries, DirStudy};

/// What a download holds.
pub struct StudyExport {
    /// The DICOMDIR file's bytes.
    pub dicomdir: Vec<u8>,
    /// Each instance with its path in the file-set (`/`-separated).
    pub files: Vec<(String, StoredInstance)>,
    /// The patients' IDs, each once (for the audit record).
    pub patient_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the DICOMDIR could not be written: {0}")]
    Dicomdir(String),
    #[error(
        "more than 999,999 studies, series in a study, or instances in a series, than a DICOMDIR's file IDs can name"
    )]
    TooMany,
    /// One of the studies asked for has no instances (any more).
    #[error("study {0} is not in the archive")]
    NotFound(String),
}

/// Most studies, series, and instances per series, a file ID of 8
/// characters names.
const MOST_NAMED: usize = 999_999;

/// `DICOM/SEnnnnnn/IMnnnnnn` for one study, `DICOM/STnnnnnn/SEnnnnnn/IMnnnnnn`
/// for one of several (Part 10 file ID components: 8 characters at most).
fn file_id(study: Option<usize>, series: usize, instance: usize) -> Option<Vec<String>> {
    let named = |n: usize| n <= MOST_NAMED;
    (named(series) && named(instance) && study.is_none_or(named)).then(|| {
        let mut id = vec!["DICOM".to_string()];
        id.extend(study.map(|st| format!("ST{st:06}")));
        id.push(format!("SE{series:06}"));
        id.push(format!("IM{instance:06}"));
        id
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

/// One study's part of a file-set.
struct Part {
    study: DirStudy,
    series: Vec<DirSeries>,
    files: Vec<(String, StoredInstance)>,
}

impl Archive {
    /// One file-set of `studies` (in this order), or of the one series
    /// `series` of a single study: one DICOMDIR listing them all. A study
    /// without instances is `NotFound`.
    pub async fn export(
        &self,
        studies: &[String],
        series: Option<&str>,
    ) -> Result<StudyExport, ExportError> {
        let several = studies.len() > 1;
        let mut parts = Vec::with_capacity(studies.len());
        for (n, uid) in studies.iter().enumerate() {
            let folder = several.then_some(n + 1);
            match self.export_part(uid, series, folder).await? {
                Some(part) => parts.push(part),
                None => return Err(ExportError::NotFound(uid.clone())),
            }
        }
        let mut patient_ids: Vec<String> = Vec::new();
        for p in &parts {
            let id = &p.study.patient_id;
            if !id.is_empty() && !patient_ids.contains(id) {
                patient_ids.push(id.clone());
            }
        }
        let mut files = Vec::new();
        let mut listed = Vec::with_capacity(parts.len());
        for p in parts {
            files.extend(p.files);
            listed.push((p.study, p.series));
        }
        let dicomdir = dicomdir::build(&listed).map_err(ExportError::Dicomdir)?;
        Ok(StudyExport {
            dicomdir,
            files,
            patient_ids,
        })
    }

    /// One study's records and files, under `DICOM/STnnnnnn` when `folder`
    /// is given; `None` when it has no instances (in `series`, if given).
    async fn export_part(
        &self,
        study_uid: &str,
        only_series: Option<&str>,
        folder: Option<usize>,
    ) -> Result<Option<Part>, ExportError> {
        let mut conditions = vec![(
            Key::StudyInstanceUID,
            Matcher::Single(study_uid.to_string()),
        )];
        if let Some(s) = only_series {
            conditions.push((Key::SeriesInstanceUID, Matcher::Single(s.to_string())));
        }
        let mut rows = self
            .find(Query {
                level: Level::Image,
                conditions: conditions.clone(),
                limit: usize::MAX,
                offset: 0,
                order: Vec::new(),
            })
            .await?;
        let level = if only_series.is_some() {
            Level::Series
        } else {
            Level::Study
        };
        let stored: HashMap<String, StoredInstance> = self
            .retrieve_set(Query {
                level,
                conditions,
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
            let in_study = series.len();
            let Some(s) = series.last_mut() else { continue };
            let file_id =
                file_id(folder, in_study, s.instances.len() + 1).ok_or(ExportError::TooMany)?;
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
        Ok(Some(Part {
            study,
            series,
            files,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_stay_within_eight_characters() {
        assert_eq!(
            file_id(None, 1, 999_999).unwrap(),
            ["DICOM", "SE000001", "IM999999"]
        );
        assert_eq!(
            file_id(Some(12), 1, 2).unwrap(),
            ["DICOM", "ST000012", "SE000001", "IM000002"]
        );
        assert!(file_id(None, 1_000_000, 1).is_none());
        assert!(file_id(None, 1, 1_000_000).is_none());
        assert!(file_id(Some(1_000_000), 1, 1).is_none());
    }
}
