//! Forwarding (issue 15): `[[route]]` rules and manual sends through the
//! durable queue to DCMTK's storescp and pynetdicom, across a destination outage and a
//! SIGKILL of the server; whole studies once stable; STOW-RS to Orthanc's
//! DICOMweb plugin.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

const PW: &str = "forwards 4 the department";

/// DCMTK's storescp as `aet` on `port`, writing into `dir`, logging each
/// request it gets (`-v`) to `log`.
fn storescp(aet: &str, port: u16, dir: &Path, log: &Path) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new("/usr/bin/storescp")
        .args([
            "-v",
            "-aet",
            aet,
            "-od",
            dir.to_str().unwrap(),
            &port.to_string(),
        ])
        .env_remove("TCP_NODELAY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("storescp");
    wait_for_port(port);
    child
}

/// Adds `[[route]]` rules and a 1 s retry to the data folder's configuration.
fn configure(data: &DataDir, routes: &str) {
    let path = data.path.join("custos.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("retry_seconds = 10", "retry_seconds = 1");
    std::fs::write(&path, format!("{text}\n{routes}\n")).unwrap();
}

fn jobs(data: &DataDir, state: &str) -> Vec<Vec<String>> {
    data.cli(&["jobs", "list", "--state", state])
        .success()
        .stdout()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn routes_forward_matching_instances_and_retry_until_the_destination_answers() {
    let data = DataDir::new("route");
    let dest_port = free_port();
    data.add_peer("DEST", "127.0.0.1", dest_port, "echo");
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store");
    configure(
        &data,
        "[[route]]\nname = \"ct-only\"\ndestination = \"DEST\"\nmodality = \"ct\"\ncalling_ae = \"MODAL*\"\n[route.attributes]\nPatientID = \"r?\"",
    );
    add_user(&data, "admin2", "admin", PW);
    let server = Server::start(&data);
    let src = data.path.with_extension("src");
    let (files, _) = make_and_store(
        &server,
        &src,
        "MODALITY",
        &[
            r#"{"Modality": "CT", "PatientID": "R1"}"#.into(),
            r#"{"Modality": "CT", "PatientID": "R1"}"#.into(),
            r#"{"Modality": "OT", "PatientID": "R2", "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.88.1"}"#.into(),
            // A CT of a patient the rule's PatientID pattern leaves out.
            r#"{"Modality": "CT", "PatientID": "X9"}"#.into(),
        ],
    );
    // The destination is down: the two CT instances wait, with the reason.
    wait_until(
        "two forwards tried and failed",
        Duration::from_secs(30),
        || {
            let pending = jobs(&data, "pending");
            pending.len() == 2 && pending.iter().all(|j| j[2] != "0" && !j[6].is_empty())
        },
    );
    // The failed attempts are in the audit trail, with the destination.
    wait_until(
        "the failed forwards audited",
        Duration::from_secs(10),
        || {
            data.audit_export().iter().map(|e| &e["record"]).any(|r| {
                r["event"]["code"] == 110104
                    && r["outcome"] == 4
                    && r["peer"] == "DEST"
                    && r["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("instances to DEST failed"))
            })
        },
    );
    // It comes up: both arrive, byte for byte, and nothing else.
    let received = data.path.with_extension("received");
    let log = data.path.with_extension("storescp.log");
    let mut scp = storescp("DEST", dest_port, &received, &log);
    wait_until(
        "both CT instances forwarded",
        Duration::from_secs(60),
        || walk_files(&received).len() == 2 && jobs(&data, "done").len() == 2,
    );
    let mut sent: Vec<Vec<u8>> = files[..2]
        .iter()
        .map(|f| dataset_of(&std::fs::read(f).unwrap()).to_vec())
        .collect();
    let mut got: Vec<Vec<u8>> = walk_files(&received)
        .iter()
        .map(|f| dataset_of(&std::fs::read(f).unwrap()).to_vec())
        .collect();
    sent.sort();
    got.sort();
    assert!(sent == got, "forwarded data sets differ from those stored");

    // An administrator sends the OT study by hand.
    let queued = data
        .cli(&[
            "jobs",
            "send",
            "--study",
            "1.2.826.0.1.3680043.2.1125.88.1",
            "--to",
            "DEST",
        ])
        .success()
        .stdout();
    assert!(queued.contains("1 instances queued"), "{queued}");
    wait_until("the study sent by hand", Duration::from_secs(30), || {
        walk_files(&received).len() == 3
    });
    let refused = data.cli(&["jobs", "send", "--study", "1.2.3", "--to", "NOBODY"]);
    assert!(!refused.ok() && refused.stderr().contains("neither a registered peer"));
    // The same through the admin API.
    let admin = serde_json::json!({"basic": ["admin2", PW]});
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "GET", "path": "/api/jobs?state=done", "auth": admin},
            {"method": "POST", "path": "/api/studies/1.2.826.0.1.3680043.2.1125.88.1/send", "auth": admin,
             "headers": {"Content-Type": "application/json"}, "body": "{\"destination\": \"NOBODY\"}"},
            {"method": "POST", "path": "/api/studies/1.2.826.0.1.3680043.2.1125.88.1/send", "auth": admin,
             "headers": {"Content-Type": "application/json"}, "body": "{\"destination\": \"DEST\"}"},
        ]),
    );
    assert_eq!(r[0]["status"], 200, "{r:?}");
    let done: serde_json::Value = serde_json::from_str(r[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(done["jobs"].as_array().unwrap().len(), 3, "{done}");
    // Paged: two, then the one older than the second.
    let ids = |body: &serde_json::Value| -> Vec<i64> {
        let v: serde_json::Value = serde_json::from_str(body.as_str().unwrap()).unwrap();
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect()
    };
    let page = web_requests(
        &server,
        serde_json::json!([{"method": "GET", "path": "/api/jobs?state=done&limit=2", "auth": admin}]),
    );
    let first = ids(&page[0]["body"]);
    let page = web_requests(
        &server,
        serde_json::json!([{"method": "GET", "path": format!("/api/jobs?state=done&limit=2&before={}", first[1]), "auth": admin}]),
    );
    assert_eq!([first, ids(&page[0]["body"])].concat(), ids(&r[0]["body"]));
    assert_eq!(r[1]["status"], 422, "{r:?}");
    assert_eq!(r[2]["status"], 202, "{r:?}");
    wait_until(
        "the study sent again through the API",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("Received Store Request")
                .count()
                == 4
        },
    );
    let _ = scp.kill();
    let _ = scp.wait();

    let trail = data.audit_export();
    assert!(
        trail
            .iter()
            .any(|e| e.to_string().contains("forwarding") && e.to_string().contains("DEST")),
        "forwards are audited"
    );
    // The order to send, with who gave it: through the API, and on the
    // command line (the account that ran it).
    let sent_by = |user: &dyn Fn(&str) -> bool| {
        trail.iter().map(|e| &e["record"]).any(|r| {
            r["event"]["code"] == 110104
                && r["action"] == "E"
                && r["user"].as_str().is_some_and(user)
                && r["peer"] == "DEST"
                && r["studies"] == serde_json::json!(["1.2.826.0.1.3680043.2.1125.88.1"])
        })
    };
    assert!(
        sent_by(&|u| u == "admin2"),
        "the API's send is not audited with its user"
    );
    assert!(
        sent_by(&|u| u.starts_with("cli")),
        "`custos jobs send` is not audited"
    );
    server.stop();
}

