//! A study downloaded as a ZIP with a DICOMDIR: pydicom's FileSet reads the
//! DICOMDIR (following its records' offsets) and finds every stored
//! instance, each file byte-identical to what WADO-RS returns, named in
//! series- and instance-number order; the download is audited, and a user
//! without the right to retrieve is refused.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;

const PW_ADMIN: &str = "exports 42 for research";
const PW_RAD: &str = "reads 42 at the console";
const PW_AUD: &str = "checks 42 the records";

/// A study of `series` × `instances` made by pydicom for `patient`, stored
/// by the admin with dicomweb-client; what `web.py stow-study` printed.
fn stow_study(
    server: &Server,
    patient: &str,
    name: &str,
    series: &str,
    instances: &str,
) -> serde_json::Value {
    let args = [
        "stow-study",
        "--patient-id",
        patient,
        "--name",
        name,
        "--series",
        series,
        "--instances",
        instances,
    ];
    let made = json_of(&web(server, "boss", PW_ADMIN, &args).success());
    assert_eq!(made["failed"], 0, "{made}");
    made
}

#[test]
fn a_study_downloads_as_a_zip_whose_dicomdir_pydicom_reads() {
    let data = DataDir::new("zip");
    add_user(&data, "boss", "admin", PW_ADMIN);
    add_user(&data, "rad", "radiologist", PW_RAD);
    add_user(&data, "aud", "auditor", PW_AUD);
    let server = Server::start(&data);
    let made = stow_study(&server, "ZIP-1", "Müller^Jürgen", "2", "3");
    let study = made["study"].as_str().unwrap();
    let out = std::env::temp_dir().join(format!("custos-zip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);

    let got = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &["zip", "--study", study, "--out", out.to_str().unwrap()],
        )
        .success(),
    );
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["content_type"], "application/zip");
    assert!(
        got["disposition"]
            .as_str()
            .unwrap()
            .starts_with("attachment"),
        "{got}"
    );
    assert!(got["crc_failure"].is_null(), "a CRC failed: {got}");
    let names: Vec<&str> = got["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names[0], "DICOMDIR", "{names:?}");
    assert_eq!(names.len(), 7, "{names:?}");

    // Every stored instance is in the DICOMDIR, its record pointing at a file
    // that holds that instance, under the right patient, study and series.
    let instances = got["instances"].as_array().unwrap();
    let sops: BTreeSet<&str> = instances
        .iter()
        .map(|i| i["sop"].as_str().unwrap())
        .collect();
    let stored: BTreeSet<&str> = made["sops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(sops, stored);
    for i in instances {
        assert_eq!(i["file_sop"], i["sop"], "{i}");
        assert_eq!(i["record"], "IMAGE");
        assert_eq!(i["patient_id"], "ZIP-1");
        assert_eq!(i["patient_name"], "Müller^Jürgen", "UTF-8 in the records");
        assert_eq!(i["study"], study);
    }
    // Files are named in series-number, then instance-number order: the
    // series stored second has number 1.
    let mut by_path: Vec<(&str, i64, i64, &str)> = instances
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap(),
                i["series_number"].as_i64().unwrap(),
                i["instance_number"].as_i64().unwrap(),
                i["series"].as_str().unwrap(),
            )
        })
        .collect();
    by_path.sort();
    let order: Vec<(i64, i64)> = by_path.iter().map(|p| (p.1, p.2)).collect();
    assert_eq!(order, [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]);
    assert_eq!(by_path[0].0, "DICOM/SE000001/IM000001");
    assert_eq!(
        by_path[0].3, made["series"][1],
        "series number 1 was stored second"
    );

    // The bytes are the stored bytes, as WADO-RS hands them out.
    let wado = wado_study_parts(&server, "rad", PW_RAD, study, &out.join("wado"));
    let wado_hashes: BTreeSet<&str> = wado["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sha256"].as_str().unwrap())
        .collect();
    let zip_hashes: BTreeSet<&str> = instances
        .iter()
        .map(|i| i["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(zip_hashes, wado_hashes);

    // An auditor may not retrieve images; an unknown study is not found.
    let refused = json_of(
        &web(
            &server,
            "aud",
            PW_AUD,
            &["zip", "--study", study, "--out", out.to_str().unwrap()],
        )
        .success(),
    );
    assert_eq!(refused["status"], 403, "{refused}");
    let missing = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &[
                "zip",
                "--study",
                "1.2.3.4.5",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .success(),
    );
    assert_eq!(missing["status"], 404, "{missing}");

    // The download is in the audit trail: who, which study, which patient.
    let detail = format!("ZIP download of {study}: 6 instances");
    wait_until(
        "the download's audit record",
        Duration::from_secs(10),
        || {
            data.audit_export().iter().any(|r| {
                let b = &r["record"];
                b["user"] == "rad"
                    && b["event"]["code"] == 110104
                    && b["detail"] == detail.as_str()
                    && b["patients"][0] == "ZIP-1"
            })
        },
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// A selection of studies (two patients) as one ZIP whose DICOMDIR lists
/// each study under its patient and folder, and one series alone; both
/// audited with every study and patient; a malformed or oversized selection
/// is refused, and one unknown study makes the whole download 404.
#[test]
fn studies_selected_and_one_series_download_with_one_dicomdir() {
    let data = DataDir::new("zip-sel");
    add_user(&data, "boss", "admin", PW_ADMIN);
    add_user(&data, "rad", "radiologist", PW_RAD);
    let server = Server::start(&data);
    let stow =
        |patient: &str, name: &str, series: &str| stow_study(&server, patient, name, series, "2");
    let a1 = stow("SEL-A", "Alpha^Ann", "2");
    let b1 = stow("SEL-B", "Beta^Bob", "1");
    let a2 = stow("SEL-A", "Alpha^Ann", "1");
    let uid = |m: &serde_json::Value| m["study"].as_str().unwrap().to_string();
    let out = std::env::temp_dir().join(format!("custos-zip-sel-{}", std::process::id()));
    let zip = |path: &str, into: &str| {
        let _ = std::fs::remove_dir_all(out.join(into));
        json_of(
            &web(
                &server,
                "rad",
                PW_RAD,
                &[
                    "zip",
                    "--path",
                    path,
                    "--out",
                    out.join(into).to_str().unwrap(),
                ],
            )
            .success(),
        )
    };

    let selection = format!("{},{},{}", uid(&a1), uid(&b1), uid(&a2));
    let got = zip(&format!("/api/download.zip?studies={selection}"), "sel");
    assert_eq!(got["status"], 200, "{got}");
    assert!(got["crc_failure"].is_null(), "{got}");
    assert!(
        got["disposition"]
            .as_str()
            .unwrap()
            .contains("3-studies.zip"),
        "{got}"
    );
    let instances = got["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 8, "4 + 2 + 2: {got}");
    for i in instances {
        assert_eq!(i["file_sop"], i["sop"], "{i}");
        let (study, patient) = (
            i["study"].as_str().unwrap(),
            i["patient_id"].as_str().unwrap(),
        );
        let expected = if study == uid(&b1) { "SEL-B" } else { "SEL-A" };
        assert_eq!(patient, expected, "{i}");
        // Each study in its own folder, in the order selected.
        let folder = [uid(&a1), uid(&b1), uid(&a2)]
            .iter()
            .position(|s| s == study)
            .unwrap()
            + 1;
        let path = i["path"].as_str().unwrap();
        assert!(
            path.starts_with(&format!("DICOM/ST{folder:06}/SE")),
            "{path}"
        );
    }
    let sops: BTreeSet<&str> = instances
        .iter()
        .map(|i| i["sop"].as_str().unwrap())
        .collect();
    let stored: BTreeSet<&str> = [&a1, &b1, &a2]
        .iter()
        .flat_map(|m| {
            m["sops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
        })
        .collect();
    assert_eq!(sops, stored);

    // One series: only its instances, under the study's usual layout.
    let series = a1["series"][0].as_str().unwrap();
    let got = zip(
        &format!("/api/studies/{}/series/{series}/download.zip", uid(&a1)),
        "series",
    );
    assert_eq!(got["status"], 200, "{got}");
    let instances = got["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{got}");
    for i in instances {
        assert_eq!(i["series"], series, "{i}");
        assert!(
            i["path"].as_str().unwrap().starts_with("DICOM/SE000001/IM"),
            "{i}"
        );
    }

    // Refused: a malformed UID, more than 100 studies; one unknown study
    // fails the whole download rather than leaving it out.
    let bad = zip("/api/download.zip?studies=1.2.3,not-a-uid", "bad");
    assert_eq!(bad["status"], 400, "{bad}");
    let many: Vec<String> = (1..=101).map(|n| format!("1.2.{n}")).collect();
    let bad = zip(
        &format!("/api/download.zip?studies={}", many.join(",")),
        "bad",
    );
    assert_eq!(bad["status"], 400, "{bad}");
    let missing = zip(
        &format!("/api/download.zip?studies={},1.2.3.4.5", uid(&a1)),
        "bad",
    );
    assert_eq!(missing["status"], 404, "{missing}");
    assert!(
        missing["body"]
            .as_str()
            .unwrap()
            .contains("study 1.2.3.4.5 is not"),
        "the missing one named: {missing}"
    );
    let missing = zip(
        &format!("/api/studies/{}/series/{}/download.zip", uid(&b1), series),
        "bad",
    );
    assert_eq!(
        missing["status"], 404,
        "a series of another study: {missing}"
    );

    // Audited: the selection with its three studies and both patients.
    wait_until(
        "the selection's audit record",
        Duration::from_secs(10),
        || {
            data.audit_export().iter().any(|r| {
                let b = &r["record"];
                b["user"] == "rad"
                    && b["detail"] == "ZIP download of 3 studies: 8 instances"
                    && b["studies"].as_array().is_some_and(|s| s.len() == 3)
                    && b["patients"] == serde_json::json!(["SEL-A", "SEL-B"])
            })
        },
    );
    let _ = std::fs::remove_dir_all(&out);
}
