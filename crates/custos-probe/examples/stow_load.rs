//! STOW-RS load generator (issue 13 goal 2): N clients, each one persistent
//! connection, one instance per request, every `.dcm` file under DIR sent
//! once; prints instances/s as JSON. A Python client spends more CPU per
//! request than the server it measures on a 2-core machine; this one spends
//! little beyond TLS.
//!
//!   cargo run --release -p custos-probe --example stow_load -- \
//!       https://127.0.0.1:11121/dicom-web DIR 4 [USER:PASSWORD]
//!
//! Loopback only; certificates are not checked (the benchmark's servers use
//! a fresh self-made CA).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is the point

use std::path::{Path, PathBuf};
use std::time::Instant;

const BOUNDARY: &str = "stow-load-boundary";

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dataset folder") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "dcm") {
            out.push(path);
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, dir, clients, rest @ ..] = args.as_slice() else {
        panic!("usage: stow_load URL DIR CLIENTS [USER:PASSWORD]");
    };
    let host = url.split("//").nth(1).unwrap_or_default();
    assert!(
        host.starts_with("127.") || host.starts_with("localhost"),
        "loopback only"
    );
    let clients: usize = clients.parse().expect("CLIENTS is a number");
    // STOW_HTTP1=1: HTTP/1.1 over TLS too, as `requests`-based uploaders
    // (dicomweb-client) send; otherwise ALPN picks HTTP/2.
    let http1 = std::env::var_os("STOW_HTTP1").is_some_and(|v| v == "1");
    let auth = rest.first().map(|u| {
        let (user, password) = u.split_once(':').expect("USER:PASSWORD");
        (user.to_string(), password.to_string())
    });
    let mut all = Vec::new();
    files(Path::new(dir), &mut all);
    all.sort();
    let target = format!("{}/studies", url.trim_end_matches('/'));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mine: Vec<PathBuf> = all.iter().skip(c).step_by(clients).cloned().collect();
        let (target, auth) = (target.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .pool_max_idle_per_host(1);
            if http1 {
                client = client.http1_only();
            }
            let client = client.build().unwrap();
            let mut errors = 0;
            for path in mine {
                let file = tokio::fs::read(&path).await.unwrap();
                let mut body = Vec::with_capacity(file.len() + 128);
                body.extend_from_slice(
                    format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(&file);
                body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
                let mut rq = client
                    .post(&target)
                    .header(
                        "Content-Type",
                        format!(
                            "multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"
                        ),
                    )
                    .header("Accept", "application/dicom+json")
                    .body(body);
                if let Some((user, password)) = &auth {
                    rq = rq.basic_auth(user, Some(password));
                }
                match rq.send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{{\"instances\": {}, \"seconds\": {seconds:.3}, \"per_s\": {:.1}, \"errors\": {errors}}}",
        all.len(),
        all.len() as f64 / seconds
    );
}
