//! Listener: accept, limit, gate, negotiate, run; graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::Pdu;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderASCEReason,
    AssociationRJServiceProviderPresentationReason, AssociationRJSource,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, info, warn};

use custos_archive::Archive;
use custos_core::Permissions;
use custos_core::limits::PerAddress;
use custos_core::policy::{AssociationDecision, Principal, RejectReason, Transport};

use crate::gate::IdentityKind;

use crate::association::Association;
use crate::gate::{self, Limits};
use crate::relay::{IdentityAck, Relay};

#[derive(Clone)]
pub struct DimseConfig {
    pub ae_title: String,
    pub max_pdu_length: u32,
    pub max_associations: usize,
    /// Connections one source address may hold at once (open or associating).
    pub max_associations_per_address: usize,
    /// From accept to an established association (TLS handshake, request,
    /// negotiation) at most this long (ARTIM).
    pub artim_timeout: Duration,
    /// An association silent this long is aborted.
    pub idle_timeout: Duration,
    /// Cap on C-FIND matches per query.
    pub max_find_results: usize,
    /// How long in-flight associations may run on after shutdown is asked.
    pub shutdown_grace: Duration,
    /// Verifies user identities (the same authenticator as HTTPS, so the
    /// same lockout); without one, any identity sent is refused.
    pub identity: Option<Arc<custos_auth::Authenticator>>,
    /// Actions a peer may only use with a verified user identity.
    pub require_identity: Permissions,
    /// TLS for C-MOVE to peers registered with `--tls required`: our CA as
    /// trust root, our certificate as client certificate.
    pub tls_client: Option<Arc<custos_tls::ClientConfig>>,
}

/// The DICOM TLS listener and its handshake configuration.
pub struct TlsListener {
    pub listener: TcpListener,
    pub acceptor: custos_tls::TlsAcceptor,
    /// The client CAs the acceptor's configuration verifies against.
    pub trust: Arc<custos_tls::client_trust::ClientTrust>,
}

/// Serves DICOM on `listener` (plain, if any) and `tls` (if any) until
/// `shutdown` turns true.
pub async fn serve(
    listener: Option<TcpListener>,
    tls: Option<TlsListener>,
    archive: Arc<Archive>,
    config: DimseConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_associations));
    let per_address = PerAddress::new(config.max_associations_per_address);
    let relay = match Relay::new().await {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            warn!(error = %e, "cannot open the loopback relay; DICOM TLS and positive user identity responses are off");
            None
        }
    };
    let mut tasks = JoinSet::new();
    loop {
        let (stream, from, over_tls) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((s, a)) => (s, a, false),
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            accepted = accept(tls.as_ref().map(|t| &t.listener)) => match accepted {
                Ok((s, a)) => (s, a, true),
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        // One address may not take every slot: checked before the global limit.
        let Some(address_slot) = per_address.try_enter(from.ip()) else {
            warn!(%from, limit = config.max_associations_per_address, "connection limit for this address reached; refusing");
            turn_away(&mut tasks, stream, over_tls);
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%from, limit = config.max_associations, "association limit reached; refusing");
            turn_away(&mut tasks, stream, over_tls);
            continue;
        };
        let archive = archive.clone();
        let config = config.clone();
        let span = tracing::info_span!("assoc", %from, tls = over_tls);
        let acceptor = match (over_tls, &tls, &relay) {
            (true, Some(t), Some(_)) => Some((t.acceptor.clone(), t.trust.clone())),
            (true, _, _) => continue,
            _ => None,
        };
        let relay = relay.clone();
        let opened = tokio::time::Instant::now();
        tasks.spawn(
            async move {
                let (stream, transport, ack) = match (acceptor, &relay) {
                    (Some((acceptor, trust)), Some(relay)) => {
                        match crate::tls::terminate(
                            stream,
                            &acceptor,
                            &trust,
                            relay,
                            config.artim_timeout,
                        )
                        .await
                        {
                            Ok((s, t, ack)) => (s, t, Some(ack)),
                            Err(e) => {
                                info!(error = %e, "DICOM TLS connection refused");
                                archive.metrics().inc(
                                    "custos_tls_handshake_failures_total",
                                    &[("listener", "dicom")],
                                );
                                return;
                            }
                        }
                    }
                    _ => (stream, Transport::default(), None),
                };
                let link = Link { ack, relay };
                handle(stream, from, transport, link, archive, config, opened).await;
                drop(permit);
                drop(address_slot);
            }
            .instrument(span),
        );
    }
    drop(listener);
    if !tasks.is_empty() {
        info!(
            count = tasks.len(),
            "waiting for open associations to finish"
        );
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                count = tasks.len(),
                "aborting associations still open after the grace period"
            );
            tasks.shutdown().await;
        }
    }
}

