//! `custos probe`: checks one DICOM node the way the 2019 researchers found
//! exposed archives — can anyone associate, query, retrieve or store? — and
//! reports findings without patient data unless asked. Gentle: one
//! association at a time, bounded timeouts, no writes.

use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::Pdu;
use dicom_ul::association::ClientAssociationOptions;
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValueType, PresentationContextResultReason, UserVariableItem};
use tokio::net::TcpStream;

use crate::command::{Command, field, status};
use crate::link::send_message;
use crate::syntaxes::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    pub evidence: String,
    pub fix: &'static str,
}

pub struct ProbeOptions {
    pub host: String,
    pub port: u16,
    /// Called AE titles to try; the first that accepts is used.
    pub called: Vec<String>,
    pub show_phi: bool,
    pub timeout: Duration,
}

const CT_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const COMMON_CALLING: [&str; 4] = ["ANY-SCU", "STORESCU", "FINDSCU", "ECHOSCU"];

/// Runs the DICOM checks.
pub async fn probe(o: &ProbeOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    let random = format!("PROBE{:06}", std::process::id() % 1_000_000);
    let mut callings = vec![random.clone()];
    callings.extend(COMMON_CALLING.iter().map(|s| s.to_string()));
    let mut accepted_by: Option<(String, String)> = None;
    let mut refused = 0;
    'outer: for called in &o.called {
        for calling in &callings {
            match associate(o, calling, called).await {
                Ok(a) => {
                    accepted_by = Some((calling.clone(), called.clone()));
                    let _ = a.release().await;
                    break 'outer;
                }
                Err(_) => refused += 1,
            }
        }
    }
    let Some((calling, called)) = accepted_by else {
        findings.push(Finding {
            id: "dicom-unknown-ae-refused",
            severity: Severity::Info,
            title: "associations from unknown AE titles are refused".into(),
            evidence: format!("{refused} association attempts with unregistered calling AE titles were rejected or failed"),
            fix: "nothing to do",
        });
        return findings;
    };
    findings.push(Finding {
        id: "dicom-any-calling-ae",
        severity: Severity::High,
        title: "accepts associations from an unknown calling AE title".into(),
        evidence: format!(
            "calling AE `{calling}` (not registered anywhere) was accepted by called AE `{called}`"
        ),
        fix: "accept only registered peers (AE title and source address)",
    });
    let Ok(mut a) = associate(o, &calling, &called).await else {
        return findings;
    };
    if let Some(impl_uid) = a.user_variables().iter().find_map(|v| match v {
        UserVariableItem::ImplementationClassUID(u) => Some(u.clone()),
        _ => None,
    }) {
        let version = a
            .user_variables()
            .iter()
            .find_map(|v| match v {
                UserVariableItem::ImplementationVersionName(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_default();
        findings.push(Finding {
            id: "dicom-implementation",
            severity: Severity::Info,
            title: format!("implementation: {}", product_of(&impl_uid, &version)),
            evidence: format!("Implementation Class UID {impl_uid}, version name `{version}`"),
            fix: "nothing to do",
        });
    }
    let accepted: Vec<String> = a
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| pc.abstract_syntax.trim_end_matches('\0').to_string())
        .collect();
    let names: Vec<&str> = accepted.iter().map(|s| service_name(s)).collect();
    findings.push(Finding {
        id: "dicom-contexts",
        severity: Severity::Info,
        title: "presentation contexts accepted for an unknown AE".into(),
        evidence: names.join(", "),
        fix: "offer each peer only what it needs",
    });
    if accepted.iter().any(|s| s == CT_STORAGE) {
        findings.push(Finding {
            id: "dicom-store-open",
            severity: Severity::High,
            title: "accepts C-STORE from an unknown AE (images could be planted or altered)".into(),
            evidence: "a CT Image Storage context was accepted; nothing was stored".into(),
            fix: "accept C-STORE only from registered modalities",
        });
    }
    if accepted.iter().any(|s| s == STUDY_ROOT_FIND) {
        match find_studies(&mut a, o.show_phi).await {
            Ok((0, _)) => findings.push(Finding {
                id: "dicom-find-open",
                severity: Severity::Medium,
                title: "anonymous C-FIND is accepted (no records returned)".into(),
                evidence: "Study Root C-FIND at STUDY level returned 0 matches".into(),
                fix: "accept queries only from registered workstations",
            }),
            Ok((n, attrs)) => findings.push(Finding {
                id: "dicom-find-phi",
                severity: Severity::Critical,
                title: "anonymous C-FIND returns patient records".into(),
                evidence: format!(
                    "{n} studies returned to an unknown AE; attributes present: {attrs}"
                ),
                fix: "accept queries only from registered workstations; require user identity",
            }),
            Err(e) => findings.push(Finding {
                id: "dicom-find-error",
                severity: Severity::Low,
                title: "C-FIND context accepted but the query failed".into(),
                evidence: e,
                fix: "accept queries only from registered workstations",
            }),
        }
    }
    let _ = a.release().await;
    if accepted.iter().any(|s| s == STUDY_ROOT_MOVE)
        && let Ok(mut a) = associate(o, &calling, &called).await
    {
        let st = move_to_unknown(&mut a).await;
        let _ = a.release().await;
        match st {
            Some(s) if s == status::MOVE_DESTINATION_UNKNOWN => findings.push(Finding {
                id: "dicom-move-unknown-refused",
                severity: Severity::Info,
                title: "C-MOVE to an unregistered destination is refused".into(),
                evidence: format!("status {s:04X}"),
                fix: "nothing to do",
            }),
            Some(s) => findings.push(Finding {
                id: "dicom-move-open",
                severity: Severity::High,
                title: "C-MOVE to an arbitrary destination is not refused".into(),
                evidence: format!(
                    "C-MOVE to an unregistered AE answered status {s:04X} (no study was named)"
                ),
                fix: "send C-MOVE only to registered destinations",
            }),
            None => {}
        }
    }
    if accepted.iter().any(|s| s == STUDY_ROOT_GET) {
        findings.push(Finding {
            id: "dicom-get-open",
            severity: Severity::High,
            title: "C-GET is offered to an unknown AE".into(),
            evidence: "Study Root C-GET context accepted (nothing was retrieved)".into(),
            fix: "offer C-GET only to registered workstations",
        });
    }
    findings
}

async fn associate(
    o: &ProbeOptions,
    calling: &str,
    called: &str,
) -> Result<AsyncClientAssociation<TcpStream>, String> {
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling.to_string())
        .called_ae_title(called.to_string())
        .read_timeout(o.timeout)
        .write_timeout(o.timeout)
        .connection_timeout(o.timeout);
    for s in [
        VERIFICATION,
        CT_STORAGE,
        STUDY_ROOT_FIND,
        STUDY_ROOT_MOVE,
        STUDY_ROOT_GET,
    ] {
        options = options.with_presentation_context(s, vec![EXPLICIT_VR_LE, IMPLICIT_VR_LE]);
    }
    let addr = format!("{}:{}", o.host, o.port);
    tokio::time::timeout(o.timeout * 2, options.establish_async(addr.as_str()))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
}

