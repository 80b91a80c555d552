//! C-FIND matching (PS3.4 C.2.2.2) as a workstation sees it: single values,
//! wildcards, ranges, UID lists, universal matching, levels, character sets,
//! the result cap and C-CANCEL.

use crate::common::*;
use serde_json::{Value, json};

struct Fixture {
    _data: DataDir,
    server: Server,
    _files: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Studies: DOE^JOHN (CT, 2020, two series), DOE^JANE (MR, 2021), SMITH^ANNA
/// (CT+PR, 2019), Müller^Jürgen in Latin-1, Ærø^Åse in UTF-8, 山田^太郎 in ISO 2022 IR 87.
fn fixture(name: &str, env: &[(&str, &str)]) -> Fixture {
    let data = DataDir::new(name);
    data.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find");
    let server = Server::start_with(&data, env);
    let dir = std::env::temp_dir().join(format!(
        "custos-query-files-{}-{}",
        name,
        std::process::id()
    ));
    let specs = [
        json!({"PatientName": "DOE^JOHN", "PatientID": "P1", "StudyInstanceUID": "1.2.3.1", "SeriesInstanceUID": "1.2.3.1.1", "StudyDate": "20200105", "StudyTime": "101500", "AccessionNumber": "A100", "Modality": "CT", "PatientBirthDate": "19600101", "PatientSex": "M", "StudyDescription": "CT HEAD"}),
        json!({"PatientName": "DOE^JOHN", "PatientID": "P1", "StudyInstanceUID": "1.2.3.1", "SeriesInstanceUID": "1.2.3.1.2", "StudyDate": "20200105", "StudyTime": "101500", "AccessionNumber": "A100", "Modality": "CT", "PatientBirthDate": "19600101", "PatientSex": "M", "StudyDescription": "CT HEAD"}),
        json!({"PatientName": "DOE^JANE", "PatientID": "P2", "StudyInstanceUID": "1.2.3.2", "StudyDate": "20210611", "StudyTime": "083000", "AccessionNumber": "A200", "Modality": "MR", "PatientSex": "F"}),
        json!({"PatientName": "SMITH^ANNA", "PatientID": "P3", "StudyInstanceUID": "1.2.3.3", "SeriesInstanceUID": "1.2.3.3.1", "StudyDate": "20191231", "StudyTime": "235959", "AccessionNumber": "B300", "Modality": "CT"}),
        json!({"PatientName": "SMITH^ANNA", "PatientID": "P3", "StudyInstanceUID": "1.2.3.3", "SeriesInstanceUID": "1.2.3.3.2", "StudyDate": "20191231", "StudyTime": "235959", "AccessionNumber": "B300", "Modality": "PR"}),
        json!({"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Müller^Jürgen", "PatientID": "P4", "StudyInstanceUID": "1.2.3.4", "StudyDate": "20220101", "Modality": "CR"}),
        json!({"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Ærø^Åse", "PatientID": "P5", "StudyInstanceUID": "1.2.3.5", "StudyDate": "20220102", "Modality": "DX"}),
        json!({"SpecificCharacterSet": "\\ISO 2022 IR 87", "PatientName": "Yamada^Tarou=山田^太郎", "PatientID": "P6", "StudyInstanceUID": "1.2.3.6", "StudyDate": "20220103", "Modality": "MR"}),
    ];
    let mut args = vec!["make".to_string(), dir.to_string_lossy().into_owned()];
    args.extend(specs.iter().map(|s| s.to_string()));
    let made = python(&args.iter().map(String::as_str).collect::<Vec<_>>()).success();
    let files: Vec<String> = serde_json::from_str(&made.stdout()).unwrap();
    let port = server.port();
    let mut store = vec!["store", "--port", port.as_str(), "--aet", "PYSCU"];
    store.extend(files.iter().map(String::as_str));
    let stored: Value = serde_json::from_str(&python(&store).success().stdout()).unwrap();
    for (f, r) in stored.as_object().unwrap() {
        assert_eq!(r["status"], 0, "{f}: {r}");
    }
    Fixture {
        _data: data,
        server,
        _files: tempdir::Dir(dir),
    }
}

fn find(server: &Server, level: &str, keys: &[&str], extra: &[&str]) -> Value {
    let port = server.port();
    let mut args = vec![
        "find",
        "--port",
        port.as_str(),
        "--aet",
        "PYSCU",
        "--level",
        level,
    ];
    args.extend_from_slice(extra);
    for k in keys {
        args.push("-k");
        args.push(k);
    }
    let out = python(&args).success();
    serde_json::from_str(&out.stdout()).unwrap()
}

fn values(v: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = v["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[key].as_str().unwrap_or("").to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn study_level_matching() {
    let f = fixture("find-study", &[]);
    let s = &f.server;
    let r = find(
        s,
        "STUDY",
        &["PatientName=DOE^JOHN", "StudyInstanceUID="],
        &[],
    );
    assert_eq!(r["status"], 0);
    assert_eq!(values(&r, "StudyInstanceUID"), ["1.2.3.1"]);

    // Wildcards, case-insensitive for names.
    let r = find(s, "STUDY", &["PatientName=doe*", "StudyInstanceUID="], &[]);
    assert_eq!(values(&r, "StudyInstanceUID"), ["1.2.3.1", "1.2.3.2"]);
    let r = find(s, "STUDY", &["PatientName=DOE^JA?E", "PatientID="], &[]);
    assert_eq!(values(&r, "PatientID"), ["P2"]);

    // Date ranges: closed, open-ended both ways.
    let r = find(
        s,
        "STUDY",
        &["StudyDate=20200101-20211231", "StudyInstanceUID="],
        &[],
    );
    assert_eq!(values(&r, "StudyInstanceUID"), ["1.2.3.1", "1.2.3.2"]);
    let r = find(
        s,
        "STUDY",
        &["StudyDate=-20200101", "StudyInstanceUID="],
        &[],
    );
    assert_eq!(values(&r, "StudyInstanceUID"), ["1.2.3.3"]);
    let r = find(
        s,
        "STUDY",
        &["StudyDate=20220102-", "StudyInstanceUID="],
        &[],
    );
    assert_eq!(values(&r, "StudyInstanceUID"), ["1.2.3.5", "1.2.3.6"]);
    let r = find(
        s,
        "STUDY",
        &["StudyTime=0800-1100", "StudyInstanceUID="],
        &[],
    );
    assert_eq!(values(&r, "StudyInstanceUID"), ["1.2.3.1", "1.2.3.2"]);

    // UID list and single value.
    let r = find(
        s,
        "STUDY",
        &["StudyInstanceUID=1.2.3.2\\1.2.3.3", "AccessionNumber="],
        &[],
    );
    assert_eq!(values(&r, "AccessionNumber"), ["A200", "B300"]);
    let r = find(s, "STUDY", &["AccessionNumber=A100", "PatientName="], &[]);
    assert_eq!(values(&r, "PatientName"), ["DOE^JOHN"]);

    // Universal matching returns every study, with the requested return keys.
    let r = find(
        s,
        "STUDY",
        &[
            "StudyInstanceUID=",
            "ModalitiesInStudy=",
            "NumberOfStudyRelatedInstances=",
            "NumberOfStudyRelatedSeries=",
            "PatientBirthDate=",
            "StudyDescription=",
        ],
        &[],
    );
    let m = r["matches"].as_array().unwrap();
    assert_eq!(m.len(), 6);
    let doe = m
        .iter()
        .find(|x| x["StudyInstanceUID"] == "1.2.3.1")
        .unwrap();
    assert_eq!(doe["NumberOfStudyRelatedInstances"], "2");
    assert_eq!(doe["NumberOfStudyRelatedSeries"], "2");
    assert_eq!(doe["PatientBirthDate"], "19600101");
    assert_eq!(doe["StudyDescription"], "CT HEAD");
    let smith = m
        .iter()
        .find(|x| x["StudyInstanceUID"] == "1.2.3.3")
        .unwrap();
    assert_eq!(smith["ModalitiesInStudy"], "['CT', 'PR']");

    // ModalitiesInStudy as a filter.
    let r = find(
        s,
        "STUDY",
        &["ModalitiesInStudy=PR", "StudyInstanceUID="],
        &[],
    );
    assert_eq!(values(&r, "StudyInstanceUID"), ["1.2.3.3"]);

    // No match is a success with no answers.
    let r = find(
        s,
        "STUDY",
        &["PatientName=NOBODY*", "StudyInstanceUID="],
        &[],
    );
    assert_eq!(r["status"], 0);
    assert!(r["matches"].as_array().unwrap().is_empty());
    // SQL-looking input is just a value that matches nothing.
    let r = find(
        s,
        "STUDY",
        &["PatientName=' OR 1=1 --", "StudyInstanceUID="],
        &[],
    );
    assert!(r["matches"].as_array().unwrap().is_empty());
}

#[test]
fn other_levels_and_models() {
    let f = fixture("find-levels", &[]);
    let s = &f.server;
    let r = find(
        s,
        "PATIENT",
        &[
            "PatientID=P3",
            "PatientName=",
            "NumberOfPatientRelatedStudies=",
            "NumberOfPatientRelatedInstances=",
        ],
        &["--patient-root"],
    );
    assert_eq!(r["status"], 0);
    let m = &r["matches"][0];
    assert_eq!(m["PatientName"], "SMITH^ANNA");
    assert_eq!(m["NumberOfPatientRelatedStudies"], "1");
    assert_eq!(m["NumberOfPatientRelatedInstances"], "2");
    // PATIENT level does not exist in the Study Root model.
    let r = find(s, "PATIENT", &["PatientID=P3"], &[]);
    assert_eq!(r["status"], 0xA900);

    let r = find(
        s,
        "SERIES",
        &[
            "StudyInstanceUID=1.2.3.3",
            "SeriesInstanceUID=",
            "Modality=",
            "NumberOfSeriesRelatedInstances=",
        ],
        &[],
    );
    assert_eq!(values(&r, "Modality"), ["CT", "PR"]);
    assert_eq!(values(&r, "NumberOfSeriesRelatedInstances"), ["1", "1"]);
    let r = find(s, "SERIES", &["Modality=MR", "SeriesInstanceUID="], &[]);
    assert_eq!(r["matches"].as_array().unwrap().len(), 2);

    let r = find(
        s,
        "IMAGE",
        &[
            "StudyInstanceUID=1.2.3.1",
            "SOPInstanceUID=",
            "SOPClassUID=",
        ],
        &[],
    );
    let m = r["matches"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert!(
        m.iter()
            .all(|x| x["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.7")
    );
}

#[test]
fn character_sets() {
    let f = fixture("find-charsets", &[]);
    let s = &f.server;
    // Stored in Latin-1, asked in UTF-8.
    let r = find(
        s,
        "STUDY",
        &["PatientName=Müller*", "PatientID="],
        &["--charset", "ISO_IR 192"],
    );
    assert_eq!(values(&r, "PatientID"), ["P4"]);
    assert_eq!(values(&r, "PatientName"), ["Müller^Jürgen"]);
    // Stored in UTF-8, asked in Latin-1, case-insensitively.
    let r = find(
        s,
        "STUDY",
        &["PatientName=ærø*", "PatientID="],
        &["--charset", "ISO_IR 100"],
    );
    assert_eq!(values(&r, "PatientID"), ["P5"]);
    assert_eq!(values(&r, "PatientName"), ["Ærø^Åse"]);
    // Stored in ISO 2022 (Japanese kanji), asked in UTF-8.
    let r = find(
        s,
        "STUDY",
        &["PatientName=*山田*", "PatientID="],
        &["--charset", "ISO_IR 192"],
    );
    assert_eq!(values(&r, "PatientID"), ["P6"]);
    assert_eq!(values(&r, "PatientName"), ["Yamada^Tarou=山田^太郎"]);
}

#[test]
fn result_cap_and_cancel() {
    let f = fixture("find-cap", &[("CUSTOS_DICOM_MAX_FIND_RESULTS", "2")]);
    let r = find(&f.server, "STUDY", &["StudyInstanceUID="], &[]);
    assert_eq!(r["matches"].as_array().unwrap().len(), 2);
    assert_eq!(r["status"], 0xA700, "the cap is reported, not hidden");

    // C-CANCEL sent right behind the request: the server sees it before its
    // first answer and ends with Cancel (FE00) instead of streaming matches.
    let f = fixture("find-cancel", &[]);
    let cancelled = find_then_cancel(&f.server);
    assert_eq!(cancelled, (0, 0xFE00));
}

/// Sends C-FIND-RQ (universal study query) and C-CANCEL-RQ in one write, then
/// counts pending answers and returns them with the final status.
fn find_then_cancel(server: &Server) -> (usize, u16) {
    use custos_dimse::command::{Command, field};
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use dicom_ul::{ClientAssociationOptions, Pdu};
    use std::io::Write;

    const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title("PYSCU")
        .called_ae_title("CUSTOS")
        .with_presentation_context(FIND, vec!["1.2.840.10008.1.2.1"])
        .establish(server.addr)
        .expect("associate");
    let pc = assoc.presentation_contexts()[0].id;
    let mut ident = InMemDicomObject::new_empty();
    ident.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("STUDY"),
    ));
    ident.put(DataElement::new(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::Empty,
    ));
    let mut data = Vec::new();
    ident
        .write_dataset_with_ts(&mut data, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    let rq = Command {
        field: field::C_FIND_RQ,
        message_id: 7,
        sop_class_uid: FIND.into(),
        has_data_set: true,
        ..Default::default()
    };
    let cancel = Command {
        field: field::C_CANCEL_RQ,
        responding_to: Some(7),
        ..Default::default()
    };
    let pdv = |ty, bytes: Vec<u8>| PDataValue {
        presentation_context_id: pc,
        value_type: ty,
        is_last: true,
        data: bytes,
    };
    let mut wire = Vec::new();
    for pdu in [
        Pdu::PData {
            data: vec![
                pdv(PDataValueType::Command, rq.encode()),
                pdv(PDataValueType::Data, data),
            ],
        },
        Pdu::PData {
            data: vec![pdv(PDataValueType::Command, cancel.encode())],
        },
    ] {
        dicom_ul::pdu::write_pdu(&mut wire, &pdu).unwrap();
    }
    assoc.inner_stream().write_all(&wire).unwrap();
    let mut pending = 0;
    loop {
        let Pdu::PData { data } = assoc.receive().expect("response") else {
            panic!("unexpected PDU")
        };
        for v in data
            .iter()
            .filter(|v| v.value_type == PDataValueType::Command)
        {
            let rsp = Command::decode(&v.data).unwrap();
            match rsp.status {
                Some(0xFF00) => pending += 1,
                Some(st) => {
                    let _ = assoc.release();
                    return (pending, st);
                }
                None => panic!("response without status"),
            }
        }
    }
}
