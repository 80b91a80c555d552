//! `custos webhook add|list|remove`: receivers of change events, delivered
//! by the running server(s) from the durable queue.

use std::io::Read;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::config::Config;
use crate::data::open_archive;

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Registers a receiver; the signing secret is read from stdin.
    Add {
        /// https URL (http only to a loopback address).
        url: String,
        /// Comma-separated: instance.stored, instance.updated,
        /// instance.deleted, series.stored, series.deleted, study.stored,
        /// study.deleted, study.stable.
        #[arg(long)]
        events: String,
        /// Read the secret (16 characters or more) from stdin.
        #[arg(long, required = true)]
        secret_stdin: bool,
    },
    /// Receivers: id, URL, events (never the secret).
    List,
    /// Removes a receiver and cancels its waiting deliveries.
    Remove { id: i64 },
}

pub async fn run(data: &Path, command: WebhookCommand) -> Result<()> {
    let config = Config::load(data)?;
    let archive = open_archive(data, &config).await?;
    match command {
        WebhookCommand::Add { url, events, .. } => {
            let mut secret = String::new();
            std::io::stdin().read_to_string(&mut secret)?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            let id = archive.add_webhook(&url, &events, secret).await?;
            crate::audit_cmd::record_change(
                data,
                archive.audit_log().as_ref(),
                format!("webhook {id} added: {url} for {events}"),
            )
            .await;
            println!("webhook {id} added");
        }
        WebhookCommand::List => {
            for w in archive.webhooks().await? {
                println!("{}\t{}\t{}", w.id, w.url, w.events.join(","));
            }
        }
        WebhookCommand::Remove { id } => {
            if !archive.remove_webhook(id).await? {
                bail!("no webhook {id}");
            }
            crate::audit_cmd::record_change(
                data,
                archive.audit_log().as_ref(),
                format!("webhook {id} removed"),
            )
            .await;
            println!("webhook {id} removed");
        }
    }
    Ok(())
}
