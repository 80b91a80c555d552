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

/// A STOW-RS request: the first line is its Content-Type, the rest its body.
/// The framing check, multer's parsing of every part, and the look at each
/// part's head that tells a Part 10 file from a bare meta group.
pub fn stow_body(bytes: &[u8]) {
    let (first, body) = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[][..]),
    };
    let Ok(value) = HeaderValue::from_bytes(first) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, value);
    let Ok(boundary) = crate::stow::boundary_of(&headers) else {
        return;
    };
    let body = bytes::Bytes::copy_from_slice(body);
    let stream = futures_util::stream::once(async move { Ok::<_, axum::Error>(body) });
    let mut parts = crate::stow::parts(stream, boundary, 1 << 20);
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> =
            tokio::runtime::Builder::new_current_thread().build().ok();
    }
    RUNTIME.with(|rt| {
        let Some(rt) = rt else { return };
        rt.block_on(async {
            while let Ok(Some(mut field)) = parts.next_field().await {
                let mut head = Vec::new();
                while let Ok(Some(chunk)) = field.chunk().await {
                    if head.len() < custos_archive::part10::MAX_BARE_META {
                        head.extend_from_slice(&chunk);
                    }
                }
                let _ = custos_archive::part10::bare_meta(&head);
            }
        });
    });
}

/// An `Authorization: Bearer` token through the OpenID Connect checks.
pub fn bearer_token(bytes: &[u8]) {
    custos_auth::oidc::fuzzing_token(bytes);
}
