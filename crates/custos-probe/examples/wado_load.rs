//! WADO-RS fetch timer (issue 13 goal 3): fetches one study REQUESTS times
//! over one persistent connection and prints the median wall time per fetch
//! and MB/s as JSON, with the client's own CPU time. curl spends more CPU
//! receiving TLS than Orthanc spends sending the study in clear on this
//! machine; this client (hyper and rustls, as the server uses) reads its
//! socket through the same 64 KiB read-ahead as the server (rustls alone
//! asks the socket for one record at a time: ~3,200 `recvfrom`s per study)
//! and discards the bytes, so the same client can be pointed at both servers.
//!
//!   cargo run --release -p custos-probe --example wado_load -- \
//!       https://127.0.0.1:11121/dicom-web/studies/UID 7 [USER:PASSWORD]
//!
//! WADO_HTTP1=1 asks for HTTP/1.1 over TLS (otherwise ALPN picks HTTP/2;
//! plain HTTP is always HTTP/1.1). WADO_SERIES=1 fetches the study's series
//! in parallel, one connection per series (as viewers fetch), the series
//! found by QIDO-RS first. Loopback only; certificates are not checked (the
//! benchmark's servers use a fresh self-made CA).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is the point

use std::pin::Pin;
use std::time::Instant;

use base64::Engine;
use hyper::body::{Body, Bytes, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

const ACCEPT: &str = "multipart/related; type=\"application/dicom\"";

fn cpu_seconds() -> f64 {
    // Run time of every thread of this process, in nanoseconds (schedstat;
    // the ticks of /proc/self/stat are too coarse).
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

enum Sender {
    H1(http1::SendRequest<String>),
    H2(http2::SendRequest<String>),
}

struct Target {
    https: bool,
    authority: String,
    http1: bool,
    auth: Option<String>,
}

async fn connect(t: &Target) -> Sender {
    let tcp = tokio::net::TcpStream::connect(&t.authority).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tcp = custos_tls::read_ahead(tcp);
    if !t.https {
        let (send, conn) = http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        return Sender::H1(send);
    }
    let mut config = (*custos_tls::any_certificate_client().unwrap()).clone();
    config.alpn_protocols = if t.http1 {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    let host = t.authority.rsplit_once(':').unwrap().0.to_string();
    let name = custos_tls::ServerName::try_from(host).unwrap();
    let tls = custos_tls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Sender::H2(send)
    } else {
        let (send, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        Sender::H1(send)
    }
}

/// GET `path`; the body's bytes counted (or kept, when `keep`).
async fn get(s: &mut Sender, t: &Target, path: &str, accept: &str, keep: bool) -> (u64, Vec<u8>) {
    let mut rq = hyper::Request::get(path)
        .header("host", &t.authority)
        .header("accept", accept);
    if let Some(a) = &t.auth {
        rq = rq.header("authorization", a);
    }
    let rq = rq.body(String::new()).unwrap();
    // A server that closes after each response (Orthanc's default): a new
    // connection, as any client's pool would make.
    let closed = match s {
        Sender::H1(s) => s.ready().await.is_err(),
        Sender::H2(s) => s.ready().await.is_err(),
    };
    if closed {
        *s = connect(t).await;
    }
    let response = match s {
        Sender::H1(s) => {
            s.ready().await.unwrap();
            s.send_request(rq).await.unwrap()
        }
        Sender::H2(s) => {
            s.ready().await.unwrap();
            s.send_request(rq).await.unwrap()
        }
    };
    assert_eq!(response.status(), 200, "{path}");
    let mut body: Incoming = response.into_body();
    let (mut n, mut kept) = (0u64, Vec::new());
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.unwrap().into_data() {
            let data: Bytes = data;
            n += data.len() as u64;
            if keep {
                kept.extend_from_slice(&data);
            }
        }
    }
    (n, kept)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, requests, rest @ ..] = args.as_slice() else {
        panic!("usage: wado_load STUDY_URL REQUESTS [USER:PASSWORD]");
    };
    let (scheme, after) = url.split_once("://").expect("a URL");
    let (authority, path) = after.split_at(after.find('/').expect("a path"));
    assert!(
        authority.starts_with("127.") || authority.starts_with("localhost"),
        "loopback only"
    );
    let requests: usize = requests.parse().expect("REQUESTS is a number");
    let env_on = |k: &str| std::env::var_os(k).is_some_and(|v| v == "1");
    let target = std::sync::Arc::new(Target {
        https: scheme == "https",
        authority: authority.to_string(),
        http1: env_on("WADO_HTTP1"),
        auth: rest.first().map(|u| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(u)
            )
        }),
    });
    let study = path.trim_end_matches('/').to_string();
    let parts: Vec<String> = if env_on("WADO_SERIES") {
        let mut s = connect(&target).await;
        let (_, body) = get(
            &mut s,
            &target,
            &format!("{study}/series"),
            "application/dicom+json",
            true,
        )
        .await;
        let series: serde_json::Value = serde_json::from_slice(&body).unwrap();
        series
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{study}/series/{}",
                    s["0020000E"]["Value"][0].as_str().unwrap()
                )
            })
            .collect()
    } else {
        vec![study]
    };
    let mut senders = Vec::new();
    for _ in &parts {
        senders.push(Some(connect(&target).await));
    }
    let (mut times, mut cpu, mut size) = (Vec::new(), Vec::new(), 0);
    // One warm-up fetch (connections, server caches), then the timed ones.
    for round in 0..=requests {
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let mut tasks = Vec::new();
        for (part, s) in parts.iter().zip(senders.iter_mut()) {
            let (part, target, mut s) = (part.clone(), target.clone(), s.take().unwrap());
            tasks.push(tokio::spawn(async move {
                let (n, _) = get(&mut s, &target, &part, ACCEPT, false).await;
                (n, s)
            }));
        }
        let mut bytes = 0;
        for (t, slot) in tasks.into_iter().zip(senders.iter_mut()) {
            let (n, s) = t.await.unwrap();
            bytes += n;
            *slot = Some(s);
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
