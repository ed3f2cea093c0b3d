//! Parsing one HTTP/1.x head (start line and headers) into metadata.
//!
//! What leaves this module is metadata only: the raw values of Authorization, Cookie, API-key
//! headers and every query value are looked at here and dropped; only the auth *scheme* and the
//! query *keys* survive.

use super::KNOWN_METHODS;
use serde::Serialize;

use super::identity::{JwtClaims, decode_jwt, fingerprint, url_detectors};

/// Headers parsed per head; more than this and the head is treated as malformed.
const MAX_HEADERS: usize = 128;
/// httparse has no uninitialised variant for responses: a smaller array keeps zeroing cheap.
const MAX_RESPONSE_HEADERS: usize = 64;
/// Query keys kept per request (names only), and the longest key kept.
const MAX_QUERY_KEYS: usize = 32;
const MAX_KEY_LEN: usize = 64;
const MAX_HOST_LEN: usize = 255;
const MAX_PATH_LEN: usize = 2048;
const MAX_UA_LEN: usize = 256;

/// Header names that carry an API key; their values are secrets.
pub const API_KEY_HEADERS: &[&str] = &[
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-api-token",
    "x-access-token",
];

/// API-key header names a policy may add at most (beyond the built-in ones).
pub const MAX_EXTRA_API_KEY_HEADERS: usize = 64;

/// What a policy tells the HTTP parsers: header names, beyond `API_KEY_HEADERS`, whose values
/// are API keys, and so secrets everywhere (fingerprinted, never output, blanked in
/// recordings). A value handed to every parse and replaced on a policy reload, not process-wide
/// state: `apiwatch check` changes nothing, a reload that drops a name drops it, and looking a
/// header up takes no lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpOptions {
    /// Lowercase, none of them built in, at most MAX_EXTRA_API_KEY_HEADERS.
    extra_api_key_headers: std::sync::Arc<[String]>,
}

impl HttpOptions {
    /// Options declaring `names` (any case) as API-key headers too.
    pub fn with_api_key_headers<I: IntoIterator<Item = String>>(names: I) -> Self {
        let mut extra: Vec<String> = Vec::new();
        for n in names {
            let n = n.to_ascii_lowercase();
            if !API_KEY_HEADERS.contains(&n.as_str())
                && !extra.contains(&n)
                && extra.len() < MAX_EXTRA_API_KEY_HEADERS
            {
                extra.push(n);
            }
        }
        Self {
            extra_api_key_headers: extra.into(),
        }
    }

    pub fn is_api_key_header(&self, name: &str) -> bool {
        API_KEY_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
            || self
                .extra_api_key_headers
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
    }

    /// Header names whose values never leave the process.
    pub fn is_secret_header(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("proxy-authorization")
            || name.eq_ignore_ascii_case("cookie")
            || name.eq_ignore_ascii_case("set-cookie")
            || self.is_api_key_header(name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    #[default]
    None,
    Basic,
    Bearer,
    Apikey,
    Cookie,
    Other,
}

impl AuthScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthScheme::None => "none",
            AuthScheme::Basic => "basic",
            AuthScheme::Bearer => "bearer",
            AuthScheme::Apikey => "apikey",
            AuthScheme::Cookie => "cookie",
            AuthScheme::Other => "other",
        }
    }
}

/// How the body of a message is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
    /// After a 101 or a successful CONNECT the bytes are another protocol.
    Tunnel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query_keys: Vec<String>,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub auth_scheme: AuthScheme,
    pub version: u8,
    pub framing: Framing,
    pub expect_continue: bool,
    pub upgrade: bool,
    /// `Upgrade` offers `h2c`: a 101 answer turns the connection into HTTP/2, this request
    /// becoming its stream 1 (RFC 7540 section 3.2).
    pub upgrade_h2c: bool,
    /// The head was cut short (beyond the captured prefix); fields may be missing.
    pub truncated: bool,
    /// Keyed fingerprint of the credential (see identity::fingerprint); never the credential.
    pub fingerprint: Option<String>,
    /// Header and claims subset of a bearer JWT, decoded without verification.
    pub jwt: Option<Box<JwtClaims>>,
    /// Names of the detectors that fired on the path or query values (never the values).
    pub url_detectors: Vec<&'static str>,
    /// Which API-key header carried the key (its name, lowercase; never its value).
    pub api_key_header: Option<String>,
    /// The body's media type (`application/json`), parameters dropped.
    pub content_type: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: u8,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub truncated: bool,
    pub content_type: Option<String>,
}

