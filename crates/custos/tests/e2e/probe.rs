//! `custos probe` against an archive open the way the 2019 ones were (a
//! permissive pynetdicom SCP with a fake patient) and against Custos in its
//! default configuration. Loopback only.

use crate::common::*;

fn probe(args: &[&str]) -> Run {
    let out = std::process::Command::new(BIN)
        .arg("probe")
        .args(args)
        .output()
        .expect("run custos probe");
    Run(out)
}

fn ids(v: &serde_json::Value, severity: &str) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

/// The permissive pynetdicom SCP on a free loopback port, until killed.
fn permissive_scp(extra: &[&str]) -> (std::process::Child, String) {
    let port = free_port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/py/peer.py");
    let mut scp = std::process::Command::new("python3")
        .args([script, "permissive-scp", "--port", &port, "--seconds", "60"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    first_line_is(&mut scp, "ready");
    (scp, port)
}

#[test]
fn an_open_archive_is_reported_without_leaking_what_it_leaks() {
    let (mut scp, port) = permissive_scp(&[]);
    let target = format!("127.0.0.1:{port}");
    let run = probe(&[&target, "--json"]);
    assert!(!run.ok(), "exit status 1 when something critical is found");
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).expect("only JSON on stdout");
    assert!(
        ids(&v, "critical").contains(&"dicom-find-phi".to_string()),
        "{v}"
    );
    let high = ids(&v, "high");
    for id in ["dicom-any-calling-ae", "dicom-store-open", "dicom-get-open"] {
        assert!(high.contains(&id.to_string()), "{id} missing: {v}");
    }
    assert!(ids(&v, "medium").contains(&"dicom-no-tls".to_string()));
    assert!(
        ids(&v, "critical").contains(&"dicom-find-patients-phi".to_string()),
        "patient-level query too: {v}"
    );
    assert!(
        ids(&v, "medium").contains(&"dicom-any-called-ae".to_string()),
        "{v}"
    );
    assert!(
        !run.stdout().contains("SECRET") && !run.stdout().contains("LEAK0001"),
        "no PHI without --show-phi"
    );
    assert!(
        run.stdout().contains("PatientName"),
        "which identifying attributes were present"
    );
    let shown = probe(&[&target, "--json", "--show-phi"]);
    assert!(
        shown.stdout().contains("SECRET^PATIENT"),
        "{}",
        shown.stdout()
    );
    // Without --confirm-retrieve nothing is pulled; with it, one instance is,
    // and the finding says so (still without patient values).
    assert!(!ids(&v, "critical").contains(&"dicom-get-confirmed".to_string()));
    let pulled = probe(&[&target, "--json", "--confirm-retrieve"]);
    let p: serde_json::Value = serde_json::from_str(&pulled.stdout()).expect("only JSON");
    assert!(
        ids(&p, "critical").contains(&"dicom-get-confirmed".to_string()),
        "{p}"
    );
    assert!(p.to_string().contains("sent 1 instance(s)"), "{p}");
    assert!(!pulled.stdout().contains("SECRET") && !pulled.stdout().contains("LEAK0001"));
    let _ = scp.kill();
    let _ = scp.wait();
}

#[test]
fn an_open_archive_behind_legacy_tls_is_probed_over_tls() {
    // The same open archive, wrapped in TLS that still accepts 1.0 and 1.1,
    // with a certificate from a Custos data folder's CA.
    let data = DataDir::new("probe-legacy-tls");
    let certs = data.path.join("certs");
    data.cli(&[
        "cert",
        "issue",
        "OPENPACS",
        "--host",
        "127.0.0.1",
        "--out",
        certs.to_str().unwrap(),
    ])
    .success();
    let cert = certs.join("OPENPACS.cert.pem");
    let key = certs.join("OPENPACS.key.pem");
    let (mut scp, port) = permissive_scp(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-legacy",
    ]);
    let target = format!("127.0.0.1:{port}");
    let run = probe(&[&target, "--tls", "--json", "--confirm-retrieve"]);
    assert!(!run.ok());
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).expect("only JSON on stdout");
    assert_eq!(v["tls"], true, "{v}");
    // The DICOM checks ran over TLS: they found what the plain ones find.
    let critical = ids(&v, "critical");
    for id in ["dicom-find-phi", "dicom-get-confirmed"] {
        assert!(critical.contains(&id.to_string()), "{id} missing: {v}");
    }
    assert!(ids(&v, "high").contains(&"dicom-any-calling-ae".to_string()));
    assert!(
        ids(&v, "medium").contains(&"tls-legacy-accepted".to_string()),
        "{v}"
    );
    assert!(v.to_string().contains("TLS 1.1"), "{v}");
    assert!(ids(&v, "info").contains(&"dicom-tls".to_string()), "{v}");
    assert!(!run.stdout().contains("SECRET") && !run.stdout().contains("LEAK0001"));
    // Without --tls, the plain association to a TLS port gets nowhere.
    let plain = probe(&[&target, "--json"]);
    let p: serde_json::Value = serde_json::from_str(&plain.stdout()).expect("only JSON");
    assert!(
        !ids(&p, "critical").contains(&"dicom-find-phi".to_string()),
        "{p}"
    );
    let _ = scp.kill();
    let _ = scp.wait();
}

