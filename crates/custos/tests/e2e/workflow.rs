//! The department's workflow over DICOM (issue 15), against pynetdicom as the
//! modality: storage commitment; DCMTK's findscu -W and pynetdicom for the
//! worklist and MPPS.

use crate::common::*;

/// Makes `n` small instances of one patient and stores them as `aet`.
fn stored_instances(
    server: &Server,
    dir: &std::path::Path,
    aet: &str,
    n: usize,
) -> (Vec<String>, Vec<String>) {
    let specs: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"PatientID": "COMMIT", "InstanceNumber": "{i}"}}"#))
        .collect();
    make_and_store(server, dir, aet, &specs)
}

#[test]
fn storage_commitment_reports_committed_missing_and_altered_instances() {
    let data = DataDir::new("commit");
    let blobs = data.path.join("blobs");
    storage_commitment(&data, &blobs);
}

#[test]
fn storage_commitment_on_postgres() {
    let store = std::env::temp_dir().join(format!("custos-commit-blobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let data = node("commit-pg", &fresh_database(), &store, None);
    storage_commitment(&data, &store);
    let _ = std::fs::remove_dir_all(&store);
}

/// N-ACTION for three stored instances (one altered on disk afterwards) and
/// one never stored, answered on the same association; then two intact
/// ones, answered on a new association; a peer without the right is refused.
fn storage_commitment(data: &DataDir, blobs: &std::path::Path) {
    let listen = free_port();
    data.add_peer("MODALITY", "127.0.0.1", listen, "echo,store,commit");
    data.add_peer("STOREONLY", "127.0.0.1", free_port(), "store");
    let server = Server::start(data);
    let port = server.port();
    let (files, uids) = stored_instances(&server, &data.path.with_extension("src"), "MODALITY", 3);

    // One stored instance is altered on disk behind the archive's back: its
    // packed record is found by the UID inside it, and one pixel byte flipped.
    let records = pack_records(blobs);
    let altered = &uids[2];
    let mut hit = None;
    for r in &records {
        let bytes = std::fs::read(&r.path).unwrap();
        let body = &bytes[r.data_at..r.data_at + r.len];
        if body.windows(altered.len()).any(|w| w == altered.as_bytes()) {
            hit = Some((r.path.clone(), r.data_at + r.len - 1));
        }
    }
    let (pack, at) = hit.expect("the altered instance's packed record");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&pack, bytes).unwrap();

    // Same association: the report arrives before the modality releases.
    let commit = |aet: &str, args: &[&str]| {
        python(&[&["commit", "--port", port.as_str(), "--aet", aet], args].concat())
    };
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let missing = "1.2.826.0.1.3680043.2.1125.99.1";
    let r = json_of(&commit("MODALITY", &[&["--missing", missing], &files[..]].concat()).success());
    assert_eq!(r["status"], 0, "N-ACTION-RSP: {r}");
    let reports = r["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{r}");
    let rep = &reports[0];
    assert_eq!(rep["via"], "same");
    assert_eq!(rep["transaction"], r["transaction"]);
    assert_eq!(rep["event_type"], 2, "some failed: {rep}");
    assert_eq!(rep["retrieve_ae"], "CUSTOS");
    let committed: Vec<&str> = rep["committed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(committed, vec![uids[0].as_str(), uids[1].as_str()]);
    let failed = rep["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{rep}");
    assert!(
        failed.contains(&serde_json::json!([altered, 0x0110])),
        "altered: processing failure: {rep}"
    );
    assert!(
        failed.contains(&serde_json::json!([missing, 0x0112])),
        "missing: no such object instance: {rep}"
    );

    // The modality releases at once: the report comes on a new association
    // from Custos to the modality's registered port, Custos in the SCP role.
    let listen = listen.to_string();
    let r = json_of(
        &commit(
            "MODALITY",
            &[&["--listen-port", &listen], &files[..2]].concat(),
        )
        .success(),
    );
    assert_eq!(r["status"], 0, "{r}");
    let reports = r["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{r}");
    assert_eq!(reports[0]["via"], "new", "{r}");
    assert_eq!(reports[0]["calling"], "CUSTOS");
    assert_eq!(reports[0]["event_type"], 1, "all committed: {r}");
    assert_eq!(reports[0]["transaction"], r["transaction"]);
    assert_eq!(reports[0]["committed"].as_array().unwrap().len(), 2);

    // Another copy of the second instance, with other content, arrives and
    // is answered B006 (the stored copy kept): commitment no longer vouches
    // for that UID, since the modality may hold the other copy.
    let other_dir = data.path.with_extension("conflict");
    let made = json_of(
        &python(&[
            "make",
            other_dir.to_str().unwrap(),
            &format!(
                r#"{{"PatientID": "COMMIT", "SOPInstanceUID": "{}"}}"#,
                uids[1]
            ),
        ])
        .success(),
    );
    let other = made[0].as_str().unwrap();
    let stored =
        json_of(&python(&["store", "--port", &port, "--aet", "MODALITY", other]).success());
    assert_eq!(stored[other]["status"], 0xB006, "{stored}");
    let r = json_of(&commit("MODALITY", &[files[0], other]).success());
    let rep = &r["reports"][0];
    assert_eq!(rep["committed"], serde_json::json!([uids[0]]), "{r}");
    assert_eq!(
        rep["failed"],
        serde_json::json!([[uids[1], 0x0110]]),
        "a conflicting duplicate is not committed: {r}"
    );

    // A peer without the commit right is not offered the service.
    let refused = commit("STOREONLY", &["--wait", "1", files[0]]);
    let out = refused.stdout();
    assert!(
        out.contains("\"accepted\": false") || !refused.ok(),
        "a store-only peer got storage commitment: {out}"
    );

    // Both requests are in the audit trail.
    let trail = data.audit_export();
    let commits: Vec<_> = trail
        .iter()
        .filter(|e| e.to_string().contains("storage commitment"))
        .collect();
    assert_eq!(commits.len(), 3, "{commits:?}");
    assert!(
        commits[0].to_string().contains("2 committed, 2 failed"),
        "{:?}",
        commits[0]
    );
    server.stop();
}

/// A worklist item as the RIS posts it (DICOM JSON).
fn worklist_item(
    id: &str,
    name: &str,
    acc: &str,
    modality: &str,
    station: &str,
    date: &str,
    time: &str,
) -> String {
    serde_json::json!({
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        "00100020": {"vr": "LO", "Value": [id]},
        "00080050": {"vr": "SH", "Value": [acc]},
        "00321060": {"vr": "LO", "Value": ["CT HEAD"]},
        "00400100": {"vr": "SQ", "Value": [{
            "00080060": {"vr": "CS", "Value": [modality]},
            "00400001": {"vr": "AE", "Value": [station]},
            "00400002": {"vr": "DA", "Value": [date]},
            "00400003": {"vr": "TM", "Value": [time]},
            "00400009": {"vr": "SH", "Value": [format!("SPS-{acc}")]}
        }]}
    })
    .to_string()
}

#[test]
fn modality_worklist_from_the_api_to_findscu() {
    let data = DataDir::new("mwl");
    mwl_trial(&data);
}

#[test]
fn modality_worklist_on_postgres() {
    let store = std::env::temp_dir().join(format!("custos-mwl-blobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let data = node("mwl-pg", &fresh_database(), &store, None);
    mwl_trial(&data);
    let _ = std::fs::remove_dir_all(&store);
}

/// Items posted, queried by date, modality, station and name (case and
/// character set), changed, removed; rights checked on both sides.
fn mwl_trial(data: &DataDir) {
    const PW: &str = "schedules 4 modalities";
    add_user(data, "ris", "admin", PW);
    add_user(data, "rad", "radiologist", PW);
    data.add_peer("CT01", "127.0.0.1", free_port(), "echo,worklist,mpps");
    data.add_peer("STOREONLY", "127.0.0.1", free_port(), "echo,store");
    let server = Server::start(data);
    let ris = serde_json::json!({"basic": ["ris", PW]});
    let post = |body: String, auth: &serde_json::Value| {
        serde_json::json!({"method": "POST", "path": "/api/worklist", "auth": auth,
            "headers": {"Content-Type": "application/dicom+json"}, "body": body})
    };
    let r = web_requests(
        &server,
        serde_json::json!([
            post(worklist_item("MWL1", "Doe^Jane", "ACC1", "CT", "CT01", "20261204", "093000"), &ris),
            post(worklist_item("MWL2", "Roe^Richard", "ACC2", "MR", "MR01", "20261204", "110000"), &ris),
            post(worklist_item("MWL3", "Müller^Jürgen", "ACC3", "CT", "CT01", "20261205", "080000"), &ris),
            post(r#"{"00100020": {"vr": "LO", "Value": ["NOSTEP"]}}"#.to_string(), &ris),
            post("not json".to_string(), &ris),
            post(worklist_item("MWL9", "Rad^Ical", "ACC9", "CT", "CT01", "20261204", "0900"), &serde_json::json!({"basic": ["rad", PW]})),
            {"method": "POST", "path": "/api/worklist", "body": "{}"},
        ]),
    );
    let statuses: Vec<_> = r.iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 201, 201, 422, 400, 403, 401], "{r:?}");
    let ids: Vec<i64> = r[..3]
        .iter()
        .map(|x| {
            serde_json::from_str::<serde_json::Value>(x["body"].as_str().unwrap()).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        r[0]["headers"]["location"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/worklist/{}", ids[0]))
    );
    assert!(
        r[3]["body"]
            .as_str()
            .unwrap()
            .contains("ScheduledProcedureStepSequence"),
        "{:?}",
        r[3]
    );

    let out = data.path.with_extension("mwl-out");
    let q = |keys: &[&str]| {
        patient_ids(&worklist_query(&server, "CT01", &out, keys).expect("findscu -W"))
    };
    // The CT worklist of one day, as a CT scanner asks for it.
    assert_eq!(
        q(&[
            "(0040,0100)[0].Modality=CT",
            "(0040,0100)[0].ScheduledProcedureStepStartDate=20261204"
        ]),
        vec!["MWL1"]
    );
    // A date range, and the station's AE title.
    assert_eq!(
        q(&[
            "(0040,0100)[0].ScheduledStationAETitle=CT01",
            "(0040,0100)[0].ScheduledProcedureStepStartDate=20261201-20261231"
        ]),
        vec!["MWL1", "MWL3"]
    );
    // Names match case-insensitively with wildcards; UTF-8 names come back as sent.
    assert_eq!(q(&["PatientName=roe*"]), vec!["MWL2"]);
    let full = worklist_query(
        &server,
        "CT01",
        &out,
        &[
            "PatientID=MWL3",
            "(0040,0100)[0].ScheduledProcedureStepStartTime",
        ],
    )
    .unwrap();
    assert_eq!(full.len(), 1);
    assert!(full[0].contains("Müller^Jürgen"), "{}", full[0]);
    assert!(full[0].contains("ISO_IR 192"), "{}", full[0]);
    assert!(
        full[0].contains("[SPS-ACC3]") && full[0].contains("[080000]"),
        "sequence keys answered: {}",
        full[0]
    );
    // pynetdicom as the modality: the same matching.
    let port = server.port();
    let py = json_of(
        &python(&[
            "worklist",
            "--port",
            &port,
            "--aet",
            "CT01",
            "--modality",
            "CT",
            "--date",
            "20261205",
        ])
        .success(),
    );
    assert_eq!(py["status"], 0, "{py}");
    assert_eq!(
        py["matches"],
        serde_json::json!([{"PatientID": "MWL3", "PatientName": "Müller^Jürgen", "Modality": "CT", "Date": "20261205"}]),
        "{py}"
    );
    // Unrequested attributes are not returned.
    assert!(!full[0].contains("CT HEAD"), "{}", full[0]);

    // The RIS moves MWL2 to the CT and cancels MWL1.
    let item = |id: i64| format!("/api/worklist/{id}");
    let r = web_requests(
        &server,
        serde_json::json!([
            {"method": "PUT", "path": item(ids[1]), "auth": ris, "body": worklist_item("MWL2", "Roe^Richard", "ACC2", "CT", "CT01", "20261204", "110000")},
            {"method": "DELETE", "path": item(ids[0]), "auth": ris},
            {"method": "GET", "path": item(ids[0]), "auth": ris},
            {"method": "GET", "path": item(ids[1]), "auth": ris},
            {"method": "GET", "path": "/api/worklist?from=20261204&to=20261204", "auth": ris},
            {"method": "DELETE", "path": item(ids[0]), "auth": ris},
        ]),
    );
    let statuses: Vec<_> = r.iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![204, 204, 404, 200, 200, 404], "{r:?}");
    assert!(
        r[3]["body"].as_str().unwrap().contains("\"CT\""),
        "{:?}",
        r[3]
    );
    let listed: serde_json::Value = serde_json::from_str(r[4]["body"].as_str().unwrap()).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        q(&[
            "(0040,0100)[0].Modality=CT",
            "(0040,0100)[0].ScheduledProcedureStepStartDate=20261204"
        ]),
        vec!["MWL2"]
    );

    // The CT performs MWL2 and reports it; the transitions PS3.4 F refuses
    // get its statuses.
    let port = server.port();
    let study = "1.2.826.0.1.3680043.2.1125.77.1";
    let mpps = |aet: &str| {
        python(&[
            "mpps",
            "--port",
            &port,
            "--aet",
            aet,
            "--patient-id",
            "MWL2",
            "--study-uid",
            study,
            "--accession",
            "ACC2",
        ])
    };
    let m = json_of(&mpps("CT01").success());
    assert_eq!(
        m["statuses"],
        serde_json::json!({"create_completed": 0x0106, "create": 0, "create_again": 0x0111,
            "set_completed": 0, "set_after_completion": 0x0110, "set_after_completion_error_id": 0xA710,
            "set_unknown": 0x0112}),
        "{m}"
    );
    let uid = m["uid"].as_str().unwrap();
    let r = web_requests(
        &server,
        serde_json::json!([{"method": "GET", "path": format!("/api/mpps/{uid}"), "auth": ris},
            {"method": "GET", "path": "/api/mpps/1.2.3", "auth": ris}]),
    );
    assert_eq!(r[0]["status"], 200, "{r:?}");
    assert_eq!(r[1]["status"], 404, "{r:?}");
    let step: serde_json::Value = serde_json::from_str(r[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(step["status"], "COMPLETED");
    assert_eq!(step["study_uid"], study);
    assert_eq!(
        step["worklist_id"], ids[1],
        "linked to the worklist item by accession"
    );
    assert!(
        step["attributes"]["00400340"]["Value"][0]["0020000E"].is_object(),
        "the performed series: {step}"
    );
    // The worklist item follows: COMPLETED, off the CT's list unless asked for.
    let r = web_requests(
        &server,
        serde_json::json!([{"method": "GET", "path": item(ids[1]), "auth": ris}]),
    );
    let done: serde_json::Value = serde_json::from_str(r[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        done["00400100"]["Value"][0]["00400020"]["Value"][0], "COMPLETED",
        "{done}"
    );
    let day = "(0040,0100)[0].ScheduledProcedureStepStartDate=20261204";
    assert!(
        q(&["(0040,0100)[0].Modality=CT", day]).is_empty(),
        "a finished exam left the worklist"
    );
    assert_eq!(
        q(&["(0040,0100)[0].ScheduledProcedureStepStatus=COMPLETED", day]),
        vec!["MWL2"]
    );
    assert!(
        !json_of(&mpps("STOREONLY"))["accepted"].as_bool().unwrap(),
        "a peer without the mpps right"
    );

    // A peer without the worklist right is not offered the model.
    assert!(worklist_query(&server, "STOREONLY", &out, &[]).is_none_or(|r| r.is_empty()));

    // Every change is an Order Record in the audit trail.
    let trail = data.audit_export();
    let orders = trail
        .iter()
        .filter(|e| e.to_string().contains("Order Record"))
        .count();
    assert_eq!(orders, 8, "3 added, 1 changed, 1 removed, 3 read");
    // Reads of patient data are recorded too, naming the patient: the item
    // read twice, the performed step once, the list as a query.
    let reads: Vec<_> = trail
        .iter()
        .map(|e| &e["record"])
        .filter(|r| r["event"]["code"] == 110109 && r["action"] == "R")
        .collect();
    assert_eq!(reads.len(), 3, "{reads:?}");
    assert!(
        reads
            .iter()
            .all(|r| r["patients"] == serde_json::json!(["MWL2"])),
        "{reads:?}"
    );
    assert!(
        trail
            .iter()
            .map(|e| &e["record"])
            .any(|r| r["event"]["code"] == 110112
                && r["detail"] == "worklist items listed (1)"
                && r["patients"] == serde_json::json!(["MWL2"])),
        "the worklist list is not recorded"
    );
    // The removed item's record names whose it was.
    assert!(
        trail
            .iter()
            .map(|e| &e["record"])
            .any(|r| r["event"]["code"] == 110109
                && r["action"] == "D"
                && r["patients"] == serde_json::json!(["MWL1"])),
        "the removal does not name the patient"
    );
    // A modality's worklist C-FIND names the patients it was given.
    assert!(
        trail
            .iter()
            .map(|e| &e["record"])
            .any(|r| r["event"]["code"] == 110112
                && r["peer"] == "CT01"
                && r["detail"] == "C-FIND modality worklist"
                && r["patients"] == serde_json::json!(["MWL1", "MWL3"])),
        "the modality's worklist query does not name its patients"
    );
    let procedures: Vec<_> = trail
        .iter()
        .filter(|e| e.to_string().contains("Procedure Record"))
        .collect();
    assert_eq!(procedures.len(), 2, "created and completed: {procedures:?}");
    assert!(procedures.iter().all(|e| e.to_string().contains(study)));
    assert!(
        procedures
            .iter()
            .all(|e| e["record"]["patients"] == serde_json::json!(["MWL2"])),
        "the performed steps name their patient: {procedures:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
    server.stop();
}

/// A report the modality could not take (it released at once and its SCP is
/// down) is held in the durable queue: it survives a SIGKILL of the server
/// and reaches the modality's SCP after the restart.
#[test]
fn a_held_commitment_report_survives_a_sigkill() {
    let data = DataDir::new("commit-kill");
    let listen = free_port();
    data.add_peer("MODALITY", "127.0.0.1", listen, "echo,store,commit");
    let toml = data.path.join("custos.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("retry_seconds = 10", "retry_seconds = 1"),
    )
    .unwrap();
    let server = Server::process(&data);
    let (files, uids) = stored_instances(&server, &data.path.with_extension("src"), "MODALITY", 2);
    let port = server.port();
    let listen_port = listen.to_string();
    let mut args = vec![
        "commit",
        "--port",
        &port,
        "--aet",
        "MODALITY",
        "--listen-port",
        &listen_port,
        "--no-listen",
    ];
    args.extend(files.iter().map(String::as_str));
    let r = json_of(&python(&args).success());
    assert_eq!(r["status"], 0, "{r}");
    let transaction = r["transaction"].as_str().unwrap().to_string();
    let held = |state: &str| {
        data.cli(&["jobs", "list", "--state", state])
            .success()
            .stdout()
            .lines()
            .filter(|l| l.split('\t').nth(4) == Some(transaction.as_str()))
            .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    wait_until(
        "the report tried on a new association and failed",
        std::time::Duration::from_secs(30),
        || held("pending").first().is_some_and(|j| j[2] != "0"),
    );
    server.kill9();

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/peer.py");
    let listener = std::process::Command::new("python3")
        .arg(script)
        .args(["await-report", "--port", "0", "--aet", "MODALITY"])
        .args(["--listen-port", &listen_port, "--wait", "90"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(listen);
    let server = Server::process(&data);
    let out = listener.wait_with_output().unwrap();
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let reports = got["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{got}");
    assert_eq!(reports[0]["transaction"], transaction.as_str());
    assert_eq!(reports[0]["calling"], "CUSTOS");
    assert_eq!(reports[0]["event_type"], 1, "{got}");
    let mut committed: Vec<&str> = reports[0]["committed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    committed.sort();
    let mut want: Vec<&str> = uids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(committed, want);
    wait_until(
        "the held report done",
        std::time::Duration::from_secs(30),
        || held("done").len() == 1,
    );
    server.stop();
}
