//! A loopback relay between a client's connection and dicom-ul, for the two
//! things dicom-ul 0.10's server cannot do on its own stream:
//!
//! - read an association that arrived over TLS (the handshake is done by
//!   [`crate::tls`], the gate and dicom-ul read the relayed plain stream), and
//! - answer a User Identity request that asked for a positive response
//!   (PS3.7 D.3.3.7.2): dicom-ul's A-ASSOCIATE-AC never carries the 59H
//!   sub-item, so the relay decodes that one PDU with dicom-ul's own codec,
//!   adds the sub-item, and re-encodes it. Every later byte is copied as is.
//!
//! The relay costs one loopback copy and is only used where needed: always
//! for TLS, and on the plain port only for associations whose verified user
//! asked for a positive response.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dicom_ul::pdu::{Pdu, UserVariableItem};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// Largest A-ASSOCIATE-AC the relay will decode to add the sub-item.
const MAX_AC: usize = 64 * 1024;

/// Makes connected loopback pairs: one end for the relay, one for dicom-ul.
pub struct Relay {
    listener: Mutex<TcpListener>,
    addr: SocketAddr,
}

/// The server response (PS3.7 Table D.3-15) to add to this association's
/// A-ASSOCIATE-AC, set by the server once the identity is verified and before
/// dicom-ul writes the AC. Unset: the AC goes out unchanged.
#[derive(Default)]
pub struct IdentityAck(OnceLock<Vec<u8>>);

impl IdentityAck {
    pub fn answer(&self, server_response: Vec<u8>) {
        let _ = self.0.set(server_response);
    }
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

    /// Relays `client` to a new loopback connection and returns its other end
    /// for dicom-ul. The first PDU dicom-ul sends passes through `ack`; the
    /// request and its answer must have passed within `opening_wait`. On
    /// failure `client` is handed back untouched.
    pub async fn interpose<S>(
        &self,
        client: S,
        ack: Arc<IdentityAck>,
        opening_wait: Duration,
    ) -> Result<TcpStream, (S, std::io::Error)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match self.pair().await {
            Ok((outer, inner)) => {
                tokio::spawn(pipe(client, outer, ack, opening_wait));
                Ok(inner)
            }
            Err(e) => Err((client, e)),
        }
    }
}

/// `opening_wait`: how long to wait for the association request and its
/// answer (the server's ARTIM time; a silent client is dropped after it), and
/// later for a client to take the bytes of one write.
async fn pipe<S>(mut client: S, mut outer: TcpStream, ack: Arc<IdentityAck>, opening_wait: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The A-ASSOCIATE-RQ travels first and its answer second; neither side
    // sends more before that. So those two PDUs are relayed one at a time
    // (the answer may need the identity sub-item), then bytes are copied both
    // ways as they come.
    let opening = async {
        forward_pdu(&mut client, &mut outer, None).await?;
        forward_pdu(&mut outer, &mut client, Some(&ack)).await
    };
    if let Ok(Ok(())) = tokio::time::timeout(opening_wait, opening).await {
        relay_until_association_ends(client, outer, opening_wait).await;
    }
}

/// Copies both ways until the association's side closes: dicom-ul closing
/// its end (release, abort, rejection, its timeouts) ends the client's
/// connection too. A client that stopped sending but keeps its socket open
/// is not waited for, nor one that stops reading for `stall`: the connection
/// must not outlive the association slot it was counted against.
async fn relay_until_association_ends<S>(client: S, outer: TcpStream, stall: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_in, mut client_out) = tokio::io::split(client);
    let (mut assoc_in, mut assoc_out) = outer.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_in, &mut assoc_out).await;
        // The client is done sending: tell dicom-ul, then wait for it.
        let _ = assoc_out.shutdown().await;
        std::future::pending::<()>().await
    };
    let down = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match assoc_in.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let sent = async {
                client_out.write_all(&buf[..n]).await?;
                client_out.flush().await
            };
            if !matches!(tokio::time::timeout(stall, sent).await, Ok(Ok(()))) {
                return;
            }
        }
        let _ = tokio::time::timeout(stall, client_out.shutdown()).await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Copies one whole PDU from `from` to `to`. With `ack` holding a response,
