//! A received instance: ingest parse, index record, WADO-RS metadata JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custos_archive::fuzzing::stored_file(data));
