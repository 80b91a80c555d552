//! The modality worklist (PS3.4 K): items a RIS schedules through the admin
//! API as DICOM JSON (PS3.18 F.2), answered to modalities' C-FIND. The index
//! keeps each item whole with the keys modalities match on; the start-date
//! range narrows the rows in SQL, the other keys (patient name and ID,
//! accession, modality, station) are matched here with C-FIND's semantics
//! (`*`/`?` wildcards, names case-insensitive, date and time ranges).

use crate::text::attribute_text as text;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use custos_core::query::{KeyKind, Matcher, fold_case, fold_name, wildcard};
use custos_core::record::WorklistRow;
use custos_index::IndexError;

use crate::Archive;
use crate::text::element_text;

#[derive(Debug, thiserror::Error)]
pub enum WorklistError {
    /// The item or query is not what PS3.4 K.6 asks for.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Items read from the index at a time for one query, before the other
/// keys filter (every item in the date range is looked at, page by page).
const SCAN_PAGE: usize = 1000;

/// The first Scheduled Procedure Step item, if any.
fn first_step(obj: &InMemDicomObject) -> Option<&InMemDicomObject> {
    obj.get(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
}

/// Parses an item as the admin API receives it and extracts its keys.
fn row_of(json: &[u8]) -> Result<WorklistRow, WorklistError> {
    let obj: InMemDicomObject = dicom_json::from_slice(json)
        .map_err(|e| WorklistError::Invalid(format!("not a DICOM JSON object: {e}")))?;
    let step = first_step(&obj).ok_or_else(|| {
        WorklistError::Invalid(
            "ScheduledProcedureStepSequence (0040,0100) with one item is required".into(),
        )
    })?;
    let row = WorklistRow {
        id: 0,
        patient_id: text(&obj, tags::PATIENT_ID),
        patient_name: text(&obj, tags::PATIENT_NAME),
        accession_number: text(&obj, tags::ACCESSION_NUMBER),
        modality: text(step, tags::MODALITY),
        station_ae: text(step, tags::SCHEDULED_STATION_AE_TITLE),
        start_date: text(step, tags::SCHEDULED_PROCEDURE_STEP_START_DATE),
        start_time: text(step, tags::SCHEDULED_PROCEDURE_STEP_START_TIME),
        item_json: String::from_utf8_lossy(json).into_owned(),
    };
    if row.patient_id.is_empty() {
        return Err(WorklistError::Invalid(
            "PatientID (0010,0020) is required".into(),
        ));
    }
    if row.modality.is_empty() {
        return Err(WorklistError::Invalid(
            "the scheduled step's Modality (0008,0060) is required".into(),
        ));
    }
    if row.start_date.len() != 8 || !row.start_date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WorklistError::Invalid(
            "the scheduled step's ScheduledProcedureStepStartDate (0040,0002) must be YYYYMMDD"
                .into(),
        ));
    }
    Ok(row)
}

/// The item stored as DICOM JSON, as a data set.
fn item_of(row: &WorklistRow) -> Result<InMemDicomObject, IndexError> {
    dicom_json::from_str(&row.item_json)
        .map_err(|e| IndexError::Corrupt(format!("worklist item {}: {e}", row.id)))
}

/// One key of a worklist query: where its value is in a stored row, and
/// how it matches.
struct Condition {
    matcher: Matcher,
    fold: bool,
    value: fn(&WorklistRow) -> &str,
}

impl Condition {
    fn holds(&self, row: &WorklistRow) -> bool {
        let value = (self.value)(row);
        match &self.matcher {
            Matcher::Universal => true,
            Matcher::Single(v) if self.fold => fold_name(value) == fold_name(v),
            Matcher::Single(v) => value == v,
            Matcher::List(vs) => vs.iter().any(|v| v == value),
            Matcher::Wildcard(p) if self.fold => wildcard(&fold_case(p), &fold_case(value)),
            Matcher::Wildcard(p) => wildcard(p, value),
            Matcher::Range { from, to } => {
                from.as_deref().is_none_or(|f| value >= f)
                    && to.as_deref().is_none_or(|t| value <= t)
            }
        }
    }
}

/// A key modalities match on: at the identifier's top level or in its
/// Scheduled Procedure Step item, how it matches, and its stored column.
struct MatchKey {
    in_step: bool,
    tag: Tag,
    kind: KeyKind,
    /// Case-insensitive (person names).
    fold: bool,
    value: fn(&WorklistRow) -> &str,
}

