//! A DICOMDIR (PS3.10 file-set, PS3.3 F.3 Basic Directory IOD) for studies
//! exported as files: a PATIENT record per patient, a STUDY record per study,
//! a SERIES record per series and one record per instance, linked by byte
//! offsets.
//!
//! dicom-rs encodes the data set; it has no DICOMDIR writer, so the offsets
//! are worked out here: every record is encoded once alone to learn its size
//! (records have a fixed layout, so the offsets written later do not change
//! it), then the file is written with the real offsets. The unit tests read
//! the offsets back from the bytes.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

use crate::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

/// Media Storage Directory Storage.
const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";
/// Item tag, header and delimitation item: 8 bytes each.
const ITEM_HEADER: u32 = 8;
const ITEM_DELIMITER: u32 = 8;

/// The study's patient and study keys.
#[derive(Debug, Clone, Default)]
pub struct DirStudy {
    pub patient_name: String,
    pub patient_id: String,
    pub study_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub study_description: String,
    pub study_id: String,
    pub accession_number: String,
}

/// One series and its instances, in the order they are listed.
#[derive(Debug, Clone, Default)]
pub struct DirSeries {
    pub series_uid: String,
    pub modality: String,
    pub series_number: String,
    pub instances: Vec<DirInstance>,
}

#[derive(Debug, Clone, Default)]
pub struct DirInstance {
    /// Path components of the file inside the file-set (each at most 8 of
    /// `A-Z 0-9 _`, PS3.10 8.2).
    pub file_id: Vec<String>,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub instance_number: String,
}

/// The DICOMDIR file's bytes (preamble, file meta, data set in explicit VR
/// little endian as PS3.10 requires) for `studies`, each with its series:
/// one PATIENT record per patient (ID and name), in the order patients first
/// appear, with their studies below.
pub fn build(studies: &[(DirStudy, Vec<DirSeries>)]) -> Result<Vec<u8>, String> {
    let utf8 = studies.iter().any(|(st, se)| needs_utf8(st, se));
    // Studies grouped by patient, in order of first appearance: by Patient
    // ID (one PATIENT record per ID, named as its first study has it: two
    // records with one ID is what file-set checkers flag), by name when
    // there is no ID.
    let same = |a: &DirStudy, b: &DirStudy| {
        if a.patient_id.is_empty() && b.patient_id.is_empty() {
            a.patient_name == b.patient_name
        } else {
            a.patient_id == b.patient_id
        }
    };
    let mut patients: Vec<(&DirStudy, Vec<usize>)> = Vec::new();
    for (i, (study, _)) in studies.iter().enumerate() {
        match patients.iter_mut().find(|(p, _)| same(p, study)) {
            Some((_, of)) => of.push(i),
            None => patients.push((study, vec![i])),
        }
    }
    // Records in file order (depth first), each with the index of its next
    // sibling and of its first child, to be turned into offsets.
    let mut records: Vec<Record> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    for (first, of) in &patients {
        let p = records.len();
        records.push(Record::new(patient(first, utf8)));
        if let Some(&prev) = roots.last() {
            records[prev].next = Some(p);
        }
        roots.push(p);
        let mut previous_study: Option<usize> = None;
        for &i in of {
            let (study, series) = &studies[i];
            let st = records.len();
            records.push(Record::new(study_record(study, utf8)));
            match previous_study {
                None => records[p].child = Some(st),
                Some(prev) => records[prev].next = Some(st),
            }
            previous_study = Some(st);
            let mut previous_series: Option<usize> = None;
            for s in series {
                let at = records.len();
                records.push(Record::new(series_record(s, utf8)));
                match previous_series {
                    None => records[st].child = Some(at),
                    Some(prev) => records[prev].next = Some(at),
                }
                previous_series = Some(at);
                let mut previous: Option<usize> = None;
                for i in &s.instances {
                    let here = records.len();
                    records.push(Record::new(instance_record(i)?));
                    match previous {
                        None => records[at].child = Some(here),
                        Some(prev) => records[prev].next = Some(here),
                    }
                    previous = Some(here);
                }
            }
        }
    }
    if records.is_empty() {
        return Err("a DICOMDIR needs at least one study".into());
    }

    // Where the first record starts: the file with an empty record sequence
    // is everything before the first item plus the sequence delimiter (the
    // same file meta, so the same UID: its length moves everything after it).
    let instance = custos_core::credentials::random_uid();
    let empty = file(&instance, Vec::new(), (0, 0))?;
    let sequence_delimiter = 8;
    let mut position = empty.len() as u32 - sequence_delimiter;
    let mut offsets = Vec::with_capacity(records.len());
    for r in &records {
        offsets.push(position);
        position += ITEM_HEADER + encoded_len(&r.item)? + ITEM_DELIMITER;
    }
    let items = records
        .into_iter()
        .map(|mut r| {
            let at = |i: Option<usize>| i.map_or(0, |i| offsets[i]);
            r.item
                .put(ul(tags::OFFSET_OF_THE_NEXT_DIRECTORY_RECORD, at(r.next)));
            r.item.put(ul(
                tags::OFFSET_OF_REFERENCED_LOWER_LEVEL_DIRECTORY_ENTITY,
                at(r.child),
            ));
            r.item
        })
        .collect();
    let last_root = roots.last().map_or(0, |&r| offsets[r]);
    let bytes = file(&instance, items, (offsets[0], last_root))?;
    if bytes.len() as u32 != position + sequence_delimiter {
        return Err("DICOMDIR records encoded to an unexpected length".into());
    }
    Ok(bytes)
}

