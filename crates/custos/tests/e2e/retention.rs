//! Retention (issue 16) with a clock the test sets: a policy deletes only
//! the studies it names, never a protected one or one still receiving; the
//! dry run lists what a run deletes, a run deletes only after the quiet
//! period by the real clock; deletions are audited with the policy;
//! only the delete right may look or run.

use crate::common::*;

const ADMIN: (&str, &str) = ("keeper", "keeps 42 what the law says");
const READER: (&str, &str) = ("lookonly", "reads 42 and keeps");

#[test]
fn retention_deletes_what_a_policy_names_and_nothing_else() {
    retention(&DataDir::new("retention"));
}

#[test]
fn retention_on_postgres_and_s3() {
    let blobs = std::env::temp_dir().join(format!("custos-ret-blobs-{}", std::process::id()));
    let data = node(
        "retention-pg",
        &fresh_database(),
        &blobs,
        Some(&s3_url("retention-pg")),
    );
    retention(&data);
    let _ = std::fs::remove_dir_all(&blobs);
}

fn retention(data: &DataDir) {
    let path = data.path.join("custos.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("quiet_seconds = 86400", "quiet_seconds = 7200");
    std::fs::write(
        &path,
        format!("{text}\n[[retention.policy]]\nname = \"ct-10y\"\nmodality = \"CT\"\nstudy_age_days = 3650\n"),
    )
    .unwrap();
    data.add_peer("MODALITY", "127.0.0.1", free_port(), "echo,store");
    add_user(data, ADMIN.0, "admin", ADMIN.1);
    add_user(data, READER.0, "radiologist", READER.1);
    let server = Server::start(data);
    let study = |n: u32| format!("1.2.826.0.1.3680043.2.1125.66.{n}");
    let spec = |n: u32, modality: &str, date: &str| {
        format!(
            r#"{{"PatientID": "RET-{n}", "StudyInstanceUID": "{}", "Modality": "{modality}", "StudyDate": "{date}"}}"#,
            study(n)
        )
    };
    make_and_store(
        &server,
        &data.path.with_extension("src"),
        "MODALITY",
        &[
            spec(1, "CT", "20010101"), // old CT: the policy's
            spec(2, "CT", "20010101"), // old CT, protected
            spec(3, "CT", "20240101"), // too young
            spec(4, "MR", "20010101"), // another modality
        ],
    );
    let protect = data
        .cli(&["study", "protect", &study(2), "--reason", "legal hold"])
        .success()
        .stdout();
    assert!(protect.contains("protected"), "{protect}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let run = |at: u64, dry: bool| {
        let at = at.to_string();
        let mut args = vec!["retention", "run", "--now", at.as_str()];
        if dry {
            args.push("--dry-run");
        }
        data.cli(&args).success()
    };
    // An hour from now: everything arrived less than 2 h before: kept.
    let soon = run(now + 3600, true);
    assert_eq!(soon.stdout(), "", "still receiving: {}", soon.stderr());
    assert!(
        soon.stderr().contains("1 protected, 1 still receiving"),
        "{}",
        soon.stderr()
    );
    // Three hours from now: the old CT study only.
    let later = run(now + 3 * 3600, true);
    assert_eq!(
        later.stdout(),
        format!("{}\tRET-1\t20010101\tct-10y\n", study(1))
    );
    assert!(
        later
            .stderr()
            .contains("1 of 4 studies would be deleted; 1 protected"),
        "{}",
        later.stderr()
    );
    let studies = || {
        let mut found: Vec<String> =
            json_of(&web(&server, ADMIN.0, ADMIN.1, &["search", "--level", "studies"]).success())
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["0020000D"]["Value"][0].as_str().unwrap().to_string())
                .collect();
        found.sort();
        found
    };
    assert_eq!(studies().len(), 4, "a dry run deletes nothing");

    // Over HTTP: a radiologist may not look; an admin sees the plan now.
    let admin = serde_json::json!({"basic": [ADMIN.0, ADMIN.1]});
    let reader = serde_json::json!({"basic": [READER.0, READER.1]});
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "GET", "path": "/api/retention", "auth": reader},
            {"method": "GET", "path": "/api/retention", "auth": admin},
            {"method": "PUT", "path": format!("/api/studies/{}/protected", study(3)), "auth": reader,
             "headers": {"Content-Type": "application/json"}, "body": "{\"protected\": true}"},
        ]),
    );
    assert_eq!(r[0]["status"], 403);
    assert_eq!(r[1]["status"], 200, "{r:?}");
    let plan: serde_json::Value = serde_json::from_str(r[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            plan["count"].as_i64(),
            plan["receiving"].as_i64(),
            plan["protected"].as_i64()
        ),
        (Some(0), Some(1), Some(1)),
        "{plan}"
    );
    assert_eq!(r[2]["status"], 403);

    // A run that deletes waits for the quiet period by the real clock,
    // whatever date it is given: the studies arrived seconds ago.
    let early = run(now + 3 * 3600, false);
    assert!(
        early
            .stderr()
            .contains("0 of 4 studies deleted; 1 protected, 1 still receiving"),
        "{}",
        early.stderr()
    );
    assert_eq!(studies().len(), 4);
    data.replace_in_config("quiet_seconds = 7200", "quiet_seconds = 1");
    std::thread::sleep(std::time::Duration::from_secs(3));
    // Then the run three hours from now deletes the old CT study, and only it.
    let done = run(now + 3 * 3600, false);
    assert!(
        done.stderr().contains("1 of 4 studies deleted"),
        "{}",
        done.stderr()
    );
    assert_eq!(studies(), vec![study(2), study(3), study(4)]);
    // Lifting the protection lets the next run take the second.
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "PUT", "path": format!("/api/studies/{}/protected", study(2)), "auth": admin,
             "headers": {"Content-Type": "application/json"}, "body": "{\"protected\": false}"},
        ]),
    );
    assert_eq!(r[0]["status"], 200, "{r:?}");
    run(now + 3 * 3600, false);
    assert_eq!(studies(), vec![study(3), study(4)]);
    let fsck = data.cli(&["fsck"]);
    assert!(
        fsck.ok(),
        "fsck after retention: {}{}",
        fsck.stdout(),
        fsck.stderr()
    );

    let trail = data.audit_export();
    let deleted: Vec<String> = trail
        .iter()
        .map(|e| e.to_string())
        .filter(|t| t.contains("by retention policy ct-10y"))
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(deleted[0].contains("RET-1") && deleted[1].contains("RET-2"));
    assert!(trail.iter().any(|e| {
        e.to_string()
            .contains("protected from retention: legal hold")
    }));
    server.stop();
}
