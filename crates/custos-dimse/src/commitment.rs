//! Storage Commitment Push Model SCP (PS3.4 J). A modality sends N-ACTION
//! with a transaction UID and the instances it wants the archive to be
//! responsible for; the archive checks each one (`Archive::commitment`: in the
//! index, blob intact) before it answers, then reports committed and failed
//! references by N-EVENT-REPORT — on the same association if the modality
//! still holds it, otherwise on a new association to the peer's registered
//! address and port (TLS if it requires it). Each report is held in the
//! index's durable queue before the N-ACTION is answered; one the modality
//! does not take on its association is delivered by the queue's worker
//! (`deliver_held`), retried with the forwarding back-off, across restarts.

use custos_archive::text::{attribute_text as text, is_uid};
use std::time::Duration;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::{AsyncAssociation, ClientAssociationOptions};
use dicom_ul::pdu::PresentationContextResultReason;
use tracing::{info, warn};

use custos_archive::Archive;
use custos_archive::commitment::{HeldReport, Reference};
use custos_archive::routing::Failure;
use custos_core::audit::{EventId, Outcome};

use crate::association::{Association, read_identifier};
use crate::command::{Command, field, status};
use crate::link::{LinkError, Stream, receive_command, send_message};
use crate::outbound::with_peer_association;
use crate::server::DimseConfig;
use crate::syntaxes::{
    EXPLICIT_VR_LE, IMPLICIT_VR_LE, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE,
};

/// Event Type IDs of the report: all committed, or some failed.
const ALL_COMMITTED: u16 = 1;
const SOME_FAILED: u16 = 2;

/// A report sent on the association that asked for it and not yet answered.
pub(crate) struct PendingReport {
    pub message_id: u16,
    pub transaction: String,
}

/// The N-EVENT-REPORT of one transaction: its event type and data set.
pub(crate) struct Report {
    pub event_type: u16,
    pub dataset: InMemDicomObject,
}

