//! `custos probe HOST[:PORT]`: runs the checks of `custos_probe` (DICOM, TLS,
//! an optional web endpoint) and prints them; text or `--json`; exit status 1 when anything
//! high or critical is found. It probes only the host it is given.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use custos_probe::{Finding, ProbeOptions, Severity, legacy_tls, probe, tls_offered, web};

pub struct Args {
    pub target: String,
    pub called: Vec<String>,
    pub http: Option<String>,
    pub json: bool,
    pub show_phi: bool,
    pub tls: bool,
    pub confirm_retrieve: bool,
}

const DEFAULT_CALLED: [&str; 5] = ["ANY-SCP", "ORTHANC", "CUSTOS", "DCM4CHEE", "PACS"];

pub async fn run(a: Args) -> Result<bool> {
    let (host, port) = match a.target.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse().context("PORT is a number")?,
        ),
        _ => (a.target.clone(), if a.tls { 2762 } else { 104 }),
    };
    let called = if a.called.is_empty() {
        DEFAULT_CALLED.iter().map(|s| s.to_string()).collect()
    } else {
        a.called.clone()
    };
    let timeout = Duration::from_secs(5);
    let mut findings = probe(&ProbeOptions {
        host: host.clone(),
        port,
        called,
        show_phi: a.show_phi,
        timeout,
        tls: a.tls,
        confirm_retrieve: a.confirm_retrieve,
    })
    .await;
    let seen = match tls_offered(&host, port, timeout).await {
        Some(t) => Some((port, t)),
        None if port != 2762 && !a.tls => {
            tls_offered(&host, 2762, timeout).await.map(|t| (2762, t))
        }
        None => None,
    };
    match seen {
        Some((on, t)) => {
            findings.push(Finding {
                id: "dicom-tls",
                severity: Severity::Info,
                title: "DICOM over TLS is offered".into(),
                evidence: format!("{} handshake on port {on}", t.version),
                fix: "nothing to do",
            });
            findings.push(
                legacy_tls(&host, on, timeout, false)
                    .await
                    .unwrap_or_else(|| Finding {
                        id: "tls-legacy-refused",
                        severity: Severity::Info,
                        title: "TLS 1.0 and 1.1 are refused".into(),
                        evidence: format!(
                            "ClientHellos for TLS 1.0 and 1.1 on port {on} got no ServerHello"
                        ),
                        fix: "nothing to do",
                    }),
            );
            match t.certificate.as_deref().and_then(custos_tls::cert_facts) {
                Some((days, _)) if days < 0 => findings.push(Finding {
                    id: "tls-cert-expired",
                    severity: Severity::High,
                    title: "the TLS certificate has expired".into(),
                    evidence: format!("expired {} days ago", -days),
                    fix: "renew the certificate",
                }),
                Some((days, self_signed)) => {
                    if days < 30 {
                        findings.push(Finding {
                            id: "tls-cert-expiring",
                            severity: Severity::Medium,
                            title: "the TLS certificate expires soon".into(),
                            evidence: format!("{days} days left"),
                            fix: "renew the certificate",
                        });
                    }
                    if self_signed {
                        findings.push(Finding {
                            id: "tls-cert-self-signed",
                            severity: Severity::Low,
                            title: "the TLS certificate is self-signed".into(),
                            evidence: "issuer and subject are the same".into(),
                            fix: "use a certificate from a CA the peers can verify",
                        });
                    }
                    findings.push(Finding {
                        id: "tls-cert",
                        severity: Severity::Info,
                        title: "TLS certificate validity".into(),
                        evidence: format!("valid for {days} more days"),
                        fix: "nothing to do",
                    });
                }
                None => {}
            }
        }
        None if a.tls => {
            findings.push(Finding {
                id: "dicom-no-tls",
                severity: Severity::Medium,
                title: "no TLS 1.2/1.3 handshake on the port given with --tls".into(),
                evidence: format!("no TLS 1.2/1.3 handshake on {port}"),
                fix: "offer DICOM TLS (PS3.15, port 2762) and require it from peers outside the imaging network",
            });
            findings.extend(legacy_tls(&host, port, timeout, true).await);
        }
        None => findings.push(Finding {
            id: "dicom-no-tls",
            severity: Severity::Medium,
            title: "DICOM over TLS is not offered".into(),
            evidence: format!("no TLS handshake on {port} or 2762"),
            fix: "offer DICOM TLS (PS3.15, port 2762) and require it from peers outside the imaging network",
        }),
    }
    if let Some(url) = &a.http {
        findings.extend(web(url).await);
    }
    Ok(report(
        &format!("custos probe {host}:{port}"),
        json!({ "target": format!("{host}:{port}"), "tls": a.tls, "http": a.http }),
        &findings,
        a.json,
    ))
}

/// Prints findings as text or as one JSON object (`head` plus `findings`);
/// returns false when any is high or critical (the exit status).
/// Findings as JSON objects (id, severity, title, evidence, fix).
pub fn findings_json(findings: &[Finding]) -> serde_json::Value {
    json!(findings
        .iter()
        .map(|f| json!({ "id": f.id, "severity": f.severity.name(), "title": f.title, "evidence": f.evidence, "fix": f.fix }))
        .collect::<Vec<_>>())
}

pub fn report(title: &str, head: serde_json::Value, findings: &[Finding], as_json: bool) -> bool {
    if as_json {
        let mut out = head;
        out["findings"] = findings_json(findings);
        println!("{out}");
    } else {
        println!("{title}");
        if findings.is_empty() {
            println!("nothing to report");
        }
        for f in findings {
            println!(
                "[{}] {}: {}\n    evidence: {}\n    fix: {}",
                f.severity.name(),
                f.id,
                f.title,
                f.evidence,
                f.fix
            );
        }
    }
    findings.iter().all(|f| f.severity < Severity::High)
}
