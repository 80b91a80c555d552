//! Frames read by their byte ranges. Viewers ask for a multi-frame
//! instance's frames one request at a time (OHIF does, for a cine or a
//! tomosynthesis), and each request used to read and parse the whole file:
//! a 200 MB cine cost 200 MB of reading and memory per frame, and an
//! instance over 256 MiB could not be viewed at all. From a stored file, the
//! header is parsed, the Pixel Data located (`lengths::locate_pixel_data`,
//! which checks the header's lengths as it goes), and only the frames asked
//! for are read: native ones at their offsets, encapsulated ones from their
//! fragments, found by walking the item headers. What cannot be served this
//! way — frames to decode, a video, a deflated data set, fragments that do
//! not map to frames by their headers — goes the whole-file way.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;

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

/// Frames `numbers` (1-based) of the Part 10 file at `path`, or `None` when
/// they are to be had from the whole file instead.
pub(super) fn read(
    path: &Path,
    numbers: &[u32],
    accepted: &[Accepted],
) -> Result<Option<Frames>, ViewError> {
    // Anything unexpected here is the whole-file way's to report.
    let Ok(header) = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
    else {
        return Ok(None);
    };
    let Ok(mut file) = File::open(path) else {
        return Ok(None);
    };
    let Ok(Some(at)) = locate_pixel_data(BufReader::new(&mut file)) else {
        return Ok(None);
    };
    let ts = header
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let media = frame_media_type(&ts);
    let claimed = int(&header, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    match at.len {
        // Big endian words are handed out in little endian, as decoded:
        // from the whole object.
        Some(_) if ts == "1.2.840.10008.1.2.2" => Ok(None),
        Some(len) => native(&mut file, &header, at, len, claimed, numbers, accepted),
        None if media.starts_with("video/") => Ok(None),
        None => {
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
            let Some(data) = encapsulated(&mut file, &header, at, claimed, numbers)? else {
                return Ok(None);
            };
            Ok(Some(Frames {
                media: media.into(),
                part_type: format!("{media}; transfer-syntax={ts}"),
                data,
            }))
        }
    }
}

/// Native frames: each `frame_bytes` long, one after the other.
fn native(
    file: &mut File,
    header: &dicom_object::DefaultDicomObject,
    at: PixelAt,
    len: u32,
    claimed: u32,
    numbers: &[u32],
    accepted: &[Accepted],
) -> Result<Option<Frames>, ViewError> {
    let size = frame_bytes(header);
    let bits = int(header, tags::BITS_ALLOCATED).unwrap_or(16);
    // A value longer than the file is the whole-file way's to refuse.
    let stored = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size == 0 || !bits.is_multiple_of(8) || at.offset + u64::from(len) > stored {
        return Ok(None);
    }
    let held = (u64::from(len) / size).max(1);
    let count = claimed.min(u32::try_from(held).unwrap_or(u32::MAX));
    if numbers.iter().any(|n| *n == 0 || *n > count) {
        return Err(ViewError::NoSuchFrame);
    }
    if !takes(accepted, "application/octet-stream", false)
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
    Ok(Some(octet_stream(data)))
}

/// Encapsulated frames as stored: the fragments of each, found from the item
/// headers and the offset table (Extended, or Basic).
fn encapsulated(
    file: &mut File,
    header: &dicom_object::DefaultDicomObject,
    at: PixelAt,
    claimed: u32,
    numbers: &[u32],
) -> Result<Option<Vec<Vec<u8>>>, ViewError> {
    let Some(items) = items(file, at.offset)? else {
        return Ok(None);
    };
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
