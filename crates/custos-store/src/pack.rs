//! Pack files: small blobs appended to a shared segment, one `fdatasync` per
//! batch of concurrently arriving blobs (group commit), as Haystack and
//! SeaweedFS volumes do.
//!
//! Why: a blob in its own file costs a file creation, two fsyncs (file and
//! folder) and a rename; on this project's machines that kernel work was three
//! quarters of the ingest time for ~10 kB instances. An append to an open file
//! costs one write and, shared by the batch, one `fdatasync`.
//!
//! Layout: `ROOT/packs/<segment>.pack`, where a segment id is 16 random hex
//! digits. A segment is appended to by one writer thread of one process and
//! never again after that process ends (a restart opens a new segment), so a
//! torn tail left by a crash is never written after. Each record is a 32-byte
//! header then the blob:
//!
//! ```text
//! 0  "CPK1"            magic
//! 4  state             b'L' live, b'E' being erased, b'D' deleted
//! 5  3 bytes zero
//! 8  length  u64 LE    of the blob
//! 16 written u64 LE    milliseconds since the Unix epoch
//! 24 check   u64 LE    FNV-1a of bytes 0..4 and 8..24 (not the state byte)
//! ```
//!
//! A key names the segment, the header's offset and the length
//! (`p` + 16 + 12 + 10 hex digits). A key is returned only after the batch it
//! belongs to is durable, so an index row never names bytes that are not on
//! disk. Deleting marks the record being erased (readers no longer return
//! it), punches a hole over the blob (the bytes are gone and the space is
//! returned; zeros are written where the filesystem cannot punch), then marks
//! it deleted; a crash before the last step leaves a record no index row
//! names, listed like a live one, which `fsck` reports as an orphan and
//! `--repair` erases.

use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Held, Reader, StoreError};

const MAGIC: &[u8; 4] = b"CPK1";
const HEADER: u64 = 32;
const LIVE: u8 = b'L';
/// Deleted by the index, bytes not yet gone: no longer read, still listed.
const ERASING: u8 = b'E';
const DELETED: u8 = b'D';
/// A segment stops growing past this size; the next batch opens a new one.
const SEGMENT_MAX: u64 = 1 << 30;
/// A batch holds at most this many blobs or bytes.
const BATCH_BLOBS: usize = 256;
const BATCH_BYTES: usize = 16 << 20;
const KEY_LEN: usize = 1 + 16 + 12 + 10;
/// No packed blob is larger (the largest pack limit a configuration may set):
/// a key naming more, from a damaged index row, is refused before a read
/// allocates it.
pub const MAX_PACKED: u64 = 16 << 20;

/// Where a packed blob lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackKey {
    segment: String,
    offset: u64,
    len: u64,
}

impl PackKey {
    pub(crate) fn parse(key: &str) -> Option<PackKey> {
        if key.len() != KEY_LEN
            || !key.starts_with('p')
            || !key[1..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return None;
        }
        let len = u64::from_str_radix(&key[29..39], 16).ok()?;
        if len > MAX_PACKED {
            return None;
        }
        Some(PackKey {
            segment: key[1..17].to_string(),
            offset: u64::from_str_radix(&key[17..29], 16).ok()?,
            len,
        })
    }

    /// The file name of its segment in the packs folder.
    pub(crate) fn segment_file(&self) -> String {
        format!("{}.pack", self.segment)
    }

    fn render(&self) -> String {
        format!("p{}{:012x}{:010x}", self.segment, self.offset, self.len)
    }
}

