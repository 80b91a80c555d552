//! Query/retrieve identifiers: from a C-FIND/C-GET/C-MOVE data set to a
//! [`Query`], and from an index row back to a response data set.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_object::InMemDicomObject;

use custos_archive::text::{ascii_only, default_repertoire, element_text};
use custos_core::query::{Key, Level, Matcher, Query, Row};

/// Which information model a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    PatientRoot,
    StudyRoot,
}

/// A parsed identifier: the query, plus the elements the requester asked back.
pub struct Identifier {
    pub query: Query,
    pub requested: Vec<(Tag, VR)>,
}

fn value(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

pub fn parse(obj: &InMemDicomObject, model: Model, limit: usize) -> Result<Identifier, String> {
    let level_text = value(obj, tags::QUERY_RETRIEVE_LEVEL);
    let level = Level::parse(&level_text)
        .ok_or_else(|| format!("unknown Query/Retrieve Level `{}`", level_text.trim()))?;
    if model == Model::StudyRoot && level == Level::Patient {
        return Err("PATIENT level is not part of the Study Root model".into());
    }
    let mut conditions = Vec::new();
    let mut requested = Vec::new();
    for elem in obj.iter() {
        let tag = elem.header().tag;
        if tag == tags::QUERY_RETRIEVE_LEVEL
            || tag == tags::SPECIFIC_CHARACTER_SET
            || tag.group() == 0x0002
        {
            continue;
        }
        requested.push((tag, elem.header().vr));
        if let Some(key) = Key::from_tag(tag.group(), tag.element()) {
            let raw = element_text(elem);
            let m = Matcher::parse(key.kind(), &raw).map_err(|e| format!("{}: {e}", key.name()))?;
            if m != Matcher::Universal {
                conditions.push((key, m));
            }
        }
    }
    Ok(Identifier {
        query: Query {
            level,
            conditions,
            limit,
            offset: 0,
            order: Vec::new(),
        },
        requested,
    })
}

/// A C-FIND response identifier for one row, answering the requested elements.
pub fn response(
    row: &Row,
    level: Level,
    requested: &[(Tag, VR)],
    retrieve_ae: &str,
) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    // Index text is UTF-8; say so whenever it is not plain ASCII.
    if row.values().any(|v| !v.is_ascii()) {
        obj.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
    obj.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(level.name()),
    ));
    for &(tag, vr) in requested {
        if vr == VR::SQ {
            // Sequences are neither kept nor matched: a requested one is
            // answered empty (no items), as a requested key the SCP has no
            // value for (PS3.4 C.2.2.1.2), not left out.
            obj.put(DataElement::new(
                tag,
                VR::SQ,
                dicom_core::value::DataSetSequence::<InMemDicomObject>::empty(),
            ));
            continue;
        }
        let vr = if vr == VR::UN {
            StandardDataDictionary
                .by_tag(tag)
                .map(|e| e.vr().relaxed())
                .unwrap_or(VR::UN)
        } else {
            vr
        };
        let text = if tag == tags::RETRIEVE_AE_TITLE {
            retrieve_ae.to_string()
        } else if tag == tags::INSTANCE_AVAILABILITY {
            // Every stored instance is on line (no near-line tier).
            "ONLINE".to_string()
        } else {
            Key::from_tag(tag.group(), tag.element())
                .and_then(|k| row.get(&k))
                .cloned()
                .unwrap_or_default()
        };
        let value = if text.is_empty() {
            PrimitiveValue::Empty
        } else if default_repertoire(vr) && !text.is_ascii() {
            // A stored value outside the default repertoire (a modality's
            // odd bytes) could not be encoded, and would fail the C-FIND.
            PrimitiveValue::from(ascii_only(&text))
        } else {
            PrimitiveValue::from(text)
        };
        obj.put(DataElement::new(tag, vr, value));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

    #[test]
    fn a_requested_sequence_is_answered_empty_and_availability_on_line() {
        let mut row = Row::new();
        row.insert(Key::Modality, "CT".into());
        let requested = [
            (tags::MODALITY, VR::CS),
            (tags::PROCEDURE_CODE_SEQUENCE, VR::SQ),
            (tags::INSTANCE_AVAILABILITY, VR::CS),
        ];
        let obj = response(&row, Level::Study, &requested, "CUSTOS");
        assert_eq!(
            obj.get(tags::INSTANCE_AVAILABILITY)
                .unwrap()
                .to_str()
                .unwrap(),
            "ONLINE"
        );
        let items = obj
            .get(tags::PROCEDURE_CODE_SEQUENCE)
            .expect("the requested sequence is returned")
            .items()
            .map(<[_]>::len);
        assert_eq!(items, Some(0));
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
    }

    #[test]
    fn a_match_with_text_outside_its_repertoire_still_encodes() {
        // Index text is UTF-8; a code string or date can hold what a peer
        // sent (decoded from ISO 2022, say), which dicom-rs will not write.
        let mut row = Row::new();
        row.insert(Key::PatientName, "\u{5c71}\u{7530}^\u{592a}\u{90ce}".into());
        row.insert(Key::Modality, "\u{5c71}T".into());
        row.insert(Key::StudyDate, "2024\u{5c71}".into());
        let requested = [
            (tags::PATIENT_NAME, VR::PN),
            (tags::MODALITY, VR::CS),
            (tags::STUDY_DATE, VR::DA),
        ];
        let obj = response(&row, Level::Series, &requested, "CUSTOS");
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        assert_eq!(obj.get(tags::MODALITY).unwrap().to_str().unwrap(), "?T");
        assert_eq!(
            obj.get(tags::PATIENT_NAME).unwrap().to_str().unwrap(),
            "\u{5c71}\u{7530}^\u{592a}\u{90ce}"
        );
    }
}
