//! `custos jobs list|retry|cancel|send`: the forwarding queue (routing rules
//! and manual sends), worked by the running server(s).

use std::path::Path;

use anyhow::{Result, bail};
use clap::Subcommand;

use custos_core::routing::JobState;

use crate::config::Config;
use crate::data::open_audited_archive;

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Jobs, newest first: id, state, attempts, destination, UID (an
    /// instance's, or a study's for rules with stable_seconds), rule, last
    /// error.
    List {
        /// pending, done, failed or cancelled (default: all)
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Puts a failed or cancelled job back in the queue.
    Retry { id: i64 },
    /// Cancels a pending or failed job.
    Cancel { id: i64 },
    /// Queues every instance of a study for a registered peer or a DICOMweb destination.
    Send {
        #[arg(long)]
        study: String,
        /// AE title of a registered peer with an address and port, or a
        /// [[dicomweb_destination]]'s name.
        #[arg(long)]
        to: String,
    },
}

pub async fn run(data: &Path, command: JobsCommand) -> Result<()> {
    let config = Config::load(data)?;
    let archive = open_audited_archive(data, &config).await?;
    match command {
        JobsCommand::List { state, limit } => {
            let state = match state.as_deref() {
                None => None,
                Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                    anyhow::anyhow!("--state is pending, done, failed or cancelled, not `{s}`")
                })?),
            };
            for j in archive.jobs(state, limit, None).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    j.id,
                    j.state.name(),
                    j.attempts,
                    j.destination,
                    j.uid,
                    j.reason,
                    j.last_error
                );
            }
        }
        JobsCommand::Retry { id } => {
            if !archive.retry_job(id).await? {
                bail!("no failed or cancelled job {id}");
            }
            let mut e = custos_archive::routing::job_changed(id, true);
            e.user = crate::audit_cmd::cli_user();
            archive.audit(e).await;
            archive.flush_audit().await;
            println!("job {id} queued again");
        }
        JobsCommand::Cancel { id } => {
            if !archive.cancel_job(id).await? {
                bail!("no pending or failed job {id}");
            }
            let mut e = custos_archive::routing::job_changed(id, false);
            e.user = crate::audit_cmd::cli_user();
            archive.audit(e).await;
            archive.flush_audit().await;
            println!("job {id} cancelled");
        }
        JobsCommand::Send { study, to } => {
            archive.destination(&to).await?;
            let n = archive.send_study(&study, &to).await?;
            if n == 0 {
                bail!("no instances of study {study}");
            }
            let mut e = custos_archive::routing::sent_by_hand(&study, &to, n);
            e.user = crate::audit_cmd::cli_user();
            archive.name_patients(&mut e).await;
            archive.audit(e).await;
            archive.flush_audit().await;
            println!("{n} instances queued for {to}");
        }
    }
    Ok(())
}
