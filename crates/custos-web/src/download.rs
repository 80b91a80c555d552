//! A study as a ZIP of its DICOM files with a DICOMDIR (`GET
//! /api/studies/{study}/download.zip`), streamed as the store hands out the
//! bytes: entries are stored, not compressed (DICOM pixel data is mostly
//! compressed already, and the download should run at disk speed), sizes and
//! CRCs follow each entry (data descriptors), ZIP64 where a file needs it.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
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

pub async fn study_zip(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    require(&p, Action::Get)?;
    check_uid(&study)?;
    let export = s
        .archive
        .study_export(&study)
        .await
        .map_err(|e| match e {
            custos_archive::ExportError::Index(e) => e.into(),
            e @ custos_archive::ExportError::TooMany => {
                ApiError::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            e => ApiError::internal("exporting a study", e),
        })?
        .ok_or_else(ApiError::not_found)?;
    let mut e = crate::audit::event(EventId::InstancesTransferred, 'R', Outcome::Success);
    e.study_uids.push(study.clone());
    if !export.patient_id.is_empty() {
        e.patient_ids.push(export.patient_id.clone());
    }
    e.detail = format!("ZIP download of {study}: {} instances", export.files.len());
    s.archive.record_access(e).await?;

    let (tx, rx) = mpsc::channel(4);
    let archive = s.archive.clone();
    tokio::spawn(async move {
        if let Err(why) = write_zip(&archive, export, &tx).await {
            tracing::warn!(error = %why, "aborting a study download");
            let _ = tx.send(Err(std::io::Error::other(why))).await;
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"study-{study}.zip\""),
            ),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
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