#[test]
fn custos_in_its_default_configuration_has_nothing_high_or_critical() {
    let data = DataDir::new("probe-custos");
    let server = Server::start(&data);
    let http = format!("https://127.0.0.1:{}", server.http.port());
    let run = probe(&[
        &format!("127.0.0.1:{}", server.port()),
        "--json",
        "--http",
        &http,
    ]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).expect("only JSON on stdout");
    assert!(run.ok(), "{v}");
    assert!(
        ids(&v, "critical").is_empty() && ids(&v, "high").is_empty(),
        "{v}"
    );
    // Patient data and the first password are the owner's only, and doctor
    // reminds that the password file is still there.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(data.path.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("index.sqlite"), 0o600);
        assert_eq!(mode("blobs"), 0o700);
        assert_eq!(mode("blobs/abc"), 0o700);
        assert_eq!(mode("initial-admin-password"), 0o600);
    }
    let (_, d) = doctor(&data, &[]);
    assert!(
        ids(&d, "medium").contains(&"initial-password-left".to_string()),
        "{d}"
    );
    assert!(
        ids(&v, "info").contains(&"dicom-unknown-ae-refused".to_string()),
        "{v}"
    );
    assert!(
        ids(&v, "info").contains(&"web-auth-required".to_string()),
        "{v}"
    );
    assert!(
        ids(&v, "info").contains(&"dicom-tls".to_string())
            || ids(&v, "medium").contains(&"dicom-no-tls".to_string())
    );

    // Its DICOM TLS listener: TLS offered, the certificate from the data
    // folder's CA is valid for about 13 months and not self-signed.
    let tls_port = server.tls.expect("TLS listener").port();
    let run = probe(&[&format!("127.0.0.1:{tls_port}"), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).expect("only JSON on stdout");
    assert!(run.ok(), "{v}");
    let info = ids(&v, "info");
    assert!(
        info.contains(&"dicom-tls".to_string()) && info.contains(&"tls-cert".to_string()),
        "{v}"
    );
    assert!(
        !ids(&v, "low").contains(&"tls-cert-self-signed".to_string()),
        "{v}"
    );
    assert!(v.to_string().contains("TLSv1_3"), "{v}");
    assert!(
        info.contains(&"tls-legacy-refused".to_string()),
        "rustls refuses TLS 1.0 and 1.1: {v}"
    );

    // --tls: the association checks over TLS; an unknown AE is refused there
    // too (the TLS listener's gate, not a failed handshake).
    let run = probe(&[&format!("127.0.0.1:{tls_port}"), "--tls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).expect("only JSON on stdout");
    assert!(run.ok(), "{v}");
    assert!(
        ids(&v, "info").contains(&"dicom-unknown-ae-refused".to_string()),
        "{v}"
    );
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("tls=true") && l.contains("association rejected")),
        "{log}"
    );
}