fn service_name(uid: &str) -> &'static str {
    match uid {
        VERIFICATION => "verification",
        CT_STORAGE => "storage (CT)",
        STUDY_ROOT_FIND => "query (Study Root C-FIND)",
        STUDY_ROOT_MOVE => "retrieve (Study Root C-MOVE)",
        STUDY_ROOT_GET => "retrieve (Study Root C-GET)",
        _ => "other",
    }
}

/// Known implementations by class UID prefix.
fn product_of(uid: &str, version: &str) -> String {
    let v = version.to_ascii_uppercase();
    let name = if uid == custos_archive::part10::IMPLEMENTATION_CLASS_UID {
        "Custos"
    } else if v.starts_with("ORTHANC") {
        "Orthanc"
    } else if uid.starts_with("1.2.276.0.7230010.3") {
        "DCMTK-based (DCMTK tools, dcmqrscp, Orthanc)"
    } else if uid.starts_with("1.2.826.0.1.3680043.9.3811") {
        "pynetdicom"
    } else if uid.starts_with("1.2.40.0.13.1") {
        "dcm4che / dcm4chee"
    } else {
        "unrecognised"
    };
    name.to_string()
}

fn context_for(a: &AsyncClientAssociation<TcpStream>, uid: &str) -> Option<(u8, String)> {
    a.presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && pc.abstract_syntax.trim_end_matches('\0') == uid
        })
        .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches('\0').to_string()))
}

