//! WADO-RS (PS3.18 10.4) and WADO-URI: instances as stored (or decompressed
//! on request), metadata as DICOM JSON, frames, and rendered images.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use custos_archive::StoredFile;
use custos_archive::view::{FrameSelection, RenderOptions, ViewError};
use custos_core::query::{Key, Level, Matcher, Query};
use custos_core::record::StoredInstance;
use custos_core::{Action, Principal};

use crate::AppState;
use crate::auth::require;
use crate::error::ApiError;
use crate::multipart::{self, Part, PartSource, Planned, media_ranges};
use crate::pixels;
use crate::qido::{base_url, check_uid};

pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// The study / series / instance a path names.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub study: String,
    pub series: Option<String>,
    pub instance: Option<String>,
}

impl Target {
    pub fn study(study: String) -> Target {
        Target {
            study,
            series: None,
            instance: None,
        }
    }

    pub fn series(study: String, series: String) -> Target {
        Target {
            study,
            series: Some(series),
            instance: None,
        }
    }

    pub fn instance(study: String, series: String, instance: String) -> Target {
        Target {
            study,
            series: Some(series),
            instance: Some(instance),
        }
    }

    fn check(&self) -> Result<(), ApiError> {
        check_uid(&self.study)?;
        if let Some(s) = &self.series {
            check_uid(s)?;
        }
        if let Some(i) = &self.instance {
            check_uid(i)?;
        }
        Ok(())
    }

    pub(crate) fn query(&self) -> Query {
        let mut conditions = vec![(Key::StudyInstanceUID, Matcher::Single(self.study.clone()))];
        let mut level = Level::Study;
        if let Some(s) = &self.series {
            conditions.push((Key::SeriesInstanceUID, Matcher::Single(s.clone())));
            level = Level::Series;
        }
        if let Some(i) = &self.instance {
            conditions.push((Key::SOPInstanceUID, Matcher::Single(i.clone())));
            level = Level::Image;
        }
        Query {
            level,
            conditions,
            limit: usize::MAX,
            offset: 0,
            order: Vec::new(),
        }
    }
}

/// The stored instances a path names, after the permission check; 404 if none.
pub async fn resolve(
    state: &AppState,
    principal: &Principal,
    target: &Target,
) -> Result<Vec<StoredInstance>, ApiError> {
    require(principal, Action::Get)?;
    target.check()?;
    // One study at most (the path names it): held whole.
    let set = state
        .archive
        .retrieve_set(target.query())
        .await?
        .all()
        .await?;
    if set.is_empty() {
        return Err(ApiError::not_found());
    }
    tracing::info!(
        user = principal.name(),
        instances = set.len(),
        "WADO retrieve"
    );
    let mut e = crate::audit::event(
        custos_core::audit::EventId::InstancesTransferred,
        'R',
        custos_core::audit::Outcome::Success,
    );
    e.detail = format!(
        "WADO {}{}{}: {} instances",
        target.study,
        target
            .series
            .as_deref()
            .map(|s| format!("/{s}"))
            .unwrap_or_default(),
        target
            .instance
            .as_deref()
            .map(|s| format!("/{s}"))
            .unwrap_or_default(),
        set.len()
    );
    e.study_uids.push(target.study.clone());
    state.archive.name_patients(&mut e).await;
    state.archive.record_access(e).await?;
    Ok(set)
}

/// The transfer syntaxes the client accepts for application/dicom, most
/// wanted first (q-values, then the order given): `None` for "as stored".
/// Each instance goes in the first of them it can be had in (`plan`).
fn wanted_syntaxes(headers: &HeaderMap) -> Result<Vec<Option<String>>, ApiError> {
    let ranges: Vec<Option<String>> = accepted(headers)
        .into_iter()
        .map(|range| match range.param("transfer-syntax") {
            None | Some("*") => None,
            Some(ts) => Some(ts.to_string()),
        })
        .collect();
    if ranges.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "only application/dicom (in multipart/related, or alone for an instance) is offered here",
        ));
    }
    Ok(ranges)
}

/// Whether the client wants one instance as a bare `application/dicom`
/// body (PS3.18 Table 10.4.4-1, for an instance resource) rather than
/// wrapped in multipart: its most wanted acceptable range says so.
fn wants_single_part(headers: &HeaderMap) -> bool {
    accepted(headers)
        .first()
        .is_some_and(|r| r.media == "application/dicom")
}

