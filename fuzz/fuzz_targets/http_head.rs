//! The HTTP/1.x head parser on any bytes: never a panic, and a complete head never claims more
//! bytes than it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::http::HttpOptions;
use monitor::http::head::{HeadParse, find_message_start, parse_head, starts_like_message};

fuzz_target!(|data: &[u8]| {
    // With a policy-declared API-key header, as the agent parses under a policy.
    let http = HttpOptions::with_api_key_headers(["x-shop-key".to_string()]);
    if let Ok(HeadParse::Complete { len, .. }) = parse_head(data, &http) {
        assert!(len <= data.len());
    }
    let _ = starts_like_message(data);
    if let Some(i) = find_message_start(data) {
        assert!(i < data.len());
    }
});