/// A destination that takes the TCP connection and never answers holds its
/// own forwards (the association waits out the 120 s idle time), and no
/// other destination's: instances stored meanwhile still reach the other.
#[test]
fn a_silent_destination_holds_up_no_other() {
    let data = DataDir::new("route-silent");
    let (fast_port, slow) = (
        free_port(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let slow_port = slow.local_addr().unwrap().port();
    data.add_peer("FAST", "127.0.0.1", fast_port, "echo");
    data.add_peer("SLOW", "127.0.0.1", slow_port, "echo");
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store");
    configure(
        &data,
        "[[route]]\nname = \"slow\"\ndestination = \"SLOW\"\n[[route]]\nname = \"fast\"\ndestination = \"FAST\"",
    );
    // Accepts and keeps every connection, says nothing.
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::spawn({
        let held = held.clone();
        move || {
            for c in slow.incoming().flatten() {
                held.lock().unwrap().push(c);
            }
        }
    });
    let received = data.path.with_extension("received");
    let log = data.path.with_extension("storescp.log");
    let mut scp = storescp("FAST", fast_port, &received, &log);
    let server = Server::start(&data);
    let ct = [r#"{"Modality": "CT"}"#.to_string()];
    make_and_store(&server, &data.path.with_extension("src1"), "MODALITY", &ct);
    wait_until(
        "the first instance at FAST, SLOW connected",
        Duration::from_secs(30),
        || walk_files(&received).len() == 1 && held.lock().unwrap().len() == 1,
    );
    // SLOW still holds its association: the next instance reaches FAST
    // all the same, and SLOW's second job waits, untried.
    make_and_store(&server, &data.path.with_extension("src2"), "MODALITY", &ct);
    wait_until(
        "the second instance at FAST while SLOW is silent",
        Duration::from_secs(30),
        || walk_files(&received).len() == 2,
    );
    let pending = jobs(&data, "pending");
    assert_eq!(held.lock().unwrap().len(), 1, "SLOW was not tried again");
    let slow_jobs: Vec<&Vec<String>> = pending.iter().filter(|j| j[3] == "SLOW").collect();
    assert_eq!(slow_jobs.len(), 2, "{pending:?}");
    let attempts: Vec<&str> = slow_jobs.iter().map(|j| j[2].as_str()).collect();
    assert!(
        attempts.contains(&"1") && attempts.contains(&"0"),
        "{pending:?}"
    );
    let _ = scp.kill();
    let _ = scp.wait();
    server.stop();
}

#[test]
fn a_route_to_an_unregistered_peer_is_refused_at_start() {
    let data = DataDir::new("route-bad");
    configure(
        &data,
        "[[route]]\nname = \"lost\"\ndestination = \"NOBODY\"",
    );
    let mut serve = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["serve", "--data", data.path.to_str().unwrap()])
        .env("CUSTOS_DICOM_LISTEN", "127.0.0.1:0")
        .env("CUSTOS_DICOM_TLS_LISTEN", "")
        .env("CUSTOS_HTTP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    wait_until(
        "serve to refuse the configuration",
        Duration::from_secs(30),
        || {
            exited = serve.try_wait().unwrap();
            exited.is_some()
        },
    );
    assert!(!exited.unwrap().success());
    let out = serve.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`NOBODY` is neither a registered peer"),
        "{err}"
    );
}

#[test]
fn queued_forwards_survive_a_sigkill() {
    sigkill_trial(&DataDir::new("route-kill"));
}

#[test]
fn queued_forwards_survive_a_sigkill_on_postgres() {
    let store = std::env::temp_dir().join(format!("custos-route-blobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    sigkill_trial(&node("route-pg", &fresh_database(), &store, None));
    let _ = std::fs::remove_dir_all(&store);
}

/// 20 instances routed to a destination that is down, the server killed,
/// the destination up, the server restarted: each arrives once.
fn sigkill_trial(data: &DataDir) {
    let dest_port = free_port();
    data.add_peer("DEST", "127.0.0.1", dest_port, "echo");
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store");
    configure(data, "[[route]]\nname = \"all\"\ndestination = \"DEST\"");
    let server = Server::process(data);
    let specs: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"PatientID": "KILL", "InstanceNumber": "{i}"}}"#))
        .collect();
    make_and_store(
        &server,
        &data.path.with_extension("src"),
        "MODALITY",
        &specs,
    );
    wait_until("every forward tried once", Duration::from_secs(30), || {
        let pending = jobs(data, "pending");
        pending.len() == 20 && pending.iter().all(|j| j[2] != "0")
    });
    server.kill9();
    let received = data.path.with_extension("received");
    let log = data.path.with_extension("storescp.log");
    let mut scp = storescp("DEST", dest_port, &received, &log);
    let server = Server::process(data);
    // Jobs the killed server had taken stay leased for up to 120 s.
    wait_until(
        "all 20 forwarded after the restart",
        Duration::from_secs(180),
        || jobs(data, "done").len() == 20,
    );
    assert_eq!(walk_files(&received).len(), 20);
    server.stop();
    let _ = scp.kill();
    let _ = scp.wait();
    // Each was sent once: storescp logged one request per instance.
    let requests = std::fs::read_to_string(&log)
        .unwrap()
        .matches("Received Store Request")
        .count();
    assert_eq!(requests, 20, "sent exactly once each");
}

/// pynetdicom as a forwarding destination (`peer.py receive`): a Storage
/// SCP keeping what it gets, until `count` instances arrived.
fn pynetdicom_destination(aet: &str, port: u16, dir: &Path, count: usize) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/peer.py");
    let child = Command::new("python3")
        .arg(script)
        .args(["receive", "--port", &port.to_string(), "--aet", aet])
        .args([
            "--dir",
            dir.to_str().unwrap(),
            "--count",
            &count.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    child
}

/// A rule with `stable_seconds` sends nothing while the study is arriving,
/// then the whole study as one job, here to pynetdicom.
#[test]
fn a_stable_study_is_forwarded_whole_once_quiet() {
    let data = DataDir::new("route-stable");
    let dest_port = free_port();
    data.add_peer("DEST", "127.0.0.1", dest_port, "echo");
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store");
    configure(
        &data,
        "[[route]]\nname = \"whole\"\ndestination = \"DEST\"\nstable_seconds = 4",
    );
    let received = data.path.with_extension("received");
    let dest = pynetdicom_destination("DEST", dest_port, &received, 3);
    let server = Server::start(&data);
    let src = data.path.with_extension("src");
    let study = "1.2.826.0.1.3680043.2.1125.88.7";
    let spec = |n: u32| {
        format!(r#"{{"PatientID": "S1", "StudyInstanceUID": "{study}", "InstanceNumber": "{n}"}}"#)
    };
    let (mut files, mut uids) = make_and_store(&server, &src.join("a"), "MODALITY", &[spec(1)]);
    std::thread::sleep(Duration::from_secs(1));
    let waiting = jobs(&data, "pending");
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(
        (waiting[0][2].as_str(), waiting[0][4].as_str()),
        ("0", study)
    );
    assert!(
        walk_files(&received).is_empty(),
        "sent before the study was quiet"
    );
    let (more_files, more_uids) =
        make_and_store(&server, &src.join("b"), "MODALITY", &[spec(2), spec(3)]);
    files.extend(more_files);
    uids.extend(more_uids);
    let out = dest.wait_with_output().unwrap();
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut got_uids: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["calling"], "CUSTOS");
            g["uid"].as_str().unwrap()
        })
        .collect();
    got_uids.sort();
    let mut want: Vec<&str> = uids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got_uids, want, "the whole study, each instance once");
    for (file, uid) in files.iter().zip(&uids) {
        let sent = std::fs::read(file).unwrap();
        assert!(
            std::fs::read(received.join(uid)).unwrap() == dataset_of(&sent),
            "pynetdicom got the data set as stored"
        );
    }
    wait_until("the study job done", Duration::from_secs(30), || {
        jobs(&data, "done").len() == 1
    });
    assert!(jobs(&data, "pending").is_empty());
    let trail = data.audit_export();
    assert!(
        trail.iter().any(|e| {
            let t = e.to_string();
            t.contains("forwarding 3 instances to DEST") && t.contains(study) && t.contains("S1")
        }),
        "the forward is audited with its study and patient"
    );
    // A late series: the study goes again, whole, once quiet again.
    let again = data.path.with_extension("received-again");
    let dest = pynetdicom_destination("DEST", dest_port, &again, 4);
    let (_, late) = make_and_store(&server, &src.join("c"), "MODALITY", &[spec(4)]);
    let out = dest.wait_with_output().unwrap();
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let got: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["uid"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got.contains(&late[0].as_str()),
        "the late instance was not forwarded"
    );
    server.stop();
}

