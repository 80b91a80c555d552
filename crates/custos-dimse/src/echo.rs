//! C-ECHO from Custos to a registered peer: the administrator's "test" of a
//! peer's address, AE title and TLS set-up (the same association C-MOVE
//! would open to it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_ul::association::{AsyncAssociation, ClientAssociationOptions};
use dicom_ul::pdu::PresentationContextResultReason;

use custos_core::peer::Peer;

use crate::command::{Command, field};
use crate::link::{Stream, receive_command, send_message};
use crate::outbound::with_peer_association;
use crate::syntaxes::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

const VERIFICATION: &str = "1.2.840.10008.1.1";

/// What a C-ECHO to a peer showed.
#[derive(Debug, Clone)]
pub struct EchoResult {
    /// The C-ECHO-RSP status (0 = success).
    pub status: u16,
    pub tls: bool,
    pub elapsed: Duration,
}

/// C-ECHO from `calling_ae` to `peer` (over TLS with `tls` when the peer
/// requires it), each step bounded by `timeout`. `Err` says what failed.
pub async fn echo_peer(
    calling_ae: &str,
    peer: &Peer,
    tls: Option<Arc<custos_tls::ClientConfig>>,
    timeout: Duration,
) -> Result<EchoResult, String> {
    let options = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae.to_string())
        .called_ae_title(peer.ae_title.clone())
        .with_presentation_context(VERIFICATION, vec![EXPLICIT_VR_LE, IMPLICIT_VR_LE])
        .read_timeout(timeout)
        .write_timeout(timeout)
        .connection_timeout(timeout);
    let started = Instant::now();
    let status = with_peer_association!(options, peer, tls, |a| exchange(&mut a, timeout).await)??;
    Ok(EchoResult {
        status,
        tls: peer.tls_required,
        elapsed: started.elapsed(),
    })
}

async fn exchange<S: Stream, A>(a: &mut A, timeout: Duration) -> Result<u16, String>
where
    A: AsyncAssociation<S> + Send,
{
    let pc = a
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| pc.id)
        .ok_or("the peer accepted the association but not the Verification service")?;
    let rq = Command {
        field: field::C_ECHO_RQ,
        message_id: 1,
        sop_class_uid: VERIFICATION.into(),
        ..Default::default()
    };
    send_message(a, pc, &rq, None)
        .await
        .map_err(|e| format!("sending C-ECHO: {e}"))?;
    let (_, rsp) = receive_command(a, timeout)
        .await
        .map_err(|e| format!("no C-ECHO response: {e}"))?;
    let _ = a.release().await;
    if rsp.field != field::C_ECHO_RSP {
        return Err(format!("unexpected answer {:#06x}", rsp.field));
    }
    rsp.status
        .ok_or_else(|| "a C-ECHO response without a status".into())
}
