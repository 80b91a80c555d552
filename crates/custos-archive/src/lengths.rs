//! Declared element lengths checked against the bytes that are really there,
//! before dicom-parser sees them.
//!
//! dicom-parser (0.10) allocates an element's declared length before reading
//! its value: a 20-byte command set that declares a 4 GiB element makes the
//! server zero 4 GiB. This walk reads element headers only, enters sequences
//! and items, and passes over each value by reading (or seeking past) it, so a
//! length longer than what follows is refused without allocating anything.
//! What passes here is parsed by dicom-parser as before; this is a length
//! guard, not a second parser.

use std::io::{self, Read};

use dicom_core::{Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);

/// How a data set is encoded (the transfer syntax's VR and byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

impl Encoding {
    pub const IMPLICIT_LE: Encoding = Encoding {
        explicit_vr: false,
        big_endian: false,
    };
    pub const EXPLICIT_LE: Encoding = Encoding {
        explicit_vr: true,
        big_endian: false,
    };
    pub const EXPLICIT_BE: Encoding = Encoding {
        explicit_vr: true,
        big_endian: true,
    };

    /// The encoding of a native (or encapsulated) transfer syntax's data set;
    /// deflated ones are this after inflation.
    pub fn of_transfer_syntax(uid: &str) -> Encoding {
        match uid.trim_end_matches(['\0', ' ']) {
            "1.2.840.10008.1.2" => Encoding::IMPLICIT_LE,
            "1.2.840.10008.1.2.2" => Encoding::EXPLICIT_BE,
            _ => Encoding::EXPLICIT_LE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LengthError {
    #[error("element {tag} declares {declared} bytes but the data ends before them")]
    BeyondData { tag: Tag, declared: u32 },
    #[error("element {tag} declares {declared} bytes, more than its enclosing item holds")]
    BeyondItem { tag: Tag, declared: u32 },
    #[error(
        "element {tag} declares {declared} bytes, not a whole number of its {unit}-byte values (delimiters: none)"
    )]
    Misaligned { tag: Tag, declared: u32, unit: u32 },
    #[error("the file meta group length says {declared} bytes, its elements take {actual}")]
    MetaGroupLength { declared: u64, actual: u64 },
    #[error("file meta element {tag} repeated or out of order")]
    MetaOrder { tag: Tag },
    #[error("file meta element {tag} inside the data set")]
    MetaInDataSet { tag: Tag },
    #[error("element {tag} has no valid VR")]
    UnknownVr { tag: Tag },
    #[error("{tag} is neither an item nor a delimiter")]
    NotAnElement { tag: Tag },
    #[error("data set nested deeper than {MAX_DEPTH} sequences")]
    TooDeep,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Deepest nesting of sequences accepted (real data sets use a handful).
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Frame {
    /// A sequence's items follow.
    Sequence,
    /// An item's elements follow.
    Item,
    /// Encapsulated pixel data: items are raw fragments.
    Fragments,
}

/// Walks a data set from `r` and fails on the first element whose declared
/// length is not backed by data. With `stop_at_pixel_data`, stops at the
/// top-level Pixel Data (what ingest parses). The end of the data at an
/// element boundary ends the walk without error: a truncated data set is
/// dicom-parser's to report.
pub fn check<R: Read>(r: R, enc: Encoding, stop_at_pixel_data: bool) -> Result<(), LengthError> {
    walk(r, enc, stop_at_pixel_data).map(|_| ())
}

/// [`check`], and where the top-level Pixel Data's value begins (its offset
/// from the data set's start) and its declared length, when it stopped there.
fn walk<R: Read>(
    r: R,
    enc: Encoding,
    stop_at_pixel_data: bool,
) -> Result<Option<(u64, u32)>, LengthError> {
    let mut r = Counting { inner: r, pos: 0 };
    // Open containers and, for those of defined length, where they end.
    let base = enc;
    let mut stack: Vec<Open> = Vec::new();
    loop {
        while let Some((_, Some(end), _)) = stack.last() {
            if r.pos < *end {
                break;
            }
            stack.pop();
        }
        // Inside an explicit-VR UN of undefined length, the content is
        // implicit VR little endian (PS3.5 6.2.2).
        let enc = stack.last().map_or(base, |f| f.2);
        let Some(tag) = read_tag(&mut r, enc)? else {
            return Ok(None);
        };
        let end_of_parent = stack.iter().rev().find_map(|f| f.1);
        // The file meta group has its own encoding, which dicom-parser
        // applies to a group 2 element wherever it is (found by fuzzing: it
        // then reads the rest out of step, zero-filling gigabytes).
        if tag.group() == 0x0002 {
            return Err(LengthError::MetaInDataSet { tag });
        }
        if tag.group() == 0xFFFE {
            let len = read_u32(&mut r, enc.big_endian)?;
            match tag {
                ITEM if stack.last().map(|f| f.0) == Some(Frame::Fragments) => {
                    skip(&mut r, tag, len, end_of_parent)?;
                }
                ITEM => {
                    let end = defined(len)
                        .map(|l| fits(&r, tag, l, end_of_parent))
                        .transpose()?;
                    push(&mut stack, (Frame::Item, end, enc))?;
                }
                // Delimiters carry no value; any other tag of this group is
                // not an element (dicom-parser reads neither the way we would).
                ITEM_END | SEQUENCE_END if len != 0 => {
                    return Err(LengthError::Misaligned {
                        tag,
                        declared: len,
                        unit: 0,
                    });
                }
                ITEM_END => {
                    if stack.last().map(|f| f.0) == Some(Frame::Item) {
                        stack.pop();
                    }
                }
                SEQUENCE_END => {
                    while let Some((f, _, _)) = stack.pop() {
                        if f != Frame::Item {
                            break;
                        }
                    }
                }
                _ => return Err(LengthError::NotAnElement { tag }),
            }
            continue;
        }
        let (vr, len) = if enc.explicit_vr {
            let mut v = [0u8; 2];
            r.read_exact(&mut v)?;
            let vr = VR::from_binary(v).ok_or(LengthError::UnknownVr { tag })?;
            let len = if has_long_length(vr) {
                r.read_exact(&mut [0u8; 2])?;
                read_u32(&mut r, enc.big_endian)?
            } else {
                let mut b = [0u8; 2];
                r.read_exact(&mut b)?;
                u32::from(if enc.big_endian {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                })
            };
            (Some(vr), len)
        } else {
            (None, read_u32(&mut r, enc.big_endian)?)
        };
        if tag == tags::PIXEL_DATA && stop_at_pixel_data && stack.is_empty() {
            return Ok(Some((r.pos, len)));
        }
        let is_sequence = match vr {
            Some(vr) => vr == VR::SQ,
            None => dictionary_vr(tag) == Some(VR::SQ),
        };
        if is_sequence || (len == UNDEFINED && !is_bulk(tag, vr)) {
            let end = defined(len)
                .map(|l| fits(&r, tag, l, end_of_parent))
                .transpose()?;
            let inner = if vr == Some(VR::UN) && len == UNDEFINED {
                Encoding::IMPLICIT_LE
            } else {
                enc
            };
            push(&mut stack, (Frame::Sequence, end, inner))?;
        } else if len == UNDEFINED {
            push(&mut stack, (Frame::Fragments, None, enc))?;
        } else {
            // dicom-parser reads whole binary values: a length that is not a
            // multiple of their size leaves it out of step with the data, and
            // the "lengths" it then reads were never checked here (fuzzing
            // found a 33-byte command set that made it zero-fill gigabytes).
            let value_vr = vr.or_else(|| dictionary_vr(tag));
            let unit = if tag.element() == 0 {
                4 // group length: UL whatever the dictionary says
            } else {
                value_vr.map_or(1, unit_size)
            };
            if len % unit != 0 {
                return Err(LengthError::Misaligned {
                    tag,
                    declared: len,
                    unit,
                });
            }
            skip(&mut r, tag, len, end_of_parent)?;
        }
    }
}

/// The size of one value of a binary VR (1 for the others).
fn unit_size(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::AT | VR::OF | VR::OL => 4,
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => 8,
        _ => 1,
    }
}

/// Checks a Part 10 file (preamble, meta group, data set up to the top-level
/// Pixel Data). A deflated data set is walked through the inflater, so what
/// is read is bounded by the inflated bytes really present; the amplification
/// of a deflate bomb is the time it takes to inflate, not memory.
pub fn check_part10<R: Read>(r: R) -> Result<(), LengthError> {
    check_file(r, true).map(|_| ())
}

/// Where a Part 10 file's top-level Pixel Data value lies, found by
/// [`check_part10`]'s walk (so its header's lengths are checked too): what
/// reads frames by their byte ranges instead of the whole file. `None` when
/// there is none, or it cannot be reached by offset (a deflated data set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelAt {
    /// From the file's first byte.
    pub offset: u64,
    /// `None`: undefined (encapsulated fragments follow).
    pub len: Option<u32>,
}