/// Narrows an accepted peer's rights by its user (`core::policy::
/// narrow_by_identity`). A refused identity rejects the association, after
/// the authenticator's slow-down; the claimed user goes into the verdict for
/// the audit trail.
async fn apply_identity(verdict: &mut gate::Verdict, config: &DimseConfig, from: SocketAddr) {
    use custos_auth::{Refusal, Secret};
    use custos_core::policy::narrow_by_identity;
    let AssociationDecision::Accept(Principal::Peer {
        ae_title,
        permissions,
    }) = &verdict.decision
    else {
        return;
    };
    let claim = verdict.head.as_ref().and_then(|h| h.identity.clone());
    let user_rights = match (claim, &config.identity) {
        (None, _) => None,
        (Some(claim), Some(auth)) => {
            let primary = String::from_utf8_lossy(&claim.primary).into_owned();
            let secondary = String::from_utf8_lossy(&claim.secondary).into_owned();
            let secret = match claim.kind {
                IdentityKind::UsernamePasscode => Some(Secret::Password {
                    user: &primary,
                    password: &secondary,
                }),
                IdentityKind::Jwt => Some(Secret::Bearer(&primary)),
                // A user name alone proves nothing; Kerberos and SAML are not supported.
                _ => None,
            };
            if claim.kind == IdentityKind::Username || claim.kind == IdentityKind::UsernamePasscode
            {
                verdict.claimed = Some(primary.chars().take(64).collect());
            }
            let outcome = match secret {
                Some(s) => auth.authenticate(s, Some(from.ip())).await,
                None => Err(Refusal::Invalid {
                    claimed: None,
                    delay: Duration::ZERO,
                }),
            };
            match outcome {
                Ok(v) => {
                    info!(user = %v.principal.name(), "user identity verified");
                    verdict.user = Some(v.principal.name().to_string());
                    Some(v.principal.permissions())
                }
                Err(refusal) => {
                    info!(kind = ?claim.kind, refusal = refusal_name(&refusal), "user identity refused");
                    if let Refusal::Invalid { claimed, delay } = refusal {
                        if verdict.claimed.is_none() {
                            verdict.claimed = claimed;
                        }
                        tokio::time::sleep(delay).await;
                    }
                    verdict.decision = AssociationDecision::Reject(RejectReason::IdentityRefused);
                    return;
                }
            }
        }
        (Some(_), None) => {
            verdict.decision = AssociationDecision::Reject(RejectReason::IdentityRefused);
            return;
        }
    };
    verdict.decision = AssociationDecision::Accept(Principal::Peer {
        ae_title: ae_title.clone(),
        permissions: narrow_by_identity(*permissions, user_rights, config.require_identity),
    });
}

fn refusal_name(r: &custos_auth::Refusal) -> &'static str {
    match r {
        custos_auth::Refusal::Locked { .. } => "locked out after repeated failures",
        custos_auth::Refusal::Busy => "too many checks in flight from this address",
        custos_auth::Refusal::Invalid { .. } => "invalid",
        custos_auth::Refusal::Unavailable(_) => "user registry unavailable",
    }
}

/// Accepts on `listener`, or waits forever when there is none.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Turns a connection away when the server is full: on the plain port with
/// an A-ASSOCIATE-RJ (transient, local limit exceeded); on the TLS port by
/// closing it, since a cleartext PDU in answer to a ClientHello reads as a
/// TLS error, and a handshake is work a full server should not take on.
fn turn_away(tasks: &mut JoinSet<()>, stream: TcpStream, over_tls: bool) {
    if !over_tls {
        tasks.spawn(refuse_busy(stream));
    }
}

async fn refuse_busy(stream: TcpStream) {
    refuse(
        stream,
        AssociationRJResult::Transient,
        AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::TemporaryCongestion,
        ),
    )
    .await
}

/// A-ASSOCIATE-RJ from the service provider, then close.
async fn refuse(mut stream: TcpStream, result: AssociationRJResult, source: AssociationRJSource) {
    let rj = Pdu::AssociationRJ(AssociationRJ { result, source });
    let mut bytes = Vec::new();
    if dicom_ul::pdu::write_pdu(&mut bytes, &rj).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&bytes)).await;
    }
}

/// How the connection reaches dicom-ul: through the TLS relay (with its
/// identity answer slot), or directly, with a relay at hand if needed.
struct Link {
    ack: Option<Arc<IdentityAck>>,
    relay: Option<Arc<Relay>>,
}

