//! DICOM JSON metadata (PS3.18 F.2) of a stored instance for WADO-RS, with
//! large binary values and Pixel Data replaced by BulkDataURIs, and the value
//! bytes those URIs return.

use dicom_object::DefaultDicomObject;
use serde_json::{Value, json};

use super::{ViewError, internal};

/// Base64 length above which a binary value becomes a BulkDataURI.
const INLINE_LIMIT: usize = 4096;

fn text_of(v: Option<&Value>) -> String {
    v.and_then(|v| v.get("Value"))
        .and_then(|v| v.get(0))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

/// `obj` (read up to Pixel Data) as DICOM JSON.
pub(super) fn to_json(
    obj: DefaultDicomObject,
    bulk_base: &(dyn Fn(&str, &str) -> String + Sync),
) -> Result<Value, ViewError> {
    let stored_as = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let mut value = dicom_json::to_value(obj.into_inner())
        .map_err(|e| internal("encoding metadata")(e.to_string()))?;
    numbers_as_numbers(&mut value);
    if let Some(map) = value.as_object_mut() {
        // Available Transfer Syntax UID (PS3.18 F.2): how the instance is
        // stored, which viewers read to tell video and compressed pixel data
        // (OHIF chooses its video player by it).
        map.entry("00083002")
            .or_insert_with(|| json!({ "vr": "UI", "Value": [stored_as] }));
        let url = bulk_base(&text_of(map.get("0020000D")), &text_of(map.get("0020000E")));
        // Large binary values are not inlined: they are fetched by URI.
        for (tag, attr) in map.iter_mut() {
            let large = attr
                .get("InlineBinary")
                .and_then(|v| v.as_str())
                .is_some_and(|b| b.len() > INLINE_LIMIT);
            if large && let Some(vr) = attr.get("vr").cloned() {
                *attr = json!({ "vr": vr, "BulkDataURI": format!("{url}/{tag}") });
            }
        }
        // Pixel data is not read for metadata; point to where it is.
        if map.contains_key("00280010") {
            map.insert(
                "7FE00010".into(),
                json!({ "vr": "OB", "BulkDataURI": format!("{url}/7FE00010") }),
            );
        }
    }
    Ok(value)
}

/// IS and DS values as JSON numbers (PS3.18 F.2.3), sequences' items too:
/// dicom-json writes them as the text they were read as. One that is no
/// number (a writer's mistake) stays text rather than being lost.
fn numbers_as_numbers(data_set: &mut Value) {
    let Some(map) = data_set.as_object_mut() else {
        return;
    };
    for attr in map.values_mut() {
        let vr = attr.get("vr").and_then(Value::as_str).unwrap_or_default();
        let integer = match vr {
            "IS" => true,
            "DS" => false,
            "SQ" => {
                if let Some(items) = attr.get_mut("Value").and_then(Value::as_array_mut) {
                    items.iter_mut().for_each(numbers_as_numbers);
                }
                continue;
            }
            _ => continue,
        };
        let Some(values) = attr.get_mut("Value").and_then(Value::as_array_mut) else {
            continue;
        };
        for v in values.iter_mut() {
            let Some(text) = v.as_str().map(str::trim) else {
                continue;
            };
            let number = if integer {
                text.parse::<i64>().ok().map(Value::from)
            } else {
                text.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            };
            if let Some(n) = number {
                *v = n;
            }
        }
    }
}

/// The value bytes of a top-level attribute.
pub(super) fn value_bytes(obj: &DefaultDicomObject, tag: (u16, u16)) -> Result<Vec<u8>, ViewError> {
    let elem = obj
        .element(dicom_core::Tag(tag.0, tag.1))
        .map_err(|_| ViewError::NoSuchAttribute)?;
    Ok(elem
        .to_bytes()
        .map_err(|_| ViewError::NotBulk)?
        .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;

    #[test]
    fn is_and_ds_values_are_json_numbers_in_sequences_too() {
        let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        let mut item = InMemDicomObject::new_empty();
        item.put(text(tags::SLICE_THICKNESS, VR::DS, "2.5"));
        let mut obj = InMemDicomObject::new_empty();
        obj.put(text(tags::INSTANCE_NUMBER, VR::IS, "12"));
        obj.put(DataElement::new(
            tags::PIXEL_SPACING,
            VR::DS,
            PrimitiveValue::Strs(["0.5".to_string(), "1.25".to_string()].into()),
        ));
        obj.put(text(tags::WINDOW_CENTER, VR::DS, "not a number"));
        obj.put(DataElement::new(
            tags::REFERENCED_IMAGE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
        let mut value = dicom_json::to_value(obj).unwrap();
        numbers_as_numbers(&mut value);
        assert_eq!(value["00200013"]["Value"], json!([12]));
        assert_eq!(value["00280030"]["Value"], json!([0.5, 1.25]));
        assert_eq!(value["00281050"]["Value"], json!(["not a number"]));
        assert_eq!(
            value["00081140"]["Value"][0]["00180050"]["Value"],
            json!([2.5])
        );
    }
}
