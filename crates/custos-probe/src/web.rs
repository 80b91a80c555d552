//! The HTTP side of the probe: does a web endpoint answer queries without
//! credentials, or with the passwords archives ship with? And TLS versions
//! older than 1.2 on any port.

use std::time::Duration;

use crate::{Finding, Severity, legacy_versions};

/// Credentials that ship as defaults in common archives.
const DEFAULT_CREDENTIALS: [(&str, &str); 3] = [
    ("orthanc", "orthanc"),
    ("admin", "admin"),
    ("admin", "password"),
];

/// A finding if `host:port` accepts TLS 1.0 or 1.1: medium next to TLS
/// 1.2+, high when it is `only` what the port offers.
pub async fn legacy_tls(host: &str, port: u16, timeout: Duration, only: bool) -> Option<Finding> {
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

/// Where archives answer queries over HTTP: DICOMweb (Custos, Orthanc's
/// plugin, most others), dcm4chee's default archive, Orthanc's own REST API.
const WEB_PATHS: [&str; 3] = [
    "/dicom-web/studies?limit=1",
    "/dcm4chee-arc/aets/DCM4CHEE/rs/studies?limit=1",
    "/studies",
];

/// Findings about the web endpoint at `url`.
pub async fn web(url: &str) -> Vec<Finding> {
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
