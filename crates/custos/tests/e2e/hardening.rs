//! Attacks a registered peer, a user or a stranger could make on a running
//! server (issue 11), each on loopback: PDUs that declare more than we accept,
//! password guessing over DICOM user identities and over HTTP (one lockout for
//! both front doors), a burst of concurrent guesses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use dicom_ul::ClientAssociationOptions;

const PW: &str = "night shift reader 5";

/// Peak resident memory of a process, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Fails if the process's peak resident memory grew 128 MiB or more past
/// `before` (KiB).
fn assert_peak_grew_less_than_128_mib(pid: u32, before: u64) {
    let after = peak_rss_kib(pid);
    eprintln!("peak RSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + 128 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

/// Writes `header`, then up to `total` bytes of zeros; returns how many bytes
/// went out before the server closed the connection.
fn stream_after(stream: &mut TcpStream, header: &[u8], total: usize) -> usize {
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if stream.write_all(header).is_err() {
        return 0;
    }
    let chunk = vec![0u8; 1 << 20];
    let mut sent = 0;
    while sent < total {
        match stream.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => sent += n,
        }
    }
    sent
}

/// An A-ASSOCIATE-RQ head from `calling` to CUSTOS declaring `length`.
fn associate_rq_head(calling: &str, length: u32) -> Vec<u8> {
    let mut h = vec![0x01, 0x00];
    h.extend_from_slice(&length.to_be_bytes());
    h.extend_from_slice(&[0x00, 0x01, 0x00, 0x00]);
    h.extend_from_slice(format!("{:<16}", "CUSTOS").as_bytes());
    h.extend_from_slice(format!("{calling:<16}").as_bytes());
    h.extend_from_slice(&[0u8; 32]);
    h
}

#[test]
fn pdus_longer_than_we_accept_are_refused_before_they_are_read() {
    const SENT: usize = 600 << 20;
    let data = DataDir::new("hard-pdu");
    data.add_peer("PEER", "127.0.0.1", 104, "echo,store");
    let server = Server::process(&data);
    assert!(echo(&server, "PEER", "CUSTOS").ok());
    let pid = server.pid();
    let before = peak_rss_kib(pid);

    // A registered AE title (not a secret) declaring a 4 GiB association request.
    let mut s = TcpStream::connect(server.addr).unwrap();
    let started = Instant::now();
    let sent = stream_after(&mut s, &associate_rq_head("PEER", 0xFFFF_FFF0), SENT);
    let mut reply = [0u8; 10];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = s.read(&mut reply).unwrap_or(0);
    assert!(
        sent < SENT,
        "the server read all {sent} bytes of an impossible request"
    );
    // An A-ASSOCIATE-RJ (or a closed connection), quickly.
    assert!(n == 0 || reply[0] == 0x03, "{:?}", &reply[..n]);
    assert!(started.elapsed() < Duration::from_secs(20));
    let after_rq = peak_rss_kib(pid);

    // After association: a P-DATA-TF declaring 4 GiB.
    let mut assoc = ClientAssociationOptions::new()
        .calling_ae_title("PEER")
        .called_ae_title("CUSTOS")
        .with_presentation_context("1.2.840.10008.1.1", vec!["1.2.840.10008.1.2"])
        .establish(server.addr)
        .expect("associate");
    let mut pdata = vec![0x04, 0x00];
    pdata.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    let sent = stream_after(assoc.inner_stream(), &pdata, SENT);
    assert!(
        sent < SENT,
        "the server read all {sent} bytes of an impossible P-DATA"
    );
    let after_pdata = peak_rss_kib(pid);
    eprintln!(
        "peak RSS: {before} KiB at start, {after_rq} KiB after a 4 GiB A-ASSOCIATE-RQ, {after_pdata} KiB after a 4 GiB P-DATA-TF"
    );
    // Slack for allocator noise, far below the hundreds of MiB a buffered PDU costs.
    assert!(
        after_pdata < before + 48 * 1024,
        "peak RSS grew from {before} KiB to {after_pdata} KiB"
    );
    assert!(
        echo(&server, "PEER", "CUSTOS").ok(),
        "the server keeps serving"
    );
    let log = server.log_text();
    assert!(
        log.contains("association request longer than the limit"),
        "{log}"
    );
}

fn pynetdicom_echo(server: &Server, user: &str, password: &str) -> serde_json::Value {
    let port = server.port();
    json_of(&python(&[
        "contexts",
        "--port",
        port.as_str(),
        "--aet",
        "WS01",
        "--user",
        user,
        "--password",
        password,
    ]))
}

#[test]
fn guessing_a_passcode_over_dicom_locks_the_user_out_of_both_front_doors() {
    let data = DataDir::new("hard-guess");
    data.add_peer("WS01", "127.0.0.1", 104, "echo,find");
    add_user(&data, "rad", "radiologist", PW);
    let server = Server::start_with(
        &data,
        &[
            ("CUSTOS_HTTP_LOCKOUT_AFTER", "4"),
            ("CUSTOS_HTTP_LOCKOUT_SECS", "600"),
        ],
    );
    // The right passcode works at first.
    assert_eq!(pynetdicom_echo(&server, "rad", PW)["accepted"], true);
    for i in 0..4 {
        let r = pynetdicom_echo(&server, "rad", &format!("guess number {i}"));
        assert_eq!(r["accepted"], false, "{r}");
    }
    // Now the right passcode is refused too, over DICOM and over HTTP.
    assert_eq!(
        pynetdicom_echo(&server, "rad", PW)["accepted"],
        false,
        "a locked-out user must not associate"
    );
    let r = web_requests(
        &server,
        serde_json::json!([{
            "method": "GET", "path": "/dicom-web/studies",
            "auth": { "basic": ["rad", PW] },
        }]),
    );
    assert_eq!(r[0]["status"], 429, "{}", r[0]);
    // The trail names the user each refused identity claimed; repeats within
    // a minute are one record with a count (written when the server stops).
    assert!(server.stop());
    let records = data.audit_export();
    let attempts: u64 = records
        .iter()
        .filter(|r| r["record"]["user"] == "rad")
        .filter_map(|r| r["record"]["detail"].as_str())
        .filter(|d| d.contains("user identity did not prove"))
        .map(|d| match repeats(d) {
            0 => 1, // one attempt
            n => n, // a summary counts the ones after the first
        })
        .sum();
    assert_eq!(
        attempts, 5,
        "four wrong passcodes, then the right one during the lockout: {records:?}"
    );
    assert!(
        records.iter().any(|r| r["record"]["user"] == "rad"
            && r["record"]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("lockout"))),
        "the refusal during the lockout is recorded: {records:?}"
    );
}

