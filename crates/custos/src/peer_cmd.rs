//! `custos peer add|list|remove|echo`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use custos_archive::registry;
use custos_core::{Peer, Permissions};

use crate::config::Config;
use crate::data::open_index;

#[derive(Subcommand)]
pub enum PeerCommand {
    /// Register (or update) a peer.
    Add {
        /// Its AE title.
        ae_title: String,
        /// Where it connects from: an address, a CIDR network or a host name.
        #[arg(long)]
        host: String,
        /// Port its own DICOM listener uses (C-MOVE destination).
        #[arg(long, default_value_t = 104)]
        port: u16,
        /// What it may do: any of echo, store, find, get, move, commit, worklist, mpps (comma-separated).
        #[arg(long, default_value = "echo")]
        allow: String,
        /// `required`: only over TLS with a client certificate from the data
        /// folder's CA (see `custos cert issue`); `optional` (default): either.
        #[arg(long, default_value = "optional")]
        tls: String,
        /// Pin the client certificate: SHA256:<hex> (colons optional), as
        /// printed by `custos cert issue`. Implies --tls required.
        #[arg(long)]
        cert_fingerprint: Option<String>,
        /// Require this client certificate subject, e.g. "CN=CT01,O=Radiology"
        /// (survives renewal; the certificate must still chain to the data
        /// folder's CA or `[dicom] tls_client_ca`). Implies --tls required.
        #[arg(long)]
        cert_subject: Option<String>,
        /// Trust this PEM CA bundle for the peer's client certificate (a
        /// vendor's or department's CA): certificates from it are accepted in
        /// the handshake, and only for this peer. Implies --tls required.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// List registered peers.
    List,
    /// Remove a peer.
    Remove { ae_title: String },
    /// Send a C-ECHO from this server's AE title to a registered peer, as
    /// C-MOVE would associate with it (TLS when the peer requires it); exit
    /// status 0 when it answers success.
    Echo { ae_title: String },
}

pub async fn run(data: &Path, command: PeerCommand) -> Result<()> {
    let config = Config::load(data)?;
    let index = open_index(data, &config).await?;
    match command {
        PeerCommand::Add {
            ae_title,
            host,
            port,
            allow,
            tls,
            cert_fingerprint,
            cert_subject,
            ca_file,
        } => {
            let tls_required = match tls.as_str() {
                "required" => true,
                "optional" => false,
                other => bail!("--tls is required or optional, not `{other}`"),
            };
            let ca_pem = match ca_file {
                Some(path) => {
                    let pem = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    warn_if_expired(&pem, &path);
                    Some(pem)
                }
                None => None,
            };
            let spec = registry::PeerSpec {
                ae_title,
                host,
                port,
                allow,
                tls_required,
                cert_fingerprint,
                cert_subject,
                ca_pem,
            };
            let (peer, line) = registry::register_peer(index.as_ref(), spec).await?;
            crate::audit_cmd::record_change(data, index.as_ref(), line).await;
            println!(
                "peer {} at {} port {} may: {}{}",
                peer.ae_title,
                peer.host,
                peer.port,
                display_perms(peer.permissions),
                tls_note(&peer)
            );
        }
        PeerCommand::List => {
            let peers = index.peers().await?;
            if peers.is_empty() {
                println!(
                    "no peers registered (add one with `custos peer add AE --host ADDR --port PORT --allow echo,store`)"
                );
            }
            for p in peers {
                println!(
                    "{:<16} {:<24} {:>5}  {}{}",
                    p.ae_title,
                    p.host.to_string(),
                    p.port,
                    display_perms(p.permissions),
                    tls_note(&p)
                );
            }
        }
        PeerCommand::Echo { ae_title } => {
            let Some(peer) = index.peer(ae_title.trim()).await? else {
                bail!("no peer {ae_title} is registered (custos peer list)");
            };
            let tls = crate::serve::dicom_tls_client(data, &config)?;
            let answer = custos_dimse::echo_peer(
                &config.dicom.ae_title,
                &peer,
                tls,
                std::time::Duration::from_secs(10),
            )
            .await
            .map_err(|why| anyhow::anyhow!("{} did not answer: {why}", peer.ae_title))?;
            if answer.status != 0 {
                bail!(
                    "{} answered C-ECHO with status {:04X}",
                    peer.ae_title,
                    answer.status
                );
            }
            println!(
                "{} answered C-ECHO (status 0000{}, {} ms)",
                peer.ae_title,
                if answer.tls { ", over TLS" } else { "" },
                answer.elapsed.as_millis()
            );
        }
        PeerCommand::Remove { ae_title } => {
            let line = registry::remove_peer(index.as_ref(), &ae_title).await?;
            crate::audit_cmd::record_change(data, index.as_ref(), line.clone()).await;
            println!("{line}");
        }
    }
    Ok(())
}

/// Warns when a CA bundle given for a peer holds an expired certificate.
fn warn_if_expired(pem: &str, path: &std::path::Path) {
    let Ok(certs) = custos_tls::client_trust::parse_bundle(pem) else {
        return; // the registry says what is wrong with it
    };
    if let Some(days) = certs
        .iter()
        .filter_map(|c| custos_tls::cert_facts(c.as_ref()))
        .map(|(days, _)| days)
        .min()
        .filter(|d| *d < 0)
    {
        eprintln!(
            "warning: a certificate in {} expired {} days ago; certificates it issued will be refused",
            path.display(),
            -days
        );
    }
}

fn tls_note(p: &Peer) -> String {
    let mut pins = Vec::new();
    if !p.cert_sha256.is_empty() {
        pins.push(format!("certificate SHA256:{}", p.cert_sha256));
    }
    if !p.cert_subject.is_empty() {
        pins.push(format!("subject {}", p.cert_subject));
    }
    if !p.ca_pem.is_empty() {
        pins.push("own CA bundle".into());
    }
    match (p.tls_required, pins.is_empty()) {
        (_, false) => format!("  (TLS, {})", pins.join(", ")),
        (true, true) => "  (TLS required)".into(),
        (false, true) => String::new(),
    }
}

fn display_perms(p: Permissions) -> String {
    if p == Permissions::NONE {
        "(nothing)".into()
    } else {
        p.to_string()
    }
}
