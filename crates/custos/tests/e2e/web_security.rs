//! The HTTPS side refuses whatever is not allowed: every route without
//! credentials, with bad ones, with expired or revoked tokens, with a role or
//! a read-only token that lacks the right; repeated failures lock out; bad
//! input gets a clean 4xx and the server keeps serving; TLS below 1.2 is refused.
//! No error body carries patient data.

use crate::common::*;
use serde_json::{Value, json};

const PW_BOSS: &str = "the chief of imaging 7";
const PW_RAD: &str = "reading room 4 lights";
const PW_UP: &str = "scanner uploads only 9";
const PW_AUD: &str = "reads the trail only 3";
const PHI: [&str; 2] = ["CompressedSamples", "1CT1"];

fn basic(user: &str, pw: &str) -> Value {
    json!({ "basic": [user, pw] })
}

fn bearer(t: &str) -> Value {
    json!({ "bearer": t })
}

struct Fixture {
    data: DataDir,
    server: Server,
    series: String,
}

fn fixture(name: &str, env: &[(&str, &str)]) -> Fixture {
    let data = DataDir::new(name);
    data.add_peer("STORESCU", "127.0.0.1", 104, "echo,store");
    add_user(&data, "boss", "admin", PW_BOSS);
    add_user(&data, "rad", "radiologist", PW_RAD);
    add_user(&data, "up", "uploader", PW_UP);
    add_user(&data, "aud", "auditor", PW_AUD);
    let server = Server::start_with(&data, env);
    let ct = pydicom_test_files().join("CT_small.dcm");
    python(&[
        "store",
        "--port",
        &server.port(),
        "--aet",
        "STORESCU",
        ct.to_str().unwrap(),
    ])
    .success();
    let series = json_of(
        &web(
            &server,
            "rad",
            PW_RAD,
            &["search", "--level", "series", "--study", CT_STUDY],
        )
        .success(),
    )[0]["0020000E"]["Value"][0]
        .as_str()
        .unwrap()
        .to_string();
    Fixture {
        data,
        server,
        series,
    }
}

fn assert_no_phi(results: &[Value]) {
    for r in results {
        let body = r["body"].as_str().unwrap_or_default();
        let status = r["status"].as_u64().unwrap_or(0);
        if !(200..300).contains(&status) {
            for p in PHI {
                assert!(!body.contains(p), "error body carries patient data: {body}");
            }
        }
    }
}

