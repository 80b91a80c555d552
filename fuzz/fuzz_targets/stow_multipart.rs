//! A STOW-RS request's Content-Type (first line) and multipart/related body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custos_web::fuzzing::stow_body(data));
