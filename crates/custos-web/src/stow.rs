//! STOW-RS (PS3.18 10.5): multipart/related application/dicom uploads, each
//! part streamed into the same ingest path as C-STORE (same durability, same
//! duplicate policy), answered with Referenced/Failed SOP sequences.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use custos_archive::part10::{self, BareMeta};
use custos_archive::status::{self, of_store};
use custos_archive::{IngestError, Received, StoreOutcome};
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;
use crate::multipart::media_ranges;
use crate::qido::{base_url, check_uid};

pub async fn store(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    receive(state, p, None, headers, body).await
}

pub async fn store_in_study(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_uid(&study)?;
    receive(state, p, Some(study), headers, body).await
}

fn unsupported(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg)
}

fn ui(v: &str) -> Value {
    json!({ "vr": "UI", "Value": [v] })
}

fn us(v: u16) -> Value {
    json!({ "vr": "US", "Value": [v] })
}

async fn receive(
    state: Arc<AppState>,
    principal: Principal,
    study: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // `store-derived` (a radiologist saving a viewer's SR or SEG) stores
    // derived objects only; `store` anything.
    require(&principal, Action::StoreDerived)?;
    let derived_only = !principal.may(Action::Store);
    let mut multipart = open_multipart(&state, &headers, body)?;
    let base = base_url(&state, &headers);
    let mut answer = Answer::default();
    let mut parts = 0usize;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        // Each part costs a staged file and an answer item: bounded per request.
        parts += 1;
        if parts > state.config.max_stow_parts {
            tracing::info!(
                user = principal.name(),
                stored = answer.referenced.len(),
                limit = state.config.max_stow_parts,
                "STOW-RS request refused: too many parts"
            );
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a request holds at most {} parts; the first {} were processed ({} stored)",
                    state.config.max_stow_parts,
                    parts - 1,
                    answer.referenced.len()
                ),
            ));
        }
        if let Some(ct) = field.content_type()
            && ct.essence_str() != "application/dicom"
        {
            answer
                .failed
                .push(json!({ "00081197": us(status::CANNOT_UNDERSTAND) }));
            continue;
        }
        let result = store_part(&state, study.as_deref(), derived_only, field).await?;
        answer.add(result, &base);
    }
    tracing::info!(
        user = principal.name(),
        stored = answer.referenced.len(),
        failed = answer.failed.len(),
        "STOW-RS"
    );
    answer.into_response(&base, study.as_deref())
}

/// Checks the request's framing (no compression, multipart/related of
/// application/dicom with a boundary) and opens it with the body size limits.
fn open_multipart(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<multer::Multipart<'static>, ApiError> {
    let boundary = boundary_of(headers)?;
    Ok(parts(
        body.into_data_stream(),
        boundary,
        state.config.max_body_bytes,
    ))
}

/// The multipart boundary of a STOW-RS request, or why it is refused.
pub(crate) fn boundary_of(headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        // Nothing is decompressed on the way in: no compression bombs.
        return Err(unsupported("compressed request bodies are not accepted"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let range = media_ranges(ct)
        .into_iter()
        .next()
        .filter(|r| r.media == "multipart/related")
        .ok_or_else(|| {
            unsupported("STOW-RS takes multipart/related; type=\"application/dicom\"")
        })?;
    if range
        .param("type")
        .is_some_and(|t| !t.eq_ignore_ascii_case("application/dicom"))
    {
        return Err(unsupported(
            "only application/dicom parts are accepted (not the JSON/bulk data form)",
        ));
    }
    Ok(range
        .param("boundary")
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or_else(|| ApiError::bad_request("the multipart boundary is missing"))?
        .to_string())
}

/// The parts of a body, each and all of them at most `limit` bytes.
pub(crate) fn parts<S>(stream: S, boundary: String, limit: u64) -> multer::Multipart<'static>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + 'static,
{
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit)
            .per_field(limit),
    );
    multer::Multipart::with_constraints(stream, boundary, constraints)
}