struct Record {
    item: InMemDicomObject,
    next: Option<usize>,
    child: Option<usize>,
}

impl Record {
    fn new(mut item: InMemDicomObject) -> Record {
        // Placeholders of the final size; replaced once offsets are known.
        item.put(ul(tags::OFFSET_OF_THE_NEXT_DIRECTORY_RECORD, 0));
        item.put(ul(
            tags::OFFSET_OF_REFERENCED_LOWER_LEVEL_DIRECTORY_ENTITY,
            0,
        ));
        item.put(DataElement::new(
            tags::RECORD_IN_USE_FLAG,
            VR::US,
            PrimitiveValue::from(0xFFFFu16),
        ));
        Record {
            item,
            next: None,
            child: None,
        }
    }
}

fn ul(tag: Tag, v: u32) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UL, PrimitiveValue::from(v))
}

fn text(o: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

fn needs_utf8(study: &DirStudy, series: &[DirSeries]) -> bool {
    let fields = [
        &study.patient_name,
        &study.patient_id,
        &study.study_description,
        &study.study_id,
        &study.accession_number,
    ];
    fields.iter().any(|f| !f.is_ascii()) || series.iter().any(|s| !s.modality.is_ascii())
}

fn record(kind: &str, utf8: bool) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    text(&mut o, tags::DIRECTORY_RECORD_TYPE, VR::CS, kind);
    if utf8 {
        text(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    }
    o
}

fn patient(s: &DirStudy, utf8: bool) -> InMemDicomObject {
    let mut o = record("PATIENT", utf8);
    text(&mut o, tags::PATIENT_NAME, VR::PN, &s.patient_name);
    text(&mut o, tags::PATIENT_ID, VR::LO, &s.patient_id);
    o
}

fn study_record(s: &DirStudy, utf8: bool) -> InMemDicomObject {
    let mut o = record("STUDY", utf8);
    text(&mut o, tags::STUDY_DATE, VR::DA, &s.study_date);
    text(&mut o, tags::STUDY_TIME, VR::TM, &s.study_time);
    text(&mut o, tags::ACCESSION_NUMBER, VR::SH, &s.accession_number);
    text(
        &mut o,
        tags::STUDY_DESCRIPTION,
        VR::LO,
        &s.study_description,
    );
    text(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &s.study_uid);
    text(&mut o, tags::STUDY_ID, VR::SH, &s.study_id);
    o
}

fn series_record(s: &DirSeries, utf8: bool) -> InMemDicomObject {
    let mut o = record("SERIES", utf8);
    text(&mut o, tags::MODALITY, VR::CS, &s.modality);
    text(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &s.series_uid);
    text(&mut o, tags::SERIES_NUMBER, VR::IS, &s.series_number);
    o
}

fn instance_record(i: &DirInstance) -> Result<InMemDicomObject, String> {
    let valid = |c: &String| {
        !c.is_empty()
            && c.len() <= 8
            && c.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if i.file_id.is_empty() || i.file_id.len() > 8 || !i.file_id.iter().all(valid) {
        return Err(format!("invalid file ID {:?}", i.file_id));
    }
    let mut o = record(record_type(&i.sop_class_uid), false);
    o.put(DataElement::new(
        tags::REFERENCED_FILE_ID,
        VR::CS,
        PrimitiveValue::Strs(i.file_id.iter().cloned().collect()),
    ));
    text(
        &mut o,
        tags::REFERENCED_SOP_CLASS_UID_IN_FILE,
        VR::UI,
        &i.sop_class_uid,
    );
    text(
        &mut o,
        tags::REFERENCED_SOP_INSTANCE_UID_IN_FILE,
        VR::UI,
        &i.sop_instance_uid,
    );
    text(
        &mut o,
        tags::REFERENCED_TRANSFER_SYNTAX_UID_IN_FILE,
        VR::UI,
        &i.transfer_syntax_uid,
    );
    text(&mut o, tags::INSTANCE_NUMBER, VR::IS, &i.instance_number);
    Ok(o)
}

/// Whether a SOP class is an image's as far as DICOMDIR records tell (not a
/// report, key object selection, presentation state, segmentation,
/// encapsulated document or RT object): what a thumbnail shows.
pub fn is_image(sop_class: &str) -> bool {
    let sop_class = sop_class.trim_end_matches('\0');
    const STORAGE: &str = "1.2.840.10008.5.1.4.1.1";
    // Waveforms, raw data, registrations, surfaces, value maps and RT
    // objects other than RT Image: no pixels to show either.
    let other = ["9", "66", "67", "68", "481"].iter().any(|family| {
        sop_class
            .strip_prefix(STORAGE)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_prefix(family))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    }) && sop_class != format!("{STORAGE}.481.1");
    !other && record_type(sop_class) == "IMAGE"
}

/// The directory record type for a SOP class (PS3.3 F.5); images and
/// anything not listed are IMAGE records.
fn record_type(sop_class: &str) -> &'static str {
    let under = |prefix: &str| {
        sop_class
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    const STORAGE: &str = "1.2.840.10008.5.1.4.1.1";
    if sop_class == format!("{STORAGE}.88.59") {
        "KEY OBJECT DOC"
    } else if under(&format!("{STORAGE}.88")) {
        "SR DOCUMENT"
    } else if under(&format!("{STORAGE}.11")) {
        "PRESENTATION"
    } else if sop_class == format!("{STORAGE}.66.4") {
        "SEGMENTATION"
    } else if under(&format!("{STORAGE}.104")) {
        "ENCAP DOC"
    } else if sop_class == format!("{STORAGE}.481.2") {
        "RT DOSE"
    } else if sop_class == format!("{STORAGE}.481.3") {
        "RT STRUCTURE SET"
    } else if sop_class == format!("{STORAGE}.481.5") {
        "RT PLAN"
    } else {
        "IMAGE"
    }
}

/// Bytes of one record's content (without its item header and delimiter).
fn encoded_len(item: &InMemDicomObject) -> Result<u32, String> {
    let mut out = Vec::new();
    item.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| e.to_string())?;
    Ok(out.len() as u32)
}

