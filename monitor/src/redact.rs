//! Length-preserving redaction of captured bytes before they are written to a recording.
//!
//! What is blanked (with `*`, so byte counts and framing stay exact): the values of secret
//! headers (Authorization keeps its scheme word), every query value in a request line, and the
//! values of credential-like fields (`password=`, `"token": "..."`) anywhere in the bytes. A secret
//! header cut at the end of one chunk is blanked on into the start of the next chunk of the same
//! stream. HTTP/2 header blocks are HPACK: see `h2.rs`.
use std::collections::HashMap;

use crate::capture::{CaptureEvent, ConnId, Direction};
use crate::http::HttpOptions;

/// Field names whose values are credentials wherever they appear (forms, JSON bodies).
const SECRET_FIELDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "api-key",
    "authorization",
    "session",
];

mod h2;

/// How one direction of a connection is redacted.
enum Side {
    /// HTTP/1 (or anything not HTTP/2); true: the last chunk ended inside a secret header line.
    Text(bool),
    H2(Box<h2::H2Side>),
}

/// Connection directions followed at most. Entries go at a connection's close (or a new open
/// on its fd); a process that exits without either (the syscall capture) would leave them, so
/// beyond the bound the stateless ones (text not inside a secret line) are dropped, then all.
const MAX_SIDES: usize = 131072;

#[derive(Default)]
pub struct Redactor {
    sides: HashMap<(ConnId, bool), Side>,
    /// The policy's API-key header names are secrets too.
    http: HttpOptions,
}

impl Redactor {
    pub fn new(http: HttpOptions) -> Self {
        Self {
            sides: HashMap::new(),
            http,
        }
    }

    /// A reloaded policy's header names, for every chunk from now on.
    pub fn set_http_options(&mut self, http: HttpOptions) {
        self.http = http;
    }

    pub fn redact(&mut self, ev: &mut CaptureEvent) {
        match ev {
            CaptureEvent::Data(d) => {
                let key = (d.id, d.direction == Direction::Ingress);
                let unseen = d.gap();
                if self.sides.len() >= MAX_SIDES && !self.sides.contains_key(&key) {
                    self.sides.retain(|_, s| !matches!(s, Side::Text(false)));
                    if self.sides.len() >= MAX_SIDES {
                        self.sides.clear();
                    }
                }
                let side = self.sides.entry(key).or_insert_with(|| {
                    if crate::http::h2::starts_connection(&d.bytes)
                        || crate::http::h2::starts_with_frames(&d.bytes)
                    {
                        Side::H2(Box::new(h2::H2Side::new(&d.bytes)))
                    } else {
                        Side::Text(false)
                    }
                });
                // A text stream that turns into HTTP/2 (after an h2c upgrade).
                if matches!(side, Side::Text(_)) && crate::http::h2::starts_connection(&d.bytes) {
                    *side = Side::H2(Box::new(h2::H2Side::new(&d.bytes)));
                }
                match side {
                    Side::H2(h) => {
                        h.redact(&mut d.bytes, unseen, &self.http);
                        // Bodies: credential-like fields, as in HTTP/1 bodies.
                        redact_secret_fields(&mut d.bytes);
                    }
                    Side::Text(_) if let Some(at) = h2c_switch_point(&d.bytes) => {
                        // A 101 to h2c and the server's first frames in one write: the head as
                        // text, the rest as HTTP/2 from here on.
                        redact_bytes(&mut d.bytes[..at], &self.http);
                        let mut h = Box::new(h2::H2Side::new(&d.bytes[at..]));
                        h.redact(&mut d.bytes[at..], unseen, &self.http);
                        redact_secret_fields(&mut d.bytes[at..]);
                        *side = Side::H2(h);
                    }
                    Side::Text(open_secret_line) => {
                        let mut start = 0;
                        if std::mem::take(open_secret_line) {
                            let end = d.bytes.iter().position(|&b| b == b'\n').unwrap_or(d.bytes.len());
                            let stop = if end > 0 && d.bytes[end - 1] == b'\r' {
                                end - 1
                            } else {
                                end
                            };
                            blank(&mut d.bytes[..stop]);
                            start = end;
                        }
                        *open_secret_line = redact_bytes(&mut d.bytes[start..], &self.http);
                    }
                }
            }
            CaptureEvent::Close { id, .. } => {
                self.sides.remove(&(*id, true));
                self.sides.remove(&(*id, false));
            }
            CaptureEvent::Open(o) => {
                // A reused fd starts a new connection.
                self.sides.remove(&(o.id, true));
                self.sides.remove(&(o.id, false));
            }
            CaptureEvent::Tls { .. } | CaptureEvent::ProcessExit { .. } | CaptureEvent::Process(_) => {}
        }
    }
}

