//! What the web shows of a stored instance besides its stored bytes: frames
//! (as stored, or decoded to native), rendered JPEG/PNG images, DICOM JSON
//! metadata and bulk data values, and index rows as DICOM JSON (QIDO-RS). Decoding DICOM (dicom-pixeldata,
//! dicom-json) happens here, so the HTTP layer only negotiates media types and
//! maps a [`ViewError`] to a status.

mod frames;
mod metadata;
mod ranges;
mod render;
mod rows;

pub use frames::{Accepted, FrameSelection, Frames, frame_media_type};
pub use render::RenderOptions;
pub use rows::row_object;

/// A parsed instance (read up to Pixel Data) as WADO-RS metadata.
pub(crate) fn metadata_json(
    obj: dicom_object::DefaultDicomObject,
    bulk_base: &(dyn Fn(&str, &str) -> String + Sync),
) -> Result<serde_json::Value, ViewError> {
    metadata::to_json(obj, bulk_base)
}

use custos_core::record::StoredInstance;

/// The `/bulkdata` URL of an instance, given its study and series UIDs.
pub type BulkBase = std::sync::Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

use crate::{Archive, RetrieveError};

/// Most bytes one request may decode (frames to native, a rendered frame):
/// the header's Rows x Columns x Samples x Bits is checked against it before
/// anything is decoded.
pub const PIXEL_BUDGET: u64 = 512 << 20;

/// Why a view of an instance cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Read(#[from] RetrieveError),
    #[error("the instance has no pixel data")]
    NoPixelData,
    #[error("a requested frame does not exist")]
    NoSuchFrame,
    #[error("the instance has no such attribute")]
    NoSuchAttribute,
    #[error("that attribute holds no bulk data")]
    NotBulk,
    #[error(
        "decoding this would take {needed} bytes, more than the {PIXEL_BUDGET} allowed; ask for the frames as stored (transfer-syntax=*)"
    )]
    OverBudget { needed: u64 },
    /// None of the media types the client accepts can be produced.
    #[error("{0}")]
    NotAcceptable(&'static str),
    /// The instance is valid but this view of it is not implemented.
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("{context}: {why}")]
    Internal { context: &'static str, why: String },
}

fn internal(context: &'static str) -> impl Fn(String) -> ViewError {
    move |why| ViewError::Internal { context, why }
}

/// Runs CPU-bound decoding off the async workers.
async fn blocking<T: Send + 'static>(
    context: &'static str,
    work: impl FnOnce() -> Result<T, ViewError> + Send + 'static,
) -> Result<T, ViewError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| internal(context)(e.to_string()))?
}

impl Archive {
    /// Frames of `instance` in a media type the client accepts.
    pub async fn frames(
        &self,
        instance: &StoredInstance,
        which: FrameSelection,
        accepted: Vec<Accepted>,
    ) -> Result<Frames, ViewError> {
        // Frames asked for by number, from a stored file: read by their
        // ranges (see `ranges`), not with the whole object.
        if let FrameSelection::Numbers(numbers) = &which
            && let Some(path) = self.store.local_path(&instance.blob_key)
        {
            let (numbers, wanted) = (numbers.clone(), accepted.clone());
            let found = blocking("frame extraction", move || {
                ranges::read(&path, &numbers, &wanted)
            })
            .await?;
            if let Some(frames) = found {
                return Ok(frames);
            }
        }
        let obj = self.read_object(instance, false).await?;
        blocking("frame extraction", move || {
            frames::frames(&obj, which, &accepted)
        })
        .await
    }

    /// One frame of `instance` rendered to JPEG or PNG.
    pub async fn rendered(
        &self,
        instance: &StoredInstance,
        options: RenderOptions,
    ) -> Result<Vec<u8>, ViewError> {
        // From a stored file: the frame alone, as an instance of one frame
        // (see `ranges`), not the whole object. Whatever fails that way but a
        // frame that is not there is tried the whole object's way, which
        // makes what it can of odd files (or says why it cannot).
        if let Some(path) = self.store.local_path(&instance.blob_key) {
            let one = options.clone();
            let rendered = blocking("rendering", move || {
                match ranges::single_frame(&path, one.frame)? {
                    Some(obj) => render::render(&obj, &RenderOptions { frame: 1, ..one }).map(Some),
                    None => Ok(None),
                }
            })
            .await;
            match rendered {
                Ok(Some(bytes)) => return Ok(bytes),
                Err(ViewError::NoSuchFrame) => return Err(ViewError::NoSuchFrame),
                Ok(None) | Err(_) => {}
            }
        }
        let obj = self.read_object(instance, false).await?;
        blocking("rendering", move || render::render(&obj, &options)).await
    }

    /// The instance's attributes as DICOM JSON (PS3.18 F.2) without its pixel
    /// data, encoded; large binary values and Pixel Data become a BulkDataURI
    /// under `bulk_base(study, series)`, the instance's `/bulkdata` URL. The
    /// conversion runs on the blocking pool: over HTTP/2, the connection's
    /// task (which polls every stream of the connection) is not held by it.
    pub async fn metadata(
        &self,
        instance: &StoredInstance,
        bulk_base: BulkBase,
    ) -> Result<Vec<u8>, ViewError> {
        let obj = self.read_object(instance, true).await?;
        blocking("encoding metadata", move || {
            let value = metadata::to_json(obj, &*bulk_base)?;
            serde_json::to_vec(&value).map_err(|e| internal("encoding metadata")(e.to_string()))
        })
        .await
    }

    /// The value bytes of the top-level attribute (group, element) other
    /// than Pixel Data (which is read through [`Archive::frames`]).
    pub async fn bulk_value(
        &self,
        instance: &StoredInstance,
        tag: (u16, u16),
    ) -> Result<Vec<u8>, ViewError> {
        let obj = self.read_object(instance, true).await?;
        metadata::value_bytes(&obj, tag)
    }
}