pub fn locate_pixel_data<R: Read>(r: R) -> Result<Option<PixelAt>, LengthError> {
    check_file(r, true)
}

/// [`check_part10`] through the whole file, Pixel Data and its fragments
/// included: before a whole stored object is parsed (frames, rendering,
/// conversions), since dicom-parser allocates Pixel Data's declared length
/// as it does any other (ingest stops before it, so a file whose Pixel Data
/// claims more than follows could be stored).
pub fn check_part10_whole<R: Read>(r: R) -> Result<(), LengthError> {
    check_file(r, false).map(|_| ())
}

fn check_file<R: Read>(r: R, stop_at_pixel_data: bool) -> Result<Option<PixelAt>, LengthError> {
    let mut r = io::BufReader::new(r);
    let mut preamble = [0u8; 132];
    if r.read_exact(&mut preamble).is_err() || &preamble[128..] != b"DICM" {
        // Not Part 10: dicom-object reports it.
        return Ok(None);
    }
    // Where the data set begins: after the preamble and the meta elements.
    let mut data_set_at = 132u64;
    let mut transfer_syntax = String::new();
    // (0002,0000)'s value and the bytes of the meta elements after it:
    // dicom-object trusts the group length, so the two must agree (found by
    // fuzzing: a longer one made it read the data set out of step).
    let (mut group_length, mut counted) = (None, 0u64);
    // Each meta element once, in order: dicom-object takes the first of two
    // group lengths, this walk the last (found by fuzzing: a repeated
    // (0002,0000) declaring 1.3 GB).
    let mut previous: Option<Tag> = None;
    let first_after_meta = loop {
        let mut t = [0u8; 4];
        match r.read(&mut t[..1])? {
            0 => return Ok(None),
            _ => r.read_exact(&mut t[1..])?,
        }
        let tag = Tag(
            u16::from_le_bytes([t[0], t[1]]),
            u16::from_le_bytes([t[2], t[3]]),
        );
        if tag.group() != 0x0002 {
            if group_length.is_some_and(|g| g != counted) {
                return Err(LengthError::MetaGroupLength {
                    declared: group_length.unwrap_or_default(),
                    actual: counted,
                });
            }
            break t;
        }
        if previous.is_some_and(|p| tag <= p) {
            return Err(LengthError::MetaOrder { tag });
        }
        previous = Some(tag);
        let mut v = [0u8; 2];
        r.read_exact(&mut v)?;
        // An unknown VR code puts dicom-object's meta reader out of step
        // with these bytes (found by fuzzing: a 2 GB zero-filled value).
        let mut header = 8;
        let len = match VR::from_binary(v) {
            None => return Err(LengthError::UnknownVr { tag }),
            Some(vr) if has_long_length(vr) => {
                r.read_exact(&mut [0u8; 2])?;
                header = 12;
                read_u32(&mut r, false)?
            }
            _ => {
                let mut b = [0u8; 2];
                r.read_exact(&mut b)?;
                u32::from(u16::from_le_bytes(b))
            }
        };
        if len > MAX_META_ELEMENT {
            return Err(LengthError::BeyondItem { tag, declared: len });
        }
        let mut value = Vec::new();
        r.by_ref().take(u64::from(len)).read_to_end(&mut value)?;
        if value.len() < len as usize {
            return Err(LengthError::BeyondData { tag, declared: len });
        }
        data_set_at += header + u64::from(len);
        if tag == tags::FILE_META_INFORMATION_GROUP_LENGTH {
            let bytes: [u8; 4] =
                value
                    .as_slice()
                    .try_into()
                    .map_err(|_| LengthError::Misaligned {
                        tag,
                        declared: len,
                        unit: 4,
                    })?;
            group_length = Some(u64::from(u32::from_le_bytes(bytes)));
        } else if group_length.is_some() {
            counted += header + u64::from(len);
        }
        if tag == tags::TRANSFER_SYNTAX_UID {
            transfer_syntax = String::from_utf8_lossy(&value).into_owned();
        }
    };
    let rest = io::Cursor::new(first_after_meta).chain(r);
    let ts = transfer_syntax.trim_end_matches(['\0', ' ']);
    if ts == DEFLATED_EXPLICIT_LE {
        // The tag already read is compressed bytes too.
        // A deflate bomb costs inflating time, not memory: bound it too.
        let inflated = Capped {
            inner: flate2::read::DeflateDecoder::new(rest),
            left: if stop_at_pixel_data {
                MAX_INFLATED_HEADER
            } else {
                MAX_INFLATED_WHOLE
            },
        };
        walk(inflated, Encoding::EXPLICIT_LE, stop_at_pixel_data).map(|_| None)
    } else {
        let found = walk(rest, Encoding::of_transfer_syntax(ts), stop_at_pixel_data)?;
        Ok(found.map(|(at, len)| PixelAt {
            offset: data_set_at + at,
            len: defined(len),
        }))
    }
}

