//! `custos probe`: checks one DICOM node the way the 2019 researchers found
//! exposed archives — can anyone associate, query, retrieve or store? — and
//! reports findings without patient data unless asked. Gentle: one
//! association at a time, bounded timeouts, no writes, and no images pulled
//! unless `--confirm-retrieve` is given.

mod scu;
mod tls;
mod web;

use std::future::Future;
use std::time::Duration;

use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{PresentationContextResultReason, UserVariableItem};

use custos_dimse::command::status;
use custos_dimse::link::Stream;
use custos_dimse::syntaxes::*;

pub use tls::{TlsSeen, legacy_versions, tls_offered};
pub use web::{legacy_tls, web};

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
    /// Speak DICOM over TLS to the port.
    pub tls: bool,
    /// Pull one instance by C-GET when an anonymous query found a study.
    pub confirm_retrieve: bool,
}

const CT_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const COMMON_CALLING: [&str; 4] = ["ANY-SCU", "STORESCU", "FINDSCU", "ECHOSCU"];

/// Runs the DICOM checks, over TLS when asked.
pub async fn probe(o: &ProbeOptions) -> Vec<Finding> {
    if !o.tls {
        return checks(o, |calling, called| {
            scu::associate_plain(o, calling, called)
        })
        .await;
    }
    let Some(config) = tls::any_certificate() else {
        return vec![Finding {
            id: "probe-tls-unavailable",
            severity: Severity::Info,
            title: "the probe could not set up TLS".into(),
            evidence: "no TLS client configuration".into(),
            fix: "nothing to do",
        }];
    };
    checks(o, |calling, called| {
        scu::associate_tls(o, config.clone(), calling, called)
    })
    .await
}

async fn checks<S, F, Fut>(o: &ProbeOptions, associate: F) -> Vec<Finding>
where
    S: Stream,
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Result<AsyncClientAssociation<S>, String>>,
{
    let mut findings = Vec::new();
    let (calling, called) = match stranger_accepted(o, &associate).await {
        Ok(pair) => pair,
        Err(refused) => {
            findings.push(Finding {
                id: "dicom-unknown-ae-refused",
                severity: Severity::Info,
                title: "associations from unknown AE titles are refused".into(),
                evidence: format!("{refused} association attempts with unregistered calling AE titles were rejected or failed"),
                fix: "nothing to do",
            });
            return findings;
        }
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
    // Any called AE title, too? (One made up for this run.)
    let made_up = format!("NOSUCH{:06}", std::process::id() % 1_000_000);
    if let Ok(a) = associate(calling.clone(), made_up.clone()).await {
        let _ = a.release().await;
        findings.push(Finding {
            id: "dicom-any-called-ae",
            severity: Severity::Medium,
            title: "accepts any called AE title".into(),
            evidence: format!("called AE `{made_up}` was accepted"),
            fix: "accept associations only for this archive's own AE title",
        });
    }
    let Ok(mut a) = associate(calling.clone(), called.clone()).await else {
        return findings;
    };
    findings.extend(implementation(&a));
    let accepted = contexts(&a, &mut findings);
    let found_study = queries(o, &mut a, &accepted, &mut findings).await;
    let _ = a.release().await;
    if accepted.iter().any(|s| s == STUDY_ROOT_MOVE) {
        move_to_stranger(&associate, &calling, &called, &mut findings).await;
    }
    if accepted.iter().any(|s| s == STUDY_ROOT_GET) {
        get_anonymously(o, &associate, &calling, &called, found_study, &mut findings).await;
    }
    findings
}

/// The first (calling, called) pair of AE titles nobody registered that the
/// node accepts; or how many attempts it refused.
async fn stranger_accepted<S, F, Fut>(
    o: &ProbeOptions,
    associate: &F,
) -> Result<(String, String), usize>
where
    S: Stream,
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Result<AsyncClientAssociation<S>, String>>,
{
    let random = format!("PROBE{:06}", std::process::id() % 1_000_000);
    let mut callings = vec![random.clone()];
    callings.extend(COMMON_CALLING.iter().map(|s| s.to_string()));
    let mut accepted_by: Option<(String, String)> = None;
    let mut refused = 0;
    'outer: for called in &o.called {
        for calling in &callings {
            match associate(calling.clone(), called.clone()).await {
                Ok(a) => {
                    accepted_by = Some((calling.clone(), called.clone()));
                    let _ = a.release().await;
                    break 'outer;
                }
                Err(_) => refused += 1,
            }
        }
    }
    accepted_by.ok_or(refused)
}

