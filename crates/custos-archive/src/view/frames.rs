//! Frames of pixel data for WADO-RS `/frames` and `/bulkdata/7FE00010`: the
//! compressed frames as stored when the client takes them, otherwise decoded
//! to native bytes within [`super::PIXEL_BUDGET`]. A video (MPEG-2, MPEG-4
//! AVC, HEVC) is one stream, handed out whole as stored: its fragments are
//! not frames, and decoding video is a player's work, not an archive's.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;

use super::{PIXEL_BUDGET, ViewError, internal};

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
        // MPEG-2 (and its fragmentable forms, .1).
        "1.2.840.10008.1.2.4.100"
        | "1.2.840.10008.1.2.4.100.1"
        | "1.2.840.10008.1.2.4.101"
        | "1.2.840.10008.1.2.4.101.1" => "video/mpeg",
        // MPEG-4 AVC/H.264 and HEVC/H.265 (.102-.108, and .1 forms).
        t if t.starts_with("1.2.840.10008.1.2.4.10") => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// One media type the client accepts for frames (the `type` of a
/// multipart/related range, or the range itself), with its transfer-syntax
/// parameter if it named one.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub media: String,
    pub transfer_syntax: Option<String>,
}

/// Which frames: all the pixel data holds, or these (1-based, each once).
#[derive(Debug, Clone)]
pub enum FrameSelection {
    All,
    Numbers(Vec<u32>),
}

/// Frames and the media types to send them as.
pub struct Frames {
    /// The multipart/related `type`.
    pub media: String,
    /// Each part's Content-Type.
    pub part_type: String,
    pub data: Vec<Vec<u8>>,
}

/// Whether `accepted` takes `media` (with `transfer-syntax=*` when `as_stored`).
pub(super) fn takes(accepted: &[Accepted], media: &str, as_stored: bool) -> bool {
    accepted.iter().any(|a| {
        a.media == "*/*"
            || (a.media == media && (!as_stored || a.transfer_syntax.as_deref() == Some("*")))
    })
}

pub(super) fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<u32> {
    obj.element(tag).ok()?.to_int::<u32>().ok()
}

/// Bytes of one native frame as the header describes it (0 when unknown).
/// Native YBR_FULL_422 and YBR_PARTIAL_422 hold two samples a pixel, not
/// three (each pair of pixels shares its chroma; PS3.3 C.7.6.3.1.2).
pub(super) fn frame_bytes(obj: &DefaultDicomObject) -> u64 {
    let rows = u64::from(int(obj, tags::ROWS).unwrap_or(0));
    let cols = u64::from(int(obj, tags::COLUMNS).unwrap_or(0));
    let mut spp = u64::from(int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1));
    let native = matches!(
        obj.meta().transfer_syntax().trim_end_matches('\0'),
        "1.2.840.10008.1.2"
            | "1.2.840.10008.1.2.1"
            | "1.2.840.10008.1.2.2"
            | "1.2.840.10008.1.2.1.99"
    );
    let subsampled = obj
        .element(tags::PHOTOMETRIC_INTERPRETATION)
        .ok()
        .and_then(|e| e.to_str().ok())
        .is_some_and(|p| matches!(p.trim(), "YBR_FULL_422" | "YBR_PARTIAL_422"));
    if native && spp == 3 && subsampled {
        spp = 2;
    }
    let bits = u64::from(int(obj, tags::BITS_ALLOCATED).unwrap_or(16));
    rows.saturating_mul(cols)
        .saturating_mul(spp)
        .saturating_mul(bits)
        / 8
}

/// Refuses to decode `frames` frames whose header promises more than the budget.
pub(super) fn check_budget(obj: &DefaultDicomObject, frames: usize) -> Result<(), ViewError> {
    let needed = frame_bytes(obj).saturating_mul(frames as u64);
    if needed > PIXEL_BUDGET {
        return Err(ViewError::OverBudget { needed });
    }
    Ok(())
}

