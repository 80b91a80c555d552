//! Scale-out: the archive on PostgreSQL (`[index] url`) with blobs in a
//! shared folder or on S3 (`[store] url`); two nodes serving one archive.

use crate::common::*;

#[test]
fn two_nodes_share_one_postgres_index() {
    let url = fresh_database();
    let store = std::env::temp_dir().join(format!("custos-shared-blobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let a = node("pg-a", &url, &store, None);
    let b = node("pg-b", &url, &store, None);
    // A peer registered through node A's CLI is known to node B: one registry.
    a.add_peer("DCMTK", "127.0.0.1", 104, "echo,store,find,get");
    assert!(
        b.cli(&["peer", "list"])
            .success()
            .stdout()
            .contains("DCMTK")
    );
    let sa = Server::start(&a);
    let sb = Server::start(&b);
    let files = pydicom_test_files();
    let ct = files.join("CT_small.dcm");
    let mr = files.join("MR_small.dcm");
    let st = dcmtk(
        "storescu",
        &[
            "-aet",
            "DCMTK",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &sa.port(),
            ct.to_str().unwrap(),
            mr.to_str().unwrap(),
        ],
    );
    assert!(st.ok(), "{}", st.stderr());

    // Node B answers for what node A stored.
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
            &sb.port(),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=CompressedSamples*",
            "-k",
            "StudyInstanceUID",
        ],
    );
    let text = find.stderr();
    assert!(
        text.contains("Find Response: 2 (Pending)") && !text.contains("Find Response: 3"),
        "{text}"
    );
    let out = std::env::temp_dir().join(format!("custos-pg-get-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let get = dcmtk(
        "getscu",
        &[
            "-aet",
            "DCMTK",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &sb.port(),
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=1CT1",
            "-P",
            "-od",
            out.to_str().unwrap(),
        ],
    );
    assert!(get.ok(), "{}", get.stderr());
    assert_eq!(walk_files(&out).len(), 1);

    // A new instance through both nodes at once: one copy, both succeed.
    let overlay = files.join("examples_overlay.dcm");
    let both: Vec<_> = [sa.port(), sb.port()]
        .into_iter()
        .map(|port| {
            let f = overlay.clone();
            std::thread::spawn(move || {
                dcmtk(
                    "storescu",
                    &[
                        "-v",
                        "-aet",
                        "DCMTK",
                        "-aec",
                        "CUSTOS",
                        "127.0.0.1",
                        &port,
                        f.to_str().unwrap(),
                    ],
                )
            })
        })
        .collect();
    for h in both {
        let run = h.join().unwrap();
        assert!(
            run.stderr().contains("Received Store Response (Success)"),
            "{}",
            run.stderr()
        );
    }
    assert_eq!(blob_count(&store), 3, "one copy of each instance");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn two_nodes_on_postgres_and_s3() {
    let url = fresh_database();
    let s3 = s3_url("e2e");
    let unused = std::env::temp_dir().join("custos-unused-blob-folder");
    let a = node("s3-a", &url, &unused, Some(&s3));
    let b = node("s3-b", &url, &unused, Some(&s3));
    a.add_peer("DCMTK", "127.0.0.1", 104, "echo,store,find,get");
    let sa = Server::start(&a);
    let sb = Server::start(&b);
    let files = pydicom_test_files();
    let ct = files.join("CT_small.dcm");
    let st = dcmtk(
        "storescu",
        &[
            "-aet",
            "DCMTK",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &sa.port(),
            ct.to_str().unwrap(),
        ],
    );
    assert!(st.ok(), "{}", st.stderr());
    assert!(!unused.exists(), "no blob touched the local folder");
    // Node B finds and returns it from S3, byte for byte as DCMTK dumps it.
    let out = std::env::temp_dir().join(format!("custos-s3-get-{}", std::process::id()));
    let got = getscu_study(&sb, "DCMTK", CT_STUDY, &out);
    assert_eq!(got.len(), 1);
    assert_eq!(dcm_dump(&got[0]), dcm_dump(&ct));
    let _ = std::fs::remove_dir_all(&out);
    // A user made through node A's CLI lives in PostgreSQL: node B knows it,
    // and its WADO-RS returns what node A stored, from S3.
    add_user(&a, "reader", "radiologist", "reads from node b 7");
    let path = format!("/dicom-web/studies/{CT_STUDY}");
    let wado_out = b.path.join("wado");
    let raw = json_of(
        &web(
            &sb,
            "reader",
            "reads from node b 7",
            &[
                "raw-get",
                "--path",
                &path,
                "--out",
                wado_out.to_str().unwrap(),
            ],
        )
        .success(),
    );
    assert_eq!(raw["status"], 200, "{raw}");
    // DCMTK re-encodes what getscu receives, so compare as DCMTK dumps them.
    let fetched = std::path::PathBuf::from(format!("{}-0", wado_out.display()));
    assert_eq!(dcm_dump(&fetched), dcm_dump(&ct));
}

/// Kill -9 of a node mid-ingest on PostgreSQL + S3: after it, `custos fsck`
/// on the other node finds every acknowledged instance whole, and the other
/// node retrieves them all.
#[test]
fn node_killed_during_ingest_loses_nothing_acknowledged() {
    let url = fresh_database();
    let s3 = s3_url("kill");
    let unused = std::env::temp_dir().join("custos-unused-blob-folder");
    let a = node("kill-a", &url, &unused, Some(&s3));
    let b = node("kill-b", &url, &unused, Some(&s3));
    a.add_peer("PYSCU", "127.0.0.1", 104, "echo,store,find,get");
    let sa = Server::process(&a);
    let acked = a.path.with_extension("acked");
    let work = a.path.with_extension("work");
    let mut ingest = start_ingest(&sa, &acked, &work, 30);
    sa.kill9();
    ingest.wait().unwrap();

    // fsck through node B's configuration: nothing missing or altered.
    let fsck = b.cli(&["fsck"]);
    let out = fsck.stdout();
    assert!(
        out.contains(" 0 missing, 0 altered"),
        "{out}\n{}",
        fsck.stderr()
    );
    let sb = Server::start(&b);
    let (lost, unreadable) = lost_after_restart(&sb, &acked);
    assert!(
        lost.is_empty(),
        "{} acknowledged instances lost: {lost:?}",
        lost.len()
    );
    assert_eq!(unreadable, 0);
    let _ = std::fs::remove_dir_all(&work);
}

/// `custos migrate` from a populated embedded archive to PostgreSQL + S3:
/// everything arrives verified, a second run resumes (copies nothing), and a
/// node on the new backends returns each instance as the embedded one did,
/// to the peers and users the embedded one had, and keeps its legal holds.
#[test]
fn migrate_embedded_archive_to_postgres_and_s3() {
    let embedded = DataDir::new("migrate-src");
    let files = pydicom_test_files();
    let src = embedded.path.with_extension("src");
    std::fs::create_dir_all(&src).unwrap();
    let names = [
        "CT_small.dcm",
        "MR_small.dcm",
        "JPEG2000.dcm",
        "examples_overlay.dcm",
        "image_dfl.dcm",
    ];
    for f in names {
        std::fs::copy(files.join(f), src.join(f)).unwrap();
    }
    embedded.cli(&["import", src.to_str().unwrap()]).success();
    // What the archive's policy rests on comes along: the peer and the
    // user (used on the new node below) and a legal hold.
    embedded.add_peer("DCMTK", "127.0.0.1", 104, "echo,get");
    add_user(
        &embedded,
        "carried",
        "radiologist",
        "brought 42 over the sea",
    );
    let token = create_token(&embedded, "carried", "1d", true);
    embedded
        .cli(&["study", "protect", CT_STUDY, "--reason", "legal hold"])
        .success();
    let url = fresh_database();
    let s3 = s3_url("migrate");
    let run = embedded
        .cli(&["migrate", "--to-index", &url, "--to-store", &s3])
        .success();
    assert!(
        run.stdout()
            .contains("5 copied and verified, 0 already in the target, 0 failed"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout()
            .contains("1 peers, 2 users, 1 tokens, 0 webhooks and 1 study protections copied"),
        "{}",
        run.stdout()
    );
    let again = embedded
        .cli(&["migrate", "--to-index", &url, "--to-store", &s3])
        .success();
    assert!(
        again
            .stdout()
            .contains("0 copied and verified, 5 already in the target"),
        "{}",
        again.stdout()
    );
    // The audit trail came along, record for record: the same data folder
    // pointed at the new index verifies it (its checkpoint included), and
    // the migrations themselves are in it.
    let on_new_index = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_custos"))
            .args(args)
            .arg("--data")
            .arg(&embedded.path)
            .env("CUSTOS_INDEX_URL", &url)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (_, out) = on_new_index(&["study", "protect", CT_STUDY, "--reason", "again"]);
    assert!(out.contains("protected (already)"), "{out}");
    let (ok, out) = on_new_index(&["audit", "verify"]);
    assert!(ok && out.contains("intact"), "{out}");
    let (_, exported) = on_new_index(&["audit", "export"]);
    assert_eq!(
        exported.matches("migrated to index").count(),
        2,
        "{exported}"
    );
    assert!(exported.contains("imported 5 instances"), "{exported}");

    // A node on the new backends: fsck re-hashes every blob against the
    // SHA-256 carried over (so each is byte-identical to the source), and
    // DICOM retrieval returns what was imported.
    let unused = std::env::temp_dir().join("custos-unused-blob-folder");
    let node = node("migrate-dst", &url, &unused, Some(&s3));
    // Another node on the migrated index holds the trail's key, as every
    // node sharing an index does.
    std::fs::copy(embedded.path.join("audit.key"), node.path.join("audit.key")).unwrap();
    let fsck = node.cli(&["fsck"]).success();
    assert!(
        fsck.stdout()
            .contains("5 instances checked: 0 missing, 0 altered, 0 orphan"),
        "{}",
        fsck.stdout()
    );
    let server = Server::start(&node);
    let got = getscu_study(&server, "DCMTK", CT_STUDY, &src.join("received"));
    assert_eq!(got.len(), 1);
    assert_eq!(dcm_dump(&got[0]), dcm_dump(&files.join("CT_small.dcm")));
    let found = web(
        &server,
        "carried",
        "brought 42 over the sea",
        &["search", "--level", "studies"],
    )
    .success();
    assert_eq!(
        json_of(&found).as_array().map(Vec::len),
        Some(5),
        "{}",
        found.stdout()
    );
    let r = web_requests(
        &server,
        serde_json::json!([
            { "method": "GET", "path": "/dicom-web/studies", "auth": { "bearer": token } },
        ]),
    );
    assert_eq!(r[0]["status"], 200, "the token came along: {r:?}");
    let _ = std::fs::remove_dir_all(&src);
}

/// Connections of other backends to database `db`: (how many, how many over TLS).
fn tls_connections(admin_url: &str, db: &str) -> (u64, u64) {
    let out = std::process::Command::new("psql")
        .arg(admin_url)
        .args([
            "-tA",
            "-c",
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{db}'"
            ),
        ])
        .output()
        .expect("psql");
    let text = String::from_utf8_lossy(&out.stdout);
    let (all, tls) = text.trim().split_once('|').expect("two counts");
    (all.parse().unwrap(), tls.parse().unwrap())
}

#[test]
fn the_index_connection_uses_tls_and_checks_the_certificate() {
    let ca = std::env::var("CUSTOS_TEST_POSTGRES_CA")
        .expect("CUSTOS_TEST_POSTGRES_CA is not set: run scripts/test");
    let admin = std::env::var("CUSTOS_TEST_POSTGRES_URL").unwrap();
    let url = fresh_database();
    let db = url.rsplit_once('/').unwrap().1.to_string();
    let store = std::env::temp_dir().join(format!("custos-tls-blobs-{}", std::process::id()));
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let data = node("pg-tls", &tls_url, &store, None);
    data.add_peer("PEER", "127.0.0.1", 104, "echo");
    let server = Server::start(&data);
    assert!(echo(&server, "PEER", "CUSTOS").ok());
    let (all, tls) = tls_connections(&admin, &db);
    assert!(all > 0 && tls == all, "{tls} of {all} connections use TLS");
    drop(server);

    let with_url = |url: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_custos"))
            .args(args)
            .arg("--data")
            .arg(&data.path)
            .env("CUSTOS_INDEX_URL", url)
            .output()
            .unwrap();
        Run(out)
    };
    // A certificate the given CA did not sign (the data folder's own CA).
    let other_ca = data.path.join("tls/ca.pem");
    let run = with_url(
        &format!(
            "{url}?sslmode=verify-full&sslrootcert={}",
            other_ca.display()
        ),
        &["peer", "list"],
    );
    assert!(!run.ok(), "{}", run.stdout());
    assert!(
        run.stderr().to_lowercase().contains("certificate"),
        "{}",
        run.stderr()
    );
    // The right CA but another name: verify-full refuses, verify-ca accepts.
    let by_name = url.replacen("127.0.0.1", "localhost", 1);
    let run = with_url(
        &format!("{by_name}?sslmode=verify-full&sslrootcert={ca}"),
        &["peer", "list"],
    );
    assert!(
        !run.ok(),
        "a certificate for 127.0.0.1 accepted for localhost"
    );
    let run = with_url(
        &format!("{by_name}?sslmode=verify-ca&sslrootcert={ca}"),
        &["peer", "list"],
    );
    assert!(
        run.ok() && run.stdout().contains("PEER"),
        "{}",
        run.stderr()
    );
    let _ = std::fs::remove_dir_all(&store);
}

/// A TCP relay to PostgreSQL that, once, lets through the COMMIT of a
/// transaction that indexed an instance and cuts the connection before the
/// answer can come back: the commit happened, the node cannot know it.
fn commit_cutting_relay(pg: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let used = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(pg) else {
                continue;
            };
            let (mut from_pg, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_pg, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Both);
            });
            let (mut from_client, mut to_pg) = (client, server);
            let used = used.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut indexed = false;
                loop {
                    let n = match from_client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    indexed |= contains(chunk, b"INSERT INTO instances");
                    let cut =
                        indexed && contains(chunk, b"COMMIT") && !used.swap(true, Ordering::SeqCst);
                    if cut {
                        // The node hears nothing more; PostgreSQL gets the COMMIT.
                        let _ = from_client.shutdown(Shutdown::Both);
                    }
                    if to_pg.write_all(chunk).is_err() {
                        break;
                    }
                    if cut {
                        std::thread::sleep(std::time::Duration::from_millis(500));
                        let _ = to_pg.shutdown(Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The connection to PostgreSQL breaks after the COMMIT of an instance's row
/// was sent, before its answer: the row is in the index, the node saw an
/// error. The received blob must not be removed (before, it was: the resend
/// then found the instance "already stored" and was acknowledged while the
/// archive had no bytes for it). The instance comes back whole.
#[test]
fn a_commit_whose_answer_is_lost_keeps_the_blob() {
    let url = fresh_database();
    let rest = url.split_once("@").unwrap().1;
    let (host_port, db) = rest.split_once('/').unwrap();
    let pg: std::net::SocketAddr = host_port.parse().unwrap();
    let relay = commit_cutting_relay(pg);
    let relayed = url.replace(host_port, &relay.to_string());
    assert!(relayed.ends_with(db));
    let store = std::env::temp_dir().join(format!("custos-lostcommit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let data = node("pg-lost-commit", &relayed, &store, None);
    data.add_peer("DCMTK", "127.0.0.1", 104, "echo,store,find,get");
    let server = Server::start(&data);
    let ct = pydicom_test_files().join("CT_small.dcm");

    let (first, text) = storescu_one(&server, "DCMTK", &ct);
    assert!(
        !first,
        "the store whose commit answer was lost reported success:\n{text}"
    );
    let (again, text) = storescu_one(&server, "DCMTK", &ct);
    assert!(again, "the resend failed:\n{text}");

    let dump = dcmtk("dcmdump", &["-q", "+P", "0020,000d", ct.to_str().unwrap()]).stdout();
    let study = dump
        .split('[')
        .nth(1)
        .and_then(|l| l.split(']').next())
        .unwrap()
        .to_string();
    let out = data.path.join("got");
    let files = getscu_study(&server, "DCMTK", &study, &out);
    assert_eq!(
        files.len(),
        1,
        "the acknowledged instance cannot be retrieved"
    );
    // storescu sends the data set without its group lengths: compared by
    // value (SOP Instance UID, name, every pixel).
    assert_eq!(dcm_dump(&files[0]), dcm_dump(&ct), "the data set differs");
    assert!(server.stop());
    let fsck = data.cli(&["fsck", "--grace-hours", "0"]).stdout();
    assert!(fsck.contains("0 missing"), "{fsck}");
    let _ = std::fs::remove_dir_all(&store);
}