struct Header {
    state: u8,
    len: u64,
    written: u64,
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn encode_header(len: u64, written: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[0..4].copy_from_slice(MAGIC);
    h[4] = LIVE;
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h[16..24].copy_from_slice(&written.to_le_bytes());
    let check = fnv(&[&h[0..4], &h[8..24]]);
    h[24..32].copy_from_slice(&check.to_le_bytes());
    h
}

/// Writes all of `slices` at `offset`, as few `pwritev` calls as the kernel
/// allows (a batch of records in one call rather than one per piece).
fn write_all_vectored_at(
    file: &std::fs::File,
    mut slices: &mut [io::IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    /// Linux's IOV_MAX.
    const MAX_SLICES: usize = 1024;
    while !slices.is_empty() {
        let n = slices.len().min(MAX_SLICES);
        let written = match rustix::io::pwritev(file, &slices[..n], offset) {
            Ok(0) if slices[..n].iter().any(|s| !s.is_empty()) => {
                return Err(io::ErrorKind::WriteZero.into());
            }
            Ok(written) => written,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += written as u64;
        io::IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

fn decode_header(h: &[u8; HEADER as usize]) -> Option<Header> {
    let word = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or_default());
    // A length no pack limit allows is no record's: the checksum guards
    // against torn writes, not against a file made to look like a segment
    // (such a length would wrap the offset of the record after it).
    if &h[0..4] != MAGIC || word(24) != fnv(&[&h[0..4], &h[8..24]]) || word(8) > MAX_PACKED {
        return None;
    }
    Some(Header {
        state: h[4],
        len: word(8),
        written: word(16),
    })
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One blob to append, and where to say how it went.
struct Append {
    bytes: Held,
    done: tokio::sync::oneshot::Sender<io::Result<String>>,
}

/// The packs folder and its writer thread.
pub(crate) struct Packs {
    dir: PathBuf,
    appends: mpsc::Sender<Append>,
}

impl Packs {
    /// Opens `dir` (made by the caller) and starts the writer thread, which
    /// ends when this handle is dropped.
    pub(crate) fn open(dir: PathBuf) -> io::Result<Packs> {
        let (appends, rx) = mpsc::channel();
        let writer_dir = dir.clone();
        std::thread::Builder::new()
            .name("custos-pack".into())
            .spawn(move || Writer::new(writer_dir).run(rx))?;
        Ok(Packs { dir, appends })
    }

    fn path(&self, segment: &str) -> PathBuf {
        self.dir.join(format!("{segment}.pack"))
    }

    /// Appends a blob; returns its key once it is durable.
    pub(crate) async fn append(&self, bytes: Held) -> io::Result<String> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.appends
            .send(Append { bytes, done })
            .map_err(|_| io::Error::other("the pack writer has stopped"))?;
        result
            .await
            .map_err(|_| io::Error::other("the pack writer has stopped"))?
    }

    /// Reads a live blob. Packed blobs are small (the pack limit), so the
    /// header and the bytes come in one positional read on one blocking
    /// thread, instead of an async file's hop per seek and per read.
    pub(crate) async fn read(&self, key: &str, pk: &PackKey) -> Result<Reader, StoreError> {
        let bytes = self.read_bytes(key, pk, u64::MAX).await?;
        Ok(Box::new(io::Cursor::new(bytes)))
    }

    /// A record's blob bytes (after its header), checked live; the first
    /// `max` of them.
    pub(crate) async fn read_bytes(
        &self,
        key: &str,
        pk: &PackKey,
        max: u64,
    ) -> Result<bytes::Bytes, StoreError> {
        let path = self.path(&pk.segment);
        let (offset, len) = (pk.offset, pk.len);
        let read = tokio::task::spawn_blocking(move || -> io::Result<Option<Vec<u8>>> {
            let file = File::open(path)?;
            // Into spare capacity: no zero-filling of up to a megabyte first.
            let want = (HEADER + len.min(max)) as usize;
            let mut buf = Vec::with_capacity(want);
            while buf.len() < want {
                let at = offset + buf.len() as u64;
                match rustix::io::pread(&file, rustix::buffer::spare_capacity(&mut buf), at) {
                    Ok(0) => return Ok(None), // past the end: not a whole record
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            buf.truncate(want);
            let mut h = [0u8; HEADER as usize];
            h.copy_from_slice(&buf[..HEADER as usize]);
            if !matches!(decode_header(&h), Some(h) if h.state == LIVE && h.len == len) {
                return Ok(None);
            }
            // Still live after the bytes were read: `erase` marks a record
            // before it punches the bytes out, so these are whole.
            let mut state = [0u8; 1];
            file.read_exact_at(&mut state, offset + 4)?;
            Ok((state[0] == LIVE).then_some(buf))
        })
        .await
        .map_err(io::Error::other);
        let not_found = || StoreError::NotFound { key: key.into() };
        match read.and_then(|r| r) {
            Ok(Some(buf)) => Ok(bytes::Bytes::from(buf).slice(HEADER as usize..)),
            Ok(None) => Err(not_found()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(not_found()),
            Err(source) => Err(StoreError::Read {
                key: key.into(),
                source,
            }),
        }
    }

    /// Removes a blob's bytes and marks its record deleted.
    pub(crate) async fn delete(&self, key: &str, pk: PackKey) -> Result<(), StoreError> {
        let path = self.path(&pk.segment);
        let del_err = |source| StoreError::Delete {
            key: key.into(),
            source,
        };
        tokio::task::spawn_blocking(move || erase(&path, &pk))
            .await
            .map_err(|e| del_err(io::Error::other(e)))?
            .map_err(del_err)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Every record of every segment in `dir` whose bytes may still be there
/// (live, or being erased when a crash came), with the time it was written.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(String, SystemTime)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(segment) = name.strip_suffix(".pack") else {
            continue;
        };
        if segment.len() != 16 || !segment.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for (pk, header) in records(&entry.path(), segment)? {
            if header.state == LIVE || header.state == ERASING {
                let at = UNIX_EPOCH + Duration::from_millis(header.written);
                out.push((pk.render(), at));
            }
        }
    }
    Ok(out)
}

/// The records of a segment up to its first unreadable header (a crash's torn tail).
fn records(path: &Path, segment: &str) -> io::Result<Vec<(PackKey, Header)>> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut h = [0u8; HEADER as usize];
    while offset + HEADER <= size {
        file.read_exact_at(&mut h, offset)?;
        let Some(header) = decode_header(&h) else {
            break;
        };
        let end = offset + HEADER + header.len;
        if end > size {
            break;
        }
        let pk = PackKey {
            segment: segment.to_string(),
            offset,
            len: header.len,
        };
        out.push((pk, header));
        offset = end;
    }
    Ok(out)
}

/// Marks the record being erased, punches the blob's bytes out (zeros where
/// punching is not supported), then marks it deleted. In this order a reader
/// that finds the record still live after reading its bytes read them whole
/// (`read_bytes`), and a crash midway leaves a record that `list` still
/// names, for fsck to erase again. Erasing a missing or deleted blob is a no-op.
fn erase(path: &Path, pk: &PackKey) -> io::Result<()> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut h = [0u8; HEADER as usize];
    match file.read_exact_at(&mut h, pk.offset) {
        Ok(()) => {}
        // Past the segment's end: no such record.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
        // An I/O error is no proof the bytes are gone: the delete fails.
        Err(e) => return Err(e),
    }
    match decode_header(&h) {
        Some(header)
            if (header.state == LIVE || header.state == ERASING) && header.len == pk.len => {}
        _ => return Ok(()),
    }
    file.write_all_at(&[ERASING], pk.offset + 4)?;
    let start = pk.offset + HEADER;
    let punched = rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        start,
        pk.len,
    );
    if punched.is_err() {
        let zeros = vec![0u8; (pk.len.min(1 << 20)) as usize];
        let mut at = start;
        while at < start + pk.len {
            let n = (start + pk.len - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
    }
    file.write_all_at(&[DELETED], pk.offset + 4)?;
    file.sync_data()
}

/// The open segment of this process.
struct Segment {
    id: String,
    file: File,
    end: u64,
}

struct Writer {
    dir: PathBuf,
    segment: Option<Segment>,
}

impl Writer {
    fn new(dir: PathBuf) -> Writer {
        Writer { dir, segment: None }
    }

    fn run(mut self, rx: mpsc::Receiver<Append>) {
        // Whatever queued while the previous batch was being made durable
        // forms the next batch.
        while let Ok(first) = rx.recv() {
            let mut bytes = first.bytes.len();
            let mut batch = vec![first];
            while batch.len() < BATCH_BLOBS && bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(next) => {
                        bytes += next.bytes.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            match self.write(&batch) {
                Ok(keys) => {
                    for (append, key) in batch.into_iter().zip(keys) {
                        let _ = append.done.send(Ok(key));
                    }
                }
                Err(e) => {
                    for append in batch {
                        let _ = append
                            .done
                            .send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
        }
    }

    /// Writes a batch and makes it durable; on failure the segment is cut
    /// back to where the batch began (or abandoned when that fails too).
    fn write(&mut self, batch: &[Append]) -> io::Result<Vec<String>> {
        let segment = self.segment()?;
        let start = segment.end;
        let written = now_millis();
        let result = (|| {
            let mut keys = Vec::with_capacity(batch.len());
            let headers: Vec<_> = batch
                .iter()
                .map(|a| encode_header(a.bytes.len() as u64, written))
                .collect();
            let mut slices = Vec::new();
            for (append, header) in batch.iter().zip(&headers) {
                slices.push(io::IoSlice::new(header));
                slices.extend(append.bytes.slices().map(io::IoSlice::new));
            }
            write_all_vectored_at(&segment.file, &mut slices, start)?;
            let mut at = start;
            for append in batch {
                let len = append.bytes.len() as u64;
                keys.push(
                    PackKey {
                        segment: segment.id.clone(),
                        offset: at,
                        len,
                    }
                    .render(),
                );
                at += HEADER + len;
            }
            segment.file.sync_data()?;
            Ok((keys, at))
        })();
        match result {
            Ok((keys, end)) => {
                segment.end = end;
                Ok(keys)
            }
            Err(e) => {
                if segment.file.set_len(start).is_err() {
                    self.segment = None;
                }
                Err(e)
            }
        }
    }

    /// The segment to append to: the open one unless it is full, else a new one.
    fn segment(&mut self) -> io::Result<&mut Segment> {
        if self.segment.as_ref().is_some_and(|s| s.end >= SEGMENT_MAX) {
            self.segment = None;
        }
        if self.segment.is_none() {
            let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
            let mut options = std::fs::OpenOptions::new();
            options.read(true).write(true).create_new(true);
            // Patient data: owner only, whatever the umask.
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file = options.open(self.dir.join(format!("{id}.pack")))?;
            // The new name must survive a crash before any key names it.
            File::open(&self.dir)?.sync_all()?;
            self.segment = Some(Segment { id, file, end: 0 });
        }
        self.segment
            .as_mut()
            .ok_or_else(|| io::Error::other("no open segment"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("custos-pack-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    async fn read(packs: &Packs, key: &str) -> Result<Vec<u8>, StoreError> {
        let pk = PackKey::parse(key).unwrap();
        let mut r = packs.read(key, &pk).await?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        Ok(out)
    }

    #[test]
    fn a_batch_of_more_slices_than_one_call_takes_is_written_whole() {
        let d = dir("vectored");
        let file = std::fs::File::create_new(d.join("seg")).unwrap();
        // 4,100 slices (Linux takes 1,024 per call), some empty, the last 1,100
        // of them too, at an offset.
        let owned: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i % 7 * 300) as usize])
            .chain(std::iter::repeat_n(Vec::new(), 1100))
            .collect();
        let mut slices: Vec<io::IoSlice<'_>> = owned.iter().map(|v| io::IoSlice::new(v)).collect();
        write_all_vectored_at(&file, &mut slices, 100).unwrap();
        let back = std::fs::read(d.join("seg")).unwrap();
        assert!(back[..100].iter().all(|b| *b == 0));
        assert_eq!(back[100..], owned.concat()[..]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A read racing a delete gets the whole blob or "not found", never
    /// bytes already punched out (C-MOVE reads ahead rows a deletion, a
    /// correction or a replacing duplicate may erase meanwhile).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_racing_a_delete_never_returns_erased_bytes() {
        let d = dir("race");
        let packs = std::sync::Arc::new(Packs::open(d.clone()).unwrap());
        let bytes = vec![0xA5u8; 1 << 20];
        let mut bad = 0;
        for _ in 0..100 {
            let key = packs.append(Held::from_vec(bytes.clone())).await.unwrap();
            let pk = PackKey::parse(&key).unwrap();
            let reader = {
                let (packs, key, pk, bytes) =
                    (packs.clone(), key.clone(), pk.clone(), bytes.clone());
                tokio::spawn(async move {
                    let mut bad = 0;
                    loop {
                        match packs.read_bytes(&key, &pk, u64::MAX).await {
                            Ok(got) if got[..] == bytes[..] => {}
                            Ok(_) => bad += 1,
                            Err(StoreError::NotFound { .. }) => return bad,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            };
            tokio::task::yield_now().await;
            packs.delete(&key, pk).await.unwrap();
            bad += reader.await.unwrap();
        }
        assert_eq!(bad, 0, "reads returned erased bytes as the blob");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A crash after the "being erased" mark: not read, still listed (fsck
    /// reports it as an orphan), and erased by a later delete.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_record_left_being_erased_is_listed_and_erased_again() {
        let d = dir("erasing");
        let packs = Packs::open(d.clone()).unwrap();
        let key = packs.append(Held::from_vec(vec![7u8; 5000])).await.unwrap();
        let pk = PackKey::parse(&key).unwrap();
        let segment = packs.path(&pk.segment);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.write_all_at(&[ERASING], pk.offset + 4).unwrap();
        assert!(matches!(
            read(&packs, &key).await,
            Err(StoreError::NotFound { .. })
        ));
        assert_eq!(list(&d).unwrap().len(), 1);
        packs.delete(&key, pk.clone()).await.unwrap();
        assert!(list(&d).unwrap().is_empty());
        let raw = std::fs::read(&segment).unwrap();
        let at = (pk.offset + HEADER) as usize;
        assert!(raw[at..at + 5000].iter().all(|b| *b == 0));
        assert_eq!(raw[pk.offset as usize + 4], DELETED);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_appends_read_back_and_deletes_erase_the_bytes() {
        let d = dir("rw");
        let packs = std::sync::Arc::new(Packs::open(d.clone()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..64u8 {
            let packs = packs.clone();
            tasks.push(tokio::spawn(async move {
                let bytes = vec![i; 1000 + i as usize * 37];
                (
                    packs.append(Held::from_vec(bytes.clone())).await.unwrap(),
                    bytes,
                )
            }));
        }
        let mut stored = Vec::new();
        for t in tasks {
            stored.push(t.await.unwrap());
        }
        for (key, bytes) in &stored {
            assert_eq!(&read(&packs, key).await.unwrap(), bytes);
        }
        assert_eq!(list(&d).unwrap().len(), 64);

        let (gone, bytes) = &stored[10];
        packs
            .delete(gone, PackKey::parse(gone).unwrap())
            .await
            .unwrap();
        assert!(matches!(
            read(&packs, gone).await,
            Err(StoreError::NotFound { .. })
        ));
        let listed: Vec<String> = list(&d).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(listed.len(), 63);
        assert!(!listed.contains(gone));
        // The deleted blob's bytes are no longer in the segment file.
        let pk = PackKey::parse(gone).unwrap();
        let raw = std::fs::read(packs.path(&pk.segment)).unwrap();
        let at = (pk.offset + HEADER) as usize;
        assert!(raw[at..at + bytes.len()].iter().all(|b| *b == 0));
        // Deleting again is fine; its neighbours are intact.
        packs.delete(gone, pk).await.unwrap();
        for (key, bytes) in stored.iter().filter(|(k, _)| k != gone) {
            assert_eq!(&read(&packs, key).await.unwrap(), bytes);
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_torn_tail_ends_the_listing_and_forged_keys_are_refused() {
        let d = dir("torn");
        let packs = Packs::open(d.clone()).unwrap();
        let key = packs
            .append(Held::from_vec(b"whole".to_vec()))
            .await
            .unwrap();
        let pk = PackKey::parse(&key).unwrap();
        // A crash mid-append: a header whose blob never arrived, then garbage.
        let path = packs.path(&pk.segment);
        let mut raw = std::fs::read(&path).unwrap();
        raw.extend_from_slice(&encode_header(5000, now_millis()));
        raw.extend_from_slice(b"partial");
        std::fs::write(&path, raw).unwrap();
        let listed = list(&d).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, key);
        // A key whose length disagrees with the header reads as missing.
        let forged = PackKey {
            len: 4,
            ..pk.clone()
        }
        .render();
        assert!(matches!(
            read(&packs, &forged).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(PackKey::parse("p../../etc/passwd").is_none());
        // A length no pack limit allows is refused, not allocated.
        let huge = PackKey {
            len: MAX_PACKED + 1,
            ..pk.clone()
        }
        .render();
        assert!(PackKey::parse(&huge).is_none());
        assert!(PackKey::parse(&key.to_uppercase()).is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_header_claiming_more_than_any_pack_limit_ends_the_listing() {
        let d = dir("forged-len");
        // One record, then a header whose length (with a valid checksum)
        // would wrap the next offset to 0: listing it once looped for ever.
        let mut seg = encode_header(3, 1).to_vec();
        seg.extend_from_slice(b"abc");
        seg.extend_from_slice(&encode_header(u64::MAX - HEADER + 1, 1));
        seg.extend_from_slice(&[0u8; 64]);
        std::fs::write(d.join("00000000000000aa.pack"), &seg).unwrap();
        let listed = list(&d).unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
