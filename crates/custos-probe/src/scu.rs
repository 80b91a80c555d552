//! The probe's SCU side: associations (plain or TLS) proposing what an
//! attacker would, and the few requests it sends: an anonymous C-FIND, a
//! C-MOVE to an unregistered AE, and (only with `--confirm-retrieve`) a C-GET
//! of one instance that is counted and discarded.

use std::sync::Arc;
use std::time::Duration;

use custos_tls::ClientConfig;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::ClientAssociationOptions;
use dicom_ul::association::client::{AsyncClientAssociation, AsyncTlsStream};
use dicom_ul::pdu::PresentationContextResultReason;
use tokio::net::TcpStream;

use super::{CT_STORAGE, ProbeOptions};
use custos_dimse::command::{Command, field, status};
use custos_dimse::link::{Stream, send_message};
use custos_dimse::syntaxes::*;

fn options(o: &ProbeOptions, calling: &str, called: &str) -> ClientAssociationOptions<'static> {
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling.to_string())
        .called_ae_title(called.to_string())
        .read_timeout(o.timeout)
        .write_timeout(o.timeout)
        .connection_timeout(o.timeout)
        // C-GET sends the instances back on this association: offer to be
        // their storage SCP (used only with --confirm-retrieve).
        .with_role_selection(CT_STORAGE, true, true);
    for s in [
        VERIFICATION,
        CT_STORAGE,
        PATIENT_ROOT_FIND,
        STUDY_ROOT_FIND,
        STUDY_ROOT_MOVE,
        STUDY_ROOT_GET,
    ] {
        options = options.with_presentation_context(s, vec![EXPLICIT_VR_LE, IMPLICIT_VR_LE]);
    }
    options
}

pub(super) async fn associate_plain(
    o: &ProbeOptions,
    calling: String,
    called: String,
) -> Result<AsyncClientAssociation<TcpStream>, String> {
    let addr = format!("{}:{}", o.host, o.port);
    tokio::time::timeout(
        o.timeout * 2,
        options(o, &calling, &called).establish_async(addr.as_str()),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())
}

/// The same association over TLS (any server certificate: the probe reports
/// on certificates separately and must reach misconfigured servers too).
pub(super) async fn associate_tls(
    o: &ProbeOptions,
    tls: Arc<ClientConfig>,
    calling: String,
    called: String,
) -> Result<AsyncClientAssociation<AsyncTlsStream>, String> {
    let addr = format!("{}:{}", o.host, o.port);
    tokio::time::timeout(
        o.timeout * 2,
        options(o, &calling, &called)
            .tls_config(tls)
            .server_name(&o.host)
            .establish_tls_async(addr.as_str()),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())
}

pub(super) fn context_for<S: Stream>(
    a: &AsyncClientAssociation<S>,
    uid: &str,
) -> Option<(u8, String)> {
    a.presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && pc.abstract_syntax.trim_end_matches('\0') == uid
        })
        .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches('\0').to_string()))
}

fn identifier<S: Stream>(
    a: &AsyncClientAssociation<S>,
    uid: &str,
    obj: &InMemDicomObject,
) -> Option<(u8, Vec<u8>)> {
    let (pc, ts) = context_for(a, uid)?;
    let ts = TransferSyntaxRegistry.get(&ts)?;
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(&mut bytes, ts).ok()?;
    Some((pc, bytes))
}

/// Reads one DIMSE message: its command and, if any, its data set.
async fn receive<S: Stream>(
    a: &mut AsyncClientAssociation<S>,
) -> Result<(Command, Vec<u8>), String> {
    custos_dimse::link::receive_message(a, 1 << 30, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())
}

/// What an anonymous C-FIND returned.
pub(super) struct Matches {
    pub count: usize,
    /// Identifying attributes present (values only with `show_phi`).
    pub attributes: String,
    /// A study to retrieve for `--confirm-retrieve`.
    pub first_study: Option<String>,
}

/// Which anonymous query to send.
#[derive(Debug, Clone, Copy)]
pub(super) enum FindLevel {
    /// Patient Root, PATIENT level.
    Patient,
    /// Study Root, STUDY level.
    Study,
}

