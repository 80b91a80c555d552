//! A QIDO-RS query string and an Accept header.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custos_web::fuzzing::qido(data));