/// Longest media type kept; a longer one is not a media type anyone uses.
const MAX_MEDIA_TYPE_LEN: usize = 64;

const COMMON_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "text/plain",
    "text/html",
    "application/grpc",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
];

/// The media type of a Content-Type value, lowercase, without parameters (`charset`,
/// `boundary`): None when it is not `type/subtype` made of token characters.
pub fn media_type(value: &[u8]) -> Option<String> {
    let mt = value.split(|&b| b == b';').next()?.trim_ascii();
    // The usual ones, as servers write them, need no checking or lowercasing.
    if let Some(common) = COMMON_MEDIA_TYPES.iter().find(|c| c.as_bytes() == mt) {
        return Some((*common).to_string());
    }
    // RFC 9110 token characters a media type uses (a match: this runs on every message).
    let token = |b: &u8| matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'&' | b'^' | b'_' | b'.' | b'+' | b'-');
    let slash = mt.iter().position(|&b| b == b'/')?;
    let ok = mt.len() <= MAX_MEDIA_TYPE_LEN
        && slash > 0
        && slash + 1 < mt.len()
        && mt[..slash].iter().all(token)
        && mt[slash + 1..].iter().all(token);
    // Token characters are ASCII: the conversion cannot fail once `ok`.
    ok.then(|| std::str::from_utf8(mt).ok().map(str::to_ascii_lowercase))
        .flatten()
}

// A request head is boxed from the moment its builder starts: it moves from the parser's events
// through the pending queue into its exchange, and a move of the box is 8 bytes where the head is
// about 250 (one allocation per request measured cheaper than those copies: callgrind, docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    Request(Box<RequestHead>),
    Response(ResponseHead),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("malformed HTTP head: {0}")]
    Malformed(&'static str),
}

/// Result of trying to parse a head from the bytes buffered so far.
#[allow(
    clippy::large_enum_variant,
    reason = "transient: it lives only between the parser and its caller (see Head)"
)]
pub enum HeadParse {
    Complete { head: Head, len: usize },
    Partial,
}

/// True if `buf` starts with something that can be the beginning of an HTTP/1.x head (a known
/// method and a space, or a status line), or with a prefix of one.
pub fn starts_like_message(buf: &[u8]) -> bool {
    let prefix_of = |s: &[u8]| {
        let n = s.len().min(buf.len());
        n > 0 && buf[..n] == s[..n]
    };
    prefix_of(b"HTTP/1.")
        || KNOWN_METHODS.iter().any(|m| {
            let m = m.as_bytes();
            if buf.len() <= m.len() {
                prefix_of(m)
            } else {
                buf.starts_with(m) && buf[m.len()] == b' '
            }
        })
}

/// Offset of the first place in `buf` where a message seems to start, for resynchronisation:
/// a status line, or a known method and a space followed by `/` (any target for OPTIONS and
/// CONNECT, whose targets are `*` and `host:port`).
pub fn find_message_start(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| {
        let rest = &buf[i..];
        rest.starts_with(b"HTTP/1.")
            || KNOWN_METHODS.iter().any(|m| {
                let m = m.as_bytes();
                rest.len() > m.len()
                    && rest.starts_with(m)
                    && rest[m.len()] == b' '
                    && (matches!(m, b"OPTIONS" | b"CONNECT") || rest.get(m.len() + 1) == Some(&b'/'))
            })
    })
}

/// Parses a head from `buf`. `Ok(Partial)` means more bytes are needed.
pub fn parse_head(buf: &[u8], http: &HttpOptions) -> Result<HeadParse, HeadError> {
    if buf.starts_with(b"HTTP/") {
        parse_response(buf, false)
    } else {
        parse_request(buf, false, http)
    }
}

/// Parses what there is of a head that will never be completed (the rest was not captured):
/// the complete lines are kept, the partial last line is dropped.
pub fn parse_truncated_head(buf: &[u8], http: &HttpOptions) -> Option<Head> {
    let end = buf.iter().rposition(|&b| b == b'\n')? + 1;
    let mut closed = buf[..end].to_vec();
    closed.extend_from_slice(b"\r\n");
    let parsed = if closed.starts_with(b"HTTP/") {
        parse_response(&closed, true)
    } else {
        parse_request(&closed, true, http)
    };
    match parsed {
        Ok(HeadParse::Complete { head, .. }) => Some(head),
        _ => None,
    }
}

