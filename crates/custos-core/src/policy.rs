//! The one access decision. The DIMSE gate asks it at association time and again
//! for every request; HTTP will ask the same functions with a user principal.
//!
//! Anything not explicitly allowed is denied.

use crate::auth::Role;
use crate::{Action, Peer, Permissions};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A registered DICOM application entity.
    Peer {
        ae_title: String,
        permissions: Permissions,
    },
    /// An authenticated user (password or token). A read-only token loses
    /// every action that writes.
    User {
        name: String,
        role: Role,
        read_only: bool,
    },
}

impl Principal {
    pub fn permissions(&self) -> Permissions {
        match self {
            Principal::Peer { permissions, .. } => *permissions,
            Principal::User {
                role, read_only, ..
            } => {
                let p = role.permissions();
                if *read_only {
                    Action::ALL
                        .into_iter()
                        .filter(|a| !a.reads_only())
                        .fold(p, Permissions::without)
                } else {
                    p
                }
            }
        }
    }

    /// The name recorded in logs and the audit trail.
    pub fn name(&self) -> &str {
        match self {
            Principal::Peer { ae_title, .. } => ae_title,
            Principal::User { name, .. } => name,
        }
    }

    /// Whether this principal may perform `action`.
    pub fn may(&self, action: Action) -> bool {
        self.permissions().allows(action)
    }
}

/// Why an association is refused; maps onto A-ASSOCIATE-RJ reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    CalledAeNotRecognized,
    CallingAeNotRecognized,
    AddressNotAllowed,
    /// The peer must use TLS and came over the plain listener (or without a
    /// client certificate).
    TlsRequired,
    /// The client certificate is not the one registered for the peer
    /// (fingerprint or subject).
    CertificateMismatch,
    /// A certificate from the configured CA that names neither the calling
    /// AE title (CN or SAN) nor is pinned for the peer.
    CertificateNotForAe,
    /// A user identity was sent and did not prove a Custos user.
    IdentityRefused,
    /// The peer registry could not be read (the index is unavailable): refused
    /// for now, as transient, so the peer tries again later.
    DirectoryUnavailable,
}

/// How the connection reached us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    pub tls: bool,
    /// SHA-256 (hex) of the client certificate, verified against our CA.
    pub client_cert_sha256: Option<String>,
    /// Its subject, normalised by [`crate::peer::normalize_subject`].
    pub client_cert_subject: Option<String>,
    /// The names it was issued to: subject common names and DNS subject
    /// alternative names.
    pub client_cert_names: Vec<String>,
    /// The chain it presented (DER, leaf first), for peers with their own CA.
    pub client_chain: Vec<Vec<u8>>,
    /// The certificate chains to the server's configured client CAs (not
    /// only to a bundle registered for some peer).
    pub from_configured_ca: bool,
}

