//! TLS as the probe sees it: whether a port completes a handshake (and with
//! which certificate), whether it still accepts TLS 1.0 or 1.1, and the
//! client configuration the DICOM checks use over TLS.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a TLS handshake on a port showed.
pub struct TlsSeen {
    pub version: String,
    /// The server's certificate (DER), if it sent one.
    pub certificate: Option<Vec<u8>>,
}

/// The probe's TLS client: any server certificate is accepted (the probe
/// judges it).
pub fn any_certificate() -> Option<Arc<custos_tls::ClientConfig>> {
    custos_tls::any_certificate_client()
}

/// The TLS handshake on `host:port`, if one succeeds (any certificate is
/// accepted here: the caller judges it).
pub async fn tls_offered(host: &str, port: u16, timeout: Duration) -> Option<TlsSeen> {
    let connector = custos_tls::TlsConnector::from(any_certificate()?);
    let Ok(Ok(tcp)) = tokio::time::timeout(timeout, TcpStream::connect((host, port))).await else {
        return None;
    };
    let name = custos_tls::ServerName::try_from(host.to_string()).ok()?;
    let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    let conn = tls.get_ref().1;
    Some(TlsSeen {
        version: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        certificate: conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec()),
    })
}

/// Protocol versions BCP 195 forbids that `host:port` still accepts ("TLS
/// 1.0", "TLS 1.1"). rustls cannot speak them, so this sends a minimal
/// ClientHello of that version (CBC suites old servers have) and reads only
/// the answer: a ServerHello of the same version means accepted; an alert or
/// a closed connection means refused. The handshake is never completed.
pub async fn legacy_versions(host: &str, port: u16, timeout: Duration) -> Vec<&'static str> {
    let mut accepted = Vec::new();
    for (name, version) in [("TLS 1.0", [3u8, 1u8]), ("TLS 1.1", [3, 2])] {
        if hello_accepted(host, port, version, timeout).await == Some(true) {
            accepted.push(name);
        }
    }
    accepted
}

async fn hello_accepted(
    host: &str,
    port: u16,
    version: [u8; 2],
    timeout: Duration,
) -> Option<bool> {
    let mut tcp = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(timeout, tcp.write_all(&client_hello(version)))
        .await
        .ok()?
        .ok()?;
    let mut head = [0u8; 5];
    match tokio::time::timeout(timeout, tcp.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Some(false),
        Err(_) => return None,
    }
    if head[0] != 0x16 {
        // An alert (0x15) or anything else: refused.
        return Some(false);
    }
    let mut hs = [0u8; 6];
    tokio::time::timeout(timeout, tcp.read_exact(&mut hs))
        .await
        .ok()?
        .ok()?;
    // Handshake type 2 (ServerHello), 3-byte length, then server_version.
    Some(hs[0] == 0x02 && hs[4..6] == version)
}

/// A ClientHello for `version` (TLS 1.0 = 3.1, 1.1 = 3.2) without SNI.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    const SUITES: [u16; 10] = [
        0xC013, 0xC014, 0xC009, 0xC00A, 0x002F, 0x0035, 0x0033, 0x0039, 0x000A, 0x00FF,
    ];
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // The client random needs no strength here: the handshake never completes.
    let random = custos_core::credentials::sha256_hex(&seed.to_be_bytes());
    body.extend_from_slice(&random.as_bytes()[..32]);
    body.push(0); // no session id
    body.extend_from_slice(&((SUITES.len() * 2) as u16).to_be_bytes());
    for s in SUITES {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    let extensions: [u8; 16] = [
        0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x17, 0x00, 0x18, 0x00, 0x1d, // groups
        0x00, 0x0b, 0x00, 0x02, // point formats header...
    ];
    let mut ext = extensions.to_vec();
    ext.extend_from_slice(&[0x01, 0x00]); // ...uncompressed only
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_lengths_add_up() {
        let h = client_hello([3, 2]);
        assert_eq!(h[0], 0x16);
        let record_len = u16::from_be_bytes([h[3], h[4]]) as usize;
        assert_eq!(record_len, h.len() - 5);
        let hs_len = u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize;
        assert_eq!(hs_len, h.len() - 9);
        assert_eq!(&h[9..11], &[3, 2]);
    }
}