const DEFLATED_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1.99";

/// Most bytes a deflated data set may inflate to before its Pixel Data (the
/// attributes the index reads; real ones are kilobytes).
const MAX_INFLATED_HEADER: u64 = 256 << 20;

/// Most bytes a deflated data set may inflate to when checked whole.
const MAX_INFLATED_WHOLE: u64 = 1 << 30;

/// A reader that fails, rather than ends, past `left` bytes.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the deflated data set inflates beyond 256 MiB before its pixel data",
            )
        })?;
        Ok(n)
    }
}

/// Largest file meta element accepted (they hold UIDs and AE titles).
const MAX_META_ELEMENT: u32 = 64 * 1024;

/// An open container, where it ends if its length is defined, and the
/// encoding of what it holds.
type Open = (Frame, Option<u64>, Encoding);

fn push(stack: &mut Vec<Open>, open: Open) -> Result<(), LengthError> {
    if stack.len() >= MAX_DEPTH * 2 {
        return Err(LengthError::TooDeep);
    }
    stack.push(open);
    Ok(())
}

fn defined(len: u32) -> Option<u32> {
    (len != UNDEFINED).then_some(len)
}

/// The end offset of a container of `len` bytes starting here, if its parent holds it.
fn fits<R>(
    r: &Counting<R>,
    tag: Tag,
    len: u32,
    parent_end: Option<u64>,
) -> Result<u64, LengthError> {
    let end = r.pos + u64::from(len);
    if parent_end.is_some_and(|p| end > p) {
        return Err(LengthError::BeyondItem { tag, declared: len });
    }
    Ok(end)
}

