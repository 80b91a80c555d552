//! Bad input never takes the server down: garbage, impossible lengths,
//! truncated and stalled connections, malformed DIMSE, invalid data sets, a
//! peer that vanishes mid-store. After each, a C-ECHO still works.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use custos_dimse::command::{Command, field};
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociationOptions, Pdu};

const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
const ELE: &str = "1.2.840.10008.1.2.1";

fn echo_works(server: &Server) -> bool {
    echo(server, "PEER", "CUSTOS").ok()
}

/// Sends bytes and reports how the server ended the connection, within `wait`.
fn send_raw(server: &Server, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(bytes);
    let mut reply = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < wait {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    reply
}

fn start() -> (DataDir, Server) {
    let data = DataDir::new("robust");
    data.add_peer("PEER", "127.0.0.1", 104, "echo,store,find");
    let server = Server::start_with(
        &data,
        &[
            ("CUSTOS_DICOM_ARTIM_TIMEOUT_SECS", "1"),
            ("CUSTOS_DICOM_IDLE_TIMEOUT_SECS", "2"),
        ],
    );
    (data, server)
}

#[test]
fn garbage_and_impossible_lengths() {
    let (_d, server) = start();
    send_raw(
        &server,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    );
    assert!(echo_works(&server));
    // An A-ASSOCIATE-RQ claiming 4 GB.
    send_raw(
        &server,
        &[0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01],
        Duration::from_secs(3),
    );
    assert!(echo_works(&server));
    // A P-DATA before any association.
    send_raw(
        &server,
        &[0x04, 0x00, 0x00, 0x00, 0x00, 0x06, 0, 0, 0, 2, 1, 3],
        Duration::from_secs(3),
    );
    assert!(echo_works(&server));
    // Random bytes.
    let noise: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    send_raw(&server, &noise, Duration::from_secs(3));
    assert!(echo_works(&server));
}

#[test]
fn truncated_and_silent_connections_are_closed() {
    let (_d, server) = start();
    // A request header promising 200 bytes, then silence: ARTIM (1 s) closes it.
    let started = Instant::now();
    let reply = send_raw(
        &server,
        &[0x01, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x00, 0x01, 0x00, 0x00],
        Duration::from_secs(10),
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stalled request was not timed out"
    );
    assert!(
        reply.is_empty() || reply[0] == 0x03 || reply[0] == 0x07,
        "{reply:?}"
    );
    // Connect and say nothing at all.
    let started = Instant::now();
    send_raw(&server, &[], Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(echo_works(&server));
}

fn associate(server: &Server) -> dicom_ul::ClientAssociation<TcpStream> {
    associate_as(server, "PEER")
}

fn associate_as(server: &Server, calling: &str) -> dicom_ul::ClientAssociation<TcpStream> {
    ClientAssociationOptions::new()
        .calling_ae_title(calling)
        .called_ae_title("CUSTOS")
        .with_presentation_context(SC, vec![ELE])
        .establish(server.addr)
        .expect("associate")
}

#[test]
fn malformed_command_aborts_only_that_association() {
    let (_d, server) = start();
    let mut assoc = associate(&server);
    let pc = assoc.presentation_contexts()[0].id;
    let junk = PDataValue {
        presentation_context_id: pc,
        value_type: PDataValueType::Command,
        is_last: true,
        data: vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
    };
    assoc.send(&Pdu::PData { data: vec![junk] }).unwrap();
    let answer = assoc.receive();
    assert!(
        matches!(answer, Ok(Pdu::AbortRQ { .. })) || answer.is_err(),
        "{answer:?}"
    );
    assert!(echo_works(&server));
}

#[test]
fn text_that_cannot_be_echoed_back_as_is_still_gets_an_answer() {
    // An ISO 2022 escape in a UID decodes to CJK text (here "1.2\u{5c71}"),
    // which a response's command set cannot hold: the server's association
    // task once panicked encoding the response, and the peer saw its
    // connection close with no answer.
    let (_d, server) = start();
    let mut assoc = associate(&server);
    let pc = assoc.presentation_contexts()[0].id;
    for (id, uid) in [(5u16, "1.2\x1b$B;3\x1b(B"), (6, "1.2.840.10008.1.1")] {
        let rq = Command {
            field: field::C_ECHO_RQ,
            message_id: id,
            sop_class_uid: uid.into(),
            ..Default::default()
        };
        send_message(&mut assoc, pc, rq.encode(), None);
        let rsp = match assoc.receive() {
            Ok(Pdu::PData { data }) => Command::decode(&data[0].data).unwrap(),
            other => panic!("no answer to C-ECHO {id}: {other:?}"),
        };
        assert_eq!(rsp.field, field::C_ECHO_RSP);
        assert_eq!(rsp.responding_to, Some(id));
        assert_eq!(rsp.status, Some(0x0000));
    }
    assoc.release().unwrap();
    assert!(echo_works(&server));
}

#[test]
fn an_ae_title_padded_with_nuls_is_the_same_peer() {
    // PS3.8 pads AE titles with spaces; some peers pad with NULs. The gate
    // trimmed both, dicom-ul only spaces, and the two readings of the same
    // request then differed: refused as an unknown calling AE.
    let (_d, server) = start();
    associate_as(&server, "PEER\0\0").release().unwrap();
}

#[test]
fn peer_vanishing_mid_store_leaves_nothing() {
    let (data, server) = start();
    let mut assoc = associate(&server);
    let pc = assoc.presentation_contexts()[0].id;
    let cmd = Command {
        field: field::C_STORE_RQ,
        message_id: 1,
        sop_class_uid: SC.into(),
        sop_instance_uid: "1.2.3.4.5".into(),
        has_data_set: true,
        ..Default::default()
    };
    send_message(&mut assoc, pc, cmd.encode(), None);
    let part = PDataValue {
        presentation_context_id: pc,
        value_type: PDataValueType::Data,
        is_last: false,
        data: vec![0x08, 0x00, 0x16, 0x00, b'U', b'I', 26, 0],
    };
    assoc.send(&Pdu::PData { data: vec![part] }).unwrap();
    drop(assoc); // the TCP connection goes away mid data set
    wait_until("staged bytes removed", Duration::from_secs(10), || {
        staged_files(&data.path.join("blobs/.staging")).is_empty()
    });
    assert!(echo_works(&server));
    assert_eq!(data.blob_count(), 0);
}

#[test]
fn idle_association_is_aborted() {
    let (_d, server) = start();
    let mut assoc = associate(&server);
    let started = Instant::now();
    let answer = assoc.receive();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(answer, Ok(Pdu::AbortRQ { .. })) || answer.is_err(),
        "{answer:?}"
    );
    assert!(echo_works(&server));
}

#[test]
fn invalid_data_sets_are_refused_and_not_stored() {
    let (data, server) = start();
    let body = data.path.with_extension("body");
    let work = data.path.with_extension("work.dcm");
    let port = server.port();
    let cases: [(&[u8], u64); 3] = [
        // Not DICOM at all.
        (b"this is not a data set at all, just text....", 0xC000),
        // A well-formed element claiming more bytes than follow.
        (
            &[
                0x08, 0x00, 0x16, 0x00, b'U', b'I', 0xff, 0x7f, b'1', b'.', b'2',
            ],
            0xC000,
        ),
        // Parseable, but without the UIDs an archive needs.
        (
            &[
                0x10, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'D', b'O', b'E', b' ',
            ],
            0xA900,
        ),
    ];
    for (bytes, expected) in cases {
        std::fs::write(&body, bytes).unwrap();
        let out = python(&[
            "store-raw",
            "--port",
            &port,
            "--aet",
            "PEER",
            "--workfile",
            work.to_str().unwrap(),
            body.to_str().unwrap(),
        ])
        .success();
        let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
        assert_eq!(v["status"], expected, "{v}");
        assert_eq!(v["echo_after"], 0, "association still usable: {v}");
    }
    assert_eq!(data.blob_count(), 0);
    assert!(echo_works(&server));
}

#[test]
fn graceful_shutdown() {
    let d = DataDir::new("robust-stop");
    d.add_peer("PEER", "127.0.0.1", 104, "echo");
    let server = Server::process(&d);
    assert!(echo_works(&server));
    assert!(server.stop(), "SIGTERM leads to a clean exit");
}

/// Over TLS (python's ssl, no client certificate): sends `payload` after the
/// handshake, returns (seconds until the server closed, whether the TLS
/// handshake completed).
fn tls_raw(server: &Server, payload: &[u8]) -> (f64, bool) {
    let port = server.tls.expect("TLS listener").port();
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        r#"
import socket, ssl, time, json
ctx = ssl.create_default_context(cafile="{ca}")
ctx.check_hostname = False
t = time.time()
ok = False
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port}), timeout=15))
    ok = True
    s.sendall(bytes.fromhex("{hex}"))
    while s.recv(4096):
        pass