/// An anonymous C-FIND matching everything at `level`: how many records, and
/// which identifying attributes they carry (values only with `show_phi`).
/// Cancelled after 1,000 matches.
pub(super) async fn find<S: Stream>(
    a: &mut AsyncClientAssociation<S>,
    level: FindLevel,
    show_phi: bool,
) -> Result<Matches, String> {
    let (model, level_name, message_id) = match level {
        FindLevel::Patient => (PATIENT_ROOT_FIND, "PATIENT", 4),
        FindLevel::Study => (STUDY_ROOT_FIND, "STUDY", 1),
    };
    let mut q = InMemDicomObject::new_empty();
    q.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from(level_name),
    ));
    let mut keys = vec![
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
    ];
    if let FindLevel::Study = level {
        keys.extend([
            (tags::STUDY_DATE, VR::DA),
            (tags::STUDY_INSTANCE_UID, VR::UI),
        ]);
    }
    for (tag, vr) in keys {
        q.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
    }
    let (pc, bytes) = identifier(a, model, &q).ok_or("no usable C-FIND context")?;
    let rq = Command {
        field: field::C_FIND_RQ,
        message_id,
        sop_class_uid: model.into(),
        has_data_set: true,
        ..Default::default()
    };
    send_message(a, pc, &rq, Some(&bytes))
        .await
        .map_err(|e| e.to_string())?;
    let ts = context_for(a, model).map(|c| c.1).unwrap_or_default();
    let ts = TransferSyntaxRegistry
        .get(&ts)
        .ok_or("unknown transfer syntax")?;
    let (mut n, mut present, mut shown) = (0usize, std::collections::BTreeSet::new(), Vec::new());
    let mut first_study = None;
    loop {
        let (rsp, data) = tokio::time::timeout(Duration::from_secs(30), receive(a))
            .await
            .map_err(|_| "C-FIND timed out".to_string())??;
        match rsp.status {
            Some(status::PENDING) | Some(0xFF01) => {
                n += 1;
                if let Ok(obj) = InMemDicomObject::read_dataset_with_ts(data.as_slice(), ts) {
                    if first_study.is_none() {
                        first_study = obj
                            .get(tags::STUDY_INSTANCE_UID)
                            .map(custos_dimse::command_text)
                            .map(|u| u.trim_end_matches(['\0', ' ']).to_string())
                            .filter(|u| !u.is_empty());
                    }
                    for (tag, name) in [
                        (tags::PATIENT_NAME, "PatientName"),
                        (tags::PATIENT_ID, "PatientID"),
                        (tags::PATIENT_BIRTH_DATE, "PatientBirthDate"),
                    ] {
                        let v = obj
                            .get(tag)
                            .map(custos_dimse::command_text)
                            .unwrap_or_default();
                        if !v.trim().is_empty() {
                            present.insert(name);
                            if show_phi && shown.len() < 20 {
                                shown.push(format!("{name}={v}"));
                            }
                        }
                    }
                }
                if n == 1000 {
                    let cancel = Command {
                        field: field::C_CANCEL_RQ,
                        responding_to: Some(message_id),
                        ..Default::default()
                    };
                    let _ = send_message(a, pc, &cancel, None).await;
                }
            }
            _ => break,
        }
    }
    let mut attrs = present.into_iter().collect::<Vec<_>>().join(", ");
    if attrs.is_empty() {
        attrs = "none identifying".into();
    }
    if show_phi && !shown.is_empty() {
        attrs.push_str(&format!(" (values: {})", shown.join("; ")));
    }
    Ok(Matches {
        count: n,
        attributes: attrs,
        first_study,
    })
}

/// A C-MOVE naming no study to an AE title nobody registered: the answer shows
/// whether destinations are checked. Nothing can be sent.
pub(super) async fn move_to_unknown<S: Stream>(a: &mut AsyncClientAssociation<S>) -> Option<u16> {
    let (pc, bytes) = identifier(a, STUDY_ROOT_MOVE, &study_identifier("2.25.1"))?;
    let rq = Command {
        field: field::C_MOVE_RQ,
        message_id: 2,
        sop_class_uid: STUDY_ROOT_MOVE.into(),
        has_data_set: true,
        move_destination: "NOSUCHAE9".into(),
        ..Default::default()
    };
    send_message(a, pc, &rq, Some(&bytes)).await.ok()?;
    loop {
        let (rsp, _) = tokio::time::timeout(Duration::from_secs(30), receive(a))
            .await
            .ok()?
            .ok()?;
        match rsp.status {
            Some(status::PENDING) => continue,
            s => return s,
        }
    }
}

/// A STUDY-level retrieve identifier naming one study.
fn study_identifier(study: &str) -> InMemDicomObject {
    let mut q = InMemDicomObject::new_empty();
    q.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("STUDY"),
    ));
    q.put(DataElement::new(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(study),
    ));
    q
}

/// What a confirmed C-GET pulled (and discarded).
pub(super) struct Pulled {
    pub instances: usize,
    pub bytes: usize,
    pub status: Option<u16>,
}

/// C-GET of `study` that accepts the first instance sent back (answering
/// success, keeping nothing) and then cancels: proof that images leave.
pub(super) async fn get_one<S: Stream>(
    a: &mut AsyncClientAssociation<S>,
    study: &str,
) -> Result<Pulled, String> {
    let (pc, bytes) =
        identifier(a, STUDY_ROOT_GET, &study_identifier(study)).ok_or("no usable C-GET context")?;
    let rq = Command {
        field: field::C_GET_RQ,
        message_id: 3,
        sop_class_uid: STUDY_ROOT_GET.into(),
        has_data_set: true,
        ..Default::default()
    };
    send_message(a, pc, &rq, Some(&bytes))
        .await
        .map_err(|e| e.to_string())?;
    let mut pulled = Pulled {
        instances: 0,
        bytes: 0,
        status: None,
    };
    loop {
        let (msg, data) = tokio::time::timeout(Duration::from_secs(30), receive(a))
            .await
            .map_err(|_| "C-GET timed out".to_string())??;
        match msg.field {
            field::C_STORE_RQ => {
                pulled.instances += 1;
                pulled.bytes += data.len();
                let store_pc = context_for(a, msg.sop_class_uid.trim_end_matches('\0'))
                    .map(|c| c.0)
                    .unwrap_or(pc);
                let rsp = Command {
                    field: field::C_STORE_RSP,
                    responding_to: Some(msg.message_id),
                    sop_class_uid: msg.sop_class_uid.clone(),
                    sop_instance_uid: msg.sop_instance_uid.clone(),
                    status: Some(status::SUCCESS),
                    ..Default::default()
                };
                send_message(a, store_pc, &rsp, None)
                    .await
                    .map_err(|e| e.to_string())?;
                if pulled.instances == 1 {
                    let cancel = Command {
                        field: field::C_CANCEL_RQ,
                        responding_to: Some(3),
                        ..Default::default()
                    };
                    let _ = send_message(a, pc, &cancel, None).await;
                }
            }
            field::C_GET_RSP if msg.status == Some(status::PENDING) => continue,
            field::C_GET_RSP => {
                pulled.status = msg.status;
                return Ok(pulled);
            }
            other => return Err(format!("unexpected message {other:04X} during C-GET")),
        }
    }
}
