//! Every valid storable instance among pydicom's test files is stored over
//! C-STORE and comes back byte-identical by C-GET and by C-MOVE (pynetdicom as
//! the workstation and as the move destination).

use crate::common::*;

/// Files pydicom reads by guessing (its meta says explicit VR, its data set is
/// implicit VR); DCMTK and dicom-rs refuse them: 0xC000, never stored half-way.
const DICOM_RS_CANNOT_PARSE: &[&str] = &["SC_rgb_jpeg.dcm"];

#[test]
fn pydicom_test_files_round_trip_byte_identical() {
    round_trip(DataDir::new("roundtrip"));
}

/// The same interop suite on the scale-out backends.
#[test]
fn pydicom_test_files_round_trip_on_postgres_and_s3() {
    let unused = std::env::temp_dir().join(format!("custos-unused-rt-{}", std::process::id()));
    round_trip(node(
        "roundtrip-pg",
        &fresh_database(),
        &unused,
        Some(&s3_url("roundtrip")),
    ));
    assert!(!unused.exists(), "no blob touched the local folder");
}

fn round_trip(data: DataDir) {
    let dest_port = free_port();
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get,move");
    data.add_peer("PYDEST", "127.0.0.1", dest_port, "echo");
    // The test set reuses SOP Instance UIDs across variants of one image.
    let server = Server::start_with(&data, &[("CUSTOS_DICOM_DUPLICATES", "replace")]);
    let dir = pydicom_test_files();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    let port = server.port();
    let mut args = vec![
        "roundtrip",
        "--port",
        port.as_str(),
        "--aet",
        "PYSCU",
        "--dest-aet",
        "PYDEST",
    ];
    let dp = dest_port.to_string();
    args.extend(["--dest-port", dp.as_str()]);
    args.extend(files.iter().map(String::as_str));
    let run = python(&args).success();
    let report: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&run.stdout()).unwrap();
    let mut valid = 0;
    let mut failures = Vec::new();
    for (file, r) in &report {
        let name = file.rsplit('/').next().unwrap();
        if r["valid"] == true && !DICOM_RS_CANNOT_PARSE.contains(&name) {
            valid += 1;
            let ok = r["status"] == 0
                && r["get_status"] == 0
                && r["move_status"] == 0
                && r["get_identical"] == true
                && r["move_identical"] == true;
            if !ok {
                failures.push(format!("{name}: {r}"));
            }
        } else if r.get("status").is_some_and(|s| s == 0) && r["valid"] != true {
            failures.push(format!(
                "{name} is not a valid instance but was accepted: {r}"
            ));
        } else if DICOM_RS_CANNOT_PARSE.contains(&name) {
            assert_eq!(r["status"], 0xC000, "{name}: {r}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(valid >= 50, "only {valid} valid files were exercised");
    // Several transfer syntaxes were really exercised.
    let syntaxes: std::collections::BTreeSet<_> = report
        .values()
        .filter(|r| r["status"] == 0)
        .map(|r| r["ts"].to_string())
        .collect();
    assert!(syntaxes.len() >= 10, "{syntaxes:?}");
}

/// A receiver that accepts only Explicit VR Little Endian gets compressed
/// instances decompressed where dicom-rs has the codec; otherwise the
/// sub-operation is counted as failed (0xA702 when it was the only one).
#[test]
fn c_get_decompresses_for_receivers_without_codecs() {
    let data = DataDir::new("decompress");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,get");
    let server = Server::start_with(&data, &[("CUSTOS_DICOM_DUPLICATES", "replace")]);
    let dir = pydicom_test_files();
    let names = [
        "MR_small_RLE.dcm",              // RLE: lossless, must match exactly
        "MR_small_jp2klossless.dcm",     // JPEG 2000 lossless
        "JPEG2000.dcm",                  // JPEG 2000
        "image_dfl.dcm",                 // deflated data set
        "MR_small_bigendian.dcm",        // explicit big endian
        "SC_rgb_jpeg_dcmtk.dcm",         // JPEG baseline (lossy: decoders may round differently)
        "MR_small_jpeg_ls_lossless.dcm", // JPEG-LS: no decoder in this build
    ];
    let files: Vec<String> = names
        .iter()
        .map(|n| dir.join(n).to_string_lossy().into_owned())
        .collect();
    let port = server.port();
    let mut args = vec![
        "get-uncompressed",
        "--port",
        port.as_str(),
        "--aet",
        "PYSCU",
    ];
    args.extend(files.iter().map(String::as_str));
    let out = python(&args).success();
    let report: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&out.stdout()).unwrap();
    let of = |name: &str| {
        report
            .iter()
            .find(|(f, _)| f.ends_with(name))
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    for name in &names[..5] {
        let r = of(name);
        assert_eq!(r["status"], 0, "{name}: {r}");
        assert_eq!(r["received_ts"], "1.2.840.10008.1.2.1", "{name}: {r}");
        assert_eq!(r["pixels_equal"], true, "{name}: {r}");
    }
    let jpeg = of("SC_rgb_jpeg_dcmtk.dcm");
    assert_eq!(jpeg["status"], 0, "{jpeg}");
    assert!(jpeg["max_abs_diff"].as_i64().unwrap() <= 2, "{jpeg}");
    let jls = of("MR_small_jpeg_ls_lossless.dcm");
    assert_eq!(jls["status"], 0xA702, "{jls}");
    assert!(jls["received_ts"].is_null());
    // The retrieve that delivered nothing is recorded with how it ended.
    wait_until(
        "the failed C-GET audited",
        std::time::Duration::from_secs(10),
        || {
            data.audit_export().iter().map(|e| &e["record"]).any(|r| {
                r["event"]["code"] == 110104
                    && r["outcome"] == 4
                    && r["peer"] == "PYSCU"
                    && r["detail"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("C-GET ended: 0 sent, 1 failed"))
            })
        },
    );
}

/// A C-MOVE destination that accepts associations only once the C-MOVE's
/// requester has had a response, as DCMTK's movescu does when it is its own
/// destination (it looks for incoming associations only between one-second
/// waits for a response): Custos sends a Pending response (the one instance
/// remaining) while the association is being made, so the instance arrives.
/// Before, the move waited on a destination that waited on it (here: no
/// response at all within the requester's 10 s).
#[test]
fn c_move_wakes_a_destination_that_waits_for_a_response() {
    let r = move_to_late_destination("move-late-accept", &[], &[]);
    assert_eq!(r["statuses"][0], 0xFF00, "{r}");
    let first = &r["first"];
    assert_eq!(first["NumberOfRemainingSuboperations"], 1, "{r}");
    assert_eq!(first["NumberOfCompletedSuboperations"], 0, "{r}");
    assert_eq!(r["statuses"].as_array().unwrap().last().unwrap(), 0, "{r}");
    assert_eq!(r["received"], serde_json::json!([CT_SOP]), "{r}");
}

/// A destination that never answers: the requester hears Pending responses
/// meanwhile (its own 10 s DIMSE timeout does not fire) and, once Custos gives
/// up (30 s, or its idle timeout if shorter: 5 s here), a final response with
/// the instance failed; not after the sub-association's own read timeout.
#[test]
fn c_move_to_a_silent_destination_ends_with_the_instance_failed() {
    let r = move_to_late_destination(
        "move-never-accept",
        &["--never-accept", "--wait", "4", "--give-up", "25"],
        &[("CUSTOS_DICOM_IDLE_TIMEOUT_SECS", "5")],
    );
    let statuses = r["statuses"].as_array().unwrap();
    assert!(statuses.len() > 8, "{r}");
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| s == 0xFF00),
        "{r}"
    );
    assert_eq!(statuses.last().unwrap(), 0xA702, "{r}");
    assert_eq!(r["received"], serde_json::json!([]), "{r}");
}

