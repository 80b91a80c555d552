//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay
//! tests: untrusted request parts through the same code the router runs on
//! them. Each must return, never panic.

use axum::http::{HeaderMap, HeaderValue, header};
use custos_core::query::Level;

/// An `Authorization` header value.
pub fn authorization(bytes: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(bytes) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    let _ = crate::auth::presented_for_fuzzing(&headers);
}

/// A QIDO-RS query string at every level, and an `Accept` header.
pub fn qido(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    for level in [Level::Patient, Level::Study, Level::Series, Level::Image] {
        let _ = crate::qido::parse_query(level, &[], Some(text), 1000);
    }
    let _ = crate::multipart::media_ranges(Some(text));
}
