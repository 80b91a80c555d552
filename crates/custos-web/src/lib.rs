//! The HTTPS side: DICOMweb (QIDO-RS, WADO-RS, STOW-RS, WADO-URI) and the
//! admin API, over the same archive and the same `Principal::may` check as
//! DIMSE. Every route but `/healthz` needs a user's credentials; there is no
//! anonymous access at all.
#![forbid(unsafe_code)]

mod admin;
pub mod audit;
pub mod auth;
mod changes;
mod deidentify;
mod download;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod idle;
mod lifecycle;
mod metrics;
mod multipart;
mod openapi;
mod pixels;
mod qido;
mod records;
pub mod routes;
mod session;
mod status;
mod stow;
mod trail;
mod ui;
pub mod viewer;
mod wado;
mod worklist;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use custos_tls::TlsAcceptor;
use custos_tls::write_behind::WriteBehind;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use custos_archive::Archive;

pub use custos_auth::Authenticator;

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Served over TLS (HSTS, https URLs).
    pub https: bool,
    /// Largest request body (STOW-RS upload) in bytes.
    pub max_body_bytes: u64,
    /// Largest request head (request line + headers) in bytes.
    pub max_header_bytes: usize,
    pub max_find_results: usize,
    /// Most parts in one STOW-RS request.
    pub max_stow_parts: usize,
    pub max_connections: usize,
    /// Connections one source address may hold at once.
    pub max_connections_per_address: usize,
    /// A connection carrying no bytes this long is closed.
    pub idle_timeout: Duration,
    /// Origins allowed by CORS; empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Where `custos viewer install` puts OHIF (served under `/viewer/`).
    pub viewer_dir: Option<std::path::PathBuf>,
}

/// Records rustls seals ahead of the socket on an HTTP/1.1 connection
/// (rustls's default is 64 KiB). hyper hands a WADO-RS part over whole; with
/// 64 KiB taken per write, a 52.6 MB study took ~950 `writev`s, each a pass
/// of loopback's receive path in the sender's call. With 1 MiB: server CPU
/// 30-32 -> 25-27 ms and the fetch 27-29 -> 23-27 ms (same run, wado_load).
/// The bound of what a client that stops reading leaves held, beside the
/// parts read ahead.
const SEALED_AHEAD: usize = 1 << 20;

type StreamFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// hyper's executor for an HTTP/2 connection's streams: each stream's future
/// (the request's handler, then its response body) is polled by the task
/// that drives the connection, not spawned as a task of its own. Spawned,
/// a stream and its connection ran on different threads and met on h2's
/// shared lock and across threads for every batch of DATA frames: a 52.6 MB
/// WADO-RS study over HTTP/2 took 660-850 context switches and 32-36 ms of
/// server CPU; polled here 350-380 and 30-33 ms (same run, 4 rounds). CPU
/// work a handler does (decoding, rendering, hashing) goes to tokio's
/// blocking pool as before. A stream that panics is dropped alone, as a
/// spawned task's panic would be.
#[derive(Clone)]
struct StreamsHere(tokio::sync::mpsc::UnboundedSender<StreamFuture>);

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for StreamsHere {
    fn execute(&self, fut: F) {
        use futures_util::FutureExt;
        let guarded = std::panic::AssertUnwindSafe(fut).catch_unwind().map(|r| {
            if r.is_err() {
                tracing::error!("an HTTP/2 stream panicked; its request was dropped");
            }
        });
        // Refused only once the connection's task has ended, and the
        // stream with it.
        let _ = self.0.send(Box::pin(guarded));
    }
}

pub struct AppState {
    pub archive: Arc<Archive>,
    pub config: WebConfig,
    /// Passwords, API tokens and OpenID Connect JWTs; shared with DICOM
    /// user identities.
    pub auth: Arc<Authenticator>,
    /// C-ECHO to a peer, done by the DICOM side (wired by the binary).
    pub peer_echo: Option<Arc<dyn PeerEcho>>,
    /// The server's own checks (`custos doctor`), for the status page.
    pub checkup: Option<Arc<dyn Checkup>>,
}

