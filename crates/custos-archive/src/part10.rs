//! DICOM Part 10 framing: writing the file meta header in front of a data set
//! received over the network, and finding where the data set starts in a stored file.

use dicom_object::meta::FileMetaTableBuilder;

/// Our implementation identity, written into file meta and association requests.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.137038185893951445375455587632413567281";
pub const IMPLEMENTATION_VERSION_NAME: &str = "CUSTOS_010";

/// What the file meta group of a network-received instance says.
#[derive(Debug, Clone)]
pub struct MetaInfo {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    /// The sending AE (Source Application Entity Title).
    pub source_ae_title: String,
}

/// Preamble, `DICM` and the file meta group for `info`.
pub fn header(info: &MetaInfo) -> Result<Vec<u8>, String> {
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(info.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(info.sop_instance_uid.as_str())
        .transfer_syntax(info.transfer_syntax_uid.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    if !info.source_ae_title.is_empty() {
        builder = builder.source_application_entity_title(info.source_ae_title.as_str());
    }
    let meta = builder.build().map_err(|e| e.to_string())?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Length of the preamble, magic and file meta group at the start of `bytes`,
/// i.e. where the data set begins. `None` if `bytes` is too short to tell or is
/// not a Part 10 file. Walks the group 0002 elements (explicit VR little endian)
/// so that files without a group length element work too.
pub fn dataset_offset(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return None;
    }
    match meta_elements(bytes, 132) {
        Walk::Done { end, .. } => Some(end),
        Walk::NeedMore | Walk::Invalid => None,
    }
}

/// The group 0002 elements from `start`: (element number, value) and where
/// the group ends.
enum Walk<'a> {
    Done {
        elements: Vec<(u16, &'a [u8])>,
        end: usize,
    },
    NeedMore,
    Invalid,
}

fn meta_elements(bytes: &[u8], start: usize) -> Walk<'_> {
    let mut pos = start;
    let mut elements = Vec::new();
    loop {
        let Some(head) = bytes.get(pos..pos + 8) else {
            return Walk::NeedMore;
        };
        let group = u16::from_le_bytes([head[0], head[1]]);
        if group != 0x0002 {
            return Walk::Done { elements, end: pos };
        }
        let element = u16::from_le_bytes([head[2], head[3]]);
        let long = matches!(
            &head[4..6],
            b"OB"
                | b"OW"
                | b"OF"
                | b"SQ"
                | b"UT"
                | b"UN"
                | b"UC"
                | b"UR"
                | b"OD"
                | b"OL"
                | b"OV"
                | b"SV"
                | b"UV"
        );
        let (len, header_len) = if long {
            let Some(l) = bytes.get(pos + 8..pos + 12) else {
                return Walk::NeedMore;
            };
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        } else {
            (u16::from_le_bytes([head[6], head[7]]) as usize, 8)
        };
        if len == u32::MAX as usize || len > MAX_BARE_META {
            return Walk::Invalid; // undefined length has no place in file meta
        }
        let value_at = pos + header_len;
        let Some(value) = bytes.get(value_at..value_at + len) else {
            return Walk::NeedMore;
        };
        elements.push((element, value));
        pos = value_at + len;
    }
}

/// Most bytes a file meta group without preamble may take.
pub const MAX_BARE_META: usize = 64 << 10;

/// What the start of an upload without preamble and `DICM` holds.
#[derive(Debug)]
pub enum BareMeta {
    /// Not enough bytes yet to see the whole file meta group.
    NeedMore,
    /// Not a file meta group (let the ingest refuse it).
    NotMeta,
    /// A complete Part 10 header made from the group's SOP class and
    /// instance and transfer syntax, and how many bytes of the input the
    /// group took (the data set follows them).
    Header { header: Vec<u8>, consumed: usize },
}

/// A data set that starts with its file meta group but without the preamble
/// and `DICM` (what pydicom writes for a data set made in memory, and so what
/// dicomweb-client sends), often without the group length and version that
/// dicom-rs requires: its meta group rewritten as a complete Part 10 header.
pub fn bare_meta(bytes: &[u8]) -> BareMeta {
    if !bytes.starts_with(&[0x02, 0x00]) {
        return BareMeta::NotMeta;
    }
    let (elements, end) = match meta_elements(bytes, 0) {
        Walk::Done { elements, end } => (elements, end),
        Walk::NeedMore if bytes.len() < MAX_BARE_META => return BareMeta::NeedMore,
        Walk::NeedMore | Walk::Invalid => return BareMeta::NotMeta,
    };
    let text = |n: u16| {
        elements
            .iter()
            .find(|(e, _)| *e == n)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(|v| v.trim_end_matches(['\0', ' ']).to_string())
            .filter(|v| !v.is_empty())
    };
    let (Some(sop_class_uid), Some(sop_instance_uid), Some(transfer_syntax_uid)) =
        (text(0x0002), text(0x0003), text(0x0010))
    else {
        return BareMeta::NotMeta;
    };
    let info = MetaInfo {
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax_uid,
        source_ae_title: text(0x0016).unwrap_or_default(),
    };
    match header(&info) {
        Ok(header) => BareMeta::Header {
            header,
            consumed: end,
        },
        Err(_) => BareMeta::NotMeta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let info = MetaInfo {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: "1.2.3.4".into(),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            source_ae_title: "CT01".into(),
        };
        let mut h = header(&info).unwrap();
        let len = h.len();
        h.extend_from_slice(&[0x08, 0x00, 0x16, 0x00]);
        h.extend_from_slice(&[0; 8]);
        assert_eq!(dataset_offset(&h), Some(len));
        let meta = dicom_object::meta::FileMetaTable::from_reader(&h[128..]).unwrap();
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2.1");
        assert_eq!(meta.media_storage_sop_instance_uid(), "1.2.3.4");
        assert_eq!(dataset_offset(b"not dicom"), None);
    }

    #[test]
    fn a_bare_meta_group_becomes_a_part10_header() {
        // pydicom's meta group for an in-memory data set: no group length,
        // no version, no implementation class.
        let mut bare = Vec::new();
        for (e, v) in [
            (0x0002u16, "1.2.840.10008.5.1.4.1.1.88.22\0"),
            (0x0003, "1.2.3.4\0"),
            (0x0010, "1.2.840.10008.1.2.1\0"),
        ] {
            bare.extend_from_slice(&[0x02, 0x00]);
            bare.extend_from_slice(&e.to_le_bytes());
            bare.extend_from_slice(b"UI");
            bare.extend_from_slice(&(v.len() as u16).to_le_bytes());
            bare.extend_from_slice(v.as_bytes());
        }
        let meta_len = bare.len();
        assert!(matches!(bare_meta(&bare), BareMeta::NeedMore));
        bare.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 0, 0]);
        let BareMeta::Header { header, consumed } = bare_meta(&bare) else {
            panic!("not recognised");
        };
        assert_eq!(consumed, meta_len);
        let meta = dicom_object::meta::FileMetaTable::from_reader(&header[128..]).unwrap();
        assert_eq!(meta.media_storage_sop_instance_uid(), "1.2.3.4");
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2.1");
        assert!(matches!(bare_meta(b"\x02\x00garbage"), BareMeta::NeedMore));
        assert!(matches!(bare_meta(b"\x08\x00"), BareMeta::NotMeta));
    }
}
