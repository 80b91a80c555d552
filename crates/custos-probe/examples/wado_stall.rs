//! Stalled readers: opens one HTTP/2 connection, asks for one study STREAMS
//! times at once with a 1 KiB flow-control window per stream, and reads none
//! of the bodies for HOLD seconds — what a client that stops reading (or a
//! hostile one) leaves the server holding. The memory is read from the
//! server's /proc by `bench/stalled_readers.sh`.
//!
//!   cargo run --release -p custos-probe --example wado_stall -- \
//!       https://127.0.0.1:11121/dicom-web/studies/UID 100 USER:PASSWORD 5
//!
//! Loopback only; certificates are not checked.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is the point

use base64::Engine;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, streams, user, hold] = args.as_slice() else {
        panic!("usage: wado_stall STUDY_URL STREAMS USER:PASSWORD HOLD_SECONDS");
    };
    let after = url.strip_prefix("https://").expect("an https URL");
    let (authority, path) = after.split_at(after.find('/').expect("a path"));
    assert!(authority.starts_with("127."), "loopback only");
    let streams: usize = streams.parse().expect("STREAMS is a number");
    let hold: u64 = hold.parse().expect("HOLD_SECONDS is a number");
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user)
    );
    let tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let mut config = (*custos_tls::any_certificate_client().unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = authority.rsplit_once(':').unwrap().0.to_string();
    let tls = custos_tls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(custos_tls::ServerName::try_from(host).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1024)
        .initial_connection_window_size(streams as u32 * 1024)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut waiting = Vec::new();
    for _ in 0..streams {
        let mut send = send.clone();
        let rq = hyper::Request::get(path)
            .header("host", authority)
            .header("accept", "multipart/related; type=\"application/dicom\"")
            .header("authorization", &auth)
            .body(String::new())
            .unwrap();
        waiting.push(tokio::spawn(async move {
            send.ready().await.unwrap();
            send.send_request(rq).await.unwrap()
        }));
    }
    let mut held = Vec::new();
    for w in waiting {
        let response = w.await.unwrap();
        assert_eq!(response.status(), 200);
        held.push(response.into_body());
    }
    println!("{} responses held unread", held.len());
    tokio::time::sleep(std::time::Duration::from_secs(hold)).await;
    drop(held);
}
