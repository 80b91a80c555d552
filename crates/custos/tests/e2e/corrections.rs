//! Corrections (issue 16): a study stored under the wrong patient is
//! rewritten with the right one (from the CLI), two patients are merged
//! (from the API); QIDO-RS, C-FIND and WADO-RS show the corrected values,
//! the SOP Instance UIDs and pixels stay, the old copies are gone, and each
//! correction is audited as Patient Record with both IDs.

use crate::common::*;

const ADMIN: (&str, &str) = ("registrar", "fixes 42 the wrong ids");
const READER: (&str, &str) = ("viewonly", "reads 42 what is right");

#[test]
fn a_study_is_corrected_and_two_patients_merged() {
    corrections(&DataDir::new("correct"));
}

#[test]
fn corrections_on_postgres_and_s3() {
    let blobs = std::env::temp_dir().join(format!("custos-fix-blobs-{}", std::process::id()));
    let data = node(
        "correct-pg",
        &fresh_database(),
        &blobs,
        Some(&s3_url("correct-pg")),
    );
    corrections(&data);
    let _ = std::fs::remove_dir_all(&blobs);
}

fn corrections(data: &DataDir) {
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store,find");
    add_user(data, ADMIN.0, "admin", ADMIN.1);
    add_user(data, READER.0, "radiologist", READER.1);
    let server = Server::start(data);
    let study = |n: u32| format!("1.2.826.0.1.3680043.2.1125.55.{n}");
    let spec = |n: u32, patient: &str, name: &str, i: u32| {
        format!(
            r#"{{"PatientID": "{patient}", "PatientName": "{name}", "StudyInstanceUID": "{}", "SeriesInstanceUID": "{}.1", "InstanceNumber": "{i}"}}"#,
            study(n),
            study(n)
        )
    };
    let (files, uids) = make_and_store(
        &server,
        &data.path.with_extension("src"),
        "MODALITY",
        &[
            spec(1, "WRONG-1", "Wrong^Person", 1),
            spec(1, "WRONG-1", "Wrong^Person", 2),
            spec(2, "OLD-7", "Old^Record", 1),
            spec(3, "KEEP-9", "Other^Patient", 1),
        ],
    );
    let blobs_before = data.cli(&["fsck"]).success().stdout();

    // From the command line: study 1 belongs to RIGHT-1, Müller^Jürgen.
    let out = data
        .cli(&[
            "study",
            "correct",
            &study(1),
            "--set",
            "PatientID=RIGHT-1",
            "--set",
            "PatientName=Müller^Jürgen",
        ])
        .success()
        .stdout();
    assert!(out.contains("2 instances rewritten"), "{out}");
    let refused = data.cli(&["study", "correct", &study(1), "--set", "SOPInstanceUID=1.2"]);
    assert!(!refused.ok() && refused.stderr().contains("cannot be corrected"));

    let studies_of = |patient: &str| {
        let mut found: Vec<(String, String)> = json_of(
            &web(
                &server,
                READER.0,
                READER.1,
                &[
                    "search",
                    "--level",
                    "studies",
                    "-k",
                    &format!("PatientID={patient}"),
                ],
            )
            .success(),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["0020000D"]["Value"][0].as_str().unwrap().to_string(),
                s["00100010"]["Value"][0]["Alphabetic"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
        found.sort();
        found
    };
    assert_eq!(
        studies_of("RIGHT-1"),
        vec![(study(1), "Müller^Jürgen".to_string())]
    );
    assert!(studies_of("WRONG-1").is_empty());
    // WADO-RS: the file itself is corrected; its UID and pixels are the same.
    let original = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib, sys, pydicom; print(hashlib.sha256(pydicom.dcmread(sys.argv[1]).PixelData).hexdigest())",
            &files[0],
        ])
        .output()
        .unwrap();
    let original = String::from_utf8_lossy(&original.stdout).trim().to_string();
    let got = json_of(
        &web(
            &server,
            READER.0,
            READER.1,
            &[
                "retrieve",
                "--study",
                &study(1),
                "--series",
                &format!("{}.1", study(1)),
                "--sop",
                &uids[0],
            ],
        )
        .success(),
    );
    assert_eq!(got["sop"], uids[0].as_str());
    assert_eq!(got["patient"], "Müller^Jürgen");
    assert_eq!(got["pixel_sha256"], original.as_str(), "pixels unchanged");
    // C-FIND (DCMTK) sees the corrected patient.
    let find = dcmtk(
        "findscu",
        &[
            "-S",
            "-aet",
            "MODALITY",
            "-aec",
            "CUSTOS",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=RIGHT-1",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            &server.port(),
        ],
    );
    assert!(find.stderr().contains(&study(1)), "{}", find.stderr());

    // Over the API: OLD-7 is the same person as RIGHT-1.
    let admin = serde_json::json!({"basic": [ADMIN.0, ADMIN.1]});
    let reader = serde_json::json!({"basic": [READER.0, READER.1]});
    let json = serde_json::json!({"Content-Type": "application/json"});
    let merge = serde_json::json!({"from": "OLD-7", "into": {"PatientID": "RIGHT-1", "PatientName": "Müller^Jürgen"}}).to_string();
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "POST", "path": "/api/patients/merge", "auth": reader, "headers": json, "body": merge},
            {"method": "POST", "path": "/api/patients/merge", "auth": admin, "headers": json,
             "body": serde_json::json!({"from": "OLD-7", "into": {"StudyDescription": "x"}}).to_string()},
            {"method": "POST", "path": "/api/patients/merge", "auth": admin, "headers": json, "body": merge},
            {"method": "POST", "path": "/api/patients/merge", "auth": admin, "headers": json, "body": merge},
            {"method": "POST", "path": format!("/api/studies/{}/correct", study(9)), "auth": admin, "headers": json,
             "body": "{\"attributes\": {\"PatientID\": \"X\"}}"},
        ]),
    );
    assert_eq!(r[0]["status"], 403);
    assert_eq!(r[1]["status"], 422, "{:?}", r[1]);
    assert_eq!(r[2]["status"], 200, "{:?}", r[2]);
    let merged: serde_json::Value = serde_json::from_str(r[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(merged, serde_json::json!({"studies": 1, "instances": 1}));
    assert_eq!(r[3]["status"], 404, "nothing left under OLD-7");
    assert_eq!(r[4]["status"], 404);
    assert_eq!(
        studies_of("RIGHT-1"),
        vec![
            (study(1), "Müller^Jürgen".to_string()),
            (study(2), "Müller^Jürgen".to_string())
        ]
    );
    assert_eq!(studies_of("KEEP-9").len(), 1, "other patients untouched");
    // The old copies are gone: the archive holds one blob per instance.
    let fsck = data.cli(&["fsck"]).success().stdout();
    assert_eq!(
        fsck.lines().last(),
        blobs_before.lines().last(),
        "fsck before {blobs_before} after {fsck}"
    );
    let trail = data.audit_export();
    let records: Vec<String> = trail
        .iter()
        .map(|e| e.to_string())
        .filter(|t| t.contains("110110"))
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records[0].contains("WRONG-1") && records[0].contains("RIGHT-1"));
    assert!(records[1].contains("OLD-7") && records[1].contains("RIGHT-1"));
    // The one made through the API names the address it came from.
    assert!(
        trail
            .iter()
            .map(|e| &e["record"])
            .any(|r| r["event"]["code"] == 110110
                && r["user"] == ADMIN.0
                && r["source"] == "127.0.0.1"),
        "{records:?}"
    );
    server.stop();
}

