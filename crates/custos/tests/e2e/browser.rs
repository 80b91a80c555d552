//! The web UI in a real browser: Debian's chromium driven by Playwright
//! (`tests/py/browser.py`) logs in, searches, opens a study, checks the
//! viewer's image by its pixels, scrolls, changes the window, downloads the
//! study as a ZIP, uploads, administers, schedules on the modality worklist
//! (which a modality then finds), sends the study to a peer and
//! manages its forwarding jobs, reads the status page, logs out,
//! and sees the auditor's view with its filters; the auditor changes
//! their own password. Screenshots of each page are left in
//! `target/tmp/ui-screenshots/` for a reviewer.

use crate::common::*;

#[test]
fn a_radiologist_and_an_auditor_use_the_web_ui_in_chromium() {
    let data = DataDir::new("browser");
    let toml = data.path.join("custos.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("hosts = []", "hosts = [\"127.0.0.1\"]")).unwrap();
    add_user(&data, "chief", "admin", "morning rounds 42 at eight");
    add_user(&data, "eve", "auditor", "watches 42 the trail");
    data.add_peer("CT01", "127.0.0.1", 104, "echo,worklist");
    let server = Server::start(&data);
    let figures = browser_script(
        &server,
        "browser.py",
        &[
            "--admin",
            "chief:morning rounds 42 at eight",
            "--auditor",
            "eve:watches 42 the trail",
        ],
    );
    assert!(figures["first_image_ms"].as_u64().is_some(), "{figures}");
    // What the worklist page scheduled (and did not remove), as a modality
    // finds it.
    let found = worklist_query(
        &server,
        "CT01",
        &data.path.join("mwl"),
        &["(0040,0100)[0].ScheduledStationAETitle=CT01"],
    )
    .expect("findscu -W");
    assert_eq!(patient_ids(&found), ["WL-KEEP"], "{found:?}");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    for page in [
        "login",
        "studies",
        "study",
        "viewer-lung",
        "upload",
        "admin",
        "jobs",
        "study-corrected",
        "deidentify",
        "status",
        "audit",
        "audit-filtered",
        "password",
        "worklist",
    ] {
        assert!(shots.join(format!("{page}.png")).exists(), "{page}.png");
    }
    // The server recorded the browser session's login, views and logout.
    let audit = data.audit_export();
    let detail = |d: &str| {
        audit
            .iter()
            .map(|r| &r["record"])
            .any(|r| r["user"] == "chief" && r["detail"].as_str().unwrap_or_default().contains(d))
    };
    assert!(detail("HTTP login (browser session)"), "login audited");
    assert!(detail("HTTP logout (browser session)"), "logout audited");
    assert!(detail("WADO "), "views audited");
    assert!(detail("ZIP download of "), "the download audited");
    // The auditor's own password change, and the admin's for newrad.
    assert!(
        audit.iter().map(|r| &r["record"]).any(
            |r| r["user"] == "eve" && r["detail"] == "user eve: password changed (by the user)"
        ),
        "own password change audited"
    );
    assert!(
        detail("user newrad: password changed"),
        "admin's change audited"
    );
}