const MATCH_KEYS: [MatchKey; 7] = [
    MatchKey {
        in_step: false,
        tag: tags::PATIENT_ID,
        kind: KeyKind::Text,
        fold: false,
        value: |r| &r.patient_id,
    },
    MatchKey {
        in_step: false,
        tag: tags::PATIENT_NAME,
        kind: KeyKind::PersonName,
        fold: true,
        value: |r| &r.patient_name,
    },
    MatchKey {
        in_step: false,
        tag: tags::ACCESSION_NUMBER,
        kind: KeyKind::Text,
        fold: false,
        value: |r| &r.accession_number,
    },
    MatchKey {
        in_step: true,
        tag: tags::MODALITY,
        kind: KeyKind::Text,
        fold: false,
        value: |r| &r.modality,
    },
    MatchKey {
        in_step: true,
        tag: tags::SCHEDULED_STATION_AE_TITLE,
        kind: KeyKind::Text,
        fold: false,
        value: |r| &r.station_ae,
    },
    MatchKey {
        in_step: true,
        tag: tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
        kind: KeyKind::Date,
        fold: false,
        value: |r| &r.start_date,
    },
    MatchKey {
        in_step: true,
        tag: tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
        kind: KeyKind::Time,
        fold: false,
        value: |r| &r.start_time,
    },
];

/// The query's conditions, from the identifier's top level and its first
/// Scheduled Procedure Step item.
fn conditions(ident: &InMemDicomObject) -> Result<Vec<Condition>, WorklistError> {
    let step = first_step(ident);
    let mut out = Vec::new();
    for key in &MATCH_KEYS {
        let obj = if key.in_step { step } else { Some(ident) };
        let Some(raw) = obj.and_then(|o| o.get(key.tag)).map(element_text) else {
            continue;
        };
        let matcher =
            Matcher::parse(key.kind, &raw).map_err(|e| WorklistError::Invalid(e.to_string()))?;
        out.push(Condition {
            matcher,
            fold: key.fold,
            value: key.value,
        });
    }
    Ok(out)
}

/// What the C-FIND response carries for one item: every attribute the
/// identifier asked for (sequence items' attributes too), with the item's
/// value or empty; Specific Character Set (UTF-8) only when some value
/// needs it (PS3.4 C.4.1.1.3.2: modalities that know only the default
/// repertoire).
fn response(ident: &InMemDicomObject, item: &InMemDicomObject) -> InMemDicomObject {
    let mut out = in_default_repertoire(answer(ident, item));
    if !all_ascii(&out) {
        out.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
    out
}

/// `obj` with the values of VRs kept to the default repertoire (an AE
/// title, a code, a date) made ASCII, sequences' items included: an item
/// entered with other characters there could not be encoded, and would fail
/// every worklist query it matches.
fn in_default_repertoire(obj: InMemDicomObject) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    for e in obj {
        let (tag, vr) = (e.header().tag, e.header().vr);
        let e = match (e.items(), e.to_str()) {
            (Some(items), _) => {
                let items: Vec<InMemDicomObject> =
                    items.iter().cloned().map(in_default_repertoire).collect();
                DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
            }
            (None, Ok(text)) if crate::text::default_repertoire(vr) && !text.is_ascii() => {
                DataElement::new(
                    tag,
                    vr,
                    PrimitiveValue::from(crate::text::ascii_only(&text)),
                )
            }
            _ => e,
        };
        out.put(e);
    }
    out
}

/// Whether every text value of `obj`, its sequences' items included, is ASCII.
fn all_ascii(obj: &InMemDicomObject) -> bool {
    obj.iter().all(|e| match e.items() {
        Some(items) => items.iter().all(all_ascii),
        None => e.to_str().map_or(true, |s| s.is_ascii()),
    })
}

fn answer(ident: &InMemDicomObject, item: &InMemDicomObject) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    for e in ident.iter() {
        let tag = e.header().tag;
        if tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        let elem = match (e.items(), item.get(tag)) {
            (Some(wanted), Some(have)) => {
                let items: Vec<InMemDicomObject> = match (wanted.first(), have.items()) {
                    (Some(w), Some(have)) => have.iter().map(|h| answer(w, h)).collect(),
                    (None, Some(have)) => have.to_vec(),
                    _ => Vec::new(),
                };
                DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
            }
            (Some(_), None) => DataElement::new(
                tag,
                VR::SQ,
                DataSetSequence::from(Vec::<InMemDicomObject>::new()),
            ),
            (None, Some(have)) => have.clone(),
            (None, None) => DataElement::new(tag, e.header().vr, PrimitiveValue::Empty),
        };
        out.put(elem);
    }
    out
}

