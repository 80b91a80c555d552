//! DICOM over TLS: DCMTK and pynetdicom with client certificates from
//! `custos cert issue`; refusals without a certificate, with one from another
//! CA, with TLS 1.1, and of a `--tls required` peer on the plain port.

use std::time::Duration;

use crate::common::*;

struct Issued {
    key: String,
    cert: String,
    fingerprint: String,
}

fn issue(data: &DataDir, name: &str, out: &std::path::Path) -> Issued {
    issue_for(data, name, out, &[])
}

fn issue_for(data: &DataDir, name: &str, out: &std::path::Path, hosts: &[&str]) -> Issued {
    let mut args = vec!["cert", "issue", name, "--out", out.to_str().unwrap()];
    for h in hosts {
        args.extend(["--host", h]);
    }
    let run = data.cli(&args).success();
    let text = run.stdout();
    let fingerprint = text
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .expect("a fingerprint line")
        .to_string();
    Issued {
        key: out.join(format!("{name}.key.pem")).display().to_string(),
        cert: out.join(format!("{name}.cert.pem")).display().to_string(),
        fingerprint,
    }
}

fn tls_echo(server: &Server, aet: &str, tls: &[&str]) -> Run {
    let port = server.tls.unwrap().port().to_string();
    let mut args = vec!["-aet", aet, "-aec", "CUSTOS"];
    args.extend_from_slice(tls);
    args.extend_from_slice(&["127.0.0.1", &port]);
    dcmtk("echoscu", &args)
}

