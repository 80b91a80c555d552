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

#[test]
fn a_study_downloads_as_a_zip_whose_dicomdir_pydicom_reads() {
    let data = DataDir::new("zip");
    add_user(&data, "boss", "admin", PW_ADMIN);
    add_user(&data, "rad", "radiologist", PW_RAD);
    add_user(&data, "aud", "auditor", PW_AUD);
    let server = Server::start(&data);
    let made = json_of(
        &web(
            &server,
            "boss",
            PW_ADMIN,
            &[
                "stow-study",
                "--patient-id",
                "ZIP-1",
                "--name",
                "Müller^Jürgen",
                "--series",
                "2",
                "--instances",
                "3",
            ],
        )
        .success(),
    );
    assert_eq!(made["failed"], 0, "{made}");
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
