//! DICOM over TLS (PS3.15 B.1): the handshake is done here with tokio-rustls,
//! then the decrypted stream is relayed ([`crate::relay`]) to a loopback TCP
//! connection that the ordinary path (gate peek, dicom-ul) reads as if it were
//! a plain association.
//! dicom-ul's own TLS support cannot be used because the gate must read the
//! A-ASSOCIATE-RQ before dicom-ul's options are built, and its TLS entry point
//! only takes a raw `TcpStream`. The relay costs one loopback copy.

use std::sync::Arc;
use std::time::Duration;

use custos_tls::TlsAcceptor;
use tokio::net::TcpStream;

use custos_core::policy::Transport;

use crate::relay::{IdentityAck, Relay};

/// Completes the TLS handshake on `tcp` and returns the plain stream the gate
/// reads, with what the handshake established and the relay's identity
/// answer slot. The relay runs until either side closes.
pub async fn terminate(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    trust: &custos_tls::client_trust::ClientTrust,
    relay: &Relay,
    timeout: Duration,
) -> Result<(TcpStream, Transport, Arc<IdentityAck>), String> {
    let tls = tokio::time::timeout(
        timeout,
        acceptor.accept(custos_tls::read_ahead(crate::quickack::Acking(tcp))),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake refused: {e}"))?;
    let chain: Vec<Vec<u8>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    let fingerprint = chain
        .first()
        .map(|c| custos_core::credentials::sha256_hex(c));
    let subject = chain.first().and_then(|c| custos_tls::subject_of(c));
    let names = chain
        .first()
        .map(|c| custos_tls::names_of(c))
        .unwrap_or_default();
    let ack = Arc::new(IdentityAck::default());
    let inner = relay
        .interpose(tls, ack.clone(), timeout)
        .await
        .map_err(|(_, e)| e.to_string())?;
    Ok((
        inner,
        Transport {
            tls: true,
            client_cert_sha256: fingerprint,
            client_cert_subject: subject,
            client_cert_names: names,
            from_configured_ca: trust.from_configured_ca(&chain),
            client_chain: chain,
        },
        ack,
    ))
}