/// Passes over a value by reading it through a small buffer.
fn skip<R: Read>(
    r: &mut Counting<R>,
    tag: Tag,
    len: u32,
    parent_end: Option<u64>,
) -> Result<(), LengthError> {
    if len == UNDEFINED {
        return Ok(());
    }
    fits(r, tag, len, parent_end)?;
    let copied = io::copy(&mut r.by_ref().take(u64::from(len)), &mut io::sink())?;
    if copied < u64::from(len) {
        return Err(LengthError::BeyondData { tag, declared: len });
    }
    Ok(())
}

/// Explicit VRs whose length has 4 bytes (PS3.5 7.1.2).
fn has_long_length(vr: VR) -> bool {
    use VR::*;
    matches!(
        vr,
        OB | OD | OF | OL | OV | OW | SQ | SV | UC | UN | UR | UT | UV
    )
}

/// Elements whose undefined length means encapsulated fragments, not a sequence.
fn is_bulk(tag: Tag, vr: Option<VR>) -> bool {
    tag == tags::PIXEL_DATA || matches!(vr, Some(VR::OB) | Some(VR::OW))
}

fn dictionary_vr(tag: Tag) -> Option<VR> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed())
}

/// The next tag, or `None` at the end of the data (between elements).
fn read_tag<R: Read>(r: &mut Counting<R>, enc: Encoding) -> Result<Option<Tag>, LengthError> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut b[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            n => got += n,
        }
    }
    let (g, e) = if enc.big_endian {
        (
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        )
    } else {
        (
            u16::from_le_bytes([b[0], b[1]]),
            u16::from_le_bytes([b[2], b[3]]),
        )
    };
    Ok(Some(Tag(g, e)))
}