/// A C-CANCEL while the destination has not answered yet ends the C-MOVE as
/// cancelled (0xFE00), nothing sent.
#[test]
fn c_move_cancelled_while_the_destination_is_silent() {
    let r = move_to_late_destination(
        "move-cancel",
        &["--never-accept", "--cancel", "--give-up", "25"],
        &[],
    );
    let statuses = r["statuses"].as_array().unwrap();
    assert_eq!(statuses.last().unwrap(), 0xFE00, "{r}");
    assert!(statuses.len() <= 3, "{r}");
    assert_eq!(r["received"], serde_json::json!([]), "{r}");
}

/// CT_small stored, then moved by `peer.py move-late-accept` with `extra`,
/// the server run with `env`.
fn move_to_late_destination(name: &str, extra: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let data = DataDir::new(name);
    let dest_port = free_port();
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,move");
    data.add_peer("PYDEST", "127.0.0.1", dest_port, "echo");
    let server = Server::start_with(&data, env);
    let port = server.port();
    let ct = pydicom_test_files().join("CT_small.dcm");
    let common = ["--port", port.as_str(), "--aet", "PYSCU"];
    let mut store = vec!["store"];
    store.extend(common);
    store.push(ct.to_str().unwrap());
    python(&store).success();
    let dp = dest_port.to_string();
    let mut args = vec!["move-late-accept"];
    args.extend(common);
    args.extend([
        "--study",
        CT_STUDY,
        "--dest-aet",
        "PYDEST",
        "--dest-port",
        dp.as_str(),
    ]);
    args.extend(extra);
    let run = python(&args).success();
    serde_json::from_str(&run.stdout()).unwrap()
}
