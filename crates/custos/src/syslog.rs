//! Forwarding the audit trail to a syslog collector over TLS (RFC 5424
//! messages, RFC 5425 framing), as IHE ATNA expects: each record this node
//! wrote, as a DICOM audit message (XML). The forwarder follows the trail in
//! the index, so it never slows the writer; a collector that is down is
//! retried, and records written meanwhile are sent when it is back. Where it
//! got to is kept in the data folder (`syslog.offset`), so records written
//! while the server was down (CLI changes) are forwarded at the next start.
//! Each message carries the record's sequence number and chain link: the
//! collector holds checkpoints of the trail that a database writer cannot
//! reach.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use custos_tls::{ServerName, TlsConnector};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use custos_index::AuditLog;

pub struct Forwarder {
    pub log: Arc<dyn AuditLog>,
    /// Where the last forwarded sequence number is kept.
    pub offset_file: std::path::PathBuf,
    pub host: String,
    pub port: u16,
    pub tls: Arc<custos_tls::ClientConfig>,
}

/// `tls://host:port` → (host, port).
pub fn parse_url(url: &str) -> Result<(String, u16)> {
    let Some(rest) = url.strip_prefix("tls://") else {
        bail!("[audit] syslog_url must be tls://host:port (syslog over TLS, RFC 5425)");
    };
    let (host, port) = rest
        .rsplit_once(':')
        .context("[audit] syslog_url needs a port (6514 is syslog over TLS)")?;
    Ok((host.trim_matches(['[', ']']).to_string(), port.parse()?))
}

impl Forwarder {
    /// Runs until the process ends: follows the trail from where it last
    /// stopped (from the start the first time).
    pub async fn run(self) {
        let node = custos_archive::audit::node_name();
        let mut after: i64 = std::fs::read_to_string(&self.offset_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let mut saved = after;
        let mut conn = None;
        let mut warned = false;
        'batches: loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let records = match self.log.audit_after(after, 1000).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "AUDIT FORWARDING: cannot read the trail");
                    continue;
                }
            };
            for r in records {
                let body: serde_json::Value = match serde_json::from_str(&r.body) {
                    Ok(b) => b,
                    Err(_) => {
                        // Written by no node Custos knows: forwarded by each
                        // (as an empty message carrying its sequence number
                        // and chain link), never passed over in silence.
                        tracing::error!(
                            seq = r.seq,
                            "AUDIT FORWARDING: a record of the trail is not JSON (altered?)"
                        );
                        serde_json::json!({ "node": node })
                    }
                };
                if body["node"].as_str().unwrap_or_default() != node {
                    after = r.seq;
                    continue;
                }
                loop {
                    if conn.is_none() {
                        match self.connect().await {
                            Ok(c) => {
                                conn = Some(c);
                                warned = false;
                            }
                            Err(e) => {
                                if !warned {
                                    tracing::error!(error = %e, "AUDIT FORWARDING: syslog collector unreachable; retrying");
                                    warned = true;
                                }
                                tokio::time::sleep(Duration::from_secs(2)).await;
                                continue;
                            }
                        }
                    }
                    let msg = frame(&body, &node, r.seq, &r.hash);
                    let Some(c) = conn.as_mut() else { continue };
                    match c.write_all(&msg).await {
                        Ok(()) => break,
                        Err(e) => {
                            // Records written before this one may still
                            // have been in the lost connection's buffers:
                            // the batch is sent again from the last
                            // recorded offset.
                            tracing::error!(error = %e, "AUDIT FORWARDING: lost the syslog collector; reconnecting");
                            conn = None;
                            after = saved;
                            continue 'batches;
                        }
                    }
                }
                after = r.seq;
            }
            if let Some(c) = conn.as_mut()
                && let Err(e) = c.flush().await
            {
                // What the flush held may not have left: sent again from
                // the last recorded offset (the collector may see some
                // twice; each carries its sequence number).
                tracing::error!(error = %e, "AUDIT FORWARDING: lost the syslog collector; reconnecting");
                conn = None;
                after = saved;
                continue;
            }
            if after != saved {
                match std::fs::write(&self.offset_file, after.to_string()) {
                    Ok(()) => saved = after,
                    Err(e) => {
                        tracing::error!(error = %e, "AUDIT FORWARDING: cannot record how far it got")
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<custos_tls::client::TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .context("connecting timed out")??;
        let name = ServerName::try_from(self.host.clone())?;
        Ok(TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?)
    }
}

/// One RFC 5424 message (facility authpriv, severity notice; MSGID as IHE
/// ATNA names it) in RFC 5425 octet-counting framing.
fn frame(body: &serde_json::Value, node: &str, seq: i64, link: &str) -> Vec<u8> {
    let time = body["time"].as_str().unwrap_or("-");
    let host = if node.is_empty() { "-" } else { node };
    let xml = crate::audit_cmd::audit_message_xml(body);
    let msg = format!(
        "<85>1 {time} {host} custos {} IHE+RFC-3881 [custos@32473 seq=\"{seq}\" link=\"{link}\"] {xml}",
        std::process::id()
    );
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}
