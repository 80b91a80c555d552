//! The same SOP Instance UID arriving again: identical bytes are a success with
//! one copy; different bytes follow `[dicom] duplicates` (keep, reject, replace).

use crate::common::*;
use serde_json::{Value, json};

const UID: &str = "1.2.826.0.1.3680043.10.511.99.1";

/// Two instances with the same UIDs but different patient names.
fn two_versions(data: &DataDir) -> (String, String) {
    let dir = data.path.with_extension("files");
    let spec = |name: &str| {
        json!({"SOPInstanceUID": UID, "StudyInstanceUID": "1.2.826.0.1.3680043.10.511.99", "SeriesInstanceUID": "1.2.826.0.1.3680043.10.511.99.0", "PatientName": name, "PatientID": "DUP"}).to_string()
    };
    let made = python(&[
        "make",
        dir.to_str().unwrap(),
        &spec("FIRST^VERSION"),
        &spec("SECOND^VERSION"),
    ])
    .success();
    let files: Vec<String> = serde_json::from_str(&made.stdout()).unwrap();
    (files[0].clone(), files[1].clone())
}

fn store(server: &Server, file: &str) -> Value {
    let out = python(&["store", "--port", &server.port(), "--aet", "PYSCU", file]).success();
    let v: Value = serde_json::from_str(&out.stdout()).unwrap();
    v[file]["status"].clone()
}

fn stored_names(server: &Server) -> Vec<String> {
    let out = python(&[
        "get",
        "--port",
        &server.port(),
        "--aet",
        "PYSCU",
        "--level",
        "STUDY",
        "-k",
        "StudyInstanceUID=1.2.826.0.1.3680043.10.511.99",
    ])
    .success();
    let v: Value = serde_json::from_str(&out.stdout()).unwrap();
    v["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

fn run(policy: &str) -> (Value, Vec<String>, usize) {
    let data = DataDir::new(&format!("dup-{policy}"));
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,get");
    let server = Server::start_with(&data, &[("CUSTOS_DICOM_DUPLICATES", policy)]);
    let (first, second) = two_versions(&data);
    assert_eq!(store(&server, &first), 0);
    assert_eq!(store(&server, &first), 0, "identical again: success");
    assert_eq!(data.blob_count(), 1, "identical again: one copy");
    let status = store(&server, &second);
    let names = stored_names(&server);
    let blobs = data.blob_count();
    let _ = std::fs::remove_dir_all(data.path.with_extension("files"));
    (status, names, blobs)
}

#[test]
fn keep_warns_and_keeps_the_stored_copy() {
    let (status, names, blobs) = run("keep");
    assert_eq!(status, 0xB006);
    assert_eq!(names, ["FIRST^VERSION"]);
    assert_eq!(blobs, 1);
}

#[test]
fn reject_refuses_the_new_copy() {
    let (status, names, blobs) = run("reject");
    assert_eq!(status, 0x0111);
    assert_eq!(names, ["FIRST^VERSION"]);
    assert_eq!(blobs, 1);
}

#[test]
fn replace_swaps_in_the_new_copy() {
    let (status, names, blobs) = run("replace");
    assert_eq!(status, 0);
    assert_eq!(names, ["SECOND^VERSION"]);
    assert_eq!(blobs, 1, "the replaced blob is removed");
}

#[test]
fn a_derived_object_replaces_nothing_even_under_replace() {
    // The store-derived right (a radiologist's STOW-RS: SR, SEG, states)
    // once replaced whatever had the SOP Instance UID under `replace`.
    const PW: &str = "reads all day long 3";
    let data = DataDir::new("dup-derived");
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,get");
    add_user(&data, "rad", "radiologist", PW);
    let server = Server::start_with(&data, &[("CUSTOS_DICOM_DUPLICATES", "replace")]);
    let dir = data.path.with_extension("files");
    let spec = |name: &str, class: &str| {
        json!({"SOPInstanceUID": UID, "SOPClassUID": class, "StudyInstanceUID": "1.2.826.0.1.3680043.10.511.99", "SeriesInstanceUID": "1.2.826.0.1.3680043.10.511.99.0", "PatientName": name, "PatientID": "DUP"}).to_string()
    };
    let made = python(&[
        "make",
        dir.to_str().unwrap(),
        &spec("FIRST^VERSION", "1.2.840.10008.5.1.4.1.1.7"),
        &spec("SECOND^VERSION", "1.2.840.10008.5.1.4.1.1.88.11"),
    ])
    .success();
    let files: Vec<String> = serde_json::from_str(&made.stdout()).unwrap();
    assert_eq!(store(&server, &files[0]), 0);
    let stow = web(&server, "rad", PW, &["stow", &files[1]]);
    assert!(!stow.ok(), "the SR was taken: {}", stow.stdout());
    assert_eq!(stored_names(&server), ["FIRST^VERSION"]);
    assert_eq!(data.blob_count(), 1);
    let _ = std::fs::remove_dir_all(dir);
}