/// What became of a part: the SOP Class and Instance UIDs when it was read
/// that far, and the ingest's outcome.
type Stored = (
    Option<(String, String)>,
    Result<(Received, StoreOutcome), IngestError>,
);

/// Streams one part into the ingest path (the C-STORE one) and records it in
/// the audit trail.
async fn store_part(
    state: &AppState,
    study: Option<&str>,
    derived_only: bool,
    mut field: multer::Field<'static>,
) -> Result<Stored, ApiError> {
    let mut ingest = state
        .archive
        .begin_file_ingest()
        .await
        .map_err(|e| ApiError::internal("staging an upload", e))?;
    if let Some(s) = study {
        ingest.expect_study(s);
    }
    if derived_only {
        ingest.derived_only();
    }
    // The first bytes tell whether the part is a Part 10 file or starts with
    // its file meta group (what dicomweb-client sends for a data set).
    let mut head: Vec<u8> = Vec::with_capacity(PART10_HEAD);
    let mut started = false;
    // Each look walks the meta group from its start: look again only when
    // the head has doubled (or reached the bare meta group's limit), so a
    // client sending the head a byte at a time costs linear work, not
    // quadratic.
    let mut next_look = 0;
    while let Some(bytes) = field.chunk().await.map_err(multipart_error)? {
        // A Part 10 file whose first chunk shows its preamble and DICM (the
        // usual case) is taken over chunk by chunk, never copied here.
        if started || (head.is_empty() && bytes.get(128..132) == Some(b"DICM".as_slice())) {
            started = true;
            ingest
                .write_owned(bytes)
                .await
                .map_err(|e| ApiError::internal("writing an upload", e))?;
            continue;
        }
        head.extend_from_slice(&bytes);
        if head.len() >= next_look || head.len() >= part10::MAX_BARE_META {
            started = write_head(&mut ingest, &head, false).await?;
            next_look = head.len().saturating_mul(2);
        }
    }
    if !started {
        write_head(&mut ingest, &head, true).await?;
    }
    let (named, result) = ingest.finish_naming().await;
    let (code, _) = of_store(&result);
    if let Err(e) = &result {
        state.archive.count_ingest_error(e);
    }
    state.archive.metrics().inc(
        "custos_instances_total",
        &[("protocol", "stow"), ("status", &format!("{code:04X}"))],
    );
    let mut e = crate::audit::event(
        custos_core::audit::EventId::InstancesTransferred,
        'C',
        if code == status::SUCCESS {
            custos_core::audit::Outcome::Success
        } else {
            custos_core::audit::Outcome::MinorFailure
        },
    );
    e.detail = format!("STOW-RS status {code:04X}");
    if let Ok((r, _)) = &result {
        e.patient_ids.push(r.patient_id.clone());
        e.study_uids.push(r.study_uid.clone());
        e.detail.push_str(&format!(" {}", r.sop_instance_uid));
    }
    state.archive.audit(e).await;
    Ok((named, result))
}

/// A Part 10 file's preamble and `DICM` prefix.
const PART10_HEAD: usize = 132;

async fn write(ingest: &mut custos_archive::Ingest<'_>, bytes: &[u8]) -> Result<(), ApiError> {
    ingest
        .write(bytes)
        .await
        .map_err(|e| ApiError::internal("writing an upload", e))
}

/// Writes the start of a part once it can be told what it is (or at its
/// `end`): a Part 10 file as it is; a file meta group without preamble as a
/// complete Part 10 header and the data set after it. Returns whether it
/// wrote (false: more bytes are needed).
async fn write_head(
    ingest: &mut custos_archive::Ingest<'_>,
    head: &[u8],
    end: bool,
) -> Result<bool, ApiError> {
    if head.get(128..132) == Some(b"DICM".as_slice()) {
        write(ingest, head).await?;
        return Ok(true);
    }
    match part10::bare_meta(head) {
        BareMeta::Header { header, consumed } => {
            write(ingest, &header).await?;
            write(ingest, &head[consumed..]).await?;
            Ok(true)
        }
        // Wait for the whole meta group, or for the 132 bytes that show a
        // preamble and DICM.
        BareMeta::NeedMore if !end => Ok(false),
        BareMeta::NotMeta if !end && head.len() < PART10_HEAD => Ok(false),
        // Anything else goes to the ingest as it is, which refuses it if it
        // is not DICOM.
        BareMeta::NeedMore | BareMeta::NotMeta => {
            write(ingest, head).await?;
            Ok(true)
        }
    }
}