/// Debian's Orthanc with its DICOMweb plugin on loopback, HTTP Basic
/// authentication on: the destination of STOW-RS forwards.
struct Orthanc {
    child: Child,
    work: std::path::PathBuf,
    http: u16,
}

const ORTHANC_PW: &str = "stow me 7 times";

impl Orthanc {
    fn start(work: std::path::PathBuf) -> Orthanc {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let plugin = std::fs::read_dir("/usr/lib/orthanc")
            .expect("Debian's orthanc-dicomweb package")
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("libOrthancDicomWeb.so"))
            .expect("Debian's orthanc-dicomweb package");
        let (http, dicom) = (free_port(), free_port());
        let config = serde_json::json!({
            "Name": "CustosDestination",
            "StorageDirectory": work.join("db"),
            "IndexDirectory": work.join("db"),
            "HttpPort": http,
            "DicomPort": dicom,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": true,
            "RegisteredUsers": {"custos": ORTHANC_PW},
            "Plugins": [plugin],
            "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
        });
        let path = work.join("orthanc.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let child = Command::new("/usr/sbin/Orthanc")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("orthanc.log")).unwrap())
            .spawn()
            .expect("Orthanc");
        wait_for_port(http);
        Orthanc { child, work, http }
    }

    /// GET `path` from Orthanc's REST API (its own credentials).
    fn get(&self, path: &str) -> Vec<u8> {
        let script = r#"
import base64, sys, urllib.request
r = urllib.request.Request(sys.argv[1], headers={"Authorization": "Basic " + base64.b64encode(sys.argv[2].encode()).decode()})
sys.stdout.buffer.write(urllib.request.urlopen(r, timeout=10).read())
"#;
        let out = Command::new("python3")
            .args([
                "-c",
                script,
                &format!("http://127.0.0.1:{}{path}", self.http),
                &format!("custos:{ORTHANC_PW}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn instances(&self) -> Vec<String> {
        serde_json::from_slice(&self.get("/instances")).unwrap()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// A rule to a `[[dicomweb_destination]]` sends by STOW-RS: Orthanc gets
/// the instances byte for byte; a destination with a wrong password keeps
/// its jobs retrying with the reason; a manual send goes the same way.
#[test]
fn routes_forward_by_stow_rs_to_orthanc() {
    let data = DataDir::new("route-stow");
    let orthanc = Orthanc::start(data.path.with_extension("orthanc"));
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store");
    let good = data.path.with_extension("orthanc.pw");
    let bad = data.path.with_extension("wrong.pw");
    std::fs::write(&good, format!("{ORTHANC_PW}\n")).unwrap();
    std::fs::write(&bad, "not it\n").unwrap();
    let url = format!("http://127.0.0.1:{}/dicom-web", orthanc.http);
    configure(
        &data,
        &format!(
            r#"[[dicomweb_destination]]
name = "ORTHANC_WEB"
url = "{url}"
username = "custos"
password_file = "{}"

[[dicomweb_destination]]
name = "LOCKED_OUT"
url = "{url}"
username = "custos"
password_file = "{}"

[[route]]
name = "mr-to-web"
destination = "ORTHANC_WEB"
modality = "MR"

[[route]]
name = "nowhere"
destination = "LOCKED_OUT"
modality = "MR"
"#,
            good.display(),
            bad.display()
        ),
    );
    let server = Server::start(&data);
    let src = data.path.with_extension("src");
    let (files, uids) = make_and_store(
        &server,
        &src,
        "MODALITY",
        &[
            r#"{"Modality": "MR", "PatientID": "W1"}"#.into(),
            r#"{"Modality": "MR", "PatientID": "W1"}"#.into(),
            r#"{"Modality": "CT", "PatientID": "W2", "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.88.9"}"#.into(),
        ],
    );
    wait_until(
        "the MR instances in Orthanc",
        Duration::from_secs(60),
        || orthanc.instances().len() == 2,
    );
    for id in orthanc.instances() {
        let stored = orthanc.get(&format!("/instances/{id}/file"));
        let tags: serde_json::Value =
            serde_json::from_slice(&orthanc.get(&format!("/instances/{id}/simplified-tags")))
                .unwrap();
        let uid = tags["SOPInstanceUID"].as_str().unwrap();
        let n = uids.iter().position(|u| u == uid).expect("one of ours");
        assert!(n < 2, "only the MR instances");
        assert!(
            dataset_of(&stored) == dataset_of(&std::fs::read(&files[n]).unwrap()),
            "Orthanc has the data set as sent"
        );
    }
    wait_until(
        "the locked-out forwards retrying",
        Duration::from_secs(30),
        || {
            let pending = jobs(&data, "pending");
            pending.len() == 2
                && pending
                    .iter()
                    .all(|j| j[3] == "LOCKED_OUT" && j[6].contains("401"))
        },
    );
    assert_eq!(jobs(&data, "done").len(), 2);
    // By hand: the CT study to Orthanc too.
    let queued = data
        .cli(&[
            "jobs",
            "send",
            "--study",
            "1.2.826.0.1.3680043.2.1125.88.9",
            "--to",
            "ORTHANC_WEB",
        ])
        .success()
        .stdout();
    assert!(queued.contains("1 instances queued"), "{queued}");
    wait_until("the CT study in Orthanc", Duration::from_secs(60), || {
        orthanc.instances().len() == 3
    });
    assert!(
        data.audit_export()
            .iter()
            .any(|e| e.to_string().contains("to ORTHANC_WEB") && e.to_string().contains("W2")),
        "STOW-RS forwards are audited with the patient"
    );
    // Recorded before the bytes leave, so a destination that refuses them
    // after they went (here: wrong credentials) still shows the transfer.
    assert!(
        data.audit_export().iter().any(|e| {
            let detail = e["record"]["detail"].as_str().unwrap_or_default();
            detail.starts_with("forwarding")
                && detail.contains("instances to LOCKED_OUT")
                && !detail.contains("failed")
                && e.to_string().contains("W1")
        }),
        "the attempt to LOCKED_OUT is recorded as an access, with its patient"
    );
    server.stop();
}