#[test]
fn every_route_refuses_missing_bad_expired_revoked_and_unpermitted_credentials() {
    let f = fixture("web-auth", &[("CUSTOS_HTTP_LOCKOUT_AFTER", "1000")]);
    let (s, se) = (CT_STUDY, f.series.as_str());
    let reads = vec![
        "/dicom-web/studies".to_string(),
        "/dicom-web/series?Modality=CT".into(),
        "/dicom-web/instances".into(),
        format!("/dicom-web/studies/{s}"),
        format!("/dicom-web/studies/{s}/metadata"),
        format!("/dicom-web/studies/{s}/series"),
        format!("/dicom-web/studies/{s}/series/{se}/instances"),
        format!("/dicom-web/studies/{s}/series/{se}/instances/{CT_SOP}/frames/1"),
        format!("/dicom-web/studies/{s}/series/{se}/instances/{CT_SOP}/rendered"),
        format!("/dicom-web/studies/{s}/series/{se}/instances/{CT_SOP}/thumbnail"),
        format!(
            "/wado?requestType=WADO&studyUID={s}&seriesUID={se}&objectUID={CT_SOP}&contentType=application/dicom"
        ),
    ];
    let admin = ["/api/statistics", "/api/users", "/api/peers", "/api/tokens"];
    let mut all: Vec<(String, String)> = reads
        .iter()
        .map(|p| ("GET".to_string(), p.clone()))
        .collect();
    all.extend(admin.iter().map(|p| ("GET".to_string(), p.to_string())));
    all.push(("POST".into(), "/dicom-web/studies".into()));
    all.push(("DELETE".into(), format!("/api/studies/{s}")));
    all.push(("GET".into(), "/api/openapi.json".into()));
    all.push(("GET".into(), "/no/such/route".into()));

    let made = std::time::Instant::now();
    let expired = create_token(&f.data, "rad", "1s", false);
    let revoked = create_token(&f.data, "rad", "1d", false);
    let revoked_id = revoked.split('_').nth(1).unwrap().to_string();
    f.data.cli(&["token", "revoke", &revoked_id]).success();
    let read_only_admin = create_token(&f.data, "boss", "1d", true);
    let rad_token = create_token(&f.data, "rad", "1d", false);
    // The one-second token must have expired (whole seconds): wait out what
    // the commands above have not already spent.
    std::thread::sleep(std::time::Duration::from_millis(2100).saturating_sub(made.elapsed()));

    let mut spec = Vec::new();
    for (m, p) in &all {
        spec.push(json!({ "method": m, "path": p }));
        spec.push(json!({ "method": m, "path": p, "auth": basic("rad", "wrong password here") }));
        spec.push(json!({ "method": m, "path": p, "auth": basic("nobody", PW_RAD) }));
        spec.push(json!({ "method": m, "path": p, "auth": bearer(&expired) }));
        spec.push(json!({ "method": m, "path": p, "auth": bearer(&revoked) }));
        spec.push(json!({ "method": m, "path": p, "auth": bearer("custos_notarealtoken_x") }));
    }
    let results = web_requests(&f.server, Value::Array(spec.clone()));
    for (req, res) in spec.iter().zip(&results) {
        assert_eq!(res["status"], 401, "{req} -> {res}");
        let challenge = res["www_authenticate"].as_str().unwrap_or_default();
        assert!(challenge.contains("Basic"), "{req}: no WWW-Authenticate");
    }
    assert_no_phi(&results);

    // Authenticated, but without the right: 403.
    let mut spec = Vec::new();
    for p in &reads {
        spec.push(json!({ "method": "GET", "path": p, "auth": basic("up", PW_UP) }));
    }
    for p in admin {
        spec.push(json!({ "method": "GET", "path": p, "auth": basic("rad", PW_RAD) }));
        spec.push(json!({ "method": "GET", "path": p, "auth": bearer(&rad_token) }));
    }
    let stow_headers =
        json!({ "Content-Type": "multipart/related; type=\"application/dicom\"; boundary=b" });
    spec.push(json!({ "method": "POST", "path": "/dicom-web/studies", "auth": bearer(&read_only_admin), "headers": stow_headers, "body": "--b--\r\n" }));
    // (A radiologist may store derived objects: the auditor may store nothing.)
    spec.push(json!({ "method": "POST", "path": "/dicom-web/studies", "auth": basic("aud", PW_AUD), "headers": stow_headers, "body": "--b--\r\n" }));
    spec.push(json!({ "method": "DELETE", "path": format!("/api/studies/{s}"), "auth": bearer(&read_only_admin) }));
    spec.push(json!({ "method": "DELETE", "path": format!("/api/studies/{s}"), "auth": basic("rad", PW_RAD) }));
    spec.push(json!({ "method": "GET", "path": "/api/users", "auth": bearer(&read_only_admin) }));
    let results = web_requests(&f.server, Value::Array(spec.clone()));
    for (req, res) in spec.iter().zip(&results) {
        assert_eq!(res["status"], 403, "{req} -> {res}");
    }
    assert_no_phi(&results);

    // The right credentials work: reads for the radiologist (password or
    // token), reads for a read-only admin token, administration for the admin.
    let mut spec = Vec::new();
    for p in &reads {
        spec.push(json!({ "method": "GET", "path": p, "auth": basic("rad", PW_RAD) }));
        spec.push(json!({ "method": "GET", "path": p, "auth": bearer(&rad_token) }));
        spec.push(json!({ "method": "GET", "path": p, "auth": bearer(&read_only_admin) }));
    }
    for p in admin {
        spec.push(json!({ "method": "GET", "path": p, "auth": basic("boss", PW_BOSS) }));
    }
    spec.push(json!({ "method": "GET", "path": "/healthz" }));
    let results = web_requests(&f.server, Value::Array(spec.clone()));
    for (req, res) in spec.iter().zip(&results) {
        assert_eq!(res["status"], 200, "{req} -> {res}");
    }
    let h = &results.last().unwrap()["headers"];
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["strict-transport-security"].as_str().is_some());
    assert!(
        h["content-security-policy"]
            .as_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let users = results
        .iter()
        .find(|r| r["body"].as_str().unwrap().contains("\"radiologist\""))
        .unwrap();
    assert!(
        !users["body"].as_str().unwrap().contains("argon2"),
        "hashes never leave the server"
    );

    // Deletion by the admin: an unknown series is 404; the study's one series
    // goes, and the study with it; it is gone for QIDO and WADO.
    let del = web_requests(
        &f.server,
        json!([
            { "method": "DELETE", "path": format!("/api/studies/{s}/series/1.2.3"), "auth": basic("boss", PW_BOSS) },
            { "method": "DELETE", "path": format!("/api/studies/{s}/series/{se}"), "auth": basic("boss", PW_BOSS) },
        ]),
    );
    assert_eq!(del[0]["status"], 404, "{}", del[0]);
    assert_eq!(del[1]["status"], 200, "{}", del[1]);
    let del = web_requests(
        &f.server,
        json!([
            { "method": "DELETE", "path": format!("/api/studies/{s}"), "auth": basic("boss", PW_BOSS) },
            { "method": "GET", "path": format!("/dicom-web/studies/{s}"), "auth": basic("rad", PW_RAD) },
            { "method": "GET", "path": "/dicom-web/studies", "auth": basic("rad", PW_RAD) },
            { "method": "GET", "path": "/api/statistics", "auth": basic("boss", PW_BOSS) },
        ]),
    );
    assert_eq!(
        del[0]["status"], 404,
        "the study went with its last series: {}",
        del[0]
    );
    assert_eq!(del[1]["status"], 404);
    assert_eq!(del[2]["body"], "[]");
    assert!(del[3]["body"].as_str().unwrap().contains("\"instances\":0"));
    assert_eq!(f.data.blob_count(), 0, "the study's blob is removed");
    // Its bytes are gone from disk too, not only unreferenced.
    let records = pack_records(&f.data.path.join("blobs"));
    assert!(!records.is_empty(), "small instances are packed");
    for record in records {
        let pack = std::fs::read(&record.path).unwrap();
        let data = &pack[record.data_at..record.data_at + record.len];
        assert!(
            data.iter().all(|b| *b == 0),
            "a deleted blob left bytes in {}",
            record.path.display()
        );
    }
}

