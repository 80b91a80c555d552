//! Modality Worklist SCP (PS3.4 K): a modality's C-FIND on the worklist
//! model, answered from the items the admin API scheduled
//! (`Archive::worklist_find` matches; this file speaks DIMSE).

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tracing::{debug, info, warn};

use custos_archive::worklist::WorklistError;
use custos_core::audit::{EventId, Outcome};

use crate::association::{Association, read_identifier};
use crate::command::{Command, field, status};
use crate::link::{LinkError, send_message};

impl Association {
    pub(crate) async fn worklist_find(
        &mut self,
        pc: u8,
        cmd: &Command,
        bytes: Vec<u8>,
        ts_uid: &str,
    ) -> Result<(), LinkError> {
        let refuse = |st: u16, why: &str| {
            let mut r = cmd.response(field::C_FIND_RSP, st);
            r.error_comment = Some(why.to_string());
            r
        };
        let ident = match read_identifier(bytes, ts_uid) {
            Ok(o) => o,
            Err(e) => {
                debug!(error = %e, "unreadable worklist identifier");
                let r = refuse(status::CANNOT_UNDERSTAND, "unreadable identifier");
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        };
        info!(calling = self.peer_ae(), "worklist C-FIND");
        let cap = self.config.max_find_results;
        let found = self.archive.worklist_find(&ident, cap + 1).await;
        // Recorded with the patients it returns (a worklist lists them).
        let mut e = self.event(
            EventId::Query,
            'E',
            if found.is_ok() {
                Outcome::Success
            } else {
                Outcome::MinorFailure
            },
        );
        e.detail = "C-FIND modality worklist".into();
        for item in found.iter().flatten() {
            let id = item
                .element(dicom_dictionary_std::tags::PATIENT_ID)
                .ok()
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string());
            if let Some(id) = id.filter(|i| !i.is_empty())
                && !e.patient_ids.contains(&id)
                && e.patient_ids.len() < 100
            {
                e.patient_ids.push(id);
            }
        }
        if found.is_ok() {
            if self.archive.record_access(e).await.is_err() {
                let r = refuse(status::OUT_OF_RESOURCES, crate::retrieve::TRAIL_DOWN);
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        } else {
            self.archive.audit(e).await;
        }
        let items = match found {
            Ok(items) => items,
            Err(WorklistError::Invalid(why)) => {
                let r = refuse(status::IDENTIFIER_DOES_NOT_MATCH, &why);
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
            Err(WorklistError::Index(e)) => {
                warn!(error = %e, "worklist C-FIND failed");
                let r = refuse(status::OUT_OF_RESOURCES, "worklist unavailable");
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        };
        let Some(ts) = TransferSyntaxRegistry.get(ts_uid.trim_end_matches(['\0', ' '])) else {
            let r = refuse(status::CANNOT_UNDERSTAND, "unknown transfer syntax");
            return send_message(&mut self.assoc, pc, &r, None).await;
        };
        self.send_find_matches(pc, cmd, items, ts).await
    }
}
