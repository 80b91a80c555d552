//! Registered DICOM peers: an AE title bound to where it may connect from.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::Permissions;

/// A known DICOM application entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ae_title: String,
    /// Where associations from this AE may come from.
    pub host: HostPattern,
    /// Port its SCP listens on (C-MOVE destination).
    pub port: u16,
    pub permissions: Permissions,
    /// Associations only over TLS (refused on the plain listener).
    pub tls_required: bool,
    /// SHA-256 of the client certificate it must present (lower-case hex, no
    /// colons); empty: any certificate the CA trusts, or none unless TLS is required.
    pub cert_sha256: String,
    /// Subject the client certificate must carry (normalised by
    /// [`normalize_subject`]); survives certificate renewal, unlike the
    /// fingerprint. Empty: any subject.
    pub cert_subject: String,
    /// PEM CA bundle its client certificate must chain to (a vendor's or a
    /// department's CA); also trusted in the TLS handshake. Empty: the
    /// server's configured client CAs.
    pub ca_pem: String,
}

impl Peer {
    /// Whether its client certificate is pinned (fingerprint, subject or its
    /// own CA bundle); a pinned peer can only connect over TLS.
    pub fn pinned(&self) -> bool {
        !self.cert_sha256.is_empty() || !self.cert_subject.is_empty() || !self.ca_pem.is_empty()
    }

    /// The peer as registered: pinning implies `tls_required`.
    pub fn with_pins_requiring_tls(mut self) -> Peer {
        self.tls_required |= self.pinned();
        self
    }
}

/// Normalises a distinguished name for comparison: `cn=CT01, O=Radiology`
/// and `O=Radiology,CN=CT01` both become `CN=CT01,O=Radiology` (attribute
/// types upper-cased, spaces around separators dropped, RDNs sorted; values
/// kept exactly, escaped commas respected).
pub fn normalize_subject(s: &str) -> Result<String, crate::Invalid> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        match c {
            ',' | '+' if !escaped => parts.push(std::mem::take(&mut current)),
            '\\' if !escaped => {
                escaped = true;
                current.push(c);
                continue;
            }
            _ => current.push(c),
        }
        escaped = false;
    }
    parts.push(current);
    let mut rdns = Vec::new();
    for part in parts {
        let Some((kind, value)) = part.split_once('=') else {
            return Err(crate::invalid!(
                "`{}` is not TYPE=value in a certificate subject such as CN=CT01,O=Radiology",
                part.trim()
            ));
        };
        let kind = kind.trim().to_ascii_uppercase();
        let value = value.trim();
        if kind.is_empty() || value.is_empty() {
            return Err("a certificate subject needs TYPE=value parts, such as CN=CT01".into());
        }
        rdns.push(format!("{kind}={value}"));
    }
    rdns.sort();
    Ok(rdns.join(","))
}

/// Normalises a certificate fingerprint: `SHA256:AB:CD...`, `ab cd ..` or
/// `abcd...` become 64 lower-case hex digits.
pub fn parse_fingerprint(s: &str) -> Result<String, crate::Invalid> {
    let t = s.trim();
    let t = t
        .strip_prefix("SHA256:")
        .or_else(|| t.strip_prefix("sha256:"))
        .unwrap_or(t);
    let hex: String = t
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(
            "a certificate fingerprint is SHA256: and 64 hex digits (colons allowed)".into(),
        );
    }
    Ok(hex)
}

/// An address restriction: one address, a network, or a DNS name resolved when checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Addr(IpAddr),
    Cidr(IpAddr, u8),
    Name(String),
}

