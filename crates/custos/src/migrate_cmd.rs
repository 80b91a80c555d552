//! `custos migrate`: the embedded archive copied to the scale-out backends.

use std::path::Path;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, redact_url};
use crate::data::{open_archive, open_audited_archive};

pub async fn run(data: &Path, to_index: &str, to_store: &str) -> Result<bool> {
    let config = Config::load(data)?;
    if !to_index.starts_with("postgres://") && !to_index.starts_with("postgresql://") {
        bail!("--to-index must be a postgres:// URL");
    }
    if !to_store.starts_with("s3://") {
        bail!("--to-store must be an s3:// URL");
    }
    // The source records the migration in its trail, which is then copied.
    let source = open_audited_archive(data, &config).await?;
    let mut target_config = config.clone();
    target_config.index.url = to_index.to_string();
    target_config.store.url = to_store.to_string();
    let target = open_archive(data, &target_config).await?;
    println!(
        "copying to index {} and store {}",
        redact_url(to_index),
        to_store.split('?').next().unwrap_or(to_store)
    );
    // Protections before the instances they protect: a node already
    // pointed at the target never sees a study there without its hold.
    let settings = source
        .copy_settings_to(&target)
        .await
        .map_err(|e| anyhow::anyhow!("copying peers, users and protections: {e}"))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} instances  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = source
        .migrate_to(&target, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await?;
    bar.finish_and_clear();
    let mut e = custos_core::audit::AuditEvent::new(
        custos_core::audit::EventId::Export,
        'R',
        if report.failed.is_empty() {
            custos_core::audit::Outcome::Success
        } else {
            custos_core::audit::Outcome::SeriousFailure
        },
    );
    e.user = crate::audit_cmd::cli_user();
    e.detail = format!(
        "migrated to index {} and store {}: {} instances copied, {} already there, {} failed; {}",
        redact_url(to_index),
        to_store.split('?').next().unwrap_or(to_store),
        report.copied,
        report.already_there,
        report.failed.len(),
        settings_line(&settings)
    );
    source.audit(e).await;
    source.flush_audit().await;
    let records = source
        .copy_audit_to(&target)
        .await
        .map_err(|e| anyhow::anyhow!("copying the audit trail: {e}"))?;
    println!(
        "{} copied and verified, {} already in the target, {} failed",
        report.copied,
        report.already_there,
        report.failed.len()
    );
    println!("{}", settings_line(&settings));
    println!(
        "not copied: the worklist, performed procedure steps and forwarding jobs (let pending forwards finish first)"
    );
    println!("{records} audit records copied (the trail goes on in the new index)");
    for (uid, why) in &report.failed {
        println!("failed: SOP Instance UID {uid}: {why}");
    }
    if report.failed.is_empty() {
        println!(
            "point [index] url and [store] url at the new backends when every node is ready (stop the nodes and run this once more first: it copies what arrived meanwhile, audit records included)"
        );
    }
    Ok(report.failed.is_empty())
}

fn settings_line(s: &custos_archive::SettingsCopied) -> String {
    format!(
        "{} peers, {} users, {} tokens, {} webhooks and {} study protections copied",
        s.peers, s.users, s.tokens, s.webhooks, s.protected
    )
}
