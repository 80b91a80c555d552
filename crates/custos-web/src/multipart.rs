//! multipart/related bodies for WADO-RS, written as the bytes come from the
//! store: a 1 GB study never sits in memory, only the part being sent and
//! at most two read ahead (an instance is read whole up to 2 MiB, larger
//! ones in 256 KiB chunks). What is read ahead is bounded for the whole
//! process ([`READ_AHEAD_BUDGET`]), and a response reads ahead only once its
//! client has taken a part: a client that stops reading — or opens many
//! HTTP/2 streams and reads none — holds the part it was handed, not three.

use std::collections::VecDeque;
use std::iter::Peekable;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes read from the store per chunk.
const CHUNK: usize = 256 << 10;

/// One part: its content type and where its bytes come from.
pub enum Part {
    Bytes(Bytes),
    Reader(custos_store::Reader),
}

/// Parts made ahead of the one being sent: the next instance is read from
/// the store while this one goes out.
const AHEAD: usize = 2;

/// Bytes all responses together may hold read ahead of the part they send;
/// past it, parts are read when their turn comes (slower, never refused).
pub const READ_AHEAD_BUDGET: usize = 32 << 20;

/// The budget's unit: a permit is this many bytes.
const UNIT: u64 = 4096;

static BUDGET: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(READ_AHEAD_BUDGET / UNIT as usize)));

pub type PartSource = std::pin::Pin<Box<dyn Future<Output = Result<Part, String>> + Send>>;

/// A part to make, with the bytes it will hold once made (0: already in
/// memory, or opened as a stream).
pub struct Planned {
    pub holds: u64,
    pub make: PartSource,
}

/// A response streaming `parts` (each made when its turn comes) as
/// `multipart/related; type="<media>"`, each part of type `part_type`.
/// The parts are in memory already (frames, rendered or bulk values).
pub fn response(media: &str, part_type: &str, parts: Vec<Bytes>) -> Response {
    let part_type = part_type.to_string();
    let typed = parts.into_iter().map(move |b| {
        let make = Box::pin(async move { Ok(Part::Bytes(b)) }) as PartSource;
        (part_type.clone(), Planned { holds: 0, make })
    });
    response_typed(media, typed)
}

/// The same with a content type per part (instances sent in different
/// transfer syntaxes). An error mid-stream aborts the response, so a client
/// never mistakes a truncated body for a whole one. `parts` is taken from as
/// parts are made, so a part's plan (its future) exists only near its turn;
/// planned all at once, they held ~1.5 MiB per response for a 6,000-instance
/// study, growing with the count.
///
/// The body is a stream the connection's own task polls: the next parts are
/// read (on tokio's blocking pool) while this one is written, and nothing
/// passes through another task and a channel — which cost a wake-up across
/// threads per chunk handed over (measured: ~530 context switches per
/// 100-instance study).
pub fn response_typed(
    media: &str,
    parts: impl Iterator<Item = (String, Planned)> + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    use futures_util::stream::{self, BoxStream};

    let boundary = custos_core::credentials::random_text(32);
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let delimiter = format!("--{boundary}\r\nContent-Type: ");
    let mut parts = parts.peekable();
    let any = parts.peek().is_some();
    let chunks = ReadAhead::new(parts, BUDGET.clone())
        .enumerate()
        .flat_map(
            move |(i, (part_type, part))| -> BoxStream<'static, Result<Bytes, std::io::Error>> {
                // Each part's head carries the line break that ends the part before it.
                let before = if i == 0 { "" } else { "\r\n" };
                let head = Bytes::from(format!("{before}{delimiter}{part_type}\r\n\r\n"));
                match part {
                    Err(e) => {
                        tracing::warn!(error = %e, "aborting a multipart response");
                        stream::once(async move { Err(std::io::Error::other(e)) }).boxed()
                    }
                    Ok(Part::Bytes(b)) => stream::iter([Ok(head), Ok(b)]).boxed(),
                    Ok(Part::Reader(r)) => stream::once(async move { Ok(head) })
                        .chain(reader_chunks(r))
                        .boxed(),
                }
            },
        )
        .chain(stream::iter(any.then_some(Ok(tail))));
    let body = if any {
        Body::from_stream(ended_at_error(chunks))
    } else {
        // No part at all: the closing delimiter alone.
        Body::from(format!("--{boundary}--\r\n"))
    };
    (
        [(
            header::CONTENT_TYPE,
            format!("multipart/related; type=\"{media}\"; boundary={boundary}"),
        )],
        body,
    )
        .into_response()
}

