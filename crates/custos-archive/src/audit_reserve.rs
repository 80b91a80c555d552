//! The audit writer's reserve: a file of fixed size in the data folder,
//! allocated at start while there is room. When the index cannot take a
//! batch (its disk full, its database away), the records of accesses
//! waiting for it go here, synced, and the accesses are served: reading goes
//! on during an outage of writing without any access going unrecorded. The
//! writer appends them to the trail as soon as the index takes them, then
//! empties the reserve; records a crash left in it are appended at the next
//! start (those already in the trail are recognised and left out).
//!
//! Format: a header (magic, generation u64 LE, and the sequence number
//! after which the generation's records go in the trail, i64 LE), then frames of [length u32
//! LE][generation][first 8 bytes of SHA-256 of generation and payload]
//! [payload: JSON `[time, body]`], ended by a zero length. A frame torn by a
//! crash fails its checksum and ends the reading (its access was never
//! served: it is served only after the sync); emptying the reserve starts a
//! new generation, so frames of an older one are never read again, whatever
//! a later write leaves of them. One process uses a reserve at a time (an
//! exclusive lock on the file): a CLI command run beside the server has none.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The reserve's size: ~16,000 access records of ~500 bytes.
pub(crate) const SIZE: u64 = 8 << 20;
/// Its file in the data folder.
pub const RESERVE_FILE: &str = "audit.reserve";

pub(crate) struct Reserve {
    file: File,
    size: u64,
    generation: u64,
    /// This generation's records go in the trail after this record.
    since: i64,
    /// Where the next frame goes (the end marker's place).
    at: u64,
}

const MAGIC: &[u8; 8] = b"CUSTOSR1";
const HEADER: u64 = 24;
const FRAME_HEAD: u64 = 20;

fn checksum(generation: u64, payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(generation.to_le_bytes());
    h.update(payload);
    let mut c = [0u8; 8];
    c.copy_from_slice(&h.finalize()[..8]);
    c
}

/// The records of `generation` in `file` (of `size` bytes), oldest first,
/// and where they end.
fn scan(file: &File, size: u64, generation: u64) -> io::Result<(Vec<(String, String)>, u64)> {
    let mut out = Vec::new();
    let mut at = HEADER;
    let mut head = [0u8; FRAME_HEAD as usize];
    while at + FRAME_HEAD <= size {
        file.read_exact_at(&mut head, at)?;
        let len = u64::from(u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")));
        let theirs = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
        if len == 0 || theirs != generation || at + FRAME_HEAD + len > size {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, at + FRAME_HEAD)?;
        if checksum(generation, &payload) != head[12..20] {
            break;
        }
        match serde_json::from_slice::<(String, String)>(&payload) {
            Ok(entry) => out.push(entry),
            Err(_) => break,
        }
        at += FRAME_HEAD + len;
    }
    Ok((out, at))
}

/// What a reserve holds, read without taking it (the server may hold it):
/// for `custos doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// Records the index has not taken yet.
    pub records: usize,
    /// Bytes they fill, of `size`.
    pub used: u64,
    pub size: u64,
}

/// The records waiting in the reserve at `path`, if there is one. Read while
/// the server may be writing: a frame being written ends the count there
/// (its checksum), so the figure may be one batch short; a reserve emptied
/// during the reading (a new generation) is read again.
pub fn waiting(path: &Path) -> io::Result<Option<Waiting>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    if size < HEADER {
        return Ok(None);
    }
    let generation = || -> io::Result<Option<u64>> {
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0)?;
        Ok((&header[..8] == MAGIC)
            .then(|| u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"))))
    };
    let Some(mut seen) = generation()? else {
        return Ok(None);
    };
    for _ in 0..3 {
        let (records, end) = scan(&file, size, seen)?;
        match generation()? {
            Some(now) if now != seen => seen = now,
            _ => {
                return Ok(Some(Waiting {
                    records: records.len(),
                    used: end - HEADER,
                    size,
                }));
            }
        }
    }
    Err(io::Error::other(
        "the reserve was emptied three times while being read",
    ))
}