impl Association {
    /// Serves an N-ACTION-RQ (request for storage commitment) whose data set
    /// is `bytes`, on presentation context `pc` with transfer syntax `ts`.
    pub(crate) async fn commit(
        &mut self,
        pc: u8,
        cmd: &Command,
        bytes: Vec<u8>,
        ts: &str,
    ) -> Result<(), LinkError> {
        let refuse = |st: u16, why: &str| {
            let mut r = cmd.response(field::N_ACTION_RSP, st);
            r.error_comment = Some(why.to_string());
            r
        };
        if cmd.action_type != Some(1) {
            let r = refuse(status::NO_SUCH_ACTION, "action type must be 1");
            return send_message(&mut self.assoc, pc, &r, None).await;
        }
        if cmd.sop_instance_uid != STORAGE_COMMITMENT_INSTANCE {
            let r = refuse(status::NO_SUCH_SOP_INSTANCE, "not the well-known instance");
            return send_message(&mut self.assoc, pc, &r, None).await;
        }
        let request = read_identifier(bytes, ts)
            .map_err(|e| (status::PROCESSING_FAILURE, e))
            .and_then(|obj| parse_request(&obj));
        let (transaction, refs) = match request {
            Ok(r) => r,
            Err((st, why)) => {
                info!(calling = self.peer_ae(), reason = %why, "storage commitment request refused");
                let r = refuse(st, &why);
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        };
        // Checked before answering: an index that cannot be read fails the
        // request now, so the modality asks again instead of waiting.
        let results = match self.archive.commitment(&refs).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "storage commitment: index lookup failed");
                let r = refuse(status::PROCESSING_FAILURE, "archive index unavailable");
                return send_message(&mut self.assoc, pc, &r, None).await;
            }
        };
        // Held before answering: from here the report reaches the modality
        // even if this process dies.
        let held = HeldReport {
            transaction: transaction.clone(),
            references: refs.iter().cloned().zip(results.iter().copied()).collect(),
        };
        if let Err(e) = self.archive.hold_report(self.peer_ae(), &held).await {
            warn!(error = %e, "storage commitment: cannot hold the report");
            let r = refuse(status::PROCESSING_FAILURE, "archive index unavailable");
            return send_message(&mut self.assoc, pc, &r, None).await;
        }
        let failed = results.iter().filter(|r| r.is_some()).count();
        info!(
            calling = self.peer_ae(),
            references = refs.len(),
            failed,
            "storage commitment"
        );
        let outcome = if failed == 0 {
            Outcome::Success
        } else {
            Outcome::MinorFailure
        };
        let mut e = self.event(EventId::InstancesAccessed, 'R', outcome);
        e.detail = format!(
            "storage commitment {transaction}: {} committed, {failed} failed",
            refs.len() - failed
        );
        self.archive.audit(e).await;

        let mut rsp = cmd.response(field::N_ACTION_RSP, status::SUCCESS);
        rsp.action_type = Some(1);
        send_message(&mut self.assoc, pc, &rsp, None).await?;

        let report = report(&transaction, &refs, &results, &self.config.ae_title);
        let message_id = self.next_message_id();
        let rq = report.request(message_id);
        let data = encode(&report.dataset, ts).map_err(LinkError::Protocol)?;
        // An earlier report still unanswered goes on a new association; this
        // one is pending before it is sent, so a failed send still delivers it.
        self.redeliver_unanswered().await;
        self.report = Some(PendingReport {
            message_id,
            transaction,
        });
        send_message(&mut self.assoc, pc, &rq, Some(&data)).await
    }

    /// The modality's N-EVENT-REPORT-RSP to the report sent on this
    /// association. A failure status means it would not take the report
    /// here (some modalities take reports only on an association of their
    /// own): it goes out again on a new association.
    pub(crate) async fn report_answered(&mut self, rsp: &Command) {
        match &self.report {
            Some(p) if rsp.responding_to == Some(p.message_id) => {
                if rsp.status == Some(status::SUCCESS) {
                    info!(
                        calling = self.peer_ae(),
                        "storage commitment report delivered"
                    );
                    if let Some(p) = self.report.take() {
                        self.archive
                            .report_settled(self.peer_ae(), &p.transaction, true)
                            .await;
                    }
                } else {
                    info!(calling = self.peer_ae(), status = ?rsp.status, "storage commitment report refused on this association; sending it on a new one");
                    self.redeliver_unanswered().await;
                }
            }
            _ => info!(
                calling = self.peer_ae(),
                "N-EVENT-REPORT-RSP to nothing we sent; ignored"
            ),
        }
    }

    /// A report the modality did not answer (or refused) is due at once on
    /// a new association (the queue's worker sends it).
    pub(crate) async fn redeliver_unanswered(&mut self) {
        if let Some(p) = self.report.take() {
            self.archive
                .report_settled(self.peer_ae(), &p.transaction, false)
                .await;
        }
    }
}

impl Report {
    fn request(&self, message_id: u16) -> Command {
        Command {
            field: field::N_EVENT_REPORT_RQ,
            message_id,
            sop_class_uid: STORAGE_COMMITMENT.into(),
            sop_instance_uid: STORAGE_COMMITMENT_INSTANCE.into(),
            event_type: Some(self.event_type),
            has_data_set: true,
            ..Default::default()
        }
    }
}

/// Transaction UID and references of an N-ACTION data set, or the status and
/// reason to refuse it with.
fn parse_request(obj: &InMemDicomObject) -> Result<(String, Vec<Reference>), (u16, String)> {
    let transaction = text(obj, tags::TRANSACTION_UID);
    if transaction.is_empty() {
        return Err((status::MISSING_ATTRIBUTE, "no Transaction UID".into()));
    }
    // Checked before it is acknowledged: the report repeats these UIDs, and
    // one it cannot encode would be retried for ever.
    if !is_uid(&transaction) {
        return Err((
            status::INVALID_ARGUMENT_VALUE,
            "the Transaction UID is not a UID".into(),
        ));
    }
    let items = obj
        .get(tags::REFERENCED_SOP_SEQUENCE)
        .and_then(|e| e.items())
        .filter(|items| !items.is_empty())
        .ok_or((
            status::MISSING_ATTRIBUTE,
            "no Referenced SOP Sequence".to_string(),
        ))?;
    let refs: Vec<Reference> = items
        .iter()
        .map(|i| Reference {
            sop_class_uid: text(i, tags::REFERENCED_SOP_CLASS_UID),
            sop_instance_uid: text(i, tags::REFERENCED_SOP_INSTANCE_UID),
        })
        .collect();
    if refs
        .iter()
        .any(|r| !is_uid(&r.sop_class_uid) || !is_uid(&r.sop_instance_uid))
    {
        return Err((
            status::INVALID_ARGUMENT_VALUE,
            "a reference without a valid SOP Class or Instance UID".into(),
        ));
    }
    Ok((transaction, refs))
}

