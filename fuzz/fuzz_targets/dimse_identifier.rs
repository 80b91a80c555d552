//! A C-FIND/C-GET/C-MOVE identifier in each accepted syntax (first byte picks it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custos_dimse::fuzzing::identifier(data));
