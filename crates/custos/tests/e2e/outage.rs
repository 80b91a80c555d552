//! Issue 14, trial 3: the index's PostgreSQL and the S3 store (SeaweedFS) go
//! away and come back while a node ingests over 4 associations. Requests that
//! need the missing backend fail with A700 within a stated bound instead of
//! hanging, `custos doctor` reports the outage while it lasts, the node
//! recovers without a restart, and every acknowledged instance is there
//! afterwards. The servers are this test's own (scripts/services), so that
//! stopping them does not disturb the other tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long a store may take to be refused while a backend is down: the S3
/// client's retry budget (10 s) plus the index pool's wait (10 s), with room.
const REFUSED_WITHIN: Duration = Duration::from_secs(30);

/// This test's PostgreSQL and SeaweedFS, stopped and removed on drop.
struct Services(PathBuf);

impl Services {
    fn run(&self, what: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services");
        let out = Command::new(script)
            .arg(what)
            .arg(&self.0)
            .output()
            .expect("run scripts/services");
        assert!(
            out.status.success(),
            "scripts/services {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// KEY='value' lines of the env files the services wrote.
    fn env(&self) -> HashMap<String, String> {
        let mut vars = HashMap::new();
        for file in ["pg.env", "weed.env"] {
            for line in std::fs::read_to_string(self.0.join(file)).unwrap().lines() {
                let (k, v) = line.split_once('=').unwrap();
                vars.insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
        vars
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.run("stop");
    }
}

/// One C-STORE by DCMTK's storescu: whether it succeeded, its output, and how
/// long it took.
fn store_once(server: &Server, file: &Path) -> (bool, String, Duration) {
    let started = Instant::now();
    let (ok, text) = storescu_one(server, "PYSCU", file);
    (ok, text, started.elapsed())
}

/// While a backend is down: a store is refused within the bound, `refusal`
/// saying how, and `custos doctor` names the outage.
fn refused_while_down(
    server: &Server,
    data: &DataDir,
    file: &Path,
    env: &[(&str, &str)],
    what: &str,
    refusal: &str,
) {
    let (ok, text, took) = store_once(server, file);
    assert!(!ok, "a store succeeded with {what} down");
    assert!(text.contains(refusal), "{what} down: {text}");
    assert!(
        took < REFUSED_WITHIN,
        "{what} down: refused only after {took:?}"
    );
    let mut doctor = Command::new(BIN);
    doctor.args(["doctor", "--data"]).arg(&data.path);
    for (k, v) in env {
        doctor.env(k, v);
    }
    let out = doctor.output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "doctor is content with {what} down: {report}"
    );
    eprintln!("{what} down: store refused in {took:?}; doctor says:\n{report}");
}

/// Stores until one succeeds again; returns how long recovery took.
fn recovered(server: &Server, file: &Path, since: Instant, what: &str) -> Duration {
    loop {
        let (ok, text, _) = store_once(server, file);
        if ok {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(90),
            "no recovery after {what} came back: {text}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgres_and_s3_outages_fail_fast_and_the_node_recovers() {
    let services =
        Services(std::env::temp_dir().join(format!("custos-test-outage-{}", std::process::id())));
    services.run("start");
    let vars = services.env();
    let s3 = {
        let (base, query) = vars["CUSTOS_TEST_S3_URL"].split_once('?').unwrap();
        format!("{base}/outage?{query}")
    };
    let unused = std::env::temp_dir().join(format!("custos-unused-outage-{}", std::process::id()));
    let data = node(
        "outage",
        &vars["CUSTOS_TEST_POSTGRES_URL"],
        &unused,
        Some(&s3),
    );
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get");
    add_user(&data, "prom", "monitor", "scrapes 42 the outage");
    let env = [
        ("AWS_ACCESS_KEY_ID", vars["AWS_ACCESS_KEY_ID"].as_str()),
        (
            "AWS_SECRET_ACCESS_KEY",
            vars["AWS_SECRET_ACCESS_KEY"].as_str(),
        ),
    ];
    let server = Server::process_with(&data, &env);
    let probe = pydicom_test_files().join("CT_small.dcm");

    // 4 associations store all along; each acknowledged UID is written down.
    let acked = data.path.with_extension("acked");
    let work = data.path.with_extension("ingest");
    let options = ["--seconds", "60", "--reconnect"];
    let ingest = start_ingest_with(&server, &acked, &work, 20, &options);
    let acks = || acked_count(&acked);

    // PostgreSQL down for 10 s.
    services.run("stop-pg");
    let down = Instant::now();
    // The peer registry is in the index: a new association is refused as
    // transient (the modality retries), not as an unknown AE title; open
    // associations get A700 for their stores (the ingest's statuses).
    refused_while_down(
        &server,
        &data,
        &probe,
        &env,
        "PostgreSQL",
        "Rejected Transient, Source: Service Provider (Presentation Related)",
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down.elapsed()));
    services.run("start-pg");
    let back = Instant::now();
    let pg_recovery = recovered(&server, &probe, back, "PostgreSQL");
    let before = acks();
    wait_until(
        "ingest resumes after PostgreSQL",
        Duration::from_secs(30),
        || acks() > before,
    );

    // SeaweedFS killed, then started again.
    services.run("stop-weed");
    refused_while_down(
        &server,
        &data,
        &probe,
        &env,
        "S3",
        "Refused: OutOfResources",
    );
    services.run("start-weed");
    let back = Instant::now();
    let s3_recovery = recovered(&server, &probe, back, "S3");
    let before = acks();
    wait_until("ingest resumes after S3", Duration::from_secs(30), || {
        acks() > before
    });

    let out = ingest.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "outage trial: {} acknowledged; statuses {}; store recovery after PostgreSQL {pg_recovery:?}, after S3 {s3_recovery:?}",
        acks(),
        summary
    );
    // Every acknowledged instance is there, whole.
    let (lost, unreadable) = lost_after_restart(&server, &acked);
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert_eq!(unreadable, 0);
    // The monitoring saw both outages as failed stores.
    let r = web_requests(
        &server,
        serde_json::json!([{"method": "GET", "path": "/metrics", "auth": {"basic": ["prom", "scrapes 42 the outage"]}, "body_limit": 1_000_000}]),
    );
    let text = r[0]["body"].as_str().unwrap();
    let count = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(count("custos_index_errors_total ") > 0.0, "{text}");
    assert!(count("custos_store_errors_total ") > 0.0, "{text}");
    assert!(
        count(r#"custos_instances_total{protocol="dimse",status="A700"} "#) > 0.0,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(&acked);
}