/// The ranges of Accept that an instance can be sent as, most wanted first
/// (q-values, then the order given).
fn accepted(headers: &HeaderMap) -> Vec<multipart::MediaRange> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let mut ranges: Vec<(f32, multipart::MediaRange)> = media_ranges(accept)
        .into_iter()
        .filter(|range| match range.media.as_str() {
            "multipart/related" => range
                .param("type")
                .is_none_or(|t| t.eq_ignore_ascii_case("application/dicom")),
            "application/dicom" | "*/*" | "multipart/*" => true,
            _ => false,
        })
        .map(|range| {
            let q = range
                .param("q")
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q, range)
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranges.into_iter().map(|(_, range)| range).collect()
}

/// How one stored instance is delivered: the first of `wanted` it can be had
/// in, as stored or (if `decodable`) decompressed; the transfer syntax to
/// decompress to (None: as stored) and its part's content type.
fn plan(
    instance: &StoredInstance,
    wanted: &[Option<String>],
    decodable: bool,
) -> Result<(Option<String>, String), ApiError> {
    for w in wanted {
        match w {
            None => return Ok((None, "application/dicom".to_string())),
            Some(ts) if *ts == instance.transfer_syntax_uid => {
                return Ok((None, format!("application/dicom; transfer-syntax={ts}")));
            }
            Some(ts) if (ts == EXPLICIT_LE || ts == IMPLICIT_LE) && decodable => {
                return Ok((
                    Some(ts.clone()),
                    format!("application/dicom; transfer-syntax={ts}"),
                ));
            }
            Some(_) => {}
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "the requested transfer syntax cannot be produced from the stored one",
    ))
}

/// Whether `instance` could be decompressed, asked only when it may have to
/// be (no "as stored" wanted before a transfer syntax other than its own).
async fn decodable(state: &AppState, instance: &StoredInstance, wanted: &[Option<String>]) -> bool {
    let as_stored = |w: &Option<String>| {
        w.as_deref()
            .is_none_or(|ts| ts == instance.transfer_syntax_uid)
    };
    match wanted.iter().position(|w| !as_stored(w)) {
        Some(first) if !wanted[..first].iter().any(as_stored) => {
            state.archive.can_decompress(instance).await
        }
        _ => false,
    }
}

async fn retrieve(
    state: Arc<AppState>,
    principal: Principal,
    target: Target,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wanted = wanted_syntaxes(&headers)?;
    let single = target.instance.is_some() && wants_single_part(&headers);
    let set = resolve(&state, &principal, &target).await?;
    let mut plans = Vec::with_capacity(set.len());
    for i in &set {
        plans.push(plan(i, &wanted, decodable(&state, i, &wanted).await)?);
    }
    let archive = state.archive.clone();
    let mut parts = set
        .into_iter()
        .zip(plans)
        .map(move |(inst, (ts, part_type))| {
            let archive = archive.clone();
            // What the part holds once made: a stored file up to the
            // whole-read limit (a larger one is streamed), a converted one
            // whole — larger than the stored one; decoded pixels are often
            // several times the compressed ones (an estimate: 4).
            let holds = match ts {
                None if inst.size <= custos_archive::WHOLE_READ_MAX => inst.size,
                None => 0,
                Some(_) => inst.size.saturating_mul(4),
            };
            let make = Box::pin(async move {
                match ts {
                    None => match archive.stored_file(&inst).await {
                        Ok(StoredFile::Whole(b)) => Ok(Part::Bytes(b)),
                        Ok(StoredFile::Stream(r)) => Ok(Part::Reader(r)),
                        Err(e) => Err(e.to_string()),
                    },
                    Some(ts) => archive
                        .transcoded_file(&inst, &ts)
                        .await
                        .map(|b| Part::Bytes(b.into()))
                        .map_err(|e| e.to_string()),
                }
            }) as PartSource;
            (part_type, Planned { holds, make })
        });
    if single && let Some((part_type, planned)) = parts.next() {
        // An instance resource: one part, made before the status.
        return multipart::single(part_type, planned)
            .await
            .map_err(|e| ApiError::internal("reading an instance", e));
    }
    Ok(multipart::response_typed("application/dicom", parts))
}

pub async fn study(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::study(study);
    retrieve(s, p, t, h).await
}

pub async fn series(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::series(study, series);
    retrieve(s, p, t, h).await
}

pub async fn instance(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series, instance)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::instance(study, series, instance);
    retrieve(s, p, t, h).await
}