#[test]
fn repeated_failures_lock_out_user_and_address() {
    let f = fixture(
        "web-lockout",
        &[
            ("CUSTOS_HTTP_LOCKOUT_AFTER", "4"),
            ("CUSTOS_HTTP_LOCKOUT_SECS", "60"),
        ],
    );
    let wrong = json!({ "method": "GET", "path": "/dicom-web/studies", "auth": basic("rad", "not the password!") });
    let right =
        json!({ "method": "GET", "path": "/dicom-web/studies", "auth": basic("rad", PW_RAD) });
    let results = web_requests(
        &f.server,
        json!([wrong, wrong, wrong, wrong, right, { "method": "GET", "path": "/dicom-web/studies", "auth": basic("boss", PW_BOSS) }]),
    );
    for r in &results[..4] {
        assert_eq!(r["status"], 401, "{r}");
    }
    assert_eq!(
        results[4]["status"], 429,
        "the right password is refused during a lockout"
    );
    assert!(results[4]["headers"]["retry-after"].as_str().is_some());
    assert_eq!(results[5]["status"], 429, "the address is locked out too");
    assert!(f.server.log_text().contains("authentication failed"));
}

#[test]
fn bad_input_gets_a_clean_4xx_and_the_server_keeps_serving() {
    let f = fixture(
        "web-bounds",
        &[
            ("CUSTOS_HTTP_MAX_BODY_MB", "1"),
            ("CUSTOS_HTTP_MAX_HEADER_KB", "16"),
        ],
    );
    let auth = basic("boss", PW_BOSS);
    let stow = |headers: Value| json!({ "method": "POST", "path": "/dicom-web/studies", "auth": auth, "headers": headers, "body_repeat": ["x", 3 << 20] });
    let related =
        json!({ "Content-Type": "multipart/related; type=\"application/dicom\"; boundary=b" });
    let spec = json!([
        // 3 MiB against a 1 MiB limit.
        stow(related.clone()),
        // No boundary.
        { "method": "POST", "path": "/dicom-web/studies", "auth": auth, "headers": { "Content-Type": "multipart/related; type=\"application/dicom\"" }, "body": "--b\r\n\r\nxx\r\n--b--" },
        // Not multipart at all.
        { "method": "POST", "path": "/dicom-web/studies", "auth": auth, "headers": { "Content-Type": "application/json" }, "body": "{}" },
        // A gzip bomb is never decompressed.
        { "method": "POST", "path": "/dicom-web/studies", "auth": auth, "headers": { "Content-Type": "multipart/related; type=\"application/dicom\"; boundary=b", "Content-Encoding": "gzip" }, "body": "\u{1f}\u{8b}" },
        // Truncated multipart.
        { "method": "POST", "path": "/dicom-web/studies", "auth": auth, "headers": related, "body": "--b\r\nContent-Type: application/dicom\r\n\r\nDICM" },
        // A header beyond the 16 KiB limit (small enough that the client has
        // sent it all before the server answers, so it reads the 431).
        { "method": "GET", "path": "/dicom-web/studies", "auth": auth, "headers": { "X-Filler": "a".repeat(20 << 10) } },
        // Injection-shaped and malformed query values.
        { "method": "GET", "path": "/dicom-web/studies?PatientName=%27%20OR%201%3D1%20--", "auth": auth },
        { "method": "GET", "path": "/dicom-web/studies?StudyInstanceUID=1.2.3%27%3B%20DROP%20TABLE%20studies", "auth": auth },
        { "method": "GET", "path": "/dicom-web/studies/..%2F..%2Fetc%2Fpasswd/metadata", "auth": auth },
        { "method": "GET", "path": "/dicom-web/studies?limit=abc", "auth": auth },
        { "method": "GET", "path": "/dicom-web/studies?StudyDate=yesterday", "auth": auth },
        { "method": "GET", "path": "/dicom-web/studies?NoSuchAttribute=1", "auth": auth },
        { "method": "GET", "path": format!("/dicom-web/studies/{CT_STUDY}/series/{}/instances/{CT_SOP}/frames/0,x", f.series), "auth": auth },
        { "method": "GET", "path": format!("/dicom-web/studies/{CT_STUDY}/series/{}/instances/{CT_SOP}/rendered?viewport=99999,1", f.series), "auth": auth },
        { "method": "POST", "path": "/api/users", "auth": auth, "headers": { "Content-Type": "application/json" }, "body": "{\"name\":\"eve\",\"role\":\"admin\",\"password\":\"password1234\"}" },
        // Still serving, and the data is intact.
        { "method": "GET", "path": "/healthz" },
        { "method": "GET", "path": "/dicom-web/studies", "auth": auth },
    ]);
    let r = web_requests(&f.server, spec);
    let status = |i: usize| r[i]["status"].as_u64();
    assert_eq!(status(0), Some(413), "{}", r[0]);
    assert_eq!(status(1), Some(400), "{}", r[1]);
    assert_eq!(status(2), Some(415), "{}", r[2]);
    assert_eq!(status(3), Some(415), "{}", r[3]);
    assert_eq!(status(4), Some(400), "{}", r[4]);
    assert_eq!(status(5), Some(431), "{}", r[5]);
    assert_eq!(status(6), Some(200));
    assert_eq!(r[6]["body"], "[]", "a quote in a name is a value, not SQL");
    assert_eq!(status(7), Some(400));
    assert_eq!(status(8), Some(400), "{}", r[8]);
    for (i, res) in r.iter().enumerate().take(14).skip(9) {
        if i == 11 {
            // An attribute QIDO does not match is ignored and named (PS3.18).
            assert_eq!(status(i), Some(200), "{res}");
            let warning = res["headers"]["warning"].as_str().unwrap_or_default();
            assert!(
                warning.starts_with("299 ") && warning.contains("NoSuchAttribute"),
                "{res}"
            );
            continue;
        }
        assert_eq!(status(i), Some(400), "{res}");
    }
    assert_eq!(
        status(14),
        Some(422),
        "a common password is refused: {}",
        r[14]
    );
    assert_eq!(status(15), Some(200));
    assert_eq!(status(16), Some(200));
    assert!(r[16]["body"].as_str().unwrap().contains(CT_STUDY));
    assert_no_phi(&r);
    assert_eq!(
        f.data.blob_count(),
        1,
        "nothing half-written is left behind"
    );
}

