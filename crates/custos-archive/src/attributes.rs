//! Reading the indexed attributes out of a parsed instance.

use crate::text::attribute_text as text;
use dicom_core::Tag;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use custos_core::record::InstanceRecord;

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    let s = text(obj, tag);
    s.split('\\').next().and_then(|v| v.trim().parse().ok())
}

/// The index record of `obj`, or why it cannot be indexed.
pub fn record_of(obj: &InMemDicomObject) -> Result<InstanceRecord, String> {
    let rec = InstanceRecord {
        patient_id: text(obj, tags::PATIENT_ID),
        patient_name: text(obj, tags::PATIENT_NAME),
        patient_birth_date: text(obj, tags::PATIENT_BIRTH_DATE),
        patient_sex: text(obj, tags::PATIENT_SEX),
        study_uid: text(obj, tags::STUDY_INSTANCE_UID),
        study_date: text(obj, tags::STUDY_DATE),
        study_time: text(obj, tags::STUDY_TIME).replace(':', ""),
        accession_number: text(obj, tags::ACCESSION_NUMBER),
        study_id: text(obj, tags::STUDY_ID),
        study_description: text(obj, tags::STUDY_DESCRIPTION),
        referring_physician_name: text(obj, tags::REFERRING_PHYSICIAN_NAME),
        series_uid: text(obj, tags::SERIES_INSTANCE_UID),
        modality: text(obj, tags::MODALITY),
        series_number: int(obj, tags::SERIES_NUMBER),
        series_description: text(obj, tags::SERIES_DESCRIPTION),
        body_part_examined: text(obj, tags::BODY_PART_EXAMINED),
        series_date: text(obj, tags::SERIES_DATE),
        series_time: text(obj, tags::SERIES_TIME).replace(':', ""),
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID),
        sop_class_uid: text(obj, tags::SOP_CLASS_UID),
        instance_number: int(obj, tags::INSTANCE_NUMBER),
        number_of_frames: int(obj, tags::NUMBER_OF_FRAMES),
        ..Default::default()
    };
    for (name, value) in [
        ("SOP Instance UID", &rec.sop_instance_uid),
        ("SOP Class UID", &rec.sop_class_uid),
        ("Study Instance UID", &rec.study_uid),
        ("Series Instance UID", &rec.series_uid),
    ] {
        if value.is_empty() {
            return Err(format!("{name} is missing"));
        }
        if !crate::text::is_uid(value) {
            return Err(format!("{name} is not a valid UID"));
        }
    }
    Ok(rec)
}
