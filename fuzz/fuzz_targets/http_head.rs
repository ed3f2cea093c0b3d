//! The HTTP/1.x head parser on any bytes: never a panic, and a complete head never claims more
//! bytes than it was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use monitor::http::head::{HeadParse, find_message_start, parse_head, starts_like_message};

fuzz_target!(|data: &[u8]| {
    if let Ok(HeadParse::Complete { len, .. }) = parse_head(data) {
        assert!(len <= data.len());
    }
    let _ = starts_like_message(data);
    if let Some(i) = find_message_start(data) {
        assert!(i < data.len());
    }
});
