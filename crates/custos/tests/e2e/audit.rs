//! The audit trail: every association, store, query, retrieve, delete, login
//! failure, user change and start/stop becomes a DICOM audit record; the
//! chain verifies, and breaks at the first record altered behind its back.

use crate::common::*;
use serde_json::{Value, json};

const PW_BOSS: &str = "the chief of imaging 7";
const PW_AUD: &str = "reads the trail only 3";
const PW_RAD: &str = "reading room 4 lights";
/// CT_small.dcm's SOP Instance UID.
const CT_SOP: &str = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322";

fn has(records: &[Value], code: u64, pred: impl Fn(&Value) -> bool) -> bool {
    records
        .iter()
        .any(|r| r["record"]["event"]["code"] == code && pred(&r["record"]))
}

#[test]
fn every_access_is_recorded_and_the_chain_shows_tampering() {
    let data = DataDir::new("audit");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get");
    add_user(&data, "boss", "admin", PW_BOSS);
    add_user(&data, "aud", "auditor", PW_AUD);
    add_user(&data, "rad", "radiologist", PW_RAD);
    let token = create_token(&data, "rad", "1d", false);
    let boss_reader = create_token(&data, "boss", "1d", true);
    let token_id = token.split('_').nth(1).unwrap().to_string();
    let server = Server::start(&data);
    let port = server.port();
    let ct = pydicom_test_files().join("CT_small.dcm");

    assert!(echo(&server, "PYSCU", "CUSTOS").ok());
    assert!(!echo(&server, "INTRUDER", "CUSTOS").ok());
    python(&[
        "store",
        "--port",
        &port,
        "--aet",
        "PYSCU",
        ct.to_str().unwrap(),
    ])
    .success();
    python(&[
        "find",
        "--port",
        &port,
        "--aet",
        "PYSCU",
        "--level",
        "STUDY",
        "-k",
        "PatientName=Compressed*",
    ])
    .success();
    getscu_study(&server, "PYSCU", CT_STUDY, &data.path.join("get"));
    // A retrieve naming one instance by its UID alone is still found by
    // patient and study in the trail.
    let one = data.path.join("get-one");
    std::fs::create_dir_all(&one).unwrap();
    let got = dcmtk(
        "getscu",
        &[
            "-aet",
            "PYSCU",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &port,
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            &format!("SOPInstanceUID={CT_SOP}"),
            "-od",
            one.to_str().unwrap(),
        ],
    );
    assert!(got.ok() && walk_files(&one).len() == 1, "{}", got.stderr());
    web(
        &server,
        "rad",
        PW_RAD,
        &["search", "--level", "studies", "-k", "PatientID=1CT1"],
    )
    .success();
    let wado = data.path.join("wado");
    web(
        &server,
        "rad",
        PW_RAD,
        &[
            "raw-get",
            "--path",
            &format!("/dicom-web/studies/{CT_STUDY}"),
            "--out",
            wado.to_str().unwrap(),
        ],
    )
    .success();
    let r = web_requests(
        &server,
        json!([
            { "method": "GET", "path": "/dicom-web/studies", "auth": { "basic": ["rad", "a wrong password"] } },
            { "method": "GET", "path": "/api/audit", "auth": { "basic": ["aud", PW_AUD] } },
            { "method": "GET", "path": "/api/audit", "auth": { "basic": ["rad", PW_RAD] } },
            { "method": "GET", "path": "/dicom-web/studies", "auth": { "bearer": token } },
            { "method": "GET", "path": "/dicom-web/studies", "auth": { "bearer": token } },
            // Refused by the route's check, and by the handler (a read-only
            // token keeps de-identification but not the store it needs).
            { "method": "DELETE", "path": format!("/api/studies/{CT_STUDY}"), "auth": { "basic": ["rad", PW_RAD] } },
            { "method": "POST", "path": format!("/api/studies/{CT_STUDY}/deidentify"), "auth": { "bearer": boss_reader },
              "headers": { "Content-Type": "application/json" }, "body": "{}" },
            { "method": "DELETE", "path": format!("/api/studies/{CT_STUDY}"), "auth": { "basic": ["boss", PW_BOSS] } },
            // The newest records (what the web page shows), not the oldest.
            { "method": "GET", "path": "/api/audit?last=1", "auth": { "basic": ["aud", PW_AUD] } },
            { "method": "GET", "path": "/api/audit?last=2", "auth": { "basic": ["aud", PW_AUD] } },
        ]),
    );
    let seqs = |i: usize| -> Vec<i64> {
        serde_json::from_str::<serde_json::Value>(r[i]["body"].as_str().unwrap_or("[]"))
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|rec| rec["seq"].as_i64().unwrap())
            .collect()
    };
    let (newest, last) = (seqs(8), seqs(9));
    assert_eq!(newest.len(), 1, "{}", r[8]);
    assert!(newest[0] > 10, "not the start of the trail: {newest:?}");
    assert_eq!(last.len(), 2, "{}", r[9]);
    assert_eq!(last[1], last[0] + 1);
    assert!(last[1] >= newest[0], "{last:?} after {newest:?}");

    assert_eq!(r[1]["status"], 200, "the auditor reads the trail: {}", r[1]);
    assert!(
        r[1]["body"].as_str().unwrap().contains("\"prev_hash\""),
        "{}",
        r[1]["body"]
    );
    assert_eq!(r[2]["status"], 403, "a radiologist does not");
    assert_eq!(r[3]["status"], 200, "bearer token");
    assert_eq!(r[4]["status"], 200, "the same token again");
    assert_eq!(r[5]["status"], 403, "a radiologist does not delete");
    assert_eq!(r[6]["status"], 403, "{}", r[6]);
    assert_eq!(r[7]["status"], 200, "deletion");
    // Once the server is quiet, this node's checkpoint names the newest
    // record (it is rewritten at most every 250 ms under load, never left behind).
    let newest = || {
        let out = std::process::Command::new("python3")
            .args(["-c", &format!(
                "import sqlite3; print(sqlite3.connect('{}').execute('SELECT max(seq) FROM audit').fetchone()[0])",
                data.path.join("index.sqlite").display()
            )])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let head = || {
        let text = std::fs::read_to_string(data.path.join("audit.head")).unwrap_or_default();
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["seq"].as_i64())
    };
    let mut caught_up = false;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (h, n) = (head(), newest());
        if h == Some(n) {
            caught_up = true;
            break;
        }
    }
    assert!(
        caught_up,
        "audit.head {:?} never reached the newest record {}",
        head(),
        newest()
    );
    assert!(server.stop(), "clean stop");

    let records = data.audit_export();
    for r in &records {
        eprintln!("{}", r["record"]);
    }
    let peer_is = |ae: &'static str| move |b: &Value| b["peer"] == ae;
    // A request refused for want of a right is a security alert, with who.
    assert!(has(&records, 110113, |b| b["user"] == "rad"
        && b["source"] == "127.0.0.1"
        && b["detail"].as_str().unwrap().contains(
            "HTTP request refused: GET /api/audit needs the audit right"
        )));
    // A deletion is recorded once, with its patient.
    let deletions: Vec<_> = records
        .iter()
        .filter(|r| r["record"]["event"]["code"] == 110105)
        .collect();
    assert_eq!(deletions.len(), 1, "{deletions:?}");
    assert_eq!(
        deletions[0]["record"]["detail"],
        format!("deleted {CT_STUDY}: 1 instances").as_str()
    );
    assert_eq!(deletions[0]["record"]["patients"], json!(["1CT1"]));
    // Both name the study asked for and its patient.
    let names_ct =
        |b: &Value| b["studies"] == json!([CT_STUDY]) && b["patients"] == json!(["1CT1"]);
    assert!(has(&records, 110113, |b| b["user"] == "rad"
        && names_ct(b)
        && b["detail"].as_str().unwrap().contains(&format!(
            "HTTP request refused: DELETE /api/studies/{CT_STUDY} needs the delete right"
        ))));
    assert!(has(&records, 110113, |b| b["user"] == "boss"
        && names_ct(b)
        && b["detail"].as_str().unwrap().contains(&format!(
            "HTTP request refused: POST /api/studies/{CT_STUDY}/deidentify by the handler"
        ))));
    assert!(has(&records, 110100, |b| b["detail"]
        .as_str()
        .unwrap()
        .contains("start")));
    assert!(has(&records, 110100, |b| b["detail"]
        .as_str()
        .unwrap()
        .contains("stop")));
    assert!(has(&records, 110114, |b| b["outcome"] == 0
        && b["peer"] == "PYSCU"
        && b["source"] == "127.0.0.1"));
    assert!(has(&records, 110114, |b| b["outcome"] == 4
        && b["peer"] == "INTRUDER"
        && b["detail"]
            .as_str()
            .unwrap()
            .contains("not a registered peer")));
    assert!(has(&records, 110104, |b| b["action"] == "C"
        && b["patients"] == json!(["1CT1"])
        && b["studies"] == json!([CT_STUDY])));
    assert!(has(&records, 110112, |b| peer_is("PYSCU")(b)
        && b["detail"]
            .as_str()
            .unwrap()
            .contains("PatientName=Compressed*")));
    assert!(has(&records, 110104, |b| b["action"] == "R"
        && b["detail"].as_str().unwrap().starts_with("C-GET")));
    assert!(
        has(&records, 110104, |b| b["action"] == "R"
            && b["detail"].as_str().unwrap().contains(CT_SOP)
            && b["patients"] == json!(["1CT1"])
            && b["studies"] == json!([CT_STUDY])),
        "the C-GET by SOP Instance UID alone is not named by patient and study"
    );
    assert!(has(&records, 110112, |b| b["user"] == "rad"
        && b["patients"] == json!(["1CT1"])));
    assert!(has(&records, 110104, |b| b["user"] == "rad"
        && b["detail"].as_str().unwrap().starts_with("WADO")));
    assert!(has(&records, 110114, |b| b["outcome"] == 4
        && b["user"] == "rad"
        && b["detail"] == "HTTP authentication failed"));
    assert!(has(&records, 110101, |b| b["user"] == "aud"));
    // A bearer token is a login on its first use, not on every request.
    let token_logins = records
        .iter()
        .filter(|r| {
            r["record"]["event"]["code"] == 110114
                && r["record"]["detail"] == format!("HTTP login (API token {token_id})")
        })
        .count();
    assert_eq!(token_logins, 1);
    // The deletion names the patient (looked up before the rows went).
    assert!(has(&records, 110105, |b| b["user"] == "boss"
        && b["studies"] == json!([CT_STUDY])
        && b["patients"].to_string().contains("1CT1")));
    assert!(has(&records, 110113, |b| b["detail"]
        == "user rad added with role radiologist"));
    assert!(
        !records
            .iter()
            .any(|r| r["record"].to_string().contains(PW_RAD)),
        "no password in the trail"
    );

    // The chain verifies; XML export speaks the DICOM audit message format.
    let ok = data.cli(&["audit", "verify"]);
    assert!(ok.ok(), "{}", ok.stdout());
    let xml = data.cli(&["audit", "export", "--xml"]).success().stdout();
    assert!(
        xml.contains("<EventID csd-code=\"110112\" codeSystemName=\"DCM\""),
        "{xml}"
    );
    // Events that name their kind carry it (PS3.15 A.5.3): the server's
    // start and stop, logins, a refused request.
    // Transfers name the sending and the receiving participant.
    for role in ["110153", "110152"] {
        assert!(
            xml.contains(&format!(
                "<RoleIDCode csd-code=\"{role}\" codeSystemName=\"DCM\""
            )),
            "no RoleIDCode {role}"
        );
    }
    for kind in ["110120", "110121", "110122", "110132"] {
        assert!(
            xml.contains(&format!(
                "<EventTypeCode csd-code=\"{kind}\" codeSystemName=\"DCM\""
            )),
            "no EventTypeCode {kind}"
        );
    }
    // Every message validates against the DICOM Audit Message Schema
    // (PS3.15 A.5.1, shipped in tests/data).
    let xml_file = data.path.join("export.xml");
    std::fs::write(&xml_file, &xml).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/py/validate_audit.py"
    );
    let checked = std::process::Command::new("python3")
        .arg(script)
        .arg(&xml_file)
        .output()
        .unwrap();
    let checked: Value = serde_json::from_slice(&checked.stdout)
        .unwrap_or_else(|_| panic!("validator: {}", String::from_utf8_lossy(&checked.stderr)));
    assert_eq!(checked["invalid_count"], 0, "{checked}");
    // (The trail now also records the JSON export read above.)
    assert!(
        checked["messages"].as_u64().unwrap() as usize > records.len(),
        "{checked}"
    );

    // Alter one record behind Custos's back: verify names it.
    let store_seq = records
        .iter()
        .find(|r| r["record"]["event"]["code"] == 110104 && r["record"]["action"] == "C")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    let db = data.path.join("index.sqlite");
    let tamper = std::process::Command::new("python3")
        .args(["-c", &format!(
            "import sqlite3; c=sqlite3.connect('{}'); c.execute(\"UPDATE audit SET body=replace(body,'1CT1','0000') WHERE seq={store_seq}\"); c.commit()",
            db.display()
        )])
        .status()
        .unwrap();
    assert!(tamper.success());
    let broken = data.cli(&["audit", "verify"]);
    assert!(!broken.ok());
    assert!(
        broken
            .stdout()
            .contains(&format!("BROKEN: the chain breaks at record {store_seq}")),
        "{}",
        broken.stdout()
    );
}