#[test]
fn dicom_tls_with_issued_certificates_and_every_refusal() {
    let data = DataDir::new("dicom-tls");
    let certs = data.path.join("certs");
    let ct = issue(&data, "CT01", &certs);
    let ws = issue(&data, "WS01", &certs);
    assert!(ct.fingerprint.starts_with("SHA256:") && ct.fingerprint.len() == 71);
    let key_mode = std::fs::metadata(&ct.key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(key_mode.permissions().mode() & 0o777, 0o600);
    }
    data.cli(&[
        "peer",
        "add",
        "CT01",
        "--host",
        "127.0.0.1",
        "--port",
        "104",
        "--allow",
        "echo,store",
        "--tls",
        "required",
        "--cert-fingerprint",
        &ct.fingerprint,
    ])
    .success();
    data.add_peer("WS01", "127.0.0.1", 104, "echo,find");
    data.cli(&[
        "peer",
        "add",
        "WSTLS",
        "--host",
        "127.0.0.1",
        "--allow",
        "echo,find",
        "--tls",
        "required",
    ])
    .success();
    let listed = data.cli(&["peer", "list"]).success().stdout();
    assert!(listed.contains(&ct.fingerprint), "{listed}");

    // Another CA, whose certificate must fail the handshake.
    let other = DataDir::new("dicom-tls-other");
    let foreign = issue(&other, "CT01", &other.path.join("certs"));

    let server = Server::start(&data);
    let ca = server.ca.to_str().unwrap().to_string();

    // DCMTK with the right certificate: C-ECHO and C-STORE over TLS.
    let ok = tls_echo(&server, "CT01", &["+tls", &ct.key, &ct.cert, "+cf", &ca]);
    assert!(ok.ok(), "{}", ok.stderr());
    let file = pydicom_test_files().join("CT_small.dcm");
    let port = server.tls.unwrap().port().to_string();
    let store = dcmtk(
        "storescu",
        &[
            "-aet",
            "CT01",
            "-aec",
            "CUSTOS",
            "+tls",
            &ct.key,
            &ct.cert,
            "+cf",
            &ca,
            "127.0.0.1",
            &port,
            file.to_str().unwrap(),
        ],
    );
    assert!(store.ok(), "{}", store.stderr());
    // findscu over TLS for a peer that requires TLS: a certificate of our CA
    // issued to its AE title...
    let wstls = issue(&data, "WSTLS", &certs);
    let find_as = |cert: &Issued| {
        dcmtk(
            "findscu",
            &[
                "-aet",
                "WSTLS",
                "-aec",
                "CUSTOS",
                "+tls",
                &cert.key,
                &cert.cert,
                "+cf",
                &ca,
                "-S",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                "PatientID=1CT1",
                "-k",
                "StudyInstanceUID",
                "127.0.0.1",
                &port,
            ],
        )
    };
    let find = find_as(&wstls);
    assert!(find.ok(), "{}", find.stderr());
    assert!(format!("{}{}", find.stdout(), find.stderr()).contains(CT_STUDY));
    // ...and not another AE's certificate from the same CA (WS01's key cannot
    // associate as WSTLS).
    let borrowed = find_as(&ws);
    assert!(
        !borrowed.ok(),
        "a certificate issued to another AE title must be refused"
    );
    assert!(
        server
            .log_text()
            .contains("client certificate is issued to another name than the calling AE title"),
        "{}",
        server.log_text()
    );

    // Refusals: no client certificate; another CA's certificate; a certificate
    // of our CA that is not the pinned one; the plain port for a TLS-only peer.
    let anonymous = tls_echo(&server, "CT01", &["+tla", "+cf", &ca]);
    assert!(!anonymous.ok(), "no certificate must be refused");
    let foreign_run = tls_echo(
        &server,
        "CT01",
        &["+tls", &foreign.key, &foreign.cert, "+cf", &ca],
    );
    assert!(
        !foreign_run.ok(),
        "another CA's certificate must be refused"
    );
    let wrong_pin = tls_echo(&server, "CT01", &["+tls", &ws.key, &ws.cert, "+cf", &ca]);
    assert!(
        !wrong_pin.ok(),
        "a certificate other than the pinned one must be refused"
    );
    let plain = echo(&server, "CT01", "CUSTOS");
    assert!(
        !plain.ok(),
        "a --tls required peer is refused on the plain port"
    );

    // A peer pinned by certificate subject instead of fingerprint (so that a
    // renewed certificate keeps working): its own certificate is accepted, a
    // certificate of the same CA with another subject is not.
    let mr = issue(&data, "MR01", &certs);
    data.cli(&[
        "peer",
        "add",
        "MR01",
        "--host",
        "127.0.0.1",
        "--allow",
        "echo",
        "--cert-subject",
        "cn=MR01",
    ])
    .success();
    let listed = data.cli(&["peer", "list"]).success().stdout();
    assert!(listed.contains("subject CN=MR01"), "{listed}");
    let by_subject = tls_echo(&server, "MR01", &["+tls", &mr.key, &mr.cert, "+cf", &ca]);
    assert!(by_subject.ok(), "{}", by_subject.stderr());
    let other_subject = tls_echo(&server, "MR01", &["+tls", &ws.key, &ws.cert, "+cf", &ca]);
    assert!(
        !other_subject.ok(),
        "a certificate with another subject must be refused"
    );
    assert!(
        !echo(&server, "MR01", "CUSTOS").ok(),
        "a subject-pinned peer is refused on the plain port"
    );

    // A peer with its own CA bundle (a vendor's CA), registered while the
    // server runs: that CA's certificates are then accepted in the handshake,
    // but only for that peer, not for another TLS peer of ours.
    data.cli(&[
        "peer",
        "add",
        "VENDOR",
        "--host",
        "127.0.0.1",
        "--allow",
        "echo",
        "--ca-file",
        other.path.join("tls/ca.pem").to_str().unwrap(),
    ])
    .success();
    let vendor_echo = || {
        tls_echo(
            &server,
            "VENDOR",
            &["+tls", &foreign.key, &foreign.cert, "+cf", &ca],
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut vendor = vendor_echo();
    while !vendor.ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        vendor = vendor_echo();
    }
    assert!(vendor.ok(), "{}", vendor.stderr());
    let borrowed = tls_echo(
        &server,
        "WSTLS",
        &["+tls", &foreign.key, &foreign.cert, "+cf", &ca],
    );
    assert!(
        !borrowed.ok(),
        "a vendor CA's certificate must not act as another peer"
    );
    let third = DataDir::new("dicom-tls-third");
    let stranger = issue(&third, "VENDOR", &third.path.join("certs"));
    let stranger_run = tls_echo(
        &server,
        "VENDOR",
        &["+tls", &stranger.key, &stranger.cert, "+cf", &ca],
    );
    assert!(
        !stranger_run.ok(),
        "a CA trusted by no peer still fails the handshake"
    );
    let listed = data.cli(&["peer", "list"]).success().stdout();
    assert!(listed.contains("own CA bundle"), "{listed}");
    assert!(server.log_text().contains("DICOM TLS client CAs reloaded"));

    // The same through the admin API: a peer registered with `ca_pem` accepts
    // that CA's certificate (without it, the same certificate is refused, as
    // WSTLS showed); a bundle that is not PEM certificates is a 422.
    const PW_BOSS: &str = "imaging chief on call 8";
    add_user(&data, "boss", "admin", PW_BOSS);
    let vendor_pem = std::fs::read_to_string(other.path.join("tls/ca.pem")).unwrap();
    let peer = |ae: &str, pem: &str| {
        serde_json::json!({
            "method": "POST",
            "path": "/api/peers",
            "auth": { "basic": ["boss", PW_BOSS] },
            "headers": { "Content-Type": "application/json" },
            "body": serde_json::json!({
                "ae_title": ae, "host": "127.0.0.1", "port": 104,
                "allow": ["echo"], "ca_pem": pem,
            }).to_string(),
        })
    };
    let r = web_requests(
        &server,
        serde_json::json!([
            peer("APIVENDOR", &vendor_pem),
            peer(
                "BADPEM",
                "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"
            ),
            { "method": "GET", "path": "/api/peers", "auth": { "basic": ["boss", PW_BOSS] } },
        ]),
    );
    assert_eq!(r[0]["status"], 204, "{}", r[0]);
    assert_eq!(r[1]["status"], 422, "{}", r[1]);
    let listed: serde_json::Value = serde_json::from_str(r[2]["body"].as_str().unwrap()).unwrap();
    let api_vendor = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ae_title"] == "APIVENDOR")
        .cloned()
        .unwrap();
    assert_eq!(api_vendor["ca_bundle"], true, "{api_vendor}");
    assert_eq!(api_vendor["tls_required"], true, "{api_vendor}");
    let by_api = tls_echo(
        &server,
        "APIVENDOR",
        &["+tls", &foreign.key, &foreign.cert, "+cf", &ca],
    );
    assert!(by_api.ok(), "{}", by_api.stderr());
    assert!(
        echo(&server, "WS01", "CUSTOS").ok(),
        "peers without the requirement still use the plain port"
    );
    let log = server.log_text();
    assert!(log.contains("peer must connect over TLS"), "{log}");
    assert!(log.contains("client certificate is not the one registered"));
    assert!(log.contains("DICOM TLS connection refused"));

    // pynetdicom with an ssl.SSLContext: with the certificate, without, TLS 1.1.
    let py = |extra: &[&str]| {
        let mut args = vec!["echo", "--port", &port, "--aet", "CT01", "--tls-ca", &ca];
        args.extend_from_slice(extra);
        json_of(&python(&args))
    };
    assert_eq!(
        py(&["--tls-cert", &ct.cert, "--tls-key", &ct.key])["accepted"],
        true
    );
    assert_eq!(py(&[])["accepted"], false);
    assert_eq!(
        py(&[
            "--tls-cert",
            &ct.cert,
            "--tls-key",
            &ct.key,
            "--tls-max",
            "1.1"
        ])["accepted"],
        false
    );
    assert_eq!(
        py(&[
            "--tls-cert",
            &ct.cert,
            "--tls-key",
            &ct.key,
            "--tls-max",
            "1.2"
        ])["accepted"],
        true
    );

    // A user identity over TLS, with the positive response asked for: the
    // relay adds it to the A-ASSOCIATE-AC inside the TLS stream.
    add_user(&data, "tech", "uploader", "scanner room night 42");
    let with_user = json_of(&python(&[
        "contexts",
        "--port",
        &port,
        "--aet",
        "CT01",
        "--tls-ca",
        &ca,
        "--tls-cert",
        &ct.cert,
        "--tls-key",
        &ct.key,
        "--user",
        "tech",
        "--password",
        "scanner room night 42",
        "--positive-response",
    ]));
    assert_eq!(with_user["accepted"], true, "{with_user}");
    assert_eq!(with_user["identity_response"], "", "{with_user}");
}

#[test]
fn c_move_to_a_tls_destination_goes_over_tls() {
    let data = DataDir::new("move-tls");
    let certs = data.path.join("certs");
    let dest = issue_for(&data, "DEST", &certs, &["127.0.0.1"]);
    let dest_port = free_port().to_string();
    data.cli(&[
        "peer",
        "add",
        "DEST",
        "--host",
        "127.0.0.1",
        "--port",
        &dest_port,
        "--allow",
        "echo",
        "--tls",
        "required",
    ])
    .success();
    data.add_peer("MOVER", "127.0.0.1", 104, "echo,store,move");
    let server = Server::start(&data);
    let ca = server.ca.to_str().unwrap().to_string();
    let ct = pydicom_test_files().join("CT_small.dcm");
    python(&[
        "store",
        "--port",
        &server.port(),
        "--aet",
        "MOVER",
        ct.to_str().unwrap(),
    ])
    .success();

    // DCMTK's storescp as a TLS-only destination, trusting our CA (it checks
    // Custos's client certificate).
    let received = data.path.join("received");
    std::fs::create_dir_all(&received).unwrap();
    let mut scp = std::process::Command::new("/usr/bin/storescp")
        .args([
            "+tls",
            &dest.key,
            &dest.cert,
            "+cf",
            &ca,
            "-aet",
            "DEST",
            "-od",
            received.to_str().unwrap(),
            &dest_port,
        ])
        .env_remove("TCP_NODELAY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("storescp");
    wait_for_port(dest_port.parse().unwrap());
    let study = format!("StudyInstanceUID={CT_STUDY}");
    let mv = dcmtk(
        "movescu",
        &[
            "-aet",
            "MOVER",
            "-aec",
            "CUSTOS",
            "-aem",
            "DEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &study,
            "127.0.0.1",
            &server.port(),
        ],
    );
    // The other outbound associations take the same TLS path: C-ECHO from
    // the CLI, and forwarding from the queue.
    let echo = data.cli(&["peer", "echo", "DEST"]);
    let sent = data.cli(&["jobs", "send", "--study", CT_STUDY, "--to", "DEST"]);
    wait_until(
        "the study forwarded over TLS",
        Duration::from_secs(30),
        || {
            data.cli(&["jobs", "list", "--state", "done"])
                .stdout()
                .lines()
                .count()
                == 1
        },
    );
    let _ = scp.kill();
    let _ = scp.wait();
    assert!(echo.ok(), "{}{}", echo.stdout(), echo.stderr());
    assert!(sent.ok(), "{}", sent.stderr());
    assert!(mv.ok(), "{}", mv.stderr());
    let files = walk_files(&received);
    assert_eq!(
        files.len(),
        1,
        "the instance arrived over TLS: {}",
        mv.stderr()
    );
    assert_eq!(dcm_dump(&files[0]), dcm_dump(&ct));
}

/// A TLS client refused at association (an unknown AE title) that then keeps
/// its socket open without a word is disconnected: its connection does not
/// outlive the association slot it was counted against (before, each one kept
/// the client socket and a loopback relay socket open for good, outside every
/// limit: a stranger could use up the server's file descriptors).
#[test]
fn refused_tls_clients_that_hold_their_sockets_are_disconnected() {
    use dicom_ul::pdu::{
        AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem, write_pdu,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let data = DataDir::new("dicom-tls-linger");
    let server = Server::process(&data);
    let port = server.tls.unwrap().port();
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .count()
    };
    let before = fds();
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "STRANGER".into(),
        called_ae_title: "CUSTOS".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16_384)],
    });
    let mut rq_bytes = Vec::new();
    write_pdu(&mut rq_bytes, &rq).unwrap();

    const CLIENTS: usize = 8;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let held = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..CLIENTS {
            let mut tls = tls_connect(port).await;
            tls.write_all(&rq_bytes).await.unwrap();
            tls.flush().await.unwrap();
            let mut head = [0u8; 6];
            tls.read_exact(&mut head).await.unwrap();
            assert_eq!(head[0], 0x03, "an A-ASSOCIATE-RJ for an unknown AE title");
            // Kept open, silent: neither read further nor closed.
            held.push(tls);
        }
        held
    });
    wait_until(
        "the server to close the refused connections",
        Duration::from_secs(15),
        || fds() < before + CLIENTS,
    );
    drop(held);
}

