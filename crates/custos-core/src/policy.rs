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
                        .filter(|a| a.writes())
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
    /// A user identity was sent and did not prove a Custos user.
    IdentityRefused,
}

/// How the connection reached us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transport {
    pub tls: bool,
    /// SHA-256 (hex) of the client certificate, verified against our CA.
    pub client_cert_sha256: Option<String>,
    /// Its subject, normalised by [`crate::peer::normalize_subject`].
    pub client_cert_subject: Option<String>,
}

impl RejectReason {
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
            RejectReason::IdentityRefused => "user identity did not prove a Custos user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociationDecision {
    Accept(Principal),
    Reject(RejectReason),
}

/// Decides an association request.
///
/// `peer` is the registered peer with the calling AE title, if any;
/// `address_allowed` says whether the source address matched its host pattern
/// (resolving host names is the caller's I/O).
pub fn decide_association(
    our_ae: &str,
    called_ae: &str,
    peer: Option<&Peer>,
    address_allowed: bool,
    transport: &Transport,
) -> AssociationDecision {
    if called_ae.trim() != our_ae.trim() {
        return AssociationDecision::Reject(RejectReason::CalledAeNotRecognized);
    }
    let Some(peer) = peer else {
        return AssociationDecision::Reject(RejectReason::CallingAeNotRecognized);
    };
    if !address_allowed {
        return AssociationDecision::Reject(RejectReason::AddressNotAllowed);
    }
    let pinned = !peer.cert_sha256.is_empty();
    let named = !peer.cert_subject.is_empty();
    if (peer.tls_required || pinned || named) && transport.client_cert_sha256.is_none() {
        return AssociationDecision::Reject(RejectReason::TlsRequired);
    }
    if pinned && transport.client_cert_sha256.as_deref() != Some(peer.cert_sha256.as_str()) {
        return AssociationDecision::Reject(RejectReason::CertificateMismatch);
    }
    if named && transport.client_cert_subject.as_deref() != Some(peer.cert_subject.as_str()) {
        return AssociationDecision::Reject(RejectReason::CertificateMismatch);
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

    fn ct() -> Peer {
        Peer {
            ae_title: "CT01".into(),
            host: HostPattern::Addr("127.0.0.1".parse().unwrap()),
            port: 104,
            permissions: "echo,store".parse().unwrap(),
            tls_required: false,
            cert_sha256: String::new(),
            cert_subject: String::new(),
        }
    }

    #[test]
    fn decisions() {
        use AssociationDecision::*;
        let p = ct();
        let plain = Transport::default();
        assert_eq!(
            decide_association("CUSTOS", "OTHER", Some(&p), true, &plain),
            Reject(RejectReason::CalledAeNotRecognized)
        );
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", None, true, &plain),
            Reject(RejectReason::CallingAeNotRecognized)
        );
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&p), false, &plain),
            Reject(RejectReason::AddressNotAllowed)
        );
        let Accept(principal) = decide_association("CUSTOS", "CUSTOS ", Some(&p), true, &plain)
        else {
            panic!()
        };
        // TLS requirements.
        let mut tls_peer = ct();
        tls_peer.tls_required = true;
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&tls_peer), true, &plain),
            Reject(RejectReason::TlsRequired)
        );
        let with_cert = Transport {
            tls: true,
            client_cert_sha256: Some("ab".repeat(32)),
            client_cert_subject: Some("CN=CT01,O=Radiology".into()),
        };
        assert!(matches!(
            decide_association("CUSTOS", "CUSTOS", Some(&tls_peer), true, &with_cert),
            Accept(_)
        ));
        // A subject: matched, then not; and never without a certificate.
        let mut named = ct();
        named.cert_subject = "CN=CT01,O=Radiology".into();
        assert!(matches!(
            decide_association("CUSTOS", "CUSTOS", Some(&named), true, &with_cert),
            Accept(_)
        ));
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&named), true, &plain),
            Reject(RejectReason::TlsRequired)
        );
        named.cert_subject = "CN=CT02,O=Radiology".into();
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&named), true, &with_cert),
            Reject(RejectReason::CertificateMismatch)
        );
        tls_peer.cert_sha256 = "cd".repeat(32);
        assert_eq!(
            decide_association("CUSTOS", "CUSTOS", Some(&tls_peer), true, &with_cert),
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
    }
}
