//! DCMTK's own tools (Debian `dcmtk`) against Custos: echoscu, storescu,
//! findscu, getscu, and movescu with its own receiver.

use std::time::Duration;

use crate::common::*;

fn received(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = walk_files(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn dcmtk_tools_store_find_get_move() {
    let data = DataDir::new("dcmtk");
    let recv_port = free_port();
    data.add_peer("DCMTK", "127.0.0.1", recv_port, "echo,store,find,get,move");
    data.add_peer("VIEWONLY", "127.0.0.1", 104, "echo,find,get");
    let server = Server::start(&data);
    let port = server.port();
    let files = pydicom_test_files();
    let ct = files.join("CT_small.dcm");
    let mr = files.join("MR_small.dcm");

    assert!(echo(&server, "DCMTK", "CUSTOS").ok());

    let st = dcmtk(
        "storescu",
        &[
            "-v",
            "-aet",
            "DCMTK",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &port,
            ct.to_str().unwrap(),
            mr.to_str().unwrap(),
        ],
    );
    assert!(st.ok(), "{}", st.stderr());
    assert_eq!(
        st.stderr()
            .matches("Received Store Response (Success)")
            .count(),
        2,
        "{}",
        st.stderr()
    );
    assert_eq!(data.blob_count(), 2);

    // Storing is refused for a peer without `store` (it has storage contexts for C-GET only).
    let st = dcmtk(
        "storescu",
        &[
            "-aet",
            "VIEWONLY",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &port,
            ct.to_str().unwrap(),
        ],
    );
    assert!(
        st.stderr().contains("Refused") || st.stderr().contains("0x0124") || !st.ok(),
        "{}",
        st.stderr()
    );

    let find = dcmtk(
        "findscu",
        &[
            "-v",
            "-S",
            "-aet",
            "DCMTK",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &port,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=CompressedSamples^CT*",
            "-k",
            "StudyInstanceUID",
            "-k",
            "ModalitiesInStudy",
        ],
    );
    assert!(find.ok(), "{}", find.stderr());
    let text = find.stderr() + &find.stdout();
    assert!(text.contains("Find Response: 1 (Pending)"), "{text}");
    assert!(!text.contains("Find Response: 2 (Pending)"), "{text}");
    assert!(text.contains(CT_STUDY) && text.contains("[CT]"), "{text}");

    // C-GET into a folder: the same instance, same attributes and pixel data.
    let out = std::env::temp_dir().join(format!("custos-getscu-{}", std::process::id()));
    getscu_study(&server, "DCMTK", CT_STUDY, &out);
    assert_eq!(received(&out), [format!("CT.{CT_SOP}")]);
    assert_eq!(dcm_dump(&out.join(format!("CT.{CT_SOP}"))), dcm_dump(&ct));

    // C-MOVE to movescu's own receiver (registered as DCMTK at recv_port).
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let rp = recv_port.to_string();
    let mv = dcmtk(
        "movescu",
        &[
            "-aet",
            "DCMTK",
            "-aec",
            "CUSTOS",
            "-aem",
            "DCMTK",
            "--port",
            &rp,
            "127.0.0.1",
            &port,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={CT_STUDY}"),
            "-od",
            out.to_str().unwrap(),
        ],
    );
    assert!(mv.ok(), "{}", mv.stderr());
    assert_eq!(received(&out), [format!("CT.{CT_SOP}")]);
    assert_eq!(dcm_dump(&out.join(format!("CT.{CT_SOP}"))), dcm_dump(&ct));

    // C-MOVE to an unregistered destination: 0xA801, nothing sent.
    let mv = dcmtk(
        "movescu",
        &[
            "-aet",
            "DCMTK",
            "-aec",
            "CUSTOS",
            "-aem",
            "ELSEWHERE",
            "127.0.0.1",
            &port,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={CT_STUDY}"),
        ],
    );
    assert!(
        mv.stderr().contains("MoveDestinationUnknown") || mv.stderr().contains("a801"),
        "{}",
        mv.stderr()
    );
    // VIEWONLY has no move permission: refused per request.
    let mv = dcmtk(
        "movescu",
        &[
            "-aet",
            "VIEWONLY",
            "-aec",
            "CUSTOS",
            "-aem",
            "DCMTK",
            "127.0.0.1",
            &port,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={CT_STUDY}"),
        ],
    );
    assert!(!mv.stderr().contains("Success"), "{}", mv.stderr());
    // Each refusal is in the audit trail, as a security alert with the peer.
    for (peer, why) in [
        ("VIEWONLY", "store is not granted to this peer"),
        ("DCMTK", "C-MOVE to `ELSEWHERE`, not a registered peer"),
    ] {
        wait_until(
            &format!("a security alert: {why}"),
            Duration::from_secs(10),
            || {
                data.audit_export().iter().any(|e| {
                    e["record"]["event"]["code"] == 110113
                        && e["record"]["peer"] == peer
                        && e.to_string().contains(why)
                })
            },
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn import_then_query_and_retrieve() {
    let data = DataDir::new("import");
    let files = pydicom_test_files();
    let dir = std::env::temp_dir().join(format!("custos-import-src-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::copy(files.join("CT_small.dcm"), dir.join("sub/ct.dcm")).unwrap();
    std::fs::copy(files.join("MR_small.dcm"), dir.join("mr.dcm")).unwrap();
    std::fs::copy(
        files.join("rtplan_truncated.dcm"),
        dir.join("truncated.dcm"),
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not dicom").unwrap();
    let run = data.cli(&["import", dir.to_str().unwrap()]).success();
    let out = run.stdout();
    assert!(out.contains("2 stored, 0 already stored"), "{out}");
    assert!(out.contains("1 rejected, 1 skipped"), "{out}");
    assert!(out.contains("truncated.dcm"), "{out}");
    // Again: duplicates, nothing new.
    let again = data
        .cli(&["import", dir.to_str().unwrap()])
        .success()
        .stdout();
    assert!(again.contains("0 stored, 2 already stored"), "{again}");
    assert_eq!(data.blob_count(), 2);
    // A path that is not there is an error, not an import of nothing.
    let missing = data.cli(&["import", dir.join("no-such-folder").to_str().unwrap()]);
    assert!(!missing.ok(), "{}", missing.stdout());
    // Each import is in the audit trail.
    let imports = data
        .audit_export()
        .iter()
        .filter(|r| r["record"]["event"]["code"] == 110107)
        .count();
    assert_eq!(imports, 2, "one Import record per run");
    // A file that cannot be read (here an I/O error: /proc/self/mem at
    // offset 0, as a failing disc gives) is neither "not DICOM" nor a
    // success: named, and the exit status says the import is not whole.
    let unreadable = data.cli(&["import", "/proc/self/mem"]);
    assert!(!unreadable.ok(), "{}", unreadable.stdout());
    assert!(
        unreadable.stdout().contains("could not be read")
            && unreadable.stdout().contains("0 skipped"),
        "{}",
        unreadable.stdout()
    );

    data.add_peer("DCMTK", "127.0.0.1", 104, "find");
    let server = Server::start(&data);
    let find = findscu_studies(&server, "DCMTK");
    let text = find.stderr();
    assert!(
        text.contains("Find Response: 2 (Pending)") && !text.contains("Find Response: 3"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
