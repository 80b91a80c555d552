//! The association gate: decides, before dicom-ul negotiates anything, whether
//! this peer may associate at all and which presentation contexts it is offered.
//!
//! dicom-ul's `AccessControl` sees only AE titles and is synchronous, and its
//! abstract syntax list is fixed before the request is read. So the gate peeks
//! at the A-ASSOCIATE-RQ header still in the socket buffer (called and calling
//! AE titles), looks the peer up, checks the source address, asks the policy,
//! and only then builds dicom-ul's options for this one association.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dicom_ul::association::server::{AccessControl, Negotiation, ServerAssociationOptions};
use dicom_ul::pdu::{AssociationRJServiceUserReason, RequestorRoles, UserIdentity};
use tokio::net::TcpStream;

use custos_core::peer::validate_ae_title;
use custos_core::policy::{
    AssociationDecision, PeerChecks, RejectReason, Transport, decide_association,
};
use custos_core::{Action, HostPattern, Peer, Permissions};
use custos_index::PeerDirectory;

use crate::syntaxes::{STORAGE_TRANSFER_SYNTAXES, abstract_syntaxes, is_storage};

/// What the gate reads from an A-ASSOCIATE-RQ before negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub called: String,
    pub calling: String,
    /// The User Identity sub-item (PS3.7 D.3.3.7), if the requestor sent one.
    pub identity: Option<IdentityClaim>,
}

/// A requestor's claim of who its user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityClaim {
    pub kind: IdentityKind,
    pub primary: Vec<u8>,
    pub secondary: Vec<u8>,
    /// The requestor asked for a positive response in the A-ASSOCIATE-AC.
    pub positive_response: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// A user name alone: a claim without proof.
    Username,
    UsernamePasscode,
    Kerberos,
    Saml,
    Jwt,
    /// A type this version of dicom-ul does not name.
    Unknown,
}

/// Largest A-ASSOCIATE-RQ accepted (PDU header included). Real requests
/// are a few KiB even with a hundred presentation contexts; a larger declared
/// length is refused before a byte of the body is read.
pub const MAX_ASSOCIATE_RQ: usize = 64 * 1024;

/// What the first bytes of a connection are.
#[derive(Debug)]
pub enum Peeked {
    Request(RequestHead),
    /// An A-ASSOCIATE-RQ declaring more than [`MAX_ASSOCIATE_RQ`] bytes.
    TooLarge(u32),
    /// Not an association request, or nothing within the deadline (dicom-ul
    /// then rejects or aborts as the protocol says).
    Other,
}

/// Reads the A-ASSOCIATE-RQ without consuming it: AE titles from its fixed
/// head, and the user identity from the whole PDU.
pub async fn peek_request(stream: &TcpStream, deadline: Duration) -> Peeked {
    match peek(stream, deadline).await {
        Some(p) => p,
        None => Peeked::Other,
    }
}

async fn peek(stream: &TcpStream, deadline: Duration) -> Option<Peeked> {
    let start = tokio::time::Instant::now();
    let mut buf = vec![0u8; MAX_ASSOCIATE_RQ];
    let n = loop {
        let n = tokio::time::timeout(
            deadline.saturating_sub(start.elapsed()),
            stream.peek(&mut buf),
        )
        .await
        .ok()?
        .ok()?;
        if n == 0 || buf[0] != 0x01 {
            return None;
        }
        if n >= 6 {
            let declared = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]);
            let want = 6 + declared as usize;
            if want > MAX_ASSOCIATE_RQ {
                return Some(Peeked::TooLarge(declared));
            }
            if n >= 42 && n >= want {
                break n;
            }
        }
        if start.elapsed() >= deadline {
            return None;
        }
        // Partial request: wait for the rest to arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ae = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .trim_matches(|c: char| c == ' ' || c == '\0')
            .to_string()
    };
    Some(Peeked::Request(RequestHead {
        called: ae(&buf[10..26]),
        calling: ae(&buf[26..42]),
        identity: identity_of(&buf[..n]),
    }))
}

fn identity_of(pdu: &[u8]) -> Option<IdentityClaim> {
    use dicom_ul::pdu::{Pdu, UserIdentityType, UserVariableItem};
    let Ok(Some(Pdu::AssociationRQ(rq))) =
        dicom_ul::pdu::read_pdu(pdu, dicom_ul::pdu::MAXIMUM_PDU_SIZE, false)
    else {
        return None;
    };
    rq.user_variables.iter().find_map(|v| match v {
        UserVariableItem::UserIdentityItem(id) => Some(IdentityClaim {
            kind: match id.identity_type() {
                UserIdentityType::Username => IdentityKind::Username,
                UserIdentityType::UsernamePassword => IdentityKind::UsernamePasscode,
                UserIdentityType::KerberosServiceTicket => IdentityKind::Kerberos,
                UserIdentityType::SamlAssertion => IdentityKind::Saml,
                UserIdentityType::Jwt => IdentityKind::Jwt,
                _ => IdentityKind::Unknown,
            },
            primary: id.primary_field(),
            secondary: id.secondary_field(),
            positive_response: id.positive_response_requested(),
        }),
        _ => None,
    })
}

