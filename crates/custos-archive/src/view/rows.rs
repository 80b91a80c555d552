//! Index rows as DICOM JSON (PS3.18 F.2): the QIDO-RS answer, built from the
//! same rows C-FIND answers from (no stored file is read).

use serde_json::{Map, Value, json};

use custos_core::query::{Key, Level, Row};

/// The VR of an indexed key, as the standard dictionary gives it.
pub fn vr_of(key: Key) -> &'static str {
    use Key::*;
    match key {
        PatientName | ReferringPhysicianName => "PN",
        PatientID | StudyDescription | SeriesDescription => "LO",
        PatientBirthDate | StudyDate | SeriesDate => "DA",
        StudyTime | SeriesTime => "TM",
        PatientSex | ModalitiesInStudy | Modality | BodyPartExamined => "CS",
        AccessionNumber | StudyID => "SH",
        StudyInstanceUID | SeriesInstanceUID | SOPInstanceUID | SOPClassUID => "UI",
        NumberOfPatientRelatedStudies
        | NumberOfPatientRelatedSeries
        | NumberOfPatientRelatedInstances
        | NumberOfStudyRelatedSeries
        | NumberOfStudyRelatedInstances
        | NumberOfSeriesRelatedInstances
        | SeriesNumber
        | InstanceNumber
        | NumberOfFrames => "IS",
    }
}

pub fn tag_hex(group: u16, element: u16) -> String {
    format!("{group:04X}{element:04X}")
}

/// One attribute: `{"vr": .., "Value": [..]}`, without `Value` when empty.
pub fn attribute(vr: &str, text: &str) -> Value {
    let values: Vec<Value> = text
        .split('\\')
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            let v = v.trim_end_matches([' ', '\0']);
            match vr {
                "PN" => person_name(v),
                "IS" => v
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(v.trim())),
                "US" => v
                    .trim()
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or(Value::Null),
                _ => Value::from(v),
            }
        })
        .collect();
    if values.is_empty() {
        json!({ "vr": vr })
    } else {
        json!({ "vr": vr, "Value": values })
    }
}

/// A PN value split into its alphabetic, ideographic and phonetic groups.
fn person_name(v: &str) -> Value {
    let mut m = Map::new();
    for (name, part) in ["Alphabetic", "Ideographic", "Phonetic"]
        .iter()
        .zip(v.split('='))
    {
        if !part.is_empty() {
            m.insert((*name).into(), Value::from(part));
        }
    }
    Value::Object(m)
}

/// Where a study, series or instance can be retrieved (WADO-RS URL).
pub fn retrieve_url(base: &str, row: &Row, level: Level) -> Option<String> {
    let study = row.get(&Key::StudyInstanceUID)?;
    let mut url = format!("{base}/studies/{study}");
    if level >= Level::Series {
        url.push_str(&format!("/series/{}", row.get(&Key::SeriesInstanceUID)?));
    }
    if level >= Level::Image {
        url.push_str(&format!("/instances/{}", row.get(&Key::SOPInstanceUID)?));
    }
    Some(url)
}

/// A QIDO-RS result object for `row`, limited to `include` when given.
pub fn row_object(row: &Row, include: Option<&[Key]>, level: Level, base: &str) -> Value {
    let mut m = Map::new();
    for (key, text) in row {
        if include.is_some_and(|inc| !inc.contains(key)) && !always_returned(*key, level) {
            continue;
        }
        let (g, e) = key.tag();
        m.insert(tag_hex(g, e), attribute(vr_of(*key), text));
    }
    if let Some(url) = retrieve_url(base, row, level) {
        m.insert("00081190".into(), json!({ "vr": "UR", "Value": [url] }));
    }
    // Instance Availability (PS3.18 Tables 10.6.3-3 and -5): every stored
    // instance is on line (no near-line tier).
    if level != Level::Series {
        m.insert(
            "00080056".into(),
            json!({ "vr": "CS", "Value": ["ONLINE"] }),
        );
    }
    Value::Object(m)
}

/// Attributes every QIDO-RS answer carries at `level` (PS3.18 Table 10.6.3-3..5):
/// the identifying UIDs.
fn always_returned(key: Key, level: Level) -> bool {
    match key {
        Key::StudyInstanceUID => true,
        Key::SeriesInstanceUID => level >= Level::Series,
        Key::SOPInstanceUID | Key::SOPClassUID => level == Level::Image,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_per_ps3_18() {
        assert_eq!(
            attribute("PN", "Yamada^Tarou=山田^太郎"),
            json!({"vr":"PN","Value":[{"Alphabetic":"Yamada^Tarou","Ideographic":"山田^太郎"}]})
        );
        assert_eq!(attribute("IS", "12"), json!({"vr":"IS","Value":[12]}));
        assert_eq!(
            attribute("CS", "CT\\MR"),
            json!({"vr":"CS","Value":["CT","MR"]})
        );
        assert_eq!(attribute("LO", ""), json!({"vr":"LO"}));
    }

    #[test]
    fn studies_and_instances_are_on_line() {
        let mut row = Row::new();
        row.insert(Key::StudyInstanceUID, "1.2".into());
        row.insert(Key::SeriesInstanceUID, "1.2.3".into());
        row.insert(Key::SOPInstanceUID, "1.2.3.4".into());
        for (level, shown) in [
            (Level::Study, true),
            (Level::Series, false),
            (Level::Image, true),
        ] {
            let o = row_object(&row, Some(&[]), level, "https://x/dicom-web");
            assert_eq!(
                o.get("00080056") == Some(&json!({"vr": "CS", "Value": ["ONLINE"]})),
                shown,
                "{level:?}: {o}"
            );
        }
    }
}
