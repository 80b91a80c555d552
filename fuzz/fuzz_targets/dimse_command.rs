//! A DIMSE command set as received.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custos_dimse::fuzzing::command(data));