/// Whether `addr` is one the peer may connect from (names are resolved now).
async fn address_allowed(host: &HostPattern, addr: IpAddr) -> bool {
    match host {
        HostPattern::Name(name) => {
            let lookup = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host((name.as_str(), 0)),
            )
            .await;
            match lookup {
                Ok(Ok(addrs)) => addrs
                    .into_iter()
                    .any(|a| HostPattern::Addr(a.ip()).contains(addr)),
                _ => false,
            }
        }
        pattern => pattern.contains(addr),
    }
}

/// The gate's verdict for one connection.
pub struct Verdict {
    pub head: Option<RequestHead>,
    pub decision: AssociationDecision,
    pub peer: Option<Peer>,
    /// The user a verified identity named.
    pub user: Option<String>,
    /// The user a refused identity claimed (for the audit trail).
    pub claimed: Option<String>,
}

pub async fn judge(
    index: &dyn PeerDirectory,
    our_ae: &str,
    from: SocketAddr,
    transport: &Transport,
    head: Option<RequestHead>,
) -> Verdict {
    let Some(h) = head.clone() else {
        return Verdict {
            head,
            decision: AssociationDecision::Reject(RejectReason::CallingAeNotRecognized),
            peer: None,
            user: None,
            claimed: None,
        };
    };
    let peer = match validate_ae_title(&h.calling) {
        Ok(ae) => match index.peer(&ae).await {
            Ok(peer) => peer,
            Err(e) => {
                tracing::error!(error = %e, "peer lookup failed; refusing association for now");
                return Verdict {
                    head,
                    decision: AssociationDecision::Reject(RejectReason::DirectoryUnavailable),
                    peer: None,
                    user: None,
                    claimed: None,
                };
            }
        },
        Err(_) => None,
    };
    let checks = PeerChecks {
        address_allowed: match &peer {
            Some(p) => address_allowed(&p.host, from.ip()).await,
            None => false,
        },
        chains_to_peer_ca: peer.as_ref().is_some_and(|p| {
            !p.ca_pem.is_empty()
                && custos_tls::client_trust::chain_trusted(&transport.client_chain, &p.ca_pem)
        }),
    };
    let decision = decide_association(our_ae, &h.called, peer.as_ref(), checks, transport);
    Verdict {
        head,
        decision,
        peer,
        user: None,
        claimed: None,
    }
}

/// Hands the gate's decision to dicom-ul, which sends the A-ASSOCIATE-RJ.
struct Decided {
    expected: Option<RequestHead>,
    result: Result<(), AssociationRJServiceUserReason>,
}

impl AccessControl for Decided {
    fn check_access(
        &self,
        _this_ae: &str,
        calling: &str,
        called: &str,
        user: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        // The request dicom-ul parsed must be the one the gate peeked at,
        // user identity included.
        let same = self.expected.as_ref().is_some_and(|h| {
            let same_identity = match (&h.identity, user) {
                (None, None) => true,
                (Some(c), Some(u)) => {
                    c.primary == u.primary_field() && c.secondary == u.secondary_field()
                }
                _ => false,
            };
            // Trimmed as the peek trims them: a peer that pads with NULs
            // (against PS3.8, but seen) is still the same request.
            let trim = |s: &str| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string();
            h.calling == trim(calling) && h.called == trim(called) && same_identity
        });
        if !same {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        self.result.clone()
    }
}

/// Accepts the SCP role for storage classes (C-GET sub-operations) only for
/// principals allowed to C-GET.
struct Roles {
    may_get: bool,
}

impl Negotiation for Roles {
    fn negotiate_roles(&self, sop_class_uid: &str, scu: bool, scp: bool) -> Option<RequestorRoles> {
        let sop = sop_class_uid.trim_end_matches('\0');
        if is_storage(sop) {
            Some(RequestorRoles {
                scu,
                scp: scp && self.may_get,
            })
        } else {
            None
        }
    }
}

pub struct Limits {
    pub max_pdu_length: u32,
    pub idle_timeout: Duration,
}

/// dicom-ul server options for one association under `verdict`.
pub fn options(
    our_ae: &str,
    verdict: &Verdict,
    limits: &Limits,
) -> ServerAssociationOptions<'static, impl AccessControl + use<>, impl Negotiation + use<>> {
    let (result, permissions) = match &verdict.decision {
        AssociationDecision::Accept(principal) => (Ok(()), principal.permissions()),
        AssociationDecision::Reject(RejectReason::CalledAeNotRecognized) => (
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized),
            Permissions::NONE,
        ),
        AssociationDecision::Reject(_) => (
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
            Permissions::NONE,
        ),
    };
    let mut opts = ServerAssociationOptions::new()
        .ae_title(our_ae.to_string())
        .ae_access_control(Decided {
            expected: verdict.head.clone(),
            result,
        })
        .with_negotiation(Roles {
            may_get: permissions.allows(Action::Get),
        })
        .max_pdu_length(limits.max_pdu_length)
        .read_timeout(limits.idle_timeout)
        .write_timeout(limits.idle_timeout)
        // Strict: a PDU declaring more than our maximum length is refused
        // from its header, before dicom-ul would buffer the declared length.
        .strict(true);
    let mut syntaxes = abstract_syntaxes(permissions);
    if syntaxes.is_empty() {
        // dicom-ul needs one; a peer with no rights gets contexts it cannot use.
        syntaxes.push(crate::syntaxes::VERIFICATION);
    }
    for s in syntaxes {
        opts = opts.with_abstract_syntax(s);
    }
    for ts in STORAGE_TRANSFER_SYNTAXES {
        opts = opts.with_transfer_syntax(*ts);
    }
    opts
}