// ---- metadata ----

async fn metadata(
    state: Arc<AppState>,
    principal: Principal,
    target: Target,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    use futures_util::{StreamExt, TryStreamExt};
    multipart::json_accepted(&headers)?;
    let set = resolve(&state, &principal, &target).await?;
    let base = base_url(&state, &headers);
    let archive = state.archive.clone();
    let mut encoded = futures_util::stream::iter(set)
        .map(move |inst| {
            let (base, sop) = (base.clone(), inst.sop_instance_uid.clone());
            let bulk_base = Arc::new(move |study: &str, series: &str| {
                format!("{base}/studies/{study}/series/{series}/instances/{sop}/bulkdata")
            });
            let archive = archive.clone();
            // Its own task: an instance's steps (read, parse, encode) go on
            // while the response waits to be polled. Aborted with the
            // response (what is on the blocking pool finishes there).
            let encoding = Aborting(tokio::spawn(async move {
                archive.metadata(&inst, bulk_base).await
            }));
            async move {
                encoding.await.unwrap_or_else(|e| {
                    Err(ViewError::Internal {
                        context: "metadata task",
                        why: e.to_string(),
                    })
                })
            }
        })
        .buffered(METADATA_AT_ONCE);
    // About METADATA_HOLD bytes (to the end of the instance that crosses it)
    // are encoded before the status is sent, so a study or series of
    // ordinary size whose files cannot be read gets its error status.
    let mut opening = vec![b'['];
    while opening.len() < METADATA_HOLD {
        match encoded.try_next().await? {
            Some(e) => {
                if opening.len() > 1 {
                    opening.push(b',');
                }
                opening.extend_from_slice(&e);
            }
            None => {
                opening.push(b']');
                return Ok(
                    ([(header::CONTENT_TYPE, "application/dicom+json")], opening).into_response(),
                );
            }
        }
    }
    // Past that the rest is sent as it is encoded, so a study's metadata is
    // never held whole (a 100,000-instance study's is ~0.5–1 GB); a failure
    // now aborts the response, never ends the array early.
    // Instances go out gathered into pieces of about METADATA_PIECE bytes
    // (a piece per instance made ~6,000 small TLS records for 6,000 instances).
    let rest = futures_util::stream::try_unfold(encoded.fuse(), |mut encoded| async move {
        let mut piece = Vec::with_capacity(METADATA_PIECE + (16 << 10));
        while piece.len() < METADATA_PIECE {
            match encoded.try_next().await {
                Ok(Some(e)) => {
                    piece.push(b',');
                    piece.extend_from_slice(&e);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "aborting a metadata response");
                    return Err(std::io::Error::other(e.to_string()));
                }
            }
        }
        Ok((!piece.is_empty()).then(|| (Bytes::from(piece), encoded)))
    });
    let body = futures_util::stream::once(async move { Ok(Bytes::from(opening)) })
        .chain(rest)
        .chain(futures_util::stream::once(async {
            Ok(Bytes::from_static(b"]"))
        }));
    Ok((
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Body::from_stream(multipart::ended_at_error(body)),
    )
        .into_response())
}

/// Metadata encoded before the response's status is decided; a larger
/// response is streamed.
const METADATA_HOLD: usize = 1 << 20;

/// What a streamed metadata response gathers before it sends.
const METADATA_PIECE: usize = 128 << 10;

/// Instances whose metadata is read and encoded at the same time, each in
/// its own task (a study's metadata was read one instance after another).
const METADATA_AT_ONCE: usize = 4;

/// A spawned task that is aborted when its handle is dropped.
struct Aborting<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Aborting<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Aborting<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn study_metadata(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::study(study);
    metadata(s, p, t, h).await
}

pub async fn series_metadata(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::series(study, series);
    metadata(s, p, t, h).await
}

pub async fn instance_metadata(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series, instance)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::instance(study, series, instance);
    metadata(s, p, t, h).await
}

// ---- frames and rendered ----

pub async fn frames(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let numbers = frame_list(&list)?;
    let t = Target::instance(study, series, instance);
    let set = resolve(&state, &p, &t).await?;
    frames_response(&state, &set[0], FrameSelection::Numbers(numbers), &headers).await
}

