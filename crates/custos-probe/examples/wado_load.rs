//! WADO-RS fetch timer (issue 13 goal 3): fetches one study REQUESTS times
//! over one persistent connection and prints the median wall time per fetch
//! and MB/s as JSON, with the client's own CPU time. curl spends more CPU
//! receiving TLS than Orthanc spends sending the study in clear on this
//! machine; this client reads into large buffers and discards them, so the
//! same client can be pointed at both servers.
//!
//!   cargo run --release -p custos-probe --example wado_load -- \
//!       https://127.0.0.1:11121/dicom-web/studies/UID 7 [USER:PASSWORD]
//!
//! WADO_HTTP1=1 asks for HTTP/1.1 over TLS (otherwise ALPN picks HTTP/2).
//! WADO_SERIES=1 fetches the study's series in parallel, one connection per
//! series (as viewers fetch), the series found by QIDO-RS first.
//! Loopback only; certificates are not checked (the benchmark's servers use
//! a fresh self-made CA).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is the point

use std::time::Instant;

const ACCEPT: &str = "multipart/related; type=\"application/dicom\"";

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (ticks of 1/100 s are too
    // coarse; schedstat has nanoseconds of every thread).
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total as f64 / 1e9
}

fn client(http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(1);
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn fetch(client: &reqwest::Client, url: &str, auth: &Option<(String, String)>) -> u64 {
    let mut rq = client.get(url).header("Accept", ACCEPT);
    if let Some((user, password)) = auth {
        rq = rq.basic_auth(user, Some(password));
    }
    let mut r = rq.send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let mut bytes = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
    }
    bytes
}

async fn series_urls(
    client: &reqwest::Client,
    study: &str,
    auth: &Option<(String, String)>,
) -> Vec<String> {
    let mut rq = client
        .get(format!("{study}/series"))
        .header("Accept", "application/dicom+json");
    if let Some((user, password)) = auth {
        rq = rq.basic_auth(user, Some(password));
    }
    let body = rq.send().await.unwrap().bytes().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let uid = s["0020000E"]["Value"][0].as_str().unwrap();
            format!("{study}/series/{uid}")
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, requests, rest @ ..] = args.as_slice() else {
        panic!("usage: wado_load STUDY_URL REQUESTS [USER:PASSWORD]");
    };
    let host = url.split("//").nth(1).unwrap_or_default();
    assert!(
        host.starts_with("127.") || host.starts_with("localhost"),
        "loopback only"
    );
    let requests: usize = requests.parse().expect("REQUESTS is a number");
    let env_on = |k: &str| std::env::var_os(k).is_some_and(|v| v == "1");
    let (http1, by_series) = (env_on("WADO_HTTP1"), env_on("WADO_SERIES"));
    let auth = rest.first().map(|u| {
        let (user, password) = u.split_once(':').expect("USER:PASSWORD");
        (user.to_string(), password.to_string())
    });
    let url = url.trim_end_matches('/').to_string();
    let parts: Vec<String> = if by_series {
        series_urls(&client(http1), &url, &auth).await
    } else {
        vec![url.clone()]
    };
    let clients: Vec<reqwest::Client> = parts.iter().map(|_| client(http1)).collect();
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut size = 0;
    // One warm-up fetch (connections, server caches), then the timed ones.
    for round in 0..=requests {
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let mut tasks = Vec::new();
        for (part, c) in parts.iter().zip(&clients) {
            let (part, c, auth) = (part.clone(), c.clone(), auth.clone());
            tasks.push(tokio::spawn(async move { fetch(&c, &part, &auth).await }));
        }
        let mut bytes = 0;
        for t in tasks {
            bytes += t.await.unwrap();
        }
        if round > 0 {
            times.push(t0.elapsed().as_secs_f64());
            cpu.push(cpu_seconds() - c0);
        }
        size = bytes;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (wall, cpu) = (median(&mut times), median(&mut cpu));
    println!(
        "{{\"bytes\": {size}, \"parts\": {}, \"median_ms\": {:.1}, \"mb_s\": {:.0}, \"client_cpu_ms\": {:.1}}}",
        parts.len(),
        wall * 1e3,
        size as f64 / 1e6 / wall,
        cpu * 1e3
    );
}
