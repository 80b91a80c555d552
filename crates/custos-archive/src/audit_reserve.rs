//! The audit writer's reserve: a file of fixed size in the data folder,
//! allocated at start while there is room. When the index cannot take a
//! batch (its disk full, its database away), the records of accesses
//! waiting for it go here, synced, and the accesses are served: reading goes
//! on during an outage of writing without any access going unrecorded. The
//! writer appends them to the trail as soon as the index takes them, then
//! empties the reserve; records a crash left in it are appended at the next
//! start (those already in the trail are recognised and left out).
//!
//! Format: frames of [length u32 LE][first 8 bytes of SHA-256 of the
//! payload][payload: JSON `[time, body]`], ended by a zero length. A frame
//! torn by a crash fails its checksum and ends the reading (its access was
//! never served: it is served only after the sync).

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
    /// Where the next frame goes (the end marker's place).
    at: u64,
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    let mut c = [0u8; 8];
    c.copy_from_slice(&digest[..8]);
    c
}

impl Reserve {
    /// Opens the reserve at `path`, allocating it (zeros, synced, with its
    /// folder entry) if it is missing or short: allocation needs room, which
    /// is why it is done at start.
    pub(crate) fn open(path: &Path, size: u64) -> io::Result<Reserve> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
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
        let mut reserve = Reserve {
            file,
            size: size.max(had),
            at: 0,
        };
        reserve.at = reserve.scan()?.1;
        Ok(reserve)
    }

    /// The records in the reserve, oldest first, and where they end.
    fn scan(&self) -> io::Result<(Vec<(String, String)>, u64)> {
        let mut out = Vec::new();
        let mut at = 0u64;
        let mut head = [0u8; 12];
        while at + 12 <= self.size {
            self.file.read_exact_at(&mut head, at)?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64;
            if len == 0 || at + 12 + len > self.size {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            self.file.read_exact_at(&mut payload, at + 12)?;
            if checksum(&payload) != head[4..12] {
                break;
            }
            match serde_json::from_slice::<(String, String)>(&payload) {
                Ok(entry) => out.push(entry),
                Err(_) => break,
            }
            at += 12 + len;
        }
        Ok((out, at))
    }

    /// The records in the reserve, oldest first.
    pub(crate) fn entries(&self) -> io::Result<Vec<(String, String)>> {
        Ok(self.scan()?.0)
    }

    /// Adds records after those already there, synced; an error (the
    /// reserve full, the disk failing) leaves them out.
    pub(crate) fn write(&mut self, entries: &[(String, String)]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            let payload = serde_json::to_vec(entry).map_err(io::Error::other)?;
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&checksum(&payload));
            bytes.extend_from_slice(&payload);
        }
        // The end marker after them: stale frames further on are never read.
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

    /// Empties the reserve (its records are in the trail).
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.file.write_all_at(&[0u8; 4], 0)?;
        self.file.sync_data()?;
        self.at = 0;
        Ok(())
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
        r.write(&[entry(1), entry(2)]).unwrap();
        r.write(&[entry(3)]).unwrap();
        // A crash: what was written is there at the next start.
        drop(r);
        let mut r = Reserve::open(&path, 4096).unwrap();
        assert_eq!(r.entries().unwrap(), vec![entry(1), entry(2), entry(3)]);
        // Cleared, then a shorter write: the old frames stay gone.
        r.clear().unwrap();
        assert!(r.entries().unwrap().is_empty());
        r.write(&[entry(4)]).unwrap();
        assert_eq!(
            Reserve::open(&path, 4096).unwrap().entries().unwrap(),
            vec![entry(4)]
        );
        // A frame torn by a crash ends the reading; the ones before stay.
        let torn_at = r.at + 12;
        r.write(&[entry(5)]).unwrap();
        r.file.write_all_at(b"X", torn_at + 2).unwrap();
        assert_eq!(
            Reserve::open(&path, 4096).unwrap().entries().unwrap(),
            vec![entry(4)]
        );
        // Full: refused, nothing half there.
        let big: Vec<_> = (0..200).map(entry).collect();
        assert_eq!(
            r.write(&big).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