/// How many frames the instance really holds: its Number of Frames, but never
/// more than its pixel data can contain (one fragment at least per
/// encapsulated frame, a whole frame of bytes per native one). A header that
/// claims four billion frames over one frame of data has one.
pub(super) fn frame_count(obj: &DefaultDicomObject) -> u32 {
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

pub(super) fn frames(
    obj: &DefaultDicomObject,
    which: FrameSelection,
    accepted: &[Accepted],
) -> Result<Frames, ViewError> {
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let pixel = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| ViewError::NoPixelData)?;
    let compressed_media = frame_media_type(&ts);
    if compressed_media.starts_with("video/") {
        return video(pixel, &ts, which, accepted);
    }
    let count = frame_count(obj);
    let numbers = match which {
        FrameSelection::All => (1..=count).collect(),
        FrameSelection::Numbers(n) => n,
    };
    if numbers.iter().any(|n| *n == 0 || *n > count) {
        return Err(ViewError::NoSuchFrame);
    }
    if let Some(fragments) = pixel.value().fragments() {
        // Encapsulated: hand out the compressed frames if the client takes them.
        let as_compressed = takes(accepted, compressed_media, false);
        if as_compressed || takes(accepted, "application/octet-stream", true) {
            let offsets = match extended_offsets(obj) {
                Some(table) => table,
                None => {
                    let basic = pixel.value().offset_table().unwrap_or(&[]);
                    basic.iter().map(|o| u64::from(*o)).collect()
                }
            };
            let ranges = frame_fragments(fragments, &offsets, count)?;
            let data = numbers
                .iter()
                .map(|n| fragments[ranges[*n as usize - 1].clone()].concat())
                .collect();
            let media = if as_compressed {
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
        if !takes(accepted, "application/octet-stream", false) {
            return Err(ViewError::NotAcceptable(
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
                        ViewError::NotAcceptable(
                            "the stored frames cannot be decoded here; ask for transfer-syntax=*",
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(octet_stream(data));
    }
    if !takes(accepted, "application/octet-stream", false)
        && !takes(accepted, "application/octet-stream", true)
    {
        return Err(ViewError::NotAcceptable(
            "native frames are offered as application/octet-stream",
        ));
    }
    let bits = int(obj, tags::BITS_ALLOCATED).unwrap_or(16);
    if !bits.is_multiple_of(8) {
        return Err(ViewError::Unsupported(
            "frames of 1-bit pixel data are not offered",
        ));
    }
    let bytes = pixel
        .to_bytes()
        .map_err(|e| internal("reading pixel data")(e.to_string()))?;
    let size = usize::try_from(frame_bytes(obj)).unwrap_or(usize::MAX);
    let data = numbers
        .iter()
        .map(|n| {
            let start = (*n as usize - 1).saturating_mul(size);
            bytes
                .get(start..start.saturating_add(size))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| internal("pixel data shorter than its frames")(String::new()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(octet_stream(data))
}

/// The stream of a video's pixel data (all its fragments, in order) as one
/// part: as its video type when the client takes it (OHIF's player makes a
/// blob of it), or as application/octet-stream — still the stream, labelled
/// with its transfer syntax (OHIF asks for bulk data only so; nothing here
/// decodes video).
fn video(
    pixel: &dicom_object::mem::InMemElement,
    ts: &str,
    which: FrameSelection,
    accepted: &[Accepted],
) -> Result<Frames, ViewError> {
    if let FrameSelection::Numbers(_) = which {
        return Err(ViewError::Unsupported(
            "the frames of a video are not offered one by one; its bulk data (7FE00010) is the stream",
        ));
    }
    let Some(fragments) = pixel.value().fragments() else {
        return Err(ViewError::Unsupported(
            "this video's pixel data is not encapsulated",
        ));
    };
    let stream = frame_media_type(ts);
    let media = if takes(accepted, stream, false) {
        stream
    } else if takes(accepted, "application/octet-stream", false)
        || takes(accepted, "application/octet-stream", true)
    {
        "application/octet-stream"
    } else {
        return Err(ViewError::NotAcceptable(
            "a video is offered as its stream (video/mpeg or video/mp4, or application/octet-stream)",
        ));
    };
    Ok(Frames {
        media: media.into(),
        part_type: format!("{media}; transfer-syntax={ts}"),
        data: vec![fragments.concat()],
    })
}

pub(super) fn octet_stream(data: Vec<Vec<u8>>) -> Frames {
    Frames {
        media: "application/octet-stream".into(),
        part_type: "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1".into(),
        data,
    }
}

/// The Extended Offset Table (7FE0,0001), if the instance has one: byte
/// offsets of each frame's first fragment, as the Basic Offset Table's but
/// 64-bit (PS3.5 A.4; the Basic one is then empty).
pub(super) fn extended_offsets(obj: &DefaultDicomObject) -> Option<Vec<u64>> {
    use dicom_core::PrimitiveValue;
    let e = obj.element(dicom_core::Tag(0x7FE0, 0x0001)).ok()?;
    let table: Vec<u64> = match e.value().primitive()? {
        PrimitiveValue::U64(v) => v.to_vec(),
        PrimitiveValue::U8(b) => b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        _ => return None,
    };
    (!table.is_empty()).then_some(table)
}

/// Whether a fragment begins a JPEG (SOI), JPEG-LS (SOI), JPEG 2000
/// codestream (SOC then SIZ) or JP2 file (its signature box).
pub(super) fn starts_codestream(fragment: &[u8]) -> bool {
    fragment.starts_with(&[0xFF, 0xD8])
        || fragment.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
        || fragment.starts_with(&[0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20])
}

/// Which fragments make each of `count` frames of encapsulated pixel data
/// (PS3.5 A.4): one fragment per frame; all of them for a single frame; by
/// the offset table (Basic or Extended: each frame's first fragment, as a
/// byte offset from the first fragment's item); or, with no table and more
/// fragments than frames, by where each frame's codestream starts — a
/// fragment that begins one begins a frame, as pydicom and DCMTK find them.
fn frame_fragments(
    fragments: &[Vec<u8>],
    offsets: &[u64],
    count: u32,
) -> Result<Vec<std::ops::Range<usize>>, ViewError> {
    let lens: Vec<u64> = fragments.iter().map(|f| f.len() as u64).collect();
    frame_fragments_by(&lens, |i| starts_codestream(&fragments[i]), offsets, count)
}

/// [`frame_fragments`] from the fragments' lengths and whether each begins a
/// codestream (what reading them by their ranges knows of them).
pub(super) fn frame_fragments_by(
    lens: &[u64],
    begins_codestream: impl Fn(usize) -> bool,
    offsets: &[u64],
    count: u32,
) -> Result<Vec<std::ops::Range<usize>>, ViewError> {
    let fragments = lens;
    let count = count as usize;
    let unmapped =
        || ViewError::Unsupported("this instance's fragments cannot be mapped to frames");
    if count == 1 {
        return Ok(std::iter::once(0..fragments.len()).collect());
    }
    let starts: Vec<usize> = if fragments.len() == count {
        (0..count).collect()
    } else if offsets.len() == count {
        // Each offset must fall on a fragment's item.
        let mut at = std::collections::HashMap::new();
        let mut pos = 0u64;
        for (i, len) in fragments.iter().enumerate() {
            at.insert(pos, i);
            pos += 8 + len;
        }
        offsets
            .iter()
            .map(|o| at.get(o).copied().ok_or_else(unmapped))
            .collect::<Result<_, _>>()?
    } else {
        (0..fragments.len())
            .filter(|i| *i == 0 || begins_codestream(*i))
            .collect()
    };
    // Each frame at least one fragment: starts strictly increasing.
    if starts.len() != count
        || starts.first() != Some(&0)
        || !starts.windows(2).all(|w| w[0] < w[1])
    {
        return Err(unmapped());
    }
    let ends = starts.iter().skip(1).copied().chain([fragments.len()]);
    Ok(starts
        .iter()
        .copied()
        .zip(ends)
        .map(|(s, e)| s..e)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(media: &str, ts: Option<&str>) -> Vec<Accepted> {
        vec![Accepted {
            media: media.into(),
            transfer_syntax: ts.map(str::to_string),
        }]
    }

    #[test]
    fn stored_frames_need_their_media_type_or_transfer_syntax_star() {
        assert!(takes(&accept("image/jpeg", None), "image/jpeg", false));
        assert!(!takes(
            &accept("application/octet-stream", None),
            "application/octet-stream",
            true
        ));
        assert!(takes(
            &accept("application/octet-stream", Some("*")),
            "application/octet-stream",
            true
        ));
        assert!(takes(&accept("*/*", None), "image/jls", true));
    }

    /// A video's pixel data: fragments that are pieces of one stream, a
    /// Number of Frames that counts pictures in it.
    fn video_object(ts: &str) -> DefaultDicomObject {
        use dicom_core::value::{PixelFragmentSequence, Value};
        use dicom_core::{DataElement, PrimitiveValue, VR};
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from("300"),
        ));
        let fragments = vec![b"\0\0\0\x18ftypmp42".to_vec(), vec![7u8; 10], vec![9u8; 4]];
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), fragments)),
        ));
        obj.with_meta(
            dicom_object::meta::FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.77.1.1.1")
                .media_storage_sop_instance_uid("1.2.3.4"),
        )
        .unwrap()
    }

    #[test]
    fn a_video_is_its_whole_stream() {
        let stream = [b"\0\0\0\x18ftypmp42".to_vec(), vec![7u8; 10], vec![9u8; 4]].concat();
        let mp4 = video_object("1.2.840.10008.1.2.4.102");
        // As OHIF asks for bulk data: octet-stream, and gets the stream.
        let f = frames(
            &mp4,
            FrameSelection::All,
            &accept("application/octet-stream", None),
        )
        .unwrap();
        assert_eq!(f.data, vec![stream.clone()]);
        assert_eq!(
            f.part_type,
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.102"
        );
        let f = frames(&mp4, FrameSelection::All, &accept("video/mp4", None)).unwrap();
        assert_eq!((f.media.as_str(), f.data.len()), ("video/mp4", 1));
        let f = frames(&mp4, FrameSelection::All, &accept("*/*", None)).unwrap();
        assert_eq!(f.media, "video/mp4");
        assert_eq!(f.data, vec![stream]);
        let mpeg2 = video_object("1.2.840.10008.1.2.4.100");
        let f = frames(&mpeg2, FrameSelection::All, &accept("video/mpeg", None)).unwrap();
        assert_eq!(f.media, "video/mpeg");
        // Not its fragments one by one as frames, nor an image type.
        assert!(matches!(
            frames(&mp4, FrameSelection::Numbers(vec![2]), &accept("*/*", None)),
            Err(ViewError::Unsupported(_))
        ));
        assert!(matches!(
            frames(&mp4, FrameSelection::All, &accept("image/jpeg", None)),
            Err(ViewError::NotAcceptable(_))
        ));
    }

    #[test]
    fn frames_of_an_encapsulated_value() {
        let f = vec![vec![1u8; 4], vec![2u8; 6], vec![3u8; 2]];
        // One fragment per frame.
        assert_eq!(frame_fragments(&f, &[], 3).unwrap(), [0..1, 1..2, 2..3]);
        // A single frame is all fragments.
        assert_eq!(frame_fragments(&f, &[], 1).unwrap().first(), Some(&(0..3)));
        // Two frames by the offset table: the first two fragments, then the third.
        assert_eq!(frame_fragments(&f, &[0, 26], 2).unwrap(), [0..2, 2..3]);
        // Two frames at one offset: refused, not an empty frame.
        assert!(frame_fragments(&f, &[0, 0], 2).is_err());
        // An offset inside a fragment, or no way to tell: not guessed.
        assert!(matches!(
            frame_fragments(&f, &[0, 20], 2),
            Err(ViewError::Unsupported(_))
        ));
        assert!(matches!(
            frame_fragments(&f, &[], 2),
            Err(ViewError::Unsupported(_))
        ));
    }

    /// Frames mapped by the Extended Offset Table (7FE0,0001) alone: the
    /// fragments carry no codestream start to go by.
    #[test]
    fn frames_by_the_extended_offset_table() {
        use dicom_core::value::{PixelFragmentSequence, Value};
        use dicom_core::{DataElement, PrimitiveValue, VR};
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from("2"),
        ));
        // Frame 1: fragments 0 and 1 (8 + 4, 8 + 6 bytes); frame 2 at 26.
        let fragments = vec![vec![1u8; 4], vec![2u8; 6], vec![3u8; 2], vec![4u8; 2]];
        obj.put(DataElement::new(
            dicom_core::Tag(0x7FE0, 0x0001),
            VR::OV,
            PrimitiveValue::U64([0u64, 26].into_iter().collect()),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), fragments)),
        ));
        let obj = obj
            .with_meta(
                dicom_object::meta::FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.4.50")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid("1.2.3.4"),
            )
            .unwrap();
        let f = frames(&obj, FrameSelection::All, &accept("image/jpeg", None)).unwrap();
        assert_eq!(
            f.data,
            vec![
                [vec![1u8; 4], vec![2u8; 6]].concat(),
                [vec![3u8; 2], vec![4u8; 2]].concat()
            ]
        );
    }

    /// No offset table, frames split over fragments: each frame's
    /// codestream start begins it (JPEG, JPEG 2000 codestream and JP2).
    #[test]
    fn frames_found_by_where_their_codestreams_start() {
        let jpeg = |tail: u8| vec![0xFF, 0xD8, 0xFF, 0xE0, tail, tail];
        let f = vec![jpeg(1), vec![5; 4], vec![6; 2], jpeg(2), vec![7; 2]];
        assert_eq!(frame_fragments(&f, &[], 2).unwrap(), [0..3, 3..5]);
        let j2k = vec![0xFF, 0x4F, 0xFF, 0x51, 0, 0];
        let jp2 = vec![0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20];
        let f = vec![j2k.clone(), vec![1; 2], j2k, jp2, vec![1; 2]];
        assert_eq!(frame_fragments(&f, &[], 3).unwrap(), [0..2, 2..3, 3..5]);
        // Starts that do not add up to the frames: refused, not guessed.
        assert!(frame_fragments(&f, &[], 2).is_err());
    }
}
