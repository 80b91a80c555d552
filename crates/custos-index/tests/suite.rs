//! Index behaviour every backend must show. Runs on SQLite here; the PostgreSQL
//! backend will run the same functions.

use custos_core::query::{Key, Level, Matcher, Query};
use custos_core::record::InstanceRecord;
use custos_core::{HostPattern, Peer};
use custos_index::{Index, InsertOutcome, SqliteIndex};

fn temp_index() -> SqliteIndex {
    let dir = std::env::temp_dir().join(format!("custos-index-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    SqliteIndex::open(dir.join("index.sqlite")).unwrap()
}

fn rec(
    patient: &str,
    name: &str,
    study: &str,
    date: &str,
    series: &str,
    modality: &str,
    sop: &str,
) -> InstanceRecord {
    InstanceRecord {
        patient_id: patient.into(),
        patient_name: name.into(),
        study_uid: study.into(),
        study_date: date.into(),
        study_time: "101500".into(),
        series_uid: series.into(),
        modality: modality.into(),
        series_number: Some(1),
        sop_instance_uid: sop.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
        blob_key: format!("key-{sop}"),
        size: 10,
        sha256: format!("sha-{sop}"),
        ..Default::default()
    }
}

fn q(level: Level, conditions: Vec<(Key, Matcher)>) -> Query {
    Query {
        level,
        conditions,
        limit: 100,
        offset: 0,
    }
}

async fn populate(ix: &impl Index) {
    let recs = [
        rec(
            "P1", "DOE^JOHN", "1.1", "20200105", "1.1.1", "CT", "1.1.1.1",
        ),
        rec(
            "P1", "DOE^JOHN", "1.1", "20200105", "1.1.1", "CT", "1.1.1.2",
        ),
        rec(
            "P1", "DOE^JOHN", "1.1", "20200105", "1.1.2", "PR", "1.1.2.1",
        ),
        rec(
            "P1", "DOE^JOHN", "1.2", "20210310", "1.2.1", "MR", "1.2.1.1",
        ),
        rec(
            "P2",
            "Müller^Jürgen",
            "2.1",
            "20221201",
            "2.1.1",
            "CT",
            "2.1.1.1",
        ),
    ];
    for r in recs {
        assert_eq!(ix.insert(r, false).await.unwrap(), InsertOutcome::Inserted);
    }
}

#[tokio::test]
async fn study_matching_and_counts() {
    let ix = temp_index();
    populate(&ix).await;
    let rows = ix
        .find(q(
            Level::Study,
            vec![(Key::PatientName, Matcher::Wildcard("doe*".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][&Key::StudyInstanceUID], "1.1");
    assert_eq!(rows[0][&Key::ModalitiesInStudy], "CT\\PR");
    assert_eq!(rows[0][&Key::NumberOfStudyRelatedInstances], "3");
    assert_eq!(rows[0][&Key::NumberOfStudyRelatedSeries], "2");

    let range = Matcher::Range {
        from: Some("20210101".into()),
        to: None,
    };
    let rows = ix
        .find(q(Level::Study, vec![(Key::StudyDate, range)]))
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r[&Key::StudyInstanceUID].as_str())
            .collect::<Vec<_>>(),
        ["1.2", "2.1"]
    );

    let rows = ix
        .find(q(
            Level::Study,
            vec![(Key::PatientName, Matcher::Single("MÜLLER^JÜRGEN".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "non-ASCII names fold case");
    assert_eq!(rows[0][&Key::PatientName], "Müller^Jürgen");

    let rows = ix
        .find(q(
            Level::Study,
            vec![(Key::ModalitiesInStudy, Matcher::Single("MR".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][&Key::StudyInstanceUID], "1.2");

    let list = Matcher::List(vec!["1.2".into(), "2.1".into()]);
    assert_eq!(
        ix.find(q(Level::Study, vec![(Key::StudyInstanceUID, list)]))
            .await
            .unwrap()
            .len(),
        2
    );
    // A LIKE metacharacter in a value is literal.
    assert!(
        ix.find(q(
            Level::Study,
            vec![(Key::PatientID, Matcher::Wildcard("P%".into()))]
        ))
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn other_levels_and_retrieve_sets() {
    let ix = temp_index();
    populate(&ix).await;
    let patients = ix.find(q(Level::Patient, vec![])).await.unwrap();
    assert_eq!(patients.len(), 2);
    assert_eq!(patients[0][&Key::NumberOfPatientRelatedStudies], "2");
    assert_eq!(patients[0][&Key::NumberOfPatientRelatedInstances], "4");
    let series = ix
        .find(q(
            Level::Series,
            vec![(Key::StudyInstanceUID, Matcher::Single("1.1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0][&Key::NumberOfSeriesRelatedInstances], "2");
    let images = ix
        .find(q(
            Level::Image,
            vec![(Key::SeriesInstanceUID, Matcher::Single("1.1.1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(images.len(), 2);
    let mut limited = q(Level::Image, vec![]);
    limited.limit = 3;
    assert_eq!(ix.find(limited).await.unwrap().len(), 3);

    let set = ix
        .instances(q(
            Level::Study,
            vec![(Key::StudyInstanceUID, Matcher::Single("1.1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(set.len(), 3);
    let set = ix
        .instances(q(
            Level::Patient,
            vec![(Key::PatientID, Matcher::Single("P1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(set.len(), 4);
    assert_eq!(ix.instance_count().await.unwrap(), 5);
}

#[tokio::test]
async fn duplicates() {
    let ix = temp_index();
    populate(&ix).await;
    let same = rec(
        "P1", "DOE^JOHN", "1.1", "20200105", "1.1.1", "CT", "1.1.1.1",
    );
    assert!(matches!(
        ix.insert(same, false).await.unwrap(),
        InsertOutcome::Identical { .. }
    ));
    let mut other = rec(
        "P1", "DOE^JOHN", "1.1", "20200105", "1.1.1", "CT", "1.1.1.1",
    );
    other.sha256 = "different".into();
    other.blob_key = "new-key".into();
    match ix.insert(other.clone(), false).await.unwrap() {
        InsertOutcome::Conflict { existing } => assert_eq!(existing.blob_key, "key-1.1.1.1"),
        o => panic!("{o:?}"),
    }
    match ix.insert(other, true).await.unwrap() {
        InsertOutcome::Replaced { previous } => assert_eq!(previous.blob_key, "key-1.1.1.1"),
        o => panic!("{o:?}"),
    }
    let set = ix
        .instances(q(
            Level::Image,
            vec![(Key::SOPInstanceUID, Matcher::Single("1.1.1.1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(set[0].blob_key, "new-key");
    assert_eq!(ix.instance_count().await.unwrap(), 5);
}

#[tokio::test]
async fn concurrent_inserts_all_commit() {
    let ix = std::sync::Arc::new(temp_index());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ix = ix.clone();
        tasks.push(tokio::spawn(async move {
            let r = rec(
                "P9",
                "X",
                &format!("9.{}", i % 7),
                "20200101",
                &format!("9.{}.1", i % 7),
                "CT",
                &format!("9.9.{i}"),
            );
            ix.insert(r, false).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), InsertOutcome::Inserted);
    }
    assert_eq!(ix.instance_count().await.unwrap(), 200);
}

#[tokio::test]
async fn peers() {
    let ix = temp_index();
    let peer = Peer {
        ae_title: "CT01".into(),
        host: "10.0.0.0/8".parse::<HostPattern>().unwrap(),
        port: 104,
        permissions: "echo,store".parse().unwrap(),
    };
    ix.put_peer(peer.clone()).await.unwrap();
    assert_eq!(ix.peer("CT01").await.unwrap(), Some(peer.clone()));
    assert_eq!(ix.peers().await.unwrap(), vec![peer]);
    assert!(ix.remove_peer("CT01").await.unwrap());
    assert!(!ix.remove_peer("CT01").await.unwrap());
    assert_eq!(ix.peer("CT01").await.unwrap(), None);
}
