//! TLS for both front doors (HTTPS and DICOM TLS): the data folder's own
//! certificate authority and server certificate, made on first run so that TLS
//! works with no set-up; peer certificates issued from it; the rustls
//! configurations (TLS 1.2 and 1.3 only); and which CAs may issue client
//! certificates ([`client_trust`]); and secrets sealed at rest under the data
//! folder's key ([`sealed`]).
#![forbid(unsafe_code)]

pub mod client_trust;
pub mod database;
pub mod error;
pub mod sealed;
pub mod write_behind;

pub use error::TlsError;

// The TLS types the other crates use: rustls and tokio-rustls are known by
// this crate only.
pub use rustls::pki_types::ServerName;
pub use rustls::{ClientConfig, ServerConfig};
pub use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// Bytes read from a TLS connection's socket per system call.
///
/// rustls reads from its transport into a buffer only 4 KiB larger than what
/// it already holds: measured, 72,000 `recvfrom`s for 2,000 STOW-RS uploads of
/// 0.5 MB (and, for DICOM, a quick-ACK `setsockopt` after each), each a pass
/// through tokio's reactor. Reading ahead into a buffer of this size made it
/// 18,000, for a copy of the ciphertext.
pub const READ_AHEAD: usize = 64 << 10;

/// `io` with a read-ahead buffer of [`READ_AHEAD`] bytes, for the
/// ciphertext side of a TLS stream (writes pass straight through).
pub fn read_ahead<S: tokio::io::AsyncRead>(io: S) -> tokio::io::BufReader<S> {
    tokio::io::BufReader::with_capacity(READ_AHEAD, io)
}

/// A TLS 1.2/1.3 client that accepts any server certificate, for the probe
/// (it must reach misconfigured servers too, and judges their certificates
/// itself). Handshake signatures are still checked.
pub fn any_certificate_client() -> Option<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(database::accept_any_certificate())
        .with_no_client_auth();
    Some(Arc::new(config))
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// Where the generated CA and server certificate live inside the data folder.
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsFiles {
    pub fn in_data(data: &Path) -> TlsFiles {
        let dir = data.join("tls");
        TlsFiles {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key.pem"),
        }
    }
}

/// A new file readable by this account only (keys, and the configuration
/// that may hold secrets), synced.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// The names the server certificate is valid for: loopback and this host's names.
fn server_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    names
}

/// Creates the CA and a server certificate signed by it unless they exist.
/// Returns true when they were created now.
pub fn ensure_local_ca(data: &Path) -> Result<bool> {
    let files = TlsFiles::in_data(data);
    if files.ca_cert.exists() && files.server_cert.exists() {
        return Ok(false);
    }
    let dir = data.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = OffsetDateTime::now_utc();

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Custos");
    dn.push(
        DnType::CommonName,
        format!(
            "Custos local CA {}",
            custos_core::credentials::random_text(6)
        ),
    );
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let (cert, key) = issue_leaf(&issuer, "custos-server", &server_names(), now)?;
    // The private keys first, then the certificates: a half-made folder is
    // recognisable (no ca.pem) and is made again.
    let _ = std::fs::remove_file(&files.ca_key);
    let _ = std::fs::remove_file(&files.server_key);
    write_private(&files.ca_key, &issuer.key().serialize_pem())?;
    write_private(&files.server_key, &key)?;
    std::fs::write(&files.server_cert, cert)?;
    std::fs::write(&files.ca_cert, ca_cert.pem())?;
    Ok(true)
}

/// A certificate for `names` signed by the CA, usable as server and client
/// certificate: (certificate PEM, private key PEM).
fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: &[String],
    now: OffsetDateTime,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(397);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A certificate for `name` from the data folder's CA, usable as a DICOM