impl Archive {
    /// Adds an item given as DICOM JSON; returns its id.
    pub async fn add_worklist_item(&self, json: &[u8]) -> Result<i64, WorklistError> {
        let row = row_of(json)?;
        Ok(self.index.add_worklist_item(row).await?)
    }

    /// Replaces item `id`; `false` if there is none.
    pub async fn replace_worklist_item(&self, id: i64, json: &[u8]) -> Result<bool, WorklistError> {
        let row = WorklistRow {
            id,
            ..row_of(json)?
        };
        Ok(self.index.replace_worklist_item(row).await?)
    }

    /// Item `id` as DICOM JSON.
    pub async fn worklist_item(&self, id: i64) -> Result<Option<serde_json::Value>, IndexError> {
        let Some(row) = self.index.worklist_item(id).await? else {
            return Ok(None);
        };
        serde_json::from_str(&row.item_json)
            .map(Some)
            .map_err(|e| IndexError::Corrupt(format!("worklist item {id}: {e}")))
    }

    /// Sets the Scheduled Procedure Step Status of item `id` (its first
    /// step), as the performed step reports progress; `false` if the item
    /// is gone.
    pub async fn set_worklist_status(&self, id: i64, status: &str) -> Result<bool, WorklistError> {
        let Some(mut item) = self.worklist_item(id).await? else {
            return Ok(false);
        };
        let Some(step) = item
            .get_mut("00400100")
            .and_then(|sq| sq.get_mut("Value"))
            .and_then(|v| v.get_mut(0))
            .and_then(|s| s.as_object_mut())
        else {
            return Ok(false);
        };
        step.insert(
            "00400020".into(),
            serde_json::json!({ "vr": "CS", "Value": [status] }),
        );
        let json = serde_json::to_vec(&item)
            .map_err(|e| WorklistError::Invalid(format!("worklist item {id}: {e}")))?;
        self.replace_worklist_item(id, &json).await
    }

    pub async fn remove_worklist_item(&self, id: i64) -> Result<bool, IndexError> {
        self.index.remove_worklist_item(id).await
    }

    /// Items scheduled within `from..=to` (YYYYMMDD, either open), with ids.
    pub async fn worklist_items(
        &self,
        from: Option<String>,
        to: Option<String>,
        limit: usize,
    ) -> Result<Vec<(i64, serde_json::Value)>, IndexError> {
        let rows = self.index.worklist_items(from, to, limit, 0).await?;
        rows.into_iter()
            .map(|r| {
                serde_json::from_str(&r.item_json)
                    .map(|v| (r.id, v))
                    .map_err(|e| IndexError::Corrupt(format!("worklist item {}: {e}", r.id)))
            })
            .collect()
    }

    /// A modality's worklist C-FIND: the responses for the items matching
    /// `ident`, at most `limit`.
    pub async fn worklist_find(
        &self,
        ident: &InMemDicomObject,
        limit: usize,
    ) -> Result<Vec<InMemDicomObject>, WorklistError> {
        let conditions = conditions(ident)?;
        let (from, to) = match first_step(ident)
            .and_then(|s| s.get(tags::SCHEDULED_PROCEDURE_STEP_START_DATE))
            .map(element_text)
            .map(|raw| Matcher::parse(KeyKind::Date, &raw))
        {
            Some(Ok(Matcher::Single(d))) => (Some(d.clone()), Some(d)),
            Some(Ok(Matcher::Range { from, to })) => (from, to),
            _ => (None, None),
        };
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let rows = self
                .index
                .worklist_items(from.clone(), to.clone(), SCAN_PAGE, offset)
                .await?;
            for row in rows
                .iter()
                .filter(|r| conditions.iter().all(|c| c.holds(r)))
            {
                if out.len() >= limit {
                    return Ok(out);
                }
                let item = item_of(row)?;
                if status_matches(ident, &item) {
                    out.push(response(ident, &item));
                }
            }
            if rows.len() < SCAN_PAGE {
                return Ok(out);
            }
            offset += SCAN_PAGE;
        }
    }
}

/// Steps that are over: not on a modality's worklist unless it asks for them.
const DONE: [&str; 3] = ["COMPLETED", "DISCONTINUED", "CANCELED"];

