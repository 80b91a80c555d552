//! What the index keeps about one stored instance.

/// Attributes of one instance, at all four levels, as indexed.
/// Text is UTF-8 (decoded with the instance's Specific Character Set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceRecord {
    // patient level
    pub patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    // study level
    pub study_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub study_id: String,
    pub study_description: String,
    pub referring_physician_name: String,
    // series level
    pub series_uid: String,
    pub modality: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub body_part_examined: String,
    pub series_date: String,
    pub series_time: String,
    // instance level
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub instance_number: Option<i64>,
    pub number_of_frames: Option<i64>,
    // storage
    pub transfer_syntax_uid: String,
    pub blob_key: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the stored Part 10 file.
    pub sha256: String,
}

impl InstanceRecord {
    /// The record's value of an indexed attribute (None for computed ones).
    pub fn value(&self, key: crate::query::Key) -> Option<String> {
        use crate::query::Key::*;
        let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
        Some(match key {
            PatientName => self.patient_name.clone(),
            PatientID => self.patient_id.clone(),
            PatientBirthDate => self.patient_birth_date.clone(),
            PatientSex => self.patient_sex.clone(),
            StudyInstanceUID => self.study_uid.clone(),
            StudyDate => self.study_date.clone(),
            StudyTime => self.study_time.clone(),
            AccessionNumber => self.accession_number.clone(),
            StudyID => self.study_id.clone(),
            StudyDescription => self.study_description.clone(),
            ReferringPhysicianName => self.referring_physician_name.clone(),
            SeriesInstanceUID => self.series_uid.clone(),
            Modality => self.modality.clone(),
            SeriesNumber => number(self.series_number),
            SeriesDescription => self.series_description.clone(),
            BodyPartExamined => self.body_part_examined.clone(),
            SeriesDate => self.series_date.clone(),
            SeriesTime => self.series_time.clone(),
            SOPInstanceUID => self.sop_instance_uid.clone(),
            SOPClassUID => self.sop_class_uid.clone(),
            InstanceNumber => number(self.instance_number),
            NumberOfFrames => number(self.number_of_frames),
            NumberOfPatientRelatedStudies
            | NumberOfPatientRelatedSeries
            | NumberOfPatientRelatedInstances
            | ModalitiesInStudy
            | NumberOfStudyRelatedSeries
            | NumberOfStudyRelatedInstances
            | NumberOfSeriesRelatedInstances => return None,
        })
    }
}

/// Where and how one stored instance can be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub blob_key: String,
    pub size: u64,
    pub sha256: String,
}

/// One modality worklist item (PS3.4 K.6): the keys modalities match on —
/// patient, accession and the first Scheduled Procedure Step's modality,
/// station AE title, start date and time — and the whole item as DICOM JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorklistRow {
    /// Assigned by the index when the item is added.
    pub id: i64,
    pub patient_id: String,
    pub patient_name: String,
    pub accession_number: String,
    pub modality: String,
    pub station_ae: String,
    /// YYYYMMDD
    pub start_date: String,
    pub start_time: String,
    pub item_json: String,
}

/// One Modality Performed Procedure Step (PS3.4 F): its state, the study and
/// worklist item it belongs to, and its attributes as DICOM JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MppsRow {
    pub sop_instance_uid: String,
    /// IN PROGRESS, COMPLETED or DISCONTINUED.
    pub status: String,
    pub study_uid: String,
    pub accession_number: String,
    /// The worklist item it performs (found by accession number), if any.
    pub worklist_id: Option<i64>,
    pub attributes_json: String,
}