/// `custos doctor` run for the status page (wired by the binary): its
/// findings and the data disk's free share, as JSON.
pub trait Checkup: Send + Sync {
    fn run(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send + '_>,
    >;
}

/// What a C-ECHO to a peer showed.
pub struct EchoAnswer {
    pub status: u16,
    pub tls: bool,
    pub elapsed: Duration,
}

/// An outbound C-ECHO to a registered peer (the admin page's "Test").
pub trait PeerEcho: Send + Sync {
    fn echo<'a>(
        &'a self,
        peer: &'a custos_core::peer::Peer,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<EchoAnswer, String>> + Send + 'a>>;
}

/// The peer address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

pub fn router(state: Arc<AppState>) -> Router {
    let protected = routes::protected(state.clone())
        .fallback(|| async { error::ApiError::not_found() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_principal,
        ));
    let protected = protected
        .layer(middleware::from_fn(run_to_completion))
        .layer(middleware::from_fn(accept_parameter));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/api/login", axum::routing::post(session::login))
        .route("/viewer", get(viewer::base))
        .route("/viewer/", get(viewer::index))
        .route("/viewer/{*path}", get(viewer::path))
        .merge(protected)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::metered,
        ))
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            common_headers,
        ))
        .with_state(state)
}

/// DICOMweb's `accept` query parameter (PS3.18 8.3.3.1) stands for the
/// Accept header and wins over it: a browser's `<video src>` or a link
/// cannot set headers (OHIF builds `.../bulkdata/7FE00010?accept=video/mp4`
/// when configured for single-part video).
async fn accept_parameter(mut request: Request, next: Next) -> Response {
    let query = request.uri().query().unwrap_or("");
    if !request.uri().path().starts_with("/dicom-web/") || !query.contains("accept=") {
        return next.run(request).await;
    }
    // Percent-decoded only: a `+` is the one in `application/dicom+json`
    // (form decoding made it a space, and the type unknown); one after a
    // `;` or `,` is a form-encoded space (`URLSearchParams`).
    let Ok(ranges) = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("accept="))
        .map(|raw| {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map(|v| v.replace(";+", "; ").replace(",+", ", "))
        })
        .collect::<Result<Vec<String>, _>>()
    else {
        return error::ApiError::bad_request("the accept parameter is not UTF-8").into_response();
    };
    let ranges: Vec<String> = ranges
        .into_iter()
        .filter(|r| !r.trim().is_empty())
        .collect();
    if ranges.is_empty() {
        return next.run(request).await;
    }
    match axum::http::HeaderValue::from_str(&ranges.join(", ")) {
        Ok(v) => {
            request.headers_mut().insert(axum::http::header::ACCEPT, v);
            next.run(request).await
        }
        Err(_) => {
            error::ApiError::bad_request("the accept parameter is not a media type").into_response()
        }
    }
}

/// A request that may change the archive (any method but GET, HEAD and
/// OPTIONS) runs in a task of its own: a client that goes away, or its
/// connection closed meanwhile, does not cut a correction, a deletion or a
/// de-identified copy off halfway, before its audit record is written.
async fn run_to_completion(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "a request's task failed");
            error::ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                .into_response()
        }
    }
}

