//! An HTTP Authorization header value.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custos_web::fuzzing::authorization(data));
