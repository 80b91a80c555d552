//! Reading stored instances back: the data set bytes as stored (the normal
//! case), or re-encoded into another uncompressed transfer syntax when the
//! receiver does not accept the stored one.

use bytes::Bytes;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::Transcode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tokio::io::AsyncReadExt;

use custos_core::record::StoredInstance;
use custos_store::{Reader, StoreError};

use crate::Archive;
use crate::part10::dataset_offset;

#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored instance {0} is not a valid Part 10 file")]
    Corrupt(String),
    #[error("stored instance {0} is too large to decode in memory")]
    TooLarge(String),
    #[error("cannot convert from {from} to {to}: {why}")]
    Transcode {
        from: String,
        to: String,
        why: String,
    },
}

/// The data set of a stored instance (no preamble, no file meta): held whole
/// when the instance is small enough, otherwise read in blocks.
pub struct DatasetStream {
    source: Source,
    pos: usize,
}

enum Source {
    Whole(Bytes),
    Blocks {
        buf: Vec<u8>,
        reader: Reader,
        done: bool,
    },
}

/// Bytes read from the store at a time (few blocking reads, bounded memory).
const READ_BLOCK: usize = 1 << 20;

/// Stored instances up to this size are read whole, in one read into the
/// buffer that goes to the peer (larger ones stream in blocks). Small enough
/// that a WADO-RS response's read-ahead (two parts) holds a few MiB, not tens.
pub const WHOLE_READ_MAX: u64 = 2 << 20;

/// Bytes read for an instance's header (metadata, bulk values) when the
/// store has no file to read it from, each tried in turn while the header
/// runs past it: headers are mostly a few KiB, the pixel data behind them up
/// to gigabytes.
const HEADER_PREFIXES: [u64; 3] = [64 << 10, 1 << 20, 16 << 20];

/// A byte slice as a reader that remembers whether it was read to its end.
struct UntilEnd<'a> {
    rest: &'a [u8],
    reached: bool,
}

impl std::io::Read for UntilEnd<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.reached = true;
        }
        std::io::Read::read(&mut self.rest, buf)
    }
}

impl DatasetStream {
    /// Up to `max` next bytes, and whether they are the last (an empty data
    /// set is one empty, last chunk). Every chunk but the last is exactly
    /// `max` long whatever sizes the store's reads come in (S3 answers in odd
    /// pieces; DIMSE fragments must stay even). Borrowed, so the bytes go from
    /// this buffer to the socket without another copy.
    pub async fn next_chunk(&mut self, max: usize) -> Result<(&[u8], bool), std::io::Error> {
        let (buf, done): (&[u8], bool) = match &mut self.source {
            Source::Whole(bytes) => (&bytes[..], true),
            Source::Blocks { buf, reader, done } => {
                // More than `max` must be buffered (or the end seen) to know
                // whether this chunk is the last.
                if buf.len() - self.pos <= max && !*done {
                    buf.drain(..self.pos);
                    self.pos = 0;
                    let want = READ_BLOCK.max(max + 1);
                    buf.reserve(want.saturating_sub(buf.len()));
                    while buf.len() < want {
                        // Into the spare capacity: no zero-filling first.
                        if reader.read_buf(buf).await? == 0 {
                            *done = true;
                            break;
                        }
                    }
                }
                (&buf[..], *done)
            }
        };
        let take = (buf.len() - self.pos).min(max);
        let start = self.pos;
        self.pos += take;
        let last = done && self.pos == buf.len();
        Ok((&buf[start..self.pos], last))
    }
}

/// A stored Part 10 file as WADO returns it: whole when small enough.
pub enum StoredFile {
    Whole(Bytes),
    Stream(Reader),
}

/// Whether a stored transfer syntax can be converted to an uncompressed one:
/// its data set is readable and, if its pixel data is encapsulated, dicom-rs
/// has a decoder for it (JPEG, JPEG-LS lossless/near-lossless via CharLS is not
/// built in; JPEG 2000 via OpenJPEG's Rust port, RLE, deflate are).
pub fn can_transcode(ts_uid: &str) -> bool {
    TransferSyntaxRegistry
        .get(ts_uid)
        .is_some_and(|ts| ts.can_decode_all())
}

