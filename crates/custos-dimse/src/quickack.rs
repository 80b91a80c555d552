//! Immediate TCP acknowledgements of what a DICOM peer sends.
//!
//! Debian's DCMTK leaves Nagle's algorithm on unless `TCP_NODELAY=1` is in its
//! environment, and it writes one PDU in two `write`s (headers, then value).
//! Nagle then holds the second write until the first is acknowledged, while
//! Linux delays that acknowledgement by up to 40 ms when we have nothing to
//! send back yet: measured, every C-STORE from such a storescu, and every
//! response from such a C-MOVE destination or getscu, cost 40 ms. Asking the
//! kernel for an immediate ACK after each read removes that stall on our side,
//! whatever the peer's setting. Linux only; elsewhere this does nothing.
//!
//! Two ways in, because dicom-ul owns its sockets: [`crate::link::receive_pdu`]
//! reads into a dicom-ul association's buffer itself, and [`Acking`] wraps a
//! socket we hand to TLS.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The TCP socket under a DICOM stream, plain or TLS.
pub trait Tcp {
    fn tcp(&self) -> &TcpStream;
}

impl Tcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Tcp for dicom_ul::association::client::AsyncTlsStream {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Acknowledge at once what has been read from `tcp`. Errors are ignored:
/// failing costs the delay this avoids, never a wrong answer.
pub fn ack_now(tcp: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = rustix::net::sockopt::set_tcp_quickack(tcp, true);
    #[cfg(not(target_os = "linux"))]
    let _ = tcp;
}

/// A socket that acknowledges every read at once (for the TLS side, whose
/// reads dicom-ul does not see).
#[derive(Debug)]
pub struct Acking(pub TcpStream);

impl AsyncRead for Acking {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            ack_now(&self.0);
        }
        polled
    }
}

impl AsyncWrite for Acking {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
