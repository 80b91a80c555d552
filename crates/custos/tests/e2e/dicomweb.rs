//! DICOMweb end to end with dicomweb-client (PyPI) as the client: QIDO-RS at
//! each level, WADO-RS instances / metadata / frames / rendered, STOW-RS, and
//! bytes crossing between DIMSE and DICOMweb unchanged in both directions.

use crate::common::*;
use std::path::PathBuf;

const PW_RAD: &str = "reading room 4 lights";
const PW_UP: &str = "scanner uploads only 9";

/// An embedded (SQLite + files) archive, or with `scale_out` one on
/// PostgreSQL + S3, with a DICOM peer and two web users.
fn setup(name: &str, scale_out: bool) -> (DataDir, Server) {
    let data = if scale_out {
        let blobs =
            std::env::temp_dir().join(format!("custos-unused-{name}-{}", std::process::id()));
        node(name, &fresh_database(), &blobs, Some(&s3_url(name)))
    } else {
        DataDir::new(name)
    };
    data.add_peer("STORESCU", "127.0.0.1", 104, "echo,store,get");
    add_user(&data, "rad", "radiologist", PW_RAD);
    add_user(&data, "up", "uploader", PW_UP);
    let server = Server::start(&data);
    (data, server)
}

#[test]
fn dicomweb_client_searches_and_retrieves_what_dimse_stored() {
    searches_and_retrieves(setup("web-qido", false));
}

#[test]
fn dicomweb_on_postgres_and_s3() {
    searches_and_retrieves(setup("web-qido-pg", true));
    stores_and_finds(setup("web-stow-pg", true));
}

#[test]
fn stow_rs_stores_what_dimse_and_qido_then_find() {
    stores_and_finds(setup("web-stow", false));
}

