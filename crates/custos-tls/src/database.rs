//! TLS for the index connection (PostgreSQL), with libpq's `sslmode` meanings:
//! `verify-full` checks the chain and the host name, `verify-ca` the chain
//! only, `require` encrypts without checking who answers (libpq's meaning;
//! with a root certificate given it checks the chain, as libpq does). TLS 1.2
//! and 1.3 only.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Context, Result, TlsError};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// What the client checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Chain to the roots and the host name (`verify-full`).
    Full,
    /// Chain to the roots only (`verify-ca`).
    Chain,
    /// Nothing (`require` without a root certificate).
    Nothing,
}

/// A client configuration for the index connection; `roots` is a PEM file
/// (needed unless `verify` is `Nothing`).
pub fn database_client_config(
    verify: Verify,
    roots: Option<&Path>,
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let config = match (verify, roots) {
        (Verify::Nothing, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(accept_any_certificate())
            .with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::invalid(
                "checking the database's certificate needs sslrootcert=PATH (a PEM file)",
            ));
        }
        (Verify::Full, Some(path)) => builder
            .with_root_certificates(crate::trust_roots(path)?)
            .with_no_client_auth(),
        (Verify::Chain, Some(path)) => {
            let roots = Arc::new(crate::trust_roots(path)?);
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .context("the root certificates cannot verify anything")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// `verify-ca`: the chain must verify; a name mismatch is accepted.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any server certificate (`require`; the probe, which must reach
/// misconfigured servers and judges their certificates itself). The handshake
/// signatures are still checked, so the session is encrypted to whoever holds
/// that certificate's key.
pub fn accept_any_certificate() -> Arc<dyn ServerCertVerifier> {
    Arc::new(Unchecked(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    )))
}

#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
