//! HTTP/1.x (heads and the incremental message parser) and HTTP/2 (h2/).
pub mod h2;
pub mod head;
pub mod identity;
pub mod parser;
mod simple_head;

pub use head::{AuthScheme, Head, HttpOptions, RequestHead, ResponseHead};
pub use parser::{MessageParser, ParseError, ParseEvent, RequestMethods};

/// The standard methods (RFC 9110 and PATCH): what a request may start with, the method label
/// values (others become `_OTHER`, the OTel convention) and what a policy may name.
pub const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The pieces of `s` between `sep`s, as `s.split(sep)` gives them. For the short paths and
/// queries of every exchange: a plain byte loop, where `str::split` sets up a memchr search per
/// piece (that setup was most of route templating and the URL detectors, by instruction count).
/// `sep` must be ASCII, so every piece starts and ends on a character boundary.
pub fn split_ascii(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    debug_assert!(sep.is_ascii());
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == sep) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::split_ascii;

    #[test]
    fn split_ascii_splits_as_str_split_does() {
        for s in [
            "",
            "/",
            "//",
            "/users/42",
            "users/42/",
            "a",
            "/é/ü/",
            "?&=",
            "a&b=c&&",
        ] {
            for sep in [b'/', b'&', b'='] {
                let ours: Vec<&str> = split_ascii(s, sep).collect();
                let std: Vec<&str> = s.split(sep as char).collect();
                assert_eq!(ours, std, "{s:?} on {:?}", sep as char);
            }
        }
    }
}
