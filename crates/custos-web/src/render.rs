//! Pixel data for WADO-RS: frames as stored (or decoded to native bytes) and
//! rendered JPEG/PNG images with window, viewport and quality, via dicom-pixeldata.

use std::io::Cursor;

use axum::http::StatusCode;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::image::codecs::jpeg::JpegEncoder;
use dicom_pixeldata::image::{DynamicImage, ImageFormat};
use dicom_pixeldata::{BitDepthOption, ConvertOptions, PixelDecoder, VoiLutOption, WindowLevel};

use crate::error::ApiError;
use crate::multipart::media_ranges;

/// The media type of encapsulated frames in transfer syntax `ts` (PS3.18 8.7.3.3.2).
pub fn frame_media_type(ts: &str) -> &'static str {
    match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.92" | "1.2.840.10008.1.2.4.93" => "image/jpx",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "video/mpeg",
        t if t.starts_with("1.2.840.10008.1.2.4.10") => "video/mp4",
        _ => "application/octet-stream",
    }
}

pub struct Frames {
    pub media: String,
    pub part_type: String,
    pub data: Vec<Vec<u8>>,
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element(tag).ok()?.to_int::<u32>().ok()
}

/// Most bytes one request may decode (frames to native, a rendered frame):
/// the header's Rows x Columns x Samples x Bits is checked against it before
/// anything is decoded.
pub const PIXEL_BUDGET: u64 = 512 << 20;

/// Bytes of one native frame as the header describes it (0 when unknown).
fn frame_bytes(obj: &DefaultDicomObject) -> u64 {
    let rows = u64::from(int(obj, tags::ROWS).unwrap_or(0));
    let cols = u64::from(int(obj, tags::COLUMNS).unwrap_or(0));
    let spp = u64::from(int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1));
    let bits = u64::from(int(obj, tags::BITS_ALLOCATED).unwrap_or(16));
    rows.saturating_mul(cols)
        .saturating_mul(spp)
        .saturating_mul(bits)
        / 8
}

/// Refuses to decode `frames` frames whose header promises more than the budget.
fn check_budget(obj: &DefaultDicomObject, frames: usize) -> Result<(), ApiError> {
    let total = frame_bytes(obj).saturating_mul(frames as u64);
    if total > PIXEL_BUDGET {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "decoding this would take {total} bytes, more than the {PIXEL_BUDGET} allowed; ask for the frames as stored (transfer-syntax=*)"
            ),
        ));
    }
    Ok(())
}

/// How many frames the instance really holds: its Number of Frames, but never
/// more than its pixel data can contain (one fragment at least per
/// encapsulated frame, a whole frame of bytes per native one). A header that
/// claims four billion frames over one frame of data has one.
pub fn frame_count(obj: &DefaultDicomObject) -> u32 {
    let claimed = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let Ok(pixel) = obj.element(tags::PIXEL_DATA) else {
        return 1;
    };
    let held = match pixel.value().fragments() {
        Some(fragments) => fragments.len().max(1) as u64,
        None => {
            let size = frame_bytes(obj).max(1);
            let len = u64::from(pixel.header().len.get().unwrap_or(0));
            (len / size).max(1)
        }
    };
    claimed.min(u32::try_from(held).unwrap_or(u32::MAX))
}

/// The frames `numbers` (1-based) of `obj`, as the Accept header allows.
pub fn frames(
    obj: &DefaultDicomObject,
    numbers: &[u32],
    accept: Option<&str>,
) -> Result<Frames, ApiError> {
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let pixel = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "the instance has no pixel data"))?;
    let count = frame_count(obj);
    if numbers.iter().any(|n| *n > count) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "a requested frame does not exist",
        ));
    }
    let ranges = media_ranges(accept);
    let compressed_media = frame_media_type(&ts);
    let wants = |media: &str, any_ts: bool| {
        ranges.iter().any(|r| {
            let inner = if r.media == "multipart/related" {
                r.param("type").unwrap_or("application/octet-stream")
            } else {
                r.media.as_str()
            };
            let ts_ok = !any_ts || r.param("transfer-syntax") == Some("*");
            inner == "*/*" || (inner == media && ts_ok) || r.media == "*/*"
        })
    };
    if let Some(fragments) = pixel.value().fragments() {
        // Encapsulated: hand out the compressed frames if the client takes them.
        let stored_ok = wants(compressed_media, false) || wants("application/octet-stream", true);
        if stored_ok {
            let offsets = pixel.value().offset_table().unwrap_or(&[]);
            let data = numbers
                .iter()
                .map(|n| encapsulated_frame(fragments, offsets, count, *n))
                .collect::<Result<Vec<_>, _>>()?;
            let media = if wants(compressed_media, false) {
                compressed_media
            } else {
                "application/octet-stream"
            };
            return Ok(Frames {
                media: media.into(),
                part_type: format!("{media}; transfer-syntax={ts}"),
                data,
            });
        }
        if !wants("application/octet-stream", false) {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "frames are offered as stored or as application/octet-stream",
            ));
        }
        check_budget(obj, numbers.len())?;
        let data = numbers
            .iter()
            .map(|n| {
                obj.decode_pixel_data_frame(n - 1)
                    .map(|d| d.data().to_vec())
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::NOT_ACCEPTABLE,
                            "the stored frames cannot be decoded here; ask for transfer-syntax=*",
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(octet_stream(data));
    }
    if !wants("application/octet-stream", false) && !wants("application/octet-stream", true) {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "native frames are offered as application/octet-stream",
        ));
    }
    let bytes = pixel
        .to_bytes()
        .map_err(|e| ApiError::internal("reading pixel data", e))?;
    let rows = int(obj, tags::ROWS).unwrap_or(0) as usize;
    let cols = int(obj, tags::COLUMNS).unwrap_or(0) as usize;
    let spp = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as usize;
    let bits = int(obj, tags::BITS_ALLOCATED).unwrap_or(16) as usize;
    if bits % 8 != 0 {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "frames of 1-bit pixel data are not offered",
        ));
    }
    let size = rows * cols * spp * bits / 8;
    let data = numbers
        .iter()
        .map(|n| {
            let start = (*n as usize - 1) * size;
            bytes
                .get(start..start + size)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| ApiError::internal("pixel data shorter than its frames", ""))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(octet_stream(data))
}