/// A client that sends a correction and hangs up once the handler runs (over
/// HTTP/1.1 its connection then closes while the correction is under way)
/// does not cut the correction off: every instance ends up rewritten, none
/// keeps the old patient, and the correction is audited. Before, the handler
/// was dropped with the connection, before its audit record.
#[test]
fn a_correction_whose_client_hangs_up_completes_and_is_audited() {
    use tokio::io::AsyncWriteExt;

    let data = DataDir::new("correct-hangup");
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store,find");
    add_user(&data, ADMIN.0, "admin", ADMIN.1);
    let server = Server::start(&data);
    let study = "1.2.826.0.1.3680043.2.1125.56.1";
    const N: usize = 40;
    let specs: Vec<String> = (1..=N)
        .map(|i| {
            format!(
                r#"{{"PatientID": "GONE-1", "PatientName": "Gone^Client", "StudyInstanceUID": "{study}", "SeriesInstanceUID": "{study}.1", "InstanceNumber": "{i}"}}"#
            )
        })
        .collect();
    make_and_store(
        &server,
        &data.path.with_extension("src"),
        "MODALITY",
        &specs,
    );

    let body = r#"{"attributes": {"PatientID": "STAYED-1"}}"#;
    let credentials = basic_auth(ADMIN.0, ADMIN.1);
    let head = format!(
        "POST /api/studies/{study}/correct HTTP/1.1\r\nHost: localhost\r\nAuthorization: {credentials}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let port = server.http.port();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use tokio::io::AsyncReadExt;
        let mut tls = tls_connect(port).await;
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        // "100 Continue" comes once the handler reads the body: it runs.
        let mut interim = [0u8; 25];
        tls.read_exact(&mut interim).await.unwrap();
        assert!(
            interim.starts_with(b"HTTP/1.1 100 Continue"),
            "{}",
            String::from_utf8_lossy(&interim)
        );
        tls.write_all(body.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        // Hangs up without waiting for the answer.
        let _ = tls.shutdown().await;
    });

    let count = |patient: &str| {
        let found = json_of(
            &web(
                &server,
                ADMIN.0,
                ADMIN.1,
                &[
                    "search",
                    "--level",
                    "instances",
                    "-k",
                    &format!("PatientID={patient}"),
                ],
            )
            .success(),
        );
        found.as_array().map_or(0, Vec::len)
    };
    let audited = || {
        data.audit_export()
            .iter()
            .any(|e| e.to_string().contains("110110") && e.to_string().contains("STAYED-1"))
    };
    wait_until(
        "the correction audited",
        std::time::Duration::from_secs(60),
        audited,
    );
    assert_eq!(count("STAYED-1"), N, "instances rewritten");
    assert_eq!(count("GONE-1"), 0, "instances left with the old patient");
    server.stop();
}