/// Largest stored instance we decode in memory to re-encode it.
const MAX_TRANSCODE_BYTES: u64 = 256 << 20;

/// Whether `instance` can be decompressed for a client that does not take it
/// as stored: its transfer syntax can be decoded and it is small enough to
/// be decoded in memory. Asked before a response starts, so that a refusal
/// is a status, not a stream cut off midway.
pub fn can_transcode_instance(instance: &StoredInstance) -> bool {
    instance.size <= MAX_TRANSCODE_BYTES && can_transcode(&instance.transfer_syntax_uid)
}

/// JPEG Extended (Process 2 & 4): the decoder here (jpeg-decoder) reads its
/// 8-bit images but not the 12-bit ones it mostly holds.
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";

impl Archive {
    /// Whether `instance` can be decompressed ([`can_transcode_instance`]),
    /// its header read when the transfer syntax alone cannot tell (12-bit
    /// JPEG Extended): asked before a response starts, so that what cannot
    /// be decoded is refused with a status, not cut off mid-stream.
    pub async fn can_decompress(&self, instance: &StoredInstance) -> bool {
        if !can_transcode_instance(instance) {
            return false;
        }
        if instance.transfer_syntax_uid != JPEG_EXTENDED {
            return true;
        }
        let Ok(obj) = self.read_object(instance, true).await else {
            return false;
        };
        obj.element(tags::BITS_STORED)
            .ok()
            .and_then(|e| e.to_int::<u16>().ok())
            .is_some_and(|bits| bits <= 8)
    }

    /// Opens the whole stored Part 10 file of `instance` (WADO returns it as is).
    pub async fn open_file(&self, instance: &StoredInstance) -> Result<Reader, RetrieveError> {
        Ok(self.store.open(&instance.blob_key).await?)
    }

    /// The whole stored Part 10 file of `instance`: in one read when it is
    /// small enough to hold, else as a reader.
    pub async fn stored_file(
        &self,
        instance: &StoredInstance,
    ) -> Result<StoredFile, RetrieveError> {
        if instance.size <= WHOLE_READ_MAX {
            Ok(StoredFile::Whole(
                self.store.read(&instance.blob_key).await?,
            ))
        } else {
            Ok(StoredFile::Stream(self.open_file(instance).await?))
        }
    }

