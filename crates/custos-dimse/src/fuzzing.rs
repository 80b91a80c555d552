//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay
//! tests: untrusted bytes through the same code an association runs on them.
//! Each must return, never panic.

use crate::identifier::{Model, parse};
use crate::syntaxes::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

/// A command set as received (implicit VR little endian).
pub fn command(bytes: &[u8]) {
    let _ = crate::command::Command::decode(bytes);
}

/// A query/retrieve identifier, read in each of the syntaxes we accept
/// (the first byte picks one), then parsed for both information models.
pub fn identifier(bytes: &[u8]) {
    let Some((pick, rest)) = bytes.split_first() else {
        return;
    };
    let ts = match pick % 3 {
        0 => IMPLICIT_VR_LE,
        1 => EXPLICIT_VR_LE,
        _ => "1.2.840.10008.1.2.1.99",
    };
    let Ok(obj) = crate::association::read_identifier(rest.to_vec(), ts) else {
        return;
    };
    for model in [Model::PatientRoot, Model::StudyRoot] {
        let _ = parse(&obj, model, 1000);
    }
}