/// The report of a transaction: committed references, failed ones with
/// their Failure Reason, and where to retrieve the committed instances.
fn report(transaction: &str, refs: &[Reference], results: &[Option<u16>], our_ae: &str) -> Report {
    let item = |r: &Reference, reason: Option<u16>| {
        let mut i = InMemDicomObject::new_empty();
        i.put(DataElement::new(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(r.sop_class_uid.as_str()),
        ));
        i.put(DataElement::new(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(r.sop_instance_uid.as_str()),
        ));
        if let Some(reason) = reason {
            i.put(DataElement::new(
                tags::FAILURE_REASON,
                VR::US,
                PrimitiveValue::from(reason),
            ));
        }
        i
    };
    let (mut committed, mut failed) = (Vec::new(), Vec::new());
    for (r, result) in refs.iter().zip(results) {
        match result {
            None => committed.push(item(r, None)),
            Some(reason) => failed.push(item(r, Some(*reason))),
        }
    }
    let mut ds = InMemDicomObject::new_empty();
    ds.put(DataElement::new(
        tags::TRANSACTION_UID,
        VR::UI,
        PrimitiveValue::from(transaction),
    ));
    if !committed.is_empty() {
        ds.put(DataElement::new(
            tags::RETRIEVE_AE_TITLE,
            VR::AE,
            PrimitiveValue::from(our_ae),
        ));
        ds.put(DataElement::new(
            tags::REFERENCED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(committed),
        ));
    }
    let event_type = if failed.is_empty() {
        ALL_COMMITTED
    } else {
        ds.put(DataElement::new(
            tags::FAILED_SOP_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(failed),
        ));
        SOME_FAILED
    };
    Report {
        event_type,
        dataset: ds,
    }
}

fn encode(ds: &InMemDicomObject, ts: &str) -> Result<Vec<u8>, String> {
    let ts = TransferSyntaxRegistry
        .get(ts.trim_end_matches(['\0', ' ']))
        .ok_or("unknown transfer syntax")?;
    let mut out = Vec::new();
    ds.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    Ok(out)
}

/// Delivers a held report (the queue's payload) to `peer_ae` on a new
/// association: the forward loop's attempt at a commitment job.
pub async fn deliver_held(
    archive: &Archive,
    config: &DimseConfig,
    peer_ae: &str,
    payload: &str,
) -> Result<(), Failure> {
    let held = HeldReport::from_payload(payload).map_err(Failure::Permanent)?;
    let peer = match archive.peer_directory().peer(peer_ae).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Err(Failure::Permanent(format!(
                "{peer_ae} is no longer a registered peer"
            )));
        }
        Err(e) => return Err(Failure::Transient(format!("peer lookup failed: {e}"))),
    };
    let (refs, results): (Vec<Reference>, Vec<Option<u16>>) = held.references.into_iter().unzip();
    let report = report(&held.transaction, &refs, &results, &config.ae_title);
    deliver(config, &peer, &report)
        .await
        .map_err(Failure::Transient)?;
    info!(peer = %peer_ae, "storage commitment report delivered on a new association");
    Ok(())
}

