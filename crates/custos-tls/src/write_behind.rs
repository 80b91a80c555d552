//! The ciphertext side of an HTTP/2 connection, written in batches.
//!
//! h2 holds one DATA frame at a time and flushes after each, so a large
//! response went out as one TLS record per `writev`: 3,300 system calls (and
//! on loopback as many packets, each handled by the receiver in the sender's
//! call) for a 52.6 MB study, where HTTP/1.1 needed 950. [`WriteBehind`]
//! gathers what rustls writes and puts a flush off until the connection's task
//! is polled again: it wakes the task when it puts one off, and sends what it
//! holds before reading from the socket (every poll of an h2 connection reads
//! before it writes) or once [`GATHER`] bytes are held. So the frames one poll
//! produces leave in one call, and a flush is never put off past the next poll.
//! What is held when a connection is dropped without a shutdown is lost; h2
//! drops one that way only on an error, and then the alert rustls queues for a
//! corrupt record is not sent (the peer sees the connection close).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// At most this many bytes are held before they are sent.
pub const GATHER: usize = 256 << 10;

/// A buffer grown past this is given back when the connection reads with
/// nothing held and has sent no batch of this size for [`IDLE`] (a client's
/// frames in the middle of a response must not free it each round; a
/// keep-alive ping's small batch must not keep it). An idle HTTP/2
/// connection reads at least at each keep-alive ping.
const KEEP: usize = 64 << 10;
const IDLE: Duration = Duration::from_secs(1);

/// `inner` with writes gathered once [`WriteBehind::gather`] is switched on
/// (until then, and for reads, it passes straight through).
pub struct WriteBehind<S> {
    inner: S,
    held: Vec<u8>,
    /// How much of `held` is already written.
    sent: usize,
    on: bool,
    /// A flush was put off and the task woken to finish it.
    owed: bool,
    /// When the last batch of at least [`KEEP`] bytes was sent.
    last_large: Instant,
}

impl<S> WriteBehind<S> {
    pub fn new(inner: S) -> WriteBehind<S> {
        WriteBehind {
            inner,
            held: Vec::new(),
            sent: 0,
            on: false,
            owed: false,
            last_large: Instant::now(),
        }
    }

    /// Gather writes from now on (after the handshake, for HTTP/2).
    pub fn gather(&mut self, on: bool) {
        self.on = on;
    }
}

