//! Frames read by their byte ranges. Viewers ask for a multi-frame
//! instance's frames one request at a time (OHIF does, for a cine or a
//! tomosynthesis), and each request used to read and parse the whole file:
//! a 200 MB cine cost 200 MB of reading and memory per frame, and an
//! instance over 256 MiB could not be viewed at all. From a stored file, the
//! header is parsed, the Pixel Data located (`lengths::locate_pixel_data`,
//! which checks the header's lengths as it goes), and only the frames asked
//! for are read: native ones at their offsets, encapsulated ones from their
//! fragments, found by walking the item headers. What cannot be served this
//! way — frames to decode, a video, big endian words, a deflated data set,
//! more fragments than are walked — goes the whole-file way; a request the
//! whole-file way would refuse is refused here the same way.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use super::frames::{
    Accepted, Frames, extended_offsets, frame_bytes, frame_fragments_by, frame_media_type, int,
    octet_stream, starts_codestream, takes,
};
use super::{PIXEL_BUDGET, ViewError};
use crate::lengths::{PixelAt, locate_pixel_data};

/// Most fragments walked before leaving an instance to the whole-file way
/// (each costs a few bytes of bookkeeping; real ones have one or a few per
/// frame).
const MAX_FRAGMENTS: usize = 1 << 20;

/// Largest Basic Offset Table read (4 bytes per frame).
const MAX_OFFSET_TABLE: u32 = 4 << 20;

/// Where Pixel Data may begin at the latest for its header to be parsed
/// here (per-frame functional groups of thousands of frames are megabytes).
const MAX_HEADER: u64 = 64 << 20;

/// A stored file's header (parsed up to its Pixel Data), where its Pixel
/// Data lies, and its transfer syntax; `None` when anything is unexpected
/// (the whole-object way then reports it).
struct Located {
    header: DefaultDicomObject,
    file: File,
    at: PixelAt,
    ts: String,
    /// Number of Frames as the header says (at least 1).
    claimed: u32,
}

fn locate(path: &Path) -> Option<Located> {
    // Found first (a walk that holds nothing), so that an object without
    // Pixel Data, or with a header of more than a few MiB before it, is
    // not parsed into memory here as well as the whole object's way.
    let mut file = File::open(path).ok()?;
    let at = locate_pixel_data(BufReader::new(&mut file)).ok()??;
    if at.offset > MAX_HEADER {
        return None;
    }
    let header = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .ok()?;
    let ts = header
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    // Big endian words are handed out (and decoded) in little endian: from
    // the whole object. So is a video: its fragments are no frames.
    if ts == "1.2.840.10008.1.2.2" || frame_media_type(&ts).starts_with("video/") {
        return None;
    }
    let claimed = int(&header, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    Some(Located {
        header,
        file,
        at,
        ts,
        claimed,
    })
}

/// Frames `numbers` (1-based) of the Part 10 file at `path`, or `None` when
/// they are to be had from the whole file instead.
pub(super) fn read(
    path: &Path,
    numbers: &[u32],
    accepted: &[Accepted],
) -> Result<Option<Frames>, ViewError> {
    let Some(mut l) = locate(path) else {
        return Ok(None);
    };
    let media = frame_media_type(&l.ts);
    if l.at.len.is_some() {
        let Some(data) = native(&mut l, numbers, Some(accepted))? else {
            return Ok(None);
        };
        return Ok(Some(octet_stream(data)));
    }
    let as_compressed = takes(accepted, media, false);
    if !as_compressed && !takes(accepted, "application/octet-stream", true) {
        // To be decoded: from the whole object.
        return Ok(None);
    }
    let media = if as_compressed {
        media
    } else {
        "application/octet-stream"
    };
    let Some(data) = encapsulated(&mut l, numbers, false)? else {
        return Ok(None);
    };
    Ok(Some(Frames {
        media: media.into(),
        part_type: format!("{media}; transfer-syntax={}", l.ts),
        data,
    }))
}

/// Frame `frame` (1-based) of the Part 10 file at `path` as an instance of
/// that one frame, to be rendered (the quick viewer's cine asks for each
/// frame so); `None` when it is to be rendered from the whole object: one
/// whose frames have attributes of their own (an enhanced multi-frame's
/// per-frame functional groups would be taken for the first frame's).
pub(super) fn single_frame(
    path: &Path,
    frame: u32,
) -> Result<Option<DefaultDicomObject>, ViewError> {
    let Some(mut l) = locate(path) else {
        return Ok(None);
    };
    if l.header
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .is_ok()
    {
        return Ok(None);
    }
    let pixel = if l.at.len.is_some() {
        let Some(mut data) = native(&mut l, &[frame], None)? else {
            return Ok(None);
        };
        let vr = if int(&l.header, tags::BITS_ALLOCATED).unwrap_or(16) > 8 {
            VR::OW
        } else {
            VR::OB
        };
        DataElement::new(
            tags::PIXEL_DATA,
            vr,
            PrimitiveValue::from(data.pop().unwrap_or_default()),
        )
    } else {
        // Fewer fragments than frames claimed: the whole object's decoder
        // reads such a file by its offset table where this would take a
        // fragment for a frame.
        let Some(mut data) = encapsulated(&mut l, &[frame], true)? else {
            return Ok(None);
        };
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            Value::PixelSequence(PixelFragmentSequence::new(
                Vec::<u32>::new(),
                vec![data.pop().unwrap_or_default()],
            )),
        )
    };
    let mut obj = l.header;
    // The offset tables described all the frames.
    obj.remove_element(Tag(0x7FE0, 0x0001));
    obj.remove_element(Tag(0x7FE0, 0x0002));
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from("1"),
    ));
    obj.put(pixel);
    Ok(Some(obj))
}