/// One attempt: associate with the peer, proposing the Storage Commitment
/// class with ourselves in the SCP role (PS3.4 J.3.3: the report travels
/// from SCP to SCU), send the report, wait for its response.
async fn deliver(
    config: &DimseConfig,
    peer: &custos_core::peer::Peer,
    report: &Report,
) -> Result<(), String> {
    let timeout = config.idle_timeout.min(Duration::from_secs(30));
    let options = ClientAssociationOptions::new()
        .calling_ae_title(config.ae_title.clone())
        .called_ae_title(peer.ae_title.clone())
        .with_presentation_context(STORAGE_COMMITMENT, vec![EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        .with_role_selection(STORAGE_COMMITMENT, false, true)
        .max_pdu_length(config.max_pdu_length)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .connection_timeout(Duration::from_secs(10));
    with_peer_association!(options, peer, config.tls_client.clone(), |a| {
        send_report(&mut a, report, timeout).await
    })?
}

async fn send_report<S: Stream, A>(
    a: &mut A,
    report: &Report,
    timeout: Duration,
) -> Result<(), String>
where
    A: AsyncAssociation<S> + Send,
{
    let Some((pc, ts)) = a
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| (pc.id, pc.transfer_syntax.clone()))
    else {
        let _ = a.abort().await;
        return Err("the peer did not accept the Storage Commitment class".into());
    };
    let data = encode(&report.dataset, &ts)?;
    send_message(a, pc, &report.request(1), Some(&data))
        .await
        .map_err(|e| format!("sending the report: {e}"))?;
    let (_, rsp) = receive_command(a, timeout)
        .await
        .map_err(|e| format!("no response to the report: {e}"))?;
    let _ = a.release().await;
    match (rsp.field, rsp.status) {
        (field::N_EVENT_REPORT_RSP, Some(status::SUCCESS)) => Ok(()),
        (field::N_EVENT_REPORT_RSP, st) => Err(format!("the peer answered status {st:04X?}")),
        (other, _) => Err(format!("unexpected answer {other:#06x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(class: &str, uid: &str) -> Reference {
        Reference {
            sop_class_uid: class.into(),
            sop_instance_uid: uid.into(),
        }
    }

    #[test]
    fn report_lists_committed_and_failed_with_reasons() {
        let refs = [reference("1.2.3", "1.1"), reference("1.2.3", "1.2")];
        let r = report("9.9", &refs, &[None, Some(0x0112)], "CUSTOS");
        assert_eq!(r.event_type, SOME_FAILED);
        let bytes = encode(&r.dataset, EXPLICIT_VR_LE).unwrap();
        let back = read_identifier(bytes, EXPLICIT_VR_LE).unwrap();
        assert_eq!(text(&back, tags::TRANSACTION_UID), "9.9");
        let ok = back
            .get(tags::REFERENCED_SOP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(text(&ok[0], tags::REFERENCED_SOP_INSTANCE_UID), "1.1");
        let bad = back
            .get(tags::FAILED_SOP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(text(&bad[0], tags::REFERENCED_SOP_INSTANCE_UID), "1.2");
        assert_eq!(
            bad[0]
                .get(tags::FAILURE_REASON)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            0x0112
        );

        let all = report("9.9", &refs[..1], &[None], "CUSTOS");
        assert_eq!(all.event_type, ALL_COMMITTED);
        assert!(all.dataset.get(tags::FAILED_SOP_SEQUENCE).is_none());
    }

    #[test]
    fn requests_without_transaction_or_references_are_refused() {
        let empty = InMemDicomObject::new_empty();
        assert_eq!(
            parse_request(&empty).unwrap_err().0,
            status::MISSING_ATTRIBUTE
        );
        let mut no_refs = InMemDicomObject::new_empty();
        no_refs.put(DataElement::new(
            tags::TRANSACTION_UID,
            VR::UI,
            PrimitiveValue::from("1.2"),
        ));
        assert_eq!(
            parse_request(&no_refs).unwrap_err().0,
            status::MISSING_ATTRIBUTE
        );
    }

    #[test]
    fn requests_with_what_is_not_a_uid_are_refused_before_a_report_is_held() {
        let request = |transaction: &str, instance: &str| {
            let mut obj = InMemDicomObject::new_empty();
            obj.put(DataElement::new(
                tags::TRANSACTION_UID,
                VR::UI,
                PrimitiveValue::from(transaction),
            ));
            let mut item = InMemDicomObject::new_empty();
            item.put(DataElement::new(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7"),
            ));
            item.put(DataElement::new(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(instance),
            ));
            obj.put(DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![item]),
            ));
            parse_request(&obj)
        };
        let (transaction, refs) = request("1.2.3", "1.2.3.4").unwrap();
        assert_eq!((transaction.as_str(), refs.len()), ("1.2.3", 1));
        // Text a report could not be written with (decoded from an ISO 2022
        // escape, as a peer's bytes can be) or that is no UID at all.
        for (transaction, instance) in [
            ("1.2\u{5c71}", "1.2.3.4"),
            ("1.2.3", "1.2.\u{fffd}"),
            ("1.2.3", "x"),
        ] {
            assert_eq!(
                request(transaction, instance).unwrap_err().0,
                status::INVALID_ARGUMENT_VALUE,
                "{transaction} {instance}"
            );
        }
    }
}
