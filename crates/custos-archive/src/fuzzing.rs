//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay
//! tests: untrusted bytes through the same code the server runs on them.
//! Each must return, never panic.

use crate::attributes::record_of;

/// A received instance (C-STORE data set with its meta, or a STOW-RS part):
/// the ingest parse, the index record, and the DICOM JSON that WADO-RS
/// metadata would make of it.
pub fn stored_file(bytes: &[u8]) {
    let Ok(obj) = crate::ingest::parse_bytes(bytes) else {
        return;
    };
    let _ = record_of(&obj);
    let _ = crate::view::metadata_json(obj, &|study, series| format!("/{study}/{series}"));
}

/// Runs `f` on every input of `fuzz/corpus/<target>` and of
/// `fuzz/regressions/<target>` (what fuzzing found, kept by name); returns
/// how many there were. Used by each crate's corpus replay test.
pub fn replay_corpus(target: &str, f: fn(&[u8])) -> usize {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in [
        fuzz.join("corpus").join(target),
        fuzz.join("regressions").join(target),
    ] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(input) = std::fs::read(entry.path()) {
                f(&input);
                n += 1;
            }
        }
    }
    n
}