/// The query's Scheduled Procedure Step Status if it names one (values
/// separated by backslashes), else every status but the finished ones.
fn status_matches(ident: &InMemDicomObject, item: &InMemDicomObject) -> bool {
    let of = |o: &InMemDicomObject| {
        first_step(o)
            .and_then(|s| s.get(tags::SCHEDULED_PROCEDURE_STEP_STATUS))
            .map(element_text)
            .unwrap_or_default()
            .trim()
            .to_ascii_uppercase()
    };
    let (wanted, status) = (of(ident), of(item));
    if wanted.is_empty() {
        !DONE.contains(&status.as_str())
    } else {
        wanted.split('\\').any(|w| w.trim() == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEM: &str = r#"{
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00100020": {"vr": "LO", "Value": ["MWL1"]},
        "00080050": {"vr": "SH", "Value": ["ACC1"]},
        "00400100": {"vr": "SQ", "Value": [{
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00400001": {"vr": "AE", "Value": ["CT01"]},
            "00400002": {"vr": "DA", "Value": ["20261204"]},
            "00400003": {"vr": "TM", "Value": ["0930"]}
        }]}
    }"#;

    #[test]
    fn items_need_patient_modality_and_date() {
        let row = row_of(ITEM.as_bytes()).unwrap();
        assert_eq!(
            (
                row.patient_id.as_str(),
                row.modality.as_str(),
                row.start_date.as_str()
            ),
            ("MWL1", "CT", "20261204")
        );
        assert_eq!(row.patient_name, "Doe^Jane");
        assert!(row_of(br#"{"00100020": {"vr": "LO", "Value": ["X"]}}"#).is_err());
        assert!(row_of(&ITEM.replace("20261204", "4.12.2026").into_bytes()).is_err());
        assert!(row_of(b"not json").is_err());
    }

    #[test]
    fn conditions_match_like_c_find() {
        let row = row_of(ITEM.as_bytes()).unwrap();
        let query = |json: &str| {
            let q: InMemDicomObject = dicom_json::from_str(json).unwrap();
            conditions(&q).unwrap().iter().all(|c| c.holds(&row))
        };
        let step =
            |inner: &str| format!(r#"{{"00400100": {{"vr": "SQ", "Value": [{{{inner}}}]}}}}"#);
        assert!(query(
            r#"{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "doe*"}]}}"#
        ));
        assert!(!query(
            r#"{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "SMITH*"}]}}"#
        ));
        assert!(query(&step(r#""00080060": {"vr": "CS", "Value": ["CT"]}"#)));
        assert!(!query(&step(
            r#""00080060": {"vr": "CS", "Value": ["MR"]}"#
        )));
        assert!(query(&step(
            r#""00400002": {"vr": "DA", "Value": ["20261201-20261231"]}"#
        )));
        assert!(!query(&step(
            r#""00400002": {"vr": "DA", "Value": ["20270101-"]}"#
        )));
        assert!(query(&step(
            r#""00400001": {"vr": "AE", "Value": ["CT01"]}"#
        )));
        assert!(!query(&step(
            r#""00400001": {"vr": "AE", "Value": ["MR01"]}"#
        )));
    }

    #[test]
    fn utf8_is_declared_only_when_an_answer_needs_it() {
        let ident: InMemDicomObject = dicom_json::from_str(
            r#"{"00100010": {"vr": "PN"}, "00400100": {"vr": "SQ", "Value": [{"00400001": {"vr": "AE"}}]}}"#,
        )
        .unwrap();
        let charset = |item: &str| {
            let item: InMemDicomObject = dicom_json::from_str(item).unwrap();
            let out = response(&ident, &item);
            let step = out
                .get(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()[0]
                .get(tags::SPECIFIC_CHARACTER_SET)
                .is_some();
            assert!(!step, "never inside a sequence's item");
            out.get(tags::SPECIFIC_CHARACTER_SET)
                .map(|e| e.to_str().unwrap().to_string())
        };
        // Modalities that know only the default repertoire get ASCII items
        // without a character set they may not handle.
        assert_eq!(charset(ITEM), None);
        assert_eq!(
            charset(&ITEM.replace("Doe^Jane", "M\u{fc}ller^J\u{fc}rgen")),
            Some("ISO_IR 192".to_string())
        );
        // A station AE title outside the default repertoire: '?' there, so
        // the answer can be encoded (it failed the whole C-FIND).
        let item: InMemDicomObject =
            dicom_json::from_str(&ITEM.replace("CT01", "CT\u{2013}1")).unwrap();
        let out = response(&ident, &item);
        let step = &out
            .get(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            step.get(tags::SCHEDULED_STATION_AE_TITLE)
                .unwrap()
                .to_str()
                .unwrap(),
            "CT?1"
        );
        let mut bytes = Vec::new();
        out.write_dataset_with_ts(
            &mut bytes,
            &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
    }
}