/// `chunks` up to and with its first error: hyper aborts the response there
/// (the client sees it cut off, never a body that merely ends early).
pub fn ended_at_error<S>(chunks: S) -> impl Stream<Item = Result<Bytes, std::io::Error>>
where
    S: Stream<Item = Result<Bytes, std::io::Error>>,
{
    use futures_util::StreamExt;
    chunks.scan(false, |failed, item| {
        let next = (!*failed).then(|| {
            *failed = item.is_err();
            item
        });
        async move { next }
    })
}

/// Parts in order, each made when its turn comes or, budget permitting, up
/// to [`AHEAD`] before. Nothing is read ahead before the consumer has taken
/// a part and asked for the next (over HTTP/2, hyper asks only once the
/// stream's send buffer has drained below its limit: the client reads).
/// A part read ahead holds its share of the budget until its bytes are
/// dropped, i.e. sent. Every part being made is polled at each poll, so a
/// part read ahead is being made from its start, not only from its turn.
/// Plans are taken from `waiting` only to start them (one more is peeked).
struct ReadAhead {
    waiting: Peekable<Box<dyn Iterator<Item = (String, Planned)> + Send>>,
    /// Parts being made, each with its content type.
    running: VecDeque<(String, Making)>,
    /// A part was handed over.
    taken: bool,
    budget: Arc<Semaphore>,
}

enum Making {
    Now(PartSource),
    Made(Result<Part, String>),
}

impl ReadAhead {
    fn new(
        parts: impl Iterator<Item = (String, Planned)> + Send + 'static,
        budget: Arc<Semaphore>,
    ) -> ReadAhead {
        let parts: Box<dyn Iterator<Item = (String, Planned)> + Send> = Box::new(parts);
        ReadAhead {
            waiting: parts.peekable(),
            running: VecDeque::with_capacity(AHEAD + 1),
            taken: false,
            budget,
        }
    }

    /// Starts the next waiting part, holding `permit` for what it reads.
    fn start(&mut self, permit: Option<OwnedSemaphorePermit>) {
        let Some((part_type, planned)) = self.waiting.next() else {
            return;
        };
        let make = planned.make;
        let making = Making::Now(match permit {
            None => make,
            Some(permit) => Box::pin(async move {
                match make.await? {
                    Part::Bytes(b) => Ok(Part::Bytes(Bytes::from_owner(Budgeted {
                        bytes: b,
                        _permit: permit,
                    }))),
                    // A stream holds no more than the chunk being sent.
                    reader => Ok(reader),
                }
            }),
        });
        self.running.push_back((part_type, making));
    }
}

impl Stream for ReadAhead {
    type Item = (String, Result<Part, String>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.running.is_empty() {
            this.start(None);
        }
        while this.taken && this.running.len() <= AHEAD {
            let Some((_, next)) = this.waiting.peek() else {
                break;
            };
            // More than the whole budget is never granted: asked as one
            // unit more (tokio refuses counts past its own maximum).
            let whole = (READ_AHEAD_BUDGET as u64 / UNIT) + 1;
            let units = next.holds.div_ceil(UNIT).min(whole) as u32;
            match this.budget.clone().try_acquire_many_owned(units) {
                Ok(permit) => this.start(Some(permit)),
                Err(_) => break,
            }
        }
        for (_, slot) in this.running.iter_mut() {
            if let Making::Now(f) = slot
                && let Poll::Ready(r) = f.as_mut().poll(cx)
            {
                *slot = Making::Made(r);
            }
        }
        match this.running.pop_front() {
            None => Poll::Ready(None),
            Some((part_type, Making::Made(r))) => {
                this.taken = true;
                Poll::Ready(Some((part_type, r)))
            }
            Some(now) => {
                this.running.push_front(now);
                Poll::Pending
            }
        }
    }
}