#[test]
fn tls_below_1_2_and_plain_http_are_refused() {
    let f = fixture("web-tls", &[]);
    let v = json_of(
        &web(
            &f.server,
            "",
            "",
            &["tls", "--port", &f.server.http.port().to_string()],
        )
        .success(),
    );
    assert_eq!(v["1.2"], "TLSv1.2", "{v}");
    assert_eq!(v["1.3"], "TLSv1.3", "{v}");
    for old in ["1.0", "1.1"] {
        assert_ne!(
            v[old].as_str().unwrap().to_string(),
            format!("TLSv{old}"),
            "{v}"
        );
    }
    let plain = std::process::Command::new("python3")
        .args(["-c", &format!(
            "import socket;s=socket.create_connection(('127.0.0.1',{}));s.sendall(b'GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n');s.settimeout(10);print(s.recv(100))",
            f.server.http.port()
        )])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("200"),
        "plain HTTP must not be served"
    );
}

fn jwt(dir: &std::path::Path, extra: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py/jwt_issuer.py");
    let mut args = vec![
        script,
        "token",
        dir.to_str().unwrap(),
        "--iss",
        "https://idp.test",
        "--aud",
        "custos",
        "--user",
        "alice",
    ];
    args.extend_from_slice(extra);
    let out = std::process::Command::new("python3")
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The token with one character of its claims changed (signature kept).
fn tampered(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut claims: Vec<char> = parts[1].chars().collect();
    claims[10] = if claims[10] == 'A' { 'B' } else { 'A' };
    parts[1] = claims.into_iter().collect();
    parts.join(".")
}

#[test]
fn openid_connect_tokens_are_checked_and_mapped_to_roles() {
    let keys = std::env::temp_dir().join(format!("custos-oidc-{}", std::process::id()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py/jwt_issuer.py");
    // (Re)makes the provider's signing key and its published key set.
    let new_keys = || {
        assert!(
            std::process::Command::new("python3")
                .args([script, "keys", keys.to_str().unwrap()])
                .status()
                .unwrap()
                .success()
        )
    };
    new_keys();
    let jwks = keys.join("jwks.json");
    let f = fixture(
        "web-oidc",
        &[
            ("CUSTOS_OIDC_ISSUER", "https://idp.test"),
            ("CUSTOS_OIDC_AUDIENCE", "custos"),
            ("CUSTOS_OIDC_JWKS_FILE", jwks.to_str().unwrap()),
            ("CUSTOS_OIDC_JWKS_REFRESH_SECS", "1"),
            ("CUSTOS_HTTP_LOCKOUT_AFTER", "1000"),
        ],
    );
    let q = |t: &str| json!({ "method": "GET", "path": "/dicom-web/studies", "auth": bearer(t) });
    let cases = [
        (jwt(&keys, &["--role", "radiologist"]), 200),
        (jwt(&keys, &["--role", "uploader"]), 403),
        (jwt(&keys, &["--role", "root"]), 401),
        (jwt(&keys, &["--role", "radiologist", "--exp", "-120"]), 401),
        // Not valid yet (beyond the one-minute leeway).
        (jwt(&keys, &["--role", "radiologist", "--nbf", "600"]), 401),
        (jwt(&keys, &["--role", "radiologist", "--other-key"]), 401),
        (jwt(&keys, &["--role", "radiologist", "--alg-none"]), 401),
        (tampered(&jwt(&keys, &["--role", "radiologist"])), 401),
    ];
    let results = web_requests(
        &f.server,
        Value::Array(cases.iter().map(|(t, _)| q(t)).collect()),
    );
    for ((_, want), got) in cases.iter().zip(&results) {
        assert_eq!(got["status"], *want, "{got}");
    }
    assert!(results[0]["body"].as_str().unwrap().contains(CT_STUDY));
    // A token for another audience.
    let other = std::process::Command::new("python3")
        .args([
            script,
            "token",
            keys.to_str().unwrap(),
            "--iss",
            "https://idp.test",
            "--aud",
            "someone-else",
            "--user",
            "alice",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    let other = String::from_utf8(other.stdout).unwrap().trim().to_string();
    assert_eq!(
        web_requests(&f.server, json!([q(&other)]))[0]["status"],
        401
    );

    // The provider replaces its key: a token signed with the removed key stops
    // being trusted once the key set is re-read; one signed with the new key works.
    let old = jwt(&keys, &["--role", "radiologist"]);
    assert_eq!(web_requests(&f.server, json!([q(&old)]))[0]["status"], 200);
    new_keys();
    let new = jwt(&keys, &["--role", "radiologist"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let statuses = loop {
        let r = web_requests(&f.server, json!([q(&old), q(&new)]));
        let s = (r[0]["status"].as_u64(), r[1]["status"].as_u64());
        if s == (Some(401), Some(200)) || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(
        statuses,
        (Some(401), Some(200)),
        "old key still trusted, or new one not"
    );
    let _ = std::fs::remove_dir_all(&keys);
}

#[test]
fn cors_answers_only_configured_origins() {
    let f = fixture(
        "web-cors",
        &[("CUSTOS_HTTP_CORS_ORIGINS", "https://viewer.example.org")],
    );
    let pre = |origin: &str| {
        json!({ "method": "OPTIONS", "path": "/dicom-web/studies", "headers": {
        "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization" } })
    };
    let r = web_requests(
        &f.server,
        json!([
            pre("https://viewer.example.org"),
            pre("https://evil.example.com"),
            { "method": "GET", "path": "/dicom-web/studies", "auth": basic("rad", PW_RAD), "headers": { "Origin": "https://viewer.example.org" } },
            { "method": "GET", "path": "/dicom-web/studies", "auth": basic("rad", PW_RAD), "headers": { "Origin": "https://evil.example.com" } },
        ]),
    );
    assert_eq!(r[0]["status"], 204);
    assert_eq!(
        r[0]["headers"]["access-control-allow-origin"],
        "https://viewer.example.org"
    );
    // Every method a route takes, PUT included (worklist items, users,
    // study protection).
    let methods = r[0]["headers"]["access-control-allow-methods"]
        .as_str()
        .unwrap();
    for m in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.split(", ").any(|x| x == m), "{methods}");
    }
    assert!(
        r[1]["headers"].get("access-control-allow-origin").is_none(),
        "{}",
        r[1]
    );
    assert_eq!(
        r[1]["status"], 401,
        "a preflight from another origin is just an unauthenticated request"
    );
    assert_eq!(
        r[2]["headers"]["access-control-allow-origin"],
        "https://viewer.example.org"
    );
    assert!(r[3]["headers"].get("access-control-allow-origin").is_none());
}

#[test]
fn basic_credentials_a_browser_cached_carry_no_other_sites_state_change() {
    // A browser attaches Basic credentials it has cached (after its login
    // dialog) to a form another site's page posts here, as it would a
    // cookie: such writes are refused whatever their credentials; tools
    // (no Origin) and configured CORS origins go on.
    let f = fixture(
        "web-basic-csrf",
        &[("CUSTOS_HTTP_CORS_ORIGINS", "https://viewer.example.org")],
    );
    let post = |headers: Value| {
        json!({ "method": "POST", "path": "/api/worklist", "auth": basic("boss", PW_BOSS),
                "headers": headers, "body": "{}" })
    };
    let r = web_requests(
        &f.server,
        json!([
            post(json!({ "Content-Type": "text/plain", "Origin": "https://evil.example.com" })),
            post(json!({ "Content-Type": "text/plain", "Origin": "null" })),
            post(json!({ "Content-Type": "text/plain", "Sec-Fetch-Site": "cross-site" })),
            post(json!({ "Content-Type": "application/json" })),
            post(json!({ "Content-Type": "application/json", "Origin": "https://viewer.example.org" })),
            { "method": "GET", "path": "/dicom-web/studies", "auth": basic("boss", PW_BOSS),
              "headers": { "Origin": "https://evil.example.com" } },
        ]),
    );
    for refused in &r[..3] {
        assert_eq!(refused["status"], 403, "{refused}");
    }
    for allowed in &r[3..5] {
        let status = allowed["status"].as_u64().unwrap();
        assert!(status != 403 && status != 401, "{allowed}");
    }
    // Reading is no state change (CORS keeps the answer from that page).
    assert_eq!(r[5]["status"], 200, "{}", r[5]);
}

#[test]
fn users_and_peers_change_the_same_way_from_the_api_and_the_cli() {
    let f = fixture("web-registry", &[]);
    let boss = basic("boss", PW_BOSS);
    let json_body = json!({ "Content-Type": "application/json" });
    const CAROL: &str = "reads chest films at night 3";
    let r = web_requests(
        &f.server,
        json!([
            { "method": "POST", "path": "/api/users", "auth": boss, "headers": json_body,
              "body": json!({ "name": "carol", "role": "radiologist", "password": CAROL }).to_string() },
            // The same name again, as admin with another password: refused,
            // not a silent replacement.
            { "method": "POST", "path": "/api/users", "auth": boss, "headers": json_body,
              "body": json!({ "name": "carol", "role": "admin", "password": "another strong one 55" }).to_string() },
            { "method": "GET", "path": "/dicom-web/studies", "auth": basic("carol", CAROL) },
            { "method": "GET", "path": "/api/users", "auth": basic("carol", CAROL) },
            // An explicit change.
            { "method": "PUT", "path": "/api/users/carol", "auth": boss, "headers": json_body,
              "body": json!({ "role": "admin" }).to_string() },
            { "method": "GET", "path": "/api/users", "auth": basic("carol", CAROL) },
            { "method": "PUT", "path": "/api/users/carol", "auth": boss, "headers": json_body,
              "body": json!({ "password": "password1234" }).to_string() },
            { "method": "PUT", "path": "/api/users/nobody", "auth": boss, "headers": json_body,
              "body": json!({ "disabled": true }).to_string() },
            { "method": "PUT", "path": "/api/users/boss", "auth": boss, "headers": json_body,
              "body": json!({ "disabled": true }).to_string() },
            // A peer given a user right: the same refusal as the CLI's.
            { "method": "POST", "path": "/api/peers", "auth": boss, "headers": json_body,
              "body": json!({ "ae_title": "WS9", "host": "127.0.0.1", "port": 104, "allow": ["echo", "admin"] }).to_string() },
        ]),
    );
    let status = |i: usize| r[i]["status"].as_u64().unwrap();
    assert_eq!(status(0), 201, "{}", r[0]);
    assert_eq!(status(1), 409, "{}", r[1]);
    assert_eq!(status(2), 200, "carol keeps her password: {}", r[2]);
    assert_eq!(status(3), 403, "and her role: {}", r[3]);
    assert_eq!(status(4), 204, "{}", r[4]);
    assert_eq!(status(5), 200, "the change took: {}", r[5]);
    assert_eq!(status(6), 422, "a common password: {}", r[6]);
    assert_eq!(status(7), 404, "{}", r[7]);
    assert_eq!(status(8), 409, "an admin cannot disable itself: {}", r[8]);
    assert_eq!(status(9), 422, "{}", r[9]);
    let api_reason = r[9]["body"].as_str().unwrap().to_string();
    assert!(api_reason.contains("is a user right"), "{api_reason}");
    // One's own password only with the current one (the account page's
    // route): a stolen session could otherwise lock its owner out.
    let own = web_requests(
        &f.server,
        json!([{ "method": "PUT", "path": "/api/users/boss", "auth": boss, "headers": json_body,
                 "body": json!({ "password": "a new one for the boss 1" }).to_string() }]),
    );
    assert_eq!(own[0]["status"], 409, "{}", own[0]);
    let still = web_requests(
        &f.server,
        json!([{ "method": "GET", "path": "/api/users", "auth": boss }]),
    );
    assert_eq!(
        still[0]["status"], 200,
        "the old password still works: {}",
        still[0]
    );

    // The CLI refuses the same things with the same words.
    let cli = f.data.cli(&[
        "peer",
        "add",
        "WS9",
        "--host",
        "127.0.0.1",
        "--port",
        "104",
        "--allow",
        "echo,admin",
    ]);
    assert!(!cli.ok());
    assert!(cli.stderr().contains("is a user right"), "{}", cli.stderr());
    let mut child = std::process::Command::new(BIN)
        .args([
            "user",
            "add",
            "carol",
            "--role",
            "uploader",
            "--password-stdin",
            "--data",
        ])
        .arg(&f.data.path)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{CAROL} again").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"));

    // Each change is in the audit trail once, in the registry's words.
    let records = f.data.audit_export();
    let details: Vec<&str> = records
        .iter()
        .filter_map(|r| r["record"]["detail"].as_str())
        .collect();
    assert!(
        details.contains(&"user carol added with role radiologist"),
        "{details:?}"
    );
    assert!(details.contains(&"user carol: role admin"), "{details:?}");
}

/// The router's own table of routes: every one refuses requests without
/// valid credentials (401) and, for a user whose role lacks the route's
/// right, with 403 — before the handler runs, so refused writes change
/// nothing. A route added to the router is in this test without editing it.
#[test]
fn every_route_in_the_router_table_refuses_strangers_and_the_unpermitted() {
    use custos_core::{Action, Role};
    use custos_web::routes::{Need, table};
    let f = fixture("web-matrix", &[("CUSTOS_HTTP_LOCKOUT_AFTER", "1000")]);
    let token = create_token(&f.data, "rad", "1d", false);
    let token_id = token.split('_').nth(1).unwrap().to_string();
    let fill = |p: &str| {
        let p = p
            .replace("{study}", CT_STUDY)
            .replace("{series}", &f.series)
            .replace("{instance}", CT_SOP)
            .replace("{frames}", "1")
            .replace("{tag}", "7FE00010")
            .replace("{ae}", "STORESCU")
            .replace("{name}", "rad")
            .replace("{id}", &token_id);
        if p.ends_with("/wado") {
            format!(
                "{p}?requestType=WADO&studyUID={CT_STUDY}&seriesUID={}&objectUID={CT_SOP}&contentType=application/dicom",
                f.series
            )
        } else {
            p
        }
    };
    // Who lacks each right: the uploader reads nothing, the radiologist
    // stores no images and administers nothing, the auditor stores nothing.
    let lacking = |a: Action| {
        [
            ("up", PW_UP, Role::Uploader),
            ("rad", PW_RAD, Role::Radiologist),
            ("aud", PW_AUD, Role::Auditor),
        ]
        .into_iter()
        .find(|(_, _, r)| !r.permissions().allows(a))
        .map(|(u, pw, _)| basic(u, pw))
        .expect("a user without the right")
    };
    let routes = table();
    let paths: Vec<&str> = routes.iter().map(|(_, p, _)| *p).collect();
    assert!(
        paths.iter().any(|p| p.ends_with("/bulkdata/{tag}")),
        "{paths:?}"
    );
    let (mut strangers, mut unpermitted) = (Vec::new(), Vec::new());
    for (method, path, need) in &routes {
        let (m, p) = (method.as_str(), fill(path));
        let json_body = json!({ "Content-Type": "application/json" });
        strangers.push(json!({ "method": m, "path": p, "headers": json_body, "body": "{}" }));
        strangers.push(json!({ "method": m, "path": p, "auth": basic("rad", "wrong password here"), "headers": json_body, "body": "{}" }));
        strangers.push(json!({ "method": m, "path": p, "auth": bearer("custos_notarealtoken_x"), "headers": json_body, "body": "{}" }));
        if let Need::Right(a) | Need::Confirmed(a) = need {
            unpermitted.push(json!({ "method": m, "path": p, "auth": lacking(*a), "headers": json_body, "body": "{}" }));
        }
    }
    let results = web_requests(&f.server, Value::Array(strangers.clone()));
    for (req, res) in strangers.iter().zip(&results) {
        assert_eq!(res["status"], 401, "{req} -> {res}");
    }
    let results = web_requests(&f.server, Value::Array(unpermitted.clone()));
    for (req, res) in unpermitted.iter().zip(&results) {
        assert_eq!(res["status"], 403, "{req} -> {res}");
    }
    assert_no_phi(&results);
    // Nothing a refused request named was changed.
    assert_eq!(f.data.blob_count(), 1);
    assert!(
        f.data
            .cli(&["peer", "list"])
            .success()
            .stdout()
            .contains("STORESCU")
    );
    assert!(
        f.data
            .cli(&["token", "list"])
            .success()
            .stdout()
            .contains("valid")
    );
}

#[test]
fn an_admin_tests_a_peer_by_c_echo_from_custos() {
    let data = DataDir::new("web-echo");
    add_user(&data, "boss", "admin", PW_BOSS);
    let port = free_port();
    let closed = free_port();
    data.add_peer("ECHOSCP", "127.0.0.1", port, "echo");
    data.add_peer("GONE", "127.0.0.1", closed, "echo");
    data.add_peer("WARD", "127.0.0.0/24", 104, "echo");
    let server = Server::start(&data);
    // DCMTK's storescp answers C-ECHO.
    let mut scp = std::process::Command::new("/usr/bin/storescp")
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("storescp (Debian's dcmtk)");
    wait_for_port(port);
    let boss = basic("boss", PW_BOSS);
    let echo = |ae: &str| json!({ "method": "POST", "path": format!("/api/peers/{ae}/echo"), "auth": boss });
    let r = web_requests(
        &server,
        json!([echo("ECHOSCP"), echo("GONE"), echo("WARD"), echo("NOSUCH")]),
    );
    let _ = scp.kill();
    let _ = scp.wait();
    let body = |i: usize| {
        serde_json::from_str::<Value>(r[i]["body"].as_str().unwrap_or("{}")).unwrap_or(Value::Null)
    };
    assert_eq!(r[0]["status"], 200, "{}", r[0]);
    assert_eq!(body(0)["ok"], true, "{}", r[0]);
    assert_eq!(body(0)["status"], 0);
    assert_eq!(body(1)["ok"], false, "{}", r[1]);
    assert!(
        body(1)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no association"),
        "{}",
        r[1]
    );
    assert_eq!(body(2)["ok"], false);
    assert!(
        body(2)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no single address"),
        "{}",
        r[2]
    );
    assert_eq!(r[3]["status"], 404);
}
