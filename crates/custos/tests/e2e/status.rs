//! What the status page and the audit viewer read: `/api/status` (stored,
//! by modality, ingest over the last hour, recent associations accepted and
//! rejected), `/api/status/checks` (doctor's findings), and the audit API's
//! filters and chain verification — each checked against what the test did
//! over DICOM and HTTPS.

use serde_json::{Value, json};

use crate::common::*;

const PW_BOSS: &str = "status 42 of the archive";
const PW_AUD: &str = "filters 42 the trail";
const PW_RAD: &str = "reads 42 the images";

fn get(server: &Server, who: (&str, &str), path: &str) -> (u64, Value) {
    let r = web_requests(
        server,
        json!([{
            "method": "GET", "path": path, "auth": { "basic": [who.0, who.1] }, "body_limit": 10_000_000,
        }]),
    );
    let status = r[0]["status"].as_u64().unwrap();
    let body = serde_json::from_str(r[0]["body"].as_str().unwrap()).unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn the_status_page_and_the_audit_filters_show_what_happened() {
    let data = DataDir::new("status");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store");
    add_user(&data, "boss", "admin", PW_BOSS);
    add_user(&data, "aud", "auditor", PW_AUD);
    add_user(&data, "rad", "radiologist", PW_RAD);
    let server = Server::start(&data);
    let (boss, aud, rad) = (("boss", PW_BOSS), ("aud", PW_AUD), ("rad", PW_RAD));

    assert!(!echo(&server, "INTRUDER", "CUSTOS").ok());
    let ct = pydicom_test_files().join("CT_small.dcm");
    let mr = pydicom_test_files().join("MR_small.dcm");
    python(&[
        "store",
        "--port",
        &server.port(),
        "--aet",
        "PYSCU",
        ct.to_str().unwrap(),
        mr.to_str().unwrap(),
    ])
    .success();
    web(
        &server,
        "rad",
        PW_RAD,
        &["retrieve-study", "--study", CT_STUDY],
    )
    .success();

    // The status: two instances, one CT and one MR, both in the last hour;
    // the stranger's association rejected, PYSCU's accepted (newest first).
    let (code, s) = get(&server, boss, "/api/status");
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["archive"]["instances"], 2, "{s}");
    assert_eq!(s["archive"]["studies"], 2);
    assert!(s["archive"]["stored_bytes"].as_u64().unwrap() > 10_000);
    let mut modalities: Vec<(String, u64)> = s["by_modality"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["modality"].as_str().unwrap().into(),
                m["instances"].as_u64().unwrap(),
            )
        })
        .collect();
    modalities.sort();
    assert_eq!(modalities, [("CT".into(), 1), ("MR".into(), 1)]);
    assert_eq!(s["ingest"]["last_hour"], 2, "{s}");
    let associations = s["associations"].as_array().unwrap();
    let accepted = |peer: &str| {
        associations
            .iter()
            .find(|a| a["peer"] == peer)
            .map(|a| a["accepted"].as_bool().unwrap())
    };
    assert_eq!(accepted("PYSCU"), Some(true), "{s}");
    assert_eq!(accepted("INTRUDER"), Some(false), "{s}");
    let times: Vec<&str> = associations
        .iter()
        .map(|a| a["time"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    // Doctor's checks run from the page: findings with their fields.
    let (code, c) = get(&server, boss, "/api/status/checks");
    assert_eq!(code, 200, "{c}");
    let findings = c["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .all(|f| f["id"].is_string() && f["fix"].is_string()),
        "{c}"
    );
    assert!(
        c["disk_free_percent"].as_u64().is_some_and(|p| p <= 100),
        "{c}"
    );
    // Not for a radiologist or an auditor.
    for who in [rad, aud] {
        assert_eq!(get(&server, who, "/api/status").0, 403);
        assert_eq!(get(&server, who, "/api/status/checks").0, 403);
    }

    // The audit API's filters, as the auditor's page uses them.
    let records = |q: &str| {
        let (code, body) = get(&server, aud, &format!("/api/audit?last=500&{q}"));
        assert_eq!(code, 200, "{q}: {body}");
        body.as_array().unwrap().clone()
    };
    let by_rad = records("user=rad");
    assert!(!by_rad.is_empty());
    assert!(
        by_rad.iter().all(|r| r["record"]["user"] == "rad"),
        "{by_rad:?}"
    );
    let about_ct = records("patient=1CT1");
    assert!(
        about_ct.iter().any(|r| r["record"]["user"] == "rad"),
        "the WADO read"
    );
    assert!(
        about_ct.iter().any(|r| r["record"]["peer"] == "PYSCU"),
        "the C-STORE"
    );
    assert!(about_ct.iter().all(|r| {
        r["record"]["patients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "1CT1")
    }));
    let logins = records("event=110114");
    assert!(
        logins
            .iter()
            .all(|r| r["record"]["event"]["code"] == 110114)
    );
    assert!(logins.iter().any(|r| r["record"]["peer"] == "INTRUDER"));
    // Combined, and by day (UTC): today has them, a day long past none.
    // (Today from the clock: the status page's "since" is an hour ago, which
    // is yesterday during the first hour of a UTC day.)
    let now = time::OffsetDateTime::now_utc();
    let today = format!(
        "{}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    let today_rad = records(&format!("user=rad&from={today}&to={today}"));
    assert_eq!(today_rad.len(), by_rad.len());
    assert!(records("to=2000-01-01").is_empty());
    // Trail order, newest last; `before` pages back.
    let seqs: Vec<i64> = by_rad.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let older = records(&format!("user=rad&before={}", seqs[seqs.len() - 1]));
    assert_eq!(older.len(), by_rad.len() - 1);
    assert_eq!(get(&server, aud, "/api/audit?from=yesterday").0, 400);

    // The chain verifies, from the page as from the CLI.
    let (code, v) = get(&server, aud, "/api/audit/verify");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["verified"], true, "{v}");
    assert!(v["records"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(get(&server, rad, "/api/audit/verify").0, 403);
}
