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
    let mut pos = 132;
    loop {
        if bytes.len() < pos + 8 {
            return None;
        }
        let group = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        if group != 0x0002 {
            return Some(pos);
        }
        let vr = &bytes[pos + 4..pos + 6];
        let long = matches!(
            vr,
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
        let (len, head) = if long {
            if bytes.len() < pos + 12 {
                return None;
            }
            (
                u32::from_le_bytes([
                    bytes[pos + 8],
                    bytes[pos + 9],
                    bytes[pos + 10],
                    bytes[pos + 11],
                ]) as usize,
                12,
            )
        } else {
            (
                u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize,
                8,
            )
        };
        if len == u32::MAX as usize {
            return None; // undefined length has no place in file meta
        }
        pos = pos.checked_add(head)?.checked_add(len)?;
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
}
