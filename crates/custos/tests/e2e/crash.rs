//! Issue 14, trial 1: SIGKILL at random moments while 4 associations C-STORE,
//! a client STOW-RSes, another C-FINDs and a third C-MOVEs, on SQLite + files
//! and on PostgreSQL + S3. After every restart each acknowledged instance
//! (C-STORE success or STOW-RS 200) comes back by C-GET and parses, `fsck`
//! finds nothing missing or altered, and the audit trail verifies.
//!
//! The README's test command kills twice per backend; `scripts/soak crash`
//! sets CUSTOS_CRASH_KILLS=20.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const PW_UP: &str = "stow during crashes 5";

fn kills() -> usize {
    std::env::var("CUSTOS_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// A small deterministic generator for the kill moments (different per run).
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, from: u64, to: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        from + (self.0 >> 33) % (to - from)
    }
}

fn crash_load(
    server: &Server,
    acked: &std::path::Path,
    work: &std::path::Path,
    move_port: u16,
) -> Child {
    Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/py/peer.py"
        ))
        .args(["crash-load", "--port", &server.port(), "--aet", "PYSCU"])
        .args([
            "--http",
            &format!("https://localhost:{}", server.http.port()),
        ])
        .arg("--ca")
        .arg(&server.ca)
        .args([
            "--web-user",
            "up",
            "--web-password",
            PW_UP,
            "--seconds",
            "60",
        ])
        .args([
            "--move-dest",
            "CRASHDEST",
            "--move-port",
            &move_port.to_string(),
        ])
        .arg("--acked")
        .arg(acked)
        .arg("--workdir")
        .arg(work)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.with_extension("log")).expect("the load's log"))
        .spawn()
        .expect("start the crash load")
}

/// What the last crash load wrote on stderr (its tail).
fn load_log(work: &std::path::Path) -> String {
    let log = std::fs::read_to_string(work.join("s").with_extension("log")).unwrap_or_default();
    log.chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn trials(data: DataDir, env: &[(&str, &str)], label: &str) {
    let move_port = free_port();
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get,move");
    data.add_peer("CRASHDEST", "127.0.0.1", move_port, "echo");
    add_user(&data, "up", "uploader", PW_UP);
    let all_acked = data.path.with_extension("all-acked");
    let work = data.path.with_extension("work");
    let mut moments = Moments(std::process::id() as u64 ^ 0x9e37_79b9);
    let mut server = Server::process_with(&data, env);
    let (mut recoveries, mut acked_total, mut by_stow) = (Vec::new(), 0, 0);
    for round in 0..kills() {
        let acked = work.join(format!("dimse-{round}"));
        let stowed = work.join(format!("stow-{round}"));
        std::fs::create_dir_all(&work).unwrap();
        let options = ["--seconds", "60", "--reconnect"];
        let mut ingest = start_ingest_with(&server, &acked, &work.join("i"), 5, &options);
        let mut load = crash_load(&server, &stowed, &work.join("s"), move_port);
        // Kill at a random moment once both loads are running: on a busy
        // 2-core machine Python and its imports alone can take seconds.
        let started = Instant::now();
        while (acked_count(&acked) == 0 || acked_count(&stowed) == 0)
            && started.elapsed() < Duration::from_secs(60)
        {
            if let Ok(Some(status)) = load.try_wait() {
                panic!(
                    "{label}: the crash load exited ({status}): {}",
                    load_log(&work)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(moments.next_ms(0, 2500)));
        server.kill9();
        let _ = ingest.kill();
        let _ = load.kill();
        let _ = ingest.wait();
        let _ = load.wait();
        let restarted = Instant::now();
        server = Server::process_with(&data, env);
        recoveries.push(restarted.elapsed());
        // Everything acknowledged so far, in every round.
        let mut lines = std::fs::read_to_string(&all_acked).unwrap_or_default();
        for f in [&acked, &stowed] {
            lines.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
        by_stow += acked_count(&stowed);
        std::fs::write(&all_acked, &lines).unwrap();
        acked_total = lines.lines().count();
        let (lost, unreadable) = lost_after_restart(&server, &all_acked);
        assert!(
            lost.is_empty(),
            "{label}, kill {round}: acknowledged but lost: {lost:?}"
        );
        assert_eq!(unreadable, 0, "{label}, kill {round}");
        let fsck = Command::new(BIN)
            .args(["fsck", "--data"])
            .arg(&data.path)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let summary = String::from_utf8_lossy(&fsck.stdout).to_string();
        assert!(
            summary.contains(" 0 missing, 0 altered"),
            "{label}, kill {round}: {summary}"
        );
    }
    assert!(
        by_stow > 0,
        "{label}: no STOW-RS was acknowledged: the load did not run: {}",
        load_log(&work)
    );
    assert!(server.stop());
    data.cli(&["audit", "verify"]).success();
    // The queries and moves ran too (their audit records).
    let trail = data.audit_export();
    for what in ["C-FIND", "C-MOVE"] {
        assert!(
            trail.iter().any(|r| r["record"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains(what))),
            "{label}: no {what} in the audit trail: the load did not run"
        );
    }
    eprintln!(
        "crash trial {label}: {} kills, {acked_total} acknowledged ({by_stow} by STOW-RS), 0 lost; restart to listening {:?}",
        kills(),
        recoveries
    );
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(&all_acked);
}

#[test]
fn sigkills_under_mixed_load_lose_nothing_on_sqlite() {
    trials(DataDir::new("crash"), &[], "SQLite + files");
}

#[test]
fn sigkills_under_mixed_load_lose_nothing_on_postgres_and_s3() {
    let unused = std::env::temp_dir().join(format!("custos-unused-crash-{}", std::process::id()));
    let data = node(
        "crash-pg",
        &fresh_database(),
        &unused,
        Some(&s3_url("crash")),
    );
    trials(data, &[], "PostgreSQL + S3");
}
