//! Modality Performed Procedure Step SCP (PS3.4 F): N-CREATE and N-SET
//! handed to `Archive::create_mpps` / `set_mpps`, which keep the state
//! machine; this file speaks DIMSE and audits each report.

use tracing::{debug, info, warn};

use custos_archive::mpps::{MppsError, refusal};
use custos_core::audit::{EventId, Outcome};

use crate::association::{Association, read_identifier};
use crate::command::{Command, field, status};
use crate::link::{LinkError, send_message};

impl Association {
    /// Serves an N-CREATE-RQ or N-SET-RQ on the MPPS class, whose data set
    /// (attributes or modifications) is `bytes`.
    pub(crate) async fn performed_step(
        &mut self,
        pc: u8,
        cmd: &Command,
        bytes: Vec<u8>,
        ts: &str,
    ) -> Result<(), LinkError> {
        let (rsp_field, verb) = if cmd.field == field::N_CREATE_RQ {
            (field::N_CREATE_RSP, "N-CREATE")
        } else {
            (field::N_SET_RSP, "N-SET")
        };
        let mut rsp = cmd.response(rsp_field, status::SUCCESS);
        let attrs = match read_identifier(bytes, ts) {
            Ok(o) => o,
            Err(e) => {
                debug!(error = %e, "unreadable MPPS data set");
                rsp.status = Some(status::PROCESSING_FAILURE);
                rsp.error_comment = Some("unreadable data set".into());
                return send_message(&mut self.assoc, pc, &rsp, None).await;
            }
        };
        let result = if cmd.field == field::N_CREATE_RQ {
            // The SCU names the new step; if it does not, we do (and say so).
            if cmd.sop_instance_uid.is_empty() {
                rsp.sop_instance_uid = custos_core::credentials::random_uid();
            }
            self.archive.create_mpps(&rsp.sop_instance_uid, attrs).await
        } else if cmd.sop_instance_uid.is_empty() {
            Err(MppsError::Refused(
                refusal::NO_SUCH_SOP_INSTANCE,
                "N-SET names no SOP instance".into(),
            ))
        } else {
            self.archive.set_mpps(&cmd.sop_instance_uid, attrs).await
        };
        match result {
            Ok(row) => {
                info!(calling = self.peer_ae(), status = %row.status, "MPPS {verb}");
                let action = if cmd.field == field::N_CREATE_RQ {
                    'C'
                } else {
                    'U'
                };
                let mut e = self.event(EventId::ProcedureRecord, action, Outcome::Success);
                e.detail = format!("MPPS {verb} {}: {}", row.sop_instance_uid, row.status);
                if !row.study_uid.is_empty() {
                    e.study_uids.push(row.study_uid.clone());
                }
                // The patient, as the step's attributes name it.
                if let Some(id) = custos_archive::mpps::patient_of(&row) {
                    e.patient_ids.push(id);
                }
                self.archive.audit(e).await;
            }
            Err(MppsError::Refused(st, why)) => {
                info!(calling = self.peer_ae(), status = format!("{st:04X}"), reason = %why, "MPPS {verb} refused");
                rsp.status = Some(st);
                rsp.error_comment = Some(why);
            }
            Err(e @ MppsError::Ended) => {
                info!(calling = self.peer_ae(), "MPPS {verb} refused: {e}");
                rsp.status = Some(refusal::PROCESSING_FAILURE);
                rsp.error_comment = Some(e.to_string());
                rsp.error_id = Some(custos_archive::mpps::NO_LONGER_UPDATABLE);
            }
            Err(MppsError::Index(e)) => {
                warn!(error = %e, "MPPS {verb} failed");
                rsp.status = Some(status::PROCESSING_FAILURE);
                rsp.error_comment = Some("archive index unavailable".into());
            }
        }
        send_message(&mut self.assoc, pc, &rsp, None).await
    }
}