fn blank(b: &mut [u8]) {
    b.iter_mut().for_each(|c| *c = b'*');
}

/// Redacts in place; returns true when the bytes end inside a secret header line.
pub fn redact_bytes(buf: &mut [u8], http: &HttpOptions) -> bool {
    let mut ends_in_secret = false;
    let mut pos = 0;
    while pos < buf.len() {
        let end = buf[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i);
        let line_end = end.unwrap_or(buf.len());
        let line = &mut buf[pos..line_end];
        // Request lines (the first, and any pipelined after it) carry query values.
        if crate::http::head::starts_like_message(line) && !line.starts_with(b"HTTP/") {
            redact_query_values(line);
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = std::str::from_utf8(&line[..colon]).unwrap_or("").to_string();
            if !name.is_empty() && !name.contains(' ') && http.is_secret_header(&name) {
                let value = &mut line[colon + 1..];
                let mut skip = value.iter().take_while(|&&b| b == b' ').count();
                if name.eq_ignore_ascii_case("authorization")
                    || name.eq_ignore_ascii_case("proxy-authorization")
                {
                    // Keep the scheme word ("Bearer", "Basic"): it is what the metadata reports.
                    skip += value[skip..]
                        .iter()
                        .take_while(|&&b| b != b' ' && b != b'\r')
                        .count();
                    skip += value[skip..].iter().take_while(|&&b| b == b' ').count();
                }
                let stop = value
                    .iter()
                    .rposition(|&b| b != b'\r')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                if skip < stop {
                    blank(&mut value[skip..stop]);
                }
                if end.is_none() {
                    ends_in_secret = true;
                }
            }
        }
        pos = line_end + 1;
    }
    redact_secret_fields(buf);
    ends_in_secret
}

/// In "METHOD target HTTP/1.x", blank every query value of the target.
fn redact_query_values(line: &mut [u8]) {
    let Some(q) = line.iter().position(|&b| b == b'?') else {
        return;
    };
    let end = line[q..]
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'#')
        .map(|i| q + i)
        .unwrap_or(line.len());
    let mut in_value = false;
    for c in &mut line[q + 1..end] {
        match *c {
            b'&' => in_value = false,
            b'=' if !in_value => in_value = true,
            _ if in_value => *c = b'*',
            _ => {}
        }
    }
}

/// Blanks `name=value` and `"name": "value"` for credential-like field names.
/// Where HTTP/2 frames begin in a chunk that starts with a `101 Switching Protocols` head and
/// goes on with them (an `Upgrade: h2c` answered in one write); None for anything else.
fn h2c_switch_point(bytes: &[u8]) -> Option<usize> {
    if !bytes.starts_with(b"HTTP/1.1 101") {
        return None;
    }
    let at = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    (at < bytes.len() && crate::http::h2::starts_connection(&bytes[at..])).then_some(at)
}

