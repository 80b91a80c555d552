//! The change feed and webhooks (issue 16): a loopback receiver checks every
//! delivery's signature; deliveries wait out a receiver outage and a SIGKILL
//! of the server; the feed numbers every change without gaps; webhooks go
//! only to allowed hosts, with secrets never shown.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

const SECRET: &str = "signs 42 every delivery";
const ADMIN: (&str, &str) = ("hookmaster", "snakes 42 and ladders");
const READER: (&str, &str) = ("feedreader", "reads 42 the feed");

fn receiver(port: u16, log: &Path) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/hook_receiver.py");
    let child = Command::new("python3")
        .arg(script)
        .args(["--port", &port.to_string(), "--secret", SECRET])
        .arg("--log")
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    child
}

/// The deliveries the receiver logged: (delivery id, event, valid, body).
fn delivered(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count(log: &Path, event: &str) -> usize {
    delivered(log)
        .iter()
        .filter(|d| d["event"] == event)
        .count()
}

#[test]
fn webhooks_and_the_change_feed() {
    feed_and_hooks(&DataDir::new("hooks"));
}

#[test]
fn webhooks_and_the_change_feed_on_postgres_and_s3() {
    let blobs = std::env::temp_dir().join(format!("custos-hooks-blobs-{}", std::process::id()));
    let data = node(
        "hooks-pg",
        &fresh_database(),
        &blobs,
        Some(&s3_url("hooks-pg")),
    );
    feed_and_hooks(&data);
    let _ = std::fs::remove_dir_all(&blobs);
}

fn feed_and_hooks(data: &DataDir) {
    let path = data.path.join("custos.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("stable_seconds = 60", "stable_seconds = 2")
        .replace("hosts = []", "hosts = [\"127.0.0.1\"]")
        .replace("retry_seconds = 10", "retry_seconds = 1");
    std::fs::write(&path, text).unwrap();
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store");
    add_user(data, ADMIN.0, "admin", ADMIN.1);
    add_user(data, READER.0, "radiologist", READER.1);
    let port = free_port();
    let log = data.path.with_extension("hooks.jsonl");
    let mut rx = receiver(port, &log);
    let url = format!("http://127.0.0.1:{port}/hook");

    let mut add = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["webhook", "add", &url])
        .args([
            "--events",
            "instance.stored,study.stable,study.deleted",
            "--secret-stdin",
        ])
        .arg("--data")
        .arg(&data.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{SECRET}").unwrap();
    let added = add.wait_with_output().unwrap();
    assert!(added.status.success());
    assert!(String::from_utf8_lossy(&added.stdout).contains("webhook 1 added"));
    let listed = data.cli(&["webhook", "list"]).success().stdout();
    assert!(
        listed.contains(&url) && !listed.contains(SECRET),
        "{listed}"
    );
    // Sealed in the index (secrets.key): no file of the data folder, the
    // SQLite index and its WAL included, holds the secret in clear.
    for file in walk_files(&data.path) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the webhook secret in clear",
            file.display()
        );
    }

    let server = Server::process(data);
    // The API refuses hosts not configured, short secrets, other roles.
    let admin = serde_json::json!({"basic": [ADMIN.0, ADMIN.1]});
    let reader = serde_json::json!({"basic": [READER.0, READER.1]});
    let body = |url: &str, secret: &str| {
        serde_json::json!({"url": url, "events": ["study.stable"], "secret": secret}).to_string()
    };
    let json = serde_json::json!({"Content-Type": "application/json"});
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "POST", "path": "/api/webhooks", "auth": admin, "headers": json, "body": body("https://hooks.example.org/x", SECRET)},
            {"method": "POST", "path": "/api/webhooks", "auth": admin, "headers": json, "body": body("http://10.1.2.3/x", SECRET)},
            {"method": "POST", "path": "/api/webhooks", "auth": admin, "headers": json, "body": body(&url, "short")},
            {"method": "POST", "path": "/api/webhooks", "auth": reader, "headers": json, "body": body(&url, SECRET)},
            {"method": "GET", "path": "/api/webhooks", "auth": admin},
        ]),
    );
    for (i, want) in [422, 422, 422, 403, 200].iter().enumerate() {
        assert_eq!(r[i]["status"], *want, "request {i}: {:?}", r[i]);
    }
    assert!(r[4]["body"].as_str().unwrap().contains(&url));
    assert!(!r[4]["body"].as_str().unwrap().contains(SECRET));

    let study = "1.2.826.0.1.3680043.2.1125.77.1";
    let series = "1.2.826.0.1.3680043.2.1125.77.1.1";
    let spec = |n: u32| {
        format!(
            r#"{{"PatientID": "HOOK", "StudyInstanceUID": "{study}", "SeriesInstanceUID": "{series}", "InstanceNumber": "{n}"}}"#
        )
    };
    let src = data.path.with_extension("src");
    let (_, mut uids) = make_and_store(&server, &src.join("a"), "MODALITY", &[spec(1), spec(2)]);
    wait_until(
        "two stored and the study stable",
        Duration::from_secs(30),
        || count(&log, "instance.stored") == 2 && count(&log, "study.stable") == 1,
    );

    // The receiver is down; a third instance arrives; the server is killed
    // with the deliveries waiting; both come back: they arrive.
    let _ = rx.kill();
    let _ = rx.wait();
    let (_, third) = make_and_store(&server, &src.join("b"), "MODALITY", &[spec(3)]);
    uids.extend(third);
    wait_until(
        "the third's delivery tried",
        Duration::from_secs(30),
        || {
            data.cli(&["jobs", "list", "--state", "pending"])
                .success()
                .stdout()
                .lines()
                .any(|l| l.contains("webhook:1") && l.split('\t').nth(2).is_some_and(|a| a != "0"))
        },
    );
    server.kill9();
    let mut rx = receiver(port, &log);
    let server = Server::process(data);
    wait_until(
        "the third delivered after the restart",
        Duration::from_secs(60),
        || count(&log, "instance.stored") == 3 && count(&log, "study.stable") == 2,
    );

    // Deleting the study: its event, and the feed has every change in order.
    let r = web_requests(
        &server,
        serde_json::json!([{"method": "DELETE", "path": format!("/api/studies/{study}"), "auth": admin}]),
    );
    assert_eq!(r[0]["status"], 200, "{r:?}");
    wait_until("the deletion delivered", Duration::from_secs(30), || {
        count(&log, "study.deleted") == 1
    });
    let all = delivered(&log);
    assert!(
        all.iter().all(|d| d["valid"] == true),
        "a bad signature: {all:?}"
    );
    let mut ids: Vec<&str> = all
        .iter()
        .map(|d| d["delivery"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "each delivery once: {all:?}");
    let mut stored: Vec<&str> = all
        .iter()
        .filter(|d| d["event"] == "instance.stored")
        .map(|d| d["body"]["instance"].as_str().unwrap())
        .collect();
    stored.sort();
    let mut want: Vec<&str> = uids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(stored, want);
    assert!(
        all.iter()
            .filter(|d| d["event"] == "study.stable")
            .all(|d| d["body"]["study"] == study)
    );

    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "GET", "path": "/api/changes?after=0&limit=100", "auth": reader, "body_limit": 1_000_000},
            {"method": "GET", "path": "/api/changes?after=4&limit=2", "auth": reader, "body_limit": 1_000_000},
            {"method": "GET", "path": "/api/changes?limit=5000", "auth": reader},
        ]),
    );
    assert_eq!(r[0]["status"], 200, "{r:?}");
    let feed: serde_json::Value = serde_json::from_str(r[0]["body"].as_str().unwrap()).unwrap();
    let events: Vec<(i64, String)> = feed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["seq"].as_i64().unwrap(),
                format!(
                    "{}.{}",
                    c["level"].as_str().unwrap(),
                    c["kind"].as_str().unwrap()
                ),
            )
        })
        .collect();
    let expected: Vec<(i64, String)> = [
        "study.stored",
        "series.stored",
        "instance.stored",
        "instance.stored",
        "instance.stored",
        "study.deleted",
        "instance.deleted",
        "instance.deleted",
        "instance.deleted",
    ]
    .iter()
    .enumerate()
    .map(|(i, e)| (i as i64 + 1, e.to_string()))
    .collect();
    assert_eq!(events, expected);
    assert_eq!(feed["last"], 9);
    let page: serde_json::Value = serde_json::from_str(r[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(page["changes"][0]["seq"], 5);
    assert_eq!(page["last"], 6);
    assert_eq!(r[2]["status"], 400);
    assert!(
        data.audit_export()
            .iter()
            .any(|e| e.to_string().contains("change feed after 0")),
        "reading the feed is audited"
    );
    server.stop();
    let _ = rx.kill();
    let _ = rx.wait();
}
