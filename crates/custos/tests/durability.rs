//! Never lose an acknowledged image: SIGKILL the server in the middle of a
//! concurrent ingest; after restart every instance acknowledged with success
//! is present and readable, and nothing half-written is visible.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn sigkill_during_concurrent_ingest_loses_no_acknowledged_instance() {
    let data = DataDir::new("durability");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get");
    let server = Server::start(&data);
    let port = server.port();
    let acked = data.path.with_extension("acked");
    let work = data.path.with_extension("work");
    let _ = std::fs::remove_file(&acked);
    let mut ingest = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/py/peer.py"
        ))
        .args([
            "ingest",
            "--port",
            &port,
            "--aet",
            "PYSCU",
            "--threads",
            "4",
            "--seconds",
            "20",
        ])
        .arg("--acked")
        .arg(&acked)
        .arg("--workdir")
        .arg(&work)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let acknowledgements accumulate, then pull the plug.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = std::fs::read_to_string(&acked)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= 40 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingest made no progress"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill9();
    ingest.wait().unwrap();
    let acked: Vec<String> = std::fs::read_to_string(&acked)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(acked.len() >= 40);

    // Nothing half-written: no staged blob survives a restart.
    let server = Server::start(&data);
    assert_eq!(walk_files(&data.path.join("blobs/.staging")).len(), 0);
    let port = server.port();
    let out = python(&[
        "get",
        "--port",
        &port,
        "--aet",
        "PYSCU",
        "--level",
        "STUDY",
        "-k",
        "PatientName=DURABLE^TEST",
    ])
    .success();
    let v: Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v["unreadable"], 0, "{v}");
    let received: std::collections::HashSet<String> = v["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    let missing: Vec<_> = acked.iter().filter(|u| !received.contains(*u)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged instances lost: {missing:?}",
        missing.len()
    );
    // Every blob on disk is indexed (at most the in-flight ones may be orphans,
    // never the reverse); the index has no row without its blob.
    assert!(data.blob_count() >= received.len());
    let _ = std::fs::remove_dir_all(&work);
}
