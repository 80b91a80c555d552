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
    let server = Server::process_with(&data, &[("CUSTOS_HTTP_LOCKOUT_AFTER", "1000000")]);
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
    let run = || {
        std::process::Command::new("schemathesis")
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
                // It would call whatever host a generated peer names; tests
                // stay on loopback (web_security tests it against storescp).
                "--exclude-name",
                "POST /api/peers/{ae}/echo",
            ])
            .env("SCHEMATHESIS_HOOKS", "")
            // Its cache goes with the test's data folder.
            .current_dir(&data.path)
            .output()
            .expect("schemathesis (pip install schemathesis)")
    };
    let mut out = run();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    // A connection that failed under load (once in CI: an SSL EOF on one of
    // 1,700 requests, never reproduced) is not a conformance finding: run
    // once more, but only when nothing else was found and the server did not
    // crash; every other finding fails at once.
    if !out.status.success() && transport_only(&text) && !server.log_text().contains("panicked") {
        eprintln!("schemathesis saw only a network error; running it once more:\n{text}");
        out = run();
        text = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let log = server.log_text();
    assert!(
        out.status.success(),
        "{text}\n{}\n--- server log (last 40 lines) ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        log.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(text.contains("Tested"), "{text}");
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// Whether schemathesis's only problems were network errors: its last line
/// counts errors and no failures, and its summary puts all of them under
/// "Network Error: N".
fn transport_only(text: &str) -> bool {
    let count_before = |line: &str, word: &str| -> Option<usize> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| w.trim_end_matches(',').starts_with(word))?;
        words.get(at.checked_sub(1)?)?.parse().ok()
    };
    let Some(last) = text.lines().rev().find(|l| l.starts_with("====")) else {
        return false;
    };
    let errors = count_before(last, "error").unwrap_or(0);
    let network = text
        .lines()
        .filter_map(|l| l.split("Network Error:").nth(1))
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .sum::<usize>();
    !last.contains("fail") && errors > 0 && errors == network
}

#[test]
fn only_network_errors_are_retried() {
    let ci = "Errors:\n  \u{1f6ab} Network Error: 1\n\n======== 1 error, 2 warnings in 16.59s ========\n";
    assert!(transport_only(ci));
    assert!(!transport_only(
        &ci.replace("1 error,", "1 error, 1 failure,")
    ));
    assert!(!transport_only(&ci.replace("1 error,", "2 errors,")));
}
