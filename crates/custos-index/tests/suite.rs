//! Index behaviour every backend must show: each case runs on SQLite and on a
//! real PostgreSQL (`CUSTOS_TEST_POSTGRES_URL`, which `scripts/test` provides
//! by starting a throw-away cluster).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use custos_core::query::{Key, Level, Matcher, Query};
use custos_core::record::InstanceRecord;
use custos_core::{ApiToken, HostPattern, Peer, Role, User};
use custos_index::{Index, IndexError, InsertOutcome, PgIndex, SqliteIndex};

fn sqlite_index() -> SqliteIndex {
    let dir = std::env::temp_dir().join(format!("custos-index-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    SqliteIndex::open(dir.join("index.sqlite")).unwrap()
}

/// A fresh database on the test cluster for each case.
async fn pg_index() -> PgIndex {
    PgIndex::connect(&pg_database().await)
        .await
        .expect("PgIndex on a fresh database")
}

/// The URL of a fresh database on the test cluster.
async fn pg_database() -> String {
    let url = std::env::var("CUSTOS_TEST_POSTGRES_URL")
        .expect("CUSTOS_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(conn);
    let db = format!("custos_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&url);
    format!("{base}/{db}")
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread")]
                async fn sqlite() {
                    super::$case(std::sync::Arc::new(super::sqlite_index())).await
                }
                #[tokio::test(flavor = "multi_thread")]
                async fn postgres() {
                    super::$case(std::sync::Arc::new(super::pg_index().await)).await
                }
            }
        )*
    };
}

on_both_backends!(
    study_matching_and_counts,
    other_levels_and_retrieve_sets,
    duplicates,
    concurrent_inserts_all_commit,
    peers,
    paging_through_stored,
    users_and_tokens,
    removing_series_and_studies,
    audit_chain,
    audit_search,
    audit_trail_copied_as_it_is,
    activity_for_the_status_page,
    sorted_results,
    counters_follow_inserts_replacements_and_removals,
    forwarding_queue,
    padded_names_match,
    descriptions_match_in_any_case,
    patient_counts_cover_all_their_studies,
    a_patient_is_named_as_their_newest_study_has_it,
    a_renewed_lease_keeps_a_long_attempt,
    busy_destinations_are_skipped,
    worklist_and_performed_steps,
    change_feed_and_webhooks,
    retention_reads,
    streamed_matches
);

type Ix = std::sync::Arc<dyn Index>;

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
        order: Vec::new(),
    }
}

async fn populate(ix: &Ix) {
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

/// A name stored with empty trailing components is the same name without
/// them, either way round (PS3.5 6.2.1).
async fn padded_names_match(ix: Ix) {
    for r in [
        rec(
            "R1",
            "Roe^Richard^^",
            "5.1",
            "20200101",
            "5.1.1",
            "CT",
            "5.1.1.1",
        ),
        rec(
            "R2", "Roe^Rita", "5.2", "20200101", "5.2.1", "CT", "5.2.1.1",
        ),
    ] {
        assert_eq!(ix.insert(r, false).await.unwrap(), InsertOutcome::Inserted);
    }
    for (asked, study) in [
        ("ROE^RICHARD", "5.1"),
        ("roe^rita^^", "5.2"),
        ("Roe^Rita^^^^=", "5.2"),
    ] {
        let rows = ix
            .find(q(
                Level::Study,
                vec![(Key::PatientName, Matcher::Single(asked.into()))],
            ))
            .await
            .unwrap();
        let found: Vec<&str> = rows
            .iter()
            .map(|r| r[&Key::StudyInstanceUID].as_str())
            .collect();
        assert_eq!(found, [study], "{asked}");
    }
    // Stored as sent.
    let rows = ix
        .find(q(
            Level::Study,
            vec![(Key::PatientName, Matcher::Wildcard("roe^ri*".into()))],
        ))
        .await
        .unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r[&Key::PatientName].as_str()).collect();
    assert_eq!(names, ["Roe^Richard^^", "Roe^Rita"]);
}

/// Descriptions match in any case (what users type is rarely how the
/// modality wrote it); other text stays exact.
async fn descriptions_match_in_any_case(ix: Ix) {
    let mut r = rec(
        "D1",
        "DESC^DORA",
        "6.1",
        "20200101",
        "6.1.1",
        "CT",
        "6.1.1.1",
    );
    r.study_description = "CT Chest w/o".into();
    r.accession_number = "Acc-1".into();
    ix.insert(r, false).await.unwrap();
    let mut r = rec(
        "D2",
        "DESC^DANA",
        "6.2",
        "20200101",
        "6.2.1",
        "MR",
        "6.2.1.1",
    );
    r.study_description = "Étude du crâne".into();
    ix.insert(r, false).await.unwrap();
    for m in [
        Matcher::Wildcard("*chest*".into()),
        Matcher::Single("ct chest W/O".into()),
        Matcher::Wildcard("étude*CRÂNE".into()),
    ] {
        let rows = ix
            .find(q(Level::Study, vec![(Key::StudyDescription, m.clone())]))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{m:?}");
    }
    let exact = vec![(Key::AccessionNumber, Matcher::Single("ACC-1".into()))];
    assert!(ix.find(q(Level::Study, exact)).await.unwrap().is_empty());
}

async fn study_matching_and_counts(ix: Ix) {
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

async fn patient_counts_cover_all_their_studies(ix: Ix) {
    populate(&ix).await;
    // A study under another spelling of the name still counts for the
    // patient, as its series and instances do.
    let renamed = rec("P1", "DOE^JON", "1.3", "20220101", "1.3.1", "CT", "1.3.1.1");
    ix.insert(renamed, false).await.unwrap();
    let by_name = vec![(Key::PatientName, Matcher::Single("DOE^JOHN".into()))];
    let patients = ix.find(q(Level::Patient, by_name)).await.unwrap();
    assert_eq!(patients.len(), 1);
    let counts = [
        Key::NumberOfPatientRelatedStudies,
        Key::NumberOfPatientRelatedSeries,
        Key::NumberOfPatientRelatedInstances,
    ]
    .map(|k| patients[0][&k].as_str());
    assert_eq!(counts, ["3", "4", "5"]);
}

async fn a_patient_is_named_as_their_newest_study_has_it(ix: Ix) {
    populate(&ix).await;
    // A later study spells the name anew (sorting before the old one).
    let renamed = rec(
        "P1", "DOE^JOAN", "1.3", "20220101", "1.3.1", "CT", "1.3.1.1",
    );
    ix.insert(renamed, false).await.unwrap();
    let by_id = vec![(Key::PatientID, Matcher::Single("P1".into()))];
    let patients = ix.find(q(Level::Patient, by_id)).await.unwrap();
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0][&Key::PatientName], "DOE^JOAN");
    // Found by the old spelling too, and shown as the patient is now called.
    let by_old = vec![(Key::PatientName, Matcher::Single("DOE^JOHN".into()))];
    let patients = ix.find(q(Level::Patient, by_old)).await.unwrap();
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0][&Key::PatientName], "DOE^JOAN");
}