fn redact_secret_fields(buf: &mut [u8]) {
    let lower: Vec<u8> = buf.iter().map(|b| b.to_ascii_lowercase()).collect();
    for field in SECRET_FIELDS {
        let f = field.as_bytes();
        let mut from = 0;
        while let Some(i) = find(&lower[from..], f).map(|i| from + i) {
            from = i + f.len();
            // Whole names only: "token" must not match inside "tokens_left".
            let before_ok = i == 0 || !lower[i - 1].is_ascii_alphanumeric() && lower[i - 1] != b'_';
            if !before_ok {
                continue;
            }
            let mut j = i + f.len();
            if lower.get(j) == Some(&b'"') {
                j += 1;
                while matches!(lower.get(j), Some(b' ')) {
                    j += 1;
                }
                if lower.get(j) != Some(&b':') {
                    continue;
                }
                j += 1;
                while matches!(lower.get(j), Some(b' ')) {
                    j += 1;
                }
                if lower.get(j) != Some(&b'"') {
                    continue;
                }
                j += 1;
                let end = buf[j..]
                    .iter()
                    .position(|&b| b == b'"')
                    .map(|k| j + k)
                    .unwrap_or(buf.len());
                blank(&mut buf[j..end]);
            } else if lower.get(j) == Some(&b'=') {
                j += 1;
                let end = buf[j..]
                    .iter()
                    .position(|&b| b == b'&' || b == b' ' || b == b'\r' || b == b'\n')
                    .map(|k| j + k)
                    .unwrap_or(buf.len());
                blank(&mut buf[j..end]);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(s: &str) -> String {
        let mut b = s.as_bytes().to_vec();
        redact_bytes(&mut b, &HttpOptions::default());
        assert_eq!(b.len(), s.len(), "redaction must keep the length");
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn blanks_every_secret_and_keeps_length() {
        let r = redacted(
            "POST /login?user=bob&token=t0k3n HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer abc.def.ghi\r\nCookie: sid=s3ss\r\nX-API-Key: k3y\r\n\r\npassword=hunter2&x=1",
        );
        for secret in ["bob", "t0k3n", "abc.def.ghi", "s3ss", "k3y", "hunter2"] {
            assert!(!r.contains(secret), "{secret} leaked: {r}");
        }
        assert!(r.contains("Authorization: Bearer ****"));
        assert!(r.starts_with("POST /login?user=***&token=***** HTTP/1.1"));
        assert!(r.contains("Host: h"));
    }

    #[test]
    fn json_fields() {
        let r = redacted(r#"{"username":"bob","password": "pa55","tokens_left":"3"}"#);
        assert!(!r.contains("pa55"));
        assert!(r.contains(r#""tokens_left":"3""#));
    }

    #[test]
    fn an_h2c_upgrade_answered_in_one_write_is_redacted_as_http2_after_the_101() {
        use crate::http::h2::frame::encode_frame as frame;
        let mut bytes =
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
        let head = bytes.len();
        bytes.extend(frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        // :status 200, then set-cookie (static 55) without indexing: a 4-bit prefix, 15 + 40.
        let mut block = vec![0x88, 0x0f, 55 - 15, 10];
        block.extend(b"sid=s3cr3t");
        bytes.extend(frame(1, 4, 1, &block));
        let mut ev = CaptureEvent::Data(crate::capture::DataChunk {
            ts_ns: 0,
            id: ConnId { tgid: 1, fd: 2 },
            direction: Direction::Egress,
            total_len: bytes.len() as u64,
            bytes: bytes::BytesMut::from(&bytes[..]),
            tls: false,
        });
        Redactor::default().redact(&mut ev);
        let CaptureEvent::Data(d) = ev else { unreachable!() };
        assert_eq!(d.bytes.len(), bytes.len());
        assert_eq!(d.bytes[..head], bytes[..head], "the 101 head is kept");
        assert!(
            !String::from_utf8_lossy(&d.bytes).contains("s3cr3t"),
            "{:?}",
            d.bytes
        );
    }

    #[test]
    fn connections_followed_are_bounded() {
        let mut red = Redactor::default();
        for fd in 0..(MAX_SIDES as u32 + 10) {
            let mut ev = CaptureEvent::Data(crate::capture::DataChunk {
                ts_ns: 0,
                id: ConnId { tgid: 1, fd },
                direction: Direction::Egress,
                total_len: 3,
                bytes: bytes::BytesMut::from(&b"GET"[..]),
                tls: false,
            });
            red.redact(&mut ev);
            assert!(red.sides.len() <= MAX_SIDES);
        }
    }

    #[test]
    fn secret_header_split_across_chunks() {
        let mut red = Redactor::default();
        let id = ConnId { tgid: 1, fd: 2 };
        let chunk = |b: &str| {
            CaptureEvent::Data(crate::capture::DataChunk {
                ts_ns: 0,
                id,
                direction: Direction::Egress,
                total_len: b.len() as u64,
                bytes: bytes::BytesMut::from(b.as_bytes()),
                tls: false,
            })
        };
        let mut a = chunk("GET / HTTP/1.1\r\nAuthorization: Bearer abc");
        let mut b = chunk("def\r\nAccept: */*\r\n\r\n");
        red.redact(&mut a);
        red.redact(&mut b);
        let (CaptureEvent::Data(a), CaptureEvent::Data(b)) = (a, b) else {
            panic!()
        };
        assert!(!String::from_utf8_lossy(&a.bytes).contains("abc"));
        assert!(String::from_utf8_lossy(&b.bytes).starts_with("***\r\nAccept"));
    }
}
