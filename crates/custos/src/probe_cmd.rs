//! `custos probe HOST[:PORT]`: the checks of `custos_dimse::probe`, plus TLS
//! and an optional web endpoint; text or `--json`; exit status 1 when anything
//! high or critical is found. It probes only the host it is given.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use custos_dimse::probe::{Finding, ProbeOptions, Severity, legacy_versions, probe, tls_offered};

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
/// Credentials that ship as defaults in common archives.
const DEFAULT_CREDENTIALS: [(&str, &str); 3] = [
    ("orthanc", "orthanc"),
    ("admin", "admin"),
    ("admin", "password"),
];

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
        findings.extend(probe_web(url).await);
    }
    Ok(report(
        &format!("custos probe {host}:{port}"),
        json!({ "target": format!("{host}:{port}"), "tls": a.tls, "http": a.http }),
        &findings,
        a.json,
    ))
}

/// A finding if `host:port` accepts TLS 1.0 or 1.1: medium next to TLS
/// 1.2+, high when it is `only` what the port offers.
async fn legacy_tls(host: &str, port: u16, timeout: Duration, only: bool) -> Option<Finding> {
    let legacy = legacy_versions(host, port, timeout).await;
    if legacy.is_empty() {
        return None;
    }
    let versions = legacy.join(" and ");
    Some(Finding {
        id: "tls-legacy-accepted",
        severity: if only {
            Severity::High
        } else {
            Severity::Medium
        },
        title: if only {
            format!("only {versions} is offered")
        } else {
            format!("accepts {versions}")
        },
        evidence: format!(
            "the server answered a {} ClientHello on port {port} with a ServerHello of that version",
            legacy.join(" / ")
        ),
        fix: "allow only TLS 1.2 and 1.3 (PS3.15 BCP 195 profiles)",
    })
}

/// Prints findings as text or as one JSON object (`head` plus `findings`);
/// returns false when any is high or critical (the exit status).
pub fn report(title: &str, head: serde_json::Value, findings: &[Finding], as_json: bool) -> bool {
    if as_json {
        let list: Vec<_> = findings
            .iter()
            .map(|f| json!({ "id": f.id, "severity": f.severity.name(), "title": f.title, "evidence": f.evidence, "fix": f.fix }))
            .collect();
        let mut out = head;
        out["findings"] = json!(list);
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

/// Where archives answer queries over HTTP: DICOMweb (Custos, Orthanc's
/// plugin, most others), dcm4chee's default archive, Orthanc's own REST API.
const WEB_PATHS: [&str; 3] = [
    "/dicom-web/studies?limit=1",
    "/dcm4chee-arc/aets/DCM4CHEE/rs/studies?limit=1",
    "/studies",
];

async fn probe_web(url: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let base = url.trim_end_matches('/');
    let client = match reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(_) => return out,
    };
    if base.starts_with("http://") {
        out.push(Finding {
            id: "web-no-tls",
            severity: Severity::Medium,
            title: "the web endpoint is plain HTTP".into(),
            evidence: base.to_string(),
            fix: "serve the API only over HTTPS",
        });
    }
    // DICOMweb where most archives put it, then Orthanc's REST API: the
    // first path that exists (anything but 404) is the one judged.
    let mut path = String::new();
    let mut answer = None;
    for candidate in WEB_PATHS {
        path = format!("{base}{candidate}");
        match client.get(&path).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                answer = Some(Ok(r.status()));
            }
            other => {
                answer = Some(other.map(|r| r.status()));
                break;
            }
        }
    }
    match answer {
        Some(Ok(status)) if status.is_success() => out.push(Finding {
            id: "web-anonymous",
            severity: Severity::Critical,
            title: "the web API answers without credentials".into(),
            evidence: format!("GET {path} -> {status}"),
            fix: "require authentication on every route",
        }),
        Some(Ok(status)) if status == reqwest::StatusCode::NOT_FOUND => out.push(Finding {
            id: "web-no-api",
            severity: Severity::Info,
            title: "no DICOMweb or REST API found at the usual paths".into(),
            evidence: format!("{} -> 404", WEB_PATHS.join(", ")),
            fix: "nothing to do",
        }),
        Some(Ok(status)) => out.push(Finding {
            id: "web-auth-required",
            severity: Severity::Info,
            title: "the web API requires credentials".into(),
            evidence: format!("GET {path} without credentials -> {status}"),
            fix: "nothing to do",
        }),
        Some(Err(e)) => out.push(Finding {
            id: "web-unreachable",
            severity: Severity::Info,
            title: "the web endpoint did not answer".into(),
            evidence: e.to_string(),
            fix: "nothing to do",
        }),
        None => {}
    }
    for (u, p) in DEFAULT_CREDENTIALS {
        if let Ok(r) = client.get(&path).basic_auth(u, Some(p)).send().await
            && r.status().is_success()
        {
            out.push(Finding {
                id: "web-default-credentials",
                severity: Severity::High,
                title: "a well-known default password is accepted".into(),
                evidence: format!("user `{u}` with its default password -> {}", r.status()),
                fix: "change default passwords; Custos has none",
            });
        }
    }
    out
}
