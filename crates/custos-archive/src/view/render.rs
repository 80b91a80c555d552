//! One frame rendered to JPEG or PNG (WADO-RS `/rendered`, `/thumbnail`,
//! WADO-URI): decoded by dicom-pixeldata, windowed, scaled to 8 bits and
//! resized to the viewport.

use std::io::Cursor;

use dicom_object::DefaultDicomObject;
use dicom_pixeldata::image::codecs::jpeg::JpegEncoder;
use dicom_pixeldata::image::{DynamicImage, ImageFormat};
use dicom_pixeldata::{BitDepthOption, ConvertOptions, PixelDecoder, VoiLutOption, WindowLevel};

use super::frames::{check_budget, frame_count};
use super::{ViewError, internal};

/// How to render: the caller has checked the ranges (quality 1..=100, a
/// viewport up to 8192 on a side, a positive window width, frame from 1).
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub png: bool,
    pub quality: u8,
    /// Width and height to fit.
    pub viewport: Option<(u32, u32)>,
    /// Window centre and width; the instance's own VOI LUT otherwise.
    pub window: Option<(f64, f64)>,
    pub frame: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            png: false,
            quality: 90,
            viewport: None,
            window: None,
            frame: 1,
        }
    }
}

/// Bytes `resize` to fit (w, h) may take: its f32 RGBA pass over the source
/// width at the new height, and the new image (at most w x h).
fn resize_cost(source_width: u32, w: u32, h: u32) -> u64 {
    (u64::from(source_width) * u64::from(h) + u64::from(w) * u64::from(h)) * 16
}

pub(super) fn render(obj: &DefaultDicomObject, o: &RenderOptions) -> Result<Vec<u8>, ViewError> {
    if o.frame < 1 || o.frame > frame_count(obj) {
        return Err(ViewError::NoSuchFrame);
    }
    check_budget(obj, 1)?;
    let decoded = obj.decode_pixel_data_frame(o.frame - 1).map_err(|_| {
        ViewError::NotAcceptable("the pixel data of this instance cannot be decoded here")
    })?;
    let mut options = ConvertOptions::new().with_bit_depth(BitDepthOption::Force8Bit);
    if let Some((center, width)) = o.window {
        options = options.with_voi_lut(VoiLutOption::Custom(WindowLevel { center, width }));
    }
    let mut image = decoded
        .to_dynamic_image_with_options(0, &options)
        .map_err(|_| {
            ViewError::NotAcceptable("the pixel data of this instance cannot be rendered")
        })?;
    if let Some((w, h)) = o.viewport {
        // The image is fitted inside the viewport, keeping its aspect ratio
        // (a side left open is the largest allowed): the cost is that of the
        // fitted size. A viewport larger than the frame scales it up: bounded too.
        let (iw, ih) = (image.width().max(1), image.height().max(1));
        let ratio = f64::min(f64::from(w) / f64::from(iw), f64::from(h) / f64::from(ih));
        let fitted = |side: u32| ((f64::from(side) * ratio).round() as u32).max(1);
        let needed = resize_cost(iw, fitted(iw), fitted(ih));
        if needed > super::PIXEL_BUDGET {
            return Err(ViewError::OverBudget { needed });
        }
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
            .map_err(|e| internal("encoding PNG")(e.to_string()))?;
    } else {
        JpegEncoder::new_with_quality(&mut out, o.quality)
            .encode_image(&image)
            .map_err(|e| internal("encoding JPEG")(e.to_string()))?;
    }
    Ok(out)
}