except Exception:
    pass
print(json.dumps({{"seconds": time.time() - t, "handshake": ok}}))
"#,
        ca = server.ca.display()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["seconds"].as_f64().unwrap(), v["handshake"] == true)
}

#[test]
fn bad_input_over_tls_is_closed_and_the_listener_keeps_serving() {
    let (_d, server) = start();
    // A request header promising 200 bytes, then silence; nothing at all;
    // garbage; an A-ASSOCIATE-RQ claiming 4 GB: each closed within the ARTIM
    // time (1 s here) plus slack.
    for payload in [
        &[0x01, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x00, 0x01, 0x00, 0x00][..],
        &[][..],
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01][..],
    ] {
        let (seconds, handshake) = tls_raw(&server, payload);
        assert!(handshake, "TLS handshake for {payload:?}");
        assert!(seconds < 8.0, "{payload:?} held the connection {seconds} s");
    }
    // Plain bytes to the TLS port: no handshake, closed.
    let tls_port = server.tls.unwrap();
    let mut s = TcpStream::connect(tls_port).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let _ = s.write_all(&[0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 0, 1, 0, 0]);
    let mut buf = [0u8; 64];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    assert!(started.elapsed() < Duration::from_secs(8));
    // Anonymous TLS C-ECHO from the registered peer still works.
    let port = tls_port.port().to_string();
    let ok = dcmtk(
        "echoscu",
        &[
            "-aet",
            "PEER",
            "-aec",
            "CUSTOS",
            "+tla",
            "+cf",
            server.ca.to_str().unwrap(),
            "127.0.0.1",
            &port,
        ],
    );
    assert!(ok.ok(), "{}", ok.stderr());
    assert!(echo_works(&server));
}
