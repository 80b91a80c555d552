//! DIMSE command sets (PS3.7 E.1): one typed struct, encoded and decoded here
//! only. dicom-rs has no DIMSE message layer; this is ours.

use custos_archive::text::{ascii_only, attribute_text as text};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use custos_archive::lengths::{self, Encoding};

pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub const N_SET_RQ: u16 = 0x0120;
    pub const N_SET_RSP: u16 = 0x8120;
    pub const N_ACTION_RQ: u16 = 0x0130;
    pub const N_ACTION_RSP: u16 = 0x8130;
    pub const N_CREATE_RQ: u16 = 0x0140;
    pub const N_CREATE_RSP: u16 = 0x8140;

    /// The operation's name (a metrics label); responses and the rest: "other".
    pub fn op_name(field: u16) -> &'static str {
        match field {
            C_STORE_RQ => "C-STORE",
            C_GET_RQ => "C-GET",
            C_FIND_RQ => "C-FIND",
            C_MOVE_RQ => "C-MOVE",
            C_ECHO_RQ => "C-ECHO",
            N_SET_RQ => "N-SET",
            N_ACTION_RQ => "N-ACTION",
            N_CREATE_RQ => "N-CREATE",
            _ => "other",
        }
    }

    /// Requests that carry a Priority (PS3.7 9.3): the composite ones but C-ECHO.
    pub fn has_priority(field: u16) -> bool {
        matches!(field, C_STORE_RQ | C_GET_RQ | C_FIND_RQ | C_MOVE_RQ)
    }
}

pub use custos_archive::status;

/// "No data set follows" (CommandDataSetType).
const NO_DATA_SET: u16 = 0x0101;

/// The command elements Custos reads or writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub responding_to: Option<u16>,
    /// Affected SOP Class UID (Requested, in an N-ACTION-RQ).
    pub sop_class_uid: String,
    /// Affected SOP Instance UID (Requested, in an N-ACTION-RQ).
    pub sop_instance_uid: String,
    pub priority: u16,
    pub has_data_set: bool,
    pub status: Option<u16>,
    pub error_comment: Option<String>,
    /// Error ID (0000,0903): which failure, where a service defines them.
    pub error_id: Option<u16>,
    pub move_destination: String,
    pub move_originator_ae: Option<String>,
    pub move_originator_message_id: Option<u16>,
    /// remaining, completed, failed, warning sub-operations
    pub sub_operations: Option<[u16; 4]>,
    /// N-ACTION's Action Type ID.
    pub action_type: Option<u16>,
    /// N-EVENT-REPORT's Event Type ID.
    pub event_type: Option<u16>,
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<u16> {
    obj.get(tag).and_then(|e| e.to_int::<u16>().ok())
}

impl Command {
    /// Decodes a command set (always implicit VR little endian).
    pub fn decode(bytes: &[u8]) -> Result<Command, String> {
        lengths::check(bytes, Encoding::IMPLICIT_LE, false)
            .map_err(|e| format!("malformed command set: {e}"))?;
        let obj =
            InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .map_err(|e| format!("malformed command set: {e}"))?;
        let field = int(&obj, tags::COMMAND_FIELD).ok_or("command set has no Command Field")?;
        Ok(Command {
            field,
            message_id: int(&obj, tags::MESSAGE_ID).unwrap_or(0),
            responding_to: int(&obj, tags::MESSAGE_ID_BEING_RESPONDED_TO),
            sop_class_uid: match text(&obj, tags::AFFECTED_SOP_CLASS_UID) {
                s if s.is_empty() => text(&obj, tags::REQUESTED_SOP_CLASS_UID),
                s => s,
            },
            sop_instance_uid: match text(&obj, tags::AFFECTED_SOP_INSTANCE_UID) {
                s if s.is_empty() => text(&obj, tags::REQUESTED_SOP_INSTANCE_UID),
                s => s,
            },
            priority: int(&obj, tags::PRIORITY).unwrap_or(0),
            has_data_set: int(&obj, tags::COMMAND_DATA_SET_TYPE).unwrap_or(NO_DATA_SET)
                != NO_DATA_SET,
            status: int(&obj, tags::STATUS),
            error_comment: obj
                .get(tags::ERROR_COMMENT)
                .map(|_| text(&obj, tags::ERROR_COMMENT)),
            error_id: int(&obj, tags::ERROR_ID),
            move_destination: text(&obj, tags::MOVE_DESTINATION),
            move_originator_ae: obj
                .get(tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE)
                .map(|_| text(&obj, tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE)),
            move_originator_message_id: int(&obj, tags::MOVE_ORIGINATOR_MESSAGE_ID),
            sub_operations: None,
            action_type: int(&obj, tags::ACTION_TYPE_ID),
            event_type: int(&obj, tags::EVENT_TYPE_ID),
        })
    }