/// an A-ASSOCIATE-AC gets the User Identity sub-item added.
async fn forward_pdu<R, W>(
    from: &mut R,
    to: &mut W,
    ack: Option<&IdentityAck>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head = [0u8; 6];
    from.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let response = ack.and_then(|a| a.0.get());
    match response {
        Some(response) if head[0] == 0x02 && len <= MAX_AC => {
            let mut pdu = vec![0u8; 6 + len];
            pdu[..6].copy_from_slice(&head);
            from.read_exact(&mut pdu[6..]).await?;
            let pdu = with_identity_response(&pdu, response).unwrap_or(pdu);
            to.write_all(&pdu).await
        }
        _ => {
            to.write_all(&head).await?;
            let copied = tokio::io::copy(&mut from.take(len as u64), to).await?;
            if copied < len as u64 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(())
        }
    }
}

/// The A-ASSOCIATE-AC `pdu` re-encoded with a User Identity Negotiation
/// sub-item (59H) carrying `response`; `None` if it cannot be decoded.
fn with_identity_response(pdu: &[u8], response: &[u8]) -> Option<Vec<u8>> {
    let Ok(Some(Pdu::AssociationAC(mut ac))) =
        dicom_ul::pdu::read_pdu(pdu, dicom_ul::pdu::MAXIMUM_PDU_SIZE, false)
    else {
        return None;
    };
    let length = u16::try_from(response.len()).ok()?;
    let mut item = length.to_be_bytes().to_vec();
    item.extend_from_slice(response);
    ac.user_variables
        .push(UserVariableItem::Unknown(0x59, item));
    let mut out = Vec::with_capacity(pdu.len() + 8 + response.len());
    dicom_ul::pdu::write_pdu(&mut out, &Pdu::AssociationAC(ac)).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{
        AssociationAC, PresentationContextResult, PresentationContextResultReason,
    };

    fn ac() -> Vec<u8> {
        let pdu = Pdu::AssociationAC(AssociationAC {
            protocol_version: 1,
            calling_ae_title: "WS01".into(),
            called_ae_title: "CUSTOS".into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: vec![PresentationContextResult {
                id: 1,
                reason: PresentationContextResultReason::Acceptance,
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
            }],
            user_variables: vec![
                UserVariableItem::MaxLength(16384),
                UserVariableItem::ImplementationClassUID("1.2.3".into()),
            ],
        });
        let mut bytes = Vec::new();
        dicom_ul::pdu::write_pdu(&mut bytes, &pdu).unwrap();
        bytes
    }

    #[tokio::test]
    async fn adds_the_identity_sub_item_only_when_answered() {
        let original = ac();
        let unanswered = IdentityAck::default();
        let mut out = Vec::new();
        forward_pdu(&mut &original[..], &mut out, Some(&unanswered))
            .await
            .unwrap();
        assert_eq!(out, original);

        let answered = IdentityAck::default();
        answered.answer(Vec::new());
        let mut out = Vec::new();
        forward_pdu(&mut &original[..], &mut out, Some(&answered))
            .await
            .unwrap();
        let Ok(Some(Pdu::AssociationAC(ac))) =
            dicom_ul::pdu::read_pdu(&out[..], dicom_ul::pdu::MAXIMUM_PDU_SIZE, true)
        else {
            panic!("not an AC");
        };
        assert_eq!(ac.presentation_contexts.len(), 1);
        assert!(
            ac.user_variables
                .contains(&UserVariableItem::Unknown(0x59, vec![0, 0])),
            "{:?}",
            ac.user_variables
        );
        assert!(
            ac.user_variables
                .contains(&UserVariableItem::ImplementationClassUID("1.2.3".into()))
        );
    }

    #[tokio::test]
    async fn other_pdus_pass_whole_and_alone() {
        // An A-ASSOCIATE-RJ followed by bytes of a next PDU.
        let rj = [0x03u8, 0, 0, 0, 0, 4, 0, 1, 1, 3, 0x07, 0];
        let answered = IdentityAck::default();
        answered.answer(Vec::new());
        let mut input = &rj[..];
        let mut out = Vec::new();
        forward_pdu(&mut input, &mut out, Some(&answered))
            .await
            .unwrap();
        assert_eq!(out, rj[..10]);
        assert_eq!(input, &rj[10..], "only one PDU is taken");
        // A PDU cut short is an error, not a silent partial copy.
        let mut out = Vec::new();
        assert!(forward_pdu(&mut &rj[..8], &mut out, None).await.is_err());
    }
}
