//! HTTP/1.x (heads and the incremental message parser) and HTTP/2 (h2/).
pub mod h2;
pub mod head;
pub mod identity;
pub mod parser;

pub use head::{AuthScheme, Head, RequestHead, ResponseHead};
pub use parser::{MessageParser, ParseError, ParseEvent, RequestMethods};

/// The standard methods (RFC 9110 and PATCH): what a request may start with, the method label
/// values (others become `_OTHER`, the OTel convention) and what a policy may name.
pub const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
