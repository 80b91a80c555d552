//! Changing what is stored from the command line: `custos retention run
//! [--dry-run] [--now TIME]` (retention on demand, with a clock one can set
//! to plan and to test), `custos study protect|unprotect|correct UID` and
//! `custos patient merge`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::config::Config;
use crate::data::open_audited_archive;

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// One pass of the [[retention.policy]] rules: deletes (or lists) the
    /// studies they name: study UID, patient ID, study date, policy.
    Run {
        /// List only; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Decide as if it were this time (RFC 3339, e.g.
        /// 2030-01-01T00:00:00Z, or unix seconds) instead of now.
        #[arg(long)]
        now: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum StudyCommand {
    /// Keeps a study from retention (e.g. a legal hold).
    Protect {
        uid: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lets retention consider the study again.
    Unprotect { uid: String },
    /// Rewrites every instance of the study with corrected patient or study
    /// attributes (SOP Instance UIDs kept): --set PatientID=P-2 ...
    Correct {
        uid: String,
        /// KEYWORD=VALUE: PatientID, PatientName, PatientBirthDate,
        /// PatientSex, IssuerOfPatientID, AccessionNumber, StudyID,
        /// StudyDescription, StudyDate, StudyTime, ReferringPhysicianName.
        #[arg(long = "set", required = true)]
        set: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum PatientCommand {
    /// Moves every study of the patient --from to the patient the --set
    /// values name (PatientID required; PatientName, PatientBirthDate,
    /// PatientSex, IssuerOfPatientID optional).
    Merge {
        #[arg(long)]
        from: String,
        #[arg(long = "set", required = true)]
        set: Vec<String>,
    },
}

#[derive(clap::Args)]
pub struct DeidentifyArgs {
    /// The study to de-identify (its Study Instance UID).
    #[arg(long)]
    study: String,
    /// Options of PS3.15 E.3, comma-separated: retain-dates (shifted per
    /// patient), retain-patient-characteristics, clean-descriptors.
    #[arg(long, default_value = "")]
    options: String,
    /// UIDs and pseudonyms are consistent within a project, unrelated across.
    #[arg(long, default_value = "default")]
    project: String,
    /// The de-identified study's description.
    #[arg(long)]
    to_study_description: Option<String>,
    /// The de-identified patient's ID (default: a pseudonym).
    #[arg(long)]
    to_patient_id: Option<String>,
    /// The de-identified patient's name (default: ANONYMOUS^pseudonym).
    #[arg(long)]
    to_patient_name: Option<String>,
    /// Go on although instances have burned-in annotation.
    #[arg(long)]
    force: bool,
}

pub async fn deidentify(data: &Path, a: DeidentifyArgs) -> Result<()> {
    let config = Config::load(data)?;
    let archive = open_audited_archive(data, &config).await?;
    let request = custos_archive::deidentify::Request {
        options: custos_core::deid::Options::parse(&a.options).map_err(anyhow::Error::msg)?,
        project: a.project,
        study_description: a.to_study_description,
        patient_id: a.to_patient_id,
        patient_name: a.to_patient_name,
        force: a.force,
    };
    let done = archive.deidentify_study(&a.study, &request, &by()).await;
    archive.flush_audit().await;
    let done = done?;
    println!(
        "study {} de-identified as {} (patient {}): {} instances",
        a.study, done.study_uid, done.patient_id, done.instances
    );
    Ok(())
}

fn pairs(set: &[String]) -> Result<Vec<(String, String)>> {
    set.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("--set `{kv}`: KEYWORD=VALUE"))
        })
        .collect()
}

fn changes(set: &[String]) -> Result<Vec<custos_archive::corrections::AttributeChange>> {
    custos_archive::corrections::parse_changes(&pairs(set)?).map_err(anyhow::Error::msg)
}

/// The command line's user, for audit records.
fn by() -> String {
    crate::audit_cmd::cli_user()
}

pub async fn patient(data: &Path, command: PatientCommand) -> Result<()> {
    let config = Config::load(data)?;
    let archive = open_audited_archive(data, &config).await?;
    let PatientCommand::Merge { from, set } = command;
    let into = changes(&set)?;
    let done = archive.merge_patients(&from, &into, &by()).await;
    archive.flush_audit().await;
    let done = done?;
    println!(
        "patient {from} merged: {} studies, {} instances rewritten",
        done.studies, done.instances
    );
    Ok(())
}

pub async fn run(data: &Path, command: RetentionCommand) -> Result<()> {
    let config = Config::load(data)?;
    let archive = open_audited_archive(data, &config).await?;
    let RetentionCommand::Run { dry_run, now } = command;
    let now = match now {
        None => custos_archive::routing::now(),
        Some(t) => match t.parse::<i64>() {
            Ok(unix) => unix,
            Err(_) => {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                    .with_context(|| format!("--now `{t}` is not an RFC 3339 time"))?
                    .unix_timestamp()
            }
        },
    };
    if config.retention.policies.is_empty() {
        bail!("no [[retention.policy]] in custos.toml: nothing to do");
    }
    // The records of what was deleted are written even if a later
    // deletion failed.
    let report = archive
        .retention_pass(now, !dry_run, "custos retention")
        .await;
    if dry_run
        && let Ok(r) = &report
        && let Some(e) = custos_archive::Archive::retention_listing(r, "custos retention")
    {
        archive.audit(e).await;
    }
    archive.flush_audit().await;
    let report = report?;
    for (s, policy) in &report.deleted {
        println!(
            "{}\t{}\t{}\t{policy}",
            s.study_uid, s.patient_id, s.study_date
        );
    }
    eprintln!(
        "{} of {} studies {}; {} protected, {} still receiving",
        report.deleted_count,
        report.studies,
        if dry_run {
            "would be deleted"
        } else {
            "deleted"
        },
        report.protected,
        report.receiving
    );
    Ok(())
}

pub async fn study(data: &Path, command: StudyCommand) -> Result<()> {
    let config = Config::load(data)?;
    let archive = open_audited_archive(data, &config).await?;
    let (uid, on, reason) = match command {
        StudyCommand::Protect { uid, reason } => (uid, true, reason),
        StudyCommand::Unprotect { uid } => (uid, false, String::new()),
        StudyCommand::Correct { uid, set } => {
            let changes = changes(&set)?;
            let done = archive.correct_study(&uid, &changes, &by()).await;
            archive.flush_audit().await;
            println!(
                "study {uid} corrected: {} instances rewritten",
                done?.instances
            );
            return Ok(());
        }
    };
    let changed = archive
        .protect_study(&uid, on, &reason, "custos study")
        .await?;
    archive.flush_audit().await;
    println!(
        "study {uid} {}{}",
        if on { "protected" } else { "not protected" },
        if changed { "" } else { " (already)" }
    );
    Ok(())
}