fn identifier(
    a: &AsyncClientAssociation<TcpStream>,
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
async fn receive(a: &mut AsyncClientAssociation<TcpStream>) -> Result<(Command, Vec<u8>), String> {
    let (mut cmd_bytes, mut data, mut cmd, mut want_data) = (Vec::new(), Vec::new(), None, false);
    loop {
        let pdu = a.receive().await.map_err(|e| e.to_string())?;
        let Pdu::PData { data: pdvs } = pdu else {
            return Err("the peer ended the association".into());
        };
        for pdv in pdvs {
            match pdv.value_type {
                PDataValueType::Command => {
                    cmd_bytes.extend_from_slice(&pdv.data);
                    if pdv.is_last {
                        let c = Command::decode(&cmd_bytes)?;
                        want_data = c.has_data_set;
                        cmd = Some(c);
                        if !want_data {
                            return Ok((cmd.take().ok_or("no command")?, data));
                        }
                    }
                }
                PDataValueType::Data => {
                    data.extend_from_slice(&pdv.data);
                    if pdv.is_last && want_data {
                        return Ok((cmd.take().ok_or("data before command")?, data));
                    }
                }
            }
        }
    }
}

/// An anonymous Study Root C-FIND at STUDY level: how many records, and
/// which identifying attributes they carry (values only with `show_phi`).
async fn find_studies(
    a: &mut AsyncClientAssociation<TcpStream>,
    show_phi: bool,
) -> Result<(usize, String), String> {
    let mut q = InMemDicomObject::new_empty();
    q.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("STUDY"),
    ));
    for (tag, vr) in [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_INSTANCE_UID, VR::UI),
    ] {
        q.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
    }
    let (pc, bytes) = identifier(a, STUDY_ROOT_FIND, &q).ok_or("no usable C-FIND context")?;
    let rq = Command {
        field: field::C_FIND_RQ,
        message_id: 1,
        sop_class_uid: STUDY_ROOT_FIND.into(),
        has_data_set: true,
        ..Default::default()
    };
    send_message(a, pc, &rq, Some(&bytes))
        .await
        .map_err(|e| e.to_string())?;
    let ts = context_for(a, STUDY_ROOT_FIND)
        .map(|c| c.1)
        .unwrap_or_default();
    let ts = TransferSyntaxRegistry
        .get(&ts)
        .ok_or("unknown transfer syntax")?;
    let (mut n, mut present, mut shown) = (0usize, std::collections::BTreeSet::new(), Vec::new());
    loop {
        let (rsp, data) = tokio::time::timeout(Duration::from_secs(30), receive(a))
            .await
            .map_err(|_| "C-FIND timed out".to_string())??;
        match rsp.status {
            Some(status::PENDING) | Some(0xFF01) => {
                n += 1;
                if let Ok(obj) = InMemDicomObject::read_dataset_with_ts(data.as_slice(), ts) {
                    for (tag, name) in [
                        (tags::PATIENT_NAME, "PatientName"),
                        (tags::PATIENT_ID, "PatientID"),
                        (tags::PATIENT_BIRTH_DATE, "PatientBirthDate"),
                    ] {
                        let v = obj.get(tag).map(crate::command_text).unwrap_or_default();
                        if !v.trim().is_empty() {
                            present.insert(name);
                            if show_phi && shown.len() < 20 {
                                shown.push(format!("{name}={v}"));
                            }
                        }
                    }
                }
                if n >= 1000 {
                    let cancel = Command {
                        field: field::C_CANCEL_RQ,
                        responding_to: Some(1),
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
    Ok((n, attrs))
}

/// A C-MOVE naming no study to an AE title nobody registered: the answer shows
/// whether destinations are checked. Nothing can be sent.
async fn move_to_unknown(a: &mut AsyncClientAssociation<TcpStream>) -> Option<u16> {
    let mut q = InMemDicomObject::new_empty();
    q.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("STUDY"),
    ));
    q.put(DataElement::new(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from("2.25.1"),
    ));
    let (pc, bytes) = identifier(a, STUDY_ROOT_MOVE, &q)?;
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

/// What a TLS handshake on a port showed.
pub struct TlsSeen {
    pub version: String,
    /// The server's certificate (DER), if it sent one.
    pub certificate: Option<Vec<u8>>,
}

/// The TLS handshake on `host:port`, if one succeeds (any certificate is
/// accepted here: the caller judges it).
pub async fn tls_offered(host: &str, port: u16, timeout: Duration) -> Option<TlsSeen> {
    use tokio_rustls::rustls;
    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?;
    let config = b
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Any))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let Ok(Ok(tcp)) = tokio::time::timeout(timeout, TcpStream::connect((host, port))).await else {
        return None;
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
    let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    let conn = tls.get_ref().1;
    Some(TlsSeen {
        version: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        certificate: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec()),
    })
}