impl Link {
    /// The stream for dicom-ul, made to carry the positive User Identity
    /// response when `answer` is set. PS3.7 Table D.3-15: the response is
    /// empty for user name (and passcode) identities; for JWT identities
    /// Custos also sends it empty (it issues no tokens of its own).
    async fn stream_for(
        self,
        stream: TcpStream,
        answer: bool,
        opening_wait: Duration,
    ) -> TcpStream {
        if !answer {
            return stream;
        }
        match (self.ack, self.relay) {
            (Some(ack), _) => {
                ack.answer(Vec::new());
                stream
            }
            (None, Some(relay)) => {
                let ack = Arc::new(IdentityAck::default());
                ack.answer(Vec::new());
                match relay.interpose(stream, ack, opening_wait).await {
                    Ok(s) => s,
                    Err((stream, e)) => {
                        warn!(error = %e, "cannot relay the association; no identity response");
                        stream
                    }
                }
            }
            (None, None) => stream,
        }
    }
}

async fn handle(
    stream: TcpStream,
    from: SocketAddr,
    transport: Transport,
    link: Link,
    archive: Arc<Archive>,
    config: Arc<DimseConfig>,
    opened: tokio::time::Instant,
) {
    // One deadline from accept to an established association, whatever
    // the steps in between took.
    let deadline = opened + config.artim_timeout;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let head = match gate::peek_request(&stream, left()).await {
        gate::Peeked::Request(h) => Some(h),
        gate::Peeked::Other => None,
        gate::Peeked::TooLarge(declared) => {
            info!(
                declared,
                limit = gate::MAX_ASSOCIATE_RQ,
                "association request longer than the limit; refused unread"
            );
            refuse(
                stream,
                AssociationRJResult::Permanent,
                AssociationRJSource::ServiceProviderASCE(
                    AssociationRJServiceProviderASCEReason::NoReasonGiven,
                ),
            )
            .await;
            return;
        }
    };
    let mut verdict = gate::judge(
        archive.peer_directory().as_ref(),
        &config.ae_title,
        from,
        &transport,
        head,
    )
    .await;
    apply_identity(&mut verdict, &config, from).await;
    let (calling, called) = verdict
        .head
        .as_ref()
        .map(|h| (h.calling.clone(), h.called.clone()))
        .unwrap_or_default();
    {
        use custos_core::audit::{AuditEvent, EventId, Outcome};
        let (outcome, detail) = match &verdict.decision {
            AssociationDecision::Accept(p) => (
                Outcome::Success,
                format!("association accepted; rights {}", p.permissions()),
            ),
            AssociationDecision::Reject(r) => (
                Outcome::MinorFailure,
                format!("association rejected: {}", r.describe()),
            ),
        };
        let mut e = AuditEvent::new(EventId::UserAuthentication, 'E', outcome);
        e.peer = calling.clone();
        e.source = from.ip().to_string();
        e.user = verdict
            .user
            .clone()
            .or_else(|| verdict.claimed.clone())
            .unwrap_or_default();
        e.detail = format!("{detail}{}", if transport.tls { " (TLS)" } else { "" });
        archive.audit(e).await;
    }
    let (result, reason) = match &verdict.decision {
        AssociationDecision::Accept(_) => ("accepted", ""),
        AssociationDecision::Reject(r) => ("rejected", r.code()),
    };
    archive.metrics().inc(
        "custos_associations_total",
        &[("result", result), ("reason", reason)],
    );
    match &verdict.decision {
        AssociationDecision::Accept(p) => {
            info!(calling = %calling, permissions = %p.permissions(), "association request accepted by policy")
        }
        AssociationDecision::Reject(reason) => {
            info!(calling = %calling, called = %called, reason = reason.describe(), "association rejected")
        }
    }
    if verdict.decision == AssociationDecision::Reject(RejectReason::DirectoryUnavailable) {
        // Transient, so that the modality retries instead of reporting a
        // configuration error.
        refuse_busy(stream).await;
        return;
    }
    let limits = Limits {
        max_pdu_length: config.max_pdu_length,
        idle_timeout: config.idle_timeout,
    };
    let answer_identity = matches!(verdict.decision, AssociationDecision::Accept(_))
        && verdict.user.is_some()
        && verdict
            .head
            .as_ref()
            .and_then(|h| h.identity.as_ref())
            .is_some_and(|c| c.positive_response);
    let stream = link.stream_for(stream, answer_identity, left()).await;
    let options = gate::options(&config.ae_title, &verdict, &limits);
    let established = tokio::time::timeout(left(), options.establish_async(stream)).await;
    let assoc = match established {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            if matches!(verdict.decision, AssociationDecision::Accept(_)) {
                info!(error = %e, "association negotiation failed");
            }
            return;
        }
        Err(_) => {
            info!("association request timed out (ARTIM)");
            return;
        }
    };
    let AssociationDecision::Accept(principal) = verdict.decision else {
        // dicom-ul sent the rejection; nothing may get this far.
        let _ = assoc.abort().await;
        return;
    };
    Association::new(
        assoc,
        principal,
        archive,
        config,
        from,
        verdict.user.clone(),
    )
    .run()
    .await;
}