/// client certificate and as a C-MOVE destination's server certificate.
/// Returns (certificate PEM, private key PEM, SHA-256 of the certificate DER).
pub fn issue_peer_cert(
    data: &Path,
    name: &str,
    extra_names: &[String],
) -> Result<(String, String, String)> {
    let files = TlsFiles::in_data(data);
    let ca_key = KeyPair::from_pem(
        &std::fs::read_to_string(&files.ca_key)
            .with_context(|| format!("reading {}", files.ca_key.display()))?,
    )?;
    let ca_pem = std::fs::read_to_string(&files.ca_cert)
        .with_context(|| format!("reading {}", files.ca_cert.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let mut names = vec![name.to_string()];
    names.extend(extra_names.iter().cloned());
    let (cert, key) = issue_leaf(&issuer, name, &names, OffsetDateTime::now_utc())?;
    let der = CertificateDer::from_pem_slice(cert.as_bytes())
        .context("parsing the certificate just made")?;
    Ok((cert, key, custos_core::credentials::sha256_hex(&der)))
}

/// A PEM certificate chain and its private key.
fn cert_and_key(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the key {}", key.display()))?;
    Ok((certs, key))
}

/// The certificates of a PEM CA bundle as trust roots.
fn trust_roots(ca: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(c?)?;
    }
    Ok(roots)
}

/// The DICOM TLS configuration (PS3.15 BCP 195): TLS 1.2 and 1.3 only, AEAD
/// suites only, client certificates verified against `client_trust` when
/// presented (a certificate from another CA fails the handshake); whether a
/// peer must present one is the association policy's decision.
pub fn dicom_server_config(
    cert: &Path,
    key: &Path,
    client_trust: Arc<client_trust::ClientTrust>,
) -> Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = cert_and_key(cert, key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = client_trust;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// The client side of DICOM TLS (C-MOVE to TLS peers): the destination's
/// certificate must chain to `ca`; ours (`cert`, `key`) is presented.
pub fn dicom_client_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<Arc<rustls::ClientConfig>> {
    let (certs, key) = cert_and_key(cert, key)?;
    let roots = trust_roots(ca)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// A rustls server configuration from PEM files: TLS 1.2 and 1.3 only, with
/// the AEAD cipher suites rustls offers (no CBC, no RC4, no export suites).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = cert_and_key(cert, key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Days until the first certificate in a PEM file expires (negative: expired).
pub fn days_until_expiry(path: &Path) -> Result<i64> {
    let der = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .next()
        .context("no certificate in the file")??;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::invalid(format!("parsing {}: {e}", path.display())))?;
    let not_after = cert.validity().not_after.timestamp();
    Ok((not_after - OffsetDateTime::now_utc().unix_timestamp()) / 86_400)
}

/// Days until a DER certificate expires (negative: expired) and whether it is
/// self-signed (issuer = subject).
pub fn cert_facts(der: &[u8]) -> Option<(i64, bool)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let days = (cert.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp())
        / 86_400;
    Some((days, cert.issuer() == cert.subject()))
}

/// The certificate's subject, normalised as peers' registered subjects are.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert
        .subject()
        .to_string_with_registry(x509_parser::objects::oid_registry())
        .ok()?;
    custos_core::peer::normalize_subject(&subject).ok()
}

/// The names a certificate is issued to: the subject's common names and the
/// DNS names of its subject alternative names (what a peer's AE title is
/// checked against).
pub fn names_of(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_string)
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push((*d).to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system's temporary directory.
    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("custos-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_local_ca_is_made_once_with_private_keys_and_issues_certificates_named_for_their_ae() {
        use std::os::unix::fs::PermissionsExt;
        let data = folder("ca");
        assert!(ensure_local_ca(&data).unwrap(), "made on first run");
        assert!(!ensure_local_ca(&data).unwrap(), "kept afterwards");
        let files = TlsFiles::in_data(&data);
        for key in [&files.ca_key, &files.server_key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        assert!(days_until_expiry(&files.server_cert).unwrap() > 300);
        // The server configuration loads what was made; a key from elsewhere does not fit.
        server_config(&files.server_cert, &files.server_key).unwrap();
        assert!(server_config(&files.server_cert, &files.ca_key).is_err());

        let (cert, key, sha) = issue_peer_cert(&data, "CT01", &["127.0.0.1".into()]).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(sha.len(), 64);
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert!(
            names_of(&der).iter().any(|n| n == "CT01"),
            "{:?}",
            names_of(&der)
        );
        // It chains to the CA the data folder trusts for client certificates.
        let ca = std::fs::read_to_string(&files.ca_cert).unwrap();
        assert!(client_trust::chain_trusted(&[der.to_vec()], &ca));
        let other = folder("other-ca");
        ensure_local_ca(&other).unwrap();
        let foreign = std::fs::read_to_string(TlsFiles::in_data(&other).ca_cert).unwrap();
        assert!(!client_trust::chain_trusted(&[der.to_vec()], &foreign));
        let _ = std::fs::remove_dir_all(&data);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn bad_bundles_and_missing_roots_are_refused_with_a_reason() {
        let e = client_trust::parse_bundle("not a certificate").unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let e = database::database_client_config(database::Verify::Full, None).unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
        database::database_client_config(database::Verify::Nothing, None).unwrap();
    }
}
