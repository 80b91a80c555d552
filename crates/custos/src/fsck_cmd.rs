//! `custos fsck`: index against store, with a progress bar; exit status 1
//! when something needs attention.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use custos_archive::FsckOptions;

use crate::config::Config;
use crate::data::open_archive;

pub async fn run(data: &Path, repair: bool, grace_hours: u64) -> Result<bool> {
    let config = Config::load(data)?;
    let archive = open_archive(data, &config).await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} instances checked  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let options = FsckOptions {
        repair,
        grace: Duration::from_secs(grace_hours * 3600),
    };
    let report = archive
        .fsck(&options, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await?;
    bar.finish_and_clear();
    println!(
        "{} instances checked: {} missing, {} altered, {} orphan blobs{}, {} recent unindexed blobs (younger than {grace_hours} h, left alone)",
        report.checked,
        report.missing.len(),
        report.altered.len(),
        report.orphans.len(),
        if repair {
            format!(" ({} removed)", report.orphans_removed)
        } else {
            String::new()
        },
        report.recent_unindexed,
    );
    for uid in &report.missing {
        println!("missing blob: SOP Instance UID {uid}");
    }
    for uid in &report.altered {
        println!("altered blob (size or SHA-256 differs from the index): SOP Instance UID {uid}");
    }
    for key in &report.orphans {
        println!("orphan blob{}: {key}", if repair { " removed" } else { "" });
    }
    // In the trail: blobs removed, and instances found missing or altered
    // (an altered blob is what tampering with the store looks like).
    let index = archive.audit_log();
    if repair && report.orphans_removed > 0 {
        crate::audit_cmd::record_outcome(
            data,
            index.as_ref(),
            custos_core::audit::EventId::StudyDeleted,
            'D',
            custos_core::audit::Outcome::Success,
            format!(
                "fsck --repair removed {} orphan blobs (files no index row names)",
                report.orphans_removed
            ),
        )
        .await;
    }
    if !report.missing.is_empty() || !report.altered.is_empty() {
        crate::audit_cmd::record_outcome(
            data,
            index.as_ref(),
            custos_core::audit::EventId::SecurityAlert,
            'E',
            custos_core::audit::Outcome::SeriousFailure,
            format!(
                "fsck found {} instances missing and {} altered in the store",
                report.missing.len(),
                report.altered.len()
            ),
        )
        .await;
    }
    if !report.is_clean() && !repair && !report.orphans.is_empty() {
        println!(
            "run with --repair to remove orphan blobs; missing and altered instances need a re-send from the modality or a backup"
        );
    }
    Ok(report.is_clean())
}