/// What the node says it is (Implementation Class UID and version name).
fn implementation<S: Stream>(a: &AsyncClientAssociation<S>) -> Option<Finding> {
    let impl_uid = a.user_variables().iter().find_map(|v| match v {
        UserVariableItem::ImplementationClassUID(u) => Some(u.clone()),
        _ => None,
    })?;
    let version = a
        .user_variables()
        .iter()
        .find_map(|v| match v {
            UserVariableItem::ImplementationVersionName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Some(Finding {
        id: "dicom-implementation",
        severity: Severity::Info,
        title: format!("implementation: {}", product_of(&impl_uid, &version)),
        evidence: format!("Implementation Class UID {impl_uid}, version name `{version}`"),
        fix: "nothing to do",
    })
}

/// The abstract syntaxes accepted for a stranger (and whether storage is among them).
fn contexts<S: Stream>(a: &AsyncClientAssociation<S>, findings: &mut Vec<Finding>) -> Vec<String> {
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
    accepted
}

/// Anonymous C-FIND at STUDY and PATIENT level; returns a study it found.
async fn queries<S: Stream>(
    o: &ProbeOptions,
    a: &mut AsyncClientAssociation<S>,
    accepted: &[String],
    findings: &mut Vec<Finding>,
) -> Option<String> {
    let mut found_study = None;
    if accepted.iter().any(|s| s == STUDY_ROOT_FIND) {
        match scu::find(a, scu::FindLevel::Study, o.show_phi).await {
            Ok(m) if m.count == 0 => findings.push(Finding {
                id: "dicom-find-open",
                severity: Severity::Medium,
                title: "anonymous C-FIND is accepted (no records returned)".into(),
                evidence: "Study Root C-FIND at STUDY level returned 0 matches".into(),
                fix: "accept queries only from registered workstations",
            }),
            Ok(m) => {
                findings.push(Finding {
                    id: "dicom-find-phi",
                    severity: Severity::Critical,
                    title: "anonymous C-FIND returns patient records".into(),
                    evidence: format!(
                        "{} studies returned to an unknown AE; attributes present: {}",
                        m.count, m.attributes
                    ),
                    fix: "accept queries only from registered workstations; require user identity",
                });
                found_study = m.first_study;
            }
            Err(e) => findings.push(Finding {
                id: "dicom-find-error",
                severity: Severity::Low,
                title: "C-FIND context accepted but the query failed".into(),
                evidence: e,
                fix: "accept queries only from registered workstations",
            }),
        }
    }
    if accepted.iter().any(|s| s == PATIENT_ROOT_FIND) {
        findings.push(
            match scu::find(a, scu::FindLevel::Patient, o.show_phi).await {
                Ok(m) if m.count == 0 => Finding {
                    id: "dicom-find-patients-open",
                    severity: Severity::Medium,
                    title: "anonymous patient-level C-FIND is accepted (no records returned)"
                        .into(),
                    evidence: "Patient Root C-FIND at PATIENT level returned 0 matches".into(),
                    fix: "accept queries only from registered workstations",
                },
                Ok(m) => Finding {
                    id: "dicom-find-patients-phi",
                    severity: Severity::Critical,
                    title: "anonymous C-FIND lists patients".into(),
                    evidence: format!(
                        "{} patients returned to an unknown AE; attributes present: {}",
                        m.count, m.attributes
                    ),
                    fix: "accept queries only from registered workstations; require user identity",
                },
                Err(e) => Finding {
                    id: "dicom-find-error",
                    severity: Severity::Low,
                    title: "Patient Root C-FIND context accepted but the query failed".into(),
                    evidence: e,
                    fix: "accept queries only from registered workstations",
                },
            },
        );
    }
    found_study
}

/// C-MOVE to a destination nobody registered.
async fn move_to_stranger<S, F, Fut>(
    associate: &F,
    calling: &str,
    called: &str,
    findings: &mut Vec<Finding>,
) where
    S: Stream,
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Result<AsyncClientAssociation<S>, String>>,
{
    if let Ok(mut a) = associate(calling.to_string(), called.to_string()).await {
        let st = scu::move_to_unknown(&mut a).await;
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
}

/// C-GET offered to a stranger; with --confirm-retrieve, one found study pulled.
async fn get_anonymously<S, F, Fut>(
    o: &ProbeOptions,
    associate: &F,
    calling: &str,
    called: &str,
    found_study: Option<String>,
    findings: &mut Vec<Finding>,
) where
    S: Stream,
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Result<AsyncClientAssociation<S>, String>>,
{
    if o.confirm_retrieve
        && let Some(study) = &found_study
        && let Ok(mut a) = associate(calling.to_string(), called.to_string()).await
    {
        let pulled = scu::get_one(&mut a, study).await;
        let _ = a.release().await;
        match pulled {
            Ok(p) if p.instances > 0 => findings.push(Finding {
                id: "dicom-get-confirmed",
                severity: Severity::Critical,
                title: "images can be retrieved anonymously (C-GET)".into(),
                evidence: format!(
                    "C-GET of one found study sent {} instance(s), {} bytes, to an unknown AE before the probe cancelled; nothing was kept",
                    p.instances, p.bytes
                ),
                fix: "offer C-GET only to registered workstations; require user identity",
            }),
            Ok(p) => findings.push(Finding {
                id: "dicom-get-nothing",
                severity: Severity::Info,
                title: "C-GET of a found study sent no instance".into(),
                evidence: format!(
                    "final status {}",
                    p.status.map(|s| format!("{s:04X}")).unwrap_or_default()
                ),
                fix: "nothing to do",
            }),
            Err(e) => findings.push(Finding {
                id: "dicom-get-error",
                severity: Severity::Low,
                title: "C-GET context accepted but the retrieve failed".into(),
                evidence: e,
                fix: "offer C-GET only to registered workstations",
            }),
        }
    } else {
        findings.push(Finding {
            id: "dicom-get-open",
            severity: Severity::High,
            title: "C-GET is offered to an unknown AE".into(),
            evidence: "Study Root C-GET context accepted (nothing was retrieved)".into(),
            fix: "offer C-GET only to registered workstations",
        });
    }
}

fn service_name(uid: &str) -> &'static str {
    match uid {
        VERIFICATION => "verification",
        CT_STORAGE => "storage (CT)",
        PATIENT_ROOT_FIND => "query (Patient Root C-FIND)",
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
