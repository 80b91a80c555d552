//! A bearer token through the OpenID Connect checks (header, key, claims).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| custos_web::fuzzing::bearer_token(data));
