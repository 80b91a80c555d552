//! The department's workflow over DICOM (issue 15), against pynetdicom as the
//! modality: storage commitment.

use crate::common::*;

/// Makes `n` small instances of one patient and stores them as `aet`: their
/// files and SOP Instance UIDs.
fn stored_instances(
    server: &Server,
    dir: &std::path::Path,
    aet: &str,
    n: usize,
) -> (Vec<String>, Vec<String>) {
    let mut args = vec!["make".to_string(), dir.to_string_lossy().into_owned()];
    for i in 0..n {
        args.push(format!(
            r#"{{"PatientID": "COMMIT", "InstanceNumber": "{i}"}}"#
        ));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let made = json_of(&python(&args).success());
    let files: Vec<String> = made
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let port = server.port();
    let mut store = vec!["store", "--port", &port, "--aet", aet];
    store.extend(files.iter().map(String::as_str));
    let stored = json_of(&python(&store).success());
    let uids = files
        .iter()
        .map(|f| {
            assert_eq!(stored[f]["status"], 0, "{stored}");
            stored[f]["uid"].as_str().unwrap().to_string()
        })
        .collect();
    (files, uids)
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
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert!(
        commits[0].to_string().contains("2 committed, 2 failed"),
        "{:?}",
        commits[0]
    );
    server.stop();
}