fn searches_and_retrieves((_data, server): (DataDir, Server)) {
    let ct = pydicom_test_files().join("CT_small.dcm");
    // pynetdicom sends the file's data set bytes unchanged, in its own transfer syntax.
    python(&[
        "store",
        "--port",
        &server.port(),
        "--aet",
        "STORESCU",
        ct.to_str().unwrap(),
    ])
    .success();

    // QIDO-RS at each level, with filters.
    let studies = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &["search", "--level", "studies", "-k", "PatientID=1CT1"],
        )
        .success(),
    );
    assert_eq!(studies.as_array().unwrap().len(), 1, "{studies}");
    assert_eq!(studies[0]["0020000D"]["Value"][0], CT_STUDY);
    assert_eq!(
        studies[0]["00100010"]["Value"][0]["Alphabetic"],
        "CompressedSamples^CT1"
    );
    assert_eq!(studies[0]["00201208"]["Value"][0], 1);
    let none = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &["search", "--level", "studies", "-k", "PatientName=NOBODY*"],
        )
        .success(),
    );
    assert_eq!(none.as_array().map(Vec::len).unwrap_or(0), 0);
    let wildcard = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &[
                "search",
                "--level",
                "studies",
                "-k",
                "PatientName=compressed*",
                "-k",
                "StudyDate=20040101-20041231",
            ],
        )
        .success(),
    );
    assert_eq!(wildcard.as_array().unwrap().len(), 1);
    let series = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &[
                "search",
                "--level",
                "series",
                "--study",
                CT_STUDY,
                "-k",
                "Modality=CT",
            ],
        )
        .success(),
    );
    assert_eq!(series.as_array().unwrap().len(), 1);
    let series_uid = series[0]["0020000E"]["Value"][0]
        .as_str()
        .unwrap()
        .to_string();
    let instances = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &[
                "search",
                "--level",
                "instances",
                "--study",
                CT_STUDY,
                "--series",
                &series_uid,
            ],
        )
        .success(),
    );
    assert_eq!(instances[0]["00080018"]["Value"][0], CT_SOP);

    // WADO-RS through dicomweb-client.
    let ids = [
        "--study",
        CT_STUDY,
        "--series",
        &series_uid,
        "--sop",
        CT_SOP,
    ];
    let got = json_of(&web(&server, "rad", PW_RAD, &[&["retrieve"], &ids[..]].concat()).success());
    assert_eq!(got["sop"], CT_SOP);
    let study = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &["retrieve-study", "--study", CT_STUDY],
        )
        .success(),
    );
    assert_eq!(study, serde_json::json!([CT_SOP]));
    let meta = json_of(&web(&server, "rad", PW_RAD, &[&["metadata"], &ids[..]].concat()).success());
    assert_eq!(meta["00100020"]["Value"][0], "1CT1");
    assert!(
        meta["7FE00010"]["BulkDataURI"]
            .as_str()
            .unwrap()
            .ends_with("/bulkdata/7FE00010")
    );
    let frames = json_of(&web(&server, "rad", PW_RAD, &[&["frames"], &ids[..]].concat()).success());
    assert_eq!(
        frames[0]["len"],
        128 * 128 * 2,
        "one native 16-bit 128x128 frame"
    );
    let jpeg = json_of(&web(&server, "rad", PW_RAD, &[&["rendered"], &ids[..]].concat()).success());
    assert!(
        jpeg["head"].as_str().unwrap().starts_with("ffd8ff"),
        "{jpeg}"
    );
    let png = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &[&["rendered", "--media", "image/png"], &ids[..]].concat(),
        )
        .success(),
    );
    assert!(
        png["head"].as_str().unwrap().starts_with("89504e47"),
        "{png}"
    );

    // The pixel data's BulkDataURI answers with the frame bytes.
    let uri = meta["7FE00010"]["BulkDataURI"].as_str().unwrap();
    let path = &uri[uri.find("/dicom-web").unwrap()..];
    let bulk_out = _data.path.join("bulk");
    let bulk = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &[
                "raw-get",
                "--path",
                path,
                "--accept",
                "multipart/related; type=\"application/octet-stream\"",
                "--out",
                bulk_out.to_str().unwrap(),
            ],
        )
        .success(),
    );
    assert_eq!(bulk["parts"][0]["len"], 128 * 128 * 2, "{bulk}");

    // The bytes WADO-RS returns are the bytes C-STORE sent (the data set; file meta is ours).
    let out = _data.path.join("wado");
    let path = format!("/dicom-web/studies/{CT_STUDY}/series/{series_uid}/instances/{CT_SOP}");
    let raw = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &["raw-get", "--path", &path, "--out", out.to_str().unwrap()],
        )
        .success(),
    );
    assert_eq!(raw["parts"].as_array().unwrap().len(), 1, "{raw}");
    let fetched = std::fs::read(format!("{}-0", out.display())).unwrap();
    let sent = std::fs::read(&ct).unwrap();
    assert!(
        dataset_of(&fetched) == dataset_of(&sent),
        "WADO-RS bytes differ from C-STORE's"
    );
}

