//! Idle connections are closed: a connection that carries no bytes either way
//! for the idle timeout gives its slot back. hyper bounds the wait for a
//! request head on HTTP/1.1 but has no idle limit for HTTP/2, where a client
//! can hold a connection open forever without a request; this covers both.
//! A connection whose request has been read whole and is being answered is
//! not idle however long the answer takes (a correction of a large study):
//! the client waits for it. One still sending its request is idle when its
//! bytes stop coming (a request head, then silence, holds nothing for long).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// An I/O stream that notes when it last moved bytes.
pub struct Watched<T> {
    inner: T,
    activity: Activity,
}

/// When the watched stream last moved bytes (milliseconds after `start`).
#[derive(Clone)]
pub struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    /// Requests whose response has not started yet.
    answering: Arc<AtomicUsize>,
}

/// Held while a request is answered: the connection is not idle meanwhile.
pub struct Answering(Arc<AtomicUsize>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            answering: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Marks a request being answered until the returned guard drops.
    pub fn answering(&self) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        Answering(self.answering.clone())
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Returns once no byte has moved for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            if self.answering.load(Ordering::Relaxed) > 0 {
                self.touch();
            }
            let quiet_until = self.last() + limit;
            if Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    }
}

/// A request's answering mark, set once its body has been read whole and
/// given up when its response is ready (`ReadWhole`).
#[derive(Clone, Default)]
pub struct Mark(Arc<std::sync::Mutex<Option<Answering>>>);

impl Mark {
    fn set(&self, activity: &Activity) {
        if let Ok(mut held) = self.0.lock()
            && held.is_none()
        {
            *held = Some(activity.answering());
        }
    }

    /// The response is ready: the connection counts as idle again.
    pub fn clear(&self) {
        if let Ok(mut held) = self.0.lock() {
            held.take();
        }
    }
}

/// A request body that sets its request's [`Mark`] once it has been read to
/// the end (or at once, when there is none).
pub struct ReadWhole<B> {
    inner: B,
    activity: Activity,
    mark: Mark,
}

impl<B: hyper::body::Body> ReadWhole<B> {
    pub fn new(inner: B, activity: Activity, mark: Mark) -> ReadWhole<B> {
        if inner.is_end_stream() {
            mark.set(&activity);
        }
        ReadWhole {
            inner,
            activity,
            mark,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for ReadWhole<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.mark.set(&self.activity);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Activity) -> Watched<T> {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_is_measured_from_the_last_byte() {
        let (a, mut b) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut watched = Watched::new(a, activity.clone());
        let limit = Duration::from_secs(10);
        tokio::time::advance(Duration::from_secs(6)).await;
        b.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        watched.read_exact(&mut byte).await.unwrap();
        let started = Instant::now();
        activity.idle_for(limit).await;
        // Ten seconds after the byte, not after the stream was made.
        assert_eq!(started.elapsed(), limit);
    }

    /// A request being answered keeps the connection from counting as idle;
    /// once answered, the limit counts again from then.
    #[tokio::test(start_paused = true)]
    async fn a_request_being_answered_is_not_idleness() {
        let activity = Activity::new();
        let limit = Duration::from_secs(10);
        let guard = activity.answering();
        let waited = tokio::time::timeout(Duration::from_secs(60), activity.idle_for(limit)).await;
        assert!(waited.is_err(), "idle while a request was being answered");
        drop(guard);
        let started = Instant::now();
        activity.idle_for(limit).await;
        assert!(started.elapsed() <= limit);
    }

    /// A request counts as being answered only once its body has been read
    /// to the end: one whose body stops coming stays subject to the limit.
    #[tokio::test]
    async fn a_request_counts_as_answered_once_read_whole() {
        use hyper::body::{Body as _, Frame};
        /// Frames handed out one by one.
        struct Frames(std::collections::VecDeque<Frame<bytes::Bytes>>);
        impl hyper::body::Body for Frames {
            type Data = bytes::Bytes;
            type Error = std::convert::Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
                Poll::Ready(self.0.pop_front().map(Ok))
            }
            fn is_end_stream(&self) -> bool {
                self.0.is_empty()
            }
        }
        let answering = |a: &Activity| a.answering.load(Ordering::Relaxed);
        let activity = Activity::new();
        let mark = Mark::default();
        let frames = Frames([Frame::data(bytes::Bytes::from_static(b"{}"))].into());
        let mut body = ReadWhole::new(frames, activity.clone(), mark.clone());
        assert_eq!(answering(&activity), 0, "marked before the body came");
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(first.is_some());
        assert_eq!(answering(&activity), 1, "read whole");
        mark.clear();
        assert_eq!(answering(&activity), 0);
        // No body at all: answered from the start.
        let _empty = ReadWhole::new(Frames(Default::default()), activity.clone(), mark.clone());
        assert_eq!(answering(&activity), 1);
        drop(_empty);
        mark.clear();
        assert_eq!(answering(&activity), 0);
    }
}