/// A part's bytes with the share of the read-ahead budget they hold.
struct Budgeted {
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// One part alone as the whole body (a single `application/dicom` instance),
/// made before the status so that a failure is one.
pub async fn single(part_type: String, planned: Planned) -> Result<Response, String> {
    let body = match planned.make.await? {
        Part::Bytes(b) => axum::body::Body::from(b),
        Part::Reader(r) => axum::body::Body::from_stream(reader_chunks(r)),
    };
    Ok(([(axum::http::header::CONTENT_TYPE, part_type)], body).into_response())
}

/// A large part's bytes in chunks of [`CHUNK`], read into spare capacity (no
/// zero-filling of each chunk); an error ends them.
fn reader_chunks(
    r: custos_store::Reader,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(Some(r), |r| async move {
        let mut r = r?;
        let mut buf = bytes::BytesMut::with_capacity(CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(r))),
            Err(e) => {
                tracing::warn!(error = %e, "aborting a multipart response");
                Some((Err(e), None))
            }
        }
    })
}

/// One media range of an Accept header: `type/subtype` and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    pub media: String,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Refuses (406) a request whose Accept takes no DICOM JSON: QIDO-RS and
/// metadata answer `application/dicom+json` only (PS3.18 8.7.5: XML is not
/// offered), so a client asking for `application/dicom+xml` alone learns so
/// instead of getting what it cannot read.
pub fn json_accepted(headers: &axum::http::HeaderMap) -> Result<(), crate::error::ApiError> {
    // An empty header is no header.
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let ranges = media_ranges(accept);
    let q = |r: &MediaRange| {
        r.param("q")
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0)
    };
    // The range naming DICOM JSON itself decides (`;q=0` refuses it
    // whatever `*/*` says); else any range that covers it.
    let takes_json = match ranges.iter().find(|r| r.media == "application/dicom+json") {
        Some(exact) => q(exact) > 0.0,
        None => ranges.iter().any(|r| {
            q(r) > 0.0
                && matches!(
                    r.media.as_str(),
                    "application/json" | "application/*" | "*/*"
                )
        }),
    };
    if takes_json {
        Ok(())
    } else {
        Err(crate::error::ApiError::new(
            axum::http::StatusCode::NOT_ACCEPTABLE,
            "only application/dicom+json is offered here",
        ))
    }
}