fn stores_and_finds((data, server): (DataDir, Server)) {
    let files = pydicom_test_files();
    let mr = files.join("MR_small.dcm");

    // Raw STOW of the file's bytes: C-GET returns the same data set.
    let stow = json_of(&web(&server, "up", PW_UP, &["raw-stow", mr.to_str().unwrap()]).success());
    assert_eq!(stow["status"], 200, "{stow}");
    let referenced = &stow["body"]["00081199"]["Value"];
    assert_eq!(referenced.as_array().unwrap().len(), 1);
    let study = qido_study_of(&server, "PatientID=4MR1");
    let got = getscu_study(&server, "STORESCU", &study, &data.path.join("get"));
    // (This once came back empty on PostgreSQL + S3; the log says why if again.)
    assert_eq!(got.len(), 1, "server log:\n{}", server.log_text());
    assert!(
        dataset_of(&std::fs::read(&got[0]).unwrap()) == dataset_of(&std::fs::read(&mr).unwrap()),
        "C-GET bytes differ from STOW-RS's"
    );

    // An instance above the size read whole (2 MiB) streams back in
    // blocks, byte for byte, by WADO-RS and by C-GET.
    let made = data.path.join("made-big");
    python(&[
        "make",
        made.to_str().unwrap(),
        r#"{"PatientID": "BIG1", "_pixel_bytes": 12582912}"#,
    ])
    .success();
    let big = made.join("gen0000.dcm");
    let sent = std::fs::read(&big).unwrap();
    assert!(sent.len() > 12 << 20);
    let stow = json_of(&web(&server, "up", PW_UP, &["raw-stow", big.to_str().unwrap()]).success());
    assert_eq!(stow["status"], 200, "{stow}");
    let study = qido_study_of(&server, "PatientID=BIG1");
    let wado = wado_study_parts(&server, "rad", PW_RAD, &study, &data.path.join("big-got"));
    assert_eq!(wado["parts"][0]["len"], sent.len(), "{wado}");
    assert_eq!(wado["parts"][0]["sha256"], sha256_hex(&sent),);
    let got = getscu_study(&server, "STORESCU", &study, &data.path.join("get-big"));
    assert_eq!(got.len(), 1, "server log:\n{}", server.log_text());
    assert!(
        dataset_of(&std::fs::read(&got[0]).unwrap()) == dataset_of(&sent),
        "C-GET bytes of a 12 MiB instance differ from STOW-RS's"
    );

    // dicomweb-client's own STOW, then found by QIDO and by C-FIND.
    let nm = files.join("JPEG2000.dcm");
    let res = json_of(&web(&server, "up", PW_UP, &["stow", nm.to_str().unwrap()]).success());
    assert!(
        res["00081199"]["Value"]
            .as_array()
            .is_some_and(|v| v.len() == 1),
        "{res}"
    );
    assert!(res.get("00081198").is_none(), "{res}");
    // A data set made in memory goes without the preamble and DICM.
    let res = json_of(&web(&server, "up", PW_UP, &["stow-new", "--patient-id", "MEM1"]).success());
    assert!(res.get("00081198").is_none(), "{res}");
    qido_study_of(&server, "PatientID=MEM1");
    let dose_study = qido_study_of(&server, "PatientID=8NM1");
    let find = python(&[
        "find",
        "--port",
        &server.port(),
        "--aet",
        "STORESCU",
        "--level",
        "STUDY",
        "-k",
        &format!("StudyInstanceUID={dose_study}"),
    ]);
    // STORESCU has no find right: the query is refused, proving the policy holds for peers.
    assert!(!find.stdout().contains(&dose_study));

    // STOW to /studies/{other}: the instance belongs elsewhere -> failed, 409.
    let wrong = json_of(
        &web(
            &server,
            "up",
            PW_UP,
            &[
                "raw-stow",
                "--study",
                "1.2.3.4",
                pydicom_test_files().join("CT_small.dcm").to_str().unwrap(),
            ],
        )
        .success(),
    );
    assert_eq!(wrong["status"], 409, "{wrong}");
    assert_eq!(
        wrong["body"]["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA900
    );

    // Not DICOM at all: failed with C000, nothing stored.
    let junk = data.path.join("junk.dcm");
    std::fs::write(&junk, b"this is not a DICOM file at all").unwrap();
    let bad = json_of(&web(&server, "up", PW_UP, &["raw-stow", junk.to_str().unwrap()]).success());
    assert_eq!(bad["status"], 409);
    assert_eq!(
        bad["body"]["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );

    // A Part 10 file without its preamble (it starts at DICM) is stored
    // with an empty one, and parsed as the length check reads it.
    let sc = std::fs::read(pydicom_test_files().join("SC_rgb_small_odd.dcm")).unwrap();
    let bare = data.path.join("bare.dcm");
    std::fs::write(&bare, &sc[128..]).unwrap();
    let r = json_of(&web(&server, "up", PW_UP, &["raw-stow", bare.to_str().unwrap()]).success());
    assert_eq!(r["status"], 200, "{r}");
    let study = qido_study_of(&server, "PatientID=ID1");
    let got = wado_study_parts(&server, "rad", PW_RAD, &study, &data.path.join("bare-got"));
    let mut stored = vec![0u8; 128];
    stored.extend_from_slice(&sc[128..]);
    assert_eq!(got["parts"][0]["len"], stored.len(), "{got}");
    assert_eq!(
        got["parts"][0]["sha256"],
        sha256_hex(&stored),
        "stored as sent, with an empty preamble"
    );
}

fn qido_study_of(server: &Server, filter: &str) -> String {
    let found = json_of(
        &web(
            server,
            "rad",
            PW_RAD,
            &["search", "--level", "studies", "-k", filter],
        )
        .success(),
    );
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{filter}: {found}");
    found[0]["0020000D"]["Value"][0]
        .as_str()
        .unwrap()
        .to_string()
}

/// WADO-RS over HTTP/2 as a viewer uses it — curl fetching one study three
/// times at once, multiplexed on one connection — returns every data set
/// stored, byte for byte. HTTP/2 bodies are cut to TLS records (custos-web
/// `records`) and the connection's frames written in batches (custos-tls
/// `write_behind`): a lost, reordered or held-back batch shows here (curl
/// gives up after 20 s).
#[test]
fn wado_rs_over_http2_returns_the_stored_bytes() {
    let (data, server) = setup("web-h2", false);
    let study = "1.2.826.0.1.3680043.8.498.4242";
    let specs: Vec<String> = (1..=6)
        .map(|i| {
            format!(
                r#"{{"StudyInstanceUID": "{study}", "SeriesInstanceUID": "{study}.1", "InstanceNumber": {i}, "_pixel_bytes": 602112}}"#
            )
        })
        .collect();
    let src = data.path.with_extension("src");
    let (files, _) = make_and_store(&server, &src, "STORESCU", &specs);
    let mut expected: Vec<String> = files
        .iter()
        .map(|f| sha256_hex(dataset_of(&std::fs::read(f).unwrap())))
        .collect();
    expected.sort();

    let out = data.path.with_extension("h2");
    std::fs::create_dir_all(&out).unwrap();
    let url = format!(
        "https://localhost:{}/dicom-web/studies/{study}",
        server.http.port()
    );
    let bodies: Vec<PathBuf> = (0..3).map(|i| out.join(format!("body{i}"))).collect();
    let auth = format!("rad:{PW_RAD}");
    let mut args = vec![
        "--http2",
        "--parallel",
        "--max-time",
        "20",
        "-sS",
        "--cacert",
        server.ca.to_str().unwrap(),
        "-u",
        &auth,
        "-H",
        r#"Accept: multipart/related; type="application/dicom""#,
        "-w",
        "%{http_version} %{http_code}\n",
    ];
    let mut base = args.clone();
    base.retain(|a| *a != "--parallel");
    for body in &bodies {
        args.extend(["-o", body.to_str().unwrap(), &url]);
    }
    let run = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("run curl");
    let run = Run(run).success();
    assert_eq!(run.stdout(), "2 200\n".repeat(3), "{}", run.stderr());

    for body in &bodies {
        let body = std::fs::read(body).unwrap();
        let mut got: Vec<String> = multipart_parts(&body)
            .iter()
            .map(|part| sha256_hex(dataset_of(part)))
            .collect();
        got.sort();
        assert_eq!(got, expected);
    }

    // A stop while a slow client is halfway through: the server finishes
    // the response it is sending (its streams are polled by the connection's
    // task until the connection ends), then stops.
    let slow = out.join("slow");
    let slow_args = [
        &base[..],
        &["--limit-rate", "1M", "-o", slow.to_str().unwrap(), &url],
    ]
    .concat();
    let curl = std::process::Command::new("curl")
        .args(&slow_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run curl");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(server.stop(), "stopped cleanly");
    let run = Run(curl.wait_with_output().unwrap()).success();
    assert_eq!(run.stdout(), "2 200\n", "{}", run.stderr());
    let body = std::fs::read(&slow).unwrap();
    let mut got: Vec<String> = multipart_parts(&body)
        .iter()
        .map(|part| sha256_hex(dataset_of(part)))
        .collect();
    got.sort();
    assert_eq!(got, expected, "the response under way when the stop came");
}

/// The contents of a multipart body's parts, the boundary read from its
/// first line.
fn multipart_parts(body: &[u8]) -> Vec<&[u8]> {
    let first = body
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("a first line");
    let delimiter = [b"\r\n", &body[..first]].concat();
    let mut parts = Vec::new();
    let mut at = first;
    while !body[at..].starts_with(b"--") {
        let head_end = at + find(&body[at..], b"\r\n\r\n").expect("part headers") + 4;
        let end = head_end + find(&body[head_end..], &delimiter).expect("a closing delimiter");
        parts.push(&body[head_end..end]);
        at = end + delimiter.len();
    }
    parts
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A study's metadata is one array with every instance. When a file cannot
/// be read, a response of ordinary size gets an error status; one past the
/// first MiB, which is sent as it is encoded, is cut off. Never a complete
/// array with an instance missing.
#[test]
fn study_metadata_lists_every_instance_or_fails() {
    let (data, server) = setup("web-metadata", false);
    let small = "1.2.826.0.1.3680043.8.498.77001";
    let large = "1.2.826.0.1.3680043.8.498.77002";
    let spec = |study: &str, n: u32, extra: &str| {
        format!(
            r#"{{"StudyInstanceUID": "{study}", "SeriesInstanceUID": "{study}.1", "InstanceNumber": {n}, "PatientID": "META1"{extra}}}"#
        )
    };
    // The large study's first instance has 1.1 MB of text (in its metadata),
    // more than a pack takes: its own file. The others are packed; the
    // second's 200 kB fill more than one of the pieces the rest goes in.
    let specs = vec![
        spec(small, 1, ""),
        spec(small, 2, ""),
        spec(small, 3, ""),
        spec(large, 1, r#", "_text_bytes": 1100000"#),
        spec(large, 2, r#", "_text_bytes": 200000"#),
        spec(large, 3, ""),
    ];
    let (_, uids) = make_and_store(&server, &data.path.join("made"), "STORESCU", &specs);
    let get = |study: &str| {
        web_requests(
            &server,
            serde_json::json!([{ "method": "GET", "path": format!("/dicom-web/studies/{study}/metadata"),
                "auth": { "basic": ["rad", PW_RAD] }, "body_limit": 3_000_000 }]),
        )
        .remove(0)
    };
    for (study, stored) in [(small, &uids[..3]), (large, &uids[3..])] {
        let whole = get(study);
        assert_eq!(whole["status"], 200, "{whole}");
        let array: serde_json::Value =
            serde_json::from_str(whole["body"].as_str().unwrap()).unwrap();
        let mut listed: Vec<&str> = array
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["00080018"]["Value"][0].as_str().unwrap())
            .collect();
        listed.sort();
        let mut stored = stored.to_vec();
        stored.sort();
        assert_eq!(listed, stored);
    }

    // The packed instances were appended to one segment in the order
    // stored; cut after the first, the others cannot be read.
    let records = pack_records(&data.path.join("blobs"));
    assert_eq!(records.len(), 5, "one record per packed instance");
    let pack = std::fs::OpenOptions::new()
        .write(true)
        .open(&records[0].path)
        .unwrap();
    pack.set_len((records[0].data_at + records[0].len) as u64)
        .unwrap();
    drop(pack);
    let failed = get(small);
    assert_eq!(failed["status"], 500, "{failed}");
    // The status and the first MiB went out; then the connection was cut.
    let cut = get(large);
    assert_eq!(cut["error"], "ChunkedEncodingError", "{cut}");
    let one = web_requests(
        &server,
        serde_json::json!([{ "method": "GET",
            "path": format!("/dicom-web/studies/{large}/series/{large}.1/instances/{}/metadata", uids[3]),
            "auth": { "basic": ["rad", PW_RAD] }, "body_limit": 10 }]),
    );
    assert_eq!(one[0]["status"], 200, "the server still answers: {one:?}");
}