/// The file around `items`; `roots`: the offsets of the first and the last
/// PATIENT record.
fn file(
    instance: &str,
    items: Vec<InMemDicomObject>,
    (first, last): (u32, u32),
) -> Result<Vec<u8>, String> {
    let mut o = InMemDicomObject::new_empty();
    text(&mut o, tags::FILE_SET_ID, VR::CS, "CUSTOS");
    o.put(ul(
        tags::OFFSET_OF_THE_FIRST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY,
        first,
    ));
    o.put(ul(
        tags::OFFSET_OF_THE_LAST_DIRECTORY_RECORD_OF_THE_ROOT_DIRECTORY_ENTITY,
        last,
    ));
    o.put(DataElement::new(
        tags::FILE_SET_CONSISTENCY_FLAG,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    o.put(DataElement::new(
        tags::DIRECTORY_RECORD_SEQUENCE,
        VR::SQ,
        DataSetSequence::new(items, Length::UNDEFINED),
    ));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(MEDIA_STORAGE_DIRECTORY)
        .media_storage_sop_instance_uid(instance)
        .transfer_syntax(EXPLICIT_VR_LITTLE_ENDIAN.uid())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let mut out = Vec::new();
    o.with_meta(meta)
        .map_err(|e| e.to_string())?
        .write_all(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// The record type and the two offsets of the record at `at`: the item
    /// tag there, then the record's first elements in tag order
    /// ((0004,1400) UL, (0004,1410) US, (0004,1420) UL, (0004,1430) CS).
    fn record_at(b: &[u8], at: u32) -> (String, u32, u32) {
        let at = at as usize;
        assert_eq!(
            &b[at..at + 4],
            &[0xFE, 0xFF, 0x00, 0xE0],
            "an item starts at {at}"
        );
        let next = le32(b, at + 8 + 8);
        let child = le32(b, at + 8 + 12 + 10 + 8);
        let kind_at = at + 8 + 12 + 10 + 12;
        assert_eq!(
            &b[kind_at..kind_at + 6],
            &[0x04, 0x00, 0x30, 0x14, b'C', b'S']
        );
        let len = u16::from_le_bytes([b[kind_at + 6], b[kind_at + 7]]) as usize;
        let kind = String::from_utf8_lossy(&b[kind_at + 8..kind_at + 8 + len]);
        (kind.trim_end().to_string(), next, child)
    }

    fn instance(n: usize, class: &str) -> DirInstance {
        DirInstance {
            file_id: vec!["DICOM".into(), format!("IM{n:06}")],
            sop_class_uid: class.into(),
            sop_instance_uid: format!("1.2.3.{n}"),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            instance_number: n.to_string(),
        }
    }

    #[test]
    fn offsets_link_patient_study_series_and_instances() {
        let study = DirStudy {
            patient_name: "Müller^Jürgen".into(),
            patient_id: "P1".into(),
            study_uid: "1.2.3".into(),
            study_date: "20260101".into(),
            ..Default::default()
        };
        let ct = "1.2.840.10008.5.1.4.1.1.2";
        let series = vec![
            DirSeries {
                series_uid: "1.2.3.1".into(),
                modality: "CT".into(),
                series_number: "1".into(),
                instances: (1..=3).map(|n| instance(n, ct)).collect(),
            },
            DirSeries {
                series_uid: "1.2.3.2".into(),
                modality: "SR".into(),
                series_number: "2".into(),
                instances: vec![instance(4, "1.2.840.10008.5.1.4.1.1.88.22")],
            },
        ];
        let b = build(&[(study, series)]).unwrap();
        assert_eq!(&b[128..132], b"DICM");
        // The root: (0004,1200) holds the first record's offset.
        let root = b
            .windows(4)
            .position(|w| w == [0x04, 0x00, 0x00, 0x12])
            .unwrap();
        let first = le32(&b, root + 8);
        let (kind, next, study_at) = record_at(&b, first);
        assert_eq!((kind.as_str(), next), ("PATIENT", 0));
        let (kind, next, series_at) = record_at(&b, study_at);
        assert_eq!((kind.as_str(), next), ("STUDY", 0));
        let (kind, second_series, image_at) = record_at(&b, series_at);
        assert_eq!(kind, "SERIES");
        let mut walked = Vec::new();
        let mut at = image_at;
        while at != 0 {
            let (kind, next, child) = record_at(&b, at);
            assert_eq!(child, 0);
            walked.push(kind);
            at = next;
        }
        assert_eq!(walked, ["IMAGE", "IMAGE", "IMAGE"]);
        let (kind, last, sr_at) = record_at(&b, second_series);
        assert_eq!((kind.as_str(), last), ("SERIES", 0));
        assert_eq!(record_at(&b, sr_at).0, "SR DOCUMENT");
        // UTF-8 names are declared.
        assert!(b.windows(10).any(|w| w == b"ISO_IR 192"));
    }

    #[test]
    fn studies_of_two_patients_hang_below_their_patient() {
        let study = |patient: &str, uid: &str| DirStudy {
            patient_name: format!("{patient}^Test"),
            patient_id: patient.into(),
            study_uid: uid.into(),
            ..Default::default()
        };
        let one = |n: usize| {
            vec![DirSeries {
                series_uid: format!("1.2.9.{n}"),
                instances: vec![instance(n, "1.2.840.10008.5.1.4.1.1.2")],
                ..Default::default()
            }]
        };
        // The third study's name spelled otherwise: the same patient (ID).
        let mut respelled = study("A", "1.2.3");
        respelled.patient_name = "A^Tester".into();
        let b = build(&[
            (study("A", "1.2.1"), one(1)),
            (study("B", "1.2.2"), one(2)),
            (respelled, one(3)),
        ])
        .unwrap();
        let root = |tag: [u8; 4]| {
            let at = b.windows(4).position(|w| w == tag).unwrap();
            le32(&b, at + 8)
        };
        let (first, last) = (
            root([0x04, 0x00, 0x00, 0x12]),
            root([0x04, 0x00, 0x02, 0x12]),
        );
        let (kind, second, a_studies) = record_at(&b, first);
        assert_eq!((kind.as_str(), second), ("PATIENT", last));
        let (kind, none, b_studies) = record_at(&b, last);
        assert_eq!((kind.as_str(), none), ("PATIENT", 0));
        // A: two studies, each with its series and image; B: one.
        let studies = |mut at: u32| {
            let mut n = 0;
            while at != 0 {
                let (kind, next, series) = record_at(&b, at);
                assert_eq!(kind, "STUDY");
                let (kind, _, image) = record_at(&b, series);
                assert_eq!(kind, "SERIES");
                assert_eq!(record_at(&b, image).0, "IMAGE");
                n += 1;
                at = next;
            }
            n
        };
        assert_eq!((studies(a_studies), studies(b_studies)), (2, 1));
    }

    /// Every build gets a new random UID of varying length; the offsets
    /// must not depend on it (they once did: one build in a few failed).
    #[test]
    fn offsets_hold_whatever_the_file_uid() {
        let series = vec![DirSeries {
            instances: vec![instance(1, "1.2.840.10008.5.1.4.1.1.2")],
            ..Default::default()
        }];
        for _ in 0..300 {
            let b = build(&[(DirStudy::default(), series.clone())]).unwrap();
            let root = b
                .windows(4)
                .position(|w| w == [0x04, 0x00, 0x00, 0x12])
                .unwrap();
            assert_eq!(record_at(&b, le32(&b, root + 8)).0, "PATIENT");
        }
    }

    #[test]
    fn file_ids_outside_part10_rules_are_refused() {
        let mut i = instance(1, "1.2.840.10008.5.1.4.1.1.2");
        i.file_id = vec!["dicom".into()];
        let s = DirSeries {
            instances: vec![i],
            ..Default::default()
        };
        assert!(build(&[(DirStudy::default(), vec![s])]).is_err());
        assert!(build(&[]).is_err());
    }

    #[test]
    fn record_types_follow_the_sop_class() {
        assert_eq!(record_type("1.2.840.10008.5.1.4.1.1.2"), "IMAGE");
        assert_eq!(
            record_type("1.2.840.10008.5.1.4.1.1.88.59"),
            "KEY OBJECT DOC"
        );
        assert_eq!(record_type("1.2.840.10008.5.1.4.1.1.88.33"), "SR DOCUMENT");
        assert_eq!(record_type("1.2.840.10008.5.1.4.1.1.11.1"), "PRESENTATION");
        assert_eq!(record_type("1.2.840.10008.5.1.4.1.1.66.4"), "SEGMENTATION");
        assert_eq!(record_type("1.2.840.10008.5.1.4.1.1.104.1"), "ENCAP DOC");
        assert_eq!(record_type("1.2.840.10008.5.1.4.1.1.1"), "IMAGE");
        assert_eq!(record_type("1.2.840.10008.5.1.4.1.1.12.1"), "IMAGE");
    }

    #[test]
    fn thumbnails_are_taken_from_images_only() {
        for image in [
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.840.10008.5.1.4.1.1.481.1\0",
        ] {
            assert!(is_image(image), "{image}");
        }
        for other in [
            "1.2.840.10008.5.1.4.1.1.88.59",
            "1.2.840.10008.5.1.4.1.1.9.1.1",
            "1.2.840.10008.5.1.4.1.1.66",
            "1.2.840.10008.5.1.4.1.1.66.1",
            "1.2.840.10008.5.1.4.1.1.481.2",
            "1.2.840.10008.5.1.4.1.1.104.1",
        ] {
            assert!(!is_image(other), "{other}");
        }
    }
}
