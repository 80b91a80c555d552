//! The web handlers called through the router, without sockets or TLS: a real
//! archive (SQLite index, filesystem store) in a temporary folder, requests
//! made with `tower::ServiceExt::oneshot`. Behaviour a client sees: statuses,
//! headers, bodies. (Listeners, TLS and the real peers are the e2e tests'.)

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use tower::ServiceExt;

use custos_archive::{Archive, DuplicatePolicy};
use custos_web::{AppState, Authenticator, ClientAddr, WebConfig};

const STUDY: &str = "1.2.826.0.1.3680043.8.498.1";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.1.1";
const SOP: &str = "1.2.826.0.1.3680043.8.498.1.1.1";
const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const PASSWORD: &str = "handler tests walk 42";

struct Fixture {
    dir: PathBuf,
    app: axum::Router,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture(name: &str) -> Fixture {
    fixture_with(name, custos_auth::SessionPolicy::default()).await
}

async fn fixture_with(name: &str, sessions: custos_auth::SessionPolicy) -> Fixture {
    fixture_sized(name, sessions, 64 << 20).await
}

async fn fixture_sized(
    name: &str,
    sessions: custos_auth::SessionPolicy,
    max_body_bytes: u64,
) -> Fixture {
    let dir = std::env::temp_dir().join(format!("custos-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let index = Arc::new(custos_index::SqliteIndex::open(dir.join("index.db")).unwrap());
    let store = Arc::new(custos_store::FsStore::open(dir.join("blobs")).unwrap());
    let archive = Arc::new(Archive::new(index, store, DuplicatePolicy::Keep));
    for (user, role) in [
        ("boss", "admin"),
        ("rad", "radiologist"),
        ("modality", "uploader"),
    ] {
        custos_archive::registry::add_user(
            archive.registry().as_ref(),
            user,
            role,
            PASSWORD.to_string(),
        )
        .await
        .unwrap();
    }
    let auth = Arc::new(
        Authenticator::new(
            archive.registry(),
            None,
            custos_auth::LockoutPolicy {
                after: 5,
                duration: Duration::from_secs(60),
            },
        )
        .with_session_policy(sessions),
    );
    let state = Arc::new(AppState {
        archive,
        config: WebConfig {
            https: true,
            max_body_bytes,
            max_header_bytes: 64 << 10,
            max_find_results: 100,
            max_stow_parts: 10,
            max_connections: 16,
            max_connections_per_address: 16,
            idle_timeout: Duration::from_secs(10),
            cors_origins: vec![],
            viewer_dir: None,
        },
        auth,
        peer_echo: None,
        checkup: None,
    });
    Fixture {
        dir,
        app: custos_web::router(state),
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl Fixture {
    async fn send(&self, mut request: Request<Body>) -> Reply {
        let from: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        request.extensions_mut().insert(ClientAddr(from));
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends a request without a body.
    async fn call(&self, request: axum::http::request::Builder) -> Reply {
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn get(&self, user: &str, uri: &str) -> Reply {
        self.call(request(user, "GET", uri)).await
    }

    async fn json(&self, user: &str, method: &str, uri: &str, body: serde_json::Value) -> Reply {
        self.send(
            request(user, method, uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn request(user: &str, method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, basic(user, PASSWORD))
}

/// The pixel values of the test image.
fn pixels() -> Vec<u8> {
    (0u8..16).map(|i| i * 16).collect()
}

/// A 4x4 8-bit CT image as a Part 10 file.
fn instance() -> Vec<u8> {
    instance_of(CT_IMAGE, SOP)
}

/// The same test object with another SOP class and instance UID.
fn instance_of(sop_class: &str, sop: &str) -> Vec<u8> {
    let mut obj = identified(sop_class, sop, "CT");
    for (tag, vr, value) in [
        (tags::SERIES_DATE, VR::DA, "20261201"),
        (tags::SERIES_TIME, VR::TM, "101500"),
        (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
    ] {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    describe_pixels(&mut obj, 4, 4, 1, 8);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels()),
    ));
    part10(obj, "1.2.840.10008.1.2.1", sop_class, sop)
}

/// A test object's class, identity, patient and modality.
fn identified(sop_class: &str, sop: &str, modality: &str) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    for (tag, vr, value) in [
        (tags::SOP_CLASS_UID, VR::UI, sop_class),
        (tags::SOP_INSTANCE_UID, VR::UI, sop),
        (tags::STUDY_INSTANCE_UID, VR::UI, STUDY),
        (tags::SERIES_INSTANCE_UID, VR::UI, SERIES),
        (tags::PATIENT_NAME, VR::PN, "Handler^Hannah"),
        (tags::PATIENT_ID, VR::LO, "H-1"),
        (tags::MODALITY, VR::CS, modality),
    ] {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    obj
}

/// Rows, columns, samples per pixel and `bits` stored (unsigned).
fn describe_pixels(obj: &mut InMemDicomObject, rows: u16, columns: u16, samples: u16, bits: u16) {
    for (tag, v) in [
        (tags::ROWS, rows),
        (tags::COLUMNS, columns),
        (tags::SAMPLES_PER_PIXEL, samples),
        (tags::BITS_ALLOCATED, if bits > 8 { 16 } else { 8 }),
        (tags::BITS_STORED, bits),
        (tags::HIGH_BIT, bits - 1),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    }
}

/// `obj` as a Part 10 file in transfer syntax `ts`.
fn part10(obj: InMemDicomObject, ts: &str, sop_class: &str, sop: &str) -> Vec<u8> {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop),
        )
        .unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

/// A STOW-RS request of one instance from the uploader.
fn stow() -> Request<Body> {
    stow_part(&instance())
}

fn stow_part(part: &[u8]) -> Request<Body> {
    stow_as("modality", part)
}

/// A STOW-RS body of one part: its Content-Type and bytes.
fn stow_body(part: &[u8]) -> (String, Vec<u8>) {
    let boundary = "custos-handler-test";
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(part);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let media = format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    (media, body)
}

fn stow_as(user: &str, part: &[u8]) -> Request<Body> {
    let (media, body) = stow_body(part);
    request(user, "POST", "/dicom-web/studies")
        .header(header::CONTENT_TYPE, media)
        .header(header::ACCEPT, "application/dicom+json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn strangers_get_401_and_only_healthz_is_open() {
    let f = fixture("strangers").await;
    let r = f.call(Request::get("/healthz")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f.call(Request::get("/dicom-web/studies")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::WWW_AUTHENTICATE).is_some());
    assert_eq!(r.headers.get("x-content-type-options").unwrap(), "nosniff");
    let r = f
        .call(Request::get("/dicom-web/studies").header(
            header::AUTHORIZATION,
            basic("rad", "not the password at all"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_stored_instance_is_found_described_rendered_and_guarded() {
    let f = fixture("dicomweb").await;
    let r = f.send(stow()).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // The uploader may store but not search.
    let r = f.get("modality", "/dicom-web/studies").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = f
        .get("rad", "/dicom-web/studies?PatientName=handler*")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "application/dicom+json");
    let studies = r.json();
    assert_eq!(studies.as_array().unwrap().len(), 1, "{studies}");
    assert_eq!(studies[0]["0020000D"]["Value"][0], STUDY);

    // Series level carries the series date and time, and matches on them.
    let r = f
        .get(
            "rad",
            &format!("/dicom-web/studies/{STUDY}/series?SeriesDate=20261101-20261231"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let series = r.json();
    assert_eq!(series[0]["00080021"]["Value"][0], "20261201", "{series}");
    assert_eq!(series[0]["00080031"]["Value"][0], "101500", "{series}");
    assert!(r.headers.get(header::WARNING).is_none());
    let r = f
        .get(
            "rad",
            &format!("/dicom-web/studies/{STUDY}/series?SeriesDate=20250101"),
        )
        .await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(0));

    let base = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}");
    let r = f.get("rad", &format!("{base}/metadata")).await;
    assert_eq!(r.status, StatusCode::OK);
    let meta = r.json();
    assert_eq!(
        meta[0]["00100010"]["Value"][0]["Alphabetic"],
        "Handler^Hannah"
    );
    let bulk = meta[0]["7FE00010"]["BulkDataURI"].as_str().unwrap();
    assert!(
        bulk.ends_with(&format!("{base}/bulkdata/7FE00010")),
        "{bulk}"
    );
    // How it is stored (viewers choose their decoder, or video player, by it).
    assert_eq!(
        meta[0]["00083002"],
        serde_json::json!({"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]})
    );

    let r = f
        .call(
            request("rad", "GET", &format!("{base}/rendered")).header(header::ACCEPT, "image/png"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type(), "image/png");
    assert!(r.body.starts_with(b"\x89PNG"));

    // A viewport that would scale the frame up past the pixel budget is
    // refused before any memory is taken; a small one is rendered.
    let r = f
        .get("rad", &format!("{base}/rendered?viewport=8192,8192"))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = f
        .get("rad", &format!("{base}/rendered?viewport=64,64"))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Series and study thumbnails show an image of theirs, not the key
    // object selections stored beside it (the middle instance is one).
    let ko = "1.2.840.10008.5.1.4.1.1.88.59";
    for sop in [format!("{SOP}.1"), format!("{SOP}.2")] {
        let note = part10(identified(ko, &sop, "KO"), "1.2.840.10008.1.2.1", ko, &sop);
        assert_eq!(f.send(stow_part(&note)).await.status, StatusCode::OK);
    }
    for path in [
        format!("/dicom-web/studies/{STUDY}/thumbnail"),
        format!("/dicom-web/studies/{STUDY}/series/{SERIES}/thumbnail"),
    ] {
        let r = f.get("rad", &path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.content_type(), "image/jpeg", "{path}");
        assert!(r.body.starts_with(&[0xFF, 0xD8]), "{path}");
    }

    // The native frame, byte for byte; a frame that does not exist is 404.
    let r = f.get("rad", &format!("{base}/frames/1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.windows(16).any(|w| w == pixels().as_slice()),
        "the frame's bytes are in the response"
    );
    // An empty Accept is no Accept: the default answer, not 406.
    for path in [
        format!("{base}/frames/1"),
        format!("{base}/rendered"),
        base.clone(),
    ] {
        let r = f
            .call(request("rad", "GET", &path).header(header::ACCEPT, ""))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    // Single-part bulk data when asked for plainly: exactly the pixel bytes.
    let r = f
        .call(
            request("rad", "GET", &format!("{base}/bulkdata/7FE00010"))
                .header(header::ACCEPT, "application/octet-stream"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, pixels());
    let r = f.get("rad", &format!("{base}/frames/2")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f.get("rad", &format!("{base}/rendered?quality=0")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The radiologist may not delete; the admin may, and then it is gone.
    let study = format!("/api/studies/{STUDY}");
    let r = f.call(request("rad", "DELETE", &study)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f.call(request("boss", "DELETE", &study)).await;
    assert!(r.status.is_success(), "{}", r.status);
    let r = f.get("rad", &format!("{base}/metadata")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn users_are_added_once_and_changed_explicitly() {
    let f = fixture("users").await;
    let newbie = serde_json::json!({
        "name": "newbie", "role": "radiologist", "password": "a new user's passphrase"
    });
    let r = f.json("boss", "POST", "/api/users", newbie.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = f.json("boss", "POST", "/api/users", newbie).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = f
        .json(
            "boss",
            "PUT",
            "/api/users/newbie",
            serde_json::json!({ "role": "auditor" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let users = f.get("boss", "/api/users").await.json();
    let role = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "newbie")
        .map(|u| u["role"].clone());
    assert_eq!(role, Some("auditor".into()), "{users}");
    // Nobody changes their own role; only admins list users.
    let r = f
        .json(
            "boss",
            "PUT",
            "/api/users/boss",
            serde_json::json!({ "role": "auditor" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        f.get("rad", "/api/users").await.status,
        StatusCode::FORBIDDEN
    );
    // A weak password is refused with the reason.
    let r = f
        .json(
            "boss",
            "PUT",
            "/api/users/newbie",
            serde_json::json!({ "password": "short" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let why = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("characters"), "{why}");
}

/// The session cookie a login response set.
fn session_cookie(r: &Reply) -> String {
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

fn with_cookie(cookie: &str, method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost")
        .header(header::COOKIE, cookie)
}

async fn login(f: &Fixture, user: &str, password: &str, origin: Option<&str>) -> Reply {
    let mut r = Request::post("/api/login")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(o) = origin {
        r = r.header(header::ORIGIN, o);
    }
    f.send(
        r.body(Body::from(
            serde_json::json!({ "user": user, "password": password }).to_string(),
        ))
        .unwrap(),
    )
    .await
}

#[tokio::test]
async fn browser_sessions_log_in_refuse_cross_site_changes_and_log_out() {
    let f = fixture("sessions").await;
    f.send(stow()).await;
    // A wrong password: 401 without a Basic challenge (no browser dialog).
    let r = login(&f, "boss", "not the password at all", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::WWW_AUTHENTICATE).is_none());
    // A login posted from another site is refused before the password is checked.
    let r = login(&f, "boss", PASSWORD, Some("https://evil.example")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = login(&f, "boss", PASSWORD, Some("https://localhost")).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = session_cookie(&r);
    assert!(cookie.starts_with("__Host-custos-session="), "{cookie}");
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    let me = f.call(with_cookie(&cookie, "GET", "/api/session")).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["user"], "boss");
    assert_eq!(me.json()["csrf"], csrf.as_str());
    // Reading with the cookie works.
    let r = f
        .call(with_cookie(&cookie, "GET", "/dicom-web/studies"))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // A state change needs the CSRF token, and this site as its origin.
    let delete = |token: Option<&str>, origin: Option<&str>| {
        let mut r = with_cookie(&cookie, "DELETE", &format!("/api/studies/{STUDY}"));
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        r.body(Body::empty()).unwrap()
    };
    assert_eq!(
        f.send(delete(None, None)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.send(delete(Some("guessed"), None)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.send(delete(Some(&csrf), Some("https://evil.example")))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let r = f.send(delete(Some(&csrf), Some("https://localhost"))).await;
    assert!(r.status.is_success(), "{}", r.status);

    // Logout ends the session and clears the cookie.
    let out = f
        .call(with_cookie(&cookie, "DELETE", "/api/session").header("x-csrf-token", &csrf))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let r = f
        .call(with_cookie(&cookie, "GET", "/dicom-web/studies"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::WWW_AUTHENTICATE).is_none());
}

#[tokio::test]
async fn a_session_ends_when_its_user_is_disabled_or_gets_a_new_password() {
    let f = fixture("session-end").await;
    let cookie = session_cookie(&login(&f, "rad", PASSWORD, None).await);
    let read = || {
        with_cookie(&cookie, "GET", "/dicom-web/studies")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(f.send(read()).await.status, StatusCode::OK);
    let r = f
        .json(
            "boss",
            "PUT",
            "/api/users/rad",
            serde_json::json!({ "password": "another good passphrase" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(f.send(read()).await.status, StatusCode::UNAUTHORIZED);

    let cookie = session_cookie(&login(&f, "modality", PASSWORD, None).await);
    let r = f
        .json(
            "boss",
            "PUT",
            "/api/users/modality",
            serde_json::json!({ "disabled": true }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = f.call(with_cookie(&cookie, "GET", "/api/session")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Changes to users, tokens and peers made with a browser session need its
/// password given recently: at login, or again with `POST
/// /api/session/confirm` (here the window is 2 s). Basic credentials carry
/// the password each time.
#[tokio::test]
async fn account_changes_from_a_session_need_its_password_given_recently() {
    let f = fixture_with(
        "confirm",
        custos_auth::SessionPolicy {
            confirmed_for: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await;
    let session = login(&f, "boss", PASSWORD, None).await;
    let (cookie, csrf) = (
        session_cookie(&session),
        session.json()["csrf"].as_str().unwrap().to_string(),
    );
    let send = |method: &str, uri: &str, body: serde_json::Value| {
        with_cookie(&cookie, method, uri)
            .header("x-csrf-token", &csrf)
            .header(header::ORIGIN, "https://localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let user = |name: &str| serde_json::json!({ "name": name, "role": "admin", "password": "a second pair of 42 hands" });
    // Just logged in: the password was given.
    let r = f.send(send("POST", "/api/users", user("deputy"))).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // A while later: asked for it again, nothing changed.
    let token = serde_json::json!({ "user": "boss", "expires_days": 1 });
    for (method, uri, body) in [
        ("POST", "/api/users", user("intruder")),
        (
            "PUT",
            "/api/users/deputy",
            serde_json::json!({ "disabled": true }),
        ),
        ("DELETE", "/api/users/deputy", serde_json::json!({})),
        ("POST", "/api/tokens", token.clone()),
    ] {
        let r = f.send(send(method, uri, body)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(r.json()["confirm"], true, "{method} {uri}");
    }
    let users = f.get("boss", "/api/users").await.json();
    let names: Vec<_> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].clone())
        .collect();
    assert!(!names.contains(&"intruder".into()), "{users}");
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "deputy" && u["disabled"] == false)
    );
    // Reading and other work go on without it.
    let r = f.call(with_cookie(&cookie, "GET", "/api/users")).await;
    assert_eq!(r.status, StatusCode::OK);
    // A wrong password does not confirm (and counts as a failed login).
    let r = f
        .send(send(
            "POST",
            "/api/session/confirm",
            serde_json::json!({ "password": "a guess" }),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f.send(send("POST", "/api/tokens", token.clone())).await;
    assert_eq!(r.json()["confirm"], true);
    // Someone else's password, sent as Basic beside this session's cookie,
    // is that other user's: it does not confirm this session.
    let r = f
        .send(
            request("rad", "POST", "/api/session/confirm")
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({ "password": PASSWORD }).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = f.send(send("POST", "/api/tokens", token.clone())).await;
    assert_eq!(r.json()["confirm"], true, "still not confirmed");
    // Nor do webhooks (a lasting feed out) or peers go without it.
    let r = f
        .send(send(
            "POST",
            "/api/peers",
            serde_json::json!({ "ae_title": "ROGUE", "host": "127.0.0.1", "port": 104, "allow": ["get"] }),
        ))
        .await;
    assert_eq!(r.json()["confirm"], true);
    let r = f
        .send(send(
            "POST",
            "/api/webhooks",
            serde_json::json!({ "url": "https://127.0.0.1/hook", "events": ["study.stored"] }),
        ))
        .await;
    assert_eq!(r.json()["confirm"], true);
    // The right one does.
    let r = f
        .send(send(
            "POST",
            "/api/session/confirm",
            serde_json::json!({ "password": PASSWORD }),
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    let r = f.send(send("POST", "/api/tokens", token)).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    // Basic credentials are the password itself.
    let r = f
        .json(
            "boss",
            "PUT",
            "/api/users/deputy",
            serde_json::json!({ "disabled": true }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Only a browser session confirms.
    let r = f
        .json(
            "boss",
            "POST",
            "/api/session/confirm",
            serde_json::json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn users_change_their_own_password_by_proving_the_current_one() {
    let f = fixture("own-password").await;
    let session = login(&f, "rad", PASSWORD, None).await;
    let cookie = session_cookie(&session);
    let csrf = session.json()["csrf"].as_str().unwrap().to_string();
    let change = |current: &str, new: &str| {
        request("rad", "PUT", "/api/session/password")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({ "current": current, "new": new }).to_string(),
            ))
            .unwrap()
    };
    // A wrong current password: 403 (the page keeps its session), counted
    // as a failed login.
    let r = f
        .send(change("not my password", "a new reading room 7"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A new password the policy refuses.
    let r = f.send(change(PASSWORD, "short")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A read-only token cannot, whatever it knows.
    let token = f
        .json(
            "boss",
            "POST",
            "/api/tokens",
            serde_json::json!({ "user": "rad", "expires_days": 1, "read_only": true }),
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        f.send(
            Request::put("/api/session/password")
                .header(header::HOST, "localhost")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({ "current": PASSWORD, "new": "a new reading room 7" })
                        .to_string()
                ))
                .unwrap()
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let r = f.send(change(PASSWORD, "a new reading room 7")).await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    // The old password is gone, the new one works, the old session ended.
    assert_eq!(
        login(&f, "rad", PASSWORD, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&f, "rad", "a new reading room 7", None).await.status,
        StatusCode::OK
    );
    let r = f
        .call(with_cookie(&cookie, "GET", "/api/session").header("x-csrf-token", &csrf))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Wrong current passwords count as failed logins: from a browser
    // session (someone else's, left open), the lockout (after 5 here)
    // applies to this endpoint as to the login.
    let session = login(&f, "rad", "a new reading room 7", None).await;
    let (cookie, csrf) = (
        session_cookie(&session),
        session.json()["csrf"].as_str().unwrap().to_string(),
    );
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let wrong = with_cookie(&cookie, "PUT", "/api/session/password")
            .header("x-csrf-token", &csrf)
            .header(header::ORIGIN, "https://localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({ "current": "a guess", "new": "a guessed room 77" }).to_string(),
            ))
            .unwrap();
        statuses.push(f.send(wrong).await.status);
    }
    assert_eq!(statuses[0], StatusCode::FORBIDDEN, "{statuses:?}");
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_ui_is_served_without_login_with_a_strict_policy_and_no_patient_data() {
    let f = fixture("ui").await;
    f.send(stow()).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/viewer.js", "text/javascript"),
        ("/ui/dom.js", "text/javascript"),
        ("/ui/upload.js", "text/javascript"),
        ("/ui/admin.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = f.call(Request::get(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.content_type().starts_with(kind), "{path}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(!String::from_utf8_lossy(&r.body).contains("Hannah"));
    }
    let r = f.call(Request::get("/ui/secrets")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The API keeps its own, stricter policy.
    let r = f.get("rad", "/dicom-web/studies").await;
    assert_eq!(
        r.headers["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
}

#[tokio::test]
async fn a_stow_part_without_preamble_is_stored_and_unknown_query_keys_are_named() {
    let f = fixture("no-preamble").await;
    // What dicomweb-client sends for a pydicom Dataset: the file meta group
    // first, no 128-byte preamble, no DICM.
    let file = instance();
    assert_eq!(&file[128..132], b"DICM");
    let r = f.send(stow_part(&file[132..])).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // Retrieve URL is type 2 in the answer: present, empty when the request
    // named no study.
    assert_eq!(r.json()["00081190"], serde_json::json!({ "vr": "UR" }));
    let r = f
        .get(
            "rad",
            "/dicom-web/studies?PatientID=H-1&fuzzymatching=false&NotAKey=1&00991099=x&NumberOfStudyRelatedInstances=5",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let warning = r.headers[header::WARNING].to_str().unwrap();
    assert!(
        warning.starts_with("299 ")
            && warning.contains("NotAKey")
            && warning.contains("00991099")
            && warning.contains("NumberOfStudyRelatedInstances"),
        "{warning}"
    );
    // Fuzzy matching asked for and not done: said so (PS3.18 8.3.4.4).
    let r = f
        .get(
            "rad",
            "/dicom-web/studies?PatientName=handler*&fuzzymatching=true",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let warnings: Vec<&str> = r
        .headers
        .get_all(header::WARNING)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("299 ") && w.contains("fuzzymatching")),
        "{warnings:?}"
    );
    // Garbage is still refused, with a failure in the answer.
    let r = f
        .send(stow_part(b"\x02\x00garbage that is not a meta group"))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test]
async fn a_radiologist_stores_derived_objects_but_not_images() {
    let f = fixture("derived").await;
    let sr = "1.2.840.10008.5.1.4.1.1.88.22";
    let r = f
        .send(stow_as(
            "rad",
            &instance_of(sr, "1.2.826.0.1.3680043.8.498.9.1"),
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // An image from the same radiologist is refused as not authorized
    // (0x0124), the failure item naming it.
    let r = f.send(stow_as("rad", &instance())).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let failed = &r.json()["00081198"]["Value"][0];
    assert_eq!(failed["00081197"]["Value"][0], 0x0124);
    assert_eq!(failed["00081155"]["Value"][0], SOP, "{failed}");
    assert_eq!(
        failed["00081150"]["Value"][0], "1.2.840.10008.5.1.4.1.1.2",
        "{failed}"
    );
    let r = f
        .get(
            "rad",
            &format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances"),
        )
        .await;
    let found: Vec<_> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["00080016"]["Value"][0].clone())
        .collect();
    assert_eq!(found, vec![serde_json::json!(sr)], "only the SR is stored");
    // The uploader stores images, derived objects included.
    assert_eq!(
        f.send(stow_as("modality", &instance())).await.status,
        StatusCode::OK
    );
    let r = f
        .send(stow_as(
            "modality",
            &instance_of(sr, "1.2.826.0.1.3680043.8.498.9.2"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn qido_sorts_by_stored_attributes_and_refuses_computed_ones() {
    let f = fixture("orderby").await;
    assert_eq!(f.send(stow()).await.status, StatusCode::OK);
    for ok in [
        "orderby=-StudyDate,PatientName",
        "orderby=00100020&orderby=-StudyTime",
    ] {
        let r = f.get("rad", &format!("/dicom-web/studies?{ok}")).await;
        assert_eq!(r.status, StatusCode::OK, "{ok}");
        assert_eq!(r.json().as_array().unwrap().len(), 1);
    }
    // Counts are computed, SOP Instance UID is below the study level.
    for bad in [
        "orderby=NumberOfStudyRelatedInstances",
        "orderby=SOPInstanceUID",
        "orderby=-Nonsense",
    ] {
        let r = f.get("rad", &format!("/dicom-web/studies?{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = f
        .get(
            "rad",
            &format!("/dicom-web/studies/{STUDY}/series?orderby=-SeriesNumber"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_part_arriving_a_byte_at_a_time_is_stored() {
    let f = fixture("byte-chunks").await;
    // A bare file meta group first (no preamble), each byte its own chunk:
    // the head is looked at again only as it doubles, and still decided.
    let file = instance();
    let boundary = "custos-handler-test";
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(&file[132..]);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.into_iter().map(|b| Ok(vec![b])).collect();
    let request = request("modality", "POST", "/dicom-web/studies")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )
        .header(header::ACCEPT, "application/dicom+json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let r = f.send(request).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = f.get("rad", "/dicom-web/studies?PatientID=H-1").await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
}

/// A failed login's claimed name goes into the audit record only when it
/// could be a user's (at most 64 characters): a stranger cannot write a
/// megabyte into the trail per attempt.
#[tokio::test]
async fn a_name_too_long_for_any_user_is_not_claimed() {
    let dir = std::env::temp_dir().join(format!("custos-web-longname-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let index = Arc::new(custos_index::SqliteIndex::open(dir.join("index.db")).unwrap());
    let auth = Authenticator::new(
        index,
        None,
        custos_auth::LockoutPolicy {
            after: 5,
            duration: Duration::from_secs(60),
        },
    );
    let ip = Some("127.0.0.9".parse().unwrap());
    for (name, expected) in [
        ("x".repeat(500_000), None),
        ("mallory".to_string(), Some("mallory")),
    ] {
        let secret = custos_auth::Secret::Password {
            user: &name,
            password: "guess",
        };
        match auth.authenticate(secret, ip).await {
            Err(custos_auth::Refusal::Invalid { claimed, .. }) => {
                assert_eq!(claimed.as_deref(), expected)
            }
            Err(other) => panic!("refused otherwise: {other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// ModalitiesInStudy takes a list as a URL gives it: comma-separated (OHIF's
/// modality filter sends `ModalitiesInStudy=CT%2CMR`) or repeated; any of
/// the modalities matches.
#[tokio::test]
async fn qido_modalities_in_study_takes_a_list() {
    let f = fixture("modalities").await;
    assert_eq!(f.send(stow()).await.status, StatusCode::OK);
    for (query, found) in [
        ("ModalitiesInStudy=CT", 1),
        ("ModalitiesInStudy=MR", 0),
        ("ModalitiesInStudy=CT%2CMR", 1),
        ("ModalitiesInStudy=MR,CT", 1),
        ("ModalitiesInStudy=MR%2CUS", 0),
        ("ModalitiesInStudy=MR&ModalitiesInStudy=CT", 1),
        ("ModalitiesInStudy=MR&ModalitiesInStudy=US", 0),
        ("ModalitiesInStudy=C*", 1),
        ("ModalitiesInStudy=M?", 0),
        ("ModalitiesInStudy=CT%2C", 1),
        // A UID repeated is a list of them, as a comma-separated one is.
        (
            &format!("StudyInstanceUID=1.2.3&StudyInstanceUID={STUDY}"),
            1,
        ),
        (
            &format!("StudyInstanceUID={STUDY}&StudyInstanceUID=1.2.3"),
            1,
        ),
        ("StudyInstanceUID=1.2.3&StudyInstanceUID=1.2.4", 0),
    ] {
        let r = f.get("rad", &format!("/dicom-web/studies?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}");
        assert_eq!(r.json().as_array().map_or(0, Vec::len), found, "{query}");
    }
}

/// OHIF, served from this origin and signed in by the browser session, saves
/// a report by STOW-RS without our CSRF token: accepted when the browser says
/// the request comes from this origin (Sec-Fetch-Site, which no page can
/// set) and Origin agrees; refused from anywhere else, and for every other
/// state change.
#[tokio::test]
async fn the_viewer_saves_a_report_by_stow_rs_with_the_session() {
    let f = fixture("viewer-stow").await;
    let r = login(&f, "rad", PASSWORD, Some("https://localhost")).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = session_cookie(&r);
    let sr = "1.2.840.10008.5.1.4.1.1.88.22";
    let stow = |sop: &str, origin: Option<&str>, site: Option<&str>| {
        let (media, body) = stow_body(&instance_of(sr, sop));
        let mut r =
            with_cookie(&cookie, "POST", "/dicom-web/studies").header(header::CONTENT_TYPE, media);
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.body(Body::from(body)).unwrap()
    };
    let here = Some("https://localhost");
    let refused = [
        stow("1.2.826.0.1.3680043.8.498.9.11", None, Some("same-origin")),
        stow("1.2.826.0.1.3680043.8.498.9.12", here, None),
        stow("1.2.826.0.1.3680043.8.498.9.13", here, Some("same-site")),
        stow(
            "1.2.826.0.1.3680043.8.498.9.14",
            Some("https://evil.example"),
            Some("same-origin"),
        ),
    ];
    for request in refused {
        assert_eq!(f.send(request).await.status, StatusCode::FORBIDDEN);
    }
    let r = f
        .send(stow(
            "1.2.826.0.1.3680043.8.498.9.15",
            here,
            Some("same-origin"),
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // Only STOW-RS: a deletion still needs the token.
    let delete = with_cookie(&cookie, "DELETE", &format!("/api/studies/{STUDY}"))
        .header(header::ORIGIN, "https://localhost")
        .header("sec-fetch-site", "same-origin")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(delete).await.status, StatusCode::FORBIDDEN);
}

/// `Accept: application/dicom` on an instance resource gets the instance as
/// the whole body (PS3.18 Table 10.4.4-1), not wrapped in multipart (a tool
/// saving the answer as a .dcm file got MIME framing); a study or series is
/// multipart whatever is asked.
#[tokio::test]
async fn an_instance_asked_for_as_application_dicom_is_the_body_itself() {
    let f = fixture("single-part").await;
    assert_eq!(f.send(stow()).await.status, StatusCode::OK);
    let fetch = |path: String, accept: &'static str| {
        f.call(request("rad", "GET", &path).header(header::ACCEPT, accept))
    };
    let path = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}");
    let r = fetch(path.clone(), "application/dicom").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type().starts_with("application/dicom"),
        "{}",
        r.content_type()
    );
    assert_eq!(r.body, instance(), "the stored file, byte for byte");
    // Multipart first in the client's order: multipart.
    let r = fetch(
        path,
        "multipart/related; type=\"application/dicom\", application/dicom; q=0.5",
    )
    .await;
    assert!(
        r.content_type().starts_with("multipart/related"),
        "{}",
        r.content_type()
    );
    let r = fetch(format!("/dicom-web/studies/{STUDY}"), "application/dicom").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type().starts_with("multipart/related"),
        "{}",
        r.content_type()
    );
}

/// WADO-RS honours every media range of Accept, not the first alone: an
/// instance goes in the first transfer syntax it can be had in (a client
/// listing JPEG 2000 first and Explicit VR Little Endian second gets the
/// latter for an uncompressed instance); q=0 rules a range out.
#[tokio::test]
async fn wado_rs_takes_the_first_acceptable_of_several_ranges() {
    let f = fixture("accept-ranges").await;
    assert_eq!(f.send(stow()).await.status, StatusCode::OK);
    let j2k =
        r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90"#;
    let ele = r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1"#;
    let fetch = |accept: String| {
        f.call(
            request("rad", "GET", &format!("/dicom-web/studies/{STUDY}"))
                .header(header::ACCEPT, accept),
        )
    };
    let r = fetch(j2k.to_string()).await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    let r = fetch(format!("{j2k}, {ele}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"),
        "{}",
        &body[..body.len().min(300)]
    );
    assert!(
        r.body.windows(4).any(|w| w == b"DICM"),
        "the instance is in the body"
    );
    let r = fetch(format!("{ele}; q=0, {j2k}")).await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
}

/// One frame rendered at `/frames/{n}/rendered` (PS3.18 10.4, what
/// dicomweb-client asks for), as `/rendered?frame=n` renders it; WADO-URI's
/// frameNumber picks the frame too.
#[tokio::test]
async fn a_frame_is_rendered_by_its_own_resource_and_by_wado_uri() {
    let f = fixture("frame-rendered").await;
    assert_eq!(f.send(stow()).await.status, StatusCode::OK);
    let base = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}");
    let png = |uri: String| f.call(request("rad", "GET", &uri).header(header::ACCEPT, "image/png"));
    let by_resource = png(format!("{base}/frames/1/rendered")).await;
    assert_eq!(by_resource.status, StatusCode::OK);
    assert_eq!(by_resource.headers[header::CONTENT_TYPE], "image/png");
    let by_parameter = png(format!("{base}/rendered?frame=1")).await;
    assert_eq!(by_resource.body, by_parameter.body);
    assert_eq!(
        png(format!("{base}/frames/1,2/rendered")).await.status,
        StatusCode::BAD_REQUEST
    );
    let uri = |frame: u32| {
        format!(
            "/wado?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={SOP}&contentType=image/png&frameNumber={frame}"
        )
    };
    let first = f.get("rad", &uri(1)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, by_resource.body);
    // Rows alone: the 4x4 image comes back 2x2 (columns follow the aspect ratio).
    let r = f.get("rad", &format!("{}&rows=2", uri(1))).await;
    assert_eq!(r.status, StatusCode::OK);
    let png = r.body;
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (2, 2), "width and height of the PNG");
    // The image has one frame: asking for the second is an error, not frame 1.
    assert!(f.get("rad", &uri(2)).await.status.is_client_error());
}

/// A UID in a QIDO path is the search's scope: the query string may repeat
/// it but not widen it (`StudyInstanceUID=` is universal matching) or move
/// it to another study.
#[tokio::test]
async fn qido_path_uids_cannot_be_widened_by_the_query_string() {
    let f = fixture("qido-scope").await;
    assert_eq!(f.send(stow()).await.status, StatusCode::OK);
    let other = "1.2.826.0.1.3680043.8.498.77";
    let series = |q: &str| format!("/dicom-web/studies/{other}/series{q}");
    // The study in the path has no series here, whatever the query says.
    for q in ["", "?StudyInstanceUID=", "?StudyInstanceUID=*"] {
        let r = f.get("rad", &series(q)).await;
        assert_eq!(r.status, StatusCode::OK, "{q}");
        assert_eq!(r.json().as_array().map_or(0, Vec::len), 0, "{q}");
    }
    let moved = series(&format!("?StudyInstanceUID={STUDY}"));
    assert_eq!(f.get("rad", &moved).await.status, StatusCode::BAD_REQUEST);
    let r = f
        .get(
            "rad",
            &format!("/dicom-web/studies/{STUDY}/series?StudyInstanceUID={STUDY}"),
        )
        .await;
    assert_eq!(r.json().as_array().map_or(0, Vec::len), 1);
}

/// An MPEG-4 video (Video Endoscopic Image Storage): its encapsulated
/// stream in three fragments, 300 pictures in it.
fn video_instance(stream: &[&[u8]]) -> Vec<u8> {
    const VIDEO_ENDOSCOPIC: &str = "1.2.840.10008.5.1.4.1.1.77.1.1.1";
    encapsulated_instance(
        VIDEO_ENDOSCOPIC,
        "1.2.840.10008.1.2.4.102",
        8,
        "300",
        stream,
    )
}

/// An instance of `sop_class` stored in transfer syntax `ts`, `bits` bits
/// stored, `frames` frames, its pixel data the fragments `stream`.
fn encapsulated_instance(
    sop_class: &str,
    ts: &str,
    bits: u16,
    frames: &str,
    stream: &[&[u8]],
) -> Vec<u8> {
    use dicom_core::value::{PixelFragmentSequence, Value};
    let mut obj = identified(sop_class, SOP, "ES");
    for (tag, vr, value) in [
        (tags::NUMBER_OF_FRAMES, VR::IS, frames),
        (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "YBR_PARTIAL_420"),
    ] {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    describe_pixels(&mut obj, 480, 640, 3, bits);
    let fragments: Vec<Vec<u8>> = stream.iter().map(|f| f.to_vec()).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), fragments)),
    ));
    part10(obj, ts, sop_class, SOP)
}

/// 12-bit JPEG Extended cannot be decoded here: a client that will not take
/// it as stored is refused before the response starts (it was offered
/// Explicit VR Little Endian and the part then failed mid-stream).
#[tokio::test]
async fn undecodable_jpeg_extended_is_refused_up_front() {
    let f = fixture("jpeg-12").await;
    let sc = "1.2.840.10008.5.1.4.1.1.7";
    let jpeg: [&[u8]; 1] = [b"\xFF\xD8\xFF\xC1\0\x0B\x0C\0\x04\0\x04\x01\x01\x11\0\xFF\xD9\0"];
    let part = encapsulated_instance(sc, "1.2.840.10008.1.2.4.51", 12, "1", &jpeg);
    let r = f.send(stow_part(&part)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let fetch = |accept: &'static str| {
        f.call(
            request("rad", "GET", &format!("/dicom-web/studies/{STUDY}"))
                .header(header::ACCEPT, accept),
        )
    };
    let ele = r#"multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1"#;
    assert_eq!(fetch(ele).await.status, StatusCode::NOT_ACCEPTABLE);
    let r = fetch(r#"multipart/related; type="application/dicom"; transfer-syntax=*"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.windows(4).any(|w| w == b"DICM"));
    let uri = format!(
        "/wado?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={SOP}&contentType=application%2Fdicom&transferSyntax=1.2.840.10008.1.2.1"
    );
    assert_eq!(f.get("rad", &uri).await.status, StatusCode::NOT_ACCEPTABLE);
}

/// Asked to de-identify, WADO-URI refuses rather than hand out the identified
/// object (PS3.18 9.2); not asked, it hands the object out as stored.
#[tokio::test]
async fn wado_uri_refuses_what_it_cannot_de_identify() {
    let f = fixture("wado-uri-anonymize").await;
    assert_eq!(f.send(stow_part(&instance())).await.status, StatusCode::OK);
    let uri = format!(
        "/wado?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={SOP}&contentType=application%2Fdicom"
    );
    let r = f.get("rad", &format!("{uri}&anonymize=yes")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(!r.body.windows(4).any(|w| w == b"DICM"));
    let r = f.get("rad", &uri).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.windows(4).any(|w| w == b"DICM"));
}

/// A video's bulk data is its stream as stored, whole: OHIF 3 asks for the
/// Pixel Data's BulkDataURI as multipart application/octet-stream and plays
/// the part it gets; a client asking for video/mp4 gets it so labelled.
#[tokio::test]
async fn a_video_is_handed_out_as_its_stream() {
    let f = fixture("video").await;
    let pieces: [&[u8]; 3] = [b"\0\0\0\x18ftypmp42\0\0\0\0", &[0x55; 1000], &[0xAA; 78]];
    let r = f.send(stow_part(&video_instance(&pieces))).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let stream = pieces.concat();
    let base = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}");
    let meta = f.get("rad", &format!("{base}/metadata")).await.json();
    let uri = meta[0]["7FE00010"]["BulkDataURI"]
        .as_str()
        .unwrap_or_else(|| panic!("{meta}"));
    let path = &uri[uri.find("/dicom-web/").unwrap()..];
    let fetch =
        |accept: &'static str| f.call(request("rad", "GET", path).header(header::ACCEPT, accept));
    // What OHIF's dicomweb-client sends (video/mp4 is not among its types).
    let r = fetch(r#"multipart/related; type="application/octet-stream""#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type().starts_with("multipart/related"),
        "{}",
        r.content_type()
    );
    let body = &r.body;
    let head_end = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&body[..head_end]);
    assert!(
        head.contains(
            "Content-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.102"
        ),
        "{head}"
    );
    assert_eq!(&body[head_end..head_end + stream.len()], stream.as_slice());
    assert!(body[head_end + stream.len()..].starts_with(b"\r\n--"));
    // As a video, single part.
    let r = fetch("video/mp4").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type().starts_with("video/mp4"),
        "{}",
        r.content_type()
    );
    assert_eq!(r.body, stream);
    // The same by the accept parameter (what a <video src> can carry),
    // which wins over the header.
    let r = f
        .call(
            request("rad", "GET", &format!("{path}?accept=video%2Fmp4"))
                .header(header::ACCEPT, "image/jpeg"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.content_type().starts_with("video/mp4"),
        "{}",
        r.content_type()
    );
    assert_eq!(r.body, stream);
    // Its fragments are not frames.
    let r = f.get("rad", &format!("{base}/frames/2")).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
}

/// Editing a peer (its port, as the admin page's form sends it) keeps its
/// certificate pins; only an explicit empty value removes one.
#[tokio::test]
async fn editing_a_peer_keeps_its_certificate_pins() {
    let f = fixture("peer-pins").await;
    let fp = format!("SHA256:{}", "ab".repeat(32));
    let put = |body: serde_json::Value| f.json("boss", "POST", "/api/peers", body);
    let r = put(serde_json::json!({
        "ae_title": "CT01", "host": "127.0.0.1", "port": 104, "allow": ["store"],
        "tls_required": true, "cert_fingerprint": fp, "cert_subject": "CN=CT01,O=Radiology"
    }))
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let pinned = |peers: serde_json::Value| {
        let p = peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["ae_title"] == "CT01")
            .cloned()
            .unwrap();
        (
            p["port"].clone(),
            p["cert_fingerprint"].clone(),
            p["cert_subject"].clone(),
        )
    };
    // The form's edit: no pin fields at all.
    let r = put(serde_json::json!({
        "ae_title": "CT01", "host": "127.0.0.1", "port": 11112, "allow": ["store"], "tls_required": true
    }))
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (port, fingerprint, subject) = pinned(f.get("boss", "/api/peers").await.json());
    assert_eq!(port, 11112);
    assert_eq!(
        fingerprint,
        serde_json::json!(fp.to_lowercase().replace("sha256:", "SHA256:"))
    );
    assert!(
        subject.as_str().is_some_and(|s| s.contains("CT01")),
        "{subject}"
    );
    // Removed only when asked.
    let r = put(serde_json::json!({
        "ae_title": "CT01", "host": "127.0.0.1", "port": 11112, "allow": ["store"],
        "tls_required": true, "cert_fingerprint": "", "cert_subject": ""
    }))
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (_, fingerprint, subject) = pinned(f.get("boss", "/api/peers").await.json());
    assert!(
        fingerprint.is_null() && subject.is_null(),
        "{fingerprint} {subject}"
    );
}

/// A part that cannot be read once the response has begun aborts the body:
/// a client never takes a truncated multipart response for a whole one (the
/// parts before it arrive, then an error; no closing delimiter).
#[tokio::test]
async fn a_part_failing_mid_response_aborts_the_body() {
    let f = fixture("wado-abort").await;
    assert_eq!(f.send(stow()).await.status, StatusCode::OK);
    // A second instance of 3 MB: a file of its own (not packed), streamed
    // in chunks.
    let big_sop = format!("{SOP}.2");
    let mut obj = identified(CT_IMAGE, &big_sop, "CT");
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("MONOCHROME2"),
    ));
    describe_pixels(&mut obj, 1250, 1250, 1, 16);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(vec![7u8; 1250 * 1250 * 2]),
    ));
    let big = part10(obj, "1.2.840.10008.1.2.1", CT_IMAGE, &big_sop);
    assert_eq!(f.send(stow_part(&big)).await.status, StatusCode::OK);
    let whole = f.get("rad", &format!("/dicom-web/studies/{STUDY}")).await;
    assert_eq!(whole.status, StatusCode::OK);
    let boundary = whole
        .content_type()
        .split("boundary=")
        .nth(1)
        .unwrap()
        .to_string();
    let closing = format!("\r\n--{boundary}--\r\n");
    assert!(
        whole.body.ends_with(closing.as_bytes()),
        "a whole response ends with the closing delimiter"
    );
    assert!(whole.body.len() > big.len(), "both parts");
    // The big one's file goes missing behind the index's back (the small
    // one is in a pack segment, which stays).
    let mut removed = 0;
    for dir in std::fs::read_dir(f.dir.join("blobs")).unwrap() {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if name.len() == 3 && dir.is_dir() {
            for file in std::fs::read_dir(&dir).unwrap() {
                std::fs::remove_file(file.unwrap().path()).unwrap();
                removed += 1;
            }
        }
    }
    assert_eq!(removed, 1, "the big instance's file");
    let mut request = request("rad", "GET", &format!("/dicom-web/studies/{STUDY}"))
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr("127.0.0.1:50000".parse().unwrap()));
    let response = f.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the response had begun");
    let mut body = response.into_body();
    let (mut got, mut failed) = (Vec::new(), false);
    while let Some(frame) = std::future::poll_fn(|cx| {
        axum::body::HttpBody::poll_frame(std::pin::Pin::new(&mut body), cx)
    })
    .await
    {
        match frame {
            Ok(frame) => got.extend_from_slice(frame.data_ref().unwrap()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ended without an error");
    assert!(
        got.windows(4).any(|w| w == b"DICM"),
        "the small instance went out before the failure"
    );
    assert!(
        !got.windows(closing.len()).any(|w| w == closing.as_bytes()),
        "a closing delimiter after a failed part"
    );
}

/// Metadata of instances kept in pack files, read from the first 64 KiB of
/// the blob when the header ends there: an instance whose header runs past
/// that (a 100 KiB value before the image attributes), one whose 64th KiB
/// ends exactly between two attributes, and one with a small header before
/// 200 KiB of pixels are each described whole.
#[tokio::test]
async fn metadata_is_whole_whether_the_header_ends_early_or_late() {
    let f = fixture("metadata-prefix").await;
    let image = |sop: &str, early: Option<usize>| {
        let mut obj = identified(CT_IMAGE, sop, "CT");
        if let Some(len) = early {
            // (0009,1001) sorts before everything below it.
            obj.put(DataElement::new(
                dicom_core::Tag(0x0009, 0x1001),
                VR::OB,
                PrimitiveValue::from(vec![7u8; len]),
            ));
        }
        obj.put(DataElement::new(
            tags::IMAGE_COMMENTS,
            VR::LT,
            PrimitiveValue::from(format!("comments of {sop}")),
        ));
        describe_pixels(&mut obj, 320, 320, 1, 16);
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(vec![0x5Au8; 320 * 320 * 2]),
        ));
        part10(obj, "1.2.840.10008.1.2.1", CT_IMAGE, sop)
    };
    let late = format!("{SOP}.7");
    let early = format!("{SOP}.8");
    // The value before Image Comments sized so that it ends exactly 64 KiB
    // into the file: a parse of the prefix ends cleanly there, short.
    let edge = format!("{SOP}.9");
    let comments_at = |file: &[u8]| {
        file.windows(6)
            .position(|w| w == [0x20, 0x00, 0x00, 0x40, b'L', b'T'])
            .unwrap()
    };
    let probe = 40_000;
    let edge_len = probe + 65_536 - comments_at(&image(&edge, Some(probe)));
    assert_eq!(comments_at(&image(&edge, Some(edge_len))), 65_536);
    for (sop, big) in [
        (&late, Some(100 << 10)),
        (&early, None),
        (&edge, Some(edge_len)),
    ] {
        let r = f.send(stow_part(&image(sop, big))).await;
        assert_eq!(r.status, StatusCode::OK, "{sop}");
    }
    let r = f
        .get("rad", &format!("/dicom-web/studies/{STUDY}/metadata"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let meta = r.json();
    let listed = meta.as_array().unwrap();
    assert_eq!(listed.len(), 3, "{meta}");
    for m in listed {
        let sop = m["00080018"]["Value"][0].as_str().unwrap();
        assert_eq!(
            m["00204000"]["Value"][0],
            format!("comments of {sop}"),
            "{sop}"
        );
        assert_eq!(m["00280010"]["Value"][0], 320, "{sop}");
        assert!(m["7FE00010"]["BulkDataURI"].is_string(), "{sop}");
        if sop != early {
            assert!(m["00091001"]["BulkDataURI"].is_string(), "{m}");
        }
    }
}

/// Searches and metadata come as DICOM JSON only: a client asking for XML
/// alone is told so (406), one that takes JSON (or anything) gets it.
#[tokio::test]
async fn searches_and_metadata_answer_json_or_406() {
    let f = fixture("accept-json").await;
    assert_eq!(f.send(stow()).await.status, StatusCode::OK);
    let metadata = format!("/dicom-web/studies/{STUDY}/metadata");
    for uri in [
        "/dicom-web/studies",
        "/dicom-web/instances",
        metadata.as_str(),
    ] {
        for (accept, status) in [
            (Some("application/dicom+xml"), StatusCode::NOT_ACCEPTABLE),
            (
                Some("multipart/related; type=\"application/dicom+xml\""),
                StatusCode::NOT_ACCEPTABLE,
            ),
            (
                Some("application/dicom+json;q=0, application/dicom+xml"),
                StatusCode::NOT_ACCEPTABLE,
            ),
            (
                Some("application/dicom+xml, application/dicom+json;q=0.5"),
                StatusCode::OK,
            ),
            (
                Some("application/dicom+json;q=0, */*"),
                StatusCode::NOT_ACCEPTABLE,
            ),
            (Some("application/json"), StatusCode::OK),
            (Some("*/*"), StatusCode::OK),
            (Some(""), StatusCode::OK),
            (None, StatusCode::OK),
        ] {
            let mut r = request("rad", "GET", uri);
            if let Some(a) = accept {
                r = r.header(header::ACCEPT, a);
            }
            let got = f.call(r).await;
            assert_eq!(got.status, status, "{uri} {accept:?}");
            if status == StatusCode::OK {
                assert_eq!(got.content_type(), "application/dicom+json", "{uri}");
            }
        }
        // The accept parameter as typed (its `+` not escaped) and escaped.
        let sep = if uri.contains('?') { '&' } else { '?' };
        for param in ["application/dicom+json", "application/dicom%2Bjson"] {
            let got = f.get("rad", &format!("{uri}{sep}accept={param}")).await;
            assert_eq!(got.status, StatusCode::OK, "{uri} accept={param}");
        }
        let got = f
            .get("rad", &format!("{uri}{sep}accept=application/dicom%2Bxml"))
            .await;
        assert_eq!(got.status, StatusCode::NOT_ACCEPTABLE, "{uri}");
        // As URLSearchParams encodes it: its spaces as `+`.
        let form = "application%2Fdicom%2Bjson%3B+q%3D0%2C+application%2Fdicom%2Bxml";
        let got = f.get("rad", &format!("{uri}{sep}accept={form}")).await;
        assert_eq!(
            got.status,
            StatusCode::NOT_ACCEPTABLE,
            "{uri} accept={form}"
        );
    }
}

/// The bodies of a multipart/related reply's parts, in order.
fn parts(r: &Reply) -> Vec<Vec<u8>> {
    let ct = r.content_type().to_string();
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .unwrap_or_else(|| panic!("{ct}"))
        .split(';')
        .next()
        .unwrap()
        .trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    // The body starts with the first delimiter, without its CRLF.
    let body = [b"\r\n".as_slice(), &r.body].concat();
    let mut at: Vec<usize> = body
        .windows(delimiter.len())
        .enumerate()
        .filter(|(_, w)| *w == delimiter.as_bytes())
        .map(|(i, _)| i)
        .collect();
    let last = at.pop().unwrap();
    assert_eq!(&body[last + delimiter.len()..][..2], b"--");
    at.push(last);
    at.windows(2)
        .map(|w| {
            let part = &body[w[0] + delimiter.len()..w[1]];
            let blank = part.windows(4).position(|x| x == b"\r\n\r\n").unwrap();
            part[blank + 4..].to_vec()
        })
        .collect()
}

/// The test CT's attributes for `frames` grey `rows` x `rows` frames of
/// `bits`, without its Pixel Data.
fn multiframe_header(frames: u32, rows: u16, bits: u16) -> InMemDicomObject {
    let mut obj = identified(CT_IMAGE, SOP, "CT");
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from(frames.to_string()),
    ));
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("MONOCHROME2"),
    ));
    describe_pixels(&mut obj, rows, rows, 1, bits);
    obj
}

/// A multi-frame instance of `frames` native 8-bit `rows` x `rows` frames,
/// frame n filled with n and begun by n as 4 bytes: its file and frames.
fn native_multiframe(frames: u32, rows: u16) -> (Vec<u8>, Vec<Vec<u8>>) {
    let size = usize::from(rows) * usize::from(rows);
    let frame = |n: u32| {
        let mut f = vec![n as u8; size];
        f[..4].copy_from_slice(&n.to_le_bytes());
        f
    };
    let all: Vec<Vec<u8>> = (1..=frames).map(frame).collect();
    let mut obj = multiframe_header(frames, rows, 8);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(all.concat()),
    ));
    (part10(obj, "1.2.840.10008.1.2.1", CT_IMAGE, SOP), all)
}

/// Frames asked for by number are read from the stored file by their byte
/// ranges: native ones, and encapsulated ones of several fragments each,
/// found by the Basic Offset Table or by where each codestream begins.
#[tokio::test]
async fn frames_asked_for_by_number_are_the_stored_frames() {
    let f = fixture("frames-by-range").await;
    // 1.5 MiB: a file of its own, not packed with small ones.
    let (file, frames) = native_multiframe(6, 512);
    assert_eq!(f.send(stow_part(&file)).await.status, StatusCode::OK);
    let base = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}");
    let r = f.get("rad", &format!("{base}/frames/2")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(parts(&r), [frames[1].clone()]);
    let r = f.get("rad", &format!("{base}/frames/6,1")).await;
    assert_eq!(parts(&r), [frames[5].clone(), frames[0].clone()]);
    let r = f.get("rad", &format!("{base}/frames/7")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Rendered from the frame alone, as the same pixels stored as an
    // instance of their own (small: packed, rendered whole) are.
    let single = format!("{SOP}.9");
    let mut obj = identified(CT_IMAGE, &single, "CT");
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        PrimitiveValue::from("MONOCHROME2"),
    ));
    describe_pixels(&mut obj, 512, 512, 1, 8);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(frames[3].clone()),
    ));
    let one = part10(obj, "1.2.840.10008.1.2.1", CT_IMAGE, &single);
    assert_eq!(f.send(stow_part(&one)).await.status, StatusCode::OK);
    let png =
        |path: String| f.call(request("rad", "GET", &path).header(header::ACCEPT, "image/png"));
    let framed = png(format!("{base}/rendered?frame=4")).await;
    assert_eq!(framed.status, StatusCode::OK);
    assert!(framed.body.starts_with(b"\x89PNG"));
    let alone = png(format!(
        "/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{single}/rendered"
    ))
    .await;
    assert_eq!(framed.body, alone.body);
    assert_eq!(
        png(format!("{base}/rendered?frame=7")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = f
        .call(
            request("rad", "GET", &format!("{base}/frames/1"))
                .header(header::ACCEPT, "multipart/related; type=\"image/jpeg\""),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);

    // JPEG, 3 frames of 2 fragments (~300 KiB each): with and without a
    // Basic Offset Table.
    let sc = "1.2.840.10008.5.1.4.1.1.7";
    let fragment = |frame: u8, second: bool| {
        let mut b = vec![frame; 300 << 10];
        b[..2].copy_from_slice(if second { b"\x00\x01" } else { b"\xFF\xD8" });
        b
    };
    let fragments: Vec<Vec<u8>> = (1..=3u8)
        .flat_map(|n| [fragment(n, false), fragment(n, true)])
        .collect();
    let item = |f: &Vec<u8>| 8 + f.len() as u32;
    let table = vec![0, 2 * item(&fragments[0]), 4 * item(&fragments[0])];
    for (i, table) in [table, vec![]].into_iter().enumerate() {
        let sop = format!("{SOP}.{i}");
        let mut obj = identified(sc, &sop, "OT");
        obj.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from("3"),
        ));
        describe_pixels(&mut obj, 480, 640, 3, 8);
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            dicom_core::value::Value::PixelSequence(dicom_core::value::PixelFragmentSequence::new(
                table,
                fragments.clone(),
            )),
        ));
        let file = part10(obj, "1.2.840.10008.1.2.4.50", sc, &sop);
        assert_eq!(f.send(stow_part(&file)).await.status, StatusCode::OK);
        let path = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{sop}/frames/2,3");
        let r = f
            .call(
                request("rad", "GET", &path)
                    .header(header::ACCEPT, "multipart/related; type=\"image/jpeg\""),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.content_type().contains("image/jpeg"),
            "{}",
            r.content_type()
        );
        assert_eq!(
            parts(&r),
            [fragments[2..4].concat(), fragments[4..6].concat()],
            "{path}"
        );
    }
}

/// Native frames stored big endian (a retired transfer syntax some old
/// modalities still send) are handed out as little-endian words, whether
/// read by their ranges or from the whole object.
#[tokio::test]
async fn big_endian_frames_are_handed_out_little_endian() {
    let f = fixture("frames-big-endian").await;
    let (rows, frames) = (512u16, 3u16);
    let words: Vec<u16> = (0..u32::from(rows) * u32::from(rows) * u32::from(frames))
        .map(|i| (i % 65_521) as u16)
        .collect();
    let mut obj = multiframe_header(u32::from(frames), rows, 16);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(words.clone().into()),
    ));
    let file = part10(obj, "1.2.840.10008.1.2.2", CT_IMAGE, SOP);
    assert_eq!(f.send(stow_part(&file)).await.status, StatusCode::OK);
    let base = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}");
    let r = f.get("rad", &format!("{base}/frames/2")).await;
    assert_eq!(r.status, StatusCode::OK);
    let per_frame = usize::from(rows) * usize::from(rows);
    let little: Vec<u8> = words[per_frame..2 * per_frame]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    assert_eq!(parts(&r), [little]);
}

/// An instance over the 256 MiB a whole object may take in memory still has
/// its frames handed out one by one (a tomosynthesis, a long cine): they
/// are read alone (before: 413).
#[tokio::test]
async fn a_frame_of_an_instance_over_256_mib_is_handed_out() {
    let f = fixture_sized(
        "frames-huge",
        custos_auth::SessionPolicy::default(),
        320 << 20,
    )
    .await;
    // 1,040 frames of 256 KiB: 260 MiB.
    let (file, mut frames) = native_multiframe(1040, 512);
    let expected = frames.swap_remove(999);
    drop(frames);
    assert!(file.len() > 256 << 20);
    let stow = stow_part(&file);
    drop(file);
    let r = f.send(stow).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let base = format!("/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}");
    let r = f.get("rad", &format!("{base}/frames/1000")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(parts(&r), [expected]);
    // Rendered too (the quick viewer's cine).
    let r = f.get("rad", &format!("{base}/rendered?frame=1000")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(r.body.starts_with(&[0xFF, 0xD8]));
}
