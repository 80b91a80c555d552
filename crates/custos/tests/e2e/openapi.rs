//! The OpenAPI document at /api/openapi.json matches what the server does:
//! schemathesis (PyPI) generates requests from it, valid and invalid, and
//! checks statuses, content types and bodies against it, and that a bad
//! credential gets 401.

use crate::common::*;

#[test]
fn schemathesis_finds_the_server_conforming_to_its_openapi_document() {
    let data = DataDir::new("openapi");
    let pw = "schema strider 42 lights";
    add_user(&data, "walker", "admin", pw);
    let server = Server::start_with(&data, &[("CUSTOS_HTTP_LOCKOUT_AFTER", "1000000")]);
    let url = format!("https://localhost:{}/api/openapi.json", server.http.port());
    let auth = format!(
        "Authorization: Basic {}",
        String::from_utf8(
            std::process::Command::new("base64")
                .arg("-w0")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin
                        .take()
                        .unwrap()
                        .write_all(format!("walker:{pw}").as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap()
                .stdout
        )
        .unwrap()
    );
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/schemathesis.toml");
    let out = std::process::Command::new("schemathesis")
        .args([
            "--config-file",
            config,
            "--no-color",
            "run",
            &url,
            "-H",
            &auth,
        ])
        .arg("--tls-verify")
        .arg(&server.ca)
        .args([
            "-n",
            "15",
            "--generation-deterministic",
            // multipart/related bodies cannot be generated; STOW-RS has its own tests.
            "--exclude-name",
            "POST /dicom-web/studies",
            "--exclude-name",
            "POST /dicom-web/studies/{study}",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache goes with the test's data folder.
        .current_dir(&data.path)
        .output()
        .expect("schemathesis (pip install schemathesis)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Tested"), "{text}");
}