    /// Parses a stored instance: with `header_only`, everything before Pixel
    /// Data (metadata); otherwise the whole object, which is held in memory and
    /// so limited to 256 MiB.
    pub async fn read_object(
        &self,
        instance: &StoredInstance,
        header_only: bool,
    ) -> Result<DefaultDicomObject, RetrieveError> {
        let corrupt = |e: String| {
            tracing::warn!(error = %e, "stored instance does not parse");
            RetrieveError::Corrupt(instance.sop_instance_uid.clone())
        };
        let options = move || {
            let o = OpenFileOptions::new();
            if header_only {
                o.read_until(tags::PIXEL_DATA)
            } else {
                o
            }
        };
        // A whole object is held in memory, from a file as from S3: bounded
        // the same way for both.
        if !header_only && instance.size > MAX_TRANSCODE_BYTES {
            return Err(RetrieveError::TooLarge(instance.sop_instance_uid.clone()));
        }
        if let Some(path) = self.store.local_path(&instance.blob_key) {
            return tokio::task::spawn_blocking(move || {
                if !header_only {
                    let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                    crate::lengths::check_part10_whole(file).map_err(|e| e.to_string())?;
                }
                options().open_file(&path).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| corrupt(e.to_string()))?
            .map_err(corrupt);
        }
        // Packed (or remote) blobs: the header alone is read when it ends
        // within a prefix, a longer one tried for a longer header (an
        // enhanced multi-frame's per-frame groups run to megabytes); the
        // parse must not have reached the prefix's end, which could have cut
        // the header short.
        for prefix_len in HEADER_PREFIXES {
            if !header_only || instance.size <= prefix_len {
                break;
            }
            let prefix = self
                .store
                .read_prefix(&instance.blob_key, prefix_len)
                .await?;
            let parsed = tokio::task::spawn_blocking(move || {
                let mut from = UntilEnd {
                    rest: &prefix[..],
                    reached: false,
                };
                let obj = options()
                    .read_preamble(dicom_object::file::ReadPreamble::Always)
                    .from_reader(&mut from);
                (obj.ok().filter(|_| !from.reached), from.reached)
            })
            .await;
            match parsed {
                Ok((Some(obj), _)) => return Ok(obj),
                // Cut short by the prefix: a longer one may hold it.
                Ok((None, true)) => {}
                // It fails for another reason: the whole read says why.
                _ => break,
            }
        }
        if instance.size > MAX_TRANSCODE_BYTES {
            return Err(RetrieveError::TooLarge(instance.sop_instance_uid.clone()));
        }
        let bytes = self.store.read(&instance.blob_key).await?;
        tokio::task::spawn_blocking(move || {
            if !header_only {
                crate::lengths::check_part10_whole(&bytes[..]).map_err(|e| e.to_string())?;
            }
            options()
                .read_preamble(dicom_object::file::ReadPreamble::Always)
                .from_reader(&bytes[..])
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| corrupt(e.to_string()))?
        .map_err(corrupt)
    }

    /// Opens the stored data set of `instance`.
    pub async fn open_dataset(
        &self,
        instance: &StoredInstance,
    ) -> Result<DatasetStream, RetrieveError> {
        if instance.size <= WHOLE_READ_MAX {
            let whole = self.store.read(&instance.blob_key).await?;
            let Some(offset) = dataset_offset(&whole) else {
                return Err(RetrieveError::Corrupt(instance.sop_instance_uid.clone()));
            };
            return Ok(DatasetStream {
                source: Source::Whole(whole),
                pos: offset,
            });
        }
        let mut reader = self.store.open(&instance.blob_key).await?;
        let mut head = Vec::with_capacity(8192);
        loop {
            if let Some(offset) = dataset_offset(&head) {
                let buf = head.split_off(offset);
                return Ok(DatasetStream {
                    source: Source::Blocks {
                        buf,
                        reader,
                        done: false,
                    },
                    pos: 0,
                });
            }
            let mut buf = [0u8; 4096];
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|source| StoreError::Read {
                    key: instance.blob_key.clone(),
                    source,
                })?;
            if n == 0 || head.len() > 1 << 20 {
                return Err(RetrieveError::Corrupt(instance.sop_instance_uid.clone()));
            }
            head.extend_from_slice(&buf[..n]);
        }
    }

    /// The data set of `instance` re-encoded in the uncompressed `target_ts`,
    /// decompressing encapsulated pixel data where dicom-rs can. Held in memory,
    /// so limited to stored instances up to 256 MiB.
    pub async fn transcoded_dataset(
        &self,
        instance: &StoredInstance,
        target_ts: &str,
    ) -> Result<Vec<u8>, RetrieveError> {
        let err = |why: String| RetrieveError::Transcode {
            from: instance.transfer_syntax_uid.clone(),
            to: target_ts.to_string(),
            why,
        };
        if !can_transcode(&instance.transfer_syntax_uid) {
            return Err(err("no decoder for the stored transfer syntax".into()));
        }
        if instance.size > MAX_TRANSCODE_BYTES {
            return Err(err(format!(
                "instance larger than {MAX_TRANSCODE_BYTES} bytes"
            )));
        }
        let target = TransferSyntaxRegistry
            .get(target_ts)
            .ok_or_else(|| err("unknown target".into()))?;
        if target.is_encapsulated_pixel_data() {
            return Err(err("compressing is not supported".into()));
        }
        let bytes = self.store.read(&instance.blob_key).await?;
        let target_ts = target_ts.to_string();
        tokio::task::spawn_blocking(move || {
            crate::lengths::check_part10_whole(&bytes[..]).map_err(|e| e.to_string())?;
            let mut obj = OpenFileOptions::new()
                .read_preamble(dicom_object::file::ReadPreamble::Always)
                .from_reader(&bytes[..])
                .map_err(|e| e.to_string())?;
            let target = TransferSyntaxRegistry
                .get(&target_ts)
                .ok_or("unknown target")?;
            obj.transcode(target).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            obj.write_dataset_with_ts(&mut out, target)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(out)
        })
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(err)
    }

    /// A whole Part 10 file of `instance` in the uncompressed `target_ts`
    /// (see [`Archive::transcoded_dataset`]).
    pub async fn transcoded_file(
        &self,
        instance: &StoredInstance,
        target_ts: &str,
    ) -> Result<Vec<u8>, RetrieveError> {
        let mut out = crate::part10::header(&crate::part10::MetaInfo {
            sop_class_uid: instance.sop_class_uid.clone(),
            sop_instance_uid: instance.sop_instance_uid.clone(),
            transfer_syntax_uid: target_ts.to_string(),
            source_ae_title: String::new(),
        })
        .map_err(|why| RetrieveError::Transcode {
            from: instance.transfer_syntax_uid.clone(),
            to: target_ts.to_string(),
            why,
        })?;
        out.extend(self.transcoded_dataset(instance, target_ts).await?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Decompression is offered only for what can be decoded in memory.
    #[test]
    fn only_instances_small_enough_are_offered_decompressed() {
        let instance = |size: u64, ts: &str| StoredInstance {
            sop_instance_uid: "1.2.3".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntax_uid: ts.into(),
            blob_key: String::new(),
            size,
            sha256: String::new(),
        };
        let rle = "1.2.840.10008.1.2.5";
        assert!(can_transcode_instance(&instance(10 << 20, rle)));
        assert!(!can_transcode_instance(&instance(
            MAX_TRANSCODE_BYTES + 1,
            rle
        )));
        assert!(!can_transcode_instance(&instance(10 << 20, "1.2.3.4.5.6")));
    }

    /// A store reader answering in small pieces of varying (odd and even)
    /// sizes, as an S3 response body can.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(self.data.len() - self.pos)
                .min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            self.step = self.step % 7 + 3;
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn chunks_are_full_size_whatever_the_reads() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        // 3,363 bytes left over from reading the file meta (odd), the rest trickling.
        let mut stream = DatasetStream {
            source: Source::Blocks {
                buf: data[..3363].to_vec(),
                reader: Box::new(Trickle {
                    data: data[3363..].to_vec(),
                    pos: 0,
                    step: 3,
                }),
                done: false,
            },
            pos: 0,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (mut out, mut sizes) = (Vec::new(), Vec::new());
        loop {
            let (chunk, last) = rt.block_on(stream.next_chunk(16_372)).unwrap();
            sizes.push(chunk.len());
            out.extend_from_slice(chunk);
            if last {
                break;
            }
        }
        assert_eq!(out, data);
        let (last, rest) = sizes.split_last().unwrap();
        assert!(rest.iter().all(|&n| n == 16_372), "{sizes:?}");
        assert_eq!(*last, 100_000 % 16_372);
    }

    #[test]
    fn the_last_chunk_is_flagged_even_when_sizes_line_up() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let lens = [0usize, 1, 16_372, 2 * 16_372, READ_BLOCK, READ_BLOCK + 1];
        for (len, whole) in lens.into_iter().flat_map(|n| [(n, false), (n, true)]) {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            // Held whole (after 132 bytes of preamble and meta), or read in blocks.
            let mut stream = if whole {
                let mut file = vec![7u8; 132];
                file.extend_from_slice(&data);
                DatasetStream {
                    source: Source::Whole(file.into()),
                    pos: 132,
                }
            } else {
                DatasetStream {
                    source: Source::Blocks {
                        buf: Vec::new(),
                        reader: Box::new(std::io::Cursor::new(data.clone())),
                        done: false,
                    },
                    pos: 0,
                }
            };
            let (mut out, mut chunks) = (Vec::new(), 0);
            loop {
                let (chunk, last) = rt.block_on(stream.next_chunk(16_372)).unwrap();
                out.extend_from_slice(chunk);
                chunks += 1;
                if last {
                    break;
                }
                assert_eq!(chunk.len(), 16_372, "only the last chunk may be short");
            }
            assert_eq!(out, data, "{len} bytes, whole: {whole}");
            assert_eq!(
                chunks,
                len.div_ceil(16_372).max(1),
                "{len} bytes: no empty tail chunk"
            );
        }
    }
}
