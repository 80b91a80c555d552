//! Issue 14, trials 5 and 6 in short form: `bench/sustained.py` (the full
//! trial's driver, 600 s each from `bench/sustained.sh`) for 20 s against a
//! server process, with the hostile address (127.0.0.2: half-open
//! connections, byte-a-second association requests, 4 GiB PDUs) at work the
//! whole time. What a user would see is asserted, not speed: every kind of
//! request keeps being served without errors, the audit trail has a record
//! for every operation that succeeded, and the server's open files come back
//! to where they were once the load stops (no leaked sockets or files).

use std::path::Path;

use crate::common::*;

const PW: &str = "loads 42 all day long";

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn mixed_load_with_a_hostile_address_short_form() {
    let data = DataDir::new("sustained");
    data.add_peer("BENCHSCU", "127.0.0.1", free_port(), "echo,store");
    data.add_peer("BENCHQ", "127.0.0.3", free_port(), "echo,find");
    add_user(&data, "bench", "admin", PW);
    let server = Server::process(&data);
    let pid = server.pid();
    let before = open_files(pid);
    let work = data.path.with_extension("load");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/sustained.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(["--port", &server.port()])
        .args([
            "--http",
            &format!("https://localhost:{}", server.http.port()),
        ])
        .arg("--ca")
        .arg(&server.ca)
        .args(["--user", "bench", "--password", PW])
        .args(["--pid", &pid.to_string()])
        .arg("--data")
        .arg(&data.path)
        .args(["--bin", BIN, "--seconds", "20"])
        .args([
            "--stores",
            "4",
            "--finds",
            "4",
            "--http-clients",
            "4",
            "--hostile",
        ])
        .arg("--work")
        .arg(&work)
        .output()
        .expect("run bench/sustained.py");
    let report = json_of(&Run(out));
    let ops = &report["ops"];
    for op in ["C-STORE", "C-FIND", "STOW-RS", "QIDO-RS", "WADO-RS"] {
        let count = ops[op]["count"].as_u64().unwrap_or(0);
        assert!(
            count > 0,
            "{op} was served under the hostile load: {report}"
        );
        let errors = ops[op]["errors"].as_u64().unwrap_or(0);
        // pynetdicom 3.0.4's reactor thread sometimes takes the response a
        // C-STORE or C-FIND is waiting for (RELIABILITY.md: "status none";
        // the server answered and audited it). That one client defect is
        // tolerated, rarely, when pynetdicom itself reported it; nothing
        // else is.
        let samples = ops[op]["error_samples"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let client_race = report["client_warnings"]
            .get(format!("Received unexpected {op} service message"))
            .is_some();
        let tolerated = matches!(op, "C-STORE" | "C-FIND")
            && client_race
            && errors * 200 <= count
            && samples
                .iter()
                .all(|s| s.to_string().contains("status none"));
        assert!(errors == 0 || tolerated, "{op}: {errors} errors: {report}");
        let audited = report["audit_records"][op].as_u64().unwrap_or(0);
        assert!(
            audited >= count,
            "{op}: {count} succeeded, {audited} audit records: {report}"
        );
    }
    assert!(
        ops.get("associate").is_none_or(|a| a["errors"] == 0),
        "every association of the known peers was accepted: {report}"
    );
    // Once the load is over, its connections close: no sockets or files leak.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut now = open_files(pid);
    while now > before + 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        now = open_files(pid);
    }
    eprintln!(
        "open files: {before} before, {now} after, during {}",
        report["open_files"]
    );
    assert!(
        now <= before + 10,
        "open files: {before} before the load, {now} two minutes after it: {}",
        report["open_files"]
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&work);
}