/// Splits an Accept (or Content-Type) header into media ranges, honouring
/// quoted parameter values. An absent or empty header means `*/*` (an empty
/// Accept had made retrieval, frames and rendering answer 406).
pub fn media_ranges(value: Option<&str>) -> Vec<MediaRange> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return vec![MediaRange {
            media: "*/*".into(),
            params: vec![],
        }];
    };
    let mut out = Vec::new();
    for range in split_outside_quotes(value, ',') {
        let mut pieces = split_outside_quotes(&range, ';').into_iter();
        let media = pieces
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        let params = pieces
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                ))
            })
            .collect();
        out.push(MediaRange { media, params });
    }
    out
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accept() {
        let r = media_ranges(Some(
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*, application/json;q=0.5",
        ));
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].media, "multipart/related");
        assert_eq!(r[0].param("type"), Some("application/dicom"));
        assert_eq!(r[0].param("transfer-syntax"), Some("*"));
        assert_eq!(r[1].media, "application/json");
        assert_eq!(media_ranges(None)[0].media, "*/*");
        assert_eq!(media_ranges(Some(" "))[0].media, "*/*");
    }

    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `n` parts of 4 KiB (one budget unit each), counting in `started` the
    /// parts that began being made (read from the store).
    fn parts(n: usize, started: &Arc<AtomicUsize>) -> Vec<(String, Planned)> {
        (0..n)
            .map(|i| {
                let started = started.clone();
                let make = Box::pin(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    Ok(Part::Bytes(Bytes::from(vec![i as u8; 4096])))
                }) as PartSource;
                (String::new(), Planned { holds: 4096, make })
            })
            .collect()
    }

    async fn take(r: &mut ReadAhead) -> Bytes {
        match r.next().await {
            Some((_, Ok(Part::Bytes(b)))) => b,
            _ => panic!("a part's bytes"),
        }
    }

    #[tokio::test]
    async fn nothing_is_read_ahead_before_the_client_takes_a_part() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut r = ReadAhead::new(
            parts(6, &started).into_iter(),
            Arc::new(Semaphore::new(100)),
        );
        assert_eq!(take(&mut r).await[0], 0);
        assert_eq!(started.load(Ordering::SeqCst), 1, "only the part sent");
        // Asked for the next: it and two more are made.
        assert_eq!(take(&mut r).await[0], 1);
        assert_eq!(started.load(Ordering::SeqCst), 4);
        for i in 2..6 {
            assert_eq!(take(&mut r).await[0], i, "in order");
        }
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn plans_are_taken_only_as_parts_start() {
        let started = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let counted = taken.clone();
        let plans = parts(100, &started).into_iter().inspect(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let mut r = ReadAhead::new(plans, Arc::new(Semaphore::new(1000)));
        for i in 0..10 {
            assert_eq!(take(&mut r).await[0], i as u8);
            // The part sent, those read ahead, and one peeked at.
            let plans_taken = taken.load(Ordering::SeqCst);
            assert!(plans_taken <= i + AHEAD + 2, "{plans_taken} after part {i}");
        }
    }

    #[tokio::test]
    async fn without_budget_each_part_is_made_in_its_turn() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut r = ReadAhead::new(parts(4, &started).into_iter(), Arc::new(Semaphore::new(0)));
        for i in 0..4 {
            assert_eq!(take(&mut r).await[0], i);
            assert_eq!(started.load(Ordering::SeqCst), i as usize + 1);
        }
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn a_part_larger_than_the_whole_budget_is_made_in_its_turn() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut planned = parts(5, &started);
        planned[2].1.holds = u64::MAX;
        let mut r = ReadAhead::new(planned.into_iter(), Arc::new(Semaphore::new(100)));
        assert_eq!(take(&mut r).await[0], 0);
        // The next is made; the one after it can never be granted, and
        // parts behind it wait for their turn too (in order).
        assert_eq!(take(&mut r).await[0], 1);
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(take(&mut r).await[0], 2);
        assert_eq!(started.load(Ordering::SeqCst), 5, "then read ahead again");
        for i in 3..5 {
            assert_eq!(take(&mut r).await[0], i);
        }
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn parts_read_ahead_hold_the_budget_until_their_bytes_are_dropped() {
        let started = Arc::new(AtomicUsize::new(0));
        let budget = Arc::new(Semaphore::new(3));
        let mut r = ReadAhead::new(parts(8, &started).into_iter(), budget.clone());
        let first = take(&mut r).await;
        let second = take(&mut r).await;
        assert_eq!(budget.available_permits(), 1, "parts 2 and 3 read ahead");
        drop((first, second));
        assert_eq!(
            budget.available_permits(),
            1,
            "parts made in turn held none"
        );
        let third = take(&mut r).await;
        // Part 4 joined part 3 ahead; the third's bytes, not yet sent, still
        // hold their share.
        assert_eq!(budget.available_permits(), 0);
        assert_eq!(started.load(Ordering::SeqCst), 5);
        drop(third);
        assert_eq!(budget.available_permits(), 1);
        for i in 3..8 {
            assert_eq!(take(&mut r).await[0], i);
        }
        assert!(r.next().await.is_none());
        assert_eq!(budget.available_permits(), 3, "all given back");
    }
}
