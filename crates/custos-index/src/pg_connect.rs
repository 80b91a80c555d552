//! How the PostgreSQL index is reached. The index carries patient data,
//! password hashes and the peer registry, so beyond loopback the connection
//! is TLS with the server's certificate checked (`sslmode=verify-full` unless
//! the URL says otherwise); plain connections beyond loopback are refused
//! unless the URL says `allow_plaintext=true`. The URL takes libpq's
//! `sslmode` (`disable`, `require`, `verify-ca`, `verify-full`) and
//! `sslrootcert` (a PEM file); the rest goes to tokio-postgres as it is.

use std::net::IpAddr;

use custos_tls::database::{Verify, database_client_config};
use tokio_postgres::config::{Host, SslMode};

use crate::IndexError;

/// A parsed index URL: the connection settings and, for TLS, the client
/// configuration.
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: Option<custos_tls::ClientConfig>,
}

pub fn parse(url: &str) -> Result<PgTarget, IndexError> {
    let bad = |m: String| IndexError::Config(m);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut sslmode, mut root, mut allow_plaintext) = (None, None, false);
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("sslmode", v) => sslmode = Some(v.to_string()),
            ("sslrootcert", v) => root = Some(std::path::PathBuf::from(percent_decode(v))),
            ("allow_plaintext", v) => allow_plaintext = v == "true",
            _ => rest.push(pair),
        }
    }
    let plain_url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: tokio_postgres::Config = plain_url
        .parse()
        .map_err(|e| bad(format!("index URL: {e}")))?;
    let local = config.get_hosts().iter().all(is_local);
    let verify = match sslmode.as_deref() {
        None if local => None,
        None | Some("verify-full") => Some(Verify::Full),
        Some("verify-ca") => Some(Verify::Chain),
        Some("require") if root.is_some() => Some(Verify::Chain),
        Some("require") => Some(Verify::Nothing),
        Some("disable" | "allow" | "prefer") if local || allow_plaintext => None,
        Some(m @ ("disable" | "allow" | "prefer")) => {
            return Err(bad(format!(
                "sslmode={m} would send patient data and password hashes in clear beyond loopback; \
                 use sslmode=verify-full&sslrootcert=CA.pem (or add allow_plaintext=true on a network you trust)"
            )));
        }
        Some(m) => return Err(bad(format!("unknown sslmode={m}"))),
    };
    let Some(verify) = verify else {
        config.ssl_mode(SslMode::Disable);
        return Ok(PgTarget { config, tls: None });
    };
    config.ssl_mode(SslMode::Require);
    let tls = database_client_config(verify, root.as_deref())
        .map_err(|e| bad(format!("index TLS: {e:#}")))?;
    Ok(PgTarget {
        config,
        tls: Some(tls),
    })
}

/// Unix sockets and loopback addresses never leave the machine.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// `%2F` and friends in a path given in a URL.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> Result<Option<()>, String> {
        parse(url)
            .map(|t| t.tls.map(|_| ()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn loopback_may_be_plain_and_beyond_it_tls_is_the_default() {
        assert_eq!(mode("postgres://u@127.0.0.1:5432/db"), Ok(None));
        assert_eq!(mode("postgres://u@localhost/db?sslmode=disable"), Ok(None));
        // Beyond loopback with no sslmode: verify-full, which needs a root.
        let e = mode("postgres://u@db.example.org/db").unwrap_err();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = mode("postgres://u@10.0.0.5/db?sslmode=disable").unwrap_err();
        assert!(e.contains("in clear"), "{e}");
        let e = mode("postgres://u@10.0.0.5/db?sslmode=prefer").unwrap_err();
        assert!(e.contains("in clear"), "{e}");
        assert_eq!(
            mode("postgres://u@10.0.0.5/db?sslmode=disable&allow_plaintext=true"),
            Ok(None)
        );
        assert_eq!(
            mode("postgres://u@10.0.0.5/db?sslmode=require"),
            Ok(Some(()))
        );
        assert!(mode("postgres://u@10.0.0.5/db?sslmode=bogus").is_err());
    }

    #[test]
    fn other_parameters_reach_tokio_postgres() {
        let t = parse("postgres://u@127.0.0.1/db?connect_timeout=7&sslmode=disable").unwrap();
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        assert_eq!(percent_decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
    }
}
