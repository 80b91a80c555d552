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
