//! `custos probe` against an archive open the way the 2019 ones were (a
//! permissive pynetdicom SCP with a fake patient) and against Custos in its
//! default configuration. Loopback only.

mod common;

use common::*;
use std::io::BufRead;

fn probe(args: &[&str]) -> Run {
    let out = std::process::Command::new(BIN)
        .arg("probe")
        .args(args)
        .output()
        .expect("run custos probe");
    Run(out)
}

fn ids(v: &serde_json::Value, severity: &str) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_open_archive_is_reported_without_leaking_what_it_leaks() {
    let port = free_port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py/peer.py");
    let mut scp = std::process::Command::new("python3")
        .args([script, "permissive-scp", "--port", &port, "--seconds", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(scp.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let target = format!("127.0.0.1:{port}");
    let run = probe(&[&target, "--json"]);
    assert!(!run.ok(), "exit status 1 when something critical is found");
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).expect("only JSON on stdout");
    assert!(
        ids(&v, "critical").contains(&"dicom-find-phi".to_string()),
        "{v}"
    );
    let high = ids(&v, "high");
    for id in ["dicom-any-calling-ae", "dicom-store-open", "dicom-get-open"] {
        assert!(high.contains(&id.to_string()), "{id} missing: {v}");
    }
    assert!(ids(&v, "medium").contains(&"dicom-no-tls".to_string()));
    assert!(
        !run.stdout().contains("SECRET") && !run.stdout().contains("LEAK0001"),
        "no PHI without --show-phi"
    );
    assert!(
        run.stdout().contains("PatientName"),
        "which identifying attributes were present"
    );
    let shown = probe(&[&target, "--json", "--show-phi"]);
    assert!(
        shown.stdout().contains("SECRET^PATIENT"),
        "{}",
        shown.stdout()
    );
    let _ = scp.kill();
    let _ = scp.wait();
}

#[test]
fn custos_in_its_default_configuration_has_nothing_high_or_critical() {
    let data = DataDir::new("probe-custos");
    let server = Server::start(&data);
    let http = format!("https://127.0.0.1:{}", server.http.port());
    let run = probe(&[
        &format!("127.0.0.1:{}", server.port()),
        "--json",
        "--http",
        &http,
    ]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).expect("only JSON on stdout");
    assert!(run.ok(), "{v}");
    assert!(
        ids(&v, "critical").is_empty() && ids(&v, "high").is_empty(),
        "{v}"
    );
    assert!(
        ids(&v, "info").contains(&"dicom-unknown-ae-refused".to_string()),
        "{v}"
    );
    assert!(
        ids(&v, "info").contains(&"web-auth-required".to_string()),
        "{v}"
    );
    assert!(
        ids(&v, "info").contains(&"dicom-tls".to_string())
            || ids(&v, "medium").contains(&"dicom-no-tls".to_string())
    );
}