impl Reserve {
    /// Opens the reserve at `path`, locked for this process, allocating it
    /// (zeros, synced, with its folder entry) if it is missing or short:
    /// allocation needs room, which is why it is done at start.
    pub(crate) fn open(path: &Path, size: u64) -> io::Result<Reserve> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::WouldBlock,
                "in use by another Custos process (the server)",
            ),
            std::fs::TryLockError::Error(e) => e,
        })?;
        let had = file.metadata()?.len();
        if had < size {
            // Written, not just set: a sparse file would need room later.
            let zeros = vec![0u8; 64 << 10];
            let mut at = had;
            while at < size {
                let n = zeros.len().min((size - at) as usize);
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(folder)?.sync_all()?;
            }
        }
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0)?;
        let (generation, since) = if &header[..8] == MAGIC {
            (
                u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")),
                i64::from_le_bytes(header[16..24].try_into().expect("8 bytes")),
            )
        } else {
            file.write_all_at(MAGIC, 0)?;
            file.write_all_at(&[0u8; 16], 8)?;
            file.sync_data()?;
            (0, 0)
        };
        let mut reserve = Reserve {
            file,
            size: size.max(had),
            generation,
            since,
            at: HEADER,
        };
        reserve.at = reserve.scan()?.1;
        Ok(reserve)
    }

    /// The records of this generation, oldest first, and where they end.
    fn scan(&self) -> io::Result<(Vec<(String, String)>, u64)> {
        scan(&self.file, self.size, self.generation)
    }

    /// The records in the reserve, oldest first.
    pub(crate) fn entries(&self) -> io::Result<Vec<(String, String)>> {
        Ok(self.scan()?.0)
    }

    /// The record of the trail after which this generation's records go.
    pub(crate) fn since(&self) -> i64 {
        self.since
    }

    /// Adds records after those already there, synced; an error (the
    /// reserve full, the disk failing) leaves them out. The first of a
    /// generation notes `since`: the records will be in the trail after it.
    pub(crate) fn write(&mut self, entries: &[(String, String)], since: i64) -> io::Result<()> {
        if self.at == HEADER {
            self.file.write_all_at(&since.to_le_bytes(), 16)?;
            self.since = since;
        }
        let mut bytes = Vec::new();
        for entry in entries {
            let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
            let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&self.generation.to_le_bytes());
            bytes.extend_from_slice(&checksum(self.generation, &payload));
            bytes.extend_from_slice(&payload);
        }
        // The end marker after them.
        bytes.extend_from_slice(&[0u8; 4]);
        if self.at + bytes.len() as u64 > self.size {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the audit reserve is full",
            ));
        }
        self.file.write_all_at(&bytes, self.at)?;
        self.file.sync_data()?;
        self.at += bytes.len() as u64 - 4;
        Ok(())
    }

    /// Empties the reserve (its records are in the trail): a new generation.
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        let next = self.generation + 1;
        self.file.write_all_at(&next.to_le_bytes(), 8)?;
        // From here on the old frames are not this generation's, synced or not.
        self.generation = next;
        self.at = HEADER;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> (String, String) {
        (
            format!("2026-12-05T08:00:00.{i:03}Z"),
            format!("{{\"n\":{i}}}"),
        )
    }

    #[test]
    fn records_survive_reopening_and_never_come_back_once_cleared() {
        let dir = std::env::temp_dir().join(format!("custos-reserve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(RESERVE_FILE);
        let mut r = Reserve::open(&path, 4096).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        // One process at a time.
        assert_eq!(
            Reserve::open(&path, 4096).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        r.write(&[entry(1), entry(2)], 7).unwrap();
        r.write(&[entry(3)], 9).unwrap();
        // Counted by a reader beside the holder (custos doctor).
        let w = waiting(&path).unwrap().unwrap();
        assert_eq!((w.records, w.size), (3, 4096));
        assert_eq!(w.used, r.at - HEADER);
        assert_eq!(waiting(&dir.join("none")).unwrap(), None);
        // A crash: what was written is there at the next start.
        drop(r);
        let mut r = Reserve::open(&path, 4096).unwrap();
        assert_eq!(r.entries().unwrap(), vec![entry(1), entry(2), entry(3)]);
        assert_eq!(r.since(), 7, "noted by the generation's first write");
        // Cleared, then a write of the same size whose end marker a crash
        // lost: the old frames after it stay gone (another generation).
        r.clear().unwrap();
        assert!(r.entries().unwrap().is_empty());
        assert_eq!(waiting(&path).unwrap().unwrap().records, 0);
        let frame = FRAME_HEAD + serde_json::to_vec(&entry(4)).unwrap().len() as u64;
        let marker_at = r.at + frame;
        r.write(&[entry(4)], 11).unwrap();
        r.file.write_all_at(&[1, 0, 0, 0], marker_at).unwrap();
        drop(r);
        let mut r = Reserve::open(&path, 4096).unwrap();
        assert_eq!(r.entries().unwrap(), vec![entry(4)]);
        // A frame torn by a crash ends the reading; the ones before stay.
        let torn_at = r.at + FRAME_HEAD;
        r.write(&[entry(5)], 12).unwrap();
        r.file.write_all_at(b"X", torn_at + 2).unwrap();
        drop(r);
        let mut r = Reserve::open(&path, 4096).unwrap();
        assert_eq!(r.entries().unwrap(), vec![entry(4)]);
        // Full: refused, nothing half there.
        let big: Vec<_> = (0..200).map(entry).collect();
        assert_eq!(
            r.write(&big, 13).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        drop(r);
        assert_eq!(
            Reserve::open(&path, 4096).unwrap().entries().unwrap(),
            vec![entry(4)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
