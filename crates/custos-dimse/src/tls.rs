//! DICOM over TLS (PS3.15 B.1): the handshake is done here with tokio-rustls,
//! then the decrypted stream is relayed to a loopback TCP connection that the
//! ordinary path (gate peek, dicom-ul) reads as if it were a plain association.
//! dicom-ul's own TLS support cannot be used because the gate must read the
//! A-ASSOCIATE-RQ before dicom-ul's options are built, and its TLS entry point
//! only takes a raw `TcpStream`. The relay costs one loopback copy.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

use custos_core::policy::Transport;

/// Makes connected loopback pairs: one end for the relay, one for the gate.
pub struct Relay {
    listener: Mutex<TcpListener>,
    addr: SocketAddr,
}

impl Relay {
    pub async fn new() -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Relay {
            listener: Mutex::new(listener),
            addr,
        })
    }

    /// (relay end, association end). Connections to the relay's port from
    /// anyone else are dropped: only the one we just opened is accepted.
    async fn pair(&self) -> std::io::Result<(TcpStream, TcpStream)> {
        let listener = self.listener.lock().await;
        let outer = TcpStream::connect(self.addr).await?;
        let ours = outer.local_addr()?;
        loop {
            let (inner, from) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .map_err(|_| std::io::Error::other("relay pairing timed out"))??;
            if from == ours {
                let _ = inner.set_nodelay(true);
                let _ = outer.set_nodelay(true);
                return Ok((outer, inner));
            }
        }
    }
}

/// Completes the TLS handshake on `tcp` and returns the plain stream the gate
/// reads, with what the handshake established. The relay runs until either
/// side closes.
pub async fn terminate(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    relay: &Relay,
    timeout: Duration,
) -> Result<(TcpStream, Transport), String> {
    let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake refused: {e}"))?;
    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| custos_core::credentials::sha256_hex(c.as_ref()));
    let (mut outer, inner) = relay.pair().await.map_err(|e| e.to_string())?;
    let mut tls = tls;
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut outer).await;
    });
    Ok((
        inner,
        Transport {
            tls: true,
            client_cert_sha256: fingerprint,
        },
    ))
}
