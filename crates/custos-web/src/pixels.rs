//! What a client asks of pixel data, read from HTTP: the frame media types
//! its Accept header takes, and rendering options from the query string. The
//! archive's `view` module does the decoding.

use custos_archive::view::{Accepted, RenderOptions};

use crate::error::ApiError;
use crate::multipart::media_ranges;
use axum::http::StatusCode;

/// The media types an Accept header takes for frames: the `type` of each
/// multipart/related range (application/octet-stream when it names none),
/// or the range itself.
pub fn accepted_frames(accept: Option<&str>) -> Vec<Accepted> {
    media_ranges(accept)
        .into_iter()
        .map(|r| Accepted {
            media: if r.media == "multipart/related" {
                r.param("type")
                    .unwrap_or("application/octet-stream")
                    .to_string()
            } else {
                r.media.clone()
            },
            transfer_syntax: r.param("transfer-syntax").map(str::to_string),
        })
        .collect()
}

/// Whether an Accept header asks for bulk data as one plain body
/// (`application/octet-stream`, or a video type, before any
/// multipart/related range), not as multipart/related.
pub fn single_part(accept: Option<&str>) -> bool {
    let plain = |m: &str| m == "application/octet-stream" || m.starts_with("video/");
    accept.is_some()
        && media_ranges(accept)
            .iter()
            .find(|r| plain(&r.media) || r.media == "multipart/related")
            .is_some_and(|r| plain(&r.media))
}

/// The media type of a rendered image.
pub fn rendered_media(o: &RenderOptions) -> &'static str {
    if o.png { "image/png" } else { "image/jpeg" }
}

/// Rendering options from `window=center,width[,function]`, `viewport=w,h`,
/// `quality=1..100`, `frame=n` and the Accept header (image/jpeg by default,
/// or image/png).
pub fn render_options(
    params: &[(String, String)],
    accept: Option<&str>,
) -> Result<RenderOptions, ApiError> {
    let mut o = RenderOptions::default();
    let mut chosen = false;
    for r in media_ranges(accept) {
        match r.media.as_str() {
            "image/png" => {
                o.png = true;
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
                    (Some(w), Some(h)) if (1..=8192).contains(&w) && (1..=8192).contains(&h) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(q).unwrap()
    }

    #[test]
    fn rendering_options_are_read_and_bounded() {
        let o = render_options(
            &params("window=40,400,linear&viewport=64,32&quality=50&frame=3"),
            Some("image/png"),
        )
        .unwrap();
        assert!(o.png);
        assert_eq!(
            (o.window, o.viewport, o.quality, o.frame),
            (Some((40.0, 400.0)), Some((64, 32)), 50, 3)
        );
        assert!(!render_options(&[], None).unwrap().png);
        for bad in [
            "quality=0",
            "quality=101",
            "viewport=0,10",
            "viewport=9000,10",
            "window=40,0",
            "window=x,1",
            "frame=0",
        ] {
            let e = render_options(&params(bad), None).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let e = render_options(&[], Some("application/dicom")).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn single_part_bulk_data_is_asked_for_plainly() {
        assert!(single_part(Some("application/octet-stream")));
        assert!(single_part(Some(
            "application/octet-stream, multipart/related"
        )));
        assert!(!single_part(Some(
            "multipart/related; type=application/octet-stream"
        )));
        assert!(!single_part(None));
        assert!(!single_part(Some("*/*")));
        assert!(single_part(Some(
            "video/mp4, multipart/related; type=\"video/mp4\""
        )));
    }

    #[test]
    fn frame_media_comes_from_the_multipart_type() {
        let a = accepted_frames(Some(
            "multipart/related; type=\"image/jpeg\", multipart/related; transfer-syntax=*",
        ));
        assert_eq!(a[0].media, "image/jpeg");
        assert_eq!(a[1].media, "application/octet-stream");
        assert_eq!(a[1].transfer_syntax.as_deref(), Some("*"));
        assert_eq!(accepted_frames(None)[0].media, "*/*");
    }
}