fn parse_request(buf: &[u8], truncated: bool, http: &HttpOptions) -> Result<HeadParse, HeadError> {
    // Uninitialised: zeroing 128 headers (4 KiB) per parse showed up in profiles.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let (method, target, version, fields, len) = match super::simple_head::request(buf, &mut headers) {
        Some((method, target, head)) => (method, target, head.version, head.headers, head.len),
        None => {
            let mut headers =
                [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            return parse_request_httparse(buf, truncated, http, &mut headers);
        }
    };
    let mut b = RequestHeadBuilder::new(method, target, version, truncated, http);
    for h in fields {
        b.header(h.name, h.value);
    }
    let head = b.finish();
    Ok(HeadParse::Complete {
        head: Head::Request(head),
        len,
    })
}

/// Any other head: httparse's grammar, errors and partial heads.
fn parse_request_httparse<'a>(
    buf: &'a [u8],
    truncated: bool,
    http: &HttpOptions,
    headers: &mut [std::mem::MaybeUninit<httparse::Header<'a>>],
) -> Result<HeadParse, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(HeadParse::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Malformed("too many headers"));
        }
        Err(_) => return Err(HeadError::Malformed("bad request head")),
    };
    let mut b = RequestHeadBuilder::new(
        req.method.unwrap_or_default(),
        req.path.unwrap_or_default(),
        req.version.unwrap_or(1),
        truncated,
        http,
    );
    for h in req.headers.iter() {
        b.header(h.name, h.value);
    }
    let head = b.finish();
    Ok(HeadParse::Complete {
        head: Head::Request(head),
        len,
    })
}

/// Builds a request head from its start line and fields: HTTP/1 (httparse's headers) and
/// HTTP/2 (the HPACK-decoded fields, `:path` as the target) share it, so identity, secrets and
/// URL detectors behave the same on both.
pub struct RequestHeadBuilder<'a> {
    http: &'a HttpOptions,
    head: Box<RequestHead>,
    content_length: Option<u64>,
    chunked: bool,
    cookie_fp: Option<String>,
    api_key_fp: Option<String>,
}

impl<'a> RequestHeadBuilder<'a> {
    pub fn new(method: &str, target: &str, version: u8, truncated: bool, http: &'a HttpOptions) -> Self {
        let mut head = Box::new(RequestHead {
            method: method.to_string(),
            path: String::new(),
            query_keys: Vec::new(),
            host: None,
            user_agent: None,
            auth_scheme: AuthScheme::None,
            version,
            framing: Framing::None,
            expect_continue: false,
            upgrade: false,
            upgrade_h2c: false,
            truncated,
            fingerprint: None,
            jwt: None,
            url_detectors: Vec::new(),
            api_key_header: None,
            content_type: None,
        });
        let (authority, path, query) = split_target(target);
        head.path = truncate_str(path, MAX_PATH_LEN);
        head.host = authority.map(clean_host);
        if let Some(q) = query {
            head.query_keys = query_keys(q);
        }
        url_detectors(path, query, &mut head.url_detectors);
        Self {
            http,
            head,
            content_length: None,
            chunked: false,
            cookie_fp: None,
            api_key_fp: None,
        }
    }

    /// HTTP/2's `:authority`: the host, unless a `host` field says otherwise.
    pub fn authority(&mut self, value: &[u8]) {
        if self.head.host.is_none() {
            self.head.host = std::str::from_utf8(value).ok().map(clean_host);
        }
    }

