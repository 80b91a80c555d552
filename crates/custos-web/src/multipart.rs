//! multipart/related bodies for WADO-RS, written as the bytes come from the
//! store: a 1 GB study never sits in memory, only the part being sent and
//! the next two (an instance is read whole up to 2 MiB, larger ones in
//! 256 KiB chunks).

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncReadExt;

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

pub type PartSource = std::pin::Pin<Box<dyn Future<Output = Result<Part, String>> + Send>>;

/// A response streaming `parts` (each made when its turn comes) as
/// `multipart/related; type="<media>"`, each part of type `part_type`.
pub fn response(media: &str, part_type: &str, parts: Vec<PartSource>) -> Response {
    let typed = parts
        .into_iter()
        .map(|p| (part_type.to_string(), p))
        .collect();
    response_typed(media, typed)
}

/// The same with a content type per part (instances sent in different
/// transfer syntaxes). An error mid-stream aborts the response, so a client
/// never mistakes a truncated body for a whole one.
///
/// The body is a stream the connection's own task polls: the next parts are
/// read (on tokio's blocking pool) while this one is written, and nothing
/// passes through another task and a channel — which cost a wake-up across
/// threads per chunk handed over (measured: ~530 context switches per
/// 100-instance study).
pub fn response_typed(media: &str, parts: Vec<(String, PartSource)>) -> Response {
    use futures_util::StreamExt;
    use futures_util::stream::{self, BoxStream};

    let boundary = custos_core::credentials::random_text(32);
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let (types, parts): (Vec<String>, Vec<PartSource>) = parts.into_iter().unzip();
    let delimiter = format!("--{boundary}\r\nContent-Type: ");
    // Each part's head carries the line break that ends the part before it.
    let heads = types.into_iter().enumerate().map(move |(i, t)| {
        let before = if i == 0 { "" } else { "\r\n" };
        Bytes::from(format!("{before}{delimiter}{t}\r\n\r\n"))
    });
    let any = !parts.is_empty();
    let chunks = stream::iter(parts)
        .buffered(AHEAD)
        .zip(stream::iter(heads))
        .flat_map(
            |(part, head)| -> BoxStream<'static, Result<Bytes, std::io::Error>> {
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
        .chain(stream::iter(any.then_some(Ok(tail))))
        // Nothing after an error: the response ends there, aborted.
        .scan(false, |failed, item| {
            let next = (!*failed).then(|| {
                *failed = item.is_err();
                item
            });
            async move { next }
        });
    let body = if any {
        Body::from_stream(chunks)
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

/// Splits an Accept (or Content-Type) header into media ranges, honouring
/// quoted parameter values. Absent header means `*/*`.
pub fn media_ranges(value: Option<&str>) -> Vec<MediaRange> {
    let Some(value) = value else {
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
    }
}
