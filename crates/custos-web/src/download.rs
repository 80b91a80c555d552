//! Studies as a ZIP of their DICOM files with a DICOMDIR (`GET
//! /api/studies/{study}/download.zip`, one series:
//! `.../series/{series}/download.zip`, a selection of studies:
//! `/api/download.zip?studies=...`), streamed as the store hands out the
//! bytes: entries are stored, not compressed (DICOM pixel data is mostly
//! compressed already, and the download should run at disk speed), sizes and
//! CRCs follow each entry (data descriptors), ZIP64 where a file needs it.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use zip::write::SimpleFileOptions;

use custos_core::audit::{EventId, Outcome};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;
use crate::qido::check_uid;

const CHUNK: usize = 256 << 10;

/// What the ZIP writer has written and the response has not yet sent.
#[derive(Clone, Default)]
pub(crate) struct Pending(Arc<Mutex<Vec<u8>>>);

impl Write for Pending {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Pending {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

pub(crate) type Tx = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Sends what the writer produced; `false` when the client went away.
pub(crate) async fn send(pending: &Pending, tx: &Tx) -> bool {
    let bytes = pending.take();
    bytes.is_empty() || tx.send(Ok(Bytes::from(bytes))).await.is_ok()
}

/// Most studies one download takes (a selection in the study list).
pub const MOST_STUDIES: usize = 100;

pub async fn study_zip(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    require(&p, Action::Get)?;
    check_uid(&study)?;
    let name = format!("study-{study}.zip");
    zip_of(&s, vec![study], None, name).await
}

/// One series as a ZIP with its DICOMDIR.
pub async fn series_zip(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    require(&p, Action::Get)?;
    check_uid(&study)?;
    check_uid(&series)?;
    let name = format!("series-{series}.zip");
    zip_of(&s, vec![study], Some(series), name).await
}

#[derive(serde::Deserialize)]
pub struct Selection {
    /// Study Instance UIDs, comma-separated.
    studies: String,
}

/// Several studies (a selection in the study list) as one ZIP, one DICOMDIR
/// listing them by patient: `GET /api/download.zip?studies=UID,UID,...`.
pub async fn selection_zip(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    q: std::result::Result<Query<Selection>, QueryRejection>,
) -> Result<Response, ApiError> {
    require(&p, Action::Get)?;
    let Query(q) = q.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let mut studies: Vec<String> = Vec::new();
    for uid in q.studies.split(',') {
        check_uid(uid)?;
        if !studies.iter().any(|s| s == uid) {
            // Refused as soon as there are too many: the duplicate check
            // stays within MOST_STUDIES whatever the query's length.
            if studies.len() == MOST_STUDIES {
                return Err(ApiError::bad_request(format!(
                    "at most {MOST_STUDIES} studies per download"
                )));
            }
            studies.push(uid.to_string());
        }
    }
    let name = if studies.len() == 1 {
        format!("study-{}.zip", studies[0])
    } else {
        format!("{}-studies.zip", studies.len())
    };
    zip_of(&s, studies, None, name).await
}

/// The file-set of `studies` (or of `series` of the one study) as a ZIP
/// response named `name`, once the access is recorded.
async fn zip_of(
    s: &AppState,
    studies: Vec<String>,
    series: Option<String>,
    name: String,
) -> Result<Response, ApiError> {
    let export = s
        .archive
        .export(&studies, series.as_deref())
        .await
        .map_err(|e| match e {
            custos_archive::ExportError::Index(e) => e.into(),
            // Which one, for a selection: the user asked for it by its UID.
            e @ custos_archive::ExportError::NotFound(_) => {
                ApiError::new(axum::http::StatusCode::NOT_FOUND, e.to_string())
            }
            e @ custos_archive::ExportError::TooMany => {
                ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            e => ApiError::internal("exporting studies", e),
        })?;
    let mut e = crate::audit::event(EventId::InstancesTransferred, 'R', Outcome::Success);
    let count = export.files.len();
    e.detail = match (&series, studies.as_slice()) {
        (Some(series), [study]) => {
            format!("ZIP download of series {series} of {study}: {count} instances")
        }
        (_, [study]) => format!("ZIP download of {study}: {count} instances"),
        (_, all) => format!("ZIP download of {} studies: {count} instances", all.len()),
    };
    e.study_uids = studies;
    e.patient_ids = export.patient_ids.clone();
    s.archive.record_access(e).await?;

    let archive = s.archive.clone();
    let body = zip_body("a download", move |tx| async move {
        write_zip(&archive, export, &tx).await
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The body a ZIP's writer feeds from a task of its own (`produce`, given
/// the sender). The body ends well only if the writer did: its error, or its
/// panic (which would otherwise just close the channel, a clean end), cuts
/// the body off, so a client never takes a truncated archive for a whole one.
pub(crate) fn zip_body<F, Fut>(what: &'static str, produce: F) -> Body
where
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let failed = tx.clone();
    let writing = tokio::spawn(produce(tx));
    tokio::spawn(async move {
        let why = match writing.await {
            Ok(Ok(())) => return,
            Ok(Err(why)) => why,
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %why, "aborting {what}");
        let _ = failed.send(Err(std::io::Error::other(why))).await;
    });
    Body::from_stream(ReceiverStream::new(rx))
}

/// Writes the ZIP into `tx`; an error aborts the response so a client never
/// takes a truncated archive for a whole one.
async fn write_zip(
    archive: &custos_archive::Archive,
    export: custos_archive::StudyExport,
    tx: &Tx,
) -> Result<(), String> {
    let pending = Pending::default();
    let mut zip = zip::ZipWriter::new_stream(pending.clone());
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let e = |e: zip::result::ZipError| e.to_string();
    zip.start_file("DICOMDIR", stored).map_err(e)?;
    zip.write_all(&export.dicomdir).map_err(|e| e.to_string())?;
    for (path, inst) in &export.files {
        let options = stored.large_file(inst.size >= u64::from(u32::MAX));
        zip.start_file(path.as_str(), options).map_err(e)?;
        let mut reader = archive.open_file(inst).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            zip.write_all(&buf[..n]).map_err(|e| e.to_string())?;
            if !send(&pending, tx).await {
                return Ok(());
            }
        }
    }
    zip.finish().map_err(e)?;
    send(&pending, tx).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// What the body gives until it ends: its bytes, and whether it ended
    /// with an error.
    async fn drain(body: Body) -> (Vec<u8>, bool) {
        let mut data = body.into_data_stream();
        let mut got = Vec::new();
        while let Some(piece) = data.next().await {
            match piece {
                Ok(b) => got.extend_from_slice(&b),
                Err(_) => return (got, true),
            }
        }
        (got, false)
    }

    #[tokio::test]
    async fn a_zip_whose_writer_fails_or_panics_never_ends_cleanly() {
        let whole = zip_body("a test", |tx| async move {
            let _ = tx.send(Ok(Bytes::from_static(b"all"))).await;
            Ok(())
        });
        assert_eq!(drain(whole).await, (b"all".to_vec(), false));
        let failing = zip_body("a test", |tx| async move {
            let _ = tx.send(Ok(Bytes::from_static(b"part"))).await;
            Err("a file went missing".to_string())
        });
        assert_eq!(drain(failing).await, (b"part".to_vec(), true));
        // A panic once closed the channel: a clean end after "part".
        let panicking = zip_body("a test", |tx| async move {
            let _ = tx.send(Ok(Bytes::from_static(b"part"))).await;
            if !tx.is_closed() {
                panic!("a writer's bug");
            }
            Ok(())
        });
        assert_eq!(drain(panicking).await, (b"part".to_vec(), true));
    }
}