fn read_u32<R: Read>(r: &mut R, big_endian: bool) -> Result<u32, LengthError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// A reader that knows how far it has read.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element_le(
        out: &mut Vec<u8>,
        g: u16,
        e: u16,
        vr: Option<&[u8; 2]>,
        value: &[u8],
        declared: Option<u32>,
    ) {
        out.extend(g.to_le_bytes());
        out.extend(e.to_le_bytes());
        let len = declared.unwrap_or(value.len() as u32);
        match vr {
            Some(vr) if has_long_length(VR::from_binary(*vr).unwrap()) => {
                out.extend(vr);
                out.extend([0, 0]);
                out.extend(len.to_le_bytes());
            }
            Some(vr) => {
                out.extend(vr);
                out.extend((len as u16).to_le_bytes());
            }
            None => out.extend(len.to_le_bytes()),
        }
        out.extend(value);
    }

    #[test]
    fn a_well_formed_command_set_passes() {
        let mut b = Vec::new();
        element_le(&mut b, 0x0000, 0x0100, None, &[0x20, 0], None);
        element_le(&mut b, 0x0000, 0x0110, None, &[1, 0], None);
        check(b.as_slice(), Encoding::IMPLICIT_LE, false).unwrap();
    }

    #[test]
    fn a_length_beyond_the_data_is_refused_without_allocating_it() {
        let mut b = Vec::new();
        element_le(&mut b, 0x0000, 0x0100, None, &[0x20, 0], None);
        element_le(&mut b, 0x0000, 0x0902, None, b"x", Some(0xFFFF_FFF0));
        let e = check(b.as_slice(), Encoding::IMPLICIT_LE, false).unwrap_err();
        assert!(
            matches!(
                e,
                LengthError::BeyondData {
                    declared: 0xFFFF_FFF0,
                    ..
                }
            ),
            "{e}"
        );
        // and dicom-parser would have tried to allocate it: that is what this guards.
    }

    #[test]
    fn binary_values_of_odd_length_are_refused() {
        // Found by `scripts/fuzz` (dimse_command): a group length of 1 byte
        // put dicom-parser out of step with the data, and it then zero-filled
        // a buffer of a length nobody declared: seconds of CPU, gigabytes.
        let bomb: &[u8] = &[
            0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 253, 26, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0,
            0, 255, 255, 255, 255,
        ];
        assert!(matches!(
            check(bomb, Encoding::IMPLICIT_LE, false),
            Err(LengthError::Misaligned { unit: 4, .. })
        ));
        // Explicit VR: a US of 3 bytes.
        let mut us = Vec::new();
        us.extend_from_slice(&[0x28, 0, 0x10, 0]); // (0028,0010) Rows
        us.extend_from_slice(b"US");
        us.extend_from_slice(&3u16.to_le_bytes());
        us.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            check(us.as_slice(), Encoding::EXPLICIT_LE, false),
            Err(LengthError::Misaligned { unit: 2, .. })
        ));
        us[6] = 2;
        us.pop();
        assert!(check(us.as_slice(), Encoding::EXPLICIT_LE, false).is_ok());
        // Also found by fuzzing: (FFFE,0000) with a value, which dicom-parser
        // reads as a bare item header; and delimiters must be empty.
        let mut odd = vec![0xfe, 0xff, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            check(odd.as_slice(), Encoding::IMPLICIT_LE, false),
            Err(LengthError::NotAnElement { .. })
        ));
        odd[2..4].copy_from_slice(&[0x0d, 0xe0]); // (FFFE,E00D) item end, length 1
        assert!(matches!(
            check(odd.as_slice(), Encoding::IMPLICIT_LE, false),
            Err(LengthError::Misaligned { unit: 0, .. })
        ));
    }

    #[test]
    fn a_repeated_meta_group_length_is_refused() {
        let file =
            include_bytes!("../../../fuzz/regressions/stored_file/repeated-meta-group-length");
        assert!(matches!(
            check_part10(file.as_slice()),
            Err(LengthError::MetaOrder { .. })
        ));
        assert!(crate::ingest::parse_bytes(file).is_err());
    }

    #[test]
    fn a_file_without_its_preamble_is_checked_like_any_other() {
        // Found by `scripts/fuzz` (stored_file): starting at DICM, the file
        // skipped this check (no preamble, "not Part 10") while dicom-object
        // detected the missing preamble and parsed it, out of step, into a
        // 2 GB zero-filled buffer. The parse now insists on the preamble
        // (which `Ingest::write` adds), so the two read the same bytes.
        let file = include_bytes!(
            "../../../fuzz/regressions/stored_file/preamble-less-slow-parse-1436-bytes"
        );
        assert!(crate::ingest::parse_bytes(file).is_err());
        let mut with_preamble = vec![0u8; 128];
        with_preamble.extend_from_slice(file);
        assert!(check_part10(with_preamble.as_slice()).is_err());
    }

    #[test]
    fn an_unknown_vr_is_refused() {
        // Found by `scripts/fuzz` (stored_file): (0002,0002) with VR "\0\0"
        // put dicom-object's meta reader out of step (seconds, gigabytes).
        let file = include_bytes!("../../../fuzz/regressions/stored_file/unknown-vr-in-meta");
        assert!(matches!(
            check_part10(file.as_slice()),
            Err(LengthError::UnknownVr { .. })
        ));
        // And a group 2 element after the meta, which dicom-parser reads as
        // explicit VR whatever the data set's syntax.
        // (This file's group length is wrong too; the rule is checked alone below.)
        let file = include_bytes!("../../../fuzz/regressions/stored_file/meta-group-in-data-set");
        assert!(check_part10(file.as_slice()).is_err());
        let mut b = Vec::new();
        element_le(&mut b, 0x0002, 0x0010, None, b"1.2.840.10008.1.2\0", None);
        assert!(matches!(
            check(b.as_slice(), Encoding::IMPLICIT_LE, false),
            Err(LengthError::MetaInDataSet { .. })
        ));
        // And a meta group length longer than the meta elements.
        let file =
            include_bytes!("../../../fuzz/regressions/stored_file/meta-group-length-too-long");
        assert!(matches!(
            check_part10(file.as_slice()),
            Err(LengthError::MetaGroupLength {
                declared: 206,
                actual: 148
            })
        ));
    }

    #[test]
    fn elements_inside_sequences_are_checked_too() {
        // (0008,1115) ReferencedSeriesSequence, undefined length, one item
        // whose element lies about its length.
        let mut item = Vec::new();
        element_le(&mut item, 0x0020, 0x000E, Some(b"UI"), b"1.2", Some(0x7FF0));
        let mut b = Vec::new();
        element_le(&mut b, 0x0008, 0x0052, Some(b"CS"), b"SERIES", None);
        b.extend([0x08, 0x00, 0x15, 0x11]);
        b.extend(b"SQ");
        b.extend([0, 0]);
        b.extend(UNDEFINED.to_le_bytes());
        b.extend([0xFE, 0xFF, 0x00, 0xE0]);
        b.extend((item.len() as u32).to_le_bytes());
        b.extend(&item);
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let e = check(b.as_slice(), Encoding::EXPLICIT_LE, false).unwrap_err();
        assert!(
            matches!(
                e,
                LengthError::BeyondItem { .. } | LengthError::BeyondData { .. }
            ),
            "{e}"
        );
        // The same item with an honest length passes.
        let mut item = Vec::new();
        element_le(&mut item, 0x0020, 0x000E, Some(b"UI"), b"1.2\0", None);
        let mut ok = Vec::new();
        ok.extend([0x08, 0x00, 0x15, 0x11]);
        ok.extend(b"SQ");
        ok.extend([0, 0]);
        ok.extend(((item.len() + 8) as u32).to_le_bytes());
        ok.extend([0xFE, 0xFF, 0x00, 0xE0]);
        ok.extend((item.len() as u32).to_le_bytes());
        ok.extend(&item);
        element_le(&mut ok, 0x0010, 0x0010, Some(b"PN"), b"A^B ", None);
        check(ok.as_slice(), Encoding::EXPLICIT_LE, false).unwrap();
    }

    #[test]
    fn implicit_sequences_are_known_from_the_dictionary() {
        // (0040,A730) ContentSequence, defined length, implicit VR: its item's
        // element must still be checked.
        let mut inner = Vec::new();
        element_le(&mut inner, 0x0040, 0xA160, None, b"ab", Some(0x1000));
        let mut item = Vec::new();
        item.extend([0xFE, 0xFF, 0x00, 0xE0]);
        item.extend((inner.len() as u32).to_le_bytes());
        item.extend(&inner);
        let mut b = Vec::new();
        element_le(&mut b, 0x0040, 0xA730, None, &item, None);
        assert!(check(b.as_slice(), Encoding::IMPLICIT_LE, false).is_err());
    }

    #[test]
    fn ingest_stops_at_pixel_data_and_walks_encapsulated_fragments() {
        let mut b = Vec::new();
        element_le(&mut b, 0x0028, 0x0010, Some(b"US"), &[8, 0], None);
        b.extend(pixel_fragments_start());
        b.extend([0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 0xFE, 0xFF, 0x00, 0xE0]); // fragment that looks like an item tag
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        check(b.as_slice(), Encoding::EXPLICIT_LE, true).unwrap();
        check(b.as_slice(), Encoding::EXPLICIT_LE, false).unwrap();
    }

    /// Pixel Data of undefined length (OB) and an empty offset table.
    fn pixel_fragments_start() -> Vec<u8> {
        let mut b = vec![0xE0, 0x7F, 0x10, 0x00];
        b.extend(b"OB");
        b.extend([0, 0]);
        b.extend(UNDEFINED.to_le_bytes());
        b.extend([0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        b
    }

    fn part10(ts: &str, data_set: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 128];
        f.extend(b"DICM");
        let mut uid = ts.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        element_le(&mut f, 0x0002, 0x0010, Some(b"UI"), &uid, None);
        f.extend(data_set);
        f
    }

    #[test]
    fn pixel_data_is_located_from_the_files_first_byte() {
        let mut native = Vec::new();
        element_le(&mut native, 0x0028, 0x0010, Some(b"US"), &[8, 0], None);
        element_le(&mut native, 0x7FE0, 0x0010, Some(b"OW"), &[7; 16], None);
        let file = part10("1.2.840.10008.1.2.1", &native);
        let at = locate_pixel_data(file.as_slice()).unwrap().unwrap();
        assert_eq!(at.len, Some(16));
        assert_eq!(file[at.offset as usize..], [7; 16]);
        // Implicit VR: the value after a 4-byte length.
        let mut implicit = Vec::new();
        element_le(&mut implicit, 0x0028, 0x0010, None, &[8, 0], None);
        element_le(&mut implicit, 0x7FE0, 0x0010, None, &[9; 8], None);
        let file = part10("1.2.840.10008.1.2", &implicit);
        let at = locate_pixel_data(file.as_slice()).unwrap().unwrap();
        assert_eq!(
            (at.len, &file[at.offset as usize..]),
            (Some(8), &[9u8; 8][..])
        );
        // Encapsulated: undefined, at the first item.
        let encapsulated = pixel_fragments_start();
        let file = part10("1.2.840.10008.1.2.4.50", &encapsulated);
        let at = locate_pixel_data(file.as_slice()).unwrap().unwrap();
        assert_eq!(at.len, None);
        assert_eq!(file[at.offset as usize..][..4], [0xFE, 0xFF, 0x00, 0xE0]);
        // None without Pixel Data.
        let file = part10("1.2.840.10008.1.2.1", &native[..10]);
        assert_eq!(locate_pixel_data(file.as_slice()).unwrap(), None);
    }

    #[test]
    fn pixel_data_claiming_more_than_follows_is_refused_before_a_whole_parse() {
        let ts = "1.2.840.10008.1.2.1";
        let mut native = Vec::new();
        element_le(&mut native, 0x0028, 0x0010, Some(b"US"), &[8, 0], None);
        let honest = {
            let mut b = native.clone();
            element_le(&mut b, 0x7FE0, 0x0010, Some(b"OW"), &[0; 16], None);
            b
        };
        element_le(
            &mut native,
            0x7FE0,
            0x0010,
            Some(b"OW"),
            &[0; 16],
            Some(0xFFFF_FFF0),
        );
        // Ingest reads up to Pixel Data: both pass there.
        check_part10(part10(ts, &native).as_slice()).unwrap();
        check_part10_whole(part10(ts, &honest).as_slice()).unwrap();
        assert!(matches!(
            check_part10_whole(part10(ts, &native).as_slice()),
            Err(LengthError::BeyondData { .. })
        ));
        // A fragment of encapsulated Pixel Data that claims 4 GB.
        let mut encapsulated = pixel_fragments_start();
        encapsulated.extend([0xFE, 0xFF, 0x00, 0xE0, 0xF0, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4]);
        let ts = "1.2.840.10008.1.2.4.50";
        check_part10(part10(ts, &encapsulated).as_slice()).unwrap();
        assert!(check_part10_whole(part10(ts, &encapsulated).as_slice()).is_err());
    }

    #[test]
    fn part10_files_are_walked_in_their_transfer_syntax_including_deflate() {
        use std::io::Write;
        let mut honest = Vec::new();
        element_le(&mut honest, 0x0010, 0x0010, None, b"DOE^J ", None);
        let mut lying = honest.clone();
        element_le(&mut lying, 0x0010, 0x0020, None, b"12", Some(0xFFFF_FFF0));
        check_part10(part10("1.2.840.10008.1.2", &honest).as_slice()).unwrap();
        assert!(check_part10(part10("1.2.840.10008.1.2", &lying).as_slice()).is_err());
        // Deflated: explicit VR inside the compressed stream.
        let deflate = |b: &[u8]| {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(b).unwrap();
            z.finish().unwrap()
        };
        let mut honest = Vec::new();
        element_le(&mut honest, 0x0010, 0x0010, Some(b"PN"), b"DOE^J ", None);
        let mut lying = honest.clone();
        element_le(
            &mut lying,
            0x0042,
            0x0011,
            Some(b"OB"),
            b"12",
            Some(0xFFFF_FFF0),
        );
        let ts = "1.2.840.10008.1.2.1.99";
        check_part10(part10(ts, &deflate(&honest)).as_slice()).unwrap();
        assert!(check_part10(part10(ts, &deflate(&lying)).as_slice()).is_err());
        // A meta element longer than any real one is refused before it is read.
        let mut f = vec![0u8; 128];
        f.extend(b"DICM");
        element_le(&mut f, 0x0002, 0x0001, Some(b"OB"), b"", Some(0x1000_0000));
        assert!(check_part10(f.as_slice()).is_err());
    }

    #[test]
    fn a_deflate_bomb_before_the_pixel_data_is_refused() {
        use std::io::Write;
        // One 300 MiB OB of zeros (defined length), deflated to ~300 KB.
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let len: u32 = 300 << 20;
        z.write_all(&[0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0])
            .unwrap();
        z.write_all(&len.to_le_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..300 {
            z.write_all(&zeros).unwrap();
        }
        let bomb = z.finish().unwrap();
        let e = check_part10(part10("1.2.840.10008.1.2.1.99", &bomb).as_slice()).unwrap_err();
        assert!(e.to_string().contains("256 MiB"), "{e}");
    }
}