    /// Encodes with the Command Group Length first, as PS3.7 requires. Text
    /// goes in the default repertoire (a command set has no Specific
    /// Character Set), other characters as `?`: a peer's text comes back in
    /// responses (its UIDs, the Error Comment quoting its keys), decoded from
    /// bytes that may be anything, and dicom-rs refuses to write it.
    pub fn encode(&self) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag: Tag, vr: VR, v: PrimitiveValue| {
            let v = match v {
                PrimitiveValue::Str(s) => PrimitiveValue::from(ascii_only(&s)),
                v => v,
            };
            obj.put(DataElement::new(tag, vr, v));
        };
        if !self.sop_class_uid.is_empty() {
            put(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(self.sop_class_uid.as_str()),
            );
        }
        put(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(self.field),
        );
        match self.responding_to {
            Some(id) => put(
                tags::MESSAGE_ID_BEING_RESPONDED_TO,
                VR::US,
                PrimitiveValue::from(id),
            ),
            None => put(
                tags::MESSAGE_ID,
                VR::US,
                PrimitiveValue::from(self.message_id),
            ),
        }
        if !self.move_destination.is_empty() {
            put(
                tags::MOVE_DESTINATION,
                VR::AE,
                PrimitiveValue::from(self.move_destination.as_str()),
            );
        }
        if self.responding_to.is_none() && field::has_priority(self.field) {
            put(tags::PRIORITY, VR::US, PrimitiveValue::from(self.priority));
        }
        let ds_type = if self.has_data_set {
            0x0000u16
        } else {
            NO_DATA_SET
        };
        put(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(ds_type),
        );
        if let Some(s) = self.status {
            put(tags::STATUS, VR::US, PrimitiveValue::from(s));
        }
        if let Some(c) = &self.error_comment {
            // LO: at most 64 characters.
            let c: String = c.chars().take(64).collect();
            put(tags::ERROR_COMMENT, VR::LO, PrimitiveValue::from(c));
        }
        if let Some(id) = self.error_id {
            put(tags::ERROR_ID, VR::US, PrimitiveValue::from(id));
        }
        if !self.sop_instance_uid.is_empty() {
            put(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(self.sop_instance_uid.as_str()),
            );
        }
        if let Some(t) = self.event_type {
            put(tags::EVENT_TYPE_ID, VR::US, PrimitiveValue::from(t));
        }
        if let Some(t) = self.action_type {
            put(tags::ACTION_TYPE_ID, VR::US, PrimitiveValue::from(t));
        }
        if let Some([rem, done, failed, warn]) = self.sub_operations {
            // Remaining: in Pending and Cancel responses only (PS3.4
            // C.4.2.1.6, C.4.3.1.6); a final one says what was done.
            if matches!(
                self.status,
                Some(status::PENDING | 0xFF01 | status::CANCEL) | None
            ) {
                put(
                    tags::NUMBER_OF_REMAINING_SUBOPERATIONS,
                    VR::US,
                    PrimitiveValue::from(rem),
                );
            }
            put(
                tags::NUMBER_OF_COMPLETED_SUBOPERATIONS,
                VR::US,
                PrimitiveValue::from(done),
            );
            put(
                tags::NUMBER_OF_FAILED_SUBOPERATIONS,
                VR::US,
                PrimitiveValue::from(failed),
            );
            put(
                tags::NUMBER_OF_WARNING_SUBOPERATIONS,
                VR::US,
                PrimitiveValue::from(warn),
            );
        }
        if let Some(ae) = &self.move_originator_ae {
            put(
                tags::MOVE_ORIGINATOR_APPLICATION_ENTITY_TITLE,
                VR::AE,
                PrimitiveValue::from(ae.as_str()),
            );
        }
        if let Some(id) = self.move_originator_message_id {
            put(
                tags::MOVE_ORIGINATOR_MESSAGE_ID,
                VR::US,
                PrimitiveValue::from(id),
            );
        }
        let mut body = Vec::new();
        obj.write_dataset_with_ts(&mut body, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .expect("numbers and ASCII text (ascii_only) written to memory cannot fail");
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A response to `self` with the given status.
    pub fn response(&self, field: u16, status: u16) -> Command {
        Command {
            field,
            responding_to: Some(self.message_id),
            sop_class_uid: self.sop_class_uid.clone(),
            sop_instance_uid: self.sop_instance_uid.clone(),
            status: Some(status),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let rq = Command {
            field: field::C_MOVE_RQ,
            message_id: 7,
            sop_class_uid: "1.2.840.10008.5.1.4.1.2.2.2".into(),
            move_destination: "DEST".into(),
            has_data_set: true,
            ..Default::default()
        };
        let back = Command::decode(&rq.encode()).unwrap();
        assert_eq!(back.field, field::C_MOVE_RQ);
        assert_eq!(back.message_id, 7);
        assert_eq!(back.move_destination, "DEST");
        assert!(back.has_data_set);
        let mut rsp = rq.response(field::C_MOVE_RSP, status::PENDING);
        rsp.sub_operations = Some([3, 1, 0, 0]);
        let bytes = rsp.encode();
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 12, "group length covers the rest");
        let back = Command::decode(&bytes).unwrap();
        assert_eq!(back.responding_to, Some(7));
        assert_eq!(back.status, Some(status::PENDING));
        assert!(!back.has_data_set);
        let remaining = |bytes: &[u8]| {
            InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .unwrap()
                .get(tags::NUMBER_OF_REMAINING_SUBOPERATIONS)
                .is_some()
        };
        assert!(remaining(&bytes), "a Pending response says what remains");
        // A final response does not (PS3.4 C.4.2.1.6).
        let mut done = rq.response(field::C_MOVE_RSP, status::SUBOPS_WARNING);
        done.sub_operations = Some([0, 3, 1, 0]);
        assert!(!remaining(&done.encode()));
        assert!(Command::decode(b"\x00\x00garbage").is_err());
    }

    #[test]
    fn text_outside_the_default_repertoire_is_replaced_not_a_panic() {
        // What decoding a peer's bytes can give: CJK from an ISO 2022 escape,
        // U+FFFD from invalid bytes, Latin-1 and others in an Error Comment.
        let mut rsp = Command {
            field: field::C_ECHO_RQ,
            message_id: 3,
            sop_class_uid: "1.2\u{5c71}".into(),
            sop_instance_uid: "1.2.\u{fffd}".into(),
            ..Default::default()
        }
        .response(field::C_ECHO_RSP, status::SUCCESS);
        rsp.error_comment = Some("bad key: \u{e9}\u{3a9}".into());
        let back = Command::decode(&rsp.encode()).unwrap();
        assert_eq!(back.sop_class_uid, "1.2?");
        assert_eq!(back.sop_instance_uid, "1.2.?");
        assert_eq!(back.error_comment.as_deref(), Some("bad key: ??"));
        assert_eq!(back.status, Some(status::SUCCESS));
    }

    #[test]
    fn n_action_names_the_requested_instance() {
        let mut obj = InMemDicomObject::new_empty();
        let mut put =
            |tag, vr, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        put(
            tags::REQUESTED_SOP_CLASS_UID,
            VR::UI,
            "1.2.840.10008.1.20.1",
        );
        put(
            tags::REQUESTED_SOP_INSTANCE_UID,
            VR::UI,
            "1.2.840.10008.1.20.1.1",
        );
        obj.put(DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(field::N_ACTION_RQ),
        ));
        obj.put(DataElement::new(
            tags::MESSAGE_ID,
            VR::US,
            PrimitiveValue::from(3u16),
        ));
        obj.put(DataElement::new(
            tags::ACTION_TYPE_ID,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        obj.put(DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
        let mut bytes = Vec::new();
        obj.write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        let cmd = Command::decode(&bytes).unwrap();
        assert_eq!(cmd.field, field::N_ACTION_RQ);
        assert_eq!(cmd.sop_class_uid, "1.2.840.10008.1.20.1");
        assert_eq!(cmd.sop_instance_uid, "1.2.840.10008.1.20.1.1");
        assert_eq!(cmd.action_type, Some(1));
        assert!(cmd.has_data_set);
        // An event report carries no Priority, and its event type round-trips.
        let report = Command {
            field: field::N_EVENT_REPORT_RQ,
            message_id: 9,
            event_type: Some(2),
            has_data_set: true,
            ..Default::default()
        };
        let raw = report.encode();
        let obj =
            InMemDicomObject::read_dataset_with_ts(&raw[12..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .unwrap();
        assert!(obj.get(tags::PRIORITY).is_none());
        assert_eq!(Command::decode(&raw).unwrap().event_type, Some(2));
    }
}