async fn other_levels_and_retrieve_sets(ix: Ix) {
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

    // Read page by page (two at a time): every instance once, in order, and
    // the kinds count the same set.
    let p1 = q(
        Level::Patient,
        vec![(Key::PatientID, Matcher::Single("P1".into()))],
    );
    let (mut after, mut paged) = (0, Vec::new());
    loop {
        let page = ix.instance_page(&p1, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some((last, _)) = page.last() else { break };
        after = *last;
        paged.extend(page.into_iter().map(|(_, i)| i.sop_instance_uid));
    }
    let mut whole: Vec<String> = set.iter().map(|i| i.sop_instance_uid.clone()).collect();
    assert_eq!(paged, whole);
    whole.dedup();
    assert_eq!(whole.len(), 4);
    let kinds = ix.instance_kinds(&p1).await.unwrap();
    assert_eq!(kinds.iter().map(|k| k.count).sum::<u64>(), 4);
}

async fn duplicates(ix: Ix) {
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
    // Noted: storage commitment will not vouch for this UID.
    assert_eq!(
        ix.conflicted(vec!["1.1.1.1".into(), "1.1.1.2".into()])
            .await
            .unwrap(),
        vec!["1.1.1.1".to_string()]
    );
    other.patient_name = "ROE^JANE".into();
    other.series_description = "corrected".into();
    match ix.insert(other, true).await.unwrap() {
        InsertOutcome::Replaced { previous } => assert_eq!(previous.blob_key, "key-1.1.1.1"),
        o => panic!("{o:?}"),
    }
    assert!(
        ix.conflicted(vec!["1.1.1.1".into()])
            .await
            .unwrap()
            .is_empty(),
        "replaced: the stored copy is the one last sent"
    );
    // The study and series take the replacing instance's attributes.
    let study = ix
        .find(q(
            Level::Series,
            vec![(Key::SeriesInstanceUID, Matcher::Single("1.1.1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(
        study[0].get(&Key::PatientName).map(String::as_str),
        Some("ROE^JANE")
    );
    assert_eq!(
        study[0].get(&Key::SeriesDescription).map(String::as_str),
        Some("corrected")
    );
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

async fn concurrent_inserts_all_commit(ix: Ix) {
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

async fn peers(ix: Ix) {
    let peer = Peer {
        ae_title: "CT01".into(),
        host: "10.0.0.0/8".parse::<HostPattern>().unwrap(),
        port: 104,
        permissions: "echo,store".parse().unwrap(),
        tls_required: true,
        cert_sha256: "ab".repeat(32),
        cert_subject: "CN=CT01,O=Radiology".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
    };
    ix.put_peer(peer.clone()).await.unwrap();
    assert_eq!(ix.peer("CT01").await.unwrap(), Some(peer.clone()));
    assert_eq!(ix.peers().await.unwrap(), vec![peer]);
    assert!(ix.remove_peer("CT01").await.unwrap());
    assert!(!ix.remove_peer("CT01").await.unwrap());
    assert_eq!(ix.peer("CT01").await.unwrap(), None);
}

async fn paging_through_stored(ix: Ix) {
    populate(&ix).await;
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = ix.stored_after(after, 2).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        assert!(page.len() <= 2);
        after = *last;
        seen.extend(page.into_iter().map(|(_, s)| s.sop_instance_uid));
    }
    assert_eq!(
        seen,
        ["1.1.1.1", "1.1.1.2", "1.1.2.1", "1.2.1.1", "2.1.1.1"]
    );
}

async fn users_and_tokens(ix: Ix) {
    let alice = User {
        name: "alice".into(),
        role: Role::Radiologist,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        disabled: false,
        password_changed: 1_700_000_000,
    };
    assert!(ix.insert_user(alice.clone()).await.unwrap());
    assert!(
        !ix.insert_user(alice.clone()).await.unwrap(),
        "no overwrite by insert"
    );
    assert_eq!(ix.user("alice").await.unwrap(), Some(alice.clone()));
    let mut changed = alice.clone();
    changed.disabled = true;
    changed.role = Role::Admin;
    ix.put_user(changed.clone()).await.unwrap();
    assert_eq!(ix.users().await.unwrap(), vec![changed]);
    let token = ApiToken {
        id: "tok1".into(),
        user: "alice".into(),
        secret_sha256: "ab".repeat(32),
        read_only: true,
        created: 10,
        expires: 20,
        revoked: false,
    };
    ix.put_token(token.clone()).await.unwrap();
    assert_eq!(ix.token("tok1").await.unwrap(), Some(token.clone()));
    // Written again (a second `custos migrate`): its state taken.
    let later = ApiToken {
        expires: 30,
        ..token.clone()
    };
    ix.put_token(later.clone()).await.unwrap();
    assert_eq!(ix.token("tok1").await.unwrap(), Some(later));
    assert!(ix.revoke_token("tok1").await.unwrap());
    assert!(ix.token("tok1").await.unwrap().unwrap().revoked);
    assert!(!ix.revoke_token("nope").await.unwrap());
    // Removing the user removes its tokens.
    assert!(ix.remove_user("alice").await.unwrap());
    assert_eq!(ix.user("alice").await.unwrap(), None);
    assert_eq!(ix.token("tok1").await.unwrap(), None);
    assert!(ix.tokens().await.unwrap().is_empty());

    // One enabled administrator always stays: disabling, demoting or
    // removing the last one is refused and changes nothing.
    let admin = |name: &str| User {
        name: name.into(),
        role: Role::Admin,
        ..alice.clone()
    };
    ix.put_user(admin("root1")).await.unwrap();
    ix.put_user(admin("root2")).await.unwrap();
    ix.put_user(User {
        disabled: true,
        ..admin("root1")
    })
    .await
    .unwrap();
    let last = [
        User {
            disabled: true,
            ..admin("root2")
        },
        User {
            role: Role::Radiologist,
            ..admin("root2")
        },
    ];
    for change in last {
        assert!(matches!(
            ix.put_user(change).await,
            Err(IndexError::LastAdmin)
        ));
    }
    assert!(matches!(
        ix.remove_user("root2").await,
        Err(IndexError::LastAdmin)
    ));
    assert_eq!(ix.user("root2").await.unwrap(), Some(admin("root2")));
    ix.put_user(admin("root1")).await.unwrap();
    assert!(ix.remove_user("root2").await.unwrap(), "another is enabled");
}

async fn removing_series_and_studies(ix: Ix) {
    populate(&ix).await;
    let gone = ix.remove("1.1", Some("1.1.1")).await.unwrap();
    let mut uids: Vec<_> = gone.iter().map(|s| s.sop_instance_uid.clone()).collect();
    uids.sort();
    assert_eq!(uids, ["1.1.1.1", "1.1.1.2"]);
    let stats = ix.statistics().await.unwrap();
    assert_eq!((stats.studies, stats.series, stats.instances), (3, 3, 3));
    // The study keeps its other series.
    let series = ix
        .find(q(
            Level::Series,
            vec![(Key::StudyInstanceUID, Matcher::Single("1.1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    // Removing the whole study removes the rest and the study row.
    assert_eq!(ix.remove("1.1", None).await.unwrap().len(), 1);
    let studies = ix.find(q(Level::Study, vec![])).await.unwrap();
    assert_eq!(studies.len(), 2);
    assert!(ix.remove("9.9", None).await.unwrap().is_empty());
    let stats = ix.statistics().await.unwrap();
    assert_eq!((stats.patients, stats.studies, stats.instances), (2, 2, 2));
}

/// `custos migrate` copies a trail record for record: onto an empty trail,
/// then only what follows its head; the copy goes on with the same key.
async fn audit_trail_copied_as_it_is(ix: Ix) {
    use custos_core::audit::{AuditKey, ChainWalk};
    use custos_index::AuditLog;
    let source = sqlite_index();
    let key = AuditKey::generate();
    let entries = |n: usize| {
        (0..n)
            .map(|i| (format!("t{i}"), format!("{{\"n\":{i}}}")))
            .collect()
    };
    source.append_audit(&key, entries(3), None).await.unwrap();
    let first = source.audit_after(0, 100).await.unwrap();
    ix.copy_audit(&first).await.unwrap();
    assert_eq!(ix.audit_after(0, 100).await.unwrap(), first);
    // The same again, or records with a gap: refused, nothing written.
    assert!(ix.copy_audit(&first).await.is_err());
    source.append_audit(&key, entries(2), None).await.unwrap();
    let rest = source.audit_after(3, 100).await.unwrap();
    assert!(ix.copy_audit(&rest[1..]).await.is_err());
    ix.copy_audit(&rest).await.unwrap();
    // The copy goes on as one chain.
    ix.append_audit(&key, entries(1), None).await.unwrap();
    let all = ix.audit_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(ChainWalk::default().step(&key, &all), None);
}

async fn audit_chain(ix: Ix) {
    use custos_core::audit::{AuditKey, ChainWalk, GENESIS};
    let key = AuditKey::generate();
    ix.append_audit(
        &key,
        vec![
            ("t1".into(), "{\"a\":1}".into()),
            ("t2".into(), "{\"b\":2}".into()),
        ],
        None,
    )
    .await
    .unwrap();
    // Concurrent appends (two nodes, many tasks) still make one unbroken chain.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (ix, key) = (ix.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            ix.append_audit(
                &key,
                vec![(format!("t{i}"), format!("{{\"n\":{i}}}"))],
                None,
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = ix.audit_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 22);
    assert_eq!(all[0].prev_hash, GENESIS);
    assert_eq!(ChainWalk::default().step(&key, &all), None);
    let head = ix.audit_head().await.unwrap().unwrap();
    assert_eq!((head.seq, &head.hash), (22, &all[21].hash));
    let tail = ix.audit_after(20, 100).await.unwrap();
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![21, 22]);
    // An append says whether the caller's newest record is still there as
    // written: at the head, further back (others wrote since), forged,
    // or past the end (the trail was cut).
    let one = || vec![("t".to_string(), "{}".to_string())];
    let intact = |seq: i64, link: &str| {
        let (ix, key, one) = (ix.clone(), key.clone(), one());
        let mine = Some((seq, link.to_string()));
        async move { ix.append_audit(&key, one, mine).await.unwrap().mine_intact }
    };
    assert!(intact(22, &all[21].hash).await);
    assert!(intact(5, &all[4].hash).await);
    assert!(!intact(5, &all[5].hash).await);
    assert!(!intact(24, "forged").await);
    assert!(!intact(999, &all[21].hash).await);
    let appended = ix.append_audit(&key, one(), None).await.unwrap();
    assert!(appended.mine_intact);
    assert_eq!(appended.seq, 28);
}

async fn audit_search(ix: Ix) {
    use custos_core::audit::{AuditKey, AuditSearch};
    let key = AuditKey::generate();
    let body = |user: &str, peer: &str, code: u32, patients: &[&str]| {
        serde_json::json!({
            "event": { "code": code, "display": "x" },
            "user": user, "peer": peer, "patients": patients, "detail": "",
        })
        .to_string()
    };
    ix.append_audit(
        &key,
        vec![
            (
                "2026-11-30T23:59:59.999Z".into(),
                body("ann", "", 110112, &["P1"]),
            ),
            (
                "2026-12-01T08:00:00.000Z".into(),
                body("bob", "", 110103, &["P2", "P1"]),
            ),
            (
                "2026-12-01T09:00:00.000Z".into(),
                body("", "CT01", 110114, &[]),
            ),
            (
                "2026-12-02T00:00:00.000Z".into(),
                body("ann", "", 110103, &["P10"]),
            ),
            (
                "2026-12-02T10:00:00.000Z".into(),
                body("annabel", "MR01", 110114, &[]),
            ),
        ],
        None,
    )
    .await
    .unwrap();
    let seqs =
        |r: Vec<custos_core::audit::AuditRecord>| r.iter().map(|r| r.seq).collect::<Vec<_>>();
    let all = AuditSearch {
        limit: 100,
        ..Default::default()
    };
    let find = |s: AuditSearch| {
        let ix = ix.clone();
        async move { seqs(ix.audit_search(&s).await.unwrap()) }
    };
    assert_eq!(find(all.clone()).await, [1, 2, 3, 4, 5]);
    // Exact user, not a prefix.
    assert_eq!(
        find(AuditSearch {
            user: Some("ann".into()),
            ..all.clone()
        })
        .await,
        [1, 4]
    );
    // A patient ID anywhere in the list, exactly (P1 is not P10).
    assert_eq!(
        find(AuditSearch {
            patient_id: Some("P1".into()),
            ..all.clone()
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        find(AuditSearch {
            event_code: Some(110103),
            ..all.clone()
        })
        .await,
        [2, 4]
    );
    assert_eq!(
        find(AuditSearch {
            dicom_peers_only: true,
            ..all.clone()
        })
        .await,
        [3, 5]
    );
    // A day: from inclusive, to exclusive.
    let day = AuditSearch {
        from: Some("2026-12-01".into()),
        to: Some("2026-12-02".into()),
        ..all.clone()
    };
    assert_eq!(find(day).await, [2, 3]);
    // The newest first, bounded, and paging back with `before`.
    let newest = AuditSearch {
        newest_first: true,
        limit: 2,
        ..all.clone()
    };
    assert_eq!(find(newest.clone()).await, [5, 4]);
    assert_eq!(
        find(AuditSearch {
            before: Some(4),
            ..newest
        })
        .await,
        [3, 2]
    );
    // Conditions combine.
    let both = AuditSearch {
        user: Some("ann".into()),
        event_code: Some(110103),
        ..all
    };
    assert_eq!(find(both).await, [4]);
}

async fn activity_for_the_status_page(ix: Ix) {
    populate(&ix).await;
    assert_eq!(
        ix.instances_by_modality().await.unwrap(),
        [
            ("CT".to_string(), 3),
            ("MR".to_string(), 1),
            ("PR".to_string(), 1)
        ]
    );
    // All five arrived just now, in this minute or the last (the clock may
    // have turned between inserts).
    let now = time::OffsetDateTime::now_utc();
    let format = time::format_description::well_known::Rfc3339;
    let hour_ago = (now - time::Duration::hours(1)).format(&format).unwrap();
    let minutes = ix.received_per_minute(&hour_ago).await.unwrap();
    assert_eq!(
        minutes.iter().map(|(_, n)| n).sum::<u64>(),
        5,
        "{minutes:?}"
    );
    let this_minute = now.format(&format).unwrap()[..16].to_string();
    assert!(
        minutes
            .iter()
            .all(|(m, _)| m.len() == 16 && *m <= this_minute),
        "{minutes:?}"
    );
    let later = (now + time::Duration::minutes(2)).format(&format).unwrap();
    assert!(ix.received_per_minute(&later).await.unwrap().is_empty());
}

async fn sorted_results(ix: Ix) {
    populate(&ix).await;
    let studies = |order: Vec<(Key, bool)>, limit: usize, offset: usize| {
        let ix = ix.clone();
        async move {
            ix.find(Query {
                level: Level::Study,
                conditions: vec![],
                limit,
                offset,
                order,
            })
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| r[&Key::StudyInstanceUID].clone())
                    .collect::<Vec<_>>()
            })
        }
    };
    assert_eq!(
        studies(vec![(Key::StudyDate, true)], 10, 0).await.unwrap(),
        ["2.1", "1.2", "1.1"]
    );
    assert_eq!(
        studies(vec![(Key::StudyDate, false)], 1, 1).await.unwrap(),
        ["1.2"],
        "pages follow the order"
    );
    // Names case-insensitively (Müller after DOE), then the date within a name.
    assert_eq!(
        studies(
            vec![(Key::PatientName, false), (Key::StudyDate, true)],
            10,
            0
        )
        .await
        .unwrap(),
        ["1.2", "1.1", "2.1"]
    );
    // Instances without a number come last either way, on both backends
    // (SQLite put them first ascending, PostgreSQL first descending).
    for (n, sop) in [
        (Some(2), "9.1.1.1"),
        (None, "9.1.1.2"),
        (Some(1), "9.1.1.3"),
    ] {
        let mut r = rec("P9", "NUM^BERS", "9.1", "20230101", "9.1.1", "CT", sop);
        r.instance_number = n;
        ix.insert(r, false).await.unwrap();
    }
    for (descending, expected) in [
        (false, ["9.1.1.3", "9.1.1.1", "9.1.1.2"]),
        (true, ["9.1.1.1", "9.1.1.3", "9.1.1.2"]),
    ] {
        let rows = ix
            .find(Query {
                level: Level::Image,
                conditions: vec![(Key::SeriesInstanceUID, Matcher::Single("9.1.1".into()))],
                limit: 10,
                offset: 0,
                order: vec![(Key::InstanceNumber, descending)],
            })
            .await
            .unwrap();
        let got: Vec<&str> = rows
            .iter()
            .map(|r| r[&Key::SOPInstanceUID].as_str())
            .collect();
        assert_eq!(got, expected, "descending: {descending}");
    }
    // Computed attributes are not sort keys.
    assert!(
        studies(vec![(Key::NumberOfStudyRelatedInstances, false)], 10, 0)
            .await
            .is_err()
    );
}

async fn counters_follow_inserts_replacements_and_removals(ix: Ix) {
    populate(&ix).await;
    let study = |uid: &'static str| {
        let ix = ix.clone();
        async move {
            let rows = ix
                .find(q(
                    Level::Study,
                    vec![(Key::StudyInstanceUID, Matcher::Single(uid.into()))],
                ))
                .await
                .unwrap();
            rows.first().map(|r| {
                (
                    r[&Key::NumberOfStudyRelatedSeries].clone(),
                    r[&Key::NumberOfStudyRelatedInstances].clone(),
                    r[&Key::ModalitiesInStudy].clone(),
                )
            })
        }
    };
    let counts = |s: &str, i: &str, m: &str| Some((s.to_string(), i.to_string(), m.to_string()));
    assert_eq!(study("1.1").await, counts("2", "3", "CT\\PR"));
    // A new series with a new modality, then a replacement that moves an
    // instance from study 1.1 to study 1.2.
    let mut sr = rec(
        "P1", "DOE^JOHN", "1.1", "20200105", "1.1.3", "SR", "1.1.3.1",
    );
    sr.sha256 = "sr".into();
    ix.insert(sr, false).await.unwrap();
    assert_eq!(study("1.1").await, counts("3", "4", "CT\\PR\\SR"));
    let mut moved = rec(
        "P1", "DOE^JOHN", "1.2", "20210310", "1.2.1", "MR", "1.1.1.2",
    );
    moved.sha256 = "moved".into();
    assert!(matches!(
        ix.insert(moved, true).await.unwrap(),
        InsertOutcome::Replaced { .. }
    ));
    assert_eq!(study("1.1").await, counts("3", "3", "CT\\PR\\SR"));
    assert_eq!(study("1.2").await, counts("1", "2", "MR"));
    let series = ix
        .find(q(
            Level::Series,
            vec![(Key::SeriesInstanceUID, Matcher::Single("1.1.1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(series[0][&Key::NumberOfSeriesRelatedInstances], "1");
    // Removing a series recounts its study; the patient level sums studies.
    ix.remove("1.1", Some("1.1.2")).await.unwrap();
    assert_eq!(study("1.1").await, counts("2", "2", "CT\\SR"));
    let patients = ix
        .find(q(
            Level::Patient,
            vec![(Key::PatientID, Matcher::Single("P1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(patients[0][&Key::NumberOfPatientRelatedSeries], "3");
    assert_eq!(patients[0][&Key::NumberOfPatientRelatedInstances], "4");
    // ModalitiesInStudy still matches any of the study's modalities.
    let by_modality = ix
        .find(q(
            Level::Study,
            vec![(Key::ModalitiesInStudy, Matcher::Single("SR".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(by_modality.len(), 1);
    // A replacing copy with another modality: the study's modalities follow.
    let mut ko = rec(
        "P1", "DOE^JOHN", "1.1", "20200105", "1.1.3", "KO", "1.1.3.1",
    );
    ko.sha256 = "ko".into();
    ix.insert(ko, true).await.unwrap();
    assert_eq!(study("1.1").await, counts("2", "2", "CT\\KO"));
    // A replacing copy moving a study's only instance to another study: the
    // series and study it left are gone, not listed empty.
    let mut away = rec(
        "P1", "DOE^JOHN", "1.2", "20210310", "1.2.9", "CT", "2.1.1.1",
    );
    away.sha256 = "away".into();
    ix.insert(away, true).await.unwrap();
    assert_eq!(study("2.1").await, None, "an empty study is still listed");
    assert_eq!(study("1.2").await, counts("2", "3", "CT\\MR"));
    let empty_series = ix
        .find(q(
            Level::Series,
            vec![(Key::SeriesInstanceUID, Matcher::Single("2.1.1".into()))],
        ))
        .await
        .unwrap();
    assert!(empty_series.is_empty(), "an empty series is still listed");
}

/// An index written before the counters existed (schema 7) gets them filled
/// from its rows when it is opened (migration 8).
/// Jobs are taken once while leased, come due again after a failure, go to
/// the dead letter without a retry time, and are put back or cancelled.
/// A send longer than its lease, renewed as it goes, is not taken again by
/// another node, and its outcome counts; a lease is not renewed for an
/// attempt superseded since.
async fn a_renewed_lease_keeps_a_long_attempt(ix: Ix) {
    use custos_core::routing::{JobScope, JobState};
    let pairs = vec![("9.1".to_string(), "A".to_string())];
    ix.enqueue(JobScope::Study, pairs, "rule", 100, 100, false)
        .await
        .unwrap();
    let taken = ix.take_jobs(100, 220, 10, &[]).await.unwrap();
    assert_eq!(taken.len(), 1);
    let attempt = (taken[0].id, taken[0].attempts);
    // Renewed at 200 until 320: at 250 no node takes it again.
    ix.extend_leases(&[attempt], 320).await.unwrap();
    assert!(ix.take_jobs(250, 370, 10, &[]).await.unwrap().is_empty());
    ix.job_done(attempt.0, attempt.1).await.unwrap();
    assert_eq!(
        ix.jobs(Some(JobState::Done), 10, None).await.unwrap().len(),
        1
    );
    // A renewal for a stale attempt changes nothing.
    ix.enqueue(
        JobScope::Study,
        vec![("9.2".into(), "A".into())],
        "rule",
        100,
        100,
        false,
    )
    .await
    .unwrap();
    let first = ix.take_jobs(100, 220, 10, &[]).await.unwrap()[0].clone();
    let second = ix.take_jobs(230, 350, 10, &[]).await.unwrap()[0].clone();
    assert_eq!(first.id, second.id);
    ix.extend_leases(&[(first.id, first.attempts)], 10_000)
        .await
        .unwrap();
    let third = ix.take_jobs(360, 480, 10, &[]).await.unwrap();
    assert_eq!(third.len(), 1, "the stale attempt's renewal held the job");
}

/// Destinations a node is still sending to are left out of what it takes:
/// their jobs wait, and every other destination's are taken.
async fn busy_destinations_are_skipped(ix: Ix) {
    use custos_core::routing::JobScope;
    let pair = |u: &str, d: &str| (u.to_string(), d.to_string());
    let pairs = vec![
        pair("7.1", "SLOW"),
        pair("7.2", "FAST"),
        pair("7.3", "HOOK"),
    ];
    ix.enqueue(JobScope::Instance, pairs, "rule", 100, 100, false)
        .await
        .unwrap();
    let skip = ["SLOW".to_string(), "HOOK".to_string()];
    let taken = ix.take_jobs(100, 200, 10, &skip).await.unwrap();
    let names: Vec<&str> = taken.iter().map(|j| j.destination.as_str()).collect();
    assert_eq!(names, ["FAST"]);
    let taken = ix.take_jobs(100, 200, 10, &skip[..1]).await.unwrap();
    let names: Vec<&str> = taken.iter().map(|j| j.destination.as_str()).collect();
    assert_eq!(names, ["HOOK"]);
    let taken = ix.take_jobs(100, 200, 10, &[]).await.unwrap();
    let names: Vec<&str> = taken.iter().map(|j| j.destination.as_str()).collect();
    assert_eq!(names, ["SLOW"]);
}

async fn forwarding_queue(ix: Ix) {
    use custos_core::routing::{JobScope, JobState};
    let pair = |u: &str, d: &str| (u.to_string(), d.to_string());
    let one = JobScope::Instance;
    ix.enqueue(
        one,
        vec![pair("1.1", "A"), pair("1.2", "A"), pair("1.1", "B")],
        "rule",
        100,
        100,
        false,
    )
    .await
    .unwrap();
    // The same pair again changes nothing (a re-sent instance).
    ix.enqueue(one, vec![pair("1.1", "A")], "rule", 100, 100, false)
        .await
        .unwrap();
    let all = ix.jobs(None, 10, None).await.unwrap();
    assert_eq!(all.len(), 3);
    // Pages, newest first: the next one starts after the last listed.
    let page = ix.jobs(None, 2, None).await.unwrap();
    let next = ix.jobs(None, 2, Some(page[1].id)).await.unwrap();
    let ids = |jobs: &[custos_core::routing::Job]| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!([ids(&page), ids(&next)].concat(), ids(&all));
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert!(
        ix.take_jobs(99, 200, 10, &[]).await.unwrap().is_empty(),
        "not due yet"
    );
    let taken = ix.take_jobs(100, 160, 2, &[]).await.unwrap();
    assert_eq!(taken.len(), 2);
    assert!(
        taken
            .iter()
            .all(|j| j.attempts == 1 && j.state == JobState::Pending)
    );
    // Leased: the third only, until the lease ends.
    let third = ix.take_jobs(100, 160, 10, &[]).await.unwrap();
    assert_eq!(third.len(), 1);
    assert!(ix.take_jobs(150, 210, 10, &[]).await.unwrap().is_empty());
    ix.job_done(taken[0].id, 1).await.unwrap();
    ix.job_failed(taken[1].id, 1, "refused", Some(170))
        .await
        .unwrap();
    ix.job_failed(third[0].id, 1, "gone", None).await.unwrap();
    let again = ix.take_jobs(170, 230, 10, &[]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (taken[1].id, 2));
    // The first attempt's late answer changes nothing now (a stale lease).
    ix.job_done(taken[1].id, 1).await.unwrap();
    ix.job_failed(taken[1].id, 1, "stale", None).await.unwrap();
    assert!(
        ix.jobs(Some(JobState::Pending), 10, None)
            .await
            .unwrap()
            .iter()
            .any(|j| j.id == taken[1].id && j.last_error == "refused")
    );
    let failed = ix.jobs(Some(JobState::Failed), 10, None).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        ix.job_counts().await.unwrap(),
        vec![(JobState::Failed, 1), (JobState::Pending, 1)]
    );
    assert_eq!(failed[0].last_error, "gone");
    assert_eq!(
        ix.jobs(Some(JobState::Done), 10, None).await.unwrap().len(),
        1
    );
    // Retry puts a failed job back with its attempts reset; cancel ends it.
    assert!(ix.retry_job(third[0].id, 300).await.unwrap());
    assert!(
        !ix.retry_job(taken[0].id, 300).await.unwrap(),
        "a done job is not retried"
    );
    assert!(ix.cancel_job(taken[1].id).await.unwrap());
    // A send still running when it was cancelled does not revive it.
    ix.job_failed(taken[1].id, 2, "late", Some(300))
        .await
        .unwrap();
    assert_eq!(
        ix.jobs(Some(JobState::Cancelled), 10, None)
            .await
            .unwrap()
            .len(),
        1
    );
    let back = ix.take_jobs(300, 360, 10, &[]).await.unwrap();
    assert_eq!(
        back.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        vec![(third[0].id, 1)]
    );
    // Sending again on purpose re-queues a finished pair.
    ix.enqueue(one, vec![pair("1.1", "A")], "manual", 400, 400, true)
        .await
        .unwrap();
    let resent = ix.take_jobs(400, 460, 10, &[]).await.unwrap();
    // Pruning leaves what is pending or failed, and what is recent.
    let before = ix.jobs(None, 100, None).await.unwrap().len();
    assert_eq!(ix.prune_jobs(0).await.unwrap(), 0, "nothing that old");
    assert!(
        resent
            .iter()
            .any(|j| j.id == taken[0].id && j.reason == "manual" && j.scope == one)
    );

    // A study job: due once the study has been quiet; each arrival pushes it.
    // (Only it counts from here: the instance jobs above come due again.)
    let study = JobScope::Study;
    let take = async |now: i64| -> Vec<custos_core::routing::Job> {
        let mut all = ix.take_jobs(now, now + 100, 10, &[]).await.unwrap();
        all.retain(|j| j.uid == "2.1");
        all
    };
    ix.enqueue(study, vec![pair("2.1", "A")], "stable", 500, 510, true)
        .await
        .unwrap();
    ix.enqueue(study, vec![pair("2.1", "A")], "stable", 505, 515, true)
        .await
        .unwrap();
    assert!(take(512).await.is_empty(), "pushed");
    let sent = take(515).await;
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].scope, sent[0].uid.as_str()), (study, "2.1"));
    // An arrival during the attempt supersedes it: its outcome is ignored
    // and the study goes again, whole, once quiet.
    ix.enqueue(study, vec![pair("2.1", "A")], "stable", 520, 530, true)
        .await
        .unwrap();
    ix.job_done(sent[0].id, 1).await.unwrap();
    let again = take(530).await;
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    ix.job_done(again[0].id, 1).await.unwrap();
    // A re-sent instance of it (already stored) does not resend the study;
    // a new one does.
    ix.enqueue(study, vec![pair("2.1", "A")], "stable", 700, 710, false)
        .await
        .unwrap();
    assert!(take(800).await.is_empty());
    let finished = ix
        .jobs(Some(JobState::Done), 100, None)
        .await
        .unwrap()
        .len()
        + ix.jobs(Some(JobState::Cancelled), 100, None)
            .await
            .unwrap()
            .len();
    let all = ix.jobs(None, 100, None).await.unwrap().len();
    assert_eq!(ix.prune_jobs(10_000).await.unwrap() as usize, finished);
    assert_eq!(
        ix.jobs(None, 100, None).await.unwrap().len(),
        all - finished
    );
    assert!(
        ix.jobs(Some(JobState::Done), 100, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(before > 0);
    ix.enqueue(study, vec![pair("2.1", "A")], "stable", 700, 710, true)
        .await
        .unwrap();
    assert_eq!(take(800).await.len(), 1);

    // A commitment report held with its payload: due after a grace period,
    // or at once when the modality's association did not take it; a report
    // delivered there is done.
    let report = async |now: i64| -> Vec<custos_core::routing::Job> {
        let mut all = ix.take_jobs(now, now + 100, 10, &[]).await.unwrap();
        all.retain(|j| j.uid == "9.9");
        all
    };
    ix.enqueue_report("9.9", "MOD", r#"{"v":1}"#, 1000, 1030)
        .await
        .unwrap();
    assert!(
        report(1001).await.is_empty(),
        "held for the same association"
    );
    ix.settle_report("9.9", "MOD", false, 1002).await.unwrap();
    let due = report(1002).await;
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].scope, due[0].payload.as_str()),
        (JobScope::Commitment, r#"{"v":1}"#)
    );
    // The modality asks again: the new report replaces the old one.
    ix.enqueue_report("9.9", "MOD", r#"{"v":2}"#, 1200, 1230)
        .await
        .unwrap();
    assert_eq!(report(1230).await[0].payload, r#"{"v":2}"#);
    ix.enqueue_report("9.9", "MOD", r#"{"v":3}"#, 1400, 1430)
        .await
        .unwrap();
    ix.settle_report("9.9", "MOD", true, 1401).await.unwrap();
    assert!(
        report(1500).await.is_empty(),
        "delivered on the association"
    );
    let listed = ix.jobs(Some(JobState::Done), 100, None).await.unwrap();
    let done = listed.iter().find(|j| j.uid == "9.9").unwrap();
    assert_eq!(
        (done.scope, done.payload.as_str()),
        (JobScope::Commitment, "")
    );
}

/// Worklist items by start date; performed steps created once and changed
/// only while in progress.
async fn worklist_and_performed_steps(ix: Ix) {
    use custos_core::record::{MppsRow, WorklistRow};
    let item = |date: &str, acc: &str| WorklistRow {
        patient_id: "P".into(),
        accession_number: acc.into(),
        modality: "CT".into(),
        start_date: date.into(),
        start_time: "0900".into(),
        item_json: "{}".into(),
        ..Default::default()
    };
    let a = ix.add_worklist_item(item("20261204", "A1")).await.unwrap();
    let b = ix.add_worklist_item(item("20261205", "B1")).await.unwrap();
    assert_ne!(a, b);
    let day = ix
        .worklist_items(Some("20261205".into()), Some("20261205".into()), 10, 0)
        .await
        .unwrap();
    assert_eq!(day.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b]);
    assert_eq!(ix.worklist_items(None, None, 10, 0).await.unwrap().len(), 2);
    let second = ix.worklist_items(None, None, 1, 1).await.unwrap();
    assert_eq!((second.len(), second[0].id), (1, b), "paged in date order");
    assert!(
        ix.replace_worklist_item(WorklistRow {
            id: a,
            ..item("20261206", "A2")
        })
        .await
        .unwrap()
    );
    assert_eq!(
        ix.worklist_item(a).await.unwrap().unwrap().accession_number,
        "A2"
    );
    assert_eq!(ix.worklist_id_by_accession("A2").await.unwrap(), Some(a));
    assert_eq!(ix.worklist_id_by_accession("ZZ").await.unwrap(), None);
    assert!(ix.remove_worklist_item(b).await.unwrap());
    assert!(!ix.remove_worklist_item(b).await.unwrap());
    let step = MppsRow {
        sop_instance_uid: "9.9".into(),
        status: "IN PROGRESS".into(),
        worklist_id: Some(a),
        attributes_json: "{}".into(),
        ..Default::default()
    };
    assert!(ix.create_mpps(step.clone()).await.unwrap());
    assert!(
        !ix.create_mpps(step.clone()).await.unwrap(),
        "one step per UID"
    );
    let done = MppsRow {
        status: "COMPLETED".into(),
        ..step.clone()
    };
    assert!(ix.update_mpps_in_progress(done.clone()).await.unwrap());
    assert!(
        !ix.update_mpps_in_progress(done).await.unwrap(),
        "completed steps stay so"
    );
    let stored = ix.mpps("9.9").await.unwrap().unwrap();
    assert_eq!(
        (stored.status.as_str(), stored.worklist_id),
        ("COMPLETED", Some(a))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_8_counts_what_was_stored_before() {
    let dir = std::env::temp_dir().join(format!("custos-index-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("index.sqlite");
    {
        let ix: Ix = std::sync::Arc::new(SqliteIndex::open(&path).unwrap());
        populate(&ix).await;
    }
    // Back to schema 7: no counters, the old date index, no worklist.
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "DROP TABLE worklist;
         DROP TABLE mpps;
         DROP TABLE jobs;
         DROP TABLE change_outbox;
         DROP TABLE changes;
         DROP TABLE webhooks;
         DROP TABLE protected_studies;
         DROP TABLE conflicts;
         ALTER TABLE series DROP COLUMN num_instances;
         ALTER TABLE studies DROP COLUMN num_series;
         ALTER TABLE studies DROP COLUMN num_instances;
         ALTER TABLE studies DROP COLUMN modalities;
         DROP INDEX studies_date_time;
         CREATE INDEX studies_date ON studies(study_date);
         PRAGMA user_version = 7;",
    )
    .unwrap();
    drop(db);
    let ix: Ix = std::sync::Arc::new(SqliteIndex::open(&path).unwrap());
    let rows = ix
        .find(q(
            Level::Study,
            vec![(Key::StudyInstanceUID, Matcher::Single("1.1".into()))],
        ))
        .await
        .unwrap();
    assert_eq!(rows[0][&Key::NumberOfStudyRelatedSeries], "2");
    assert_eq!(rows[0][&Key::NumberOfStudyRelatedInstances], "3");
    assert_eq!(rows[0][&Key::ModalitiesInStudy], "CT\\PR");
}

/// Changes are numbered without gaps in the order they are sequenced,
/// webhook deliveries are queued with them, and a study's "stable" delivery
/// is pushed back by each new instance.
async fn change_feed_and_webhooks(ix: Ix) {
    use custos_core::routing::{JobScope, JobState};
    let hook = ix
        .add_webhook(
            "https://hooks.example/in",
            &[
                "instance.stored".into(),
                "study.deleted".into(),
                "study.stable".into(),
            ],
            "s3cret",
            100,
        )
        .await
        .unwrap();
    let first = rec("P", "N", "9.1", "20260101", "9.1.1", "CT", "9.1.1.1");
    ix.insert(first.clone(), false).await.unwrap();
    ix.insert(first, false).await.unwrap(); // identical: no change
    assert_eq!(ix.sequence_changes(100, 1000, 30).await.unwrap(), 3);
    ix.insert(
        rec("P", "N", "9.1", "20260101", "9.1.1", "CT", "9.1.1.2"),
        false,
    )
    .await
    .unwrap();
    let mut replaced = rec("P", "N", "9.1", "20260101", "9.1.1", "CT", "9.1.1.2");
    replaced.sha256 = "other".into();
    ix.insert(replaced, true).await.unwrap();
    assert_eq!(ix.sequence_changes(100, 1010, 30).await.unwrap(), 2);
    assert_eq!(ix.sequence_changes(100, 1010, 30).await.unwrap(), 0);
    let feed = ix.changes(0, 100).await.unwrap();
    let events: Vec<(i64, String, String)> = feed
        .iter()
        .map(|c| (c.seq, c.event(), c.instance.clone()))
        .collect();
    assert_eq!(
        events,
        vec![
            (1, "study.stored".into(), "".into()),
            (2, "series.stored".into(), "".into()),
            (3, "instance.stored".into(), "9.1.1.1".into()),
            (4, "instance.stored".into(), "9.1.1.2".into()),
            (5, "instance.updated".into(), "9.1.1.2".into()),
        ]
    );
    assert_eq!(ix.changes(3, 1).await.unwrap()[0].seq, 4, "paged");
    // Old entries go; the numbering of the rest stays.
    assert_eq!(ix.prune_changes(0).await.unwrap(), 0);
    ix.remove("9.1", None).await.unwrap();
    assert_eq!(ix.sequence_changes(100, 1020, 30).await.unwrap(), 3);
    let deleted = ix.changes(5, 100).await.unwrap();
    assert_eq!(
        deleted
            .iter()
            .map(|c| (c.seq, c.event()))
            .collect::<Vec<_>>(),
        vec![
            (6, "study.deleted".to_string()),
            (7, "instance.deleted".to_string()),
            (8, "instance.deleted".to_string()),
        ]
    );
    // Deliveries: the two stored instances and the deleted study, once
    // each; the study's stable delivery due 30 s after its last instance.
    let jobs = ix.jobs(Some(JobState::Pending), 100, None).await.unwrap();
    let mine: Vec<_> = jobs
        .iter()
        .filter(|j| j.destination == format!("webhook:{hook}"))
        .collect();
    let mut uids: Vec<&str> = mine.iter().map(|j| j.uid.as_str()).collect();
    uids.sort();
    assert_eq!(uids, vec!["3", "4", "6", "stable:9.1"]);
    assert!(mine.iter().all(|j| j.scope == JobScope::Webhook));
    let due = ix.take_jobs(1039, 2000, 100, &[]).await.unwrap();
    assert!(
        !due.iter().any(|j| j.uid == "stable:9.1"),
        "the update at 1010 pushed it to 1040"
    );
    let due = ix.take_jobs(1040, 2000, 100, &[]).await.unwrap();
    let stable = due.iter().find(|j| j.uid == "stable:9.1").unwrap();
    assert_eq!(
        stable.payload,
        r#"{"event":"study.stable","study":"9.1","seq":5}"#
    );
    let stored = due.iter().find(|j| j.uid == "3");
    assert!(stored.is_none(), "taken at 1039 already");
    assert_eq!(ix.webhooks().await.unwrap()[0].secret, "s3cret");
    assert!(ix.remove_webhook(hook).await.unwrap());
    assert!(ix.webhooks().await.unwrap().is_empty());
    let far = i64::MAX / 2;
    assert_eq!(ix.prune_changes(far).await.unwrap(), 8);
    assert!(ix.changes(0, 100).await.unwrap().is_empty());
}

/// Each study's date, modalities and last arrival, page by page, and the
/// protection flag.
async fn retention_reads(ix: Ix) {
    populate(&ix).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let first = ix.study_activity(0, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = ix.study_activity(first[1].0, 100).await.unwrap();
    let all: Vec<_> = first.iter().chain(&rest).map(|(_, s)| s.clone()).collect();
    let s11 = all.iter().find(|s| s.study_uid == "1.1").unwrap();
    assert_eq!(
        (s11.study_date.as_str(), s11.patient_id.as_str()),
        ("20200105", "P1")
    );
    assert!(s11.modalities.contains("CT"));
    assert!(
        (before - 120..=before + 120).contains(&s11.last_received),
        "{s11:?}"
    );
    assert!(all.iter().all(|s| !s.protected));
    assert!(
        ix.set_protected("1.1", true, "legal hold", before)
            .await
            .unwrap()
    );
    assert!(
        !ix.set_protected("1.1", true, "again", before)
            .await
            .unwrap()
    );
    let all = ix.study_activity(0, 100).await.unwrap();
    assert!(all.iter().any(|(_, s)| s.study_uid == "1.1" && s.protected));
    // Retention's deletion checks again as it deletes: a protection, or
    // an instance received after what it saw, spares the study.
    let seen = s11.last_received;
    assert_eq!(ix.remove_expired("1.1", seen).await.unwrap(), None);
    assert!(ix.set_protected("1.1", false, "", before).await.unwrap());
    assert!(
        ix.study_activity(0, 100)
            .await
            .unwrap()
            .iter()
            .all(|(_, s)| !s.protected)
    );
    assert_eq!(ix.remove_expired("1.1", seen - 1).await.unwrap(), None);
    assert!(activity_of(&ix, "1.1").await.is_some(), "spared");
    let removed = ix.remove_expired("1.1", seen).await.unwrap().unwrap();
    assert!(!removed.is_empty());
    assert!(activity_of(&ix, "1.1").await.is_none(), "deleted");
    assert_eq!(ix.remove_expired("1.1", seen).await.unwrap(), None, "gone");
}

async fn activity_of(ix: &Ix, study_uid: &str) -> Option<custos_core::retention::StudyActivity> {
    ix.study_activity(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| s.study_uid == study_uid)
}

/// Matches come from the cursor in the order asked (here: as stored); a consumer that stops
/// after the first ends the read and the connection serves the next queries
/// (more of them than either backend pools); a failing query fails.
async fn streamed_matches(ix: Ix) {
    for i in 0..300 {
        let study = format!("9.{i}");
        let r = rec(
            "PS",
            "STREAM^ME",
            &study,
            "20240101",
            &format!("{study}.1"),
            "CT",
            &format!("{study}.1.1"),
        );
        ix.insert(r, false).await.unwrap();
    }
    let mut query = q(
        Level::Study,
        vec![(Key::PatientID, Matcher::Single("PS".into()))],
    );
    query.limit = 1000;
    let mut stream = ix.find_stream(query.clone()).await.unwrap();
    let mut uids = Vec::new();
    while let Some(row) = stream.recv().await {
        uids.push(row.unwrap()[&Key::StudyInstanceUID].clone());
    }
    let stored: Vec<String> = (0..300).map(|i| format!("9.{i}")).collect();
    assert_eq!(uids, stored, "all, in the order stored");
    assert_eq!(ix.find(query.clone()).await.unwrap().len(), 300);
    for _ in 0..40 {
        let mut stream = ix.find_stream(query.clone()).await.unwrap();
        assert!(stream.recv().await.unwrap().is_ok());
        drop(stream);
    }
    assert_eq!(ix.find(query).await.unwrap().len(), 300);
}

/// On PostgreSQL, retention's deletion that has to wait for another
/// transaction on the study (a protection, an instance's insert) decides
/// on what that one committed: the study is spared, nothing of it lost.
#[tokio::test(flavor = "multi_thread")]
async fn retention_decides_after_what_it_waited_for() {
    let meanwhile = [
        // A protection, as `set_protected` takes it.
        "SELECT 1 FROM studies WHERE study_uid = '1.1' FOR SHARE;
         INSERT INTO protected_studies (study_uid, reason, at) VALUES ('1.1', 'hold', 0)",
        // An instance into an existing series, as ingest writes it (later
        // than anything retention saw).
        "INSERT INTO instances (series_pk, sop_instance_uid, sop_class_uid, transfer_syntax_uid,
             blob_key, size, sha256, received_at)
           SELECT pk, '1.1.1.9', '1.2', '1.2.840.10008.1.2.1', 'k', 1, 'x', now() + interval '1 minute'
             FROM series WHERE series_uid = '1.1.1';
         UPDATE series SET num_instances = num_instances + 1 WHERE series_uid = '1.1.1';
         UPDATE studies SET num_instances = num_instances + 1 WHERE study_uid = '1.1'",
    ];
    for sql in meanwhile {
        let url = pg_database().await;
        let ix: Ix = std::sync::Arc::new(PgIndex::connect(&url).await.unwrap());
        populate(&ix).await;
        let seen = activity_of(&ix, "1.1").await.unwrap().last_received;
        let (other, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        other.batch_execute("BEGIN").await.unwrap();
        other.batch_execute(sql).await.unwrap();
        let deleting = {
            let ix = ix.clone();
            tokio::spawn(async move { ix.remove_expired("1.1", seen).await })
        };
        // Until the deletion waits for that transaction's locks.
        let mut waited = false;
        for _ in 0..500 {
            let waiting: i64 = other
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                waited = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(waited, "the deletion never waited: {sql}");
        other.batch_execute("COMMIT").await.unwrap();
        assert_eq!(deleting.await.unwrap().unwrap(), None, "{sql}");
        assert!(activity_of(&ix, "1.1").await.is_some(), "{sql}");
    }
}