/// Frames of `instance` as multipart/related, in a type the Accept header takes.
async fn frames_response(
    state: &AppState,
    instance: &StoredInstance,
    which: FrameSelection,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let frames = state
        .archive
        .frames(instance, which, pixels::accepted_frames(accept))
        .await?;
    let parts = frames.data.into_iter().map(bytes::Bytes::from).collect();
    Ok(multipart::response(&frames.media, &frames.part_type, parts))
}

/// Frame numbers of a `/frames/{list}` request: 1-based, each once (a
/// repeated number would copy the frame again), in the order first asked.
fn frame_list(list: &str) -> Result<Vec<u32>, ApiError> {
    const MAX_LISTED: usize = 10_000;
    let bad = || ApiError::bad_request("frame numbers are a comma-separated list from 1");
    let mut seen = std::collections::HashSet::new();
    let mut numbers = Vec::new();
    for (i, n) in list.split(',').enumerate() {
        if i >= MAX_LISTED {
            return Err(bad());
        }
        let n = n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(bad)?;
        if seen.insert(n) {
            numbers.push(n);
        }
    }
    if numbers.is_empty() {
        return Err(bad());
    }
    Ok(numbers)
}

/// WADO-RS bulk data of a top-level attribute (`/bulkdata/{tag}`): the value
/// bytes as application/octet-stream; for Pixel Data, every frame as
/// `/frames` would return them.
pub async fn bulkdata(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bad = || ApiError::bad_request("the bulk data reference is a tag of 8 hex digits");
    if tag.len() != 8 || !tag.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let group = u16::from_str_radix(&tag[..4], 16).map_err(|_| bad())?;
    let element = u16::from_str_radix(&tag[4..], 16).map_err(|_| bad())?;
    let t = Target::instance(study, series, instance);
    let set = resolve(&state, &p, &t).await?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let single_part = pixels::single_part(accept);
    if (group, element) == (0x7FE0, 0x0010) {
        if single_part {
            // One body: the frames as stored, one after another (what a
            // client configured for single-part bulk data reads).
            let frames = state
                .archive
                .frames(
                    &set[0],
                    FrameSelection::All,
                    pixels::accepted_frames(Some("*/*")),
                )
                .await?;
            return Ok((
                [(header::CONTENT_TYPE, frames.part_type)],
                frames.data.concat(),
            )
                .into_response());
        }
        // Every frame the data holds, as /frames would return them.
        return frames_response(&state, &set[0], FrameSelection::All, &headers).await;
    }
    let bytes = state.archive.bulk_value(&set[0], (group, element)).await?;
    if single_part {
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response());
    }
    Ok(multipart::response(
        "application/octet-stream",
        "application/octet-stream",
        vec![bytes.into()],
    ))
}

async fn rendered_image(
    state: Arc<AppState>,
    p: Principal,
    t: Target,
    raw: Option<String>,
    headers: HeaderMap,
    thumbnail: bool,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("malformed query string"))?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let mut options: RenderOptions = pixels::render_options(&params, accept)?;
    if thumbnail && options.viewport.is_none() {
        options.viewport = Some((128, 128));
    }
    let set = resolve(&state, &p, &t).await?;
    let media = pixels::rendered_media(&options);
    // A series' or study's thumbnail shows its middle image (a report or a
    // key object selection among them has nothing to show).
    let images: Vec<_> = set
        .iter()
        .filter(|i| custos_archive::dicomdir::is_image(&i.sop_class_uid))
        .collect();
    let shown = match images.len() {
        0 => &set[set.len() / 2],
        n => images[n / 2],
    };
    let bytes = state.archive.rendered(shown, options).await?;
    Ok(([(header::CONTENT_TYPE, media)], bytes).into_response())
}

pub async fn rendered(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series, instance)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::instance(study, series, instance);
    rendered_image(s, p, t, raw, h, false).await
}

/// `.../instances/{instance}/frames/{frame}/rendered`: one frame rendered
/// (PS3.18 10.4; what dicomweb-client's `retrieve_instance_frames_rendered`
/// asks for), as `/rendered?frame=` gives it.
pub async fn frame_rendered(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series, instance, frames)): Path<(String, String, String, String)>,
    RawQuery(raw): RawQuery,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let [frame] = frame_list(&frames)?[..] else {
        return Err(ApiError::bad_request("one frame is rendered at a time"));
    };
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("malformed query string"))?;
    pairs.retain(|(k, _)| k != "frame");
    pairs.push(("frame".into(), frame.to_string()));
    let raw = serde_urlencoded::to_string(&pairs).ok();
    let t = Target::instance(study, series, instance);
    rendered_image(s, p, t, raw, h, false).await
}