/// The STOW-RS response being built: Referenced and Failed SOP sequences.
#[derive(Default)]
struct Answer {
    referenced: Vec<Value>,
    failed: Vec<Value>,
    warned: bool,
}

impl Answer {
    fn add(&mut self, (named, result): Stored, base: &str) {
        let (code, _) = of_store(&result);
        match result {
            Ok((r, _)) if code == status::SUCCESS || code == status::ELEMENTS_DISCARDED => {
                let mut item = json!({
                    "00081150": ui(&r.sop_class_uid),
                    "00081155": ui(&r.sop_instance_uid),
                    "00081190": { "vr": "UR", "Value": [format!(
                        "{base}/studies/{}/series/{}/instances/{}",
                        r.study_uid, r.series_uid, r.sop_instance_uid
                    )] },
                });
                if code != status::SUCCESS {
                    self.warned = true;
                    item["00081196"] = us(code);
                }
                self.referenced.push(item);
            }
            Ok((r, _)) => self.failed.push(json!({
                "00081150": ui(&r.sop_class_uid),
                "00081155": ui(&r.sop_instance_uid),
                "00081197": us(code),
            })),
            // Refused after it was read (another study than the request's,
            // a role that stores derived objects only, a failed write):
            // named, so the client knows which.
            Err(_) => self.failed.push(match named {
                Some((class, instance)) => json!({
                    "00081150": ui(&class),
                    "00081155": ui(&instance),
                    "00081197": us(code),
                }),
                None => json!({ "00081197": us(code) }),
            }),
        }
    }

    /// 200 when all were stored, 202 when some, 409 when none, 503 when none
    /// because the archive could not store them (a full disk, an index
    /// down): the client may send them again later (PS3.18 10.5.3).
    fn into_response(self, base: &str, study: Option<&str>) -> Result<Response, ApiError> {
        if self.referenced.is_empty() && self.failed.is_empty() {
            return Err(ApiError::bad_request("the request holds no parts"));
        }
        let mut out = serde_json::Map::new();
        // Type 2 (PS3.18 Table I.1-1): present, empty when the request
        // named no study.
        out.insert(
            "00081190".into(),
            match study {
                Some(s) => json!({ "vr": "UR", "Value": [format!("{base}/studies/{s}")] }),
                None => json!({ "vr": "UR" }),
            },
        );
        let code = if self.failed.is_empty() && !self.warned {
            StatusCode::OK
        } else if self.referenced.is_empty() {
            let out_of_resources = us(status::OUT_OF_RESOURCES);
            if self
                .failed
                .iter()
                .all(|f| f["00081197"] == out_of_resources)
            {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::CONFLICT
            }
        } else {
            StatusCode::ACCEPTED
        };
        if !self.referenced.is_empty() {
            out.insert(
                "00081199".into(),
                json!({ "vr": "SQ", "Value": self.referenced }),
            );
        }
        if !self.failed.is_empty() {
            out.insert(
                "00081198".into(),
                json!({ "vr": "SQ", "Value": self.failed }),
            );
        }
        Ok((
            code,
            [(header::CONTENT_TYPE, "application/dicom+json")],
            serde_json::to_vec(&Value::Object(out))
                .map_err(|e| ApiError::internal("encoding the response", e))?,
        )
            .into_response())
    }
}

fn multipart_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
        }
        e => ApiError::bad_request(format!("malformed multipart body: {e}")),
    }
}