    pub fn header(&mut self, name: &str, value: &[u8]) {
        let head = &mut self.head;
        if name.eq_ignore_ascii_case("host") {
            if head.host.is_none() {
                head.host = std::str::from_utf8(value).ok().map(clean_host);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            self.content_length = parse_content_length(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.chunked = last_coding_is_chunked(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            head.auth_scheme = auth_scheme_of(value);
            let credential = value
                .splitn(2, |&b| b == b' ')
                .nth(1)
                .unwrap_or(value)
                .trim_ascii();
            head.fingerprint = Some(fingerprint(credential));
            if head.auth_scheme == AuthScheme::Bearer {
                head.jwt = std::str::from_utf8(credential)
                    .ok()
                    .and_then(decode_jwt)
                    .map(Box::new);
            }
        } else if name.eq_ignore_ascii_case("cookie") {
            // HTTP/2 may split cookies over several fields (RFC 9113 section 8.2.3): the first
            // one's fingerprint stands for them.
            if self.cookie_fp.is_none() {
                self.cookie_fp = Some(fingerprint(value));
            }
        } else if self.http.is_api_key_header(name) {
            head.api_key_header = Some(name.to_ascii_lowercase());
            self.api_key_fp = Some(fingerprint(value));
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent = std::str::from_utf8(value)
                .ok()
                .map(|v| truncate_str(v, MAX_UA_LEN));
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type = media_type(value);
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade = true;
            head.upgrade_h2c |= value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"h2c"));
        }
    }

    pub fn finish(self) -> Box<RequestHead> {
        let mut head = self.head;
        // Precedence: an Authorization header says most; then an API-key header; then a cookie.
        if head.auth_scheme == AuthScheme::None {
            if self.api_key_fp.is_some() {
                head.auth_scheme = AuthScheme::Apikey;
                head.fingerprint = self.api_key_fp;
            } else if self.cookie_fp.is_some() {
                head.auth_scheme = AuthScheme::Cookie;
                head.fingerprint = self.cookie_fp;
            }
        }
        head.framing = if self.chunked {
            Framing::Chunked
        } else {
            match self.content_length {
                Some(0) | None => Framing::None,
                Some(n) => Framing::Length(n),
            }
        };
        head
    }
}

fn parse_response(buf: &[u8], truncated: bool) -> Result<HeadParse, HeadError> {
    // Uninitialised, as for requests: zeroing the field array on every response showed up too.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let (status, version, fields, len) = match super::simple_head::response(buf, &mut headers) {
        Some((status, head)) => (status, head.version, head.headers, head.len),
        None => {
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                buf,
                &mut headers,
            ) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(HeadParse::Partial),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HeadError::Malformed("too many headers"));
                }
                Err(_) => return Err(HeadError::Malformed("bad response head")),
            };
            (
                resp.code.unwrap_or(0),
                resp.version.unwrap_or(1),
                &*resp.headers,
                len,
            )
        }
    };
    let mut head = ResponseHead {
        status,
        version,
        content_length: None,
        chunked: false,
        truncated,
        content_type: None,
    };
    for h in fields {
        if h.name.eq_ignore_ascii_case("content-length") {
            head.content_length = parse_content_length(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = last_coding_is_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("content-type") {
            head.content_type = media_type(h.value);
        }
    }
    Ok(HeadParse::Complete {
        head: Head::Response(head),
        len,
    })
}

/// Body framing of a response, given the method of the request it answers.
pub fn response_framing(resp: &ResponseHead, request_method: Option<&str>) -> Framing {
    let status = resp.status;
    if status == 101 {
        return Framing::Tunnel;
    }
    if request_method == Some("CONNECT") && (200..300).contains(&status) {
        return Framing::Tunnel;
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    if request_method == Some("HEAD") {
        return Framing::None;
    }
    if resp.chunked {
        return Framing::Chunked;
    }
    match resp.content_length {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }
}

fn auth_scheme_of(value: &[u8]) -> AuthScheme {
    let scheme = value.split(|&b| b == b' ').next().unwrap_or_default();
    if scheme.eq_ignore_ascii_case(b"basic") {
        AuthScheme::Basic
    } else if scheme.eq_ignore_ascii_case(b"bearer") {
        AuthScheme::Bearer
    } else if scheme.is_empty() {
        AuthScheme::None
    } else {
        AuthScheme::Other
    }
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    // Digits only, as nearly every message has them: no UTF-8 check, trim or general parse.
    if !v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit) {
        return Some(v.iter().fold(0, |n, &d| n * 10 + (d - b'0') as u64));
    }
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn last_coding_is_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .map(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .unwrap_or(false)
}

/// Splits a request target into (authority, path, query). Absolute-form targets (proxies) carry
/// an authority; any userinfo in it (`user:password@`) is dropped here.
fn split_target(target: &str) -> (Option<&str>, &str, Option<&str>) {
    let mut authority = None;
    let mut rest = target;
    for scheme in ["http://", "https://"] {
        if let Some(after) = strip_prefix_ignore_case(target, scheme) {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            let auth = &after[..end];
            authority = Some(auth.rsplit('@').next().unwrap_or(auth));
            rest = &after[end..];
            if rest.is_empty() {
                rest = "/";
            }
        }
    }
    // One byte scan for the end of the path (a `str` search per separator set up a memchr each,
    // a visible share of every request). `?` and `#` are ASCII: the slices are on boundaries.
    match rest.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) if rest.as_bytes()[i] == b'?' => {
            let query = &rest[i + 1..];
            let end = query.bytes().position(|b| b == b'#').unwrap_or(query.len());
            (authority, &rest[..i], Some(&query[..end]))
        }
        Some(i) => (authority, &rest[..i], None),
        None => (authority, rest, None),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

fn clean_host(v: &str) -> String {
    // Optional whitespace around a field value is spaces and tabs (RFC 9110 section 5.6.3).
    let v = v.trim_ascii();
    // What follows the last `@` (user information dropped), without a memrchr set-up per host.
    let v = match v.bytes().rposition(|b| b == b'@') {
        Some(i) => &v[i + 1..],
        None => v,
    };
    truncate_str(v, MAX_HOST_LEN)
}

/// The names of the query parameters, never their values.
fn query_keys(q: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for pair in super::split_ascii(q, b'&') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if key.is_empty() || keys.iter().any(|k| k == key) {
            continue;
        }
        if keys.len() == MAX_QUERY_KEYS {
            break;
        }
        keys.push(truncate_str(key, MAX_KEY_LEN));
    }
    keys
}

fn truncate_str(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(buf: &[u8]) -> RequestHead {
        match parse_head(buf, &HttpOptions::default()).unwrap() {
            HeadParse::Complete {
                head: Head::Request(r),
                ..
            } => *r,
            _ => panic!("not a complete request"),
        }
    }

    #[test]
    fn targets_split_as_str_searches_split_them() {
        // Origin-form targets (no authority), as the `str` searches split them.
        fn by_str(t: &str) -> (Option<&str>, &str, Option<&str>) {
            let rest = t.split('#').next().unwrap_or(t);
            match rest.split_once('?') {
                Some((p, q)) => (None, p, Some(q)),
                None => (None, rest, None),
            }
        }
        for t in [
            "/",
            "/a",
            "/a?b=1",
            "/a#f",
            "/a?b=1#f",
            "/a#f?b=1",
            "?",
            "#",
            "?#",
            "#?",
            "/a??b",
            "/a?b#c#d",
            "/é?ü=1#ö",
            "",
            "/a/b/c?x&y=2&z",
        ] {
            assert_eq!(split_target(t), by_str(t), "{t:?}");
        }
        assert_eq!(
            split_target("http://u:p@h:1/x?y#z"),
            (Some("h:1"), "/x", Some("y"))
        );
    }

    #[test]
    fn content_lengths_parse_as_before_the_digit_shortcut() {
        for v in [
            &b"0"[..],
            b"12",
            b" 12 ",
            b"+12",
            b"-1",
            b"",
            b"1a",
            b"18446744073709551615",
            b"18446744073709551616",
            b"9999999999999999999",
            b"99999999999999999999",
            b"\t7",
        ] {
            let before = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            assert_eq!(parse_content_length(v), before, "{v:?}");
        }
    }

    #[test]
    fn request_metadata_keeps_no_secret() {
        let r = req(b"GET /a/b?token=s3cr3t&x=1&x=2 HTTP/1.1\r\nHost: api.local\r\nAuthorization: Bearer abc.def\r\n\r\n");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.query_keys, vec!["token", "x"]);
        assert_eq!(r.host.as_deref(), Some("api.local"));
        assert_eq!(r.auth_scheme, AuthScheme::Bearer);
        assert!(!format!("{r:?}").contains("s3cr3t"));
        assert!(!format!("{r:?}").contains("abc.def"));
    }

    #[test]
    fn auth_schemes() {
        let scheme = |h: &str| req(format!("GET / HTTP/1.1\r\n{h}\r\n\r\n").as_bytes()).auth_scheme;
        assert_eq!(scheme("Authorization: Basic dTpw"), AuthScheme::Basic);
        assert_eq!(scheme("authorization: bearer t"), AuthScheme::Bearer);
        assert_eq!(scheme("Authorization: Digest x"), AuthScheme::Other);
        assert_eq!(scheme("X-Api-Key: k"), AuthScheme::Apikey);
        assert_eq!(scheme("Cookie: a=b"), AuthScheme::Cookie);
        assert_eq!(scheme("Accept: */*"), AuthScheme::None);
    }

    #[test]
    fn absolute_form_drops_userinfo() {
        let r = req(b"GET http://user:pw@example.test:8080/x?k=v HTTP/1.1\r\n\r\n");
        assert_eq!(r.host.as_deref(), Some("example.test:8080"));
        assert_eq!(r.path, "/x");
        assert_eq!(r.query_keys, vec!["k"]);
    }

    #[test]
    fn media_types_lose_their_parameters_and_junk_is_refused() {
        // The common ones take a shortcut: the same answers.
        for (value, want) in [
            (&b"text/plain"[..], "text/plain"),
            (b" application/json ; charset=utf-8", "application/json"),
            (b"Text/Plain", "text/plain"),
        ] {
            assert_eq!(media_type(value).as_deref(), Some(want));
        }
        assert_eq!(
            media_type(b"Application/JSON; charset=utf-8").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            media_type(b"multipart/form-data; boundary=x").as_deref(),
            Some("multipart/form-data")
        );
        assert_eq!(
            media_type(b"application/vnd.api+json").as_deref(),
            Some("application/vnd.api+json")
        );
        for junk in [&b""[..], b"json", b"/x", b"a/", b"a/b c", b"text/<script>"] {
            assert_eq!(media_type(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
        assert_eq!(media_type(format!("a/{}", "b".repeat(80)).as_bytes()), None);
    }

    #[test]
    fn response_framing_rules() {
        let resp = |status, cl, chunked| ResponseHead {
            status,
            version: 1,
            content_length: cl,
            chunked,
            truncated: false,
            content_type: None,
        };
        assert_eq!(
            response_framing(&resp(200, Some(5), false), Some("HEAD")),
            Framing::None
        );
        assert_eq!(
            response_framing(&resp(204, None, false), Some("GET")),
            Framing::None
        );
        assert_eq!(
            response_framing(&resp(304, Some(9), false), Some("GET")),
            Framing::None
        );
        assert_eq!(
            response_framing(&resp(100, None, false), Some("POST")),
            Framing::None
        );
        assert_eq!(
            response_framing(&resp(101, None, false), Some("GET")),
            Framing::Tunnel
        );
        assert_eq!(
            response_framing(&resp(200, None, false), Some("CONNECT")),
            Framing::Tunnel
        );
        assert_eq!(
            response_framing(&resp(200, Some(5), true), Some("GET")),
            Framing::Chunked
        );
        assert_eq!(
            response_framing(&resp(200, Some(5), false), Some("GET")),
            Framing::Length(5)
        );
        assert_eq!(
            response_framing(&resp(200, None, false), Some("GET")),
            Framing::UntilClose
        );
    }

    #[test]
    fn truncated_head_keeps_complete_lines() {
        let h = parse_truncated_head(
            b"POST /upload HTTP/1.1\r\nHost: h\r\nX-Long: aaaa",
            &HttpOptions::default(),
        )
        .unwrap();
        match h {
            Head::Request(r) => {
                assert_eq!(r.method, "POST");
                assert_eq!(r.path, "/upload");
                assert!(r.truncated);
            }
            _ => panic!(),
        }
    }

    #[test]
    fn message_starts_from_the_one_method_list() {
        for yes in [
            &b"G"[..],
            b"GE",
            b"GET",
            b"GET ",
            b"GET /x",
            b"PATCH /",
            b"HTTP/1.1 200",
            b"HTT",
        ] {
            assert!(starts_like_message(yes), "{:?}", String::from_utf8_lossy(yes));
        }
        for no in [&b""[..], b"GETX", b"PRI * HTTP/2.0", b"\x16\x03\x01", b"HTTP/2"] {
            assert!(!starts_like_message(no), "{:?}", String::from_utf8_lossy(no));
        }
        assert_eq!(find_message_start(b"garbage GET /a HTTP/1.1"), Some(8));
        assert_eq!(find_message_start(b"xxOPTIONS * HTTP/1.1"), Some(2));
        assert_eq!(find_message_start(b"TRACE /x HTTP/1.1"), Some(0));
        assert_eq!(find_message_start(b"a GETaway and POSTal"), None);
        assert_eq!(find_message_start(b"..HTTP/1.1 204"), Some(2));
    }
}
