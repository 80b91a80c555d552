//! `/metrics` (issue 16): scraped with a monitor's credentials and parsed as
//! the Prometheus text format after stores, a refused association, a web
//! query and a lockout; no patient data in it; other roles refused.

use std::collections::HashMap;

use crate::common::*;

const PROM_PW: &str = "scrapes 42 every 15 s";

/// The samples of an exposition text, by `name{labels}` as written; every
/// line must be a comment or `series value` with a number.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("`{l}`"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("`{l}`"));
            (series.to_string(), value)
        })
        .collect()
}

#[test]
fn metrics_count_what_happened_without_patient_data() {
    metrics_scrape(&DataDir::new("metrics"));
}

#[test]
fn metrics_on_postgres_and_s3() {
    let blobs = std::env::temp_dir().join(format!("custos-metrics-blobs-{}", std::process::id()));
    let data = node(
        "metrics-pg",
        &fresh_database(),
        &blobs,
        Some(&s3_url("metrics-pg")),
    );
    metrics_scrape(&data);
    let _ = std::fs::remove_dir_all(&blobs);
}

fn metrics_scrape(data: &DataDir) {
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store");
    add_user(data, "prom", "monitor", PROM_PW);
    add_user(data, "boss", "admin", "watches 42 the watchers");
    add_user(data, "reader", "radiologist", "reads 42 the images");
    let path = data.path.join("custos.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("lockout_after = 10", "lockout_after = 3")
        .replace("lockout_secs = 300", "lockout_secs = 2");
    std::fs::write(&path, text).unwrap();
    let server = Server::start(data);
    let (_, uids) = make_and_store(
        &server,
        &data.path.with_extension("src"),
        "MODALITY",
        &[
            r#"{"PatientID": "METRIC-PAT-1", "PatientName": "Secret^Sally"}"#.into(),
            r#"{"PatientID": "METRIC-PAT-1", "PatientName": "Secret^Sally"}"#.into(),
        ],
    );
    let stranger = dcmtk(
        "echoscu",
        &[
            "-aet",
            "STRANGER",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &server.port(),
        ],
    );
    assert!(!stranger.ok(), "a stranger's association is rejected");
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "GET", "path": "/dicom-web/studies?PatientID=METRIC-PAT-1", "auth": {"basic": ["reader", "reads 42 the images"]}},
            {"method": "GET", "path": "/metrics", "auth": {"basic": ["reader", "reads 42 the images"]}},
            {"method": "GET", "path": "/metrics"},
            {"method": "BREW", "path": "/dicom-web/studies"},
        ]),
    );
    assert_eq!(r[0]["status"], 200, "{r:?}");
    assert_eq!(
        r[1]["status"], 403,
        "a radiologist may not read the metrics"
    );
    assert_eq!(r[2]["status"], 401, "nobody anonymous");
    // Three wrong passwords lock the user (and this address) out for 2 s.
    let bad: Vec<serde_json::Value> = (0..3)
        .map(|_| serde_json::json!({"method": "GET", "path": "/dicom-web/studies", "auth": {"basic": ["boss", "not the password"]}}))
        .collect();
    let r = web_requests(&server, serde_json::Value::Array(bad));
    assert_eq!(r[2]["status"], 401, "{r:?}");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let r = web_requests(
        &server,
        serde_json::json!([{"method": "GET", "path": "/metrics", "auth": {"basic": ["prom", PROM_PW]}, "body_limit": 1_000_000}]),
    );
    assert_eq!(r[0]["status"], 200, "{:?}", r[0]);
    assert!(
        r[0]["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r[0]["body"].as_str().unwrap();
    let s = samples(text);
    let get = |k: &str| {
        s.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{text}"))
    };
    assert_eq!(
        get(r#"custos_instances_total{protocol="dimse",status="0000"}"#),
        2.0
    );
    assert!(get("custos_ingest_bytes_total") > 1000.0);
    assert!(get(r#"custos_associations_total{result="accepted",reason=""}"#) >= 1.0);
    assert_eq!(
        get(r#"custos_associations_total{result="rejected",reason="calling_ae"}"#),
        1.0
    );
    assert_eq!(
        get(r#"custos_dimse_request_seconds_count{op="C-STORE"}"#),
        2.0
    );
    assert_eq!(
        get(r#"custos_dimse_request_seconds_bucket{op="C-STORE",le="+Inf"}"#),
        2.0
    );
    assert_eq!(
        get(r#"custos_http_request_seconds_count{method="GET",route="/dicom-web/studies"}"#),
        4.0
    );
    assert_eq!(
        get(r#"custos_http_responses_total{method="GET",route="/dicom-web/studies",code="200"}"#),
        1.0
    );
    assert_eq!(
        get("custos_lockouts_total"),
        2.0,
        "boss and this address locked out"
    );
    assert_eq!(get(r#"custos_forward_queue_depth{state="pending"}"#), 0.0);
    assert!(text.contains("# TYPE custos_dimse_request_seconds histogram"));
    for secret in [
        "METRIC-PAT-1",
        "Secret",
        "Sally",
        &uids[0],
        "boss",
        "STRANGER",
    ] {
        assert!(!text.contains(secret), "`{secret}` in the metrics");
    }
    server.stop();
}