#[test]
fn doctor_is_quiet_on_defaults_and_names_each_insecure_setting() {
    let data = DataDir::new("doctor");
    let (ok, v) = doctor(&data, &[]);
    assert!(ok, "{v}");
    assert!(
        ids(&v, "critical").is_empty() && ids(&v, "high").is_empty(),
        "{v}"
    );

    // An insecure set-up, written by the test.
    data.cli(&[
        "peer",
        "add",
        "ANYONE",
        "--host",
        "0.0.0.0/0",
        "--allow",
        "echo,store,find,get,move",
    ])
    .success();
    // A vendor CA registered for a peer, which has since expired (made with
    // Python's cryptography, valid until yesterday).
    let expired_ca = data.path.join("vendor-ca.pem");
    let made = std::process::Command::new("python3")
        .args([
            "-c",
            r#"
import datetime, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old Vendor CA")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
"#,
            expired_ca.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    data.cli(&[
        "peer",
        "add",
        "OLDVENDOR",
        "--host",
        "127.0.0.1",
        "--allow",
        "echo,store",
        "--ca-file",
        expired_ca.to_str().unwrap(),
    ])
    .success();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            data.path.join("index.sqlite"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        // The audit chain's key readable by others.
        std::fs::set_permissions(
            data.path.join("audit.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        // The configuration as data folders made before it was 0600.
        std::fs::set_permissions(
            data.path.join("custos.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let insecure = [
        ("CUSTOS_DICOM_LISTEN", "0.0.0.0:11112"),
        ("CUSTOS_HTTP_LISTEN", "0.0.0.0:8080"),
        ("CUSTOS_HTTP_PLAINTEXT", "true"),
    ];
    let (ok, v) = doctor(&data, &insecure);
    assert!(!ok, "exit status 1 on high findings: {v}");
    let high = ids(&v, "high");
    for id in [
        "dicom-plain-beyond-loopback",
        "http-plain-beyond-loopback",
        "peer-any-address",
        "data-folder-open",
        "patient-data-open",
        "peer-ca-expired",
        "key-file-open",
    ] {
        assert!(high.contains(&id.to_string()), "{id}: {v}");
    }
    assert!(
        ids(&v, "medium").contains(&"peer-all-rights-plain".to_string()),
        "{v}"
    );
    assert!(
        ids(&v, "medium").contains(&"config-file-open".to_string()),
        "{v}"
    );
    // A certificate and key configured outside the data folder are checked
    // too: the key readable by others is named.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let tls = custos_tls::TlsFiles::in_data(&data.path);
        let own = data.path.with_extension("own-tls");
        std::fs::create_dir_all(&own).unwrap();
        let (cert, key) = (own.join("cert.pem"), own.join("key.pem"));
        std::fs::copy(&tls.server_cert, &cert).unwrap();
        std::fs::copy(&tls.server_key, &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, v) = doctor(
            &data,
            &[
                ("CUSTOS_HTTP_CERT", cert.to_str().unwrap()),
                ("CUSTOS_HTTP_KEY", key.to_str().unwrap()),
            ],
        );
        let named = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "key-file-open" && x["evidence"] == key.to_str().unwrap());
        assert!(named, "the configured key is not checked: {v}");
    }

    // A trail old enough to judge usage (its first record re-dated ten days
    // back, the chain and this node's checkpoint recomputed with the data
    // folder's key, as Custos would): unused rights show.
    let db = data.path.join("index.sqlite");
    let redate = std::process::Command::new("python3")
        .args(["-c", &format!(
            r#"
import sqlite3, hashlib, hmac, json, datetime
c = sqlite3.connect('{db}')
key = bytes.fromhex(open('{dir}/audit.key').read().strip())
rows = c.execute('SELECT seq, at, body FROM audit ORDER BY seq').fetchall()
prev = '0' * 64
old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)).strftime('%Y-%m-%dT%H:%M:%S.000Z')
links = []
for i, (seq, at, body) in enumerate(rows):
    if i == 0:
        b = json.loads(body); b['time'] = old; body = json.dumps(b, separators=(',', ':')); at = old
    msg = ''.join(p + chr(10) for p in (str(seq), at, prev, body))
    h = hmac.new(key, msg.encode(), hashlib.sha256).hexdigest()
    c.execute('UPDATE audit SET at=?, body=?, prev_hash=?, hash=? WHERE seq=?', (at, body, prev, h, seq))
    prev = h
    links.append(h)
c.commit()
open('{dir}/audit.head', 'w').write(json.dumps({{'first': links[0], 'seq': rows[-1][0], 'link': prev}}))
"#,
            db = db.display(),
            dir = data.path.display()
        )])
        .output()
        .unwrap();
    assert!(
        redate.status.success(),
        "{}",
        String::from_utf8_lossy(&redate.stderr)
    );
    let (_, v) = doctor(&data, &[]);
    assert!(
        ids(&v, "critical").is_empty(),
        "the recomputed chain verifies: {v}"
    );
    let low = ids(&v, "low");
    assert!(low.contains(&"peer-unused-rights".to_string()), "{v}");
    assert!(low.contains(&"admin-unused".to_string()), "{v}");

    // An altered audit record is critical.
    let tamper = std::process::Command::new("python3")
        .args(["-c", &format!(
            "import sqlite3; c=sqlite3.connect('{}'); c.execute(\"UPDATE audit SET body=replace(body,'ANYONE','NOBODY')\"); c.commit()",
            db.display()
        )])
        .status()
        .unwrap();
    assert!(tamper.success());
    let (_, v) = doctor(&data, &[]);
    assert!(
        ids(&v, "critical").contains(&"audit-broken".to_string()),
        "{v}"
    );
}

/// Debian's Orthanc with its out-of-the-box configuration (only the folders
/// and ports moved to the test's): probe reports what is open there.
#[test]
fn orthanc_out_of_the_box_is_reported_open() {
    let work = std::env::temp_dir().join(format!("custos-probe-orthanc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let conf = work.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let (dicom, http) = (free_port(), free_port());
    for entry in std::fs::read_dir("/etc/orthanc").expect("Debian's orthanc package") {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "json") {
            let mut text = std::fs::read_to_string(&p).unwrap();
            if p.file_name().unwrap() == "orthanc.json" {
                text = text
                    .replace("/var/lib/orthanc/db-v6", work.join("db").to_str().unwrap())
                    .replace("\"DicomPort\" : 4242", &format!("\"DicomPort\" : {dicom}"))
                    .replace("\"HttpPort\" : 8042", &format!("\"HttpPort\" : {http}"));
            }
            std::fs::write(conf.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    let mut orthanc = std::process::Command::new("/usr/sbin/Orthanc")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Orthanc");
    wait_for_port(dicom);
    let run = probe(&[
        &format!("127.0.0.1:{dicom}"),
        "--json",
        "--http",
        &format!("http://127.0.0.1:{http}"),
    ]);
    let _ = orthanc.kill();
    let _ = orthanc.wait();
    let _ = std::fs::remove_dir_all(&work);
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).expect("only JSON on stdout");
    assert!(!run.ok(), "{v}");
    let high = ids(&v, "high");
    assert!(high.contains(&"dicom-any-calling-ae".to_string()), "{v}");
    assert!(
        high.contains(&"dicom-store-open".to_string()),
        "unknown AEs may store: {v}"
    );
    assert!(
        ids(&v, "critical").contains(&"web-anonymous".to_string()),
        "{v}"
    );
    assert!(ids(&v, "medium").contains(&"web-no-tls".to_string()), "{v}");
    assert!(
        v.to_string().contains("Orthanc") || v.to_string().contains("DCMTK"),
        "{v}"
    );
}