impl RejectReason {
    /// A short fixed name (a metrics label).
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::CalledAeNotRecognized => "called_ae",
            RejectReason::CallingAeNotRecognized => "calling_ae",
            RejectReason::AddressNotAllowed => "address",
            RejectReason::TlsRequired => "tls_required",
            RejectReason::CertificateMismatch => "certificate_mismatch",
            RejectReason::CertificateNotForAe => "certificate_not_for_ae",
            RejectReason::IdentityRefused => "identity",
            RejectReason::DirectoryUnavailable => "directory_unavailable",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            RejectReason::CalledAeNotRecognized => "called AE title is not this server's",
            RejectReason::CallingAeNotRecognized => "calling AE title is not a registered peer",
            RejectReason::AddressNotAllowed => {
                "peer connected from an address outside its registered host"
            }
            RejectReason::TlsRequired => "peer must connect over TLS with a client certificate",
            RejectReason::CertificateMismatch => {
                "client certificate is not the one registered for the peer"
            }
            RejectReason::CertificateNotForAe => {
                "client certificate is issued to another name than the calling AE title"
            }
            RejectReason::IdentityRefused => "user identity did not prove a Custos user",
            RejectReason::DirectoryUnavailable => {
                "the peer registry cannot be read now (index unavailable)"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociationDecision {
    Accept(Principal),
    Reject(RejectReason),
}

/// What the caller established about the connection for the claimed peer:
/// the I/O and cryptography the policy itself does not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerChecks {
    /// The source address matched the peer's host pattern (names resolved).
    pub address_allowed: bool,
    /// The client certificate chains to the peer's own CA bundle (false
    /// without a certificate; irrelevant for peers without a bundle).
    pub chains_to_peer_ca: bool,
}

/// The rights of an accepted peer once its user identity is known: with a
/// verified user, what both the peer and the user may do; without one, the
/// peer's rights minus those that require an identity.
pub fn narrow_by_identity(
    peer: Permissions,
    user: Option<Permissions>,
    require_identity: Permissions,
) -> Permissions {
    match user {
        Some(u) => peer.intersect(u),
        None => require_identity.actions().fold(peer, Permissions::without),
    }
}

/// Decides an association request.
///
/// `peer` is the registered peer with the calling AE title, if any.
pub fn decide_association(
    our_ae: &str,
    called_ae: &str,
    peer: Option<&Peer>,
    checks: PeerChecks,
    transport: &Transport,
) -> AssociationDecision {
    if called_ae.trim() != our_ae.trim() {
        return AssociationDecision::Reject(RejectReason::CalledAeNotRecognized);
    }
    let Some(peer) = peer else {
        return AssociationDecision::Reject(RejectReason::CallingAeNotRecognized);
    };
    if !checks.address_allowed {
        return AssociationDecision::Reject(RejectReason::AddressNotAllowed);
    }
    let pinned = !peer.cert_sha256.is_empty();
    let named = !peer.cert_subject.is_empty();
    let own_ca = !peer.ca_pem.is_empty();
    if (peer.tls_required || peer.pinned()) && transport.client_cert_sha256.is_none() {
        return AssociationDecision::Reject(RejectReason::TlsRequired);
    }
    if pinned && transport.client_cert_sha256.as_deref() != Some(peer.cert_sha256.as_str()) {
        return AssociationDecision::Reject(RejectReason::CertificateMismatch);
    }
    if named && transport.client_cert_subject.as_deref() != Some(peer.cert_subject.as_str()) {
        return AssociationDecision::Reject(RejectReason::CertificateMismatch);
    }
    // A CA registered for one peer vouches for that peer only.
    let presented = transport.client_cert_sha256.is_some();
    let vouched = if own_ca {
        checks.chains_to_peer_ca
    } else {
        !presented || transport.from_configured_ca
    };
    if !vouched {
        return AssociationDecision::Reject(RejectReason::CertificateMismatch);
    }
    // A certificate from the CA every peer shares must be the calling AE's
    // own, unless the peer is pinned to one certificate or subject.
    if presented
        && !own_ca
        && !pinned
        && !named
        && !transport
            .client_cert_names
            .iter()
            .any(|n| n.trim() == peer.ae_title)
    {
        return AssociationDecision::Reject(RejectReason::CertificateNotForAe);
    }
    AssociationDecision::Accept(Principal::Peer {
        ae_title: peer.ae_title.clone(),
        permissions: peer.permissions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostPattern;

    fn checks(address_allowed: bool) -> PeerChecks {
        PeerChecks {
            address_allowed,
            chains_to_peer_ca: false,
        }
    }

    fn ct() -> Peer {
        Peer {
            ae_title: "CT01".into(),
            host: HostPattern::Addr("127.0.0.1".parse().unwrap()),
            port: 104,
            permissions: "echo,store".parse().unwrap(),
            tls_required: false,
            cert_sha256: String::new(),
            cert_subject: String::new(),
            ca_pem: String::new(),
        }
    }

    #[test]
    fn identities_narrow_rights() {
        let peer: Permissions = "echo,store,find,get".parse().unwrap();
        let needs: Permissions = "find,get,move".parse().unwrap();
        let rad: Permissions = "echo,find,get,move".parse().unwrap();
        assert_eq!(
            narrow_by_identity(peer, None, needs),
            "echo,store".parse().unwrap()
        );
        assert_eq!(
            narrow_by_identity(peer, Some(rad), needs),
            "echo,find,get".parse().unwrap()
        );
        assert_eq!(narrow_by_identity(peer, None, Permissions::NONE), peer);
    }

    #[test]
    fn decisions() {
        use AssociationDecision::*;
        let p = ct();
        let plain = Transport::default();
        assert_eq!(
            decide_association("CUSTOS", "OTHER", Some(&p), checks(true), &plain),
            Reject(RejectReason::CalledAeNotRecognized)
        );
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", None, checks(true), &plain),
            Reject(RejectReason::CallingAeNotRecognized)
        );
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&p), checks(false), &plain),
            Reject(RejectReason::AddressNotAllowed)
        );
        let Accept(principal) =
            decide_association("CUSTOS", "CUSTOS ", Some(&p), checks(true), &plain)
        else {
            panic!()
        };
        // TLS requirements.
        let mut tls_peer = ct();
        tls_peer.tls_required = true;
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&tls_peer), checks(true), &plain),
            Reject(RejectReason::TlsRequired)
        );
        let with_cert = Transport {
            tls: true,
            client_cert_sha256: Some("ab".repeat(32)),
            client_cert_subject: Some("CN=CT01,O=Radiology".into()),
            client_cert_names: vec!["CT01".into()],
            client_chain: Vec::new(),
            from_configured_ca: true,
        };
        // CT01's certificate from the shared CA cannot associate as WS01...
        let mut ws = ct();
        ws.ae_title = "WS01".into();
        ws.tls_required = true;
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&ws), checks(true), &with_cert),
            Reject(RejectReason::CertificateNotForAe)
        );
        // ...unless WS01 is pinned to exactly that certificate.
        ws.cert_sha256 = "ab".repeat(32);
        assert!(matches!(
            decide_association("CUSTOS", "CUSTOS", Some(&ws), checks(true), &with_cert),
            Accept(_)
        ));
        assert!(matches!(
            decide_association(
                "CUSTOS",
                "CUSTOS",
                Some(&tls_peer),
                checks(true),
                &with_cert
            ),
            Accept(_)
        ));
        // A subject: matched, then not; and never without a certificate.
        let mut named = ct();
        named.cert_subject = "CN=CT01,O=Radiology".into();
        assert!(matches!(
            decide_association("CUSTOS", "CUSTOS", Some(&named), checks(true), &with_cert),
            Accept(_)
        ));
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&named), checks(true), &plain),
            Reject(RejectReason::TlsRequired)
        );
        named.cert_subject = "CN=CT02,O=Radiology".into();
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&named), checks(true), &with_cert),
            Reject(RejectReason::CertificateMismatch)
        );
        // A peer with its own CA bundle: only a chain to it will do.
        let mut vendor = ct();
        vendor.ca_pem = "-----BEGIN CERTIFICATE-----".into();
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&vendor), checks(true), &with_cert),
            Reject(RejectReason::CertificateMismatch)
        );
        let chained = PeerChecks {
            address_allowed: true,
            chains_to_peer_ca: true,
        };
        assert!(matches!(
            decide_association("CUSTOS", "CUSTOS", Some(&vendor), chained, &with_cert),
            Accept(_)
        ));
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&vendor), chained, &plain),
            Reject(RejectReason::TlsRequired)
        );
        // ...and that CA's certificates cannot act as a peer without one.
        let vendor_cert = Transport {
            from_configured_ca: false,
            ..with_cert.clone()
        };
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&tls_peer), chained, &vendor_cert),
            Reject(RejectReason::CertificateMismatch)
        );
        tls_peer.cert_sha256 = "cd".repeat(32);
        assert_eq!(
            decide_association(
                "CUSTOS",
                "CUSTOS",
                Some(&tls_peer),
                checks(true),
                &with_cert
            ),
            Reject(RejectReason::CertificateMismatch)
        );
        assert!(principal.may(Action::Store));
        assert!(!principal.may(Action::Find));
        let admin_ro = Principal::User {
            name: "a".into(),
            role: Role::Admin,
            read_only: true,
        };
        assert!(admin_ro.may(Action::Get) && !admin_ro.may(Action::Store));
        assert!(!admin_ro.may(Action::Delete) && !admin_ro.may(Action::Admin));
        // What sends, reports or keeps something is no reading: an
        // uploader's read-only token (as a DICOM user identity) once kept
        // MPPS, C-MOVE and storage commitment.
        for role in [Role::Admin, Role::Uploader] {
            let ro = Principal::User {
                name: "t".into(),
                role,
                read_only: true,
            };
            for a in [
                Action::Mpps,
                Action::Move,
                Action::Commit,
                Action::Worklist,
                Action::StoreDerived,
            ] {
                assert!(!ro.may(a), "{role:?} read-only may {a}");
            }
        }
    }
}
