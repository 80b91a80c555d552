//! Text values of parsed elements, with the gaps of dicom-rs 0.10 filled:
//! values labelled UN by their writer, and ISO 2022 escape sequences
//! (Japanese: ISO 2022 IR 87/13/159), which dicom-rs does not decode when
//! Specific Character Set is multi-valued (e.g. `\ISO 2022 IR 87`).

use dicom_core::VR;
use dicom_object::mem::InMemElement;

/// The text of `tag` in `obj` (`element_text`), empty when absent.
pub fn attribute_text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag).map(element_text).unwrap_or_default()
}

/// The element's value as text, trimmed of DICOM padding.
pub fn element_text(elem: &InMemElement) -> String {
    let value = if elem.vr() == VR::UN {
        elem.to_bytes()
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    } else {
        elem.to_str().ok().map(|s| s.into_owned())
    };
    let value = value.unwrap_or_default();
    let value = if value.contains('\u{1b}') {
        decode_iso2022(&value)
    } else {
        value
    };
    value
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_string()
}

/// Value representations whose text is in the default repertoire whatever
/// Specific Character Set says (PS3.5 6.1.2.3): dicom-rs will not write
/// other characters in them.
pub fn default_repertoire(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE | VR::AS | VR::CS | VR::DA | VR::DS | VR::DT | VR::IS | VR::TM | VR::UI | VR::UR
    )
}

/// `s` with every character outside ASCII replaced by `?`: text that must be
/// in the default repertoire (command sets, the VRs above) but came from a
/// peer's or an admin's bytes that may hold anything.
pub fn ascii_only(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// Whether `s` is a UID as PS3.5 has it (UI): 1 to 64 digits and periods.
pub fn is_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Re-decodes text whose ISO 2022 escape sequences survived as characters.
/// The escapes and the 7-bit bytes between them are all below 0x80, so the
/// original bytes are recoverable from the string.
fn decode_iso2022(s: &str) -> String {
    if !s.is_ascii() {
        return s.to_string();
    }
    let (decoded, _, _) = encoding_rs::ISO_2022_JP.decode(s.as_bytes());
    decoded.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_escapes() {
        let raw = "Yamada^Tarou=\u{1b}$B;3ED\u{1b}(B^\u{1b}$BB@O:\u{1b}(B";
        assert_eq!(decode_iso2022(raw), "Yamada^Tarou=山田^太郎");
    }
}
