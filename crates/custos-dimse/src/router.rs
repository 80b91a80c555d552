//! Forwarding over DIMSE: one association to a registered peer (TLS if the
//! peer requires it) carrying a batch of instances, each sent as stored (or
//! decompressed if the peer takes only uncompressed), with one outcome per
//! instance. The queue itself is worked by the binary's `forward` loop.

use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::{AsyncAssociation, ClientAssociationOptions};

use custos_archive::Archive;
use custos_archive::routing::Failure;
use custos_core::record::StoredInstance;

use crate::command::{field, status};
use crate::link::{Stream, receive_command};
use crate::outbound::with_peer_association;
use crate::retrieve::{ReadAhead, send_store};
use crate::server::DimseConfig;
use crate::syntaxes::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// Sends `instances` to the registered peer `destination` on one
/// association: an outcome per instance, in order.
pub async fn send(
    archive: &Arc<Archive>,
    config: &DimseConfig,
    destination: &str,
    instances: &[StoredInstance],
) -> Vec<Result<(), Failure>> {
    let all = |why: String| {
        instances
            .iter()
            .map(|_| Err(Failure::Transient(why.clone())))
            .collect()
    };
    let peer = match archive.peer_directory().peer(destination).await {
        Ok(Some(p)) => p,
        Ok(None) => return all(format!("{destination} is not a registered peer")),
        Err(e) => return all(format!("peer lookup failed: {e}")),
    };
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(config.ae_title.clone())
        .called_ae_title(peer.ae_title.clone())
        .max_pdu_length(config.max_pdu_length)
        .read_timeout(config.idle_timeout)
        .write_timeout(config.idle_timeout)
        .connection_timeout(Duration::from_secs(10));
    let mut proposed: Vec<(String, String)> = Vec::new();
    for inst in instances {
        for ts in [inst.transfer_syntax_uid.as_str(), EXPLICIT_VR_LE] {
            let pair = (inst.sop_class_uid.clone(), ts.to_string());
            if proposed.len() < 126 && !proposed.contains(&pair) {
                let mut syntaxes = vec![pair.1.clone()];
                if ts == EXPLICIT_VR_LE {
                    syntaxes.push(IMPLICIT_VR_LE.to_string());
                }
                options = options.with_presentation_context(pair.0.clone(), syntaxes);
                proposed.push(pair);
            }
        }
    }
    if instances.is_empty() {
        return Vec::new();
    }
    let idle = config.idle_timeout;
    let sent = with_peer_association!(options, &peer, config.tls_client.clone(), |a| {
        send_all(&mut a, archive, instances, idle).await
    });
    match sent {
        Ok(outcomes) => outcomes,
        Err(why) => all(why),
    }
}

async fn send_all<S: Stream, A>(
    a: &mut A,
    archive: &Arc<Archive>,
    instances: &[StoredInstance],
    idle: Duration,
) -> Vec<Result<(), Failure>>
where
    A: AsyncAssociation<S> + Send,
{
    let mut out = Vec::with_capacity(instances.len());
    let mut broken: Option<String> = None;
    let mut ahead = ReadAhead::default();
    for (n, inst) in instances.iter().enumerate() {
        if let Some(why) = &broken {
            out.push(Err(Failure::Transient(why.clone())));
            continue;
        }
        let message_id = (n % 0xFFFF) as u16 + 1;
        let mut this = std::mem::take(&mut ahead);
        ahead.start(a, archive, instances.get(n + 1));
        match send_store(a, archive, inst, &mut this, message_id, None, idle).await {
            Ok(true) => {}
            Ok(false) => {
                out.push(Err(Failure::Transient(
                    "the destination accepted no context for it, or it could not be read".into(),
                )));
                continue;
            }
            Err(e) => {
                broken = Some(format!("sending: {e}"));
                out.push(Err(Failure::Transient(format!("sending: {e}"))));
                continue;
            }
        }
        match receive_command(a, idle).await {
            Ok((_, rsp)) if rsp.field == field::C_STORE_RSP => match rsp.status {
                // Success and warnings: the destination has it.
                Some(0) => out.push(Ok(())),
                Some(s) if status::is_warning(s) => out.push(Ok(())),
                st => out.push(Err(Failure::Transient(format!(
                    "the destination answered status {:04X}",
                    st.unwrap_or(0xFFFF)
                )))),
            },
            Ok((_, rsp)) => {
                broken = Some(format!("unexpected answer {:#06x}", rsp.field));
                out.push(Err(Failure::Transient(broken.clone().unwrap_or_default())));
            }
            Err(e) => {
                broken = Some(format!("no response: {e}"));
                out.push(Err(Failure::Transient(broken.clone().unwrap_or_default())));
            }
        }
    }
    let _ = a.release().await;
    out
}
