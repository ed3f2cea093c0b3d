//! HTTP/1.x: heads and the incremental message parser.
pub mod head;
pub mod identity;
pub mod parser;

pub use head::{AuthScheme, Head, RequestHead, ResponseHead};
pub use parser::{MessageParser, ParseError, ParseEvent, RequestMethods};