impl<S: AsyncWrite + Unpin> WriteBehind<S> {
    /// Writes out everything held.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.held.len() >= KEEP {
            self.last_large = Instant::now();
        }
        self.held.clear();
        self.sent = 0;
        self.owed = false;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes in `held`, sending what is held if
    /// they would not fit; `false` when they are better written directly.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.held.len() + len > GATHER {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(len < GATHER))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WriteBehind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Before waiting for the peer, send it what it is owed. If the socket
        // is full, read anyway (the peer may be waiting to be read from); the
        // socket's wake-up when it drains brings the task back to send.
        if !self.held.is_empty() {
            if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
        } else if self.held.capacity() > KEEP && self.last_large.elapsed() >= IDLE {
            self.held = Vec::new();
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteBehind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if !this.on {
            if !this.held.is_empty() {
                ready!(this.poll_send(cx))?;
            }
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.on && !this.held.is_empty() && this.held.len() < GATHER {
            // Put off until the task is polled again: more frames may follow
            // in this poll. The wake makes sure that poll comes.
            if !this.owed {
                this.owed = true;
                cx.waker().wake_by_ref();
            }
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// A socket that records each write and can refuse writes (full) or have
    /// bytes to read.
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        full: bool,
        incoming: Vec<u8>,
        /// Takes at most this many bytes per write (0: all).
        most: usize,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.full {
                return Poll::Pending;
            }
            let n = if self.most == 0 {
                data.len()
            } else {
                data.len().min(self.most)
            };
            self.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Socket {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.incoming.is_empty() {
                return Poll::Pending;
            }
            let n = self.incoming.len().min(buf.remaining());
            buf.put_slice(&self.incoming[..n]);
            self.incoming.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A writer over `socket` with gathering on, as for an HTTP/2 connection.
    fn gathering(socket: Socket) -> WriteBehind<Socket> {
        let mut w = WriteBehind::new(socket);
        w.gather(true);
        w
    }

    fn frame(i: usize) -> Vec<u8> {
        vec![i as u8; 16_384]
    }

    fn write(w: &mut WriteBehind<Socket>, cx: &mut Context<'_>, data: &[u8]) {
        // As rustls writes a record: header and body as two slices.
        let mut done = 0;
        while done < data.len() {
            let head = 9usize.saturating_sub(done);
            let slices = [
                io::IoSlice::new(&data[done..done + head]),
                io::IoSlice::new(&data[done + head..]),
            ];
            match Pin::new(&mut *w).poll_write_vectored(cx, &slices) {
                Poll::Ready(Ok(n)) if n > 0 => done += n,
                other => panic!("write: {other:?}"),
            }
        }
    }

    fn flush(w: &mut WriteBehind<Socket>, cx: &mut Context<'_>) {
        assert!(matches!(
            Pin::new(&mut *w).poll_flush(cx),
            Poll::Ready(Ok(()))
        ));
    }

    fn read(w: &mut WriteBehind<Socket>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut space = [0u8; 64];
        Pin::new(&mut *w).poll_read(cx, &mut ReadBuf::new(&mut space))
    }

    fn sent(w: &WriteBehind<Socket>) -> Vec<u8> {
        w.inner.writes.concat()
    }

    #[test]
    fn frames_flushed_one_by_one_leave_in_one_write_at_the_next_read() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut w = gathering(Socket::default());
        let mut expected = Vec::new();
        for i in 0..10 {
            write(&mut w, &mut cx, &frame(i));
            flush(&mut w, &mut cx);
            expected.extend(frame(i));
        }
        assert!(
            w.inner.writes.is_empty(),
            "nothing sent before the next poll"
        );
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "one wake-up per put-off flush"
        );
        // The next poll reads first: everything goes out, in one write.
        assert!(read(&mut w, &mut cx).is_pending());
        assert_eq!(w.inner.writes.len(), 1);
        assert_eq!(sent(&w), expected);
        // And a flush with nothing held passes through.
        flush(&mut w, &mut cx);
        assert_eq!(w.inner.writes.len(), 1);
    }

    #[test]
    fn each_put_off_batch_wakes_the_task_once() {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut w = gathering(Socket::default());
        for round in 1..=3 {
            write(&mut w, &mut cx, &frame(round));
            flush(&mut w, &mut cx);
            write(&mut w, &mut cx, &frame(round));
            flush(&mut w, &mut cx);
            assert_eq!(wakes.0.load(Ordering::SeqCst), round, "round {round}");
            assert!(read(&mut w, &mut cx).is_pending());
        }
        assert_eq!(w.inner.writes.len(), 3);
    }

    #[test]
    fn short_socket_writes_and_a_full_socket_keep_the_order() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut w = gathering(Socket {
            most: 5_000,
            ..Socket::default()
        });
        let mut expected = Vec::new();
        for i in 0..16 {
            write(&mut w, &mut cx, &frame(i));
            expected.extend(frame(i));
        }
        assert!(w.inner.writes.is_empty(), "16 frames fill 256 KiB");
        // The 17th does not fit: sending what is held meets a full socket, so
        // the frame is refused, not taken.
        w.inner.full = true;
        let f = frame(16);
        assert!(Pin::new(&mut w).poll_write(&mut cx, &f).is_pending());
        w.inner.full = false;
        write(&mut w, &mut cx, &f);
        expected.extend(f);
        assert!(Pin::new(&mut w).poll_shutdown(&mut cx).is_ready());
        assert_eq!(sent(&w), expected);
        assert!(w.inner.writes.iter().all(|piece| piece.len() <= 5_000));
    }

    #[test]
    fn at_most_gather_bytes_are_held() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut w = gathering(Socket::default());
        let mut expected = Vec::new();
        for i in 0..40 {
            write(&mut w, &mut cx, &frame(i));
            flush(&mut w, &mut cx);
            expected.extend(frame(i));
            assert!(w.held.len() <= GATHER);
        }
        // 40 frames of 16 KiB: 16 fill the 256 KiB twice over, 8 are held.
        assert_eq!(w.inner.writes.len(), 2);
        assert_eq!(w.held.len(), 8 * 16_384);
        assert!(Pin::new(&mut w).poll_shutdown(&mut cx).is_ready());
        assert_eq!(sent(&w), expected);
        assert!(w.held.is_empty());
    }

    #[test]
    fn a_large_buffer_is_given_back_once_the_connection_is_quiet() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut w = gathering(Socket::default());
        for i in 0..10 {
            write(&mut w, &mut cx, &frame(i));
        }
        assert!(read(&mut w, &mut cx).is_pending());
        assert!(w.held.capacity() >= 10 * 16_384, "kept while batches go");
        write(&mut w, &mut cx, &frame(10));
        assert!(read(&mut w, &mut cx).is_pending());
        assert!(w.held.capacity() >= 10 * 16_384, "kept while batches go");
        // A read with nothing held right after a batch: the client's frames
        // in the middle of a response.
        assert!(read(&mut w, &mut cx).is_pending());
        assert!(w.held.capacity() >= 10 * 16_384, "kept while batches go");
        // Once no large batch has gone for IDLE (a ping's small one does not
        // count), the response is done.
        w.last_large -= IDLE;
        write(&mut w, &mut cx, &[6u8; 17]);
        assert!(read(&mut w, &mut cx).is_pending());
        assert!(read(&mut w, &mut cx).is_pending());
        assert_eq!(w.held.capacity(), 0, "given back");
        assert_eq!(sent(&w).len(), 11 * 16_384 + 17);
    }

    #[test]
    fn without_gathering_writes_pass_straight_through() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut w = WriteBehind::new(Socket::default());
        for i in 0..3 {
            write(&mut w, &mut cx, &frame(i));
            flush(&mut w, &mut cx);
        }
        // (The socket takes the first slice of a vectored write at a time.)
        assert_eq!(w.inner.writes.len(), 6);
        assert_eq!(sent(&w), [frame(0), frame(1), frame(2)].concat());
        assert!(w.held.is_empty());
    }

    #[test]
    fn a_full_socket_does_not_stop_reading() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut w = gathering(Socket::default());
        write(&mut w, &mut cx, &frame(1));
        flush(&mut w, &mut cx);
        w.inner.full = true;
        w.inner.incoming = b"window update".to_vec();
        // The held bytes cannot leave, but what the peer sent is read.
        assert!(matches!(read(&mut w, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!(w.held.len(), 16_384);
        // Once the socket drains, the next read sends them.
        w.inner.full = false;
        assert!(read(&mut w, &mut cx).is_pending());
        assert_eq!(sent(&w), frame(1));
    }
}