fn octet_stream(data: Vec<Vec<u8>>) -> Frames {
    Frames {
        media: "application/octet-stream".into(),
        part_type: "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1".into(),
        data,
    }
}

/// Frame `n` of encapsulated pixel data: one fragment per frame, all
/// fragments for a single frame, or grouped by the basic offset table.
fn encapsulated_frame(
    fragments: &[Vec<u8>],
    offsets: &[u32],
    count: u32,
    n: u32,
) -> Result<Vec<u8>, ApiError> {
    if count == 1 {
        return Ok(fragments.concat());
    }
    if fragments.len() == count as usize {
        return Ok(fragments[n as usize - 1].clone());
    }
    if offsets.len() == count as usize {
        let start = offsets[n as usize - 1] as u64;
        let end = offsets
            .get(n as usize)
            .map(|e| *e as u64)
            .unwrap_or(u64::MAX);
        let mut pos = 0u64;
        let mut out = Vec::new();
        for f in fragments {
            if pos >= start && pos < end {
                out.extend_from_slice(f);
            }
            pos += 8 + f.len() as u64;
        }
        return Ok(out);
    }
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "this instance's fragments cannot be mapped to frames",
    ))
}

#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub png: bool,
    pub quality: u8,
    pub viewport: Option<(u32, u32)>,
    pub window: Option<(f64, f64)>,
    pub frame: u32,
}

impl RenderOptions {
    /// From `window=center,width[,function]`, `viewport=w,h`, `quality=1..100`
    /// and the Accept header (image/jpeg by default, or image/png).
    pub fn parse(params: &[(String, String)], accept: Option<&str>) -> Result<Self, ApiError> {
        let mut png = false;
        let mut chosen = false;
        for r in media_ranges(accept) {
            match r.media.as_str() {
                "image/png" => {
                    png = true;
                    chosen = true;
                }
                "image/jpeg" | "image/*" | "*/*" => chosen = true,
                _ => continue,
            }
            break;
        }
        if !chosen {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "rendered images are image/jpeg or image/png",
            ));
        }
        let mut o = RenderOptions {
            png,
            quality: 90,
            viewport: None,
            window: None,
            frame: 1,
        };
        let bad = |what: &str| ApiError::bad_request(format!("invalid {what}"));
        for (k, v) in params {
            match k.as_str() {
                "quality" => {
                    o.quality = v
                        .parse::<u8>()
                        .ok()
                        .filter(|q| (1..=100).contains(q))
                        .ok_or_else(|| bad("quality"))?
                }
                "viewport" => {
                    let mut it = v.split(',').map(|x| x.trim().parse::<u32>().ok());
                    match (it.next().flatten(), it.next().flatten()) {
                        (Some(w), Some(h))
                            if (1..=8192).contains(&w) && (1..=8192).contains(&h) =>
                        {
                            o.viewport = Some((w, h))
                        }
                        _ => return Err(bad("viewport")),
                    }
                }
                "window" => {
                    let mut it = v.split(',').map(|x| x.trim().parse::<f64>().ok());
                    match (it.next().flatten(), it.next().flatten()) {
                        (Some(c), Some(w)) if w > 0.0 && c.is_finite() && w.is_finite() => {
                            o.window = Some((c, w))
                        }
                        _ => return Err(bad("window")),
                    }
                }
                "frame" => {
                    o.frame = v
                        .parse::<u32>()
                        .ok()
                        .filter(|f| *f >= 1)
                        .ok_or_else(|| bad("frame"))?
                }
                _ => {}
            }
        }
        Ok(o)
    }

    pub fn media(&self) -> &'static str {
        if self.png { "image/png" } else { "image/jpeg" }
    }
}

/// Renders a frame of `obj` to JPEG or PNG.
pub fn render(obj: &DefaultDicomObject, o: &RenderOptions) -> Result<Vec<u8>, ApiError> {
    if o.frame < 1 || o.frame > frame_count(obj) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "a requested frame does not exist",
        ));
    }
    check_budget(obj, 1)?;
    let decoded = obj.decode_pixel_data_frame(o.frame - 1).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "the pixel data of this instance cannot be decoded here",
        )
    })?;
    let mut options = ConvertOptions::new().with_bit_depth(BitDepthOption::Force8Bit);
    if let Some((center, width)) = o.window {
        options = options.with_voi_lut(VoiLutOption::Custom(WindowLevel { center, width }));
    }
    let mut image = decoded
        .to_dynamic_image_with_options(0, &options)
        .map_err(|_| {
            ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "the pixel data of this instance cannot be rendered",
            )
        })?;
    if let Some((w, h)) = o.viewport {
        image = image.resize(w, h, dicom_pixeldata::image::imageops::FilterType::Triangle);
    }
    let image = match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => image,
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA8(_) => {
            DynamicImage::ImageLuma8(image.to_luma8())
        }
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    };
    let mut out = Vec::new();
    if o.png {
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .map_err(|e| ApiError::internal("encoding PNG", e))?;
    } else {
        JpegEncoder::new_with_quality(&mut out, o.quality)
            .encode_image(&image)
            .map_err(|e| ApiError::internal("encoding JPEG", e))?;
    }
    Ok(out)
}