/// `/studies/{study}/thumbnail`: a study's image for lists.
pub async fn study_thumbnail(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(study): Path<String>,
    RawQuery(raw): RawQuery,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    rendered_image(s, p, Target::study(study), raw, h, true).await
}

/// `/studies/{study}/series/{series}/thumbnail`: a series' image for lists.
pub async fn series_thumbnail(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    rendered_image(s, p, Target::series(study, series), raw, h, true).await
}

pub async fn thumbnail(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((study, series, instance)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::instance(study, series, instance);
    rendered_image(s, p, t, raw, h, true).await
}

/// WADO-URI (PS3.18 9): `?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`
/// with `contentType` application/dicom or image/jpeg (the default) / image/png.
pub async fn wado_uri(
    State(state): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::bad_request("malformed query string"))?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("requestType").as_deref() != Some("WADO") {
        return Err(ApiError::bad_request("requestType must be WADO"));
    }
    let (Some(study), Some(series), Some(instance)) =
        (get("studyUID"), get("seriesUID"), get("objectUID"))
    else {
        return Err(ApiError::bad_request(
            "studyUID, seriesUID and objectUID are required",
        ));
    };
    // PS3.18 9.2: a server that does not de-identify the object asked for
    // answers an error, never the identified object.
    if get("anonymize").is_some() {
        return Err(ApiError::bad_request(
            "anonymize is not done by WADO-URI here: use /api/studies/{study}/deidentified.zip",
        ));
    }
    let t = Target::instance(study, series, instance);
    let content_type = get("contentType").unwrap_or_else(|| "image/jpeg".into());
    if content_type == "application/dicom" {
        let set = resolve(&state, &p, &t).await?;
        let inst = &set[0];
        let wanted = [get("transferSyntax")];
        let body = match plan(inst, &wanted, decodable(&state, inst, &wanted).await)?.0 {
            None => match state.archive.stored_file(inst).await? {
                StoredFile::Whole(bytes) => axum::body::Body::from(bytes),
                StoredFile::Stream(reader) => {
                    axum::body::Body::from_stream(tokio_util_stream(reader))
                }
            },
            Some(ts) => axum::body::Body::from(
                state
                    .archive
                    .transcoded_file(inst, &ts)
                    .await
                    .map_err(|e| ApiError::internal("decompressing", e))?,
            ),
        };
        return Ok(([(header::CONTENT_TYPE, "application/dicom")], body).into_response());
    }
    let mut headers = HeaderMap::new();
    if let Ok(v) = content_type.parse() {
        headers.insert(header::ACCEPT, v);
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(w) = get("windowCenter").zip(get("windowWidth")) {
        pairs.push(("window".into(), format!("{},{},linear", w.0, w.1)));
    }
    // One of rows and columns alone: the other follows the aspect ratio
    // (the image is fitted within the viewport, the largest side allowed).
    match (get("rows"), get("columns")) {
        (None, None) => {}
        (rows, columns) => {
            let most = || "8192".to_string();
            let (w, h) = (columns.unwrap_or_else(most), rows.unwrap_or_else(most));
            pairs.push(("viewport".into(), format!("{w},{h}")));
        }
    }
    if let Some(q) = get("imageQuality") {
        pairs.push(("quality".into(), q));
    }
    if let Some(n) = get("frameNumber") {
        pairs.push(("frame".into(), n));
    }
    let raw = serde_urlencoded::to_string(&pairs).ok();
    rendered_image(state, p, t, raw, headers, false).await
}

/// A stored file as a body stream, read in chunks.
fn tokio_util_stream(
    reader: custos_store::Reader,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(reader), |state| async move {
        use tokio::io::AsyncReadExt;
        let mut reader = state?;
        let mut buf = bytes::BytesMut::with_capacity(256 << 10);
        match reader.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::frame_list;

    #[test]
    fn frame_lists_are_deduplicated_and_bounded() {
        assert_eq!(frame_list("3,1,3,1,2").unwrap(), vec![3, 1, 2]);
        assert_eq!(frame_list(&vec!["1"; 9_000].join(",")).unwrap(), vec![1]);
        assert!(frame_list(&vec!["1"; 10_001].join(",")).is_err());
        assert!(frame_list("0").is_err());
        assert!(frame_list("1,x").is_err());
        assert!(frame_list("").is_err());
    }
}