impl HostPattern {
    /// Whether `ip` falls inside an address or CIDR pattern. Names never match
    /// here: the caller resolves them (that is I/O) and compares the addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match self {
            HostPattern::Addr(a) => canonical(*a) == ip,
            HostPattern::Cidr(net, len) => {
                // An IPv4-mapped network (::ffff:10.1.5.0/120) compares as
                // IPv4, its prefix counted from the IPv4 part.
                let len = match net {
                    IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => len.saturating_sub(96),
                    _ => *len,
                };
                match (canonical(*net), ip) {
                    (IpAddr::V4(n), IpAddr::V4(i)) => prefix_eq(&n.octets(), &i.octets(), len),
                    (IpAddr::V6(n), IpAddr::V6(i)) => prefix_eq(&n.octets(), &i.octets(), len),
                    _ => false,
                }
            }
            HostPattern::Name(_) => false,
        }
    }

    /// Where to connect to this peer, if the pattern names a single host.
    pub fn connect_host(&self) -> Option<String> {
        match self {
            HostPattern::Addr(a) => Some(a.to_string()),
            HostPattern::Name(n) => Some(n.clone()),
            HostPattern::Cidr(..) => None,
        }
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    // Never longer than the address (a pattern checked elsewhere, but a
    // panic here would drop every association from the peer).
    let len = len.min((a.len() * 8) as u8);
    let full = (len / 8) as usize;
    let rest = len % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

impl FromStr for HostPattern {
    type Err = crate::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((net, len)) = s.split_once('/') {
            let net: IpAddr = net
                .parse()
                .map_err(|_| crate::invalid!("bad network address in `{s}`"))?;
            let len: u8 = len
                .parse()
                .map_err(|_| crate::invalid!("bad prefix length in `{s}`"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(crate::invalid!(
                    "prefix length {len} is too long for `{net}`"
                ));
            }
            return Ok(HostPattern::Cidr(net, len));
        }
        if let Ok(ip) = s.parse() {
            return Ok(HostPattern::Addr(ip));
        }
        let valid_name = !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if valid_name {
            Ok(HostPattern::Name(s.to_ascii_lowercase()))
        } else {
            Err(crate::invalid!(
                "`{s}` is neither an address, a CIDR network nor a host name"
            ))
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Addr(a) => write!(f, "{a}"),
            HostPattern::Cidr(n, l) => write!(f, "{n}/{l}"),
            HostPattern::Name(n) => f.write_str(n),
        }
    }
}

/// Validates an AE title: 1-16 characters of printable ASCII without backslash,
/// not all spaces (PS3.5 AE value representation).
pub fn validate_ae_title(ae: &str) -> Result<String, crate::Invalid> {
    let trimmed = ae.trim();
    if trimmed.is_empty() || trimmed.len() > 16 {
        return Err(crate::invalid!(
            "AE title `{ae}` must be 1 to 16 characters"
        ));
    }
    if !trimmed.chars().all(|c| c.is_ascii_graphic() || c == ' ') || trimmed.contains('\\') {
        return Err(crate::invalid!(
            "AE title `{ae}` may only contain printable ASCII without `\\`"
        ));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4-mapped network is an IPv4 network (it used to panic on every
    /// association of the peer).
    #[test]
    fn ipv4_mapped_networks_match_ipv4_addresses() {
        let p: HostPattern = "::ffff:10.1.5.0/120".parse().unwrap();
        assert!(p.contains("10.1.5.77".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.5.9".parse().unwrap()));
        assert!(!p.contains("10.1.6.1".parse().unwrap()));
        let all: HostPattern = "::ffff:0.0.0.0/96".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let host: HostPattern = "::ffff:10.1.5.7/128".parse().unwrap();
        assert!(host.contains("10.1.5.7".parse().unwrap()));
        assert!(!host.contains("10.1.5.8".parse().unwrap()));
    }

    #[test]
    fn subjects_normalise() {
        let a = normalize_subject("cn=CT01, O=Radiology").unwrap();
        assert_eq!(a, "CN=CT01,O=Radiology");
        assert_eq!(normalize_subject("O=Radiology ,CN=CT01").unwrap(), a);
        // Values keep their case; an escaped comma stays inside its value.
        assert_ne!(normalize_subject("CN=ct01,O=Radiology").unwrap(), a);
        assert_eq!(
            normalize_subject(r"CN=Smith\, J,O=X").unwrap(),
            r"CN=Smith\, J,O=X"
        );
        assert!(normalize_subject("CT01").is_err());
        assert!(normalize_subject("CN=").is_err());
    }

    #[test]
    fn host_patterns() {
        let cidr: HostPattern = "10.1.0.0/16".parse().unwrap();
        assert!(cidr.contains("10.1.200.3".parse().unwrap()));
        assert!(!cidr.contains("10.2.0.1".parse().unwrap()));
        let one: HostPattern = "127.0.0.1".parse().unwrap();
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let odd: HostPattern = "192.168.1.128/25".parse().unwrap();
        assert!(odd.contains("192.168.1.200".parse().unwrap()));
        assert!(!odd.contains("192.168.1.100".parse().unwrap()));
        assert_eq!(
            "CT-Room1.Hospital.org"
                .parse::<HostPattern>()
                .unwrap()
                .to_string(),
            "ct-room1.hospital.org"
        );
        assert!("10.0.0.0/33".parse::<HostPattern>().is_err());
        assert!("bad host!".parse::<HostPattern>().is_err());
    }

    #[test]
    fn ae_titles() {
        assert_eq!(validate_ae_title(" CT01 ").unwrap(), "CT01");
        assert!(validate_ae_title("").is_err());
        assert!(validate_ae_title("THIS_IS_TOO_LONG_AE").is_err());
        assert!(validate_ae_title("A\\B").is_err());
    }
}
