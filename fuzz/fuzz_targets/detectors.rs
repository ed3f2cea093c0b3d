//! The JWT decoder and the URL detectors on any text: never a panic; the claims they report
//! are bounded by the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::http::identity::{decode_jwt, url_detectors};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = decode_jwt(text);
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let mut out = Vec::new();
    url_detectors(path, query, &mut out);
    assert!(out.len() <= 64);
});
