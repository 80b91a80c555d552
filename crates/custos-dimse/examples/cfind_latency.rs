//! C-FIND latency as a fast SCU sees it (issue 13 goal 4): one association,
//! `-n` study-level Study Root queries with findscu-style `-k Key=Value` keys,
//! every response decoded; prints matches, median and p95 in ms as JSON.
//! pynetdicom spends about half a millisecond decoding each match, so at 100
//! matches it measures itself more than the server.
//!
//!   cargo run --release -p custos-dimse --example cfind_latency -- \
//!       127.0.0.1:11120 BENCHSCU CUSTOS 30 -k PatientName=A* -k StudyDate
//!
//! Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is the point

use std::time::Instant;

use custos_dimse::command::{Command, field, status};
use custos_dimse::link::{receive_message, send_message};
use custos_dimse::syntaxes::{EXPLICIT_VR_LE, STUDY_ROOT_FIND};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::ClientAssociationOptions;

/// The keys a study list asks for (the same as bench/query_1m.py's).
const KEYS: &[(&str, Tag, VR)] = &[
    ("PatientName", tags::PATIENT_NAME, VR::PN),
    ("PatientID", tags::PATIENT_ID, VR::LO),
    ("PatientBirthDate", tags::PATIENT_BIRTH_DATE, VR::DA),
    ("PatientSex", tags::PATIENT_SEX, VR::CS),
    ("StudyInstanceUID", tags::STUDY_INSTANCE_UID, VR::UI),
    ("StudyDate", tags::STUDY_DATE, VR::DA),
    ("StudyTime", tags::STUDY_TIME, VR::TM),
    ("AccessionNumber", tags::ACCESSION_NUMBER, VR::SH),
    ("StudyDescription", tags::STUDY_DESCRIPTION, VR::LO),
    ("ModalitiesInStudy", tags::MODALITIES_IN_STUDY, VR::CS),
    (
        "NumberOfStudyRelatedInstances",
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        VR::IS,
    ),
];

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, aet, aec, n, rest @ ..] = args.as_slice() else {
        panic!("usage: cfind_latency HOST:PORT CALLING CALLED N [-k Key[=Value]]...");
    };
    assert!(
        addr.starts_with("127.") || addr.starts_with("localhost"),
        "loopback only"
    );
    let n: usize = n.parse().expect("N is a number");
    let mut q = InMemDicomObject::new_empty();
    q.put(DataElement::new(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        PrimitiveValue::from("STUDY"),
    ));
    for (_, tag, vr) in KEYS {
        q.put(DataElement::new(*tag, *vr, PrimitiveValue::Empty));
    }
    for pair in rest.chunks(2) {
        let [flag, key] = pair else {
            panic!("keys come as -k Key[=Value]")
        };
        assert_eq!(flag, "-k");
        let (name, value) = key.split_once('=').unwrap_or((key, ""));
        let (_, tag, vr) = KEYS
            .iter()
            .find(|(k, _, _)| *k == name)
            .unwrap_or_else(|| panic!("unknown key {name}"));
        q.put(DataElement::new(*tag, *vr, PrimitiveValue::from(value)));
    }
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title(aet.clone())
        .called_ae_title(aec.clone())
        .with_presentation_context(STUDY_ROOT_FIND, vec![EXPLICIT_VR_LE])
        .establish_async(addr.as_str())
        .await
        .expect("association accepted");
    let pc = assoc.presentation_contexts()[0].id;
    let ts = TransferSyntaxRegistry.get(EXPLICIT_VR_LE).unwrap();
    let mut identifier = Vec::new();
    q.write_dataset_with_ts(&mut identifier, ts).unwrap();

    let (mut times, mut matches, mut last_status) = (Vec::with_capacity(n), 0, 0);
    for i in 0..n {
        let rq = Command {
            field: field::C_FIND_RQ,
            message_id: (i % 60000) as u16 + 1,
            sop_class_uid: STUDY_ROOT_FIND.into(),
            has_data_set: true,
            ..Default::default()
        };
        let start = Instant::now();
        send_message(&mut assoc, pc, &rq, Some(&identifier))
            .await
            .unwrap();
        matches = 0;
        loop {
            let (rsp, data) =
                receive_message(&mut assoc, 1 << 20, std::time::Duration::from_secs(60))
                    .await
                    .unwrap();
            match rsp.status {
                Some(status::PENDING) | Some(0xFF01) => {
                    InMemDicomObject::read_dataset_with_ts(data.as_slice(), ts).unwrap();
                    matches += 1;
                }
                // Success, or a capped answer's final status (the server's
                // max_find_results): the matches were received either way.
                other => {
                    last_status = other.unwrap_or(0xFFFF);
                    break;
                }
            }
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = assoc.release().await;
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let p95 = times[(times.len() - 1) * 95 / 100];
    println!(
        "{{\"matches\": {matches}, \"final_status\": {last_status}, \"median_ms\": {median:.2}, \"p95_ms\": {p95:.2}}}"
    );
}
