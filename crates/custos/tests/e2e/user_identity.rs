//! User identity negotiation on associations (PS3.7 D.3.3.7): with
//! `require_user_identity = find,get,move`, a workstation's queries need a
//! user; the association's rights are the peer's and the user's role's
//! intersection; a wrong passcode rejects the association. DCMTK storescu
//! (--user/--password) and pynetdicom (username+passcode, JWT = API token).

use crate::common::*;

const PW: &str = "night shift reader 5";
const PW_UP: &str = "scanner uploads only 9";

fn contexts(server: &Server, extra: &[&str]) -> serde_json::Value {
    let port = server.port();
    let mut args = vec![
        "contexts",
        "--port",
        port.as_str(),
        "--aet",
        "WS01",
        "--try-find",
    ];
    args.extend_from_slice(extra);
    json_of(&python(&args))
}

#[test]
fn identities_narrow_rights_and_wrong_ones_are_rejected() {
    let data = DataDir::new("identity");
    data.add_peer("WS01", "127.0.0.1", 104, "echo,store,find,get");
    add_user(&data, "rad", "radiologist", PW);
    add_user(&data, "up", "uploader", PW_UP);
    let token = create_token(&data, "rad", "1d", false);
    let server = Server::start_with(
        &data,
        &[("CUSTOS_DICOM_REQUIRE_USER_IDENTITY", "find,get,move")],
    );

    // No identity: find and get are not offered; echo and store are.
    let none = contexts(&server, &[]);
    assert_eq!(none["accepted"], true, "{none}");
    assert_eq!(
        none["contexts"],
        serde_json::json!(["echo", "store"]),
        "{none}"
    );
    // A radiologist: find and get too (storage contexts stay offered for
    // C-GET's sub-operations; a C-STORE request is still refused per request).
    let rad = contexts(&server, &["--user", "rad", "--password", PW]);
    assert_eq!(
        rad["contexts"],
        serde_json::json!(["echo", "find", "get", "store"]),
        "{rad}"
    );
    assert_eq!(
        rad["find_statuses"]
            .as_array()
            .map(Vec::len)
            .map(|n| n >= 1),
        Some(true),
        "{rad}"
    );
    // No positive response unless asked (PS3.7 D.3.3.7.2)...
    assert_eq!(rad["identity_response"], serde_json::Value::Null, "{rad}");
    // ...and an empty one for a user name and passcode when asked.
    let asked = contexts(
        &server,
        &["--user", "rad", "--password", PW, "--positive-response"],
    );
    assert_eq!(asked["identity_response"], "", "{asked}");
    assert_eq!(asked["contexts"], rad["contexts"], "{asked}");
    // An API token as JWT-type identity: the same rights, and a positive
    // response when asked.
    let tok = contexts(&server, &["--jwt", &token, "--positive-response"]);
    assert_eq!(
        tok["contexts"],
        serde_json::json!(["echo", "find", "get", "store"]),
        "{tok}"
    );
    assert_eq!(tok["identity_response"], "", "{tok}");
    // An uploader: store only, even though the peer may find.
    let up = contexts(&server, &["--user", "up", "--password", PW_UP]);
    assert_eq!(up["contexts"], serde_json::json!(["echo", "store"]), "{up}");
    // Wrong passcode, unknown user, username without passcode: rejected.
    for bad in [
        vec!["--user", "rad", "--password", "not the passcode"],
        vec!["--user", "nobody", "--password", PW],
        vec!["--user", "rad"],
        vec![
            "--jwt",
            "custos_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ],
    ] {
        assert_eq!(contexts(&server, &bad)["accepted"], false, "{bad:?}");
    }

    // DCMTK storescu with --user/--password: stores with the right passcode,
    // is rejected with a wrong one.
    let ct = pydicom_test_files().join("CT_small.dcm");
    let store = |pw: &str| {
        dcmtk(
            "storescu",
            &[
                "-aet",
                "WS01",
                "-aec",
                "CUSTOS",
                "--user",
                "up",
                "--password",
                pw,
                "127.0.0.1",
                &server.port(),
                ct.to_str().unwrap(),
            ],
        )
    };
    let ok = store(PW_UP);
    assert!(ok.ok(), "{}", ok.stderr());
    // storescu -rsp fails unless the A-ASSOCIATE-AC carries the positive
    // response it asked for.
    let rsp = dcmtk(
        "storescu",
        &[
            "-aet",
            "WS01",
            "-aec",
            "CUSTOS",
            "--user",
            "up",
            "--password",
            PW_UP,
            "--pos-response",
            "127.0.0.1",
            &server.port(),
            ct.to_str().unwrap(),
        ],
    );
    assert!(rsp.ok(), "{}", rsp.stderr());
    // DCMTK storescu --jwt with an API token of the uploader.
    let up_token = create_token(&data, "up", "1d", false);
    let token_file = data.path.join("up.jwt");
    std::fs::write(&token_file, &up_token).unwrap();
    let jwt = dcmtk(
        "storescu",
        &[
            "-aet",
            "WS01",
            "-aec",
            "CUSTOS",
            "--jwt",
            token_file.to_str().unwrap(),
            "127.0.0.1",
            &server.port(),
            ct.to_str().unwrap(),
        ],
    );
    assert!(jwt.ok(), "{}", jwt.stderr());
    assert!(!store("wrong wrong wrong").ok());
    // C-GET through pynetdicom with the radiologist's identity returns it.
    let port = server.port();
    let got = json_of(&python(&[
        "get",
        "--port",
        &port,
        "--aet",
        "WS01",
        "--level",
        "STUDY",
        "-k",
        &format!("StudyInstanceUID={CT_STUDY}"),
        "--user",
        "rad",
        "--password",
        PW,
    ]));
    assert_eq!(got["received"], serde_json::json!([CT_SOP]), "{got}");
    // The radiologist's association may C-GET but not C-STORE.
    let rad_store = dcmtk(
        "storescu",
        &[
            "-aet",
            "WS01",
            "-aec",
            "CUSTOS",
            "--user",
            "rad",
            "--password",
            PW,
            "127.0.0.1",
            &server.port(),
            ct.to_str().unwrap(),
        ],
    );
    assert!(
        !rad_store.ok()
            || rad_store.stderr().contains("0x0124")
            || rad_store.stdout().contains("0x0124"),
        "{}",
        rad_store.stderr()
    );
    let log = server.log_text();
    assert!(log.contains("user identity verified"));
    assert!(
        log.contains("user identity did not prove a Custos user"),
        "{log}"
    );
    assert!(
        !log.contains(PW) && !log.contains(PW_UP),
        "passcodes are never logged"
    );
}
