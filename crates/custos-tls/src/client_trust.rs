//! Which CAs may issue DICOM TLS client certificates: the configured bundle
//! (the data folder's CA by default) plus every CA bundle registered for a
//! peer (`custos peer add --ca-file`). A certificate from any other CA fails
//! the handshake; which peer a trusted certificate may act as is the
//! association policy's decision (a peer with its own bundle only accepts
//! certificates that chain to it).
//!
//! Peers change while the server runs (another process's CLI writes the
//! index), so the handshake verifier is rebuilt whenever the set of peer
//! bundles changes; [`ClientTrust::update`] is called periodically by `serve`.

use std::sync::{Arc, RwLock};

use crate::error::{Context, Result, TlsError};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The certificates of a PEM bundle (at least one).
pub fn parse_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the CA bundle is not PEM certificates")?;
    if certs.is_empty() {
        return Err(TlsError::invalid("the CA bundle holds no certificate"));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c.as_ref()).map_err(|e| {
            TlsError::invalid(format!("a certificate in the CA bundle is malformed: {e}"))
        })?;
    }
    Ok(certs)
}

/// Whether `chain` (leaf first, DER) verifies as a client certificate against
/// the CAs of the PEM bundle `ca_pem`.
pub fn chain_trusted(chain: &[Vec<u8>], ca_pem: &str) -> bool {
    match verifier_for(ca_pem.as_bytes(), &[]) {
        Ok(verifier) => verifies(verifier.as_ref(), chain),
        Err(_) => false,
    }
}

fn verifies(verifier: &dyn ClientCertVerifier, chain: &[Vec<u8>]) -> bool {
    let Some((leaf, rest)) = chain.split_first() else {
        return false;
    };
    let intermediates: Vec<CertificateDer> =
        rest.iter().map(|c| CertificateDer::from(&c[..])).collect();
    verifier
        .verify_client_cert(
            &CertificateDer::from(&leaf[..]),
            &intermediates,
            UnixTime::now(),
        )
        .is_ok()
}

fn verifier_for(base_pem: &[u8], extra: &[String]) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(base_pem) {
        roots.add(c?)?;
    }
    for bundle in extra {
        // A bundle that no longer parses is skipped, not fatal: the others
        // (and the configured CA) keep working.
        for c in parse_bundle(bundle).unwrap_or_default() {
            let _ = roots.add(c);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")
}

/// The handshake's client certificate verifier, rebuilt when peers' CA
/// bundles change.
pub struct ClientTrust {
    base_pem: Vec<u8>,
    /// The configured CAs alone.
    base: Arc<dyn ClientCertVerifier>,
    /// The configured CAs and every peer's bundle.
    current: RwLock<(Vec<String>, Arc<dyn ClientCertVerifier>)>,
}

impl std::fmt::Debug for ClientTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTrust")
    }
}

impl ClientTrust {
    /// Trusts the CAs of the PEM file `client_ca`.
    pub fn new(client_ca: &std::path::Path) -> Result<Arc<ClientTrust>> {
        let base_pem =
            std::fs::read(client_ca).with_context(|| format!("reading {}", client_ca.display()))?;
        let verifier = verifier_for(&base_pem, &[])
            .with_context(|| format!("loading {}", client_ca.display()))?;
        Ok(Arc::new(ClientTrust {
            base_pem,
            base: verifier.clone(),
            current: RwLock::new((Vec::new(), verifier)),
        }))
    }

    /// Whether `chain` (DER, leaf first) chains to the configured client CAs,
    /// not merely to some peer's bundle.
    pub fn from_configured_ca(&self, chain: &[Vec<u8>]) -> bool {
        verifies(self.base.as_ref(), chain)
    }

    /// Also trusts these peers' CA bundles (and no longer those left out).
    pub fn update(&self, mut bundles: Vec<String>) {
        bundles.sort();
        bundles.dedup();
        let unchanged = self.current.read().map(|c| c.0 == bundles).unwrap_or(false);
        if unchanged {
            return;
        }
        match verifier_for(&self.base_pem, &bundles) {
            Ok(v) => {
                if let Ok(mut current) = self.current.write() {
                    tracing::info!(
                        peer_bundles = bundles.len(),
                        "DICOM TLS client CAs reloaded"
                    );
                    *current = (bundles, v);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot rebuild the DICOM TLS client CAs"),
        }
    }

    fn verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        // A poisoned lock means a panic while swapping; refuse rather than guess.
        self.current.read().ok().map(|c| c.1.clone())
    }
}

fn refused() -> rustls::Error {
    rustls::Error::General("client certificate verifier unavailable".into())
}

impl ClientCertVerifier for ClientTrust {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Whether a peer needs a certificate is the association policy's call.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The set changes at run time; no hints (clients send their one certificate).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .ok_or_else(refused)?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()
            .ok_or_else(refused)?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()
            .ok_or_else(refused)?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}