/// N in a coalesced record's "(repeated N more times within S s)", else 0.
fn repeats(detail: &str) -> u64 {
    detail
        .split("(repeated ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn concurrent_password_guesses_are_counted_before_they_are_verified() {
    let data = DataDir::new("hard-burst");
    add_user(&data, "rad", "radiologist", PW);
    add_user(&data, "other", "radiologist", "a second reader on shift 2");
    let token = create_token(&data, "other", "1d", false);
    let server = Server::start(&data);
    let started = Instant::now();
    let run = web(
        &server,
        "",
        "",
        &[
            "--token",
            &token,
            "burst",
            "--path",
            "/dicom-web/studies",
            "--count",
            "200",
            "--burst-user",
            "rad",
            "--burst-password",
            "wrong guess for rad",
        ],
    );
    let result = json_of(&run);
    eprintln!("200 concurrent guesses: {result} ({:?})", started.elapsed());
    let burst = &result["burst"];
    let unauthorized = burst["401"].as_u64().unwrap_or(0);
    let refused = burst["429"].as_u64().unwrap_or(0);
    // With the default allowance of 10 failures, at most 10 guesses reach
    // argon2; the rest are refused without a check.
    assert!(unauthorized <= 10, "{result}");
    assert_eq!(unauthorized + refused, 200, "{result}");
    // Another user's requests are answered meanwhile.
    let others = result["others"].as_array().unwrap();
    assert!(!others.is_empty(), "{result}");
    assert!(others.iter().all(|o| o["status"] == 200), "{result}");
    // The trail is not flooded: repeats are one record with their count
    // (written when the window ends, or at shutdown).
    assert!(server.stop());
    let records = data.audit_export();
    let failures: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["record"]["user"] == "rad" && r["record"]["outcome"] != 0)
        .collect();
    assert!(
        (2..=4).contains(&failures.len()),
        "{} failure records: {failures:?}",
        failures.len()
    );
    assert!(
        failures.iter().any(|r| r["record"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("more times within"))),
        "{failures:?}"
    );
}