/// A server at its association limit turns newcomers away: on the plain port
/// with an A-ASSOCIATE-RJ a modality understands (transient, service provider,
/// temporary congestion: try again later), on the TLS port by closing — no
/// cleartext answer to a ClientHello, no handshake taken on. Once the slots
/// are free, associations are taken again.
#[test]
fn a_full_server_turns_newcomers_away_and_recovers() {
    use std::io::Read;
    let data = DataDir::new("dicom-full");
    let path = data.path.join("custos.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("max_associations_per_address = 16"));
    std::fs::write(
        &path,
        text.replace(
            "max_associations_per_address = 16",
            "max_associations_per_address = 2",
        ),
    )
    .unwrap();
    data.add_peer("ECHO", "127.0.0.1", 104, "echo");
    let server = Server::start(&data);
    let plain: u16 = server.port().parse().unwrap();
    let tls = server.tls.unwrap();
    let echo = || {
        dcmtk(
            "echoscu",
            &[
                "-aet",
                "ECHO",
                "-aec",
                "CUSTOS",
                "127.0.0.1",
                &server.port(),
            ],
        )
    };
    assert!(echo().ok(), "an echo before the slots are taken");
    // Two silent connections take this address's two slots.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", plain)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = std::net::TcpStream::connect(("127.0.0.1", plain)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rj = [0u8; 10];
    third.read_exact(&mut rj).unwrap();
    // A-ASSOCIATE-RJ: type 3, length 4, result 2 (transient), source 3
    // (service provider, presentation), reason 1 (temporary congestion).
    assert_eq!(rj, [0x03, 0, 0, 0, 0, 4, 0, 2, 3, 1]);
    let mut over_tls = std::net::TcpStream::connect(tls).unwrap();
    over_tls
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    over_tls.read_to_end(&mut answer).unwrap();
    assert!(answer.is_empty(), "closed without a word: {answer:?}");
    // Slots freed: taken again.
    drop(held);
    wait_until(
        "an echo once the slots are free",
        Duration::from_secs(15),
        || echo().ok(),
    );
    server.stop();
}
