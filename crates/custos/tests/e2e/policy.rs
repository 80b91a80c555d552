//! Association policy (closed by default): each case of the archive issue's
//! point 3, observed from real peers.

use crate::common::*;

#[test]
fn unknown_calling_ae_is_rejected() {
    let data = DataDir::new("policy-unknown");
    data.add_peer("KNOWN", "127.0.0.1", 104, "echo");
    let server = Server::start(&data);
    let run = echo(&server, "STRANGER", "CUSTOS");
    assert!(!run.ok());
    assert!(
        run.stderr()
            .to_lowercase()
            .contains("calling ae title not recogni"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("Rejected Permanent"),
        "{}",
        run.stderr()
    );
    assert!(
        server
            .log_text()
            .contains("calling AE title is not a registered peer")
    );
}

#[test]
fn no_peers_means_nobody_gets_in() {
    let data = DataDir::new("policy-empty");
    let server = Server::start(&data);
    for aet in ["ANY-SCU", "STORESCU", "FINDSCU", "ECHOSCU"] {
        let run = echo(&server, aet, "CUSTOS");
        assert!(!run.ok(), "{aet} got in");
    }
}

#[test]
fn known_ae_from_another_address_is_rejected() {
    let data = DataDir::new("policy-addr");
    data.add_peer("CT01", "127.0.0.2", 104, "echo");
    let server = Server::start(&data);
    // From 127.0.0.1: rejected.
    let run = echo(&server, "CT01", "CUSTOS");
    assert!(!run.ok());
    assert!(
        run.stderr()
            .to_lowercase()
            .contains("calling ae title not recogni"),
        "{}",
        run.stderr()
    );
    assert!(server.log_text().contains("outside its registered host"));
    // From 127.0.0.2 (pynetdicom binds the source address): accepted.
    let ok = python(&[
        "echo",
        "--port",
        &server.port(),
        "--aet",
        "CT01",
        "--bind",
        "127.0.0.2",
    ])
    .success();
    let v: serde_json::Value = serde_json::from_str(&ok.stdout()).unwrap();
    assert_eq!(v["accepted"], true, "{}", ok.stdout());
    assert_eq!(v["status"], 0);
}

#[test]
fn cidr_hosts_match_networks() {
    let data = DataDir::new("policy-cidr");
    data.add_peer("WARD", "127.0.0.0/30", 104, "echo");
    let server = Server::start(&data);
    let run = echo(&server, "WARD", "CUSTOS");
    assert!(run.ok(), "{}", run.stderr());
    let out = python(&[
        "echo",
        "--port",
        &server.port(),
        "--aet",
        "WARD",
        "--bind",
        "127.0.0.9",
    ])
    .success();
    assert!(
        out.stdout().contains("\"accepted\": false"),
        "{}",
        out.stdout()
    );
}

#[test]
fn wrong_called_ae_is_rejected() {
    let data = DataDir::new("policy-called");
    data.add_peer("CT01", "127.0.0.1", 104, "echo");
    let server = Server::start(&data);
    let run = echo(&server, "CT01", "NOTCUSTOS");
    assert!(!run.ok());
    assert!(
        run.stderr()
            .to_lowercase()
            .contains("called ae title not recogni"),
        "{}",
        run.stderr()
    );
    let run = echo(&server, "CT01", "CUSTOS");
    assert!(run.ok(), "{}", run.stderr());
}

#[test]
fn store_only_peer_sees_query_retrieve_contexts_rejected() {
    let data = DataDir::new("policy-contexts");
    data.add_peer("MODALITY", "127.0.0.1", 104, "echo,store");
    data.add_peer("VIEWER", "127.0.0.1", 104, "echo,find,get,move");
    let server = Server::start(&data);
    let out = python(&[
        "contexts",
        "--port",
        &server.port(),
        "--aet",
        "MODALITY",
        "--try-find",
    ])
    .success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(
        v["contexts"],
        serde_json::json!(["echo", "store"]),
        "{}",
        out.stdout()
    );
    assert!(
        v.get("find_error").is_some() || v["find_statuses"] == serde_json::json!([0x0124]),
        "{}",
        out.stdout()
    );
    // findscu has no usable context either.
    let run = dcmtk(
        "findscu",
        &[
            "-S",
            "-aet",
            "MODALITY",
            "-aec",
            "CUSTOS",
            "127.0.0.1",
            &server.port(),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=*",
        ],
    );
    assert!(!run.stdout().contains("Find Response: 1"));
    assert!(
        run.stderr().contains("No presentation context")
            || run.stderr().contains("No Acceptable Presentation Contexts"),
        "{}",
        run.stderr()
    );

    let out = python(&["contexts", "--port", &server.port(), "--aet", "VIEWER"]).success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    // C-GET needs storage contexts for its sub-operations, so the viewer is offered CT storage too;
    // a C-STORE from it is still refused per request (see the interop tests).
    assert_eq!(
        v["contexts"],
        serde_json::json!(["echo", "find", "get", "move", "store"]),
        "{}",
        out.stdout()
    );
}

#[test]
fn echo_without_echo_permission_is_refused() {
    let data = DataDir::new("policy-noecho");
    data.add_peer("STOREONLY", "127.0.0.1", 104, "store");
    let server = Server::start(&data);
    let run = echo(&server, "STOREONLY", "CUSTOS");
    assert!(!run.ok());
}

#[test]
fn peer_changes_apply_without_restart() {
    let data = DataDir::new("policy-live");
    let server = Server::start(&data);
    let echo = || echo(&server, "LATE", "CUSTOS");
    assert!(!echo().ok());
    data.add_peer("LATE", "127.0.0.1", 104, "echo");
    assert!(echo().ok(), "peer added while serving is accepted");
    let list = data.cli(&["peer", "list"]).success().stdout();
    assert!(
        list.contains("LATE") && list.contains("127.0.0.1"),
        "{list}"
    );
    data.cli(&["peer", "remove", "LATE"]).success();
    assert!(!echo().ok(), "removed peer is rejected again");
    assert!(!data.cli(&["peer", "remove", "LATE"]).ok());
    assert!(
        !data
            .cli(&[
                "peer",
                "add",
                "BAD",
                "--host",
                "not a host",
                "--allow",
                "echo"
            ])
            .ok()
    );
    assert!(
        !data
            .cli(&[
                "peer",
                "add",
                "BAD",
                "--host",
                "127.0.0.1",
                "--allow",
                "echo,delete"
            ])
            .ok()
    );
}