#[test]
fn the_first_admin_password_goes_to_a_private_file_not_to_the_journal() {
    let data = DataDir::new("hard-admin");
    // DataDir::new ran `custos init` with stdout on a pipe, as under systemd:
    // initialise another folder the same way and look at what it printed.
    let fresh = data.path.join("fresh");
    let out = std::process::Command::new(BIN)
        .args(["init", "--data"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let file = fresh.join("initial-admin-password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(password.len() >= 12, "{password}");
    assert!(!printed.contains(&password), "{printed}");
    assert!(printed.contains("initial-admin-password"), "{printed}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The password in the file is the admin's.
    let fresh_dir = DataDir { path: fresh };
    let server = Server::start(&fresh_dir);
    let r = web_requests(
        &server,
        serde_json::json!([{
            "method": "GET", "path": "/api/statistics",
            "auth": { "basic": ["admin", password] },
        }]),
    );
    assert_eq!(r[0]["status"], 200, "{}", r[0]);
}

const RAD_PW: &str = "reading room 4 lights";

/// A 512 x 512 16-bit instance (one frame of data) whose header claims
/// `frames` frames; returns (study, series, instance).
fn impossible_instance(data: &DataDir, frames: &str) -> (String, String, String) {
    impossible_instance_claiming(data, frames, "")
}

/// [`impossible_instance`], its Pixel Data declaring `pixel_len` bytes
/// (when not empty) where 512 KiB follow.
fn impossible_instance_claiming(
    data: &DataDir,
    frames: &str,
    pixel_len: &str,
) -> (String, String, String) {
    let path = data.path.join("impossible.dcm");
    let made = std::process::Command::new("python3")
        .args([
            "-c",
            r#"
import sys
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
sc = "1.2.840.10008.5.1.4.1.1.7.2"
meta = FileMetaDataset()
meta.MediaStorageSOPClassUID = sc
meta.MediaStorageSOPInstanceUID = generate_uid()
meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset()
ds.file_meta = meta
ds.SOPClassUID = sc
ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
ds.StudyInstanceUID = generate_uid()
ds.SeriesInstanceUID = generate_uid()
ds.PatientID = "HARD1"
ds.Modality = "OT"
ds.Rows = ds.Columns = 512
ds.SamplesPerPixel = 1
ds.PhotometricInterpretation = "MONOCHROME2"
ds.BitsAllocated = ds.BitsStored = 16
ds.HighBit = 15
ds.PixelRepresentation = 0
ds.NumberOfFrames = sys.argv[2]
ds.PixelData = bytes(512 * 512 * 2)
ds.save_as(sys.argv[1], enforce_file_format=True)
if sys.argv[3]:
    b = open(sys.argv[1], "rb").read()
    at = b.rindex(b"\xe0\x7f\x10\x00OW\x00\x00") + 8
    b = b[:at] + int(sys.argv[3]).to_bytes(4, "little") + b[at + 4:]
    open(sys.argv[1], "wb").write(b)
print(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
"#,
            path.to_str().unwrap(),
            frames,
            pixel_len,
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let ids = String::from_utf8_lossy(&made.stdout).to_string();
    let mut ids = ids.split_whitespace().map(str::to_string);
    data.cli(&["import", path.to_str().unwrap()]).success();
    (
        ids.next().unwrap(),
        ids.next().unwrap(),
        ids.next().unwrap(),
    )
}

#[test]
fn frame_requests_and_headers_cannot_make_the_server_allocate_without_bound() {
    let data = DataDir::new("hard-frames");
    add_user(&data, "rad", "radiologist", RAD_PW);
    let (study, series, sop) = impossible_instance(&data, "2147483647");
    let server = Server::process(&data);
    let pid = server.pid();
    let base = format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}");
    let get = |path: &str, accept: &str| {
        json_of(&web(
            &server,
            "rad",
            RAD_PW,
            &[
                "raw-get",
                "--path",
                path,
                "--accept",
                accept,
                "--out",
                data.path.join("part").to_str().unwrap(),
            ],
        ))
    };
    let octets = "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";
    let before = peak_rss_kib(pid);
    // Pixel data as bulk data: the frames the data holds (one), not two billion.
    let bulk = get(&format!("{base}/bulkdata/7FE00010"), octets);
    assert_eq!(bulk["status"], 200, "{bulk}");
    assert_eq!(bulk["parts"].as_array().unwrap().len(), 1, "{bulk}");
    assert_eq!(bulk["parts"][0]["len"], 512 * 512 * 2, "{bulk}");
    // Frame 1 asked for 4,000 times is sent once; a frame past the data is 404.
    let many = vec!["1"; 4000].join(",");
    let frames = get(&format!("{base}/frames/{many}"), octets);
    assert_eq!(frames["status"], 200, "{frames}");
    assert_eq!(frames["parts"].as_array().unwrap().len(), 1, "{frames}");
    let missing = get(&format!("{base}/frames/2"), octets);
    assert_eq!(missing["status"], 404, "{missing}");
    assert_peak_grew_less_than_128_mib(pid, before);
    // The server still answers.
    let r = web_requests(
        &server,
        serde_json::json!([{
            "method": "GET", "path": format!("{base}/rendered"),
            "auth": { "basic": ["rad", RAD_PW] },
        }]),
    );
    assert_eq!(r[0]["status"], 200, "{}", r[0]);
}

#[test]
fn pixel_data_claiming_more_than_is_stored_is_not_allocated_when_viewed() {
    // Ingest reads a data set up to its Pixel Data, so an instance whose
    // Pixel Data declares 4 GB where 512 KiB follow is stored; a whole parse
    // of it (frames, rendering, conversion) once zero-filled the 4 GB.
    let data = DataDir::new("hard-pixel-len");
    add_user(&data, "rad", "radiologist", RAD_PW);
    let (study, series, sop) = impossible_instance_claiming(&data, "1", "4294967280");
    let server = Server::process(&data);
    let pid = server.pid();
    let base = format!("/dicom-web/studies/{study}/series/{series}/instances/{sop}");
    let before = peak_rss_kib(pid);
    let r = web_requests(
        &server,
        serde_json::json!([
            { "method": "GET", "path": format!("{base}/frames/1"),
              "headers": { "Accept": "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*" },
              "auth": { "basic": ["rad", RAD_PW] } },
            { "method": "GET", "path": format!("{base}/rendered"),
              "auth": { "basic": ["rad", RAD_PW] } },
            { "method": "GET", "path": format!("/dicom-web/studies/{study}"),
              "headers": { "Accept": "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2" },
              "auth": { "basic": ["rad", RAD_PW] } },
        ]),
    );
    // Each refused (or, after its status, cut off), none with 4 GB of zeros.
    for answer in &r {
        match answer["status"].as_u64() {
            Some(status) => assert!(status >= 400, "{answer}"),
            None => assert!(answer["error"].is_string(), "{answer}"),
        }
    }
    assert_peak_grew_less_than_128_mib(pid, before);
    // Its metadata (read up to Pixel Data) is still served.
    let r = web_requests(
        &server,
        serde_json::json!([{
            "method": "GET", "path": format!("{base}/metadata"),
            "auth": { "basic": ["rad", RAD_PW] },
        }]),
    );
    assert_eq!(r[0]["status"], 200, "{}", r[0]);
}

#[test]
fn a_stow_request_holds_a_bounded_number_of_parts() {
    let data = DataDir::new("hard-stow");
    add_user(&data, "up", "uploader", "scanner uploads only 9");
    let server = Server::start_with(&data, &[("CUSTOS_HTTP_MAX_STOW_PARTS", "50")]);
    let part = "--b\r\nContent-Type: application/dicom\r\n\r\n\r\n";
    let body = format!("{}--b--\r\n", part.repeat(60));
    let ok_body = format!("{}--b--\r\n", part.repeat(3));
    let request = |body: &str| {
        serde_json::json!({
            "method": "POST", "path": "/dicom-web/studies",
            "auth": { "basic": ["up", "scanner uploads only 9"] },
            "headers": {
                "Content-Type": "multipart/related; type=\"application/dicom\"; boundary=b",
                "Accept": "application/dicom+json",
            },
            "body": body,
        })
    };
    let r = web_requests(
        &server,
        serde_json::json!([request(&body), request(&ok_body)]),
    );
    assert_eq!(r[0]["status"], 413, "{}", r[0]);
    assert!(
        r[0]["body"].as_str().unwrap().contains("at most 50 parts"),
        "{}",
        r[0]
    );
    // Under the limit, empty parts are failures (409), as before.
    assert_eq!(r[1]["status"], 409, "{}", r[1]);
}

/// Holds `count` idle connections to `port` from 127.0.0.2 (TLS when `tls`)
/// until the returned child is killed; returns it and what it reported.
fn hold_idle(
    server: &Server,
    port: u16,
    count: usize,
    tls: bool,
    recheck: Option<u32>,
) -> (std::process::Child, Vec<serde_json::Value>) {
    use std::io::BufRead;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/web.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .arg("--ca")
        .arg(&server.ca)
        .args([
            "hold",
            "--port",
            &port.to_string(),
            "--count",
            &count.to_string(),
            "--seconds",
            "60",
        ])
        .stdout(std::process::Stdio::piped());
    if tls {
        cmd.arg("--tls");
    }
    if let Some(s) = recheck {
        cmd.args(["--recheck", &s.to_string()]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut reports = Vec::new();
    for _ in 0..(1 + usize::from(recheck.is_some())) {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        reports.push(serde_json::from_str(&line).unwrap_or_else(|_| panic!("hold said: {line}")));
    }
    (child, reports)
}

#[test]
fn one_address_holding_idle_connections_cannot_lock_out_the_others() {
    let data = DataDir::new("hard-slots");
    data.add_peer("CT01", "127.0.0.1", 104, "echo,store");
    add_user(&data, "rad", "radiologist", RAD_PW);
    let server = Server::start_with(
        &data,
        &[
            ("CUSTOS_DICOM_MAX_ASSOCIATIONS", "10"),
            ("CUSTOS_DICOM_MAX_ASSOCIATIONS_PER_ADDRESS", "4"),
            ("CUSTOS_HTTP_MAX_CONNECTIONS", "12"),
            ("CUSTOS_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "6"),
        ],
    );
    // DICOM: 20 silent connections from 127.0.0.2 (twice the association
    // limit); a registered modality still gets its C-ECHO answered promptly.
    let (mut dicom_hold, report) = hold_idle(&server, server.addr.port(), 20, false, None);
    assert_eq!(report[0]["opened"], 20, "{report:?}");
    let started = Instant::now();
    let echoed = echo(&server, "CT01", "CUSTOS");
    let latency = started.elapsed();
    eprintln!("C-ECHO under 20 idle connections from one address: {latency:?}");
    assert!(echoed.ok(), "{}", echoed.stderr());
    assert!(latency < Duration::from_secs(5), "{latency:?}");
    let _ = dicom_hold.kill();
    let _ = dicom_hold.wait();

    // HTTPS: 30 idle TLS connections from 127.0.0.2 (more than the HTTP
    // connection limit); a user's QIDO-RS is still answered.
    let (mut http_hold, report) = hold_idle(&server, server.http.port(), 30, true, None);
    assert!(
        report[0]["open"].as_u64().unwrap() <= 6,
        "one address kept more than its share: {report:?}"
    );
    let r = web_requests(
        &server,
        serde_json::json!([{
            "method": "GET", "path": "/dicom-web/studies",
            "auth": { "basic": ["rad", RAD_PW] },
        }]),
    );
    assert_eq!(r[0]["status"], 200, "{}", r[0]);
    let _ = http_hold.kill();
    let _ = http_hold.wait();
}

#[test]
fn idle_http_connections_are_closed() {
    let data = DataDir::new("hard-idle");
    let server = Server::start_with(&data, &[("CUSTOS_HTTP_IDLE_TIMEOUT_SECS", "2")]);
    // TLS handshakes done, then no request at all: the server hangs up.
    let (mut hold, report) = hold_idle(&server, server.http.port(), 3, true, Some(5));
    assert_eq!(report[0]["open"], 3, "{report:?}");
    assert_eq!(report[1]["open"], 0, "{report:?}");
    let _ = hold.kill();
    let _ = hold.wait();

    // A request whose body never comes is idleness too (only a request read
    // whole and being answered holds the connection open).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    add_user(&data, "uploader1", "uploader", "uploads 42 slowly or never");
    let credentials = basic_auth("uploader1", "uploads 42 slowly or never");
    let head = format!(
        "POST /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\nAuthorization: {credentials}\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
    );
    let port = server.http.port();
    let closed = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut tls = tls_connect(port).await;
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut rest))
            .await
            .is_ok()
    });
    assert!(
        closed,
        "a request whose body stopped coming held its connection"
    );
}

/// An implicit VR little endian element whose header declares `declared` bytes.
fn implicit_element(out: &mut Vec<u8>, group: u16, element: u16, value: &[u8], declared: u32) {
    out.extend(group.to_le_bytes());
    out.extend(element.to_le_bytes());
    out.extend(declared.to_le_bytes());
    out.extend(value);
}

/// The status of the next response on the association, or None if it ended.
fn next_status(assoc: &mut dicom_ul::ClientAssociation<TcpStream>) -> Option<u16> {
    match assoc.receive() {
        Ok(dicom_ul::Pdu::PData { data }) => {
            custos_dimse::command::Command::decode(&data[0].data)
                .unwrap()
                .status
        }
        _ => None,
    }
}

#[test]
fn declared_element_lengths_are_not_allocated_before_the_bytes_arrive() {
    use custos_dimse::command::{Command, field};
    const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
    const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    const HUGE: u32 = 0xFFFF_FFF0;
    let data = DataDir::new("hard-lengths");
    data.add_peer("PEER", "127.0.0.1", 104, "echo,store,find");
    let server = Server::process(&data);
    assert!(echo(&server, "PEER", "CUSTOS").ok());
    let pid = server.pid();
    let before = peak_rss_kib(pid);
    let associate = || {
        ClientAssociationOptions::new()
            .calling_ae_title("PEER")
            .called_ae_title("CUSTOS")
            .with_presentation_context(SC, vec!["1.2.840.10008.1.2"])
            .with_presentation_context(FIND, vec!["1.2.840.10008.1.2"])
            .establish(server.addr)
            .expect("associate")
    };
    let pc_of = |assoc: &dicom_ul::ClientAssociation<TcpStream>, n: usize| {
        assoc.presentation_contexts()[n].id
    };

    // 1. A command set with an element that declares 4 GiB: the association
    //    is aborted (it cannot be understood), nothing is allocated.
    let mut assoc = associate();
    let mut cmd = Vec::new();
    implicit_element(&mut cmd, 0x0000, 0x0100, &0x0030u16.to_le_bytes(), 2);
    implicit_element(&mut cmd, 0x0000, 0x0902, b"x", HUGE);
    let pc = pc_of(&assoc, 0);
    send_message(&mut assoc, pc, cmd, None);
    assert_eq!(next_status(&mut assoc), None, "association ends");

    // 2. A C-FIND identifier that declares 4 GiB for PatientName: refused
    //    with 0xC000, the association stays usable.
    let mut assoc = associate();
    let find = Command {
        field: field::C_FIND_RQ,
        message_id: 1,
        sop_class_uid: FIND.into(),
        has_data_set: true,
        ..Default::default()
    };
    let mut ident = Vec::new();
    implicit_element(&mut ident, 0x0008, 0x0052, b"STUDY ", 6);
    implicit_element(&mut ident, 0x0010, 0x0010, b"A*", HUGE);
    let pc = pc_of(&assoc, 1);
    send_message(&mut assoc, pc, find.encode(), Some(ident));
    assert_eq!(next_status(&mut assoc), Some(0xC000));

    // 3. A C-STORE data set that declares 4 GiB for an element: 0xC000,
    //    nothing stored.
    let store = Command {
        field: field::C_STORE_RQ,
        message_id: 2,
        sop_class_uid: SC.into(),
        sop_instance_uid: "1.2.826.0.1.3680043.10.1.1".into(),
        has_data_set: true,
        ..Default::default()
    };
    let mut set = Vec::new();
    implicit_element(&mut set, 0x0008, 0x0016, b"1.2.840.10008.5.1.4.1.1.7\0", 26);
    implicit_element(
        &mut set,
        0x0008,
        0x0018,
        b"1.2.826.0.1.3680043.10.1.1\0",
        28,
    );
    implicit_element(&mut set, 0x0010, 0x0010, b"DOE^J", HUGE);
    let pc = pc_of(&assoc, 0);
    send_message(&mut assoc, pc, store.encode(), Some(set));
    assert_eq!(next_status(&mut assoc), Some(0xC000));
    let _ = assoc.release();

    let after = peak_rss_kib(pid);
    eprintln!("peak RSS: {before} KiB before, {after} KiB after three 4 GiB element lengths");
    assert!(
        after < before + 48 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    assert_eq!(data.blob_count(), 0);
    assert!(
        echo(&server, "PEER", "CUSTOS").ok(),
        "the server keeps serving"
    );
}

#[test]
fn a_retrieve_naming_a_huge_study_is_read_page_by_page() {
    const N: u32 = 300_000;
    let data = DataDir::new("hard-retrieve");
    data.add_peer("PEER", "127.0.0.1", 104, "echo,move");
    // A destination nothing listens on: every sub-operation fails at once.
    data.add_peer("NOWHERE", "127.0.0.1", free_port(), "echo");
    // One study of 300,000 instances, written straight into the index (their
    // blobs do not exist: only the index side of a retrieve is measured).
    let fill = format!(
        r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("INSERT INTO studies (study_uid, patient_id, patient_name, patient_name_fold, patient_birth_date, patient_sex, study_date, study_time, accession_number, study_id, study_description, referring_physician_name, referring_physician_name_fold) VALUES ('2.25.4242', 'BIG', 'BIG^ONE', 'BIG^ONE', '', '', '20200101', '', '', '', '', '', '')")
c.execute("INSERT INTO series (study_pk, series_uid, modality, series_number, series_description, body_part_examined) VALUES (1, '2.25.4242.1', 'CT', 1, '', '')")
c.execute("WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < {last}) INSERT INTO instances (series_pk, sop_instance_uid, sop_class_uid, instance_number, number_of_frames, transfer_syntax_uid, blob_key, size, sha256) SELECT 1, '2.25.4242.1.' || k, '1.2.840.10008.5.1.4.1.1.2', k, NULL, '1.2.840.10008.1.2.1', 'absent', 0, '{zeros}' FROM n")
c.commit()
"#,
        last = N - 1,
        zeros = "0".repeat(64)
    );
    let ok = std::process::Command::new("python3")
        .args(["-c", &fill])
        .arg(data.path.join("index.sqlite"))
        .status()
        .unwrap();
    assert!(ok.success());
    let server = Server::process(&data);
    assert!(echo(&server, "PEER", "CUSTOS").ok());
    let pid = server.pid();
    let before = peak_rss_kib(pid);
    let started = Instant::now();
    let run = dcmtk(
        "movescu",
        &[
            "-v",
            "-S",
            "-aet",
            "PEER",
            "-aec",
            "CUSTOS",
            "-aem",
            "NOWHERE",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=2.25.4242",
            "127.0.0.1",
            &server.port(),
        ],
    );
    let took = started.elapsed();
    let after = peak_rss_kib(pid);
    let text = format!("{}{}", run.stdout(), run.stderr());
    eprintln!("C-MOVE of {N} instances: {took:?}; peak RSS {before} KiB -> {after} KiB");
    // All counted and failed (the destination is unreachable), in one answer.
    assert!(
        text.contains("Final Move Response (Refused: OutOfResourcesSubOperations)"),
        "{text}"
    );
    // Holding the whole set costs ~100 MiB here; pages of it, a few.
    assert!(
        after < before + 40 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
    assert!(echo(&server, "PEER", "CUSTOS").ok());
}