/// A C-GET its requester breaks off part-way (a viewer closed) is recorded
/// again with how far it got: the record made when it began counts every
/// instance as sent.
#[test]
fn a_retrieve_broken_off_is_recorded_with_how_far_it_got() {
    let data = DataDir::new("audit-broken-get");
    data.add_peer("PYSCU", "127.0.0.1", 104, "store,get");
    let server = Server::start(&data);
    let study = "1.2.826.0.1.3680043.8.498.77001";
    let specs: Vec<String> = (1..=6)
        .map(|i| {
            json!({
                "StudyInstanceUID": study,
                "SeriesInstanceUID": format!("{study}.1"),
                "SOPInstanceUID": format!("{study}.1.{i}"),
                "PatientID": "BROKEN-1",
            })
            .to_string()
        })
        .collect();
    make_and_store(&server, &data.path.join("src"), "PYSCU", &specs);
    let got = json_of(
        &python(&[
            "get",
            "--port",
            &server.port(),
            "--aet",
            "PYSCU",
            "-k",
            &format!("StudyInstanceUID={study}"),
            "--abort-after",
            "2",
        ])
        .success(),
    );
    assert_eq!(got["status"], Value::Null, "no final response: {got}");
    assert!(server.stop(), "clean stop");

    let records = data.audit_export();
    let retrieves: Vec<&Value> = records
        .iter()
        .map(|r| &r["record"])
        .filter(|r| r["event"]["code"] == 110104 && r["peer"] == "PYSCU")
        .filter(|r| r["detail"].as_str().unwrap().starts_with("C-GET"))
        .collect();
    assert_eq!(retrieves.len(), 2, "{retrieves:?}");
    assert!(
        retrieves[0]["detail"]
            .as_str()
            .unwrap()
            .ends_with(": 6 instances")
    );
    let ended = retrieves[1];
    assert_eq!(ended["outcome"], 4, "{ended}");
    let detail = ended["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("C-GET ended (association failed: ")
            && detail.ends_with("1 sent, 1 failed, 0 with warnings, 4 not attempted"),
        "{detail}"
    );
}

#[test]
fn records_are_forwarded_to_a_syslog_collector_over_tls() {
    let data = DataDir::new("audit-syslog");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo");
    let certs = data.path.join("certs");
    data.cli(&[
        "cert",
        "issue",
        "collector",
        "--host",
        "127.0.0.1",
        "--out",
        certs.to_str().unwrap(),
    ])
    .success();
    let port = free_port().to_string();
    let received = data.path.join("syslog.txt");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/py/syslog_collector.py"
    );
    let mut collector = std::process::Command::new("python3")
        .args([
            script,
            "--port",
            &port,
            "--seconds",
            "30",
            "--out",
            received.to_str().unwrap(),
        ])
        .arg("--cert")
        .arg(certs.join("collector.cert.pem"))
        .arg("--key")
        .arg(certs.join("collector.key.pem"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    first_line_is(&mut collector, "ready");
    let url = format!("tls://127.0.0.1:{port}");
    let server = Server::start_with(&data, &[("CUSTOS_AUDIT_SYSLOG_URL", url.as_str())]);
    assert!(echo(&server, "PYSCU", "CUSTOS").ok());
    assert!(!echo(&server, "STRANGER", "CUSTOS").ok());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let text = loop {
        let t = std::fs::read_to_string(&received).unwrap_or_default();
        if t.contains("STRANGER") || std::time::Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = collector.kill();
    let _ = collector.wait();
    assert!(text.contains("IHE+RFC-3881"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("<85>1 ")
            && l.contains("csd-code=\"110114\"")
            && l.contains("STRANGER")),
        "{text}"
    );
    // PS3.15 A.5.2.2: a DICOM participant's AE title as AETITLES=...
    assert!(
        text.contains("AlternativeUserID=\"AETITLES=PYSCU\""),
        "{text}"
    );
    // Records written while the server was down (the CLI registering the
    // peer) are forwarded too, each with its place in the chain.
    assert!(
        text.lines()
            .any(|l| l.contains("peer PYSCU registered") && l.contains(" link=\"")),
        "{text}"
    );
}

/// Runs SQL against a data folder's SQLite index behind Custos's back.
fn tamper(data: &DataDir, sql: &str) {
    let db = data.path.join("index.sqlite");
    let ok = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(&db)
        .arg(sql)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Copies the SQLite index (with its write-ahead log) to `to`, or back.
fn copy_index(from: &std::path::Path, to: &std::path::Path) {
    for ext in ["", "-wal"] {
        let (f, t) = (
            format!("{}{ext}", from.display()),
            format!("{}{ext}", to.display()),
        );
        let _ = std::fs::remove_file(&t);
        if std::path::Path::new(&f).exists() {
            std::fs::copy(&f, &t).unwrap();
        }
    }
    let _ = std::fs::remove_file(format!("{}-shm", to.display()));
}

fn verify(data: &DataDir) -> (bool, String) {
    let run = data.cli(&["audit", "verify"]);
    (run.ok(), run.stdout())
}

#[test]
fn cutting_emptying_retiming_or_rehashing_the_trail_is_detected() {
    let data = DataDir::new("audit-cut");
    for ae in ["A1", "A2", "A3", "A4"] {
        data.add_peer(ae, "127.0.0.1", 104, "echo");
    }
    let (ok, out) = verify(&data);
    assert!(ok, "{out}");
    let key = data.path.join("audit.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600,
        "the chain's key is private"
    );
    let records = data.audit_export();
    let last = records.last().unwrap()["seq"].as_i64().unwrap();

    // The newest records removed: the checkpoint outside the index names them.
    let backup = data.path.join("index.backup");
    let live = data.path.join("index.sqlite");
    copy_index(&live, &backup);
    tamper(
        &data,
        &format!("DELETE FROM audit WHERE seq >= {}", last - 1),
    );
    let (ok, out) = verify(&data);
    assert!(!ok && out.contains("cut or replaced"), "{out}");
    // Records written after the cut (by anyone) do not cover it up.
    data.add_peer("A6", "127.0.0.1", 104, "echo");
    let (ok, out) = verify(&data);
    assert!(!ok && out.contains("cut or replaced"), "{out}");

    // Every record removed.
    tamper(&data, "DELETE FROM audit");
    let (ok, out) = verify(&data);
    assert!(!ok && out.contains("empty"), "{out}");
    // ... and the trail begun again by the next record written (keyed with
    // the same key, linked from the start): still not the trail this node
    // wrote to.
    data.add_peer("A5", "127.0.0.1", 104, "echo");
    let since = data.audit_export();
    assert!(
        since
            .iter()
            .any(|e| e.to_string().contains("verification found a break")),
        "the failed verification is itself recorded: {since:?}"
    );
    let (ok, out) = verify(&data);
    assert!(!ok && out.contains("begun again"), "{out}");

    // The time of a record moved: the time is under the link.
    copy_index(&backup, &live);
    let (ok, out) = verify(&data);
    assert!(ok, "restored: {out}");
    tamper(
        &data,
        "UPDATE audit SET at = '2020-01-01T00:00:00.000Z' WHERE seq = 2",
    );
    let (ok, out) = verify(&data);
    assert!(!ok && out.contains("breaks at record 2"), "{out}");

    // A record rewritten and every link after it recomputed as a database
    // writer could (SHA-256, without the key).
    copy_index(&backup, &live);
    let rechain = r#"
import hashlib, sqlite3, sys
c = sqlite3.connect(sys.argv[1])
rows = c.execute("SELECT seq, body FROM audit ORDER BY seq").fetchall()
prev = "0" * 64
for seq, body in rows:
    if seq == 2:
        body = body.replace("A1", "ZZ")
    h = hashlib.sha256((prev + "\n" + body).encode()).hexdigest()
    c.execute("UPDATE audit SET body=?, prev_hash=?, hash=? WHERE seq=?", (body, prev, h, seq))
    prev = h
c.commit()
"#;
    let ok = std::process::Command::new("python3")
        .args(["-c", rechain])
        .arg(data.path.join("index.sqlite"))
        .status()
        .unwrap();
    assert!(ok.success());
    let (ok, out) = verify(&data);
    assert!(!ok, "a chain rewritten without the key verifies: {out}");

    // The server refuses a key that does not link the trail.
    copy_index(&backup, &live);
    std::fs::write(&key, "11".repeat(32)).unwrap();
    let run = data.cli(&["audit", "verify"]);
    assert!(!run.ok());
    assert!(run.stderr().contains("audit.key"), "{}", run.stderr());
}

/// Holds the SQLite index's write lock, as another program's long
/// transaction would, until dropped. Reads go on (write-ahead log).
struct WriteLock(std::process::Child);

impl WriteLock {
    fn take(db: &std::path::Path) -> WriteLock {
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys,time\n\
                 c=sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n\
                 c.execute('BEGIN IMMEDIATE')\n\
                 print('locked', flush=True)\n\
                 time.sleep(300)",
            ])
            .arg(db)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        first_line_is(&mut child, "locked");
        WriteLock(child)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn reads_go_on_while_the_index_refuses_records_and_a_kill_loses_none() {
    let data = DataDir::new("audit-down");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get");
    add_user(&data, "rad", "radiologist", PW_RAD);
    let server = Server::process(&data);
    let ct = pydicom_test_files().join("CT_small.dcm");
    let port = server.port();
    let (stored, said) = storescu_one(&server, "PYSCU", &ct);
    assert!(stored, "{said}");
    let qido = |id: &str| {
        json!({ "method": "GET", "path": format!("/dicom-web/studies?PatientID={id}"),
                "auth": { "basic": ["rad", PW_RAD] } })
    };
    let served = web_requests(&server, json!([qido("1CT1")]));
    assert_eq!(served[0]["status"], 200, "{served:?}");

    // The index cannot take records (its write lock is held elsewhere):
    // queries and retrievals are served, their records synced into the
    // node's audit.reserve first...
    let lock = WriteLock::take(&data.path.join("index.sqlite"));
    let served = web_requests(
        &server,
        json!([
            qido("WHILELOCKED"),
            { "method": "GET", "path": format!("/dicom-web/studies/{CT_STUDY}/metadata"),
              "auth": { "basic": ["rad", PW_RAD] } },
        ]),
    );
    for r in &served {
        assert_eq!(r["status"], 200, "{served:?}");
    }
    let find = dcmtk(
        "findscu",
        &[
            "-S",
            "-aet",
            "PYSCU",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &port,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=FINDLOCKED",
        ],
    );
    assert!(find.ok(), "{}", find.stderr());
    // ...so that killing the server before the index took them loses none.
    server.kill9();
    drop(lock);
    // Until a server appends them, doctor says they wait...
    let waiting = |data: &DataDir| {
        doctor(data, &[]).1["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == "audit-reserve-waiting")
            .map(|f| f["evidence"].as_str().unwrap().to_string())
    };
    let said = waiting(&data).expect("doctor names the records in the reserve");
    assert!(said.starts_with("3 record(s)"), "{said}");
    // ...and not once a server has put them in the trail (at its start, not
    // with the next record).
    let server = Server::process(&data);
    wait_until(
        "the reserve emptied into the trail",
        std::time::Duration::from_secs(10),
        || waiting(&data).is_none(),
    );
    assert!(server.stop());
    let records = data.audit_export();
    let naming = |what: &str| {
        records
            .iter()
            .filter(|r| r["record"]["detail"].as_str().unwrap_or("").contains(what))
            .count()
    };
    assert_eq!(naming("PatientID=WHILELOCKED"), 1, "the QIDO-RS");
    assert_eq!(naming("PatientID=FINDLOCKED"), 1, "the C-FIND");
    assert_eq!(naming(&format!("WADO {CT_STUDY}")), 1, "the retrieval");
    assert!(verify(&data).0, "{}", verify(&data).1);
}