/// Native frames: each `frame_bytes` long, one after the other. With
/// `accepted`, refused unless it takes them as application/octet-stream.
fn native(
    l: &mut Located,
    numbers: &[u32],
    accepted: Option<&[Accepted]>,
) -> Result<Option<Vec<Vec<u8>>>, ViewError> {
    let (header, file, at) = (&l.header, &mut l.file, l.at);
    let Some(len) = at.len else {
        return Ok(None);
    };
    let size = frame_bytes(header);
    let bits = int(header, tags::BITS_ALLOCATED).unwrap_or(16);
    // A value longer than the file is the whole-file way's to refuse.
    let stored = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size == 0 || !bits.is_multiple_of(8) || at.offset + u64::from(len) > stored {
        return Ok(None);
    }
    let held = (u64::from(len) / size).max(1);
    let count = l.claimed.min(u32::try_from(held).unwrap_or(u32::MAX));
    if numbers.iter().any(|n| *n == 0 || *n > count) {
        return Err(ViewError::NoSuchFrame);
    }
    if let Some(accepted) = accepted
        && !takes(accepted, "application/octet-stream", false)
        && !takes(accepted, "application/octet-stream", true)
    {
        return Err(ViewError::NotAcceptable(
            "native frames are offered as application/octet-stream",
        ));
    }
    if size.saturating_mul(numbers.len() as u64) > PIXEL_BUDGET {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(numbers.len());
    for n in numbers {
        let start = u64::from(n - 1) * size;
        if start + size > u64::from(len) {
            return Err(super::internal("reading pixel data")(
                "pixel data shorter than its frames".into(),
            ));
        }
        data.push(read_at(file, at.offset + start, size)?);
    }
    Ok(Some(data))
}

/// Encapsulated frames as stored: the fragments of each, found from the item
/// headers and the offset table (Extended, or Basic).
fn encapsulated(
    l: &mut Located,
    numbers: &[u32],
    as_claimed: bool,
) -> Result<Option<Vec<Vec<u8>>>, ViewError> {
    let (header, file, claimed) = (&l.header, &mut l.file, l.claimed);
    let Some(items) = items(file, l.at.offset)? else {
        return Ok(None);
    };
    if as_claimed && claimed as usize > items.fragments.len() {
        return Ok(None);
    }
    let count = claimed.min(u32::try_from(items.fragments.len().max(1)).unwrap_or(u32::MAX));
    if numbers.iter().any(|n| *n == 0 || *n > count) {
        return Err(ViewError::NoSuchFrame);
    }
    let offsets = extended_offsets(header).unwrap_or(items.basic_offsets);
    let lens: Vec<u64> = items.fragments.iter().map(|f| f.len).collect();
    let ranges = frame_fragments_by(
        &lens,
        |i| starts_codestream(&items.fragments[i].head),
        &offsets,
        count,
    )?;
    let wanted: u64 = numbers
        .iter()
        .flat_map(|n| lens[ranges[*n as usize - 1].clone()].iter())
        .sum();
    if wanted > PIXEL_BUDGET {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(numbers.len());
    for n in numbers {
        let mut frame = Vec::new();
        for f in &items.fragments[ranges[*n as usize - 1].clone()] {
            frame.extend(read_at(file, f.offset, f.len)?);
        }
        data.push(frame);
    }
    Ok(Some(data))
}

struct Fragment {
    /// Of its value, from the file's first byte.
    offset: u64,
    len: u64,
    /// Its first bytes (up to 8): whether it begins a codestream.
    head: Vec<u8>,
}

struct Items {
    basic_offsets: Vec<u64>,
    fragments: Vec<Fragment>,
}

/// The items of encapsulated Pixel Data whose first item begins at
/// `offset`: the Basic Offset Table and each fragment's place. `None` for
/// anything but items closed by a sequence delimiter within the file.
fn items(file: &mut File, offset: u64) -> Result<Option<Items>, ViewError> {
    let io = |e: std::io::Error| super::internal("reading pixel data")(e.to_string());
    let end = file.metadata().map_err(io)?.len();
    let mut r = BufReader::with_capacity(8 << 10, &mut *file);
    r.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut pos = offset;
    let mut basic_offsets = Vec::new();
    let mut fragments = Vec::new();
    let mut first = true;
    loop {
        let mut h = [0u8; 8];
        if r.read_exact(&mut h).is_err() {
            return Ok(None);
        }
        pos += 8;
        let tag = (
            u16::from_le_bytes([h[0], h[1]]),
            u16::from_le_bytes([h[2], h[3]]),
        );
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if tag == (0xFFFE, 0xE0DD) {
            break;
        }
        if tag != (0xFFFE, 0xE000) || pos + u64::from(len) > end {
            return Ok(None);
        }
        if first {
            first = false;
            if len > MAX_OFFSET_TABLE || len % 4 != 0 {
                return Ok(None);
            }
            let mut table = vec![0u8; len as usize];
            r.read_exact(&mut table).map_err(io)?;
            basic_offsets = table
                .chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
        } else {
            if fragments.len() == MAX_FRAGMENTS {
                return Ok(None);
            }
            let mut head = vec![0u8; len.min(8) as usize];
            r.read_exact(&mut head).map_err(io)?;
            r.seek_relative(i64::from(len) - head.len() as i64)
                .map_err(io)?;
            fragments.push(Fragment {
                offset: pos,
                len: u64::from(len),
                head,
            });
        }
        pos += u64::from(len);
    }
    Ok(Some(Items {
        basic_offsets,
        fragments,
    }))
}

/// `len` bytes of `file` from `offset` (within the file: checked by whoever
/// found them there).
fn read_at(file: &mut File, offset: u64, len: u64) -> Result<Vec<u8>, ViewError> {
    let io = |e: std::io::Error| super::internal("reading pixel data")(e.to_string());
    let len =
        usize::try_from(len).map_err(|e| super::internal("reading pixel data")(e.to_string()))?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::{PixelFragmentSequence, Value};
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    use std::path::PathBuf;

    const SC: &str = "1.2.840.10008.5.1.4.1.1.7";

    /// A file of `frames` 4x4 frames of `bits` with `pixel` as its Pixel
    /// Data, in transfer syntax `ts`.
    fn file(
        dir: &Path,
        name: &str,
        ts: &str,
        frames: u32,
        bits: u16,
        pixel: Value<InMemDicomObject>,
    ) -> PathBuf {
        let mut obj = InMemDicomObject::new_empty();
        let text = |obj: &mut InMemDicomObject, tag, vr, v: &str| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        };
        text(&mut obj, tags::SOP_CLASS_UID, VR::UI, SC);
        text(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4");
        text(
            &mut obj,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &frames.to_string(),
        );
        // 8-bit frames of a JPEG codestream (what the encoder here writes),
        // and files named `ybr…`: colour.
        let colour = ts == "1.2.840.10008.1.2.4.50" || name.starts_with("ybr");
        let photometric = if colour {
            "YBR_FULL_422"
        } else {
            "MONOCHROME2"
        };
        text(
            &mut obj,
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            photometric,
        );
        if colour {
            obj.put(DataElement::new(
                tags::PLANAR_CONFIGURATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ));
        }
        for (tag, v) in [
            (tags::ROWS, 4),
            (tags::COLUMNS, 4),
            (tags::SAMPLES_PER_PIXEL, if colour { 3 } else { 1 }),
            (tags::BITS_ALLOCATED, bits),
            (tags::BITS_STORED, bits),
            (tags::HIGH_BIT, bits - 1),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        }
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, pixel));
        let path = dir.join(name);
        obj.with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid(SC)
                .media_storage_sop_instance_uid("1.2.3.4"),
        )
        .unwrap()
        .write_to_file(&path)
        .unwrap();
        path
    }

    /// An empty folder of this process's for a test's files.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn accept(media: &str, ts: Option<&str>) -> Vec<Accepted> {
        vec![Accepted {
            media: media.into(),
            transfer_syntax: ts.map(str::to_string),
        }]
    }

    /// What this path serves (and so never reads the whole file for), and
    /// what it leaves to the whole-object way.
    #[test]
    fn frames_are_read_by_their_ranges_where_they_can_be() {
        let dir = scratch("custos-ranges");
        let octets = accept("application/octet-stream", None);
        let native: Vec<u8> = (0..48u8).collect();
        let explicit = file(
            &dir,
            "le",
            "1.2.840.10008.1.2.1",
            3,
            8,
            PrimitiveValue::from(native.clone()).into(),
        );
        let got = read(&explicit, &[3, 1], &octets).unwrap().unwrap();
        assert_eq!(got.data, [native[32..].to_vec(), native[..16].to_vec()]);
        assert!(matches!(
            read(&explicit, &[4], &octets),
            Err(ViewError::NoSuchFrame)
        ));
        // JPEG: two fragments a frame, by the Basic Offset Table or by where
        // each codestream begins.
        let fragments: Vec<Vec<u8>> = (1..=3u8)
            .flat_map(|n| [vec![0xFF, 0xD8, n, n], vec![0, 1, n, n, n, n]])
            .collect();
        let jpeg = accept("image/jpeg", None);
        for (name, table) in [("bot", vec![0, 26, 52]), ("nobot", vec![])] {
            let path = file(
                &dir,
                name,
                "1.2.840.10008.1.2.4.50",
                3,
                8,
                Value::PixelSequence(PixelFragmentSequence::new(table, fragments.clone())),
            );
            let got = read(&path, &[2], &jpeg).unwrap().unwrap();
            assert_eq!(got.media, "image/jpeg");
            assert_eq!(got.data, [fragments[2..4].concat()], "{name}");
            // Decoding is the whole object's.
            assert!(read(&path, &[2], &octets).unwrap().is_none(), "{name}");
        }
        // Big endian words and a video: the whole object's too.
        let words: Vec<u16> = (0..16).collect();
        let big_endian = file(
            &dir,
            "be",
            "1.2.840.10008.1.2.2",
            1,
            16,
            PrimitiveValue::U16(words.into()).into(),
        );
        assert!(read(&big_endian, &[1], &octets).unwrap().is_none());
        let video = file(
            &dir,
            "video",
            "1.2.840.10008.1.2.4.102",
            1,
            8,
            Value::PixelSequence(PixelFragmentSequence::new(vec![], vec![vec![0; 8]])),
        );
        assert!(
            read(&video, &[1], &accept("video/mp4", None))
                .unwrap()
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Native YBR_FULL_422 frames hold two samples a pixel (they were read
    /// as three, the frames running into each other); an object without
    /// Pixel Data, or one claiming more frames than it has fragments, is
    /// left to the whole object.
    #[test]
    fn odd_files_are_read_right_or_left_to_the_whole_object() {
        let dir = scratch("custos-ranges-odd");
        let octets = accept("application/octet-stream", None);
        let pixels: Vec<u8> = (0..64u8).collect();
        let ybr = file(
            &dir,
            "ybr422",
            "1.2.840.10008.1.2.1",
            2,
            8,
            PrimitiveValue::from(pixels.clone()).into(),
        );
        let got = read(&ybr, &[2], &octets).unwrap().unwrap();
        assert_eq!(got.data, [pixels[32..].to_vec()]);
        let short = file(
            &dir,
            "short",
            "1.2.840.10008.1.2.4.50",
            3,
            8,
            Value::PixelSequence(PixelFragmentSequence::new(
                Vec::<u32>::new(),
                vec![vec![0xFF, 0xD8, 1, 1], vec![0xFF, 0xD8, 2, 2]],
            )),
        );
        assert!(single_frame(&short, 1).unwrap().is_none());
        let mut report = InMemDicomObject::new_empty();
        report.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.88.22"),
        ));
        let no_pixels = dir.join("sr");
        report
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.88.22")
                    .media_storage_sop_instance_uid("1.2.3.5"),
            )
            .unwrap()
            .write_to_file(&no_pixels)
            .unwrap();
        assert!(locate(&no_pixels).is_none());
        assert!(single_frame(&no_pixels, 1).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Pixel Data of more fragments than are walked, or with a Basic Offset
    /// Table over its bound, is left to the whole object (which refuses
    /// what it cannot hold), not read into bookkeeping here.
    #[test]
    fn fragments_and_offset_tables_past_their_bounds_are_not_walked() {
        let dir = scratch("custos-ranges-bounds");
        let jpeg = accept("image/jpeg", None);
        let one = file(
            &dir,
            "one",
            "1.2.840.10008.1.2.4.50",
            1,
            8,
            Value::PixelSequence(PixelFragmentSequence::new(
                Vec::<u32>::new(),
                vec![vec![0xFF, 0xD8, 1, 1]],
            )),
        );
        assert!(read(&one, &[1], &jpeg).unwrap().is_some());
        let bytes = std::fs::read(&one).unwrap();
        let at = locate_pixel_data(bytes.as_slice()).unwrap().unwrap();
        let head = &bytes[..at.offset as usize];
        let item = |len: u32| [[0xFE, 0xFF, 0x00, 0xE0], len.to_le_bytes()].concat();
        let end = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        // One empty fragment more than are walked.
        let mut many = [head, &item(0)].concat();
        many.extend(std::iter::repeat_n(item(0), MAX_FRAGMENTS + 1).flatten());
        many.extend(end);
        let path = dir.join("many");
        std::fs::write(&path, many).unwrap();
        assert!(read(&path, &[1], &jpeg).unwrap().is_none());
        // An offset table one entry over its bound.
        let mut table = [head, &item(MAX_OFFSET_TABLE + 4)].concat();
        table.extend(vec![0; MAX_OFFSET_TABLE as usize + 4]);
        table.extend(item(4));
        table.extend([0xFF, 0xD8, 1, 1]);
        table.extend(end);
        let path = dir.join("table");
        std::fs::write(&path, table).unwrap();
        assert!(read(&path, &[1], &jpeg).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A frame rendered from an instance of that frame alone is the frame
    /// rendered from the whole object: native and JPEG.
    #[test]
    fn one_frame_renders_as_it_does_from_the_whole_object() {
        use super::super::render::{RenderOptions, render};
        use dicom_pixeldata::image::codecs::jpeg::JpegEncoder;
        use dicom_pixeldata::image::{DynamicImage, RgbImage};
        let dir = scratch("custos-one-frame");
        let gray = |n: u8| -> Vec<u8> { (0..16u8).map(|i| i * 8 + n * 40).collect() };
        let jpeg = |n: u8| {
            let rgb: Vec<u8> = gray(n)
                .iter()
                .flat_map(|v| [*v, 255 - *v, *v / 2])
                .collect();
            let image = DynamicImage::ImageRgb8(RgbImage::from_raw(4, 4, rgb).unwrap());
            let mut out = Vec::new();
            JpegEncoder::new_with_quality(&mut out, 95)
                .encode_image(&image)
                .unwrap();
            if out.len() % 2 == 1 {
                out.push(0);
            }
            out
        };
        let native = file(
            &dir,
            "native",
            "1.2.840.10008.1.2.1",
            3,
            8,
            PrimitiveValue::from([gray(0), gray(1), gray(2)].concat()).into(),
        );
        let encapsulated = file(
            &dir,
            "jpeg",
            "1.2.840.10008.1.2.4.50",
            3,
            8,
            Value::PixelSequence(PixelFragmentSequence::new(
                Vec::<u32>::new(),
                vec![jpeg(0), jpeg(1), jpeg(2)],
            )),
        );
        for path in [native, encapsulated] {
            let options = |frame| RenderOptions {
                png: true,
                frame,
                ..RenderOptions::default()
            };
            let whole = OpenFileOptions::new().open_file(&path).unwrap();
            let one = single_frame(&path, 2).unwrap().unwrap();
            assert_eq!(
                render(&one, &options(1)).unwrap(),
                render(&whole, &options(2)).unwrap(),
                "{}",
                path.display()
            );
            assert!(matches!(
                single_frame(&path, 4),
                Err(ViewError::NoSuchFrame)
            ));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
