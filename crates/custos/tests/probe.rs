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

fn doctor(data: &DataDir, env: &[(&str, &str)]) -> (bool, serde_json::Value) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["doctor", "--json", "--data"]).arg(&data.path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let v = serde_json::from_str(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), v)
}

#[test]
fn doctor_is_quiet_on_defaults_and_names_each_insecure_setting() {
    let data = DataDir::new("doctor");
    let (ok, v) = doctor(&data, &[]);
    assert!(ok, "{v}");
    assert!(
        ids(&v, "critical").is_empty() && ids(&v, "high").is_empty(),
        "{v}"
    );

    // An insecure set-up, written by the test.
    data.cli(&[
        "peer",
        "add",
        "ANYONE",
        "--host",
        "0.0.0.0/0",
        "--allow",
        "echo,store,find,get,move",
    ])
    .success();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let insecure = [
        ("CUSTOS_DICOM_LISTEN", "0.0.0.0:11112"),
        ("CUSTOS_HTTP_LISTEN", "0.0.0.0:8080"),
        ("CUSTOS_HTTP_PLAINTEXT", "true"),
    ];
    let (ok, v) = doctor(&data, &insecure);
    assert!(!ok, "exit status 1 on high findings: {v}");
    let high = ids(&v, "high");
    for id in [
        "dicom-plain-beyond-loopback",
        "http-plain-beyond-loopback",
        "peer-any-address",
        "data-folder-open",
    ] {
        assert!(high.contains(&id.to_string()), "{id}: {v}");
    }
    assert!(
        ids(&v, "medium").contains(&"peer-all-rights-plain".to_string()),
        "{v}"
    );

    // An altered audit record is critical.
    let db = data.path.join("index.sqlite");
    let tamper = std::process::Command::new("python3")
        .args(["-c", &format!(
            "import sqlite3; c=sqlite3.connect('{}'); c.execute(\"UPDATE audit SET body=replace(body,'ANYONE','NOBODY')\"); c.commit()",
            db.display()
        )])
        .status()
        .unwrap();
    assert!(tamper.success());
    let (_, v) = doctor(&data, &[]);
    assert!(
        ids(&v, "critical").contains(&"audit-broken".to_string()),
        "{v}"
    );
}