/// Security headers on every response, and CORS for configured origins only.
async fn common_headers(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| state.config.cors_origins.iter().any(|a| a == o))
        .map(str::to_string);
    let preflight = request.method() == Method::OPTIONS;
    let mut response = if preflight && origin.is_some() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key("content-security-policy") {
        h.insert(
            "content-security-policy",
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if state.config.https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        // Appended: a response may vary on more (the viewer's files on
        // Accept-Encoding).
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, accept"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("content-type, warning"),
        );
    }
    response
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `stop` turns
/// true; open connections then finish their current requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    let app = router(state.clone());
    let slots = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    let per_address =
        custos_core::limits::PerAddress::new(state.config.max_connections_per_address);
    let idle = state.config.idle_timeout;
    let max_header = state.config.max_header_bytes;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Some(address_slot) = per_address.try_enter(addr.ip()) else {
            tracing::warn!(%addr, "too many HTTP connections from this address; closing a new one");
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "too many HTTP connections; closing a new one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let mut stop = stop.clone();
        let archive = state.archive.clone();
        tasks.spawn(async move {
            let metrics = archive.metrics();
            let _permit = permit;
            let _address_slot = address_slot;
            let activity = idle::Activity::new();
            let watch = activity.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                // Not idle while answering a request read whole (`idle`).
                let mark = idle::Mark::default();
                req.extensions_mut().insert(ClientAddr(addr));
                // HTTP/2 carries the host in :authority; handlers read Host.
                if !req.headers().contains_key(header::HOST)
                    && let Some(v) = req
                        .uri()
                        .authority()
                        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                {
                    req.headers_mut().insert(header::HOST, v);
                }
                // HTTP/2 bodies in pieces that fit a TLS record (see `records`).
                let h2 = req.version() == hyper::Version::HTTP_2;
                let body = |b| axum::body::Body::new(idle::ReadWhole::new(b, watch.clone(), mark.clone()));
                let answer = app.clone().oneshot(req.map(body));
                async move {
                    let response = answer.await?;
                    mark.clear();
                    Ok::<_, std::convert::Infallible>(if h2 {
                        response.map(records::fit)
                    } else {
                        response
                    })
                }
            });
            // HTTP/2 streams run in this task, beside the connection (see
            // `StreamsHere`).
            let (streams_tx, mut streams_rx) = tokio::sync::mpsc::unbounded_channel();
            let mut builder = auto::Builder::new(StreamsHere(streams_tx));
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_buf_size(max_header.max(8192))
                .header_read_timeout(Duration::from_secs(30));
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX))
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(20));
            macro_rules! drive {
                ($io:expr, $builder:expr) => {{
                    let builder = $builder;
                    let io = idle::Watched::new($io, activity.clone());
                    let conn = builder.serve_connection(TokioIo::new(io), service);
                    tokio::pin!(conn);
                    let mut streams = futures_util::stream::FuturesUnordered::new();
                    let mut stopping = false;
                    loop {
                        tokio::select! {
                            r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "HTTP connection ended"); } break; }
                            Some(f) = streams_rx.recv() => streams.push(f),
                            Some(()) = futures_util::StreamExt::next(&mut streams), if !streams.is_empty() => {}
                            _ = activity.idle_for(idle), if !stopping => {
                                tracing::debug!(%addr, "closing an idle HTTP connection");
                                break;
                            }
                            _ = stop.changed(), if !stopping => {
                                stopping = true;
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    }
                }};
            }
            match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(WriteBehind::new(custos_tls::read_ahead(tcp)))).await;
                    match handshake {
                        Ok(Ok(mut stream)) => {
                            // HTTP/2 writes frame by frame: gather them (see
                            // `write_behind`). A client that chose h2 must speak
                            // it (RFC 9113 3.2); HTTP/1.1 there would meet
                            // flushes put off for HTTP/2.
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            stream.get_mut().0.gather(h2);
                            if !h2 {
                                stream.get_mut().1.set_buffer_limit(Some(SEALED_AHEAD));
                            }
                            if h2 {
                                drive!(stream, builder.http2_only())
                            } else {
                                drive!(stream, builder)
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%addr, error = %e, "TLS handshake refused");
                            metrics.inc("custos_tls_handshake_failures_total", &[("listener", "http")]);
                        }
                        Err(_) => {
                            tracing::info!(%addr, "TLS handshake timed out");
                            metrics.inc("custos_tls_handshake_failures_total", &[("listener", "http")]);
                        }
                    }
                }
                None => drive!(tcp, builder),
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let grace = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    });
    if grace.await.is_err() {
        tasks.abort_all();
    }
}
