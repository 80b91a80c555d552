//! `custos import`: files, folders and DICOMDIRs into the archive, with the
//! same durability and duplicate rules as C-STORE. Non-DICOM files are skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;

use custos_archive::{Archive, IngestError, StoreOutcome};

use crate::config::Config;
use crate::data::open_audited_archive;

#[derive(Default)]
struct Summary {
    stored: u64,
    duplicates: u64,
    conflicts: u64,
    skipped: u64,
    rejected: BTreeMap<String, Vec<PathBuf>>,
}

/// Every file under `paths`; a DICOMDIR stands for the folder it indexes. A
/// path that cannot be read (mistyped, no permission) is an error, not an
/// import of nothing.
fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let root = if p
            .file_name()
            .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
        {
            p.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        } else {
            p.clone()
        };
        for entry in walkdir::WalkDir::new(&root).follow_links(false) {
            let entry = entry.with_context(|| format!("reading {}", root.display()))?;
            if entry.file_type().is_file() {
                files.push(entry.into_path());
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Whether the file starts as a Part 10 file does; an error when it cannot
/// be read (a failing disc is not "not DICOM"). Shorter than the preamble:
/// not DICOM.
async fn is_part10(path: &Path) -> std::io::Result<bool> {
    let mut head = [0u8; 132];
    let mut f = tokio::fs::File::open(path).await?;
    match f.read_exact(&mut head).await {
        Ok(_) => Ok(&head[128..132] == b"DICM"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why a file was not imported: it could not be read, or the archive
/// refused or failed it.
enum Failed {
    Read(std::io::Error),
    Ingest(IngestError),
}

async fn import_one(archive: &Archive, path: &Path) -> Result<StoreOutcome, Failed> {
    let mut file = tokio::fs::File::open(path).await.map_err(Failed::Read)?;
    let mut ingest = archive.begin_file_ingest().await.map_err(Failed::Ingest)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await.map_err(Failed::Read)?;
        if n == 0 {
            break;
        }
        ingest.write(&buf[..n]).await.map_err(Failed::Ingest)?;
    }
    Ok(ingest.finish().await.map_err(Failed::Ingest)?.1)
}

pub async fn run(data: &Path, paths: &[PathBuf]) -> Result<()> {
    let config = Config::load(data)?;
    let files = collect(paths)?;
    let archive = open_audited_archive(data, &config).await?;
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut sum = Summary::default();
    let (mut archive_failed, mut unread) = (0, 0);
    let read_failed = |sum: &mut Summary, path: &Path, e: std::io::Error| {
        sum.rejected
            .entry(format!("could not be read: {}", e.kind()))
            .or_default()
            .push(path.to_path_buf());
    };
    for path in &files {
        bar.inc(1);
        if path
            .file_name()
            .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
        {
            sum.skipped += 1;
            continue;
        }
        match is_part10(path).await {
            Ok(true) => {}
            Ok(false) => {
                sum.skipped += 1;
                continue;
            }
            Err(e) => {
                unread += 1;
                read_failed(&mut sum, path, e);
                continue;
            }
        }
        match import_one(&archive, path).await {
            Ok(StoreOutcome::Stored | StoreOutcome::Replaced) => sum.stored += 1,
            Ok(StoreOutcome::AlreadyStored) => sum.duplicates += 1,
            Ok(StoreOutcome::ConflictKept | StoreOutcome::ConflictRejected) => sum.conflicts += 1,
            Err(Failed::Read(e)) => {
                unread += 1;
                read_failed(&mut sum, path, e);
            }
            Err(Failed::Ingest(e)) => {
                if matches!(e, IngestError::Store(_) | IngestError::Index(_)) {
                    archive_failed += 1;
                }
                let reason = match &e {
                    IngestError::Unreadable(_) => "not readable as DICOM".to_string(),
                    other => other.to_string(),
                };
                sum.rejected.entry(reason).or_default().push(path.clone());
            }
        }
    }
    bar.finish_and_clear();
    let rejected: usize = sum.rejected.values().map(Vec::len).sum();
    println!(
        "{} stored, {} already stored, {} conflicting duplicates (kept per policy `{}`), {} rejected, {} skipped (not DICOM)",
        sum.stored, sum.duplicates, sum.conflicts, config.dicom.duplicates, rejected, sum.skipped
    );
    for (reason, files) in &sum.rejected {
        println!("rejected ({reason}):");
        for f in files {
            println!("  {}", f.display());
        }
    }
    let mut e = custos_core::audit::AuditEvent::new(
        custos_core::audit::EventId::Import,
        'C',
        if archive_failed == 0 {
            custos_core::audit::Outcome::Success
        } else {
            custos_core::audit::Outcome::SeriousFailure
        },
    );
    e.user = crate::audit_cmd::cli_user();
    e.detail = format!(
        "imported {} instances from {} files ({} already stored, {rejected} rejected)",
        sum.stored,
        files.len(),
        sum.duplicates
    );
    archive.audit(e).await;
    archive.flush_audit().await;
    if archive_failed > 0 {
        bail!("{archive_failed} files could not be stored: the archive failed (reasons above)");
    }
    // A damaged disc or an unreadable file is not an import done: its
    // instances are not here (reported, and the exit status says so).
    if unread > 0 {
        bail!("{unread} files could not be read (listed above)");
    }
    Ok(())
}
